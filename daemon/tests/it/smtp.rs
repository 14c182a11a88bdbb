//! Email over SMTP to a real server (aiosmtpd, `tests/servers/smtp_server.py`,
//! installed by `scripts/test`): delivered with its headers, a 4xx is
//! retryable, a 5xx is fatal; pipelined (RFC 2920) when the server offers
//! it and in lockstep when not, with the bytes lettre built. The idle check
//! and timeouts run on a virtual clock against a scripted server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use touchpilot::deliver::SendError;
use touchpilot::deliver::email::Mailer;

use crate::support::repo;

pub struct Server {
    child: Child,
    pub port: u16,
    pub maildir: tempfile::TempDir,
    /// `--log`: one line per command, `PEERPORT VERB`.
    log: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The commands received, as `(connection, line)`, connections
    /// numbered in order of appearance.
    fn commands(&self) -> Vec<(usize, String)> {
        let text = std::fs::read_to_string(self.log.path()).unwrap();
        let mut peers = Vec::new();
        text.lines()
            .map(|l| {
                let (peer, rest) = l.split_once(' ').unwrap();
                let n = peers.iter().position(|p| p == peer).unwrap_or_else(|| {
                    peers.push(peer.to_string());
                    peers.len() - 1
                });
                (n, rest.to_string())
            })
            .collect()
    }

    fn verbs(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .map(|(n, l)| format!("{n} {}", l.split(' ').next().unwrap()))
            .collect()
    }

    fn received(&self, n: usize) -> Vec<u8> {
        std::fs::read(self.maildir.path().join(format!("{n}.eml"))).unwrap()
    }

    fn files(&self) -> usize {
        std::fs::read_dir(self.maildir.path()).unwrap().count()
    }

    fn mailer(&self) -> Mailer {
        Mailer::new(
            &format!("smtp://127.0.0.1:{}", self.port),
            "Acme Success <success@acme.example>",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    /// A mailer with one connection, so that messages sent together
    /// queue behind each other on it.
    fn one_connection(&self) -> Mailer {
        Mailer::with(
            &format!("smtp://127.0.0.1:{}", self.port),
            "Acme Success <success@acme.example>",
            std::path::Path::new("."),
            1,
            Duration::from_secs(30),
        )
        .unwrap()
    }

    /// The log lines of each message's arrival, `(connection, line)`.
    fn arrivals(&self) -> Vec<(usize, String)> {
        self.commands()
            .into_iter()
            .filter(|(_, l)| l.starts_with("MESSAGE"))
            .collect()
    }
}

pub fn server() -> Server {
    server_with(&[])
}

/// The test server with options: `--no-pipelining`, `--no-ehlo`,
/// `--offer-starttls` (see the script).
pub fn server_with(options: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("python3")
        .arg(repo().join("tests/servers/smtp_server.py"))
        .arg(port.to_string())
        .arg(maildir.path())
        .args(options)
        .arg("--log")
        .arg(log.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiosmtpd (scripts/test installs it)");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "the SMTP server did not start (is aiosmtpd installed?)"
    );
    Server {
        child,
        port,
        maildir,
        log,
    }
}

fn payload(to: &str) -> serde_json::Value {
    json!({
        "to": to,
        "message_id": "<0123abcd@touchpilot>",
        "unsubscribe_url": "https://cs.example.com/unsubscribe/abc",
        "content": {"subject": "Your review, Acme", "text": "Hi Ann,\nsee you Tuesday.\n", "html": "<p>Hi Ann</p>"},
    })
}

#[tokio::test]
async fn smtp_delivers_and_classifies_refusals() {
    delivers_and_classifies_refusals(server()).await;
}

#[tokio::test]
async fn smtp_in_lockstep_delivers_and_classifies_refusals() {
    delivers_and_classifies_refusals(server_with(&["--no-pipelining"])).await;
}

async fn delivers_and_classifies_refusals(s: Server) {
    let mailer = s.mailer();

    mailer
        .send(&payload("ann@acme.example"))
        .await
        .expect("delivered");
    let got = std::fs::read_to_string(s.maildir.path().join("1.eml")).unwrap();
    for needle in [
        "To: ann@acme.example",
        "Subject: Your review, Acme",
        "Message-ID: <0123abcd@touchpilot>",
        "List-Unsubscribe: <https://cs.example.com/unsubscribe/abc>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "multipart/alternative",
        "see you Tuesday.",
    ] {
        assert!(got.contains(needle), "missing `{needle}` in:\n{got}");
    }

    match mailer.send(&payload("tempfail@acme.example")).await {
        Err(SendError::Retryable(e)) => assert!(e.contains("451"), "{e}"),
        other => panic!("a 4xx must be retryable: {other:?}"),
    }
    mailer
        .send(&payload("tempfail@acme.example"))
        .await
        .expect("the retry is accepted");

    match mailer.send(&payload("permfail@acme.example")).await {
        Err(SendError::Fatal(e)) => assert!(e.contains("550"), "{e}"),
        other => panic!("a 5xx must be fatal: {other:?}"),
    }
    assert_eq!(std::fs::read_dir(s.maildir.path()).unwrap().count(), 2);
}

/// A mailer for a plain relay on 127.0.0.1:`port`.
fn plain_mailer(port: u16) -> Mailer {
    Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "a@b.io",
        std::path::Path::new("."),
    )
    .unwrap()
}

#[tokio::test]
async fn a_server_that_is_not_there_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = plain_mailer(port);
    match mailer.send(&payload("ann@acme.example")).await {
        Err(SendError::Retryable(_)) => {}
        other => panic!("a refused connection must be retryable: {other:?}"),
    }
}

