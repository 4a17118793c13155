//! Gatehouse integration tests: one binary, one module per concern.

mod login;
mod logs;
mod reload;
mod sandbox;
mod support;
