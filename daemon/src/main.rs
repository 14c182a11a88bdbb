//! The `touchpilot` binary: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;

/// mimalloc instead of the system allocator: a dry run allocates and frees
/// millions of small objects (rendered emails, contexts), and glibc's
/// allocator fragmented that into several times the live memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A self-hosted customer-engagement daemon driven by YAML playbooks.
#[derive(Parser)]
#[command(name = "touchpilot", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration, every playbook and every template.
    Validate {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
    },
    /// Dry run: what would be sent to whom and when, as JSON lines.
    Simulate {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        /// Start of the simulated period (RFC 3339).
        #[arg(long)]
        from: Timestamp,
        /// End of the simulated period (RFC 3339, inclusive).
        #[arg(long)]
        to: Timestamp,
        /// Accounts file (JSON lines); default: sources.file.accounts.
        #[arg(long)]
        accounts: Option<PathBuf>,
        /// Events file (JSON lines); default: sources.file.events.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Worker threads; default: one per core. The output does not depend on it.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
    },
    /// Render one template for one account, as it would be sent.
    Render {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        /// Template name (templates/NAME.hbs or templates/NAME.json.hbs).
        #[arg(long)]
        template: String,
        /// Account id.
        #[arg(long)]
        account: String,
        /// Recipient address (a contact or the owner); default: the first contact.
        #[arg(long)]
        contact: Option<String>,
        /// An event as JSON, for templates of event-triggered moments.
        #[arg(long)]
        event: Option<String>,
        /// Accounts file; default: sources.file.accounts.
        #[arg(long)]
        accounts: Option<PathBuf>,
        /// The `now` of the rendering; default: the current time.
        #[arg(long)]
        now: Option<Timestamp>,
    },
    /// Print the JSON Schema of playbooks (editors use it to complete and check).
    Schema {
        /// The schema of touchpilot.yaml instead.
        #[arg(long)]
        config: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let code = match cli.command {
        Command::Validate { config } => touchpilot::commands::validate(&config, &mut out, &mut err),
        Command::Simulate {
            config,
            from,
            to,
            accounts,
            events,
            jobs,
        } => {
            let args = touchpilot::commands::SimulateArgs {
                config,
                from,
                to,
                accounts,
                events,
                jobs,
            };
            touchpilot::commands::simulate(&args, &mut out, &mut err)
        }
        Command::Render {
            config,
            template,
            account,
            contact,
            event,
            accounts,
            now,
        } => {
            let args = touchpilot::commands::RenderArgs {
                config,
                template,
                account,
                contact,
                event,
                accounts,
                now,
            };
            touchpilot::commands::render(&args, &mut out, &mut err)
        }
        Command::Schema { config } => {
            print!("{}", touchpilot::commands::schema(config));
            0
        }
    };
    ExitCode::from(code as u8)
}
