//! Connector plugins through the daemon's front doors: `touchpilot
//! validate` loads each library, checks its ABI and has the connector
//! check its configuration, reporting each problem at its line.

use std::path::{Path, PathBuf};

use touchpilot::plugin_host::Plugin;

/// A plugin library built next to this test binary (`scripts/test`
/// builds the plugin crates before the tests).
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

#[test]
fn validate_loads_every_connector_and_reports_each_problem_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let yaml = format!(
        "playbooks: playbooks\ntemplates: templates\nconnectors:\n  good: {{ library: {good}, config: {{ mode: ok }} }}\n  old: {{ library: {old} }}\n  picky: {{ library: {good}, config: {{ mode: sideways }} }}\n  none: {{ library: {none} }}\n  later: {{ library: not-built-yet.so }}\n",
        good = library("touchpilot_test_misbehave").display(),
        old = library("touchpilot_test_bad_abi").display(),
        none = library("touchpilot_test_no_symbol").display(),
    );
    let config = dir.path().join("touchpilot.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = touchpilot::commands::validate(&config, &mut out, &mut err);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 1, "{out}");
    let at = |line: u32| format!("{}:{line}:", config.display());
    let lines: Vec<&str> = out.lines().collect();
    let has = |line: u32, needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(&at(line)) && l.contains(needle))
    };
    assert!(
        has(5, "connector `old`: ") && has(5, "built for plugin ABI 99.0"),
        "{out}"
    );
    assert!(
        has(
            6,
            "connector `picky` (open): config: unknown mode `sideways`"
        ),
        "{out}"
    );
    assert!(
        has(7, "connector `none`: ") && has(7, "does not export the symbol"),
        "{out}"
    );
    assert!(
        has(8, "warning") && has(8, "connector `later`: library"),
        "{out}"
    );
    assert!(!out.contains("`good`"), "{out}");
    let about_connectors = lines.iter().filter(|l| l.contains("connector `")).count();
    assert_eq!(about_connectors, 4, "{out}");
}

mod outbox {
    //! Connector actions delivered from the outbox by the real worker,
    //! through the real host, to plugins that behave and plugins that do
    //! not: nothing is lost, everything is retried or dead-lettered with
    //! a reason naming the connector.

    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use jiff::{SignedDuration, Timestamp};
    use serde_json::{Value, json};
    use touchpilot::deliver::connector::Connectors;
    use touchpilot::deliver::email::Mailer;
    use touchpilot::deliver::webhook::Webhooks;
    use touchpilot::deliver::worker::Worker;
    use touchpilot::engine::Engine;
    use touchpilot::model::account::Account;
    use touchpilot::model::event::Event;
    use touchpilot::runner::Runner;
    use touchpilot::store::sqlite::SqliteStore;
    use touchpilot::store::{OutboxState, Store};

    use super::library;

