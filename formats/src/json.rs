//! The JSON family of import sources (flat JSON, 1Password, AWS Secrets Manager, Vault,
//! Doppler) and the JSON export.
//!
//! Documents are walked as borrowed [`RawValue`]s: nothing is copied into a `serde_json::Value`
//! (whose strings would be freed without zeroizing), a number keeps its exact text, and a value
//! becomes a [`SecretValue`] the moment it is decoded.

use std::collections::HashMap;
use std::fmt;
use std::io;

use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer as _};
use serde_json::error::Category;
use serde_json::value::RawValue;
use zeroize::Zeroize;

use crate::import::{ImportError, ImportFormat, Path};
use crate::name::name_problem;
use crate::{Entry, SecretValue};

/// Keys Doppler adds to every download to describe itself; they are not the user's secrets.
pub(crate) const DOPPLER_METADATA: &[&str] =
    &["DOPPLER_PROJECT", "DOPPLER_CONFIG", "DOPPLER_ENVIRONMENT"];

/// The JSON type of a raw value, read from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    fn of(raw: &RawValue) -> Kind {
        match raw.get().trim_start().as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    fn article(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// An object's members in document order, values unparsed.
type Members<'a> = Vec<(String, &'a RawValue)>;

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(members)
    }
}

struct Object<'a>(Members<'a>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor).map(Object)
    }
}

struct ArrayVisitor;

impl<'de> Visitor<'de> for ArrayVisitor {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(items)
    }
}

struct Array<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Array<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ArrayVisitor).map(Array)
    }
}

/// One JSON document being read: names the input and locates elements for error messages.
struct Doc<'a> {
    file: &'a str,
    /// The document text, when line numbers in it mean something to the user (not for the
    /// JSON held inside AWS's `SecretString`).
    text: Option<&'a str>,
}

impl<'a> Doc<'a> {
    fn syntax(&self, what: &str, e: &serde_json::Error) -> ImportError {
        // Syntax messages describe the grammar only; a data error could quote the input, so it
        // is reduced to its position.
        let message = match e.classify() {
            Category::Data => format!(
                "{what}unexpected JSON at line {} column {}",
                e.line(),
                e.column()
            ),
            Category::Syntax | Category::Eof | Category::Io => format!("{what}invalid JSON: {e}"),
        };
        ImportError::Syntax {
            file: self.file.to_owned(),
            message,
        }
    }

    fn structure(&self, path: &Path, problem: impl Into<String>) -> ImportError {
        ImportError::Structure {
            file: self.file.to_owned(),
            path: path.to_string(),
            problem: problem.into(),
        }
    }

    /// Parses a whole document, checking its syntax once.
    fn root(&self, text: &'a str) -> Result<&'a RawValue, ImportError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        serde_json::from_str::<&RawValue>(text).map_err(|e| self.syntax("", &e))
    }

