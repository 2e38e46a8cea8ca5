//! The `config` argument of `Server(config)`: a mapping, TOML/JSON text or a path. Each form ends
//! in one core loader (`Config::from_json_value`, `from_text`, `from_file`), then in
//! `wsguard::check_config`, so every problem — keys, secrets, key and certificate files — is
//! reported by the core, at construction, as one `ConfigError`. `Server.reload` takes the same
//! forms and leaves the checking to `ServerHandle::reload`.

use std::path::{Path, PathBuf};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyMapping, PyString};
use wsguard::Config;

use crate::errors::config_error;
use crate::json;

/// Reads a `Config` from a Python object and checks it as `bind` would (secrets, key files).
pub(crate) fn load(config: &Bound<'_, PyAny>) -> PyResult<Config> {
    let parsed = parse(config)?;
    wsguard::check_config(&parsed).map_err(|e| config_error(config.py(), &e))?;
    Ok(parsed)
}

/// Reads a `Config` from a Python object (the core's loaders only; files named inside it are not
/// read yet).
pub(crate) fn parse(config: &Bound<'_, PyAny>) -> PyResult<Config> {
    let py = config.py();
    let loaded = if config.cast::<PyMapping>().is_ok() {
        Config::from_json_value(json::to_value(config)?)
    } else if let Ok(text) = config.cast::<PyString>() {
        let text = text.to_cow()?;
        if names_a_file(&text) { Config::from_file(Path::new(text.as_ref())) } else { Config::from_text(&text) }
    } else if let Ok(path) = config.extract::<PathBuf>() {
        Config::from_file(path)
    } else {
        return Err(PyTypeError::new_err(format!(
            "config must be a mapping, TOML/JSON text or a path, not {}",
            config.get_type().name()?
        )));
    };
    loaded.map_err(|e| config_error(py, &e))
}

/// A string is a path when it names an existing file, or when it cannot be configuration text at
/// all (one line, no `=`, no table header, not JSON): then the core's "cannot read" problem is
/// the useful report, not a TOML syntax error about a file name.
fn names_a_file(text: &str) -> bool {
    if text.contains('\n') {
        return false;
    }
    let trimmed = text.trim_start();
    Path::new(text).is_file() || !(text.contains('=') || trimmed.starts_with('{') || trimmed.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::names_a_file;

    #[test]
    fn text_and_paths_are_told_apart() {
        assert!(names_a_file("wsguard.toml"));
        assert!(names_a_file("/etc/wsguard/missing.json"));
        assert!(!names_a_file("[auth]\nissuer = \"x\""));
        assert!(!names_a_file("{\"auth\": {}}"));
        assert!(!names_a_file("server.listen = \"127.0.0.1:0\""));
    }
}
