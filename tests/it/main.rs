//! Gatehouse integration tests: one binary, one module per concern.

mod bridge;
mod browser;
mod failover;
mod ldap_directory;
mod limits_http;
mod login;
mod logs;
mod oidc_e2e;
mod operate;
mod otp_policy;
mod providers;
mod redis_store;
mod reload;
mod sandbox;
mod sending;
mod shipped;
mod store_contract;
mod support;
mod tidy;
mod web;
mod wso2;
