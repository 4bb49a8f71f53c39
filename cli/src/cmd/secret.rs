//! `zopp secret set|get|list|delete|history|rollback`.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zeroize::Zeroizing;
use zopp_cli::validate::{check_name, check_value_len, NameKind, MAX_VALUE_LEN};
use zopp_cli::{EnvRef, Error, Missing, SecretRecord};
use zopp_crypto::envelope::SecretKind;
use zopp_formats::Entry;

use crate::args::{SecretCommand, SecretSetArgs};
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{
    rfc3339, HistoryRowJson, Out, SecretDeletedJson, SecretRollbackJson, SecretRowJson,
    SecretSetJson, SecretValueJson,
};

/// Runs a secret command.
pub async fn run(ctx: &Context, out: &Out, cmd: &SecretCommand) -> Result<(), CliError> {
    match cmd {
        SecretCommand::Set(a) => set(ctx, out, a).await,
        SecretCommand::Get(a) => {
            check_name(NameKind::Secret, &a.name)?;
            let point = a.point.resolve()?;
            let env = ctx.env_ref()?;
            let client = ctx.client().await?;
            let state;
            let fetched;
            let rec = match point {
                // The value in an earlier state: that whole state, verified, then the name.
                Some(at) => {
                    state = client.fetch_environment_at(&env, at).await?;
                    state
                        .secrets
                        .iter()
                        .find(|s| s.name == a.name)
                        .ok_or_else(|| {
                            Error::NotFound(Missing::Other(format!(
                                "secret '{}' did not exist in environment '{}' at {}",
                                a.name,
                                env.environment(),
                                at.describe()
                            )))
                        })?
                }
                None => {
                    fetched = client.get_secret(&env, &a.name, a.version).await?;
                    &fetched
                }
            };
            if out.is_json() {
                return out.json(&SecretValueJson {
                    name: &rec.name,
                    value: utf8(rec)?,
                    version: rec.version,
                });
            }
            // Exactly the value and one newline, so `$(zopp secret get K)` gives back the value.
            let value = rec.expose_value();
            let mut buf = Zeroizing::new(Vec::with_capacity(value.len() + 1));
            buf.extend_from_slice(value);
            buf.push(b'\n');
            out.bytes(&buf)
        }
        SecretCommand::List(a) => {
            let point = a.point.resolve()?;
            let env = ctx.env_ref()?;
            let state = ctx
                .client()
                .await?
                .fetch_environment_at(&env, point.unwrap_or_default())
                .await?;
            // Kubeconfigs and apps live in the same store; `secret list` shows plain secrets.
            let secrets: Vec<&SecretRecord> = state
                .secrets
                .iter()
                .filter(|s| s.kind() == Some(SecretKind::Secret))
                .collect();
            if out.is_json() {
                let rows: Vec<_> = secrets
                    .iter()
                    .map(|s| SecretRowJson {
                        name: &s.name,
                        version: s.version,
                        updated_at: rfc3339(s.created_at_ms),
                        updated_by: s.writer.label(),
                    })
                    .collect();
                return out.json(&rows);
            }
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.version.to_string(),
                        rfc3339(s.created_at_ms),
                        s.writer.label().to_owned(),
                    ]
                })
                .collect();
            out.table_or(
                &["NAME", "VERSION", "UPDATED", "UPDATED BY"],
                &rows,
                "no secrets in this environment",
            )
        }
        SecretCommand::Delete(a) => {
            check_name(NameKind::Secret, &a.name)?;
            let env = ctx.env_ref()?;
            let done = ctx.client().await?.delete_secret(&env, &a.name).await?;
            if out.is_json() {
                return out.json(&SecretDeletedJson {
                    name: &done.name,
                    version: done.version,
                    deleted: true,
                });
            }
            out.note(&format!(
                "deleted secret '{}' (version {}; `zopp secret rollback {} --to {}` restores it)",
                done.name,
                done.version,
                done.name,
                done.version - 1
            ));
            Ok(())
        }
        SecretCommand::History(a) => {
            check_name(NameKind::Secret, &a.name)?;
            let env = ctx.env_ref()?;
            let history = ctx.client().await?.secret_history(&env, &a.name).await?;
            if out.is_json() {
                let rows = history
                    .iter()
                    .map(|r| {
                        Ok(HistoryRowJson {
                            version: r.version,
                            updated_at: rfc3339(r.created_at_ms),
                            updated_by: r.writer.label(),
                            deleted: r.is_deleted(),
                            value: if a.show_values && !r.is_deleted() {
                                Some(utf8(r)?)
                            } else {
                                None
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, CliError>>()?;
                return out.json(&rows);
            }
            let mut header = vec!["VERSION", "UPDATED", "UPDATED BY", "CHANGE"];
            if a.show_values {
                header.push("VALUE");
            }
            let rows: Vec<Vec<String>> = history
                .iter()
                .map(|r| {
                    let mut row = vec![
                        r.version.to_string(),
                        rfc3339(r.created_at_ms),
                        r.writer.label().to_owned(),
                        if r.is_deleted() { "deleted" } else { "set" }.to_owned(),
                    ];
                    if a.show_values {
                        // One line per version: escape newlines and control characters.
                        row.push(
                            String::from_utf8_lossy(r.expose_value())
                                .escape_debug()
                                .to_string(),
                        );
                    }
                    row
                })
                .collect();
            out.table_or(&header, &rows, "no versions to list")
        }
        SecretCommand::Import(a) => crate::cmd::transfer::import(ctx, out, a).await,
        SecretCommand::Export(a) => crate::cmd::transfer::export(ctx, out, a).await,
        SecretCommand::Rollback(a) => {
            check_name(NameKind::Secret, &a.name)?;
            let env = ctx.env_ref()?;
            let done = ctx
                .client()
                .await?
                .rollback_secret(&env, &a.name, a.to)
                .await?;
            if out.is_json() {
                return out.json(&SecretRollbackJson {
                    name: &done.name,
                    version: done.version,
                    rolled_back_to: a.to,
                });
            }
            out.note(&format!(
                "restored secret '{}' to the value of version {} as version {}",
                done.name, a.to, done.version
            ));
            Ok(())
        }
    }
}

async fn set(ctx: &Context, out: &Out, a: &SecretSetArgs) -> Result<(), CliError> {
    if a.name.contains('=') || a.if_env_version.is_some() {
        return set_many(ctx, out, a).await;
    }
    check_name(NameKind::Secret, &a.name)?;
    let env = ctx.env_ref()?;
    // The value is read (and its size checked) before any prompt for a passphrase or call.
    let value = read_value(a, ctx.interactive)?;
    let client = ctx.client().await?;
    let done = client
        .set_secret(&env, &a.name, &value, a.if_version)
        .await?;
    warn_dangling(&client, &env, &[(a.name.as_str(), &value[..])]).await;
    if out.is_json() {
        return out.json(&SecretSetJson {
            name: &done.name,
            version: done.version,
            env_version: done.env_version,
        });
    }
    out.note(&format!(
        "set secret '{}' (version {})",
        done.name, done.version
    ));
    Ok(())
}

/// Warns on stderr about each `${…}` reference in the values just written that points at
/// nothing: `zopp run` and `zopp inject` would fail on it later, far from the typo. Costs a
/// fetch only when some value holds a `${`; never fails the write that already happened.
async fn warn_dangling(client: &zopp_cli::Client, env: &EnvRef, written: &[(&str, &[u8])]) {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write as _;
    use zopp_formats::template::{references, Reference};

    let mut wanted: Vec<(&str, Reference)> = Vec::new();
    let mut warnings = Vec::new();
    for (name, value) in written {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        if !text.contains("${") {
            continue;
        }
        match references(text) {
            Ok(refs) => wanted.extend(refs.into_iter().map(|r| (*name, r))),
            Err(e) => warnings.push(format!(
                "secret '{name}' holds a malformed reference ({}); `zopp run` will fail on it",
                e.to_string().replace("the template", "its value")
            )),
        }
    }
    // Names of each environment referenced, fetched once; `Err` says why it could not be read.
    let mut names: BTreeMap<(String, String), Result<BTreeSet<String>, String>> = BTreeMap::new();
    for (_, r) in &wanted {
        let (project, environment) = match r {
            Reference::Local(_) => (env.project().to_owned(), env.environment().to_owned()),
            Reference::Remote {
                project,
                environment,
                ..
            } => (project.clone(), environment.clone()),
        };
        if names.contains_key(&(project.clone(), environment.clone())) {
            continue;
        }
        let listed = match EnvRef::try_new(env.workspace(), &project, &environment) {
            Ok(target) => client
                .fetch_environment(&target)
                .await
                .map(|state| state.secrets.iter().map(|s| s.name.clone()).collect())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        names.insert((project, environment), listed);
    }
    for (name, r) in &wanted {
        let (key, place) = match r {
            Reference::Local(key) => (
                key,
                (env.project().to_owned(), env.environment().to_owned()),
            ),
            Reference::Remote {
                project,
                environment,
                key,
            } => (key, (project.clone(), environment.clone())),
        };
        let where_ = format!("{}/{}/{}", env.workspace(), place.0, place.1);
        match names.get(&place) {
            Some(Ok(set)) if set.contains(key) => {}
            Some(Ok(_)) => warnings.push(format!(
                "secret '{name}' references {r}, which does not exist in {where_}; `zopp run` and `zopp inject` will fail on it until it does"
            )),
            Some(Err(e)) => warnings.push(format!(
                "secret '{name}' references {r}, which cannot be checked: {e}"
            )),
            None => {}
        }
    }
    let mut err = std::io::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "warning: {w}");
    }
}

/// `zopp secret set A=1 B=2 [--if-env-version N]`: several secrets in one conditioned write.
/// `KEY VALUE` with `--if-env-version` is the one-pair case.
async fn set_many(ctx: &Context, out: &Out, a: &SecretSetArgs) -> Result<(), CliError> {
    let mut entries: Vec<Entry> = Vec::new();
    if a.name.contains('=') {
        let pairs = std::iter::once(OsString::from(&a.name))
            .chain(a.value.iter().cloned())
            .chain(a.more.iter().cloned());
        for pair in pairs {
            let text = pair.into_string().map_err(|_| {
                Error::InvalidInput("a KEY=VALUE argument is not valid UTF-8".into())
            })?;
            let Some((name, value)) = text.split_once('=') else {
                return Err(Error::InvalidInput(format!(
                    "'{}' is not KEY=VALUE: with several secrets every argument is KEY=VALUE",
                    text.escape_debug()
                ))
                .into());
            };
            check_name(NameKind::Secret, name)?;
            check_value_len(value.len())?;
            if entries.iter().any(|e| e.name == name) {
                return Err(Error::InvalidInput(format!("'{name}' is given twice")).into());
            }
            entries.push(Entry::new(name, value));
        }
    } else {
        check_name(NameKind::Secret, &a.name)?;
        if !a.more.is_empty() {
            return Err(Error::InvalidInput(
                "give either KEY VALUE or KEY=VALUE pairs, not both".into(),
            )
            .into());
        }
        let value = read_value(a, ctx.interactive)?;
        let value = Zeroizing::new(String::from_utf8(value.to_vec()).map_err(|_| {
            Error::InvalidInput(
                "with --if-env-version the value must be UTF-8 text; set binary values without it"
                    .into(),
            )
        })?);
        entries.push(Entry::new(a.name.clone(), value));
    }
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    let outcome = client.set_secrets(&env, &entries, a.if_env_version).await?;
    let written: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.value.expose_secret().as_bytes()))
        .collect();
    warn_dangling(&client, &env, &written).await;
    if out.is_json() {
        return out.json(&SecretSetManyJson {
            added: &outcome.added,
            changed: &outcome.changed,
            unchanged: &outcome.unchanged,
            env_version: outcome.env_version,
        });
    }
    out.note(&format!(
        "set {} secrets in {env}: {} added, {} changed, {} unchanged{}",
        entries.len(),
        outcome.added.len(),
        outcome.changed.len(),
        outcome.unchanged.len(),
        outcome
            .env_version
            .map(|v| format!(" (environment version {v})"))
            .unwrap_or_default()
    ));
    Ok(())
}

