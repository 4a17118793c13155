//! Operator actions, one implementation for the CLI and the admin API: on users (reset a
//! disabled or locked SMS factor, for directory users and `tel:` subjects alike; issue backup
//! codes; read a factor's state), and on scripts and acrs ([`scripts`], editing the config file
//! through [`config_file`]).

pub mod config_file;
pub mod scripts;

use std::sync::Arc;

use crate::base::phone::is_phone_subject;
use crate::flow::backup::{self, BackupError};
use crate::flow::sms_factor::{FactorError, FactorState, ResetReport, SmsFactor};
use crate::ports::{AttributeChange, DirectoryError, UserDirectory};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user {0:?} in the directory")]
    NoSuchUser(String),
    #[error("{0:?} is a phone-number subject: it has no directory entry to hold backup codes")]
    PhoneSubject(String),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Factor(#[from] FactorError),
    #[error(transparent)]
    Backup(#[from] BackupError),
}

pub struct Admin {
    users: Arc<dyn UserDirectory>,
    sms_factor: Arc<SmsFactor>,
}

impl Admin {
    pub fn new(users: Arc<dyn UserDirectory>, sms_factor: Arc<SmsFactor>) -> Self {
        Admin { users, sms_factor }
    }

    fn require_user(&self, name: &str) -> Result<(), AdminError> {
        if is_phone_subject(name) {
            return Err(AdminError::PhoneSubject(name.to_owned()));
        }
        match self.users.find(name)? {
            Some(_) => Ok(()),
            None => Err(AdminError::NoSuchUser(name.to_owned())),
        }
    }

    /// Re-enables SMS sign-in: clears the disable, the lock and the count of wrong codes, for a
    /// directory user or a phone-number subject (`tel:+447700900123`).
    pub fn reset_sms(&self, subject: &str) -> Result<ResetReport, AdminError> {
        if !is_phone_subject(subject) {
            self.require_user(subject)?;
        }
        Ok(self.sms_factor.reset(subject)?)
    }

    /// The SMS factor's state for an operator.
    pub fn sms_status(&self, subject: &str) -> Result<FactorState, AdminError> {
        if !is_phone_subject(subject) {
            self.require_user(subject)?;
        }
        Ok(self.sms_factor.status(subject)?)
    }

    /// Ten new backup codes, as shown to the user once; earlier codes stop working.
    pub fn issue_backup_codes(&self, name: &str) -> Result<Vec<String>, AdminError> {
        self.require_user(name)?;
        let (shown, stored) = backup::generate()?;
        self.users.update(
            name,
            AttributeChange::Replace {
                attribute: backup::ATTRIBUTE.into(),
                values: stored,
            },
        )?;
        Ok(shown)
    }
}
