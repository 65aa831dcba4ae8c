//! Export blobs and recovery rows (docs/formats.md, "Export blob v2",
//! "Export blob v1", "Recovery rows").
//!
//! Export blob: `base64(JSON{"v":2,"k":..,"n":..,"d":..})` where `k` wraps a
//! one-time AES key with RSA-OAEP-SHA256 and `d` is the inner JSON
//! `{"keys":{"ID":"<b64>"},"active":"ID"}` sealed with AES-256-GCM (full tag,
//! AAD `kong-keyring-export-v2`). Kong Enterprise's v1 blob (no `v`, PKCS#1 v1.5,
//! GCM keystream without tag) is read, and written only in v1 mode.
//!
//! Recovery row: `$ker$2$` + base64(OAEP(pub, key)); EE's `$ker$1$` uses PKCS#1 v1.5.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{gcm_keystream, open, raw_cipher, raw_gcm, seal};
use crate::error::{Error, Result};
use crate::format::{KeyBytes, KeyId, NONCE_LEN, TAG_LEN};
use crate::keyring::WriteFormat;
use crate::rng::{self, WorkerRng};
use crate::wrap::{PrivateKey, PublicKey};

const EXPORT_AAD: &[u8] = b"kong-keyring-export-v2";
const RECOVERY_V1: &[u8] = b"$ker$1$";
const RECOVERY_V2: &[u8] = b"$ker$2$";

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    k: String,
    n: String,
    d: String,
}

#[derive(Serialize)]
struct InnerOut<'a> {
    keys: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<&'a str>,
}

#[derive(Deserialize)]
struct InnerIn {
    keys: UniqueKeys,
    #[serde(default)]
    active: Option<String>,
}

/// The `keys` object of an export, in order. serde_json would keep the last
/// of an id given twice, silently: one id with two different keys is refused
/// (the same key twice is harmless).
struct UniqueKeys(Vec<(String, Zeroizing<String>)>);

const LISTED_TWICE: &str = "lists one key id twice with different material";

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of key ids")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<UniqueKeys, A::Error> {
                let mut keys: Vec<(String, Zeroizing<String>)> = Vec::new();
                while let Some((id, key)) = map.next_entry::<String, Zeroizing<String>>()? {
                    match keys.iter().find(|(seen, _)| *seen == id) {
                        Some((_, first)) if *first != key => return Err(serde::de::Error::custom(LISTED_TWICE)),
                        Some(_) => {}
                        None => keys.push((id, key)),
                    }
                }
                Ok(UniqueKeys(keys))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Keys read back from a blob.
#[derive(Debug)]
pub struct Imported {
    /// Every key in the blob.
    pub keys: Vec<(KeyId, KeyBytes)>,
    /// The id the blob marks active, if any.
    pub active: Option<KeyId>,
}

fn b64(what: &'static str, text: &str) -> Result<Zeroizing<Vec<u8>>> {
    STANDARD.decode(text).map(Zeroizing::new).map_err(|_| Error::Base64(what))
}

fn pkcs1v15_failed() -> Error {
    Error::Rsa("RSA PKCS#1 v1.5 unwrap failed (wrong private key?)".into())
}

/// Builds an export blob of `keys` for `public` (v2, or EE's v1 in v1 mode).
pub fn export(keys: &[(KeyId, KeyBytes)], active: Option<&KeyId>, public: &PublicKey, format: WriteFormat) -> Result<String> {
    let encoded: Vec<(&KeyId, Zeroizing<String>)> = keys.iter().map(|(id, k)| (id, k.to_base64())).collect();
    let inner = InnerOut {
        keys: encoded.iter().map(|(id, k)| (id.as_str(), k.as_str())).collect(),
        active: active.map(KeyId::as_str),
    };
    let mut data = Zeroizing::new(serde_json::to_vec(&inner).map_err(|e| Error::Blob("export blob", e.to_string()))?);
    let one_time = KeyBytes::generate(&mut WorkerRng);
    let mut nonce = [0u8; NONCE_LEN];
    rng::fill(&mut nonce);
    let envelope = match format {
        WriteFormat::V2 => {
            let tag = seal(&raw_gcm(&one_time)?, &nonce, EXPORT_AAD, &mut data)?;
            data.extend_from_slice(&tag);
            Envelope { v: Some(2), k: STANDARD.encode(public.wrap(one_time.as_bytes())?), n: STANDARD.encode(nonce), d: STANDARD.encode(&*data) }
        }
        WriteFormat::V1 => {
            gcm_keystream(&raw_cipher(&one_time)?, &nonce, &mut data);
            Envelope { v: None, k: STANDARD.encode(public.wrap_pkcs1v15(one_time.as_bytes())?), n: STANDARD.encode(nonce), d: STANDARD.encode(&*data) }
        }
    };
    let json = serde_json::to_vec(&envelope).map_err(|e| Error::Blob("export blob", e.to_string()))?;
    Ok(STANDARD.encode(json))
}

