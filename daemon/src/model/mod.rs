//! The data the engine sees: accounts, events, and compiled playbooks.

pub mod account;
pub mod event;
pub mod playbook;
