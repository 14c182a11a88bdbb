//! Configuration: `touchpilot.yaml`, the playbooks and the templates.
//!
//! Parse, then validate, then build: parsing (in `parse`) turns text into
//! the spec types of `daemon` and `playbook`; validation and building (in
//! `build`) check meaning, collect every problem with its file, line and
//! column, and produce the immutable `Config` the engine runs on. Nothing
//! here opens a socket, a database or a plugin.

pub mod build;
pub mod daemon;
pub mod diag;
pub mod duration;
pub mod parse;
pub mod playbook;
pub mod spanned;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;

use crate::model::playbook::Playbook;
use crate::render::Templates;
pub use build::load;
use diag::Diagnostic;
use duration::Duration;

/// A loaded, valid configuration. Immutable; reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// The configuration file.
    pub path: PathBuf,
    pub timezone: TimeZone,
    /// Ascending priority, ties by id: the order segments are tried in.
    pub playbooks: Vec<Arc<Playbook>>,
    pub templates: Templates,
    pub store: String,
    pub http: Http,
    pub sources: FileSources,
    pub email: Email,
    pub webhooks: BTreeMap<String, Webhook>,
    pub connectors: BTreeMap<String, Connector>,
    pub inbound: BTreeMap<String, Inbound>,
    pub cap: Option<Cap>,
    pub delivery: Delivery,
    pub log: Log,
    /// History kept in full before compaction into per-day counts.
    pub retention: jiff::SignedDuration,
}

impl Config {
    pub fn playbook(&self, id: &str) -> Option<&Arc<Playbook>> {
        self.playbooks.iter().find(|p| p.id == id)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Http {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct FileSources {
    pub accounts: Option<PathBuf>,
    pub events: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Email {
    pub from: Option<String>,
    pub transport: String,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Option<String>,
    pub allow_private: bool,
}

#[derive(Debug, Clone)]
pub struct Connector {
    pub library: PathBuf,
    pub config: serde_json::Value,
    /// Timeouts of the plugin host for this connector.
    pub limits: crate::plugin_host::Limits,
    /// Where `library` is written, for `validate`'s messages.
    pub at: diag::Pos,
}

/// A mapped inbound endpoint: the names of the fields that give an
/// event's account, type, id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub account: String,
    pub kind: String,
    pub id: Option<String>,
    pub at: Option<String>,
}

impl Inbound {
    /// The event a posted object stands for; errors name the field.
    pub fn event(&self, object: &serde_json::Value) -> Result<crate::model::event::Event, String> {
        let Some(map) = object.as_object() else {
            return Err("the body must be a JSON object (or an array of them)".to_string());
        };
        let mut e = serde_json::Map::new();
        let fields = [
            ("account", Some(&self.account)),
            ("type", Some(&self.kind)),
            ("id", self.id.as_ref()),
            ("at", self.at.as_ref()),
        ];
        for (to, from) in fields {
            let Some(from) = from else { continue };
            match map.get(from) {
                Some(v) => {
                    e.insert(to.into(), v.clone());
                }
                None if matches!(to, "account" | "type") => {
                    return Err(format!("missing field `{from}` (the event's {to})"));
                }
                None => {}
            }
        }
        e.insert("data".into(), object.clone());
        crate::model::event::Event::from_json(&serde_json::Value::Object(e))
            .map_err(|m| format!("{m} (mapped from the fields of the body)"))
    }
}

/// Delivery settings (`delivery:`), with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub grace: jiff::SignedDuration,
    pub give_up_after: jiff::SignedDuration,
    pub first_retry: jiff::SignedDuration,
    pub max_retry: jiff::SignedDuration,
    pub timeout: jiff::SignedDuration,
    pub lease: jiff::SignedDuration,
    pub shutdown_grace: jiff::SignedDuration,
    pub concurrency: usize,
}

impl Default for Delivery {
    fn default() -> Delivery {
        use jiff::SignedDuration as D;
        Delivery {
            grace: D::from_hours(1),
            give_up_after: D::from_hours(72),
            first_retry: D::from_secs(30),
            max_retry: D::from_hours(1),
            timeout: D::from_secs(10),
            lease: D::from_mins(5),
            shutdown_grace: D::from_secs(30),
            concurrency: 16,
        }
    }
}

/// How `touchpilot run` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    Journald,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            _ => Err(format!(
                "unknown log format `{s}`: expected `text`, `json` or `journald`"
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    pub level: Option<String>,
}

/// The per-contact frequency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub max: u32,
    pub per: Duration,
}

/// The outcome of loading: a configuration and its warnings, or every error.
pub type Loaded = Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>>;

/// Resolves `${VAR}`: the process environment, then the file `VAR` in
/// systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`), trailing
/// newline removed.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return None;
        }
        let text = std::fs::read_to_string(Path::new(&dir).join(name)).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    })
}

/// A path from the configuration, relative to the configuration's folder.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
