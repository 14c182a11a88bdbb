//! Delivery end to end: an event in, the engine's outbox rows, and the
//! worker delivering them to a real HTTP receiver and to `.eml` files,
//! with consent and the cap decided at send time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use touchpilot::deliver::email::Mailer;
use touchpilot::deliver::webhook::{Webhooks, signature};
use touchpilot::deliver::worker::Worker;
use touchpilot::engine::Engine;
use touchpilot::model::account::Account;
use touchpilot::model::event::Event;
use touchpilot::runner::{Handed, Runner, Waiting};
use touchpilot::store::sqlite::SqliteStore;
use touchpilot::store::{OutboxState, Store};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub seen: Arc<Mutex<Vec<Received>>>,
    /// Status codes to answer per path, in order (then 200).
    script: Arc<Mutex<HashMap<String, Vec<u16>>>>,
}

async fn handle(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    let path = uri.path().to_string();
    if path == "/slow" {
        // Longer than the sender's timeout in the test that uses it.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    r.seen.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
    });
    let code = r
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .filter(|s| !s.is_empty())
        .map(|s| s.remove(0))
        .unwrap_or(200);
    let mut h = HeaderMap::new();
    if code == 302 {
        h.insert("location", "/ok".parse().unwrap());
    }
    (StatusCode::from_u16(code).unwrap(), h, "")
}

pub async fn receiver(script: &[(&str, &[u16])]) -> (String, Receiver) {
    let r = Receiver::default();
    for (path, codes) in script {
        r.script
            .lock()
            .unwrap()
            .insert(path.to_string(), codes.to_vec());
    }
    let app = axum::Router::new().fallback(handle).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), r)
}

const SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM=";

fn setup(dir: &std::path::Path, base: &str) {
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("touchpilot.yaml"),
        format!(
            "playbooks: playbooks\ntemplates: templates\nemail: {{ from: \"Acme Success <success@acme.example>\", transport: \"file:outbox\" }}\nlimits:\n  per_contact: {{ max: 1, per: 7d }}\nwebhooks:\n  flaky: {{ url: \"{base}/flaky\", secret: \"{SECRET}\", allow_private: true }}\n  gone: {{ url: \"{base}/gone\", allow_private: true }}\n  moved: {{ url: \"{base}/redirect\", allow_private: true }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("playbooks/main.yaml"),
        "moments:\n  - id: urgent\n    on: { event: ticket.created }\n    actions:\n      - email: { to: contacts, template: ack }\n      - webhook: { endpoint: flaky, template: alert }\n      - webhook: { endpoint: gone, template: alert }\n      - webhook: { endpoint: moved, template: alert }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/ack.hbs"),
        "---\nsubject: \"We are on it, {{account.name}}: {{event.data.subject}}\"\n---\nHi {{contact.name}},\nyour ticket \"{{event.data.subject}}\" is with us.\nUnsubscribe: {{unsubscribe_url}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}: {{event.data.subject}}\", \"id\": \"{{event.id}}\"}",
    )
    .unwrap();
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The runner (on a SQLite file in `dir`) and the worker of the
/// configuration `setup` wrote there.
async fn runner_and_worker(dir: &std::path::Path) -> (Runner<SqliteStore>, Worker) {
    let (config, _) = touchpilot::config::load(&dir.join("touchpilot.yaml"), &|_| None).unwrap();
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        Arc::new(|a: &str| format!("http://127.0.0.1:8080/unsubscribe/{a}")),
    );
    let store = SqliteStore::open(&format!("sqlite:{}", dir.join("t.db").display()))
        .await
        .unwrap();
    let mailer = Mailer::new(
        &config.email.transport,
        config.email.from.as_deref().unwrap(),
        dir,
    )
    .unwrap();
    let webhooks =
        Webhooks::new(config.webhooks.clone(), std::time::Duration::from_secs(5)).unwrap();
    let worker = Worker::new(mailer, webhooks, config.cap, config.delivery);
    (Runner::new(store, engine), worker)
}

