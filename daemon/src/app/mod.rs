//! The daemon's wiring: opens the store, follows the file source, serves
//! the HTTP API, and runs the engine loop (accepted events and due
//! accounts) and the delivery loop (the outbox) under one cancellation
//! token. Both loops sleep until their next due instant and are woken
//! early by new input; neither polls on a fixed tick. Also owns reload
//! (SIGHUP: validate, then swap; keep the running set on any error) and
//! the systemd protocol (READY, RELOADING, STOPPING, WATCHDOG).

pub mod log;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{self, ApiState, Counters};
use crate::config::Config;
use crate::deliver::email::Mailer;
use crate::deliver::webhook::Webhooks;
use crate::deliver::worker::{KINDS, Worker};
use crate::engine::Engine;
use crate::model::event::Event;
use crate::runner::{Progress, Runner};
use crate::source::follow::{self, Position};
use crate::source::jsonl;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Ingested, Store, Wakers};

/// The longest a loop sleeps without looking again (a clock change, a
/// row written by another process).
const MAX_SLEEP: SignedDuration = SignedDuration::from_secs(60);
/// How often the file source looks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Engine steps and deliveries handled per commit.
const BATCH: i64 = 256;
const DELIVERY_BATCH: i64 = 256;
/// Batches of handed claims that may wait for the worker.
const HANDOFF_BATCHES: usize = 2;
/// Under a steady stream of handed claims, how long the worker may go
/// without also claiming what fell due otherwise (retries, leases).
const DUE_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// How the process controls a running daemon.
#[derive(Clone, Default)]
pub struct Control {
    /// Cancelled to stop: in-flight work drains within the grace period.
    pub shutdown: CancellationToken,
    /// Notified to reload playbooks and templates (SIGHUP).
    pub reload: Arc<Notify>,
    /// Speak the systemd notification protocol (when `NOTIFY_SOCKET` is set).
    pub systemd: bool,
}

/// Runs the daemon until `shutdown` is cancelled, serving on `listener`.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(
        config,
        listener,
        Control {
            shutdown,
            ..Control::default()
        },
    )
    .await
}

