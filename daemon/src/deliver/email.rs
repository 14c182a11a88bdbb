//! Email delivery: builds the message from an outbox payload (headers fixed
//! when the action was recorded) and hands it to a transport: `.eml` files
//! (the default) or SMTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use super::SendError;

enum Transport {
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Sends emails through the configured transport.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

/// Header values come from data: a CR or LF would start a new header.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Mailer {
    /// `transport`: `file:DIR` (relative to `base`), `smtp://[user:pass@]host:port`
    /// (plain, for a local relay) or `smtps://...` (implicit TLS).
    pub fn new(transport: &str, from: &str, base: &Path) -> Result<Mailer, String> {
        let from: Mailbox = one_line(from)
            .parse()
            .map_err(|e| format!("invalid email.from `{from}`: {e}"))?;
        let transport = if let Some(dir) = transport.strip_prefix("file:") {
            let dir = crate::config::resolve(base, dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Transport::File(AsyncFileTransport::new(&dir), dir)
        } else {
            let (tls, rest) = match transport.split_once("://") {
                Some(("smtp", rest)) => (false, rest),
                Some(("smtps", rest)) => (true, rest),
                _ => return Err(format!("invalid email.transport `{transport}`")),
            };
            let (auth, hostport) = match rest.rsplit_once('@') {
                Some((auth, hp)) => (Some(auth), hp),
                None => (None, rest),
            };
            let (host, port) = hostport
                .trim_end_matches('/')
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    format!("invalid email.transport `{transport}`: expected HOST:PORT")
                })?;
            let mut builder = if tls {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
            } else {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            };
            builder = builder.port(port).timeout(Some(Duration::from_secs(30)));
            if let Some((user, pass)) = auth.and_then(|a| a.split_once(':')) {
                builder = builder.credentials(Credentials::new(user.to_string(), pass.to_string()));
            }
            Transport::Smtp(builder.build())
        };
        Ok(Mailer { transport, from })
    }

    /// Where `.eml` files go, for the file transport.
    pub fn directory(&self) -> Option<&Path> {
        match &self.transport {
            Transport::File(_, dir) => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// The message an outbox payload describes. A payload that cannot make
    /// a message (a malformed address) is a fatal error: retrying cannot fix it.
    pub fn message(&self, payload: &Value) -> Result<Message, SendError> {
        let fatal = |m: String| SendError::Fatal(m);
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let content = payload
            .get("content")
            .ok_or_else(|| fatal("payload has no content".into()))?;
        let to: Mailbox = s(payload, "to")
            .ok_or_else(|| fatal("payload has no recipient".into()))?
            .parse()
            .map_err(|e| fatal(format!("invalid recipient: {e}")))?;
        let from = match s(content, "from") {
            Some(f) => one_line(&f)
                .parse()
                .map_err(|e| fatal(format!("invalid from: {e}")))?,
            None => self.from.clone(),
        };
        let mut b = Message::builder()
            .from(from)
            .to(to)
            .subject(one_line(&s(content, "subject").unwrap_or_default()))
            .message_id(s(payload, "message_id"));
        if let Some(r) = s(content, "reply_to") {
            b = b.reply_to(
                one_line(&r)
                    .parse()
                    .map_err(|e| fatal(format!("invalid reply_to: {e}")))?,
            );
        }
        if let Some(url) = s(payload, "unsubscribe_url") {
            // RFC 2369 and RFC 8058 one-click unsubscribe.
            b = b
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{}>", one_line(&url)),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
        }
        let text = s(content, "text").unwrap_or_default();
        let message = match s(content, "html") {
            Some(html) => b.multipart(MultiPart::alternative_plain_html(text, html)),
            None => b.body(text),
        };
        message.map_err(|e| fatal(format!("cannot build message: {e}")))
    }

    pub async fn send(&self, payload: &Value) -> Result<(), SendError> {
        let message = self.message(payload)?;
        match &self.transport {
            Transport::File(t, _) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Retryable(format!("writing .eml: {e}"))),
            Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                // 5xx is final; 4xx and connection trouble are worth a retry.
                if e.is_permanent() {
                    SendError::Fatal(format!("smtp: {e}"))
                } else {
                    SendError::Retryable(format!("smtp: {e}"))
                }
            }),
        }
    }
}
