//! Everything printed on stdout: the documented JSON objects (dedicated structs, never internal
//! types; tests pin their exact shape) and the human forms. Messages go to stderr.

use std::io::{self, Write};

use serde::Serialize;

use crate::args::OutputFormat;
use crate::failure::CliError;

/// `zopp join`.
#[derive(Debug, Serialize)]
pub struct JoinJson<'a> {
    /// New user id.
    pub user_id: &'a str,
    /// New principal id.
    pub principal_id: &'a str,
    /// The user's email.
    pub email: &'a str,
    /// This device's principal name.
    pub principal_name: &'a str,
    /// Server joined.
    pub server: &'a str,
}

/// `zopp whoami`.
#[derive(Debug, Serialize)]
pub struct WhoamiJson<'a> {
    /// Principal id.
    pub principal_id: &'a str,
    /// User id.
    pub user_id: &'a str,
    /// User email.
    pub email: &'a str,
    /// Principal name.
    pub principal_name: &'a str,
    /// Server asked.
    pub server: &'a str,
    /// Which identity acts: `token` (`ZOPP_TOKEN`) or `home` (the key in `ZOPP_HOME`).
    pub identity: &'static str,
    /// With `identity: token`, the zopp home whose identity the token overrides; else `null`.
    pub overridden_home: Option<String>,
}

/// One workspace.
#[derive(Debug, Serialize)]
pub struct WorkspaceJson<'a> {
    /// Workspace id.
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// One project.
#[derive(Debug, Serialize)]
pub struct ProjectJson<'a> {
    /// Project id.
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Workspace name.
    pub workspace: &'a str,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// One environment.
#[derive(Debug, Serialize)]
pub struct EnvironmentJson<'a> {
    /// Environment id.
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Workspace name.
    pub workspace: &'a str,
    /// Project name.
    pub project: &'a str,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Environment version (bumped by every write).
    pub env_version: u64,
    /// Current key epoch.
    pub key_epoch: u32,
    /// Retention limit: versions of each secret kept; `null` keeps every version.
    pub keep_versions: Option<u64>,
    /// Oldest environment version a point-in-time read can still return (0: nothing pruned).
    pub history_floor: u64,
}

impl<'a> EnvironmentJson<'a> {
    /// The JSON form of `e`, in project `project` of workspace `workspace`.
    pub fn of(e: &'a zopp_proto::v1::Environment, workspace: &'a str, project: &'a str) -> Self {
        Self {
            id: &e.id,
            name: &e.name,
            workspace,
            project,
            created_at: rfc3339(e.created_at_ms),
            env_version: e.env_version,
            key_epoch: e.key_epoch,
            keep_versions: (e.keep_versions != 0).then_some(e.keep_versions),
            history_floor: e.history_floor,
        }
    }
}

/// `zopp environment set-retention`.
#[derive(Debug, Serialize)]
pub struct RetentionJson<'a> {
    /// The environment as it is now.
    pub environment: EnvironmentJson<'a>,
    /// Versions the new limit pruned at once.
    pub pruned: u64,
}

/// `zopp environment set-retention N --dry-run`: what the limit would delete now.
#[derive(Debug, Serialize)]
pub struct RetentionPlanJson<'a> {
    /// The environment's name.
    pub environment: &'a str,
    /// The limit asked for.
    pub keep_versions: u64,
    /// Versions of live secrets the limit would delete at once.
    pub would_prune: u64,
    /// The live secrets that would lose versions, sorted by name.
    pub secrets: Vec<RetentionSecretJson<'a>>,
    /// Always true: nothing was changed.
    pub dry_run: bool,
}

/// One secret in [`RetentionPlanJson`].
#[derive(Debug, Serialize)]
pub struct RetentionSecretJson<'a> {
    /// The secret's name.
    pub name: &'a str,
    /// Versions it would lose.
    pub would_prune: u64,
}

/// `zopp environment restore`: what changed (or would, with `dry_run`).
#[derive(Debug, Serialize)]
pub struct RestoreJson<'a> {
    /// The point restored, as given (`2026-01-01T00:00:00.000Z` or `environment version 3`).
    pub restored_from: String,
    /// Environment version of the state restored.
    pub from_env_version: u64,
    /// Environment version the restore was based on.
    pub base_env_version: u64,
    /// Names that come back.
    pub added: &'a [String],
    /// Names whose earlier value comes back.
    pub changed: &'a [String],
    /// Names deleted because they did not exist then.
    pub removed: &'a [String],
    /// Names already as they were.
    pub unchanged: &'a [String],
    /// Environment version after the write; `null` when nothing was written.
    pub env_version: Option<u64>,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
}

/// `zopp diff`: the two sides and every name that differs.
#[derive(Debug, Serialize)]
pub struct DiffJson<'a> {
    /// The first side, e.g. `dev` or `dev@environment version 3`.
    pub from: String,
    /// The second side.
    pub to: String,
    /// Environment version of the first side.
    pub from_env_version: u64,
    /// Environment version of the second side.
    pub to_env_version: u64,
    /// Names that differ, sorted by name.
    pub changes: Vec<DiffRowJson<'a>>,
    /// How many names are the same on both sides.
    pub unchanged: usize,
}