/// Opens an export blob (v2, or Kong Enterprise's v1) with `private`.
pub fn import(blob: &[u8], private: &PrivateKey) -> Result<Imported> {
    let compact: Vec<u8> = blob.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let json = STANDARD.decode(&compact).map_err(|_| Error::Blob("export blob", "not base64".into()))?;
    let envelope: Envelope =
        serde_json::from_slice(&json).map_err(|_| Error::Blob("export blob", "not a keyring export".into()))?;
    let nonce: [u8; NONCE_LEN] = b64("export blob nonce", &envelope.n)?
        .as_slice()
        .try_into()
        .map_err(|_| Error::Blob("export blob", "nonce must be 12 bytes".into()))?;
    let wrapped = b64("export blob key", &envelope.k)?;
    let mut data = b64("export blob data", &envelope.d)?;
    match envelope.v {
        Some(2) => {
            let one_time = KeyBytes::from_slice(&private.unwrap(&wrapped)?)?;
            if data.len() < TAG_LEN {
                return Err(Error::Blob("export blob", "truncated data".into()));
            }
            let split = data.len() - TAG_LEN;
            let tag: [u8; TAG_LEN] = data[split..].try_into().map_err(|_| Error::Authentication)?;
            data.truncate(split);
            open(&raw_gcm(&one_time)?, &nonce, EXPORT_AAD, &mut data, &tag)?;
        }
        None | Some(1) => {
            // Implicit rejection: a wrong private key yields random bytes, which
            // the JSON check below refuses; a wrong length already tells.
            let one_time = KeyBytes::from_slice(&private.unwrap_pkcs1v15(&wrapped)?).map_err(|_| pkcs1v15_failed())?;
            gcm_keystream(&raw_cipher(&one_time)?, &nonce, &mut data);
        }
        Some(v) => return Err(Error::Blob("export blob", format!("unknown version {v}"))),
    }
    let inner: InnerIn = serde_json::from_slice(&data).map_err(|e| {
        let why = if e.to_string().starts_with(LISTED_TWICE) {
            LISTED_TWICE
        } else {
            "contents do not decode (wrong private key?)"
        };
        Error::Blob("export blob", why.into())
    })?;
    let mut keys = Vec::with_capacity(inner.keys.0.len());
    for (id, key) in &inner.keys.0 {
        keys.push((KeyId::new(id.as_bytes())?, KeyBytes::from_base64(key.as_bytes())?));
    }
    let active = inner.active.as_deref().map(|a| KeyId::new(a.as_bytes())).transpose()?;
    if let Some(a) = &active {
        if !keys.iter().any(|(id, _)| id == a) {
            return Err(Error::Blob("export blob", format!("active key '{a}' is not in the blob")));
        }
    }
    Ok(Imported { keys, active })
}

/// A `keyring_keys.key_encrypted` value backing up `key` for `public`.
pub fn recovery_row(key: &KeyBytes, public: &PublicKey, format: WriteFormat) -> Result<String> {
    let (prefix, wrapped) = match format {
        WriteFormat::V2 => (RECOVERY_V2, public.wrap(key.as_bytes())?),
        WriteFormat::V1 => (RECOVERY_V1, public.wrap_pkcs1v15(key.as_bytes())?),
    };
    let mut row = String::from_utf8_lossy(prefix).into_owned();
    row.push_str(&STANDARD.encode(wrapped));
    Ok(row)
}

/// Opens a `$ker$2$` or `$ker$1$` recovery value with `private`.
pub fn open_recovery_row(row: &[u8], private: &PrivateKey) -> Result<KeyBytes> {
    let decode = |body: &[u8]| STANDARD.decode(body.trim_ascii()).map_err(|_| Error::Base64("recovery row"));
    let key = if let Some(body) = row.strip_prefix(RECOVERY_V2) {
        private.unwrap(&decode(body)?)?
    } else if let Some(body) = row.strip_prefix(RECOVERY_V1) {
        // Implicit rejection: a wrong private key gives random bytes, not an
        // error; callers that know the key's check value must compare it.
        let key = private.unwrap_pkcs1v15(&decode(body)?)?;
        return KeyBytes::from_slice(&key).map_err(|_| pkcs1v15_failed());
    } else {
        return Err(Error::Blob("recovery row", "expected a $ker$2$ or $ker$1$ value".into()));
    };
    KeyBytes::from_slice(&key)
}
