//! Playbooks as the engine uses them: validated, compiled, immutable.
//! Built only by `config::build`; the engine never sees YAML.

use std::path::PathBuf;

use jiff::tz::TimeZone;

use crate::config::duration::Duration;
use crate::evaluate::cel::Cond;
use crate::schedule::cron::Schedule;
use crate::schedule::window::SendWindow;

#[derive(Debug)]
pub struct Playbook {
    pub id: String,
    pub name: String,
    pub file: PathBuf,
    pub priority: i64,
    /// `None`: every account matches.
    pub segment: Option<Cond>,
    pub timezone: Option<TimeZone>,
    pub send_window: Option<SendWindow>,
    pub onboarding: Option<Onboarding>,
    pub moments: Vec<Moment>,
}

impl Playbook {
    pub fn moment(&self, id: &str) -> Option<&Moment> {
        self.moments.iter().find(|m| m.id == id)
    }
}

#[derive(Debug)]
pub struct Onboarding {
    /// The account field holding the start timestamp.
    pub start_field: String,
    pub ends_after: Option<Duration>,
    pub milestones: Vec<Milestone>,
}

#[derive(Debug)]
pub struct Milestone {
    pub id: String,
    pub owner: Option<String>,
    pub objective: Option<String>,
    pub reached_on: Option<EventMatch>,
    pub reached_when: Option<Cond>,
    pub due: Option<Duration>,
    pub on_late: Vec<Action>,
}

#[derive(Debug)]
pub struct EventMatch {
    pub event: String,
    pub when: Option<Cond>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseFilter {
    Any,
    Onboarding,
    Ongoing,
}

#[derive(Debug)]
pub struct Moment {
    pub id: String,
    pub owner: Option<String>,
    pub objective: Option<String>,
    pub phase: PhaseFilter,
    pub trigger: Trigger,
    pub cooldown: Option<Duration>,
    pub bypass_limits: bool,
    pub actions: Vec<Action>,
}

/// How much a metric must fall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drop {
    /// Fraction of the earlier value, `0.3` for `30%`.
    Relative(f64),
    Absolute(f64),
}

impl Drop {
    /// Whether going from `before` to `after` is a drop of at least this much.
    pub fn holds(self, before: f64, after: f64) -> bool {
        match self {
            Drop::Relative(f) => {
                before > 0.0 && (before - after) >= f * before - 1e-9 * before.abs()
            }
            Drop::Absolute(a) => before - after >= a - 1e-9,
        }
    }
}

#[derive(Debug)]
pub enum Trigger {
    Schedule(Schedule),
    Event(EventMatch),
    Absent {
        event: String,
        silence: Duration,
    },
    Metric {
        metric: String,
        drop: Drop,
        over: Duration,
    },
    Date {
        field: String,
        offset: Duration,
        hour: i8,
        minute: i8,
    },
}

impl Trigger {
    /// The `trigger` value of dry-run output.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule(_) => "schedule",
            Trigger::Event(_) => "event",
            Trigger::Absent { .. } => "absent",
            Trigger::Metric { .. } => "metric",
            Trigger::Date { .. } => "date",
        }
    }

    /// Whether templates of this trigger see an `event`.
    pub fn has_event(&self) -> bool {
        matches!(self, Trigger::Event(_) | Trigger::Metric { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    Contacts,
    ContactsWithRole(String),
    Owner,
    Address(String),
}

impl Recipients {
    pub fn parse(text: &str) -> Result<Recipients, String> {
        let t = text.trim();
        if t == "contacts" {
            return Ok(Recipients::Contacts);
        }
        if t == "owner" {
            return Ok(Recipients::Owner);
        }
        if let Some(inner) = t
            .strip_prefix("contacts[")
            .and_then(|r| r.strip_suffix(']'))
        {
            let Some(role) = inner.trim().strip_prefix("role") else {
                return Err(format!(
                    "invalid recipient `{t}`: expected `contacts[role=NAME]`"
                ));
            };
            let role = role
                .trim_start()
                .strip_prefix('=')
                .map(str::trim)
                .unwrap_or("");
            let role = role.trim_matches(|c| c == '"' || c == '\'');
            if role.is_empty() {
                return Err(format!(
                    "invalid recipient `{t}`: expected `contacts[role=NAME]`"
                ));
            }
            return Ok(Recipients::ContactsWithRole(role.to_string()));
        }
        if is_plausible_address(t) {
            return Ok(Recipients::Address(t.to_string()));
        }
        Err(format!(
            "invalid recipient `{t}`: expected `contacts`, `contacts[role=NAME]`, `owner` or an email address"
        ))
    }
}

/// A deliberately loose check: one `@`, something on each side, no spaces
/// or header-breaking characters. The SMTP server has the last word.
pub fn is_plausible_address(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Email {
        to: Recipients,
        template: String,
    },
    Webhook {
        endpoint: String,
        template: String,
    },
    Connector {
        name: String,
        action: String,
        template: Option<String>,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Email { .. } => "email",
            Action::Webhook { .. } => "webhook",
            Action::Connector { .. } => "connector",
        }
    }
}
