//! `zopp audit list|export|verify`: the audit trail of a workspace (`-w`), or of the server when
//! no workspace is given. Listing and export need the admin role on the workspace; verification
//! trusts nothing the server says about the chain (see `zopp_cli::audit`).
//!
//! The command line is parsed here (raw clap structs), then checked into an [`AuditFilter`]
//! before anything is sent. The output objects are dedicated structs with stable field names:
//! `list --output json` prints [`AuditRowJson`]s, `export` prints [`AuditExportRow`]s (the same
//! fields plus everything needed to re-verify the chain offline).

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use zopp_cli::audit::{AuditChain, AuditFilter, AuditItem, PrincipalFilter, Verified};
use zopp_cli::Error;
use zopp_crypto::ids::PrincipalId;

use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, Out};

// ---------- command line ----------

/// `zopp audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first, names resolved where you can decrypt them (admin of
    /// the workspace; without -w or ZOPP_WORKSPACE, the server's chain)
    List(AuditListArgs),
    /// Write audit entries as JSON Lines or CSV, with every field needed to re-verify them
    Export(AuditExportArgs),
    /// Check the whole chain: every hash and link, every actor signature, and the head pinned
    /// by the last run (exit 1 naming the first bad entry)
    Verify,
}

/// Filters shared by `list` and `export`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only entries at or after TIME: RFC 3339 (2025-01-31T09:00:00Z), a UTC date
    /// (2025-01-31) or an age (30m, 1h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries at or before TIME (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this action, e.g. secret.read, secret.write, environment.create
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only this principal (id), or every principal of the user with this email
    #[arg(long, value_name = "ID|EMAIL")]
    pub principal: Option<String>,
}

/// `zopp audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show only the newest N matching entries; 0 shows all [default: a screenful on a
    /// terminal, all when piped or with --output json]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `zopp audit export`.
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// File format
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Write to FILE (created with mode 0600, replaced whole) instead of stdout
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line
    Jsonl,
    /// Comma-separated values with a header row (RFC 4180)
    Csv,
}

// ---------- output ----------

/// One entry of `zopp audit list --output json`. Field names are stable.
#[derive(Debug, Serialize)]
pub struct AuditRowJson<'a> {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Server time of the entry, RFC 3339.
    pub time: String,
    /// Acting principal id; null for the server itself.
    pub actor: Option<&'a str>,
    /// The actor's user email; null for service principals and the server.
    pub actor_email: Option<&'a str>,
    /// Action, e.g. `secret.read`.
    pub action: &'a str,
    /// Scope, e.g. `environment/<id>`.
    pub scope: &'a str,
    /// Target, e.g. `secret/<name digest>@<version>`; never a plaintext name.
    pub target: &'a str,
    /// `ok` or the gRPC code of a refusal, e.g. `PERMISSION_DENIED`.
    pub result: &'a str,
    /// The entry's chain hash, hex.
    pub hash: String,
}

/// One entry of `zopp audit export`: the list fields, then the signed request and the link.
#[derive(Debug, Serialize)]
pub struct AuditExportRow<'a> {
    /// The fields `list` shows.
    #[serde(flatten)]
    pub row: AuditRowJson<'a>,
    /// Hash of the previous entry, hex (zeros for entry 1).
    pub prev_hash: String,
    /// Full gRPC method of the request.
    pub method: &'a str,
    /// Time the actor signed, RFC 3339.
    pub request_time: String,
    /// Request timestamp the actor signed, unix ms (exact, for re-verification).
    pub request_timestamp_ms: i64,
    /// Server time of the entry, unix ms (exact, for re-verification).
    pub time_ms: i64,
    /// Request nonce, hex.
    pub nonce: String,
    /// SHA-256 of the request body, hex.
    pub request_hash: String,
    /// The actor's signature, hex.
    pub signature: String,
}

/// Column order of the CSV export, matching [`AuditExportRow`].
const CSV_HEADER: [&str; 17] = [
    "seq",
    "time",
    "actor",
    "actor_email",
    "action",
    "scope",
    "target",
    "result",
    "hash",
    "prev_hash",
    "method",
    "request_time",
    "request_timestamp_ms",
    "time_ms",
    "nonce",
    "request_hash",
    "signature",
];

