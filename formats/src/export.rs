//! Export targets: turn [`Entry`]s into a file another tool reads.
//!
//! A value a target cannot hold exactly is an error naming its key, never a silent change.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::str::FromStr;

use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{dotenv, json, yaml, Entry};

/// Largest Kubernetes Secret payload: the API server refuses a Secret whose data exceeds 1 MiB.
pub const K8S_SECRET_MAX_DATA: usize = 1024 * 1024;

/// Longest `KEY=VALUE` line `docker run --env-file` reads (its line scanner stops at 64 KiB).
pub const DOCKER_MAX_LINE: usize = 64 * 1024 - 1;

/// A target `zopp secret export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExportFormat {
    /// A dotenv file that [`crate::parse`] reads back byte for byte.
    Dotenv,
    /// A flat JSON object, in entry order.
    Json,
    /// A flat YAML map, in entry order.
    Yaml,
    /// `export KEY='value'` lines for POSIX shells (`eval "$(zopp secret export --format shell)"`).
    Shell,
    /// A Kubernetes `v1/Secret` manifest with base64 `data`.
    K8s,
    /// A `docker run --env-file` file: literal `KEY=VALUE` lines.
    Docker,
}

impl ExportFormat {
    /// Every export format, in the order `--help` lists them.
    pub const ALL: [ExportFormat; 6] = [
        ExportFormat::Dotenv,
        ExportFormat::Json,
        ExportFormat::Yaml,
        ExportFormat::Shell,
        ExportFormat::K8s,
        ExportFormat::Docker,
    ];

