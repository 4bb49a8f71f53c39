//! Test vectors in threat-model/vectors/ (format in threat-model/FORMAT.md §11).
//!
//! `committed_vectors_match_the_generator` regenerates every vector and diffs it with the
//! committed file; run it with `ZOPP_REGENERATE_VECTORS=1` to rewrite the directory instead.
//! `committed_vectors_check_out` reads each committed file and checks it with zopp-crypto and
//! with an independent reference implementation, without the generator.

mod adversarial;
mod check;
mod generate;
mod json;
mod reference;
mod statements;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../threat-model/vectors")
}

fn committed() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(vectors_dir()).expect("threat-model/vectors exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name")
                .to_string();
            out.insert(name, fs::read_to_string(&path).expect("readable vector"));
        }
    }
    out
}

fn generated() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in generate::all() {
        let file = format!("{}.json", v.name);
        let previous = out.insert(file.clone(), v.to_json().render());
        assert!(previous.is_none(), "two vectors are called {file}");
    }
    out
}

#[test]
fn committed_vectors_match_the_generator() {
    let fresh = generated();
    if std::env::var_os("ZOPP_REGENERATE_VECTORS").is_some_and(|v| v == "1") {
        for stale in committed().keys().filter(|k| !fresh.contains_key(*k)) {
            fs::remove_file(vectors_dir().join(stale)).expect("remove stale vector");
        }
        for (file, text) in &fresh {
            fs::write(vectors_dir().join(file), text).expect("write vector");
        }
        return;
    }
    let old = committed();
    let mut problems = Vec::new();
    for (file, text) in &fresh {
        match old.get(file) {
            None => problems.push(format!("{file}: not committed")),
            Some(t) if t != text => problems.push(format!("{file}: differs from the generator")),
            Some(_) => {}
        }
    }
    for file in old.keys().filter(|k| !fresh.contains_key(*k)) {
        problems.push(format!("{file}: committed but no longer generated"));
    }
    assert!(
        problems.is_empty(),
        "threat-model/vectors is out of date (rerun with ZOPP_REGENERATE_VECTORS=1 if the \
         format change is intended):\n{}",
        problems.join("\n")
    );
}

#[test]
fn committed_vectors_check_out() {
    let files = committed();
    assert!(!files.is_empty(), "no vectors committed");
    let mut failures = Vec::new();
    for (file, text) in &files {
        let result = serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| {
                let name = v.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                if format!("{name}.json") != *file {
                    return Err(format!("`name` is {name:?}"));
                }
                check::check(&v)
            });
        if let Err(e) = result {
            failures.push(format!("{file}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cases FORMAT.md promises, each with the outcome it must show.
const REQUIRED: &[(&str, &str)] = &[
    ("name-digest-ok", "ok"),
    ("envelope-seal-ok", "ok"),
    ("envelope-open-bad-tag", "decryption_failed"),
    ("envelope-open-wrong-environment", "decryption_failed"),
    ("envelope-open-wrong-name-digest", "decryption_failed"),
    ("envelope-open-wrong-version", "decryption_failed"),
    ("envelope-open-wrong-key-epoch", "decryption_failed"),
    ("envelope-open-unknown-version", "unsupported_format"),
    ("envelope-open-unknown-algorithm", "unsupported_format"),
    ("envelope-open-truncated", "malformed"),
    ("wrap-recipient-ok", "ok"),
    ("wrap-recipient-wrong-recipient-id", "decryption_failed"),
    (
        "wrap-recipient-low-order-ephemeral-zero",
        "decryption_failed",
    ),
    (
        "wrap-recipient-low-order-ephemeral-one",
        "decryption_failed",
    ),
    (
        "wrap-recipient-low-order-ephemeral-order8-a",
        "decryption_failed",
    ),
    ("wrap-recipient-low-order-recipient", "invalid_public_key"),
    ("wrap-child-ok", "ok"),
    ("wrap-child-wrong-parent-id", "decryption_failed"),
    ("request-signature-ok", "ok"),
    ("request-signature-altered-body", "bad_signature"),
    ("request-signature-altered-method", "bad_signature"),
    ("version-claims-ok", "ok"),
    ("audit-chain-ok", "ok"),
    ("keyfile-plain-ok", "ok"),
    ("keyfile-sealed-ok", "ok"),
    ("keyfile-sealed-wrong-passphrase", "decryption_failed"),
    ("token-ok", "ok"),
    ("token-bad-prefix", "malformed"),
    ("token-truncated", "malformed"),
    ("token-version-1", "unsupported_format"),
    ("token-binding-environment-without-project", "malformed"),
];

#[test]
fn vectors_cover_every_required_case_and_are_mostly_negative() {
    let vectors = generate::all();
    let by_name: BTreeMap<&str, &str> = vectors
        .iter()
        .map(|v| (v.name.as_str(), v.expected))
        .collect();
    for (name, expected) in REQUIRED {
        assert_eq!(by_name.get(name), Some(expected), "{name}");
    }
    let negative = vectors.iter().filter(|v| v.expected != "ok").count();
    assert!(
        negative * 3 > vectors.len() * 2,
        "{negative} of {} vectors are negative",
        vectors.len()
    );
    let sections: BTreeSet<&str> = vectors.iter().map(|v| v.section).collect();
    for s in [
        "3.2", "3.3", "3.4", "4", "5", "5.1", "5.2", "6.1", "6.2", "7", "8", "9", "10",
    ] {
        assert!(sections.contains(s), "no vector for FORMAT.md §{s}");
    }
}

#[test]
fn generation_is_deterministic() {
    assert_eq!(generated(), generated());
}

/// The text of FORMAT.md's section `number` (e.g. "3.2"), up to the next heading.
fn format_section<'a>(doc: &'a str, number: &str) -> Option<&'a str> {
    let mut start = None;
    let mut offset = 0;
    for line in doc.split_inclusive('\n') {
        if line.starts_with('#') {
            if let Some(s) = start {
                return Some(&doc[s..offset]);
            }
            let heading = line.trim_start_matches('#').trim_start();
            let num = heading.split_whitespace().next().unwrap_or_default();
            if num.trim_end_matches('.') == number {
                start = Some(offset);
            }
        }
        offset += line.len();
    }
    start.map(|s| &doc[s..])
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head) && (head.len()..=name.len()).any(|i| glob(tail, &name[i..]))
        }
    }
}

#[test]
fn format_md_lists_every_vector() {
    let doc = fs::read_to_string(vectors_dir().join("../FORMAT.md")).expect("FORMAT.md exists");
    let mut missing = Vec::new();
    for v in generate::all() {
        let file = format!("{}.json", v.name);
        let Some(text) = format_section(&doc, v.section) else {
            missing.push(format!("{file}: FORMAT.md has no section {}", v.section));
            continue;
        };
        let listed = text
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.ends_with(".json"))
            .any(|pattern| glob(pattern, &file));
        if !listed {
            missing.push(format!("{file}: not listed in FORMAT.md §{}", v.section));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
