//! The hand-written docs checked against the code, where a check can be exact: tables of contents
//! against headings, links against the files and headings they point to, the config sections
//! against the schema, the metrics and event kinds against the server, the core's areas against
//! the README and ARCHITECTURE.md. Generated files have their own drift tests (`generated.rs`).
#![allow(missing_docs)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use wsguard::Config;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(markdown: &str) -> impl Iterator<Item = &str> {
    let mut is_fenced = false;
    markdown.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            is_fenced = !is_fenced;
            return false;
        }
        !is_fenced
    })
}

/// Every heading, as (level, text).
fn headings(markdown: &str) -> Vec<(usize, String)> {
    prose_lines(markdown)
        .filter_map(|line| {
            let level = line.chars().take_while(|c| *c == '#').count();
            let text = line.get(level..)?.strip_prefix(' ')?;
            (level > 0).then(|| (level, text.trim().to_string()))
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` removed,
/// spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a document, with GitHub's `-1`, `-2` suffixes for repeated headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for (_, text) in headings(markdown) {
        let base = slug(&text);
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    anchors
}

/// The targets of the inline links `[text](target)` of some lines.
fn link_targets<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut targets = Vec::new();
    for line in lines {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
            rest = &rest[end..];
        }
    }
    targets
}

/// The Markdown files a reader navigates: the root ones, docs/ and its archive.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string(), "ARCHITECTURE.md".to_string()];
    for dir in ["docs", "docs/archive"] {
        let mut names: Vec<String> = std::fs::read_dir(repo_root().join(dir))
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".md"))
            .map(|name| format!("{dir}/{name}"))
            .collect();
        names.sort();
        files.extend(names);
    }
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = Path::new(&file).parent().unwrap_or(Path::new("")).to_path_buf();
        for target in link_targets(prose_lines(&text)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((target.as_str(), ""));
            let linked = if path.is_empty() { PathBuf::from(&file) } else { dir.join(path) };
            let absolute = repo_root().join(&linked);
            if !absolute.exists() {
                broken.push(format!("{file}: {target} (no such file)"));
                continue;
            }
            if !anchor.is_empty() {
                let linked_text = std::fs::read_to_string(&absolute).unwrap_or_default();
                if !anchors(&linked_text).contains(anchor) {
                    broken.push(format!("{file}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} links found: is the link parser broken?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The anchors linked from a document's table of contents: the list items before its first `##`
/// heading (none when it has no such list).
fn contents_links(markdown: &str) -> BTreeSet<String> {
    let preamble = prose_lines(markdown).take_while(|line| !line.starts_with("## "));
    // Items and their continuation lines (indented); not the prose around the list.
    let items = preamble.filter(|line| line.starts_with("- ") || line.starts_with("  "));
    link_targets(items).into_iter().filter_map(|t| t.strip_prefix('#').map(str::to_string)).collect()
}

/// A document with a table of contents lists every one of its `##` sections there.
#[test]
fn every_contents_list_names_every_section() {
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let listed = contents_links(&text);
        if listed.is_empty() {
            continue;
        }
        checked += 1;
        let missing: Vec<String> = headings(&text)
            .into_iter()
            .filter(|(level, _)| *level == 2)
            .map(|(_, heading)| slug(&heading))
            .filter(|anchor| !listed.contains(anchor))
            .collect();
        assert!(missing.is_empty(), "{file}'s table of contents lacks {missing:?}");
    }
    assert!(checked >= 3, "only {checked} documents with a table of contents found");
}

/// CONFIG.md's table of contents links every `##` heading and every section under "Sections",
/// and every top-level key of the config schema has its section.
#[test]
fn config_doc_contents_match_its_sections_and_the_schema() {
    let doc = read("docs/CONFIG.md");
    let listed = contents_links(&doc);
    let all = headings(&doc);
    let mut expected = BTreeSet::new();
    let mut sections = BTreeSet::new();
    let mut is_in_sections = false;
    for (level, text) in &all {
        match level {
            2 => {
                is_in_sections = text == "Sections";
                expected.insert(slug(text));
            }
            3 if is_in_sections => {
                expected.insert(slug(text));
                sections.insert(text.trim_matches('`').trim_matches(|c| c == '[' || c == ']').to_string());
            }
            _ => {}
        }
    }
    let missing: Vec<_> = expected.difference(&listed).collect();
    assert!(missing.is_empty(), "docs/CONFIG.md's table of contents lacks {missing:?}");
    let doc_anchors = anchors(&doc);
    let dangling: Vec<_> = listed.difference(&doc_anchors).collect();
    assert!(dangling.is_empty(), "docs/CONFIG.md's table of contents links no heading: {dangling:?}");

    let schema = Config::json_schema();
    let keys: BTreeSet<String> =
        schema["properties"].as_object().expect("the schema's top-level properties").keys().cloned().collect();
    assert!(keys.contains("server") && keys.contains("channels"), "unexpected schema shape: {keys:?}");
    let undocumented: Vec<_> = keys.difference(&sections).collect();
    assert!(undocumented.is_empty(), "docs/CONFIG.md has no `### [section]` for {undocumented:?}");
    let unknown: Vec<_> = sections.difference(&keys).collect();
    assert!(unknown.is_empty(), "docs/CONFIG.md documents sections the schema lacks: {unknown:?}");
}

/// `CamelCase` -> `camel_case`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The source text of `pub enum Event {`, wherever in `core/src` it lives.
fn event_enum_source() -> String {
    let mut found: Vec<String> = core_sources()
        .into_iter()
        .filter_map(|(_, text)| {
            let body = &text[text.find("\npub enum Event {")?..];
            Some(body[..body.find("\n}").expect("the end of `enum Event`")].to_string())
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one `pub enum Event {{` in core/src");
    found.remove(0)
}

#[test]
fn operations_doc_lists_every_event_kind() {
    // The variants are the lines indented once that start with a type name; `kind` is their
    // snake_case (`#[serde(tag = "kind", rename_all = "snake_case")]`).
    let source = event_enum_source();
    let kinds: Vec<String> = source
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("    ")?;
            let ident: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
            (name.starts_with(|c: char| c.is_ascii_uppercase()) && !ident.is_empty()).then(|| snake_case(&ident))
        })
        .collect();
    assert!(kinds.len() >= 12, "found only {kinds:?} in `enum Event`: is the parser broken?");
    let doc = read("docs/OPERATIONS.md");
    let missing: Vec<_> = kinds.iter().filter(|kind| !doc.contains(&format!("| `{kind}` |"))).collect();
    assert!(missing.is_empty(), "docs/OPERATIONS.md's events table lacks {missing:?}");
}

/// The `.rs` files under `core/src`, with their text.
fn core_sources() -> Vec<(PathBuf, String)> {
    fn visit(dir: &Path, found: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("list core/src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                found.push((path, text));
            }
        }
    }
    let mut found = Vec::new();
    visit(&repo_root().join("core/src"), &mut found);
    found
}

/// The names passed to `registry.register(...)` anywhere in `core/src`: every metric the server
/// registers, whether or not it has a sample yet.
fn registered_metric_names() -> Vec<String> {
    let mut names = Vec::new();
    for (_, text) in core_sources() {
        let mut rest = text.as_str();
        while let Some(start) = rest.find("registry.register(") {
            rest = rest[start + "registry.register(".len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                names.push(literal[..literal.find('"').unwrap_or(0)].to_string());
            }
        }
    }
    names
}

#[tokio::test]
async fn operations_doc_lists_every_metric() {
    let doc = read("docs/OPERATIONS.md");
    let is_listed = |name: &str| doc.contains(&format!("| `{name}` |"));

    // Every registered metric, under its exported name (`wsguard_` + name, `_total` on counters).
    let registered = registered_metric_names();
    assert!(registered.len() >= 20, "found only {registered:?} registered: is the parser broken?");
    let missing: Vec<_> = registered
        .iter()
        .filter(|name| !is_listed(&format!("wsguard_{name}")) && !is_listed(&format!("wsguard_{name}_total")))
        .collect();
    assert!(missing.is_empty(), "docs/OPERATIONS.md's metrics table lacks {missing:?}");

    // The exact names a running server exports (families without a sample yet are not printed),
    // which also shows the prefix and suffix rule above is the server's.
    let server = support::Setup::new().start().await;
    let exported: Vec<String> = server
        .handle
        .metrics_text()
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            // OpenMetrics names a counter's family without the `_total` its samples carry.
            Some(if kind == "counter" { format!("{name}_total") } else { name.to_string() })
        })
        .collect();
    assert!(exported.len() >= 10, "found only {exported:?} in /metrics");
    for name in &exported {
        assert!(is_listed(name), "docs/OPERATIONS.md's metrics table lacks {name}");
        let base = name.strip_prefix("wsguard_").expect("the wsguard_ prefix");
        assert!(
            registered.iter().any(|r| r == base || format!("{r}_total") == base),
            "{name} is exported but its registration was not found"
        );
    }
}

