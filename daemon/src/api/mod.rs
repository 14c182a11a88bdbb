//! The HTTP API: events and accounts in (`/v1`, behind the bearer token),
//! health (`/live`, `/ready`), metrics, and the unsubscribe pages. Answers
//! `202` only after events are durably stored; never writes to the outbox
//! itself (account upserts go through the runner, like any engine step).

pub mod vendor_hooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::app::IngestRequest;
use crate::deliver::worker::Delivered;
use crate::model::account::Account;
use crate::model::event::Event;
use crate::runner::{Progress, Runner};
use crate::store::Store;

/// Counters shown on `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub requests_rejected: AtomicU64,
    /// Lines of the file source that could not be read (each logged).
    pub source_rejected: AtomicU64,
    pub steps: AtomicU64,
    pub moments_fired: AtomicU64,
    pub actions_planned: AtomicU64,
    pub delivered_sent: AtomicU64,
    pub delivered_retried: AtomicU64,
    pub delivered_dead: AtomicU64,
    pub delivered_suppressed: AtomicU64,
    pub delivered_missed: AtomicU64,
}

impl Counters {
    pub fn record(&self, p: &Progress) {
        self.steps.fetch_add(p.steps as u64, Ordering::Relaxed);
        self.moments_fired
            .fetch_add(p.fired as u64, Ordering::Relaxed);
        self.actions_planned
            .fetch_add(p.actions as u64, Ordering::Relaxed);
    }

    pub fn ingested(&self, n: &crate::store::Ingested) {
        self.events_accepted
            .fetch_add(n.accepted as u64, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(n.duplicates as u64, Ordering::Relaxed);
    }

    pub fn delivered(&self, d: &Delivered) {
        for (counter, n) in [
            (&self.delivered_sent, d.sent),
            (&self.delivered_retried, d.retried),
            (&self.delivered_dead, d.dead),
            (&self.delivered_suppressed, d.suppressed),
            (&self.delivered_missed, d.missed),
        ] {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

pub struct ApiState<S: Store> {
    pub runner: Arc<Runner<S>>,
    /// Wakes the engine loop when new input arrives.
    pub wake: Arc<Notify>,
    /// The group commit of accepted events.
    pub ingest: mpsc::Sender<IngestRequest>,
    pub secret: Vec<u8>,
    pub ready: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    /// The connector plugins, for their figures on `/metrics`.
    pub connectors: Option<crate::deliver::connector::Connectors>,
}

/// The largest request body accepted (events and accounts).
pub const MAX_BODY: usize = 4 << 20;

pub fn router<S: Store + 'static>(state: Arc<ApiState<S>>) -> Router {
    let v1 = Router::new()
        .route("/events", post(post_events::<S>))
        .route("/inbound/{name}", post(post_inbound::<S>))
        .route("/accounts/{id}", put(put_account::<S>))
        .layer(middleware::from_fn_with_state(state.clone(), auth::<S>));
    Router::new()
        .nest("/v1", v1)
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready::<S>))
        .route("/metrics", get(metrics::<S>))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe_page::<S>).post(unsubscribe::<S>),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn auth<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.runner.engine().config.http.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a secret.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            st.counters
                .requests_rejected
                .fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            );
        }
    }
    next.run(request).await
}

/// Parses a body of one event, a JSON array of them, or NDJSON. Errors
/// name the line (NDJSON) or the position in the array, and the field.
fn parse_events(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, String> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.starts_with("application/x-ndjson") || c.starts_with("application/jsonl")
        });
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    if ndjson {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("line {}: invalid JSON: {e}", i + 1))?;
            out.push(Event::from_json(&v).map_err(|e| format!("line {}: {e}", i + 1))?);
        }
        return Ok(out);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Event::from_json(e).map_err(|m| format!("event {} of the array: {m}", i + 1))
            })
            .collect(),
        other => Ok(vec![Event::from_json(&other)?]),
    }
}

async fn post_events<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reject = |msg: String| {
        st.counters
            .requests_rejected
            .fetch_add(1, Ordering::Relaxed);
        error(
            StatusCode::BAD_REQUEST,
            format!("{msg}; no event of this request was stored"),
        )
    };
    let events = match parse_events(&headers, &body) {
        Ok(e) => e,
        Err(m) => return reject(m),
    };
    accept(&st, events).await
}

