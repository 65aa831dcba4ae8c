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

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{gcm_keystream, open, raw_cipher, raw_gcm, seal};
use crate::error::{Error, Result};
use crate::format::{KeyBytes, KeyId, NONCE_LEN, TAG_LEN};
use crate::keyring::{Material, WriteFormat};
use crate::region::SLOTS;
use crate::rng::{self, WorkerRng};
use crate::secure_mem::{LockedBuf, LockedVec};
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

// The inner JSON holds every key in base64. It is written into and parsed
// from a `LockedBuf` (locked, excluded from core dumps, wiped): serde_json
// writes straight into it, and reads key text borrowed from it, so no key
// reaches the heap, not even in a buffer that grew and was freed.

#[derive(Serialize)]
struct InnerOut<'a> {
    keys: KeysOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<&'a str>,
}

/// `{"ID":"<b64>",...}` sorted by id; of an id listed twice the last wins.
struct KeysOut<'a>(&'a [(KeyId, KeyBytes)]);

impl Serialize for KeysOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let keys = self.0;
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].0.cmp(&keys[b].0));
        let last_of_each: Vec<usize> = order
            .iter()
            .enumerate()
            .filter(|(n, &i)| order.get(n + 1).is_none_or(|&next| keys[next].0 != keys[i].0))
            .map(|(_, &i)| i)
            .collect();
        let mut map = s.serialize_map(Some(last_of_each.len()))?;
        for i in last_of_each {
            let (id, key) = &keys[i];
            // The base64 text is an inline, zeroized buffer on the stack.
            map.serialize_entry(id.as_str(), key.to_base64().as_str())?;
        }
        map.end()
    }
}

const LISTED_TWICE: &str = "lists one key id twice with different material";

/// One entry of the `keys` object as read, the key decoded in place.
struct Entry {
    id: String,
    key: KeyBytes,
    /// Why the key text does not decode, if it does not.
    bad: Option<Error>,
}

#[derive(Default)]
struct InnerIn {
    entries: LockedVec<Entry>,
    active: Option<String>,
    /// A ring cannot hold more ids than this blob lists.
    too_many: bool,
}

/// The inner object: `keys` into locked entries, `active`, anything else ignored.
struct InnerSeed<'a>(&'a mut InnerIn);

impl<'de> DeserializeSeed<'de> for InnerSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InnerSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a keyring export")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let (mut keys, mut active) = (false, false);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "keys" if keys => return Err(serde::de::Error::duplicate_field("keys")),
                "keys" => {
                    keys = true;
                    map.next_value_seed(KeysSeed(&mut *self.0))?;
                }
                "active" if active => return Err(serde::de::Error::duplicate_field("active")),
                "active" => {
                    active = true;
                    self.0.active = map.next_value::<Option<String>>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !keys {
            return Err(serde::de::Error::missing_field("keys"));
        }
        Ok(())
    }
}

