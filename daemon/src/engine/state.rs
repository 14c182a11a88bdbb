//! Per-account state: everything the engine needs to resume for one
//! account, and nothing else. Serializable so that a store can persist it
//! as one record; small (bounded metric history, no event log).

use std::collections::VecDeque;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::small_map::SmallMap;
use crate::model::account::Account;

/// One account's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountState {
    pub account: Account,
    /// Latest value of each metric (`account.metrics.NAME`).
    #[serde(default)]
    pub metrics: SmallMap<serde_json::Value>,
    /// Samples of metrics that `on.metric` triggers watch, pruned to the
    /// longest `over` window (plus the sample just before it).
    #[serde(default)]
    pub history: SmallMap<VecDeque<(Timestamp, f64)>>,
    /// When each event type watched by an `absent` trigger was last seen.
    #[serde(default)]
    pub last_seen: SmallMap<Timestamp>,
    /// The playbook the account is in (its segment), if any.
    pub playbook: Option<String>,
    /// When it entered that playbook.
    pub entered_at: Option<Timestamp>,
    /// When each milestone (by id, across playbooks) was reached.
    #[serde(default)]
    pub reached: SmallMap<Timestamp>,
    /// Trigger state by playbook, then moment (or milestone) id.
    #[serde(default)]
    pub moments: SmallMap<SmallMap<MomentState>>,
    /// Timers due at or before this instant have been handled.
    pub clock: Timestamp,
}

/// Trigger state of one moment (or milestone) for one account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MomentState {
    /// Last time it fired (for `cooldown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Timestamp>,
    /// `schedule`: the last occurrence handled (fired or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence_handled: Option<Timestamp>,
    /// `absent`: the start of the silence already handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_handled: Option<Timestamp>,
    /// `metric`: the drop condition held at the last comparable sample.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// `date`: the target instant already handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_handled: Option<Timestamp>,
    /// Milestone: its lateness has been handled (fired or passed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late_handled: bool,
}

impl AccountState {
    pub fn new(account: Account, clock: Timestamp) -> AccountState {
        AccountState {
            account,
            metrics: SmallMap::new(),
            history: SmallMap::new(),
            last_seen: SmallMap::new(),
            playbook: None,
            entered_at: None,
            reached: SmallMap::new(),
            moments: SmallMap::new(),
            clock,
        }
    }

    pub fn id(&self) -> &str {
        self.account.id()
    }

    pub fn moment(&self, playbook: &str, id: &str) -> Option<&MomentState> {
        self.moments.get(playbook)?.get(id)
    }

    pub fn moment_mut(&mut self, playbook: &str, id: &str) -> &mut MomentState {
        self.moments
            .get_or_insert_with(playbook, SmallMap::new)
            .get_or_insert_with(id, MomentState::default)
    }
}
