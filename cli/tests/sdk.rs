//! The client SDK against an in-process fake server that holds only what a real one would
//! (public keys, wrapped keys, ciphertext, digests), checks every request signature exactly as
//! FORMAT.md §4 describes, and can misbehave on demand: lose write races, tamper with
//! ciphertext, recreate an environment behind a warm cache. The real server's behaviour is
//! covered end to end in `tests/`; this pins down the client's side of the contract.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use zopp_cli::{Client, EnvRef, Error, Missing, ServerConfig, ZoppHome};
use zopp_crypto::keyfile::KdfParams;
use zopp_crypto::keys::VerifyingKey;
use zopp_crypto::sign::{join_message, request_message};
use zopp_proto::v1 as pb;
use zopp_proto::v1::zopp_server::{Zopp, ZoppServer};

type Reply<T> = Result<Response<T>, Status>;

#[derive(Clone)]
struct Scope {
    id: String,
    parent: String,
    name: String,
    wrapped: Vec<u8>,
}

#[derive(Default)]
struct State {
    principals: HashMap<String, pb::PrincipalPublic>,
    workspaces: Vec<Scope>,
    projects: Vec<Scope>,
    environments: Vec<Scope>,
    env_versions: HashMap<String, u64>,
    /// (environment id, name digest) → versions, oldest first.
    secrets: HashMap<(String, Vec<u8>), Vec<pb::SecretVersion>>,
    /// Signed methods called, in order.
    calls: Vec<&'static str>,
    /// Key statements the clients sent (FORMAT.md §13), returned with every chain.
    statements: Vec<pb::KeyStatement>,
    /// The principal that created the (first) workspace.
    creator: String,
    next_time: i64,
}

#[derive(Default)]
struct Fake {
    state: Mutex<State>,
    /// Answer this many writes with ABORTED, as if another writer had won.
    lose_writes: AtomicU32,
    /// Flip a ciphertext byte in every secret read.
    tamper: AtomicBool,
}

fn nf(what: &str) -> Status {
    Status::not_found(format!("{what} not found"))
}

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
    }

    /// Checks the request signature (FORMAT.md §4) and records the call.
    fn auth<T: Message>(&self, req: &Request<T>, method: &'static str) -> Result<String, Status> {
        let md = req.metadata();
        let get = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| Status::unauthenticated(format!("missing {k}")))
        };
        let principal = get(zopp_proto::MD_PRINCIPAL)?;
        let ts: i64 = get(zopp_proto::MD_TIMESTAMP)?
            .parse()
            .map_err(|_| Status::unauthenticated("bad timestamp"))?;
        let nonce: [u8; 16] = hex::decode(get(zopp_proto::MD_NONCE)?)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| Status::unauthenticated("bad nonce"))?;
        let sig = hex::decode(get(zopp_proto::MD_SIGNATURE)?)
            .map_err(|_| Status::unauthenticated("bad signature encoding"))?;
        let mut st = self.state();
        let key = st
            .principals
            .get(&principal)
            .ok_or_else(|| Status::unauthenticated("unknown principal"))?;
        let key = VerifyingKey::try_from_slice(&key.signing_key).expect("stored key is valid");
        let body = zopp_crypto::sha256(&req.get_ref().encode_to_vec());
        key.verify(
            &request_message(&FAKE_SERVER_ID, method, ts, &nonce, &body),
            &sig,
        )
        .map_err(|_| Status::unauthenticated("bad signature"))?;
        st.calls.push(method);
        Ok(principal)
    }

    fn resolve(
        st: &State,
        env: &Option<pb::EnvironmentRef>,
    ) -> Result<(Scope, Scope, Scope), Status> {
        let env = env
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("no env"))?;
        let ws = st
            .workspaces
            .iter()
            .find(|w| w.name == env.workspace)
            .ok_or_else(|| nf("workspace"))?;
        let pr = st
            .projects
            .iter()
            .find(|p| p.parent == ws.id && p.name == env.project)
            .ok_or_else(|| nf("project"))?;
        let en = st
            .environments
            .iter()
            .find(|e| e.parent == pr.id && e.name == env.environment)
            .ok_or_else(|| nf("environment"))?;
        Ok((ws.clone(), pr.clone(), en.clone()))
    }

    fn keys(st: &State, ws: &Scope, pr: &Scope, en: &Scope) -> pb::EnvironmentKeys {
        pb::EnvironmentKeys {
            workspace_id: ws.id.clone(),
            project_id: pr.id.clone(),
            environment_id: en.id.clone(),
            grant_scope: pb::ScopeKind::Workspace as i32,
            grant_scope_id: ws.id.clone(),
            grant_wrapped_key: ws.wrapped.clone(),
            project_wrapped_key: pr.wrapped.clone(),
            environment_wrapped_key: en.wrapped.clone(),
            key_epoch: 1,
            epoch_links: Vec::new(),
            env_version: st.env_versions.get(&en.id).copied().unwrap_or(0),
            role: pb::Role::Admin as i32,
            statements: st.statements.clone(),
            signers: Fake::signers(st),
            workspace_creator_id: st.creator.clone(),
        }
    }

    /// Every principal, as statement signers (the fake admits nobody: all are roots).
    fn signers(st: &State) -> Vec<pb::PrincipalInfo> {
        st.principals
            .values()
            .map(|p| pb::PrincipalInfo {
                principal: Some(p.clone()),
                ..Default::default()
            })
            .collect()
    }

    fn tampered(&self, mut v: pb::SecretVersion) -> pb::SecretVersion {
        if self.tamper.load(Ordering::SeqCst) && !v.envelope.is_empty() {
            let last = v.envelope.len() - 1;
            v.envelope[last] ^= 1;
        }
        v
    }
}