/// Runs the daemon under `control`, on the store its configuration names.
pub async fn run_with(
    config: Arc<Config>,
    listener: TcpListener,
    control: Control,
) -> anyhow::Result<()> {
    crate::tls::init();
    if config.store.starts_with("postgres://") || config.store.starts_with("postgresql://") {
        let store = PgStore::open(&config.store)
            .await
            .with_context(|| format!("while opening the store `{}`", redact(&config.store)))?;
        return serve(config, store, listener, control).await;
    }
    let store = SqliteStore::open(&config.store)
        .await
        .with_context(|| format!("while opening the store `{}`", config.store))?;
    serve(config, store, listener, control).await
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

/// The delivery worker a configuration describes, with the connector
/// plugins loaded at start (a library is never unloaded, so a reload keeps
/// them).
fn worker_for(
    config: &Config,
    connectors: &crate::deliver::connector::Connectors,
) -> anyhow::Result<Worker> {
    let base = config_dir(&config.path);
    let from = config
        .email
        .from
        .clone()
        .unwrap_or_else(|| "Touchpilot <touchpilot@localhost>".to_string());
    let timeout = std::time::Duration::try_from(config.delivery.timeout).unwrap_or_default();
    let mailer = Mailer::with(
        &config.email.transport,
        &from,
        &base,
        config.delivery.concurrency,
        timeout,
    )
    .map_err(anyhow::Error::msg)?;
    let webhooks = Webhooks::new(config.webhooks.clone(), timeout).map_err(anyhow::Error::msg)?;
    let mut worker = Worker::new(mailer, webhooks, config.cap, config.delivery);
    worker.connectors = Some(connectors.clone());
    Ok(worker)
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs the daemon over an opened store: every store runs the same loops.
pub async fn serve<S: Store + 'static>(
    config: Arc<Config>,
    store: S,
    listener: TcpListener,
    control: Control,
) -> anyhow::Result<()> {
    let shutdown = control.shutdown.clone();
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
    let links = crate::deliver::unsubscribe_links(public.clone(), secret.clone());
    // Rows a step creates already due go straight to the worker, claimed
    // in the step's commit. Bounded: a worker that falls behind slows the
    // engine; and a handed claim that waited half its lease anyway goes
    // back to the outbox untried (`worker_loop`).
    let (handoff, handed) = mpsc::channel(HANDOFF_BATCHES);
    let runner = Arc::new(
        Runner::new(store, Engine::new(config.clone(), links.clone())).with_handoff(
            crate::runner::Handoff {
                lease: config.delivery.lease,
                to: handoff,
            },
        ),
    );

    let counters = Arc::new(Counters::default());
    let wake_engine = Arc::new(Notify::new());
    let wake_worker = Arc::new(Notify::new());

    // The file source: what was added while we were stopped, before serving.
    let files = Files::new(&config);
    files
        .sync(&runner, &counters, true)
        .await
        .context("while reading the file source")?;

    let connectors = crate::deliver::connector::Connectors::load(&config.connectors).await;
    let worker = Arc::new(RwLock::new(Arc::new(worker_for(&config, &connectors)?)));
    let (ingest_tx, ingest_rx) = mpsc::channel(1024);
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(ApiState {
        runner: runner.clone(),
        wake: wake_engine.clone(),
        ingest: ingest_tx,
        secret,
        ready: ready.clone(),
        counters: counters.clone(),
        connectors: Some(connectors.clone()),
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
    // Connectors: their sources poll, their webhooks are served beside the API.
    let hooks = api::vendor_hooks::router(Arc::new(api::vendor_hooks::HooksState {
        connectors: connectors.clone(),
        runner: runner.clone(),
        wake: wake_engine.clone(),
        public_url: public,
    }));
    let tasks = tokio_util::task::TaskTracker::new();
    tasks.spawn(crate::maintain::maintenance_loop(
        runner.clone(),
        config.retention,
        config.cap.map(|c| c.per.span()).unwrap_or_default(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::source::connector::poll_loop(
        connectors.clone(),
        runner.clone(),
        wake_engine.clone(),
        shutdown.clone(),
    ));
    let wake = Arc::new(Wake {
        engine: wake_engine.clone(),
        worker: wake_worker.clone(),
        engine_until: std::sync::atomic::AtomicI64::new(AWAKE),
    });
    tasks.spawn(ingest_loop(
        runner.clone(),
        ingest_rx,
        wake.clone(),
        counters.clone(),
    ));
    let engine_loop = tokio::spawn(engine_loop(
        runner.clone(),
        wake.clone(),
        counters.clone(),
        shutdown.clone(),
    ));
    let worker_loop = tokio::spawn(worker_loop(
        runner.clone(),
        worker.clone(),
        handed,
        wake_worker.clone(),
        counters.clone(),
        shutdown.clone(),
    ));
    if files.any() {
        let (runner, counters, wake, shutdown) = (
            runner.clone(),
            counters.clone(),
            wake_engine.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                match files.sync(&runner, &counters, false).await {
                    Ok(true) => wake.notify_one(),
                    Ok(false) => {}
                    Err(e) => error!(error = %format!("{e:#}"), "file source"),
                }
            }
        });
    }
    tasks.spawn(reload_loop(
        runner.clone(),
        worker.clone(),
        connectors,
        links,
        control.clone(),
        wake_engine.clone(),
        wake_worker.clone(),
    ));
    if control.systemd {
        tasks.spawn(watchdog(runner.clone(), shutdown.clone()));
    }
    tasks.close();

    ready.store(true, Ordering::Release);
    notify(&control, &[sd_notify::NotifyState::Ready]);
    info!(
        address = %listener.local_addr()?,
        playbooks = config.playbooks.len(),
        "serving"
    );
    axum::serve(listener, api::router(state).merge(hooks))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("while serving HTTP")?;
    notify(&control, &[sd_notify::NotifyState::Stopping]);
    info!("stopping: finishing deliveries in flight");
    let grace = std::time::Duration::try_from(config.delivery.shutdown_grace).unwrap_or_default();
    let drained = tokio::time::timeout(grace, async {
        let e = engine_loop.await;
        let w = worker_loop.await;
        (e, w)
    })
    .await;
    match drained {
        Ok((e, w)) => {
            e.context("engine loop")??;
            w.context("delivery loop")??;
        }
        Err(_) => warn!(
            grace = %format!("{:#}", config.delivery.shutdown_grace),
            "deliveries still in flight after the grace period; they will be retried (same Message-ID and webhook-id) after their lease"
        ),
    }
    tasks.wait().await;
    info!("stopped");
    Ok(())
}

fn notify(control: &Control, state: &[sd_notify::NotifyState<'_>]) {
    if control.systemd
        && let Err(e) = sd_notify::notify(state)
    {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd's watchdog we are alive, as long as the store answers:
/// a daemon whose database hangs is restarted rather than kept.
async fn watchdog<S: Store + 'static>(runner: Arc<Runner<S>>, shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = timeout / 2;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match tokio::time::timeout(every, runner.store.next_due()).await {
            Ok(Ok(_)) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Ok(Err(e)) => warn!(error = %e, "watchdog: the store failed; not pinging"),
            Err(_) => warn!("watchdog: the store did not answer; not pinging"),
        }
    }
}

/// SIGHUP: loads the configuration again; when it is valid, swaps the
/// engine and the senders, then evaluates every account under the new
/// playbooks. When it is not, says why and keeps running the old one.
async fn reload_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    worker: Arc<RwLock<Arc<Worker>>>,
    connectors: crate::deliver::connector::Connectors,
    links: Arc<dyn Fn(&str) -> String + Send + Sync>,
    control: Control,
    wake_engine: Arc<Notify>,
    wake_worker: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = control.shutdown.cancelled() => return,
            _ = control.reload.notified() => {}
        }
        let path = runner.engine().config.path.clone();
        // systemd 253+ wants the clock with RELOADING; older ones ignore it.
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => notify(&control, &[sd_notify::NotifyState::Reloading, now]),
            Err(_) => notify(&control, &[sd_notify::NotifyState::Reloading]),
        }
        info!(config = %path.display(), "reloading");
        let old = runner.engine().config;
        match crate::config::load(&path, &crate::config::process_env) {
            Err(diags) => {
                for d in &diags {
                    error!(problem = %d, "reload refused");
                }
                error!(
                    errors = diags.iter().filter(|d| d.is_error()).count(),
                    "reload refused: the configuration is invalid; still running the previous one"
                );
            }
            Ok((new, warnings)) => {
                for w in &warnings {
                    warn!(problem = %w, "reload");
                }
                for (what, before, after) in [
                    ("store", &old.store, &new.store),
                    (
                        "http.listen",
                        &old.http.listen.clone().unwrap_or_default(),
                        &new.http.listen.clone().unwrap_or_default(),
                    ),
                ] {
                    if before != after {
                        warn!(setting = what, "changed; takes effect at the next restart");
                    }
                }
                if new.connectors.keys().ne(old.connectors.keys()) {
                    warn!(
                        "connectors changed; plugins are loaded at start, so this takes effect at the next restart"
                    );
                }
                match worker_for(&new, &connectors) {
                    Err(e) => {
                        error!(error = %format!("{e:#}"), "reload refused; still running the previous configuration")
                    }
                    Ok(w) => {
                        let new = Arc::new(new);
                        *worker.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(w);
                        runner.set_engine(Engine::new(new.clone(), links.clone()));
                        info!(playbooks = new.playbooks.len(), "reloaded");
                        match runner.reevaluate_all(Timestamp::now(), BATCH).await {
                            Ok(p) => info!(
                                accounts = p.steps,
                                moments_fired = p.fired,
                                "accounts evaluated under the new playbooks"
                            ),
                            Err(e) => error!(error = %e, "re-evaluating accounts after reload"),
                        }
                        wake_engine.notify_one();
                        wake_worker.notify_one();
                    }
                }
            }
        }
        notify(&control, &[sd_notify::NotifyState::Ready]);
    }
}

