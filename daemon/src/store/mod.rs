//! The store: the only module that knows SQL. Everything the daemon needs
//! to resume after a crash lives here: accounts with their engine state and
//! next due time, ingested events, the outbox, suppressions and the sends
//! that frequency caps count.
//!
//! `Store` is the contract both databases implement (`sqlite`, and
//! `postgres` for several daemons sharing one database), and `tests::suite`
//! the one test suite both must pass. Every write that acknowledges
//! something (an event accepted, a step's outbox rows) is one transaction,
//! committed durably before the call returns.

pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use crate::engine::AccountState;
use crate::model::event::Event;

/// Store failures. `Conflict` is expected under concurrency (another
/// writer moved first) and means: reload and retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database cannot be reached or refuses us, with where and why.
    #[error("{0}")]
    Connect(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("account `{0}` was changed by another writer; reload and retry")]
    Conflict(String),
    /// An event of the step was applied by another writer meanwhile: the
    /// step is stale and nothing was written; the event needs nothing more.
    #[error("an event for account `{0}` was already applied by another writer")]
    AlreadyApplied(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The outcome of an ingest: how many events were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicates: usize,
}

/// An event accepted and not yet applied, in the order to apply them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Arrival order; ties in `at` are applied in this order.
    pub seq: i64,
    pub event: Event,
    /// `at`, or the receipt time when the event had none.
    pub at: Timestamp,
}

/// An event just accepted, as the engine applies it: `at` is the event's
/// own time or its receipt.
#[derive(Debug, Clone, Copy)]
pub struct Arrived<'a> {
    pub seq: i64,
    pub event: &'a Event,
    pub at: Timestamp,
}

/// An account whose events just arrived can be stepped in the commit that
/// stores them: it is stored, and no earlier event of it waits.
#[derive(Debug)]
pub struct Ready<'a> {
    pub loaded: Loaded,
    /// In arrival order.
    pub events: Vec<Arrived<'a>>,
}

/// `ingest_applying`'s bookkeeping while a store inserts a group's events,
/// batch by batch: what each batch accepted, which accepted events go to
/// `plan` (under their account in `ready`) and how many wait.
pub(crate) struct Sorting<'a> {
    /// The accounts whose events can be applied at once.
    pub ready: Vec<Ready<'a>>,
    ingested: Vec<Ingested>,
    accepted: usize,
    unapplied: usize,
}

impl<'a> Sorting<'a> {
    pub(crate) fn new(ready: Vec<Ready<'a>>, batches: usize) -> Sorting<'a> {
        Sorting {
            ready,
            ingested: Vec::with_capacity(batches),
            accepted: 0,
            unapplied: 0,
        }
    }

    /// One event of the current batch: stored as `seq` (`None`: a
    /// duplicate, not stored), to be applied with the account at `slot`
    /// of `ready`, or (`None`) left for the engine.
    pub(crate) fn event(
        &mut self,
        event: &'a Event,
        at: Timestamp,
        slot: Option<usize>,
        seq: Option<i64>,
    ) {
        let Some(seq) = seq else { return };
        self.accepted += 1;
        match slot {
            Some(i) => self.ready[i].events.push(Arrived { seq, event, at }),
            None => self.unapplied += 1,
        }
    }

    /// Ends a batch of `len` events.
    pub(crate) fn end_batch(&mut self, len: usize) {
        self.ingested.push(Ingested {
            accepted: self.accepted,
            duplicates: len - self.accepted,
        });
        self.accepted = 0;
    }

    /// The accounts to step (those with events to apply), and the result
    /// without claims.
    pub(crate) fn finish(mut self) -> (Vec<Ready<'a>>, Applied) {
        self.ready.retain(|r| !r.events.is_empty());
        let applied = Applied {
            ingested: self.ingested,
            unapplied: self.unapplied,
            claimed: Vec::new(),
        };
        (self.ready, applied)
    }
}

/// What `ingest_applying` did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Per batch, in order.
    pub ingested: Vec<Ingested>,
    /// Accepted events left for the engine's next pass (none were applied).
    pub unapplied: usize,
    /// The new outbox rows already due, claimed in the same commit.
    pub claimed: Vec<Claimed>,
}

