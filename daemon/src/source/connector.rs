//! Connector sources: accounts and events read from a CRM or help desk
//! through a plugin's `poll` (incrementally, with a cursor persisted in
//! the store) or pushed to its inbound webhook. Whatever the route, what
//! comes in is stored the same way: events with ids derived from the
//! vendor's (id, last-modified), so an overlap window or a webhook and a
//! poll seeing the same change store it once; accounts as new accounts or
//! as `account.updated` merge patches, with `champion.changed` and
//! `sponsor.changed` events when those contact roles move.
//!
//! Never writes the outbox and never calls the engine itself: accounts go
//! through the runner, events through ingestion, like every other input.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::account::Account;
use crate::model::event::Event;
use crate::plugin_host::{Plugin, PluginError};
use crate::runner::Runner;
use crate::store::{Store, StoreError};

/// Pages read in one round before yielding to the other loops.
const MAX_PAGES: usize = 20;
/// How often a source is polled when it is caught up.
pub const POLL_EVERY: Duration = Duration::from_secs(60);
/// Contact roles whose change is an event of its own.
const WATCHED_ROLES: &[(&str, &str)] = &[
    ("champion", "champion.changed"),
    ("sponsor", "sponsor.changed"),
];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("connector `{name}` ({op}): {reason}")]
    Invalid {
        name: String,
        op: &'static str,
        reason: String,
    },
}

/// What one round of polling stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    pub pages: usize,
    pub accounts_new: usize,
    pub events_accepted: usize,
    pub events_duplicate: usize,
}

/// Reads pages from `plugin` until it is caught up (or `MAX_PAGES`),
/// storing each page's accounts and events before its cursor.
pub async fn poll<S: Store>(
    plugin: &Plugin,
    runner: &Runner<S>,
    now: Timestamp,
) -> Result<Polled, SourceError> {
    let mut done = Polled::default();
    for _ in 0..MAX_PAGES {
        // The stored cursor wraps the plugin's with whether the source
        // was ever caught up: until then, its accounts enter silently.
        let stored = runner.store.cursor(&plugin.name).await?;
        let cursor = stored.as_ref().map_or(Value::Null, |s| s["cursor"].clone());
        let first_run = !stored.is_some_and(|s| s["caught_up"] == true);
        let reply = plugin
            .call(
                touchpilot_plugin::ops::POLL,
                &json!({"cursor": cursor, "now": now.to_string()}),
            )
            .await?;
        let invalid = |reason: String| SourceError::Invalid {
            name: plugin.name.clone(),
            op: "poll",
            reason,
        };
        let accounts = reply
            .get("accounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let events = parse_events(reply.get("events")).map_err(invalid)?;
        let next = reply
            .get("cursor")
            .cloned()
            .ok_or_else(|| invalid("the reply has no `cursor`".into()))?;
        // Accounts first: the events of this page may be about them.
        let (new, mut derived) =
            store_accounts(&plugin.name, runner, accounts, first_run, now).await?;
        derived.extend(events);
        let n = runner.store.ingest(&derived, now).await?;
        let more = reply.get("more").and_then(Value::as_bool).unwrap_or(false);
        let caught_up = !first_run || !more;
        runner
            .store
            .set_cursor(
                &plugin.name,
                &json!({"cursor": next, "caught_up": caught_up}),
            )
            .await?;
        done.pages += 1;
        done.accounts_new += new;
        done.events_accepted += n.accepted;
        done.events_duplicate += n.duplicates;
        if !more {
            break;
        }
    }
    Ok(done)
}

/// The events of a poll or webhook reply.
pub fn parse_events(v: Option<&Value>) -> Result<Vec<Event>, String> {
    let Some(v) = v else { return Ok(vec![]) };
    let list = v.as_array().ok_or("`events` must be an array")?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let ev = Event::from_json(e).map_err(|m| format!("event {i}: {m}"))?;
            if ev.id.is_none() {
                return Err(format!(
                    "event {i}: connector events need an `id` (they must deduplicate)"
                ));
            }
            Ok(ev)
        })
        .collect()
}

