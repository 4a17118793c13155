//! User directory adapters. The embedded one is a TOML file; LDAP comes later behind the same port.

mod file;

pub use file::FileDirectory;
