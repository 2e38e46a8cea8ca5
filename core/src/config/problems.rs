//! Configuration problems and the error that carries them: the leaf every area's config imports.
//!
//! This module imports nothing from the areas (only the error registry for the stable code), so
//! an area's config depends on it while the root `Config` (config.rs) depends on the areas, and
//! no import runs in a circle.

use std::fmt;
use std::time::Duration;

use crate::error::ErrorCode;

/// One configuration problem, with the dotted key path it concerns (`server.listen`,
/// `auth.algorithms[1]`) or `<root>` for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path.
    pub path: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, in document order where known.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    code: ErrorCode,
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub(crate) fn new(code: ErrorCode, problems: Vec<ConfigProblem>) -> Self {
        ConfigError { code, problems }
    }

    /// The stable code: `config_syntax`, `config_invalid`, `config_file` or `config_secret_missing`
    /// (the first problem's kind when several kinds occur).
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Every problem, each with its key path.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "invalid configuration ({n} problem{}):", if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while an area compiles its settings.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a problem.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(path, message));
    }

    /// Checks that a seconds value is finite and strictly positive, and converts it.
    pub fn positive_secs(&mut self, path: &str, secs: f64) -> Duration {
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                self.push(path, format!("must be a positive number of seconds, got {secs}"));
                Duration::from_secs(1)
            }
        }
    }

    /// Checks that a rate (per second) is finite and strictly positive.
    pub fn positive_rate(&mut self, path: &str, per_sec: f64) -> f64 {
        if per_sec.is_finite() && per_sec > 0.0 {
            per_sec
        } else {
            self.push(path, "must be a positive number");
            1.0
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn into_result(self, code: ErrorCode) -> Result<(), ConfigError> {
        if self.0.is_empty() { Ok(()) } else { Err(ConfigError::new(code, self.0)) }
    }
}
