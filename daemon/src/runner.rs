//! The engine over the store: what the daemon does with each accepted
//! event and each account whose timers fall due. One engine step, one
//! store transaction: the account's new state, its next due time, the
//! events it applied and the outbox rows it planned commit together, so a
//! crash between steps loses nothing and repeats nothing. Has no clock:
//! every call takes `now`, so tests drive it on a virtual clock.

use std::collections::HashMap;
use std::sync::RwLock;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::engine::plan::{Content, PlannedAction, Target};
use crate::engine::{AccountState, Decision, Engine, Mode, SkipReason};
use crate::model::account::Account;
use crate::model::event::Event;
use crate::store::{NewOutbox, Result, Step, Store, StoreError, StoredEvent, TraceEntry};

/// How many times a batch is recomputed when another writer moved first.
const CONFLICT_RETRIES: usize = 5;
/// The most events a group commit steps itself (`Runner::ingest`). Small
/// groups are what a latency-bound load sends (each client waits for its
/// answer): stepping them in the commit that stores them saves a
/// transaction and the read back. Larger groups come from a saturated
/// API or from big NDJSON batches; they are stored only, and the engine
/// loop steps them in larger batches beside the ingest, on the other
/// core, rather than in the requests' path. Measured in BENCHMARKS.md
/// (session 5).
const FUSE_AT_MOST: usize = 24;

pub struct Runner<S: Store> {
    pub store: S,
    /// Swapped whole by a reload; each call works on one snapshot.
    engine: RwLock<Engine>,
    handoff: Option<Handoff>,
    known: KnownAccounts,
}

/// The most account ids `KnownAccounts` holds before it starts over.
const KNOWN_AT_MOST: usize = 65_536;

/// Accounts found in the store. No account is ever deleted from it, so an
/// id found once stays found and need not be asked again; an id not found
/// is asked every time, as it may be created at any moment (by this
/// instance or another). Bounded: emptied when full.
#[derive(Default)]
struct KnownAccounts(std::sync::Mutex<std::collections::HashSet<String>>);

impl KnownAccounts {
    fn unknown<'a>(&self, ids: &[&'a str]) -> Vec<&'a str> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .copied()
            .filter(|i| !known.contains(*i))
            .collect()
    }

    fn found(&self, asked: &[&str], missing: &[String]) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + asked.len() > KNOWN_AT_MOST {
            known.clear();
        }
        for id in asked {
            if !missing.iter().any(|m| m == id) {
                known.insert((*id).to_string());
            }
        }
    }
}

/// Where steps hand the outbox rows they created already due: claimed in
/// the step's own commit, under `lease`, and sent to the worker at once.
/// Without it, such rows wait for the worker's next claim.
pub struct Handoff {
    pub lease: jiff::SignedDuration,
    pub to: tokio::sync::mpsc::Sender<Handed>,
}

/// Claims made in one commit, handed to the worker.
#[derive(Debug)]
pub struct Handed {
    /// Taken before the commit that claimed them: their lease runs from
    /// no earlier than this, so the worker can tell how much of it is
    /// left (`fresh`).
    pub at: std::time::Instant,
    pub claims: Vec<crate::store::Claimed>,
}

/// Whether a claim made at `at` can still be sent well within `lease`: at
/// most half of it has passed. A claim sent later could outlive its lease
/// mid-send, and another instance would send the row too.
pub fn fresh(at: std::time::Instant, lease: jiff::SignedDuration) -> bool {
    let lease = std::time::Duration::try_from(lease).unwrap_or_default();
    at.elapsed() <= lease / 2
}

/// The worker's queue of handed claims, in the order they were handed.
#[derive(Debug, Default)]
pub struct Waiting(std::collections::VecDeque<(std::time::Instant, crate::store::Claimed)>);

