//! The outbox worker: claims due rows, decides consent and the frequency
//! cap at send time (with the store's counts, so several instances share
//! them), sends, and ends each claim under its fencing token. Retryable
//! failures back off exponentially with jitter for up to `give_up_after`;
//! fatal ones go to the dead letters with their reason.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::SendError;
use super::email::Mailer;
use super::webhook::Webhooks;
use crate::config::Cap;
use crate::store::{Claimed, Outcome, Result, Store};

/// The kinds this worker delivers; connector rows wait for the plugin host.
pub const KINDS: &[&str] = &["email", "webhook"];

pub struct Worker {
    pub mailer: Mailer,
    pub webhooks: Webhooks,
    pub cap: Option<Cap>,
    pub lease: SignedDuration,
    /// A row first tried longer than this after it was due is missed.
    pub grace: SignedDuration,
    pub first_retry: SignedDuration,
    pub max_retry: SignedDuration,
    pub give_up_after: SignedDuration,
}

/// How a batch went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub retried: usize,
    pub dead: usize,
    pub suppressed: usize,
    pub missed: usize,
    /// Claims handed back untried because the worker is stopping.
    pub released: usize,
    /// Claims that ended after their lease expired (another worker owns them).
    pub fenced: usize,
}

impl Worker {
    pub fn new(mailer: Mailer, webhooks: Webhooks, cap: Option<Cap>) -> Worker {
        Worker {
            mailer,
            webhooks,
            cap,
            lease: SignedDuration::from_mins(5),
            grace: SignedDuration::from_hours(1),
            first_retry: SignedDuration::from_secs(30),
            max_retry: SignedDuration::from_hours(1),
            give_up_after: SignedDuration::from_hours(72),
        }
    }

    /// Delivers up to `batch` due rows. `stop` is asked before each send:
    /// once it says yes, the remaining claims are handed back untried.
    pub async fn deliver_due<S: Store>(
        &self,
        store: &S,
        now: Timestamp,
        batch: i64,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Delivered> {
        let mut done = Delivered::default();
        for claim in store.claim(KINDS, now, self.lease, batch).await? {
            let outcome = if stop() {
                Outcome::Released
            } else {
                self.outcome(store, &claim, now).await?
            };
            match &outcome {
                Outcome::Sent => done.sent += 1,
                Outcome::Retry { .. } => done.retried += 1,
                Outcome::Dead { .. } => done.dead += 1,
                Outcome::Suppressed { .. } => done.suppressed += 1,
                Outcome::Missed { .. } => done.missed += 1,
                Outcome::Released => done.released += 1,
            }
            if !store.finish(&claim.id, claim.token, &outcome, now).await? {
                done.fenced += 1;
            }
        }
        Ok(done)
    }

    async fn outcome<S: Store>(
        &self,
        store: &S,
        claim: &Claimed,
        now: Timestamp,
    ) -> Result<Outcome> {
        let p = &claim.payload;
        let due = p
            .get("at")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<Timestamp>().ok())
            .unwrap_or(now);
        if claim.attempts == 1 && now.duration_since(due) > self.grace {
            return Ok(Outcome::Missed {
                reason: format!(
                    "missed: due at {due}, more than {:#} before it could first be sent",
                    self.grace
                ),
            });
        }
        let result = if claim.kind == "email" {
            if let Some(reason) = self.consent(store, claim, now).await? {
                return Ok(Outcome::Suppressed {
                    reason: reason.to_string(),
                });
            }
            self.mailer.send(p).await
        } else {
            self.webhooks.send(p, now).await
        };
        Ok(match result {
            Ok(()) => Outcome::Sent,
            Err(SendError::Fatal(error)) => Outcome::Dead { error },
            Err(SendError::Retryable(error)) => {
                if now.duration_since(due) >= self.give_up_after {
                    Outcome::Dead {
                        error: format!("gave up after {} attempts: {error}", claim.attempts),
                    }
                } else {
                    Outcome::Retry {
                        next_attempt: now.checked_add(self.backoff(claim.attempts)).unwrap_or(now),
                        error,
                    }
                }
            }
        })
    }

    /// Unsubscribes and the cap, decided now: a link clicked after the
    /// moment fired, or other mail sent since, is honoured.
    async fn consent<S: Store>(
        &self,
        store: &S,
        claim: &Claimed,
        now: Timestamp,
    ) -> Result<Option<&'static str>> {
        let p = &claim.payload;
        let to = p.get("to").and_then(Value::as_str).unwrap_or("");
        if store.is_suppressed(to).await? {
            return Ok(Some("unsubscribed"));
        }
        // The global list was asked above; the account's own contact
        // record is the same rule the dry run applies.
        if let Some(loaded) = store.load_account(&claim.account).await?
            && super::unsubscribed(&loaded.state.account, to, &|_| false)
        {
            return Ok(Some("unsubscribed"));
        }
        let contact = p.get("contact").and_then(Value::as_bool).unwrap_or(false);
        let bypass = p
            .get("bypass_limits")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(cap) = &self.cap
            && super::cap_applies(contact, bypass)
        {
            let since = now.checked_sub(cap.per.span()).unwrap_or(Timestamp::MIN);
            // Counted now, atomically, so instances sharing the store
            // cannot both take the last place; given back unless sent.
            if !store
                .reserve_send(&claim.id, to, since, i64::from(cap.max), now)
                .await?
            {
                return Ok(Some("frequency_cap"));
            }
        }
        Ok(None)
    }

    /// Exponential from `first_retry`, capped at `max_retry`, with ±20% jitter
    /// so that retries of one outage do not arrive together.
    fn backoff(&self, attempts: i64) -> SignedDuration {
        let exp = attempts.clamp(1, 30) - 1;
        let base = self.first_retry.as_secs_f64() * 2f64.powi(exp as i32);
        let capped = base.min(self.max_retry.as_secs_f64());
        let jitter = 0.8 + 0.4 * (uuid::Uuid::now_v7().as_u128() as u32 as f64 / u32::MAX as f64);
        SignedDuration::from_secs_f64(capped * jitter)
    }
}