    /// The name used on the command line (`--format NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Dotenv => "dotenv",
            ExportFormat::Json => "json",
            ExportFormat::Yaml => "yaml",
            ExportFormat::Shell => "shell",
            ExportFormat::K8s => "k8s",
            ExportFormat::Docker => "docker",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--format` name that is not an export format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown export format {0:?} (expected dotenv, json, yaml, shell, k8s or docker)")]
pub struct UnknownExportFormat(pub String);

impl FromStr for ExportFormat {
    type Err = UnknownExportFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dotenv" | "env" | ".env" => Ok(ExportFormat::Dotenv),
            "json" => Ok(ExportFormat::Json),
            "yaml" | "yml" => Ok(ExportFormat::Yaml),
            "shell" | "sh" => Ok(ExportFormat::Shell),
            "k8s" | "kubernetes" => Ok(ExportFormat::K8s),
            "docker" => Ok(ExportFormat::Docker),
            _ => Err(UnknownExportFormat(s.to_owned())),
        }
    }
}

/// Target-specific settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions<'a> {
    /// `k8s` only: the Secret's `metadata.name` (`--name`, required for k8s).
    pub k8s_name: Option<&'a str>,
    /// `k8s` only: the Secret's `metadata.namespace` (`--namespace`), omitted when `None`.
    pub k8s_namespace: Option<&'a str>,
}

/// Why entries could not be exported. No variant ever holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A key cannot be written in this format.
    #[error("cannot export {key:?} as {format}: {problem}")]
    Key {
        /// The target.
        format: ExportFormat,
        /// The offending key.
        key: String,
        /// Which rule of the target it breaks.
        problem: &'static str,
    },
    /// A value cannot be written in this format without changing it.
    #[error("cannot export the value of {key} as {format}: {problem}")]
    Value {
        /// The target.
        format: ExportFormat,
        /// The key whose value does not fit.
        key: String,
        /// What the value holds that the target cannot.
        problem: &'static str,
    },
    /// Two entries have the same name, which no target can hold.
    #[error("cannot export: duplicate key {0}")]
    DuplicateKey(String),
    /// A k8s export was asked for without `--name`.
    #[error("a k8s Secret needs a name: pass --name")]
    MissingK8sName,
    /// `--name` or `--namespace` is not a valid Kubernetes name.
    #[error("invalid k8s {field} {value:?}: {problem}")]
    InvalidK8sName {
        /// `name` or `namespace`.
        field: &'static str,
        /// The value given.
        value: String,
        /// Which rule it breaks.
        problem: &'static str,
    },
    /// The whole export exceeds what the target accepts.
    #[error("cannot export as {format}: {problem}")]
    TooLarge {
        /// The target.
        format: ExportFormat,
        /// Which limit is exceeded.
        problem: &'static str,
    },
}

/// Writes `entries`, in order, as `format`.
///
/// # Errors
/// A duplicate name; a key the target cannot hold (shell variable names, Kubernetes data keys,
/// dotenv keys); a value the target cannot hold (a line break in a docker env-file, a NUL byte
/// in a shell or docker environment); a missing or invalid k8s name; a k8s Secret over 1 MiB.
pub fn render(
    entries: &[Entry],
    format: ExportFormat,
    options: &ExportOptions<'_>,
) -> Result<Zeroizing<String>, ExportError> {
    let mut names = HashSet::with_capacity(entries.len());
    for entry in entries {
        if !names.insert(entry.name.as_str()) {
            return Err(ExportError::DuplicateKey(entry.name.clone()));
        }
    }
    match format {
        ExportFormat::Dotenv => render_dotenv(entries),
        ExportFormat::Json => Ok(exact(|out| json::render(entries, out))),
        ExportFormat::Yaml => Ok(exact(|out| yaml::render(entries, out))),
        ExportFormat::Shell => render_shell(entries),
        ExportFormat::K8s => render_k8s(entries, options),
        ExportFormat::Docker => render_docker(entries),
    }
}

/// Counts the bytes `write` produces, then runs it again into a buffer of exactly that size, so
/// no growing buffer leaves unzeroized copies of the plaintext behind.
fn exact(write: impl Fn(&mut dyn io::Write) -> io::Result<()>) -> Zeroizing<String> {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    write(&mut counter).expect("serializing to memory cannot fail");
    let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
    write(&mut *buf).expect("serializing to memory cannot fail");
    let bytes = std::mem::take(&mut *buf);
    Zeroizing::new(String::from_utf8(bytes).expect("serde_json and serde_norway write UTF-8"))
}

fn render_dotenv(entries: &[Entry]) -> Result<Zeroizing<String>, ExportError> {
    let mut len = 0;
    for entry in entries {
        if !dotenv::is_key(&entry.name) {
            return Err(ExportError::Key {
                format: ExportFormat::Dotenv,
                key: entry.name.clone(),
                problem: "dotenv keys use only letters, digits, `_`, `.` and `-`",
            });
        }
        len += dotenv::entry_len(&entry.name, entry.value.expose_secret());
    }
    let mut out = Zeroizing::new(String::with_capacity(len));
    for entry in entries {
        dotenv::write_entry(&mut out, &entry.name, entry.value.expose_secret());
    }
    Ok(out)
}

/// Whether `name` is a POSIX shell variable name.
fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn render_shell(entries: &[Entry]) -> Result<Zeroizing<String>, ExportError> {
    // `export K='…'`: inside single quotes a POSIX shell expands nothing, so only `'` itself
    // needs care, written as `'\''` (close, escaped quote, reopen).
    let mut len = 0;
    for entry in entries {
        if !is_shell_name(&entry.name) {
            return Err(ExportError::Key {
                format: ExportFormat::Shell,
                key: entry.name.clone(),
                problem: "shell variable names use letters, digits and `_` and do not start \
                          with a digit",
            });
        }
        let value = entry.value.expose_secret();
        if value.contains('\0') {
            return Err(ExportError::Value {
                format: ExportFormat::Shell,
                key: entry.name.clone(),
                problem: "it contains a NUL byte, which no environment variable can hold",
            });
        }
        len += "export ".len()
            + entry.name.len()
            + "=''\n".len()
            + value.len()
            + 3 * value.matches('\'').count();
    }
    let mut out = Zeroizing::new(String::with_capacity(len));
    for entry in entries {
        out.push_str("export ");
        out.push_str(&entry.name);
        out.push_str("='");
        for (i, part) in entry.value.expose_secret().split('\'').enumerate() {
            if i > 0 {
                out.push_str("'\\''");
            }
            out.push_str(part);
        }
        out.push_str("'\n");
    }
    Ok(out)
}

