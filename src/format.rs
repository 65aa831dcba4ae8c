//! Field ciphertext formats, key ids and key material (docs/formats.md).
//!
//! - v1 (Kong Enterprise, read and import only unless configured):
//!   `$ke$1$-<id>-<nonce hex, 24>-<ciphertext hex>`
//! - v2 (ours, authenticated): `$ke$2$-<id>-<base64url(nonce || ciphertext || tag)>`
//!
//! This module only parses and renders; the cipher work is in `aead.rs`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand_core::Rng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// Every encrypted value starts with this marker.
pub const MARKER: &[u8] = b"$ke$";
/// Header prefix of a v1 value.
pub const V1_PREFIX: &[u8] = b"$ke$1$-";
/// Header prefix of a v2 value.
pub const V2_PREFIX: &[u8] = b"$ke$2$-";
/// AES-GCM nonce length in both formats.
pub const NONCE_LEN: usize = 12;
/// GCM tag length in v2 (full 128 bits).
pub const TAG_LEN: usize = 16;
/// AES-256 key length.
pub const KEY_LEN: usize = 32;
/// Longest key id accepted from elsewhere (docs/formats.md, "Key ids").
pub const MAX_ID_LEN: usize = 255;
/// Largest plaintext accepted, far below GCM's 2^36 - 32 byte limit
/// (NIST SP 800-38D §5.2.1.1); a field this large is a mistake.
pub const MAX_PLAINTEXT: usize = 64 << 20;

const GENERATED_ID_LEN: usize = 8;
const ID_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A validated key id: 1–255 printable ASCII chars without `-`, `$` or
/// whitespace (docs/formats.md, "Key ids"). A `-` would end the id early
/// inside a value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId(String);

impl KeyId {
    /// Validates `raw` as a key id.
    pub fn new(raw: &[u8]) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::InvalidKeyId("empty"));
        }
        if raw.len() > MAX_ID_LEN {
            return Err(Error::InvalidKeyId("longer than 255 chars"));
        }
        for &b in raw {
            match b {
                b'-' => return Err(Error::InvalidKeyId("'-' is not allowed")),
                b'$' => return Err(Error::InvalidKeyId("'$' is not allowed")),
                0x21..=0x7e => {}
                _ => return Err(Error::InvalidKeyId("only printable ASCII without spaces")),
            }
        }
        // Every byte is ASCII, so this cannot fail.
        String::from_utf8(raw.to_vec())
            .map(KeyId)
            .map_err(|_| Error::InvalidKeyId("only printable ASCII without spaces"))
    }

    /// A fresh id of 8 random chars of `[A-Za-z0-9]`.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = String::with_capacity(GENERATED_ID_LEN);
        while id.len() < GENERATED_ID_LEN {
            // Rejection sampling: 248 = 4 * 62 keeps every char equally likely.
            let b = (rng.next_u32() & 0xff) as u8;
            if b < 248 {
                id.push(char::from(ID_ALPHABET[usize::from(b % 62)]));
            }
        }
        KeyId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl core::fmt::Display for KeyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 32 bytes of AES-256 key material, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyBytes([u8; KEY_LEN]);

impl KeyBytes {
    /// Wraps exactly 32 bytes.
    pub fn from_slice(raw: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = raw.try_into().map_err(|_| Error::KeyLength)?;
        Ok(KeyBytes(arr))
    }

    /// Decodes standard base64 of 32 bytes. The decoding buffer is a zeroized
    /// stack array, never the heap.
    pub fn from_base64(text: &[u8]) -> Result<Self> {
        let mut key = KeyBytes([0; KEY_LEN]);
        key.set_from_base64(text)?;
        Ok(key)
    }

    /// Decodes standard base64 of 32 bytes into `self` (a slot in locked memory, say).
    pub fn set_from_base64(&mut self, text: &[u8]) -> Result<()> {
        // 64 chars decode to at most 48 bytes; longer text is no key, only
        // whether it is base64 at all decides the error.
        if text.len() > 64 {
            return Err(match STANDARD.decode(text) {
                Ok(mut raw) => {
                    raw.zeroize();
                    Error::KeyLength
                }
                Err(_) => Error::Base64("key"),
            });
        }
        let mut raw = Zeroizing::new([0u8; 48]);
        let n = STANDARD.decode_slice(text, &mut raw[..]).map_err(|_| Error::Base64("key"))?;
        if n != KEY_LEN {
            return Err(Error::KeyLength);
        }
        self.0.copy_from_slice(&raw[..KEY_LEN]);
        Ok(())
    }

