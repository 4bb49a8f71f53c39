//! `zopp join TOKEN EMAIL [--name DEVICE]`: creates this device's identity, with a server
//! invite (`zinv_…`) or a workspace invite (`zwi_…`).

use zopp_cli::home::new_key_passphrase;
use zopp_cli::invites::{is_workspace_invite, join_workspace, WorkspaceJoinParams};
use zopp_cli::{Error, JoinParams};
use zopp_crypto::keyfile::KdfParams;

use crate::args::JoinArgs;
use crate::context::Context;
use crate::failure::CliError;
use crate::output::{JoinJson, Out};

/// Default device name: the host name, which tells a user's devices apart in listings.
fn default_device_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
        .unwrap_or_else(|| "device".to_owned())
}

/// Generates keys, registers them and saves the identity.
pub async fn run(ctx: &Context, out: &Out, args: &JoinArgs) -> Result<(), CliError> {
    // A code may carry the server's address: then no --server is needed.
    let (server, token) = ctx.server_for_code(&args.token)?;
    // Checked here too, so the user is not asked for a passphrase only to be refused.
    if ctx.home.has_identity() {
        return Err(Error::IdentityExists {
            home: ctx.home.dir().to_owned(),
        }
        .into());
    }
    let device = args.name.clone().unwrap_or_else(default_device_name);
    let passphrase = new_key_passphrase()?;
    if is_workspace_invite(token) {
        let joined = join_workspace(
            &server,
            &ctx.home,
            WorkspaceJoinParams {
                code: token,
                email: &args.email,
                device_name: &device,
                passphrase,
                kdf: KdfParams::DEFAULT,
            },
        )
        .await?;
        for n in &joined.notes {
            out.note(&format!("note: {n}"));
        }
        let config = &joined.config;
        if out.is_json() {
            return out.json(&JoinJson {
                user_id: &config.user_id,
                principal_id: &config.principal_id,
                email: &config.email,
                principal_name: &config.principal_name,
                server: &config.server,
            });
        }
        out.note(&format!(
            "joined workspace '{}' on {} as {} ({} role, device '{}'); identity saved in {}",
            joined.workspace,
            config.server,
            config.email,
            joined.role.map_or("no", |r| r.name()),
            config.principal_name,
            ctx.home.dir().display()
        ));
        return Ok(());
    }
    let config = zopp_cli::join(
        &server,
        &ctx.home,
        JoinParams {
            token,
            email: &args.email,
            device_name: &device,
            passphrase,
            kdf: KdfParams::DEFAULT,
        },
    )
    .await?;
    if out.is_json() {
        return out.json(&JoinJson {
            user_id: &config.user_id,
            principal_id: &config.principal_id,
            email: &config.email,
            principal_name: &config.principal_name,
            server: &config.server,
        });
    }
    out.note(&format!(
        "joined {} as {} (device '{}'); identity saved in {}",
        config.server,
        config.email,
        config.principal_name,
        ctx.home.dir().display()
    ));
    Ok(())
}