impl Waiting {
    /// Moves what `handed` holds into the queue until it holds `at_least`
    /// claims (a step can hand over more than a batch) or `handed` is empty.
    pub fn fill(&mut self, handed: &mut tokio::sync::mpsc::Receiver<Handed>, at_least: usize) {
        while self.0.len() < at_least {
            match handed.try_recv() {
                Ok(h) => self.0.extend(h.claims.into_iter().map(|c| (h.at, c))),
                Err(_) => break,
            }
        }
    }

    /// The next `at_most` claims: those to send now, those that waited
    /// past half their `lease` (`fresh`), to hand back untried, and the
    /// earliest instant the ones to send were claimed.
    pub fn take(
        &mut self,
        at_most: usize,
        lease: jiff::SignedDuration,
    ) -> (
        Vec<crate::store::Claimed>,
        Vec<crate::store::Claimed>,
        std::time::Instant,
    ) {
        let take = self.0.len().min(at_most);
        let (send, stale): (Vec<_>, Vec<_>) =
            self.0.drain(..take).partition(|(at, _)| fresh(*at, lease));
        let earliest = send
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or_else(std::time::Instant::now);
        let claims = |v: Vec<(_, _)>| v.into_iter().map(|(_, c)| c).collect();
        (claims(send), claims(stale), earliest)
    }

    /// Everything queued or still in `handed`, which is closed first.
    pub fn drain(
        &mut self,
        handed: &mut tokio::sync::mpsc::Receiver<Handed>,
    ) -> Vec<crate::store::Claimed> {
        handed.close();
        self.fill(handed, usize::MAX);
        self.0.drain(..).map(|(_, c)| c).collect()
    }
}

/// What a call did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    pub steps: usize,
    /// Moments and `on_late`s fired.
    pub fired: usize,
    pub actions: usize,
    /// Problems the engine reported (unknown accounts, conditions that
    /// could not be evaluated...), as messages.
    pub problems: Vec<String>,
}

impl Progress {
    fn absorb(&mut self, other: Progress) {
        self.steps += other.steps;
        self.fired += other.fired;
        self.actions += other.actions;
        self.problems.extend(other.problems);
    }
}

/// What `Runner::ingest` did.
#[derive(Debug, Default)]
pub struct Ingest {
    /// Per batch, in order.
    pub ingested: Vec<crate::store::Ingested>,
    /// Accepted events left for `apply_pending`.
    pub unapplied: usize,
    /// The earliest due time of the accounts stepped (the engine's timers
    /// may need to wake sooner).
    pub earliest_due: Option<Timestamp>,
    /// The steps taken in the commit that stored the events.
    pub progress: Progress,
}

/// A step being built: the account's state and what it produced.
struct Pending {
    state: AccountState,
    version: Option<i64>,
    applied: Vec<i64>,
    outbox: Vec<NewOutbox>,
    trace: Vec<TraceEntry>,
    progress: Progress,
}

impl Pending {
    fn new(state: AccountState, version: Option<i64>) -> Pending {
        Pending {
            state,
            version,
            applied: Vec::new(),
            outbox: Vec::new(),
            trace: Vec::new(),
            progress: Progress::default(),
        }
    }