#[tokio::test]
async fn starttls_is_required_or_opportunistic_as_the_transport_says() {
    let s = server();
    let mailer = |q: &str| {
        Mailer::new(
            &format!("smtp://127.0.0.1:{}{q}", s.port),
            "a@b.io",
            std::path::Path::new("."),
        )
    };
    // The test server offers no STARTTLS: required refuses to send in clear.
    match mailer("?tls=required")
        .unwrap()
        .send(&payload("ann@acme.example"))
        .await
    {
        Err(SendError::Retryable(e)) => assert!(e.contains("does not offer STARTTLS"), "{e}"),
        other => panic!("{other:?}"),
    }
    mailer("?tls=opportunistic")
        .unwrap()
        .send(&payload("ann@acme.example"))
        .await
        .expect("sent in clear when TLS is not offered");
    assert_eq!(std::fs::read_dir(s.maildir.path()).unwrap().count(), 1);
    let err = mailer("?tls=maybe").err().expect("refused");
    assert!(err.contains("unknown option `tls=maybe`"), "{err}");
}

/// What lettre's connection would have put on the wire as the message's
/// data: the formatted message, then `\r\n.\r\n` (whose line end the
/// server keeps), unstuffed by the server.
fn as_received(message: &lettre::Message) -> Vec<u8> {
    [message.formatted().as_slice(), b"\r\n"].concat()
}

/// Delivers one message to `s` and checks that what arrived is byte for
/// byte what lettre built; returns the server's log line for MAIL, which
/// says how many bytes were already waiting behind it.
async fn delivered_as_built(s: &Server) -> String {
    let mailer = s.mailer();
    let message = mailer.message(&payload("ann@acme.example")).unwrap();
    let expected = as_received(&message);
    mailer.deliver(message).await.expect("delivered");
    assert_eq!(s.received(1), expected);
    let commands = s.commands();
    commands
        .iter()
        .find(|(_, l)| l.starts_with("MAIL"))
        .unwrap_or_else(|| panic!("no MAIL in {commands:?}"))
        .1
        .clone()
}

#[tokio::test]
async fn pipelined_when_offered_with_the_bytes_lettre_built() {
    let s = server();
    // RCPT and DATA were already there when MAIL was read: one write.
    assert_ne!(delivered_as_built(&s).await, "MAIL ahead=0");
}

#[tokio::test]
async fn in_lockstep_when_pipelining_is_not_offered() {
    let s = server_with(&["--no-pipelining"]);
    assert_eq!(delivered_as_built(&s).await, "MAIL ahead=0");
}

