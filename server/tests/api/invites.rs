//! Server invites: `LookupInvite` and `Join`.

use ::zopp_server::service::methods;
use tonic::Code;
use zopp_crypto::keys::PrincipalKeys;
use zopp_crypto::sign::join_message;
use zopp_proto::v1::*;

use crate::common::*;

const HOUR_MS: i64 = 3_600_000;

fn fresh_keys() -> PrincipalKeys {
    PrincipalKeys::generate(&mut rand::rngs::OsRng)
}

#[tokio::test]
async fn lookup_describes_a_valid_invite_and_refuses_bad_ones() {
    let s = Server::start().await;
    let now = ::zopp_server::now_ms();
    let token = s.invite_at(now, 48).await;
    let info = s
        .client()
        .await
        .lookup_invite(LookupInviteRequest {
            token: token.clone(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(info.kind, "server");
    assert_eq!(info.workspace, "");
    assert_eq!(info.expires_at_ms, now + 48 * HOUR_MS);

    // Same id, different secret: indistinguishable from an unknown invite.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_status(
        s.client()
            .await
            .lookup_invite(LookupInviteRequest { token: forged })
            .await,
        Code::NotFound,
        "invite not found",
    );
    assert_status(
        s.client()
            .await
            .lookup_invite(LookupInviteRequest {
                token: "zinv_nope".into(),
            })
            .await,
        Code::InvalidArgument,
        "malformed invite token",
    );
    let expired = s.invite_at(now - 2 * HOUR_MS, 1).await;
    assert_status(
        s.client()
            .await
            .lookup_invite(LookupInviteRequest { token: expired })
            .await,
        Code::FailedPrecondition,
        "invite expired",
    );
}

#[tokio::test]
async fn an_invite_works_once() {
    let s = Server::start().await;
    let token = s.invite().await;
    let c = s.client().await;
    let first = c
        .clone()
        .join(join_request(&fresh_keys(), &token, "a@example.com"))
        .await
        .expect("join")
        .into_inner();
    assert!(!first.principal_id.is_empty() && !first.user_id.is_empty());
    assert_status(
        c.clone()
            .join(join_request(&fresh_keys(), &token, "b@example.com"))
            .await,
        Code::FailedPrecondition,
        "invite already used",
    );
    assert_status(
        c.clone().lookup_invite(LookupInviteRequest { token }).await,
        Code::FailedPrecondition,
        "invite already used",
    );
}

#[tokio::test]
async fn expired_and_unknown_invites_are_refused() {
    let s = Server::start().await;
    let expired = s.invite_at(::zopp_server::now_ms() - 2 * HOUR_MS, 1).await;
    assert_status(
        s.client()
            .await
            .join(join_request(&fresh_keys(), &expired, "a@example.com"))
            .await,
        Code::FailedPrecondition,
        "invite expired",
    );
    // A well-formed token the server never issued.
    let other = Server::start().await;
    let foreign = other.invite().await;
    assert_status(
        s.client()
            .await
            .join(join_request(&fresh_keys(), &foreign, "a@example.com"))
            .await,
        Code::NotFound,
        "invite not found",
    );
}

#[tokio::test]
async fn duplicate_email_is_refused_and_leaves_the_invite_usable() {
    let s = Server::start().await;
    s.join("dup@example.com").await;
    let token = s.invite().await;
    assert_status(
        s.client()
            .await
            .join(join_request(&fresh_keys(), &token, "DUP@example.com"))
            .await,
        Code::AlreadyExists,
        "a user with email 'DUP@example.com' already exists",
    );
    s.client()
        .await
        .join(join_request(&fresh_keys(), &token, "new@example.com"))
        .await
        .expect("the invite was not consumed by the failed join");
}

#[tokio::test]
async fn bad_join_requests_are_refused_before_anything_is_written() {
    let s = Server::start().await;
    let token = s.invite().await;
    let keys = fresh_keys();
    let good = join_request(&keys, &token, "a@example.com");

    // Proof of possession made for a different email.
    let mut wrong_email = good.clone();
    wrong_email.email = "b@example.com".into();
    // Signed by another key.
    let mut wrong_key = good.clone();
    let other = fresh_keys();
    let proof = join_message(
        &keys.signing.verifying_key(),
        &keys.agreement.public_key(),
        "a@example.com",
        &zopp_crypto::sha256(token.as_bytes()),
    );
    wrong_key.self_signature = other.signing.sign(&proof).to_vec();
    // A low-order X25519 point (the identity): every agreement with it is all-zero.
    let mut low_order = good.clone();
    low_order.agreement_key = vec![0; 32];
    let mut short_key = good.clone();
    short_key.signing_key = vec![1; 31];
    let mut bad_email = good.clone();
    bad_email.email = "not an email".into();
    let mut no_name = good.clone();
    no_name.principal_name = "  ".into();

    let sig_msg = "self_signature does not verify for these keys, this email and this invite";
    for (req, msg) in [
        (wrong_email, sig_msg),
        (wrong_key, sig_msg),
        (low_order, "agreement_key is not a valid X25519 public key"),
        (short_key, "signing_key is not a valid Ed25519 public key"),
        (bad_email, "invalid email address 'not an email'"),
        (no_name, "principal name must not be empty"),
    ] {
        assert_status(s.client().await.join(req).await, Code::InvalidArgument, msg);
    }
    // None of it consumed the invite.
    s.client().await.join(good).await.expect("good join");
}

#[tokio::test]
async fn join_is_recorded_on_the_server_chain_with_a_checkable_proof() {
    let s = Server::start().await;
    let token = s.invite().await;
    let keys = fresh_keys();
    let resp = s
        .client()
        .await
        .join(join_request(&keys, &token, "a@example.com"))
        .await
        .expect("join")
        .into_inner();
    let me = s.join("reader@example.com").await;
    let chain = me.audit("").await;
    let join = chain
        .entries
        .iter()
        .find(|e| e.action == "principal.join" && e.actor_principal_id == resp.principal_id)
        .expect("join entry");
    assert_eq!(join.method, methods::JOIN);
    assert_eq!(join.target, format!("user/{}", resp.user_id));
    assert_eq!(join.request_hash, zopp_crypto::sha256(token.as_bytes()));
    let actor = chain
        .actors
        .iter()
        .find(|a| a.principal_id == resp.principal_id)
        .expect("actor listed");
    let vk = zopp_crypto::keys::VerifyingKey::try_from_slice(&actor.signing_key).expect("key");
    let ak = zopp_crypto::keys::AgreementPublic::try_from_slice(&actor.agreement_key).expect("key");
    let hash: [u8; 32] = join.request_hash.clone().try_into().expect("32 bytes");
    vk.verify(
        &join_message(&vk, &ak, &actor.user_email, &hash),
        &join.signature,
    )
    .expect("the audit entry carries the joiner's proof of possession");
    assert!(chain.entries.iter().any(|e| e.action == "invite.create"));
}