/// An account's state as stored, with the version that guards its update.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: AccountState,
    pub version: i64,
}

/// One outbox row to create. `key` is the idempotency key (playbook,
/// moment, account, occurrence, action, recipient): creating the same key
/// twice creates one row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbox {
    pub key: String,
    pub account: String,
    /// `email`, `webhook` or `connector`.
    pub kind: String,
    /// Everything the sender needs: target, rendered content, headers.
    pub payload: Value,
    /// When it may go out.
    pub at: Timestamp,
    /// Set when the action cannot be sent at all (its template failed to
    /// render): the row goes straight to the dead letters with this reason.
    pub failure: Option<String>,
}

/// An outbox row as listed (status, tests, dead letters).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub key: String,
    pub account: String,
    pub kind: String,
    pub payload: Value,
    pub at: Timestamp,
    pub state: OutboxState,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// What one engine step writes, atomically.
#[derive(Debug, Clone)]
pub struct Step {
    pub state: AccountState,
    /// The version the state was loaded at (`None`: a new account).
    pub expected_version: Option<i64>,
    pub next_due: Option<Timestamp>,
    /// Events this step applied.
    pub applied: Vec<i64>,
    pub outbox: Vec<NewOutbox>,
    /// The engine's decisions, for `touchpilot trace`.
    pub trace: Vec<TraceEntry>,
}

/// One decision taken for an account: entered or left a segment, a moment
/// fired or skipped (and why), a milestone reached, a problem.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    pub at: Timestamp,
    /// `entered`, `exited`, `fired`, `skipped`, `reached` or `problem`.
    pub kind: String,
    /// The details, as JSON (playbook, moment, reason, actions...).
    pub detail: Value,
}

/// An outbox row with its id, as the dead-letter list and trace show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    pub row: OutboxRow,
    /// When its state last changed.
    pub updated: Timestamp,
}

/// A webhook endpoint that answered `410 Gone`: nothing more is sent to it
/// until it is enabled again.
#[derive(Debug, Clone, PartialEq)]
pub struct DisabledEndpoint {
    pub name: String,
    pub reason: String,
    pub at: Timestamp,
}

/// The figures of `touchpilot status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Outbox rows by state.
    pub pending: i64,
    pub sending: i64,
    pub sent: i64,
    pub dead: i64,
    pub suppressed: i64,
    pub missed: i64,
    /// When the oldest pending row became due (its age is the backlog).
    pub oldest_pending: Option<Timestamp>,
    pub accounts: i64,
    /// Accounts whose timers are due now.
    pub due_accounts: i64,
    pub next_due: Option<Timestamp>,
    /// Accepted events not yet applied.
    pub events_pending: i64,
}

impl Stats {
    /// Records how many outbox rows are in `state` (as stored).
    pub(crate) fn count(&mut self, state: &str, n: i64) {
        let slot = match OutboxState::parse(state) {
            Some(OutboxState::Pending) => &mut self.pending,
            Some(OutboxState::Sending) => &mut self.sending,
            Some(OutboxState::Sent) => &mut self.sent,
            Some(OutboxState::Dead) => &mut self.dead,
            Some(OutboxState::Suppressed) => &mut self.suppressed,
            Some(OutboxState::Missed) => &mut self.missed,
            None => return,
        };
        *slot = n;
    }
}

/// A claimed outbox row. `token` fences the claim: once the lease has
/// expired and someone else claimed the row, this token no longer works.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: String,
    pub token: i64,
    pub key: String,
    pub account: String,
    pub kind: String,
    pub payload: Value,
    pub attempts: i64,
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sending,
    Sent,
    Dead,
    Suppressed,
    /// Due longer ago than the grace period when first tried (the daemon
    /// was down, or the event arrived late): recorded, never sent.
    Missed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Dead => "dead",
            OutboxState::Suppressed => "suppressed",
            OutboxState::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "sending" => OutboxState::Sending,
            "sent" => OutboxState::Sent,
            "dead" => OutboxState::Dead,
            "suppressed" => OutboxState::Suppressed,
            "missed" => OutboxState::Missed,
            _ => return None,
        })
    }
}

