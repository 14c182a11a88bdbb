//! `touchpilot.yaml`, the daemon configuration, as Rust types. Strings that
//! may hold `${VAR}` are interpolated by `config::load`, never here.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::spanned::{Scalar, Sp};

/// Daemon settings. Relative paths are relative to this file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Touchpilot daemon configuration")]
pub struct DaemonSpec {
    /// Directory of playbook files (`*.yaml`, one per segment).
    pub playbooks: Sp<String>,
    /// Directory of handlebars templates.
    pub templates: Sp<String>,
    /// Default IANA timezone for accounts and playbooks with none. Default `UTC`.
    pub timezone: Option<Sp<String>>,
    /// `sqlite:PATH` (default `sqlite:touchpilot.db`) or `postgres://...`
    /// (any number of daemons may share one PostgreSQL database).
    pub store: Option<Sp<String>>,
    /// How long delivery records, applied events and traces are kept in
    /// full before they are folded into per-day counts, such as `90d` (the
    /// default). Never shorter, in effect, than the frequency cap's window.
    pub retention: Option<Sp<Scalar>>,
    /// The HTTP API.
    pub http: Option<HttpSpec>,
    /// Where accounts and events come from.
    pub sources: Option<SourcesSpec>,
    /// Outgoing email.
    pub email: Option<EmailSpec>,
    /// Named webhook endpoints that playbooks refer to.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookSpec>,
    /// Named connector plugins that playbooks refer to.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorSpec>,
    /// Endpoints that take another system's JSON as events:
    /// `POST /v1/inbound/NAME`, each body mapped by the fields named here.
    #[serde(default)]
    pub inbound: BTreeMap<String, InboundSpec>,
    /// Frequency caps.
    pub limits: Option<LimitsSpec>,
    /// Retries, lateness and timeouts of deliveries.
    pub delivery: Option<DeliverySpec>,
    /// Logging of `touchpilot run`.
    pub log: Option<LogSpec>,
}

/// Durations here are written as a number and a unit: `500ms`, `30s`,
/// `5m`, `1h`, `3d`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    /// A moment that fell due while the daemon was down (or an action whose
    /// first try comes later than this after it was due) is recorded as
    /// missed instead of sent. Default `1h`.
    pub grace: Option<Sp<Scalar>>,
    /// Retryable failures are retried for this long after the first
    /// attempt, then dead-lettered. Default `3d`.
    pub give_up_after: Option<Sp<Scalar>>,
    /// The first retry's delay; each next one doubles, with ±20% jitter.
    /// Default `30s`.
    pub first_retry: Option<Sp<Scalar>>,
    /// The longest delay between two retries. Default `1h`.
    pub max_retry: Option<Sp<Scalar>>,
    /// Timeout of one webhook request or SMTP exchange. Default `10s`.
    pub timeout: Option<Sp<Scalar>>,
    /// How long a claim is held before another worker may take the row
    /// over (a crashed worker's rows are retried after it). Default `5m`.
    pub lease: Option<Sp<Scalar>>,
    /// On SIGTERM, how long in-flight deliveries may take to finish.
    /// Default `30s`.
    pub shutdown_grace: Option<Sp<Scalar>>,
    /// Deliveries in flight at once (SMTP connections, webhook requests).
    /// Default `16`.
    pub concurrency: Option<Sp<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// `text` (the default), `json` (one object per line) or `journald`.
    /// The `--log-format` flag overrides it.
    pub format: Option<Sp<String>>,
    /// A filter such as `info` or `touchpilot=debug`. The `TOUCHPILOT_LOG`
    /// environment variable overrides it. Default `info`.
    pub level: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Address to listen on, such as `127.0.0.1:8080`.
    pub listen: Option<Sp<String>>,
    /// Base URL of unsubscribe links.
    pub public_url: Option<Sp<String>>,
    /// Bearer token required on every `/v1` request when set.
    pub token: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcesSpec {
    /// The built-in file source: JSON lines.
    pub file: Option<FileSourceSpec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// Accounts, one JSON object per line.
    pub accounts: Option<Sp<String>>,
    /// Events, one JSON object per line.
    pub events: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// The From header, such as `Acme Success <success@acme.example>`.
    pub from: Option<Sp<String>>,
    /// `file:DIR` (.eml files, the default), `smtp://[user:pass@]host:port`
    /// (add `?tls=required` for STARTTLS, or `?tls=opportunistic`) or
    /// `smtps://...` (implicit TLS).
    pub transport: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where the JSON body is POSTed.
    pub url: Sp<String>,
    /// Signing secret (Standard Webhooks signature headers when set).
    pub secret: Option<Sp<String>>,
    /// Allow private and loopback addresses (refused by default).
    #[serde(default)]
    pub allow_private: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// Path of the connector's shared library.
    pub library: Sp<String>,
    /// The connector's own configuration, passed to it as JSON.
    #[schemars(with = "Option<serde_json::Value>")]
    pub config: Option<Sp<serde_json::Value>>,
    /// The longest one HTTP request of the connector may take, in
    /// milliseconds. Default 30000.
    pub http_timeout_ms: Option<Sp<u64>>,
    /// The longest one call into the connector (a poll, an action) may
    /// take, in milliseconds; a call that takes longer is abandoned and
    /// its action retried. Default 120000.
    pub call_timeout_ms: Option<Sp<u64>>,
}

/// How a foreign JSON object becomes an event. Each value names a
/// top-level field of the posted object; the whole object becomes the
/// event's `data`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundSpec {
    /// The field holding the account id.
    pub account: Sp<String>,
    /// The field holding the event type. Default `type`.
    #[serde(rename = "type")]
    pub kind: Option<Sp<String>>,
    /// The field holding a unique id (events with one are deduplicated).
    pub id: Option<Sp<String>>,
    /// The field holding when it happened (RFC 3339); receipt time otherwise.
    pub at: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// At most `max` emails to one contact address within `per`.
    pub per_contact: Option<CapSpec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapSpec {
    pub max: Sp<u32>,
    pub per: Sp<Scalar>,
}
