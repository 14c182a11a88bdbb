//! Delivery cost: the real `Worker::deliver_due` draining a store
//! preloaded with due rows, as webhooks to a receiver in another process
//! and as emails to a real SMTP server (postfix's `smtp-sink`), reporting
//! deliveries per second and the CPU this process spent per 1,000
//! deliveries (user + system, every thread: the worker, the senders and
//! the store's client side; a PostgreSQL server's own CPU is not in it).
//! The store `none` runs the senders alone, without the worker.
//!
//! The machine is shared with whatever receives the deliveries, so the
//! CPU per delivery is the figure to compare; runs of every
//! configuration alternate, and medians are reported.
//!
//! `cargo bench --bench deliver -- [--rows N] [--runs R]
//! [--kinds webhook,signed,email] [--stores postgres,sqlite,none]
//! [--smtp 127.0.0.1:12600] [--receiver-port 9300]`. Email runs need an
//! SMTP server listening at `--smtp` (they are skipped otherwise), e.g.
//! `smtp-sink -c 127.0.0.1:12600 1024`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use touchpilot::config::{Delivery, Webhook};
use touchpilot::deliver::email::Mailer;
use touchpilot::deliver::webhook::Webhooks;
use touchpilot::deliver::worker::Worker;
use touchpilot::engine::AccountState;
use touchpilot::model::account::Account;
use touchpilot::store::postgres::{PgStore, Scratch};
use touchpilot::store::sqlite::SqliteStore;
use touchpilot::store::{NewOutbox, Store};

#[path = "common/mod.rs"]
mod common;
use common::{admin, arg, commit_rows, median};

// The daemon's allocator, so that allocation costs are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The daemon's batch (`app::DELIVERY_BATCH`).
const BATCH: i64 = 256;

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): state is
    // the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The receiver process: answers every request 200, on one thread.
fn serve_receiver(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// Kills the receiver when the bench ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Webhook,
    /// A webhook to an endpoint with a secret (Standard Webhooks signature).
    Signed,
    Email,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "webhook" => Kind::Webhook,
            "signed" => Kind::Signed,
            "email" => Kind::Email,
            _ => panic!("unknown kind `{s}` (webhook, signed, email)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Signed => "webhook, signed",
            Kind::Email => "email",
        }
    }
}

/// The outbox row the runner writes for the peer benchmark's moment.
fn row(kind: Kind, i: usize, at: Timestamp) -> NewOutbox {
    let text = format!(
        "Hi Ann, we saw your high-severity ticket.created on account acc-123. Our team is on it. ({i})"
    );
    let mut payload = json!({
        "at": at.to_string(),
        "fired_at": at.to_string(),
        "playbook": "bench",
        "moment": "ticket",
        "trigger": "event ticket.created",
        "template": "ticket",
        "message_id": format!("<{i:032x}@touchpilot>"),
        "bypass_limits": kind == Kind::Email,
    });
    let obj = payload.as_object_mut().unwrap();
    let kind_name = match kind {
        Kind::Webhook | Kind::Signed => {
            let endpoint = if kind == Kind::Signed {
                "signed"
            } else {
                "hook"
            };
            obj.insert("endpoint".into(), endpoint.into());
            obj.insert(
                "content".into(),
                json!({"text": text, "to": "a@example.com", "account_id": "acc-123"}),
            );
            "webhook"
        }
        Kind::Email => {
            obj.insert("to".into(), "a@example.com".into());
            obj.insert("contact".into(), true.into());
            obj.insert(
                "unsubscribe_url".into(),
                "http://127.0.0.1:8088/unsubscribe/YUBleGFtcGxlLmNvbQ.c2lnbmF0dXJlc2lnbmF0dXJl"
                    .into(),
            );
            obj.insert(
                "content".into(),
                json!({"subject": "We saw your ticket", "text": text}),
            );
            "email"
        }
    };
    NewOutbox {
        key: format!("bench|{i:08}"),
        account: "acc-123".into(),
        kind: kind_name.into(),
        payload,
        at,
        failure: None,
    }
}

/// `rows` due rows of `kind`, written as engine steps of 1,000 rows.
async fn fill<S: Store>(s: &S, kind: Kind, rows: usize, at: Timestamp) {
    let state = AccountState::new(
        Account::from_json(
            json!({"id": "acc-123", "name": "Ann's Company", "timezone": "UTC",
            "contacts": [{"name": "Ann", "email": "a@example.com", "role": "admin"}]}),
        )
        .unwrap(),
        at,
    );
    commit_rows(s, &state, (0..rows).map(|i| row(kind, i, at))).await;
}

fn worker(url: &str, smtp: &str) -> Worker {
    let mut endpoints = BTreeMap::new();
    for (name, secret) in [
        ("hook", None),
        (
            "signed",
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        ),
    ] {
        endpoints.insert(
            name.to_string(),
            Webhook {
                url: url.to_string(),
                secret,
                allow_private: true,
            },
        );
    }
    let delivery = Delivery::default();
    let timeout = Duration::from_secs(10);
    let mailer = Mailer::with(
        &format!("smtp://{smtp}"),
        "support@example.com",
        Path::new("."),
        delivery.concurrency,
        timeout,
    )
    .unwrap();
    Worker::new(
        mailer,
        Webhooks::new(endpoints, timeout).unwrap(),
        None,
        delivery,
    )
}

