//! The host against real libraries built to misbehave (`plugins/testing/`):
//! each failure is an error naming the plugin and the reason, and the test
//! process (the daemon, in production) keeps running.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// A plugin library built next to this test binary (`scripts/test` builds
/// the plugin crates before the tests).
pub fn library(stem: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = dir.join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (./scripts/test does)",
        path.display()
    );
    path
}

fn limits(call_ms: u64) -> Limits {
    Limits {
        http_timeout: Duration::from_millis(300),
        call_timeout: Duration::from_millis(call_ms),
    }
}

fn misbehave(mode: &str, call_ms: u64) -> Result<Plugin, PluginError> {
    Plugin::load(
        "crm",
        &library("touchpilot_test_misbehave"),
        &json!({"mode": mode}),
        limits(call_ms),
    )
}

/// A local server recording request bodies and headers; `/hang` never answers.
async fn server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use axum::http::HeaderMap;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post(move |h: HeaderMap, body: String| async move {
                let key = h
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                s.lock().unwrap().push((key, body));
                (axum::http::StatusCode::CREATED, r#"{"id":"T-1"}"#)
            }),
        )
        .route(
            "/hang",
            axum::routing::post(std::future::pending::<&'static str>),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_well_behaved_plugin_is_called_and_uses_the_hosts_http() {
    let p = misbehave("ok", 5_000).unwrap();
    assert_eq!(
        (p.plugin_name.as_str(), p.version.as_str()),
        ("misbehave", "0.1.0")
    );
    assert!(p.can(caps::ACTIONS) && !p.can(caps::WEBHOOK));
    assert_eq!(p.call("check", &json!({})).await.unwrap(), json!({}));
    let (base, seen) = server().await;
    let out = p
        .call(
            "act",
            &json!({"key": "tp-1", "content": {"url": format!("{base}/ok")}}),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"id": "T-1", "created": true}));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "tp-1");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].1).unwrap()["key"],
        "tp-1"
    );
    assert_eq!(p.ctx.metric("http_requests"), 1.0);
    assert_eq!(p.ctx.metric("misbehave_calls"), 2.0);
    // The host checks capabilities before calling.
    let e = p.call("webhook", &json!({})).await.unwrap_err();
    assert_eq!(e.to_string(), "connector `crm`: does not support `webhook`");
}

#[tokio::test]
async fn an_http_request_that_never_answers_is_a_retryable_error() {
    let p = misbehave("ok", 5_000).unwrap();
    let (base, _) = server().await;
    let e = p
        .call(
            "act",
            &json!({"key": "k", "content": {"url": format!("{base}/hang")}}),
        )
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e}");
    assert!(e.to_string().contains("no answer within 300ms"), "{e}");
}

#[test]
fn a_wrong_abi_version_is_refused_before_any_call() {
    // The bad-abi plugin panics if any of its calls is reached.
    let e = Plugin::load(
        "old",
        &library("touchpilot_test_bad_abi"),
        &json!({}),
        limits(1_000),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, PluginError::AbiMismatch { major: 99, .. }),
        "{msg}"
    );
    assert!(msg.starts_with("connector `old`: "), "{msg}");
    assert!(
        msg.contains("built for plugin ABI 99.0, this touchpilot speaks 1.0"),
        "{msg}"
    );
    assert!(!e.retryable());
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let e = Plugin::load(
        "x",
        &library("touchpilot_test_no_symbol"),
        &json!({}),
        limits(1_000),
    )
    .unwrap_err();
    assert!(matches!(e, PluginError::MissingSymbol { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "is not a Touchpilot connector: it does not export the symbol `touchpilot_connector_v1`"
        ),
        "{e}"
    );
    let e = Plugin::load(
        "y",
        Path::new("/nonexistent/libx.so"),
        &json!({}),
        limits(1_000),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("connector `y`: cannot load /nonexistent/libx.so: "),
        "{e}"
    );
}

#[tokio::test]
async fn a_panic_in_every_call_is_an_error_and_the_host_carries_on() {
    let p = misbehave("panic", 5_000).unwrap();
    for op in ["check", "act", "poll"] {
        let e = p.call(op, &json!({})).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("connector `crm` ({op}): panicked in call: misbehave: asked to panic in {op}")
        );
        assert!(!e.retryable());
    }
    let e = misbehave("panic-open", 5_000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "connector `crm` (open): panicked in open: misbehave: asked to panic in open"
    );
    // A configuration the plugin refuses names the field.
    let e = misbehave("sideways", 5_000).unwrap_err();
    assert!(e.to_string().contains("unknown mode `sideways`"), "{e}");
}

#[tokio::test]
async fn a_call_that_hangs_times_out_and_hung_calls_are_bounded() {
    let p = misbehave("hang", 50).unwrap();
    let e = p.call("act", &json!({})).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "connector `crm` (act): did not answer within 50ms; the call was abandoned"
    );
    assert!(e.retryable());
    assert!(matches!(
        p.call_blocking("check", &json!({})),
        Err(PluginError::Timeout { .. })
    ));
    // Each hung call keeps its thread; past the bound, calls fail at once.
    for _ in 2..MAX_IN_FLIGHT {
        assert!(matches!(
            p.call("act", &json!({})).await,
            Err(PluginError::Timeout { .. })
        ));
    }
    let e = p.call("act", &json!({})).await.unwrap_err();
    assert!(matches!(e, PluginError::Busy { running: 8, .. }), "{e}");
    assert!(e.retryable());
}

#[tokio::test]
async fn garbage_instead_of_json_is_an_error_naming_the_plugin() {
    let p = Plugin::load(
        "junk",
        &library("touchpilot_test_garbage"),
        &json!({}),
        limits(1_000),
    )
    .unwrap();
    let e = p.call("act", &json!({})).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("connector `junk` (act): answered something that is not a reply: "),
        "{e}"
    );
    assert!(!e.retryable());
}