    /// Records what one engine call decided; `cause` is the stored event
    /// that caused it, if any.
    fn record(&mut self, decisions: Vec<Decision>, cause: Option<i64>) {
        for d in decisions {
            let (at, kind, detail) = match d {
                Decision::Fired {
                    playbook,
                    moment,
                    trigger,
                    at,
                    actions,
                } => {
                    self.progress.fired += 1;
                    let planned: Vec<Value> = actions.iter().map(action_summary).collect();
                    self.outbox
                        .extend(actions.iter().map(|a| outbox_row(a, cause)));
                    (
                        at,
                        "fired",
                        json!({"playbook": playbook, "moment": moment, "trigger": trigger, "actions": planned}),
                    )
                }
                Decision::Skipped {
                    playbook,
                    moment,
                    at,
                    reason,
                } => {
                    let why = match reason {
                        SkipReason::Cooldown => "cooldown",
                        SkipReason::Phase => "phase",
                        SkipReason::Past => "before the account entered",
                    };
                    (
                        at,
                        "skipped",
                        json!({"playbook": playbook, "moment": moment, "reason": why}),
                    )
                }
                Decision::Entered {
                    playbook,
                    at,
                    silent,
                } => (
                    at,
                    "entered",
                    json!({"playbook": playbook, "silent": silent}),
                ),
                Decision::Exited { playbook, at } => (at, "exited", json!({"playbook": playbook})),
                Decision::MilestoneReached {
                    playbook,
                    milestone,
                    at,
                } => (
                    at,
                    "reached",
                    json!({"playbook": playbook, "milestone": milestone}),
                ),
                Decision::Problem { at, message } => {
                    self.progress.problems.push(message.clone());
                    (at, "problem", json!({"message": message}))
                }
            };
            self.trace.push(TraceEntry {
                at,
                kind: kind.to_string(),
                detail,
            });
        }
    }

    fn into_step(self, engine: &Engine) -> (Step, Progress) {
        let mut progress = self.progress;
        progress.steps = 1;
        progress.actions = self.outbox.len();
        (
            Step {
                next_due: engine.next_due(&self.state),
                state: self.state,
                expected_version: self.version,
                applied: self.applied,
                outbox: self.outbox,
                trace: self.trace,
            },
            progress,
        )
    }
}

fn action_summary(a: &PlannedAction) -> Value {
    let mut v = json!({"at": a.at.to_string(), "position": a.position, "template": a.template});
    let o = v.as_object_mut().expect("an object");
    match &a.target {
        Target::Email { to, .. } => {
            o.insert("kind".into(), "email".into());
            o.insert("to".into(), to.clone().into());
        }
        Target::Webhook { endpoint } => {
            o.insert("kind".into(), "webhook".into());
            o.insert("endpoint".into(), endpoint.clone().into());
        }
        Target::Connector { name, action } => {
            o.insert("kind".into(), "connector".into());
            o.insert("connector".into(), name.clone().into());
            o.insert("action".into(), action.clone().into());
        }
    }
    if let Err(e) = &a.content {
        o.insert("error".into(), e.to_string().into());
    }
    v
}

impl<S: Store> Runner<S> {
    pub fn new(store: S, engine: Engine) -> Runner<S> {
        Runner {
            store,
            engine: RwLock::new(engine),
            handoff: None,
            known: KnownAccounts::default(),
        }
    }

    /// Which of `ids` name no stored account (`Store::missing_accounts`),
    /// asking the store only about ids not found before.
    pub async fn missing_accounts(&self, ids: &[&str]) -> Result<Vec<String>> {
        let unknown = self.known.unknown(ids);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let missing = self.store.missing_accounts(&unknown).await?;
        self.known.found(&unknown, &missing);
        Ok(missing)
    }

    /// Hands the rows that steps create already due to a worker (`Handoff`).
    pub fn with_handoff(mut self, handoff: Handoff) -> Runner<S> {
        self.handoff = Some(handoff);
        self
    }

