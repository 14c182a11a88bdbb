//! Email delivery: builds the message from an outbox payload (headers fixed
//! when the action was recorded) and hands it to a transport: `.eml` files
//! (the default) or SMTP (our client of `smtp.rs` to a plain relay,
//! lettre's connection wherever TLS or AUTH is needed).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::{SendError, smtp};

enum Transport {
    /// `.eml` files in a directory, each written whole under a hidden
    /// name and then renamed: whoever reads the directory never sees half
    /// a message.
    File(PathBuf),
    /// Implicit TLS (`smtps://`), through lettre's own pool, whose
    /// connections are not bounded by its size: the semaphore bounds them.
    Smtps(AsyncSmtpTransport<Tokio1Executor>, tokio::sync::Semaphore),
    /// Plain SMTP to a relay (`smtp://`), through our pool.
    Smtp(SmtpPool),
}

/// Pooled SMTP connections with `TCP_NODELAY` set. lettre 0.11.23's
/// transport leaves Nagle's algorithm on, and the last packet of every
/// message then waits for the server's delayed ACK: about 44 ms a message
/// on Linux, whatever the link. Connections are reused for many messages
/// and checked with NOOP when they sat idle.
///
/// A plain relay (no STARTTLS, no AUTH) gets our own client (`smtp.rs`,
/// pipelined when the server offers it); anything that needs TLS or AUTH
/// keeps lettre's connection. With `?tls=opportunistic` the first
/// connection finds out: a server that offers STARTTLS is asked again
/// through lettre, and so is every later connection.
///
/// Each connection is a lane: a task that sends the messages it is given
/// one after the other, and takes the next queued one before it writes a
/// message's data, so that the next message's commands go out with it
/// (`smtp::Connection::transact`). A message goes to the lane that went
/// idle last (so a trickle of mail keeps one connection busy rather than
/// every connection idle), to a new lane while there are fewer than
/// `connections`, or else to the queue.
struct SmtpPool {
    shared: std::sync::Arc<Shared>,
}

/// How to reach the relay.
struct Relay {
    host: String,
    port: u16,
    starttls: StartTls,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    /// The server offered STARTTLS under `?tls=opportunistic`.
    offers_tls: std::sync::atomic::AtomicBool,
}

struct Shared {
    relay: Relay,
    connections: usize,
    lanes: std::sync::Mutex<Lanes>,
}

#[derive(Default)]
struct Lanes {
    /// Messages no lane has taken yet, oldest first.
    queue: std::collections::VecDeque<Job>,
    /// Idle lanes, the one idle longest first.
    parked: Vec<oneshot::Sender<Job>>,
    /// Lanes running.
    open: usize,
    /// The pool is gone: lanes finish the queue, then close.
    closed: bool,
}

/// One message for a lane, and where its result goes.
struct Job {
    envelope: lettre::address::Envelope,
    email: Vec<u8>,
    done: oneshot::Sender<Result<(), SendError>>,
}

enum Conn {
    Plain(smtp::Connection),
    /// Boxed: lettre's connection is ten times the size of ours.
    Lettre(Box<AsyncSmtpConnection>),
}

impl Conn {
    async fn test_connected(&mut self) -> bool {
        match self {
            Conn::Plain(c) => c.test_connected().await,
            Conn::Lettre(c) => c.test_connected().await,
        }
    }

    fn has_broken(&self) -> bool {
        match self {
            Conn::Plain(c) => c.has_broken(),
            Conn::Lettre(c) => c.has_broken(),
        }
    }

    /// QUIT when the connection is in a state to say it (lettre's
    /// `abort` waits for the answer: bounded by `timeout`).
    async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            match self {
                Conn::Plain(c) => c.quit().await,
                Conn::Lettre(mut c) => c.abort().await,
            }
        })
        .await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    Never,
    Opportunistic,
    Required,
}

/// An idle connection older than this is tested before it is used.
const IDLE_CHECK: Duration = Duration::from_secs(5);

impl Relay {
    async fn connect(&self) -> Result<Conn, SendError> {
        use std::sync::atomic::Ordering::Relaxed;
        let plain = self.credentials.is_none()
            && match self.starttls {
                StartTls::Never => true,
                StartTls::Opportunistic => !self.offers_tls.load(Relaxed),
                StartTls::Required => false,
            };
        if plain {
            let conn = tokio::time::timeout(
                self.timeout,
                smtp::Connection::connect(&self.host, self.port, &self.hello.to_string()),
            )
            .await
            .map_err(|_| timed_out())??;
            if !(self.starttls == StartTls::Opportunistic && conn.extensions().starttls) {
                return Ok(Conn::Plain(conn));
            }
            self.offers_tls.store(true, Relaxed);
            Conn::Plain(conn).close(self.timeout).await;
        }
        self.connect_lettre()
            .await
            .map(|c| Conn::Lettre(Box::new(c)))
    }

