//! The dry run's output format: one JSON object per action, exactly as
//! the contract lists its fields.

use std::io::Write;

use serde::Serialize;

use crate::deliver::Suppression;
use crate::engine::plan::{PlannedAction, Target};

#[derive(Serialize)]
struct Record<'a> {
    at: String,
    fired_at: String,
    account: &'a str,
    playbook: &'a str,
    moment: &'a str,
    trigger: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connector: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a str>,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn write(
    out: &mut dyn Write,
    a: &PlannedAction,
    suppressed: Option<Suppression>,
) -> std::io::Result<()> {
    let (kind, to, endpoint, connector, action) = match &a.target {
        Target::Email { to, .. } => ("email", Some(to.as_str()), None, None, None),
        Target::Webhook { endpoint } => ("webhook", None, Some(endpoint.as_str()), None, None),
        Target::Connector { name, action } => (
            "connector",
            None,
            None,
            Some(name.as_str()),
            Some(action.as_str()),
        ),
    };
    let (status, reason, error) = match (&a.content, suppressed) {
        (Err(e), _) => ("failed", Some("template"), Some(e.to_string())),
        (Ok(_), Some(s)) => ("suppressed", Some(s.as_str()), None),
        (Ok(_), None) => ("planned", None, None),
    };
    let record = Record {
        at: a.at.to_string(),
        fired_at: a.fired_at.to_string(),
        account: &a.account,
        playbook: &a.playbook,
        moment: &a.moment,
        trigger: a.trigger,
        kind,
        to,
        endpoint,
        connector,
        action,
        template: a.template.as_deref(),
        status,
        reason,
        error,
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}