/// JSON of `secret set` with several secrets.
#[derive(Debug, serde::Serialize)]
struct SecretSetManyJson<'a> {
    added: &'a [String],
    changed: &'a [String],
    unchanged: &'a [String],
    /// The environment version after the write (absent when nothing changed).
    env_version: Option<u64>,
}

/// The value as UTF-8 for JSON output.
fn utf8(rec: &SecretRecord) -> Result<&str, CliError> {
    std::str::from_utf8(rec.expose_value()).map_err(|_| {
        Error::Unrepresentable {
            name: rec.name.clone(),
            reason: "is not valid UTF-8, so it cannot be printed as JSON",
        }
        .into()
    })
}

/// Reads the value from the argument, stdin (`-`), `--file`, or a hidden prompt.
fn read_value(a: &SecretSetArgs, interactive: bool) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(path) = &a.file {
        return read_file(path);
    }
    match a.value.as_deref() {
        Some(v) if v == OsStr::new("-") => read_limited(std::io::stdin().lock())
            .map_err(|e| Error::io("cannot read", "stdin", e).into())
            .and_then(checked),
        Some(v) => checked(Zeroizing::new(v.as_bytes().to_vec())),
        None if interactive => {
            let v = rpassword::prompt_password(format!("value for '{}': ", a.name))
                .map_err(|e| Error::io("cannot read a value from", "/dev/tty", e))?;
            checked(Zeroizing::new(v.into_bytes()))
        }
        None => Err(CliError::usage(
            format!("no value given for secret '{}'", a.name),
            "pass the value, - to read it from stdin, or --file FILE",
        )),
    }
}

