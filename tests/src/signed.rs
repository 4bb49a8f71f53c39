//! A minimal signed gRPC client built from a `zopp` user's home, for checks the CLI cannot
//! make: sending one exact signed request twice (to prove replays are refused), holding a
//! `WatchEnvironment` stream open, and reading the raw audit chain to verify it independently.
//!
//! It signs exactly as FORMAT.md §4 says (server id, method, timestamp, nonce, SHA-256 of the
//! prost body), from the unencrypted key file `zopp join --no-passphrase` writes and the server id
//! it pinned.

use std::path::Path;

use prost::Message;
use rand::RngCore;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Extensions, Request};
use zopp_crypto::audit::AuditRecord;
use zopp_crypto::ids::ServerId;
use zopp_crypto::keys::PrincipalKeys;
use zopp_crypto::sign::{sign_request, NONCE_LEN, ZERO_HASH};
use zopp_proto::v1::zopp_client::ZoppClient;
use zopp_proto::v1::AuditEntry;

/// A principal's id and keys, loaded from its `ZOPP_HOME`.
pub struct Signer {
    principal_id: String,
    keys: PrincipalKeys,
    server_id: ServerId,
}

impl Signer {
    /// Loads `config.toml`, the plain `principal.key` and the pinned `server_id` from `home`.
    pub fn load(home: &Path) -> Self {
        let config = std::fs::read_to_string(home.join("config.toml")).expect("read config.toml");
        let config: toml::Table = config.parse().expect("config.toml is TOML");
        let principal_id = config["principal_id"]
            .as_str()
            .expect("principal_id in config.toml")
            .to_string();
        let key = std::fs::read(home.join("principal.key")).expect("read principal.key");
        let keys = zopp_crypto::keyfile::decode(&key, None).expect("plain key file");
        let server_id = std::fs::read_to_string(home.join("server_id")).expect("read server_id");
        let server_id = ServerId::try_parse(server_id.trim()).expect("server_id is an id");
        Self {
            principal_id,
            keys,
            server_id,
        }
    }

    /// The server id this principal signs for.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// The principal's id, as the server knows it.
    pub fn principal_id(&self) -> &str {
        &self.principal_id
    }

    /// The principal's keys (to sign secret versions, e.g. in the load generator).
    pub fn keys(&self) -> &PrincipalKeys {
        &self.keys
    }

    /// The four signature metadata values for `msg` sent to `method` (full gRPC path).
    pub fn metadata<T: Message>(&self, method: &str, msg: &T) -> MetadataMap {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as i64;
        let mut nonce = [0u8; NONCE_LEN];
        // A CSPRNG seeded from the OS once per thread: a getrandom(2) per call would cost the
        // load generator a system call per request.
        rand::thread_rng().fill_bytes(&mut nonce);
        let sig = sign_request(
            &self.keys.signing,
            &self.server_id,
            method,
            ts,
            &nonce,
            &msg.encode_to_vec(),
        );
        let mut md = MetadataMap::new();
        let v = |s: String| MetadataValue::try_from(s).expect("ASCII metadata");
        md.insert(zopp_proto::MD_PRINCIPAL, v(self.principal_id.clone()));
        md.insert(zopp_proto::MD_TIMESTAMP, v(ts.to_string()));
        md.insert(zopp_proto::MD_NONCE, v(hex::encode(nonce)));
        md.insert(zopp_proto::MD_SIGNATURE, v(hex::encode(sig)));
        md
    }

    /// A freshly signed request.
    pub fn request<T: Message>(&self, method: &str, msg: T) -> Request<T> {
        let md = self.metadata(method, &msg);
        with_metadata(md, msg)
    }
}

/// A request carrying exactly `md`: send the same signature twice to replay a call.
pub fn with_metadata<T>(md: MetadataMap, msg: T) -> Request<T> {
    Request::from_parts(md, Extensions::default(), msg)
}

/// Connects a gRPC client to `url` (`http://host:port`).
pub async fn connect(url: &str) -> ZoppClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    ZoppClient::new(ch)
}

/// Checks an audit chain read from the server (oldest first, from seq 1) the way a client does:
/// consecutive sequence numbers, each `prev_hash` the previous entry's hash, and each hash
/// recomputed from the entry's fields. Returns the head hash.
///
/// # Panics
/// On the first entry that breaks the chain.
pub fn verify_chain(entries: &[AuditEntry]) -> [u8; 32] {
    let mut prev = ZERO_HASH;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "audit seq {} out of place", e.seq);
        assert_eq!(
            e.prev_hash, prev,
            "entry {} does not follow its predecessor",
            e.seq
        );
        let hash = AuditRecord {
            seq: e.seq,
            time_ms: e.time_ms,
            actor: &e.actor_principal_id,
            action: &e.action,
            scope: &e.scope,
            target: &e.target,
            method: &e.method,
            request_timestamp_ms: e.request_timestamp_ms,
            nonce: &e.nonce,
            request_hash: &e.request_hash,
            signature: &e.signature,
            result: &e.result,
        }
        .chain_hash(&prev);
        assert_eq!(
            e.hash, hash,
            "entry {} does not hash to its stored hash",
            e.seq
        );
        prev = hash;
    }
    prev
}
