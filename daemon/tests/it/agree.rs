//! The dry run and the daemon agree: every simulate fixture whose events
//! all happen inside its range (the daemon receives events live) is run
//! through the store-backed runner and the outbox worker on a virtual
//! clock (emails to `.eml` files, webhooks to a real local receiver), and
//! what the daemon delivered must be exactly what `simulate` printed:
//! sent where it says planned, suppressed for the same reason, dead where
//! a template failed. Connector actions are compared as planned (no
//! plugin is loaded here). Run on both stores: SQLite, and PostgreSQL (a
//! database of its own per run).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use touchpilot::deliver::email::Mailer;
use touchpilot::deliver::webhook::Webhooks;
use touchpilot::deliver::worker::Worker;
use touchpilot::engine::Engine;
use touchpilot::model::event::Event;
use touchpilot::runner::Runner;
use touchpilot::source::jsonl;
use touchpilot::store::Store;
use touchpilot::store::postgres::PgStore;
use touchpilot::store::sqlite::SqliteStore;

use crate::support::cases;

type Action = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn arg(args: &str, name: &str) -> Timestamp {
    let mut it = args.split_whitespace();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().unwrap().parse().unwrap();
        }
    }
    panic!("no {name}")
}

fn action(v: &Value, status: String) -> Action {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let target = match s("kind").as_str() {
        "email" => s("to"),
        "webhook" => s("endpoint"),
        _ => format!("{}:{}", s("connector"), s("action")),
    };
    (
        s("at"),
        s("fired_at"),
        s("account"),
        s("playbook"),
        s("moment"),
        s("trigger"),
        s("kind"),
        target,
        s("template"),
        status,
    )
}

/// Where a run's store lives; `open` is what a (re)started daemon does.
trait Backend {
    type S: Store;
    async fn open(&self) -> Self::S;
    /// Where the run's emails go (`.eml` files).
    fn mail(&self) -> PathBuf;
}

struct Sqlite(PathBuf);

impl Backend for Sqlite {
    type S = SqliteStore;
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&format!("sqlite:{}", self.0.display()))
            .await
            .unwrap()
    }
    fn mail(&self) -> PathBuf {
        self.0.with_extension("mail")
    }
}

struct Postgres(String, PathBuf);

impl Backend for Postgres {
    type S = PgStore;
    async fn open(&self) -> PgStore {
        PgStore::open_with(&self.0, 2).await.unwrap()
    }
    fn mail(&self) -> PathBuf {
        self.1.clone()
    }
}

/// The worker: emails to a folder of `.eml` files, every webhook endpoint
/// of the fixture redirected to the local receiver.
fn worker<S: Store>(runner: &Runner<S>, hooks: &str, mail: &Path) -> Worker {
    let config = runner.engine().config;
    let endpoints = config
        .webhooks
        .keys()
        .map(|name| {
            (
                name.clone(),
                touchpilot::config::Webhook {
                    url: format!("{hooks}/{name}"),
                    secret: None,
                    allow_private: true,
                },
            )
        })
        .collect();
    let mailer = Mailer::new(
        &format!("file:{}", mail.display()),
        "cs@vendor.example",
        mail,
    )
    .unwrap();
    let webhooks = Webhooks::new(endpoints, std::time::Duration::from_secs(5)).unwrap();
    Worker::new(mailer, webhooks, config.cap, config.delivery)
}

async fn start<B: Backend>(dir: &Path, db: &B) -> Runner<B::S> {
    let (config, _) =
        touchpilot::config::load(&dir.join("touchpilot.yaml"), &|_| None).expect("valid fixture");
    let engine = Engine::new(
        Arc::new(config),
        Arc::new(|a: &str| format!("http://127.0.0.1:8080/unsubscribe/{a}")),
    );
    Runner::new(db.open().await, engine)
}

