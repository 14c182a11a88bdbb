//! The plugin host: loads connector libraries (`libloading`), checks
//! their ABI before the first call, and runs every call on a thread of
//! its own with a timeout, so that a plugin that hangs never blocks the
//! async threads and one that panics or answers garbage is an error
//! naming the plugin, never a crash. It serves the plugins' callbacks
//! (`callbacks.rs`): HTTP with the host's timeouts and TLS, logs, metrics.
//!
//! The only module with `unsafe` code, kept to the calls across the C ABI.
//! It never unloads a library: code of a plugin may still run on a thread
//! abandoned after a timeout, and unloading under it would be undefined
//! behaviour (bevy's removed dynamic plugins are the cautionary tale).

mod callbacks;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use touchpilot_plugin::{ABI_MAJOR, ABI_MINOR, ENTRY_SYMBOL, PluginTable, Reply, Slice, caps};

pub use callbacks::HostCtx;
pub use touchpilot_plugin::Error as PluginFailure;

/// Calls a plugin may have running at once. Calls abandoned after a
/// timeout keep their thread until they return (maybe never); beyond this
/// many, further calls fail at once instead of piling threads up.
const MAX_IN_FLIGHT: usize = 8;

/// Everything that can go wrong with a plugin, each naming it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("connector `{name}`: cannot load {}: {reason}", path.display())]
    Load {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "connector `{name}`: {} is not a Touchpilot connector: it does not export the symbol `{}` ({reason})",
        path.display(),
        String::from_utf8_lossy(&ENTRY_SYMBOL[..ENTRY_SYMBOL.len() - 1])
    )]
    MissingSymbol {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "connector `{name}`: {} was built for plugin ABI {major}.{minor}, this touchpilot speaks {ABI_MAJOR}.{ABI_MINOR}: rebuild it against touchpilot-plugin {ABI_MAJOR}.x",
        path.display()
    )]
    AbiMismatch {
        name: String,
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    #[error("connector `{name}`: {reason}")]
    BadTable { name: String, reason: String },
    #[error("connector `{name}` ({op}): did not answer within {after:?}; the call was abandoned")]
    Timeout {
        name: String,
        op: String,
        after: Duration,
    },
    #[error(
        "connector `{name}` ({op}): {running} calls are still running (hung?); not calling it again until one returns"
    )]
    Busy {
        name: String,
        op: String,
        running: usize,
    },
    #[error("connector `{name}` ({op}): answered something that is not a reply: {reason}")]
    Garbage {
        name: String,
        op: String,
        reason: String,
    },
    #[error("connector `{name}` ({op}): {error}")]
    Failed {
        name: String,
        op: String,
        error: PluginFailure,
    },
    #[error("connector `{name}` ({op}): cannot start a thread for the call: {reason}")]
    Thread {
        name: String,
        op: String,
        reason: String,
    },
    #[error("connector `{name}`: does not support `{op}`")]
    Unsupported { name: String, op: String },
}

impl PluginError {
    /// Whether trying the same call later may succeed: timeouts, a busy
    /// plugin and errors the plugin itself calls retryable. Panics and
    /// garbage are bugs; a retry would only repeat them.
    pub fn retryable(&self) -> bool {
        match self {
            PluginError::Timeout { .. } | PluginError::Busy { .. } | PluginError::Thread { .. } => {
                true
            }
            PluginError::Failed { error, .. } => error.retryable,
            _ => false,
        }
    }

    /// The soonest a retry makes sense, when the vendor said (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PluginError::Failed { error, .. } => error.retry_after.map(Duration::from_secs),
            _ => None,
        }
    }
}

/// Limits of one loaded connector.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest one HTTP request of the plugin may take.
    pub http_timeout: Duration,
    /// The longest one call (`poll`, `act`, ...) may take.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            http_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// An instance pointer owned by the plugin.
