//! Principals in the SDK: service principals for CI (their keys are generated here, split
//! between a token and the server, FORMAT.md §10), and listing, renaming, revoking and
//! fingerprinting principals.

use rand_core::OsRng;
use tonic::{Code, Response};
use zeroize::Zeroizing;
use zopp_crypto::ids::{PrincipalId, WorkspaceId};
use zopp_crypto::keys::{PrincipalKeys, VerifyingKey};
use zopp_crypto::sign::admission_message;
use zopp_crypto::token::{split, BoundScope, PrincipalToken, TokenBinding};
use zopp_crypto::wrap::wrap_to_recipient;
use zopp_proto::v1 as pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::teams::{Role, ScopeSpec};
use crate::trust::{label, TrustStore, Verifier};
use crate::verify::make::StatementMaker;

/// Full gRPC method paths of the principal RPCs, as signed (FORMAT.md §4).
pub mod method {
    /// `CreateServicePrincipal`.
    pub const CREATE_SERVICE_PRINCIPAL: &str = "/zopp.v1.Zopp/CreateServicePrincipal";
    /// `RevokePrincipal`.
    pub const REVOKE_PRINCIPAL: &str = "/zopp.v1.Zopp/RevokePrincipal";
    /// `ListPrincipals`.
    pub const LIST_PRINCIPALS: &str = "/zopp.v1.Zopp/ListPrincipals";
    /// `RenamePrincipal`.
    pub const RENAME_PRINCIPAL: &str = "/zopp.v1.Zopp/RenamePrincipal";
}

/// A new service principal and its token, which exists only here: the server never sees it.
pub struct CreatedService {
    /// `zopp_…`: the signing key and one share of the decryption key. Secret.
    pub token: Zeroizing<String>,
    /// The principal as stored.
    pub principal: pb::PrincipalInfo,
}

impl std::fmt::Debug for CreatedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self
            .principal
            .principal
            .as_ref()
            .map(|p| p.principal_id.as_str())
            .unwrap_or_default();
        write!(f, "CreatedService({id}, ..)")
    }
}

/// A principal's fingerprint and whether its admission chain checks out from here.
#[derive(Debug)]
pub struct Fingerprint {
    /// The principal.
    pub id: PrincipalId,
    /// Email and device, or service principal name.
    pub label: String,
    /// FORMAT.md §3.4 fingerprint of its Ed25519 key.
    pub fingerprint: String,
    /// `Ok` when its chain leads to a root this client trusts, else why not.
    pub chain: std::result::Result<(), String>,
}

/// Parses a principal id typed by the user.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn parse_principal_id(text: &str) -> Result<PrincipalId> {
    PrincipalId::try_parse(text.trim()).map_err(|_| {
        Error::InvalidInput(format!(
            "'{}' is not a principal id (a UUID, as `zopp principal list` shows it)",
            text.escape_debug()
        ))
    })
}

