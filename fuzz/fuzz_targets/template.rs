//! The reference resolver and template renderer (`${KEY}`, `${zopp://project/env/KEY}`, `$${`)
//! on arbitrary templates and values: nothing may panic, cycles and oversized results are
//! errors, and rendering is deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zopp_formats::template::{missing_environments, references};
use zopp_formats::{
    render_template, resolve_environment, Entry, EnvironmentPath, RemoteEnvironments, SecretValue,
};

/// Splits `text` into a template and up to eight `NAME=value` entries (one per line after the
/// first `\0`), half of them in this environment and half in `p/e`.
fn split(text: &str) -> (&str, Vec<Entry>, Vec<Entry>) {
    let (template, rest) = text.split_once('\0').unwrap_or((text, ""));
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (i, line) in rest.lines().take(8).enumerate() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let e = Entry::new(name, SecretValue::new(value.to_owned()));
        if i % 2 == 0 {
            local.push(e);
        } else {
            remote.push(e);
        }
    }
    (template, local, remote)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, local, remote_entries) = split(text);
    let _ = references(template);
    let mut remote = RemoteEnvironments::new();
    remote.insert(EnvironmentPath::new("p", "e"), remote_entries);
    let _ = missing_environments(&local, &remote);
    let _ = resolve_environment(&local, &remote);
    let first = render_template(template, &local, &remote);
    let second = render_template(template, &local, &remote);
    match (first, second) {
        (Ok(a), Ok(b)) => assert_eq!(a.as_str(), b.as_str()),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("rendering the same template twice gave different outcomes"),
    }
});
