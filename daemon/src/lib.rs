//! Touchpilot: a self-hosted customer-engagement daemon driven by YAML
//! playbooks. The pipeline, module by module: `source` and `model` (data in)
//! → `evaluate` (segments, conditions) → `engine` (triggers, state,
//! decisions) with `schedule` (time arithmetic) and `render` (templates) →
//! `deliver` (consent and caps at send time) → `simulate` (the dry run's
//! virtual clock and output). `config` loads and validates everything.

pub mod api;
pub mod app;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod engine;
pub mod evaluate;
pub mod maintain;
pub mod model;
pub mod ops;
pub mod plugin_host;
pub mod render;
pub mod runner;
pub mod schedule;
pub mod simulate;
pub mod source;
pub mod store;
pub mod tls;
