//! The cipher work behind both field formats, the export blob and the key
//! check value (docs/formats.md).
//!
//! - v2 seals with AES-256-GCM under `HKDF-SHA256(key, info = "kong-keyring field v2")`
//!   (RFC 5869, no salt), so a v2 value with its tag stripped is not a v1 value
//!   under the same key.
//! - v1 is GCM without its tag: AES-256-CTR from the counter block
//!   `nonce || 00 00 00 02`, GCM's first data block (NIST SP 800-38D §7.1).

use aes::Aes256;
use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use aes_gcm::{Aes256Gcm, KeyInit};
use ctr::cipher::{InnerIvInit, StreamCipher, StreamCipherCoreWrapper};
use ctr::CtrCore;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::{KeyBytes, KEY_LEN, NONCE_LEN, TAG_LEN};

const V2_SUBKEY_INFO: &[u8] = b"kong-keyring field v2";
const KCV_LABEL: &[u8] = b"kong-keyring-kcv";

/// One key, expanded once for both formats. The AES key schedules are
/// zeroized on drop by the `aes` crate's `zeroize` feature; the keyring keeps
/// them in locked memory (`secure_mem::LockedVec`).
pub struct FieldKey {
    v2: Aes256Gcm,
    raw: Aes256,
}

impl core::fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FieldKey").finish_non_exhaustive()
    }
}

impl FieldKey {
    /// Expands `key` (HKDF subkey for v2, the raw key for v1).
    pub fn new(key: &KeyBytes) -> Result<Self> {
        let mut subkey = Zeroizing::new([0u8; KEY_LEN]);
        Hkdf::<Sha256>::new(None, key.as_bytes())
            .expand(V2_SUBKEY_INFO, subkey.as_mut())
            .map_err(|_| Error::KeyLength)?;
        Ok(FieldKey {
            v2: Aes256Gcm::new_from_slice(subkey.as_ref()).map_err(|_| Error::KeyLength)?,
            raw: raw_cipher(key)?,
        })
    }

    /// Encrypts `buf` in place under the v2 subkey and returns the tag.
    pub fn seal_v2(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        seal(&self.v2, nonce, aad, buf)
    }

    /// Verifies the tag, then decrypts `buf` in place; on failure `buf` is untouched.
    pub fn open_v2(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<()> {
        open(&self.v2, nonce, aad, buf, tag)
    }

    /// Applies the v1 keystream (encrypts and decrypts alike).
    pub fn keystream_v1(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
        gcm_keystream(&self.raw, nonce, buf);
    }
}

/// An AES-256 cipher keyed with the raw key bytes.
pub fn raw_cipher(key: &KeyBytes) -> Result<Aes256> {
    Aes256::new_from_slice(key.as_bytes()).map_err(|_| Error::KeyLength)
}

/// An AES-256-GCM instance keyed with the raw key bytes (export blob v2).
pub fn raw_gcm(key: &KeyBytes) -> Result<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key.as_bytes()).map_err(|_| Error::KeyLength)
}

/// GCM's keystream without the tag: CTR from `nonce || 00000002`. The CTR
/// state borrows the key schedule: no copy of it is made on the stack.
pub fn gcm_keystream(cipher: &Aes256, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..NONCE_LEN].copy_from_slice(nonce);
    iv[15] = 2;
    let core = CtrCore::<&Aes256, ctr::flavors::Ctr32BE>::inner_iv_init(cipher, &iv.into());
    let mut ctr = StreamCipherCoreWrapper::from_core(core);
    ctr.apply_keystream(buf);
}

/// AES-256-GCM seal in place, detached tag.
pub fn seal(gcm: &Aes256Gcm, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
    let tag = gcm
        .encrypt_inout_detached(&Nonce::<Aes256Gcm>::from(*nonce), aad, buf.into())
        .map_err(|_| Error::TooLarge(buf.len(), crate::format::MAX_PLAINTEXT))?;
    Ok(tag.into())
}

/// AES-256-GCM open in place; the tag is checked in constant time first.
pub fn open(gcm: &Aes256Gcm, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<()> {
    gcm.decrypt_inout_detached(&Nonce::<Aes256Gcm>::from(*nonce), aad, buf.into(), &Tag::<Aes256Gcm>::from(*tag))
        .map_err(|_| Error::Authentication)
}

/// Key check value: first 32 hex chars of `HMAC-SHA256(key, "kong-keyring-kcv")`
/// (docs/formats.md, "Key check value"). Lets nodes compare keys without
/// revealing them.
pub fn check_value(key: &KeyBytes) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(KCV_LABEL);
    hex::encode(&mac.finalize().into_bytes()[..16])
}
