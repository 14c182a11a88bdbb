//! Email over SMTP to a real server (aiosmtpd, `tests/servers/smtp_server.py`,
//! installed by `scripts/test`): delivered with its headers, a 4xx is
//! retryable, a 5xx is fatal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use touchpilot::deliver::SendError;
use touchpilot::deliver::email::Mailer;

use crate::support::repo;

pub struct Server {
    child: Child,
    pub port: u16,
    pub maildir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = tempfile::tempdir().unwrap();
    let mut child = Command::new("python3")
        .arg(repo().join("tests/servers/smtp_server.py"))
        .arg(port.to_string())
        .arg(maildir.path())
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
    let s = server();
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{}", s.port),
        "Acme Success <success@acme.example>",
        std::path::Path::new("."),
    )
    .unwrap();

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

#[tokio::test]
async fn a_server_that_is_not_there_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "a@b.io",
        std::path::Path::new("."),
    )
    .unwrap();
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