fn render_docker(entries: &[Entry]) -> Result<Zeroizing<String>, ExportError> {
    // `docker run --env-file` takes everything after the first `=` literally, up to the end of
    // the line: no quotes, no escapes, so a line break cannot be represented at all.
    let mut len = 0;
    for entry in entries {
        let key_problem = if entry.name.starts_with('#') {
            Some("docker reads a line starting with `#` as a comment")
        } else if entry.name.contains(char::is_whitespace) || entry.name.contains('=') {
            Some("docker env-file keys cannot contain whitespace or `=`")
        } else {
            None
        };
        if let Some(problem) = key_problem {
            return Err(ExportError::Key {
                format: ExportFormat::Docker,
                key: entry.name.clone(),
                problem,
            });
        }
        let value = entry.value.expose_secret();
        let value_problem = if value.contains(['\n', '\r']) {
            Some("it contains a line break, which a docker env-file cannot hold (use --format dotenv or k8s)")
        } else if value.contains('\0') {
            Some("it contains a NUL byte, which no environment variable can hold")
        } else if entry.name.len() + 1 + value.len() > DOCKER_MAX_LINE {
            Some("the line would exceed docker's 64 KiB env-file line limit")
        } else {
            None
        };
        if let Some(problem) = value_problem {
            return Err(ExportError::Value {
                format: ExportFormat::Docker,
                key: entry.name.clone(),
                problem,
            });
        }
        len += entry.name.len() + 1 + value.len() + 1;
    }
    let mut out = Zeroizing::new(String::with_capacity(len));
    for entry in entries {
        out.push_str(&entry.name);
        out.push('=');
        out.push_str(entry.value.expose_secret());
        out.push('\n');
    }
    Ok(out)
}

/// Why `name` is not a DNS-1123 label (at most 63 of `a-z0-9-`, alphanumeric at both ends).
fn dns_label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() || label.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    let bytes = label.as_bytes();
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must use only lowercase letters, digits and `-`");
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// Why `name` is not a DNS-1123 subdomain (dot-separated labels, at most 253 characters).
fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("must be 1 to 253 characters");
    }
    name.split('.').find_map(dns_label_problem)
}

/// Why `key` is not a valid Kubernetes Secret data key.
fn k8s_key_problem(key: &str) -> Option<&'static str> {
    if key.len() > 253 {
        Some("Kubernetes Secret keys are at most 253 characters")
    } else if key == "." || key == ".." {
        Some("Kubernetes Secret keys cannot be `.` or `..`")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("Kubernetes Secret keys use only letters, digits, `-`, `_` and `.`")
    } else {
        None
    }
}

/// A `v1/Secret` manifest; serde_norway lays it out and quotes whatever needs quoting.
struct SecretManifest<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
    data: Vec<(&'a str, Zeroizing<String>)>,
}

struct Metadata<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Metadata", 2)?;
        s.serialize_field("name", self.name)?;
        if let Some(namespace) = self.namespace {
            s.serialize_field("namespace", namespace)?;
        }
        s.end()
    }
}

struct Data<'a>(&'a [(&'a str, Zeroizing<String>)]);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, encoded) in self.0 {
            map.serialize_entry(key, encoded.as_str())?;
        }
        map.end()
    }
}

impl Serialize for SecretManifest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Secret", 5)?;
        s.serialize_field("apiVersion", "v1")?;
        s.serialize_field("kind", "Secret")?;
        s.serialize_field(
            "metadata",
            &Metadata {
                name: self.name,
                namespace: self.namespace,
            },
        )?;
        s.serialize_field("type", "Opaque")?;
        s.serialize_field("data", &Data(&self.data))?;
        s.end()
    }
}

