//! Webhook delivery: the rendered JSON body POSTed to a named endpoint,
//! signed in the Standard Webhooks style when the endpoint has a secret,
//! with an id fixed when the action was recorded. Redirects are never
//! followed.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde_json::Value;

use super::SendError;
use crate::config::Webhook;

pub struct Webhooks {
    client: reqwest::Client,
    endpoints: BTreeMap<String, Webhook>,
}

/// The `webhook-id` of a payload: its message id without brackets.
pub fn webhook_id(payload: &Value) -> String {
    let id = payload
        .get("message_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let id = id.trim_matches(|c| c == '<' || c == '>');
    format!("msg_{}", id.split('@').next().unwrap_or(id))
}

/// `v1,BASE64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`. A secret
/// written `whsec_BASE64` is that key; any other secret is used as bytes.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| B64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    pub fn new(
        endpoints: BTreeMap<String, Webhook>,
        timeout: Duration,
    ) -> Result<Webhooks, String> {
        crate::tls::init();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("touchpilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Webhooks { client, endpoints })
    }

    pub async fn send(&self, payload: &Value, now: Timestamp) -> Result<(), SendError> {
        let name = payload
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or("");
        let endpoint = self
            .endpoints
            .get(name)
            .ok_or_else(|| SendError::Fatal(format!("unknown webhook endpoint `{name}`")))?;
        let body = serde_json::to_vec(payload.get("content").unwrap_or(&Value::Null))
            .expect("JSON serializes");
        let id = webhook_id(payload);
        let ts = now.as_second();
        let mut req = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string());
        if let Some(secret) = &endpoint.secret {
            req = req.header("webhook-signature", signature(secret, &id, ts, &body));
        }
        let response = req.body(body).send().await.map_err(|e| {
            SendError::Retryable(format!(
                "webhook `{name}`: {}",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            ))
        })?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => Ok(()),
            410 => Err(SendError::Fatal(format!(
                "webhook `{name}`: 410 gone, the endpoint no longer accepts deliveries"
            ))),
            408 | 429 | 500..=599 => Err(SendError::Retryable(format!(
                "webhook `{name}`: HTTP {status}"
            ))),
            300..=399 => Err(SendError::Fatal(format!(
                "webhook `{name}`: HTTP {status}, redirects are not followed"
            ))),
            _ => Err(SendError::Fatal(format!("webhook `{name}`: HTTP {status}"))),
        }
    }
}
