//! The dotenv grammar: the reader behind `--format dotenv` imports and the writer behind dotenv
//! exports. The grammar is written down in `formats/README.md` ("dotenv grammar"); the writer
//! emits a subset of it that other common dotenv readers agree on.

use std::collections::HashMap;

use zeroize::Zeroizing;

use crate::import::ImportError;
use crate::name::MAX_NAME_LEN;
use crate::{Entry, SecretValue};

/// Whether `b` may appear in a dotenv key: ASCII letters, digits, `_`, `.` and `-`.
pub(crate) fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Whether `name` can be written as a dotenv key (and so read back by [`parse`]).
pub(crate) fn is_key(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(is_key_byte)
}

/// Reads a dotenv file. `file` names the input in errors (`file:line: problem`).
///
/// All or nothing: the first invalid line is an error and no entries are returned.
pub(crate) fn parse(input: &str, file: &str) -> Result<Vec<Entry>, ImportError> {
    Reader::new(input, file).run()
}

struct Reader<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    /// 1-based line of `pos`.
    line: usize,
    file: &'a str,
}

impl<'a> Reader<'a> {
    fn new(input: &'a str, file: &'a str) -> Self {
        // A UTF-8 byte order mark (editors on Windows write one) is not part of the first key.
        let text = input.strip_prefix('\u{feff}').unwrap_or(input);
        Self {
            src: text.as_bytes(),
            text,
            pos: 0,
            line: 1,
            file,
        }
    }

    fn error(&self, line: usize, problem: impl Into<String>) -> ImportError {
        ImportError::Dotenv {
            file: self.file.to_owned(),
            line,
            problem: problem.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Length of the line break at `at` (`\n`, `\r\n`, or a `\r` ending the input), if any.
    fn line_break_at(&self, at: usize) -> Option<usize> {
        match self.src.get(at) {
            Some(b'\n') => Some(1),
            Some(b'\r') => match self.src.get(at + 1) {
                Some(b'\n') => Some(2),
                None => Some(1),
                Some(_) => None,
            },
            _ => None,
        }
    }

    /// Consumes the end of the current line, or fails naming `line` if other text follows.
    fn end_of_line(&mut self, line: usize, after: &str) -> Result<(), ImportError> {
        self.skip_blanks();
        match self.peek() {
            None => Ok(()),
            Some(b'#') => {
                self.skip_to_next_line();
                Ok(())
            }
            Some(_) => match self.line_break_at(self.pos) {
                Some(n) => {
                    self.pos += n;
                    self.line += 1;
                    Ok(())
                }
                None => Err(self.error(line, format!("unexpected text after {after}"))),
            },
        }
    }

    fn skip_to_next_line(&mut self) {
        match memchr_newline(&self.src[self.pos..]) {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
            }
            None => self.pos = self.src.len(),
        }
    }

    fn run(mut self) -> Result<Vec<Entry>, ImportError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<&'a str, usize> = HashMap::new();
        loop {
            self.skip_blanks();
            let Some(b) = self.peek() else { break };
            if b == b'#' {
                self.skip_to_next_line();
                continue;
            }
            if let Some(n) = self.line_break_at(self.pos) {
                self.pos += n;
                self.line += 1;
                continue;
            }
            let line = self.line;
            let key = self.key(line)?;
            self.skip_blanks();
            if self.peek() != Some(b'=') {
                let problem = if self.peek().is_none() || self.line_break_at(self.pos).is_some() {
                    format!("expected `=` after `{key}`")
                } else {
                    format!(
                        "expected `=` after `{key}` (keys use letters, digits, `_`, `.` and `-`)"
                    )
                };
                return Err(self.error(line, problem));
            }
            self.pos += 1;
            let value = self.value(key, line)?;
            if let Some(&first_line) = seen.get(key) {
                return Err(ImportError::DuplicateLine {
                    file: self.file.to_owned(),
                    line,
                    key: key.to_owned(),
                    first_line,
                });
            }
            seen.insert(key, line);
            entries.push(Entry {
                name: key.to_owned(),
                value,
            });
        }
        Ok(entries)
    }

