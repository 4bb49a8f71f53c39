//! Verification of what a malicious server could forge, in one layer of the client: here, the
//! signed key statements (FORMAT.md §13) that vouch for every key a client opens, and the
//! statements a client makes when it creates, grants or rotates a key.
//!
//! - [`keys`] checks a derived chain's [`KeyTrail`](crate::chain::KeyTrail) against the
//!   statements the server returned with it;
//! - [`make`] signs the statements for keys this client makes;
//! - [`cache`] remembers the chains already verified, so a warm read checks no signature.

pub mod cache;
pub mod keys;
pub mod make;

use zopp_crypto::ids::WorkspaceId;

use crate::chain::KeyTrail;
use crate::client::Client;
use crate::error::{Error, Result};
use keys::{ChainStatements, KeyAuthError};

impl Client {
    /// The verified-chains cache of this client's identity and server.
    pub(crate) fn chain_cache(&self) -> cache::ChainCache {
        cache::ChainCache::new(
            self.cache().dir().to_owned(),
            self.server().url(),
            self.identity(),
            self.cache().enabled(),
        )
    }

    /// Checks a derived chain against its statements (FORMAT.md §13.6), unless the same chain
    /// was verified before; remembers it once verified.
    ///
    /// # Errors
    /// [`Error::KeyForged`] naming the key no verifiable statement vouches for;
    /// [`Error::LocalIo`] when the trust store cannot be read or written.
    pub(crate) fn authenticate_chain(
        &self,
        trail: &KeyTrail,
        workspace: WorkspaceId,
        given: ChainStatements<'_>,
        scope: &str,
    ) -> Result<()> {
        let cache = self.chain_cache();
        let digest = trail.digest();
        if cache.contains(&digest) {
            return Ok(());
        }
        let mut store = self.trust_store()?;
        let me = self.identity();
        keys::check(
            trail,
            workspace,
            me.principal(),
            me.keys().signing.verifying_key(),
            given,
            &mut store,
        )
        .map_err(|e| Error::KeyForged {
            scope: scope.to_owned(),
            reason: match e {
                KeyAuthError::NoStatements => {
                    "the server sent the key chain without its signed statements (FORMAT.md \
                     §13); data written before key statements existed is refused"
                        .to_owned()
                }
                e => e.to_string(),
            },
        })?;
        store.save()?;
        cache.insert(&digest);
        Ok(())
    }
}
