//! The host's side of the callback table: HTTP through one shared client
//! (the host's timeouts and TLS, no redirects followed), logs and
//! metrics. Each callback catches panics: an unwind must never cross the
//! C boundary into the plugin.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use touchpilot_plugin::{
    ABI_MAJOR, ABI_MINOR, Buffer, Error, HostTable, HttpRequest, HttpResponse, Reply, Slice,
};

/// One plugin's host context: what its callbacks need. Leaked when a
/// plugin is loaded (plugins are never unloaded), so `'static`.
pub struct HostCtx {
    pub name: String,
    timeout: Duration,
    client: reqwest::Client,
    table: OnceLock<Table>,
    /// Counters the plugin reported, and the host's own (`http_requests`).
    pub metrics: Mutex<BTreeMap<String, f64>>,
}

struct Table(HostTable);
// SAFETY: the table is immutable once built and its `ctx` points to a
// `HostCtx`, which is `Sync`.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

/// The runtime that performs plugins' HTTP requests. Plugin calls run on
/// plain threads, outside any runtime, and block on this one's handle.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plugin-http")
            .enable_all()
            .build()
            .expect("the plugin HTTP runtime starts")
    })
}

impl HostCtx {
    pub fn new(name: &str, timeout: Duration) -> HostCtx {
        crate::tls::init();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("touchpilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS settings builds");
        HostCtx {
            name: name.into(),
            timeout,
            client,
            table: OnceLock::new(),
            metrics: Mutex::new(BTreeMap::new()),
        }
    }

    /// The callback table handed to the plugin.
    pub fn table(&'static self) -> &'static HostTable {
        &self
            .table
            .get_or_init(|| {
                Table(HostTable {
                    abi_major: ABI_MAJOR,
                    abi_minor: ABI_MINOR,
                    size: std::mem::size_of::<HostTable>(),
                    ctx: self as *const HostCtx as *const c_void,
                    http,
                    log,
                    metric,
                    free,
                })
            })
            .0
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0.0))
            .unwrap_or(0.0)
    }

    /// Every counter so far, by name.
    pub fn counters(&self) -> Vec<(String, f64)> {
        self.metrics
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    fn add(&self, name: &str, value: f64) {
        if let Ok(mut m) = self.metrics.lock() {
            *m.entry(name.to_string()).or_default() += value;
        }
    }

    fn request(&self, req: HttpRequest) -> Result<HttpResponse, Error> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| Error::fatal(format!("bad HTTP method `{}`", req.method)))?;
        let mut builder = self.client.request(method, &req.url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        self.add("http_requests", 1.0);
        let what = format!("{} {}", req.method, req.url);
        runtime().block_on(async {
            let resp = builder.send().await.map_err(|e| self.transport(&what, e))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.text().await.map_err(|e| self.transport(&what, e))?;
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        })
    }

    /// No response at all: retryable (the request may or may not have
    /// reached the vendor, which is why connector writes are idempotent).
    fn transport(&self, what: &str, e: reqwest::Error) -> Error {
        self.add("http_failures", 1.0);
        if e.is_timeout() {
            Error::retryable(format!("{what}: no answer within {:?}", self.timeout))
        } else if e.is_builder() {
            Error::fatal(format!("{what}: {e}"))
        } else {
            Error::retryable(format!("{what}: {e}"))
        }
    }
}

/// # Safety
/// `ctx` is the `HostCtx` of this table.
unsafe fn ctx<'a>(ctx: *const c_void) -> &'a HostCtx {
    // SAFETY: the table's `ctx` is always its own leaked `HostCtx`.
    unsafe { &*(ctx as *const HostCtx) }
}

unsafe extern "C" fn http(c: *const c_void, request: Slice) -> Buffer {
    let reply = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: plugins call back with the table's own context and a
        // request that outlives the call.
        let (c, bytes) = unsafe { (ctx(c), request.as_bytes()) };
        let req: HttpRequest = serde_json::from_slice(bytes)
            .map_err(|e| Error::fatal(format!("the plugin's HTTP request is not valid: {e}")))?;
        let resp = c.request(req)?;
        serde_json::to_value(resp).map_err(|e| Error::fatal(e.to_string()))
    }))
    .unwrap_or_else(|_| Err(Error::fatal("the host's HTTP callback panicked")));
    let bytes = serde_json::to_vec(&Reply::from(reply)).unwrap_or_default();
    Buffer::from_vec(bytes)
}

unsafe extern "C" fn log(c: *const c_void, level: u32, message: Slice) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `http`.
        let (c, bytes) = unsafe { (ctx(c), message.as_bytes()) };
        let message = String::from_utf8_lossy(bytes);
        let connector = c.name.as_str();
        match level {
            0 => tracing::error!(connector, %message, "plugin"),
            1 => tracing::warn!(connector, %message, "plugin"),
            2 => tracing::info!(connector, %message, "plugin"),
            _ => tracing::debug!(connector, %message, "plugin"),
        }
    }));
}

unsafe extern "C" fn metric(c: *const c_void, name: Slice, value: f64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `http`.
        let (c, bytes) = unsafe { (ctx(c), name.as_bytes()) };
        c.add(&String::from_utf8_lossy(bytes), value);
    }));
}

unsafe extern "C" fn free(buf: Buffer) {
    // SAFETY: plugins return the host's buffers to this function once.
    drop(unsafe { buf.into_vec() });
}
