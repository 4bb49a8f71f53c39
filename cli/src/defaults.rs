//! Per-repository defaults from the nearest `zopp.toml`, found by walking up from the working
//! directory:
//!
//! ```toml
//! [defaults]
//! workspace = "acme"
//! project = "api"
//! environment = "dev"
//! ```
//!
//! These sit below flags and `ZOPP_*` variables in precedence ([`pick`]). zopp never writes this
//! file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::home::read_bounded;

/// Name of the per-repository file.
pub const PROJECT_FILE: &str = "zopp.toml";
const MAX_PROJECT_FILE: u64 = 256 * 1024;

/// The `[defaults]` table of a `zopp.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Defaults {
    /// Default workspace name.
    pub workspace: Option<String>,
    /// Default project name.
    pub project: Option<String>,
    /// Default environment name.
    pub environment: Option<String>,
}

/// Other tables are allowed (later features add them), so unknown keys are not an error.
#[derive(Debug, Default, Deserialize)]
struct ProjectFile {
    #[serde(default)]
    defaults: Defaults,
}

/// A `zopp.toml` that was found and parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDefaults {
    /// Where it was found.
    pub path: PathBuf,
    /// Its `[defaults]`.
    pub defaults: Defaults,
}

/// Finds the nearest `zopp.toml` in `start` or one of its ancestors and parses it.
///
/// # Errors
/// [`Error::LocalFormat`] when the nearest file is not valid; [`Error::LocalIo`] when it exists
/// but cannot be read.
pub fn find(start: &Path) -> Result<Option<FoundDefaults>> {
    for dir in start.ancestors() {
        let path = dir.join(PROJECT_FILE);
        match read_bounded(&path, MAX_PROJECT_FILE) {
            Ok(bytes) => return parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory named zopp.toml, say: not ours, keep walking.
            Err(e) if path.is_dir() => tracing::debug!(error = %e, "skipping {}", path.display()),
            Err(e) => return Err(Error::io("cannot read", path, e)),
        }
    }
    Ok(None)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<FoundDefaults> {
    let bad = |message: String| Error::LocalFormat {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let file: ProjectFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
    Ok(FoundDefaults {
        path: path.to_owned(),
        defaults: file.defaults,
    })
}

/// Applies zopp's precedence: flag > `ZOPP_*` environment variable > `zopp.toml` > built-in
/// default. An empty variable or file value counts as unset, so `ZOPP_WORKSPACE=` does not
/// shadow `zopp.toml`; an explicit flag is always taken, so `-w ''` is refused as a bad name
/// rather than silently replaced.
pub fn pick<T: AsRef<str>>(
    flag: Option<T>,
    env: Option<T>,
    file: Option<T>,
    default: Option<T>,
) -> Option<T> {
    flag.or_else(|| {
        [env, file, default]
            .into_iter()
            .flatten()
            .find(|v| !v.as_ref().is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const FULL: &str =
        "[defaults]\nworkspace = \"acme\"\nproject = \"api\"\nenvironment = \"dev\"\n";

    #[test]
    fn nearest_file_wins_walking_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deep = tmp.path().join("repo/service/src");
        std::fs::create_dir_all(&deep).expect("dirs");
        assert_eq!(find(&deep).expect("no file is fine"), None);

        std::fs::write(tmp.path().join("zopp.toml"), FULL).expect("write");
        let found = find(&deep).expect("parse").expect("found");
        assert_eq!(found.path, tmp.path().join("zopp.toml"));
        assert_eq!(found.defaults.workspace.as_deref(), Some("acme"));
        assert_eq!(found.defaults.environment.as_deref(), Some("dev"));

        // A closer file shadows the outer one entirely, even when it sets fewer keys.
        std::fs::write(
            tmp.path().join("repo/zopp.toml"),
            "[defaults]\nproject = \"web\"\n",
        )
        .expect("write");
        let found = find(&deep).expect("parse").expect("found");
        assert_eq!(found.path, tmp.path().join("repo/zopp.toml"));
        assert_eq!(
            found.defaults,
            Defaults {
                workspace: None,
                project: Some("web".into()),
                environment: None,
            }
        );
    }

    #[test]
    fn other_tables_are_allowed_and_bad_toml_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join("zopp.toml"),
            "[run]\nmask = true\n[defaults]\nworkspace = \"acme\"\n",
        )
        .expect("write");
        let found = find(tmp.path()).expect("parse").expect("found");
        assert_eq!(found.defaults.workspace.as_deref(), Some("acme"));

        std::fs::write(tmp.path().join("zopp.toml"), "[defaults\nworkspace=").expect("write");
        let err = find(tmp.path()).expect_err("invalid");
        assert!(matches!(err, Error::LocalFormat { .. }));
        assert!(err.to_string().contains("zopp.toml"), "{err}");
    }

    #[test]
    fn empty_file_means_no_defaults() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("zopp.toml"), "").expect("write");
        let found = find(tmp.path()).expect("parse").expect("found");
        assert_eq!(found.defaults, Defaults::default());
    }

    #[rstest]
    #[case::flag_beats_all(Some("f"), Some("e"), Some("t"), Some("d"), Some("f"))]
    #[case::env_beats_file(None, Some("e"), Some("t"), Some("d"), Some("e"))]
    #[case::file_beats_default(None, None, Some("t"), Some("d"), Some("t"))]
    #[case::default_last(None, None, None, Some("d"), Some("d"))]
    #[case::nothing(None, None, None, None, None)]
    #[case::empty_env_is_unset(None, Some(""), Some("t"), None, Some("t"))]
    #[case::empty_file_is_unset(None, None, Some(""), Some("d"), Some("d"))]
    #[case::empty_flag_is_kept(Some(""), Some("e"), None, None, Some(""))]
    fn precedence(
        #[case] flag: Option<&str>,
        #[case] env: Option<&str>,
        #[case] file: Option<&str>,
        #[case] default: Option<&str>,
        #[case] want: Option<&str>,
    ) {
        assert_eq!(pick(flag, env, file, default), want);
    }
}
