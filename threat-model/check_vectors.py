#!/usr/bin/env python3
"""A second, independent checker of zopp's test vectors, written from FORMAT.md alone.

It implements every primitive FORMAT.md uses in pure Python on the standard library (SHA-2,
HMAC and BLAKE2b come from hashlib/hmac; HKDF, ChaCha20, XChaCha20-Poly1305, X25519, Ed25519 and
Argon2id are written here from their RFCs), then checks each JSON file in vectors/: the outcome
must equal `expected`, and for `ok` every field of `output` must be reproduced. No zopp code and
no third-party package is involved, so agreement with the vectors shows that the document, not
the Rust implementation, determines the bytes.

Usage: python3 threat-model/check_vectors.py [vectors-dir]   (exit status 1 on any failure)
"""

import hashlib
import hmac
import json
import os
import re
import sys

# ---------------------------------------------------------------- outcome codes (FORMAT.md §11)

OK = "ok"
DECRYPTION_FAILED = "decryption_failed"
UNSUPPORTED_FORMAT = "unsupported_format"
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
INVALID_PUBLIC_KEY = "invalid_public_key"
KDF_PARAMS = "kdf_params"
HASH_MISMATCH = "hash_mismatch"
SEQUENCE_GAP = "sequence_gap"
OUT_OF_ORDER = "out_of_order"
BROKEN_LINK = "broken_link"
UNSIGNED_ENTRY = "unsigned_entry"
UNKNOWN_ACTOR = "unknown_actor"


class Refused(Exception):
    """An operation refused its input; `args[0]` is the outcome code."""


def sha256(b):
    return hashlib.sha256(b).digest()


def sha512(b):
    return hashlib.sha512(b).digest()


def u32(n):
    return n.to_bytes(4, "big")


def u64(n):
    return n.to_bytes(8, "big")


def i64(n):
    return (n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def lp(b):
    return u32(len(b)) + b


# ---------------------------------------------------------------- HKDF-SHA256 (RFC 5869)


def hkdf(salt, ikm, info):
    prk = hmac.new(salt if salt is not None else b"\0" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


# ---------------------------------------------------------------- XChaCha20-Poly1305

M32 = 0xFFFFFFFF


def _rotl(v, c):
    return ((v << c) & M32) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 7)


def _rounds(s):
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)


_SIGMA = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]


def _words(b):
    return [int.from_bytes(b[i : i + 4], "little") for i in range(0, len(b), 4)]


def _chacha20_block(key, counter, nonce12):
    init = _SIGMA + _words(key) + [counter] + _words(nonce12)
    s = list(init)
    _rounds(s)
    return b"".join(((x + y) & M32).to_bytes(4, "little") for x, y in zip(s, init))


def _hchacha20(key, nonce16):
    s = _SIGMA + _words(key) + _words(nonce16)
    _rounds(s)
    return b"".join(x.to_bytes(4, "little") for x in s[0:4] + s[12:16])


def _chacha20_xor(key, counter, nonce12, data):
    out = bytearray()
    for i in range(0, len(data), 64):
        block = _chacha20_block(key, counter + i // 64, nonce12)
        out += bytes(a ^ b for a, b in zip(data[i : i + 64], block))
    return bytes(out)


def _poly1305(key, msg):
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i : i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(b):
    return b"\0" * (-len(b) % 16)


def _tag(key, nonce12, aad, ct):
    otk = _chacha20_block(key, 0, nonce12)[:32]
    mac = aad + _pad16(aad) + ct + _pad16(ct) + len(aad).to_bytes(8, "little")
    return _poly1305(otk, mac + len(ct).to_bytes(8, "little"))


def aead_seal(key, nonce24, plaintext, aad):
    sub = _hchacha20(key, nonce24[:16])
    n12 = b"\0" * 4 + nonce24[16:]
    ct = _chacha20_xor(sub, 1, n12, plaintext)
    return ct + _tag(sub, n12, aad, ct)


def aead_open(key, nonce24, sealed, aad):
    if len(sealed) < 16:
        raise Refused(DECRYPTION_FAILED)
    sub = _hchacha20(key, nonce24[:16])
    n12 = b"\0" * 4 + nonce24[16:]
    ct, tag = sealed[:-16], sealed[-16:]
    if not hmac.compare_digest(_tag(sub, n12, aad, ct), tag):
        raise Refused(DECRYPTION_FAILED)
    return _chacha20_xor(sub, 1, n12, ct)


# ---------------------------------------------------------------- field and X25519 (RFC 7748)

P = 2**255 - 19


def _inv(x):
    return pow(x, P - 2, P)


def x25519(k, u):
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)  # bit 255 ignored, u >= p reduced
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = kt
        a, b = (x2 + z2) % P, (x2 - z2) % P
        aa, bb = a * a % P, b * b % P
        e = (aa - bb) % P
        c, d = (x3 + z3) % P, (x3 - z3) % P
        da, cb = d * a % P, c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + 121665 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * _inv(z2) % P).to_bytes(32, "little")


