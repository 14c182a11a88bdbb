//! The daemon as a process, with real servers around it: SMTP (aiosmtpd)
//! and an HTTP receiver. Reload on SIGHUP, the operations commands, and
//! SIGKILL in the middle of thousands of sends.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deliver::receiver;
use crate::smtp::server;
use crate::support::{bin, eventually};

/// A running `touchpilot run`, its log lines collected as they come.
struct Daemon {
    child: Child,
    address: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, &[])
    }

    fn start_with(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .env("TOUCHPILOT_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the daemon did not start: {:?}", logs.lock().unwrap()));
        let address = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .expect("the serving line names its address")
            .to_string();
        Daemon {
            child,
            address,
            logs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits until a log line contains `needle`, and returns it.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with `{needle}`: {:?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        // The reader thread may still be draining the last lines of stderr.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !self
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("stopped"))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let logs = self.logs.lock().unwrap().clone();
        assert_eq!(status.code(), Some(0), "{logs:?}");
        logs
    }

    /// Waits for the exit a signal already asked for.
    fn stop_after_signal(mut self) {
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{:?}", self.logs.lock().unwrap());
    }

    fn kill9(self) {
        // Drop sends SIGKILL.
    }
}

impl Drop for Daemon {
    /// A failing test must not leave a daemon behind (it would also hold
    /// the test harness's output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(url: &str, body: &Value) -> Result<(u16, Value), String> {
    touchpilot::tls::init();
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .map_err(|e| e.to_string())?;
    let code = r.status().as_u16();
    let bytes = r.bytes().map_err(|e| e.to_string())?;
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

fn touchpilot(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn emls(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    eml.split("\r\n\r\n")
        .next()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

fn write_setup(dir: &Path, transport: &str, webhook: &str, accounts: &[Value]) -> PathBuf {
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("playbooks/tech.yaml"),
        "id: tech\nsegment: { when: \"true\", priority: 1 }\nmoments:\n  - id: ticket\n    on: { event: ticket.created }\n    actions:\n      - email: { template: ack, to: contacts }\n      - webhook: { endpoint: alerts, template: alert }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/ack.hbs"),
        "---\nsubject: \"We saw your ticket, {{contact.name}}\"\n---\nHi {{contact.name}}, {{event.data.subject}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/alert.json.hbs"),
        "{\"text\": \"{{account.name}}: {{event.data.subject}}\", \"account\": \"{{account.id}}\"}",
    )
    .unwrap();
    let lines: Vec<String> = accounts.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("accounts.jsonl"), lines.join("\n") + "\n").unwrap();
    let config = dir.join("touchpilot.yaml");
    std::fs::write(
        &config,
        format!(
            "playbooks: playbooks\ntemplates: templates\nstore: \"sqlite:{}\"\nhttp: {{ listen: \"127.0.0.1:0\" }}\nsources:\n  file: {{ accounts: accounts.jsonl }}\nemail: {{ from: \"CS <cs@vendor.example>\", transport: \"{transport}\" }}\nwebhooks:\n  alerts: {{ url: \"{webhook}\", secret: \"whsec_c2VjcmV0\", allow_private: true }}\ndelivery: {{ first_retry: 1s, max_retry: 2s, lease: 10s, timeout: 5s }}\n",
            dir.join("t.db").display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_through_the_daemon_with_retries_dead_letters_and_the_ops_commands() {
    let smtp = server();
    let (hook, rx) = receiver(&[("/hook", &[500])]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        &format!("smtp://127.0.0.1:{}", smtp.port),
        &format!("{hook}/hook"),
        &[json!({"id": "a1", "name": "Acme", "contacts": [
            {"email": "ann@acme.example", "name": "Ann"},
            {"email": "tempfail@acme.example", "name": "Tim"},
            {"email": "permfail@acme.example", "name": "Pam"},
            {"email": "dropafter@acme.example", "name": "Dee"}]})],
    );
    let config2 = config.clone();
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(&config2))
        .await
        .unwrap();
    let url = daemon.url("/v1/events");
    let (code, body) = tokio::task::spawn_blocking(move || {
        post(
            &url,
            &json!({"id": "t1", "account": "a1", "type": "ticket.created", "data": {"subject": "Login fails"}}),
        )
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        (code, &body),
        (202, &json!({"accepted": 1, "duplicates": 0}))
    );

    // Ann at once; Tim after a 451; Dee twice (the connection dropped after
    // DATA), both copies with one Message-ID; Pam never (550).
    let maildir = smtp.maildir.path().to_path_buf();
    let mails = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(30), "the emails", || {
            let m = emls(&maildir);
            (m.len() >= 4).then_some(m)
        })
    })
    .await
    .unwrap();
    let to = |who: &str| -> Vec<&String> {
        mails
            .iter()
            .filter(|m| header(m, "To") == Some(who))
            .collect()
    };
    assert_eq!(to("ann@acme.example").len(), 1);
    assert_eq!(to("tempfail@acme.example").len(), 1);
    assert!(to("permfail@acme.example").is_empty());
    let dee = to("dropafter@acme.example");
    assert_eq!(dee.len(), 2, "the ambiguous send is retried");
    assert_eq!(
        header(dee[0], "Message-ID"),
        header(dee[1], "Message-ID"),
        "a retried email repeats its Message-ID"
    );
    let ann = to("ann@acme.example")[0];
    assert_eq!(header(ann, "Subject"), Some("We saw your ticket, Ann"));
    assert!(header(ann, "List-Unsubscribe").is_some_and(|u| u.contains("/unsubscribe/")));
    assert_eq!(
        header(ann, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    // The webhook: a 500, then delivered with the same id.
    let seen = {
        let rx = rx.clone();
        tokio::task::spawn_blocking(move || {
            eventually(Duration::from_secs(30), "the webhook retry", || {
                let s = rx.seen.lock().unwrap().clone();
                (s.len() >= 2).then_some(s)
            })
        })
        .await
        .unwrap()
    };
    assert_eq!(seen[0].headers["webhook-id"], seen[1].headers["webhook-id"]);

    // The operations commands, while it runs.
    let c = config.clone();
    let (status, dead, trace) = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(30), "the dead letter", || {
            let (_, s) = touchpilot(&["status"], &c);
            s.contains("1 dead").then_some(())
        });
        (
            touchpilot(&["status"], &c),
            touchpilot(&["dead-letters"], &c),
            touchpilot(&["trace", "a1"], &c),
        )
    })
    .await
    .unwrap();
    assert_eq!(status.0, 0, "{}", status.1);
    assert!(status.1.contains("0 pending"), "{}", status.1);
    assert!(status.1.contains("permfail@acme.example"), "{}", status.1);
    assert!(dead.1.contains("550"), "{}", dead.1);
    assert!(dead.1.contains("tech/ticket"), "{}", dead.1);
    for needle in [
        "segment tech",
        "fired tech/ticket (event)",
        "email to ann@acme.example",
        "webhook alerts",
        "sent (attempts 1)",
        "dead (attempts 1)",
    ] {
        assert!(trace.1.contains(needle), "`{needle}` in:\n{}", trace.1);
    }
    // Queue the dead letter again: it fails again, and says so.
    let id = dead.1.split_whitespace().next().unwrap().to_string();
    let c = config.clone();
    let retried =
        tokio::task::spawn_blocking(move || touchpilot(&["dead-letters", "--retry", &id], &c))
            .await
            .unwrap();
    assert!(retried.1.contains("queued again"), "{}", retried.1);
    let c = config.clone();
    let missing = tokio::task::spawn_blocking(move || touchpilot(&["trace", "nobody"], &c))
        .await
        .unwrap();
    assert_eq!(missing.0, 2, "{}", missing.1);

    let logs = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap();
    assert!(logs.iter().any(|l| l.contains("stopped")), "{logs:?}");
}

