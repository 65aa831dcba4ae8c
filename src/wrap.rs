//! RSA keys and key wrapping (docs/formats.md, "RSA keys").
//!
//! We wrap with RSA-OAEP-SHA256 (MGF1-SHA256) and unwrap both OAEP and
//! PKCS#1 v1.5, the latter only to read Kong Enterprise artifacts. Keys are
//! accepted as PEM text or base64 of PEM, SPKI / PKCS#1 public and PKCS#8 /
//! PKCS#1 private, of at least 2048 bits. RSA comes from RustCrypto `rsa` 0.10,
//! whose private-key operations are constant time (RUSTSEC-2023-0071).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use spki::{DecodePublicKey, EncodePublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::rng::WorkerRng;
use crate::secure_mem::LockedBuf;

/// Smallest modulus accepted for any configured or supplied key.
pub const MIN_BITS: usize = 2048;

/// An RSA public key used to wrap key material.
#[derive(Debug, Clone)]
pub struct PublicKey(RsaPublicKey);

/// An RSA private key used to unwrap key material (zeroized on drop by `rsa`).
pub struct PrivateKey(RsaPrivateKey);

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PrivateKey").finish_non_exhaustive()
    }
}

fn rsa_err(what: &str) -> Error {
    Error::Rsa(what.to_string())
}

/// The PEM text itself, from PEM or from base64 of PEM.
fn pem_text(input: &[u8]) -> Result<Zeroizing<String>> {
    let trimmed = input.trim_ascii();
    let raw = if trimmed.starts_with(b"-----BEGIN ") {
        Zeroizing::new(trimmed.to_vec())
    } else {
        let compact: Zeroizing<Vec<u8>> =
            Zeroizing::new(trimmed.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect());
        Zeroizing::new(STANDARD.decode(&*compact).map_err(|_| rsa_err("not a PEM key or base64 of a PEM key"))?)
    };
    let text = String::from_utf8(raw.to_vec()).map_err(|_| rsa_err("not a PEM key or base64 of a PEM key"))?;
    let text = Zeroizing::new(text);
    if !text.trim_start().starts_with("-----BEGIN ") {
        return Err(rsa_err("not a PEM key or base64 of a PEM key"));
    }
    Ok(text)
}

fn pem_label(text: &str) -> &str {
    let rest = text.trim_start().trim_start_matches("-----BEGIN ");
    rest.split("-----").next().unwrap_or_default()
}

fn check_size(bits: usize) -> Result<()> {
    if bits < MIN_BITS {
        return Err(Error::Rsa(format!("RSA key too small ({bits} bits, at least {MIN_BITS} required)")));
    }
    Ok(())
}

impl PublicKey {
    /// Parses a public key; a private key here is an error, not a guess.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let text = pem_text(input)?;
        let key = match pem_label(&text) {
            "PUBLIC KEY" => RsaPublicKey::from_public_key_pem(&text),
            "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_pem(&text).map_err(|_| spki::Error::KeyMalformed),
            l if l.contains("PRIVATE KEY") => return Err(rsa_err("expected an RSA public key, got a private key")),
            _ => return Err(rsa_err("expected an RSA public key PEM (PUBLIC KEY or RSA PUBLIC KEY)")),
        }
        .map_err(|_| rsa_err("invalid RSA public key"))?;
        check_size(key.size() * 8)?;
        Ok(PublicKey(key))
    }

    /// Hex SHA-256 of the SubjectPublicKeyInfo DER: the `recovery_key_id`
    /// (docs/formats.md, "Recovery key id").
    pub fn fingerprint(&self) -> Result<String> {
        let der = self.0.to_public_key_der().map_err(|_| rsa_err("cannot encode RSA public key"))?;
        Ok(hex::encode(Sha256::digest(der.as_bytes())))
    }

    /// PEM (SPKI) of this key, for publishing a node's ephemeral key.
    pub fn to_pem(&self) -> Result<String> {
        self.0
            .to_public_key_pem(pkcs8::LineEnding::LF)
            .map_err(|_| rsa_err("cannot encode RSA public key"))
    }

    /// RSA-OAEP-SHA256 encryption of `secret`.
    pub fn wrap(&self, secret: &[u8]) -> Result<Vec<u8>> {
        self.0.encrypt(&mut WorkerRng, Oaep::<Sha256>::new(), secret).map_err(|_| rsa_err("RSA-OAEP wrap failed"))
    }

    /// RSA PKCS#1 v1.5 encryption, only to write artifacts Kong Enterprise reads.
    pub fn wrap_pkcs1v15(&self, secret: &[u8]) -> Result<Vec<u8>> {
        self.0.encrypt(&mut WorkerRng, Pkcs1v15Encrypt, secret).map_err(|_| rsa_err("RSA PKCS#1 v1.5 wrap failed"))
    }
}

impl PrivateKey {
    /// Parses a private key; a public key here is an error naming the mistake.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let text = pem_text(input)?;
        let key = match pem_label(&text) {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(&text).map_err(|_| rsa_err("invalid RSA private key")),
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(&text).map_err(|_| rsa_err("invalid RSA private key")),
            "ENCRYPTED PRIVATE KEY" => Err(rsa_err("encrypted private keys are not supported")),
            l if l.contains("PUBLIC KEY") => Err(rsa_err("expected an RSA private key, got a public key")),
            _ => Err(rsa_err("expected an RSA private key PEM (PRIVATE KEY or RSA PRIVATE KEY)")),
        }?;
        check_size(key.size() * 8)?;
        Ok(PrivateKey(key))
    }

    /// A fresh key pair (a node's ephemeral transport key).
    pub fn generate(bits: usize) -> Result<Self> {
        check_size(bits)?;
        RsaPrivateKey::new(&mut WorkerRng, bits).map(PrivateKey).map_err(|_| rsa_err("RSA key generation failed"))
    }

    /// Parses PKCS#8 DER (as `write_der` wrote it).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        RsaPrivateKey::from_pkcs8_der(der).map(PrivateKey).map_err(|_| rsa_err("invalid RSA private key"))
    }

    /// Appends the PKCS#8 DER of this key to `out` (the encoder's own copy is
    /// zeroized when it drops).
    pub fn write_der(&self, out: &mut LockedBuf) -> Result<()> {
        let der = self.0.to_pkcs8_der().map_err(|_| rsa_err("cannot encode RSA private key"))?;
        out.extend_from_slice(der.as_bytes())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.to_public_key())
    }

    /// RSA-OAEP-SHA256 decryption (blinded).
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.0
            .decrypt_blinded(&mut WorkerRng, Oaep::<Sha256>::new(), wrapped)
            .map(Zeroizing::new)
            .map_err(|_| rsa_err("RSA-OAEP unwrap failed (wrong private key?)"))
    }

    /// RSA PKCS#1 v1.5 decryption (blinded), for Kong Enterprise artifacts.
    pub fn unwrap_pkcs1v15(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.0
            .decrypt_blinded(&mut WorkerRng, Pkcs1v15Encrypt, wrapped)
            .map(Zeroizing::new)
            .map_err(|_| rsa_err("RSA PKCS#1 v1.5 unwrap failed (wrong private key?)"))
    }
}
