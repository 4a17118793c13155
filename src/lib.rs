//! Gatehouse: an authentication server whose login flows are Rhai scripts, in the tradition of
//! the Gluu/Janssen person-authentication scripts.
//!
//! Layers, dependencies pointing one way: `web` -> `flow`, `oidc` -> ports (`ports`, `flow::hooks`)
//! <- adapters (`script`, `users`, `store`, `sms`, `outbound`). `app` wires them.

pub mod app;
pub mod config;
pub mod flow;
pub mod logging;
pub mod oidc;
pub mod outbound;
pub mod ports;
pub mod script;
pub mod secret;
pub mod sms;
pub mod store;
pub mod users;
pub mod web;

pub use app::{Builder, Gatehouse, Mode};
