//! Our SMTP client, for plain connections to a relay (`smtp://` without
//! TLS or AUTH). With PIPELINING (RFC 2920) a message costs two round
//! trips instead of lettre's four: MAIL, RCPT and DATA go out in one write
//! and their replies are read together, then the body and its final dot
//! in another. When the next message is already waiting, its MAIL, RCPT
//! and DATA go out with this one's body: one round trip a message.
//! Without PIPELINING it goes in lockstep.
//!
//! It never does TLS or AUTH, and never sends a body unless every command
//! of the transaction was accepted. After a failure the connection is
//! reset (RSET) and reusable, or marked broken and closed; it is never
//! left in a state the next message would have to guess. Messages are
//! built by lettre (`Message::formatted`), so they are byte for byte the
//! ones lettre's connection would send; `email.rs` keeps lettre's
//! connection for TLS and AUTH.

use std::fmt;

use lettre::address::Envelope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SendError;

/// A reply line longer than this, or a reply longer than `MAX_REPLY`, is
/// refused (lettre's limits, which are Postfix's).
const MAX_LINE: usize = 1000;
const MAX_REPLY: usize = 100_000;

/// What the server offered in its EHLO reply (nothing after HELO).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
}

impl Extensions {
    fn parse(ehlo: &Reply) -> Extensions {
        let mut x = Extensions::default();
        // The first line greets; each further line names one extension.
        for line in ehlo.lines.iter().skip(1) {
            let keyword = line.split_whitespace().next().unwrap_or("");
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => x.pipelining = true,
                "8BITMIME" => x.eightbitmime = true,
                "SMTPUTF8" => x.smtputf8 = true,
                "STARTTLS" => x.starttls = true,
                _ => {}
            }
        }
        x
    }
}

/// One server reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for line in &self.lines {
            if !line.is_empty() {
                write!(f, " {line}")?;
            }
        }
        Ok(())
    }
}

/// A refusal of part of a transaction, classified as the rest of the
/// daemon expects: 5xx is final, anything else (4xx, a code that makes no
/// sense here) is worth a retry.
fn refused(what: &str, reply: &Reply) -> SendError {
    let m = refusal_text(what, reply);
    if (500..600).contains(&reply.code) {
        SendError::Fatal(m)
    } else {
        SendError::Retryable(m)
    }
}

/// A refusal before any transaction (greeting, EHLO, HELO): about the
/// relay, not the message, so retried whatever its code (a relay that
/// greets with 554 is deferred, as postfix's `smtp_skip_5xx_greeting`
/// does), never the end of the message.
fn unavailable(what: &str, reply: &Reply) -> SendError {
    SendError::Retryable(refusal_text(what, reply))
}

fn refusal_text(what: &str, reply: &Reply) -> String {
    if reply.code < 400 {
        format!("smtp: unexpected reply to {what}: {reply}")
    } else {
        format!("smtp: the server refused {what}: {reply}")
    }
}