#[derive(Clone, Copy)]
struct Instance(*mut c_void);
// SAFETY: a plugin instance is `Send + Sync` by the `Connector` trait's
// bounds (`declare_connector!` only exports such types); the host never
// dereferences it.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// A loaded, opened connector.
pub struct Plugin {
    /// The name it is configured under.
    pub name: String,
    /// The name and version the library reports.
    pub plugin_name: String,
    pub version: String,
    pub capabilities: u64,
    pub library: PathBuf,
    table: &'static PluginTable,
    instance: Instance,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    pub ctx: &'static HostCtx,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("plugin_name", &self.plugin_name)
            .field("version", &self.version)
            .field("library", &self.library)
            .finish()
    }
}

/// The library's table, after the version checks.
fn load_table(name: &str, path: &Path) -> Result<&'static PluginTable, PluginError> {
    // SAFETY: loading a library runs its initialisers. Which libraries are
    // loaded is the operator's choice (`connectors:` in touchpilot.yaml),
    // exactly as with any native plugin system.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Load {
        name: name.into(),
        path: path.into(),
        reason: e.to_string(),
    })?;
    // Never unloaded (see the module comment): leaked on purpose.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the entry symbol's type is fixed by ABI major 1; a library
    // exporting the name with another type is refused below by its table's
    // version, read before anything else.
    let entry =
        unsafe { lib.get::<extern "C" fn() -> *const PluginTable>(ENTRY_SYMBOL) }.map_err(|e| {
            PluginError::MissingSymbol {
                name: name.into(),
                path: path.into(),
                reason: e.to_string(),
            }
        })?;
    let table = entry();
    if table.is_null() {
        return Err(PluginError::BadTable {
            name: name.into(),
            reason: "the entry symbol returned no table".into(),
        });
    }
    // SAFETY: every ABI version starts with `abi_major: u32, abi_minor: u32`;
    // nothing else is read before the major version is known to match.
    let (major, minor) = unsafe {
        let head = table as *const u32;
        (head.read(), head.add(1).read())
    };
    if major != ABI_MAJOR {
        return Err(PluginError::AbiMismatch {
            name: name.into(),
            path: path.into(),
            major,
            minor,
        });
    }
    // SAFETY: ABI 1 tables start with the major, minor and size fields.
    let size = unsafe { (*table).size };
    if size < std::mem::size_of::<PluginTable>() {
        return Err(PluginError::BadTable {
            name: name.into(),
            reason: format!(
                "its table is {size} bytes, ABI {ABI_MAJOR} needs at least {}",
                std::mem::size_of::<PluginTable>()
            ),
        });
    }
    // SAFETY: a matching major version and a large enough size: the table
    // is a `PluginTable`, static in a library that is never unloaded.
    Ok(unsafe { &*table })
}

fn text(name: &str, what: &str, s: Slice) -> Result<String, PluginError> {
    // SAFETY: the table's slices point to statics of the loaded library.
    let bytes = unsafe { s.as_bytes() };
    String::from_utf8(bytes.to_vec()).map_err(|_| PluginError::BadTable {
        name: name.into(),
        reason: format!("its {what} is not UTF-8"),
    })
}

