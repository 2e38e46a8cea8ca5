//! Config parsing from TOML text. Beyond "never panics": a refusal carries at least one problem
//! with a key path, and an accepted config survives a round trip through its own TOML rendering
//! (`wsguard check-config` prints it, and operators paste it back).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsguard::{Config, ErrorCode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml_str(text) {
        Ok(config) => {
            let rendered = config.to_toml_string();
            let again = Config::from_toml_str(&rendered)
                .unwrap_or_else(|e| panic!("rendering does not load back: {e:?}\n{rendered}"));
            assert_eq!(config, again, "round trip changed the config\n{rendered}");
        }
        Err(e) => {
            assert!(matches!(e.code(), ErrorCode::ConfigSyntax | ErrorCode::ConfigInvalid), "{:?}", e.code());
            assert!(!e.problems().is_empty());
        }
    }
});
