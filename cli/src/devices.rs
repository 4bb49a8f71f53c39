//! A second device for the same user (FORMAT.md §12): `export` on a device that has the user's
//! keys, `import` on the new one.
//!
//! The exporting device generates the new device's keys, admits them (its signature vouches for
//! them, so other members' clients accept them), re-wraps every key of the user's grants to them,
//! and seals their private half as a key file under the user's passphrase joined with the export
//! code's secret. The server holds that sealed file until it expires; the code never reaches it,
//! so neither the server nor a copy of its database can open it, and the passphrase stops
//! whoever sees the code. The new device fetches it with the code's authenticator, opens it, and
//! confirms with a call signed by its new key, which erases the server's copy.

use rand_core::OsRng;
use tonic::Response;
use zeroize::Zeroizing;
use zopp_crypto::code::{OneTimeCode, DEVICE_PREFIX};
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keyfile::{self, KdfParams};
use zopp_crypto::keys::{PrincipalKeys, ScopeKind};
use zopp_crypto::sign::admission_message;
use zopp_crypto::wrap::{unwrap_from_recipient, wrap_to_recipient, KeyContext, WrappedKey};
use zopp_proto::v1 as pb;

use crate::client::{Client, ServerConfig};
use crate::error::{Error, Result};
use crate::home::{Identity, LocalConfig, ZoppHome};
use crate::verify::make::{statement_role, StatementMaker};

/// Full gRPC method paths of the device RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `ListGrantKeys`.
    pub const LIST_GRANT_KEYS: &str = "/zopp.v1.Zopp/ListGrantKeys";
    /// `ExportPrincipal`.
    pub const EXPORT_PRINCIPAL: &str = "/zopp.v1.Zopp/ExportPrincipal";
    /// `CompleteImport`.
    pub const COMPLETE_IMPORT: &str = "/zopp.v1.Zopp/CompleteImport";
}

/// A prepared device: the code to type on it (shown once) and when the offer expires.
pub struct ExportedDevice {
    /// `zdev_…`. Secret: with the passphrase it opens the new device's keys.
    pub code: Zeroizing<String>,
    /// The new device's principal.
    pub principal: PrincipalId,
    /// Expiry (unix ms).
    pub expires_at_ms: i64,
    /// How many grant keys were re-wrapped for it.
    pub grant_keys: usize,
}

impl std::fmt::Debug for ExportedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportedDevice({}, ..)", self.principal)
    }
}

fn grant_context(g: &pb::OwnGrantKey) -> Result<KeyContext> {
    let grant = g
        .grant
        .as_ref()
        .ok_or_else(|| Error::BadResponse("a grant key names no grant".into()))?;
    let kind = match pb::ScopeKind::try_from(grant.scope_kind) {
        Ok(pb::ScopeKind::Workspace) => ScopeKind::Workspace,
        Ok(pb::ScopeKind::Project) => ScopeKind::Project,
        Ok(pb::ScopeKind::Environment) => ScopeKind::Environment,
        _ => return Err(Error::BadResponse("unknown grant scope".into())),
    };
    let id = WorkspaceId::try_parse(&grant.scope_id)
        .map_err(|_| Error::BadResponse("invalid grant scope id".into()))?;
    Ok(KeyContext {
        kind,
        id: *id.as_bytes(),
        // Workspace and project keys are bound to epoch 1 whatever their generation.
        epoch: if kind == ScopeKind::Environment {
            g.key_epoch
        } else {
            1
        },
    })
}

