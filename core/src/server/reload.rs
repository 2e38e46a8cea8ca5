//! `ReloadError`: why `ServerHandle::reload` applied nothing. A refused reload changes nothing;
//! every cause carries its stable code, and the configuration causes every problem with its key
//! path (what bindings show as their `ConfigError`).

use crate::config::{ConfigError, ConfigProblem};
use crate::error::{Error, ErrorCode};

/// Why a configuration reload was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server has shut down (`not_running`).
    #[error("the server is not running")]
    NotRunning,
    /// Keys that shape listeners, queues or long-lived state differ from the running
    /// configuration; they need a restart (`config_invalid`, one problem per key).
    #[error("{0}")]
    RestartRequired(ConfigError),
    /// The new configuration is invalid (its own code: `config_invalid`, `config_file`, ...).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl ReloadError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReloadError::NotRunning => ErrorCode::NotRunning,
            ReloadError::RestartRequired(e) | ReloadError::Invalid(e) => e.code(),
        }
    }

    /// Every configuration problem, each with its key path (none for `NotRunning`).
    pub fn problems(&self) -> &[ConfigProblem] {
        self.config_error().map_or(&[], ConfigError::problems)
    }

    /// The configuration error, for the causes that are one (what bindings raise as their
    /// `ConfigError`).
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            ReloadError::NotRunning => None,
            ReloadError::RestartRequired(e) | ReloadError::Invalid(e) => Some(e),
        }
    }

    /// Keys that cannot change on a reload.
    pub(crate) fn restart_required(problems: Vec<ConfigProblem>) -> Self {
        ReloadError::RestartRequired(ConfigError::new(ErrorCode::ConfigInvalid, problems))
    }
}

impl From<ReloadError> for Error {
    fn from(error: ReloadError) -> Self {
        match error {
            ReloadError::NotRunning => Error::NotRunning,
            ReloadError::RestartRequired(e) | ReloadError::Invalid(e) => Error::Config(e),
        }
    }
}
