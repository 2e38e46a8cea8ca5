//! The `config` argument of `Server(config)` and `Server.reload(config)`: a mapping, TOML/JSON
//! text or a path, handed to the core as a `wsguard::host::ConfigInput` (a mapping is a `Value`,
//! a `str` is `text_or_path`, a path-like object a `Path`). The core's rule decides the rest:
//! `load` at construction makes every check (keys, secrets, key and certificate files), `parse`
//! for a reload leaves the checking to `ServerHandle::reload`.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyMapping, PyString};
use wsguard::Config;
use wsguard::host::ConfigInput;

use crate::errors::to_py;
use crate::json;

/// Reads and checks a `Config` as `Server(config)` does (`ConfigError` on any problem).
pub(crate) fn load(config: &Bound<'_, PyAny>) -> PyResult<Config> {
    input(config)?.load().map_err(|e| to_py(config.py(), e))
}

/// Reads a `Config` without reading the files or secrets it names (a reload's input).
pub(crate) fn parse(config: &Bound<'_, PyAny>) -> PyResult<Config> {
    input(config)?.parse().map_err(|e| to_py(config.py(), e))
}

fn input(config: &Bound<'_, PyAny>) -> PyResult<ConfigInput> {
    if config.cast::<PyMapping>().is_ok() {
        Ok(ConfigInput::Value(json::to_value(config)?))
    } else if let Ok(text) = config.cast::<PyString>() {
        Ok(ConfigInput::text_or_path(text.to_cow()?))
    } else if let Ok(path) = config.extract::<PathBuf>() {
        Ok(ConfigInput::Path(path))
    } else {
        Err(PyTypeError::new_err(format!(
            "config must be a mapping, TOML/JSON text or a path, not {}",
            config.get_type().name()?
        )))
    }
}