    async fn connect_lettre(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::time::timeout(self.timeout, smtp::dial(&self.host, self.port))
            .await
            .map_err(|_| {
                SendError::Retryable(format!(
                    "smtp: connecting to {}:{} timed out",
                    self.host, self.port
                ))
            })??;
        let stream = Coalesced {
            tcp,
            out: Vec::new(),
            sent: 0,
        };
        let mut conn = tokio::time::timeout(
            self.timeout,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(connection_error)?;
        let offered = conn
            .server_info()
            .supports_feature(lettre::transport::smtp::extension::Extension::StartTls);
        match (self.starttls, offered) {
            (StartTls::Never, _) | (StartTls::Opportunistic, false) => {}
            (StartTls::Required, false) => {
                Conn::Lettre(Box::new(conn)).close(self.timeout).await;
                return Err(SendError::Retryable(format!(
                    "smtp: {}:{} does not offer STARTTLS, and the transport requires it",
                    self.host, self.port
                )));
            }
            (_, true) => {
                let params = lettre::transport::smtp::client::TlsParameters::new(self.host.clone())
                    .map_err(|e| SendError::Retryable(format!("smtp: TLS settings: {e}")))?;
                conn.starttls(params, &self.hello)
                    .await
                    .map_err(connection_error)?;
            }
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(connection_error)?;
        }
        Ok(conn)
    }

    /// A connection ready for a transaction: `held` if it is fresh, or
    /// answers NOOP after sitting idle, else a new one.
    async fn ready(&self, held: Option<(Conn, tokio::time::Instant)>) -> Result<Conn, SendError> {
        if let Some((mut conn, since)) = held {
            if since.elapsed() < IDLE_CHECK {
                return Ok(conn);
            }
            // A NOOP that does not come back in time is a dead connection.
            let alive = tokio::time::timeout(self.timeout, conn.test_connected()).await;
            if alive == Ok(true) {
                return Ok(conn);
            }
            if alive.is_ok() {
                conn.close(self.timeout).await;
            }
        }
        self.connect().await
    }
}

/// What a lane does next.
enum Next {
    Job(Job),
    Park(oneshot::Receiver<Job>),
    Close,
}

impl Shared {
    /// Gives `job` to the lane idle for the shortest time, to a new lane,
    /// or to the queue.
    fn submit(self: &std::sync::Arc<Self>, mut job: Job) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(lane) = lanes.parked.pop() {
            match lane.send(job) {
                Ok(()) => return,
                // A lane that ended (its runtime is going away).
                Err(back) => job = back,
            }
        }
        if lanes.open < self.connections {
            lanes.open += 1;
            drop(lanes);
            tokio::spawn(lane(self.clone(), job));
        } else {
            lanes.queue.push_back(job);
        }
    }

    /// The oldest queued message, if any.
    fn queued(&self) -> Option<Job> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.queue.pop_front()
    }

    fn next(&self) -> Next {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = lanes.queue.pop_front() {
            return Next::Job(job);
        }
        if lanes.closed {
            lanes.open -= 1;
            return Next::Close;
        }
        let (tx, rx) = oneshot::channel();
        lanes.parked.push(tx);
        Next::Park(rx)
    }
}

