//! The daemon's wiring: opens the store, admits the file source's accounts,
//! serves the HTTP API, and runs two loops under one cancellation token:
//! the engine loop (accepted events and due accounts) and the delivery
//! loop (the outbox). Both sleep until their next due instant and are
//! woken early by new input; neither polls on a fixed tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, Counters};
use crate::config::Config;
use crate::deliver::email::Mailer;
use crate::deliver::webhook::Webhooks;
use crate::deliver::worker::{KINDS, Worker};
use crate::engine::Engine;
use crate::runner::Runner;
use crate::source::jsonl;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, Wakers};

/// The longest a loop sleeps without looking again (a clock change, a
/// row written by another process).
const MAX_SLEEP: SignedDuration = SignedDuration::from_secs(60);

/// Runs the daemon until `shutdown` is cancelled, serving on `listener`.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::tls::init();
    if config.store.starts_with("postgres://") || config.store.starts_with("postgresql://") {
        let store = PgStore::open(&config.store)
            .await
            .with_context(|| format!("while opening the store `{}`", redact(&config.store)))?;
        return serve(config, store, listener, shutdown).await;
    }
    let store = SqliteStore::open(&config.store)
        .await
        .with_context(|| format!("while opening the store `{}`", config.store))?;
    serve(config, store, listener, shutdown).await
}

/// A store URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Runs the daemon over an opened store: every store runs the same loops.
pub async fn serve<S: Store + 'static>(
    config: Arc<Config>,
    store: S,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let secret = store
        .secret()
        .await
        .context("while reading the installation secret")?;
    let public = config.http.public_url.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        )
    });
    let engine = Engine::new(
        config.clone(),
        crate::deliver::unsubscribe_links(public, secret.clone()),
    );
    let runner = Arc::new(Runner::new(store, engine));

    // The file source: accounts not yet known enter silently (a first
    // deployment greets nobody); its events are ingested, duplicates ignored.
    let now = Timestamp::now();
    if let Some(path) = &config.sources.accounts {
        let accounts = jsonl::read_accounts(path)
            .with_context(|| format!("while reading accounts from {}", path.display()))?;
        runner
            .seed(accounts, now)
            .await
            .context("while admitting the accounts")?;
    }
    if let Some(path) = &config.sources.events {
        let mut events = Vec::new();
        jsonl::for_each_line(path, |n, line| {
            events.push(jsonl::parse_event(path, n, line)?);
            Ok(())
        })
        .with_context(|| format!("while reading events from {}", path.display()))?;
        let n = runner
            .store
            .ingest(&events, now)
            .await
            .context("while ingesting the events file")?;
        eprintln!(
            "touchpilot: {} events from {} ({} already known)",
            n.accepted,
            path.display(),
            n.duplicates
        );
    }

    let base = config
        .path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let from = config
        .email
        .from
        .clone()
        .unwrap_or_else(|| "Touchpilot <touchpilot@localhost>".to_string());
    let mailer = Mailer::new(&config.email.transport, &from, &base).map_err(anyhow::Error::msg)?;
    let webhooks = Webhooks::new(config.webhooks.clone(), std::time::Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let mut worker = Worker::new(mailer, webhooks, config.cap);
    worker.lease = config.delivery.lease;

    let counters = Arc::new(Counters::default());
    let wake_engine = Arc::new(Notify::new());
    let wake_worker = Arc::new(Notify::new());
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(ApiState {
        runner: runner.clone(),
        wake: wake_engine.clone(),
        token: config.http.token.clone(),
        secret,
        ready: ready.clone(),
        counters: counters.clone(),
    });

    // Other instances sharing the store wake these loops too.
    runner
        .store
        .watch(Wakers {
            engine: wake_engine.clone(),
            outbox: wake_worker.clone(),
        })
        .await
        .context("while listening for other instances")?;
    let maintenance = tokio::spawn(crate::maintain::maintenance_loop(
        runner.clone(),
        config.retention,
        config.cap.map(|c| c.per.span()).unwrap_or_default(),
        shutdown.clone(),
    ));
    let engine_loop = tokio::spawn(engine_loop(
        runner.clone(),
        wake_engine,
        wake_worker.clone(),
        counters.clone(),
        shutdown.clone(),
    ));
    let worker_loop = tokio::spawn(worker_loop(
        runner.clone(),
        worker,
        wake_worker,
        counters,
        shutdown.clone(),
    ));
    ready.store(true, Ordering::Release);
    eprintln!("touchpilot: serving on {}", listener.local_addr()?);
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("while serving HTTP")?;
    engine_loop.await.context("engine loop")??;
    worker_loop.await.context("delivery loop")??;
    maintenance.await.context("maintenance loop")??;
    eprintln!("touchpilot: stopped");
    Ok(())
}