/// `zopp audit verify --output json`.
#[derive(Debug, Serialize)]
pub struct AuditVerifyJson<'a> {
    /// Always true (a failed verification exits 1 with an error instead).
    pub verified: bool,
    /// The workspace, or null for the server chain.
    pub workspace: Option<&'a str>,
    /// Entries checked.
    pub entries: u64,
    /// Sequence number of the head.
    pub head_seq: u64,
    /// Hash of the head, hex.
    pub head_hash: String,
    /// Actor signatures checked by this run.
    pub signatures: u64,
    /// Actor signatures up to the previously pinned head, checked by the run that pinned it.
    pub pinned_signatures: u64,
    /// Entries with no actor (server events on the server chain, vouched for by the server).
    pub server_events: u64,
    /// Head pinned by the previous run, null on the first run.
    pub previous_pin: Option<u64>,
}

fn row<'a>(item: &AuditItem<'a>) -> AuditRowJson<'a> {
    let e = item.entry;
    AuditRowJson {
        seq: e.seq,
        time: rfc3339(e.time_ms),
        actor: (!e.actor_principal_id.is_empty()).then_some(e.actor_principal_id.as_str()),
        actor_email: item.actor_email,
        action: &e.action,
        scope: &e.scope,
        target: &e.target,
        result: &e.result,
        hash: hex::encode(&e.hash),
    }
}

fn export_row<'a>(item: &AuditItem<'a>) -> AuditExportRow<'a> {
    let e = item.entry;
    AuditExportRow {
        row: row(item),
        prev_hash: hex::encode(&e.prev_hash),
        method: &e.method,
        request_time: rfc3339(e.request_timestamp_ms),
        request_timestamp_ms: e.request_timestamp_ms,
        time_ms: e.time_ms,
        nonce: hex::encode(&e.nonce),
        request_hash: hex::encode(&e.request_hash),
        signature: hex::encode(&e.signature),
    }
}

/// One CSV record (RFC 4180): fields with a comma, quote, CR or LF are quoted, quotes doubled,
/// and the record ends with CRLF.
fn csv_record<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = &'a str>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push(b'"');
            out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn csv_row(out: &mut Vec<u8>, r: &AuditExportRow<'_>) {
    let seq = r.row.seq.to_string();
    let ts = r.request_timestamp_ms.to_string();
    let time_ms = r.time_ms.to_string();
    csv_record(
        out,
        [
            seq.as_str(),
            &r.row.time,
            r.row.actor.unwrap_or(""),
            r.row.actor_email.unwrap_or(""),
            r.row.action,
            r.row.scope,
            r.row.target,
            r.row.result,
            &r.row.hash,
            &r.prev_hash,
            r.method,
            &r.request_time,
            &ts,
            &time_ms,
            &r.nonce,
            &r.request_hash,
            &r.signature,
        ],
    );
}

// ---------- input ----------

/// Longest accepted `--action`.
const MAX_ACTION_LEN: usize = 128;

/// Parses a time filter: RFC 3339, a UTC date, or an age before `now_ms`.
pub(crate) fn parse_time(flag: &str, text: &str, now_ms: i64) -> Result<i64, CliError> {
    let t = text.trim();
    let ms = if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
    } else if let Ok(d) =
        time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
    {
        i64::try_from(d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000).ok()
    } else if let Ok(age) = humantime::parse_duration(t) {
        i64::try_from(age.as_millis())
            .ok()
            .and_then(|a| now_ms.checked_sub(a))
    } else {
        return Err(CliError::usage(
            format!("{flag} '{}' is not a time", t.escape_debug()),
            format!(
                "use RFC 3339 ({flag} 2025-01-31T09:00:00Z), a date ({flag} 2025-01-31) or an age ({flag} 1h, {flag} 7d)"
            ),
        ));
    };
    match ms {
        Some(ms) if ms >= 0 => Ok(ms),
        _ => Err(CliError::usage(
            format!("{flag} '{}' is before 1970", t.escape_debug()),
            "zopp keeps nothing from before 1970: pass a later time",
        )),
    }
}