fn render_k8s(
    entries: &[Entry],
    options: &ExportOptions<'_>,
) -> Result<Zeroizing<String>, ExportError> {
    let name = options.k8s_name.ok_or(ExportError::MissingK8sName)?;
    if let Some(problem) = dns_subdomain_problem(name) {
        return Err(ExportError::InvalidK8sName {
            field: "name",
            value: name.to_owned(),
            problem,
        });
    }
    if let Some(namespace) = options.k8s_namespace {
        if let Some(problem) = dns_label_problem(namespace) {
            return Err(ExportError::InvalidK8sName {
                field: "namespace",
                value: namespace.to_owned(),
                problem,
            });
        }
    }
    let mut total = 0usize;
    for entry in entries {
        if let Some(problem) = k8s_key_problem(&entry.name) {
            return Err(ExportError::Key {
                format: ExportFormat::K8s,
                key: entry.name.clone(),
                problem,
            });
        }
        total += entry.name.len() + entry.value.len();
    }
    if total > K8S_SECRET_MAX_DATA {
        return Err(ExportError::TooLarge {
            format: ExportFormat::K8s,
            problem: "a Kubernetes Secret holds at most 1 MiB of data",
        });
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let data = entries
        .iter()
        .map(|entry| {
            let value = entry.value.expose_secret().as_bytes();
            let mut encoded = Zeroizing::new(String::with_capacity(value.len().div_ceil(3) * 4));
            engine.encode_string(value, &mut encoded);
            (entry.name.as_str(), encoded)
        })
        .collect();
    let manifest = SecretManifest {
        name,
        namespace: options.k8s_namespace,
        data,
    };
    // The base64 strings are `Zeroizing` and are wiped when `manifest` drops.
    Ok(exact(|out| {
        serde_norway::to_writer(out, &manifest).map_err(io::Error::other)
    }))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<Entry> {
        pairs.iter().map(|(k, v)| Entry::new(*k, *v)).collect()
    }

    fn out(pairs: &[(&str, &str)], format: ExportFormat) -> String {
        render(&entries(pairs), format, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    fn err(pairs: &[(&str, &str)], format: ExportFormat) -> String {
        render(&entries(pairs), format, &ExportOptions::default())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn format_names_round_trip() {
        for format in ExportFormat::ALL {
            assert_eq!(format.as_str().parse::<ExportFormat>(), Ok(format));
        }
        assert!("xml".parse::<ExportFormat>().is_err());
    }

    #[test]
    fn shell_quotes_everything() {
        assert_eq!(
            out(
                &[
                    ("A", "plain"),
                    ("B", "it's $HOME `x` \\ \"q\"\nline"),
                    ("C", "")
                ],
                ExportFormat::Shell
            ),
            "export A='plain'\nexport B='it'\\''s $HOME `x` \\ \"q\"\nline'\nexport C=''\n"
        );
    }

    #[rstest]
    #[case("1A", "cannot export \"1A\" as shell: shell variable names use letters, digits and `_` and do not start with a digit")]
    #[case("A.B", "cannot export \"A.B\" as shell: shell variable names use letters, digits and `_` and do not start with a digit")]
    fn shell_refuses_bad_names(#[case] key: &str, #[case] expected: &str) {
        assert_eq!(err(&[(key, "v")], ExportFormat::Shell), expected);
    }

    #[test]
    fn nul_is_refused_for_environments() {
        assert_eq!(
            err(&[("A", "a\0b")], ExportFormat::Shell),
            "cannot export the value of A as shell: it contains a NUL byte, which no environment variable can hold"
        );
        assert_eq!(
            err(&[("A", "a\0b")], ExportFormat::Docker),
            "cannot export the value of A as docker: it contains a NUL byte, which no environment variable can hold"
        );
    }

    #[test]
    fn docker_is_literal() {
        assert_eq!(
            out(
                &[("A", " spaced 'q' \"d\" $X # not a comment "), ("B", "")],
                ExportFormat::Docker
            ),
            "A= spaced 'q' \"d\" $X # not a comment \nB=\n"
        );
    }

    #[rstest]
    #[case("line1\nline2")]
    #[case("cr\r")]
    fn docker_refuses_line_breaks_naming_the_key(#[case] value: &str) {
        let message = err(&[("OK", "v"), ("CERT", value)], ExportFormat::Docker);
        assert_eq!(
            message,
            "cannot export the value of CERT as docker: it contains a line break, which a docker \
             env-file cannot hold (use --format dotenv or k8s)"
        );
    }

    #[test]
    fn docker_refuses_comment_keys_and_long_lines() {
        assert_eq!(
            err(&[("#A", "v")], ExportFormat::Docker),
            "cannot export \"#A\" as docker: docker reads a line starting with `#` as a comment"
        );
        let long = "x".repeat(DOCKER_MAX_LINE);
        let message = err(&[("A", &long)], ExportFormat::Docker);
        assert!(message.contains("64 KiB"), "{message}");
    }

    #[test]
    fn dotenv_refuses_keys_it_cannot_read_back() {
        assert_eq!(
            err(&[("a/b", "v")], ExportFormat::Dotenv),
            "cannot export \"a/b\" as dotenv: dotenv keys use only letters, digits, `_`, `.` and `-`"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(
            err(&[("A", "1"), ("A", "2")], ExportFormat::Json),
            "cannot export: duplicate key A"
        );
    }

    #[test]
    fn k8s_manifest() {
        let options = ExportOptions {
            k8s_name: Some("api-secrets"),
            k8s_namespace: Some("prod"),
        };
        let rendered = render(
            &entries(&[
                ("DB_URL", "postgres://u:p@h/db"),
                ("true", "x\ny"),
                ("empty", ""),
            ]),
            ExportFormat::K8s,
            &options,
        )
        .unwrap();
        assert_eq!(
            rendered.as_str(),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-secrets\n  namespace: prod\n\
             type: Opaque\ndata:\n  DB_URL: cG9zdGdyZXM6Ly91OnBAaC9kYg==\n  'true': eAp5\n  empty: ''\n"
        );
    }

    #[test]
    fn k8s_without_namespace_and_without_data() {
        let options = ExportOptions {
            k8s_name: Some("s"),
            k8s_namespace: None,
        };
        let rendered = render(&[], ExportFormat::K8s, &options).unwrap();
        assert_eq!(
            rendered.as_str(),
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: Opaque\ndata: {}\n"
        );
    }

    #[rstest]
    #[case(None, None, "a k8s Secret needs a name: pass --name")]
    #[case(
        Some("Bad_Name"),
        None,
        "invalid k8s name \"Bad_Name\": must use only lowercase letters, digits and `-`"
    )]
    #[case(
        Some("-x"),
        None,
        "invalid k8s name \"-x\": must start and end with a letter or digit"
    )]
    #[case(
        Some("ok.name"),
        Some("a.b"),
        "invalid k8s namespace \"a.b\": must use only lowercase letters, digits and `-`"
    )]
    fn k8s_names(
        #[case] name: Option<&str>,
        #[case] namespace: Option<&str>,
        #[case] expected: &str,
    ) {
        let options = ExportOptions {
            k8s_name: name,
            k8s_namespace: namespace,
        };
        let message = render(&entries(&[("A", "v")]), ExportFormat::K8s, &options)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(message, expected);
    }

    #[test]
    fn k8s_refuses_bad_keys_and_oversize() {
        let options = ExportOptions {
            k8s_name: Some("s"),
            k8s_namespace: None,
        };
        let message = render(&entries(&[("a:b", "v")]), ExportFormat::K8s, &options)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "cannot export \"a:b\" as k8s: Kubernetes Secret keys use only letters, digits, `-`, `_` and `.`"
        );
        let big = "x".repeat(K8S_SECRET_MAX_DATA);
        let message = render(&entries(&[("A", &big)]), ExportFormat::K8s, &options)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "cannot export as k8s: a Kubernetes Secret holds at most 1 MiB of data"
        );
    }
}