/// How a claimed row ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    /// A retryable failure: pending again from `next_attempt`.
    Retry {
        next_attempt: Timestamp,
        error: String,
    },
    /// A fatal failure: kept with its reason in the dead letters.
    Dead {
        error: String,
    },
    /// Not sent: unsubscribed or over the cap at send time.
    Suppressed {
        reason: String,
    },
    /// Not sent: first tried more than the grace period after it was due.
    Missed {
        reason: String,
    },
    /// Not tried after all (shutting down): pending again, attempt not counted.
    Released,
}

/// What one maintenance pass did. `ran` is false when another instance
/// holds the maintenance lock (PostgreSQL); `more` when a batch limit was
/// reached and another pass should follow at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintained {
    pub ran: bool,
    /// `sending` rows whose lease expired, made `pending` again.
    pub rescued: usize,
    /// Finished outbox rows folded into per-day counts.
    pub outbox_compacted: usize,
    /// Applied events folded into per-day counts.
    pub events_compacted: usize,
    /// Send records older than any cap window still needs.
    pub sends_pruned: usize,
    /// Trace rows (decisions) older than the horizon, dropped.
    pub traces_pruned: usize,
    pub more: bool,
}

/// A per-day aggregate of compacted history: `what` is `outbox` (name
/// `kind/state`) or `events` (name: the event type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub what: String,
    pub day: jiff::civil::Date,
    pub name: String,
    pub count: i64,
}

/// Wakes the daemon's loops when another process sharing the store wrote
/// something for them: new input for the engine, new outbox rows for the
/// workers.
#[derive(Debug, Clone, Default)]
pub struct Wakers {
    pub engine: Arc<tokio::sync::Notify>,
    pub outbox: Arc<tokio::sync::Notify>,
}

/// The columns a finished claim writes: its state, next attempt, error.
pub(crate) fn finish_columns(outcome: &Outcome) -> (OutboxState, Option<Timestamp>, Option<&str>) {
    match outcome {
        Outcome::Sent => (OutboxState::Sent, None, None),
        Outcome::Retry {
            next_attempt,
            error,
        } => (
            OutboxState::Pending,
            Some(*next_attempt),
            Some(error.as_str()),
        ),
        Outcome::Dead { error } => (OutboxState::Dead, None, Some(error.as_str())),
        Outcome::Suppressed { reason } => (OutboxState::Suppressed, None, Some(reason.as_str())),
        Outcome::Missed { reason } => (OutboxState::Missed, None, Some(reason.as_str())),
        Outcome::Released => (OutboxState::Pending, None, None),
    }
}

/// Days are stored as days since 1970-01-01 (UTC), in both stores.
pub(crate) fn day_count(what: String, day: i64, name: String, count: i64) -> Result<DayCount> {
    let day = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(day))
        .map_err(|e| StoreError::Corrupt(format!("day {day} of `{what}` history: {e}")))?;
    Ok(DayCount {
        what,
        day,
        name,
        count,
    })
}

/// The persistence contract of the daemon. Every method that returns `Ok`
/// must have made its write durable, except the daemon's own progress
/// (`commit_steps`, `claim`, `finish_many`), which may trail until the next
/// durable write or `durable()`: losing its last commits to a power loss
/// only repeats work under the same idempotency keys and ids.
pub trait Store: Send + Sync {
    /// Accepts events: all of them or none. An event whose id was accepted
    /// before is a duplicate and is not stored again.
    fn ingest(
        &self,
        events: &[Event],
        received: Timestamp,
    ) -> impl Future<Output = Result<Ingested>> + Send;

    /// Accepted events not yet applied, oldest first.
    fn pending_events(&self, limit: i64) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send;

    fn load_account(&self, id: &str) -> impl Future<Output = Result<Option<Loaded>>> + Send;

    /// Writes one engine step: the account's new state and due time, the
    /// events it applied, the outbox rows it planned. All or nothing; a
    /// stale `expected_version` is a `Conflict` and writes nothing.
    fn commit_step(&self, step: &Step) -> impl Future<Output = Result<()>> + Send;