impl Plugin {
    /// Loads `library`, checks its ABI, and opens an instance with
    /// `config` (the connector refuses a configuration it cannot use).
    /// Blocks the calling thread for at most the call timeout.
    pub fn load(
        name: &str,
        library: &Path,
        config: &Value,
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let table = load_table(name, library)?;
        let plugin_name = text(name, "name", table.name)?;
        let version = text(name, "version", table.version)?;
        let ctx: &'static HostCtx = Box::leak(Box::new(HostCtx::new(name, limits.http_timeout)));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let config = serde_json::to_vec(config).expect("JSON values serialise");
        let host = ctx.table() as *const touchpilot_plugin::HostTable as usize;
        let (tx, rx) = std::sync::mpsc::channel();
        let deliver = move |r| {
            let _ = tx.send(r);
        };
        spawn(name, "open", &in_flight, deliver, move || {
            let mut out: *mut c_void = std::ptr::null_mut();
            // SAFETY: the host table lives forever (leaked with `ctx`), the
            // config outlives the call, and `out` is a valid out-pointer.
            let buf = unsafe {
                (table.open)(
                    host as *const touchpilot_plugin::HostTable,
                    Slice::of(&config),
                    &mut out,
                )
            };
            (take(table, buf), out as usize)
        })?;
        let (reply, instance) = match rx.recv_timeout(limits.call_timeout) {
            Ok(r) => r,
            Err(_) => {
                return Err(PluginError::Timeout {
                    name: name.into(),
                    op: "open".into(),
                    after: limits.call_timeout,
                });
            }
        };
        interpret(name, "open", &reply)?;
        Ok(Plugin {
            name: name.into(),
            plugin_name,
            version,
            capabilities: table.capabilities,
            library: library.into(),
            table,
            instance: Instance(instance as *mut c_void),
            limits,
            in_flight,
            ctx,
        })
    }

    pub fn can(&self, capability: u64) -> bool {
        self.capabilities & capability != 0
    }

    fn supports(&self, op: &str) -> Result<(), PluginError> {
        let needed = match op {
            "poll" => caps::SOURCE,
            "act" => caps::ACTIONS,
            "webhook" => caps::WEBHOOK,
            _ => return Ok(()),
        };
        if self.can(needed) {
            Ok(())
        } else {
            Err(PluginError::Unsupported {
                name: self.name.clone(),
                op: op.into(),
            })
        }
    }

    /// Starts `op` on a thread of its own; `deliver` gets the reply's
    /// bytes when (if ever) the plugin returns.
    fn start(
        &self,
        op: &str,
        input: &Value,
        deliver: impl FnOnce(Vec<u8>) + Send + 'static,
    ) -> Result<(), PluginError> {
        self.supports(op)?;
        let table = self.table;
        let instance = self.instance;
        let op_bytes = op.as_bytes().to_vec();
        let input = serde_json::to_vec(input).expect("JSON values serialise");
        spawn(&self.name, op, &self.in_flight, deliver, move || {
            let instance = instance;
            // SAFETY: the instance came from this table's `open`; the
            // operation and input outlive the call.
            let buf = unsafe { (table.call)(instance.0, Slice::of(&op_bytes), Slice::of(&input)) };
            take(table, buf)
        })
    }

    /// Runs `op` from synchronous code (start-up, `validate`), waiting at
    /// most the call timeout.
    pub fn call_blocking(&self, op: &str, input: &Value) -> Result<Value, PluginError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.start(op, input, move |r| {
            let _ = tx.send(r);
        })?;
        match rx.recv_timeout(self.limits.call_timeout) {
            Ok(reply) => interpret(&self.name, op, &reply),
            Err(_) => Err(self.timeout(op)),
        }
    }

    /// Runs `op` from async code: the call is on its own thread and this
    /// future waits at most the call timeout, so no async thread blocks.
    pub async fn call(&self, op: &str, input: &Value) -> Result<Value, PluginError> {
        let (tx, done) = tokio::sync::oneshot::channel();
        self.start(op, input, move |r| {
            let _ = tx.send(r);
        })?;
        match tokio::time::timeout(self.limits.call_timeout, done).await {
            Ok(Ok(reply)) => interpret(&self.name, op, &reply),
            Ok(Err(_)) => Err(PluginError::Garbage {
                name: self.name.clone(),
                op: op.into(),
                reason: "its thread ended without a reply".into(),
            }),
            Err(_) => Err(self.timeout(op)),
        }
    }

    fn timeout(&self, op: &str) -> PluginError {
        PluginError::Timeout {
            name: self.name.clone(),
            op: op.into(),
            after: self.limits.call_timeout,
        }
    }
}