def x25519_public(secret):
    return x25519(secret, (9).to_bytes(32, "little"))


def x25519_canonical(u):
    """§1/§3.2: a published X25519 key has bit 255 clear and u < p."""
    return u[31] & 0x80 == 0 and int.from_bytes(u, "little") < P


def x25519_usable(key):
    """§6: a key a statement names: 32 bytes, canonical, not of low order."""
    if len(key) != 32 or not x25519_canonical(key) or x25519(b"\x55" * 32, key) == b"\0" * 32:
        raise Refused(INVALID_PUBLIC_KEY)


# ---------------------------------------------------------------- Ed25519 (RFC 8032, strict per §1)

L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * _inv(121666) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(p1, p2):
    x1, y1, z1, _ = p1
    x2, y2, z2, _ = p2
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * _inv(D * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _compress(pt):
    x, y, z, _ = pt
    zi = _inv(z)
    x, y = x * zi % P, y * zi % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(b):
    """RFC 8032 §5.1.3 decoding: refuses y >= p; None if not a point."""
    if len(b) != 32:
        return None
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


IDENTITY = (0, 1, 1, 0)
_GY = 4 * _inv(5) % P
BASE = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % P)


def _small_order(pt):
    return _equal(_mul(8, pt), IDENTITY)


def ed25519_key(a):
    """§1 steps 1-4."""
    pt = _decompress(a) if len(a) == 32 else None
    if pt is None or _small_order(pt):
        raise Refused(INVALID_PUBLIC_KEY)
    return pt


def ed25519_verify(a, msg, sig):
    """§1 steps 1-8, in order."""
    apt = ed25519_key(a)
    if len(sig) != 64:
        raise Refused(BAD_SIGNATURE)
    r, s = sig[:32], int.from_bytes(sig[32:], "little")
    if s >= L:
        raise Refused(BAD_SIGNATURE)
    rpt = _decompress(r)
    if rpt is not None and _small_order(rpt):
        raise Refused(BAD_SIGNATURE)
    k = int.from_bytes(sha512(r + a + msg), "little") % L
    neg_ka = _mul(k, apt)
    neg_ka = ((-neg_ka[0]) % P, neg_ka[1], neg_ka[2], (-neg_ka[3]) % P)
    if _compress(_add(_mul(s, BASE), neg_ka)) != r:
        raise Refused(BAD_SIGNATURE)


def _expand(seed):
    h = sha512(seed)
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return int.from_bytes(a, "little"), h[32:]


def ed25519_public(seed):
    return _compress(_mul(_expand(seed)[0], BASE))


def ed25519_sign(seed, msg):
    a, prefix = _expand(seed)
    pub = _compress(_mul(a, BASE))
    r = int.from_bytes(sha512(prefix + msg), "little") % L
    rb = _compress(_mul(r, BASE))
    k = int.from_bytes(sha512(rb + pub + msg), "little") % L
    return rb + ((r + k * a) % L).to_bytes(32, "little")


# ---------------------------------------------------------------- Argon2id (RFC 9106)

M64 = 0xFFFFFFFFFFFFFFFF


def _blake2b(data, n):
    return hashlib.blake2b(data, digest_size=n).digest()


def _hprime(x, t):
    if t <= 64:
        return _blake2b(t.to_bytes(4, "little") + x, t)
    r = (t + 31) // 32 - 2
    v = _blake2b(t.to_bytes(4, "little") + x, 64)
    out = v[:32]
    for _ in range(r - 1):
        v = _blake2b(v, 64)
        out += v[:32]
    return out + _blake2b(v, t - 32 * r)


def _gb(v, a, b, c, d):
    va, vb, vc, vd = v[a], v[b], v[c], v[d]
    va = (va + vb + 2 * (va & M32) * (vb & M32)) & M64
    vd ^= va
    vd = ((vd >> 32) | (vd << 32)) & M64
    vc = (vc + vd + 2 * (vc & M32) * (vd & M32)) & M64
    vb ^= vc
    vb = ((vb >> 24) | (vb << 40)) & M64
    va = (va + vb + 2 * (va & M32) * (vb & M32)) & M64
    vd ^= va
    vd = ((vd >> 16) | (vd << 48)) & M64
    vc = (vc + vd + 2 * (vc & M32) * (vd & M32)) & M64
    vb ^= vc
    vb = ((vb >> 63) | (vb << 1)) & M64
    v[a], v[b], v[c], v[d] = va, vb, vc, vd