/// One connection's task: sends the messages it is given or finds queued,
/// one after the other, each bounded by the relay's timeout.
async fn lane(shared: std::sync::Arc<Shared>, first: Job) {
    let relay = &shared.relay;
    // The connection and when it was last used.
    let mut held: Option<(Conn, tokio::time::Instant)> = None;
    // The message to send next, with its envelope as said on `held` when
    // its commands are already out there.
    let mut carried: Option<(Job, Option<smtp::Prepared>)> = Some((first, None));
    loop {
        let (job, announced) = match carried.take() {
            Some(c) => c,
            None => match shared.next() {
                Next::Job(job) => (job, None),
                Next::Park(rx) => match rx.await {
                    Ok(job) => (job, None),
                    // The pool is gone.
                    Err(_) => break,
                },
                Next::Close => break,
            },
        };
        let conn = match announced {
            Some(_) => held.take().expect("announced on the held connection").0,
            None => match relay.ready(held.take()).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = job.done.send(Err(e));
                    continue;
                }
            },
        };
        let mut plain = match conn {
            Conn::Plain(c) => c,
            Conn::Lettre(mut c) => {
                let sent =
                    tokio::time::timeout(relay.timeout, c.send(&job.envelope, &job.email)).await;
                let result = match sent {
                    Ok(r) => r.map(|_| ()).map_err(smtp_error),
                    // In the middle of an exchange: nothing more can be said on it.
                    Err(_) => {
                        let _ = job.done.send(Err(timed_out()));
                        continue;
                    }
                };
                let _ = job.done.send(result);
                let conn = Conn::Lettre(c);
                if conn.has_broken() {
                    conn.close(relay.timeout).await;
                } else {
                    held = Some((conn, tokio::time::Instant::now()));
                }
                continue;
            }
        };
        let was_announced = announced.is_some();
        let prepared = match announced {
            Some(p) => p,
            None => match plain.prepare(&job.envelope, &job.email) {
                Ok(p) => p,
                Err(e) => {
                    let _ = job.done.send(Err(e));
                    held = Some((Conn::Plain(plain), tokio::time::Instant::now()));
                    continue;
                }
            },
        };
        // The next message, its commands to go out with this one's data.
        let mut next = None;
        if plain.extensions().pipelining {
            while let Some(n) = shared.queued() {
                match plain.prepare(&n.envelope, &n.email) {
                    Ok(p) => {
                        next = Some((n, p));
                        break;
                    }
                    Err(e) => {
                        let _ = n.done.send(Err(e));
                    }
                }
            }
        }
        let sent = tokio::time::timeout(
            relay.timeout,
            plain.transact(
                &prepared,
                &job.email,
                was_announced,
                next.as_ref().map(|(_, p)| p),
            ),
        )
        .await;
        // A broken or timed-out connection is dropped: a next message
        // announced on it was never sent, and goes on a new connection.
        let (result, usable, next_announced) = match sent {
            Ok((result, a)) => {
                let usable = !plain.has_broken();
                (result, usable, usable && a)
            }
            Err(_) => (Err(timed_out()), false, false),
        };
        let _ = job.done.send(result);
        if usable {
            held = Some((Conn::Plain(plain), tokio::time::Instant::now()));
        }
        carried = next.map(|(n, p)| (n, next_announced.then_some(p)));
    }
    if let Some((conn, _)) = held {
        conn.close(relay.timeout).await;
    }
}

impl SmtpPool {
    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let (done, result) = oneshot::channel();
        self.shared.submit(Job {
            envelope: message.envelope().clone(),
            email: message.formatted(),
            done,
        });
        result.await.unwrap_or_else(|_| {
            Err(SendError::Retryable(
                "smtp: the connection's task ended before the message was sent".to_string(),
            ))
        })
    }
}

impl Drop for SmtpPool {
    /// Idle lanes close their connections; busy ones after the queue.
    fn drop(&mut self) {
        let mut lanes = self.shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.closed = true;
        lanes.parked.clear();
    }
}

/// A TCP stream whose writes wait until the next read (or the end of
/// the connection). Every SMTP step writes and then reads the answer, so
/// nothing waits on data held here; but lettre writes a message's body
/// and its final dot separately, and with `TCP_NODELAY` each write would
/// be a packet and a system call of its own.
#[derive(Debug)]
struct Coalesced {
    tcp: tokio::net::TcpStream,
    out: Vec<u8>,
    /// How much of `out` is written.
    sent: usize,
}

/// Held writes beyond this go out at once (a large message).
const HOLD: usize = 64 * 1024;