#[tokio::test]
async fn helo_when_the_server_refuses_ehlo() {
    let s = server_with(&["--no-ehlo"]);
    let mailer = s.mailer();
    mailer
        .send(&payload("ann@acme.example"))
        .await
        .expect("delivered");
    // No extensions after HELO: lockstep.
    assert_eq!(
        s.commands().into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
        ["EHLO", "HELO", "MAIL ahead=0", "RCPT", "MESSAGE ahead=0"]
    );
    assert_eq!(s.files(), 1);
}

#[tokio::test]
async fn a_rcpt_refused_while_pipelined_resets_and_the_connection_is_reused() {
    let s = server();
    let mailer = s.mailer();
    match mailer.send(&payload("tempfail@acme.example")).await {
        Err(SendError::Retryable(e)) => assert!(e.contains("451"), "{e}"),
        other => panic!("a 4xx must be retryable: {other:?}"),
    }
    mailer
        .send(&payload("tempfail@acme.example"))
        .await
        .expect("the retry is accepted");
    assert_eq!(
        s.verbs(),
        [
            "0 EHLO",
            "0 MAIL",
            "0 RCPT",
            "0 RSET",
            "0 MAIL",
            "0 RCPT",
            "0 MESSAGE"
        ]
    );
    assert_eq!(s.files(), 1);
}

#[tokio::test]
async fn a_5xx_while_pipelined_is_fatal_and_the_connection_is_reused() {
    let s = server();
    let mailer = s.mailer();
    match mailer.send(&payload("permfail@acme.example")).await {
        Err(SendError::Fatal(e)) => assert!(e.contains("550") && e.contains("no such user"), "{e}"),
        other => panic!("a 5xx must be fatal: {other:?}"),
    }
    mailer.send(&payload("ann@acme.example")).await.unwrap();
    assert_eq!(
        s.verbs(),
        [
            "0 EHLO",
            "0 MAIL",
            "0 RCPT",
            "0 RSET",
            "0 MAIL",
            "0 RCPT",
            "0 MESSAGE"
        ]
    );
}

#[tokio::test]
async fn a_data_accepted_after_a_refused_rcpt_sends_nothing() {
    // The server refuses the recipient and still answers DATA with 354:
    // whatever the client writes next would be a message. It must close.
    let s = server();
    let mailer = s.mailer();
    match mailer.send(&payload("liar@acme.example")).await {
        Err(SendError::Fatal(e)) => assert!(e.contains("550"), "{e}"),
        other => panic!("the refused recipient decides: {other:?}"),
    }
    assert_eq!(s.files(), 0, "no message may arrive");
    mailer.send(&payload("ann@acme.example")).await.unwrap();
    assert_eq!(
        s.verbs(),
        [
            "0 EHLO",
            "0 MAIL",
            "0 RCPT",
            "1 EHLO",
            "1 MAIL",
            "1 RCPT",
            "1 MESSAGE"
        ],
        "a new connection after the broken one"
    );
    assert_eq!(s.files(), 1);
}

#[tokio::test]
async fn a_connection_dropped_after_the_data_is_retryable_and_not_reused() {
    for options in [&[][..], &["--no-pipelining"][..]] {
        let s = server_with(options);
        let mailer = s.mailer();
        match mailer.send(&payload("dropafter@acme.example")).await {
            Err(SendError::Retryable(_)) => {}
            other => panic!("a lost reply must be retryable: {other:?}"),
        }
        // The server had it: the ambiguous window a retry covers.
        assert_eq!(s.files(), 1);
        mailer.send(&payload("ann@acme.example")).await.unwrap();
        let verbs = s.verbs();
        assert_eq!(verbs.last().unwrap(), "1 MESSAGE", "{options:?}: {verbs:?}");
        assert_eq!(s.files(), 2);
    }
}