    /// Reads `[export ]KEY` at the start of a line.
    fn key(&mut self, line: usize) -> Result<&'a str, ImportError> {
        // `export KEY=…` is accepted so a file written for `source` also imports; `export=…`
        // and `export =…` still name a key called `export`.
        if self.src[self.pos..].starts_with(b"export")
            && matches!(self.src.get(self.pos + 6), Some(b' ' | b'\t'))
        {
            let save = self.pos;
            self.pos += 6;
            self.skip_blanks();
            if !self.peek().is_some_and(is_key_byte) {
                self.pos = save;
            }
        }
        let start = self.pos;
        while self.peek().is_some_and(is_key_byte) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error(line, "expected KEY=VALUE"));
        }
        if self.pos - start > MAX_NAME_LEN {
            return Err(self.error(line, "key is longer than 256 bytes"));
        }
        Ok(&self.text[start..self.pos])
    }

    /// Reads the value after `=`, through the end of its (last) line.
    fn value(&mut self, key: &str, line: usize) -> Result<SecretValue, ImportError> {
        let blank_before = matches!(self.peek(), Some(b' ' | b'\t'));
        self.skip_blanks();
        match self.peek() {
            Some(b'"') => {
                let value = self.double_quoted(key, line)?;
                self.end_of_line(line, "the closing quote")?;
                Ok(value)
            }
            Some(b'\'') => {
                let value = self.single_quoted(key, line)?;
                self.end_of_line(line, "the closing quote")?;
                Ok(value)
            }
            _ => Ok(self.unquoted(blank_before)),
        }
    }

    /// An unquoted value: literal up to the end of the line, a `#` after a blank, or trailing
    /// blanks (which are dropped).
    fn unquoted(&mut self, blank_before: bool) -> SecretValue {
        let start = self.pos;
        let rest = &self.src[start..];
        let line_len = memchr_newline(rest).unwrap_or(rest.len());
        let mut end = line_len;
        let mut after_blank = blank_before;
        for (i, &b) in rest[..line_len].iter().enumerate() {
            if b == b'#' && after_blank {
                end = i;
                break;
            }
            after_blank = matches!(b, b' ' | b'\t');
        }
        let mut value = &rest[..end];
        // A `\r` right before `\n` (or ending the file) belongs to the line break, not the value.
        if end == line_len {
            if let Some(stripped) = value.strip_suffix(b"\r") {
                value = stripped;
            }
        }
        while let Some((&last, init)) = value.split_last() {
            if last == b' ' || last == b'\t' {
                value = init;
            } else {
                break;
            }
        }
        let text = &self.text[start..start + value.len()];
        if line_len < rest.len() {
            self.pos = start + line_len + 1;
            self.line += 1;
        } else {
            self.pos = self.src.len();
        }
        SecretValue::from(text)
    }

    /// A single-quoted value: literal, may span lines (a `\r\n` inside becomes `\n`).
    fn single_quoted(&mut self, key: &str, line: usize) -> Result<SecretValue, ImportError> {
        let start = self.pos + 1;
        let Some(len) = self.src[start..].iter().position(|&b| b == b'\'') else {
            return Err(self.error(
                line,
                format!("unterminated single-quoted value for `{key}`"),
            ));
        };
        let body = &self.text[start..start + len];
        let mut out = Zeroizing::new(String::with_capacity(body.len()));
        let mut chars = body.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                continue;
            }
            out.push(c);
        }
        self.line += count_newlines(body.as_bytes());
        self.pos = start + len + 1;
        Ok(SecretValue::from(out))
    }

    /// A double-quoted value: may span lines; `\n \r \t \" \\ \$ \'` are escapes, any other
    /// backslash is kept literally (so `"C:\dir"` reads as written).
    fn double_quoted(&mut self, key: &str, line: usize) -> Result<SecretValue, ImportError> {
        let start = self.pos + 1;
        // Find the closing quote first so the value is built in one exact-size allocation
        // (a growing String would leave unzeroized copies behind).
        let mut i = start;
        let end = loop {
            match self.src.get(i) {
                None => {
                    return Err(self.error(
                        line,
                        format!("unterminated double-quoted value for `{key}`"),
                    ))
                }
                Some(b'\\') => i += 2,
                Some(b'"') => break i,
                Some(_) => i += 1,
            }
        };
        let body = &self.text[start..end];
        let mut out = Zeroizing::new(String::with_capacity(body.len()));
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek().copied() {
                    Some(e @ ('n' | 'r' | 't' | '"' | '\\' | '$' | '\'')) => {
                        chars.next();
                        out.push(match e {
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            other => other,
                        });
                    }
                    _ => out.push('\\'),
                },
                '\r' if chars.peek() == Some(&'\n') => {}
                other => out.push(other),
            }
        }
        self.line += count_newlines(body.as_bytes());
        self.pos = end + 1;
        Ok(SecretValue::from(out))
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// How the writer quotes one value.
#[derive(Debug, PartialEq, Eq)]
enum Quoting {
    /// `KEY=value`: only bytes every reader treats literally.
    Bare,
    /// `KEY='value'`: literal in every common reader; no `'` and no line break inside.
    Single,
    /// `KEY="value"` with `\\ \" \$ \n \r` escaped.
    Double,
}

