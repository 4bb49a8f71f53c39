//! A minimal ordered JSON writer, so a vector's bytes depend only on the generator: field order is
//! the order written here, whatever serde_json features other crates in the workspace enable.

/// A JSON value whose objects keep their field order.
#[derive(Clone, Debug)]
pub enum J {
    Str(String),
    Int(i128),
    Bool(bool),
    Null,
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

/// Lowercase hex of `b`.
pub fn h(b: impl AsRef<[u8]>) -> J {
    J::Str(hex::encode(b.as_ref()))
}

/// A text string.
pub fn s(t: &str) -> J {
    J::Str(t.to_owned())
}

/// An integer.
pub fn n(i: impl Into<i128>) -> J {
    J::Int(i.into())
}

impl J {
    /// Pretty-printed with two-space indentation and a final newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(0, &mut out);
        out.push('\n');
        out
    }

    fn write(&self, depth: usize, out: &mut String) {
        let pad = |d: usize, out: &mut String| out.push_str(&"  ".repeat(d));
        match self {
            J::Str(t) => out.push_str(&serde_json::to_string(t).expect("strings serialize")),
            J::Int(i) => out.push_str(&i.to_string()),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Null => out.push_str("null"),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            J::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(depth + 1, out);
                    item.write(depth + 1, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(depth, out);
                out.push(']');
            }
            J::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(depth + 1, out);
                    out.push_str(&serde_json::to_string(k).expect("strings serialize"));
                    out.push_str(": ");
                    v.write(depth + 1, out);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(depth, out);
                out.push('}');
            }
        }
    }
}
