//! Generated files are committed and must not drift from the code. Regenerate with
//! `WSGUARD_BLESS=1 cargo test -p wsguard --test generated`.
#![allow(missing_docs)]

use std::path::PathBuf;

use wsguard::{Config, ErrorCode};

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn check(relative: &str, fresh: &str) {
    let path = repo_file(relative);
    if std::env::var_os("WSGUARD_BLESS").is_some() {
        std::fs::write(&path, fresh).expect("write generated file");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{relative} is out of date: run `WSGUARD_BLESS=1 cargo test -p wsguard --test generated` and commit the result"
    );
}

#[test]
fn config_json_schema_is_current() {
    let schema = serde_json::to_string_pretty(Config::json_schema()).expect("schema");
    check("docs/config.schema.json", &format!("{schema}\n"));
}

#[test]
fn error_code_table_is_current() {
    let mut table = String::from(
        "<!-- Generated from core/src/error.rs by core/tests/generated.rs; do not edit. -->\n\
         # Error codes\n\n\
         Every failure has a stable number (blocks per area: 1xxx config, 2xxx handshake, 3xxx\n\
         authentication, 4xxx per-message replies, 5xxx server runtime) and a stable snake_case name.\n\
         Clients and bindings branch on these; the human-readable text may change.\n\n\
         | number | name | meaning |\n|---:|---|---|\n",
    );
    for code in ErrorCode::ALL {
        table.push_str(&format!("| {} | `{}` | {} |\n", code.number(), code.name(), code.description()));
    }
    check("docs/ERROR_CODES.md", &table);
}
