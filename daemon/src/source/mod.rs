//! Sources of accounts and events. The built-in one reads JSON lines.

pub mod jsonl;