fn create(list: &mut Vec<Scope>, s: Scope) -> Result<(), Status> {
    if list
        .iter()
        .any(|x| x.parent == s.parent && x.name == s.name)
    {
        return Err(Status::already_exists("name taken"));
    }
    list.push(s);
    Ok(())
}

/// The service handle the gRPC server owns; tests keep another `Arc` to steer the fake.
struct Svc(Arc<Fake>);

impl std::ops::Deref for Svc {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.0
    }
}

/// The fake's server id, handed out at join and checked in every request signature.
const FAKE_SERVER_ID: zopp_crypto::ids::ServerId =
    zopp_crypto::ids::ServerId::from_bytes([0x5f; 16]);

#[tonic::async_trait]
impl Zopp for Svc {
    async fn acquire_app_lease(
        &self,
        _: Request<pb::AcquireAppLeaseRequest>,
    ) -> Reply<pb::AcquireAppLeaseResponse> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn release_app_lease(
        &self,
        _: Request<pb::ReleaseAppLeaseRequest>,
    ) -> Reply<pb::ReleaseAppLeaseResponse> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn get_app_status(
        &self,
        _: Request<pb::GetAppStatusRequest>,
    ) -> Reply<pb::GetAppStatusResponse> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn lookup_invite(
        &self,
        _: Request<pb::LookupInviteRequest>,
    ) -> Reply<pb::LookupInviteResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Reply<pb::JoinResponse> {
        let r = req.into_inner();
        if r.token != "zinv_test" {
            return Err(Status::failed_precondition("invite already used"));
        }
        let vk = VerifyingKey::try_from_slice(&r.signing_key)
            .map_err(|_| Status::invalid_argument("bad key"))?;
        let ak = zopp_crypto::keys::AgreementPublic::try_from_slice(&r.agreement_key)
            .map_err(|_| Status::invalid_argument("bad key"))?;
        let msg = join_message(&vk, &ak, &r.email, &zopp_crypto::sha256(r.token.as_bytes()));
        vk.verify(&msg, &r.self_signature)
            .map_err(|_| Status::unauthenticated("bad self-signature"))?;
        let principal_id = uuid_like(1 + self.state().principals.len() as u8);
        self.state().principals.insert(
            principal_id.clone(),
            pb::PrincipalPublic {
                principal_id: principal_id.clone(),
                signing_key: r.signing_key,
                agreement_key: r.agreement_key,
                name: r.principal_name,
                user_email: r.email,
                ..Default::default()
            },
        );
        Ok(Response::new(pb::JoinResponse {
            user_id: uuid_like(0xaa),
            principal_id,
            server_id: FAKE_SERVER_ID.as_bytes().to_vec(),
        }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let me = self.auth(&req, "/zopp.v1.Zopp/WhoAmI")?;
        let st = self.state();
        let p = &st.principals[&me];
        Ok(Response::new(pb::WhoAmIResponse {
            principal_id: me.clone(),
            user_id: uuid_like(0xaa),
            email: p.user_email.clone(),
            principal_name: p.name.clone(),
        }))
    }

    async fn create_workspace(
        &self,
        req: Request<pb::CreateWorkspaceRequest>,
    ) -> Reply<pb::Workspace> {
        let me = self.auth(&req, "/zopp.v1.Zopp/CreateWorkspace")?;
        let r = req.into_inner();
        {
            let mut st = self.state();
            st.statements.extend(r.statements.iter().cloned());
            st.creator = me;
        }
        create(
            &mut self.state().workspaces,
            Scope {
                id: r.id.clone(),
                parent: String::new(),
                name: r.name.clone(),
                wrapped: r.wrapped_key,
            },
        )?;
        Ok(Response::new(pb::Workspace {
            id: r.id,
            name: r.name,
            created_at_ms: 1,
        }))
    }

    async fn list_workspaces(
        &self,
        req: Request<pb::ListWorkspacesRequest>,
    ) -> Reply<pb::ListWorkspacesResponse> {
        self.auth(&req, "/zopp.v1.Zopp/ListWorkspaces")?;
        let st = self.state();
        Ok(Response::new(pb::ListWorkspacesResponse {
            workspaces: st
                .workspaces
                .iter()
                .map(|w| pb::Workspace {
                    id: w.id.clone(),
                    name: w.name.clone(),
                    created_at_ms: 1,
                })
                .collect(),
        }))
    }

    async fn delete_workspace(
        &self,
        _: Request<pb::DeleteWorkspaceRequest>,
    ) -> Reply<pb::DeleteResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_project(&self, req: Request<pb::CreateProjectRequest>) -> Reply<pb::Project> {
        self.auth(&req, "/zopp.v1.Zopp/CreateProject")?;
        let r = req.into_inner();
        let mut st = self.state();
        st.statements.extend(r.statements.iter().cloned());
        let ws = st
            .workspaces
            .iter()
            .find(|w| w.name == r.workspace)
            .ok_or_else(|| nf("workspace"))?
            .id
            .clone();
        create(
            &mut st.projects,
            Scope {
                id: r.id.clone(),
                parent: ws.clone(),
                name: r.name.clone(),
                wrapped: r.wrapped_key,
            },
        )?;
        Ok(Response::new(pb::Project {
            id: r.id,
            workspace_id: ws,
            name: r.name,
            created_at_ms: 1,
        }))
    }

    async fn list_projects(
        &self,
        _: Request<pb::ListProjectsRequest>,
    ) -> Reply<pb::ListProjectsResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_project(
        &self,
        _: Request<pb::DeleteProjectRequest>,
    ) -> Reply<pb::DeleteResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_environment(
        &self,
        req: Request<pb::CreateEnvironmentRequest>,
    ) -> Reply<pb::Environment> {
        self.auth(&req, "/zopp.v1.Zopp/CreateEnvironment")?;
        let r = req.into_inner();
        let mut st = self.state();
        st.statements.extend(r.statements.iter().cloned());
        let ws = st
            .workspaces
            .iter()
            .find(|w| w.name == r.workspace)
            .ok_or_else(|| nf("workspace"))?
            .id
            .clone();
        let pr = st
            .projects
            .iter()
            .find(|p| p.parent == ws && p.name == r.project)
            .ok_or_else(|| nf("project"))?
            .id
            .clone();
        create(
            &mut st.environments,
            Scope {
                id: r.id.clone(),
                parent: pr.clone(),
                name: r.name.clone(),
                wrapped: r.wrapped_key,
            },
        )?;
        Ok(Response::new(pb::Environment {
            id: r.id,
            project_id: pr,
            name: r.name,
            created_at_ms: 1,
            env_version: 0,
            key_epoch: 1,
            ..Default::default()
        }))
    }

    async fn list_environments(
        &self,
        _: Request<pb::ListEnvironmentsRequest>,
    ) -> Reply<pb::ListEnvironmentsResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn set_retention(
        &self,
        _: Request<pb::SetRetentionRequest>,
    ) -> Reply<pb::SetRetentionResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_environment(
        &self,
        req: Request<pb::DeleteEnvironmentRequest>,
    ) -> Reply<pb::DeleteResponse> {
        self.auth(&req, "/zopp.v1.Zopp/DeleteEnvironment")?;
        let mut st = self.state();
        let (_, _, en) = Fake::resolve(&st, &req.get_ref().env)?;
        st.environments.retain(|e| e.id != en.id);
        st.secrets.retain(|(e, _), _| *e != en.id);
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn get_environment(
        &self,
        req: Request<pb::GetEnvironmentRequest>,
    ) -> Reply<pb::EnvironmentKeys> {
        self.auth(&req, "/zopp.v1.Zopp/GetEnvironment")?;
        let st = self.state();
        let (ws, pr, en) = Fake::resolve(&st, &req.get_ref().env)?;
        Ok(Response::new(Fake::keys(&st, &ws, &pr, &en)))
    }

    async fn get_scope_keys(&self, req: Request<pb::GetScopeKeysRequest>) -> Reply<pb::ScopeKeys> {
        self.auth(&req, "/zopp.v1.Zopp/GetScopeKeys")?;
        let r = req.get_ref();
        let st = self.state();
        let ws = st
            .workspaces
            .iter()
            .find(|w| w.name == r.workspace)
            .ok_or_else(|| nf("workspace"))?;
        let mut keys = pb::ScopeKeys {
            workspace_id: ws.id.clone(),
            grant_scope: pb::ScopeKind::Workspace as i32,
            grant_scope_id: ws.id.clone(),
            grant_wrapped_key: ws.wrapped.clone(),
            role: pb::Role::Admin as i32,
            statements: st.statements.clone(),
            signers: Fake::signers(&st),
            workspace_creator_id: st.creator.clone(),
            ..Default::default()
        };
        if !r.project.is_empty() {
            let pr = st
                .projects
                .iter()
                .find(|p| p.parent == ws.id && p.name == r.project)
                .ok_or_else(|| nf("project"))?;
            keys.project_id = pr.id.clone();
            keys.project_wrapped_key = pr.wrapped.clone();
        }
        Ok(Response::new(keys))
    }

    async fn fetch_environment(
        &self,
        req: Request<pb::FetchEnvironmentRequest>,
    ) -> Reply<pb::FetchEnvironmentResponse> {
        self.auth(&req, "/zopp.v1.Zopp/FetchEnvironment")?;
        let st = self.state();
        let (ws, pr, en) = Fake::resolve(&st, &req.get_ref().env)?;
        let secrets: Vec<_> = st
            .secrets
            .iter()
            .filter(|((e, _), _)| *e == en.id)
            .filter_map(|(_, vs)| vs.last().filter(|v| !v.deleted).cloned())
            .map(|v| self.tampered(v))
            .collect();
        Ok(Response::new(pb::FetchEnvironmentResponse {
            keys: Some(Fake::keys(&st, &ws, &pr, &en)),
            writers: st.principals.values().cloned().collect(),
            env_version: st.env_versions.get(&en.id).copied().unwrap_or(0),
            secrets,
        }))
    }

    async fn get_secret(&self, req: Request<pb::GetSecretRequest>) -> Reply<pb::GetSecretResponse> {
        self.auth(&req, "/zopp.v1.Zopp/GetSecret")?;
        let r = req.get_ref();
        let st = self.state();
        let (ws, pr, en) = Fake::resolve(&st, &r.env)?;
        let vs = st
            .secrets
            .get(&(en.id.clone(), r.name_digest.clone()))
            .ok_or_else(|| nf("secret"))?;
        let idx = if r.version == 0 {
            vs.len() - 1
        } else {
            (r.version as usize)
                .checked_sub(1)
                .filter(|i| *i < vs.len())
                .ok_or_else(|| nf("version"))?
        };
        let v = vs[idx].clone();
        if v.deleted && r.version == 0 && !r.include_deleted {
            return Err(nf("secret"));
        }
        Ok(Response::new(pb::GetSecretResponse {
            keys: Some(Fake::keys(&st, &ws, &pr, &en)),
            writer: st.principals.get(&v.writer_principal_id).cloned(),
            previous: idx.checked_sub(1).map(|i| vs[i].clone()),
            secret: Some(self.tampered(v)),
        }))
    }

    async fn secret_history(
        &self,
        req: Request<pb::SecretHistoryRequest>,
    ) -> Reply<pb::SecretHistoryResponse> {
        self.auth(&req, "/zopp.v1.Zopp/SecretHistory")?;
        let r = req.get_ref();
        let st = self.state();
        let (ws, pr, en) = Fake::resolve(&st, &r.env)?;
        let vs = st
            .secrets
            .get(&(en.id.clone(), r.name_digest.clone()))
            .ok_or_else(|| nf("secret"))?;
        Ok(Response::new(pb::SecretHistoryResponse {
            keys: Some(Fake::keys(&st, &ws, &pr, &en)),
            versions: vs.iter().cloned().map(|v| self.tampered(v)).collect(),
            writers: st.principals.values().cloned().collect(),
        }))
    }

    async fn write_secrets(
        &self,
        req: Request<pb::WriteSecretsRequest>,
    ) -> Reply<pb::WriteSecretsResponse> {
        let me = self.auth(&req, "/zopp.v1.Zopp/WriteSecrets")?;
        if self
            .lose_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::aborted("version conflict"));
        }
        let r = req.into_inner();
        let mut st = self.state();
        let (_, _, en) = Fake::resolve(&st, &r.env)?;
        if en.id != r.environment_id {
            return Err(Status::failed_precondition("environment id mismatch"));
        }
        for w in &r.writes {
            let head = st
                .secrets
                .get(&(en.id.clone(), w.name_digest.clone()))
                .map_or(0, Vec::len) as u64;
            if w.version != head + 1 {
                return Err(Status::aborted("version conflict"));
            }
        }
        st.next_time += 1000;
        let time = 1_700_000_000_000 + st.next_time;
        // Writers sign the env_version and time they claim; like the server, the fake stores
        // what they signed and refuses a claim that is not the next env_version.
        let env_version = st.env_versions.get(&en.id).copied().unwrap_or(0) + 1;
        if r.writes.iter().any(|w| w.env_version != env_version) {
            return Err(Status::aborted("version conflict"));
        }
        st.env_versions.insert(en.id.clone(), env_version);
        let time = r.writes.first().map_or(time, |w| w.created_at_ms);
        for w in r.writes {
            st.secrets
                .entry((en.id.clone(), w.name_digest.clone()))
                .or_default()
                .push(pb::SecretVersion {
                    name_digest: w.name_digest,
                    version: w.version,
                    key_epoch: w.key_epoch,
                    envelope: w.envelope,
                    deleted: w.deleted,
                    writer_principal_id: me.clone(),
                    signature: w.signature,
                    prev_hash: w.prev_hash,
                    created_at_ms: w.created_at_ms,
                    env_version,
                });
        }
        Ok(Response::new(pb::WriteSecretsResponse {
            env_version,
            created_at_ms: time,
        }))
    }

    type WatchEnvironmentStream = futures::stream::Empty<Result<pb::WatchEnvironmentEvent, Status>>;

    async fn watch_environment(
        &self,
        _: Request<pb::WatchEnvironmentRequest>,
    ) -> Reply<Self::WatchEnvironmentStream> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_audit(&self, _: Request<pb::ListAuditRequest>) -> Reply<pb::ListAuditResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_principals(
        &self,
        req: Request<pb::GetPrincipalsRequest>,
    ) -> Reply<pb::GetPrincipalsResponse> {
        self.auth(&req, "/zopp.v1.Zopp/GetPrincipals")?;
        let r = req.into_inner();
        let st = self.state();
        // The fake admits nobody, so every principal is a root: describe those asked for.
        let principals = Fake::signers(&st)
            .into_iter()
            .filter(|p| {
                p.principal
                    .as_ref()
                    .is_some_and(|p| r.principal_ids.contains(&p.principal_id))
            })
            .collect();
        let workspace_id = st
            .workspaces
            .iter()
            .find(|w| w.name == r.workspace)
            .map(|w| w.id.clone())
            .unwrap_or_default();
        Ok(Response::new(pb::GetPrincipalsResponse {
            principals,
            workspace_creator_id: if workspace_id.is_empty() {
                String::new()
            } else {
                st.creator.clone()
            },
            workspace_id,
            ..Default::default()
        }))
    }

    async fn set_permission(
        &self,
        _: Request<pb::SetPermissionRequest>,
    ) -> Reply<pb::PermissionGrant> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_permissions(
        &self,
        _: Request<pb::ListPermissionsRequest>,
    ) -> Reply<pb::ListPermissionsResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn remove_permission(
        &self,
        _: Request<pb::RemovePermissionRequest>,
    ) -> Reply<pb::RemovePermissionResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn effective_permission(
        &self,
        _: Request<pb::EffectivePermissionRequest>,
    ) -> Reply<pb::EffectivePermissionResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_key_share(
        &self,
        _: Request<pb::GetKeyShareRequest>,
    ) -> Reply<pb::GetKeyShareResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_server_info(
        &self,
        _: Request<pb::GetServerInfoRequest>,
    ) -> Reply<pb::GetServerInfoResponse> {
        Ok(Response::new(pb::GetServerInfoResponse {
            server_id: FAKE_SERVER_ID.as_bytes().to_vec(),
        }))
    }

    async fn create_invite(&self, _: Request<pb::CreateInviteRequest>) -> Reply<pb::InviteInfo> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_invites(
        &self,
        _: Request<pb::ListInvitesRequest>,
    ) -> Reply<pb::ListInvitesResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn revoke_invite(&self, _: Request<pb::RevokeInviteRequest>) -> Reply<pb::InviteInfo> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn lookup_workspace_invite(
        &self,
        _: Request<pb::LookupWorkspaceInviteRequest>,
    ) -> Reply<pb::LookupWorkspaceInviteResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn join_workspace(
        &self,
        _: Request<pb::JoinWorkspaceRequest>,
    ) -> Reply<pb::JoinResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn create_service_principal(
        &self,
        _: Request<pb::CreateServicePrincipalRequest>,
    ) -> Reply<pb::PrincipalInfo> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn revoke_principal(
        &self,
        _: Request<pb::RevokePrincipalRequest>,
    ) -> Reply<pb::RevokePrincipalResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_principals(
        &self,
        _: Request<pb::ListPrincipalsRequest>,
    ) -> Reply<pb::ListPrincipalsResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn rename_principal(
        &self,
        _: Request<pb::RenamePrincipalRequest>,
    ) -> Reply<pb::PrincipalInfo> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn prepare_rotation(
        &self,
        _: Request<pb::PrepareRotationRequest>,
    ) -> Reply<pb::RotationPlan> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn rotate_keys(
        &self,
        _: Request<pb::RotateKeysRequest>,
    ) -> Reply<pb::RotateKeysResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_grant_keys(
        &self,
        _: Request<pb::ListGrantKeysRequest>,
    ) -> Reply<pb::ListGrantKeysResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn export_principal(
        &self,
        _: Request<pb::ExportPrincipalRequest>,
    ) -> Reply<pb::ExportPrincipalResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn import_principal(
        &self,
        _: Request<pb::ImportPrincipalRequest>,
    ) -> Reply<pb::ImportPrincipalResponse> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn complete_import(
        &self,
        _: Request<pb::CompleteImportRequest>,
    ) -> Reply<pb::PrincipalInfo> {
        Err(Status::unimplemented("not in the fake"))
    }
}

fn uuid_like(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

/// A fake server on a loopback port.
async fn start() -> (Arc<Fake>, ServerConfig) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = ZoppServer::new(Svc(fake.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("fake server");
    });
    let server = ServerConfig::try_new(&format!("http://{addr}"), None).expect("url");
    (fake, server)
}

/// Joins with a fresh home and returns a connected client.
async fn joined(server: &ServerConfig, home: &tempfile::TempDir) -> Client {
    let home = ZoppHome::new(home.path());
    zopp_cli::join(
        server,
        &home,
        zopp_cli::JoinParams {
            token: "zinv_test",
            email: "alice@example.com",
            device_name: "laptop",
            passphrase: None,
            kdf: KdfParams::DEFAULT,
        },
    )
    .await
    .expect("join");
    connect(server, &home).await
}

async fn connect(server: &ServerConfig, home: &ZoppHome) -> Client {
    let identity = home
        .load_identity(|_| panic!("no passphrase was set"))
        .expect("identity");
    Client::connect(server.clone(), identity, home)
        .await
        .expect("connect")
}

async fn scaffold(c: &Client) -> EnvRef {
    c.create_workspace("acme").await.expect("workspace");
    c.create_project("acme", "api").await.expect("project");
    c.create_environment("acme", "api", "dev")
        .await
        .expect("environment");
    EnvRef::try_new("acme", "api", "dev").expect("valid")
}

/// Calls recorded since the last drain.
fn drain(fake: &Fake) -> Vec<&'static str> {
    std::mem::take(&mut fake.state().calls)
        .into_iter()
        .map(|m| m.trim_start_matches("/zopp.v1.Zopp/"))
        .collect()
}

