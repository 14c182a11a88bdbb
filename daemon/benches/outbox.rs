//! Outbox throughput: deliveries per second by 1, 2 and 3 instances
//! sharing one PostgreSQL database, beside one instance on SQLite, in the
//! same run; the claim query's cost per item; and throughput as the
//! backlog of pending rows grows from 10k to 1M.
//!
//! An instance here is what a daemon's delivery loop is: its own store
//! handle (pool), claiming batches of 100 due rows, sending each as a
//! webhook to a local HTTP receiver, and finishing each claim under its
//! fencing token. All instances run in this one process (each on its own
//! connections), so the figures compare stores and instance counts, not
//! process start-up.
//!
//! `cargo bench --bench outbox` (the machine's PostgreSQL; set
//! `TOUCHPILOT_BENCH_POSTGRES` for another). Options: `-- --rows N --runs R
//! --backlogs 10000,100000,1000000`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use touchpilot::config::Webhook;
use touchpilot::deliver::webhook::Webhooks;
use touchpilot::engine::AccountState;
use touchpilot::model::account::Account;
use touchpilot::store::postgres::{PgStore, Scratch};
use touchpilot::store::sqlite::SqliteStore;
use touchpilot::store::{NewOutbox, Outcome, Store};

#[path = "common/mod.rs"]
mod common;
use common::{admin, arg, commit_rows, median};

const BATCH: i64 = 100;

/// A receiver that answers every webhook 200 and counts them.
async fn receiver() -> (String, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    let app = axum::Router::new().fallback(move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), n)
}

fn webhooks(url: &str) -> Webhooks {
    let mut endpoints = BTreeMap::new();
    endpoints.insert(
        "hook".to_string(),
        Webhook {
            url: url.to_string(),
            secret: None,
            allow_private: true,
        },
    );
    Webhooks::new(endpoints, Duration::from_secs(10)).unwrap()
}

/// `rows` due webhook rows, written as engine steps of 1,000 rows.
async fn fill<S: Store>(s: &S, rows: usize, offset: usize, at: Timestamp) {
    let state = AccountState::new(
        Account::from_json(json!({"id": "bench", "name": "Bench"})).unwrap(),
        at,
    );
    let outbox = (offset..offset + rows).map(|i| NewOutbox {
        key: format!("bench|{i:08}"),
        account: "bench".into(),
        kind: "webhook".into(),
        payload: json!({"endpoint": "hook", "content": {"text": format!("row {i}")},
                        "message_id": format!("<{i:032x}@touchpilot>"), "at": at.to_string()}),
        at,
        failure: None,
    });
    commit_rows(s, &state, outbox).await;
}

