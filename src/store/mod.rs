//! State store adapters: in memory (one process, the embedded default) and Redis (shared by
//! several nodes, kept across restarts).

mod memory;
mod redis;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