    /// The engine of the running configuration.
    pub fn engine(&self) -> Engine {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a reloaded configuration's engine in place for the next calls.
    pub fn set_engine(&self, engine: Engine) {
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = engine;
    }

    /// Commits built steps together, or reports a conflict. With a
    /// handoff, the rows already due at `now` go to the worker.
    async fn commit(
        &self,
        engine: &Engine,
        mut built: Vec<Pending>,
        now: Timestamp,
    ) -> Result<Progress> {
        let mut progress = Progress::default();
        let mut steps = Vec::with_capacity(built.len());
        // In account order, as every writer takes them: two transactions
        // stepping the same accounts wait for each other, never deadlock.
        built.sort_by(|a, b| a.state.id().cmp(b.state.id()));
        for p in built {
            let (step, pr) = p.into_step(engine);
            steps.push(step);
            progress.absorb(pr);
        }
        if steps.is_empty() {
            return Ok(progress);
        }
        let Some(handoff) = &self.handoff else {
            self.store.commit_steps(&steps).await?;
            return Ok(progress);
        };
        let at = std::time::Instant::now();
        let claims = self
            .store
            .commit_steps_claiming(&steps, now, handoff.lease)
            .await?;
        self.hand_over(Handed { at, claims }, now).await?;
        Ok(progress)
    }

    /// Sends claims made in a commit to the worker.
    async fn hand_over(&self, claimed: Handed, now: Timestamp) -> Result<()> {
        let Some(handoff) = &self.handoff else {
            return Ok(());
        };
        if !claimed.claims.is_empty()
            && let Err(unsent) = handoff.to.send(claimed).await
        {
            // The worker has stopped: the claims go back, untried, for the
            // next start (rather than waiting out their lease).
            self.release(unsent.0.claims, now).await?;
        }
        Ok(())
    }

    /// Hands claims back untried: claimable at once, their attempt not
    /// counted.
    pub async fn release(&self, claims: Vec<crate::store::Claimed>, now: Timestamp) -> Result<()> {
        let back: Vec<_> = claims
            .into_iter()
            .map(|c| (c.id, c.token, crate::store::Outcome::Released))
            .collect();
        self.store.finish_many(&back, now).await?;
        Ok(())
    }

    /// Stores several requests' events in one commit (group commit) and,
    /// for a group of at most `FUSE_AT_MOST` events, in that same commit
    /// applies those the store can apply at once (`Store::ingest_applying`):
    /// an event then costs one transaction, not two, and its actions are
    /// claimed for the worker there too, as far as the worker has room.
    /// The rest wait for `apply_pending`. Events without a time take `now`,
    /// as the store would record them. Should the steps fail to be
    /// written, the events are stored as `ingest_many` stores them, for
    /// the engine's next pass, and the failure is reported as a problem.
    pub async fn ingest(&self, batches: &mut [Vec<Event>], now: Timestamp) -> Result<Ingest> {
        for e in batches.iter_mut().flatten() {
            e.at.get_or_insert(now);
        }
        let batches = &*batches;
        if batches.iter().map(Vec::len).sum::<usize>() > FUSE_AT_MOST {
            let ingested = self.store.ingest_many(batches, now).await?;
            return Ok(Ingest {
                unapplied: ingested.iter().map(|i| i.accepted).sum(),
                ingested,
                ..Ingest::default()
            });
        }
        let engine = self.engine();
        let mut progress = Progress::default();
        let mut earliest_due: Option<Timestamp> = None;
        // Claim in the commit only what the worker has room for now: when
        // it is behind, the rows wait in the outbox for its own claims
        // (bigger batches) and the requests are not held up behind it.
        let permit = self.handoff.as_ref().and_then(|h| h.to.try_reserve().ok());
        let claimed_at = std::time::Instant::now();
        let lease = self
            .handoff
            .as_ref()
            .filter(|_| permit.is_some())
            .map(|h| h.lease);
        let plan = |ready: Vec<crate::store::Ready<'_>>| {
            let mut steps = Vec::with_capacity(ready.len());
            for mut r in ready {
                r.events.sort_by_key(|a| (a.at, a.seq));
                let mut p = Pending::new(r.loaded.state, Some(r.loaded.version));
                for a in &r.events {
                    let mut decisions = Vec::new();
                    engine.apply_event(&mut p.state, a.event, a.at, Mode::Live, &mut decisions);
                    p.record(decisions, Some(a.seq));
                }
                let (step, pr) = p.into_step(&engine);
                earliest_due = earliest_due.into_iter().chain(step.next_due).min();
                progress.absorb(pr);
                steps.push(step);
            }
            steps
        };
        let applied = match self.store.ingest_applying(batches, now, lease, plan).await {
            Ok(a) => a,
            Err(
                e @ (StoreError::Conflict(_)
                | StoreError::AlreadyApplied(_)
                | StoreError::Corrupt(_)),
            ) => {
                progress = Progress::default();
                earliest_due = None;
                progress
                    .problems
                    .push(format!("events stored for the engine's next pass: {e}"));
                let ingested = self.store.ingest_many(batches, now).await?;
                crate::store::Applied {
                    unapplied: ingested.iter().map(|i| i.accepted).sum(),
                    ingested,
                    claimed: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(permit) = permit
            && !applied.claimed.is_empty()
        {
            permit.send(Handed {
                at: claimed_at,
                claims: applied.claimed,
            });
        }
        Ok(Ingest {
            ingested: applied.ingested,
            unapplied: applied.unapplied,
            earliest_due,
            progress,
        })
    }

    /// A first deployment's accounts: those not yet stored enter their
    /// playbook silently at `now` (no greeting for existing customers).
    pub async fn seed(&self, accounts: Vec<Account>, now: Timestamp) -> Result<Progress> {
        let engine = self.engine();
        let mut progress = Progress::default();
        for chunk in accounts.chunks(500) {
            // Another instance seeding the same accounts may be first: each
            // try looks again at which are missing.
            let engine = &engine;
            progress.absorb(
                retrying(|| async move {
                    let ids: Vec<&str> = chunk.iter().map(Account::id).collect();
                    let missing = self.missing_accounts(&ids).await?;
                    let mut built = Vec::new();
                    let mut seen = std::collections::HashSet::new();
                    for account in chunk {
                        if !missing.iter().any(|m| m == account.id()) || !seen.insert(account.id())
                        {
                            continue;
                        }
                        let mut p = Pending::new(AccountState::new(account.clone(), now), None);
                        let mut decisions = Vec::new();
                        engine.admit(&mut p.state, now, Mode::Silent, &mut decisions);
                        engine.restart_entry(&mut p.state, now);
                        p.record(decisions, None);
                        built.push(p);
                    }
                    self.commit(engine, built, now).await
                })
                .await?,
            );
        }
        Ok(progress)
    }

    /// An account created or replaced while running: it enters (or moves)
    /// live, with `segment.entered`.
    pub async fn put_account(&self, account: Account, now: Timestamp) -> Result<Progress> {
        let account = &account;
        retrying(|| async move {
            let engine = self.engine();
            let mut decisions = Vec::new();
            let mut p = match self.store.load_account(account.id()).await? {
                Some(l) => {
                    let mut p = Pending::new(l.state, Some(l.version));
                    engine.replace_account(
                        &mut p.state,
                        account.clone(),
                        now,
                        Mode::Live,
                        &mut decisions,
                    );
                    p
                }
                None => {
                    let mut p = Pending::new(AccountState::new(account.clone(), now), None);
                    engine.admit(&mut p.state, now, Mode::Live, &mut decisions);
                    p
                }
            };
            p.record(decisions, None);
            self.commit(&engine, vec![p], now).await
        })
        .await
    }

    /// Applies accepted events whose time has come, oldest first: each
    /// account's events in order on one loaded state, every account's step
    /// in one commit. Another writer (an instance sharing the store) that
    /// moved an account or applied an event first makes it read the batch
    /// again.
    pub async fn apply_pending(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        retrying(|| self.apply_pending_once(now, batch)).await
    }

    async fn apply_pending_once(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        let mut progress = Progress::default();
        let events: Vec<StoredEvent> = self
            .store
            .pending_events(batch)
            .await?
            .into_iter()
            .take_while(|e| e.at <= now)
            .collect();
        if events.is_empty() {
            return Ok(progress);
        }
        let mut order: Vec<&str> = Vec::new();
        let mut by_account: HashMap<&str, Vec<&StoredEvent>> = HashMap::new();
        for e in &events {
            by_account
                .entry(e.event.account.as_str())
                .or_insert_with(|| {
                    order.push(e.event.account.as_str());
                    Vec::new()
                })
                .push(e);
        }
        let missing = self.missing_accounts(&order).await?;
        if !missing.is_empty() {
            let mut seqs = Vec::new();
            for m in &missing {
                progress
                    .problems
                    .push(format!("event for unknown account `{m}` set aside"));
                seqs.extend(by_account[m.as_str()].iter().map(|e| e.seq));
            }
            self.store.set_aside(&seqs).await?;
        }
        let engine = self.engine();
        let mut built = Vec::new();
        for account in order {
            if missing.iter().any(|m| m == account) {
                continue;
            }
            // Created between the two reads by nobody: it exists.
            let Some(loaded) = self.store.load_account(account).await? else {
                continue;
            };
            let mut p = Pending::new(loaded.state, Some(loaded.version));
            for stored in &by_account[account] {
                let mut decisions = Vec::new();
                engine.apply_event(
                    &mut p.state,
                    &stored.event,
                    stored.at,
                    Mode::Live,
                    &mut decisions,
                );
                p.applied.push(stored.seq);
                p.record(decisions, Some(stored.seq));
            }
            built.push(p);
        }
        progress.absorb(self.commit(&engine, built, now).await?);
        Ok(progress)
    }

    /// Fires the timers of every account due at `now`, in one commit.
    pub async fn run_due(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        retrying(|| async move {
            let ids = self.store.due_accounts(now, batch).await?;
            self.step_accounts(&ids, now, |engine, st, decisions| {
                engine.advance(st, now, decisions)
            })
            .await
        })
        .await
    }

    /// After a reload: every account is evaluated again under the new
    /// playbooks (it may change segment, and its due time is computed
    /// anew), `batch` accounts per commit. Returns the progress.
    pub async fn reevaluate_all(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        let mut progress = Progress::default();
        let mut after: Option<String> = None;
        loop {
            let ids = self.store.account_ids(after.as_deref(), batch).await?;
            let Some(last) = ids.last().cloned() else {
                return Ok(progress);
            };
            let step = retrying(|| {
                self.step_accounts(&ids, now, |engine, st, decisions| {
                    let account = st.account.clone();
                    engine.replace_account(st, account, now, Mode::Live, decisions)
                })
            });
            progress.absorb(step.await?);
            after = Some(last);
        }
    }

    /// One engine call per stored account of `ids`, all committed together.
    async fn step_accounts(
        &self,
        ids: &[String],
        now: Timestamp,
        step: impl Fn(&Engine, &mut AccountState, &mut Vec<Decision>),
    ) -> Result<Progress> {
        let engine = self.engine();
        let mut built = Vec::new();
        for id in ids {
            let Some(loaded) = self.store.load_account(id).await? else {
                continue;
            };
            let mut p = Pending::new(loaded.state, Some(loaded.version));
            let mut decisions = Vec::new();
            step(&engine, &mut p.state, &mut decisions);
            p.record(decisions, None);
            built.push(p);
        }
        self.commit(&engine, built, now).await
    }
}

/// Runs `attempt` again, up to `CONFLICT_RETRIES` times in all, while
/// another writer moved first (a stale version, an event already applied):
/// each try reads afresh.
async fn retrying<T, F: Future<Output = Result<T>>>(mut attempt: impl FnMut() -> F) -> Result<T> {
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(StoreError::Conflict(_) | StoreError::AlreadyApplied(_))
                if tries < CONFLICT_RETRIES =>
            {
                tries += 1
            }
            other => return other,
        }
    }
}

/// The idempotency key of an action: the same occurrence of the same
/// moment for the same account, action and recipient is one row, however
/// many times (or by however many instances) it is computed.
///
/// The occurrence is the firing instant, plus, for actions an event caused,
/// the event: its id, or for an event without one (which the contract says
/// cannot be deduplicated, so each fires) its place in the store, `cause`.
/// Timer-fired actions never depend on `cause`: whichever step computes a
/// cron occurrence, its key is the same.
pub fn idempotency_key(a: &PlannedAction, cause: Option<i64>) -> String {
    let event = match (&a.event_id, cause) {
        (Some(id), _) => format!("#{id}"),
        (None, Some(seq)) if matches!(a.trigger, "event" | "metric") => format!("#@{seq}"),
        _ => String::new(),
    };
    format!(
        "{}|{}|{}|{}{}|{}|{}",
        a.playbook,
        a.moment,
        a.account,
        a.fired_at,
        event,
        a.position,
        a.recipient()
    )
}

/// The outbox row of a planned action: everything a sender needs, and the
/// message id fixed now, so that a retried delivery repeats it.
pub fn outbox_row(a: &PlannedAction, cause: Option<i64>) -> NewOutbox {
    use sha2::Digest;
    let key = idempotency_key(a, cause);
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let mut payload = json!({
        "at": a.at.to_string(),
        "fired_at": a.fired_at.to_string(),
        "playbook": a.playbook,
        "moment": a.moment,
        "trigger": a.trigger,
        "template": a.template,
        "message_id": format!("<{hex}@touchpilot>"),
        "bypass_limits": a.bypass_limits,
    });
    let obj = payload.as_object_mut().expect("an object");
    let kind = match &a.target {
        Target::Email { to, contact } => {
            obj.insert("to".into(), Value::String(to.clone()));
            obj.insert("contact".into(), Value::Bool(*contact));
            if let Some(u) = &a.unsubscribe_url {
                obj.insert("unsubscribe_url".into(), Value::String(u.clone()));
            }
            "email"
        }
        Target::Webhook { endpoint } => {
            obj.insert("endpoint".into(), Value::String(endpoint.clone()));
            "webhook"
        }
        Target::Connector { name, action } => {
            obj.insert("connector".into(), Value::String(name.clone()));
            obj.insert("action".into(), Value::String(action.clone()));
            "connector"
        }
    };
    let (content, failure) = match &a.content {
        Ok(Content::Email(mail)) => (serde_json::to_value(mail).unwrap_or(Value::Null), None),
        Ok(Content::Json(v)) => (v.clone(), None),
        Ok(Content::Empty) => (Value::Null, None),
        Err(e) => (Value::Null, Some(e.to_string())),
    };
    obj.insert("content".into(), content);
    NewOutbox {
        key,
        account: a.account.clone(),
        kind: kind.to_string(),
        payload,
        at: a.at,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use jiff::SignedDuration;

    #[test]
    fn a_handed_claim_is_sent_only_within_half_its_lease() {
        let lease = SignedDuration::from_secs(60);
        assert!(super::fresh(Instant::now(), lease));
        let earlier = |s| Instant::now().checked_sub(Duration::from_secs(s)).unwrap();
        assert!(super::fresh(earlier(29), lease));
        assert!(!super::fresh(earlier(31), lease), "past half the lease");
        assert!(!super::fresh(earlier(1), SignedDuration::ZERO));
    }

    #[test]
    fn only_accounts_found_are_remembered_and_the_memory_is_bounded() {
        let known = super::KnownAccounts::default();
        assert_eq!(known.unknown(&["a", "b"]), ["a", "b"]);
        known.found(&["a", "b"], &["b".to_string()]);
        // `b` was missing: asked again, since it may be created meanwhile.
        assert_eq!(known.unknown(&["a", "b"]), ["b"]);
        known.found(&["b"], &[]);
        assert!(known.unknown(&["a", "b"]).is_empty());
        let many: Vec<String> = (0..super::KNOWN_AT_MOST).map(|i| format!("x{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        known.found(&many, &[]);
        assert_eq!(known.unknown(&["a", "x0"]), ["a"], "emptied when full");
        assert!(known.0.lock().unwrap().len() <= super::KNOWN_AT_MOST);
    }
}