/// Checks the filters before any call.
fn filter(a: &FilterArgs, now_ms: i64) -> Result<AuditFilter, CliError> {
    let since_ms = a
        .since
        .as_deref()
        .map(|t| parse_time("--since", t, now_ms))
        .transpose()?;
    let until_ms = a
        .until
        .as_deref()
        .map(|t| parse_time("--until", t, now_ms))
        .transpose()?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if s > u {
            return Err(CliError::usage(
                "--since is after --until, so nothing can match",
                "swap them, or drop one",
            ));
        }
    }
    let action = match a.action.as_deref() {
        None => None,
        Some(act)
            if act.is_empty()
                || act.len() > MAX_ACTION_LEN
                || act.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(CliError::usage(
                format!("'{}' is not an action name", act.escape_debug()),
                "actions look like secret.read or environment.create: see `zopp audit list`",
            ))
        }
        Some(act) => Some(act.to_owned()),
    };
    let principal = match a.principal.as_deref() {
        None => None,
        Some(p) => Some(match PrincipalId::try_parse(p) {
            Ok(id) => PrincipalFilter::Id(id),
            Err(_)
                if p.contains('@') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                PrincipalFilter::Email(p.to_owned())
            }
            Err(_) => {
                return Err(CliError::usage(
                    format!(
                        "'{}' is neither a principal id nor an email",
                        p.escape_debug()
                    ),
                    "pass a principal id (see `zopp whoami`) or a user's email",
                ))
            }
        }),
    };
    Ok(AuditFilter {
        since_ms,
        until_ms,
        action,
        principal,
    })
}

fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

// ---------- commands ----------

/// Runs an audit command.
pub async fn run(ctx: &Context, out: &Out, cmd: &AuditCommand) -> Result<(), CliError> {
    // A zopp.toml names the workspace a repository works in; it does not pick which audit
    // chain to read: without -w or ZOPP_WORKSPACE, `zopp audit` reads the server's.
    let workspace = ctx.workspace_explicit()?;
    if workspace.is_none() && !out.is_json() {
        if let Ok(Some(from_file)) = ctx.workspace_if_given() {
            out.note(&format!(
                "the server's audit chain (zopp.toml's workspace does not apply to `zopp audit`; pass -w {from_file} for that workspace's)"
            ));
        }
    }
    let chain = AuditChain::try_new(workspace)?;
    match cmd {
        AuditCommand::List(a) => {
            let filter = filter(&a.filter, now_ms())?;
            let limit = match a.limit {
                Some(0) => None,
                Some(n) => Some(n),
                None if !out.is_json() && io::stdout().is_terminal() => Some(screenful()),
                None => None,
            };
            list(ctx, out, &chain, &filter, limit).await
        }
        AuditCommand::Export(a) => {
            let filter = filter(&a.filter, now_ms())?;
            export(ctx, out, &chain, &filter, a).await
        }
        AuditCommand::Verify => {
            let verified = ctx.client().await?.verify_audit(&chain, &ctx.home).await?;
            report(out, &chain, &verified)
        }
    }
}

/// Rows that fit on the terminal with the header and a note, or 20 when its size is unknown.
fn screenful() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_row > 4 {
        usize::from(ws.ws_row) - 3
    } else {
        20
    }
}

