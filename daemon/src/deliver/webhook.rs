//! Webhook delivery: the rendered JSON body POSTed to a named endpoint,
//! signed in the Standard Webhooks style when the endpoint has a secret,
//! with an id fixed when the action was recorded. Redirects are never
//! followed. Private and loopback addresses are refused when connecting
//! (after name resolution, so a name that resolves to one is refused too)
//! unless the endpoint says `allow_private: true`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde_json::Value;

use super::SendError;
use crate::config::Webhook;

pub struct Webhooks {
    /// Connects to public addresses only.
    public: reqwest::Client,
    /// For endpoints with `allow_private: true`.
    any: reqwest::Client,
    endpoints: BTreeMap<String, Endpoint>,
}

/// An endpoint with what every request to it shares worked out once:
/// its URL parsed, the private address it names (if it names one) and
/// its signing key.
struct Endpoint {
    config: Webhook,
    /// `None` when the URL does not parse: sending then fails as reqwest
    /// says, as it always did.
    url: Option<reqwest::Url>,
    /// A private or loopback address written in the URL: refused at
    /// send time unless the endpoint allows it.
    private_literal: Option<IpAddr>,
    /// The HMAC keyed with the endpoint's secret, cloned per request.
    key: Option<Hmac<sha2::Sha256>>,
}

impl Endpoint {
    fn new(config: Webhook) -> Endpoint {
        let url = reqwest::Url::parse(&config.url).ok();
        // An address written in the URL is never resolved: it is checked
        // here, not by the resolver.
        let private_literal = url
            .as_ref()
            .and_then(|u| {
                u.host_str()?
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .ok()
            })
            .filter(|ip| is_private(*ip));
        let key = config.secret.as_deref().map(hmac_key);
        Endpoint {
            config,
            url,
            private_literal,
            key,
        }
    }
}

/// Addresses a webhook may reach only when its endpoint allows private
/// ones: loopback, private networks, link-local (cloud metadata services
/// live there), carrier-grade NAT, unspecified, multicast and broadcast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why a connection was refused: the name resolved to private addresses only.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` resolves to {addr}, a private or loopback address")]
struct PrivateAddress {
    host: String,
    addr: IpAddr,
}

/// The resolver of the public client: drops private addresses, and fails
/// when nothing else is left. Checked at connect time, the answer cannot
/// change between the check and the connection (DNS rebinding).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_private(a.ip()))
                .collect();
            match (public.is_empty(), all.first()) {
                (true, Some(first)) => Err(Box::new(PrivateAddress {
                    host,
                    addr: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The refusal of a private address, if that is what `e` is.
fn refused(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<PrivateAddress>() {
            return Some(p.to_string());
        }
        source = s.source();
    }
    None
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
    sign(hmac_key(secret), id, timestamp, body)
}

/// The HMAC keyed with a secret, as `signature` reads it.
fn hmac_key(secret: &str) -> Hmac<sha2::Sha256> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| B64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length")
}

fn sign(mut mac: Hmac<sha2::Sha256>, id: &str, timestamp: i64, body: &[u8]) -> String {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    pub fn new(
        endpoints: BTreeMap<String, Webhook>,
        timeout: Duration,
    ) -> Result<Webhooks, String> {
        crate::tls::init();
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .user_agent(concat!("touchpilot/", env!("CARGO_PKG_VERSION")))
        };
        let public = builder()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let any = builder().build().map_err(|e| format!("http client: {e}"))?;
        Ok(Webhooks {
            public,
            any,
            endpoints: endpoints
                .into_iter()
                .map(|(name, w)| (name, Endpoint::new(w)))
                .collect(),
        })
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
        let client = if endpoint.config.allow_private {
            &self.any
        } else {
            if let Some(ip) = endpoint.private_literal {
                return Err(SendError::Fatal(format!(
                    "webhook `{name}`: {ip} is a private or loopback address; set `allow_private: true` on the endpoint to allow it"
                )));
            }
            &self.public
        };
        let signature = endpoint.key.clone().map(|key| sign(key, &id, ts, &body));
        let request = match &endpoint.url {
            Some(url) => {
                // Built directly: the URL is parsed once per endpoint, and
                // the headers need no conversion.
                use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
                let mut request = reqwest::Request::new(reqwest::Method::POST, url.clone());
                let headers = request.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let value = |v: String| HeaderValue::try_from(v).map_err(|e| e.to_string());
                let mut put = |name: &'static str, v: String| {
                    value(v).map(|v| headers.insert(HeaderName::from_static(name), v))
                };
                put("webhook-id", id)
                    .and_then(|_| put("webhook-timestamp", ts.to_string()))
                    .and_then(|_| match signature {
                        Some(sig) => put("webhook-signature", sig),
                        None => Ok(None),
                    })
                    .map_err(|e| SendError::Retryable(format!("webhook `{name}`: {e}")))?;
                *request.body_mut() = Some(body.into());
                Ok(request)
            }
            None => {
                let mut req = client
                    .post(&endpoint.config.url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string());
                if let Some(sig) = signature {
                    req = req.header("webhook-signature", sig);
                }
                req.body(body).build()
            }
        };
        let sent = match request {
            Ok(request) => client.execute(request).await,
            Err(e) => Err(e),
        };
        let response = sent.map_err(|e| {
            if let Some(why) = refused(&e) {
                return SendError::Fatal(format!(
                    "webhook `{name}`: {why}; set `allow_private: true` on the endpoint to allow it"
                ));
            }
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
            410 => Err(SendError::Gone(format!(
                "webhook `{name}`: 410 gone, the endpoint no longer accepts deliveries; it is disabled"
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