#[tokio::test]
async fn an_event_is_delivered_once_as_email_and_signed_webhooks_with_retries_classified() {
    let (base, rx) = receiver(&[
        ("/flaky", &[500, 500]),
        ("/gone", &[410, 410]),
        ("/redirect", &[302, 302]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &base);
    let (runner, mut worker) = runner_and_worker(dir.path()).await;
    let acme = json!({"id": "a1", "name": "Acme", "contacts": [
        {"email": "ann@acme.example", "name": "Ann"}, {"email": "bo@acme.example", "name": "Bo"}]});
    let start = t("2026-03-02T10:00:00Z");
    runner
        .seed(vec![Account::from_json(acme).unwrap()], start)
        .await
        .unwrap();
    runner
        .store
        .suppress("bo@acme.example", "link", start)
        .await
        .unwrap();
    let event = |id: &str, at: &str| Event {
        id: Some(id.into()),
        account: "a1".into(),
        kind: "ticket.created".into(),
        at: Some(t(at)),
        data: json!({"subject": "Login\r\nBcc: evil@x.io"}),
    };
    runner
        .store
        .ingest(
            &[
                event("t1", "2026-03-02T10:00:00Z"),
                event("t2", "2026-03-02T11:00:00Z"),
            ],
            start,
        )
        .await
        .unwrap();
    let now = t("2026-03-02T12:00:00Z");
    runner.apply_pending(now, 100).await.unwrap();

    // The events are two hours old when first delivered: inside a day's grace.
    worker.delivery.grace = SignedDuration::from_hours(24);
    let first = worker
        .deliver_due(&runner.store, now, 100, &|| false)
        .await
        .unwrap();
    // Per event: ann (sent once, then capped), bo (unsubscribed), flaky (500: retry),
    // gone (410: dead), moved (302: dead, not followed).
    assert_eq!(
        (first.sent, first.suppressed, first.retried, first.dead),
        (1, 3, 2, 4),
        "{first:?}"
    );

    // The one email: headers fixed at record time, one line each.
    let emls: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(emls.len(), 1);
    let eml = std::fs::read_to_string(&emls[0]).unwrap();
    for needle in [
        "From: \"Acme Success\" <success@acme.example>",
        "To: ann@acme.example",
        "Subject: We are on it, Acme: Login Bcc: evil@x.io",
        "List-Unsubscribe: <http://127.0.0.1:8080/unsubscribe/ann@acme.example>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Message-ID: <",
    ] {
        assert!(eml.contains(needle), "missing `{needle}` in:\n{eml}");
    }
    let headers = eml.split("\r\n\r\n").next().unwrap();
    assert!(
        !headers.lines().any(|l| l.starts_with("Bcc:")),
        "data never becomes a header:\n{eml}"
    );
    assert!(eml.contains("is with us"));

    // The redirect was refused, not followed: /ok never heard from us.
    let seen = rx.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|r| r.path != "/ok"),
        "a redirect was followed"
    );

    // The flaky endpoint gets its retry, later, with the same webhook-id.
    let later = now + SignedDuration::from_hours(2);
    let second = worker
        .deliver_due(&runner.store, later, 100, &|| false)
        .await
        .unwrap();
    assert_eq!((second.sent, second.retried), (2, 0), "{second:?}");
    assert!(
        worker
            .deliver_due(
                &runner.store,
                later + SignedDuration::from_hours(1),
                100,
                &|| false
            )
            .await
            .unwrap()
            == Default::default()
    );
    let seen = rx.seen.lock().unwrap().clone();
    let flaky: Vec<&Received> = seen.iter().filter(|r| r.path == "/flaky").collect();
    assert_eq!(flaky.len(), 4, "two events, each tried twice");
    let ids: Vec<&str> = flaky
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == ids[0]).count(),
        2,
        "a retry repeats its webhook-id: {ids:?}"
    );
    for r in &flaky {
        let id = r.headers["webhook-id"].to_str().unwrap();
        let ts: i64 = r.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            r.headers["webhook-signature"].to_str().unwrap(),
            signature(SECRET, id, ts, &r.body)
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body["text"], "Acme: Login\r\nBcc: evil@x.io",
            "JSON escaping kept the data intact"
        );
    }
    // Independent check of the signature scheme against the HMAC definition.
    {
        use base64::Engine as _;
        use hmac::Mac;
        let r = flaky[0];
        let key = base64::engine::general_purpose::STANDARD
            .decode(&SECRET[6..])
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        let signed = format!(
            "{}.{}.",
            r.headers["webhook-id"].to_str().unwrap(),
            r.headers["webhook-timestamp"].to_str().unwrap()
        );
        mac.update(signed.as_bytes());
        mac.update(&r.body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(r.headers["webhook-signature"].to_str().unwrap(), expected);
    }
    // Past the grace period, an action is recorded as missed, never sent.
    let old = Event {
        id: Some("t0".into()),
        ..event("t0", "2026-02-20T09:00:00Z")
    };
    runner.store.ingest(&[old], later).await.unwrap();
    runner.apply_pending(later, 100).await.unwrap();
    let late = worker
        .deliver_due(&runner.store, later, 100, &|| false)
        .await
        .unwrap();
    assert_eq!(
        late.missed, 5,
        "every action of the old event (2 emails, 3 webhooks): {late:?}"
    );
    assert_eq!(late.sent, 0);

    let rows = runner.store.list_outbox(100).await.unwrap();
    let dead: Vec<_> = rows
        .iter()
        .filter(|r| r.state == OutboxState::Dead)
        .map(|r| r.last_error.clone().unwrap())
        .collect();
    assert!(dead.iter().any(|e| e.contains("410 gone")), "{dead:?}");
    assert!(
        dead.iter()
            .any(|e| e.contains("redirects are not followed")),
        "{dead:?}"
    );
    let suppressed: Vec<_> = rows
        .iter()
        .filter(|r| r.state == OutboxState::Suppressed)
        .map(|r| r.last_error.clone().unwrap())
        .collect();
    assert_eq!(
        suppressed.iter().filter(|e| *e == "unsubscribed").count(),
        2
    );
    assert_eq!(
        suppressed.iter().filter(|e| *e == "frequency_cap").count(),
        1
    );

    // The 410 disabled its endpoint: a later action for it is dead-lettered
    // without a request, saying how to enable it again.
    let disabled = runner.store.disabled_endpoints().await.unwrap();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].name, "gone");
    let gone_before = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/gone")
        .count();
    runner
        .store
        .ingest(&[event("t3", "2026-03-02T14:00:00Z")], later)
        .await
        .unwrap();
    runner.apply_pending(later, 100).await.unwrap();
    worker
        .deliver_due(&runner.store, later, 100, &|| false)
        .await
        .unwrap();
    let gone_row = runner
        .store
        .list_outbox(100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.key.contains("#t3") && r.payload["endpoint"] == "gone")
        .unwrap();
    assert_eq!(gone_row.state, OutboxState::Dead);
    assert!(
        gone_row
            .last_error
            .as_deref()
            .unwrap()
            .contains("run `touchpilot enable-endpoint gone`"),
        "{gone_row:?}"
    );
    assert_eq!(
        rx.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/gone")
            .count(),
        gone_before,
        "nothing more was sent to a disabled endpoint"
    );
}

