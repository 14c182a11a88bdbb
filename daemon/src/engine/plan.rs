//! Planning: what a fired moment will do. Resolves recipients, applies the
//! send window, and renders every template at fire time, so that a missing
//! variable is found before anything is queued. Consent and caps are not
//! checked here: they depend on the moment of sending (see `deliver`).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::{Decision, Engine};
use crate::engine::state::AccountState;
use crate::model::playbook::{Action, Milestone, Moment, Playbook, Recipients};
use crate::render::{Ctx, RenderError, RenderedEmail};

/// What fired: a moment, or a milestone's `on_late`.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Moment(&'a Moment),
    Milestone(&'a Milestone),
}

/// Where an action goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Email {
        to: String,
        /// The recipient is a contact of the account: the per-contact cap applies.
        contact: bool,
    },
    Webhook {
        endpoint: String,
    },
    Connector {
        name: String,
        action: String,
    },
}

/// The rendered payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Email(RenderedEmail),
    Json(Value),
    /// A connector action without a template.
    Empty,
}

/// One action to deliver: one recipient of an email, or one request.
#[derive(Debug, Clone)]
pub struct PlannedAction {
    /// When it goes out (after any send-window deferral).
    pub at: Timestamp,
    pub fired_at: Timestamp,
    pub account: String,
    pub playbook: String,
    pub moment: String,
    pub trigger: &'static str,
    /// Index of the action in its list.
    pub position: usize,
    pub target: Target,
    pub template: Option<String>,
    pub bypass_limits: bool,
    /// The id of the event that caused it, when an event did.
    pub event_id: Option<String>,
    /// Emails: the recipient's unsubscribe link (also in the template's
    /// `unsubscribe_url`), for the `List-Unsubscribe` header.
    pub unsubscribe_url: Option<String>,
    pub content: Result<Content, RenderError>,
}

impl PlannedAction {
    /// The recipient (emails) or the empty string: the last sort key.
    pub fn recipient(&self) -> &str {
        match &self.target {
            Target::Email { to, .. } => to,
            _ => "",
        }
    }
}

