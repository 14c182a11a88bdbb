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
use touchpilot::runner::Runner;
use touchpilot::store::sqlite::SqliteStore;
use touchpilot::store::{OutboxState, Store};

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
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

async fn receiver(script: &[(&str, &[u16])]) -> (String, Receiver) {
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
            "playbooks: playbooks\ntemplates: templates\nemail: {{ from: \"Acme Success <success@acme.example>\", transport: \"file:outbox\" }}\nlimits:\n  per_contact: {{ max: 1, per: 7d }}\nwebhooks:\n  flaky: {{ url: \"{base}/flaky\", secret: \"{SECRET}\" }}\n  gone: {{ url: \"{base}/gone\" }}\n  moved: {{ url: \"{base}/redirect\" }}\n"
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
    let (config, _) =
        touchpilot::config::load(&dir.path().join("touchpilot.yaml"), &|_| None).unwrap();
    let config = Arc::new(config);
    let engine = Engine::new(
        config.clone(),
        Arc::new(|a: &str| format!("http://127.0.0.1:8080/unsubscribe/{a}")),
    );
    let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let runner = Runner::new(store, engine);
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

    let mailer = Mailer::new(
        &config.email.transport,
        config.email.from.as_deref().unwrap(),
        dir.path(),
    )
    .unwrap();
    let webhooks =
        Webhooks::new(config.webhooks.clone(), std::time::Duration::from_secs(5)).unwrap();
    let mut worker = Worker::new(mailer, webhooks, config.cap);
    // The events are two hours old when first delivered: inside a day's grace.
    worker.grace = SignedDuration::from_hours(24);
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
}