fn hook_payload(endpoint: &str) -> Value {
    json!({"endpoint": endpoint, "message_id": "<abc@touchpilot>", "content": {"text": "hi"}})
}

#[tokio::test]
async fn private_and_loopback_addresses_are_refused_unless_the_endpoint_allows_them() {
    use touchpilot::config::Webhook;
    use touchpilot::deliver::SendError;
    let (base, rx) = receiver(&[]).await;
    let port = base.rsplit(':').next().unwrap();
    let endpoint = |url: String, allow_private: bool| Webhook {
        url,
        secret: None,
        allow_private,
    };
    let endpoints = [
        ("literal", endpoint(format!("{base}/hook"), false)),
        (
            "named",
            endpoint(format!("http://localhost:{port}/hook"), false),
        ),
        (
            "allowed",
            endpoint(format!("http://localhost:{port}/hook"), true),
        ),
    ]
    .into_iter()
    .map(|(n, e)| (n.to_string(), e))
    .collect();
    let hooks = Webhooks::new(endpoints, std::time::Duration::from_secs(5)).unwrap();
    let now = Timestamp::now();
    match hooks.send(&hook_payload("literal"), now).await {
        Err(SendError::Fatal(e)) => {
            assert!(
                e.contains("127.0.0.1 is a private or loopback address"),
                "{e}"
            );
            assert!(e.contains("allow_private: true"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // A name is checked on what it resolves to, when connecting.
    match hooks.send(&hook_payload("named"), now).await {
        Err(SendError::Fatal(e)) => assert!(e.contains("`localhost` resolves to"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(
        rx.seen.lock().unwrap().is_empty(),
        "nothing reached the receiver"
    );
    hooks.send(&hook_payload("allowed"), now).await.unwrap();
    assert_eq!(rx.seen.lock().unwrap().len(), 1);

    use std::net::IpAddr;
    use touchpilot::deliver::webhook::is_private;
    for private in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ] {
        assert!(is_private(private.parse::<IpAddr>().unwrap()), "{private}");
    }
    for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
        assert!(!is_private(public.parse::<IpAddr>().unwrap()), "{public}");
    }
}

#[tokio::test]
async fn a_webhook_that_does_not_answer_in_time_is_retryable() {
    use touchpilot::config::Webhook;
    use touchpilot::deliver::SendError;
    let (base, _rx) = receiver(&[]).await;
    let endpoints = [(
        "slow".to_string(),
        Webhook {
            url: format!("{base}/slow"),
            secret: None,
            allow_private: true,
        },
    )]
    .into_iter()
    .collect();
    let hooks = Webhooks::new(endpoints, std::time::Duration::from_millis(300)).unwrap();
    match hooks.send(&hook_payload("slow"), Timestamp::now()).await {
        Err(SendError::Retryable(e)) => assert!(e.contains("timed out"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// The link is clicked after the moment fired and before the email went
/// out: the queued email is not sent.
#[tokio::test]
async fn a_one_click_unsubscribe_stops_mail_already_in_the_outbox() {
    touchpilot::tls::init();
    use std::sync::atomic::AtomicBool;
    use touchpilot::api::{ApiState, Counters, router};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("playbooks")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("touchpilot.yaml"),
        "playbooks: playbooks\ntemplates: templates\nemail: { transport: \"file:outbox\" }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("playbooks/main.yaml"),
        "moments:\n  - id: urgent\n    on: { event: ticket.created }\n    actions:\n      - email: { to: contacts, template: ack }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/ack.hbs"),
        "---\nsubject: \"On it\"\n---\nHi {{contact.name}}\n",
    )
    .unwrap();
    let (config, _) = touchpilot::config::load(&p.join("touchpilot.yaml"), &|_| None).unwrap();
    let config = Arc::new(config);
    let store = SqliteStore::open(&format!("sqlite:{}", p.join("t.db").display()))
        .await
        .unwrap();
    let secret = store.secret().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let engine = Engine::new(
        config.clone(),
        touchpilot::deliver::unsubscribe_links(base.clone(), secret.clone()),
    );
    let runner = Arc::new(Runner::new(store, engine));
    let start = t("2026-03-02T10:00:00Z");
    runner
        .seed(
            vec![Account::from_json(json!({"id": "a1", "name": "Acme", "contacts": [
                {"email": "ann@acme.example", "name": "Ann"}, {"email": "bo@acme.example", "name": "Bo"}]}))
            .unwrap()],
            start,
        )
        .await
        .unwrap();
    runner
        .store
        .ingest(
            &[Event {
                id: Some("t1".into()),
                account: "a1".into(),
                kind: "ticket.created".into(),
                at: Some(start),
                data: json!({}),
            }],
            start,
        )
        .await
        .unwrap();
    runner.apply_pending(start, 100).await.unwrap();
    let queued = runner.store.list_outbox(10).await.unwrap();
    assert_eq!(queued.len(), 2);
    let link = queued
        .iter()
        .find(|r| r.payload["to"] == "ann@acme.example")
        .and_then(|r| r.payload["unsubscribe_url"].as_str())
        .unwrap()
        .to_string();
    assert!(link.starts_with(&base), "{link}");

    let (ingest, _keep) = tokio::sync::mpsc::channel(1);
    let state = Arc::new(ApiState {
        runner: runner.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        ingest,
        secret,
        ready: Arc::new(AtomicBool::new(true)),
        counters: Arc::new(Counters::default()),
        connectors: None,
    });
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    // RFC 8058: a POST with `List-Unsubscribe=One-Click`, no confirmation.
    let r = reqwest::Client::new()
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let mailer = Mailer::new("file:outbox", "cs@vendor.example", p).unwrap();
    let webhooks = Webhooks::new(Default::default(), std::time::Duration::from_secs(5)).unwrap();
    let worker = Worker::new(mailer, webhooks, None, config.delivery);
    let done = worker
        .deliver_due(&runner.store, start, 100, &|| false)
        .await
        .unwrap();
    assert_eq!((done.sent, done.suppressed), (1, 1), "{done:?}");
    let emls: Vec<String> = std::fs::read_dir(p.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(emls.len(), 1);
    assert!(emls[0].contains("To: bo@acme.example"));
}

/// `.eml` files appear whole (written under a hidden name, then renamed),
/// and a temporary that a crash left behind is removed at the next start,
/// while one younger than a minute (another instance's write) is kept.
#[tokio::test]
async fn eml_files_appear_whole_and_crash_leftovers_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let stale = outbox.join(".0193-stale.eml.tmp");
    let fresh = outbox.join(".0193-fresh.eml.tmp");
    std::fs::write(&stale, "From: half a mess").unwrap();
    std::fs::write(&fresh, "From: being written").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        .unwrap();

    let mailer = Mailer::new("file:outbox", "a@b.io", dir.path()).unwrap();
    assert!(
        !stale.exists(),
        "a temporary older than a minute is removed"
    );
    assert!(fresh.exists(), "a recent temporary is left alone");

    mailer
        .send(&json!({
            "to": "ann@acme.example",
            "message_id": "<whole@touchpilot>",
            "content": {"subject": "Hello", "text": "Hi Ann\n"},
        }))
        .await
        .expect("written");
    let mut names: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], ".0193-fresh.eml.tmp");
    assert!(names[1].ends_with(".eml"), "{names:?}");
    let eml = std::fs::read_to_string(outbox.join(&names[1])).unwrap();
    assert!(eml.contains("Message-ID: <whole@touchpilot>"), "{eml}");
    assert!(eml.contains("Hi Ann"), "{eml}");
}

/// A claim whose turn comes after half its lease (a batch slower than its
/// lease) is handed back untried rather than sent: it could outlive its
/// lease mid-send while another instance, claiming the row anew, sends it
/// too. Nothing reaches the receiver or the mail directory, and the row is
/// claimable again at once, its attempt not counted.
#[tokio::test]
async fn a_claim_whose_turn_comes_after_half_its_lease_goes_back_untried() {
    let (base, rx) = receiver(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), &base);
    let (runner, worker) = runner_and_worker(dir.path()).await;
    let acme = json!({"id": "a1", "name": "Acme", "contacts": [{"email": "ann@acme.example", "name": "Ann"}]});
    let now = t("2026-03-02T10:00:00Z");
    runner
        .seed(vec![Account::from_json(acme).unwrap()], now)
        .await
        .unwrap();
    let event = Event {
        id: Some("e1".into()),
        account: "a1".into(),
        kind: "ticket.created".into(),
        at: Some(now),
        data: json!({"subject": "Login"}),
    };
    runner.store.ingest(&[event], now).await.unwrap();
    runner.apply_pending(now, 100).await.unwrap();
    let lease = worker.delivery.lease;
    let kinds = touchpilot::deliver::worker::KINDS;

    let claims = runner.store.claim(kinds, now, lease, 100).await.unwrap();
    assert_eq!(claims.len(), 4, "an email and three webhooks");
    let half = std::time::Duration::try_from(lease).unwrap() / 2;
    let long_ago = std::time::Instant::now()
        .checked_sub(half + std::time::Duration::from_secs(1))
        .unwrap();
    let done = worker
        .deliver(&runner.store, claims, long_ago, now, &|| false)
        .await
        .unwrap();
    assert_eq!(
        (done.late, done.released, done.sent, done.total()),
        (4, 4, 0, 0),
        "{done:?}"
    );
    assert!(rx.seen.lock().unwrap().is_empty(), "no webhook went out");
    assert!(
        !dir.path().join("outbox").exists()
            || std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .next()
                .is_none(),
        "no email was written"
    );
    let again = runner.store.claim(kinds, now, lease, 100).await.unwrap();
    assert_eq!(again.len(), 4, "claimable again at once");
    assert!(
        again.iter().all(|c| c.attempts == 1),
        "the untried claims did not count as attempts: {again:?}"
    );

    // Claimed just now, the same rows go out.
    let done = worker
        .deliver(
            &runner.store,
            again,
            std::time::Instant::now(),
            now,
            &|| false,
        )
        .await
        .unwrap();
    assert_eq!(
        (done.late, done.released, done.total()),
        (0, 0, 4),
        "{done:?}"
    );
    assert_eq!(rx.seen.lock().unwrap().len(), 3, "the three webhooks");
}

/// The API's group commit (`Runner::ingest`): a small group's events are
/// stepped in the commit that stores them and their due rows handed to the
/// worker, as far as it has room; a worker with no room gets nothing and
/// the rows wait in the outbox; a handed claim that waited half its lease
/// goes back untried; a large group is stored for the engine.
#[tokio::test]
async fn a_small_group_is_stepped_in_its_commit_and_handed_over_as_far_as_the_worker_has_room() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "http://127.0.0.1:9");
    let (config, _) =
        touchpilot::config::load(&dir.path().join("touchpilot.yaml"), &|_| None).unwrap();
    let engine = Engine::new(
        Arc::new(config),
        Arc::new(|a: &str| format!("http://127.0.0.1:8080/unsubscribe/{a}")),
    );
    let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let (to, mut handed) = tokio::sync::mpsc::channel(1);
    let runner = Runner::new(store, engine).with_handoff(touchpilot::runner::Handoff {
        lease: SignedDuration::from_secs(60),
        to,
    });
    let acme = json!({"id": "a1", "name": "Acme", "contacts": [{"email": "ann@acme.example", "name": "Ann"}]});
    let start = t("2026-03-02T10:00:00Z");
    runner
        .seed(vec![Account::from_json(acme).unwrap()], start)
        .await
        .unwrap();
    let event = |id: String| Event {
        id: Some(id),
        account: "a1".into(),
        kind: "ticket.created".into(),
        at: None,
        data: json!({"subject": "Login"}),
    };
    let states = async |runner: &Runner<SqliteStore>, id: &str| -> Vec<(String, OutboxState)> {
        let mut rows: Vec<_> = runner
            .store
            .list_outbox(1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.key.contains(&format!("#{id}|")))
            .map(|r| (r.key, r.state))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };

    let now = t("2026-03-02T12:00:00Z");
    // One request of one event, as the group commit takes it alone.
    let one = async |runner: &Runner<SqliteStore>, id: &str| {
        runner
            .ingest(&mut [vec![event(id.into())]], now)
            .await
            .unwrap()
    };

    // One event: stepped in its commit; the webhooks due now are claimed
    // there and handed over.
    let done = one(&runner, "t1").await;
    assert_eq!((done.ingested[0].accepted, done.unapplied), (1, 0));
    assert_eq!(done.progress.fired, 1);
    assert!(runner.store.pending_events(10).await.unwrap().is_empty());
    let mut claimed: Vec<String> = handed
        .try_recv()
        .unwrap()
        .claims
        .into_iter()
        .map(|c| c.key)
        .collect();
    claimed.sort();
    let sending: Vec<String> = states(&runner, "t1")
        .await
        .into_iter()
        .filter(|(_, s)| *s == OutboxState::Sending)
        .map(|(k, _)| k)
        .collect();
    assert!(claimed.len() >= 3, "the three webhooks: {claimed:?}");
    assert_eq!(claimed, sending, "handed over exactly what was claimed");

    // The worker is busy: t2's claims fill its one slot, so t3 is stepped
    // with nothing claimed.
    let busy = one(&runner, "t2").await;
    assert_eq!(busy.unapplied, 0);
    let t3 = one(&runner, "t3").await;
    assert_eq!((t3.unapplied, t3.progress.fired), (0, 1));
    let t3_rows = states(&runner, "t3").await;
    assert_eq!(t3_rows.len(), 4, "{t3_rows:?}");
    assert!(
        t3_rows.iter().all(|(_, s)| *s == OutboxState::Pending),
        "nothing claimed for a worker with no room: {t3_rows:?}"
    );
    assert!(handed.try_recv().is_ok(), "t2's claims");
    assert!(handed.try_recv().is_err(), "and nothing for t3");

    // A claim that waited in the worker's queue past half its lease is not
    // sent: it goes back to the outbox untried, claimable at once; a fresh
    // one is sent.
    let lease = SignedDuration::from_secs(60);
    one(&runner, "h1").await;
    let old = handed.try_recv().unwrap().claims;
    one(&runner, "h2").await;
    let new = handed.try_recv().unwrap().claims;
    let keys = |claims: &[touchpilot::store::Claimed]| {
        let mut k: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
        k.sort();
        k
    };
    let (old_keys, new_keys) = (keys(&old), keys(&new));
    let (queue, mut queued) = tokio::sync::mpsc::channel(2);
    let long_ago = std::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(31))
        .unwrap();
    for (at, claims) in [(long_ago, old), (std::time::Instant::now(), new)] {
        queue.send(Handed { at, claims }).await.unwrap();
    }
    let mut waiting = Waiting::default();
    waiting.fill(&mut queued, 256);
    let (send, stale, _) = waiting.take(256, lease);
    assert_eq!((keys(&send), keys(&stale)), (new_keys, old_keys.clone()));
    runner.release(stale, now).await.unwrap();
    assert!(
        states(&runner, "h1")
            .await
            .iter()
            .all(|(_, s)| *s == OutboxState::Pending)
    );
    let again = runner
        .store
        .claim(touchpilot::deliver::worker::KINDS, now, lease, 100)
        .await
        .unwrap();
    let again_h1: Vec<_> = again.iter().filter(|c| old_keys.contains(&c.key)).collect();
    assert_eq!(again_h1.len(), old_keys.len(), "claimable at once");
    assert!(
        again_h1.iter().all(|c| c.attempts == 1),
        "the untried claim did not count as an attempt"
    );
    assert!(waiting.drain(&mut queued).is_empty());

    // A large group is stored only; the engine steps it.
    let mut big: Vec<Vec<Event>> = (0..25).map(|i| vec![event(format!("b{i}"))]).collect();
    let done = runner.ingest(&mut big, now).await.unwrap();
    assert_eq!(done.unapplied, 25);
    assert_eq!(done.progress.fired, 0);
    assert_eq!(runner.store.pending_events(100).await.unwrap().len(), 25);
    while handed.try_recv().is_ok() {}
    let p = runner.apply_pending(now, 100).await.unwrap();
    assert_eq!(p.fired, 25);
    assert!(runner.store.pending_events(100).await.unwrap().is_empty());

    // An account whose stored state cannot be read: the group commit
    // cannot step it, so the event is still accepted and left for the
    // engine, and the reason is reported, naming the account.
    rusqlite::Connection::open(dir.path().join("t.db"))
        .unwrap()
        .execute("UPDATE accounts SET state = '{' WHERE id = 'a1'", [])
        .unwrap();
    let done = one(&runner, "c1").await;
    assert_eq!((done.ingested[0].accepted, done.unapplied), (1, 1));
    assert_eq!(done.progress.fired, 0);
    assert!(
        done.progress
            .problems
            .iter()
            .any(|p| p.contains("engine's next pass") && p.contains("a1")),
        "{:?}",
        done.progress.problems
    );
    let pending = runner.store.pending_events(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event.id.as_deref(), Some("c1"));
}

/// A batch ends its claims as its sends finish, a few at a time, not all
/// when its last send is done: a crash in the middle of a long batch then
/// repeats only the sends not yet recorded. Here the batch's last webhook
/// is held by its receiver; the rows sent before it are already ended.
#[tokio::test]
async fn a_batch_ends_its_claims_as_its_sends_finish_not_all_at_its_end() {
    use std::collections::BTreeMap;
    use touchpilot::engine::AccountState;
    use touchpilot::store::{NewOutbox, Step};

    let gate = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let app = axum::Router::new()
        .route("/fast", axum::routing::post(async || "ok"))
        .route(
            "/gate",
            axum::routing::post({
                let (gate, arrived) = (gate.clone(), arrived.clone());
                async move || {
                    arrived.notify_one();
                    gate.notified().await;
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&format!("sqlite:{}", dir.path().join("t.db").display()))
            .await
            .unwrap(),
    );
    let now = t("2026-03-02T10:00:00Z");
    let state = AccountState::new(
        Account::from_json(json!({"id": "a1", "name": "Acme"})).unwrap(),
        now,
    );
    // Eighty rows for `fast`, then one for `gate`, last in due order.
    let row = |i: usize, endpoint: &str| NewOutbox {
        key: format!("row|{i:02}"),
        account: "a1".into(),
        kind: "webhook".into(),
        payload: json!({"endpoint": endpoint, "content": {"n": i}, "at": now.to_string(),
                        "message_id": format!("<{i}@touchpilot>")}),
        at: now,
        failure: None,
    };
    let mut outbox: Vec<NewOutbox> = (0..80).map(|i| row(i, "fast")).collect();
    outbox.push(row(99, "gate"));
    store
        .commit_step(&Step {
            state,
            expected_version: None,
            next_due: None,
            applied: vec![],
            outbox,
            trace: vec![],
        })
        .await
        .unwrap();
    let mut endpoints = BTreeMap::new();
    for name in ["fast", "gate"] {
        endpoints.insert(
            name.to_string(),
            touchpilot::config::Webhook {
                url: format!("{base}/{name}"),
                secret: None,
                allow_private: true,
            },
        );
    }
    let webhooks = Webhooks::new(endpoints, std::time::Duration::from_secs(30)).unwrap();
    let mailer = Mailer::new("file:outbox", "us@acme.example", dir.path()).unwrap();
    let delivery = touchpilot::config::Delivery {
        concurrency: 1,
        ..Default::default()
    };
    let worker = Worker::new(mailer, webhooks, None, delivery);
    let batch = tokio::spawn({
        let store = store.clone();
        async move { worker.deliver_due(&*store, now, 100, &|| false).await }
    });

    tokio::time::timeout(std::time::Duration::from_secs(20), arrived.notified())
        .await
        .expect("the batch reaches its last webhook");
    let sent = store
        .list_outbox(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.state == OutboxState::Sent)
        .count();
    assert!(
        (64..=80).contains(&sent),
        "{sent} rows ended while the batch still runs"
    );
    assert!(!batch.is_finished());
    gate.notify_one();
    let done = batch.await.unwrap().unwrap();
    assert_eq!((done.sent, done.total()), (81, 81), "{done:?}");
    assert!(
        store
            .list_outbox(100)
            .await
            .unwrap()
            .iter()
            .all(|r| r.state == OutboxState::Sent)
    );
}
