//! Import sources: turn another tool's output into [`Entry`]s.
//!
//! Every source is all or nothing: the first problem is an error and nothing is returned.
//! Errors name the input (`file:line` for dotenv, a jq-style path such as `.data.data.DB_URL`
//! for JSON and YAML) and never a value.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::{dotenv, json, yaml, Entry};

/// A source `zopp secret import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImportFormat {
    /// A dotenv file (`formats/README.md` has the grammar).
    Dotenv,
    /// A flat JSON object of names to strings, numbers or booleans.
    Json,
    /// A flat YAML map of names to scalars (taken as written: `1.10` stays `1.10`).
    Yaml,
    /// `op item get ITEM --format json`: each field with a label and a value.
    OnePassword,
    /// `aws secretsmanager get-secret-value --secret-id ID`: the `SecretString`.
    AwsSecretsManager,
    /// `vault kv get -format=json PATH`, KV version 1 or 2.
    Vault,
    /// `doppler secrets download --no-file --format json`.
    Doppler,
}

impl ImportFormat {
    /// Every import format, in the order `--help` lists them.
    pub const ALL: [ImportFormat; 7] = [
        ImportFormat::Dotenv,
        ImportFormat::Json,
        ImportFormat::Yaml,
        ImportFormat::OnePassword,
        ImportFormat::AwsSecretsManager,
        ImportFormat::Vault,
        ImportFormat::Doppler,
    ];

