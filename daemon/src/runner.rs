//! The engine over the store: what the daemon does with each accepted
//! event and each account whose timers fall due. One engine step, one
//! store transaction: the account's new state, its next due time, the
//! events it applied and the outbox rows it planned commit together, so a
//! crash between steps loses nothing and repeats nothing. Has no clock:
//! every call takes `now`, so tests drive it on a virtual clock.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::engine::plan::{Content, PlannedAction, Target};
use crate::engine::{AccountState, Decision, Engine, Mode};
use crate::model::account::Account;
use crate::store::{NewOutbox, Result, Step, Store, StoreError};

/// How many times a step is recomputed when another writer moved first.
const CONFLICT_RETRIES: usize = 5;

pub struct Runner<S: Store> {
    pub store: S,
    pub engine: Engine,
}

/// What a call did, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    pub steps: usize,
    pub actions: usize,
    /// Problems the engine reported (unknown accounts, conditions that
    /// could not be evaluated...), as messages.
    pub problems: Vec<String>,
}

impl<S: Store> Runner<S> {
    pub fn new(store: S, engine: Engine) -> Runner<S> {
        Runner { store, engine }
    }

    /// A first deployment's accounts: those not yet stored enter their
    /// playbook silently at `now` (no greeting for existing customers).
    pub async fn seed(&self, accounts: Vec<Account>, now: Timestamp) -> Result<Progress> {
        let mut progress = Progress::default();
        for account in accounts {
            if self.store.load_account(account.id()).await?.is_some() {
                continue;
            }
            let mut st = AccountState::new(account, now);
            let mut decisions = Vec::new();
            self.engine
                .admit(&mut st, now, Mode::Silent, &mut decisions);
            self.engine.restart_entry(&mut st, now);
            match self
                .commit(st, None, vec![], decisions, &mut progress)
                .await
            {
                // Another instance seeded it meanwhile: it is stored.
                Err(StoreError::Conflict(_)) => continue,
                other => other?,
            }
        }
        Ok(progress)
    }

    /// An account created or replaced while running: it enters (or moves)
    /// live, with `segment.entered`.
    pub async fn put_account(&self, account: Account, now: Timestamp) -> Result<Progress> {
        let mut progress = Progress::default();
        for _ in 0..CONFLICT_RETRIES {
            let loaded = self.store.load_account(account.id()).await?;
            let mut decisions = Vec::new();
            let (st, version) = match loaded {
                Some(l) => {
                    let mut st = l.state;
                    self.engine.replace_account(
                        &mut st,
                        account.clone(),
                        now,
                        Mode::Live,
                        &mut decisions,
                    );
                    (st, Some(l.version))
                }
                None => {
                    let mut st = AccountState::new(account.clone(), now);
                    self.engine.admit(&mut st, now, Mode::Live, &mut decisions);
                    (st, None)
                }
            };
            match self
                .commit(st, version, vec![], decisions, &mut progress)
                .await
            {
                Err(StoreError::Conflict(_)) => continue,
                other => return other.map(|()| progress),
            }
        }
        Err(StoreError::Conflict(account.id().to_string()))
    }

    /// Applies accepted events whose time has come, oldest first.
    pub async fn apply_pending(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        let mut progress = Progress::default();
        for stored in self.store.pending_events(batch).await? {
            if stored.at > now {
                break;
            }
            let mut done = false;
            for _ in 0..CONFLICT_RETRIES {
                let Some(loaded) = self.store.load_account(&stored.event.account).await? else {
                    progress.problems.push(format!(
                        "event for unknown account `{}` set aside",
                        stored.event.account
                    ));
                    self.store.set_aside(&[stored.seq]).await?;
                    done = true;
                    break;
                };
                let mut st = loaded.state;
                let mut decisions = Vec::new();
                self.engine.apply_event(
                    &mut st,
                    &stored.event,
                    stored.at,
                    Mode::Live,
                    &mut decisions,
                );
                match self
                    .commit_caused(
                        st,
                        Some(loaded.version),
                        stored.seq,
                        decisions,
                        &mut progress,
                    )
                    .await
                {
                    Err(StoreError::Conflict(_)) => continue,
                    // Another instance applied it first: nothing left to do.
                    Err(StoreError::AlreadyApplied(_)) => {
                        done = true;
                        break;
                    }
                    Err(e) => return Err(e),
                    Ok(()) => {
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(StoreError::Conflict(stored.event.account.clone()));
            }
        }
        Ok(progress)
    }

    /// Fires the timers of every account due at `now`.
    pub async fn run_due(&self, now: Timestamp, batch: i64) -> Result<Progress> {
        let mut progress = Progress::default();
        for id in self.store.due_accounts(now, batch).await? {
            for attempt in 0..CONFLICT_RETRIES {
                let Some(loaded) = self.store.load_account(&id).await? else {
                    break;
                };
                let mut st = loaded.state;
                let mut decisions = Vec::new();
                self.engine.advance(&mut st, now, &mut decisions);
                match self
                    .commit(st, Some(loaded.version), vec![], decisions, &mut progress)
                    .await
                {
                    Err(StoreError::Conflict(_)) if attempt + 1 < CONFLICT_RETRIES => continue,
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        Ok(progress)
    }

    async fn commit(
        &self,
        state: AccountState,
        expected_version: Option<i64>,
        applied: Vec<i64>,
        decisions: Vec<Decision>,
        progress: &mut Progress,
    ) -> Result<()> {
        self.write(state, expected_version, applied, None, decisions, progress)
            .await
    }

    /// A step caused by the stored event `seq`.
    async fn commit_caused(
        &self,
        state: AccountState,
        expected_version: Option<i64>,
        seq: i64,
        decisions: Vec<Decision>,
        progress: &mut Progress,
    ) -> Result<()> {
        self.write(
            state,
            expected_version,
            vec![seq],
            Some(seq),
            decisions,
            progress,
        )
        .await
    }

    async fn write(
        &self,
        state: AccountState,
        expected_version: Option<i64>,
        applied: Vec<i64>,
        cause: Option<i64>,
        decisions: Vec<Decision>,
        progress: &mut Progress,
    ) -> Result<()> {
        let mut outbox = Vec::new();
        let mut problems = Vec::new();
        for d in decisions {
            match d {
                Decision::Fired { actions, .. } => {
                    outbox.extend(actions.iter().map(|a| outbox_row(a, cause)))
                }
                Decision::Problem { message, .. } => problems.push(message),
                _ => {}
            }
        }
        let step = Step {
            next_due: self.engine.next_due(&state),
            state,
            expected_version,
            applied,
            outbox,
        };
        self.store.commit_step(&step).await?;
        progress.steps += 1;
        progress.actions += step.outbox.len();
        progress.problems.extend(problems);
        Ok(())
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
