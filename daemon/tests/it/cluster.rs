//! Several daemons on one PostgreSQL, as processes, under faults: SIGKILL
//! and restart during thousands of sends, SIGSTOP past a lease, and the
//! database server itself restarted. Real components throughout: the
//! machine's PostgreSQL (a database of its own per test, dropped after) or
//! one the test starts with `initdb`, the aiosmtpd server of
//! `tests/servers`, an HTTP receiver, and the `touchpilot` binary.
//! Conditions are polled with deadlines; nothing waits a fixed time for
//! timing to work out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::json;
use sqlx::Row;
use touchpilot::store::postgres::Scratch;

use crate::support::until;
use crate::support::{bin, repo};

/// The machine's server (127.0.0.1:5432, trust authentication), or
/// `TOUCHPILOT_TEST_POSTGRES`.
pub fn pg_admin() -> String {
    std::env::var("TOUCHPILOT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of this test's own, dropped when the test ends (also when
/// it fails).
pub struct Db {
    pub scratch: Scratch,
}

impl Db {
    pub async fn create(admin: &str) -> Db {
        Db {
            scratch: Scratch::create(admin)
                .await
                .unwrap_or_else(|e| panic!("creating a test database on {admin}: {e}")),
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.scratch.url)
            .await
            .unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let url = self.scratch.url.clone();
        let admin = pg_admin();
        // A runtime of its own: Drop may run inside the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let name = url.rsplit('/').next().unwrap_or_default().to_string();
                let pool = sqlx::PgPool::connect(&admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await
                .map(|_| ())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database: {e}");
        }
    }
}

/// What the HTTP receiver saw: each request's `webhook-id`, in order.
#[derive(Clone)]
pub struct Hooks {
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Per `webhook-id`: status codes to answer in order (then 200), and
    /// for `/slow`, a gate each request waits on before answering.
    pub script: Arc<Mutex<HashMap<String, Vec<u16>>>>,
    pub gate: Arc<tokio::sync::Semaphore>,
    pub arrived: Arc<tokio::sync::Notify>,
}

async fn hook(State(h): State<Hooks>, uri: Uri, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    h.seen.lock().unwrap().push(id.clone());
    if uri.path() == "/slow" {
        h.arrived.notify_one();
        h.gate.acquire().await.unwrap().forget();
    }
    let code = h
        .script
        .lock()
        .unwrap()
        .get_mut(&id)
        .filter(|s| !s.is_empty())
        .map(|s| s.remove(0))
        .unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

pub async fn hooks() -> (String, Hooks) {
    let h = Hooks {
        seen: Arc::default(),
        script: Arc::default(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        arrived: Arc::default(),
    };
    let app = axum::Router::new().fallback(hook).with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), h)
}

/// The aiosmtpd server of `tests/servers/smtp_server.py`, stopped on drop.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Smtp {
    pub fn start(maildir: &Path) -> Smtp {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(repo().join("tests/servers/smtp_server.py"))
            .arg(port.to_string())
            .arg(maildir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Smtp {
            child,
            port,
            maildir: maildir.to_path_buf(),
        }
    }

    /// The Message-ID of every message received so far.
    pub fn message_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.maildir).unwrap().flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Some(id) = text.lines().find_map(|l| {
                l.strip_prefix("Message-ID: ")
                    .or_else(|| l.strip_prefix("Message-Id: "))
            }) {
                out.push(id.trim().to_string());
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One daemon process; its stderr goes to a log file per start.
pub struct Daemon {
    pub name: String,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    pub addr: Option<String>,
    pub starts: usize,
}

impl Daemon {
    pub fn new(name: &str, dir: &Path, config: &Path) -> Daemon {
        Daemon {
            name: name.to_string(),
            config: config.to_path_buf(),
            dir: dir.to_path_buf(),
            child: None,
            addr: None,
            starts: 0,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.log", self.name, self.starts))
    }

    /// Starts the process and waits until it serves.
    pub fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log()).unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("TOUCHPILOT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(self.log()).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .filter(|l| l.contains("serving"))
                .flat_map(str::split_whitespace)
                .find_map(|w| w.strip_prefix("address="))
                .map(|a| a.trim_matches('"').to_string())
            {
                self.addr = Some(addr);
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status} while starting:\n{text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {}", self.name);
    }

    /// SIGKILL, then reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.addr = None;
    }

    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("{}-{n}.log", self.name)))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restarted ---\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must be continued to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A setup folder: the configuration (`store`, SMTP port, receiver base,
/// lease), one playbook sending an email and/or a webhook per
/// `ticket.created`, and `accounts` accounts with one contact each.
pub fn setup(
    dir: &Path,
    store: &str,
    smtp: Option<u16>,
    hooks: &str,
    hook_path: &str,
    lease: &str,
    accounts: usize,
) -> PathBuf {
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let email = match smtp {
        Some(port) => format!(
            "email: {{ from: \"Acme <success@acme.example>\", transport: \"smtp://127.0.0.1:{port}\" }}\n"
        ),
        None => String::new(),
    };
    let config = dir.join("touchpilot.yaml");
    std::fs::write(
        &config,
        format!(
            "playbooks: playbooks\ntemplates: templates\nstore: \"{store}\"\nhttp: {{ listen: \"127.0.0.1:0\" }}\nsources:\n  file: {{ accounts: accounts.jsonl }}\n{email}webhooks:\n  hook: {{ url: \"{hooks}{hook_path}\", allow_private: true }}\ndelivery: {{ lease: {lease} }}\n"
        ),
    )
    .unwrap();
    let mut actions = String::new();
    if smtp.is_some() {
        actions.push_str("      - email: { to: contacts, template: ack }\n");
    }
    actions.push_str("      - webhook: { endpoint: hook, template: alert }\n");
    std::fs::write(
        dir.join("playbooks/main.yaml"),
        format!(
            "moments:\n  - id: ticket\n    on: {{ event: ticket.created }}\n    actions:\n{actions}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/ack.hbs"),
        "---\nsubject: \"Ticket {{event.id}} for {{account.name}}\"\n---\nHi {{contact.name}}, we are on it.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}: {{event.id}}\"}",
    )
    .unwrap();
    let mut lines = String::new();
    for i in 0..accounts {
        lines.push_str(
            &json!({"id": format!("a{i}"), "name": format!("Account {i}"),
                    "contacts": [{"email": format!("c{i}@acme.example"), "name": format!("C{i}")}]})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(dir.join("accounts.jsonl"), lines).unwrap();
    config
}

/// `n` events as NDJSON batches of `size`, ids `e0`...
pub fn event_batches(n: usize, accounts: usize, size: usize) -> Vec<String> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(size)
        .map(|c| {
            c.iter()
                .map(|i| {
                    json!({"id": format!("e{i}"), "account": format!("a{}", i % accounts),
                           "type": "ticket.created", "data": {}})
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// Posts `body` to `addr` and says whether it was acknowledged (202).
pub fn client() -> reqwest::Client {
    touchpilot::tls::init();
    reqwest::Client::new()
}

pub async fn post(client: &reqwest::Client, addr: &str, body: &str) -> bool {
    match client
        .post(format!("http://{addr}/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body.to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
    {
        Ok(r) => r.status() == 202,
        Err(_) => false,
    }
}

/// Every outbox row's attempts, by the id its deliveries carry: the
/// Message-ID of an email, the `webhook-id` of a webhook.
async fn attempts_by_delivery_id(pool: &sqlx::PgPool) -> HashMap<String, i64> {
    sqlx::query("SELECT kind, payload, attempts FROM outbox")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let payload: serde_json::Value =
                serde_json::from_str(&r.get::<String, _>("payload")).unwrap();
            let id = if r.get::<String, _>("kind") == "email" {
                payload["message_id"].as_str().unwrap().to_string()
            } else {
                touchpilot::deliver::webhook::webhook_id(&payload)
            };
            (id, r.get::<i64, _>("attempts"))
        })
        .collect()
}

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.clone()).or_insert(0) += 1;
    }
    m
}

/// 10,000 events, each an email and a webhook: 20,000 deliveries by three
/// daemons while one of them is SIGKILLed and restarted every few
/// seconds. Nothing acknowledged is lost; a duplicate is only ever a row
/// that was claimed again after its worker died (attempts > 1), and it
/// carries the original's Message-ID / webhook-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_deliver_everything_while_one_is_killed_over_and_over() {
    const EVENTS: usize = 10_000;
    const ACCOUNTS: usize = 500;
    let db = Db::create(&pg_admin()).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(&dir.path().join("mail"));
    let (base, rx) = hooks().await;
    let config = setup(
        dir.path(),
        &db.scratch.url,
        Some(smtp.port),
        &base,
        "/hook",
        "5s",
        ACCOUNTS,
    );
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| Daemon::new(&format!("d{i}"), dir.path(), &config))
        .collect();
    for d in &mut daemons {
        d.start();
    }

    // Events go to whichever instance answers, round robin; a batch not
    // acknowledged (its instance was killed) is posted again elsewhere.
    let client = client();
    let batches = event_batches(EVENTS, ACCOUNTS, 250);
    let started = Instant::now();
    let mut next = 0;
    let mut kills = 0;
    let mut last_kill = Instant::now();
    let mut victim = 0;
    let mut posted = 0;
    let deadline = Instant::now() + Duration::from_secs(540);
    loop {
        if posted < batches.len() {
            let addrs: Vec<String> = daemons.iter().filter_map(|d| d.addr.clone()).collect();
            let addr = &addrs[next % addrs.len()];
            next += 1;
            if post(&client, addr, &batches[posted]).await {
                posted += 1;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let emails = smtp.message_ids();
        let webhooks = rx.seen.lock().unwrap().clone();
        let done = counts(&emails).len() >= EVENTS && counts(&webhooks).len() >= EVENTS;
        if done {
            break;
        }
        if last_kill.elapsed() >= Duration::from_secs(3) {
            daemons[victim].kill();
            kills += 1;
            daemons[victim].start();
            victim = (victim + 1) % daemons.len();
            last_kill = Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "not delivered in time: {} emails, {} webhooks of {EVENTS} each after {kills} kills\n{}",
            counts(&smtp.message_ids()).len(),
            counts(&rx.seen.lock().unwrap()).len(),
            daemons
                .iter()
                .map(Daemon::logs)
                .collect::<Vec<_>>()
                .join("\n=====\n")
        );
    }
    let elapsed = started.elapsed();
    assert!(kills >= 3, "the run should see several kills: {kills}");

    let pool = db.pool().await;
    let attempts = attempts_by_delivery_id(&pool).await;
    assert_eq!(attempts.len(), 2 * EVENTS, "one outbox row per action");
    let emails = counts(&smtp.message_ids());
    let webhooks = counts(&rx.seen.lock().unwrap());
    eprintln!(
        "delivered {} emails ({} messages) and {} webhooks ({} requests) in {elapsed:?} with {kills} kills",
        emails.len(),
        emails.values().sum::<usize>(),
        webhooks.len(),
        webhooks.values().sum::<usize>(),
    );
    let mut duplicates = 0;
    for (id, n) in emails.iter() {
        let row = attempts
            .get(id.as_str())
            .unwrap_or_else(|| panic!("an email with an unknown Message-ID {id}"));
        if *n > 1 {
            duplicates += n - 1;
            assert!(*row > 1, "{id} sent {n} times but claimed once");
        }
    }
    for (id, n) in webhooks.iter() {
        let row = attempts
            .get(id.as_str())
            .unwrap_or_else(|| panic!("a webhook with an unknown webhook-id {id}"));
        if *n > 1 {
            duplicates += n - 1;
            assert!(*row > 1, "{id} sent {n} times but claimed once");
        }
    }
    // A kill repeats at most the sends its process had not yet recorded: a
    // batch ends its claims 64 at a time as they finish (`FINISH_EVERY` in
    // `deliver::worker`), so at most those waiting to be ended, those
    // whose commit the kill interrupted, and the 16 in flight.
    assert!(
        duplicates <= kills * (64 + 64 + 16),
        "{duplicates} duplicates from {kills} kills"
    );
}

/// A daemon stopped (SIGSTOP) in the middle of a send, past its lease:
/// another instance delivers the row; once continued, the stopped one's
/// late outcome changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_daemon_past_its_lease_cannot_complete_what_another_delivered() {
    let db = Db::create(&pg_admin()).await;
    let dir = tempfile::tempdir().unwrap();
    let (base, rx) = hooks().await;
    let config = setup(dir.path(), &db.scratch.url, None, &base, "/slow", "3s", 1);
    let mut a = Daemon::new("a", dir.path(), &config);
    a.start();
    let client = client();
    assert!(
        post(
            &client,
            a.addr.as_ref().unwrap(),
            &event_batches(1, 1, 1)[0]
        )
        .await
    );

    // A is sending: stop it there. Its request is answered 500 (A would
    // record a retry); the rescue's is answered 200.
    tokio::time::timeout(Duration::from_secs(30), rx.arrived.notified())
        .await
        .expect("A sends the webhook");
    a.signal("STOP");
    let id = rx.seen.lock().unwrap()[0].clone();
    rx.script.lock().unwrap().insert(id.clone(), vec![500, 200]);
    rx.gate.add_permits(1);

    let mut b = Daemon::new("b", dir.path(), &config);
    b.start();
    tokio::time::timeout(Duration::from_secs(30), rx.arrived.notified())
        .await
        .expect("B takes the row over once A's lease expired");
    rx.gate.add_permits(1);
    let pool = db.pool().await;
    let state = async || {
        let r = sqlx::query("SELECT state, attempts, token FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        (
            r.get::<String, _>("state"),
            r.get::<i64, _>("attempts"),
            r.get::<i64, _>("token"),
        )
    };
    until(
        Duration::from_secs(30),
        "B's delivery to be recorded",
        async || state().await.0 == "sent",
    )
    .await;
    let delivered = state().await;
    assert_eq!(delivered, ("sent".to_string(), 2, 2));

    // A goes on: it reads its 500 and tries to record a retry, fenced out.
    a.signal("CONT");
    let metrics = format!("http://{}/metrics", a.addr.as_ref().unwrap());
    until(
        Duration::from_secs(30),
        "A to finish its late attempt",
        async || {
            let Ok(r) = client.get(&metrics).send().await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            text.lines()
                .any(|l| l.starts_with("touchpilot_deliveries_total{outcome=\"retried\"} 1"))
        },
    )
    .await;
    assert_eq!(state().await, delivered, "A's late outcome changed nothing");
    assert_eq!(
        *rx.seen.lock().unwrap(),
        vec![id.clone(), id],
        "same webhook-id both times"
    );
    drop(b);
    drop(a);
}

/// A PostgreSQL server of the test's own (`initdb`, `pg_ctl`) on a free
/// port, run as the `postgres` user when the test runs as root (initdb
/// refuses root); stopped on drop.
pub struct OwnServer {
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var("TOUCHPILOT_PG_BIN")
        .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_string());
    PathBuf::from(dir).join(name)
}

impl OwnServer {
    pub fn start() -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let s = OwnServer {
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = s.dir.path().join("data");
        let out = s
            .cmd(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running {} (TOUCHPILOT_PG_BIN): {e}",
                    pg_bin("initdb").display()
                )
            });
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.pg_ctl("start");
        s
    }

    fn cmd(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let mut c = self.cmd(&pg_bin("pg_ctl"));
        c.args(["-D"])
            .arg(&data)
            .args(["-w", "-t", "60", "-m", "fast", "-o", &opts]);
        if action != "stop" {
            c.arg("-l").arg(self.dir.path().join("server.log"));
        }
        let out = c.arg(action).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .cmd(&pg_bin("pg_ctl"))
            .args(["-D"])
            .arg(&data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

/// Whether this process runs as root (`id -u`).
fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The database server restarted mid-run: the daemons reconnect by
/// themselves, no loop stays stuck (events posted after the restart are
/// delivered promptly), and every acknowledged event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_ride_out_a_database_restart() {
    const EVENTS: usize = 2_000;
    let server = OwnServer::start();
    let scratch = Scratch::create(&server.admin()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (base, rx) = hooks().await;
    let config = setup(dir.path(), &scratch.url, None, &base, "/hook", "5s", 50);
    let mut daemons: Vec<Daemon> = (0..2)
        .map(|i| Daemon::new(&format!("d{i}"), dir.path(), &config))
        .collect();
    for d in &mut daemons {
        d.start();
    }
    let client = client();
    let batches = event_batches(EVENTS, 50, 100);
    let (first, second) = batches.split_at(batches.len() / 2);
    let mut acknowledged = 0;
    let mut n = 0;
    for b in first {
        let addr = daemons[n % 2].addr.clone().unwrap();
        n += 1;
        if post(&client, &addr, b).await {
            acknowledged += 1;
        }
    }
    assert_eq!(acknowledged, first.len());
    // Restart while the outbox is busy.
    until(Duration::from_secs(60), "deliveries to begin", async || {
        !rx.seen.lock().unwrap().is_empty()
    })
    .await;
    server.pg_ctl("restart");
    let restarted = Instant::now();
    // Events posted now are acknowledged once the daemons are back.
    for b in second {
        let mut tries = 0;
        loop {
            let addr = daemons[n % 2].addr.clone().unwrap();
            n += 1;
            if post(&client, &addr, b).await {
                break;
            }
            tries += 1;
            assert!(tries < 200, "an instance never accepted events again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until(
        Duration::from_secs(45),
        "every acknowledged event's webhook after the restart",
        async || counts(&rx.seen.lock().unwrap()).len() >= EVENTS,
    )
    .await;
    eprintln!(
        "all {EVENTS} delivered {:?} after the restart",
        restarted.elapsed()
    );
    for d in &daemons {
        assert!(d.logs().contains("serving"), "{}: {}", d.name, d.logs());
    }
    drop(daemons);
    scratch.drop_database().await.unwrap();
}

/// The same cron moment, computed by three instances at the same instant
/// on a virtual clock: one outbox row per account, whoever wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_moment_computed_by_three_instances_fires_once_per_account() {
    use jiff::Timestamp;
    use touchpilot::engine::Engine;
    use touchpilot::model::account::Account;
    use touchpilot::runner::Runner;
    use touchpilot::store::Store;
    use touchpilot::store::postgres::PgStore;

    let db = Db::create(&pg_admin()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("playbooks")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("touchpilot.yaml"),
        "playbooks: playbooks\ntemplates: templates\nwebhooks:\n  hook: { url: \"https://hooks.example.com/x\" }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("playbooks/main.yaml"),
        "moments:\n  - id: daily\n    schedule: \"0 9 * * *\"\n    actions:\n      - webhook: { endpoint: hook, template: alert }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}\"}",
    )
    .unwrap();
    let loaded = touchpilot::config::load(&p.join("touchpilot.yaml"), &|_| None);
    let config = Arc::new(loaded.expect("valid configuration").0);
    let links = touchpilot::deliver::unsubscribe_links("http://x".into(), b"k".to_vec());
    let mut runners = Vec::new();
    for _ in 0..3 {
        runners.push(Runner::new(
            PgStore::open(&db.scratch.url).await.unwrap(),
            Engine::new(config.clone(), links.clone()),
        ));
    }
    let t = |s: &str| s.parse::<Timestamp>().unwrap();
    let accounts: Vec<Account> = (0..40)
        .map(|i| {
            Account::from_json(json!({"id": format!("a{i}"), "name": format!("A{i}")})).unwrap()
        })
        .collect();
    // All three seed the same accounts at once, as instances starting together do.
    let (x, y, z) = tokio::join!(
        runners[0].seed(accounts.clone(), t("2026-03-01T00:00:00Z")),
        runners[1].seed(accounts.clone(), t("2026-03-01T00:00:00Z")),
        runners[2].seed(accounts.clone(), t("2026-03-01T00:00:00Z")),
    );
    x.unwrap();
    y.unwrap();
    z.unwrap();
    // 09:00 on two days, each computed by all three at once.
    for now in ["2026-03-01T09:00:00Z", "2026-03-02T09:00:30Z"] {
        let now = t(now);
        let (x, y, z) = tokio::join!(
            runners[0].run_due(now, 1000),
            runners[1].run_due(now, 1000),
            runners[2].run_due(now, 1000),
        );
        let planned = x.unwrap().actions + y.unwrap().actions + z.unwrap().actions;
        assert!(planned >= 40, "{planned}");
    }
    let rows = runners[0].store.list_outbox(1000).await.unwrap();
    let mut per: HashMap<(String, String), usize> = HashMap::new();
    for r in &rows {
        *per.entry((r.account.clone(), r.payload["fired_at"].to_string()))
            .or_insert(0) += 1;
    }
    assert_eq!(rows.len(), 80, "40 accounts × 2 days: {per:?}");
    assert!(per.values().all(|n| *n == 1), "{per:?}");
}