/// Sleeps until `until` (at most `MAX_SLEEP`), a wake-up, or shutdown;
/// returns false on shutdown.
async fn pause(until: Option<Timestamp>, wake: &Notify, shutdown: &CancellationToken) -> bool {
    let wait = until
        .map(|t| {
            t.duration_since(Timestamp::now())
                .clamp(SignedDuration::ZERO, MAX_SLEEP)
        })
        .unwrap_or(MAX_SLEEP);
    let wait = std::time::Duration::try_from(wait).unwrap_or_default();
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(wait) => true,
    }
}

async fn engine_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    wake: Arc<Notify>,
    wake_worker: Arc<Notify>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let now = Timestamp::now();
        let mut planned = 0;
        for progress in [
            runner.apply_pending(now, 1000).await,
            runner.run_due(now, 1000).await,
        ] {
            match progress {
                Ok(p) => {
                    planned += p.actions;
                    counters.steps.fetch_add(p.steps as u64, Ordering::Relaxed);
                    counters
                        .actions_planned
                        .fetch_add(p.actions as u64, Ordering::Relaxed);
                    for problem in p.problems {
                        eprintln!("touchpilot: warning: {problem}");
                    }
                }
                Err(e) => eprintln!("touchpilot: error: engine step: {e}"),
            }
        }
        if planned > 0 {
            wake_worker.notify_one();
        }
        let next_event = runner
            .store
            .pending_events(1)
            .await
            .ok()
            .and_then(|e| e.first().map(|e| e.at));
        let next_due = runner.store.next_due().await.ok().flatten();
        let next = [next_event, next_due].into_iter().flatten().min();
        if !pause(next, &wake, &shutdown).await {
            return Ok(());
        }
    }
}

async fn worker_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    worker: Worker,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let stop = || shutdown.is_cancelled();
        match worker
            .deliver_due(&runner.store, Timestamp::now(), 100, &stop)
            .await
        {
            Ok(d) => {
                counters
                    .delivered_missed
                    .fetch_add(d.missed as u64, Ordering::Relaxed);
                counters
                    .delivered_sent
                    .fetch_add(d.sent as u64, Ordering::Relaxed);
                counters
                    .delivered_retried
                    .fetch_add(d.retried as u64, Ordering::Relaxed);
                counters
                    .delivered_dead
                    .fetch_add(d.dead as u64, Ordering::Relaxed);
                counters
                    .delivered_suppressed
                    .fetch_add(d.suppressed as u64, Ordering::Relaxed);
                // A full batch: more may be due right now.
                if d.sent + d.retried + d.dead + d.suppressed + d.missed + d.fenced >= 100
                    && !shutdown.is_cancelled()
                {
                    continue;
                }
            }
            Err(e) => eprintln!("touchpilot: error: delivery: {e}"),
        }
        let next = runner.store.next_outbox_at(KINDS).await.ok().flatten();
        if !pause(next, &wake, &shutdown).await {
            return Ok(());
        }
    }
}