#[test]
fn sighup_keeps_the_running_playbooks_on_error_and_takes_fixed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "file:outbox",
        "http://127.0.0.1:9/hook",
        &[
            json!({"id": "a1", "name": "Acme", "contacts": [{"email": "ann@acme.example", "name": "Ann"}]}),
        ],
    );
    let daemon = Daemon::start(&config);
    let event = |id: &str| {
        let (code, _) = post(
            &daemon.url("/v1/events"),
            &json!({"id": id, "account": "a1", "type": "ticket.created", "data": {"subject": "x"}}),
        )
        .unwrap();
        assert_eq!(code, 202);
    };
    let subjects = || -> Vec<String> {
        let mut s: Vec<String> = emls(&dir.path().join("outbox"))
            .iter()
            .filter_map(|m| header(m, "Subject").map(str::to_string))
            .collect();
        s.sort();
        s
    };
    // A broken playbook: refused, named, and the old one keeps running.
    let playbook = dir.path().join("playbooks/tech.yaml");
    let good = std::fs::read_to_string(&playbook).unwrap();
    std::fs::write(&playbook, good.replace("on: {", "onn: {")).unwrap();
    daemon.signal("-HUP");
    let refused = daemon.wait_log("reload refused");
    assert!(
        daemon
            .logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("tech.yaml:5:") && l.contains("onn")),
        "the problem is named with file and line: {refused}"
    );
    event("e1");
    eventually(Duration::from_secs(30), "the first email", || {
        (subjects().len() == 1).then_some(())
    });
    assert_eq!(subjects(), ["We saw your ticket, Ann"]);

    // Fixed, with a new subject: taken without a restart.
    std::fs::write(
        dir.path().join("templates/ack.hbs"),
        "---\nsubject: \"Ticket received, {{contact.name}}\"\n---\nHi\n",
    )
    .unwrap();
    std::fs::write(&playbook, &good).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("reloaded");
    event("e2");
    eventually(Duration::from_secs(30), "the second email", || {
        (subjects().len() == 2).then_some(())
    });
    assert_eq!(
        subjects(),
        ["Ticket received, Ann", "We saw your ticket, Ann"]
    );
    daemon.stop();
}