/// Drains `rows` rows with a fresh worker: (deliveries/s, CPU
/// milliseconds per 1,000 deliveries). On a task of its own, as the
/// daemon's delivery loop is (not on the thread that blocks on the bench).
async fn drain<S: Store + 'static>(s: S, w: Worker, rows: usize) -> (f64, f64) {
    tokio::spawn(async move { drain_here(&s, &w, rows).await })
        .await
        .unwrap()
}

/// The senders alone, without a store or the worker's decisions: `rows`
/// payloads sent `concurrency` at a time, on a task of its own.
async fn drain_senders(w: Worker, kind: Kind, rows: usize) -> (f64, f64) {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let now = Timestamp::now();
        let payloads: Vec<_> = (0..rows).map(|i| row(kind, i, now).payload).collect();
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let concurrency = w.delivery.concurrency;
        let w = std::sync::Arc::new(w);
        let failed = futures_util::stream::iter(payloads)
            .map(|p| {
                let w = w.clone();
                async move { send_one(&w, kind, &p, now).await }
            })
            .buffer_unordered(concurrency)
            .fold(0, |n, ok| std::future::ready(n + usize::from(!ok)))
            .await;
        assert_eq!(failed, 0, "sends failed");
        let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        (rows as f64 / wall, cpu * 1e6 / rows as f64)
    })
    .await
    .unwrap()
}

async fn send_one(w: &Worker, kind: Kind, p: &serde_json::Value, now: Timestamp) -> bool {
    match kind {
        Kind::Email => w.mailer.send(p).await.is_ok(),
        Kind::Webhook | Kind::Signed => w.webhooks.send(p, now).await.is_ok(),
    }
}

async fn drain_here<S: Store>(s: &S, w: &Worker, rows: usize) -> (f64, f64) {
    let never = || false;
    // For profilers attaching to the drain only.
    eprintln!("draining {rows} rows (pid {})", std::process::id());
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut sent = 0;
    while sent < rows {
        let d = w
            .deliver_due(s, Timestamp::now(), BATCH, &never)
            .await
            .unwrap();
        assert!(
            d.errors.is_empty() && d.sent == d.total(),
            "a delivery failed: {:?}",
            d.errors.first()
        );
        assert!(d.sent > 0, "nothing due after {sent} of {rows}");
        sent += d.sent;
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    (sent as f64 / wall, cpu * 1e6 / sent as f64)
}

fn main() {
    if let Some(port) = std::env::args()
        .position(|a| a == "--serve-receiver")
        .and_then(|i| std::env::args().nth(i + 1))
    {
        serve_receiver(port.parse().unwrap());
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    touchpilot::tls::init();
    let rows: usize = arg("--rows", "20000").parse().unwrap();
    let runs: usize = arg("--runs", "5").parse().unwrap();
    let kinds: Vec<Kind> = arg("--kinds", "webhook,email")
        .split(',')
        .map(Kind::parse)
        .collect();
    let stores: Vec<String> = arg("--stores", "postgres,sqlite")
        .split(',')
        .map(str::to_string)
        .collect();
    let smtp = arg("--smtp", "127.0.0.1:12600");
    let port: u16 = arg("--receiver-port", "9300").parse().unwrap();
    let _receiver = Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--serve-receiver", &port.to_string()])
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/hook");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let email = tokio::net::TcpStream::connect(smtp.as_str()).await.is_ok();
    if !email && kinds.contains(&Kind::Email) {
        println!("no SMTP server at {smtp}: email runs skipped");
    }
    let at = Timestamp::now();
    println!(
        "deliver: {rows} deliveries per run, {runs} runs, batches of {BATCH}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut figures: BTreeMap<(String, Kind), Vec<(f64, f64)>> = BTreeMap::new();
    for _ in 0..runs {
        for kind in kinds.iter().copied().filter(|k| *k != Kind::Email || email) {
            for store in &stores {
                // A fresh worker per run: connections are made in the run.
                let w = worker(&url, &smtp);
                let figure = match store.as_str() {
                    "postgres" => {
                        let db = Scratch::create(&admin()).await.unwrap();
                        let s = PgStore::open(&db.url).await.unwrap();
                        fill(&s, kind, rows, at).await;
                        let f = drain(s, w, rows).await;
                        db.drop_database().await.unwrap();
                        f
                    }
                    "sqlite" => {
                        let dir = tempfile::tempdir().unwrap();
                        let file = format!("sqlite:{}", dir.path().join("bench.db").display());
                        let s = SqliteStore::open(&file).await.unwrap();
                        fill(&s, kind, rows, at).await;
                        drain(s, w, rows).await
                    }
                    "none" => drain_senders(w, kind, rows).await,
                    other => panic!("unknown store `{other}` (postgres, sqlite, none)"),
                };
                figures
                    .entry((store.clone(), kind))
                    .or_default()
                    .push(figure);
            }
        }
    }
    println!(
        "| store | kind | deliveries/s (median) | CPU ms per 1,000 (median) | runs (rate/cpu) |"
    );
    println!("|---|---|---|---|---|");
    for ((store, kind), v) in &figures {
        let runs: Vec<String> = v.iter().map(|(r, c)| format!("{r:.0}/{c:.0}")).collect();
        println!(
            "| {store} | {} | {:.0} | {:.0} | {} |",
            kind.name(),
            median(v.iter().map(|f| f.0).collect()),
            median(v.iter().map(|f| f.1).collect()),
            runs.join(" ")
        );
    }
}
