//! Inbound webhooks from vendors (Zendesk triggers, HubSpot webhooks):
//! `POST /hooks/{connector}`. Outside `/v1` and its bearer token, because
//! a vendor cannot send ours: the connector verifies the vendor's own
//! signature and turns the request into events, which are stored like
//! any other (deduplicated by id, so a webhook and a poll that see the
//! same change store it once) before the answer.
//!
//! Never writes the outbox and never trusts a request its connector did
//! not accept.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::deliver::connector::Connectors;
use crate::runner::Runner;
use crate::store::Store;

/// Largest webhook body accepted.
const MAX_BODY: usize = 1 << 20;

pub struct HooksState<S: Store> {
    pub connectors: Connectors,
    pub runner: Arc<Runner<S>>,
    pub wake: Arc<Notify>,
    /// The daemon's public base URL: vendors sign the URL they called.
    pub public_url: String,
}

pub fn router<S: Store + 'static>(state: Arc<HooksState<S>>) -> axum::Router {
    axum::Router::new()
        .route("/hooks/{connector}", axum::routing::post(hook::<S>))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn hook<S: Store + 'static>(
    State(st): State<Arc<HooksState<S>>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plugin = match st.connectors.host.get(&name) {
        Ok(p) if p.can(touchpilot_plugin::caps::WEBHOOK) => p.clone(),
        Ok(_) => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("connector `{name}` takes no webhooks"),
            );
        }
        Err(e) => return problem(StatusCode::NOT_FOUND, e.to_string()),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let now = Timestamp::now();
    let input = json!({
        "method": method.as_str(),
        "uri": format!("{}{path}", st.public_url.trim_end_matches('/')),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "now": now.to_string(),
    });
    let reply = match plugin.call(touchpilot_plugin::ops::WEBHOOK, &input).await {
        Ok(r) => r,
        // The vendor retries on 5xx: right for a transient failure only.
        Err(e) if e.retryable() => return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(reason) = reply.get("rejected").and_then(Value::as_str) {
        tracing::warn!(connector = %name, %reason, "vendor webhook refused");
        return problem(
            StatusCode::UNAUTHORIZED,
            format!("connector `{name}`: {reason}"),
        );
    }
    let mut events = match crate::source::connector::parse_events(reply.get("events")) {
        Ok(e) => e,
        Err(reason) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                format!("connector `{name}` (webhook): {reason}"),
            );
        }
    };
    // Accounts the connector read again: stored as a poll's would be
    // (admitted, or `account.updated` and role changes), never silently.
    let accounts = reply
        .get("accounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !accounts.is_empty() {
        match crate::source::connector::store_accounts(&name, &st.runner, accounts, false, now)
            .await
        {
            Ok((_, derived)) => events.extend(derived),
            Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    match st.runner.store.ingest(&events, now).await {
        Ok(n) => {
            if n.accepted > 0 {
                st.wake.notify_one();
            }
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": n.accepted, "duplicates": n.duplicates})),
            )
                .into_response()
        }
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}