    /// A vendor stand-in: answers each POST with the next scripted status
    /// (then 201), recording the idempotency key and body.
    /// Status and `Retry-After` of each answer, in order.
    type Script = Vec<(u16, Option<&'static str>)>;

    #[derive(Clone, Default)]
    struct Vendor {
        seen: Arc<Mutex<Vec<(String, Value)>>>,
        script: Arc<Mutex<Script>>,
    }

    async fn vendor(script: Script) -> (String, Vendor) {
        let v = Vendor::default();
        *v.script.lock().unwrap() = script;
        let state = v.clone();
        let app = axum::Router::new().route(
            "/tasks",
            axum::routing::post(move |h: HeaderMap, body: String| {
                let v = state.clone();
                async move {
                    let key = h["idempotency-key"].to_str().unwrap().to_string();
                    v.seen
                        .lock()
                        .unwrap()
                        .push((key, serde_json::from_str(&body).unwrap()));
                    let mut script = v.script.lock().unwrap();
                    let (code, retry_after) = if script.is_empty() {
                        (201, None)
                    } else {
                        script.remove(0)
                    };
                    let mut headers = HeaderMap::new();
                    if let Some(r) = retry_after {
                        headers.insert("retry-after", r.parse().unwrap());
                    }
                    (
                        StatusCode::from_u16(code).unwrap(),
                        headers,
                        r#"{"id":"T-9","errors":["validation: subject is blank"]}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), v)
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A daemon's runner and worker over a fresh store, with one connector
    /// `crm` (the misbehave plugin in `mode`) and one event queued.
    async fn daemon(
        dir: &std::path::Path,
        library: &std::path::Path,
        mode: &str,
        base: &str,
    ) -> (Runner<SqliteStore>, Worker) {
        std::fs::create_dir_all(dir.join("playbooks")).unwrap();
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("touchpilot.yaml"),
            format!(
                "playbooks: playbooks\ntemplates: templates\nconnectors:\n  crm: {{ library: {}, config: {{ mode: {mode} }}, call_timeout_ms: {timeout} }}\n",
                library.display(),
                // Short for the plugin that hangs; a panic's backtrace takes its time.
                timeout = if mode == "hang" { 200 } else { 10_000 }
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("playbooks/main.yaml"),
            "moments:\n  - id: urgent\n    on: { event: ticket.created }\n    actions:\n      - connector: { name: crm, action: create_task, template: task }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("templates/task.json.hbs"),
            format!("{{\"url\": \"{base}/tasks\", \"subject\": \"Call {{{{account.name}}}}\"}}"),
        )
        .unwrap();
        let (config, _) =
            touchpilot::config::load(&dir.join("touchpilot.yaml"), &|_| None).unwrap();
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), Arc::new(|a: &str| a.to_string()));
        let store = SqliteStore::open(&format!("sqlite:{}", dir.join("t.db").display()))
            .await
            .unwrap();
        let runner = Runner::new(store, engine);
        let start = t("2026-03-02T10:00:00Z");
        let acme = json!({"id": "a1", "name": "Acme", "owner": {"name": "Dana", "email": "dana@vendor.example"}});
        runner
            .seed(vec![Account::from_json(acme).unwrap()], start)
            .await
            .unwrap();
        let event = Event {
            id: Some("t1".into()),
            account: "a1".into(),
            kind: "ticket.created".into(),
            at: Some(start),
            data: json!({}),
        };
        runner.store.ingest(&[event], start).await.unwrap();
        runner.apply_pending(start, 10).await.unwrap();
        let mailer = Mailer::new("file:outbox", "a@b.example", dir).unwrap();
        let webhooks =
            Webhooks::new(Default::default(), std::time::Duration::from_secs(1)).unwrap();
        let mut worker = Worker::new(mailer, webhooks, None, Default::default());
        worker.connectors = Some(Connectors::load(&config.connectors).await);
        (runner, worker)
    }

    async fn row(runner: &Runner<SqliteStore>) -> touchpilot::store::OutboxRow {
        let rows = runner.store.list_outbox(10).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0].clone()
    }

    #[tokio::test]
    async fn an_action_is_retried_after_the_vendors_retry_after_then_sent_once_with_one_key() {
        let (base, v) = vendor(vec![(429, Some("120")), (503, None)]).await;
        let dir = tempfile::tempdir().unwrap();
        let lib = library("touchpilot_test_misbehave");
        let (runner, worker) = daemon(dir.path(), &lib, "ok", &base).await;
        let now = t("2026-03-02T10:00:01Z");
        let d = worker
            .deliver_due(&runner.store, now, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.retried, 1, "{d:?}");
        let r = row(&runner).await;
        assert_eq!(r.state, OutboxState::Pending);
        assert!(
            r.last_error
                .as_deref()
                .unwrap()
                .starts_with("connector `crm` (act): misbehave act: HTTP 429"),
            "{r:?}"
        );
        // The backoff alone would be at most 36 s: the vendor's 120 s wins.
        let early = now.checked_add(SignedDuration::from_secs(119)).unwrap();
        let d = worker
            .deliver_due(&runner.store, early, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d, Default::default());
        let later = now.checked_add(SignedDuration::from_secs(121)).unwrap();
        let d = worker
            .deliver_due(&runner.store, later, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.retried, 1, "503 is retryable: {d:?}");
        let last = later.checked_add(SignedDuration::from_hours(1)).unwrap();
        let d = worker
            .deliver_due(&runner.store, last, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.sent, 1, "{d:?}");
        assert_eq!(row(&runner).await.state, OutboxState::Sent);
        let seen = v.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        // One key for every attempt; the act input carries the account as stored.
        assert!(seen[0].0.starts_with("tp-") && seen.iter().all(|s| s.0 == seen[0].0));
        let input = &seen[2].1;
        assert_eq!(input["action"], "create_task");
        assert_eq!(input["account"]["owner"]["email"], "dana@vendor.example");
        assert_eq!(input["content"]["subject"], "Call Acme");
    }

    #[tokio::test]
    async fn a_vendors_validation_error_is_dead_lettered_naming_the_connector() {
        let (base, _) = vendor(vec![(422, None)]).await;
        let dir = tempfile::tempdir().unwrap();
        let lib = library("touchpilot_test_misbehave");
        let (runner, worker) = daemon(dir.path(), &lib, "ok", &base).await;
        let d = worker
            .deliver_due(&runner.store, t("2026-03-02T10:00:01Z"), 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.dead, 1, "{d:?}");
        let r = row(&runner).await;
        assert_eq!(r.state, OutboxState::Dead);
        assert!(r.last_error.unwrap().contains("connector `crm` (act): misbehave act: HTTP 422: {\"id\":\"T-9\",\"errors\":[\"validation: subject is blank\"]}"));
    }

    #[tokio::test]
    async fn a_plugin_that_hangs_or_panics_or_cannot_load_loses_no_action() {
        let lib = library("touchpilot_test_misbehave");
        let now = t("2026-03-02T10:00:01Z");
        // Hangs: abandoned after the call timeout, retried later.
        let dir = tempfile::tempdir().unwrap();
        let (runner, worker) = daemon(dir.path(), &lib, "hang", "http://unused").await;
        let d = worker
            .deliver_due(&runner.store, now, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.retried, 1, "{d:?}");
        let r = row(&runner).await;
        assert_eq!((r.state, r.attempts), (OutboxState::Pending, 1));
        assert_eq!(
            r.last_error.as_deref(),
            Some("connector `crm` (act): did not answer within 200ms; the call was abandoned")
        );
        // Panics: a bug, dead-lettered with the panic's message.
        let dir = tempfile::tempdir().unwrap();
        let (runner, worker) = daemon(dir.path(), &lib, "panic", "http://unused").await;
        let d = worker
            .deliver_due(&runner.store, now, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.dead, 1, "{d:?}");
        assert_eq!(
            row(&runner).await.last_error.as_deref(),
            Some("connector `crm` (act): panicked in call: misbehave: asked to panic in act")
        );
        // Cannot load: the row waits (retried) until a restart loads it.
        let dir = tempfile::tempdir().unwrap();
        let old = library("touchpilot_test_bad_abi");
        let (runner, worker) = daemon(dir.path(), &old, "ok", "http://unused").await;
        let d = worker
            .deliver_due(&runner.store, now, 10, &|| false)
            .await
            .unwrap();
        assert_eq!(d.retried, 1, "{d:?}");
        let r = row(&runner).await;
        assert_eq!(r.state, OutboxState::Pending);
        assert!(r.last_error.unwrap().contains("built for plugin ABI 99.0"));
    }
}

/// The README's smallest connector is `plugins/example`, word for word,
/// and works: loaded, configured, creating a ticket with the action key.
#[tokio::test]
async fn the_readme_example_is_built_and_works() {
    let root = crate::support::repo();
    let readme = std::fs::read_to_string(root.join("plugins/README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("plugins/example/src/lib.rs")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "plugins/README.md must show plugins/example/src/lib.rs verbatim"
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/tickets",
        axum::routing::post(move |h: axum::http::HeaderMap, body: String| async move {
            s.lock()
                .unwrap()
                .push((h["idempotency-key"].to_str().unwrap().to_string(), body));
            (axum::http::StatusCode::CREATED, r#"{"id": 42}"#)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let p = touchpilot::plugin_host::Plugin::load(
        "acme",
        &library("touchpilot_acme"),
        &serde_json::json!({"base_url": base, "token": "t"}),
        Default::default(),
    )
    .unwrap();
    let out = p
        .call("act", &serde_json::json!({"action": "create_ticket", "key": "tp-1", "content": {"subject": "Hi"}}))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!({"id": 42, "created": true}));
    assert_eq!(
        seen.lock().unwrap()[0],
        ("tp-1".to_string(), r#"{"subject":"Hi"}"#.to_string())
    );
    let e = Plugin::load(
        "acme",
        &library("touchpilot_acme"),
        &serde_json::json!({}),
        Default::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "connector `acme` (open): config: `base_url` is required"
    );
}