/// How a run takes the fixture's events in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// All stored at the start, applied by the engine as they fall due.
    Upfront,
    /// Each one at its own time, one request each, as the HTTP API takes
    /// them (`Runner::ingest`: the steps are taken in the same commit).
    Live,
}

/// Runs a fixture through the daemon's runner; with `restart`, the process
/// "crashes" after every step: a new store handle and runner carry on.
async fn daemon_actions<B: Backend>(
    dir: &Path,
    from: Timestamp,
    to: Timestamp,
    db: &B,
    restart: bool,
    feed: Feed,
    hooks: &str,
) -> Vec<Action> {
    let mail = db.mail();
    let mut runner = start(dir, db).await;
    let accounts = jsonl::read_accounts(&dir.join("accounts.jsonl")).unwrap();
    runner.seed(accounts, from).await.unwrap();
    let mut events = Vec::new();
    if dir.join("events.jsonl").exists() {
        jsonl::for_each_line(&dir.join("events.jsonl"), |n, l| {
            events.push(jsonl::parse_event(&dir.join("events.jsonl"), n, l)?);
            Ok(())
        })
        .unwrap();
    }
    // Events in the order of their time (arrival order among equals).
    let mut later: std::collections::VecDeque<Event> = Default::default();
    match feed {
        Feed::Upfront => {
            runner.store.ingest(&events, from).await.unwrap();
        }
        Feed::Live => {
            events.sort_by_key(|e| e.at.unwrap_or(from));
            later.extend(events);
        }
    }
    // The virtual clock: jump to the next event or due time, events first.
    let mut now = from;
    loop {
        let mut arriving = Vec::new();
        while later.front().is_some_and(|e| e.at.unwrap_or(from) <= now) {
            arriving.push(vec![later.pop_front().unwrap()]);
        }
        if !arriving.is_empty() {
            runner.ingest(&mut arriving, now).await.unwrap();
        }
        runner.apply_pending(now, 100_000).await.unwrap();
        if restart {
            runner = start(dir, db).await;
        }
        runner.run_due(now, 100_000).await.unwrap();
        if restart {
            runner = start(dir, db).await;
        }
        // What goes out at this instant, after its events and timers.
        let w = worker(&runner, hooks, &mail);
        while w
            .deliver_due(&runner.store, now, 100_000, &|| false)
            .await
            .unwrap()
            .total()
            > 0
        {}
        let next_event = runner
            .store
            .pending_events(1)
            .await
            .unwrap()
            .first()
            .map(|e| e.at);
        let next_due = runner.store.next_due().await.unwrap();
        let next_out = runner
            .store
            .next_outbox_at(&["email", "webhook"])
            .await
            .unwrap();
        let next_arrival = later.front().map(|e| e.at.unwrap_or(from));
        let next = [next_event, next_due, next_out, next_arrival]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
        match next {
            Some(t) if t <= to => now = t,
            _ => break,
        }
    }
    let mut out: Vec<Action> = runner
        .store
        .list_outbox(1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.at >= from && r.at <= to)
        .map(|r| {
            let mut p = r.payload.clone();
            p["account"] = Value::String(r.account.clone());
            p["kind"] = Value::String(r.kind.clone());
            use touchpilot::store::OutboxState as S;
            let status = match (r.state, r.kind.as_str()) {
                (S::Sent, _) | (S::Pending, "connector") => "planned".to_string(),
                (S::Suppressed, _) => format!("suppressed:{}", r.last_error.unwrap_or_default()),
                (S::Dead, _) => "failed".to_string(),
                (other, _) => format!("{other:?}: {:?}", r.last_error),
            };
            action(&p, status)
        })
        .collect();
    out.sort();
    out
}

