//! Sources of accounts and events. The built-in one reads JSON lines;
//! `connector` polls connector plugins and takes their inbound webhooks.

pub mod connector;
pub mod follow;
pub mod jsonl;