/// `POST /v1/inbound/NAME`: another system's JSON object (or an array of
/// them), mapped to events by the fields `inbound.NAME` names.
async fn post_inbound<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let config = st.runner.engine().config;
    let Some(mapping) = config.inbound.get(&name) else {
        let names: Vec<&str> = config.inbound.keys().map(String::as_str).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no inbound endpoint `{name}` (declared under `inbound:` in touchpilot.yaml: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        );
    };
    let reject = |msg: String| {
        st.counters
            .requests_rejected
            .fetch_add(1, Ordering::Relaxed);
        error(
            StatusCode::BAD_REQUEST,
            format!("{msg}; no event of this request was stored"),
        )
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(format!("invalid JSON: {e}")),
    };
    let events = match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, o)| {
                mapping
                    .event(o)
                    .map_err(|m| format!("object {} of the array: {m}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>(),
        other => mapping.event(&other).map(|e| vec![e]),
    };
    match events {
        Ok(events) => accept(&st, events).await,
        Err(m) => reject(m),
    }
}

/// Stores a request's events (all or none) and answers `202` once they
/// are durable. An event for an account nobody created is refused, named:
/// accepting it would only set it aside later, unseen by whoever sent it.
async fn accept<S: Store + 'static>(st: &ApiState<S>, events: Vec<Event>) -> Response {
    let mut ids: Vec<&str> = events.iter().map(|e| e.account.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    match st.runner.missing_accounts(&ids).await {
        Ok(missing) if !missing.is_empty() => {
            let (i, e) = events
                .iter()
                .enumerate()
                .find(|(_, e)| missing.contains(&e.account))
                .expect("a missing account belongs to an event");
            st.counters
                .requests_rejected
                .fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "event {}: field `account`: unknown account `{}` (create it with PUT /v1/accounts/{}); no event of this request was stored",
                    i + 1,
                    e.account,
                    e.account
                ),
            );
        }
        Ok(_) => {}
        Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {err}")),
    }
    let (tx, rx) = oneshot::channel();
    if st.ingest.send((events, tx)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; nothing was stored",
        );
    }
    match rx.await {
        Ok(Ok(n)) => (
            StatusCode::ACCEPTED,
            Json(json!({"accepted": n.accepted, "duplicates": n.duplicates})),
        )
            .into_response(),
        Ok(Err(err)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: {err}; nothing was stored"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; nothing was stored",
        ),
    }
}

async fn put_account<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    if let Some(obj) = v.as_object_mut() {
        match obj.get("id").and_then(Value::as_str) {
            Some(given) if given != id => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("field `id`: `{given}` does not match the path's `{id}`"),
                );
            }
            _ => {
                obj.insert("id".into(), Value::String(id.clone()));
            }
        }
    }
    let account = match Account::from_json(v) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let put = async {
        let p = st.runner.put_account(account, Timestamp::now()).await?;
        st.runner.store.durable().await?;
        Ok::<_, crate::store::StoreError>(p)
    };
    match put.await {
        Ok(p) => {
            st.counters.record(&p);
            st.wake.notify_one();
            (StatusCode::OK, Json(json!({"id": id}))).into_response()
        }
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {err}")),
    }
}