/// One name in `zopp diff`.
#[derive(Debug, Serialize)]
pub struct DiffRowJson<'a> {
    /// The secret's name.
    pub name: &'a str,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The first side's value (only with `--show-values`, and only when it exists there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_value: Option<&'a str>,
    /// The second side's value (only with `--show-values`, and only when it exists there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_value: Option<&'a str>,
}

/// A deleted workspace, project or environment.
#[derive(Debug, Serialize)]
pub struct DeletedJson<'a> {
    /// `workspace`, `project` or `environment`.
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Always true.
    pub deleted: bool,
}

/// `zopp secret get`.
#[derive(Serialize)]
pub struct SecretValueJson<'a> {
    /// Secret name.
    pub name: &'a str,
    /// The value (plaintext).
    pub value: &'a str,
    /// Version read.
    pub version: u64,
}

impl std::fmt::Debug for SecretValueJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValueJson({}, v{}, ..)", self.name, self.version)
    }
}

/// One row of `zopp secret list` (never a value).
#[derive(Debug, Serialize)]
pub struct SecretRowJson<'a> {
    /// Secret name.
    pub name: &'a str,
    /// Latest version.
    pub version: u64,
    /// When it was written, RFC 3339.
    pub updated_at: String,
    /// Who wrote it.
    pub updated_by: &'a str,
}

/// `zopp secret set`.
#[derive(Debug, Serialize)]
pub struct SecretSetJson<'a> {
    /// Secret name.
    pub name: &'a str,
    /// The new version.
    pub version: u64,
    /// Environment version after the write.
    pub env_version: u64,
}

/// `zopp secret delete`.
#[derive(Debug, Serialize)]
pub struct SecretDeletedJson<'a> {
    /// Secret name.
    pub name: &'a str,
    /// Version of the tombstone.
    pub version: u64,
    /// Always true.
    pub deleted: bool,
}

/// `zopp secret rollback`.
#[derive(Debug, Serialize)]
pub struct SecretRollbackJson<'a> {
    /// Secret name.
    pub name: &'a str,
    /// The new version.
    pub version: u64,
    /// Version whose value it restores.
    pub rolled_back_to: u64,
}

/// One row of `zopp secret history`.
#[derive(Serialize)]
pub struct HistoryRowJson<'a> {
    /// Version number.
    pub version: u64,
    /// When it was written, RFC 3339.
    pub updated_at: String,
    /// Who wrote it.
    pub updated_by: &'a str,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// The value, with `--show-values` (absent for deletions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
}

impl std::fmt::Debug for HistoryRowJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HistoryRowJson(v{}, ..)", self.version)
    }
}

/// Unix milliseconds as RFC 3339 in UTC, always with three fractional digits so that columns
/// line up and strings sort in time order.
pub fn rfc3339(ms: i64) -> String {
    zopp_cli::secrets::rfc3339(ms)
}

/// Writes results to stdout and notes to stderr.
pub struct Out {
    /// The chosen format.
    pub format: OutputFormat,
    /// Whether tables start with their header line (`--no-header` drops it).
    pub header: bool,
}

