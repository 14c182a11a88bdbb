//! Sources of accounts and events. The built-in one reads JSON lines.

pub mod follow;
pub mod jsonl;