#[tokio::test]
async fn messages_queued_on_a_connection_go_out_one_round_trip_each() {
    for options in [&[][..], &["--no-pipelining"][..]] {
        let s = server_with(options);
        let mailer = s.one_connection();
        let messages: Vec<_> = (0..5)
            .map(|i| {
                mailer
                    .message(&payload(&format!("ann{i}@acme.example")))
                    .unwrap()
            })
            .collect();
        let expected: Vec<_> = messages.iter().map(as_received).collect();
        let sent =
            futures_util::future::join_all(messages.into_iter().map(|m| mailer.deliver(m))).await;
        assert!(sent.iter().all(Result::is_ok), "{options:?}: {sent:?}");
        for (i, bytes) in expected.iter().enumerate() {
            assert_eq!(&s.received(i + 1), bytes, "{options:?}: message {i}");
        }
        let arrivals = s.arrivals();
        assert_eq!(arrivals.len(), 5, "{arrivals:?}");
        assert!(arrivals.iter().all(|(n, _)| *n == 0), "{arrivals:?}");
        let behind: Vec<bool> = arrivals
            .iter()
            .map(|(_, l)| l != "MESSAGE ahead=0")
            .collect();
        if options.is_empty() {
            // The next message's MAIL, RCPT and DATA came with each
            // message's data, but the last one's.
            assert_eq!(behind, [true, true, true, true, false], "{arrivals:?}");
        } else {
            // Without PIPELINING, nothing is ever written ahead.
            assert_eq!(behind, [false; 5], "{arrivals:?}");
        }
    }
}

#[tokio::test]
async fn a_message_refused_at_its_end_leaves_the_next_one_announced_behind_it_to_go() {
    let s = server();
    let mailer = s.one_connection();
    let (first, second) = (
        payload("rejectdata@acme.example"),
        payload("ann@acme.example"),
    );
    let (refused, next) = tokio::join!(mailer.send(&first), mailer.send(&second));
    match refused {
        Err(SendError::Fatal(e)) => assert!(e.contains("554"), "{e}"),
        other => panic!("a 5xx to the data must be fatal: {other:?}"),
    }
    next.expect("the message behind it is delivered");
    // No RSET between them: the next MAIL was already out, and the end
    // of the data ends the transaction whatever its answer.
    assert_eq!(
        s.verbs(),
        [
            "0 EHLO",
            "0 MAIL",
            "0 RCPT",
            "0 MESSAGE",
            "0 MAIL",
            "0 RCPT",
            "0 MESSAGE"
        ]
    );
    assert_eq!(s.files(), 1);
}

#[tokio::test]
async fn a_message_announced_on_a_connection_lost_after_the_data_goes_on_a_new_one() {
    let s = server();
    let mailer = s.one_connection();
    let (first, second) = (
        payload("dropafter@acme.example"),
        payload("ann@acme.example"),
    );
    let (lost, next) = tokio::join!(mailer.send(&first), mailer.send(&second));
    match lost {
        Err(SendError::Retryable(_)) => {}
        other => panic!("a lost reply must be retryable: {other:?}"),
    }
    // Its commands went out with the lost message's data, but never its
    // own data: it is sent once, on the next connection.
    next.expect("the message behind it is delivered");
    let arrivals = s.arrivals();
    assert_eq!(
        arrivals.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1],
        "{arrivals:?}"
    );
    assert_ne!(arrivals[0].1, "MESSAGE ahead=0", "announced: {arrivals:?}");
    assert_eq!(s.files(), 2);
}

#[tokio::test]
async fn dots_at_line_starts_and_a_large_message_arrive_as_built() {
    let s = server();
    let mailer = s.mailer();
    let mut text = String::from(".hidden\n..two\n.\nmiddle . dot\n. space\n");
    // About 3 MB, more than any socket buffer: the write is not one call.
    for i in 0..60_000 {
        text.push_str(&format!(
            ".line {i} of a large message, long enough to matter\n"
        ));
    }
    text.push('.');
    let mut p = payload("ann@acme.example");
    p["content"]["text"] = json!(text);
    p["content"].as_object_mut().unwrap().remove("html");
    let message = mailer.message(&p).unwrap();
    let expected = as_received(&message);
    assert!(expected.len() > 3_000_000);
    mailer.deliver(message).await.expect("delivered");
    assert_eq!(s.received(1), expected);
    // And the connection is still good for the next one.
    let small = mailer.message(&payload("bob@acme.example")).unwrap();
    let expected = as_received(&small);
    mailer.deliver(small).await.unwrap();
    assert_eq!(s.received(2), expected);
    assert_eq!(s.verbs().iter().filter(|v| v.ends_with("EHLO")).count(), 1);
}

