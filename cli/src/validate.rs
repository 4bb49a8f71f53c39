//! Input rules checked before any network call (docs/ARCHITECTURE.md "Limits"): a refusal here
//! costs nothing and changes nothing, and the server checks the same rules again.

use std::fmt;

use crate::error::{Error, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest accepted secret value, in bytes (1 MiB).
pub const MAX_VALUE_LEN: usize = 1_048_576;

/// What a name names; the rules differ slightly between secrets and scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A secret (also the environment variable it becomes, so no `=`).
    Secret,
    /// A workspace.
    Workspace,
    /// A project.
    Project,
    /// An environment.
    Environment,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret => "secret",
            Self::Workspace => "workspace",
            Self::Project => "project",
            Self::Environment => "environment",
        })
    }
}

/// Checks `name` against the naming rules for `kind`.
///
/// # Errors
/// [`Error::InvalidName`] naming the broken rule.
pub fn check_name(kind: NameKind, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 256 bytes")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if name.chars().any(char::is_whitespace) {
        Some("must not contain whitespace")
    } else if kind == NameKind::Secret && name.contains('=') {
        Some("must not contain '='")
    } else if kind != NameKind::Secret && name.contains('/') {
        Some("must not contain '/'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind,
            name: printable(name),
            reason,
        }),
    }
}

/// Checks a secret value's size.
///
/// # Errors
/// [`Error::ValueTooLarge`] above [`MAX_VALUE_LEN`].
pub fn check_value_len(len: usize) -> Result<()> {
    if len > MAX_VALUE_LEN {
        return Err(Error::ValueTooLarge { len });
    }
    Ok(())
}

/// A rejected name made safe to print: control characters escaped (so they cannot drive the
/// terminal) and long names shortened.
fn printable(name: &str) -> String {
    let mut out: String = name.chars().take(64).flat_map(char::escape_debug).collect();
    if name.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain(NameKind::Secret, "DATABASE_URL")]
    #[case::dots_dashes(NameKind::Secret, "a.b-c_d:e")]
    #[case::slash_in_secret(NameKind::Secret, "path/like")]
    #[case::unicode(NameKind::Secret, "clé")]
    #[case::max_len(NameKind::Secret, &"A".repeat(256))]
    #[case::eq_in_scope(NameKind::Workspace, "a=b")]
    #[case::project(NameKind::Project, "api")]
    #[case::environment(NameKind::Environment, "prod-eu")]
    fn accepts(#[case] kind: NameKind, #[case] name: &str) {
        assert!(check_name(kind, name).is_ok(), "{kind} {name:?}");
    }

    #[rstest]
    #[case::empty(NameKind::Secret, "", "must not be empty")]
    #[case::too_long(NameKind::Secret, &"A".repeat(257), "at most 256 bytes")]
    #[case::multibyte_too_long(NameKind::Workspace, &"é".repeat(129), "at most 256 bytes")]
    #[case::space(NameKind::Secret, "has space", "whitespace")]
    #[case::tab(NameKind::Secret, "tab\there", "control")]
    #[case::newline(NameKind::Project, "a\nb", "control")]
    #[case::bell(NameKind::Secret, "ctl\u{7}", "control")]
    #[case::nbsp(NameKind::Secret, "a\u{a0}b", "whitespace")]
    #[case::eq(NameKind::Secret, "A=B", "'='")]
    #[case::slash_ws(NameKind::Workspace, "a/b", "'/'")]
    #[case::slash_project(NameKind::Project, "a/b", "'/'")]
    #[case::slash_env(NameKind::Environment, "a/b", "'/'")]
    fn refuses(#[case] kind: NameKind, #[case] name: &str, #[case] why: &str) {
        let err = check_name(kind, name).expect_err("must be refused");
        assert!(matches!(err, Error::InvalidName { .. }));
        let msg = err.to_string();
        assert!(msg.contains(why), "{msg}");
        assert!(msg.starts_with(&format!("invalid {kind} name")), "{msg}");
    }

    #[test]
    fn refused_names_print_safely() {
        let err = check_name(NameKind::Secret, "a\u{1b}[31mb").expect_err("control char");
        assert!(!err.to_string().contains('\u{1b}'));
        let err = check_name(NameKind::Secret, &"x".repeat(300)).expect_err("long");
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn value_limit_is_exactly_one_mib() {
        assert!(check_value_len(MAX_VALUE_LEN).is_ok());
        let err = check_value_len(MAX_VALUE_LEN + 1).expect_err("over the limit");
        assert!(err.to_string().contains("1 MiB"), "{err}");
    }
}