/// Copies a plugin's buffer and gives it back to the plugin's `free`.
fn take(table: &PluginTable, buf: touchpilot_plugin::Buffer) -> Vec<u8> {
    // SAFETY: the buffer was just returned by this plugin and is live.
    let bytes = unsafe { buf.bytes() }.to_vec();
    // SAFETY: returned once, to the library that allocated it.
    unsafe { (table.free)(buf) };
    bytes
}

/// Runs `f` on a thread of its own, counting it in flight until it
/// returns, and hands its result to `deliver` (whoever waits may have
/// given up by then).
fn spawn<T: Send + 'static>(
    name: &str,
    op: &str,
    in_flight: &Arc<AtomicUsize>,
    deliver: impl FnOnce(T) + Send + 'static,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(), PluginError> {
    let running = in_flight.fetch_add(1, Ordering::AcqRel);
    if running >= MAX_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        return Err(PluginError::Busy {
            name: name.into(),
            op: op.into(),
            running,
        });
    }
    let counter = in_flight.clone();
    std::thread::Builder::new()
        .name(format!("plugin-{name}"))
        .spawn(move || {
            let out = f();
            counter.fetch_sub(1, Ordering::AcqRel);
            deliver(out);
        })
        .map_err(|e| {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            PluginError::Thread {
                name: name.into(),
                op: op.into(),
                reason: e.to_string(),
            }
        })?;
    Ok(())
}

/// A reply's bytes as a result.
fn interpret(name: &str, op: &str, bytes: &[u8]) -> Result<Value, PluginError> {
    match serde_json::from_slice::<Reply>(bytes) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(error)) => Err(PluginError::Failed {
            name: name.into(),
            op: op.into(),
            error,
        }),
        Err(e) => Err(PluginError::Garbage {
            name: name.into(),
            op: op.into(),
            reason: format!(
                "{e} (first bytes: {:?})",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            ),
        }),
    }
}

/// Every configured connector, loaded or with the reason it is not. A
/// connector that fails to load does not stop the daemon: its actions
/// wait in the outbox (retried, then dead-lettered) and the reason is
/// logged and shown.
#[derive(Debug, Default)]
pub struct PluginHost {
    pub plugins: BTreeMap<String, Result<Arc<Plugin>, PluginError>>,
}

impl PluginHost {
    /// Loads every connector of the configuration.
    pub fn load(connectors: &BTreeMap<String, crate::config::Connector>) -> PluginHost {
        let plugins = connectors
            .iter()
            .map(|(name, c)| {
                let loaded = Plugin::load(name, &c.library, &c.config, c.limits).map(Arc::new);
                (name.clone(), loaded)
            })
            .collect();
        PluginHost { plugins }
    }

    /// The connector `name`, or why it cannot be used.
    pub fn get(&self, name: &str) -> Result<&Arc<Plugin>, PluginError> {
        match self.plugins.get(name) {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(e.clone()),
            None => Err(PluginError::Load {
                name: name.into(),
                path: PathBuf::new(),
                reason: "no such connector is configured".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

/// `touchpilot validate`'s checks of the connectors: each library loads,
/// its ABI matches, and the connector accepts its configuration (`open`,
/// then `check`). A library that is not there yet is a warning (playbooks
/// are often validated where plugins are not installed); one that is
/// there and fails is an error at its `library:` line.
pub fn validate(config: &crate::config::Config) -> Vec<crate::config::diag::Diagnostic> {
    use crate::config::diag::Diagnostic;
    let mut out = Vec::new();
    for (name, c) in &config.connectors {
        if !c.library.exists() {
            out.push(Diagnostic::warning(
                &config.path,
                c.at,
                format!(
                    "connector `{name}`: library {} not found, so it was not checked (build or install the plugin there)",
                    c.library.display()
                ),
            ));
            continue;
        }
        let checked = Plugin::load(name, &c.library, &c.config, c.limits)
            .and_then(|p| p.call_blocking(touchpilot_plugin::ops::CHECK, &Value::Null));
        if let Err(e) = checked {
            out.push(Diagnostic::error(&config.path, c.at, e.to_string()));
        }
    }
    out
}
