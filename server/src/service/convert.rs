//! Storage records → wire messages. Nothing here adds or removes information: it only changes
//! representation (ids to text, fixed arrays to bytes).

use zopp_proto::v1::{AuditEntry, Environment, PrincipalPublic, Project, SecretVersion, Workspace};

use crate::storage::{
    AuditEntryRecord, EnvironmentRecord, PrincipalRecord, ProjectRecord, SecretVersionRecord,
    WorkspaceRecord,
};

pub(super) fn principal_public(p: &PrincipalRecord) -> PrincipalPublic {
    PrincipalPublic {
        principal_id: p.id.to_string(),
        signing_key: p.signing_key.to_bytes().to_vec(),
        agreement_key: p.agreement_key.to_bytes().to_vec(),
        name: p.name.clone(),
        user_email: p.user_email.clone().unwrap_or_default(),
        admitted_by: p.admitted_by.map(|a| a.to_string()).unwrap_or_default(),
        admission_signature: p.admission_signature.clone(),
        created_at_ms: p.created_at_ms,
        revoked: p.revoked_at_ms.is_some(),
    }
}

pub(super) fn secret_version(v: &SecretVersionRecord) -> SecretVersion {
    SecretVersion {
        name_digest: v.name_digest.as_bytes().to_vec(),
        version: v.version,
        key_epoch: v.key_epoch,
        envelope: v.envelope.as_bytes().to_vec(),
        deleted: v.deleted,
        writer_principal_id: v.writer.to_string(),
        signature: v.signature.to_vec(),
        prev_hash: v.prev_hash.to_vec(),
        created_at_ms: v.created_at_ms,
        env_version: v.env_version,
    }
}

pub(super) fn workspace(w: &WorkspaceRecord) -> Workspace {
    Workspace {
        id: w.id.to_string(),
        name: w.name.clone(),
        created_at_ms: w.created_at_ms,
    }
}

pub(super) fn project(p: &ProjectRecord) -> Project {
    Project {
        id: p.id.to_string(),
        workspace_id: p.workspace_id.to_string(),
        name: p.name.clone(),
        created_at_ms: p.created_at_ms,
    }
}

pub(super) fn environment(e: &EnvironmentRecord) -> Environment {
    Environment {
        id: e.id.to_string(),
        project_id: e.project_id.to_string(),
        name: e.name.clone(),
        created_at_ms: e.created_at_ms,
        env_version: e.env_version,
        key_epoch: e.key_epoch,
        keep_versions: e.keep_versions.unwrap_or(0),
        history_floor: e.history_floor,
    }
}

/// Takes the record by value: a page holds up to a thousand entries, and moving their strings
/// and byte fields instead of copying them is a measurable part of `zopp audit verify`'s speed.
pub(super) fn audit_entry(e: AuditEntryRecord) -> AuditEntry {
    let d = e.draft;
    AuditEntry {
        seq: e.seq,
        time_ms: d.time_ms,
        actor_principal_id: d.actor.map(|a| a.to_string()).unwrap_or_default(),
        action: d.action,
        scope: d.scope,
        target: d.target,
        nonce: d.nonce,
        signature: d.signature,
        result: d.result,
        prev_hash: e.prev_hash.to_vec(),
        hash: e.hash.to_vec(),
        request_hash: d.request_hash,
        method: d.method,
        request_timestamp_ms: d.request_timestamp_ms,
    }
}
