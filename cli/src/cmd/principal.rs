//! `zopp principal …`: service principals for CI and their tokens, devices of the same user
//! (export on one, import on the other), listing, renaming, revoking, and fingerprints to
//! compare out of band.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use serde::Serialize;
use zeroize::Zeroizing;
use zopp_cli::devices::import_device;
use zopp_cli::home::PASSPHRASE_ENV;
use zopp_cli::principals::{parse_duration_ms, parse_principal_id};
use zopp_cli::teams::ScopeSpec;
use zopp_crypto::keyfile::KdfParams;
use zopp_proto::v1 as pb;

use crate::args::GlobalArgs;
use crate::cmd::permission::{print_readable, readable_secrets, scope, PermissionJson, RoleArg};
use crate::cmd::rotate::{offer, RotatedJson};
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{rfc3339, Out};

/// `zopp principal …`.
#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Create a service principal for CI with one role at -w [-p [-e]] and print its token once
    CreateService(CreateServiceArgs),
    /// List your devices, or with -w the workspace's service principals
    List,
    /// Rename one of your devices or a service principal
    Rename(RenameArgs),
    /// Revoke a service principal or one of your devices: refused from its next call on
    Revoke(RevokeArgs),
    /// Remove one of your devices (the same as revoke)
    Remove(RevokeArgs),
    /// Print a principal's fingerprint (yours without ID) to compare out of band
    Fingerprint(FingerprintArgs),
    /// Prepare a new device for yourself and print the code to type on it
    Export(ExportArgs),
    /// Set this machine up as a device prepared with `zopp principal export`
    Import(ImportArgs),
}

/// `zopp principal create-service`.
#[derive(Debug, Args)]
pub struct CreateServiceArgs {
    /// Name, unique among the workspace's live service principals
    pub name: String,
    /// Its role at the scope
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Lifetime, e.g. 30d, 12h, 2w (default: until revoked)
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

/// `zopp principal rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Principal id
    pub id: String,
    /// New name
    pub name: String,
}

/// `zopp principal revoke` / `remove`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Principal id
    pub id: String,
    /// Rotate the keys it held right away, without asking
    #[arg(long)]
    pub rotate: bool,
    /// Neither rotate nor ask (print how to rotate instead)
    #[arg(long, conflicts_with = "rotate")]
    pub no_rotate: bool,
}

/// `zopp principal fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Principal id (default: this identity)
    pub id: Option<String>,
}

/// `zopp principal export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Name of the new device
    #[arg(long, value_name = "DEVICE", default_value = "new-device")]
    pub name: String,
    /// Hours until the code stops working (1 to 168)
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub expires_hours: u32,
}

/// `zopp principal import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The code printed by `zopp principal export`
    pub code: String,
}

/// A principal in JSON output.
#[derive(Debug, Serialize)]
pub struct PrincipalJson {
    /// Principal id.
    pub id: String,
    /// Device or service principal name.
    pub name: String,
    /// `device` or `service`.
    pub kind: &'static str,
    /// The owning user's email (devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `active`, `pending` (a device awaiting import), `expired` or `revoked`.
    pub status: &'static str,
    /// FORMAT.md §3.4 fingerprint of its Ed25519 key.
    pub fingerprint: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The grant of a service principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<PermissionJson>,
}

impl PrincipalJson {
    fn from_proto(i: &pb::PrincipalInfo, grant: Option<&pb::PermissionGrant>) -> Option<Self> {
        let p = i.principal.as_ref()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let device = i.workspace_id.is_empty();
        let status = if i.revoked_at_ms != 0 || p.revoked {
            "revoked"
        } else if i.expires_at_ms != 0 && i.expires_at_ms <= now {
            "expired"
        } else if i.expires_at_ms != 0 && device {
            // A device expires only until it is imported.
            "pending"
        } else {
            "active"
        };
        let fingerprint = zopp_crypto::keys::VerifyingKey::try_from_slice(&p.signing_key)
            .map(|k| k.fingerprint())
            .unwrap_or_default();
        Some(Self {
            id: p.principal_id.clone(),
            name: p.name.clone(),
            kind: if device { "device" } else { "service" },
            email: (!p.user_email.is_empty()).then(|| p.user_email.clone()),
            status,
            fingerprint,
            created_at: rfc3339(p.created_at_ms),
            expires_at: (i.expires_at_ms != 0).then(|| rfc3339(i.expires_at_ms)),
            grant: grant
                .filter(|g| !g.id.is_empty())
                .map(PermissionJson::from_proto),
        })
    }
}

/// `zopp principal create-service --output json`: exactly these two fields.
#[derive(Serialize)]
struct ServiceTokenJson<'a> {
    principal_id: &'a str,
    token: &'a str,
}

/// `zopp principal revoke` in JSON.
#[derive(Debug, Serialize)]
struct RevokedJson {
    principal: Option<PrincipalJson>,
    readable: Vec<crate::cmd::permission::ReadableJson>,
    rotate: Vec<String>,
    rotated: Vec<RotatedJson>,
}