fn simulate_actions(dir: &Path, from: Timestamp, to: Timestamp) -> Vec<Action> {
    let events = dir.join("events.jsonl");
    let args = touchpilot::commands::SimulateArgs {
        config: dir.join("touchpilot.yaml"),
        from,
        to,
        accounts: Some(dir.join("accounts.jsonl")),
        events: events.exists().then_some(events),
        jobs: 1,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(touchpilot::commands::simulate(&args, &mut out, &mut err), 0);
    let mut v: Vec<Action> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let status = match v["status"].as_str().unwrap() {
                "suppressed" => format!("suppressed:{}", v["reason"].as_str().unwrap()),
                other => other.to_string(),
            };
            action(&v, status)
        })
        .collect();
    v.sort();
    v
}

/// Whether every event has an `at` inside the range (history before the
/// range is the dry run's concept, not the daemon's).
fn live_only(dir: &Path, from: Timestamp) -> bool {
    let path = dir.join("events.jsonl");
    if !path.exists() {
        return true;
    }
    let mut ok = true;
    jsonl::for_each_line(&path, |n, l| {
        let e = jsonl::parse_event(&path, n, l)?;
        ok &= e.at.is_some_and(|t| t >= from);
        Ok(())
    })
    .unwrap();
    ok
}

/// Also: a daemon restarted after every step plans the same, so a restart
/// neither refires nor skips.
#[tokio::test]
async fn the_daemon_delivers_exactly_what_the_dry_run_prints() {
    let tmp = tempfile::tempdir().unwrap();
    agree(async |name: &str| Sqlite(tmp.path().join(format!("{name}.db")))).await;
}

/// The same on PostgreSQL: each run in a database of its own.
#[tokio::test]
async fn the_daemon_on_postgres_delivers_exactly_what_the_dry_run_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let dbs = std::sync::Mutex::new(Vec::new());
    agree(async |name: &str| {
        let db = crate::cluster::Db::create(&crate::cluster::pg_admin()).await;
        let url = db.scratch.url.clone();
        dbs.lock().unwrap().push(db);
        Postgres(url, tmp.path().join(format!("{name}.mail")))
    })
    .await;
}

/// What only `a` holds and what only `b` holds, named.
fn differ(a_is: &str, a: &[Action], b_is: &str, b: &[Action]) -> String {
    fn only<'x>(x: &'x [Action], y: &[Action]) -> Vec<&'x Action> {
        x.iter().filter(|v| !y.contains(v)).collect()
    }
    format!(
        "  only {a_is}: {:?}\n  only {b_is}: {:?}",
        only(a, b),
        only(b, a)
    )
}

async fn agree<B: Backend>(mut backend: impl AsyncFnMut(&str) -> B) {
    let (hooks, _received) = crate::deliver::receiver(&[]).await;
    let mut compared = 0;
    let mut failures = Vec::new();
    for dir in cases("simulate") {
        let args = std::fs::read_to_string(dir.join("args")).unwrap();
        let (from, to) = (arg(&args, "--from"), arg(&args, "--to"));
        if !live_only(&dir, from) {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let sim = simulate_actions(&dir, from, to);
        // The same fixture three ways, each on a store of its own.
        let mut runs = Vec::new();
        for (suffix, restart, feed) in [
            ("", false, Feed::Upfront),
            ("-restarted", true, Feed::Upfront),
            ("-live", false, Feed::Live),
        ] {
            let db = backend(&format!("{name}{suffix}")).await;
            runs.push(daemon_actions(&dir, from, to, &db, restart, feed, &hooks).await);
        }
        let [daemon, restarted, live] = <[Vec<Action>; 3]>::try_from(runs).unwrap();
        compared += 1;
        if restarted != daemon {
            failures.push(format!(
                "{name}: restarting after every step changed the outbox"
            ));
        }
        if live != daemon {
            failures.push(format!(
                "{name}: events taken in one by one at their time (applied as they are stored) changed the outbox:\n{}",
                differ("then", &live, "when stored upfront", &daemon)
            ));
        }
        if sim != daemon {
            failures.push(format!(
                "{name}:\n{}",
                differ("in simulate", &sim, "in the daemon", &daemon)
            ));
        }
    }
    assert!(compared > 50, "only {compared} fixtures compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