    /// Accounts whose next due time is at or before `now`, earliest first.
    fn due_accounts(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The earliest due time of any account (the scheduler sleeps until it).
    fn next_due(&self) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// Claims up to `limit` rows of the given kinds due at `now` (pending,
    /// or sending with an expired lease) for `lease` from now.
    fn claim(
        &self,
        kinds: &[&str],
        now: Timestamp,
        lease: jiff::SignedDuration,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Ends a claim. Returns false, changing nothing, when the claim's token
    /// is no longer current (its lease expired and it was claimed again).
    fn finish(
        &self,
        id: &str,
        token: i64,
        outcome: &Outcome,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn outbox_state(&self, key: &str) -> impl Future<Output = Result<Option<OutboxState>>> + Send;

    /// Outbox rows in the order they go out (`at`, then key).
    fn list_outbox(&self, limit: i64) -> impl Future<Output = Result<Vec<OutboxRow>>> + Send;

    /// Marks events applied that no account step consumed (an event for an
    /// unknown account is reported, then set aside, not retried forever).
    fn set_aside(&self, seqs: &[i64]) -> impl Future<Output = Result<()>> + Send;

    /// When the next outbox row becomes due (the worker sleeps until then).
    fn next_outbox_at(
        &self,
        kinds: &[&str],
    ) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// This installation's secret (unsubscribe links), generated at first use.
    fn secret(&self) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Records an unsubscribe (idempotent).
    fn suppress(
        &self,
        address: &str,
        source: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    fn is_suppressed(&self, address: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Of `addresses`, those suppressed, lowercased: one read for a batch
    /// of emails rather than one per email. The default asks
    /// `is_suppressed` for each.
    fn suppressed_among(
        &self,
        addresses: &[&str],
    ) -> impl Future<Output = Result<std::collections::HashSet<String>>> + Send {
        async move {
            let mut out = std::collections::HashSet::new();
            for a in addresses {
                if self.is_suppressed(a).await? {
                    out.insert(a.to_ascii_lowercase());
                }
            }
            Ok(out)
        }
    }

    /// A connector source's cursor (`None` before its first poll).
    fn cursor(&self, source: &str) -> impl Future<Output = Result<Option<Value>>> + Send;

    /// Replaces a connector source's cursor. Called after the accounts and
    /// events of a poll are stored, so a crash repeats a poll (whose
    /// results are deduplicated) but never skips one.
    fn set_cursor(&self, source: &str, cursor: &Value) -> impl Future<Output = Result<()>> + Send;

    /// Emails sent to `address` after `since` (for the frequency cap).
    fn sends_since(
        &self,
        address: &str,
        since: Timestamp,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// The frequency cap, decided atomically across instances: when fewer
    /// than `max` emails to `address` were sent (or are being sent) after
    /// `since`, counts the claimed row `id` as one of them and returns
    /// true. Its `finish` keeps the count when `Sent` and gives it back
    /// otherwise; asking again for the same row (a retry, a rescued claim)
    /// does not count it twice.
    fn reserve_send(
        &self,
        id: &str,
        address: &str,
        since: Timestamp,
        max: i64,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// One maintenance pass, by one instance at a time: makes `sending`
    /// rows whose lease expired at `now` pending again, and folds history
    /// older than `before` (finished outbox rows, applied events) into
    /// per-day counts, dropping send records and trace rows older than
    /// `before`. Each
    /// pass is bounded; `more` asks for another.
    fn maintain(
        &self,
        now: Timestamp,
        before: Timestamp,
    ) -> impl Future<Output = Result<Maintained>> + Send;

    /// The per-day counts of compacted history, by kind, day and name.
    fn daily_counts(&self) -> impl Future<Output = Result<Vec<DayCount>>> + Send;

    /// Starts waking `wakers` when another process writes input or outbox
    /// rows (PostgreSQL: LISTEN/NOTIFY, reconnecting by itself). A store
    /// only one process uses has nothing to tell: the default does nothing.
    fn watch(&self, wakers: Wakers) -> impl Future<Output = Result<()>> + Send {
        let _ = wakers;
        async { Ok(()) }
    }

    /// Several requests' events in one commit (group commit): each batch is
    /// still all or nothing, and the answer is per batch, in order. An id
    /// repeated across batches is a duplicate in the later one.
    fn ingest_many(
        &self,
        batches: &[Vec<Event>],
        received: Timestamp,
    ) -> impl Future<Output = Result<Vec<Ingested>>> + Send {
        async move {
            let mut out = Vec::with_capacity(batches.len());
            for b in batches {
                out.push(self.ingest(b, received).await?);
            }
            Ok(out)
        }
    }

    /// `ingest_many`, and in the same commit the engine's steps for the
    /// accepted events it can apply at once: those due at `received`
    /// whose account is stored and has no earlier event waiting. `plan`
    /// turns them into steps; their events are stored already applied,
    /// and, in a store that claims at step time, the steps' new rows due
    /// at `received` are claimed under `lease` (as `commit_steps_claiming`).
    /// Every other accepted event waits for the engine (`pending_events`),
    /// as after `ingest_many`.
    fn ingest_applying<F>(
        &self,
        batches: &[Vec<Event>],
        received: Timestamp,
        lease: Option<jiff::SignedDuration>,
        plan: F,
    ) -> impl Future<Output = Result<Applied>> + Send
    where
        F: for<'b> FnOnce(Vec<Ready<'b>>) -> Vec<Step> + Send;

    /// Accepts events and moves a source's cursor (as `set_cursor`) in one
    /// commit, so that a restart neither reads them again nor skips any.
    fn ingest_at_cursor(
        &self,
        events: &[Event],
        received: Timestamp,
        source: &str,
        cursor: &Value,
    ) -> impl Future<Output = Result<Ingested>> + Send;

    /// Makes every write so far durable. A store may commit its own
    /// progress (steps, claims) more cheaply; before acknowledging such a
    /// write to someone outside (an account upsert), the caller asks this.
    fn durable(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Of these account ids, those not stored.
    fn missing_accounts(&self, ids: &[&str]) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Several steps, of distinct accounts, in one commit: all or nothing.
    /// A stale version in any of them is a `Conflict` and writes nothing.
    fn commit_steps(&self, steps: &[Step]) -> impl Future<Output = Result<()>> + Send;

    /// `commit_steps`, and in the same commit a claim (as `claim` would
    /// make it, under `lease`) of the new outbox rows already due at
    /// `now`: the engine hands them to its worker without another
    /// transaction. A store without it claims nothing here; the worker
    /// then claims those rows as it claims any other.
    fn commit_steps_claiming(
        &self,
        steps: &[Step],
        now: Timestamp,
        lease: jiff::SignedDuration,
    ) -> impl Future<Output = Result<Vec<Claimed>>> + Send {
        let _ = (now, lease);
        async move {
            self.commit_steps(steps).await?;
            Ok(Vec::new())
        }
    }

    /// Ends several claims in one commit; per claim, whether its token was
    /// still current (as `finish`).
    fn finish_many(
        &self,
        done: &[(String, i64, Outcome)],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Every account id after `after`, in order, `limit` at a time.
    fn account_ids(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    fn disable_endpoint(
        &self,
        name: &str,
        reason: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Returns whether it was disabled.
    fn enable_endpoint(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    fn disabled_endpoints(&self) -> impl Future<Output = Result<Vec<DisabledEndpoint>>> + Send;

    fn stats(&self, now: Timestamp) -> impl Future<Output = Result<Stats>> + Send;

    /// Rows in the given state, most recently changed first.
    fn list_state(
        &self,
        state: OutboxState,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Listed>>> + Send;

    /// An account's outbox rows, in the order they go out.
    fn account_outbox(
        &self,
        account: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Listed>>> + Send;

    /// Puts a dead row back in the queue, due `now`, its attempts reset.
    /// False when no dead row has this id.
    fn retry_dead(&self, id: &str, now: Timestamp) -> impl Future<Output = Result<bool>> + Send;

    /// An account's decisions, oldest first (the last `limit` of them).
    fn trace(
        &self,
        account: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<TraceEntry>>> + Send;
}
