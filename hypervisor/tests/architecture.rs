//! The module structure docs/ARCHITECTURE.md promises, checked against the sources:
//! the layer order (a module uses only modules below it, so no two top-level modules
//! use each other), one name per type, and typed errors.
//!
//! The order is the table under "## Layers" in docs/ARCHITECTURE.md: one row per
//! top-level module of `hypervisor/src`, lowest first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module names in the first column of the "## Layers" table, in order.
fn declared_layers() -> Vec<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md");
    let text = fs::read_to_string(&doc).expect("docs/ARCHITECTURE.md is readable");
    let section = text.split("\n## Layers").nth(1).expect("docs/ARCHITECTURE.md has a '## Layers' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section.lines().filter(|l| l.starts_with("| `")).filter_map(|l| l.split('`').nth(1).map(str::to_string)).collect()
}

/// Every `.rs` file under `dir`, with its module path relative to the crate root.
fn rust_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<String>)>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("readable source dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path.strip_prefix(src_dir()).expect("under src").with_extension("");
            let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            out.push((path, module));
        }
    }
}

fn all_files() -> Vec<(PathBuf, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.retain(|(_, m)| !matches!(m.first().map(String::as_str), Some("lib" | "main")));
    files
}

/// The source without comments (line comments, doc comments) and string literals, so
/// that a path in a comment or a message is not taken for a dependency.
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The top-level modules a file refers to: `crate::x`, `crate::{x, ...}`, and `super::`
/// chains that climb out of the file's own top-level module.
fn referenced_tops(code: &str, module: &[String], is_mod_rs: bool) -> BTreeSet<String> {
    let mut tops = BTreeSet::new();
    let bytes = code.as_bytes();
    let word = |at: usize| -> String { code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut i = 0;
    while let Some(pos) = code[i..].find("crate::") {
        let at = i + pos + "crate::".len();
        if at > "crate::".len() {
            let before = bytes[at - "crate::".len() - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                i = at;
                continue;
            }
        }
        if code[at..].starts_with('{') {
            let end = code[at..].find('}').map_or(code.len(), |e| at + e);
            for part in code[at + 1..end].split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    tops.insert(name);
                }
            }
        } else {
            tops.insert(word(at));
        }
        i = at;
    }
    // `super::` from a file: a file's own module is `module`; `mod.rs` files and plain
    // files both name their parent with one `super`.
    let depth = module.len();
    let mut i = 0;
    while let Some(pos) = code[i..].find("super::") {
        let start = i + pos;
        let mut at = start;
        let mut climbs = 0;
        while code[at..].starts_with("super::") {
            climbs += 1;
            at += "super::".len();
        }
        let _ = is_mod_rs;
        if climbs >= depth {
            let name = word(at);
            if !name.is_empty() {
                tops.insert(name);
            }
        }
        i = at;
    }
    tops
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let layers = declared_layers();
    let rank: BTreeMap<&str, usize> = layers.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let files = all_files();
    let tops: BTreeSet<String> = files.iter().filter_map(|(_, m)| m.first().cloned()).collect();

    let undeclared: Vec<_> = tops.iter().filter(|t| !rank.contains_key(t.as_str())).collect();
    assert!(undeclared.is_empty(), "modules missing from the Layers table of docs/ARCHITECTURE.md: {undeclared:?}");
    let stale: Vec<_> = layers.iter().filter(|l| !tops.contains(*l)).collect();
    assert!(stale.is_empty(), "the Layers table names modules that do not exist: {stale:?}");

    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (path, module) in &files {
        let code = code_only(&fs::read_to_string(path).expect("readable source"));
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
        let from = &module[0];
        for to in referenced_tops(&code, module, is_mod_rs) {
            if &to != from && rank.contains_key(to.as_str()) {
                let file = path.strip_prefix(src_dir()).unwrap_or(path).display().to_string();
                edges.entry((from.clone(), to)).or_default().push(file);
            }
        }
    }

    let mut problems = Vec::new();
    for ((from, to), files) in &edges {
        if rank[to.as_str()] > rank[from.as_str()] {
            problems.push(format!("{from} uses {to}, which is above it (in {})", files.join(", ")));
        }
        if from < to && edges.contains_key(&(to.clone(), from.clone())) {
            problems.push(format!("{from} and {to} use each other"));
        }
    }
    assert!(problems.is_empty(), "layer order broken:\n  {}", problems.join("\n  "));
}