/// How the ingest wakes the loops after its commit applied events itself.
struct Wake {
    engine: Arc<Notify>,
    worker: Arc<Notify>,
    /// Until when the engine loop sleeps (µs since the epoch), or
    /// `AWAKE` while it works: it sets this before reading what is due.
    engine_until: std::sync::atomic::AtomicI64,
}

const AWAKE: i64 = i64::MIN;

impl Wake {
    /// Whether an account due at `due` would be stepped late by the
    /// sleeping engine. While the engine is awake it may already have
    /// read the due times, so yes: a wake-up costs it one more look.
    fn engine_sleeps_past(&self, due: Option<Timestamp>) -> bool {
        let Some(due) = due else { return false };
        let until = self.engine_until.load(Ordering::SeqCst);
        until == AWAKE || due.as_microsecond() < until
    }
}

/// A request's events waiting for the group commit, and where to answer.
pub type IngestRequest = (Vec<Event>, oneshot::Sender<Result<Ingested, String>>);

/// Group commit: every request that arrived while the previous commit
/// was running is stored by the next one, in one transaction; each still
/// gets its own answer, and each is still all or nothing.
async fn ingest_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    mut rx: mpsc::Receiver<IngestRequest>,
    wake: Arc<Wake>,
    counters: Arc<Counters>,
) {
    const MAX_EVENTS: usize = 20_000;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut events = group[0].0.len();
        while events < MAX_EVENTS {
            match rx.try_recv() {
                Ok(r) => {
                    events += r.0.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let (mut batches, replies): (Vec<Vec<Event>>, Vec<_>) = group.into_iter().unzip();
        match runner.ingest(&mut batches, Timestamp::now()).await {
            Ok(done) => {
                for (n, reply) in done.ingested.iter().zip(replies) {
                    counters.ingested(n);
                    let _ = reply.send(Ok(*n));
                }
                counters.record(&done.progress);
                log_problems(&done.progress);
                if done.progress.actions > 0 {
                    wake.worker.notify_one();
                }
                if done.unapplied > 0 || wake.engine_sleeps_past(done.earliest_due) {
                    wake.engine.notify_one();
                }
            }
            Err(e) => {
                error!(error = %e, "storing events");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// The file source's two files, followed as they grow.
struct Files {
    accounts: Option<PathBuf>,
    events: Option<PathBuf>,
}

impl Files {
    fn new(config: &Config) -> Files {
        Files {
            accounts: config.sources.accounts.clone(),
            events: config.sources.events.clone(),
        }
    }

    fn any(&self) -> bool {
        self.accounts.is_some() || self.events.is_some()
    }

    /// Reads what the files gained since the saved positions; returns
    /// whether anything was taken in. At the very first start, accounts
    /// enter silently (a first deployment greets nobody); accounts added
    /// or changed later enter or move live, like `PUT /v1/accounts`.
    async fn sync<S: Store>(
        &self,
        runner: &Runner<S>,
        counters: &Counters,
        starting: bool,
    ) -> anyhow::Result<bool> {
        let mut any = false;
        if let Some(path) = &self.accounts {
            let name = format!("file:{}", path.display());
            let saved = runner.store.cursor(&name).await?;
            match saved
                .as_ref()
                .and_then(Value::as_str)
                .and_then(Position::decode)
            {
                None => {
                    let accounts = jsonl::read_accounts(path).with_context(|| {
                        format!("while reading accounts from {}", path.display())
                    })?;
                    let end = follow::read_new(path, Position::default(), u64::MAX)?.to;
                    let n = accounts.len();
                    let p = runner
                        .seed(accounts, Timestamp::now())
                        .await
                        .context("while admitting the accounts")?;
                    runner
                        .store
                        .ingest_at_cursor(
                            &[],
                            Timestamp::now(),
                            &name,
                            &Value::String(end.encode()),
                        )
                        .await?;
                    info!(file = %path.display(), accounts = n, admitted = p.steps, "accounts read (first start: entered silently)");
                    any = true;
                }
                Some(from) => {
                    let new = follow::read_new(path, from, 4 << 20)?;
                    if new.rotated {
                        warn!(file = %path.display(), "the accounts file is shorter than before: reading it again from the start");
                    }
                    for (n, line) in &new.lines {
                        match jsonl::parse_account(path, *n, line) {
                            Ok(a) => {
                                let p = runner.put_account(a, Timestamp::now()).await?;
                                log_problems(&p);
                            }
                            Err(e) => {
                                counters.source_rejected.fetch_add(1, Ordering::Relaxed);
                                error!(problem = %e, "account line skipped");
                            }
                        }
                    }
                    if new.to != from {
                        runner
                            .store
                            .ingest_at_cursor(
                                &[],
                                Timestamp::now(),
                                &name,
                                &Value::String(new.to.encode()),
                            )
                            .await?;
                        any |= !new.lines.is_empty();
                    }
                }
            }
        }
        if let Some(path) = &self.events {
            let name = format!("file:{}", path.display());
            let mut from = runner
                .store
                .cursor(&name)
                .await?
                .as_ref()
                .and_then(Value::as_str)
                .and_then(Position::decode)
                .unwrap_or_default();
            loop {
                let new = follow::read_new(path, from, 8 << 20)
                    .with_context(|| format!("while reading events from {}", path.display()))?;
                if new.rotated {
                    warn!(file = %path.display(), "the events file is shorter than before: reading it again from the start (events with an id are not taken twice)");
                }
                if new.to == from {
                    break;
                }
                let mut events = Vec::with_capacity(new.lines.len());
                for (n, line) in &new.lines {
                    match jsonl::parse_event(path, *n, line) {
                        Ok(e) => events.push(e),
                        Err(e) => {
                            counters.source_rejected.fetch_add(1, Ordering::Relaxed);
                            error!(problem = %e, "event line skipped");
                        }
                    }
                }
                let n = runner
                    .store
                    .ingest_at_cursor(
                        &events,
                        Timestamp::now(),
                        &name,
                        &Value::String(new.to.encode()),
                    )
                    .await
                    .context("while storing events from the file source")?;
                counters.ingested(&n);
                if starting || n.accepted > 0 {
                    info!(file = %path.display(), accepted = n.accepted, duplicates = n.duplicates, "events read");
                }
                any |= n.accepted > 0;
                from = new.to;
            }
        }
        Ok(any)
    }
}

fn log_problems(p: &Progress) {
    for problem in &p.problems {
        warn!(%problem, "engine");
    }
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
    wake: Arc<Wake>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        wake.engine_until.store(AWAKE, Ordering::SeqCst);
        let now = Timestamp::now();
        let mut planned = 0;
        let mut full = false;
        for (what, progress) in [
            ("events", runner.apply_pending(now, BATCH).await),
            ("timers", runner.run_due(now, BATCH).await),
        ] {
            match progress {
                Ok(p) => {
                    planned += p.actions;
                    full |= p.steps >= BATCH as usize;
                    counters.record(&p);
                    log_problems(&p);
                }
                Err(e) => error!(error = %e, step = what, "engine step failed; will retry"),
            }
        }
        if planned > 0 {
            wake.worker.notify_one();
        }
        if full && !shutdown.is_cancelled() {
            continue;
        }
        let next_event = runner
            .store
            .pending_events(1)
            .await
            .ok()
            .and_then(|e| e.first().map(|e| e.at));
        let next_due = runner.store.next_due().await.ok().flatten();
        let next = [next_event, next_due].into_iter().flatten().min();
        wake.engine_until.store(
            next.map_or(i64::MAX, |t| t.as_microsecond()),
            Ordering::SeqCst,
        );
        if !pause(next, &wake.engine, &shutdown).await {
            return Ok(());
        }
    }
}

async fn worker_loop<S: Store + 'static>(
    runner: Arc<Runner<S>>,
    worker: Arc<RwLock<Arc<Worker>>>,
    mut handed: mpsc::Receiver<crate::runner::Handed>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut last_due = std::time::Instant::now();
    // Handed claims not yet delivered: a batch holds the writer only as
    // long as a claim's would.
    let mut waiting = crate::runner::Waiting::default();
    loop {
        let current = worker.read().unwrap_or_else(|e| e.into_inner()).clone();
        let stop = || shutdown.is_cancelled();
        // First what the engine claimed for us as it created it (handed
        // back untried when stopping), then what fell due otherwise.
        waiting.fill(&mut handed, DELIVERY_BATCH as usize);
        // A claim that waited here for half its lease goes back to the
        // outbox untried, claimable at once: sent now, it could outlive its
        // lease mid-send while another instance sends the row too.
        let (claims, stale, claimed_at) =
            waiting.take(DELIVERY_BATCH as usize, current.delivery.lease);
        if !stale.is_empty() {
            warn!(
                claims = stale.len(),
                "handed claims waited half their lease: back to the outbox"
            );
            if let Err(e) = runner.release(stale, Timestamp::now()).await {
                error!(error = %e, "handing back stale claims");
            }
        }
        let was_handed = !claims.is_empty();
        let mut full = false;
        if was_handed {
            let done = current
                .deliver(&runner.store, claims, claimed_at, Timestamp::now(), &stop)
                .await;
            full = true;
            report(&counters, done);
        }
        if !shutdown.is_cancelled() && (!was_handed || last_due.elapsed() >= DUE_AT_LEAST_EVERY) {
            last_due = std::time::Instant::now();
            let done = current
                .deliver_due(&runner.store, Timestamp::now(), DELIVERY_BATCH, &stop)
                .await;
            // A full batch: more may be due right now.
            full |= done
                .as_ref()
                .is_ok_and(|d| d.total() >= DELIVERY_BATCH as usize);
            report(&counters, done);
        }
        if shutdown.is_cancelled() {
            // Stopping: every claim goes back untried, whatever its age.
            let rest = waiting.drain(&mut handed);
            report(
                &counters,
                current
                    .deliver(
                        &runner.store,
                        rest,
                        std::time::Instant::now(),
                        Timestamp::now(),
                        &stop,
                    )
                    .await,
            );
            return Ok(());
        }
        if full {
            continue;
        }
        let next = runner.store.next_outbox_at(KINDS).await.ok().flatten();
        if !pause(next, &wake, &shutdown).await {
            continue;
        }
    }
}

fn report(counters: &Counters, done: crate::store::Result<crate::deliver::worker::Delivered>) {
    match done {
        Ok(d) => {
            counters.delivered(&d);
            if d.late > 0 {
                warn!(
                    claims = d.late,
                    "claims whose turn came after half their lease: back to the outbox, untried (a batch slower than its lease; consider a longer `delivery.lease`)"
                );
            }
            for (key, error) in d.errors.iter().take(5) {
                warn!(outbox = %key, %error, "delivery failed");
            }
        }
        Err(e) => error!(error = %e, "delivery"),
    }
}