    /// 32 zero bytes, to be filled in place.
    pub(crate) fn zeroed() -> Self {
        KeyBytes([0; KEY_LEN])
    }

    /// The bytes, to fill in place.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; KEY_LEN] {
        &mut self.0
    }

    /// 32 fresh random bytes.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut k = KeyBytes([0; KEY_LEN]);
        rng.fill_bytes(&mut k.0);
        k
    }

    /// Standard base64, in an inline buffer that is zeroized on drop.
    pub fn to_base64(&self) -> KeyBase64 {
        let mut text = KeyBase64([0; KEY_BASE64_LEN]);
        if STANDARD.encode_slice(self.0, &mut text.0) != Ok(KEY_BASE64_LEN) {
            unreachable!("32 bytes are 44 base64 chars");
        }
        text
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Compares without an early exit, so timing does not reveal where keys differ.
    pub fn same_as(&self, other: &KeyBytes) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

const KEY_BASE64_LEN: usize = 44;

/// The standard base64 of a key, held inline (never on the heap) and zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyBase64([u8; KEY_BASE64_LEN]);

impl KeyBase64 {
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl core::fmt::Debug for KeyBase64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyBase64").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyBytes").finish_non_exhaustive()
    }
}

/// A field value taken apart, borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No `$ke$` marker: plaintext.
    Plain,
    /// Legacy value; `ciphertext` is still hex.
    V1 { id: &'a [u8], nonce: [u8; NONCE_LEN], ciphertext_hex: &'a [u8] },
    /// Authenticated value; `header` is `$ke$2$-<id>-`, part of the AAD.
    V2 { header: &'a [u8], id: &'a [u8], payload: &'a [u8] },
}

/// Takes a field value apart. Anything that starts with `$ke$` but is not
/// well-formed v1 or v2 is an error, never plaintext (docs/formats.md,
/// "Reading values").
pub fn parse(value: &[u8]) -> Result<Parsed<'_>> {
    if !value.starts_with(MARKER) {
        return Ok(Parsed::Plain);
    }
    if let Some(rest) = value.strip_prefix(V2_PREFIX) {
        // The id ends at the first '-'; base64url may contain '-' later on.
        let dash = rest.iter().position(|&b| b == b'-').ok_or(Error::Malformed("missing key id"))?;
        let id = &rest[..dash];
        // The id is validated only when no cached key matches it (hot path).
        if id.is_empty() {
            return Err(Error::Malformed("missing key id"));
        }
        let payload = &rest[dash + 1..];
        if payload.len() < b64_len(NONCE_LEN + TAG_LEN) {
            return Err(Error::Malformed("truncated v2 value"));
        }
        let header = &value[..V2_PREFIX.len() + dash + 1];
        return Ok(Parsed::V2 { header, id, payload });
    }
    if let Some(rest) = value.strip_prefix(V1_PREFIX) {
        let mut parts = rest.splitn(3, |&b| b == b'-');
        let id = parts.next().unwrap_or_default();
        let nonce_hex = parts.next().ok_or(Error::Malformed("truncated v1 value"))?;
        let ciphertext_hex = parts.next().ok_or(Error::Malformed("truncated v1 value"))?;
        KeyId::new(id).map_err(|_| Error::Malformed("bad key id"))?;
        let mut nonce = [0u8; NONCE_LEN];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|_| Error::Malformed("bad v1 nonce"))?;
        if ciphertext_hex.len() % 2 != 0 {
            return Err(Error::Malformed("odd-length hex in v1 value"));
        }
        return Ok(Parsed::V1 { id, nonce, ciphertext_hex });
    }
    Err(Error::Malformed("unknown format version"))
}

/// Length of unpadded base64 of `n` bytes.
pub const fn b64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Length of a v2 value for `id` and `plaintext_len` bytes.
pub fn v2_len(id: &KeyId, plaintext_len: usize) -> usize {
    V2_PREFIX.len() + id.as_bytes().len() + 1 + b64_len(NONCE_LEN + plaintext_len + TAG_LEN)
}

/// Length of a v1 value for `id` and `plaintext_len` bytes.
pub fn v1_len(id: &KeyId, plaintext_len: usize) -> usize {
    V1_PREFIX.len() + id.as_bytes().len() + 1 + 2 * NONCE_LEN + 1 + 2 * plaintext_len
}