/// Test code included: a fake named like another module's type is as confusing to
/// read as a second production type.
#[test]
fn no_type_name_is_defined_twice() {
    let mut defs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, _) in all_files() {
        let source = fs::read_to_string(&path).expect("readable source");
        for (n, line) in source.lines().enumerate().map(|(i, l)| (i + 1, l)) {
            let t = line.trim_start();
            let t = t.strip_prefix("pub ").or_else(|| t.strip_prefix("pub(crate) ")).unwrap_or(t);
            // Associated types (`type X;` in a trait, `type X = ..;` in an impl) are
            // indented; only column-0 aliases define a name.
            let kinds: &[&str] = if line.starts_with(' ') {
                &["struct ", "enum ", "trait ", "union "]
            } else {
                &["struct ", "enum ", "trait ", "union ", "type "]
            };
            for kind in kinds {
                if let Some(rest) = t.strip_prefix(kind) {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        let file = path.strip_prefix(src_dir()).unwrap_or(&path).display().to_string();
                        defs.entry(name).or_default().push(format!("{file}:{n}"));
                    }
                }
            }
        }
    }
    let twice: Vec<String> =
        defs.iter().filter(|(_, at)| at.len() > 1).map(|(name, at)| format!("{name}: {}", at.join(", "))).collect();
    assert!(twice.is_empty(), "type names defined more than once:\n  {}", twice.join("\n  "));
}

#[test]
fn errors_are_typed_not_strings() {
    let mut found = Vec::new();
    for (path, _) in all_files() {
        let code = code_only(&fs::read_to_string(&path).expect("readable source"));
        for (n, line) in code.lines().enumerate() {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            let mut rest = compact.as_str();
            while let Some(at) = rest.find("Result<") {
                let after = &rest[at + "Result<".len()..];
                // The error type is what follows the first top-level comma.
                let mut depth = 0;
                let mut err = None;
                for (i, c) in after.char_indices() {
                    match c {
                        '<' | '(' | '[' => depth += 1,
                        '>' | ')' | ']' if depth == 0 => break,
                        '>' | ')' | ']' => depth -= 1,
                        ',' if depth == 0 => {
                            err = Some(&after[i + 1..]);
                            break;
                        }
                        _ => {}
                    }
                }
                if let Some(err) = err
                    && (err.starts_with("String>") || err.starts_with("alloc::string::String>"))
                {
                    let file = path.strip_prefix(src_dir()).unwrap_or(&path).display().to_string();
                    found.push(format!("{file}:{}", n + 1));
                }
                rest = after;
            }
        }
    }
    assert!(found.is_empty(), "Result<_, String> (use an error enum):\n  {}", found.join("\n  "));
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The parsers above must notice the patterns they police; a checker that sees
    // nothing would pass everything.
    let code = code_only("use crate::{vm, hw::Bdf};\n// crate::switcher in a comment\nlet s = \"crate::boot\";\n");
    let tops = referenced_tops(&code, &["devices".into(), "x".into()], false);
    assert_eq!(tops, BTreeSet::from(["hw".to_string(), "vm".to_string()]));
    let up = referenced_tops("use super::super::vm::Vm;", &["devices".into(), "x".into()], false);
    assert!(up.contains("vm"));
    let inner = referenced_tops("use super::bus::Bus;", &["devices".into(), "x".into()], false);
    assert!(inner.is_empty());
    assert!(declared_layers().len() >= 8, "the Layers table was found");
}
