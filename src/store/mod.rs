//! State store adapters. Only the in-memory store exists yet; a shared (Redis) store comes later.

mod memory;

pub use memory::MemoryStore;