impl Client {
    /// Prepares a new device named `name` for this user, sealed under `passphrase`, valid for
    /// `expires_hours` (0: a day).
    ///
    /// # Errors
    /// FAILED_PRECONDITION for a service principal; [`Error::KeyChain`] when one of this
    /// device's grant keys does not open; transport and server errors.
    pub async fn export_device(
        &self,
        name: &str,
        passphrase: &[u8],
        expires_hours: u32,
    ) -> Result<ExportedDevice> {
        if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "the device name must be 1-256 bytes without control characters".into(),
            ));
        }
        if passphrase.is_empty() {
            return Err(Error::InvalidInput(
                "a device export needs a passphrase: the server holds the new keys sealed under it"
                    .into(),
            ));
        }
        let req = self.signed(method::LIST_GRANT_KEYS, pb::ListGrantKeysRequest {});
        let own = self
            .rpc()
            .list_grant_keys(req)
            .await
            .map(|r| r.into_inner().keys)
            .map_err(|s| self.team_error(s, None))?;
        let me = self.identity();
        let keys = PrincipalKeys::generate(&mut OsRng);
        let id = PrincipalId::random(&mut OsRng);
        let signing_pub = keys.signing.verifying_key();
        let agreement_pub = keys.agreement.public_key();
        let mut grant_keys = Vec::with_capacity(own.len());
        let mut statements = Vec::with_capacity(own.len());
        for g in &own {
            let ctx = grant_context(g)?;
            let key = unwrap_from_recipient(
                &WrappedKey::from_bytes(g.wrapped_key.clone()),
                &ctx,
                &me.principal(),
                &me.keys().agreement,
            )
            .map_err(|_| Error::KeyChain {
                scope: "one of your grants".into(),
                reason: "its key does not open with this device's key".into(),
            })?;
            let wrapped = wrap_to_recipient(&key, &ctx, &id, &agreement_pub, &mut OsRng)
                .map_err(|_| Error::InvalidInput("could not wrap a grant key".into()))?;
            // This device vouches for the copy of its grant it wraps to the new one.
            let workspace = WorkspaceId::try_parse(&g.workspace_id)
                .map_err(|_| Error::BadResponse("invalid workspace id".into()))?;
            let role = g
                .grant
                .as_ref()
                .and_then(|x| statement_role(x.role))
                .ok_or_else(|| Error::BadResponse("a grant names no role".into()))?;
            statements.push(
                StatementMaker::new(workspace, me.principal(), &me.keys().signing).grant(
                    &ctx,
                    g.key_epoch.max(1),
                    role,
                    id,
                    wrapped.as_bytes(),
                ),
            );
            grant_keys.push(pb::ExportGrantKey {
                grant_id: g.grant.as_ref().map(|x| x.id.clone()).unwrap_or_default(),
                key: Some(pb::WrappedGrantKey {
                    principal_id: id.to_string(),
                    key_epoch: g.key_epoch,
                    wrapped_key: wrapped.into_bytes(),
                }),
            });
        }
        let code = OneTimeCode::generate(&mut OsRng);
        let sealed = keyfile::encode_sealed(
            &keys,
            &code.device_passphrase(passphrase),
            KdfParams::DEFAULT,
            &mut OsRng,
        )
        .map_err(|e| Error::InvalidInput(format!("cannot seal the new device's keys: {e}")))?;
        let admission = me.keys().signing.sign(&admission_message(
            &id,
            &signing_pub,
            &agreement_pub,
            Some(&me.principal()),
        ));
        let n = grant_keys.len();
        let req = self.signed(
            method::EXPORT_PRINCIPAL,
            pb::ExportPrincipalRequest {
                export_id: code.id().to_string(),
                auth_hash: code.auth_hash().to_vec(),
                sealed_keys: sealed,
                expires_hours,
                principal_id: id.to_string(),
                principal_name: name.to_owned(),
                signing_key: signing_pub.to_bytes().to_vec(),
                agreement_key: agreement_pub.to_bytes().to_vec(),
                admission_signature: admission.to_vec(),
                keys: grant_keys,
                statements,
            },
        );
        let resp = self
            .rpc()
            .export_principal(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                tonic::Code::Aborted => Error::Conflict(s.message().to_owned()),
                _ => self.team_error(s, None),
            })?;
        Ok(ExportedDevice {
            code: code.encode(DEVICE_PREFIX),
            principal: id,
            expires_at_ms: resp.expires_at_ms,
            grant_keys: n,
        })
    }
}

/// Imports a device prepared by `zopp principal export`: fetches the sealed keys with the
/// code, opens them with `passphrase`, saves the identity in `home` (its key file sealed under
/// the same passphrase), and confirms to the server, which then erases its copy.
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed code or a passphrase that does not open the keys;
/// [`Error::IdentityExists`]; [`Error::JoinRefused`] when the server refuses (unknown, used or
/// expired export); transport errors.
pub async fn import_device(
    server: &ServerConfig,
    home: &ZoppHome,
    code_text: &str,
    passphrase: &Zeroizing<String>,
    kdf: KdfParams,
) -> Result<LocalConfig> {
    let code = OneTimeCode::try_parse(DEVICE_PREFIX, code_text)
        .map_err(|_| Error::InvalidInput("the device code is malformed".into()))?;
    if home.has_identity() {
        return Err(Error::IdentityExists {
            home: home.dir().to_owned(),
        });
    }
    let mut rpc = crate::client::grpc(server.channel().await?);
    crate::client::count_rpc();
    let export = rpc
        .import_principal(pb::ImportPrincipalRequest {
            export_id: code.id().to_string(),
            auth: code.auth().to_vec(),
        })
        .await
        .map(Response::into_inner)
        .map_err(|s| match s.code() {
            _ if server.transport_failure(&s).is_some() => {
                server.transport_failure(&s).expect("checked by the guard")
            }
            tonic::Code::Unavailable => Error::Unreachable {
                server: server.url().to_owned(),
                detail: s.message().to_owned(),
            },
            code => Error::JoinRefused {
                code,
                message: s.message().to_owned(),
            },
        })?;
    let keys = keyfile::decode(
        &export.sealed_keys,
        Some(&code.device_passphrase(passphrase.as_bytes())),
    )
    .map_err(|_| {
        Error::InvalidInput(
            "the passphrase does not open this device export (it is the one typed at \
             `zopp principal export`)"
                .into(),
        )
    })?;
    let config = LocalConfig {
        server: server.url().to_owned(),
        principal_id: export.principal_id.clone(),
        user_id: export.user_id.clone(),
        email: export.email.clone(),
        principal_name: export.principal_name.clone(),
    };
    let identity = Identity::new(config.clone(), keys.clone()).map_err(|_| {
        Error::BadResponse("the server returned invalid principal or user ids".into())
    })?;
    home.ensure_dir()?;
    home.write_key_file(&keys, Some(passphrase.as_bytes()), kdf)?;
    home.write_config(&config)?;
    let done = async {
        let client = Client::connect(server.clone(), identity, home).await?;
        let req = client.signed(method::COMPLETE_IMPORT, pb::CompleteImportRequest {});
        client
            .rpc()
            .complete_import(req)
            .await
            .map_err(|s| client.team_error(s, None))
    }
    .await;
    if let Err(e) = done {
        // Leave nothing half-done: the export can be imported again until it expires.
        home.remove_key_file();
        let _ = std::fs::remove_file(home.config_path());
        return Err(e);
    }
    Ok(config)
}
