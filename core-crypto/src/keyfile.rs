//! Local private-key file encoding (FORMAT.md §9): plain, or sealed under a passphrase with
//! Argon2id → XChaCha20-Poly1305.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::keys::{AgreementSecret, PrincipalKeys, SigningKey};
use crate::wrap::FORMAT_V1;
use crate::{CryptoError, Result};

/// Algorithm id: keys stored unencrypted (the user chose no passphrase).
pub const ALG_PLAIN: u8 = 0x00;
/// Algorithm id: Argon2id-derived key, XChaCha20-Poly1305.
pub const ALG_ARGON2ID_XCHACHA: u8 = 0x03;
/// AAD of a sealed key file.
pub const KEYFILE_AAD: &[u8] = b"zopp/v1/keyfile";

/// Largest accepted Argon2 memory cost (KiB): 2 GiB. Files are local but may be copied around,
/// so a hostile file must not be able to demand unbounded memory.
pub const MAX_M_COST_KIB: u32 = 2 * 1024 * 1024;
/// Largest accepted Argon2 time cost.
pub const MAX_T_COST: u32 = 32;
/// Largest accepted Argon2 parallelism.
pub const MAX_P_COST: u32 = 16;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 1 lane (~0.1-0.3 s).
    pub const DEFAULT: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };

    fn check(&self) -> Result<()> {
        if self.m_cost_kib > MAX_M_COST_KIB
            || self.t_cost == 0
            || self.t_cost > MAX_T_COST
            || self.p_cost == 0
            || self.p_cost > MAX_P_COST
            || self.m_cost_kib < 8 * self.p_cost
        {
            return Err(CryptoError::KdfParams);
        }
        Ok(())
    }
}

/// Derives a 32-byte key from a passphrase with Argon2id.
///
/// # Errors
/// [`CryptoError::KdfParams`] when parameters are out of bounds.
pub fn derive_passphrase_key(
    passphrase: &[u8],
    salt: &[u8; 16],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    params.check()?;
    let p = argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| CryptoError::KdfParams)?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| CryptoError::KdfParams)?;
    Ok(out)
}

fn secret_bytes(keys: &PrincipalKeys) -> Zeroizing<[u8; 64]> {
    let mut b = Zeroizing::new([0u8; 64]);
    let mut seed = keys.signing.expose_secret();
    b[..32].copy_from_slice(&seed);
    zeroize::Zeroize::zeroize(&mut seed);
    b[32..].copy_from_slice(keys.agreement.expose_secret());
    b
}

fn keys_from(b: &[u8]) -> Result<PrincipalKeys> {
    if b.len() != 64 {
        return Err(CryptoError::Malformed("key file"));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&b[..32]);
    let mut agr = Zeroizing::new([0u8; 32]);
    agr.copy_from_slice(&b[32..]);
    Ok(PrincipalKeys {
        signing: SigningKey::from_seed(&seed),
        agreement: AgreementSecret::from_bytes(*agr),
    })
}

/// Encodes keys without a passphrase.
pub fn encode_plain(keys: &PrincipalKeys) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(66));
    out.push(FORMAT_V1);
    out.push(ALG_PLAIN);
    out.extend_from_slice(secret_bytes(keys).as_ref());
    out
}

/// Seals keys under a passphrase.
///
/// # Errors
/// [`CryptoError::KdfParams`] when parameters are out of bounds.
pub fn encode_sealed(
    keys: &PrincipalKeys,
    passphrase: &[u8],
    params: KdfParams,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let kek = derive_passphrase_key(passphrase, &salt, params)?;
    let header = sealed_header(params, &salt, &nonce);
    let ct = XChaCha20Poly1305::new(kek.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret_bytes(keys).as_ref(),
                aad: &[KEYFILE_AAD, &header].concat(),
            },
        )
        .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
    let mut out = header;
    out.extend_from_slice(&ct);
    Ok(out)
}

fn sealed_header(params: KdfParams, salt: &[u8; 16], nonce: &[u8; 24]) -> Vec<u8> {
    let mut h = Vec::with_capacity(2 + 12 + 16 + 24);
    h.push(FORMAT_V1);
    h.push(ALG_ARGON2ID_XCHACHA);
    h.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    h.extend_from_slice(&params.t_cost.to_be_bytes());
    h.extend_from_slice(&params.p_cost.to_be_bytes());
    h.extend_from_slice(salt);
    h.extend_from_slice(nonce);
    h
}

/// Whether an encoded key file needs a passphrase.
pub fn is_sealed(encoded: &[u8]) -> bool {
    encoded.len() >= 2 && encoded[0] == FORMAT_V1 && encoded[1] == ALG_ARGON2ID_XCHACHA
}

