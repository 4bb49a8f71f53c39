//! `zopp secret import` and `zopp secret export`: other tools' files in, files for other
//! tools out. Parsing and rendering are `zopp-formats`'; this module reads and writes the
//! files and talks to the SDK.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use serde::Serialize;
use zopp_cli::bulk::{ImportProgress, MAX_WRITES_PER_CALL};
use zopp_cli::files::write_private;
use zopp_cli::Error;
use zopp_crypto::envelope::SecretKind;
use zopp_formats::{
    detect, parse, render, Entry, ExportFormat, ExportOptions, ImportFormat, ImportOptions,
};

use crate::cmd::inject::read_text;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::Out;

/// Largest import input: 20,000 secrets of any sensible size fit well below it.
const MAX_IMPORT_INPUT: usize = 256 * 1024 * 1024;
/// Imports at least this large show a progress bar on a terminal.
const PROGRESS_AT: usize = 500;

/// `zopp secret import`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Sources (--format, detected from the content when it is obvious):
  dotenv     a .env file (comments, export, quotes, escapes, multi-line values)
  json       a flat JSON object
  yaml       a flat YAML map
  1password  op item get ITEM --format json
  aws-sm     aws secretsmanager get-secret-value --secret-id ID
  vault      vault kv get -format=json PATH (KV v1 or v2)
  doppler    doppler secrets download --no-file --format json

The import is one transaction: every changed secret gets a new version, or none does.
Unchanged values are skipped. Any invalid line or entry imports nothing.

Example:
  doppler secrets download --no-file --format json | zopp secret import -e prod")]
pub struct ImportArgs {
    /// The file to import, or - for stdin
    #[arg(short = 'i', long = "in", value_name = "FILE|-", default_value = "-")]
    pub input: PathBuf,
    /// The source format [default: detected from the content]
    #[arg(long, short = 'f', value_name = "FORMAT", value_parser = ImportFormat::from_str)]
    pub format: Option<ImportFormat>,
    /// aws-sm only: import the whole SecretString as this one secret
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// Show what would change, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `zopp secret export`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Targets:
  dotenv  KEY=value lines that zopp secret import (and common dotenv readers) read back exactly
  json    a flat JSON object
  yaml    a flat YAML map
  shell   export KEY='value' lines, safe to eval
  k8s     a v1/Secret manifest with base64 data (needs --name)
  docker  a docker run --env-file file (values with line breaks cannot be written)

Example:
  zopp secret export -e prod --format k8s --name api --namespace prod | kubectl apply -f -")]
pub struct ExportArgs {
    /// Output format
    #[arg(long, short = 'f', value_name = "FORMAT", value_parser = ExportFormat::from_str)]
    pub format: ExportFormat,
    /// Write to this file (mode 0600, replaced atomically) instead of stdout
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// k8s: the Secret's metadata.name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// k8s: the Secret's metadata.namespace
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Export an earlier state of the environment
    #[command(flatten)]
    pub point: crate::args::PointArgs,
}

/// `zopp secret import --output json` (names only, never values).
#[derive(Debug, Serialize)]
pub struct ImportJson<'a> {
    /// Names that were added.
    pub added: &'a [String],
    /// Names whose value changed.
    pub changed: &'a [String],
    /// Names left as they were.
    pub unchanged: &'a [String],
}

/// The format of an import: the flag, else the content, else the file extension.
fn import_format(a: &ImportArgs, text: &str) -> Result<ImportFormat, CliError> {
    if let Some(f) = a.format {
        return Ok(f);
    }
    if let Some(f) = detect(text) {
        return Ok(f);
    }
    let by_extension = a.input.extension().and_then(|e| e.to_str()).and_then(|e| {
        match e.to_ascii_lowercase().as_str() {
            "env" => Some(ImportFormat::Dotenv),
            "json" => Some(ImportFormat::Json),
            "yaml" | "yml" => Some(ImportFormat::Yaml),
            _ => None,
        }
    });
    by_extension.ok_or_else(|| {
        CliError::usage(
            "cannot tell the format of the input",
            "pass --format dotenv|json|yaml|1password|aws-sm|vault|doppler",
        )
    })
}

