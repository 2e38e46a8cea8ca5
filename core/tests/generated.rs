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

fn doc(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).expect("doc file")
}

#[test]
fn protocol_doc_names_every_error_code_and_close_code() {
    let protocol = doc("docs/PROTOCOL.md");
    for code in ErrorCode::ALL {
        assert!(
            protocol.contains(&format!("`{}`", code.name())),
            "docs/PROTOCOL.md does not mention `{}`",
            code.name()
        );
    }
    for disconnect in wsguard::Disconnect::SERVER_SIDE {
        assert!(
            protocol.contains(&disconnect.code().to_string()),
            "docs/PROTOCOL.md lacks close code {}",
            disconnect.code()
        );
        assert!(protocol.contains(disconnect.reason()), "docs/PROTOCOL.md lacks close reason {}", disconnect.reason());
    }
}

#[test]
fn config_doc_names_every_key() {
    let config_doc = doc("docs/CONFIG.md");
    let schema = Config::json_schema();
    let mut missing = Vec::new();
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let sections = std::iter::once(schema.clone()).chain(defs.into_values());
    for section in sections {
        for key in section["properties"].as_object().into_iter().flat_map(|p| p.keys()) {
            let forms = [format!("`{key}`"), format!("[{key}]"), format!("[[{key}]]")];
            if !forms.iter().any(|f| config_doc.contains(f.as_str())) {
                missing.push(key.clone());
            }
        }
    }
    assert!(missing.is_empty(), "docs/CONFIG.md does not document: {missing:?}");
}