/// Writes `$ke$2$-<id>-` into `out` and returns its length.
pub fn write_v2_header(id: &KeyId, out: &mut [u8]) -> usize {
    let mut n = 0;
    for part in [V2_PREFIX, id.as_bytes(), b"-"] {
        out[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    n
}

/// Writes the base64url payload after the header; `out` is exactly sized by `v2_len`.
pub fn write_v2_payload(raw: &[u8], out: &mut [u8]) -> Result<usize> {
    let need = b64_len(raw.len());
    if out.len() < need {
        return Err(Error::Malformed("output buffer too small"));
    }
    Ok(base64_simd::URL_SAFE_NO_PAD.encode(raw, base64_simd::Out::from_slice(&mut out[..need])).len())
}

/// Decodes a v2 payload into `out` (at least `payload.len() * 3 / 4` bytes).
pub fn read_v2_payload(payload: &[u8], out: &mut [u8]) -> Result<usize> {
    let n = base64_simd::URL_SAFE_NO_PAD
        .decode(payload, base64_simd::Out::from_slice(out))
        .map_err(|_| Error::Malformed("bad base64url in v2 value"))?
        .len();
    if n < NONCE_LEN + TAG_LEN {
        return Err(Error::Malformed("truncated v2 value"));
    }
    Ok(n)
}

/// Writes a full v1 value; `ciphertext` is the keystream-encrypted plaintext.
pub fn write_v1(id: &KeyId, nonce: &[u8; NONCE_LEN], ciphertext: &[u8], out: &mut [u8]) -> usize {
    let mut n = 0;
    for part in [V1_PREFIX, id.as_bytes(), b"-"] {
        out[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    // Sizes come from v1_len, so these slices always fit.
    let _ = hex::encode_to_slice(nonce, &mut out[n..n + 2 * NONCE_LEN]);
    n += 2 * NONCE_LEN;
    out[n] = b'-';
    n += 1;
    let _ = hex::encode_to_slice(ciphertext, &mut out[n..n + 2 * ciphertext.len()]);
    n + 2 * ciphertext.len()
}

/// Decodes v1 ciphertext hex (either case) into `out`.
pub fn read_v1_ciphertext(hex_text: &[u8], out: &mut [u8]) -> Result<()> {
    hex::decode_to_slice(hex_text, out).map_err(|_| Error::Malformed("bad hex in v1 value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_rules_follow_spec() {
        assert!(KeyId::new(b"AbC123xy").is_ok());
        assert!(KeyId::new(&[b'a'; 255]).is_ok());
        assert_eq!(KeyId::new(b""), Err(Error::InvalidKeyId("empty")));
        assert!(KeyId::new(&[b'a'; 256]).is_err());
        for bad in [&b"ab-cd"[..], b"ab$cd", b"ab cd", b"ab\tcd", b"ab\xc3\xa9"] {
            assert!(KeyId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_values_are_not_parsed() {
        assert_eq!(parse(b"hello").unwrap(), Parsed::Plain);
        assert_eq!(parse(b"").unwrap(), Parsed::Plain);
        assert_eq!(parse(b"$k").unwrap(), Parsed::Plain);
    }

    #[test]
    fn unknown_marker_versions_are_errors() {
        for bad in [&b"$ke$"[..], b"$ke$3$-id-xx", b"$ke$2", b"$ke$1$", b"$ke$unavailable$00"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn v2_id_ends_at_first_dash() {
        let v = b"$ke$2$-abc-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-x";
        match parse(v).unwrap() {
            Parsed::V2 { header, id, payload } => {
                assert_eq!(header, b"$ke$2$-abc-");
                assert_eq!(id, b"abc");
                assert!(payload.ends_with(b"-x"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_rejects_bad_and_odd_hex() {
        assert!(parse(b"$ke$1$-id-000000000000000000000000-abc").is_err());
        assert!(parse(b"$ke$1$-id-00000000000000000000000z-ab").is_err());
        assert!(parse(b"$ke$1$-id-0000000000000000000000-ab").is_err());
        assert!(parse(b"$ke$1$-id-000000000000000000000000-ABcd").is_ok());
    }

    #[test]
    fn generated_ids_are_eight_alphanumerics() {
        let mut rng = crate::rng::WorkerRng;
        for _ in 0..100 {
            let id = KeyId::generate(&mut rng);
            assert_eq!(id.as_str().len(), 8);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn key_bytes_debug_hides_material() {
        let k = KeyBytes::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "KeyBytes { .. }");
        assert_eq!(KeyBytes::from_slice(&[0u8; 31]).unwrap_err(), Error::KeyLength);
    }
}