/// SIGKILL again and again while thousands of emails and webhooks go out:
/// nothing accepted is lost, and every duplicate is recognisable as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_thousands_of_sends_loses_nothing() {
    const ACCOUNTS: usize = 500;
    const CONTACTS: usize = 3;
    let smtp = server();
    let (hook, rx) = receiver(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<Value> = (0..ACCOUNTS)
        .map(|i| {
            let contacts: Vec<Value> = (0..CONTACTS)
                .map(|c| json!({"email": format!("c{c}@a{i}.example"), "name": format!("C{c}")}))
                .collect();
            json!({"id": format!("a{i}"), "name": format!("Acct {i}"), "contacts": contacts})
        })
        .collect();
    let config = write_setup(
        dir.path(),
        &format!("smtp://127.0.0.1:{}", smtp.port),
        &format!("{hook}/hook"),
        &accounts,
    );
    let maildir = smtp.maildir.path().to_path_buf();
    let seen = rx.seen.clone();
    let (kills, lost) = tokio::task::spawn_blocking(move || {
        let expected_mail = ACCOUNTS * CONTACTS;
        let mut daemon = Daemon::start(&config);
        let mut sent_events = 0;
        let mut kills = 0;
        let mut rng = 0x9e37_79b9_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let done = || {
            emls(&maildir)
                .iter()
                .filter_map(|m| header(m, "To").map(str::to_string))
                .collect::<HashSet<_>>()
                .len()
                == expected_mail
                && seen
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|r| r.headers["webhook-id"].clone())
                    .collect::<HashSet<_>>()
                    .len()
                    == ACCOUNTS
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        while !done() {
            assert!(Instant::now() < deadline, "not everything arrived in time");
            // Post the next batch (retried until acknowledged: ids make it safe).
            if sent_events < ACCOUNTS {
                let batch: Vec<Value> = (sent_events..(sent_events + 100).min(ACCOUNTS))
                    .map(|i| json!({"id": format!("t{i}"), "account": format!("a{i}"), "type": "ticket.created", "data": {"subject": "help"}}))
                    .collect();
                if let Ok((202, _)) = post(&daemon.url("/v1/events"), &Value::Array(batch.clone())) {
                    sent_events += batch.len();
                }
            }
            std::thread::sleep(Duration::from_millis(100 + next() % 400));
            if kills < 12 {
                daemon.kill9();
                kills += 1;
                daemon = Daemon::start(&config);
            } else {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        daemon.stop();
        (kills, expected_mail)
    })
    .await
    .unwrap();
    assert!(kills >= 5, "the daemon was killed {kills} times");

    // Every duplicate email carries its original's Message-ID.
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    let mut messages = 0;
    for m in emls(smtp.maildir.path()) {
        messages += 1;
        let to = header(&m, "To").unwrap().to_string();
        ids.entry(to)
            .or_default()
            .insert(header(&m, "Message-ID").unwrap().to_string());
    }
    assert_eq!(ids.len(), lost, "every email arrived");
    assert!(
        ids.values().all(|s| s.len() == 1),
        "a recipient got two different messages"
    );
    let mut hooks: HashMap<String, HashSet<String>> = HashMap::new();
    for r in rx.seen.lock().unwrap().iter() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        hooks
            .entry(body["account"].as_str().unwrap().to_string())
            .or_default()
            .insert(r.headers["webhook-id"].to_str().unwrap().to_string());
    }
    assert_eq!(hooks.len(), ACCOUNTS, "every webhook arrived");
    assert!(
        hooks.values().all(|s| s.len() == 1),
        "an account's webhook came with two different ids"
    );
    // A kill repeats at most the sends not yet recorded: a batch ends its
    // claims 64 at a time as they finish, 16 are in flight.
    let duplicates = messages - lost + rx.seen.lock().unwrap().len() - ACCOUNTS;
    assert!(
        duplicates <= kills * (64 + 64 + 16),
        "{duplicates} duplicates from {kills} kills"
    );
    eprintln!("{duplicates} duplicates from {kills} kills");
}

/// The systemd notification protocol, read from a socket of our own as
/// systemd would: READY once serving, WATCHDOG pings, RELOADING then READY
/// around a reload, STOPPING on SIGTERM.
#[test]
fn it_speaks_the_systemd_notification_protocol() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "file:outbox",
        "http://127.0.0.1:9/hook",
        &[json!({"id": "a1", "name": "Acme", "contacts": []})],
    );
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let daemon = Daemon::start_with(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = [0u8; 4096];
    let mut next = |want: &str| -> String {
        loop {
            let n = socket.recv(&mut buf).expect("a notification");
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains(want) {
                return msg;
            }
        }
    };
    next("READY=1");
    next("WATCHDOG=1");
    daemon.signal("-HUP");
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    next("READY=1");
    daemon.signal("-TERM");
    next("STOPPING=1");
    daemon.stop_after_signal();
}