impl Client {
    /// Creates a service principal `name` with `role` at `scope`, expiring at `expires_at_ms`
    /// (unix ms) if given, and returns its token. The token is the only copy of the signing key
    /// and of one share of the X25519 secret; the server keeps the other share.
    ///
    /// # Errors
    /// PERMISSION_DENIED when the caller may not give `role` there (before any key work);
    /// [`Error::AlreadyExists`] for a taken name; transport and server errors.
    pub async fn create_service_principal(
        &self,
        name: &str,
        scope: &ScopeSpec,
        role: Role,
        expires_at_ms: Option<i64>,
    ) -> Result<CreatedService> {
        if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "a service principal's name must be 1-256 bytes without control characters".into(),
            ));
        }
        // Refused here (with the role it needs) before any key is fetched.
        let described = self
            .get_principals_for(Some(scope.workspace()), None, &[], Some((scope, role)))
            .await?;
        let material = self.scope_key(scope).await?;
        let binding = self.token_binding(scope, &material, &described).await?;
        let keys = PrincipalKeys::generate(&mut OsRng);
        let id = PrincipalId::random(&mut OsRng);
        let signing_pub = keys.signing.verifying_key();
        let agreement_pub = keys.agreement.public_key();
        let (token_share, server_share) = split(&keys.agreement, &mut OsRng);
        let me = self.identity().principal();
        let admission = self.identity().keys().signing.sign(&admission_message(
            &id,
            &signing_pub,
            &agreement_pub,
            Some(&me),
        ));
        let wrapped = wrap_to_recipient(
            &material.key,
            &material.context,
            &id,
            &agreement_pub,
            &mut OsRng,
        )
        .map_err(|_| Error::InvalidInput("could not wrap the scope key".into()))?;
        let statements =
            vec![
                StatementMaker::new(material.workspace, me, &self.identity().keys().signing).grant(
                    &material.context,
                    material.epoch,
                    role.statement_role(),
                    id,
                    wrapped.as_bytes(),
                ),
            ];
        let req = self.signed(
            method::CREATE_SERVICE_PRINCIPAL,
            pb::CreateServicePrincipalRequest {
                scope: Some(scope.to_proto()),
                role: role.to_proto(),
                name: name.to_owned(),
                principal_id: id.to_string(),
                signing_key: signing_pub.to_bytes().to_vec(),
                agreement_key: agreement_pub.to_bytes().to_vec(),
                admission_signature: admission.to_vec(),
                server_key_share: server_share.expose_secret().to_vec(),
                expires_at_ms: expires_at_ms.unwrap_or(0),
                scope_id: material.scope_id.clone(),
                key: Some(pb::WrappedGrantKey {
                    principal_id: id.to_string(),
                    key_epoch: material.epoch,
                    wrapped_key: wrapped.into_bytes(),
                }),
                statements,
            },
        );
        let principal = self
            .rpc()
            .create_service_principal(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                Code::AlreadyExists => Error::AlreadyExists {
                    what: format!("service principal '{name}'"),
                },
                Code::Aborted => Error::Conflict(s.message().to_owned()),
                _ => self.team_error(s, Some(scope)),
            })?;
        let token = PrincipalToken {
            principal: id,
            signing: keys.signing.clone(),
            share: token_share,
            binding,
        }
        .encode();
        Ok(CreatedService { token, principal })
    }

    /// What a new token for `scope` is bound to (FORMAT.md §10): the workspace root, verified
    /// like any admission chain root; the ids of the scope and its parents, checked against
    /// this client's pins; the key epochs it serves now as floors; and, for a project or an
    /// environment, the environments of the project (so a holder of the token cannot be given
    /// one environment for another).
    async fn token_binding(
        &self,
        scope: &ScopeSpec,
        material: &crate::teams::ScopeKeyMaterial,
        described: &pb::GetPrincipalsResponse,
    ) -> Result<TokenBinding> {
        let bad = |what: &str| Error::BadResponse(format!("the server sent an invalid {what} id"));
        let creator = PrincipalId::try_parse(&described.workspace_creator_id)
            .map_err(|_| bad("workspace creator"))?;
        let resp = self
            .get_principals(Some(scope.workspace()), None, &[creator])
            .await?;
        let (root, _) = self.verify_principals(&resp, &[creator], &[])?;
        let root = root
            .first()
            .ok_or_else(|| Error::BadResponse("the workspace creator is missing".into()))?;
        let id16 = |text: &str, what: &str| {
            WorkspaceId::try_parse(text)
                .map(|u| *u.as_bytes())
                .map_err(|_| bad(what))
        };
        let workspace = BoundScope {
            name: scope.workspace().to_owned(),
            id: id16(&material.workspace_id, "workspace")?,
            epoch_floor: if scope.project().is_none() {
                material.epoch
            } else {
                0
            },
        };
        let mut binding = TokenBinding {
            root: root.id,
            root_key: root.signing.to_bytes(),
            workspace,
            project: None,
            environments: Vec::new(),
        };
        let (Some(project), Some(project_id)) = (scope.project(), &material.project_id) else {
            return Ok(binding);
        };
        binding.project = Some(BoundScope {
            name: project.to_owned(),
            id: id16(project_id, "project")?,
            epoch_floor: if scope.environment().is_none() {
                material.epoch
            } else {
                0
            },
        });
        let envs = self.list_environments(scope.workspace(), project).await?;
        let mut sightings = Vec::with_capacity(envs.len());
        for e in &envs {
            if scope.environment().is_some_and(|only| only != e.name) {
                continue;
            }
            let epoch = if scope.environment().is_some() {
                material.epoch
            } else {
                e.key_epoch
            };
            sightings.push(crate::pins::Sighting {
                level: crate::pins::Level::Environment,
                parent: project_id.clone(),
                name: e.name.clone(),
                id: e.id.clone(),
                epoch: Some(epoch),
            });
            binding.environments.push(BoundScope {
                name: e.name.clone(),
                id: id16(&e.id, "environment")?,
                epoch_floor: epoch,
            });
        }
        if binding.environments.len() > zopp_crypto::token::MAX_BOUND_ENVIRONMENTS {
            binding.environments.clear();
        }
        // What the server lists must agree with what this client has seen.
        self.check_scopes(&sightings)?;
        Ok(binding)
    }

    /// Revokes a principal (a service principal, or one of this user's devices) and reports
    /// what it could read.
    ///
    /// # Errors
    /// [`Error::NotFound`]; PERMISSION_DENIED; transport and server errors.
    pub async fn revoke_principal(&self, id: PrincipalId) -> Result<pb::RevokePrincipalResponse> {
        let req = self.signed(
            method::REVOKE_PRINCIPAL,
            pb::RevokePrincipalRequest {
                principal_id: id.to_string(),
            },
        );
        self.rpc()
            .revoke_principal(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, None))
    }

    /// This user's devices (`workspace` `None`) or a workspace's service principals.
    ///
    /// # Errors
    /// PERMISSION_DENIED for service principals without the admin role; transport errors.
    pub async fn list_principals(
        &self,
        workspace: Option<&str>,
    ) -> Result<pb::ListPrincipalsResponse> {
        let scope = workspace
            .map(|w| ScopeSpec::try_new(w, None, None))
            .transpose()?;
        let req = self.signed(
            method::LIST_PRINCIPALS,
            pb::ListPrincipalsRequest {
                workspace: workspace.unwrap_or_default().to_owned(),
            },
        );
        self.rpc()
            .list_principals(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| self.team_error(s, scope.as_ref()))
    }

    /// Renames a device of this user, or a service principal.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] for a taken service principal name; [`Error::NotFound`].
    pub async fn rename_principal(&self, id: PrincipalId, name: &str) -> Result<pb::PrincipalInfo> {
        if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "a principal name must be 1-256 bytes without control characters".into(),
            ));
        }
        let req = self.signed(
            method::RENAME_PRINCIPAL,
            pb::RenamePrincipalRequest {
                principal_id: id.to_string(),
                name: name.to_owned(),
            },
        );
        self.rpc()
            .rename_principal(req)
            .await
            .map(Response::into_inner)
            .map_err(|s| match s.code() {
                Code::AlreadyExists => Error::AlreadyExists {
                    what: format!("service principal '{name}'"),
                },
                _ => self.team_error(s, None),
            })
    }

    /// The fingerprint of principal `id` as the server describes it, and whether its admission
    /// chain leads to a root this client trusts (within `workspace`, whose creator is a root).
    ///
    /// # Errors
    /// [`Error::NotFound`]; transport and server errors.
    pub async fn fingerprint(
        &self,
        id: PrincipalId,
        workspace: Option<&str>,
    ) -> Result<Fingerprint> {
        let resp = self.get_principals(workspace, None, &[id]).await?;
        let info = resp
            .principals
            .iter()
            .filter_map(|i| i.principal.as_ref())
            .find(|p| p.principal_id == id.to_string())
            .ok_or_else(|| Error::BadResponse("the principal asked for is missing".into()))?;
        let key = VerifyingKey::try_from_slice(&info.signing_key)
            .map_err(|_| Error::BadResponse("invalid public key".into()))?;
        // Checking is read-only here: nothing is pinned on first use by a mere look-up.
        let mut store = match self.home() {
            Some(home) => TrustStore::load(home)?,
            None => TrustStore::in_memory(),
        };
        let me = self.identity();
        let chain = Verifier::new(
            &resp,
            me.principal(),
            me.keys().signing.verifying_key(),
            &[],
            &mut store,
        )
        .and_then(|mut v| v.verify(id, &mut store).map(|_| ()))
        .map_err(|e| e.to_string());
        Ok(Fingerprint {
            id,
            label: label(info),
            fingerprint: key.fingerprint(),
            chain,
        })
    }
}