/// Bytes a bare value may hold: nothing a reader might treat as a quote, comment, escape,
/// interpolation or blank.
fn is_bare_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'.' | b',' | b':' | b'/' | b'@' | b'+' | b'=' | b'%' | b'^' | b'~'
        )
}

fn quoting(value: &str) -> Quoting {
    if value.bytes().all(is_bare_byte) {
        Quoting::Bare
    } else if value.contains(['\'', '\n', '\r']) {
        Quoting::Double
    } else {
        Quoting::Single
    }
}

/// Appends `KEY=value\n` to `out`; `key` must satisfy [`is_key`].
pub(crate) fn write_entry(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    match quoting(value) {
        Quoting::Bare => out.push_str(value),
        Quoting::Single => {
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        }
        Quoting::Double => {
            out.push('"');
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '$' => out.push_str("\\$"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    other => out.push(other),
                }
            }
            out.push('"');
        }
    }
    out.push('\n');
}

/// Exact length [`write_entry`] will append, so the output is allocated once.
pub(crate) fn entry_len(key: &str, value: &str) -> usize {
    let body = match quoting(value) {
        Quoting::Bare => value.len(),
        Quoting::Single => value.len() + 2,
        Quoting::Double => {
            value.len()
                + 2
                + value
                    .bytes()
                    .filter(|b| matches!(b, b'\\' | b'"' | b'$' | b'\n' | b'\r'))
                    .count()
        }
    };
    key.len() + 1 + body + 1
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn read(input: &str) -> Vec<(String, String)> {
        parse(input, "test.env")
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|e| (e.name.clone(), e.value.expose_secret().to_owned()))
            .collect()
    }

    fn one(input: &str) -> String {
        let mut all = read(input);
        assert_eq!(all.len(), 1, "{input:?}");
        all.remove(0).1
    }

    fn error(input: &str) -> String {
        match parse(input, "test.env") {
            Ok(entries) => panic!("expected an error, got {} entries", entries.len()),
            Err(e) => e.to_string(),
        }
    }

    #[rstest]
    #[case::plain("K=v", "v")]
    #[case::empty("K=", "")]
    #[case::empty_with_blanks("K=   ", "")]
    #[case::empty_with_comment("K= # nothing", "")]
    #[case::spaces_around_equals("K = v", "v")]
    #[case::tab_around_equals("K\t=\tv", "v")]
    #[case::leading_blanks("   K=v", "v")]
    #[case::export("export K=v", "v")]
    #[case::export_tabs("export\t\tK=v", "v")]
    #[case::trailing_comment("K=value # a comment", "value")]
    #[case::trailing_blanks("K=value   ", "value")]
    #[case::hash_inside("K=abc#def", "abc#def")]
    #[case::hash_first("K=#abc", "#abc")]
    #[case::inner_spaces("K=a b  c", "a b  c")]
    #[case::equals_in_value("K=a=b==", "a=b==")]
    #[case::unquoted_is_literal(r"K=a\nb", r"a\nb")]
    #[case::dollar_kept("K=${OTHER}", "${OTHER}")]
    #[case::quote_inside_unquoted(r#"K=a"b'c"#, r#"a"b'c"#)]
    #[case::single("K='a b # c'", "a b # c")]
    #[case::single_literal(r"K='a\nb\\'", r"a\nb\\")]
    #[case::single_with_comment("K='v' # comment", "v")]
    #[case::double(r#"K="a b""#, "a b")]
    #[case::double_escapes(r#"K="l1\nl2\tt\"q\\b\$d\'s\r""#, "l1\nl2\tt\"q\\b$d's\r")]
    #[case::double_unknown_escape(r#"K="C:\dir\x""#, r"C:\dir\x")]
    #[case::double_hash(r##"K="a # b" # c"##, "a # b")]
    #[case::double_multiline("K=\"line1\nline2\"", "line1\nline2")]
    #[case::single_multiline("K='line1\nline2\n'", "line1\nline2\n")]
    #[case::double_empty(r#"K="""#, "")]
    #[case::single_empty("K=''", "")]
    #[case::utf8("K=pässwörd ✓ 🔑", "pässwörd ✓ 🔑")]
    #[case::utf8_quoted("K=\"naïve 🔑\"", "naïve 🔑")]
    #[case::crlf("K=v\r\n", "v")]
    #[case::crlf_multiline("K=\"a\r\nb\"\r\n", "a\nb")]
    #[case::cr_at_eof("K=v\r", "v")]
    #[case::lone_cr_kept("K=a\rb", "a\rb")]
    #[case::bom("\u{feff}K=v", "v")]
    #[case::key_named_export("export=1", "1")]
    #[case::key_named_export_spaced("export = 1", "1")]
    fn values(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(one(input), expected, "{input:?}");
    }

    #[test]
    fn a_realistic_file() {
        let input = "# database\r\nexport DB_HOST=localhost\r\nDB_PORT = 5432 # default\r\n\r\n\
                     CERT=\"-----BEGIN-----\r\nabc\r\n-----END-----\"\r\nEMPTY=\r\nNAME.with-dots_1='x'\r\n";
        assert_eq!(
            read(input),
            [
                ("DB_HOST", "localhost"),
                ("DB_PORT", "5432"),
                ("CERT", "-----BEGIN-----\nabc\n-----END-----"),
                ("EMPTY", ""),
                ("NAME.with-dots_1", "x"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn blank_and_comment_only_input_is_empty() {
        assert!(read("").is_empty());
        assert!(read("\n\n  # c\n\t\n").is_empty());
    }

    #[rstest]
    #[case::no_equals("A=1\nJUST_A_KEY\n", "test.env:2: expected `=` after `JUST_A_KEY`")]
    #[case::no_equals_eof("JUST_A_KEY", "test.env:1: expected `=` after `JUST_A_KEY`")]
    #[case::bad_key_char(
        "A B=1",
        "test.env:1: expected `=` after `A` (keys use letters, digits, `_`, `.` and `-`)"
    )]
    #[case::no_key("=value", "test.env:1: expected KEY=VALUE")]
    #[case::yaml_line(
        "A: b",
        "test.env:1: expected `=` after `A` (keys use letters, digits, `_`, `.` and `-`)"
    )]
    #[case::unterminated_double(
        "A=1\nB=\"never closed\nC=3\n",
        "test.env:2: unterminated double-quoted value for `B`"
    )]
    #[case::unterminated_single("A='x", "test.env:1: unterminated single-quoted value for `A`")]
    #[case::text_after_quote("A=\"x\"y", "test.env:1: unexpected text after the closing quote")]
    #[case::export_alone("export\n", "test.env:1: expected `=` after `export`")]
    #[case::line_after_multiline("A=\"1\n2\n3\"\nB\n", "test.env:4: expected `=` after `B`")]
    #[case::duplicate(
        "A=1\nB=2\n\nA=3\n",
        "test.env:4: duplicate key `A` (first defined on line 1)"
    )]
    fn errors(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(error(input), expected);
    }

    #[test]
    fn errors_never_show_values() {
        let message = error("A=\"s3cr3t-canary\" trailing");
        assert!(!message.contains("s3cr3t-canary"), "{message}");
    }

    #[test]
    fn overlong_key_is_refused() {
        let input = format!("{}=1", "K".repeat(257));
        assert_eq!(error(&input), "test.env:1: key is longer than 256 bytes");
    }

    #[rstest]
    #[case("abc-DEF_1.2:3/4@5+6=7%8^9~,", Quoting::Bare)]
    #[case("", Quoting::Bare)]
    #[case("a b", Quoting::Single)]
    #[case("$HOME", Quoting::Single)]
    #[case("#x", Quoting::Single)]
    #[case("back\\slash", Quoting::Single)]
    #[case("dq\"", Quoting::Single)]
    #[case("ünï", Quoting::Single)]
    #[case("it's", Quoting::Double)]
    #[case("a\nb", Quoting::Double)]
    #[case("a\rb", Quoting::Double)]
    fn writer_quoting(#[case] value: &str, #[case] expected: Quoting) {
        assert_eq!(quoting(value), expected);
    }

    #[rstest]
    #[case("v", "K=v\n")]
    #[case("", "K=\n")]
    #[case("a b", "K='a b'\n")]
    #[case("it's $5\n\"q\" \\", "K=\"it's \\$5\\n\\\"q\\\" \\\\\"\n")]
    fn writer_output(#[case] value: &str, #[case] expected: &str) {
        let mut out = String::new();
        write_entry(&mut out, "K", value);
        assert_eq!(out, expected);
        assert_eq!(entry_len("K", value), expected.len());
        assert_eq!(one(&out), value);
    }
}
