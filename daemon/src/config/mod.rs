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
    pub cap: Option<Cap>,
    pub delivery: Delivery,
    /// History kept in full before compaction into per-day counts.
    pub retention: jiff::SignedDuration,
}

/// Delivery settings (`delivery:`), with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub lease: jiff::SignedDuration,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            lease: jiff::SignedDuration::from_mins(5),
        }
    }
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
}

/// The per-contact frequency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub max: u32,
    pub per: Duration,
}

/// The outcome of loading: a configuration and its warnings, or every error.
pub type Loaded = Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>>;

/// Reads the process environment for `${VAR}`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
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
