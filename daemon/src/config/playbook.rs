//! The playbook file format as Rust types: what `serde` parses and what
//! `touchpilot schema` publishes. Doc comments here are the reference
//! manual (they become the schema's descriptions). Nothing here is checked
//! beyond its shape; `config::validate` checks meaning.

use schemars::JsonSchema;
use serde::Deserialize;

use super::spanned::{Scalar, Sp, nullable};

/// One customer segment and its engagement model.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Touchpilot playbook")]
pub struct PlaybookSpec {
    /// Unique playbook id; default: the file name without `.yaml`.
    pub id: Option<Sp<String>>,
    /// Human-readable name, shown in reports and available to templates.
    pub name: Option<String>,
    /// Which accounts this playbook serves. Without it, every account matches.
    pub segment: Option<SegmentSpec>,
    /// IANA timezone for accounts that have none (then the daemon default).
    pub timezone: Option<Sp<String>>,
    /// When emails may go out, in each recipient's own timezone. An email
    /// fired outside the window waits for the next opening.
    pub send_window: Option<SendWindowSpec>,
    /// The onboarding phase: milestones with due dates and escalations.
    pub onboarding: Option<OnboardingSpec>,
    /// Moments of the engagement model: what happens, when, and by whom.
    #[serde(default, deserialize_with = "nullable")]
    pub moments: Vec<MomentSpec>,
}

/// Segment membership.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    /// CEL expression over `account` and `now`; the account belongs here when true.
    pub when: Sp<String>,
    /// Lower is tried first; an account gets the first playbook that matches. Default 100.
    pub priority: Option<Sp<i64>>,
}

/// Days and hours during which emails may be sent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendWindowSpec {
    /// Days of the week (`mon` ... `sun`); default every day.
    pub days: Option<Sp<Vec<Sp<String>>>>,
    /// Local hours as `HH:MM-HH:MM`, start inclusive, end exclusive; default all day.
    pub hours: Option<Sp<String>>,
}

/// The onboarding phase.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnboardingSpec {
    /// The account field (a timestamp) that starts onboarding, such as `signed_at`.
    pub start: Sp<String>,
    /// The account is ongoing after this even if milestones are open (`90d`).
    pub ends_after: Option<Sp<Scalar>>,
    /// Milestones; onboarding completes when all are reached.
    #[serde(default, deserialize_with = "nullable")]
    pub milestones: Vec<MilestoneSpec>,
}

/// A step the customer should reach during onboarding.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneSpec {
    /// Unique within the playbook (shared with moment ids).
    pub id: Sp<String>,
    /// Who is responsible (free text, shown in reports).
    pub owner: Option<String>,
    /// What reaching it means for the customer.
    pub objective: Option<String>,
    /// Reached when a matching event arrives.
    pub reached_on: Option<EventMatchSpec>,
    /// Reached when this CEL expression over `account` holds (checked on every account change).
    pub reached_when: Option<Sp<String>>,
    /// Expected within this long after onboarding starts (`7d`).
    pub due: Option<Sp<Scalar>>,
    /// Actions fired once at start + due if the milestone is not reached by then.
    #[serde(default, deserialize_with = "nullable")]
    pub on_late: Vec<ActionSpec>,
}

/// An event type and an optional CEL condition over `event` and `account`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventMatchSpec {
    /// Event type, such as `meeting.completed`.
    pub event: Sp<String>,
    /// CEL condition over `event`, `account` and `now`.
    pub when: Option<Sp<String>>,
}

/// A moment of the engagement model.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MomentSpec {
    /// Unique within the playbook (shared with milestone ids).
    pub id: Sp<String>,
    /// Who owns the moment (free text, shown in reports and templates).
    pub owner: Option<String>,
    /// What the moment is for.
    pub objective: Option<String>,
    /// `onboarding`, `ongoing` or `any` (default): the phase in which it may fire.
    pub phase: Option<Sp<String>>,
    /// Time-based trigger: a 5-field cron expression in the account's timezone
    /// (or `@daily`, `@weekly`, `@monthly`, `@yearly`).
    pub schedule: Option<Sp<String>>,
    /// Event-based trigger.
    pub on: Option<TriggerSpec>,
    /// After firing for an account, do not fire again for it within this long.
    pub cooldown: Option<Sp<Scalar>>,
    /// Exempt from the per-contact frequency cap (never from unsubscribes).
    #[serde(default)]
    pub bypass_limits: bool,
    /// What happens when the moment fires, in order.
    #[serde(default, deserialize_with = "nullable")]
    pub actions: Vec<ActionSpec>,
}

/// Exactly one of: `event` (+ `when`), `absent` + `for`,
/// `metric` + `drop` + `over`, `date` + `offset` (+ `at`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Fires on each event of this type, at the event's time.
    pub event: Option<Sp<String>>,
    /// CEL condition over `event`, `account` and `now` (with `event`).
    pub when: Option<Sp<String>>,
    /// Fires when no event of this type has been seen for `for`.
    pub absent: Option<Sp<String>>,
    /// The silence after which `absent` fires (`90d`).
    #[serde(rename = "for")]
    pub for_: Option<Sp<Scalar>>,
    /// Fires when this metric drops by `drop` within `over`.
    pub metric: Option<Sp<String>>,
    /// Relative (`30%`) or absolute (`5`) drop.
    pub drop: Option<Sp<Scalar>>,
    /// The look-back window for `drop` (`28d`).
    pub over: Option<Sp<Scalar>>,
    /// Fires once relative to this account date field, such as `renewal_at`.
    pub date: Option<Sp<String>>,
    /// Offset from the date (`-90d`); default `0d`.
    pub offset: Option<Sp<Scalar>>,
    /// Local time of day in the account's timezone (`HH:MM`); default `09:00`.
    pub at: Option<Sp<Scalar>>,
}

/// One action. Exactly one of `email`, `webhook`, `connector`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionSpec {
    /// A templated email, one per recipient.
    Email(EmailActionSpec),
    /// A JSON request to an endpoint named in the daemon configuration.
    Webhook(WebhookActionSpec),
    /// An action of a connector plugin (a CRM task, a help-desk ticket).
    Connector(ConnectorActionSpec),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailActionSpec {
    /// `contacts`, `contacts[role=NAME]`, `owner`, or an email address.
    pub to: Sp<String>,
    /// Template name: `templates/NAME.hbs` (and optionally `NAME.html.hbs`).
    pub template: Sp<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookActionSpec {
    /// An endpoint named under `webhooks:` in touchpilot.yaml.
    pub endpoint: Sp<String>,
    /// Template name: `templates/NAME.json.hbs`, rendering the JSON body.
    pub template: Sp<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorActionSpec {
    /// A connector named under `connectors:` in touchpilot.yaml.
    pub name: Sp<String>,
    /// The connector's action, such as `create_task` or `create_ticket`.
    pub action: Sp<String>,
    /// Template name: `templates/NAME.json.hbs`, rendering the action's JSON input.
    pub template: Option<Sp<String>>,
}
