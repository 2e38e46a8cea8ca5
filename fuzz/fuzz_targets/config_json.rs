//! Config parsing from JSON text (what the bindings pass), through `Config::from_text` as the CLI
//! and bindings do. An accepted config must survive a round trip through JSON and through TOML, and
//! load identically both ways.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::{Config, ErrorCode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let result = Config::from_json_str(text);
    if text.trim_start().starts_with('{') {
        assert_eq!(result.is_ok(), Config::from_text(text).is_ok(), "from_text disagrees with from_json_str");
    }
    match result {
        Ok(config) => {
            let json = serde_json::to_string(&config).expect("a config serializes");
            let from_json = Config::from_json_str(&json)
                .unwrap_or_else(|e| panic!("JSON rendering does not load back: {e:?}\n{json}"));
            assert_eq!(config, from_json, "JSON round trip changed the config\n{json}");
            let toml = config.to_toml_string();
            let from_toml = Config::from_toml_str(&toml)
                .unwrap_or_else(|e| panic!("TOML rendering does not load back: {e:?}\n{toml}"));
            assert_eq!(config, from_toml, "TOML round trip changed the config\n{toml}");
        }
        Err(e) => {
            assert!(matches!(e.code(), ErrorCode::ConfigSyntax | ErrorCode::ConfigInvalid), "{:?}", e.code());
            assert!(!e.problems().is_empty());
        }
    }
});