/// Stores a page's accounts. New ones are admitted (silently on the
/// source's first run, so a first sync greets nobody); known ones that
/// changed become `account.updated` events whose id is the source, the
/// account and a digest of the data, so the same change read twice is
/// one event; an account re-read unchanged (the overlap window) is skipped. Returns the accounts admitted and the events.
pub(crate) async fn store_accounts<S: Store>(
    source: &str,
    runner: &Runner<S>,
    accounts: Vec<Value>,
    first_run: bool,
    now: Timestamp,
) -> Result<(usize, Vec<Event>), SourceError> {
    let mut new = Vec::new();
    let mut events = Vec::new();
    for value in accounts {
        let account = Account::from_json(value.clone()).map_err(|reason| SourceError::Invalid {
            name: source.into(),
            op: "poll",
            reason: format!("account: {reason}"),
        })?;
        let id = account.id().to_string();
        let Some(stored) = runner.store.load_account(&id).await? else {
            new.push(account);
            continue;
        };
        let mut patch: Map<String, Value> = value.as_object().cloned().unwrap_or_default();
        patch.remove("id");
        // Re-read unchanged (the overlap window): nothing to store.
        let mut merged = stored.state.account.clone();
        if merged.merge(&Value::Object(patch.clone())).is_ok()
            && merged.to_map() == stored.state.account.to_map()
        {
            continue;
        }
        let digest = short_digest(&Value::Object(patch.clone()));
        events.push(Event {
            id: Some(format!("{source}:account:{id}:{digest}")),
            account: id.clone(),
            kind: "account.updated".into(),
            at: Some(now),
            data: Value::Object(patch),
        });
        events.extend(role_changes(source, &stored.state.account, &account, now));
    }
    let admitted = new.len();
    if first_run {
        runner.seed(new, now).await?;
    } else {
        for account in new {
            runner.put_account(account, now).await?;
        }
    }
    Ok((admitted, events))
}

/// `champion.changed` / `sponsor.changed` when the contact holding the
/// role differs between `before` and `after` (by email).
pub fn role_changes(source: &str, before: &Account, after: &Account, now: Timestamp) -> Vec<Event> {
    let holder = |a: &Account, role: &str| -> Option<String> {
        a.contacts()
            .into_iter()
            .find(|c| {
                c.role
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(role))
            })
            .map(|c| c.email.to_ascii_lowercase())
    };
    let mut out = Vec::new();
    // An account without contacts in this read says nothing about roles.
    if after.get("contacts").is_none() {
        return out;
    }
    for (role, kind) in WATCHED_ROLES {
        let (from, to) = (holder(before, role), holder(after, role));
        if from != to {
            let data = json!({"from": from, "to": to});
            out.push(Event {
                id: Some(format!(
                    "{source}:{kind}:{}:{}",
                    after.id(),
                    short_digest(&data)
                )),
                account: after.id().to_string(),
                kind: (*kind).into(),
                at: Some(now),
                data,
            });
        }
    }
    out
}

fn short_digest(v: &Value) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(v.to_string().as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls every source-capable connector until `shutdown`, waking the
/// engine when something was stored. A failing source is logged and
/// tried again later (after the vendor's `Retry-After` when given).
pub async fn poll_loop<S: Store + 'static>(
    connectors: crate::deliver::connector::Connectors,
    runner: Arc<Runner<S>>,
    wake_engine: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let sources: Vec<Arc<Plugin>> = connectors
        .host
        .plugins
        .values()
        .filter_map(|p| p.as_ref().ok())
        .filter(|p| p.can(touchpilot_plugin::caps::SOURCE))
        .cloned()
        .collect();
    if sources.is_empty() {
        return;
    }
    loop {
        let mut wait = POLL_EVERY;
        for plugin in &sources {
            match poll(plugin, &runner, Timestamp::now()).await {
                Ok(p) => {
                    if p.accounts_new + p.events_accepted > 0 {
                        wake_engine.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "connector source");
                    if let SourceError::Plugin(pe) = &e
                        && let Some(after) = pe.retry_after()
                    {
                        wait = wait.max(after);
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(v: Value) -> Account {
        Account::from_json(v).unwrap()
    }

    #[test]
    fn a_new_champion_is_an_event_and_an_unchanged_one_is_not() {
        let now: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let before = account(json!({"id": "a", "contacts": [
            {"email": "ann@x.io", "role": "champion"}, {"email": "cy@x.io", "role": "sponsor"}]}));
        let after = account(json!({"id": "a", "contacts": [
            {"email": "bo@x.io", "role": "Champion"}, {"email": "cy@x.io", "role": "sponsor"}]}));
        let ev = role_changes("hubspot", &before, &after, now);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "champion.changed");
        assert_eq!(ev[0].data, json!({"from": "ann@x.io", "to": "bo@x.io"}));
        assert!(
            ev[0]
                .id
                .as_deref()
                .unwrap()
                .starts_with("hubspot:champion.changed:a:")
        );
        assert!(role_changes("hubspot", &after, &after, now).is_empty());
        // No contacts in the read: nothing is known about roles.
        assert!(role_changes("hubspot", &before, &account(json!({"id": "a"})), now).is_empty());
        let gone = role_changes(
            "hubspot",
            &before,
            &account(json!({"id": "a", "contacts": []})),
            now,
        );
        assert_eq!(gone.len(), 2);
        assert_eq!(gone[1].data, json!({"from": "cy@x.io", "to": null}));
    }
}
