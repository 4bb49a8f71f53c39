//! The flat YAML import and export.
//!
//! Reading takes two passes over the text. The first learns the document's shape (is it a
//! map, which keys, is any value nested) without keeping any value; the second, run only on a
//! valid shape, reads each value as the scalar text written in the file, so `1.10` stays
//! `1.10` and `yes` stays `yes`. Every visitor accepts every input, so serde never builds an
//! "invalid type" error, whose message could quote a value.

use std::collections::HashMap;
use std::fmt;
use std::io;

use serde::de::{
    Deserialize, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::import::{ImportError, Path};
use crate::name::name_problem;
use crate::{Entry, SecretValue};

/// The shape of one YAML node, without its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Empty document (the top level only).
    Empty,
    Scalar,
    Map,
    Sequence,
}

impl Shape {
    fn article(self) -> &'static str {
        match self {
            Shape::Empty => "nothing",
            Shape::Scalar => "a scalar",
            Shape::Map => "a map",
            Shape::Sequence => "a sequence",
        }
    }
}

/// Reads any node into its [`Shape`]; a map keeps its keys and their values' shapes.
struct ShapeVisitor;

/// What the first pass learns about a node.
enum Outline {
    Empty,
    Scalar,
    Sequence,
    Map(Vec<(String, Shape)>),
}

impl Outline {
    fn shape(&self) -> Shape {
        match self {
            Outline::Empty => Shape::Empty,
            Outline::Scalar => Shape::Scalar,
            Outline::Sequence => Shape::Sequence,
            Outline::Map(_) => Shape::Map,
        }
    }
}

/// Deserializes a node's outline; map values are reduced to their shape.
struct Outlined(Outline);

impl<'de> Deserialize<'de> for Outlined {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor).map(Outlined)
    }
}

/// A map key, read as its text whatever its YAML type.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor).map(KeyText)
    }
}

/// A map value, read as its text whatever its YAML type (second pass only).
struct ValueText(SecretValue);

impl<'de> Deserialize<'de> for ValueText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(TextVisitor)
            .map(|text| ValueText(SecretValue::new(text)))
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

macro_rules! scalar_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: serde::de::Error>(self, _: $ty) -> Result<Outline, E> {
                Ok(Outline::Scalar)
            }
        )*
    };
}

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Outline;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    scalar_visits!(
        visit_bool(bool),
        visit_i64(i64),
        visit_i128(i128),
        visit_u64(u64),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8]),
    );

    fn visit_unit<E: serde::de::Error>(self) -> Result<Outline, E> {
        Ok(Outline::Empty)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Outline, E> {
        Ok(Outline::Empty)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Outline, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Outline, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outline, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Outline::Sequence)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(KeyText(key)) = map.next_key()? {
            let Outlined(value) = map.next_value()?;
            // An empty value (`KEY:`) is the empty scalar, not an empty document.
            let shape = match value.shape() {
                Shape::Empty => Shape::Scalar,
                other => other,
            };
            members.push((key, shape));
        }
        Ok(Outline::Map(members))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Outline, A::Error> {
        // A custom tag (`!Thing value`) arrives as an enum; its content decides the shape.
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        variant.newtype_variant::<Outlined>().map(|o| o.0)
    }
}

/// The second pass: the top-level map's keys and values as text.
struct Values(Vec<(String, SecretValue)>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ValuesVisitor).map(Values)
    }
}

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Vec<(String, SecretValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(KeyText(key)) = map.next_key()? {
            let ValueText(value) = map.next_value()?;
            members.push((key, value));
        }
        Ok(members)
    }
}

fn syntax(file: &str, e: &serde_norway::Error) -> ImportError {
    ImportError::Syntax {
        file: file.to_owned(),
        message: format!("invalid YAML: {e}"),
    }
}

/// Reads a flat YAML map of names to scalars.
pub(crate) fn parse(input: &str, file: &str) -> Result<Vec<Entry>, ImportError> {
    let structure = |path: Path, problem: String| ImportError::Structure {
        file: file.to_owned(),
        path: path.to_string(),
        problem,
    };
    let Outlined(outline) = serde_norway::from_str(input).map_err(|e| syntax(file, &e))?;
    let keys = match outline {
        Outline::Empty => return Ok(Vec::new()),
        Outline::Map(keys) => keys,
        other => {
            return Err(structure(
                Path::root(),
                format!(
                    "expected a map of KEY: value, found {}",
                    other.shape().article()
                ),
            ))
        }
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
    for (index, (key, shape)) in keys.iter().enumerate() {
        let here = Path::root().key(key);
        if let Some(problem) = name_problem(key) {
            return Err(ImportError::InvalidName {
                file: file.to_owned(),
                path: here.to_string(),
                key: key.clone(),
                problem,
            });
        }
        if let Some(&first) = seen.get(key.as_str()) {
            return Err(ImportError::DuplicateKey {
                file: file.to_owned(),
                path: Path::root().to_string(),
                key: key.clone(),
                first: format!("entry {}", first + 1),
                second: format!("entry {}", index + 1),
            });
        }
        seen.insert(key, index);
        if *shape != Shape::Scalar {
            return Err(structure(
                here,
                format!(
                    "value is {}; only flat maps of scalars can be imported (nested values are \
                     not flattened)",
                    shape.article()
                ),
            ));
        }
    }
    let Values(values) = serde_norway::from_str(input).map_err(|e| syntax(file, &e))?;
    Ok(values
        .into_iter()
        .map(|(name, value)| Entry { name, value })
        .collect())
}

/// `entries` as a map that serializes in order, values exposed only to the serializer.
struct FlatMap<'a>(&'a [Entry]);