#[tokio::test]
async fn secret_lifecycle_with_signed_calls_and_one_round_trip_gets() {
    let (fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    assert_eq!(c.whoami().await.expect("whoami").email, "alice@example.com");
    let env = scaffold(&c).await;
    drain(&fake);

    let w = c
        .set_secret(&env, "DATABASE_URL", b"postgres://u:p@h/db", None)
        .await
        .expect("set");
    assert_eq!(w.version, 1);
    // The chain is cached now: a get is exactly one GetSecret.
    drain(&fake);
    let s = c.get_secret(&env, "DATABASE_URL", None).await.expect("get");
    assert_eq!(s.expose_value(), b"postgres://u:p@h/db");
    assert_eq!(s.version, 1);
    assert_eq!(s.writer.label(), "alice@example.com");
    assert_eq!(drain(&fake), ["GetSecret"]);

    c.set_secret(&env, "DATABASE_URL", b"v2", None)
        .await
        .expect("set again");
    c.set_secret(&env, "API_KEY", b"\x00binary\xff", None)
        .await
        .expect("set binary");
    let old = c
        .get_secret(&env, "DATABASE_URL", Some(1))
        .await
        .expect("old version");
    assert_eq!(old.expose_value(), b"postgres://u:p@h/db");

    drain(&fake);
    let all = c.fetch_environment(&env).await.expect("fetch");
    assert_eq!(drain(&fake), ["FetchEnvironment"]);
    let names: Vec<_> = all.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["API_KEY", "DATABASE_URL"]);
    assert_eq!(all.secrets[1].version, 2);
    assert_eq!(all.secrets[0].expose_value(), b"\x00binary\xff");

    let d = c.delete_secret(&env, "DATABASE_URL").await.expect("delete");
    assert_eq!(d.version, 3);
    let err = c
        .get_secret(&env, "DATABASE_URL", None)
        .await
        .expect_err("deleted");
    assert!(
        matches!(err, Error::NotFound(Missing::Secret { .. })),
        "{err}"
    );
    let err = c
        .delete_secret(&env, "DATABASE_URL")
        .await
        .expect_err("already deleted");
    assert!(matches!(err, Error::NotFound(_)));

    let h = c
        .secret_history(&env, "DATABASE_URL")
        .await
        .expect("history");
    let shape: Vec<_> = h.iter().map(|r| (r.version, r.is_deleted())).collect();
    assert_eq!(shape, [(1, false), (2, false), (3, true)]);

    let r = c
        .rollback_secret(&env, "DATABASE_URL", 1)
        .await
        .expect("rollback");
    assert_eq!(r.version, 4);
    let s = c.get_secret(&env, "DATABASE_URL", None).await.expect("get");
    assert_eq!(
        (s.version, s.expose_value()),
        (4, &b"postgres://u:p@h/db"[..])
    );
    let err = c
        .rollback_secret(&env, "DATABASE_URL", 3)
        .await
        .expect_err("tombstone");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = c
        .rollback_secret(&env, "DATABASE_URL", 9)
        .await
        .expect_err("no such version");
    assert!(
        matches!(err, Error::NotFound(Missing::Version { version: 9, .. })),
        "{err}"
    );
}

