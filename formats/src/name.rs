//! The secret-name rule every importer enforces (docs/ARCHITECTURE.md "Limits").

/// Longest secret name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Why `name` is not a valid secret name, or `None` when it is.
///
/// Names are 1–256 bytes with no whitespace, no control characters and no `=`, so that every
/// name survives an environment block and a `KEY=VALUE` line.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a secret name cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("a secret name is at most 256 bytes");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("a secret name cannot contain whitespace or control characters");
    }
    if name.contains('=') {
        return Some("a secret name cannot contain `=`");
    }
    None
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("DATABASE_URL", true)]
    #[case("api.key-2", true)]
    #[case("ünïcode", true)]
    #[case("", false)]
    #[case("A B", false)]
    #[case("A\tB", false)]
    #[case("A=B", false)]
    #[case("A\u{0}", false)]
    #[case("A\u{2028}", false)]
    fn names(#[case] name: &str, #[case] valid: bool) {
        assert_eq!(name_problem(name).is_none(), valid, "{name:?}");
    }

    #[test]
    fn length_limit() {
        assert!(name_problem(&"A".repeat(256)).is_none());
        assert!(name_problem(&"A".repeat(257)).is_some());
    }
}
