//! `touchpilot-datagen`: writes deterministic sample data for Touchpilot,
//! `DIR/accounts.jsonl` (one account per line) and `DIR/events.jsonl`
//! (exactly `--events` events, sorted by `at`, in `[--from, --from + --days)`).
//!
//! The same arguments always give byte-identical files. The generator
//! streams: it keeps the accounts and the planned events in memory, never
//! the output, so a million events take seconds and little memory.
//!
//! The data is shaped for the shipped playbooks (see `accounts::tier`):
//! long-tail MRR, customers onboarding during the period (some late on
//! their milestones), urgent tickets, poor NPS answers, sharp usage drops,
//! sponsor changes, product releases, and account updates that move
//! accounts between segments, change renewal dates and unsubscribe
//! contacts. It never decides what the engine does with them.
//!
//! The shipped sample in `data/` is
//! `cargo run -p touchpilot-datagen -- --accounts 300 --events 4000 --seed 7
//! --from 2026-01-01T00:00:00Z --days 180 --out data`.

mod accounts;
mod events;
mod json;
mod rng;
// Tables read best one entry per line, wider than rustfmt allows.
#[rustfmt::skip]
mod words;

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use accounts::{AccountFactory, Period, Tier};

/// Writes sample accounts and events for Touchpilot dry runs and benchmarks.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Number of accounts (ids acc-000001, acc-000002, ...).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    accounts: u32,
    /// Number of events, exactly.
    #[arg(long, default_value_t = 4000)]
    events: u64,
    /// Seed of the generator: the same arguments give the same files.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Start of the simulated period, RFC 3339.
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    from: jiff::Timestamp,
    /// Length of the simulated period, in days.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=3660))]
    days: u32,
    /// Directory to write accounts.jsonl and events.jsonl to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("touchpilot-datagen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let from = args.from.as_second();

    // Accounts are written as they are drawn and kept for the events.
    let accounts_path = args.out.join("accounts.jsonl");
    let mut out = create(&accounts_path)?;
    let mut factory = AccountFactory::new(
        args.seed,
        Period {
            from,
            days: args.days,
        },
    );
    let mut accounts = Vec::with_capacity(args.accounts as usize);
    let mut line = Vec::with_capacity(1024);
    let mut tiers = [0u32; 3];
    for index in 1..=args.accounts {
        let account = factory.draw(index);
        line.clear();
        account.write_json(&mut line);
        line.push(b'\n');
        out.write_all(&line)
            .map_err(|e| format!("cannot write {}: {e}", accounts_path.display()))?;
        tiers[match account.tier() {
            Tier::High => 0,
            Tier::Low => 1,
            Tier::Tech => 2,
        }] += 1;
        accounts.push(account);
    }
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", accounts_path.display()))?;
    drop(factory);

    let events_path = args.out.join("events.jsonl");
    let mut out = create(&events_path)?;
    let settings = events::Settings {
        seed: args.seed,
        from,
        days: args.days,
        events: args.events,
    };
    let totals = events::generate(&settings, &mut accounts, &mut out)
        .and_then(|t| out.flush().map(|()| t))
        .map_err(|e| format!("cannot write {}: {e}", events_path.display()))?;

    eprintln!(
        "wrote {} accounts ({} high touch, {} low touch, {} tech touch by MRR and growth) to {}",
        args.accounts,
        tiers[0],
        tiers[1],
        tiers[2],
        accounts_path.display()
    );
    let mut by_kind = totals.by_kind;
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "wrote {} events to {}: {}",
        totals.written,
        events_path.display(),
        kinds.join(", ")
    );
    eprintln!("in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