def _permute(v):
    _gb(v, 0, 4, 8, 12)
    _gb(v, 1, 5, 9, 13)
    _gb(v, 2, 6, 10, 14)
    _gb(v, 3, 7, 11, 15)
    _gb(v, 0, 5, 10, 15)
    _gb(v, 1, 6, 11, 12)
    _gb(v, 2, 7, 8, 13)
    _gb(v, 3, 4, 9, 14)


_COLUMNS = [[16 * i + 2 * j + k for i in range(8) for k in range(2)] for j in range(8)]


def _compress_g(x, y):
    r = [a ^ b for a, b in zip(x, y)]
    q = list(r)
    for i in range(8):
        row = q[16 * i : 16 * i + 16]
        _permute(row)
        q[16 * i : 16 * i + 16] = row
    for idx in _COLUMNS:
        col = [q[k] for k in idx]
        _permute(col)
        for k, val in zip(idx, col):
            q[k] = val
    return [a ^ b for a, b in zip(q, r)]


def _block(b):
    return [int.from_bytes(b[i : i + 8], "little") for i in range(0, 1024, 8)]


def argon2id(password, salt, m, t, p, n=32):
    le = lambda v: v.to_bytes(4, "little")  # noqa: E731
    h0 = _blake2b(
        le(p) + le(n) + le(m) + le(t) + le(0x13) + le(2) + le(len(password)) + password
        + le(len(salt)) + salt + le(0) + le(0),
        64,
    )
    mp = 4 * p * (m // (4 * p))
    q = mp // p
    seg = q // 4
    zero = [0] * 128
    b = [[None] * q for _ in range(p)]
    for lane in range(p):
        b[lane][0] = _block(_hprime(h0 + le(0) + le(lane), 1024))
        b[lane][1] = _block(_hprime(h0 + le(1) + le(lane), 1024))
    for r in range(t):
        for s in range(4):
            for lane in range(p):
                independent = r == 0 and s < 2
                start = 2 if (r == 0 and s == 0) else 0
                addresses, counter = [], 0
                for idx in range(start, seg):
                    j = s * seg + idx
                    prev = b[lane][j - 1] if j > 0 else b[lane][q - 1]
                    if independent:
                        if idx % 128 == 0 or not addresses:
                            counter += 1
                            inp = [r, lane, s, mp, t, 2, counter] + [0] * 121
                            addresses = _compress_g(zero, _compress_g(zero, inp))
                        rand = addresses[idx % 128]
                    else:
                        rand = prev[0]
                    j1, j2 = rand & M32, rand >> 32
                    ref_lane = lane if (r == 0 and s == 0) else j2 % p
                    same = ref_lane == lane
                    if r == 0:
                        if s == 0:
                            area = idx - 1
                        elif same:
                            area = s * seg + idx - 1
                        else:
                            area = s * seg - (1 if idx == 0 else 0)
                    elif same:
                        area = q - seg + idx - 1
                    else:
                        area = q - seg - (1 if idx == 0 else 0)
                    rel = (j1 * j1) >> 32
                    rel = area - 1 - ((area * rel) >> 32)
                    first = 0 if (r == 0 or s == 3) else (s + 1) * seg
                    ref = b[ref_lane][(first + rel) % q]
                    new = _compress_g(prev, ref)
                    if r > 0:
                        new = [a ^ c for a, c in zip(new, b[lane][j])]
                    b[lane][j] = new
    final = list(b[0][q - 1])
    for lane in range(1, p):
        final = [a ^ c for a, c in zip(final, b[lane][q - 1])]
    return _hprime(b"".join(w.to_bytes(8, "little") for w in final), n)


# ---------------------------------------------------------------- zopp formats (§3 - §10)


def key_context(kind, scope_id, epoch):
    return bytes([kind]) + scope_id + u32(epoch)


def recipient_aad(ctx, recipient):
    return b"zopp/v1/wrapped-to" + ctx + recipient


def recipient_kek(shared, eph, rec):
    return hkdf(eph + rec, shared, b"zopp/v1/wrap-x25519")


def wrap_recipient(key, aad, public, eph_secret, nonce):
    if len(public) != 32 or not x25519_canonical(public):
        raise Refused(INVALID_PUBLIC_KEY)
    eph = x25519_public(eph_secret)
    shared = x25519(eph_secret, public)
    if shared == b"\0" * 32:
        raise Refused(INVALID_PUBLIC_KEY)
    if nonce is None:
        raise ValueError("an ok wrap vector needs its nonce")
    kek = recipient_kek(shared, eph, public)
    return b"\x01\x02" + eph + nonce + aead_seal(kek, nonce, key, aad), eph, shared, kek


def unwrap_recipient(wrapped, aad, secret):
    if len(wrapped) < 2:
        raise Refused(MALFORMED)
    if wrapped[:2] != b"\x01\x02":
        raise Refused(UNSUPPORTED_FORMAT)
    if len(wrapped) != 106:
        raise Refused(MALFORMED)
    eph = wrapped[2:34]
    shared = x25519(secret, eph)
    if shared == b"\0" * 32:
        raise Refused(DECRYPTION_FAILED)
    kek = recipient_kek(shared, eph, x25519_public(secret))
    key = aead_open(kek, wrapped[34:58], wrapped[58:], aad)
    if len(key) != 32:
        raise Refused(DECRYPTION_FAILED)
    return key


def child_aad(child_ctx, parent_ctx):
    return b"zopp/v1/wrapped-under" + child_ctx + parent_ctx


def child_kek(parent):
    return hkdf(None, parent, b"zopp/v1/wrap-child")


def unwrap_child(wrapped, parent, aad):
    if len(wrapped) < 2:
        raise Refused(MALFORMED)
    if wrapped[:2] != b"\x01\x01":
        raise Refused(UNSUPPORTED_FORMAT)
    if len(wrapped) != 74:
        raise Refused(MALFORMED)
    key = aead_open(child_kek(parent), wrapped[2:26], wrapped[26:], aad)
    if len(key) != 32:
        raise Refused(DECRYPTION_FAILED)
    return key


def name_key(ek1):
    return hkdf(None, ek1, b"zopp/v1/name")


def seal_key(ek):
    return hkdf(None, ek, b"zopp/v1/seal")


def envelope_aad(env, digest, version, epoch):
    return b"zopp/v1/secret" + env + digest + u64(version) + u32(epoch)


def encode_payload(kind, name, value, metadata):
    return bytes([1, kind]) + lp(name) + lp(value) + lp(metadata)


def decode_payload(b):
    if len(b) < 2 or b[0] != 1 or b[1] not in (1, 2, 3):
        raise Refused(MALFORMED)
    parts, rest = [], b[2:]
    for _ in range(3):
        if len(rest) < 4:
            raise Refused(MALFORMED)
        n = int.from_bytes(rest[:4], "big")
        rest = rest[4:]
        if len(rest) < n:
            raise Refused(MALFORMED)
        parts.append(rest[:n])
        rest = rest[n:]
    if rest:
        raise Refused(MALFORMED)
    try:
        name = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(MALFORMED) from None
    return b[1], name, parts[1], parts[2]


def open_envelope(key, aad, env):
    if len(env) < 2:
        raise Refused(MALFORMED)
    if env[:2] != b"\x01\x01":
        raise Refused(UNSUPPORTED_FORMAT)
    if len(env) < 42:
        raise Refused(MALFORMED)
    return decode_payload(aead_open(key, env[2:26], env[26:], aad))


def request_message(server_id, method, ts, nonce, body_hash):
    m = method.encode()
    return b"zopp/v1/request" + b"\x02" + server_id + lp(m) + i64(ts) + nonce + body_hash


def admission_message(principal, signing, agreement, admitter):
    tail = b"\x01" + admitter if admitter is not None else b"\x00"
    return b"zopp/v1/admit" + principal + signing + agreement + tail


def join_message(signing, agreement, email, token_hash):
    return b"zopp/v1/join" + signing + agreement + lp(email.encode()) + token_hash


def version_message(env, digest, version, epoch, deleted, envelope, prev, writer, env_version, created_at_ms):
    return (
        b"zopp/v1/version" + env + digest + u64(version) + u32(epoch)
        + bytes([1 if deleted else 0]) + sha256(envelope) + prev + writer
        + u64(env_version) + i64(created_at_ms)
    )


def audit_canonical(e):
    return (
        b"zopp/v1/audit" + u64(e["seq"]) + i64(e["time_ms"])
        + b"".join(lp(e[k].encode()) for k in ("actor", "action", "scope", "target", "method"))
        + i64(e["request_timestamp_ms"])
        + b"".join(lp(bytes.fromhex(e[k])) for k in ("nonce", "request_hash", "signature"))
        + lp(e["result"].encode())
    )


def kdf_bounds(m, t, p):
    if m > 2 * 1024 * 1024 or t == 0 or t > 32 or p == 0 or p > 16 or m < 8 * p:
        raise Refused(KDF_PARAMS)


def keyfile_decode(enc, passphrase):
    if len(enc) < 2:
        raise Refused(MALFORMED)
    if enc[0] != 1:
        raise Refused(UNSUPPORTED_FORMAT)
    if enc[1] == 0:
        if len(enc) != 66:
            raise Refused(MALFORMED)
        return enc[2:34], enc[34:66]
    if enc[1] != 3:
        raise Refused(UNSUPPORTED_FORMAT)
    if len(enc) != 134:
        raise Refused(MALFORMED)
    m, t, p = (int.from_bytes(enc[i : i + 4], "big") for i in (2, 6, 10))
    kdf_bounds(m, t, p)
    if passphrase is None:
        raise Refused(DECRYPTION_FAILED)
    kek = argon2id(passphrase, enc[14:30], m, t, p)
    keys = aead_open(kek, enc[30:54], enc[54:], b"zopp/v1/keyfile" + enc[:54])
    return keys[:32], keys[32:]


WHITESPACE = " \t\n\r"
B64URL = re.compile(r"[A-Za-z0-9_-]*")
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url_decode_strict(body):
    if not B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise Refused(MALFORMED)
    bits = 0
    nbits = 0
    out = bytearray()
    for ch in body:
        bits = (bits << 6) | B64_ALPHABET.index(ch)
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
    if bits & ((1 << nbits) - 1):
        raise Refused(MALFORMED)  # leftover bits must be zero
    return bytes(out)


def token_binding(b):
    """§10.1: the root, then one workspace, an optional project, environments after a project."""
    if len(b) < 49:
        raise Refused(MALFORMED)
    count, pos, levels = b[48], 49, []
    for _ in range(count):
        if len(b) < pos + 22:
            raise Refused(MALFORMED)
        level, n = b[pos], b[pos + 21]
        name = b[pos + 22 : pos + 22 + n]
        if level not in (1, 2, 3) or n == 0 or len(name) != n:
            raise Refused(MALFORMED)
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(MALFORMED) from None
        levels.append(level)
        pos += 22 + n
    if pos != len(b):
        raise Refused(MALFORMED)
    ok = (
        len(levels) >= 1 and levels[0] == 1
        and all(lv != 1 for lv in levels[1:])
        and (len(levels) < 2 or levels[1] == 2)
        and all(lv == 3 for lv in levels[2:])
        and len(levels) - 2 <= 64
    )
    if not ok:
        raise Refused(MALFORMED)
    return b


def token_parse(text):
    text = text.strip(WHITESPACE)
    if not text.startswith("zopp_"):
        raise Refused(MALFORMED)
    raw = b64url_decode_strict(text[5:])
    if len(raw) < 1:
        raise Refused(MALFORMED)
    if raw[0] != 2:
        raise Refused(UNSUPPORTED_FORMAT)
    if len(raw) < 81:
        raise Refused(MALFORMED)
    return raw[1:17], raw[17:49], raw[49:81], token_binding(raw[81:])


# ---------------------------------------------------------------- operations (§11.1)


def hx(d, k):
    v = d[k]
    return None if v is None else bytes.fromhex(v)


def op_name_digest(i):
    nk = name_key(hx(i, "first_epoch_key"))
    return {"name_key": nk, "name_digest": hmac.new(nk, i["name"].encode(), hashlib.sha256).digest()}


def op_envelope_seal(i):
    sk = seal_key(hx(i, "environment_key"))
    aad = envelope_aad(hx(i, "environment_id"), hx(i, "name_digest"), i["version"], i["key_epoch"])
    payload = encode_payload(i["kind"], i["name"].encode(), hx(i, "value"), hx(i, "metadata"))
    nonce = hx(i, "nonce")
    env = b"\x01\x01" + nonce + aead_seal(sk, nonce, payload, aad)
    if open_envelope(sk, aad, env)[1] != i["name"]:
        raise AssertionError("sealed envelope does not open to its name")
    return {"seal_key": sk, "aad": aad, "payload": payload, "envelope": env}


def op_envelope_open(i):
    aad = envelope_aad(hx(i, "environment_id"), hx(i, "name_digest"), i["version"], i["key_epoch"])
    kind, name, value, metadata = open_envelope(seal_key(hx(i, "environment_key")), aad, hx(i, "envelope"))
    return {"kind": kind, "name": name, "value": value, "metadata": metadata}


def op_wrap_recipient(i):
    ctx = key_context(i["scope_kind"], hx(i, "scope_id"), i["epoch"])
    aad = recipient_aad(ctx, hx(i, "recipient_id"))
    wrapped, eph, shared, kek = wrap_recipient(
        hx(i, "scope_key"), aad, hx(i, "recipient_public"), hx(i, "ephemeral_secret"), hx(i, "nonce")
    )
    if x25519_public(hx(i, "recipient_secret")) != hx(i, "recipient_public"):
        raise AssertionError("recipient_public is not the public half of recipient_secret")
    if unwrap_recipient(wrapped, aad, hx(i, "recipient_secret")) != hx(i, "scope_key"):
        raise AssertionError("the wrap does not unwrap to scope_key")
    return {"ephemeral_public": eph, "shared_secret": shared, "kek": kek, "aad": aad, "wrapped": wrapped}


def op_wrap_recipient_open(i):
    ctx = key_context(i["scope_kind"], hx(i, "scope_id"), i["epoch"])
    aad = recipient_aad(ctx, hx(i, "recipient_id"))
    return {"scope_key": unwrap_recipient(hx(i, "wrapped"), aad, hx(i, "recipient_secret"))}


def _child_ctxs(i):
    return (
        key_context(i["child_kind"], hx(i, "child_id"), i["child_epoch"]),
        key_context(i["parent_kind"], hx(i, "parent_id"), i["parent_epoch"]),
    )


def op_wrap_child(i):
    c, p = _child_ctxs(i)
    aad = child_aad(c, p)
    kek = child_kek(hx(i, "parent_key"))
    nonce = hx(i, "nonce")
    wrapped = b"\x01\x01" + nonce + aead_seal(kek, nonce, hx(i, "child_key"), aad)
    return {"kek": kek, "aad": aad, "wrapped": wrapped}


def op_wrap_child_open(i):
    c, p = _child_ctxs(i)
    return {"child_key": unwrap_child(hx(i, "wrapped"), hx(i, "parent_key"), child_aad(c, p))}


def op_fingerprint(i):
    h = sha256(b"zopp/v1/fingerprint" + hx(i, "verifying_key"))[:10].hex()
    return {"fingerprint": "-".join(h[k : k + 4] for k in range(0, 20, 4))}


def check_seed(seed, key, msg, sig):
    if seed is not None and (ed25519_public(seed) != key or ed25519_sign(seed, msg) != sig):
        raise AssertionError("the seed does not reproduce the key and signature")


def op_request_verify(i):
    body_hash = sha256(hx(i, "body"))
    msg = request_message(
        hx(i, "server_id"), i["method"], i["timestamp_ms"], hx(i, "nonce"), body_hash
    )
    ed25519_verify(hx(i, "verifying_key"), msg, hx(i, "signature"))
    check_seed(hx(i, "signing_seed"), hx(i, "verifying_key"), msg, hx(i, "signature"))
    return {"body_sha256": body_hash, "message": msg}


def op_admission_verify(i):
    signing, agreement, admitter = hx(i, "signing_key"), hx(i, "agreement_key"), hx(i, "admitter_id")
    ed25519_key(signing)
    x25519_usable(agreement)
    msg = admission_message(hx(i, "principal_id"), signing, agreement, admitter)
    signer = hx(i, "admitter_key") if admitter is not None else signing
    ed25519_verify(signer, msg, hx(i, "signature"))
    check_seed(hx(i, "admitter_seed"), signer, msg, hx(i, "signature"))
    return {"message": msg}


def op_join_verify(i):
    signing, agreement = hx(i, "signing_key"), hx(i, "agreement_key")
    ed25519_key(signing)
    x25519_usable(agreement)
    msg = join_message(signing, agreement, i["email"], hx(i, "token_hash"))
    ed25519_verify(signing, msg, hx(i, "signature"))
    check_seed(hx(i, "signing_seed"), signing, msg, hx(i, "signature"))
    return {"message": msg}


def op_version_verify(i):
    msg = version_message(
        hx(i, "environment_id"), hx(i, "name_digest"), i["version"], i["key_epoch"],
        i["deleted"], hx(i, "envelope"), hx(i, "prev_hash"), hx(i, "writer_id"),
        i["env_version"], i["created_at_ms"],
    )
    sig = hx(i, "signature")
    ed25519_verify(hx(i, "verifying_key"), msg, sig)
    check_seed(hx(i, "signing_seed"), hx(i, "verifying_key"), msg, sig)
    return {"message": msg, "hash": sha256(b"zopp/v1/version-hash" + msg + sig)}


def op_audit_chain(i):
    prev, canonical, mismatch = hx(i, "prev_hash"), [], False
    for e in i["entries"]:
        c = audit_canonical(e)
        canonical.append(c)
        prev = sha256(prev + c)
        mismatch |= prev != bytes.fromhex(e["hash"])
    if mismatch:
        raise Refused(HASH_MISMATCH)
    return {"canonical": canonical, "head": prev}


JOIN_METHODS = ("/zopp.v1.Zopp/Join", "/zopp.v1.Zopp/JoinWorkspace")


def op_audit_verify(i):
    server = {"server": True, "workspace": False}[i["chain"]]
    nxt, prev = i["start_seq"], hx(i, "prev_hash")
    actors = {a["principal_id"]: a for a in i["actors"]}
    for e in i["entries"]:
        if e["seq"] > nxt:
            raise Refused(SEQUENCE_GAP)
        if e["seq"] < nxt:
            raise Refused(OUT_OF_ORDER)
        if bytes.fromhex(e["prev_hash"]) != prev:
            raise Refused(BROKEN_LINK)
        h = sha256(prev + audit_canonical(e))
        if h != bytes.fromhex(e["hash"]):
            raise Refused(HASH_MISMATCH)
        if e["actor"] == "":
            if not server:
                raise Refused(UNSIGNED_ENTRY)
        else:
            a = actors.get(e["actor"])
            key = bytes.fromhex(a["signing_key"]) if a else b""
            try:
                ed25519_key(key)
            except Refused:
                raise Refused(UNKNOWN_ACTOR) from None
            nonce, rh, sig = (bytes.fromhex(e[k]) for k in ("nonce", "request_hash", "signature"))
            if e["method"] in JOIN_METHODS:
                agreement = bytes.fromhex(a["agreement_key"])
                if len(rh) != 32 or len(agreement) != 32:
                    raise Refused(BAD_SIGNATURE)
                msg = join_message(key, agreement, a["email"], rh)
            else:
                if len(nonce) != 16 or len(rh) != 32:
                    raise Refused(BAD_SIGNATURE)
                msg = request_message(
                    hx(i, "server_id"), e["method"], e["request_timestamp_ms"], nonce, rh
                )
            ed25519_verify(key, msg, sig)
        prev, nxt = h, e["seq"] + 1
    return {"head_seq": nxt - 1, "head": prev}


def op_keyfile_seal(i):
    m, t, p = i["m_cost_kib"], i["t_cost"], i["p_cost"]
    kdf_bounds(m, t, p)
    salt, nonce, passphrase = hx(i, "salt"), hx(i, "nonce"), hx(i, "passphrase")
    kek = argon2id(passphrase, salt, m, t, p)
    header = b"\x01\x03" + u32(m) + u32(t) + u32(p) + salt + nonce
    keys = hx(i, "signing_seed") + hx(i, "agreement_secret")
    enc = header + aead_seal(kek, nonce, keys, b"zopp/v1/keyfile" + header)
    if b"".join(keyfile_decode(enc, passphrase)) != keys:
        raise AssertionError("the sealed file does not decode to its keys")
    return {"kek": kek, "encoded": enc}


def op_keyfile_decode(i):
    seed, secret = keyfile_decode(hx(i, "encoded"), hx(i, "passphrase"))
    return {
        "signing_seed": seed,
        "agreement_secret": secret,
        "verifying_key": ed25519_public(seed),
        "agreement_public": x25519_public(secret),
    }


def op_token_parse(i):
    principal, seed, share, binding = token_parse(i["token"])
    secret = bytes(a ^ b for a, b in zip(share, hx(i, "server_share")))
    return {
        "principal_id": principal,
        "signing_seed": seed,
        "verifying_key": ed25519_public(seed),
        "token_share": share,
        "binding": binding,
        "agreement_secret": secret,
        "agreement_public": x25519_public(secret),
    }


def op_key_commitment(i):
    ctx = key_context(i["kind"], hx(i, "id"), i["epoch"])
    return {"commitment": hmac.new(hx(i, "key"), b"zopp/v1/key-commitment" + ctx, hashlib.sha256).digest()}


# §13.2: label -> the claim's layout after workspace_id and signer_id.
STATEMENT_CLAIMS = {
    b"zopp/v1/key-scope": ("ctx", "gen", "hash"),
    b"zopp/v1/key-grant": ("ctx", "gen", "role", "id", "hash"),
    b"zopp/v1/key-child": ("ctx", "gen", "ctx", "gen", "hash"),
    b"zopp/v1/key-invite": ("ctx", "gen", "role", "id", "hash"),
}
FIELD_LEN = {"ctx": 21, "gen": 4, "role": 1, "id": 16, "hash": 32}


def decode_statement(b):
    """§13.2: the label decides the layout and length; then every field's own rules."""
    label = next((lab for lab in STATEMENT_CLAIMS if b.startswith(lab)), None)
    if label is None:
        raise Refused(UNSUPPORTED_FORMAT)
    layout = STATEMENT_CLAIMS[label]
    if len(b) != len(label) + 32 + sum(FIELD_LEN[f] for f in layout):
        raise Refused(MALFORMED)
    workspace, signer = b[len(label) : len(label) + 16], b[len(label) + 16 : len(label) + 32]
    pos, ctx = len(label) + 32, None
    for f in layout:
        field = b[pos : pos + FIELD_LEN[f]]
        pos += FIELD_LEN[f]
        if f == "ctx":
            kind, epoch = field[0], int.from_bytes(field[17:21], "big")
            if kind not in (1, 2, 3) or epoch == 0 or (kind != 3 and epoch != 1):
                raise Refused(MALFORMED)
            ctx = (kind, epoch)
        elif f == "gen":
            gen = int.from_bytes(field, "big")
            if gen == 0 or (ctx[0] == 3 and gen != ctx[1]):
                raise Refused(MALFORMED)
        elif f == "role" and field[0] not in (1, 2, 3):
            raise Refused(MALFORMED)
    if label == b"zopp/v1/key-invite" and b[len(label) + 32] != 1:
        raise Refused(MALFORMED)  # an invite names a workspace context
    return workspace, signer


def op_key_statement_verify(i):
    statement, sig = hx(i, "statement"), hx(i, "signature")
    workspace, signer = decode_statement(statement)
    if len(sig) != 64:
        raise Refused(MALFORMED)
    ed25519_verify(hx(i, "signer_key"), statement, sig)
    check_seed(hx(i, "signer_seed"), hx(i, "signer_key"), statement, sig)
    return {"workspace_id": workspace, "signer_id": signer}


OPERATIONS = {
    "key.commitment": op_key_commitment,
    "key-statement.verify": op_key_statement_verify,
    "name.digest": op_name_digest,
    "envelope.seal": op_envelope_seal,
    "envelope.open": op_envelope_open,
    "wrap.recipient": op_wrap_recipient,
    "wrap.recipient.open": op_wrap_recipient_open,
    "wrap.child": op_wrap_child,
    "wrap.child.open": op_wrap_child_open,
    "fingerprint": op_fingerprint,
    "request.verify": op_request_verify,
    "admission.verify": op_admission_verify,
    "join.verify": op_join_verify,
    "version.verify": op_version_verify,
    "audit.chain": op_audit_chain,
    "audit.verify": op_audit_verify,
    "keyfile.seal": op_keyfile_seal,
    "keyfile.decode": op_keyfile_decode,
    "token.parse": op_token_parse,
}


def as_json(v):
    """An output value in the vectors' JSON types: bytes as hex, lists element-wise."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [as_json(x) for x in v]
    return v


def check(vector):
    """None if the vector checks out, else what disagreed."""
    try:
        got = OPERATIONS[vector["operation"]](vector["inputs"])
        outcome = OK
    except Refused as e:
        got, outcome = None, e.args[0]
    if outcome != vector["expected"]:
        return f"outcome {outcome}, expected {vector['expected']}"
    if outcome == OK:
        want = vector["output"]
        for k, v in want.items():
            if k not in got:
                return f"the operation produces no `{k}`"
            if as_json(got[k]) != v:
                return f"`{k}` is {as_json(got[k])}, the vector has {v}"
    return None


def self_test():
    """Known-answer tests of the primitives, so a failure points at the right layer."""
    # RFC 7748 §6.1
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert x25519(alice, bob_pub).hex() == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    # RFC 8032 §7.1 test 1
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert ed25519_public(seed).hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    sig = ed25519_sign(seed, b"")
    assert sig.hex().startswith("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155")
    ed25519_verify(ed25519_public(seed), b"", sig)
    # draft-irtf-cfrg-xchacha-03 §A.3.1
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    pt = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
        b"future, sunscreen would be it."
    )
    sealed = aead_seal(key, nonce, pt, aad)
    assert sealed[-16:].hex() == "c0875924c1c7987947deafd8780acf49", sealed[-16:].hex()
    assert aead_open(key, nonce, sealed, aad) == pt
    # RFC 9106 §5.3 (Argon2id, with secret and associated data zero-length variant not given
    # there; the vectors' own KEKs check the rest).


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    directory = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "vectors")
    self_test()
    failures, count = [], 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            vector = json.load(f)
        count += 1
        try:
            problem = check(vector)
        except Exception as e:  # a crash on a vector is a failure, not a stop
            problem = f"{type(e).__name__}: {e}"
        if problem:
            failures.append(f"{name}: {problem}")
    for f in failures:
        print(f, file=sys.stderr)
    print(f"check_vectors.py: {count - len(failures)} of {count} vectors agree with FORMAT.md")
    sys.exit(1 if failures or count == 0 else 0)


if __name__ == "__main__":
    main()
