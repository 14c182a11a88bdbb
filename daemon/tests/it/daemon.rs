//! The daemon in-process on 127.0.0.1:0: events in over HTTP, the engine on
//! the real clock, a webhook received by a real local HTTP server; and the
//! API's answers to bad requests. Each on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use touchpilot::store::Store;

use crate::support::until;

type Hooks = mpsc::UnboundedSender<(HeaderMap, Value)>;

async fn hook(State(tx): State<Hooks>, headers: HeaderMap, body: Bytes) -> &'static str {
    let _ = tx.send((
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    "ok"
}

struct Daemon {
    base: String,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    hooks: mpsc::UnboundedReceiver<(HeaderMap, Value)>,
    /// The PostgreSQL database, when the daemon runs on one.
    _db: Option<crate::cluster::Db>,
}

async fn start() -> Daemon {
    start_on(None).await
}

async fn start_on_postgres() -> Daemon {
    let db = crate::cluster::Db::create(&crate::cluster::pg_admin()).await;
    start_on(Some(db)).await
}

/// The daemon on a fresh SQLite file, or on `db`.
async fn start_on(db: Option<crate::cluster::Db>) -> Daemon {
    let (tx, hooks) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(hook).with_state(tx);
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = rl.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(rl, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("playbooks")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("touchpilot.yaml"),
        format!(
            "playbooks: playbooks\ntemplates: templates\nstore: \"{}\"\nhttp: {{ token: s3cret }}\nemail: {{ transport: \"file:outbox\" }}\nsources:\n  file: {{ accounts: accounts.jsonl, events: events.jsonl }}\ninbound:\n  tickets: {{ account: account_id, type: kind, id: ticket }}\nwebhooks:\n  alerts: {{ url: \"http://{receiver}/hook\", secret: topsecret, allow_private: true }}\n",
            db.as_ref().map_or_else(
                || format!("sqlite:{}", p.join("t.db").display()),
                |db| db.scratch.url.clone()
            )
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("playbooks/main.yaml"),
        "moments:\n  - id: urgent\n    on: { event: ticket.created, when: 'event.data.priority == \"urgent\"' }\n    actions:\n      - email: { to: contacts, template: ack }\n      - webhook: { endpoint: alerts, template: alert }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}: {{event.data.subject}}\"}",
    )
    .unwrap();
    std::fs::write(p.join("templates/ack.hbs"), "---\nsubject: \"On it, {{account.name}}\"\n---\nHi {{contact.name}}\n{{unsubscribe_url}}\n").unwrap();
    std::fs::write(p.join("accounts.jsonl"), "{\"id\": \"a1\", \"name\": \"Acme\", \"contacts\": [{\"email\": \"ann@acme.example\", \"name\": \"Ann\"}]}\n").unwrap();
    std::fs::write(p.join("events.jsonl"), "").unwrap();
    let mut d = boot(dir, hooks).await;
    d._db = db;
    d
}

/// Starts (or restarts) the daemon on a prepared folder.
async fn boot(
    dir: tempfile::TempDir,
    hooks: mpsc::UnboundedReceiver<(HeaderMap, Value)>,
) -> Daemon {
    let p = dir.path();
    let (config, _) = touchpilot::config::load(&p.join("touchpilot.yaml"), &|_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(touchpilot::app::run(
        Arc::new(config),
        listener,
        shutdown.clone(),
    ));
    Daemon {
        base,
        dir,
        shutdown,
        task,
        hooks,
        _db: None,
    }
}

fn client() -> reqwest::Client {
    touchpilot::tls::init();
    reqwest::Client::new()
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    ctype: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut r = c.post(url).header("content-type", ctype).body(body);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn events_in_over_http_come_out_as_a_signed_webhook_and_an_email() {
    events_in_come_out(start().await).await;
}

#[tokio::test]
async fn on_postgres_events_in_over_http_come_out_as_a_signed_webhook_and_an_email() {
    events_in_come_out(start_on_postgres().await).await;
}

async fn events_in_come_out(mut d: Daemon) {
    let c = client();
    let url = format!("{}/v1/events", d.base);
    let ev = json!({"id": "t1", "account": "a1", "type": "ticket.created", "data": {"priority": "urgent", "subject": "Down"}});
    let (status, body) = post(&c, &url, Some("s3cret"), "application/json", ev.to_string()).await;
    assert_eq!(
        (status, body.clone()),
        (202, json!({"accepted": 1, "duplicates": 0}))
    );
    let (status, body) = post(&c, &url, Some("s3cret"), "application/json", ev.to_string()).await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 0, "duplicates": 1})),
        "the same id twice is one event"
    );

    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), d.hooks.recv())
        .await
        .expect("webhook delivered")
        .unwrap();
    assert_eq!(body, json!({"text": "Acme: Down"}));
    assert!(
        headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
    assert!(headers["webhook-id"].to_str().unwrap().starts_with("msg_"));

    // The email went to the .eml outbox with its unsubscribe link, which
    // works. Deliveries go out concurrently: wait for the file.
    let outbox = d.dir.path().join("outbox");
    let mut eml_path = None;
    until(Duration::from_secs(20), "the .eml file", async || {
        eml_path = std::fs::read_dir(&outbox).ok().and_then(|rd| {
            rd.map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        eml_path.is_some()
    })
    .await;
    let eml_path = eml_path.unwrap();
    let eml = std::fs::read_to_string(eml_path).unwrap();
    assert!(eml.contains("Subject: On it, Acme"), "{eml}");
    let link = eml
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe: <"))
        .unwrap();
    let link = link
        .trim_start_matches("List-Unsubscribe: <")
        .trim_end_matches('\r')
        .trim_end_matches('>');
    assert!(
        link.starts_with(&format!("{}/unsubscribe/", d.base)),
        "{link}"
    );
    let page = c.get(link).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let done = c.post(link).send().await.unwrap();
    assert_eq!(done.status().as_u16(), 200);
    assert!(done.text().await.unwrap().contains("ann@acme.example"));
    let forged = c
        .post(format!(
            "{}/unsubscribe/Zm9vQGJhci5pbw.AAAAAAAAAAAAAAAAAAAAAA",
            d.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 404);

    assert_eq!(
        c.get(format!("{}/live", d.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        c.get(format!("{}/ready", d.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    d.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), d.task)
        .await
        .expect("stops when asked")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_whole_and_named() {
    bad_requests_refused(start().await).await;
}

#[tokio::test]
async fn on_postgres_bad_requests_are_refused_whole_and_named() {
    bad_requests_refused(start_on_postgres().await).await;
}

async fn bad_requests_refused(d: Daemon) {
    let c = client();
    let url = format!("{}/v1/events", d.base);
    let good = json!({"account": "a1", "type": "x"}).to_string();

    let (status, _) = post(&c, &url, None, "application/json", good.clone()).await;
    assert_eq!(status, 401, "missing token");
    let (status, _) = post(&c, &url, Some("wrong"), "application/json", good.clone()).await;
    assert_eq!(status, 401, "wrong token");

    let (status, body) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/json",
        "{\"account\": ",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );

    let ndjson = format!("{good}\n{{\"account\": \"a1\"}}\n{good}\n");
    let (status, body) = post(&c, &url, Some("s3cret"), "application/x-ndjson", ndjson).await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("line 2: missing field `type`")
            && msg.contains("no event of this request was stored"),
        "{msg}"
    );

    let (status, body) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/json",
        json!([{"account": "a1", "type": "x"}, {"account": "ghost", "type": "x"}]).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("event 2: field `account`: unknown account `ghost`"),
        "{body}"
    );

    let huge = format!("[{}]", vec![good.as_str(); 150_000].join(","));
    let (status, _) = post(&c, &url, Some("s3cret"), "application/json", huge).await;
    assert_eq!(status, 413, "oversized body");

    // Nothing of the refused batches was stored: the next good one is new.
    let (status, body) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/x-ndjson",
        format!("{good}\n"),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 1, "duplicates": 0}))
    );

    // PUT creates an account; a mismatched id is refused.
    let put = |id: &str, body: Value| {
        c.put(format!("{}/v1/accounts/{id}", d.base))
            .header("authorization", "Bearer s3cret")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(
        put("b2", json!({"name": "Bolt"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        put("b3", json!({"id": "other"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let (status, _) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/json",
        json!({"account": "b2", "type": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 202, "an account created over HTTP takes events");
    // An account refused as unknown is not remembered as such: once
    // created, the batch refused above is taken.
    assert_eq!(
        put("ghost", json!({"name": "Ghost"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (status, body) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/json",
        json!([{"account": "a1", "type": "x"}, {"account": "ghost", "type": "x"}]).to_string(),
    )
    .await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 2, "duplicates": 0}))
    );
    d.shutdown.cancel();
    d.task.await.unwrap().unwrap();
}

async fn next_hook(d: &mut Daemon) -> Value {
    tokio::time::timeout(Duration::from_secs(20), d.hooks.recv())
        .await
        .expect("a webhook")
        .unwrap()
        .1
}

fn append(path: &std::path::Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

#[tokio::test]
async fn the_file_source_is_followed_as_it_grows_and_never_read_twice() {
    let mut d = start().await;
    let events = d.dir.path().join("events.jsonl");
    // Events without ids: only the saved position keeps them from firing twice.
    append(
        &events,
        "{\"account\": \"a1\", \"type\": \"ticket.created\", \"data\": {\"priority\": \"urgent\", \"subject\": \"one\"}}\n{\"account\": \"a1\", \"type\": \"ticket.created\", \"data\": {\"priority\": \"urg",
    );
    assert_eq!(next_hook(&mut d).await["text"], "Acme: one");
    // The half-written line is taken once complete; a bad line is skipped, named.
    append(&events, "ent\", \"subject\": \"two\"}}\nnot json\n");
    assert_eq!(next_hook(&mut d).await["text"], "Acme: two");
    // A new account line: the account enters live.
    append(
        &d.dir.path().join("accounts.jsonl"),
        "{\"id\": \"a2\", \"name\": \"Beta\", \"contacts\": []}\n",
    );
    // The file is looked at every second: wait until a2 is known.
    let c = client();
    until(Duration::from_secs(20), "a2 to be admitted", async || {
        let (code, _) = post(
            &c,
            &format!("{}/v1/events", d.base),
            Some("s3cret"),
            "application/json",
            r#"{"account": "a2", "type": "ticket.created", "data": {"priority": "urgent", "subject": "three"}}"#,
        )
        .await;
        code == 202
    })
    .await;
    assert_eq!(next_hook(&mut d).await["text"], "Beta: three");

    // Stopped, the file grows; restarted, only the new line fires.
    d.shutdown.cancel();
    d.task.await.unwrap().unwrap();
    append(
        &events,
        "{\"account\": \"a1\", \"type\": \"ticket.created\", \"data\": {\"priority\": \"urgent\", \"subject\": \"four\"}}\n",
    );
    let mut d = boot(d.dir, d.hooks).await;
    assert_eq!(next_hook(&mut d).await["text"], "Acme: four");
    // The restart read the file before serving, and its events were planned
    // with "four" or before it: had a line been read twice, its rows would
    // be in the outbox now. One, two and four: an email and a webhook each;
    // three (no contacts): a webhook.
    d.shutdown.cancel();
    d.task.await.unwrap().unwrap();
    let store = touchpilot::store::sqlite::SqliteStore::open(&format!(
        "sqlite:{}",
        d.dir.path().join("t.db").display()
    ))
    .await
    .unwrap();
    let rows = store.list_outbox(100).await.unwrap();
    let texts: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "webhook")
        .map(|r| r.payload["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        (rows.len(), texts.len()),
        (7, 4),
        "nothing was read twice: {texts:?}"
    );
}

#[tokio::test]
async fn foreign_json_comes_in_through_a_mapped_inbound_endpoint() {
    let mut d = start().await;
    let c = client();
    let url = format!("{}/v1/inbound/tickets", d.base);
    let body = r#"{"account_id": "a1", "kind": "ticket.created", "ticket": 77, "priority": "urgent", "subject": "mapped"}"#;
    let (code, got) = post(&c, &url, Some("s3cret"), "application/json", body).await;
    assert_eq!(
        (code, &got),
        (202, &json!({"accepted": 1, "duplicates": 0}))
    );
    assert_eq!(next_hook(&mut d).await["text"], "Acme: mapped");
    // The mapped id deduplicates.
    let (_, got) = post(&c, &url, Some("s3cret"), "application/json", body).await;
    assert_eq!(got, json!({"accepted": 0, "duplicates": 1}));
    let (code, got) = post(
        &c,
        &url,
        Some("s3cret"),
        "application/json",
        r#"{"kind": "x"}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("missing field `account_id`"),
        "{got}"
    );
    let (code, got) = post(
        &c,
        &format!("{}/v1/inbound/nope", d.base),
        Some("s3cret"),
        "application/json",
        body,
    )
    .await;
    assert_eq!(code, 404);
    assert!(got["error"].as_str().unwrap().contains("tickets"), "{got}");
    let (code, _) = post(&c, &url, None, "application/json", body).await;
    assert_eq!(code, 401, "the bearer token guards it too");
    d.shutdown.cancel();
    d.task.await.unwrap().unwrap();
}