async fn ready<S: Store + 'static>(State(st): State<Arc<ApiState<S>>>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics<S: Store + 'static>(State(st): State<Arc<ApiState<S>>>) -> Response {
    use std::fmt::Write as _;
    let c = &st.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, f64)]| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in values {
            let _ = writeln!(text, "{name}{labels} {v}");
        }
    };
    for (name, help, counter) in [
        (
            "touchpilot_events_accepted_total",
            "Events durably stored.",
            &c.events_accepted,
        ),
        (
            "touchpilot_events_duplicate_total",
            "Events whose id was already stored.",
            &c.events_duplicate,
        ),
        (
            "touchpilot_requests_rejected_total",
            "API requests refused (bad input, bad token).",
            &c.requests_rejected,
        ),
        (
            "touchpilot_source_lines_rejected_total",
            "File source lines that could not be read.",
            &c.source_rejected,
        ),
        (
            "touchpilot_engine_steps_total",
            "Account steps committed.",
            &c.steps,
        ),
        (
            "touchpilot_moments_fired_total",
            "Moments and milestone escalations fired.",
            &c.moments_fired,
        ),
        (
            "touchpilot_actions_planned_total",
            "Actions written to the outbox.",
            &c.actions_planned,
        ),
    ] {
        metric(name, "counter", help, &[("", g(counter) as f64)]);
    }
    metric(
        "touchpilot_deliveries_total",
        "counter",
        "Delivery attempts by outcome.",
        &[
            ("{outcome=\"sent\"}", g(&c.delivered_sent) as f64),
            ("{outcome=\"retried\"}", g(&c.delivered_retried) as f64),
            ("{outcome=\"dead\"}", g(&c.delivered_dead) as f64),
            (
                "{outcome=\"suppressed\"}",
                g(&c.delivered_suppressed) as f64,
            ),
            ("{outcome=\"missed\"}", g(&c.delivered_missed) as f64),
        ],
    );
    // Gauges from the store: they hold across restarts and instances.
    let now = Timestamp::now();
    match st.runner.store.stats(now).await {
        Ok(s) => {
            metric(
                "touchpilot_outbox_rows",
                "gauge",
                "Outbox rows by state.",
                &[
                    ("{state=\"pending\"}", s.pending as f64),
                    ("{state=\"sending\"}", s.sending as f64),
                    ("{state=\"sent\"}", s.sent as f64),
                    ("{state=\"dead\"}", s.dead as f64),
                    ("{state=\"suppressed\"}", s.suppressed as f64),
                    ("{state=\"missed\"}", s.missed as f64),
                ],
            );
            metric(
                "touchpilot_outbox_depth",
                "gauge",
                "Rows waiting to be delivered (pending and sending).",
                &[("", (s.pending + s.sending) as f64)],
            );
            let age = s
                .oldest_pending
                .map(|t| now.duration_since(t).as_secs_f64().max(0.0))
                .unwrap_or(0.0);
            metric(
                "touchpilot_outbox_oldest_pending_seconds",
                "gauge",
                "How long the oldest pending row has been due.",
                &[("", age)],
            );
            metric(
                "touchpilot_dead_letters",
                "gauge",
                "Rows that failed for good (see `touchpilot dead-letters`).",
                &[("", s.dead as f64)],
            );
            metric(
                "touchpilot_missed_total",
                "gauge",
                "Moments due longer ago than the grace period when first tried.",
                &[("", s.missed as f64)],
            );
            metric(
                "touchpilot_accounts",
                "gauge",
                "Accounts known.",
                &[("", s.accounts as f64)],
            );
            metric(
                "touchpilot_events_pending",
                "gauge",
                "Accepted events not yet applied.",
                &[("", s.events_pending as f64)],
            );
            metric(
                "touchpilot_store_up",
                "gauge",
                "Whether the store answered.",
                &[("", 1.0)],
            );
        }
        Err(_) => metric(
            "touchpilot_store_up",
            "gauge",
            "Whether the store answered.",
            &[("", 0.0)],
        ),
    }
    if let Some(connectors) = &st.connectors {
        connector_metrics(&mut text, connectors);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Per connector: whether its plugin loaded, and the counters it reported
/// (through the host's `metric` callback) with the host's own for it
/// (`http_requests`, `http_failures`). A plugin's names are its own, so
/// they are a label of one family rather than families of their own.
fn connector_metrics(text: &mut String, connectors: &crate::deliver::connector::Connectors) {
    use std::fmt::Write as _;
    let plugins = &connectors.host.plugins;
    if plugins.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "# HELP touchpilot_connector_up Whether the connector's plugin is loaded (0: it failed to load; its actions are retried).\n# TYPE touchpilot_connector_up gauge"
    );
    for (name, plugin) in plugins {
        let _ = writeln!(
            text,
            "touchpilot_connector_up{{connector=\"{}\"}} {}",
            label(name),
            u8::from(plugin.is_ok())
        );
    }
    let _ = writeln!(
        text,
        "# HELP touchpilot_connector_reported_total Counters a connector plugin reported, and the host's own for it, by name.\n# TYPE touchpilot_connector_reported_total counter"
    );
    for (name, plugin) in plugins {
        let Ok(plugin) = plugin else { continue };
        for (counter, value) in plugin.ctx.counters() {
            let _ = writeln!(
                text,
                "touchpilot_connector_reported_total{{connector=\"{}\",name=\"{}\"}} {value}",
                label(name),
                label(&counter)
            );
        }
    }
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn unsubscribe_page<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    Path(token): Path<String>,
) -> Response {
    match crate::deliver::verify_unsubscribe_token(&st.secret, &token) {
        // Showing the page changes nothing: mail scanners follow links.
        Some(address) => Html(format!(
            "<!doctype html><title>Unsubscribe</title><p>Stop emails to <b>{}</b>?</p><form method=post><button>Unsubscribe</button></form>",
            html_escape(&address)
        ))
        .into_response(),
        None => invalid_link(),
    }
}

async fn unsubscribe<S: Store + 'static>(
    State(st): State<Arc<ApiState<S>>>,
    Path(token): Path<String>,
) -> Response {
    let Some(address) = crate::deliver::verify_unsubscribe_token(&st.secret, &token) else {
        return invalid_link();
    };
    match st
        .runner
        .store
        .suppress(&address, "link", Timestamp::now())
        .await
    {
        Ok(()) => Html(format!(
            "<!doctype html><p><b>{}</b> is unsubscribed.</p>",
            html_escape(&address)
        ))
        .into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {err}")),
    }
}

fn invalid_link() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><p>This unsubscribe link is not valid.</p>"),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
