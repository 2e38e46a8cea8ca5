//! Generated files are committed and must not drift from the code. Regenerate with
//! `WSGUARD_BLESS=1 cargo test -p wsguard --test generated`.
#![allow(missing_docs)]

use std::path::PathBuf;

use wsguard::{Config, ErrorCode, Surface};

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
         authentication, 4xxx per-message replies, 5xxx server runtime, 6xxx server API over HTTP) and a\n\
         stable snake_case name.\n\
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

// ---- generated regions inside hand-written docs ------------------------------------------------

/// The marker lines around a generated region named `name`; the prose around stays hand-written.
fn markers(name: &str) -> (String, String) {
    let source = if name == "close-codes" { "core/src/transport/disconnect.rs" } else { "core/src/error.rs" };
    (
        format!("<!-- BEGIN GENERATED {name}: from {source} by core/tests/generated.rs; do not edit. -->\n"),
        format!("<!-- END GENERATED {name} -->\n"),
    )
}

/// PROTOCOL.md §3: every close code the server sends, with when and what the client should do
/// (the close-code catalogue is `Disconnect`, separate from the error registry).
fn close_code_table() -> String {
    let mut table = String::from("| Code | Reason text | When | Client should |\n|---:|---|---|---|\n");
    let mut closes: Vec<wsguard::Disconnect> = wsguard::Disconnect::SERVER_SIDE.to_vec();
    closes.sort_by_key(|d| d.code());
    for close in closes {
        table.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            close.code(),
            close.reason(),
            close.when(),
            close.client_should()
        ));
    }
    table
}

/// `text` with the region `name` replaced by `fresh`; panics when the markers are missing.
fn with_region(relative: &str, text: &str, name: &str, fresh: &str) -> String {
    let (begin, end) = markers(name);
    let start = text.find(&begin).unwrap_or_else(|| panic!("{relative} lacks the marker line `{}`", begin.trim_end()));
    let body = start + begin.len();
    let stop = text[body..].find(&end).unwrap_or_else(|| panic!("{relative} lacks `{}`", end.trim_end())) + body;
    format!("{}{fresh}{}", &text[..body], &text[stop..])
}

/// The reply-error table of PROTOCOL.md §2: per-message codes first, then the handshake and token
/// codes a `refresh` can also get.
fn reply_error_table() -> String {
    let mut codes: Vec<ErrorCode> = ErrorCode::ALL.iter().copied().filter(|c| c.is_reply()).collect();
    codes.sort_by_key(|c| (c.number() / 1000 != 4, c.number()));
    let mut table = String::from("| Name | Number | Meaning | From | Violation |\n|---|---:|---|---|---|\n");
    for code in codes {
        let from = code.surfaces().iter().find_map(|s| match s {
            Surface::Reply { from, .. } => Some(*from),
            _ => None,
        });
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            code.name(),
            code.number(),
            code.description(),
            from.unwrap_or_default(),
            if code.is_violation() { "yes" } else { "no" }
        ));
    }
    table
}

/// The sentence of PROTOCOL.md's "Violations" that names the reply errors that do not count.
fn benign_replies() -> String {
    let names: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|c| c.is_reply() && !c.is_violation())
        .map(|c| format!("`{}`", c.name()))
        .collect();
    let (last, rest) = names.split_last().expect("some benign replies");
    format!("Every reply error counts except {} and {last}.\n", rest.join(", "))
}

fn surface_text(surface: &Surface) -> String {
    let with =
        |what: &str, detail: &str| if detail.is_empty() { what.to_string() } else { format!("{what} ({detail})") };
    match surface {
        Surface::Config => "config".into(),
        Surface::Refusal { status } => format!("HTTP {status}"),
        Surface::Unanswered { when } => with("event", when),
        Surface::Reply { from, .. } if *from == "any frame" => "reply".into(),
        Surface::Reply { from, .. } => with("reply", from),
        Surface::Api { calls } => with("API", calls),
        Surface::HttpApi { status } => format!("server API HTTP {status}"),
        _ => unreachable!("a new surface needs its text here"),
    }
}

