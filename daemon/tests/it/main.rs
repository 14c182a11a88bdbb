//! Integration tests of the `touchpilot` crate, linked once (one binary).

mod cli;
mod fixtures;
mod support;