/// A TCP connection to the relay with `TCP_NODELAY` set (best effort:
/// without it messages are slower, not wrong), for our connections and
/// lettre's alike. The caller bounds it with a timeout.
pub async fn dial(host: &str, port: u16) -> Result<TcpStream, SendError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| SendError::Retryable(format!("smtp: cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A message's envelope as one connection says it (`Connection::prepare`).
#[derive(Debug, Clone)]
pub struct Prepared {
    from: String,
    /// `SMTPUTF8`, `BODY=8BITMIME`, each with its leading space.
    params: String,
    to: Vec<String>,
}

/// One plain SMTP connection, greeted and ready for a transaction.
#[derive(Debug)]
pub struct Connection {
    tcp: TcpStream,
    /// Bytes read and not yet parsed: `input[at..]`.
    input: Vec<u8>,
    at: usize,
    /// Reused for every write.
    output: Vec<u8>,
    extensions: Extensions,
    /// The connection failed in a way that leaves its state unknown (an IO
    /// error, a reply that does not parse, a timeout): it must be closed.
    broken: bool,
}

impl Connection {
    /// Connects (`TCP_NODELAY`), reads the greeting and says EHLO, or HELO
    /// if the server refuses EHLO. The caller bounds it with a timeout.
    pub async fn connect(host: &str, port: u16, hello: &str) -> Result<Connection, SendError> {
        let mut conn = Connection {
            tcp: dial(host, port).await?,
            input: Vec::with_capacity(4096),
            at: 0,
            output: Vec::with_capacity(4096),
            extensions: Extensions::default(),
            broken: false,
        };
        let greeting = conn.reply().await?;
        if !greeting.positive() {
            return Err(unavailable("the connection", &greeting));
        }
        conn.command(&format!("EHLO {hello}\r\n")).await?;
        let ehlo = conn.reply().await?;
        if ehlo.positive() {
            conn.extensions = Extensions::parse(&ehlo);
        } else if (500..600).contains(&ehlo.code) {
            // RFC 5321 4.1.4: a server that does not know EHLO gets HELO.
            conn.command(&format!("HELO {hello}\r\n")).await?;
            let helo = conn.reply().await?;
            if !helo.positive() {
                return Err(unavailable("HELO", &helo));
            }
        } else {
            return Err(unavailable("EHLO", &ehlo));
        }
        Ok(conn)
    }

    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    /// Whether the connection must be closed rather than reused.
    pub fn has_broken(&self) -> bool {
        self.broken
    }

    /// NOOP: whether an idle connection still answers.
    pub async fn test_connected(&mut self) -> bool {
        if self.command("NOOP\r\n").await.is_err() {
            return false;
        }
        matches!(self.reply().await, Ok(r) if r.positive())
    }

    /// Says QUIT without waiting for the answer, then drops the connection.
    /// A broken connection is only dropped: after a DATA the server should
    /// not have accepted, QUIT would be a line of the message.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = self.tcp.write_all(b"QUIT\r\n").await;
        }
    }

    /// Sends one message: `email` is lettre's formatted message, sent with
    /// dot-stuffing and the final `\r\n.\r\n` as lettre sends it. On a
    /// refusal the transaction is reset and the connection stays usable;
    /// on anything else it is marked broken.
    pub async fn send(&mut self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        let prepared = self.prepare(envelope, email)?;
        self.transact(&prepared, email, false, None).await.0
    }

    /// The envelope as this connection will say it: the same MAIL
    /// parameters lettre's connection would use, and the same refusals
    /// when the server cannot take them (nothing is sent).
    pub fn prepare(&self, envelope: &Envelope, email: &[u8]) -> Result<Prepared, SendError> {
        let mut params = String::new();
        let non_ascii = envelope
            .from()
            .is_some_and(|a| !AsRef::<str>::as_ref(a).is_ascii())
            || envelope
                .to()
                .iter()
                .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !self.extensions.smtputf8 {
                return Err(SendError::Retryable(
                    "smtp: the envelope has non-ascii addresses, and the server does not offer SMTPUTF8"
                        .to_string(),
                ));
            }
            params.push_str(" SMTPUTF8");
        }
        if !email.is_ascii() {
            if !self.extensions.eightbitmime {
                return Err(SendError::Retryable(
                    "smtp: the message is not ascii, and the server does not offer 8BITMIME"
                        .to_string(),
                ));
            }
            params.push_str(" BODY=8BITMIME");
        }
        Ok(Prepared {
            from: envelope.from().map_or("", AsRef::<str>::as_ref).to_string(),
            params,
            to: envelope.to().iter().map(ToString::to_string).collect(),
        })
    }

    /// Sends one message (`prepare`d on this connection). `announced`:
    /// its commands already went out, written after the previous
    /// message's data. With `next`, under PIPELINING, the next message's
    /// MAIL, RCPT and DATA go out in the same write as this message's
    /// data (RFC 2920 3.1: message content may start a group), so that a
    /// message costs one round trip instead of two; the second value says
    /// whether they did, and then the next call must say `announced`.
    ///
    /// A refusal of this message leaves the connection usable (reset, or,
    /// when the next message's commands are already out, at the start of
    /// its transaction, where the end of a message's data leaves a server
    /// whatever its answer); anything else marks it broken, and a next
    /// message announced on it was not sent.
    pub async fn transact(
        &mut self,
        msg: &Prepared,
        email: &[u8],
        announced: bool,
        next: Option<&Prepared>,
    ) -> (Result<(), SendError>, bool) {
        let began = if self.extensions.pipelining {
            self.pipelined(msg, announced).await
        } else {
            self.lockstep(msg).await
        };
        if let Err(e) = began {
            if !self.broken {
                self.reset().await;
            }
            return (Err(e), false);
        }
        self.output.clear();
        stuff(email, &mut self.output);
        self.output.extend_from_slice(b"\r\n.\r\n");
        let next = next.filter(|_| self.extensions.pipelining);
        if let Some(n) = next {
            self.push_commands(n);
        }
        let announced_next = next.is_some();
        if let Err(e) = self.flush().await {
            return (Err(e), announced_next);
        }
        // From here on the server may have the message: a connection lost
        // now leaves it unknown whether it was delivered (retried, with the
        // same Message-ID).
        let done = match self.reply().await {
            Ok(r) => r,
            Err(e) => return (Err(e), announced_next),
        };
        if done.positive() {
            return (Ok(()), announced_next);
        }
        let e = self.refusal("the message", &done);
        if !self.broken && !announced_next {
            self.reset().await;
        }
        (Err(e), announced_next)
    }

    fn push_commands(&mut self, msg: &Prepared) {
        self.push(format_args!("MAIL FROM:<{}>{}\r\n", msg.from, msg.params));
        for to in &msg.to {
            self.push(format_args!("RCPT TO:<{to}>\r\n"));
        }
        self.output.extend_from_slice(b"DATA\r\n");
    }

    /// MAIL, every RCPT and DATA in one write (unless `announced`), then
    /// their replies. Ok means DATA was answered 354 after every other
    /// command was accepted.
    async fn pipelined(&mut self, msg: &Prepared, announced: bool) -> Result<(), SendError> {
        if !announced {
            self.output.clear();
            self.push_commands(msg);
            self.flush().await?;
        }
        // Every reply is read, failed or not, so that none is left behind
        // to be taken for the answer to a later command.
        let mut first_refusal = None;
        let mail = self.reply().await?;
        if !mail.positive() {
            first_refusal = Some(self.refusal(&format!("MAIL FROM:<{}>", msg.from), &mail));
        }
        for to in &msg.to {
            let rcpt = self.reply().await?;
            if !rcpt.positive() {
                let e = self.refusal(&format!("RCPT TO:<{to}>"), &rcpt);
                first_refusal.get_or_insert(e);
            }
        }
        let data = self.reply().await?;
        match (first_refusal, data.code) {
            (None, 354) => Ok(()),
            (None, _) => Err(self.refusal("DATA", &data)),
            (Some(e), 400..=599) => Err(e),
            (Some(e), _) => {
                // DATA accepted (or answered nonsense) after a refusal: the
                // server would take whatever comes next as the body of a
                // message it should not have accepted. Close instead, so
                // that nothing is delivered.
                self.broken = true;
                Err(e)
            }
        }
    }

    /// MAIL, each RCPT and DATA, each waiting for its reply.
    async fn lockstep(&mut self, msg: &Prepared) -> Result<(), SendError> {
        self.command(&format!("MAIL FROM:<{}>{}\r\n", msg.from, msg.params))
            .await?;
        let mail = self.reply().await?;
        if !mail.positive() {
            return Err(self.refusal(&format!("MAIL FROM:<{}>", msg.from), &mail));
        }
        for to in &msg.to {
            self.command(&format!("RCPT TO:<{to}>\r\n")).await?;
            let rcpt = self.reply().await?;
            if !rcpt.positive() {
                return Err(self.refusal(&format!("RCPT TO:<{to}>"), &rcpt));
            }
        }
        self.command("DATA\r\n").await?;
        let data = self.reply().await?;
        if data.code == 354 {
            Ok(())
        } else {
            Err(self.refusal("DATA", &data))
        }
    }

    /// A command not accepted: refused (4xx, 5xx: the transaction can be
    /// reset), or answered with a code that has no place there, after
    /// which nobody knows what the server expects: the connection is closed.
    fn refusal(&mut self, what: &str, reply: &Reply) -> SendError {
        if !(400..600).contains(&reply.code) {
            self.broken = true;
        }
        refused(what, reply)
    }

    /// RSET after a refusal; a connection that does not take it is closed.
    async fn reset(&mut self) {
        if self.command("RSET\r\n").await.is_err() {
            return;
        }
        match self.reply().await {
            Ok(r) if r.positive() => {}
            _ => self.broken = true,
        }
    }

    fn push(&mut self, args: fmt::Arguments<'_>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = self.output.write_fmt(args);
    }

    async fn command(&mut self, line: &str) -> Result<(), SendError> {
        self.output.clear();
        self.output.extend_from_slice(line.as_bytes());
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), SendError> {
        if let Err(e) = self.tcp.write_all(&self.output).await {
            self.broken = true;
            return Err(SendError::Retryable(format!(
                "smtp: writing to the server: {e}"
            )));
        }
        Ok(())
    }

    /// Reads one reply, all its lines.
    async fn reply(&mut self) -> Result<Reply, SendError> {
        let mut code = None;
        let mut lines = Vec::new();
        let mut size = 0;
        loop {
            let line = self.line().await?;
            size += line.len();
            let parsed = parse_line(&line);
            let Some((c, last, text)) = parsed.filter(|(c, ..)| code.is_none_or(|k| k == *c))
            else {
                self.broken = true;
                return Err(SendError::Retryable(format!(
                    "smtp: a reply that does not parse: `{}`",
                    line.escape_debug()
                )));
            };
            if size > MAX_REPLY {
                self.broken = true;
                return Err(SendError::Retryable(
                    "smtp: the reply is too long".to_string(),
                ));
            }
            code = Some(c);
            lines.push(text.to_string());
            if last {
                return Ok(Reply { code: c, lines });
            }
        }
    }

    /// One line of input, without its line end.
    async fn line(&mut self) -> Result<String, SendError> {
        loop {
            if let Some(i) = self.input[self.at..].iter().position(|&b| b == b'\n') {
                let raw = &self.input[self.at..self.at + i];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.at += i + 1;
                if self.at == self.input.len() {
                    self.input.clear();
                    self.at = 0;
                }
                return Ok(line);
            }
            if self.input.len() - self.at > MAX_LINE {
                self.broken = true;
                return Err(SendError::Retryable(
                    "smtp: a reply line is too long".to_string(),
                ));
            }
            if self.at > 0 {
                self.input.drain(..self.at);
                self.at = 0;
            }
            let n = match self.tcp.read_buf(&mut self.input).await {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
                    return Err(SendError::Retryable(format!(
                        "smtp: reading from the server: {e}"
                    )));
                }
            };
            if n == 0 {
                self.broken = true;
                return Err(SendError::Retryable(
                    "smtp: the server closed the connection".to_string(),
                ));
            }
        }
    }
}

