//! The outbox worker: claims due rows, decides consent and the frequency
//! cap at send time (with the store's counts, so several instances share
//! them), sends, and ends each claim under its fencing token. Retryable
//! failures back off exponentially with jitter for up to `give_up_after`;
//! fatal ones go to the dead letters with their reason.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::FusedFuture;
use futures_util::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::SendError;
use super::email::Mailer;
use super::webhook::Webhooks;
use crate::config::{Cap, Delivery};
use crate::store::{Claimed, Outcome, Result, Store};

/// The kinds this worker delivers.
pub const KINDS: &[&str] = &["email", "webhook", "connector"];

pub struct Worker {
    pub mailer: Mailer,
    pub webhooks: Webhooks,
    pub cap: Option<Cap>,
    /// Grace, retries, lease, concurrency.
    pub delivery: Delivery,
    /// Connector plugins (`deliver::connector`); without them, connector
    /// rows are retried until the daemon runs with its plugins.
    pub connectors: Option<super::connector::Connectors>,
    /// Webhook requests and connector calls in flight, at most
    /// `delivery.concurrency` (emails are bounded by the mailer's
    /// connections).
    requests: tokio::sync::Semaphore,
}

/// Deliveries a batch keeps in flight, per connection of
/// `delivery.concurrency`: two, so that each SMTP connection has its next
/// message waiting while it sends one, and pipelines the two.
const IN_FLIGHT_PER_CONNECTION: usize = 2;

/// What every claim of one batch is decided against.
struct Batch {
    now: Timestamp,
    /// Endpoints disabled by an earlier `410`, with the reason.
    disabled: HashMap<String, String>,
    /// Endpoints that answered `410` in this batch.
    gone: std::sync::Mutex<BTreeMap<String, String>>,
    /// The accounts of the batch's emails, as stored (`None`: deleted).
    accounts: HashMap<String, Option<crate::model::account::Account>>,
    /// Which of the batch's email addresses are on the suppression list
    /// (lowercased).
    suppressed: HashSet<String>,
    /// Claims handed back because their lease was half gone.
    late: AtomicUsize,
}

/// Claims a batch ends in one commit as their sends finish, or after
/// `FINISH_AFTER` at the latest once a send has finished: what a crash can
/// make the next claim repeat.
const FINISH_EVERY: usize = 64;
const FINISH_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// How a batch went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub retried: usize,
    pub dead: usize,
    pub suppressed: usize,
    pub missed: usize,
    /// Claims handed back untried: the worker is stopping, a store read
    /// failed, or they are `late`.
    pub released: usize,
    /// Of those, the claims handed back because half their lease had passed
    /// before their turn came: sent then, one could outlive its lease
    /// mid-send while another instance, having claimed the row anew, sends
    /// it too. Claimable again at once, their attempt not counted.
    pub late: usize,
    /// Claims that ended after their lease expired (another worker owns them).
    pub fenced: usize,
    /// The last failures of the batch, for logs: (outbox key, error).
    pub errors: Vec<(String, String)>,
}

impl Delivered {
    /// Counts one claim's outcome (`key`: its outbox key, for the errors).
    fn count(&mut self, key: &str, outcome: &Outcome) {
        match outcome {
            Outcome::Sent => self.sent += 1,
            Outcome::Retry { error, .. } => {
                self.retried += 1;
                self.errors.push((key.to_string(), error.clone()));
            }
            Outcome::Dead { error } => {
                self.dead += 1;
                self.errors.push((key.to_string(), error.clone()));
            }
            Outcome::Suppressed { .. } => self.suppressed += 1,
            Outcome::Missed { .. } => self.missed += 1,
            Outcome::Released => self.released += 1,
        }
    }

    /// Rows whose claim this batch ended, one way or another.
    pub fn total(&self) -> usize {
        self.sent + self.retried + self.dead + self.suppressed + self.missed + self.fenced
    }
}