fn checked(v: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, CliError> {
    check_value_len(v.len())?;
    Ok(v)
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let v = read_limited(f).map_err(|e| Error::io("cannot read", path, e))?;
    checked(v)
}

/// Reads to the end, but at most one byte past the limit: enough to tell that a value is too
/// large without holding an unbounded input in memory. The buffer is allocated once, so no
/// reallocation leaves unwiped copies of the value behind.
fn read_limited(r: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE_LEN + 1));
    r.take(MAX_VALUE_LEN as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Option<&str>, file: Option<&Path>) -> SecretSetArgs {
        SecretSetArgs {
            name: "K".into(),
            value: value.map(Into::into),
            file: file.map(Into::into),
            if_version: None,
            more: Vec::new(),
            if_env_version: None,
        }
    }

    #[test]
    fn values_come_from_argument_or_file_byte_for_byte() {
        let v = read_value(&args(Some("a b\n"), None), false).expect("arg");
        assert_eq!(v.as_slice(), b"a b\n");
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("v");
        std::fs::write(&f, b"\x00\xffbinary\r\n").expect("write");
        let v = read_value(&args(None, Some(&f)), false).expect("file");
        assert_eq!(v.as_slice(), b"\x00\xffbinary\r\n");
    }

    #[test]
    fn size_limit_is_exact() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("v");
        std::fs::write(&f, vec![b'x'; MAX_VALUE_LEN]).expect("write");
        assert_eq!(
            read_value(&args(None, Some(&f)), false)
                .expect("exactly 1 MiB")
                .len(),
            MAX_VALUE_LEN
        );
        std::fs::write(&f, vec![b'x'; MAX_VALUE_LEN + 1]).expect("write");
        let err = read_value(&args(None, Some(&f)), false).expect_err("too big");
        assert!(matches!(err, CliError::Sdk(Error::ValueTooLarge { .. })));
    }

    #[test]
    fn no_value_without_a_terminal_is_a_usage_error() {
        let err = read_value(&args(None, None), false).expect_err("nothing to read");
        let CliError::Usage { hint, .. } = err else {
            panic!("usage error")
        };
        assert!(hint.expect("hint").contains("--file"));
    }

    #[test]
    fn missing_file_is_named() {
        let err =
            read_value(&args(None, Some(Path::new("/nonexistent/v"))), false).expect_err("missing");
        let CliError::Sdk(e) = err else {
            panic!("sdk error")
        };
        assert!(e.to_string().contains("/nonexistent/v"));
    }
}