#[tokio::test]
async fn opportunistic_tls_offered_goes_through_lettre_and_never_in_clear() {
    // The server lists STARTTLS but cannot do it: lettre's connection
    // tries, and the 454 is retryable. Nothing is sent in clear.
    let s = server_with(&["--offer-starttls"]);
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{}?tls=opportunistic", s.port),
        "a@b.io",
        std::path::Path::new("."),
    )
    .unwrap();
    for _ in 0..2 {
        match mailer.send(&payload("ann@acme.example")).await {
            Err(SendError::Retryable(e)) => assert!(e.contains("454"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.files(), 0);
    // Our client found out once; lettre connected each time since.
    assert_eq!(s.verbs(), ["0 EHLO", "1 EHLO", "2 EHLO"]);
    // Without `?tls=`, the same server gets the message in clear.
    s.mailer().send(&payload("ann@acme.example")).await.unwrap();
    assert_eq!(s.files(), 1);
}

/// A scripted SMTP server on a blocking thread, for tests on a virtual
/// clock: a blocking task keeps tokio from advancing a paused clock by
/// itself, so time moves only when a test calls `advance`. It serves
/// `connections` connections one after the other, offers PIPELINING, and
/// reports every line it reads as `(connection, line)`. On the connection
/// numbered `hang` it never answers DATA; after a message on the one
/// numbered `close_after` it closes the connection.
struct Scripted {
    port: u16,
    lines: tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
    done: tokio::task::JoinHandle<()>,
}

fn scripted(connections: usize, hang: Option<usize>, close_after: Option<usize>) -> Scripted {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let done = tokio::task::spawn_blocking(move || {
        for n in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut input = BufReader::new(stream);
            let mut reply = |s: &str| {
                let _ = out.write_all(s.as_bytes());
            };
            reply("220 scripted\r\n");
            let mut line = String::new();
            while input.read_line(&mut line).unwrap_or(0) > 0 {
                let l = line.trim_end().to_string();
                line.clear();
                let _ = tx.send((n, l.clone()));
                let verb = l.split(' ').next().unwrap().to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" => reply("250-scripted\r\n250 PIPELINING\r\n"),
                    "DATA" if hang == Some(n) => {}
                    "DATA" => {
                        reply("354 go on\r\n");
                        while input.read_line(&mut line).unwrap_or(0) > 0 && line != ".\r\n" {
                            line.clear();
                        }
                        line.clear();
                        let _ = tx.send((n, "MESSAGE".to_string()));
                        reply("250 OK\r\n");
                        if close_after == Some(n) {
                            break;
                        }
                    }
                    "QUIT" => {
                        reply("221 bye\r\n");
                        break;
                    }
                    _ if hang == Some(n) => {}
                    _ => reply("250 OK\r\n"),
                }
            }
        }
    });
    Scripted { port, lines, done }
}

impl Scripted {
    fn mailer(&self) -> Mailer {
        self.mailer_with(4)
    }