/// Decodes a key file; `passphrase` is needed only when [`is_sealed`].
///
/// # Errors
/// [`CryptoError::DecryptionFailed`] for a wrong passphrase or tampered file; format errors for
/// bad framing; [`CryptoError::KdfParams`] for out-of-bounds stored parameters. Checks run in
/// the order FORMAT.md §9 gives.
pub fn decode(encoded: &[u8], passphrase: Option<&[u8]>) -> Result<PrincipalKeys> {
    if encoded.len() < 2 {
        return Err(CryptoError::Malformed("key file"));
    }
    if encoded[0] != FORMAT_V1 {
        return Err(CryptoError::UnsupportedFormat);
    }
    match encoded[1] {
        ALG_PLAIN => keys_from(&encoded[2..]),
        ALG_ARGON2ID_XCHACHA => {
            const HDR: usize = 2 + 12 + 16 + 24;
            if encoded.len() != HDR + 64 + 16 {
                return Err(CryptoError::Malformed("key file"));
            }
            let u = |i: usize| u32::from_be_bytes(encoded[i..i + 4].try_into().expect("4 bytes"));
            let params = KdfParams {
                m_cost_kib: u(2),
                t_cost: u(6),
                p_cost: u(10),
            };
            let salt: [u8; 16] = encoded[14..30].try_into().expect("16 bytes");
            let nonce = &encoded[30..HDR];
            // The stored parameters are checked before the passphrase is asked for: a file with
            // out-of-bounds parameters is refused as such whether or not one is given.
            params.check()?;
            let pass = passphrase.ok_or(CryptoError::DecryptionFailed)?;
            let kek = derive_passphrase_key(pass, &salt, params)?;
            let pt = Zeroizing::new(
                XChaCha20Poly1305::new(kek.as_ref().into())
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: &encoded[HDR..],
                            aad: &[KEYFILE_AAD, &encoded[..HDR]].concat(),
                        },
                    )
                    .map_err(|_| CryptoError::DecryptionFailed)?,
            );
            keys_from(&pt)
        }
        _ => Err(CryptoError::UnsupportedFormat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use rstest::rstest;

    /// Smallest Argon2id parameters: fast enough to run in every test.
    const TINY: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
    /// A fixed signing seed.
    const SEED: [u8; 32] = [0x5e; 32];
    /// A fixed X25519 secret.
    const AGREEMENT: [u8; 32] = [0x21; 32];
    /// The passphrase used to seal.
    const PASSPHRASE: &[u8] = b"correct horse battery staple";
    /// Length of a sealed key file.
    const SEALED_LEN: usize = 54 + 64 + 16;

    fn keys() -> PrincipalKeys {
        PrincipalKeys {
            signing: SigningKey::from_seed(&SEED),
            agreement: AgreementSecret::from_bytes(AGREEMENT),
        }
    }

    fn sealed() -> Vec<u8> {
        encode_sealed(
            &keys(),
            PASSPHRASE,
            TINY,
            &mut ChaCha20Rng::seed_from_u64(9),
        )
        .expect("tiny params are in bounds")
    }

    fn same_keys(a: &PrincipalKeys, b: &PrincipalKeys) -> bool {
        a.signing.expose_secret() == b.signing.expose_secret()
            && a.agreement.expose_secret() == b.agreement.expose_secret()
    }

    #[test]
    fn plain_round_trip_and_layout() {
        let enc = encode_plain(&keys());
        assert_eq!(enc.len(), 66);
        assert_eq!(&enc[..2], &[FORMAT_V1, ALG_PLAIN]);
        assert_eq!(&enc[2..34], &SEED);
        assert_eq!(&enc[34..], &AGREEMENT);
        assert!(!is_sealed(&enc));
        let dec = decode(&enc, None).expect("decodes");
        assert!(same_keys(&dec, &keys()));
        // A passphrase given for a plain file is ignored, not an error.
        assert!(decode(&enc, Some(b"x")).is_ok());
    }

    #[test]
    fn sealed_round_trip_and_layout() {
        let enc = sealed();
        assert_eq!(enc.len(), SEALED_LEN);
        assert!(is_sealed(&enc));
        assert_eq!(&enc[..2], &[FORMAT_V1, ALG_ARGON2ID_XCHACHA]);
        assert_eq!(&enc[2..14], &[0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1]);
        let dec = decode(&enc, Some(PASSPHRASE)).expect("decodes");
        assert!(same_keys(&dec, &keys()));
    }

    #[rstest]
    #[case::wrong(Some(b"correct horse battery stapler".as_slice()))]
    #[case::empty(Some(b"".as_slice()))]
    #[case::missing(None)]
    fn wrong_passphrase_fails(#[case] pass: Option<&[u8]>) {
        assert_eq!(
            decode(&sealed(), pass).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }

    #[test]
    fn every_bit_flip_of_a_sealed_file_fails() {
        let enc = sealed();
        for i in 0..enc.len() * 8 {
            let mut b = enc.clone();
            b[i / 8] ^= 1 << (i % 8);
            // A flip that turns m_cost into 128 MiB..1 GiB is refused exactly like the 64 MiB
            // one (the derived key changes), but would cost that much memory per case.
            let m = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            if m > 64 * 1024 && m <= MAX_M_COST_KIB {
                continue;
            }
            assert!(decode(&b, Some(PASSPHRASE)).is_err(), "bit {i}");
        }
    }

    #[rstest]
    #[case::m_too_big(MAX_M_COST_KIB + 1, 1, 1)]
    #[case::m_below_8p(15, 1, 2)]
    #[case::m_zero(0, 1, 1)]
    #[case::t_zero(8, 0, 1)]
    #[case::t_too_big(8, MAX_T_COST + 1, 1)]
    #[case::p_zero(8, 1, 0)]
    #[case::p_too_big(1024, 1, MAX_P_COST + 1)]
    #[case::all_max(u32::MAX, u32::MAX, u32::MAX)]
    fn out_of_bounds_params_are_refused(#[case] m: u32, #[case] t: u32, #[case] p: u32) {
        let params = KdfParams {
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
        };
        assert_eq!(
            derive_passphrase_key(b"x", &[0; 16], params).err(),
            Some(CryptoError::KdfParams)
        );
        let mut enc = sealed();
        enc[2..6].copy_from_slice(&m.to_be_bytes());
        enc[6..10].copy_from_slice(&t.to_be_bytes());
        enc[10..14].copy_from_slice(&p.to_be_bytes());
        assert_eq!(
            decode(&enc, Some(PASSPHRASE)).err(),
            Some(CryptoError::KdfParams)
        );
        assert!(encode_sealed(&keys(), b"x", params, &mut ChaCha20Rng::seed_from_u64(1)).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let plain = encode_plain(&keys());
        for n in 0..plain.len() {
            assert!(decode(&plain[..n], None).is_err(), "plain prefix {n}");
        }
        let enc = sealed();
        for n in 0..enc.len() {
            assert!(
                decode(&enc[..n], Some(PASSPHRASE)).is_err(),
                "sealed prefix {n}"
            );
        }
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            decode(&long, Some(PASSPHRASE)).err(),
            Some(CryptoError::Malformed("key file"))
        );
    }

    #[rstest]
    #[case::version_zero(&[0x00, ALG_PLAIN], CryptoError::UnsupportedFormat)]
    #[case::version_two(&[0x02, ALG_ARGON2ID_XCHACHA], CryptoError::UnsupportedFormat)]
    #[case::alg_symmetric(&[FORMAT_V1, 0x01], CryptoError::UnsupportedFormat)]
    #[case::alg_x25519(&[FORMAT_V1, 0x02], CryptoError::UnsupportedFormat)]
    #[case::alg_unknown(&[FORMAT_V1, 0xff], CryptoError::UnsupportedFormat)]
    fn unknown_headers_are_unsupported(#[case] header: &[u8], #[case] want: CryptoError) {
        let mut b = header.to_vec();
        b.extend_from_slice(&[0; 64]);
        assert_eq!(decode(&b, None).err(), Some(want));
        assert!(!is_sealed(&b));
    }

    #[test]
    fn bounds_are_checked_before_the_passphrase() {
        let mut f = sealed();
        f[6..10].copy_from_slice(&33u32.to_be_bytes());
        assert_eq!(decode(&f, None).err(), Some(CryptoError::KdfParams));
        f[6..10].copy_from_slice(&32u32.to_be_bytes());
        assert_eq!(decode(&f, None).err(), Some(CryptoError::DecryptionFailed));
    }

    #[test]
    fn same_passphrase_and_salt_derive_the_same_key() {
        let a = derive_passphrase_key(b"pw", &[1; 16], TINY).expect("in bounds");
        let b = derive_passphrase_key(b"pw", &[1; 16], TINY).expect("in bounds");
        let c = derive_passphrase_key(b"pw", &[2; 16], TINY).expect("in bounds");
        assert_eq!(a.as_ref(), b.as_ref());
        assert_ne!(a.as_ref(), c.as_ref());
    }
}
