//! The engine: segment and rule evaluation, triggers and per-account state.
//!
//! Every entry point is a pure, synchronous function of the configuration,
//! one account's state, an input and an instant (`at`), returning
//! decisions. It reads no clock, opens no file or socket and sends nothing:
//! the dry run and the daemon call the same functions with a virtual or a
//! real clock and differ only in what they do with the decisions.

pub mod plan;
pub mod small_map;
pub mod state;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::config::Config;
use crate::evaluate::cel::{self as celx, Cond, Scope, Vars};
use crate::model::account::Account;
use crate::model::event::Event;
use crate::model::playbook::{Moment, PhaseFilter, Playbook, Trigger};
pub use plan::PlannedAction;
pub use state::{AccountState, MomentState};

/// Onboarding or ongoing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Onboarding,
    Ongoing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Onboarding => "onboarding",
            Phase::Ongoing => "ongoing",
        }
    }
}

/// Why an occurrence did not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Cooldown,
    Phase,
    /// It was due before `--from` or before the account entered.
    Past,
}

/// What the engine decided; the daemon records all of it (the trace), the
/// dry run prints the planned actions.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A moment or a milestone's `on_late` fired; its actions are planned.
    Fired {
        playbook: String,
        moment: String,
        trigger: &'static str,
        at: Timestamp,
        actions: Vec<PlannedAction>,
    },
    Skipped {
        playbook: String,
        moment: String,
        at: Timestamp,
        reason: SkipReason,
    },
    Entered {
        playbook: String,
        at: Timestamp,
        silent: bool,
    },
    Exited {
        playbook: String,
        at: Timestamp,
    },
    MilestoneReached {
        playbook: String,
        milestone: String,
        at: Timestamp,
    },
    /// An input that could not be applied (a bad patch, an unparsable date field).
    Problem {
        at: Timestamp,
        message: String,
    },
}

/// How inputs are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Normal operation: moments fire.
    Live,
    /// History replay and first load: state is built, nothing fires.
    Silent,
}

/// The engine over one configuration. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    /// Builds the unsubscribe link of an address (the daemon signs it).
    pub unsubscribe_url: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Timezones by name: looking one up in the tz database on every timer
    /// computation was a measurable share of a dry run.
    zones: Arc<std::sync::RwLock<HashMap<String, Option<TimeZone>>>>,
}

/// A one-nanosecond step: timers are handled "up to and including" an
/// instant, and an event at `t` must see timers before `t` only.
const TICK: SignedDuration = SignedDuration::from_nanos(1);

