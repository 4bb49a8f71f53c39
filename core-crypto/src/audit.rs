//! Canonical encoding and hashing of audit entries (FORMAT.md §8), shared by the server that
//! writes the chain and the clients that verify it.

use crate::sha256;

/// Label prefixed to every canonical audit entry.
pub const AUDIT_LABEL: &[u8] = b"zopp/v1/audit";

/// The hashed fields of one audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord<'a> {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Server time of the entry (unix ms).
    pub time_ms: i64,
    /// Acting principal id (text form), empty for the server itself.
    pub actor: &'a str,
    /// Action name, e.g. `secret.write`.
    pub action: &'a str,
    /// Scope, e.g. `environment/<id>`.
    pub scope: &'a str,
    /// Target, e.g. name digest and version; never plaintext.
    pub target: &'a str,
    /// Full gRPC method of the request.
    pub method: &'a str,
    /// Request timestamp the actor signed (unix ms).
    pub request_timestamp_ms: i64,
    /// The request nonce.
    pub nonce: &'a [u8],
    /// SHA-256 of the request body.
    pub request_hash: &'a [u8],
    /// The actor's request signature.
    pub signature: &'a [u8],
    /// `ok` or a gRPC code name.
    pub result: &'a str,
}

impl AuditRecord<'_> {
    /// Canonical bytes: label, then each field length-prefixed (u32 BE) or fixed-width BE.
    pub fn canonical(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        m.extend_from_slice(AUDIT_LABEL);
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.time_ms.to_be_bytes());
        for f in [
            self.actor.as_bytes(),
            self.action.as_bytes(),
            self.scope.as_bytes(),
            self.target.as_bytes(),
            self.method.as_bytes(),
        ] {
            m.extend_from_slice(&(f.len() as u32).to_be_bytes());
            m.extend_from_slice(f);
        }
        m.extend_from_slice(&self.request_timestamp_ms.to_be_bytes());
        for f in [
            self.nonce,
            self.request_hash,
            self.signature,
            self.result.as_bytes(),
        ] {
            m.extend_from_slice(&(f.len() as u32).to_be_bytes());
            m.extend_from_slice(f);
        }
        m
    }

    /// `SHA-256(prev_hash ‖ canonical entry)`.
    pub fn chain_hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        let c = self.canonical();
        let mut m = Vec::with_capacity(32 + c.len());
        m.extend_from_slice(prev_hash);
        m.extend_from_slice(&c);
        sha256(&m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// A fixed previous hash.
    const PREV: [u8; 32] = [0x99; 32];

    fn record() -> AuditRecord<'static> {
        AuditRecord {
            seq: 1,
            time_ms: 2,
            actor: "a",
            action: "b",
            scope: "c",
            target: "d",
            method: "e",
            request_timestamp_ms: 3,
            nonce: &[0x0f],
            request_hash: &[0x10],
            signature: &[0x11],
            result: "ok",
        }
    }

    #[test]
    fn canonical_encoding_is_pinned() {
        let want = concat!(
            "7a6f70702f76312f6175646974", // "zopp/v1/audit"
            "0000000000000001",           // seq
            "0000000000000002",           // time_ms
            "0000000161",                 // actor "a"
            "0000000162",                 // action "b"
            "0000000163",                 // scope "c"
            "0000000164",                 // target "d"
            "0000000165",                 // method "e"
            "0000000000000003",           // request_timestamp_ms
            "000000010f",                 // nonce
            "0000000110",                 // request_hash
            "0000000111",                 // signature
            "000000026f6b",               // result "ok"
        );
        assert_eq!(hex::encode(record().canonical()), want);
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_and_canonical() {
        let r = record();
        let mut m = PREV.to_vec();
        m.extend_from_slice(&r.canonical());
        assert_eq!(r.chain_hash(&PREV), crate::sha256(&m));
        assert_ne!(r.chain_hash(&PREV), r.chain_hash(&[0; 32]));
    }

    #[rstest]
    #[case::seq(|r: &mut AuditRecord<'static>| r.seq = 2)]
    #[case::time(|r: &mut AuditRecord<'static>| r.time_ms = -2)]
    #[case::actor(|r: &mut AuditRecord<'static>| r.actor = "")]
    #[case::action(|r: &mut AuditRecord<'static>| r.action = "bb")]
    #[case::scope(|r: &mut AuditRecord<'static>| r.scope = "C")]
    #[case::target(|r: &mut AuditRecord<'static>| r.target = "d ")]
    #[case::method(|r: &mut AuditRecord<'static>| r.method = "f")]
    #[case::request_time(|r: &mut AuditRecord<'static>| r.request_timestamp_ms = 4)]
    #[case::nonce(|r: &mut AuditRecord<'static>| r.nonce = &[])]
    #[case::request_hash(|r: &mut AuditRecord<'static>| r.request_hash = &[0x11])]
    #[case::signature(|r: &mut AuditRecord<'static>| r.signature = &[0x11, 0])]
    #[case::result(|r: &mut AuditRecord<'static>| r.result = "NOT_FOUND")]
    // Moving a byte across a field boundary keeps the concatenation but not the encoding.
    #[case::boundary(|r: &mut AuditRecord<'static>| { r.actor = "ab"; r.action = ""; })]
    fn every_field_changes_the_hash(#[case] change: fn(&mut AuditRecord<'static>)) {
        let mut r = record();
        change(&mut r);
        assert_ne!(r.canonical(), record().canonical());
        assert_ne!(r.chain_hash(&PREV), record().chain_hash(&PREV));
    }
}
