//! User directory adapters: a TOML file (the embedded default) and LDAP, behind one port.

mod file;
mod ldap;

pub use file::FileDirectory;
pub use ldap::{LdapDirectory, LdapSettings, AUXILIARY_CLASS};