impl Engine {
    pub fn new(
        config: Arc<Config>,
        unsubscribe_url: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Engine {
        Engine {
            config,
            unsubscribe_url,
            zones: Arc::default(),
        }
    }

    fn playbook(&self, id: Option<&str>) -> Option<Arc<Playbook>> {
        id.and_then(|id| self.config.playbook(id)).cloned()
    }

    /// The account's timezone: its own, else the playbook's, else the default.
    pub fn timezone(&self, st: &AccountState, pb: Option<&Playbook>) -> TimeZone {
        st.account
            .timezone()
            .and_then(|n| self.zone(&n))
            .or_else(|| pb.and_then(|p| p.timezone.clone()))
            .unwrap_or_else(|| self.config.timezone.clone())
    }

    /// A timezone by IANA name; `None` for an unknown name.
    pub fn zone(&self, name: &str) -> Option<TimeZone> {
        if let Ok(zones) = self.zones.read()
            && let Some(z) = zones.get(name)
        {
            return z.clone();
        }
        let z = TimeZone::get(name).ok();
        if let Ok(mut zones) = self.zones.write()
            && zones.len() < 10_000
        {
            zones.insert(name.to_string(), z.clone());
        }
        z
    }

    /// The account as CEL and templates see it: its fields plus `metrics`,
    /// `segment` and `phase`.
    pub fn account_json(&self, st: &AccountState, at: Timestamp) -> Value {
        let pb = self.playbook(st.playbook.as_deref());
        let mut map = st.account.to_map();
        map.insert(
            "metrics".into(),
            Value::Object(
                st.metrics
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        );
        map.insert(
            "segment".into(),
            st.playbook
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        let phase = pb.as_deref().map(|p| self.phase(st, p, at).as_str());
        map.insert(
            "phase".into(),
            phase
                .map(|p| Value::String(p.into()))
                .unwrap_or(Value::Null),
        );
        Value::Object(map)
    }

    /// The account as CEL sees it, limited to `fields` when given: the
    /// conversion dominates evaluation, and most conditions read one or two
    /// fields of a large object.
    fn account_cel(
        &self,
        st: &AccountState,
        at: Timestamp,
        fields: Option<&BTreeSet<String>>,
    ) -> cel::Value {
        let wants = |k: &str| fields.is_none_or(|f| f.contains(k));
        let own = st
            .account
            .raw_fields()
            .filter(|(k, _)| wants(k))
            .map(|(k, v)| {
                let value: Value = serde_json::from_str(v.get()).unwrap_or(Value::Null);
                (k, celx::to_cel(&value))
            });
        let mut extra = Vec::with_capacity(3);
        if wants("metrics") {
            extra.push((
                "metrics",
                celx::map(st.metrics.iter().map(|(k, v)| (k, celx::to_cel(v)))),
            ));
        }
        if wants("segment") {
            let seg = st
                .playbook
                .as_ref()
                .map(|p| cel::Value::String(Arc::new(p.clone())))
                .unwrap_or(cel::Value::Null);
            extra.push(("segment", seg));
        }
        if wants("phase") {
            let pb = self.playbook(st.playbook.as_deref());
            let phase = pb.as_deref().map(|p| self.phase(st, p, at).as_str());
            extra.push((
                "phase",
                phase
                    .map(|p| cel::Value::String(Arc::new(p.to_string())))
                    .unwrap_or(cel::Value::Null),
            ));
        }
        celx::map(own.chain(extra))
    }

    /// The union of the account fields a set of conditions reads.
    fn fields_of<'a>(conds: impl IntoIterator<Item = &'a Cond>) -> Option<BTreeSet<String>> {
        let mut all = BTreeSet::new();
        for c in conds {
            all.extend(c.fields()?.iter().cloned());
        }
        Some(all)
    }

    /// Evaluates a condition; a failure is false, and reported with `what`
    /// names it (`segment.when of playbook x`).
    fn check(
        &self,
        cond: &Cond,
        scope: &Scope<'_>,
        at: Timestamp,
        out: &mut Vec<Decision>,
        what: impl FnOnce() -> String,
    ) -> bool {
        match cond.eval_in(scope) {
            Ok(b) => b,
            Err(message) => {
                out.push(Decision::Problem {
                    at,
                    message: format!(
                        "{} could not be evaluated, taken as false: {message}",
                        what()
                    ),
                });
                false
            }
        }
    }

    /// The first playbook, by priority, whose segment holds.
    pub fn segment_of(
        &self,
        st: &AccountState,
        at: Timestamp,
        out: &mut Vec<Decision>,
    ) -> Option<Arc<Playbook>> {
        let fields = Self::fields_of(
            self.config
                .playbooks
                .iter()
                .filter_map(|p| p.segment.as_ref()),
        );
        let account = self.account_cel(st, at, fields.as_ref());
        let scope = Scope::new(&Vars {
            account: &account,
            event: None,
            now: at,
        });
        self.config
            .playbooks
            .iter()
            .find(|p| match &p.segment {
                None => true,
                Some(c) => self.check(c, &scope, at, out, || {
                    format!("segment.when of playbook `{}`", p.id)
                }),
            })
            .cloned()
    }

    /// Onboarding start of the account under `pb`, if it has one.
    fn start(&self, st: &AccountState, pb: &Playbook) -> Option<Timestamp> {
        let field = &pb.onboarding.as_ref()?.start_field;
        st.account
            .instant_with(field, || self.timezone(st, Some(pb)))?
            .ok()
    }

    /// The account's phase under `pb` at `at`.
    pub fn phase(&self, st: &AccountState, pb: &Playbook, at: Timestamp) -> Phase {
        let Some(onb) = &pb.onboarding else {
            return Phase::Ongoing;
        };
        let Some(start) = self.start(st, pb) else {
            return Phase::Ongoing;
        };
        // A start still ahead is onboarding, whatever is already reached.
        if at < start {
            return Phase::Onboarding;
        }
        if onb
            .milestones
            .iter()
            .all(|m| st.reached.get(&m.id).is_some_and(|r| *r <= at))
        {
            return Phase::Ongoing;
        }
        if let Some(ends) = onb.ends_after
            && at >= add(start, ends.span())
        {
            return Phase::Ongoing;
        }
        Phase::Onboarding
    }

    /// Admits a new account: finds its segment and enters it. `Silent` for
    /// accounts present at a first start or a dry run's start.
    pub fn admit(&self, st: &mut AccountState, at: Timestamp, mode: Mode, out: &mut Vec<Decision>) {
        st.clock = st.clock.max(at.checked_sub(TICK).unwrap_or(at));
        let mut step = Step::new(mode);
        self.reevaluate(st, at, &mut step, out);
        self.drain(st, at, &mut step, out);
    }

    /// Replaces the account's data (an upsert from the API or a source).
    pub fn replace_account(
        &self,
        st: &mut AccountState,
        account: Account,
        at: Timestamp,
        mode: Mode,
        out: &mut Vec<Decision>,
    ) {
        self.advance_before(st, at, out);
        st.account = account;
        let mut step = Step::new(mode);
        self.reevaluate(st, at, &mut step, out);
        self.drain(st, at, &mut step, out);
    }

    /// Applies one event at `at` (its own time, or when it was received).
    pub fn apply_event(
        &self,
        st: &mut AccountState,
        ev: &Event,
        at: Timestamp,
        mode: Mode,
        out: &mut Vec<Decision>,
    ) {
        if mode == Mode::Live {
            self.advance_before(st, at, out);
        }
        let mut step = Step::new(mode);
        let mut changed = false;
        if ev.kind == "account.updated" {
            match st.account.merge(&ev.data) {
                Ok(()) => changed = true,
                Err(message) => out.push(Decision::Problem { at, message }),
            }
        }
        let sample = ev.metric();
        if let Some((name, value)) = sample {
            st.metrics
                .insert(name, ev.data.get("value").cloned().unwrap_or(Value::Null));
            if self.watches_metric(name) {
                let h = st.history.get_or_insert_with(name, Default::default);
                let pos = h.partition_point(|(t, _)| *t <= at);
                h.insert(pos, (at, value));
            }
            changed = true;
        }
        if changed {
            self.reevaluate(st, at, &mut step, out);
        }
        let seen = st.last_seen.get_or_insert_with(&ev.kind, || at);
        *seen = (*seen).max(at);
        if let Some(pb) = self.playbook(st.playbook.as_deref()) {
            let event_json = ev.to_json(at);
            self.dispatch(st, &pb, &event_json, at, &mut step, out);
            if let Some((name, value)) = sample {
                self.metric_moments(st, &pb, name, value, &event_json, at, &mut step, out);
            }
        }
        if let Some((name, _)) = sample {
            self.prune_history(st, name, at);
        }
        self.drain(st, at, &mut step, out);
    }

    /// Handles every timer due at or before `until`.
    pub fn advance(&self, st: &mut AccountState, until: Timestamp, out: &mut Vec<Decision>) {
        while let Some((due, timer)) = self.next_timer(st) {
            if due > until {
                break;
            }
            st.clock = st.clock.max(due);
            let mut step = Step::new(Mode::Live);
            self.fire_timer(st, timer, due, &mut step, out);
            self.drain(st, due, &mut step, out);
        }
        st.clock = st.clock.max(until);
    }

    /// Handles every timer due strictly before `at`.
    pub fn advance_before(&self, st: &mut AccountState, at: Timestamp, out: &mut Vec<Decision>) {
        if let Ok(before) = at.checked_sub(TICK)
            && before > st.clock
        {
            self.advance(st, before, out);
        }
    }

    /// When this account next needs `advance`, if ever.
    pub fn next_due(&self, st: &AccountState) -> Option<Timestamp> {
        self.next_timer(st).map(|(t, _)| t)
    }

    /// For accounts present at a start (first deployment, dry-run start):
    /// they enter at `at`, and whatever fell due before is passed silently.
    pub fn restart_entry(&self, st: &mut AccountState, at: Timestamp) {
        if st.playbook.is_some() {
            st.entered_at = Some(at);
        }
        st.clock = at.checked_sub(TICK).unwrap_or(at);
        if let Some(pb) = self.playbook(st.playbook.as_deref()) {
            self.pass_over_past(st, &pb, at);
        }
    }

    fn watches_metric(&self, name: &str) -> bool {
        self.config.playbooks.iter().any(|p| {
            p.moments
                .iter()
                .any(|m| matches!(&m.trigger, Trigger::Metric { metric, .. } if metric == name))
        })
    }

    fn longest_over(&self, name: &str) -> SignedDuration {
        self.config
            .playbooks
            .iter()
            .flat_map(|p| &p.moments)
            .filter_map(|m| match &m.trigger {
                Trigger::Metric { metric, over, .. } if metric == name => Some(over.span()),
                _ => None,
            })
            .max()
            .unwrap_or(SignedDuration::ZERO)
    }

    /// Keeps the samples inside the longest window and the one before it.
    fn prune_history(&self, st: &mut AccountState, name: &str, at: Timestamp) {
        let horizon = sub(at, self.longest_over(name));
        if let Some(h) = st.history.get_mut(name) {
            while h.len() > 1 && h[1].0 <= horizon {
                h.pop_front();
            }
        }
    }

    /// Re-evaluates segment membership and account-driven milestones after
    /// the account changed (or on admission).
    fn reevaluate(
        &self,
        st: &mut AccountState,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let target = self.segment_of(st, at, out);
        let current = st.playbook.clone();
        let target_id = target.as_ref().map(|p| p.id.clone());
        if target_id != current || st.entered_at.is_none() && target.is_some() {
            if let Some(old) = &current
                && target_id.as_ref() != Some(old)
            {
                out.push(Decision::Exited {
                    playbook: old.clone(),
                    at,
                });
                step.queue(
                    old,
                    "segment.exited",
                    json!({"from": current, "to": target_id}),
                );
            }
            st.playbook = target_id.clone();
            st.entered_at = target.as_ref().map(|_| at);
            if let Some(pb) = &target {
                out.push(Decision::Entered {
                    playbook: pb.id.clone(),
                    at,
                    silent: step.mode == Mode::Silent,
                });
                if step.mode == Mode::Live && (current.is_some() || step.announce_entry) {
                    step.queue(
                        &pb.id,
                        "segment.entered",
                        json!({"from": current, "to": target_id}),
                    );
                }
            }
        }
        if let Some(pb) = target {
            self.milestones_by_condition(st, &pb, at, step, out);
            // On entry, and after data changes that move a due time or a
            // date into the past (an earlier start, a changed renewal date):
            // passed over, never fired at an instant already gone.
            self.pass_over_past(st, &pb, at);
        }
    }

    /// Milestone dues and dates already past are passed over, not fired: on
    /// entry the account was elsewhere when they fell due; after a data
    /// change they were not due when their time came.
    fn pass_over_past(&self, st: &mut AccountState, pb: &Playbook, at: Timestamp) {
        if let (Some(onb), Some(start)) = (&pb.onboarding, self.start(st, pb)) {
            for m in &onb.milestones {
                if let Some(due) = m.due
                    && add(start, due.span()) < at
                {
                    st.moment_mut(&pb.id, &m.id).late_handled = true;
                }
            }
        }
        self.dates_changed(st, pb, at);
    }

    /// A date target that moved into the past is handled without firing.
    fn dates_changed(&self, st: &mut AccountState, pb: &Playbook, at: Timestamp) {
        for m in &pb.moments {
            if let Some(target) = self.date_target(st, pb, m)
                && target < at
            {
                st.moment_mut(&pb.id, &m.id).date_handled = Some(target);
            }
        }
    }

    fn date_target(&self, st: &AccountState, pb: &Playbook, m: &Moment) -> Option<Timestamp> {
        self.date_target_in(st, m, &self.timezone(st, Some(pb)))
    }

    fn date_target_in(&self, st: &AccountState, m: &Moment, tz: &TimeZone) -> Option<Timestamp> {
        let Trigger::Date {
            field,
            offset,
            hour,
            minute,
        } = &m.trigger
        else {
            return None;
        };
        let date = match offset.whole_days() {
            // "The day of the account's date field": the date as written
            // (CRMs store dates as midnight UTC; the contract's own example
            // is `2027-01-05T00:00:00Z` for a New York account: January 5).
            Some(days) => st
                .account
                .date_as_written(field)?
                .checked_add(jiff::Span::new().days(days))
                .ok()?,
            None => {
                let base = st.account.instant(field, tz)?.ok()?;
                add(base, offset.span()).to_zoned(tz.clone()).date()
            }
        };
        Some(crate::schedule::at_local(tz, date, *hour, *minute))
    }

    fn milestones_by_condition(
        &self,
        st: &mut AccountState,
        pb: &Playbook,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let Some(onb) = &pb.onboarding else { return };
        if !onb
            .milestones
            .iter()
            .any(|m| m.reached_when.is_some() && !st.reached.contains_key(&m.id))
        {
            return;
        }
        let fields = Self::fields_of(
            onb.milestones
                .iter()
                .filter_map(|m| m.reached_when.as_ref()),
        );
        let account = self.account_cel(st, at, fields.as_ref());
        let scope = Scope::new(&Vars {
            account: &account,
            event: None,
            now: at,
        });
        let hits: Vec<String> = onb
            .milestones
            .iter()
            .filter(|m| !st.reached.contains_key(&m.id))
            .filter(|m| {
                m.reached_when.as_ref().is_some_and(|c| {
                    self.check(c, &scope, at, out, || {
                        format!(
                            "reached_when of milestone `{}` (playbook `{}`)",
                            m.id, pb.id
                        )
                    })
                })
            })
            .map(|m| m.id.clone())
            .collect();
        for id in hits {
            self.reach(st, pb, &id, at, step, out);
        }
    }

    fn reach(
        &self,
        st: &mut AccountState,
        pb: &Playbook,
        milestone: &str,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        if st.reached.contains_key(milestone) {
            return;
        }
        let was = self.phase(st, pb, at);
        st.reached.insert(milestone, at);
        out.push(Decision::MilestoneReached {
            playbook: pb.id.clone(),
            milestone: milestone.to_string(),
            at,
        });
        step.queue(&pb.id, "milestone.reached", json!({"milestone": milestone}));
        let onb = pb
            .onboarding
            .as_ref()
            .expect("milestones live in onboarding");
        let all = onb
            .milestones
            .iter()
            .all(|m| st.reached.contains_key(&m.id));
        if all && was == Phase::Onboarding {
            step.queue(&pb.id, "onboarding.completed", json!({}));
        }
    }

    /// Sends an event to a playbook's milestones and event moments.
    fn dispatch(
        &self,
        st: &mut AccountState,
        pb: &Arc<Playbook>,
        event: &Value,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        let interested = pb
            .moments
            .iter()
            .any(|m| matches!(&m.trigger, Trigger::Event(e) if e.event == kind))
            || pb
                .onboarding
                .iter()
                .flat_map(|o| &o.milestones)
                .any(|m| m.reached_on.as_ref().is_some_and(|r| r.event == kind));
        if !interested {
            return;
        }
        let conds = pb
            .moments
            .iter()
            .filter_map(|m| match &m.trigger {
                Trigger::Event(e) if e.event == kind => e.when.as_ref(),
                _ => None,
            })
            .chain(
                pb.onboarding
                    .iter()
                    .flat_map(|o| &o.milestones)
                    .filter_map(|m| {
                        m.reached_on
                            .as_ref()
                            .filter(|r| r.event == kind)
                            .and_then(|r| r.when.as_ref())
                    }),
            );
        let fields = Self::fields_of(conds);
        let account = self.account_cel(st, at, fields.as_ref());
        let ev = celx::to_cel(event);
        let scope = Scope::new(&Vars {
            account: &account,
            event: Some(&ev),
            now: at,
        });
        if let Some(onb) = &pb.onboarding {
            let hits: Vec<String> = onb
                .milestones
                .iter()
                .filter(|m| !st.reached.contains_key(&m.id))
                .filter(|m| {
                    m.reached_on.as_ref().is_some_and(|r| {
                        r.event == kind
                            && r.when.as_ref().is_none_or(|c| {
                                self.check(c, &scope, at, out, || {
                                    format!(
                                        "reached_on.when of milestone `{}` (playbook `{}`)",
                                        m.id, pb.id
                                    )
                                })
                            })
                    })
                })
                .map(|m| m.id.clone())
                .collect();
            for id in hits {
                self.reach(st, pb, &id, at, step, out);
            }
        }
        for (i, m) in pb.moments.iter().enumerate() {
            let Trigger::Event(e) = &m.trigger else {
                continue;
            };
            if e.event != kind
                || !e.when.as_ref().is_none_or(|c| {
                    self.check(c, &scope, at, out, || {
                        format!("on.when of moment `{}` (playbook `{}`)", m.id, pb.id)
                    })
                })
            {
                continue;
            }
            self.fire_moment(st, pb, i, at, Some(event), step, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn metric_moments(
        &self,
        st: &mut AccountState,
        pb: &Arc<Playbook>,
        name: &str,
        value: f64,
        event: &Value,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        for (i, m) in pb.moments.iter().enumerate() {
            let Trigger::Metric { metric, drop, over } = &m.trigger else {
                continue;
            };
            if metric != name {
                continue;
            }
            let horizon = sub(at, over.span());
            let Some(h) = st.history.get(name) else {
                continue;
            };
            // The latest sample at or before `over` earlier.
            let idx = h.partition_point(|(t, _)| *t <= horizon);
            if idx == 0 {
                continue;
            }
            let earlier = h[idx - 1].1;
            let holds = drop.holds(earlier, value);
            let was = st.moment(&pb.id, &m.id).is_some_and(|s| s.dropped);
            st.moment_mut(&pb.id, &m.id).dropped = holds;
            if holds && !was {
                self.fire_moment(st, pb, i, at, Some(event), step, out);
            }
        }
    }

    /// Fires (or skips) a moment: phase and cooldown checks, then planning.
    #[allow(clippy::too_many_arguments)]
    fn fire_moment(
        &self,
        st: &mut AccountState,
        pb: &Arc<Playbook>,
        index: usize,
        at: Timestamp,
        event: Option<&Value>,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let m = &pb.moments[index];
        let skip = |reason| Decision::Skipped {
            playbook: pb.id.clone(),
            moment: m.id.clone(),
            at,
            reason,
        };
        if step.mode == Mode::Silent {
            out.push(skip(SkipReason::Past));
            return;
        }
        if m.phase != PhaseFilter::Any {
            let want = if m.phase == PhaseFilter::Onboarding {
                Phase::Onboarding
            } else {
                Phase::Ongoing
            };
            if self.phase(st, pb, at) != want {
                out.push(skip(SkipReason::Phase));
                return;
            }
        }
        if let (Some(cd), Some(last)) = (
            m.cooldown,
            st.moment(&pb.id, &m.id).and_then(|s| s.last_fired),
        ) && at < add(last, cd.span())
        {
            out.push(skip(SkipReason::Cooldown));
            return;
        }
        st.moment_mut(&pb.id, &m.id).last_fired = Some(at);
        let actions = plan::plan(self, st, pb, plan::Source::Moment(m), at, event, out);
        out.push(Decision::Fired {
            playbook: pb.id.clone(),
            moment: m.id.clone(),
            trigger: m.trigger.kind(),
            at,
            actions,
        });
    }

    /// Processes engine events queued during a step, in order. Each may
    /// queue more (a milestone reached completes onboarding).
    fn drain(
        &self,
        st: &mut AccountState,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let mut budget = 1000;
        while let Some((playbook, kind, data)) = step.queue.pop_front() {
            budget -= 1;
            if budget == 0 {
                out.push(Decision::Problem {
                    at,
                    message: "engine events loop: stopped after 1000 in one step".into(),
                });
                break;
            }
            let seen = st.last_seen.get_or_insert_with(kind, || at);
            *seen = (*seen).max(at);
            let Some(pb) = self.playbook(Some(&playbook)) else {
                continue;
            };
            let event = json!({"id": null, "account": st.id(), "type": kind, "at": at.to_string(), "data": data});
            self.dispatch(st, &pb, &event, at, step, out);
        }
    }

    /// The earliest pending timer of the account's playbook.
    fn next_timer(&self, st: &AccountState) -> Option<(Timestamp, Timer)> {
        let pb = self.playbook(st.playbook.as_deref())?;
        let entered = st.entered_at?;
        let mut best: Option<(Timestamp, Timer)> = None;
        let mut offer = |t: Timestamp, timer: Timer| {
            if best
                .as_ref()
                .is_none_or(|(b, bt)| (t, timer.order()) < (*b, bt.order()))
            {
                best = Some((t, timer));
            }
        };
        if let (Some(onb), Some(start)) = (&pb.onboarding, self.start(st, &pb)) {
            for (i, m) in onb.milestones.iter().enumerate() {
                let Some(due) = m.due else { continue };
                if st.reached.contains_key(&m.id)
                    || st.moment(&pb.id, &m.id).is_some_and(|s| s.late_handled)
                {
                    continue;
                }
                offer(add(start, due.span()), Timer::Late(i));
            }
        }
        let tz = self.timezone(st, Some(&pb));
        let entry_floor = entered.checked_sub(TICK).unwrap_or(entered);
        for (i, m) in pb.moments.iter().enumerate() {
            match &m.trigger {
                Trigger::Schedule(s) => {
                    // Each schedule keeps its own mark, so that two moments
                    // due at the same instant both fire; and never reaches
                    // before the account's clock (a timezone change must not
                    // produce an occurrence in the past).
                    let handled = st.moment(&pb.id, &m.id).and_then(|s| s.occurrence_handled);
                    let clock_floor = st.clock.checked_sub(TICK).unwrap_or(st.clock);
                    let floor = handled
                        .map_or(entry_floor, |h| h.max(entry_floor))
                        .max(clock_floor);
                    if let Some(t) = s.next_after(floor, &tz) {
                        offer(t, Timer::Moment(i));
                    }
                }
                Trigger::Absent { event, silence } => {
                    let base = st
                        .last_seen
                        .get(event)
                        .copied()
                        .map_or(entered, |l| l.max(entered));
                    if st.moment(&pb.id, &m.id).and_then(|s| s.silence_handled) != Some(base) {
                        offer(add(base, silence.span()), Timer::Moment(i));
                    }
                }
                Trigger::Date { .. } => {
                    if let Some(t) = self.date_target(st, &pb, m)
                        && st.moment(&pb.id, &m.id).and_then(|s| s.date_handled) != Some(t)
                    {
                        offer(t, Timer::Moment(i));
                    }
                }
                _ => {}
            }
        }
        best
    }

    fn fire_timer(
        &self,
        st: &mut AccountState,
        timer: Timer,
        at: Timestamp,
        step: &mut Step,
        out: &mut Vec<Decision>,
    ) {
        let Some(pb) = self.playbook(st.playbook.as_deref()) else {
            return;
        };
        match timer {
            Timer::Late(i) => {
                let m = &pb
                    .onboarding
                    .as_ref()
                    .expect("late timers come from onboarding")
                    .milestones[i];
                // The contract's only condition is "if not reached" (a
                // reached milestone has no timer): a due at or after
                // `ends_after` still escalates.
                st.moment_mut(&pb.id, &m.id).late_handled = true;
                step.queue(&pb.id, "milestone.late", json!({"milestone": m.id}));
                let actions = plan::plan(self, st, &pb, plan::Source::Milestone(m), at, None, out);
                out.push(Decision::Fired {
                    playbook: pb.id.clone(),
                    moment: m.id.clone(),
                    trigger: "late",
                    at,
                    actions,
                });
            }
            Timer::Moment(i) => {
                let m = &pb.moments[i];
                match &m.trigger {
                    Trigger::Absent { event, .. } => {
                        let entered = st.entered_at.unwrap_or(at);
                        let base = st
                            .last_seen
                            .get(event)
                            .copied()
                            .map_or(entered, |l| l.max(entered));
                        st.moment_mut(&pb.id, &m.id).silence_handled = Some(base);
                    }
                    Trigger::Date { .. } => {
                        st.moment_mut(&pb.id, &m.id).date_handled = Some(at);
                    }
                    Trigger::Schedule(_) => {
                        st.moment_mut(&pb.id, &m.id).occurrence_handled = Some(at);
                    }
                    _ => {}
                }
                self.fire_moment(st, &pb, i, at, None, step, out);
            }
        }
    }
}

/// A pending timer of one account.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// A milestone's due time (index into the milestones).
    Late(usize),
    /// A schedule, absent or date moment (index into the moments).
    Moment(usize),
}

impl Timer {
    /// Milestones before moments at one instant, each in playbook order.
    fn order(&self) -> (u8, usize) {
        match self {
            Timer::Late(i) => (0, *i),
            Timer::Moment(i) => (1, *i),
        }
    }
}

/// The engine events raised while handling one input.
struct Step {
    mode: Mode,
    /// Whether entering a playbook from no segment announces itself
    /// (`segment.entered`): true for accounts created while running.
    announce_entry: bool,
    queue: VecDeque<(String, &'static str, Value)>,
}

impl Step {
    fn new(mode: Mode) -> Step {
        Step {
            mode,
            announce_entry: mode == Mode::Live,
            queue: VecDeque::new(),
        }
    }

    fn queue(&mut self, playbook: &str, kind: &'static str, data: Value) {
        self.queue.push_back((playbook.to_string(), kind, data));
    }
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}
