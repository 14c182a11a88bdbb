//! Integration tests of the `touchpilot` crate, linked once (one binary).

mod agree;
mod cli;
mod cluster;
mod connectors;
mod daemon;
mod deliver;
mod fixtures;
mod plugins;
mod process;
mod smtp;
mod support;
mod vendors;