impl Coalesced {
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= HOLD {
            ready!(this.poll_send(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Held until the next read: see the type.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Coalesced {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.peer_addr()
    }
}

fn timed_out() -> SendError {
    SendError::Retryable("smtp: the exchange timed out".to_string())
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
    /// (plain, for a local relay) or `smtps://...` (implicit TLS). At most
    /// `connections` SMTP connections are open at once; one exchange may
    /// take `timeout`.
    pub fn new(transport: &str, from: &str, base: &Path) -> Result<Mailer, String> {
        Mailer::with(transport, from, base, 16, Duration::from_secs(30))
    }

    pub fn with(
        transport: &str,
        from: &str,
        base: &Path,
        connections: usize,
        timeout: Duration,
    ) -> Result<Mailer, String> {
        let from: Mailbox = one_line(from)
            .parse()
            .map_err(|e| format!("invalid email.from `{from}`: {e}"))?;
        let transport = if let Some(dir) = transport.strip_prefix("file:") {
            let dir = crate::config::resolve(base, dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            remove_stale_temporaries(&dir);
            Transport::File(dir)
        } else {
            let (tls, rest) = match transport.split_once("://") {
                Some(("smtp", rest)) => (false, rest),
                Some(("smtps", rest)) => (true, rest),
                _ => return Err(format!("invalid email.transport `{transport}`")),
            };
            // `?tls=required` (STARTTLS or fail) or `?tls=opportunistic`
            // (STARTTLS when offered), as lettre's own URLs say it.
            let (rest, starttls) = match rest.split_once('?') {
                None => (rest, StartTls::Never),
                Some((r, "tls=required")) => (r, StartTls::Required),
                Some((r, "tls=opportunistic")) => (r, StartTls::Opportunistic),
                Some((_, q)) => {
                    return Err(format!(
                        "invalid email.transport `{transport}`: unknown option `{q}` (expected `tls=required` or `tls=opportunistic`)"
                    ));
                }
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
            let credentials = auth
                .and_then(|a| a.split_once(':'))
                .map(|(user, pass)| Credentials::new(user.to_string(), pass.to_string()));
            if tls {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                    .map_err(|e| e.to_string())?
                    .port(port)
                    .timeout(Some(timeout))
                    .pool_config(
                        lettre::transport::smtp::PoolConfig::new().max_size(connections as u32),
                    );
                if let Some(c) = credentials {
                    builder = builder.credentials(c);
                }
                Transport::Smtps(
                    builder.build(),
                    tokio::sync::Semaphore::new(connections.max(1)),
                )
            } else {
                Transport::Smtp(SmtpPool {
                    shared: std::sync::Arc::new(Shared {
                        relay: Relay {
                            host: host.to_string(),
                            port,
                            starttls,
                            credentials,
                            timeout,
                            hello: ClientId::default(),
                            offers_tls: std::sync::atomic::AtomicBool::new(false),
                        },
                        connections: connections.max(1),
                        lanes: std::sync::Mutex::new(Lanes::default()),
                    }),
                })
            }
        };
        Ok(Mailer { transport, from })
    }

    /// Where `.eml` files go, for the file transport.
    pub fn directory(&self) -> Option<&Path> {
        match &self.transport {
            Transport::File(dir) => Some(dir),
            Transport::Smtp(_) | Transport::Smtps(..) => None,
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
        self.deliver(self.message(payload)?).await
    }

    /// Sends a message built by `message` (a test can then compare what
    /// arrived with what was built, random MIME boundary included).
    pub async fn deliver(&self, message: Message) -> Result<(), SendError> {
        match &self.transport {
            Transport::File(dir) => write_eml(dir, &message).await,
            Transport::Smtp(pool) => pool.send(&message).await,
            Transport::Smtps(t, slots) => {
                let _slot = slots.acquire().await.expect("never closed");
                t.send(message).await.map(|_| ()).map_err(smtp_error)
            }
        }
    }
}

/// Writes `{uuid}.eml` (the name lettre's file transport gives) whole:
/// first as `.{uuid}.eml.tmp`, then renamed, so a reader of the directory
/// never finds a message cut short, even when we crash mid-write.
async fn write_eml(dir: &Path, message: &Message) -> Result<(), SendError> {
    let id = uuid::Uuid::new_v4();
    let (tmp, path) = (
        dir.join(format!(".{id}.eml.tmp")),
        dir.join(format!("{id}.eml")),
    );
    let failed =
        |e: std::io::Error| SendError::Retryable(format!("writing {}: {e}", path.display()));
    if let Err(e) = tokio::fs::write(&tmp, message.formatted()).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(failed(e));
    }
    tokio::fs::rename(&tmp, &path).await.map_err(failed)
}

/// Temporaries of `write_eml` that a crash left behind (older than a
/// minute, so that another instance's write under way is left alone).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The name first: only our temporaries are looked at further.
        if !(name.starts_with('.') && name.ends_with(".eml.tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// 5xx is final; 4xx and connection trouble are worth a retry.
/// A failure while connecting (greeting, STARTTLS, AUTH): about the
/// relay or our settings for it, not the message, so retried whatever its
/// code, like postfix (`smtp_skip_5xx_greeting`): fixing the relay or the
/// credentials within `give_up_after` loses nothing.
fn connection_error(e: lettre::transport::smtp::Error) -> SendError {
    SendError::Retryable(format!("smtp: {e}"))
}

fn smtp_error(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Fatal(format!("smtp: {e}"))
    } else {
        SendError::Retryable(format!("smtp: {e}"))
    }
}