impl Worker {
    pub fn new(mailer: Mailer, webhooks: Webhooks, cap: Option<Cap>, delivery: Delivery) -> Worker {
        Worker {
            mailer,
            webhooks,
            cap,
            requests: tokio::sync::Semaphore::new(delivery.concurrency.max(1)),
            delivery,
            connectors: None,
        }
    }

    /// Delivers up to `batch` due rows, `delivery.concurrency` connections
    /// or requests at a time, and ends their claims as they finish. `stop` is asked before each
    /// send: once it says yes, the remaining claims are handed back untried.
    pub async fn deliver_due<S: Store>(
        &self,
        store: &S,
        now: Timestamp,
        batch: i64,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Delivered> {
        let claimed_at = Instant::now();
        let claims = store.claim(KINDS, now, self.delivery.lease, batch).await?;
        self.deliver(store, claims, claimed_at, now, stop).await
    }

    /// Delivers claims already made (by `deliver_due`, or by the engine
    /// step that created them), `delivery.concurrency` connections or
    /// requests at a time, and ends them as they finish, a few per commit. `claimed_at` is an instant no later than the
    /// start of their leases (`delivery.lease`): a claim whose turn comes
    /// after half its lease is handed back untried (`Delivered::late`).
    pub async fn deliver<S: Store>(
        &self,
        store: &S,
        claims: Vec<Claimed>,
        claimed_at: Instant,
        now: Timestamp,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Delivered> {
        if claims.is_empty() {
            return Ok(Delivered::default());
        }
        let mut ctx = Batch {
            now,
            disabled: store
                .disabled_endpoints()
                .await?
                .into_iter()
                .map(|d| (d.name, d.reason))
                .collect(),
            gone: std::sync::Mutex::new(BTreeMap::new()),
            accounts: HashMap::new(),
            suppressed: HashSet::new(),
            late: AtomicUsize::new(0),
        };
        // The suppression list is read once for the batch's addresses, and
        // each account whose emails are in the batch once, for its
        // contacts' unsubscribes (not once per email): an unsubscribe
        // recorded after these reads is honoured from the next batch on.
        let mut addresses: Vec<&str> = claims
            .iter()
            .filter(|c| c.kind == "email")
            .map(recipient)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        if !addresses.is_empty() {
            ctx.suppressed = store.suppressed_among(&addresses).await?;
        }
        for claim in claims.iter().filter(|c| c.kind == "email") {
            if !ctx.accounts.contains_key(&claim.account) {
                let account = store
                    .load_account(&claim.account)
                    .await?
                    .map(|l| l.state.account);
                ctx.accounts.insert(claim.account.clone(), account);
            }
        }
        // Under a cap, one address's emails go one after the other, so each
        // sees the ones before it; everything else goes out concurrently.
        let mut chains: Vec<Vec<Claimed>> = Vec::new();
        let mut by_address: HashMap<String, usize> = HashMap::new();
        for claim in claims {
            let address = (self.cap.is_some() && claim.kind == "email")
                .then(|| claim.payload.get("to").and_then(Value::as_str))
                .flatten()
                .map(str::to_ascii_lowercase);
            match address {
                Some(a) => {
                    let i = *by_address.entry(a).or_insert_with(|| {
                        chains.push(Vec::new());
                        chains.len() - 1
                    });
                    chains[i].push(claim);
                }
                None => chains.push(vec![claim]),
            }
        }
        // A store error while deciding one claim hands that claim back
        // untried (and is reported); the claims already sent still end.
        let mut results = std::pin::pin!(
            futures_util::stream::iter(chains)
                .map(|chain| {
                    let ctx = &ctx;
                    async move {
                        let mut out = Vec::with_capacity(chain.len());
                        // Emails of this chain that took a place under the cap
                        // and then failed (their places are given back when
                        // the batch's claims end).
                        let mut failed_here = 0;
                        let mut failed = None;
                        for claim in chain {
                            let late = !crate::runner::fresh(claimed_at, self.delivery.lease);
                            let outcome = if stop() || failed.is_some() || late {
                                if late && !stop() && failed.is_none() {
                                    ctx.late.fetch_add(1, Ordering::Relaxed);
                                }
                                Outcome::Released
                            } else {
                                match self.outcome(store, &claim, failed_here, ctx).await {
                                    Ok(o) => o,
                                    Err(e) => {
                                        failed = Some(e);
                                        Outcome::Released
                                    }
                                }
                            };
                            if matches!(outcome, Outcome::Retry { .. } | Outcome::Dead { .. })
                                && self.capped(&claim)
                            {
                                failed_here += 1;
                            }
                            out.push((claim, outcome));
                        }
                        (out, failed)
                    }
                })
                .buffer_unordered(self.delivery.concurrency.max(1) * IN_FLIGHT_PER_CONNECTION)
        );
        // Claims end as their sends do, a few at a time, not all when the
        // batch's last send is done: a crash then repeats at most the sends
        // not yet recorded (the last `FINISH_EVERY` or so, and those in
        // flight), not a whole batch. One commit at a time runs beside the
        // sends, which go on meanwhile.
        let mut done = Delivered::default();
        let mut ended: Vec<(String, i64, Outcome)> = Vec::new();
        let mut first_error = None;
        let mut since = Instant::now();
        let mut ending = std::pin::pin!(futures_util::future::OptionFuture::from(None));
        let mut sending = true;
        while sending || !ending.is_terminated() {
            tokio::select! {
                item = results.next(), if sending => match item {
                    Some((chain, failed)) => {
                        for (claim, outcome) in chain {
                            done.count(&claim.key, &outcome);
                            ended.push((claim.id, claim.token, outcome));
                        }
                        if first_error.is_none() {
                            first_error = failed;
                        }
                    }
                    None => sending = false,
                },
                fenced = &mut ending, if !ending.is_terminated() => {
                    done.fenced += fenced.unwrap_or(Ok(0))?;
                }
            }
            let due = ended.len() >= FINISH_EVERY || since.elapsed() >= FINISH_AFTER || !sending;
            if due && !ended.is_empty() && ending.is_terminated() {
                let batch = std::mem::take(&mut ended);
                ending.set(Some(self.end(store, &ctx, batch, now).fuse()).into());
                since = Instant::now();
            }
        }
        // Sends already happened: their claims ended above even when
        // another claim's store read failed.
        done.late = ctx.late.load(Ordering::Relaxed);
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(done)
    }

    /// Ends the claims in `ended` in one commit (after disabling the
    /// endpoints that answered `410` meanwhile); how many were fenced.
    async fn end<S: Store>(
        &self,
        store: &S,
        ctx: &Batch,
        ended: Vec<(String, i64, Outcome)>,
        now: Timestamp,
    ) -> Result<usize> {
        let gone = std::mem::take(&mut *ctx.gone.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, reason) in gone {
            store.disable_endpoint(&name, &reason, now).await?;
        }
        Ok(store
            .finish_many(&ended, now)
            .await?
            .into_iter()
            .filter(|ok| !ok)
            .count())
    }

    async fn outcome<S: Store>(
        &self,
        store: &S,
        claim: &Claimed,
        failed_here: i64,
        ctx: &Batch,
    ) -> Result<Outcome> {
        let (now, gone) = (ctx.now, &ctx.gone);
        let p = &claim.payload;
        let due = p
            .get("at")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<Timestamp>().ok())
            .unwrap_or(now);
        if claim.attempts == 1 && now.duration_since(due) > self.delivery.grace {
            return Ok(Outcome::Missed {
                reason: format!(
                    "missed: due at {due}, more than {:#} before it could first be sent",
                    self.delivery.grace
                ),
            });
        }
        if claim.kind == "connector" {
            let _slot = self.requests.acquire().await.expect("never closed");
            return super::connector::deliver(self, store, claim, now, due).await;
        }
        let result = if claim.kind == "email" {
            if let Some(reason) = self.consent(store, claim, failed_here, ctx).await? {
                return Ok(Outcome::Suppressed {
                    reason: reason.to_string(),
                });
            }
            self.mailer.send(p).await
        } else {
            let endpoint = p.get("endpoint").and_then(Value::as_str).unwrap_or("");
            let gone_now = gone
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(endpoint)
                .cloned();
            if let Some(reason) = ctx.disabled.get(endpoint).cloned().or(gone_now) {
                return Ok(Outcome::Dead {
                    error: format!(
                        "webhook `{endpoint}` is disabled ({reason}); after fixing it, run `touchpilot enable-endpoint {endpoint}` and retry the dead letters"
                    ),
                });
            }
            let _slot = self.requests.acquire().await.expect("never closed");
            self.webhooks.send(p, now).await
        };
        Ok(match result {
            Ok(()) => Outcome::Sent,
            Err(SendError::Fatal(error)) => Outcome::Dead { error },
            Err(SendError::Gone(error)) => {
                let endpoint = p.get("endpoint").and_then(Value::as_str).unwrap_or("");
                gone.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(endpoint.to_string(), error.clone());
                Outcome::Dead { error }
            }
            Err(SendError::Retryable(error)) => {
                if now.duration_since(due) >= self.delivery.give_up_after {
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

    /// Whether the cap applies to this claim (a contact's email from a
    /// moment without `bypass_limits`, with a cap configured).
    fn capped(&self, claim: &Claimed) -> bool {
        let p = &claim.payload;
        let flag = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
        self.cap.is_some()
            && claim.kind == "email"
            && super::cap_applies(flag("contact"), flag("bypass_limits"))
    }

    /// Unsubscribes and the cap, decided now: a link clicked after the
    /// moment fired, or other mail sent since, is honoured.
    async fn consent<S: Store>(
        &self,
        store: &S,
        claim: &Claimed,
        failed_here: i64,
        ctx: &Batch,
    ) -> Result<Option<&'static str>> {
        let now = ctx.now;
        let to = recipient(claim);
        if !ctx.suppressed.is_empty() && ctx.suppressed.contains(&to.to_ascii_lowercase()) {
            return Ok(Some("unsubscribed"));
        }
        // The global list was asked above; the account's own contact
        // record is the same rule the dry run applies.
        if let Some(Some(account)) = ctx.accounts.get(&claim.account)
            && super::unsubscribed(account, to, &|_| false)
        {
            return Ok(Some("unsubscribed"));
        }
        if let Some(cap) = &self.cap
            && self.capped(claim)
        {
            let since = now.checked_sub(cap.per.span()).unwrap_or(Timestamp::MIN);
            // Counted now, atomically, so instances sharing the store cannot
            // both take the last place; given back unless sent. This chain's
            // earlier emails that took a place and failed give theirs back
            // only when the batch ends: they do not count meanwhile.
            if !store
                .reserve_send(&claim.id, to, since, i64::from(cap.max) + failed_here, now)
                .await?
            {
                return Ok(Some("frequency_cap"));
            }
        }
        Ok(None)
    }

    /// Exponential from `first_retry`, capped at `max_retry`, with ±20% jitter
    /// so that retries of one outage do not arrive together.
    pub(super) fn backoff(&self, attempts: i64) -> SignedDuration {
        let exp = attempts.clamp(1, 30) - 1;
        let base = self.delivery.first_retry.as_secs_f64() * 2f64.powi(exp as i32);
        let capped = base.min(self.delivery.max_retry.as_secs_f64());
        let jitter = 0.8 + 0.4 * (uuid::Uuid::now_v7().as_u128() as u32 as f64 / u32::MAX as f64);
        SignedDuration::from_secs_f64(capped * jitter)
    }
}

/// An email claim's recipient, as recorded.
fn recipient(claim: &Claimed) -> &str {
    claim
        .payload
        .get("to")
        .and_then(Value::as_str)
        .unwrap_or("")
}