/// `250-text` (more follows), `250 text` or `250` (last line).
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    match b.get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Dot-stuffing (RFC 5321 4.5.2): a line that starts with `.` gets one
/// more. A line starts after every LF, not only after CRLF as in lettre's
/// codec: the same bytes for lettre's messages (CRLF throughout), and a
/// bare LF followed by a dot can never end the data early at a lenient
/// server.
fn stuff(email: &[u8], out: &mut Vec<u8>) {
    out.reserve(email.len() + 64);
    let mut line_start = true;
    for &b in email {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_a_leading_dot_on_every_line() {
        let mut out = Vec::new();
        stuff(b".a\r\nb.\r\n..c\r\n.\r\nd\n.e", &mut out);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n..\r\nd\n..e");
    }

    #[test]
    fn reply_lines_parse_or_are_named() {
        assert_eq!(
            parse_line("250-PIPELINING"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(parse_line("250 OK"), Some((250, true, "OK")));
        assert_eq!(parse_line("354"), Some((354, true, "")));
        assert_eq!(parse_line("hello"), None);
        assert_eq!(parse_line("2500 x"), None);
        assert_eq!(parse_line("650 x"), None);
    }

    #[test]
    fn extensions_come_from_the_lines_after_the_greeting() {
        let r = Reply {
            code: 250,
            lines: [
                "relay.example",
                "PIPELINING",
                "8bitmime",
                "AUTH PLAIN",
                "SIZE 10",
            ]
            .map(String::from)
            .to_vec(),
        };
        let x = Extensions::parse(&r);
        assert!(x.pipelining && x.eightbitmime && !x.starttls && !x.smtputf8);
    }
}