/// The registry table of PROTOCOL.md §4: every code with where it surfaces.
fn registry_table() -> String {
    let mut table = String::from("| Number | Name | Meaning | Surfaces as |\n|---:|---|---|---|\n");
    for code in ErrorCode::ALL {
        let surfaces: Vec<String> = code.surfaces().iter().map(surface_text).collect();
        table.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            code.number(),
            code.name(),
            code.description(),
            surfaces.join("; ")
        ));
    }
    table
}

/// PROTOCOL.md §1 "Status by code": every handshake refusal status and its codes.
fn refusal_statuses() -> String {
    let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for code in ErrorCode::ALL {
        if let Some(status) = code.http_status() {
            by_status.entry(status.as_u16()).or_default().push(format!("`{}`", code.name()));
        }
    }
    by_status.into_iter().map(|(status, codes)| format!("- {status}: {}.\n", codes.join(", "))).collect()
}

#[test]
fn protocol_doc_generated_tables_are_current() {
    const PROTOCOL: &str = "docs/PROTOCOL.md";
    let mut text = doc(PROTOCOL);
    text = with_region(PROTOCOL, &text, "refusal-statuses", &refusal_statuses());
    text = with_region(PROTOCOL, &text, "reply-errors", &reply_error_table());
    text = with_region(PROTOCOL, &text, "benign-replies", &benign_replies());
    text = with_region(PROTOCOL, &text, "registry", &registry_table());
    text = with_region(PROTOCOL, &text, "close-codes", &close_code_table());
    check(PROTOCOL, &text);
}

/// Every `NNN \`name\`` in the hand-written docs (a status next to a code name, as in
/// "403 `banned`") agrees with the registry's status for that code.
#[test]
fn docs_quote_each_refusal_with_the_registry_status() {
    let mut wrong = Vec::new();
    for relative in
        ["docs/PROTOCOL.md", "docs/SECURITY.md", "docs/CONFIG.md", "docs/OPERATIONS.md", "docs/API.md", "README.md"]
    {
        let text = doc(relative);
        let bytes = text.as_bytes();
        for (at, _) in text.match_indices(" `") {
            let digits = at.checked_sub(3).map(|from| &bytes[from..at]);
            let is_status =
                digits.is_some_and(|d| d.iter().all(u8::is_ascii_digit)) && (at < 4 || !bytes[at - 4].is_ascii_digit());
            let Some(name) = text[at + 2..].split('`').next().filter(|_| is_status) else { continue };
            let Some(code) = ErrorCode::ALL.iter().find(|c| c.name() == name) else { continue };
            let status: u16 = text[at - 3..at].parse().expect("three digits");
            let statuses = [code.http_status(), code.api_status()].map(|s| s.map(|s| s.as_u16()));
            if !statuses.contains(&Some(status)) {
                wrong.push(format!("{relative}: {status} `{name}` (registry: {:?})", code.http_status()));
            }
        }
    }
    assert!(wrong.is_empty(), "statuses that disagree with core/src/error.rs: {wrong:#?}");
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

#[test]
fn openapi_document_is_current() {
    check("docs/openapi.json", &format!("{}\n", wsguard::api::openapi_document()));
}

/// docs/API.md "Errors": every code the server API can answer, with its status.
fn api_error_table() -> String {
    let mut codes: Vec<(u16, ErrorCode)> =
        ErrorCode::ALL.iter().filter_map(|c| c.api_status().map(|s| (s.as_u16(), *c))).collect();
    codes.sort_by_key(|(status, code)| (code.number() / 1000 != 6, *status, code.number()));
    let mut table = String::from("| Status | Number | Name | Meaning |\n|---:|---:|---|---|\n");
    for (status, code) in codes {
        table.push_str(&format!("| {status} | {} | `{}` | {} |\n", code.number(), code.name(), code.description()));
    }
    table
}

#[test]
fn api_doc_generated_table_is_current() {
    const API: &str = "docs/API.md";
    let text = doc(API);
    check(API, &with_region(API, &text, "api-errors", &api_error_table()));
}