async fn list(
    ctx: &Context,
    out: &Out,
    chain: &AuditChain,
    filter: &AuditFilter,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let client = ctx.client().await?;
    if out.is_json() {
        // Chain order (oldest first), as export writes it. Without --limit it is streamed page
        // by page, so a long trail never has to fit in memory; with one, only the newest N
        // rows are kept.
        let stdout = io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        if let Some(n) = limit {
            let mut kept: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
            client
                .for_each_audit_entry(chain, filter, |item| {
                    if kept.len() == n {
                        kept.pop_front();
                    }
                    kept.push_back(
                        serde_json::to_vec(&row(&item)).map_err(|e| CliError::Stdout(e.into()))?,
                    );
                    Ok::<(), CliError>(())
                })
                .await?;
            let mut text = b"[".to_vec();
            for (i, r) in kept.iter().enumerate() {
                if i > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(r);
            }
            text.extend_from_slice(b"]\n");
            return w
                .write_all(&text)
                .and_then(|()| w.flush())
                .map_err(CliError::Stdout);
        }
        // The opening bracket waits for the first entry: a refused listing prints nothing.
        let mut first = true;
        client
            .for_each_audit_entry(chain, filter, |item| {
                w.write_all(if first { b"[" } else { b"," })
                    .map_err(CliError::Stdout)?;
                first = false;
                serde_json::to_writer(&mut w, &row(&item)).map_err(|e| CliError::Stdout(e.into()))
            })
            .await?;
        let end: &[u8] = if first { b"[]\n" } else { b"]\n" };
        return w
            .write_all(end)
            .and_then(|()| w.flush())
            .map_err(CliError::Stdout);
    }
    // Names first, so that a refused listing fails before the extra reads.
    let mut raw: std::collections::VecDeque<Raw> = std::collections::VecDeque::new();
    let mut total = 0usize;
    let mut emails: Vec<(String, String)> = Vec::new();
    client
        .for_each_audit_entry(chain, filter, |item| {
            let e = item.entry;
            if let Some(email) = item.actor_email {
                emails.push((e.actor_principal_id.clone(), email.to_owned()));
            }
            if limit.is_some_and(|n| raw.len() == n) {
                raw.pop_front();
            }
            raw.push_back(Raw {
                seq: e.seq,
                time_ms: e.time_ms,
                actor: e.actor_principal_id.clone(),
                action: e.action.clone(),
                scope: e.scope.clone(),
                target: e.target.clone(),
                result: e.result.clone(),
            });
            total += 1;
            Ok::<(), CliError>(())
        })
        .await?;
    let mut book = match chain {
        AuditChain::Workspace(w) if !raw.is_empty() => client.name_book(w).await,
        _ => zopp_cli::names::NameBook::default(),
    };
    for (id, email) in &emails {
        book.add_principal(id, email);
    }
    // Newest first: what a person looking at the log wants to see.
    let rows: Vec<Vec<String>> = raw
        .iter()
        .rev()
        .map(|r| {
            vec![
                r.seq.to_string(),
                short_time(r.time_ms),
                match r.actor.as_str() {
                    "" => "(server)".to_owned(),
                    id => book
                        .principal(id)
                        .map_or_else(|| short_id(id), str::to_owned),
                },
                r.action.clone(),
                scope_label(&book, &r.scope),
                target_label(&book, &r.target),
                r.result.clone(),
            ]
        })
        .collect();
    out.table_or(
        &[
            "SEQ", "TIME", "ACTOR", "ACTION", "SCOPE", "TARGET", "RESULT",
        ],
        &rows,
        "no audit entries match",
    )?;
    if rows.len() < total {
        out.note(&format!(
            "the newest {} of {total} entries; --limit N shows more, --limit 0 all",
            rows.len()
        ));
    }
    Ok(())
}

/// What the human listing keeps of an entry until the names are known.
struct Raw {
    seq: u64,
    time_ms: i64,
    actor: String,
    action: String,
    scope: String,
    target: String,
    result: String,
}

/// RFC 3339 to the second: the milliseconds only widen the column (JSON keeps them).
fn short_time(ms: i64) -> String {
    let full = rfc3339(ms);
    match full.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => full,
    }
}

/// The first 8 characters of a UUID, as git shortens commits.
fn short_id(id: &str) -> String {
    if id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        id[..8].to_owned()
    } else {
        id.to_owned()
    }
}

/// `environment/<id>` as `acme/api/dev` when known, else with a short id.
fn scope_label(book: &zopp_cli::names::NameBook, scope: &str) -> String {
    if let Some(name) = book.scope(scope) {
        return name.to_owned();
    }
    match scope.split_once('/') {
        Some((kind, id)) => format!("{kind}/{}", short_id(id)),
        None => scope.to_owned(),
    }
}