/// The modules `core/src/lib.rs` declares.
fn core_areas() -> Vec<String> {
    read("core/src/lib.rs")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("pub mod ").or_else(|| line.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_string())
        })
        .filter(|name| name != "fuzzing")
        .collect()
}

#[test]
fn readme_layout_and_architecture_name_every_core_area() {
    let areas = core_areas();
    assert!(areas.len() >= 10, "found only {areas:?} in core/src/lib.rs");
    let readme = read("README.md");
    let layout: String = readme
        .lines()
        .skip_while(|line| !line.starts_with("core/"))
        .take_while(|line| line.starts_with("core/") || line.starts_with(' '))
        .collect::<Vec<_>>()
        .join(" ");
    let words: BTreeSet<&str> =
        layout.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
    let missing: Vec<_> = areas.iter().filter(|a| !words.contains(a.as_str())).collect();
    assert!(missing.is_empty(), "README.md's layout line for core/ does not name {missing:?}");
    let architecture = read("ARCHITECTURE.md");
    let missing: Vec<_> = areas.iter().filter(|a| !architecture.contains(&format!("**`{a}`**"))).collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md's code map has no entry for {missing:?}");
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Refusal table, in the order the checks run"), "refusal-table-in-the-order-the-checks-run");
    assert_eq!(slug("`[[channels]]`"), "channels");
    assert_eq!(slug("Fixed limits (not configurable)"), "fixed-limits-not-configurable");
    assert_eq!(slug("Fan-out: the kernel's share decides"), "fan-out-the-kernels-share-decides");
    assert_eq!(snake_case("PolicyDryRunDenied"), "policy_dry_run_denied");
}
