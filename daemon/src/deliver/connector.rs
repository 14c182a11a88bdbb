//! Connector actions from the outbox (`kind = "connector"`): the worker
//! hands each claimed row here, and the plugin host runs the connector's
//! `act` off the async threads. A plugin that hangs, panics, answers
//! garbage or failed to load never loses the row: it is retried or
//! dead-lettered like any other delivery, with a reason naming the
//! connector. Never decides consent or caps (connector actions reach
//! the team's own tools, not customers).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::worker::Worker;
use crate::plugin_host::PluginHost;
use crate::store::{Claimed, Outcome, Result, Store};

/// The loaded connectors, shared with the source loop and the webhook route.
#[derive(Clone)]
pub struct Connectors {
    pub host: Arc<PluginHost>,
}

/// The idempotency key a connector writes with: stable across retries of
/// one outbox row (derived from the id fixed when it was recorded), short
/// and plain enough for any vendor's external-id field.
pub fn action_key(payload: &Value) -> String {
    let id = payload
        .get("message_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let hex = id.trim_start_matches('<').split('@').next().unwrap_or(id);
    format!("tp-{hex}")
}

impl Connectors {
    /// Loads every configured connector off the async threads, logging
    /// each one that cannot be used (the daemon runs on without it).
    pub async fn load(
        connectors: &std::collections::BTreeMap<String, crate::config::Connector>,
    ) -> Connectors {
        let connectors = connectors.clone();
        let host = tokio::task::spawn_blocking(move || PluginHost::load(&connectors))
            .await
            .unwrap_or_default();
        for (name, loaded) in &host.plugins {
            match loaded {
                Ok(p) => tracing::info!(
                    connector = %name,
                    plugin = %p.plugin_name,
                    version = %p.version,
                    library = %p.library.display(),
                    "connector loaded"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "connector not loaded; its actions wait in the outbox until it loads"
                ),
            }
        }
        Connectors {
            host: Arc::new(host),
        }
    }

    /// The `act` input of a row: the action, its key, the account as
    /// stored now (owner, attributes, ...), the rendered content.
    pub fn act_input(payload: &Value, account: Value, now: Timestamp) -> Value {
        json!({
            "action": payload.get("action"),
            "key": action_key(payload),
            "account": account,
            "content": payload.get("content"),
            "at": payload.get("at"),
            "fired_at": payload.get("fired_at"),
            "playbook": payload.get("playbook"),
            "moment": payload.get("moment"),
            "now": now.to_string(),
        })
    }
}

/// Delivers one claimed connector row with the worker's connectors (none:
/// the row waits, retried); `due` is when it was due (for giving up).
pub async fn deliver<S: Store>(
    worker: &Worker,
    store: &S,
    claim: &Claimed,
    now: Timestamp,
    due: Timestamp,
) -> Result<Outcome> {
    let none = Connectors {
        host: Default::default(),
    };
    worker
        .connectors
        .as_ref()
        .unwrap_or(&none)
        .deliver(worker, store, claim, now, due)
        .await
}

impl Connectors {
    async fn deliver<S: Store>(
        &self,
        worker: &Worker,
        store: &S,
        claim: &Claimed,
        now: Timestamp,
        due: Timestamp,
    ) -> Result<Outcome> {
        let p = &claim.payload;
        let name = p.get("connector").and_then(Value::as_str).unwrap_or("");
        let account = match store.load_account(&claim.account).await? {
            Some(loaded) => Value::Object(loaded.state.account.to_map()),
            None => json!({"id": claim.account}),
        };
        // A connector that did not load may load after a restart with a
        // fixed library: its rows wait, like rows of a failing vendor.
        let (result, unavailable) = match self.host.get(name) {
            Ok(plugin) => {
                let input = Self::act_input(p, account, now);
                let r = plugin.call(touchpilot_plugin::ops::ACT, &input).await;
                (r.map(|_| ()), false)
            }
            Err(e) => (Err(e), true),
        };
        Ok(match result {
            Ok(()) => Outcome::Sent,
            Err(e) if !e.retryable() && !unavailable => Outcome::Dead {
                error: e.to_string(),
            },
            Err(e) => {
                let error = e.to_string();
                if now.duration_since(due) >= worker.delivery.give_up_after {
                    Outcome::Dead {
                        error: format!("gave up after {} attempts: {error}", claim.attempts),
                    }
                } else {
                    let vendor = e
                        .retry_after()
                        .and_then(|d| SignedDuration::try_from(d).ok())
                        .unwrap_or(SignedDuration::ZERO);
                    let wait = worker.backoff(claim.attempts).max(vendor);
                    Outcome::Retry {
                        next_attempt: now.checked_add(wait).unwrap_or(now),
                        error,
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_rows_fixed_id() {
        let p = json!({"message_id": "<0123abcd@touchpilot>"});
        assert_eq!(action_key(&p), "tp-0123abcd");
    }
}