    /// The name used on the command line (`--format NAME`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Dotenv => "dotenv",
            ImportFormat::Json => "json",
            ImportFormat::Yaml => "yaml",
            ImportFormat::OnePassword => "1password",
            ImportFormat::AwsSecretsManager => "aws-sm",
            ImportFormat::Vault => "vault",
            ImportFormat::Doppler => "doppler",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--format` name that is not an import format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown import format {0:?} (expected dotenv, json, yaml, 1password, aws-sm, vault or doppler)")]
pub struct UnknownImportFormat(pub String);

impl FromStr for ImportFormat {
    type Err = UnknownImportFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dotenv" | "env" | ".env" => Ok(ImportFormat::Dotenv),
            "json" => Ok(ImportFormat::Json),
            "yaml" | "yml" => Ok(ImportFormat::Yaml),
            "1password" | "op" => Ok(ImportFormat::OnePassword),
            "aws-sm" | "aws" => Ok(ImportFormat::AwsSecretsManager),
            "vault" => Ok(ImportFormat::Vault),
            "doppler" => Ok(ImportFormat::Doppler),
            _ => Err(UnknownImportFormat(s.to_owned())),
        }
    }
}

/// How to read one input.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions<'a> {
    /// Name of the input in error messages: the file name, or `<stdin>`.
    pub source: &'a str,
    /// `aws-sm` only: import the whole `SecretString` as this one secret instead of reading it
    /// as a JSON object (`--key NAME`).
    pub key: Option<&'a str>,
}

impl<'a> ImportOptions<'a> {
    /// Options naming the input `source`, with no `--key`.
    pub fn new(source: &'a str) -> Self {
        Self { source, key: None }
    }
}

/// Why an input could not be imported. No variant ever holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A dotenv line does not follow the grammar.
    #[error("{file}:{line}: {problem}")]
    Dotenv {
        /// Name of the input.
        file: String,
        /// 1-based line where the offending entry starts.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A dotenv file defines the same key twice.
    #[error("{file}:{line}: duplicate key `{key}` (first defined on line {first_line})")]
    DuplicateLine {
        /// Name of the input.
        file: String,
        /// 1-based line of the second definition.
        line: usize,
        /// The repeated key.
        key: String,
        /// 1-based line of the first definition.
        first_line: usize,
    },
    /// The input is not well-formed JSON or YAML.
    #[error("{file}: {message}")]
    Syntax {
        /// Name of the input.
        file: String,
        /// The parser's description, with line and column.
        message: String,
    },
    /// The document is well formed but not shaped as the format expects.
    #[error("{file}: {path}: {problem}")]
    Structure {
        /// Name of the input.
        file: String,
        /// jq-style path of the offending element (`.` is the whole document).
        path: String,
        /// What is wrong and, where it helps, what to do.
        problem: String,
    },
    /// A JSON or YAML object holds the same key twice.
    #[error("{file}: {path}: duplicate key {key:?} ({first} and {second})")]
    DuplicateKey {
        /// Name of the input.
        file: String,
        /// jq-style path of the object holding the key.
        path: String,
        /// The repeated key.
        key: String,
        /// Where the first one is (`line 3`, `entry 2`).
        first: String,
        /// Where the second one is.
        second: String,
    },
    /// A key is not a valid secret name.
    #[error("{file}: {path}: {key:?} is not a valid secret name: {problem}")]
    InvalidName {
        /// Name of the input.
        file: String,
        /// jq-style path of the key.
        path: String,
        /// The offending key.
        key: String,
        /// Which rule it breaks.
        problem: &'static str,
    },
    /// `--key` was given for a format other than `aws-sm`.
    #[error("--key applies only to the aws-sm format, not {0}")]
    KeyNotApplicable(ImportFormat),
}

/// A jq-style path to an element of a JSON or YAML document, for error messages: `.data.data.DB`,
/// `.fields[3].label`, `["odd key"]`; the whole document is `.`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Path(String);

impl Path {
    /// The whole document.
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// The member `key` of the object at this path.
    pub(crate) fn key(&self, key: &str) -> Self {
        let plain = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            Self(format!("{}.{key}", self.0))
        } else {
            // serde_json quotes and escapes the key exactly as jq would print it.
            let quoted = serde_json::to_string(key).unwrap_or_else(|_| String::from("\"?\""));
            Self(format!("{}[{quoted}]", self.0))
        }
    }

    /// The element `index` of the array at this path.
    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Reads `input` as `format`. Entries keep input order.
///
/// # Errors
/// Any syntax or structure problem, a duplicate key, a key that is not a valid secret name,
/// a nested object or array where a value belongs, or `options.key` for a format other than
/// `aws-sm`. Nothing is returned on error.
pub fn parse(
    input: &str,
    format: ImportFormat,
    options: &ImportOptions<'_>,
) -> Result<Vec<Entry>, ImportError> {
    if options.key.is_some() && format != ImportFormat::AwsSecretsManager {
        return Err(ImportError::KeyNotApplicable(format));
    }
    let file = options.source;
    match format {
        ImportFormat::Dotenv => dotenv::parse(input, file),
        ImportFormat::Json => json::parse_flat(input, file, &[]),
        ImportFormat::Yaml => yaml::parse(input, file),
        ImportFormat::OnePassword => json::parse_one_password(input, file),
        ImportFormat::AwsSecretsManager => json::parse_aws(input, file, options.key),
        ImportFormat::Vault => json::parse_vault(input, file),
        ImportFormat::Doppler => json::parse_flat(input, file, json::DOPPLER_METADATA),
    }
}

/// Guesses the format of `input` from its content, when that is unambiguous.
///
/// A JSON object is recognised as 1Password (a `fields` array), AWS Secrets Manager
/// (`SecretString`/`SecretBinary` next to `ARN` or `Name`), Vault (a `data` object next to
/// `request_id` or `lease_id`), Doppler (a `DOPPLER_PROJECT`/`DOPPLER_CONFIG` key) or else
/// plain JSON. Otherwise the first line that is not blank or a comment decides: `KEY=` is
/// dotenv, `KEY:`, a quoted key or `---` is YAML. Returns `None` when nothing decides (empty input, an
/// array, or an unrecognised first line).
pub fn detect(input: &str) -> Option<ImportFormat> {
    let text = input.strip_prefix('\u{feff}').unwrap_or(input);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return Some(json::detect(trimmed));
    }
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A quoted key is YAML: a dotenv key is never quoted.
        if line == "---" || line.starts_with("--- ") || line.starts_with(['"', '\'']) {
            return Some(ImportFormat::Yaml);
        }
        let rest = line
            .strip_prefix("export")
            .filter(|r| r.starts_with([' ', '\t']))
            .map(str::trim_start)
            .unwrap_or(line);
        let key_len = rest.bytes().take_while(|&b| dotenv::is_key_byte(b)).count();
        if key_len == 0 {
            return None;
        }
        let after = rest[key_len..].trim_start_matches([' ', '\t']);
        return if after.starts_with('=') {
            Some(ImportFormat::Dotenv)
        } else if after.starts_with(':')
            && (after.len() == 1 || after[1..].starts_with([' ', '\t']))
        {
            Some(ImportFormat::Yaml)
        } else {
            None
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("A=1\n", Some(ImportFormat::Dotenv))]
    #[case("# comment\n\nexport A=1\n", Some(ImportFormat::Dotenv))]
    #[case("A = x: y\n", Some(ImportFormat::Dotenv))]
    #[case("A: 1\n", Some(ImportFormat::Yaml))]
    #[case("A:\n", Some(ImportFormat::Yaml))]
    #[case("---\nA: 1\n", Some(ImportFormat::Yaml))]
    #[case("\"A B\": 1\n", Some(ImportFormat::Yaml))]
    #[case("'true': x\n", Some(ImportFormat::Yaml))]
    #[case("URL: http://x=y\n", Some(ImportFormat::Yaml))]
    #[case("{\"A\": \"1\"}", Some(ImportFormat::Json))]
    #[case("  {broken", Some(ImportFormat::Json))]
    #[case(
        "{\"DOPPLER_PROJECT\": \"p\", \"A\": \"1\"}",
        Some(ImportFormat::Doppler)
    )]
    #[case("{\"id\": \"x\", \"fields\": []}", Some(ImportFormat::OnePassword))]
    #[case(
        "{\"ARN\": \"arn\", \"Name\": \"n\", \"SecretString\": \"{}\"}",
        Some(ImportFormat::AwsSecretsManager)
    )]
    #[case("{\"request_id\": \"r\", \"data\": {}}", Some(ImportFormat::Vault))]
    #[case("", None)]
    #[case("# only a comment\n", None)]
    #[case("[1, 2]", None)]
    #[case("just words here", None)]
    #[case("A:B", None)]
    fn detection(#[case] input: &str, #[case] expected: Option<ImportFormat>) {
        assert_eq!(detect(input), expected, "{input:?}");
    }

    #[test]
    fn paths_read_like_jq() {
        let root = Path::root();
        assert_eq!(root.to_string(), ".");
        assert_eq!(root.key("data").key("DB_URL").to_string(), ".data.DB_URL");
        assert_eq!(
            root.key("fields").index(3).key("label").to_string(),
            ".fields[3].label"
        );
        assert_eq!(root.key("a b").key("9x").to_string(), "[\"a b\"][\"9x\"]");
    }

    #[test]
    fn format_names_round_trip() {
        for format in ImportFormat::ALL {
            assert_eq!(format.as_str().parse::<ImportFormat>(), Ok(format));
        }
        assert!("toml".parse::<ImportFormat>().is_err());
    }

    #[test]
    fn key_is_only_for_aws() {
        let options = ImportOptions {
            source: "x",
            key: Some("K"),
        };
        assert_eq!(
            parse("A=1", ImportFormat::Dotenv, &options)
                .unwrap_err()
                .to_string(),
            "--key applies only to the aws-sm format, not dotenv"
        );
    }
}
