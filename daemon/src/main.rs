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
    /// Run the daemon: the HTTP API, the engine on the real clock, delivery.
    Run {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        /// `text`, `json` or `journald` (overrides `log.format`).
        #[arg(long, env = "TOUCHPILOT_LOG_FORMAT")]
        log_format: Option<touchpilot::config::LogFormat>,
    },
    /// Show the outbox (depth, oldest pending, dead letters), due accounts,
    /// disabled endpoints and the last errors.
    Status {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
    },
    /// List the deliveries that failed for good, or queue some again.
    DeadLetters {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        /// Queue the dead letter with this id again (repeatable).
        #[arg(long = "retry", value_name = "ID")]
        retry: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Every decision taken for an account: segment, moments fired or
    /// skipped and why, deliveries and their outcomes.
    Trace {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        account: String,
        #[arg(long, default_value_t = 200)]
        limit: i64,
    },
    /// Enable a webhook endpoint that was disabled after answering 410 Gone.
    EnableEndpoint {
        #[arg(long, default_value = "touchpilot.yaml", env = "TOUCHPILOT_CONFIG")]
        config: PathBuf,
        name: String,
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
    // The daemon logs from many threads: it must not run under these locks.
    if let Command::Run { config, log_format } = &cli.command {
        return ExitCode::from(run(config, *log_format) as u8);
    }
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
        Command::Run { .. } => unreachable!("handled above, outside the stdio locks"),
        Command::Status { config } => {
            touchpilot::ops::run(&config, &touchpilot::ops::Op::Status, &mut out, &mut err)
        }
        Command::DeadLetters {
            config,
            retry,
            limit,
        } => touchpilot::ops::run(
            &config,
            &touchpilot::ops::Op::DeadLetters { retry, limit },
            &mut out,
            &mut err,
        ),
        Command::Trace {
            config,
            account,
            limit,
        } => touchpilot::ops::run(
            &config,
            &touchpilot::ops::Op::Trace { account, limit },
            &mut out,
            &mut err,
        ),
        Command::EnableEndpoint { config, name } => touchpilot::ops::run(
            &config,
            &touchpilot::ops::Op::EnableEndpoint { name },
            &mut out,
            &mut err,
        ),
        Command::Schema { config } => {
            print!("{}", touchpilot::commands::schema(config));
            0
        }
    };
    ExitCode::from(code as u8)
}

/// `touchpilot run`: the first SIGTERM or SIGINT drains and stops; a
/// second one exits at once.
fn run(path: &std::path::Path, log_format: Option<touchpilot::config::LogFormat>) -> i32 {
    let mut err = std::io::stderr();
    let Some(config) = touchpilot::commands::load(path, &mut err) else {
        return 1;
    };
    if let Err(e) = touchpilot::app::log::init(&config.log, log_format) {
        eprintln!("error: {e}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let result = runtime.block_on(async move {
        let listen = config
            .http
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let control = touchpilot::app::Control {
            systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ..Default::default()
        };
        let signals = control.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => signals.reload.notify_one(),
                }
            }
            tracing::info!("stopping (send the signal again to exit at once)");
            signals.shutdown.cancel();
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("exiting at once");
            std::process::exit(130);
        });
        touchpilot::app::run_with(config, listener, control).await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}