impl Out {
    /// An output in `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self {
            format,
            header: true,
        }
    }

    /// Whether JSON was asked for.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints one JSON document and a newline.
    pub fn json<T: Serialize>(&self, value: &T) -> Result<(), CliError> {
        let mut buf = serde_json::to_vec(value).map_err(|e| CliError::Stdout(e.into()))?;
        buf.push(b'\n');
        let result = self.bytes(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        result
    }

    /// Prints raw bytes.
    pub fn bytes(&self, bytes: &[u8]) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(CliError::Stdout)
    }

    /// Prints a line of text.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(CliError::Stdout)
    }

    /// Prints aligned columns under a header line; an empty table prints nothing on stdout and
    /// says "nothing to list" on stderr. Prefer [`Out::table_or`], which names what is missing.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
        self.table_or(header, rows, "nothing to list")
    }

    /// Prints aligned columns under a header line (piped too, so columns stay named; the
    /// `--no-header` flag drops it). An empty table prints nothing on stdout and `empty` on
    /// stderr, so a person sees why there is no output and a script reads zero rows.
    pub fn table_or(
        &self,
        header: &[&str],
        rows: &[Vec<String>],
        empty: &str,
    ) -> Result<(), CliError> {
        if rows.is_empty() {
            let _ = writeln!(io::stderr(), "{empty}");
            return Ok(());
        }
        let show_header = self.header;
        let cols = header.len();
        let mut widths: Vec<usize> = if show_header {
            header.iter().map(|h| h.chars().count()).collect()
        } else {
            vec![0; cols]
        };
        for r in rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                if i + 1 < cols {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                } else {
                    line.push_str(cell);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        };
        if show_header {
            push_row(&mut header.iter().copied());
        }
        for r in rows {
            push_row(&mut r.iter().map(String::as_str));
        }
        self.bytes(text.as_bytes())
    }

    /// A note for people on stderr (human output only; JSON consumers read stdout alone).
    pub fn note(&self, text: &str) {
        if !self.is_json() {
            let _ = writeln!(io::stderr(), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The JSON shapes are contracts: each test parses the output into a mirror struct that
    //! refuses unknown fields, so adding, renaming or dropping a field fails here first.
    use super::*;
    use serde::Deserialize;

    fn round<'a, T: Serialize, U: Deserialize<'a>>(v: &T, buf: &'a mut String) -> U {
        *buf = serde_json::to_string(v).expect("serialize");
        serde_json::from_str(buf).unwrap_or_else(|e| panic!("{e}: {buf}"))
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Join {
        user_id: String,
        principal_id: String,
        email: String,
        principal_name: String,
        server: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Value {
        name: String,
        value: String,
        version: u64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Row {
        name: String,
        version: u64,
        updated_at: String,
        updated_by: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct History {
        version: u64,
        updated_at: String,
        updated_by: String,
        deleted: bool,
        #[serde(default)]
        value: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Workspace {
        id: String,
        name: String,
        created_at: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Environment {
        id: String,
        name: String,
        workspace: String,
        project: String,
        created_at: String,
        env_version: u64,
        key_epoch: u32,
        keep_versions: Option<u64>,
        history_floor: u64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Set {
        name: String,
        version: u64,
        env_version: u64,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Deleted {
        name: String,
        version: u64,
        deleted: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rollback {
        name: String,
        version: u64,
        rolled_back_to: u64,
    }

    #[test]
    fn join_shape() {
        let mut buf = String::new();
        let j: Join = round(
            &JoinJson {
                user_id: "u",
                principal_id: "p",
                email: "a@b",
                principal_name: "laptop",
                server: "http://s",
            },
            &mut buf,
        );
        assert_eq!((j.user_id.as_str(), j.principal_id.as_str()), ("u", "p"));
    }

    #[test]
    fn secret_get_shape() {
        let mut buf = String::new();
        let v: Value = round(
            &SecretValueJson {
                name: "API_KEY",
                value: "line\n\"quoted\"",
                version: 2,
            },
            &mut buf,
        );
        assert_eq!(
            (v.name.as_str(), v.value.as_str(), v.version),
            ("API_KEY", "line\n\"quoted\"", 2)
        );
    }

    #[test]
    fn secret_list_shape_has_no_value() {
        let rows = vec![SecretRowJson {
            name: "A",
            version: 3,
            updated_at: rfc3339(1_700_000_000_123),
            updated_by: "alice@example.com",
        }];
        let mut buf = String::new();
        let parsed: Vec<Row> = round(&rows, &mut buf);
        assert_eq!(parsed[0].name, "A");
        assert_eq!(parsed[0].version, 3);
        assert_eq!(parsed[0].updated_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(parsed[0].updated_by, "alice@example.com");
    }

    #[test]
    fn history_shape_includes_values_only_when_asked() {
        let mut buf = String::new();
        let h: History = round(
            &HistoryRowJson {
                version: 1,
                updated_at: rfc3339(0),
                updated_by: "a",
                deleted: false,
                value: None,
            },
            &mut buf,
        );
        assert!(h.value.is_none() && !buf.contains("value"));
        let h: History = round(
            &HistoryRowJson {
                version: 2,
                updated_at: rfc3339(0),
                updated_by: "a",
                deleted: false,
                value: Some("v"),
            },
            &mut buf,
        );
        assert_eq!(h.value.as_deref(), Some("v"));
    }

    #[test]
    fn scope_and_write_shapes() {
        let mut buf = String::new();
        let _: Workspace = round(
            &WorkspaceJson {
                id: "i",
                name: "acme",
                created_at: rfc3339(0),
            },
            &mut buf,
        );
        let _: Environment = round(
            &EnvironmentJson {
                id: "i",
                name: "dev",
                workspace: "acme",
                project: "api",
                created_at: rfc3339(0),
                env_version: 4,
                key_epoch: 1,
                keep_versions: Some(3),
                history_floor: 2,
            },
            &mut buf,
        );
        let _: Set = round(
            &SecretSetJson {
                name: "A",
                version: 1,
                env_version: 1,
            },
            &mut buf,
        );
        let _: Deleted = round(
            &SecretDeletedJson {
                name: "A",
                version: 2,
                deleted: true,
            },
            &mut buf,
        );
        let _: Rollback = round(
            &SecretRollbackJson {
                name: "A",
                version: 3,
                rolled_back_to: 1,
            },
            &mut buf,
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_763_778_019_180), "2025-11-22T02:20:19.180Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Parses back as RFC 3339.
        use time::format_description::well_known::Rfc3339;
        assert!(time::OffsetDateTime::parse(&rfc3339(1_763_778_019_180), &Rfc3339).is_ok());
    }
}