/// Parses a duration like `30d`, `12h`, `90m` or `2w` into milliseconds.
///
/// # Errors
/// [`Error::InvalidInput`] for anything else, or more than ten years.
pub fn parse_duration_ms(text: &str) -> Result<i64> {
    let t = text.trim();
    let bad = || {
        Error::InvalidInput(format!(
            "'{}' is not a duration: use a number followed by m, h, d or w (e.g. 30d)",
            text.escape_debug()
        ))
    };
    let Some((last, _)) = t.char_indices().last() else {
        return Err(bad());
    };
    let (num, unit) = t.split_at(last);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if n <= 0 || ms > 10 * 366 * 86_400_000 {
        return Err(Error::InvalidInput(format!(
            "'{}' is not between one minute and ten years",
            text.escape_debug()
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("30d", 30 * 86_400_000)]
    #[case("12h", 12 * 3_600_000)]
    #[case("90m", 90 * 60_000)]
    #[case("2w", 14 * 86_400_000)]
    fn durations_parse(#[case] text: &str, #[case] ms: i64) {
        assert_eq!(parse_duration_ms(text).expect("valid"), ms);
    }

    #[rstest]
    #[case("")]
    #[case("30")]
    #[case("d")]
    #[case("-1d")]
    #[case("0h")]
    #[case("30y")]
    #[case("99999999999w")]
    #[case("3é")]
    fn bad_durations_are_refused(#[case] text: &str) {
        assert!(parse_duration_ms(text).is_err(), "{text}");
    }
}