    fn mailer_with(&self, connections: usize) -> Mailer {
        Mailer::with(
            &format!("smtp://127.0.0.1:{}", self.port),
            "a@b.io",
            std::path::Path::new("."),
            connections,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    /// Lines read until (and with) the first one equal to `until`.
    async fn until(&mut self, until: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let (n, l) = self.lines.recv().await.expect("the server is running");
            let done = l == until;
            seen.push(format!("{n} {}", l.split(' ').next().unwrap()));
            if done {
                return seen;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_tested_with_noop_before_it_is_used() {
    let mut s = scripted(1, None, None);
    let mailer = s.mailer();
    let ann = payload("ann@acme.example");
    let send = || mailer.send(&ann);
    send().await.unwrap();
    assert_eq!(
        s.until("MESSAGE").await,
        ["0 EHLO", "0 MAIL", "0 RCPT", "0 DATA", "0 MESSAGE"]
    );
    // Idle for less than the check's threshold: used as it is.
    tokio::time::advance(Duration::from_secs(4)).await;
    send().await.unwrap();
    assert_eq!(
        s.until("MESSAGE").await,
        ["0 MAIL", "0 RCPT", "0 DATA", "0 MESSAGE"]
    );
    // Idle for longer: a NOOP first.
    tokio::time::advance(Duration::from_secs(6)).await;
    send().await.unwrap();
    assert_eq!(
        s.until("MESSAGE").await,
        ["0 NOOP", "0 MAIL", "0 RCPT", "0 DATA", "0 MESSAGE"]
    );
    drop(mailer);
    s.done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_the_server_closed_is_replaced() {
    let mut s = scripted(2, None, Some(0));
    let mailer = s.mailer();
    let ann = payload("ann@acme.example");
    let send = || mailer.send(&ann);
    send().await.unwrap();
    s.until("MESSAGE").await;
    tokio::time::advance(Duration::from_secs(6)).await;
    send().await.unwrap();
    assert_eq!(
        s.until("MESSAGE").await,
        ["1 EHLO", "1 MAIL", "1 RCPT", "1 DATA", "1 MESSAGE"]
    );
    drop(mailer);
    s.done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_that_stops_answering_times_out_and_its_connection_is_dropped() {
    let mut s = scripted(2, Some(0), None);
    let mailer = s.mailer();
    let ann = payload("ann@acme.example");
    let (sent, seen) = tokio::join!(mailer.send(&ann), async {
        let seen = s.until("DATA").await;
        // Nothing answers MAIL, RCPT or DATA: the timeout decides.
        tokio::time::advance(Duration::from_secs(11)).await;
        seen
    });
    assert_eq!(seen, ["0 EHLO", "0 MAIL", "0 RCPT", "0 DATA"]);
    match sent {
        Err(SendError::Retryable(e)) => assert!(e.contains("timed out"), "{e}"),
        other => panic!("a timeout must be retryable: {other:?}"),
    }
    // A new connection, not the one in an unknown state.
    mailer.send(&payload("ann@acme.example")).await.unwrap();
    assert_eq!(
        s.until("MESSAGE").await,
        ["1 EHLO", "1 MAIL", "1 RCPT", "1 DATA", "1 MESSAGE"]
    );
    drop(mailer);
    s.done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_message_queued_behind_one_that_timed_out_goes_on_a_new_connection() {
    let mut s = scripted(2, Some(0), None);
    let mailer = s.mailer_with(1);
    let ann = payload("ann@acme.example");
    let bob = payload("bob@acme.example");
    let (stuck, queued, seen) = tokio::join!(mailer.send(&ann), mailer.send(&bob), async {
        let seen = s.until("DATA").await;
        tokio::time::advance(Duration::from_secs(11)).await;
        seen
    });
    // Only the first message's commands went out: the next one's go with
    // a message's data, which never came.
    assert_eq!(seen, ["0 EHLO", "0 MAIL", "0 RCPT", "0 DATA"]);
    match stuck {
        Err(SendError::Retryable(e)) => assert!(e.contains("timed out"), "{e}"),
        other => panic!("a timeout must be retryable: {other:?}"),
    }
    queued.expect("sent on a new connection, not failed with the stuck one");
    assert_eq!(
        s.until("MESSAGE").await,
        ["1 EHLO", "1 MAIL", "1 RCPT", "1 DATA", "1 MESSAGE"]
    );
    drop(mailer);
    s.done.await.unwrap();
}

#[tokio::test]
async fn a_relay_that_greets_with_a_5xx_is_retried_not_dead_lettered() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .write_all(b"554 5.7.1 no SMTP service here\r\n")
            .unwrap();
        // Whatever comes next (QUIT or nothing) is read until the close.
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    let mailer = plain_mailer(port);
    match mailer.send(&payload("ann@acme.example")).await {
        Err(SendError::Retryable(e)) => assert!(e.contains("554"), "{e}"),
        other => panic!("a relay refusing the connection must be retried: {other:?}"),
    }
    drop(mailer);
    server.join().unwrap();
}