impl Serialize for FlatMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for entry in self.0 {
            map.serialize_entry(&entry.name, entry.value.expose_secret())?;
        }
        map.end()
    }
}

/// Serializes `entries` as a flat YAML map, keeping their order. serde_norway picks a quoting
/// that reads back as the same string (`'true'`, `'1.5'`, block scalars for multi-line text).
pub(crate) fn render(entries: &[Entry], out: &mut dyn io::Write) -> io::Result<()> {
    serde_norway::to_writer(out, &FlatMap(entries)).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        parse(input, "in.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
            .collect()
    }

    #[test]
    fn scalars_are_read_as_written() {
        let input = "A: 1.50\nB: yes\nC:\nD: ~\nE: 0x10\nF: 'quoted'\nG: |\n  l1\n  l2\n\
                     1: numeric key\nH: &anchor shared\nI: *anchor\nJ: !custom tagged\n";
        assert_eq!(
            pairs(input),
            [
                ("A", "1.50"),
                ("B", "yes"),
                ("C", ""),
                ("D", "~"),
                ("E", "0x10"),
                ("F", "quoted"),
                ("G", "l1\nl2\n"),
                ("1", "numeric key"),
                ("H", "shared"),
                ("I", "shared"),
                ("J", "tagged"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn empty_document_is_empty() {
        assert!(pairs("").is_empty());
        assert!(pairs("# just a comment\n").is_empty());
        assert!(pairs("{}").is_empty());
    }

    #[rstest]
    #[case::nested_map("A:\n  b: secret-canary\n", "in.yaml: .A: value is a map; only flat maps of scalars can be imported (nested values are not flattened)")]
    #[case::nested_seq("A: [secret-canary]\n", "in.yaml: .A: value is a sequence; only flat maps of scalars can be imported (nested values are not flattened)")]
    #[case::tagged_map("A: !t {b: secret-canary}\n", "in.yaml: .A: value is a map; only flat maps of scalars can be imported (nested values are not flattened)")]
    #[case::top_scalar(
        "secret-canary\n",
        "in.yaml: .: expected a map of KEY: value, found a scalar"
    )]
    #[case::top_seq(
        "- secret-canary\n",
        "in.yaml: .: expected a map of KEY: value, found a sequence"
    )]
    #[case::duplicate(
        "A: secret-canary\nB: 2\nA: 3\n",
        r#"in.yaml: .: duplicate key "A" (entry 1 and entry 3)"#
    )]
    #[case::bad_name("A B: secret-canary\n", r#"in.yaml: ["A B"]: "A B" is not a valid secret name: a secret name cannot contain whitespace or control characters"#)]
    #[case::two_documents("A: secret-canary\n---\nB: 2\n", "in.yaml: invalid YAML: deserializing from YAML containing more than one document is not supported")]
    fn errors(#[case] input: &str, #[case] expected: &str) {
        let message = parse(input, "in.yaml").unwrap_err().to_string();
        assert_eq!(message, expected);
        assert!(!message.contains("secret-canary"));
    }

    #[test]
    fn syntax_errors_give_a_position() {
        let message = parse("A: \"secret-canary\n", "in.yaml")
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("in.yaml: invalid YAML: "), "{message}");
        assert!(message.contains("line"), "{message}");
        assert!(!message.contains("secret-canary"));
    }

    #[test]
    fn render_quotes_what_would_change_type() {
        let entries = vec![
            Entry::new("A", "true"),
            Entry::new("B", "1.5"),
            Entry::new("C", ""),
            Entry::new("D", "two\nlines"),
            Entry::new("E", "plain"),
        ];
        let mut out = Vec::new();
        render(&entries, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "A: 'true'\nB: '1.5'\nC: ''\nD: |-\n  two\n  lines\nE: plain\n"
        );
        assert_eq!(
            pairs(&text),
            [
                ("A", "true"),
                ("B", "1.5"),
                ("C", ""),
                ("D", "two\nlines"),
                ("E", "plain")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
