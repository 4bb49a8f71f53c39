//! zopp's client SDK: everything the `zopp` command does, as a library.
//!
//! It holds the local identity (`$ZOPP_HOME`), talks to a zopp server over signed gRPC, derives
//! scope keys from the wrapped chains the server hands out, and seals, signs, verifies and opens
//! secret versions. Every key and every plaintext stays in this process: the server receives
//! ciphertext, name digests and wrapped keys only.
//!
//! It does not parse command lines, prompt for confirmation or print (that is `main.rs`), and it
//! implements no cryptography itself (that is `zopp-crypto`). Its data comes from the server
//! (`zopp-proto` messages), from `$ZOPP_HOME` (`config.toml`, `principal.key`, `cache/`) and from
//! the nearest `zopp.toml`.

pub mod audit;
pub mod bulk;
pub mod cache;
pub mod chain;
pub mod client;
pub mod defaults;
pub mod devices;
mod error;
pub mod fallback;
pub mod files;
pub mod hardening;
pub mod home;
pub mod invites;
pub mod kubefile;
pub mod names;
mod pins;
pub mod platform;
pub mod principals;
pub mod resolve;
pub mod rotation;
pub mod run;
pub mod scope;
pub mod secrets;
pub mod teams;
pub mod trust;
pub mod validate;
mod verified;
pub mod verify;
pub mod versions;

pub use client::ClientIdentity;
pub use client::{join, rpc_count, Client, JoinParams, ServerConfig, DEFAULT_SERVER};
pub use error::TlsProblem;
pub use error::{Error, Missing, Result};
pub use home::{Identity, LocalConfig, ZoppHome};
pub use scope::EnvRef;
pub use secrets::{At, DecryptedEnvironment, SecretRecord, WriteOutcome, Writer};