/// The `keys` object, in order. serde_json would keep the last of an id given
/// twice, silently: one id with two different keys is refused (the same key
/// twice is harmless).
struct KeysSeed<'a>(&'a mut InnerIn);

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of key ids")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let inner = self.0;
        if inner.entries.capacity() == 0 {
            inner.entries = LockedVec::with_capacity(SLOTS).map_err(serde::de::Error::custom)?;
        }
        while let Some(id) = map.next_key::<String>()? {
            if inner.entries.push(Entry { id, key: KeyBytes::zeroed(), bad: None }).is_err() {
                inner.too_many = true;
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let entries = &mut inner.entries;
            let n = entries.len() - 1;
            if let Some(last) = entries.last_mut() {
                map.next_value_seed(KeyText(last))?;
            }
            let (earlier, last) = entries.split_at(n);
            match earlier.iter().find(|e| e.id == last[0].id) {
                Some(first) if first.bad.is_none() && last[0].bad.is_none() => {
                    if !first.key.same_as(&last[0].key) {
                        return Err(serde::de::Error::custom(LISTED_TWICE));
                    }
                    entries.truncate(n);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One key's base64 text, decoded straight into its locked entry.
struct KeyText<'a>(&'a mut Entry);

impl<'de> DeserializeSeed<'de> for KeyText<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyText<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("base64 key material")
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<(), E> {
        self.0.bad = self.0.key.set_from_base64(text.as_bytes()).err();
        Ok(())
    }
}

/// Rewrites `\/` inside JSON strings as `/`, in place; returns the new
/// length. Kong Enterprise's JSON escapes '/', which base64 is full of, and
/// serde_json unescapes into a heap buffer of its own: without escapes it
/// borrows the text from our locked buffer instead.
fn unescape_slashes(json: &mut [u8]) -> usize {
    let (mut r, mut w, mut in_string) = (0, 0, false);
    while r < json.len() {
        let b = json[r];
        if in_string && b == b'\\' && r + 1 < json.len() {
            if json[r + 1] == b'/' {
                json[w] = b'/';
                w += 1;
            } else {
                json[w] = b;
                json[w + 1] = json[r + 1];
                w += 2;
            }
            r += 2;
            continue;
        }
        if b == b'"' {
            in_string = !in_string;
        }
        json[w] = b;
        w += 1;
        r += 1;
    }
    w
}

/// Keys read back from a blob.
#[derive(Debug)]
pub struct Imported {
    /// Every key in the blob, in locked memory wiped on drop.
    pub keys: Material,
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
    let inner = InnerOut { keys: KeysOut(keys), active: active.map(KeyId::as_str) };
    // Room for the whole JSON and the tag up front (ids may double when escaped).
    let room = keys.iter().map(|(id, _)| 2 * id.as_str().len() + 52).sum::<usize>()
        + active.map_or(0, |a| 2 * a.as_str().len())
        + 32
        + TAG_LEN;
    let mut data = LockedBuf::with_capacity(room)?;
    serde_json::to_writer(&mut data, &inner).map_err(|e| Error::Blob("export blob", e.to_string()))?;
    let one_time = KeyBytes::generate(&mut WorkerRng);
    let mut nonce = [0u8; NONCE_LEN];
    rng::fill(&mut nonce);
    let envelope = match format {
        WriteFormat::V2 => {
            let tag = seal(&raw_gcm(&one_time)?, &nonce, EXPORT_AAD, &mut data)?;
            data.extend_from_slice(&tag)?;
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
    // Decoded straight into locked memory: once opened it is the keys in clear.
    let mut data = LockedBuf::new();
    data.resize_zeroed(envelope.d.len().div_ceil(4) * 3)?;
    let n = STANDARD.decode_slice(&envelope.d, &mut data).map_err(|_| Error::Base64("export blob data"))?;
    data.truncate(n);
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
    let len = unescape_slashes(&mut data);
    data.truncate(len);
    let mut inner = InnerIn::default();
    let mut de = serde_json::Deserializer::from_slice(&data);
    InnerSeed(&mut inner).deserialize(&mut de).and_then(|()| de.end()).map_err(|e| {
        let why = if e.to_string().starts_with(LISTED_TWICE) {
            LISTED_TWICE
        } else {
            "contents do not decode (wrong private key?)"
        };
        Error::Blob("export blob", why.into())
    })?;
    if inner.too_many {
        return Err(Error::RingFull(SLOTS));
    }
    let mut keys = LockedVec::with_capacity(inner.entries.len())?;
    for entry in inner.entries.iter_mut() {
        let id = KeyId::new(entry.id.as_bytes())?;
        if let Some(bad) = entry.bad.take() {
            return Err(bad);
        }
        if keys.push((id, KeyBytes::zeroed())).is_err() {
            return Err(Error::RingFull(SLOTS));
        }
        if let Some((_, key)) = keys.last_mut() {
            key.bytes_mut().copy_from_slice(entry.key.as_bytes());
        }
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

#[cfg(test)]
mod tests {
    use super::unescape_slashes;

    #[test]
    fn slash_escapes_inside_strings_are_removed_in_place() {
        let mut json = br#"{"k\/":"a\/b\\\/c\"d","n":1} \/"#.to_vec();
        let n = unescape_slashes(&mut json);
        assert_eq!(&json[..n], br#"{"k/":"a/b\\/c\"d","n":1} \/"#);
    }
}
