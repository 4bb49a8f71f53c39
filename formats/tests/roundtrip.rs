//! Every export format that import also reads gives back the same entries, byte for byte; the
//! other targets are checked against the tools that read them (a POSIX shell, a YAML parser).

use std::collections::HashSet;
use std::process::Command;

use base64::Engine as _;
use proptest::prelude::*;
use zopp_formats::{
    detect, parse, render, Entry, ExportFormat, ExportOptions, ImportFormat, ImportOptions,
};

/// Characters that stress quoting: quotes, escapes, comment and interpolation markers, every
/// kind of line break and blank, a BOM, NUL, and multi-byte text.
const TRICKY: &[char] = &[
    'a', 'Z', '0', ' ', ' ', '\t', '\n', '\r', '"', '\'', '`', '\\', '$', '{', '}', '=', '#', ':',
    '-', '|', '>', '&', '*', '!', '%', '@', '?', ',', '[', ']', '~', '\0', '\u{7}', '\u{7f}',
    '\u{85}', '\u{a0}', '\u{2028}', '\u{2029}', '\u{feff}', 'é', 'ß', '€', '日', '🔑',
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(TRICKY), 0..24)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        any::<String>(),
        // Long text, so emitters that fold or wrap lines at 80 columns are exercised.
        prop::collection::vec(prop::sample::select(TRICKY), 80..400)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        prop::collection::vec("[a-z]{1,12}", 10..60).prop_map(|words| words.join(" ")),
        Just(String::new()),
        Just(String::from("true")),
        Just(String::from("1.50")),
        Just(String::from("null")),
        Just(String::from("- item")),
        Just(String::from(" leading and trailing ")),
        Just(String::from("${OTHER} $$ \\$")),
    ]
}

fn entries() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,15}", value()), 0..8).prop_map(|pairs| {
        let mut seen = HashSet::new();
        pairs
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect()
    })
}

fn to_entries(pairs: &[(String, String)]) -> Vec<Entry> {
    pairs
        .iter()
        .map(|(k, v)| Entry::new(k.as_str(), v.as_str()))
        .collect()
}

fn round_trip(pairs: &[(String, String)], export: ExportFormat, import: ImportFormat) {
    let rendered = render(&to_entries(pairs), export, &ExportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let back = parse(&rendered, import, &ImportOptions::new("rendered"))
        .unwrap_or_else(|e| panic!("{e}\n--- rendered:\n{}", rendered.as_str()));
    let back: Vec<(String, String)> = back
        .into_iter()
        .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
        .collect();
    assert_eq!(back, pairs, "--- rendered:\n{}", rendered.as_str());
    if !pairs.is_empty() {
        assert_eq!(detect(&rendered), Some(import), "{}", rendered.as_str());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn dotenv_round_trips(pairs in entries()) {
        round_trip(&pairs, ExportFormat::Dotenv, ImportFormat::Dotenv);
    }

    #[test]
    fn json_round_trips(pairs in entries()) {
        round_trip(&pairs, ExportFormat::Json, ImportFormat::Json);
    }

    #[test]
    fn yaml_round_trips(pairs in entries()) {
        round_trip(&pairs, ExportFormat::Yaml, ImportFormat::Yaml);
    }

    #[test]
    fn k8s_data_decodes_to_the_values(pairs in entries()) {
        let options = ExportOptions { k8s_name: Some("app-secrets"), k8s_namespace: Some("prod") };
        let rendered = render(&to_entries(&pairs), ExportFormat::K8s, &options).unwrap();
        let manifest: serde_norway::Value = serde_norway::from_str(&rendered).unwrap();
        prop_assert_eq!(&manifest["apiVersion"], "v1");
        prop_assert_eq!(&manifest["kind"], "Secret");
        prop_assert_eq!(&manifest["metadata"]["name"], "app-secrets");
        prop_assert_eq!(&manifest["metadata"]["namespace"], "prod");
        let data = manifest["data"].as_mapping().expect("data is a map");
        prop_assert_eq!(data.len(), pairs.len());
        for (key, value) in &pairs {
            let encoded = data[key.as_str()].as_str().expect("base64 text");
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
            prop_assert_eq!(decoded, value.as_bytes());
        }
    }

    #[test]
    fn docker_lines_hold_the_values_or_name_the_key(pairs in entries()) {
        match render(&to_entries(&pairs), ExportFormat::Docker, &ExportOptions::default()) {
            Ok(rendered) => {
                let lines: Vec<&str> = rendered.split_terminator('\n').collect();
                prop_assert_eq!(lines.len(), pairs.len());
                for (line, (key, value)) in lines.iter().zip(&pairs) {
                    prop_assert_eq!(line.split_once('='), Some((key.as_str(), value.as_str())));
                }
            }
            Err(e) => {
                let bad = pairs
                    .iter()
                    .find(|(_, v)| v.contains(['\n', '\r', '\0']))
                    .expect("only line breaks and NUL are refused here");
                prop_assert!(e.to_string().contains(&format!("value of {} ", bad.0)), "{}", e);
            }
        }
    }
}

/// Runs `script` with `sh` and returns what it printed.
fn sh(script: &str) -> Vec<u8> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("a POSIX sh is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

proptest! {
    // Each case spawns a shell, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shell_export_survives_a_real_shell(pairs in entries()) {
        let pairs: Vec<(String, String)> =
            pairs.into_iter().filter(|(_, v)| !v.contains('\0')).collect();
        let rendered = render(&to_entries(&pairs), ExportFormat::Shell, &ExportOptions::default())
            .unwrap();
        let mut script = rendered.to_string();
        for (key, _) in &pairs {
            script.push_str(&format!("printf '%s\\0' \"${key}\"\n"));
        }
        let printed = sh(&script);
        let expected: Vec<u8> = pairs
            .iter()
            .flat_map(|(_, v)| v.bytes().chain([0]))
            .collect();
        prop_assert_eq!(printed, expected);
    }
}

#[test]
fn shell_quoting_defeats_injection() {
    let pairs = vec![(
        String::from("EVIL"),
        String::from("'; touch /tmp/zopp-pwned; echo '$(id)`id`"),
    )];
    let rendered = render(
        &to_entries(&pairs),
        ExportFormat::Shell,
        &ExportOptions::default(),
    )
    .unwrap();
    let printed = sh(&format!("{}printf '%s' \"$EVIL\"", rendered.as_str()));
    assert_eq!(printed, pairs[0].1.as_bytes());
}

#[test]
fn keys_yaml_would_read_as_other_types_round_trip() {
    let pairs: Vec<(String, String)> = ["true", "null", "y", "NO", "on", "_1", "Yes", "e1", "nan"]
        .iter()
        .map(|k| ((*k).to_owned(), format!("value of {k}")))
        .collect();
    for (export, import) in [
        (ExportFormat::Dotenv, ImportFormat::Dotenv),
        (ExportFormat::Json, ImportFormat::Json),
        (ExportFormat::Yaml, ImportFormat::Yaml),
    ] {
        round_trip(&pairs, export, import);
    }
}