    /// The members of `raw`, which must be an object.
    fn object(&self, raw: &'a RawValue, path: &Path) -> Result<Members<'a>, ImportError> {
        match Kind::of(raw) {
            Kind::Object => serde_json::from_str::<Object<'a>>(raw.get())
                .map(|o| o.0)
                .map_err(|e| self.syntax("", &e)),
            other => Err(self.structure(
                path,
                format!("expected an object, found {}", other.article()),
            )),
        }
    }

    /// The items of `raw`, which must be an array.
    fn array(&self, raw: &'a RawValue, path: &Path) -> Result<Vec<&'a RawValue>, ImportError> {
        match Kind::of(raw) {
            Kind::Array => serde_json::from_str::<Array<'a>>(raw.get())
                .map(|a| a.0)
                .map_err(|e| self.syntax("", &e)),
            other => Err(self.structure(
                path,
                format!("expected an array, found {}", other.article()),
            )),
        }
    }

    /// Decodes a string.
    fn string(&self, raw: &RawValue, path: &Path) -> Result<SecretValue, ImportError> {
        match Kind::of(raw) {
            Kind::String => serde_json::from_str::<String>(raw.get())
                .map(SecretValue::new)
                .map_err(|e| self.syntax("", &e)),
            other => Err(self.structure(
                path,
                format!("expected a string, found {}", other.article()),
            )),
        }
    }

    /// A value to import: a string, or the exact text of a number or boolean.
    fn scalar(&self, raw: &RawValue, path: &Path) -> Result<SecretValue, ImportError> {
        match Kind::of(raw) {
            Kind::String => self.string(raw, path),
            Kind::Number | Kind::Bool => Ok(SecretValue::from(raw.get().trim())),
            Kind::Null => Err(self.structure(
                path,
                "value is null; only strings, numbers and booleans can be imported",
            )),
            kind @ (Kind::Object | Kind::Array) => Err(self.structure(
                path,
                format!(
                    "value is {}; only flat maps of strings, numbers and booleans can be \
                     imported (nested values are not flattened)",
                    kind.article()
                ),
            )),
        }
    }

    /// Where `raw` (the `index`th member of its object) is, for naming duplicates.
    fn position(&self, raw: &RawValue, index: usize) -> String {
        if let Some(text) = self.text {
            let start = text.as_ptr() as usize;
            let at = raw.get().as_ptr() as usize;
            // Borrowed raw values point into the document, so the offset gives the line.
            if let Some(offset) = at.checked_sub(start).filter(|&o| o <= text.len()) {
                let line = text.as_bytes()[..offset]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return format!("line {}", line + 1);
            }
        }
        format!("entry {}", index + 1)
    }

    /// Turns an object's members into entries; `skip` lists keys to leave out.
    fn flat(
        &self,
        members: &Members<'a>,
        path: &Path,
        skip: &[&str],
    ) -> Result<Vec<Entry>, ImportError> {
        let mut entries = Vec::with_capacity(members.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(members.len());
        for (index, (key, raw)) in members.iter().enumerate() {
            if skip.contains(&key.as_str()) {
                continue;
            }
            let here = path.key(key);
            if let Some(problem) = name_problem(key) {
                return Err(ImportError::InvalidName {
                    file: self.file.to_owned(),
                    path: here.to_string(),
                    key: key.clone(),
                    problem,
                });
            }
            if let Some(&first) = seen.get(key.as_str()) {
                return Err(ImportError::DuplicateKey {
                    file: self.file.to_owned(),
                    path: path.to_string(),
                    key: key.clone(),
                    first: self.position(members[first].1, first),
                    second: self.position(raw, index),
                });
            }
            seen.insert(key, index);
            entries.push(Entry {
                name: key.clone(),
                value: self.scalar(raw, &here)?,
            });
        }
        Ok(entries)
    }
}

fn lookup<'a>(members: &Members<'a>, key: &str) -> Option<&'a RawValue> {
    members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// A flat JSON object (also Doppler's download, minus the `skip` keys).
pub(crate) fn parse_flat(
    input: &str,
    file: &str,
    skip: &[&str],
) -> Result<Vec<Entry>, ImportError> {
    let doc = Doc {
        file,
        text: Some(input),
    };
    let root = doc.root(input)?;
    let members = doc.object(root, &Path::root())?;
    doc.flat(&members, &Path::root(), skip)
}

/// 1Password's `op item get --format json`: every field with a label and a non-empty value.
pub(crate) fn parse_one_password(input: &str, file: &str) -> Result<Vec<Entry>, ImportError> {
    let doc = Doc {
        file,
        text: Some(input),
    };
    let root_path = Path::root();
    let root = doc.root(input)?;
    let members = doc.object(root, &root_path)?;
    let fields_path = root_path.key("fields");
    let Some(fields) = lookup(&members, "fields") else {
        return Err(doc.structure(
            &root_path,
            "no `fields` array; is this `op item get ITEM --format json` output?",
        ));
    };
    let fields = doc.array(fields, &fields_path)?;
    let mut entries = Vec::with_capacity(fields.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(fields.len());
    for (index, field) in fields.into_iter().enumerate() {
        let here = fields_path.index(index);
        let field = doc.object(field, &here)?;
        // `op` leaves `value` out of fields the user never filled in; those are skipped.
        let value = match lookup(&field, "value") {
            None => continue,
            Some(raw) if Kind::of(raw) == Kind::Null => continue,
            Some(raw) => doc.scalar(raw, &here.key("value"))?,
        };
        if value.is_empty() {
            continue;
        }
        let label = match lookup(&field, "label") {
            Some(raw) if Kind::of(raw) != Kind::Null => serde_json::from_str::<String>(raw.get())
                .map_err(|_| {
                doc.structure(&here.key("label"), "expected the label to be a string")
            })?,
            _ => String::new(),
        };
        if label.trim().is_empty() {
            return Err(doc.structure(&here, "field has a value but no label to name it"));
        }
        let name = label_to_name(&label);
        if let Some(problem) = name_problem(&name) {
            return Err(ImportError::InvalidName {
                file: file.to_owned(),
                path: here.key("label").to_string(),
                key: name,
                problem,
            });
        }
        if let Some(&first) = seen.get(&name) {
            return Err(ImportError::DuplicateKey {
                file: file.to_owned(),
                path: fields_path.to_string(),
                key: name,
                first: format!("fields[{first}]"),
                second: format!("fields[{index}]"),
            });
        }
        seen.insert(name.clone(), index);
        entries.push(Entry { name, value });
    }
    Ok(entries)
}

/// A 1Password label as a secret name: trimmed, with each run of blanks or `=` turned into `_`
/// (`API Key` → `API_Key`), since labels are free text and names cannot hold either.
fn label_to_name(label: &str) -> String {
    let mut name = String::with_capacity(label.len());
    let mut in_gap = false;
    for c in label.trim().chars() {
        if c.is_whitespace() || c == '=' {
            if !in_gap {
                name.push('_');
            }
            in_gap = true;
        } else {
            name.push(c);
            in_gap = false;
        }
    }
    name
}

/// AWS Secrets Manager's `get-secret-value`: `SecretString` as a JSON object, or (with `key`)
/// the whole `SecretString` or UTF-8 `SecretBinary` as one secret.
pub(crate) fn parse_aws(
    input: &str,
    file: &str,
    key: Option<&str>,
) -> Result<Vec<Entry>, ImportError> {
    let doc = Doc {
        file,
        text: Some(input),
    };
    let root_path = Path::root();
    let root = doc.root(input)?;
    let members = doc.object(root, &root_path)?;
    let check_key = |name: &str| match name_problem(name) {
        Some(problem) => Err(ImportError::InvalidName {
            file: file.to_owned(),
            path: String::from("--key"),
            key: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    };
    if let Some(raw) = lookup(&members, "SecretString") {
        let path = root_path.key("SecretString");
        let secret = doc.string(raw, &path)?;
        if let Some(name) = key {
            check_key(name)?;
            return Ok(vec![Entry {
                name: name.to_owned(),
                value: secret,
            }]);
        }
        let plain = || {
            doc.structure(
                &path,
                "holds a plain string, not a JSON object; pass --key NAME to import it as one secret",
            )
        };
        let inner_text = secret.expose_secret();
        if !inner_text.trim_start().starts_with('{') {
            return Err(plain());
        }
        let inner = Doc { file, text: None };
        let inner_root = serde_json::from_str::<&RawValue>(inner_text)
            .map_err(|e| inner.syntax("SecretString: ", &e))?;
        let inner_members = inner.object(inner_root, &path)?;
        return inner.flat(&inner_members, &path, &[]);
    }
    if let Some(raw) = lookup(&members, "SecretBinary") {
        let path = root_path.key("SecretBinary");
        let Some(name) = key else {
            return Err(doc.structure(
                &path,
                "a binary secret is imported whole; pass --key NAME to name it",
            ));
        };
        check_key(name)?;
        let encoded = doc.string(raw, &path)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret().trim())
            .map_err(|_| doc.structure(&path, "is not valid base64"))?;
        let value = match String::from_utf8(bytes) {
            Ok(text) => SecretValue::new(text),
            Err(e) => {
                e.into_bytes().zeroize();
                return Err(doc.structure(&path, "is not UTF-8 text; zopp values are text"));
            }
        };
        return Ok(vec![Entry {
            name: name.to_owned(),
            value,
        }]);
    }
    Err(doc.structure(
        &root_path,
        "no SecretString or SecretBinary; is this `aws secretsmanager get-secret-value` output?",
    ))
}

/// Vault's `vault kv get -format=json`: `data.data` for KV version 2, `data` for version 1.
pub(crate) fn parse_vault(input: &str, file: &str) -> Result<Vec<Entry>, ImportError> {
    let doc = Doc {
        file,
        text: Some(input),
    };
    let root_path = Path::root();
    let root = doc.root(input)?;
    let members = doc.object(root, &root_path)?;
    let data_path = root_path.key("data");
    let Some(data) = lookup(&members, "data") else {
        return Err(doc.structure(
            &root_path,
            "no `data` object; is this `vault kv get -format=json` output?",
        ));
    };
    let data = doc.object(data, &data_path)?;
    // KV v2 wraps the secret as `data: {data: {...}, metadata: {...}}`; a v1 secret that merely
    // has keys named `data` and `metadata` holds strings there, not objects.
    let wrapped = |key: &str| {
        lookup(&data, key).is_some_and(|raw| matches!(Kind::of(raw), Kind::Object | Kind::Null))
    };
    if wrapped("data") && wrapped("metadata") {
        let inner_path = data_path.key("data");
        let inner = lookup(&data, "data").filter(|raw| Kind::of(raw) == Kind::Object);
        let Some(inner) = inner else {
            return Err(doc.structure(
                &inner_path,
                "is null: this version of the secret was deleted or destroyed",
            ));
        };
        let inner = doc.object(inner, &inner_path)?;
        return doc.flat(&inner, &inner_path, &[]);
    }
    doc.flat(&data, &data_path, &[])
}

/// Which JSON source `text` (starting with `{`) most likely is.
pub(crate) fn detect(text: &str) -> ImportFormat {
    let doc = Doc {
        file: "",
        text: None,
    };
    let Ok(root) = serde_json::from_str::<&RawValue>(text) else {
        return ImportFormat::Json;
    };
    let Ok(members) = doc.object(root, &Path::root()) else {
        return ImportFormat::Json;
    };
    let has = |key: &str| lookup(&members, key).is_some();
    let kind = |key: &str| lookup(&members, key).map(Kind::of);
    if kind("fields") == Some(Kind::Array)
        && ["id", "title", "category", "vault"].iter().any(|k| has(k))
    {
        ImportFormat::OnePassword
    } else if (has("SecretString") || has("SecretBinary"))
        && ["ARN", "Name", "VersionId"].iter().any(|k| has(k))
    {
        ImportFormat::AwsSecretsManager
    } else if kind("data") == Some(Kind::Object)
        && ["request_id", "lease_id", "lease_duration"]
            .iter()
            .any(|k| has(k))
    {
        ImportFormat::Vault
    } else if DOPPLER_METADATA.iter().any(|k| has(k)) {
        ImportFormat::Doppler
    } else {
        ImportFormat::Json
    }
}

/// Serializes `entries` as a pretty-printed flat JSON object (two-space indent, trailing
/// newline), keeping their order.
pub(crate) fn render(entries: &[Entry], out: &mut dyn io::Write) -> io::Result<()> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, formatter);
    let mut map = serializer
        .serialize_map(Some(entries.len()))
        .map_err(io::Error::other)?;
    for entry in entries {
        map.serialize_entry(&entry.name, entry.value.expose_secret())
            .map_err(io::Error::other)?;
    }
    map.end().map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn pairs(entries: Vec<Entry>) -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
            .collect()
    }

    #[test]
    fn flat_json_keeps_order_and_scalar_text() {
        let input = r#"{"B": "two", "A": 1.50, "C": true, "D": -0, "E": 1e3, "F": "x\ny\u00e9"}"#;
        assert_eq!(
            pairs(parse_flat(input, "in.json", &[]).unwrap()),
            [
                ("B", "two"),
                ("A", "1.50"),
                ("C", "true"),
                ("D", "-0"),
                ("E", "1e3"),
                ("F", "x\nyé")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[rstest]
    #[case::nested(r#"{"A": {"b": "secret-canary"}}"#, "in.json: .A: value is an object; only flat maps of strings, numbers and booleans can be imported (nested values are not flattened)")]
    #[case::array(r#"{"A": ["secret-canary"]}"#, "in.json: .A: value is an array; only flat maps of strings, numbers and booleans can be imported (nested values are not flattened)")]
    #[case::null(
        r#"{"A": null}"#,
        "in.json: .A: value is null; only strings, numbers and booleans can be imported"
    )]
    #[case::top_string(r#""secret-canary""#, "in.json: .: expected an object, found a string")]
    #[case::top_array(
        r#"["secret-canary"]"#,
        "in.json: .: expected an object, found an array"
    )]
    #[case::duplicate(
        "{\n\"A\": \"secret-canary\",\n\"B\": \"2\",\n\"A\": \"3\"\n}",
        r#"in.json: .: duplicate key "A" (line 2 and line 4)"#
    )]
    #[case::bad_name(r#"{"A B": "secret-canary"}"#, r#"in.json: ["A B"]: "A B" is not a valid secret name: a secret name cannot contain whitespace or control characters"#)]
    #[case::syntax(
        "{\"A\": \"secret-canary\",}",
        "in.json: invalid JSON: key must be a string at line 1 column 23"
    )]
    #[case::eof(
        "{\"A\": \"secret-canary",
        "in.json: invalid JSON: EOF while parsing a string at line 1 column 20"
    )]
    fn flat_json_errors(#[case] input: &str, #[case] expected: &str) {
        let message = parse_flat(input, "in.json", &[]).unwrap_err().to_string();
        assert_eq!(message, expected);
        assert!(!message.contains("secret-canary"));
    }

    #[rstest]
    #[case("password", "password")]
    #[case("  API Key ", "API_Key")]
    #[case("a  =\tb", "a_b")]
    #[case("one-time password", "one-time_password")]
    fn one_password_labels(#[case] label: &str, #[case] name: &str) {
        assert_eq!(label_to_name(label), name);
    }

    #[test]
    fn vault_v1_keys_named_data_and_metadata_stay_v1() {
        let input = r#"{"request_id": "r", "data": {"data": "x", "metadata": "y"}}"#;
        assert_eq!(
            pairs(parse_vault(input, "v.json").unwrap()),
            [("data", "x"), ("metadata", "y")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn vault_deleted_version() {
        let input =
            r#"{"data": {"data": null, "metadata": {"deletion_time": "2024-01-01T00:00:00Z"}}}"#;
        assert_eq!(
            parse_vault(input, "v.json").unwrap_err().to_string(),
            "v.json: .data.data: is null: this version of the secret was deleted or destroyed"
        );
    }

    #[test]
    fn aws_plain_string_needs_a_key() {
        let input = r#"{"Name": "db", "SecretString": "hunter2-canary"}"#;
        let message = parse_aws(input, "aws.json", None).unwrap_err().to_string();
        assert_eq!(
            message,
            "aws.json: .SecretString: holds a plain string, not a JSON object; pass --key NAME \
             to import it as one secret"
        );
        let entries = pairs(parse_aws(input, "aws.json", Some("DB_PASSWORD")).unwrap());
        assert_eq!(
            entries,
            [("DB_PASSWORD".to_owned(), "hunter2-canary".to_owned())]
        );
    }

    #[test]
    fn aws_key_takes_json_whole() {
        let input = r#"{"Name": "db", "SecretString": "{\"a\":1}"}"#;
        let entries = pairs(parse_aws(input, "aws.json", Some("BLOB")).unwrap());
        assert_eq!(entries, [("BLOB".to_owned(), "{\"a\":1}".to_owned())]);
    }

    #[test]
    fn aws_inner_duplicates_are_named_by_entry() {
        let input = r#"{"Name": "db", "SecretString": "{\"a\":\"1\",\"a\":\"2\"}"}"#;
        assert_eq!(
            parse_aws(input, "aws.json", None).unwrap_err().to_string(),
            r#"aws.json: .SecretString: duplicate key "a" (entry 1 and entry 2)"#
        );
    }

    #[test]
    fn aws_binary() {
        let input = r#"{"Name": "db", "SecretBinary": "aMOpbGxv"}"#;
        assert_eq!(
            pairs(parse_aws(input, "aws.json", Some("BIN")).unwrap()),
            [("BIN".to_owned(), "héllo".to_owned())]
        );
        assert_eq!(
            parse_aws(input, "aws.json", None).unwrap_err().to_string(),
            "aws.json: .SecretBinary: a binary secret is imported whole; pass --key NAME to name it"
        );
        let not_text = r#"{"Name": "db", "SecretBinary": "/w=="}"#;
        assert_eq!(
            parse_aws(not_text, "aws.json", Some("BIN"))
                .unwrap_err()
                .to_string(),
            "aws.json: .SecretBinary: is not UTF-8 text; zopp values are text"
        );
    }

    #[test]
    fn render_is_pretty_and_ordered() {
        let entries = vec![Entry::new("B", "1"), Entry::new("A", "q\"\n")];
        let mut out = Vec::new();
        render(&entries, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n  \"B\": \"1\",\n  \"A\": \"q\\\"\\n\"\n}\n"
        );
    }
}