/// `zopp principal fingerprint` in JSON.
#[derive(Debug, Serialize)]
struct FingerprintJson {
    principal_id: String,
    fingerprint: String,
    /// Whether its admission chain leads to a principal you trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    chain_verified: Option<bool>,
}

/// `zopp principal export` in JSON.
#[derive(Serialize)]
struct ExportJson<'a> {
    code: &'a str,
    principal_id: String,
    expires_at: String,
}

/// `zopp principal import` in JSON.
#[derive(Debug, Serialize)]
struct ImportJson<'a> {
    principal_id: &'a str,
    user_id: &'a str,
    email: &'a str,
    principal_name: &'a str,
    server: &'a str,
}

/// The passphrase of a device export or import: a prompt on a terminal, else `ZOPP_PASSPHRASE`.
fn transfer_passphrase(confirm: bool) -> Result<Zeroizing<String>, CliError> {
    if std::io::stdin().is_terminal() {
        let first = prompt("passphrase for the device transfer: ")?;
        if confirm {
            let second = prompt("repeat the passphrase: ")?;
            if !zopp_crypto::ct_eq(first.as_bytes(), second.as_bytes()) {
                return Err(CliError::usage(
                    "the passphrases do not match",
                    "run the command again",
                ));
            }
        }
        if first.is_empty() {
            return Err(CliError::usage(
                "the passphrase is empty",
                "a device transfer needs a passphrase",
            ));
        }
        if confirm {
            zopp_cli::home::check_new_passphrase(&first)?;
        }
        return Ok(first);
    }
    match std::env::var_os(PASSPHRASE_ENV) {
        Some(p) if !p.is_empty() => {
            let p = Zeroizing::new(p.to_string_lossy().into_owned());
            if confirm {
                zopp_cli::home::check_new_passphrase(&p)?;
            }
            Ok(p)
        }
        _ => Err(CliError::usage(
            "a device transfer needs a passphrase and stdin is not a terminal",
            format!("set {PASSPHRASE_ENV}, or run the command in a terminal"),
        )),
    }
}

fn prompt(text: &str) -> Result<Zeroizing<String>, CliError> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| {
            CliError::Sdk(zopp_cli::Error::io(
                "cannot read a passphrase from",
                "/dev/tty",
                e,
            ))
        })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs a principal command.
