//! Delivery: the rules decided when an action goes out (consent and the
//! frequency cap, shared by the dry run and the daemon), the senders
//! (`email`, with `smtp` our client for plain relays, and `webhook`) and
//! the outbox `worker` that drives them.

pub mod connector;
pub mod email;
pub mod smtp;
pub mod webhook;
pub mod worker;

/// A delivery failure, classified: retryable ones back off and try again
/// (timeouts, SMTP 4xx, HTTP 429/5xx); fatal ones are dead-lettered (SMTP
/// 5xx, HTTP 4xx, a redirect, an unbuildable message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
    /// The endpoint answered `410 Gone`: fatal, and nothing more goes to it.
    #[error("{0}")]
    Gone(String),
}

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;

use crate::config::Cap;
use crate::engine::plan::{PlannedAction, Target};
use crate::model::account::Account;

/// Why an email is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    Unsubscribed,
    FrequencyCap,
}

impl Suppression {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::Unsubscribed => "unsubscribed",
            Suppression::FrequencyCap => "frequency_cap",
        }
    }
}

/// Whether `address` has opted out: through the account's contact record
/// or through the global suppression list (unsubscribe links).
pub fn unsubscribed(account: &Account, address: &str, suppressed: &dyn Fn(&str) -> bool) -> bool {
    account.contact(address).is_some_and(|c| c.unsubscribed) || suppressed(address)
}

/// Emails sent per address in a sliding window: the in-memory ledger of
/// the dry run. The daemon keeps the same counts in its store.
#[derive(Debug, Default)]
pub struct CapLedger {
    sent: HashMap<String, VecDeque<Timestamp>>,
}

impl CapLedger {
    /// Whether the cap is reached for `address` in the window `(at - per, at]`.
    pub fn full(&mut self, cap: &Cap, address: &str, at: Timestamp) -> bool {
        let Some(q) = self.sent.get_mut(&address.to_ascii_lowercase()) else {
            return false;
        };
        let start = at.checked_sub(cap.per.span()).unwrap_or(Timestamp::MIN);
        while q.front().is_some_and(|t| *t <= start) {
            q.pop_front();
        }
        q.len() >= cap.max as usize
    }

    /// Records an email actually sent to `address` at `at`, dropping the
    /// entries no later window can reach (an owner's address is never
    /// checked, so checking alone would keep a year of its sends).
    pub fn record(&mut self, cap: &Cap, address: &str, at: Timestamp) {
        let q = self.sent.entry(address.to_ascii_lowercase()).or_default();
        let start = at.checked_sub(cap.per.span()).unwrap_or(Timestamp::MIN);
        while q.front().is_some_and(|t| *t <= start) {
            q.pop_front();
        }
        q.push_back(at);
    }
}

/// The verdict for one planned email at its send time. Non-email actions
/// and failed renders are never suppressed.
pub fn verdict(
    action: &PlannedAction,
    account: &Account,
    cap: Option<&Cap>,
    ledger: &mut CapLedger,
    suppressed: &dyn Fn(&str) -> bool,
) -> Option<Suppression> {
    let Target::Email { to, contact } = &action.target else {
        return None;
    };
    if action.content.is_err() {
        return None;
    }
    if unsubscribed(account, to, suppressed) {
        return Some(Suppression::Unsubscribed);
    }
    // Every email actually sent counts toward the address's cap ("the
    // emails actually sent to that address"); only a contact's email from
    // a moment without `bypass_limits` can be held back by it.
    if let Some(cap) = cap {
        if cap_applies(*contact, action.bypass_limits) && ledger.full(cap, to, action.at) {
            return Some(Suppression::FrequencyCap);
        }
        ledger.record(cap, to, action.at);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::Duration;

    /// Check, then record: what the dry run does per email.
    impl CapLedger {
        fn admit(&mut self, cap: &Cap, address: &str, at: Timestamp) -> bool {
            let full = self.full(cap, address, at);
            if !full {
                self.record(cap, address, at);
            }
            !full
        }
    }

    #[test]
    fn the_window_slides_and_is_half_open() {
        let cap = Cap {
            max: 2,
            per: "7d".parse::<Duration>().unwrap(),
        };
        let mut l = CapLedger::default();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(l.admit(&cap, "A@x.io", t("2026-01-01T00:00:00Z")));
        assert!(l.admit(&cap, "a@x.io", t("2026-01-02T00:00:00Z")));
        assert!(!l.admit(&cap, "a@x.io", t("2026-01-07T23:59:59Z")));
        // Exactly 7 days after the first: it left the window.
        assert!(l.admit(&cap, "a@x.io", t("2026-01-08T00:00:00Z")));
        assert!(l.admit(&cap, "b@x.io", t("2026-01-08T00:00:00Z")));
    }
}

/// The key of the dry run's (and `render`'s) links: they are shown, never
/// followed; the daemon signs with its installation secret.
pub const DRY_RUN_SECRET: &[u8] = b"touchpilot-dry-run";

/// The engine's link builder: `BASE/unsubscribe/TOKEN` for an address.
pub fn unsubscribe_links(
    base: String,
    secret: Vec<u8>,
) -> std::sync::Arc<dyn Fn(&str) -> String + Send + Sync> {
    std::sync::Arc::new(move |addr: &str| {
        format!("{base}/unsubscribe/{}", unsubscribe_token(&secret, addr))
    })
}

/// Whether the per-contact cap applies to an email: only a contact's, and
/// never one from a `bypass_limits` moment.
pub fn cap_applies(contact: bool, bypass_limits: bool) -> bool {
    contact && !bypass_limits
}

/// The token of an unsubscribe link: the address and a keyed signature of
/// it, so that a link cannot be forged for another address.
pub fn unsubscribe_token(secret: &[u8], address: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use hmac::{Hmac, Mac};
    let address = address.to_ascii_lowercase();
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(address.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        B64.encode(address.as_bytes()),
        B64.encode(&sig[..16])
    )
}

/// The address of a token, when its signature is valid.
pub fn verify_unsubscribe_token(secret: &[u8], token: &str) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let (addr, _) = token.split_once('.')?;
    let address = String::from_utf8(B64.decode(addr).ok()?).ok()?;
    // Constant-time comparison through the MAC's own verification.
    use hmac::{Hmac, Mac};
    let (_, sig) = token.split_once('.')?;
    let sig = B64.decode(sig).ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
    mac.update(address.as_bytes());
    mac.verify_truncated_left(&sig).ok()?;
    Some(address)
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_secret_and_address() {
        let t = unsubscribe_token(b"k1", "Ann@Acme.example");
        assert_eq!(
            verify_unsubscribe_token(b"k1", &t).as_deref(),
            Some("ann@acme.example")
        );
        assert_eq!(verify_unsubscribe_token(b"k2", &t), None);
        let forged = format!(
            "{}.{}",
            t.split('.').next().unwrap().replace('Y', "Z"),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(verify_unsubscribe_token(b"k1", &forged), None);
    }
}