pub(super) fn plan(
    engine: &Engine,
    st: &AccountState,
    pb: &Playbook,
    source: Source<'_>,
    at: Timestamp,
    event: Option<&Value>,
    out: &mut Vec<Decision>,
) -> Vec<PlannedAction> {
    let (id, owner, objective, actions, bypass, trigger) = match source {
        Source::Moment(m) => (
            &m.id,
            &m.owner,
            &m.objective,
            &m.actions,
            m.bypass_limits,
            m.trigger.kind(),
        ),
        Source::Milestone(m) => (&m.id, &m.owner, &m.objective, &m.on_late, false, "late"),
    };
    let mut ctx = serde_json::Map::new();
    ctx.insert("account".into(), engine.account_json(st, at));
    ctx.insert(
        "moment".into(),
        json!({"id": id, "owner": owner, "objective": objective}),
    );
    ctx.insert("playbook".into(), json!({"id": pb.id, "name": pb.name}));
    ctx.insert("now".into(), Value::String(at.to_string()));
    if let Some(e) = event {
        ctx.insert("event".into(), e.clone());
    }
    let account_tz = engine.timezone(st, Some(pb));
    let event_id = event
        .and_then(|e| e.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let base =
        |position: usize, target: Target, template: Option<&String>, content| PlannedAction {
            at,
            fired_at: at,
            account: st.id().to_string(),
            playbook: pb.id.clone(),
            moment: id.clone(),
            trigger,
            position,
            target,
            template: template.cloned(),
            bypass_limits: bypass,
            event_id: event_id.clone(),
            unsubscribe_url: None,
            content,
        };
    let mut ctx = Ctx::new(Value::Object(ctx));
    let mut planned = Vec::new();
    for (position, action) in actions.iter().enumerate() {
        match action {
            Action::Email { to, template } => {
                let recipients = recipients(engine, st, to, &account_tz);
                if recipients.is_empty() {
                    out.push(Decision::Problem {
                        at,
                        message: format!(
                            "moment `{id}` of playbook `{}`: no recipient for `{}`",
                            pb.id,
                            describe(to)
                        ),
                    });
                }
                for r in recipients {
                    let unsubscribe = (engine.unsubscribe_url)(&r.email);
                    ctx.set("contact", r.value);
                    ctx.set("unsubscribe_url", Value::String(unsubscribe.clone()));
                    let content = engine
                        .config
                        .templates
                        .render_email(template, &ctx)
                        .map(Content::Email);
                    let mut a = base(
                        position,
                        Target::Email {
                            to: r.email,
                            contact: r.is_contact,
                        },
                        Some(template),
                        content,
                    );
                    a.unsubscribe_url = Some(unsubscribe);
                    if let Some(w) = &pb.send_window {
                        a.at = w.next_open(at, &r.tz);
                    }
                    planned.push(a);
                }
            }
            Action::Webhook { endpoint, template } => {
                let content = engine
                    .config
                    .templates
                    .render_json(template, &ctx)
                    .map(Content::Json);
                planned.push(base(
                    position,
                    Target::Webhook {
                        endpoint: endpoint.clone(),
                    },
                    Some(template),
                    content,
                ));
            }
            Action::Connector {
                name,
                action,
                template,
            } => {
                let content = match template {
                    Some(t) => engine
                        .config
                        .templates
                        .render_json(t, &ctx)
                        .map(Content::Json),
                    None => Ok(Content::Empty),
                };
                planned.push(base(
                    position,
                    Target::Connector {
                        name: name.clone(),
                        action: action.clone(),
                    },
                    template.as_ref(),
                    content,
                ));
            }
        }
    }
    planned
}

fn describe(to: &Recipients) -> String {
    match to {
        Recipients::Contacts => "contacts".into(),
        Recipients::ContactsWithRole(r) => format!("contacts[role={r}]"),
        Recipients::Owner => "owner".into(),
        Recipients::Address(a) => a.clone(),
    }
}

struct Recipient {
    email: String,
    value: Value,
    tz: TimeZone,
    is_contact: bool,
}

/// Resolves a selector to distinct addresses (first contact wins).
fn recipients(
    engine: &Engine,
    st: &AccountState,
    to: &Recipients,
    account_tz: &TimeZone,
) -> Vec<Recipient> {
    let tz_of = |name: Option<&str>| {
        name.and_then(|n| engine.zone(n))
            .unwrap_or_else(|| account_tz.clone())
    };
    let mut out: Vec<Recipient> = Vec::new();
    let mut push = |r: Recipient| {
        if !out.iter().any(|o| o.email.eq_ignore_ascii_case(&r.email)) {
            out.push(r);
        }
    };
    let contact = |c: crate::model::account::Contact| Recipient {
        tz: tz_of(c.timezone.as_deref()),
        email: c.email,
        value: c.value,
        is_contact: true,
    };
    match to {
        Recipients::Contacts => st
            .account
            .contacts()
            .into_iter()
            .for_each(|c| push(contact(c))),
        Recipients::ContactsWithRole(role) => st
            .account
            .contacts()
            .into_iter()
            .filter(|c| {
                c.role
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(role))
            })
            .for_each(|c| push(contact(c))),
        Recipients::Owner => {
            if let (Some(owner), Some(email)) = (st.account.owner(), st.account.owner_email()) {
                push(Recipient {
                    email,
                    tz: tz_of(owner.get("timezone").and_then(Value::as_str)),
                    value: owner,
                    is_contact: false,
                });
            }
        }
        Recipients::Address(addr) => match st.account.contact(addr) {
            Some(c) => push(contact(c)),
            None => push(Recipient {
                email: addr.clone(),
                value: json!({"email": addr}),
                tz: account_tz.clone(),
                is_contact: false,
            }),
        },
    }
    out
}
