//! Core errors as Python exceptions. The classes live in the pure-Python module `wsguard._errors`
//! (so that `ConfigError` and `InvalidArgumentError` can also derive from Python's built-in
//! exceptions, and so that they pickle and type-check like any Python exception); this module
//! only fills them from the core's `ErrorCode` — the same number and name every language exposes.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use wsguard::{ConfigError, Error, ErrorCode};

static WSGUARD_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_ARGUMENT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyType>>, name: &str) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "wsguard._errors", name)
}

/// `WsguardError(message, code, code_name)`, or the subclass for `code`: `InvalidArgumentError`
/// (also a `ValueError` and a `TypeError`) for `invalid_argument`.
pub(crate) fn wsguard_error(py: Python<'_>, code: ErrorCode, message: String) -> PyErr {
    let class = match code {
        ErrorCode::InvalidArgument => class(py, &INVALID_ARGUMENT_ERROR, "InvalidArgumentError"),
        _ => class(py, &WSGUARD_ERROR, "WsguardError"),
    };
    match class.and_then(|c| c.call1((message, code.number(), code.name()))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// `ConfigError(message, code, code_name, problems)`, every problem as `(path, message)`.
pub(crate) fn config_error(py: Python<'_>, error: &ConfigError) -> PyErr {
    let problems: Vec<(String, String)> =
        error.problems().iter().map(|p| (p.path.clone(), p.message.clone())).collect();
    let code = error.code();
    match class(py, &CONFIG_ERROR, "ConfigError")
        .and_then(|c| c.call1((error.to_string(), code.number(), code.name(), problems)))
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Any core error: configuration problems become `ConfigError`, the rest `WsguardError`.
pub(crate) fn to_py(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Config(e) => config_error(py, &e),
        other => wsguard_error(py, other.code(), other.to_string()),
    }
}

/// The error for a call on a server that is not running (never started, or stopped).
pub(crate) fn not_running(py: Python<'_>) -> PyErr {
    to_py(py, Error::NotRunning)
}
