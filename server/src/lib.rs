//! zopp server: the signed gRPC API of `zopp.v1.Zopp` over ciphertext-only storage.
//!
//! What it does: authenticates every request by its Ed25519 signature ([`auth`]), decides access
//! with one role-based check ([`rbac`]), stores sealed envelopes, wrapped keys, versions and a
//! hash-chained audit trail ([`storage`], [`audit`]), streams environment changes ([`feed`]), and
//! exposes health, reflection and Prometheus metrics ([`server`], [`metrics`]).
//!
//! What it does not do: decrypt anything. It links `zopp-crypto` only to verify signatures, parse
//! ids and public keys, and hash audit entries and versions; secret names reach it as HMAC
//! digests and values as sealed envelopes, so neither its database, its logs nor its metrics can
//! reveal them.
//!
//! Where its data comes from: clients over gRPC (`zopp-proto`), and the operator through the
//! `zopp-server` binary (`invite create`, `migrate`), which writes to the database directly.

pub mod audit;
pub mod auth;
pub mod error;
pub mod feed;
pub mod invite;
pub mod limits;
pub mod metrics;
pub mod ratelimit;
pub mod rbac;
pub mod server;
pub mod service;
pub mod storage;
pub mod validate;

use std::sync::{Mutex, MutexGuard};

pub use server::{serve, ServeError, ServeOptions, TlsCheckError, TlsOptions};

/// Source of the current time, so tests can control expiry and skew.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Locks a mutex, recovering from poisoning: every critical section in this crate leaves its data
/// consistent at each step, so a panic elsewhere must not take the lock down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
