//! The Touchpilot connector ABI, owned by this crate alone.
//!
//! A connector is a shared library exporting one symbol,
//! [`ENTRY_SYMBOL`], that returns a `#[repr(C)]` [`PluginTable`]: the ABI
//! major/minor and the table's size (checked by the host before anything
//! else is read), the plugin's name, version and capabilities, and two
//! calls that exchange JSON buffers (`open`, `call`) with the matching
//! `free`. The host hands the plugin a [`HostTable`] of callbacks (HTTP,
//! logging, metrics), so a plugin needs no async runtime, TLS stack or
//! retry logic of its own.
//!
//! Plugin authors do not touch the raw ABI: they implement [`Connector`]
//! and write `declare_connector!(MyConnector);`. The macro wraps every
//! export in `catch_unwind`: a panic in a plugin becomes an error the host
//! reports, never an abort of the daemon (each cdylib has its own std, so
//! an unwind must never cross the boundary).
//!
//! Compatibility rules: a new minor version may append fields to the end
//! of either table (hence the `size` fields) and add operations; anything
//! else is a new major version, which the host refuses by name.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod mapping;
pub mod sign;
pub mod wire;

pub use wire::{HttpRequest, HttpResponse};

/// The ABI major version: a host refuses any other.
pub const ABI_MAJOR: u32 = 1;
/// The ABI minor version: additions only.
pub const ABI_MINOR: u32 = 0;
/// The exported entry symbol (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"touchpilot_connector_v1\0";

/// Capability bits of [`PluginTable::capabilities`].
pub mod caps {
    /// `poll`: reads accounts and events incrementally with a cursor.
    pub const SOURCE: u64 = 1;
    /// `act`: performs actions (`create_task`, `create_ticket`, ...).
    pub const ACTIONS: u64 = 1 << 1;
    /// `webhook`: turns a vendor's signed inbound request into events.
    pub const WEBHOOK: u64 = 1 << 2;
}

/// Borrowed bytes: valid for the duration of the call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slice {
    pub ptr: *const u8,
    pub len: usize,
}

impl Slice {
    pub fn of(bytes: &[u8]) -> Slice {
        Slice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive the result
    /// (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr` points to `len` live bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Owned bytes allocated by one side and freed only by that side's `free`.
#[repr(C)]
pub struct Buffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl Buffer {
    /// Hands a `Vec` over the boundary; the same library's `free` takes it back.
    pub fn from_vec(v: Vec<u8>) -> Buffer {
        let mut v = std::mem::ManuallyDrop::new(v);
        Buffer {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// # Safety
    /// The buffer must come from [`Buffer::from_vec`] in this same library
    /// and not have been freed.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        // SAFETY: the parts come from a `Vec` leaked by `from_vec` here.
        unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) }
    }

    /// # Safety
    /// The buffer must be live (not yet freed).
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: a live buffer's parts describe `len` initialised bytes.
        unsafe {
            Slice {
                ptr: self.ptr,
                len: self.len,
            }
            .as_bytes()
        }
    }
}

