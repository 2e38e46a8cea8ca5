//! JSON values that come from JavaScript. A JavaScript number has no integer type, and napi
//! converts an integral number above `u32::MAX` (a byte limit, a lifetime, a large id) to a float,
//! which the core's `u64` fields refuse. `from_js` turns every integral number that a double holds
//! exactly (|n| ≤ 2^53) back into an integer, so an object ends in the same value as its
//! `JSON.stringify` text would. Nothing else changes.

use serde_json::{Number, Value};

/// The largest integer a JavaScript number represents exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// `value` with its exactly-integral floats as integers.
pub(crate) fn from_js(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::Number(integral(n)),
        Value::Array(items) => Value::Array(items.into_iter().map(from_js).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, from_js(v))).collect()),
        other => other,
    }
}

fn integral(n: Number) -> Number {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER => {
            // Exact: the value is integral and within the range a double holds without rounding.
            if f >= 0.0 { Number::from(f as u64) } else { Number::from(f as i64) }
        }
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_floats_become_integers_and_nothing_else_changes() {
        let input = json!({ "big": 5_000_000_000.0, "neg": -5_000_000_000.0, "half": 0.5, "list": [1.0, "x"] });
        let output = from_js(input);
        assert_eq!(output, json!({ "big": 5_000_000_000u64, "neg": -5_000_000_000i64, "half": 0.5, "list": [1, "x"] }));
        assert!(output["big"].is_u64());
        assert!(from_js(json!(1e300)).is_f64());
    }
}
