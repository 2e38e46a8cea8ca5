//! Python objects <-> JSON values, the one representation the core takes and gives.
//!
//! Python to JSON goes through the standard `json` module (`allow_nan=False`, paths through
//! `os.fspath`): it already knows every mapping and sequence type, detects cycles and raises the
//! `TypeError`/`ValueError` Python programmers expect. serde_json then parses the text with its
//! own nesting limit. JSON to Python is a direct walk (the core's values are already bounded).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FSPATH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Encodes `obj` as JSON text with Python's `json.dumps`.
pub(crate) fn dumps(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = obj.py();
    let dumps = DUMPS.get_or_try_init(py, || py.import("json")?.getattr("dumps").map(Bound::unbind))?;
    let fspath = FSPATH.get_or_try_init(py, || py.import("os")?.getattr("fspath").map(Bound::unbind))?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    kwargs.set_item("default", fspath)?;
    kwargs.set_item("separators", (",", ":"))?;
    dumps.bind(py).call((obj,), Some(&kwargs))?.extract()
}

/// Converts a Python object to a JSON value (`TypeError`/`ValueError` when it is not JSON-able).
pub(crate) fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let text = dumps(obj)?;
    serde_json::from_str(&text).map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("not a JSON value: {e}")))
}

/// Converts a JSON value to plain Python objects (dict, list, str, int, float, bool, None).
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}