/// One instance's delivery loop until `limit` rows are delivered in total
/// (or nothing is due): claim, send, finish.
async fn deliver<S: Store>(s: &S, hooks: &Webhooks, delivered: &AtomicU64, limit: u64) {
    let lease = SignedDuration::from_mins(5);
    loop {
        if delivered.load(Ordering::Relaxed) >= limit {
            return;
        }
        let now = Timestamp::now();
        let claimed = s.claim(&["webhook"], now, lease, BATCH).await.unwrap();
        if claimed.is_empty() {
            return;
        }
        for c in claimed {
            hooks.send(&c.payload, now).await.unwrap();
            assert!(s.finish(&c.id, c.token, &Outcome::Sent, now).await.unwrap());
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Deliveries per second of `stores.len()` instances draining `rows`.
async fn drain<S: Store + 'static>(stores: Vec<Arc<S>>, url: &str, rows: u64) -> f64 {
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|s| {
            let hooks = webhooks(url);
            let delivered = delivered.clone();
            tokio::spawn(async move { deliver(&*s, &hooks, &delivered, rows).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    delivered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Claim cost, the worker's wake-up query and throughput as the pending
/// rows of one instance grow; returns how many are left pending.
async fn backlog<S: Store + 'static>(
    label: &str,
    store: Arc<S>,
    backlogs: &[usize],
    rows: usize,
    at: Timestamp,
    url: &str,
    settle: impl AsyncFn(&S),
) -> usize {
    println!("\nbacklog ({label}, 1 instance): claim cost and throughput as pending rows grow");
    println!(
        "| pending rows | claim, per item (median of 3 x 20 claims of 100) | next wake-up query (median of 20) | deliveries/s over {} rows (median; 3 runs) |",
        rows / 2
    );
    println!("|---|---|---|---|");
    let (mut pending, mut next_key) = (0, 0);
    for backlog in backlogs {
        let backlog = *backlog;
        fill(&*store, backlog - pending, next_key, at).await;
        next_key += backlog - pending;
        pending = backlog;
        settle(&store).await;
        let mut wake = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            store.next_outbox_at(&["webhook"]).await.unwrap();
            wake.push(t.elapsed().as_secs_f64());
        }
        let (mut costs, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            costs.push(claim_cost(&*store, 20).await);
            rates.push(drain(vec![store.clone()], url, rows as u64 / 2).await);
            pending = pending.saturating_sub(rows / 2);
        }
        let rates_text: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {backlog} | {:.1} us | {:.0} us | {:.0} ({}) |",
            median(costs) * 1e6,
            median(wake) * 1e6,
            median(rates.clone()),
            rates_text.join(" ")
        );
    }
    pending
}

/// The median cost of one claimed item: `claim` of 100 rows, timed, then
/// released again so the backlog stays the same size.
async fn claim_cost<S: Store>(s: &S, rounds: usize) -> f64 {
    let lease = SignedDuration::from_mins(5);
    let mut per_item = Vec::new();
    for _ in 0..rounds {
        let now = Timestamp::now();
        let t = Instant::now();
        let claimed = s.claim(&["webhook"], now, lease, BATCH).await.unwrap();
        per_item.push(t.elapsed().as_secs_f64() / claimed.len().max(1) as f64);
        for c in claimed {
            s.finish(&c.id, c.token, &Outcome::Released, now)
                .await
                .unwrap();
        }
    }
    median(per_item)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    touchpilot::tls::init();
    let rows: usize = arg("--rows", "5000").parse().unwrap();
    assert!(rows >= 2, "--rows must be at least 2");
    let runs: usize = arg("--runs", "5").parse().unwrap();
    let backlogs: Vec<usize> = arg("--backlogs", "10000,100000,1000000")
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let (url, _received) = receiver().await;
    let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    println!(
        "outbox throughput: {rows} webhook deliveries per run, {runs} runs, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Instances side by side, one run of each per round.
    let mut figures: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let file = format!("sqlite:{}", dir.path().join("bench.db").display());
        let sqlite = Arc::new(SqliteStore::open(&file).await.unwrap());
        fill(&*sqlite, rows, 0, at).await;
        let rate = drain(vec![sqlite], &url, rows as u64).await;
        figures.entry("sqlite, 1 instance").or_default().push(rate);
        for (n, label) in [
            (1, "postgres, 1 instance"),
            (2, "postgres, 2 instances"),
            (3, "postgres, 3 instances"),
        ] {
            let db = Scratch::create(&admin()).await.unwrap();
            let mut stores = Vec::new();
            for _ in 0..n {
                stores.push(Arc::new(PgStore::open(&db.url).await.unwrap()));
            }
            fill(&*stores[0], rows, 0, at).await;
            let rate = drain(stores, &url, rows as u64).await;
            figures.entry(label).or_default().push(rate);
            db.drop_database().await.unwrap();
        }
    }
    let base = median(figures["sqlite, 1 instance"].clone());
    println!("| store, instances | deliveries/s (median) | runs | vs SQLite |");
    println!("|---|---|---|---|");
    for (label, v) in &figures {
        let runs: Vec<String> = v.iter().map(|r| format!("{r:.0}")).collect();
        let m = median(v.clone());
        println!(
            "| {label} | {m:.0} | {} | {:.2}x |",
            runs.join(" "),
            m / base
        );
    }

    // The backlog: one instance of each store, a growing number of pending rows.
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite:{}", dir.path().join("backlog.db").display());
    let sqlite = Arc::new(SqliteStore::open(&file).await.unwrap());
    backlog("sqlite", sqlite, &backlogs, rows, at, &url, async |_| {}).await;
    let db = Scratch::create(&admin()).await.unwrap();
    let store = Arc::new(PgStore::open(&db.url).await.unwrap());
    let pending = backlog(
        "postgres",
        store.clone(),
        &backlogs,
        rows,
        at,
        &url,
        async |s: &PgStore| {
            // Measure the steady state, not the fill's checkpoint and vacuum.
            for sql in ["VACUUM ANALYZE outbox", "CHECKPOINT"] {
                sqlx::query(sql).execute(s.pool()).await.unwrap();
            }
        },
    )
    .await;
    let now = Timestamp::now().as_microsecond();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN ANALYZE SELECT id FROM outbox WHERE state IN ('pending', 'sending') AND next_attempt <= {now}
         AND (state = 'pending' OR lease_until <= {now}) AND kind = ANY('{{webhook}}')
         ORDER BY next_attempt, key LIMIT 100 FOR UPDATE SKIP LOCKED"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap();
    println!(
        "\nclaim plan at {pending} pending rows:\n{}",
        plan.join("\n")
    );
    drop(store);
    db.drop_database().await.unwrap();
}