/// Runs `zopp secret import`.
pub async fn import(ctx: &Context, out: &Out, a: &ImportArgs) -> Result<(), CliError> {
    let stdin = a.input == Path::new("-");
    if stdin && std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no input: stdin is a terminal",
            "pass -i FILE, or pipe the file in (zopp secret import < .env)",
        ));
    }
    let text = read_text(&a.input, MAX_IMPORT_INPUT)?;
    let format = import_format(a, &text)?;
    let source = if stdin {
        "<stdin>".to_owned()
    } else {
        a.input.display().to_string()
    };
    let options = ImportOptions {
        source: &source,
        key: a.key.as_deref(),
    };
    let entries = parse(&text, format, &options).map_err(|e| Error::InvalidInput(e.to_string()))?;
    drop(text);
    if entries.len() > MAX_WRITES_PER_CALL {
        return Err(Error::InvalidInput(format!(
            "{source} holds {} secrets; one import takes at most {MAX_WRITES_PER_CALL}: split it",
            entries.len()
        ))
        .into());
    }
    let env = ctx.env_ref()?;
    let client = ctx.client().await?;
    let bar = (entries.len() >= PROGRESS_AT && !a.dry_run && std::io::stderr().is_terminal())
        .then(|| progress_bar(entries.len()));
    let progress = |p: ImportProgress| {
        if let Some(bar) = &bar {
            match p {
                ImportProgress::Sealed { done, .. } => bar.set_position(done as u64),
                ImportProgress::Writing => bar.set_message("writing"),
            }
        }
    };
    let result = client
        .import_secrets(&env, &entries, a.dry_run, &progress)
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let outcome = result?;
    if out.is_json() {
        return out.json(&ImportJson {
            added: &outcome.added,
            changed: &outcome.changed,
            unchanged: &outcome.unchanged,
        });
    }
    let rows: Vec<Vec<String>> = [
        ("added", &outcome.added),
        ("changed", &outcome.changed),
        ("unchanged", &outcome.unchanged),
    ]
    .into_iter()
    .flat_map(|(what, names)| names.iter().map(move |n| vec![what.to_owned(), n.clone()]))
    .collect();
    out.table(&["STATUS", "NAME"], &rows)?;
    let verb = if a.dry_run {
        "would import"
    } else {
        "imported"
    };
    out.note(&format!(
        "{verb} {} secrets into {env}: {} added, {} changed, {} unchanged{}",
        entries.len(),
        outcome.added.len(),
        outcome.changed.len(),
        outcome.unchanged.len(),
        if a.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    ));
    Ok(())
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sealed and signed {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs `zopp secret export`.
pub async fn export(ctx: &Context, out: &Out, a: &ExportArgs) -> Result<(), CliError> {
    let options = ExportOptions {
        k8s_name: a.name.as_deref(),
        k8s_namespace: a.namespace.as_deref(),
    };
    if a.format != ExportFormat::K8s {
        if let Some(flag) = [("--name", &a.name), ("--namespace", &a.namespace)]
            .into_iter()
            .find_map(|(flag, v)| v.is_some().then_some(flag))
        {
            return Err(CliError::usage(
                format!("{flag} would be ignored: it names the Secret of --format k8s"),
                "pass --format k8s, or remove the flag",
            ));
        }
    }
    if a.format == ExportFormat::K8s && a.name.is_none() {
        return Err(CliError::usage(
            "a k8s Secret needs a name",
            "pass --name NAME (and --namespace NS)",
        ));
    }
    let point = a.point.resolve()?;
    let env = ctx.env_ref()?;
    let state = ctx
        .client()
        .await?
        .fetch_environment_at(&env, point.unwrap_or_default())
        .await?;
    let entries = state
        .secrets
        .iter()
        .filter(|s| s.kind() == Some(SecretKind::Secret))
        .map(|s| {
            let text =
                std::str::from_utf8(s.expose_value()).map_err(|_| Error::Unrepresentable {
                    name: s.name.clone(),
                    reason: "is not valid UTF-8, so no text format can hold it",
                })?;
            Ok(Entry::new(s.name.clone(), text))
        })
        .collect::<Result<Vec<Entry>, Error>>()?;
    let rendered =
        render(&entries, a.format, &options).map_err(|e| Error::InvalidInput(e.to_string()))?;
    match &a.out {
        Some(path) => Ok(write_private(path, rendered.as_bytes())?),
        None => out.bytes(rendered.as_bytes()),
    }
}
