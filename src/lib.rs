//! Gatehouse: an authentication server whose login flows are Rhai scripts, in the tradition of
//! the Gluu/Janssen person-authentication scripts.
//!
//! Layers, dependencies pointing one way (ARCHITECTURE.md; `tests/it/tidy.rs` enforces it):
//! `web` -> `flow`, `oidc` -> `ports` (and `flow::script_port`) <- adapters (`script`, `users`,
//! `store`, `sms`, `outbound`); everything may use `base` and `config`. `app` alone wires them.

pub mod admin;
pub mod app;
pub mod base;
pub mod config;
pub mod flow;
pub mod logging;
pub mod oidc;
pub mod outbound;
pub mod ports;
pub mod script;
pub mod sms;
pub mod store;
pub mod users;
pub mod web;

pub use app::{Builder, Gatehouse, Mode};

/// Every allocation is counted per thread, so a script hook's memory can be bounded.
#[global_allocator]
static ALLOCATOR: base::memory::CountingAllocator = base::memory::CountingAllocator;