#[tokio::test]
async fn the_server_never_sees_names_or_values() {
    let (fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    let env = scaffold(&c).await;
    c.set_secret(&env, "CANARY_NAME_7Q", b"canary-value-91x", None)
        .await
        .expect("set");
    let st = fake.state();
    for versions in st.secrets.values() {
        for v in versions {
            let raw = v.encode_to_vec();
            for canary in [&b"CANARY_NAME_7Q"[..], b"canary-value-91x"] {
                assert!(!raw.windows(canary.len()).any(|w| w == canary));
            }
        }
    }
}

#[tokio::test]
async fn racing_writers_both_land_as_successive_versions() {
    let (_fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    let env = scaffold(&c).await;
    let (a, b) = tokio::join!(
        c.set_secret(&env, "K", b"from-a", None),
        c.set_secret(&env, "K", b"from-b", None)
    );
    let mut versions = [a.expect("a").version, b.expect("b").version];
    versions.sort_unstable();
    assert_eq!(versions, [1, 2], "no write lost, none overwritten");
    let h = c.secret_history(&env, "K").await.expect("history");
    assert_eq!(h.len(), 2);
}

#[tokio::test]
async fn lost_races_retry_but_version_checks_do_not() {
    let (fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    let env = scaffold(&c).await;
    fake.lose_writes.store(2, Ordering::SeqCst);
    let w = c.set_secret(&env, "K", b"v1", None).await.expect("retried");
    assert_eq!(w.version, 1);

    let err = c
        .set_secret(&env, "K", b"v2", Some(0))
        .await
        .expect_err("exists already");
    assert_eq!(err.to_string(), "secret 'K' is at version 1, not 0");
    fake.lose_writes.store(1, Ordering::SeqCst);
    let err = c
        .set_secret(&env, "K", b"v2", Some(1))
        .await
        .expect_err("lost the race under --if-version");
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let w = c
        .set_secret(&env, "K", b"v2", Some(1))
        .await
        .expect("check-and-set");
    assert_eq!(w.version, 2);

    fake.lose_writes.store(100, Ordering::SeqCst);
    let err = c
        .set_secret(&env, "K", b"v3", None)
        .await
        .expect_err("gives up eventually");
    assert!(matches!(err, Error::Conflict(_)), "{err}");
}

#[tokio::test]
async fn tampered_ciphertext_fails_verification_naming_the_secret() {
    let (fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    let env = scaffold(&c).await;
    c.set_secret(&env, "API_KEY", b"s3cr3t", None)
        .await
        .expect("set");
    fake.tamper.store(true, Ordering::SeqCst);
    let err = c
        .get_secret(&env, "API_KEY", None)
        .await
        .expect_err("tampered");
    assert_eq!(err.to_string(), "secret 'API_KEY' failed verification");
    // A listing knows no names up front and a tampered envelope cannot reveal its own, so the
    // secret is named by a digest prefix.
    let err = c.fetch_environment(&env).await.expect_err("tampered");
    let msg = err.to_string();
    assert!(
        msg.starts_with("secret '#") && msg.ends_with("' failed verification"),
        "{msg}"
    );
    let err = c
        .secret_history(&env, "API_KEY")
        .await
        .expect_err("tampered");
    assert_eq!(err.to_string(), "secret 'API_KEY' failed verification");
    // Writes verify the head they append to, so they refuse too.
    let err = c
        .set_secret(&env, "API_KEY", b"x", None)
        .await
        .expect_err("tampered head");
    assert!(matches!(err, Error::Verification { .. }), "{err}");
}

#[tokio::test]
async fn a_recreated_environment_refreshes_a_stale_cache_once() {
    let (fake, server) = start().await;
    let home_a = tempfile::tempdir().expect("home");
    let a = joined(&server, &home_a).await;
    let env = scaffold(&a).await;
    a.set_secret(&env, "OLD", b"1", None).await.expect("set");
    a.get_secret(&env, "OLD", None).await.expect("warm cache");

    // Another device of the same principal (its own cache) recreates the environment.
    let home_b = tempfile::tempdir().expect("home b");
    for f in ["config.toml", "principal.key"] {
        std::fs::copy(home_a.path().join(f), home_b.path().join(f)).expect("copy identity");
    }
    let b = connect(&server, &ZoppHome::new(home_b.path())).await;
    b.delete_environment(&env).await.expect("delete");
    b.create_environment("acme", "api", "dev")
        .await
        .expect("recreate");
    b.set_secret(&env, "NEW", b"2", None).await.expect("set");

    // A pinned the old environment's id: a new id under the same name is refused as a swap
    // (a malicious server could do the same), until the user forgets the pin on purpose.
    let err = a
        .get_secret(&env, "NEW", None)
        .await
        .expect_err("a new id under a pinned name");
    assert!(matches!(err, Error::ScopeSwapped { .. }), "{err}");
    for f in std::fs::read_dir(home_a.path().join("cache")).expect("cache dir") {
        let f = f.expect("cache entry").path();
        if f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("scopes-"))
        {
            std::fs::remove_file(f).expect("forget the scope pins");
        }
    }
    let a = connect(&server, &ZoppHome::new(home_a.path())).await;

    // A's cached chain belongs to the old environment: its digest for NEW is wrong.
    drain(&fake);
    let s = a.get_secret(&env, "NEW", None).await.expect("refreshed");
    assert_eq!(s.expose_value(), b"2");
    // The read carries the new chain, written by this same principal: one round trip.
    assert_eq!(drain(&fake), ["GetSecret"]);
    // The cache is fresh again: one round trip.
    a.get_secret(&env, "NEW", None).await.expect("warm");
    assert_eq!(drain(&fake), ["GetSecret"]);
    let err = a.get_secret(&env, "OLD", None).await.expect_err("gone");
    assert!(
        matches!(err, Error::NotFound(Missing::Secret { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn not_found_names_the_missing_scope() {
    let (_fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let c = joined(&server, &home).await;
    scaffold(&c).await;
    let cases = [
        (("nope", "api", "dev"), "workspace 'nope' not found"),
        (
            ("acme", "nope", "dev"),
            "project 'nope' not found in workspace 'acme'",
        ),
        (
            ("acme", "api", "nope"),
            "environment 'nope' not found in project 'api'",
        ),
    ];
    for ((w, p, e), want) in cases {
        let env = EnvRef::try_new(w, p, e).expect("valid");
        let err = c.get_secret(&env, "X", None).await.expect_err("missing");
        assert_eq!(err.to_string(), want);
        let err = c.fetch_environment(&env).await.expect_err("missing");
        assert_eq!(err.to_string(), want);
    }
    let err = c.create_workspace("acme").await.expect_err("taken");
    assert_eq!(err.to_string(), "workspace 'acme' already exists");
    let err = c.create_project("nope", "api").await.expect_err("no ws");
    assert_eq!(err.to_string(), "workspace 'nope' not found");
}

#[tokio::test]
async fn join_refuses_to_overwrite_and_reports_refusals() {
    let (_fake, server) = start().await;
    let home = tempfile::tempdir().expect("home");
    let _c = joined(&server, &home).await;
    let before = std::fs::read(home.path().join("principal.key")).expect("key");
    let params = |token| zopp_cli::JoinParams {
        token,
        email: "bob@example.com",
        device_name: "d",
        passphrase: None,
        kdf: KdfParams::DEFAULT,
    };
    let err = zopp_cli::join(&server, &ZoppHome::new(home.path()), params("zinv_test"))
        .await
        .expect_err("identity exists");
    assert!(matches!(err, Error::IdentityExists { .. }));
    assert_eq!(
        std::fs::read(home.path().join("principal.key")).expect("key"),
        before
    );

    let fresh = tempfile::tempdir().expect("home");
    let err = zopp_cli::join(&server, &ZoppHome::new(fresh.path()), params("zinv_used"))
        .await
        .expect_err("refused");
    assert_eq!(err.to_string(), "cannot join: invite already used");
    assert!(matches!(
        err,
        Error::JoinRefused {
            code: Code::FailedPrecondition,
            ..
        }
    ));
    // A refused join leaves no half identity behind.
    assert!(!ZoppHome::new(fresh.path()).has_identity());
}
