//! Integration tests of the `touchpilot` crate, linked once (one binary).

mod agree;
mod cli;
mod cluster;
mod daemon;
mod deliver;
mod fixtures;
mod process;
mod smtp;
mod support;