pub async fn run(
    ctx: &Context,
    out: &Out,
    cmd: &PrincipalCommand,
    global: &GlobalArgs,
) -> Result<(), CliError> {
    match cmd {
        PrincipalCommand::CreateService(a) => {
            let scope: ScopeSpec = scope(ctx, global)?;
            let expires_at_ms = a
                .expires_in
                .as_deref()
                .map(parse_duration_ms)
                .transpose()?
                .map(|d| now_ms().saturating_add(d));
            let created = ctx
                .client()
                .await?
                .create_service_principal(&a.name, &scope, a.role.role(), expires_at_ms)
                .await?;
            let id = created
                .principal
                .principal
                .as_ref()
                .map(|p| p.principal_id.clone())
                .unwrap_or_default();
            if out.is_json() {
                return out.json(&ServiceTokenJson {
                    principal_id: &id,
                    token: created.token.as_str(),
                });
            }
            out.line(&format!("ZOPP_TOKEN={}", created.token.as_str()))?;
            out.note(&format!(
                "created service principal '{}' ({id}) with {} on {}; the token is shown only \
                 once: store it as a CI secret",
                a.name,
                a.role.role(),
                scope.describe()
            ));
            Ok(())
        }
        PrincipalCommand::List => {
            let workspace = ctx.workspace_if_given()?;
            let resp = ctx.client().await?.list_principals(workspace).await?;
            let rows: Vec<PrincipalJson> = resp
                .principals
                .iter()
                .enumerate()
                .filter_map(|(i, p)| PrincipalJson::from_proto(p, resp.grants.get(i)))
                .collect();
            if out.is_json() {
                return out.json(&rows);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let access = r
                        .grant
                        .as_ref()
                        .map(|g| format!("{} on {}", g.role, g.scope))
                        .or_else(|| r.email.clone())
                        .unwrap_or_default();
                    vec![
                        r.id.clone(),
                        r.name.clone(),
                        r.status.to_owned(),
                        access,
                        r.fingerprint.clone(),
                    ]
                })
                .collect();
            out.table_or(
                &["ID", "NAME", "STATUS", "ACCESS", "FINGERPRINT"],
                &table,
                "no principals to list",
            )
        }
        PrincipalCommand::Rename(a) => {
            let id = parse_principal_id(&a.id)?;
            let info = ctx.client().await?.rename_principal(id, &a.name).await?;
            if out.is_json() {
                return out.json(&PrincipalJson::from_proto(&info, None));
            }
            out.note(&format!("renamed principal {id} to '{}'", a.name));
            Ok(())
        }
        PrincipalCommand::Revoke(a) | PrincipalCommand::Remove(a) => {
            let id = parse_principal_id(&a.id)?;
            let client = ctx.client().await?;
            if id == client.identity().principal() && !out.is_json() {
                out.note("note: this is the identity you are using; it stops working now");
            }
            let resp = client.revoke_principal(id).await?;
            let report = resp.report.unwrap_or_default();
            if !out.is_json() {
                out.note(&format!(
                    "revoked principal {id}: it is refused from its next call on"
                ));
            }
            let readable = readable_secrets(&client, &report).await;
            if !out.is_json() {
                print_readable(out, &readable)?;
            }
            let rotate: Vec<ScopeSpec> = report.rotate.iter().map(ScopeSpec::from_proto).collect();
            // A revoked identity cannot rotate anything itself.
            let rotated = if id == client.identity().principal() {
                Vec::new()
            } else {
                offer(ctx, out, &client, &rotate, a.rotate, a.no_rotate).await?
            };
            if out.is_json() {
                return out.json(&RevokedJson {
                    principal: resp
                        .principal
                        .as_ref()
                        .and_then(|p| PrincipalJson::from_proto(p, None)),
                    readable,
                    rotate: rotate.iter().map(ToString::to_string).collect(),
                    rotated,
                });
            }
            Ok(())
        }
        PrincipalCommand::Fingerprint(a) => {
            let client = ctx.client().await?;
            let (id, fingerprint, chain) = match &a.id {
                None => (
                    client.identity().principal().to_string(),
                    client
                        .identity()
                        .keys()
                        .signing
                        .verifying_key()
                        .fingerprint(),
                    None,
                ),
                Some(text) => {
                    let id = parse_principal_id(text)?;
                    let fp = client.fingerprint(id, ctx.workspace_if_given()?).await?;
                    if !out.is_json() {
                        match &fp.chain {
                            Ok(()) => out.note(&format!(
                                "principal {id} ({}): its keys are vouched for by a principal you trust",
                                fp.label
                            )),
                            Err(why) => out.note(&format!("principal {id} ({}): {why}", fp.label)),
                        }
                    }
                    (id.to_string(), fp.fingerprint, Some(fp.chain.is_ok()))
                }
            };
            if out.is_json() {
                return out.json(&FingerprintJson {
                    principal_id: id,
                    fingerprint,
                    chain_verified: chain,
                });
            }
            out.line(&fingerprint)
        }
        PrincipalCommand::Export(a) => {
            if a.expires_hours == 0 || a.expires_hours > 168 {
                return Err(CliError::usage(
                    format!("--expires-hours {} is out of range", a.expires_hours),
                    "pass a number of hours from 1 to 168",
                ));
            }
            let client = ctx.client().await?;
            let passphrase = transfer_passphrase(true)?;
            let done = client
                .export_device(&a.name, passphrase.as_bytes(), a.expires_hours)
                .await?;
            // The code carries this server's address, so `principal import` needs no --server.
            let code = zeroize::Zeroizing::new(located(client.server().url(), done.code.as_str()));
            if out.is_json() {
                return out.json(&ExportJson {
                    code: code.as_str(),
                    principal_id: done.principal.to_string(),
                    expires_at: rfc3339(done.expires_at_ms),
                });
            }
            out.line(code.as_str())?;
            out.note(&format!(
                "on the new device run `zopp principal import CODE` with the same passphrase \
                 before {}; {} grant key{} prepared for it",
                rfc3339(done.expires_at_ms),
                done.grant_keys,
                if done.grant_keys == 1 { "" } else { "s" }
            ));
            Ok(())
        }
        PrincipalCommand::Import(a) => {
            let (server, code) = ctx.server_for_code(&a.code)?;
            if ctx.home.has_identity() {
                return Err(zopp_cli::Error::IdentityExists {
                    home: ctx.home.dir().to_owned(),
                }
                .into());
            }
            let passphrase = transfer_passphrase(false)?;
            let config =
                import_device(&server, &ctx.home, code, &passphrase, KdfParams::DEFAULT).await?;
            if out.is_json() {
                return out.json(&ImportJson {
                    principal_id: &config.principal_id,
                    user_id: &config.user_id,
                    email: &config.email,
                    principal_name: &config.principal_name,
                    server: &config.server,
                });
            }
            out.note(&format!(
                "this machine is now device '{}' of {}; its key is protected by the same \
                 passphrase; identity saved in {}",
                config.principal_name,
                config.email,
                ctx.home.dir().display()
            ));
            Ok(())
        }
    }
}

/// `code` with `server` attached (`zopp_crypto::locator`). The CA fingerprint slot stays empty:
/// the CA a client trusts is its own setting (`--tls-ca`).
pub fn located(server: &str, code: &str) -> String {
    zopp_crypto::locator::Locator {
        server: server.to_owned(),
        ca_fingerprint: None,
    }
    .attach(code)
}