/// What a plugin exports. Fields are only ever appended.
#[repr(C)]
pub struct PluginTable {
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<PluginTable>()` as the plugin was built.
    pub size: usize,
    /// UTF-8, static in the library.
    pub name: Slice,
    pub version: Slice,
    pub capabilities: u64,
    /// Creates an instance from its JSON configuration. Writes the instance
    /// to `out` and returns a [`Reply`] as JSON: `{"ok": ...}` or
    /// `{"error": ...}`.
    pub open: unsafe extern "C" fn(
        host: *const HostTable,
        config: Slice,
        out: *mut *mut c_void,
    ) -> Buffer,
    /// Runs operation `op` (`check`, `poll`, `act`, `webhook`) on an
    /// instance with a JSON input; returns a [`Reply`] as JSON.
    pub call: unsafe extern "C" fn(instance: *mut c_void, op: Slice, input: Slice) -> Buffer,
    /// Frees a buffer returned by `open` or `call`.
    pub free: unsafe extern "C" fn(Buffer),
}

// SAFETY: a table is immutable once exported and its slices point to
// statics of the library, which is never unloaded.
unsafe impl Sync for PluginTable {}
// SAFETY: as above.
unsafe impl Send for PluginTable {}

/// The host's callbacks. Valid for as long as the library is loaded (the
/// host never unloads one). Fields are only ever appended.
#[repr(C)]
pub struct HostTable {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub size: usize,
    pub ctx: *const c_void,
    /// Performs an HTTP request given as a JSON [`HttpRequest`]; returns a
    /// JSON [`Reply`] holding an [`HttpResponse`] (any status) or an error
    /// (no response: timeout, connection refused, TLS). Blocks the calling
    /// thread; the host owns timeouts, proxies, TLS and metrics.
    pub http: unsafe extern "C" fn(ctx: *const c_void, request: Slice) -> Buffer,
    /// Logs a line at `level` (0 error, 1 warn, 2 info, 3 debug).
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: Slice),
    /// Adds `value` to the counter `name` (labelled with the plugin's name).
    pub metric: unsafe extern "C" fn(ctx: *const c_void, name: Slice, value: f64),
    /// Frees a buffer returned by `http`.
    pub free: unsafe extern "C" fn(Buffer),
}

/// An error a plugin reports, classified for the outbox: retryable
/// failures are tried again later (`retry_after` seconds at the soonest,
/// from a vendor's `Retry-After`), fatal ones are dead-lettered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Error {
    pub fn fatal(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Every reply crossing the boundary: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(Value),
    Error(Error),
}

impl Reply {
    pub fn into_result(self) -> Result<Value, Error> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Error(e) => Err(e),
        }
    }
}

impl From<Result<Value, Error>> for Reply {
    fn from(r: Result<Value, Error>) -> Reply {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

/// Log levels of [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// The host, as a plugin sees it.
#[derive(Clone, Copy)]
pub struct Host {
    table: *const HostTable,
}

// SAFETY: the host table is immutable and its callbacks are thread-safe
// (the host calls plugins from its own threads and serves callbacks from any).
unsafe impl Send for Host {}
// SAFETY: as above; nothing in the table is mutated after creation.
unsafe impl Sync for Host {}

impl Host {
    /// # Safety
    /// `table` must point to a host table that outlives every use.
    pub unsafe fn from_raw(table: *const HostTable) -> Host {
        Host { table }
    }

    /// A host without a daemon: every HTTP request fails, logs and
    /// metrics go nowhere. For unit tests of a connector's pure logic.
    pub fn offline() -> Host {
        unsafe extern "C" fn http(_: *const c_void, _: Slice) -> Buffer {
            reply_buffer(Reply::Error(Error::fatal("offline host: no HTTP")))
        }
        unsafe extern "C" fn log(_: *const c_void, _: u32, _: Slice) {}
        unsafe extern "C" fn metric(_: *const c_void, _: Slice, _: f64) {}
        struct Offline(HostTable);
        // SAFETY: immutable, with a null context that is never read.
        unsafe impl Sync for Offline {}
        static OFFLINE: Offline = Offline(HostTable {
            abi_major: ABI_MAJOR,
            abi_minor: ABI_MINOR,
            size: std::mem::size_of::<HostTable>(),
            ctx: std::ptr::null(),
            http,
            log,
            metric,
            free: export_free,
        });
        Host { table: &OFFLINE.0 }
    }

    fn table(&self) -> &HostTable {
        // SAFETY: `from_raw`'s contract: the table outlives the instance.
        unsafe { &*self.table }
    }

    /// An HTTP request through the host. `Ok` for any status; `Err` when
    /// there was no response (a retryable error).
    pub fn http(&self, req: &HttpRequest) -> Result<HttpResponse, Error> {
        let t = self.table();
        let body = serde_json::to_vec(req).map_err(|e| Error::fatal(e.to_string()))?;
        // SAFETY: `ctx` and `http` come from the same live host table;
        // `body` outlives the call.
        let buf = unsafe { (t.http)(t.ctx, Slice::of(&body)) };
        // SAFETY: the host's buffer is live until we hand it to its `free`.
        let parsed = serde_json::from_slice::<Reply>(unsafe { buf.bytes() });
        // SAFETY: returned exactly once, to the side that allocated it.
        unsafe { (t.free)(buf) };
        let value = parsed
            .map_err(|e| Error::fatal(format!("host sent an unreadable HTTP reply: {e}")))?
            .into_result()?;
        serde_json::from_value(value)
            .map_err(|e| Error::fatal(format!("host sent an unreadable HTTP response: {e}")))
    }

    pub fn log(&self, level: Level, message: &str) {
        let t = self.table();
        // SAFETY: live table; the message outlives the call.
        unsafe { (t.log)(t.ctx, level as u32, Slice::of(message.as_bytes())) }
    }

    pub fn metric(&self, name: &str, value: f64) {
        let t = self.table();
        // SAFETY: live table; the name outlives the call.
        unsafe { (t.metric)(t.ctx, Slice::of(name.as_bytes()), value) }
    }
}

/// A connector, written in safe Rust. `declare_connector!` exports it.
pub trait Connector: Sized + Send + Sync + 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    /// Bits of [`caps`].
    const CAPABILITIES: u64;

    /// Builds an instance from its configuration, refusing a bad one with
    /// a message naming the field.
    fn open(host: Host, config: Value) -> Result<Self, Error>;

    /// One operation; see [`ops`] for the inputs and outputs.
    fn call(&self, op: &str, input: Value) -> Result<Value, Error>;
}

/// The operations and their JSON shapes (documented in `plugins/README.md`).
pub mod ops {
    /// `{}` → `{}`: the configuration was accepted and the credentials work
    /// as far as can be told without side effects.
    pub const CHECK: &str = "check";
    /// `{"cursor": Value|null, "now": RFC 3339}` →
    /// `{"accounts": [...], "events": [...], "cursor": Value, "more": bool}`.
    pub const POLL: &str = "poll";
    /// `{"action", "key", "account", "content", "at"}` → `{"id", "created": bool}`.
    pub const ACT: &str = "act";
    /// `{"method", "uri", "headers": [[k, v]], "body", "now"}` → `{"events": [...]}`.
    pub const WEBHOOK: &str = "webhook";
}

/// A panic payload as text.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn reply_buffer(reply: Reply) -> Buffer {
    let bytes = serde_json::to_vec(&reply).unwrap_or_else(|_| {
        br#"{"error":{"message":"reply could not be serialised","retryable":false}}"#.to_vec()
    });
    Buffer::from_vec(bytes)
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, Error> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| Error::fatal(format!("{what} is not JSON: {e}")))
}

/// The body of the exported `open`; used by `declare_connector!`.
///
/// # Safety
/// `host` must be a live host table, `config` valid bytes, `out` writable.
pub unsafe fn export_open<C: Connector>(
    host: *const HostTable,
    config: Slice,
    out: *mut *mut c_void,
) -> Buffer {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from this function's contract.
        let host = unsafe { Host::from_raw(host) };
        // SAFETY: the host keeps `config` alive during the call.
        let config = parse_json(unsafe { config.as_bytes() }, "the configuration")?;
        let instance = C::open(host, config)?;
        let ptr = Box::into_raw(Box::new(instance)) as *mut c_void;
        // SAFETY: the caller passes a writable out-pointer.
        unsafe { *out = ptr };
        Ok(Value::Null)
    }));
    reply_buffer(match result {
        Ok(r) => r.into(),
        Err(p) => Reply::Error(Error::fatal(format!(
            "panicked in open: {}",
            panic_message(&*p)
        ))),
    })
}

/// The body of the exported `call`; used by `declare_connector!`.
///
/// # Safety
/// `instance` must come from this library's `open`; `op` and `input` valid bytes.
pub unsafe fn export_call<C: Connector>(instance: *mut c_void, op: Slice, input: Slice) -> Buffer {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if instance.is_null() {
            return Err(Error::fatal("called without an instance"));
        }
        // SAFETY: a non-null instance is the `Box<C>` made by `export_open`,
        // never freed (the host never closes an instance).
        let this = unsafe { &*(instance as *const C) };
        // SAFETY: the host keeps `op` and `input` alive during the call.
        let (op, input) = unsafe { (op.as_bytes(), input.as_bytes()) };
        let op = std::str::from_utf8(op).map_err(|_| Error::fatal("operation is not UTF-8"))?;
        let input = parse_json(input, "the input")?;
        this.call(op, input)
    }));
    reply_buffer(match result {
        Ok(r) => r.into(),
        Err(p) => Reply::Error(Error::fatal(format!(
            "panicked in call: {}",
            panic_message(&*p)
        ))),
    })
}

/// The exported `free`.
///
/// # Safety
/// `buf` must come from this library's `open` or `call`, freed once.
pub unsafe extern "C" fn export_free(buf: Buffer) {
    // Dropping a Vec cannot panic; nothing to catch.
    // SAFETY: forwarded from this function's contract.
    drop(unsafe { buf.into_vec() });
}

/// Exports a [`Connector`] as a Touchpilot plugin: the entry symbol and
/// the table, every call wrapped in `catch_unwind`.
///
/// ```text
/// touchpilot_plugin::declare_connector!(MyConnector);
/// ```
#[macro_export]
macro_rules! declare_connector {
    ($ty:ty) => {
        const _: () = {
            unsafe extern "C" fn __tp_open(
                host: *const $crate::HostTable,
                config: $crate::Slice,
                out: *mut *mut ::std::ffi::c_void,
            ) -> $crate::Buffer {
                // SAFETY: the host upholds `export_open`'s contract.
                unsafe { $crate::export_open::<$ty>(host, config, out) }
            }
            unsafe extern "C" fn __tp_call(
                instance: *mut ::std::ffi::c_void,
                op: $crate::Slice,
                input: $crate::Slice,
            ) -> $crate::Buffer {
                // SAFETY: the host upholds `export_call`'s contract.
                unsafe { $crate::export_call::<$ty>(instance, op, input) }
            }
            struct __TpTable($crate::PluginTable);
            // SAFETY: the table is immutable and its slices point to statics.
            unsafe impl Sync for __TpTable {}
            static __TP_TABLE: __TpTable = __TpTable($crate::PluginTable {
                abi_major: $crate::ABI_MAJOR,
                abi_minor: $crate::ABI_MINOR,
                size: ::std::mem::size_of::<$crate::PluginTable>(),
                name: $crate::Slice {
                    ptr: <$ty as $crate::Connector>::NAME.as_ptr(),
                    len: <$ty as $crate::Connector>::NAME.len(),
                },
                version: $crate::Slice {
                    ptr: <$ty as $crate::Connector>::VERSION.as_ptr(),
                    len: <$ty as $crate::Connector>::VERSION.len(),
                },
                capabilities: <$ty as $crate::Connector>::CAPABILITIES,
                open: __tp_open,
                call: __tp_call,
                free: $crate::export_free,
            });
            /// The entry symbol: the plugin's table. Cannot panic.
            #[unsafe(no_mangle)]
            pub extern "C" fn touchpilot_connector_v1() -> *const $crate::PluginTable {
                &__TP_TABLE.0
            }
        };
    };
}