/// A target with each secret digest replaced by its name when known (else its first 8 hex
/// digits), and each id shortened or named.
fn target_label(book: &zopp_cli::names::NameBook, target: &str) -> String {
    target
        .split(' ')
        .map(|word| {
            let Some((kind, rest)) = word.split_once('/') else {
                return word.to_owned();
            };
            let (id, version) = match rest.split_once('@') {
                Some((id, v)) => (id, Some(v)),
                None => (rest, None),
            };
            let at = version.map(|v| format!("@{v}")).unwrap_or_default();
            match kind {
                "secret" => match book.secret(id) {
                    Some(name) => format!("{name}{at}"),
                    None if id.len() > 8 => format!("secret/{}…{at}", &id[..8]),
                    None => format!("secret/{id}{at}"),
                },
                "principal" => match book.principal(id) {
                    Some(label) => format!("{label}{at}"),
                    None => format!("principal/{}{at}", short_id(id)),
                },
                _ => match book.scope(word) {
                    Some(name) => name.to_owned(),
                    None => format!("{kind}/{}{at}", short_id(id)),
                },
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn export(
    ctx: &Context,
    out: &Out,
    chain: &AuditChain,
    filter: &AuditFilter,
    a: &AuditExportArgs,
) -> Result<(), CliError> {
    let client = ctx.client().await?;
    match &a.out {
        None => {
            let mut w = ExportWriter::new(BufWriter::new(io::stdout().lock()), a.format);
            client
                .for_each_audit_entry(chain, filter, |item| {
                    w.record(&item).map_err(CliError::Stdout)
                })
                .await?;
            w.finish().map(drop).map_err(CliError::Stdout)
        }
        Some(path) => {
            let io_err = |e: io::Error| CliError::Sdk(Error::io("cannot write", path, e));
            let (tmp, file) = private_temp_beside(path).map_err(io_err)?;
            let mut w = ExportWriter::new(file, a.format);
            let n = client
                .for_each_audit_entry(chain, filter, |item| w.record(&item).map_err(io_err))
                .await?;
            let file = w.finish().map_err(io_err)?;
            let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
            file.sync_all().map_err(io_err)?;
            drop(file);
            // Renamed into place only once complete: a failed export leaves no partial file.
            tmp.persist(path).map_err(|e| io_err(e.error))?;
            out.note(&format!(
                "exported {n} audit entr{} of {} to {}",
                if n == 1 { "y" } else { "ies" },
                chain.describe(),
                path.display()
            ));
            Ok(())
        }
    }
}

/// Writes export records. The CSV header waits for the first record (or the end), so a refused
/// listing leaves stdout empty instead of holding a lone header.
struct ExportWriter<W: Write> {
    w: W,
    format: ExportFormat,
    started: bool,
    buf: Vec<u8>,
}

impl<W: Write> ExportWriter<W> {
    fn new(w: W, format: ExportFormat) -> Self {
        Self {
            w,
            format,
            started: false,
            buf: Vec::with_capacity(1024),
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            if self.format == ExportFormat::Csv {
                self.buf.clear();
                csv_record(&mut self.buf, CSV_HEADER);
                self.w.write_all(&self.buf)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, item: &AuditItem<'_>) -> io::Result<()> {
        self.start()?;
        self.buf.clear();
        let r = export_row(item);
        match self.format {
            ExportFormat::Csv => csv_row(&mut self.buf, &r),
            ExportFormat::Jsonl => {
                serde_json::to_writer(&mut self.buf, &r)?;
                self.buf.push(b'\n');
            }
        }
        self.w.write_all(&self.buf)
    }

    /// Ends the export (a CSV export of nothing is its header) and returns the writer, flushed.
    fn finish(mut self) -> io::Result<W> {
        self.start()?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A 0600 temporary file in `path`'s directory, to be renamed over `path` when complete.
fn private_temp_beside(path: &Path) -> io::Result<(tempfile::TempPath, BufWriter<std::fs::File>)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".zopp-audit-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    let (file, tmp_path) = tmp.into_parts();
    Ok((tmp_path, BufWriter::new(file)))
}

fn report(out: &Out, chain: &AuditChain, v: &Verified) -> Result<(), CliError> {
    let head_hash = hex::encode(v.head_hash);
    if out.is_json() {
        return out.json(&AuditVerifyJson {
            verified: true,
            workspace: match chain {
                AuditChain::Server => None,
                AuditChain::Workspace(w) => Some(w),
            },
            entries: v.entries,
            head_seq: v.head_seq,
            head_hash,
            signatures: v.signatures,
            pinned_signatures: v.pinned_signatures,
            server_events: v.server_events,
            previous_pin: v.previous_pin,
        });
    }
    out.line(&format!(
        "verified {} entries, head {} {}",
        v.entries,
        v.head_seq,
        &head_hash[..16]
    ))?;
    match v.previous_pin {
        Some(p) => out.note(&format!(
            "the chain still holds the head pinned at the last run (entry {p}), whose run checked \
             the signatures up to it; pinned entry {} now",
            v.head_seq
        )),
        None => out.note(&format!(
            "first verification of {}: pinned entry {} for the next run",
            chain.describe(),
            v.head_seq
        )),
    }
    if v.server_events > 0 {
        out.note(&format!(
            "{} server event(s) carry no actor signature: only the server vouches for them",
            v.server_events
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde::Deserialize;
    use zopp_proto::v1 as pb;

    /// A fixed "now": 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000_000;

    fn args(since: Option<&str>, until: Option<&str>) -> FilterArgs {
        FilterArgs {
            since: since.map(Into::into),
            until: until.map(Into::into),
            action: None,
            principal: None,
        }
    }

    #[rstest]
    #[case::rfc3339("2025-01-31T09:00:00Z", 1_738_314_000_000)]
    #[case::offset("2025-01-31T10:00:00+01:00", 1_738_314_000_000)]
    #[case::fraction("2025-01-31T09:00:00.250Z", 1_738_314_000_250)]
    #[case::date("2025-01-31", 1_738_281_600_000)]
    #[case::hours("1h", NOW - 3_600_000)]
    #[case::days("7d", NOW - 7 * 86_400_000)]
    #[case::minutes(" 30m ", NOW - 1_800_000)]
    fn times_parse(#[case] text: &str, #[case] ms: i64) {
        assert_eq!(parse_time("--since", text, NOW).expect("parses"), ms);
    }

    #[rstest]
    #[case::garbage("yesterday-ish")]
    #[case::no_unit("90")]
    #[case::bad_date("2025-02-30")]
    #[case::before_1970("1969-12-31T00:00:00Z")]
    #[case::too_old("100y")]
    fn bad_times_are_usage_errors(#[case] text: &str) {
        let err = parse_time("--until", text, NOW).expect_err("refused");
        let CliError::Usage { message, hint } = err else {
            panic!("usage error")
        };
        assert!(message.starts_with("--until"), "{message}");
        assert!(hint.is_some());
    }

    #[test]
    fn filters_are_checked() {
        let f = filter(&args(Some("2h"), Some("1h")), NOW).expect("valid");
        assert_eq!(
            (f.since_ms, f.until_ms),
            (Some(NOW - 7_200_000), Some(NOW - 3_600_000))
        );
        assert!(
            filter(&args(Some("1h"), Some("2h")), NOW).is_err(),
            "since after until"
        );
        let mut a = args(None, None);
        a.principal = Some("6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11".into());
        assert!(matches!(
            filter(&a, NOW).expect("id").principal,
            Some(PrincipalFilter::Id(_))
        ));
        a.principal = Some("Alice@Example.com".into());
        assert_eq!(
            filter(&a, NOW).expect("email").principal,
            Some(PrincipalFilter::Email("Alice@Example.com".into()))
        );
        a.principal = Some("alice".into());
        assert!(filter(&a, NOW).is_err());
        let mut a = args(None, None);
        a.action = Some("secret.read".into());
        assert_eq!(
            filter(&a, NOW).expect("action").action.as_deref(),
            Some("secret.read")
        );
        for bad in ["", "secret read", "a\nb"] {
            a.action = Some(bad.into());
            assert!(filter(&a, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        let mut out = Vec::new();
        csv_record(
            &mut out,
            ["plain", "a,b", "say \"hi\"", "two\nlines", "", "cr\r"],
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,\"cr\r\"\r\n"
        );
    }

    fn entry() -> pb::AuditEntry {
        pb::AuditEntry {
            seq: 7,
            time_ms: NOW,
            actor_principal_id: "6f1c2a36-6a0b-4c3e-9d0e-2f5b7a1e9c11".into(),
            action: "secret.read".into(),
            scope: "environment/e".into(),
            target: "secret/ab@1".into(),
            nonce: vec![1; 16],
            signature: vec![2; 64],
            result: "ok".into(),
            prev_hash: vec![3; 32],
            hash: vec![4; 32],
            request_hash: vec![5; 32],
            method: "/zopp.v1.Zopp/GetSecret".into(),
            request_timestamp_ms: NOW - 1,
        }
    }

    /// The documented shape of `list --output json`; unknown fields fail the test.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Row {
        seq: u64,
        time: String,
        actor: Option<String>,
        actor_email: Option<String>,
        action: String,
        scope: String,
        target: String,
        result: String,
        hash: String,
    }

    /// The documented shape of an export line.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct ExportRow {
        seq: u64,
        time: String,
        actor: Option<String>,
        actor_email: Option<String>,
        action: String,
        scope: String,
        target: String,
        result: String,
        hash: String,
        prev_hash: String,
        method: String,
        request_time: String,
        request_timestamp_ms: i64,
        time_ms: i64,
        nonce: String,
        request_hash: String,
        signature: String,
    }

    #[test]
    fn list_and_export_shapes_are_pinned() {
        let e = entry();
        let item = AuditItem {
            entry: &e,
            actor_email: Some("alice@example.com"),
        };
        let r: Row = serde_json::from_str(&serde_json::to_string(&row(&item)).expect("json"))
            .expect("list shape");
        assert_eq!(r.time, "2023-11-14T22:13:20.000Z");
        assert_eq!(r.hash, "04".repeat(32));
        let x: ExportRow =
            serde_json::from_str(&serde_json::to_string(&export_row(&item)).expect("json"))
                .expect("export shape");
        assert_eq!(
            (x.seq, x.time_ms, x.request_timestamp_ms),
            (7, NOW, NOW - 1)
        );
        assert_eq!(x.request_time, "2023-11-14T22:13:19.999Z");

        let mut server = entry();
        server.actor_principal_id.clear();
        let item = AuditItem {
            entry: &server,
            actor_email: None,
        };
        let v = serde_json::to_value(row(&item)).expect("json");
        assert!(v["actor"].is_null() && v["actor_email"].is_null());
    }

    #[test]
    fn csv_columns_match_the_export_fields() {
        let e = entry();
        let item = AuditItem {
            entry: &e,
            actor_email: None,
        };
        let r = export_row(&item);
        let json = serde_json::to_value(&r).expect("json");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_header = CSV_HEADER.to_vec();
        sorted_header.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(
            sorted_header, sorted_keys,
            "same fields in CSV and JSON Lines"
        );
        let mut buf = Vec::new();
        csv_row(&mut buf, &r);
        let line = String::from_utf8(buf).expect("utf-8");
        let cells: Vec<&str> = line.trim_end().split(',').collect();
        assert_eq!(cells.len(), CSV_HEADER.len());
        for (name, cell) in CSV_HEADER.iter().zip(&cells) {
            let want = match &json[*name] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            assert_eq!(*cell, want, "column {name}");
        }
    }

    #[test]
    fn export_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("trail.jsonl");
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (t, mut w) = private_temp_beside(&path).expect("temp");
        w.write_all(b"new\n").expect("write");
        drop(w);
        t.persist(&path).expect("persist");
        assert_eq!(std::fs::read(&path).expect("read"), b"new\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
