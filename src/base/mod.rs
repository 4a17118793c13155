//! The base layer: small values and services every layer uses and that know no other layer:
//! the clock, the random source, secrets, phone numbers and subjects, password hashing (the one
//! argon2 gate), digests and the names of state-store keys. It imports nothing from the crate.
//!
//! (Named `base`, not `core`, so that it never shadows the standard library's `core` crate.)

pub mod address;
pub mod clock;
pub mod digest;
pub mod memory;
pub mod metrics;
pub mod password;
pub mod phone;
pub mod random;
pub mod secret;
pub mod store_keys;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use secret::Secret;
