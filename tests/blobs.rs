//! docs/formats.md, "Export blob v2" and "Export blob v1": export / import
//! blobs. Our v2 blob and our v1-mode blob round trip and open with the
//! `openssl` CLI; Kong Enterprise v1 blobs built with the CLI
//! import; wrong keys, unusable RSA keys and damaged blobs fail cleanly.
//! RSA keys come from `openssl genrsa`, once per test binary.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{
    id, independent_gcm_tag, key_bytes, openssl, openssl_base64, openssl_gcm_keystream, openssl_rsa_decrypt,
    openssl_rsa_encrypt, openssl_rsa_recovers, other_rsa, random, ring, rsa, seal, small_rsa, Form, CTX, ID,
    OAEP_SHA1, OAEP_SHA256, PKCS1,
};
use kong_keyring::blob::{self, Imported};
use kong_keyring::format::{KeyBytes, KeyId};
use kong_keyring::keyring::WriteFormat;
use kong_keyring::wrap::{PrivateKey, PublicKey};
use kong_keyring::Error;
use serde_json::{json, Value};

const EXPORT_AAD: &[u8] = b"kong-keyring-export-v2";

/// Three keys with varied ids, the second one active.
fn sample_keys() -> (Vec<(KeyId, KeyBytes)>, KeyId) {
    let keys = ["AbC123xy", "k2", "a!~_.Z"].iter().map(|i| (id(i), key_bytes(&random::<32>()))).collect();
    (keys, id("k2"))
}

/// Same ids, same bytes, same active; never prints the bytes.
fn assert_same_keys(imported: &Imported, keys: &[(KeyId, KeyBytes)], active: Option<&KeyId>) {
    assert_eq!(imported.active.as_ref(), active);
    let mut got: Vec<&KeyId> = imported.keys.iter().map(|(i, _)| i).collect();
    let mut want: Vec<&KeyId> = keys.iter().map(|(i, _)| i).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for (key_id, key) in keys {
        let (_, back) = imported.keys.iter().find(|(i, _)| i == key_id).unwrap();
        assert!(back.same_as(key), "key {key_id} changed on the way");
    }
}

/// The outer JSON of a blob.
fn envelope(blob: &str) -> Value {
    serde_json::from_slice(&STANDARD.decode(blob).unwrap()).unwrap()
}

fn field(envelope: &Value, name: &str) -> Vec<u8> {
    STANDARD.decode(envelope[name].as_str().unwrap()).unwrap()
}

/// Base64 of an envelope, after `edit`.
fn rebuild(blob: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut env = envelope(blob);
    edit(&mut env);
    STANDARD.encode(serde_json::to_vec(&env).unwrap())
}

fn check_round_trip(format: WriteFormat, public: Form, private: Form) {
    let (keys, active) = sample_keys();
    let blob = blob::export(&keys, Some(&active), &rsa().public(public), format).unwrap();
    let env = envelope(&blob);
    match format {
        WriteFormat::V2 => assert_eq!(env["v"], json!(2)),
        WriteFormat::V1 => assert!(env.get("v").is_none(), "Kong Enterprise's blob has no version"),
    }
    let imported = blob::import(blob.as_bytes(), &rsa().private(private)).unwrap();
    assert_same_keys(&imported, &keys, Some(&active));
}

macro_rules! round_trips {
    ($($name:ident: $format:expr, $public:expr, $private:expr;)+) => {$(
        #[test]
        fn $name() {
            check_round_trip($format, $public, $private);
        }
    )+};
}

round_trips! {
    v2_blob_round_trips_with_spki_and_pkcs8: WriteFormat::V2, Form::Pem, Form::Pem;
    v2_blob_round_trips_with_pkcs1_keys: WriteFormat::V2, Form::Pkcs1Pem, Form::Pkcs1Pem;
    v2_blob_round_trips_with_base64_of_pem_keys: WriteFormat::V2, Form::Base64Pem, Form::Base64Pem;
    v2_blob_round_trips_with_base64_of_pkcs1_keys: WriteFormat::V2, Form::Base64Pkcs1Pem, Form::Base64Pkcs1Pem;
    v2_blob_round_trips_across_forms: WriteFormat::V2, Form::Pkcs1Pem, Form::Base64Pem;
    v1_mode_blob_round_trips_with_spki_and_pkcs8: WriteFormat::V1, Form::Pem, Form::Pem;
    v1_mode_blob_round_trips_with_pkcs1_keys: WriteFormat::V1, Form::Pkcs1Pem, Form::Pkcs1Pem;
    v1_mode_blob_round_trips_with_base64_of_pem_keys: WriteFormat::V1, Form::Base64Pem, Form::Base64Pkcs1Pem;
}

#[test]
fn a_blob_without_an_active_key_round_trips() {
    let (keys, _) = sample_keys();
    let blob = blob::export(&keys, None, &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    let imported = blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    assert_same_keys(&imported, &keys, None);
}

#[test]
fn a_blob_wrapped_across_lines_imports() {
    let (keys, active) = sample_keys();
    let blob = blob::export(&keys, Some(&active), &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    let wrapped = String::from_utf8(openssl(&["base64"], &STANDARD.decode(&blob).unwrap())).unwrap();
    assert!(wrapped.trim().contains('\n'), "openssl base64 wraps at 64 columns");
    let imported = blob::import(wrapped.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    assert_same_keys(&imported, &keys, Some(&active));
}

#[test]
fn an_exported_ring_decrypts_on_another_node() {
    let source = ring();
    let (first, _) = source.generate().unwrap();
    let (second, _) = source.generate().unwrap();
    source.activate(&first).unwrap();
    let old = seal(&source, b"old secret", CTX);
    source.activate(&second).unwrap();
    let new = seal(&source, b"new secret", CTX);

    let material = source.material(None).unwrap();
    let blob = blob::export(&material, Some(&second), &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    let imported = blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    let node = ring();
    node.add_all(&imported.keys, imported.active.as_ref()).unwrap();
    // Same ids and active key; the order may differ (the blob's keys are a JSON object).
    let (mut got, mut want) = (node.list().unwrap(), source.list().unwrap());
    got.ids.sort();
    want.ids.sort();
    assert_eq!(got, want);
    assert_eq!(node.decrypt(&old, CTX).unwrap().as_deref(), Some(&b"old secret"[..]));
    assert_eq!(node.decrypt(&new, CTX).unwrap().as_deref(), Some(&b"new secret"[..]));
}

/// Inner JSON of a blob: `{"keys":{"ID":"<b64>"},"active":"ID"}` (docs/formats.md,
/// "Export blob v2").
fn inner_keys(inner: &[u8]) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    let v: Value = serde_json::from_slice(inner).unwrap();
    let keys = v["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, b)| (k.clone(), STANDARD.decode(b.as_str().unwrap()).unwrap()))
        .collect();
    (keys, v.get("active").and_then(Value::as_str).map(str::to_owned))
}

fn assert_inner_matches(inner: &[u8], keys: &[(KeyId, KeyBytes)], active: &KeyId) {
    let (got, got_active) = inner_keys(inner);
    assert_eq!(got_active.as_deref(), Some(active.as_str()));
    assert_eq!(got.len(), keys.len());
    for (key_id, key) in keys {
        let (_, raw) = got.iter().find(|(i, _)| i == key_id.as_str()).unwrap();
        assert!(raw.as_slice() == key.as_bytes(), "key {key_id} differs in the inner JSON");
    }
}

#[test]
fn v1_mode_export_opens_with_openssl_like_kong_enterprise() {
    let (keys, active) = sample_keys();
    let blob = blob::export(&keys, Some(&active), &rsa().public(Form::Pem), WriteFormat::V1).unwrap();
    let env = envelope(&blob);
    let one_time: [u8; 32] =
        openssl_rsa_decrypt(&rsa().private_pkcs8, PKCS1, &field(&env, "k")).try_into().expect("a 32-byte one-time key");
    let nonce: [u8; 12] = field(&env, "n").try_into().unwrap();
    let inner = openssl_gcm_keystream(&one_time, &nonce, &field(&env, "d"));
    assert_inner_matches(&inner, &keys, &active);
}

#[test]
fn v2_export_opens_with_openssl_oaep_sha256_and_an_independent_gcm() {
    let (keys, active) = sample_keys();
    let blob = blob::export(&keys, Some(&active), &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    let env = envelope(&blob);
    let wrapped = field(&env, "k");
    let one_time: [u8; 32] =
        openssl_rsa_decrypt(&rsa().private_pkcs8, OAEP_SHA256, &wrapped).try_into().expect("a 32-byte one-time key");
    assert!(!openssl_rsa_recovers(&rsa().private_pkcs8, OAEP_SHA1, &wrapped, &one_time), "k is OAEP-SHA256, not SHA-1");
    assert!(!openssl_rsa_recovers(&rsa().private_pkcs8, PKCS1, &wrapped, &one_time), "k is not PKCS#1 v1.5");
    let nonce: [u8; 12] = field(&env, "n").try_into().unwrap();
    let d = field(&env, "d");
    let (ciphertext, tag) = d.split_at(d.len() - 16);
    assert_eq!(tag, independent_gcm_tag(&one_time, &nonce, EXPORT_AAD, ciphertext), "GCM tag with AAD {EXPORT_AAD:?}");
    let inner = openssl_gcm_keystream(&one_time, &nonce, ciphertext);
    assert_inner_matches(&inner, &keys, &active);
}

/// Kong Enterprise's blob, built with the openssl CLI only (docs/formats.md,
/// "Export blob v1"):
/// `d` is the GCM keystream of `inner` under a one-time key, `k` wraps that
/// key with PKCS#1 v1.5. With `escape_slashes`, every `/` is written `\/`
/// (lua-cjson's default) in the inner and outer JSON.
fn ee_blob(public_pem: &str, inner: &str, escape_slashes: bool) -> String {
    let escape = |s: String| if escape_slashes { s.replace('/', "\\/") } else { s };
    let one_time = random::<32>();
    let nonce = random::<12>();
    let inner = escape(inner.to_owned());
    let d = openssl_gcm_keystream(&one_time, &nonce, inner.as_bytes());
    let k = openssl_rsa_encrypt(public_pem, PKCS1, &one_time);
    let outer = format!(r#"{{"k":"{}","n":"{}","d":"{}"}}"#, openssl_base64(&k), openssl_base64(&nonce), openssl_base64(&d));
    openssl_base64(escape(outer).as_bytes())
}

/// Inner JSON naming `keys` (base64 by openssl) and `active`.
fn ee_inner(keys: &[(&str, &[u8])], active: &str) -> String {
    let entries: Vec<String> = keys.iter().map(|(i, k)| format!(r#""{i}":"{}""#, openssl_base64(k))).collect();
    format!(r#"{{"keys":{{{}}},"active":"{active}"}}"#, entries.join(","))
}

/// Imports an EE blob, checks the keys, then decrypts a v1 field value built
/// with openssl under the active key on a ring made from the import.
fn check_ee_import(keys: &[(&str, [u8; 32])], active: &str, escape_slashes: bool) {
    let refs: Vec<(&str, &[u8])> = keys.iter().map(|(i, k)| (*i, &k[..])).collect();
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&refs, active), escape_slashes);
    if escape_slashes {
        let outer = String::from_utf8(STANDARD.decode(&blob).unwrap()).unwrap();
        assert!(outer.contains("\\/"), "the test blob has escaped slashes");
    }
    let imported = blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    let expected: Vec<(KeyId, KeyBytes)> = keys.iter().map(|(i, k)| (id(i), key_bytes(k))).collect();
    assert_same_keys(&imported, &expected, Some(&id(active)));

    let node = ring();
    node.add_all(&imported.keys, imported.active.as_ref()).unwrap();
    let (_, active_key) = keys.iter().find(|(i, _)| *i == active).unwrap();
    let nonce = random::<12>();
    let plain = b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8";
    let ciphertext = openssl_gcm_keystream(active_key, &nonce, plain);
    let value = format!("$ke$1$-{active}-{}-{}", hex::encode(nonce), hex::encode(ciphertext));
    assert_eq!(node.decrypt(value.as_bytes(), b"").unwrap().as_deref(), Some(&plain[..]));
}

/// A random key whose base64 contains a `/`.
fn key_with_slash() -> [u8; 32] {
    loop {
        let k = random::<32>();
        if STANDARD.encode(k).contains('/') {
            return k;
        }
    }
}

#[test]
fn ee_v1_blob_built_with_openssl_imports() {
    check_ee_import(&[(ID, random::<32>())], ID, false);
}

#[test]
fn ee_v1_blob_with_escaped_slashes_imports() {
    check_ee_import(&[(ID, key_with_slash()), ("other", key_with_slash())], ID, true);
}

#[test]
fn ee_v1_blob_with_several_keys_imports() {
    check_ee_import(&[("old1", random::<32>()), ("old2", random::<32>()), (ID, random::<32>())], "old2", false);
}

#[test]
fn ee_v1_blob_opens_with_a_pkcs1_private_key() {
    let key = random::<32>();
    let blob = ee_blob(&rsa().public_pkcs1, &ee_inner(&[(ID, &key)], ID), false);
    let imported = blob::import(blob.as_bytes(), &rsa().private(Form::Base64Pkcs1Pem)).unwrap();
    assert_same_keys(&imported, &[(id(ID), key_bytes(&key))], Some(&id(ID)));
}

#[test]
fn ee_v1_blob_whose_active_key_is_missing_fails() {
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&[(ID, &random::<32>())], "absent"), false);
    assert!(matches!(blob::import(blob.as_bytes(), &rsa().private(Form::Pem)), Err(Error::Blob(..))));
}

#[test]
fn ee_v1_blob_with_a_short_key_fails() {
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&[(ID, &[7; 31])], ID), false);
    assert_eq!(blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap_err(), Error::KeyLength);
}

#[test]
fn ee_v1_blob_with_an_invalid_id_fails() {
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&[("a-b", &random::<32>())], "a-b"), false);
    assert!(matches!(blob::import(blob.as_bytes(), &rsa().private(Form::Pem)), Err(Error::InvalidKeyId(_))));
}

#[test]
fn import_with_the_wrong_private_key_fails() {
    let (keys, active) = sample_keys();
    let wrong = other_rsa().private(Form::Pem);
    for format in [WriteFormat::V2, WriteFormat::V1] {
        let blob = blob::export(&keys, Some(&active), &rsa().public(Form::Pem), format).unwrap();
        // PKCS#1 v1.5 unwrapping uses implicit rejection (rsa's Marvin
        // countermeasure): a wrong key yields a pseudo-random message, so the
        // v1 failure is usually "key must be 32 bytes", else undecodable contents.
        let err = blob::import(blob.as_bytes(), &wrong).unwrap_err();
        assert!(matches!(err, Error::Rsa(_) | Error::Blob(..) | Error::KeyLength), "{format:?}: {err}");
    }
    let ee = ee_blob(&rsa().public_spki, &ee_inner(&[(ID, &random::<32>())], ID), false);
    assert!(blob::import(ee.as_bytes(), &wrong).is_err());
}

#[test]
fn a_public_key_where_a_private_key_is_needed_is_named() {
    for form in [Form::Pem, Form::Pkcs1Pem, Form::Base64Pem, Form::Base64Pkcs1Pem] {
        match PrivateKey::parse(rsa().public_text(form).as_bytes()) {
            Err(Error::Rsa(msg)) => assert!(msg.contains("public key"), "{form:?}: {msg}"),
            other => panic!("{form:?}: {other:?}"),
        }
    }
}

#[test]
fn a_private_key_where_a_public_key_is_needed_is_named() {
    for form in [Form::Pem, Form::Pkcs1Pem, Form::Base64Pem, Form::Base64Pkcs1Pem] {
        match PublicKey::parse(rsa().private_text(form).as_bytes()) {
            Err(Error::Rsa(msg)) => {
                assert!(msg.contains("private key"), "{form:?}: {msg}");
                let body_line = rsa().private_pkcs8.lines().nth(1).unwrap();
                assert!(!msg.contains(body_line), "the message must not echo the key");
            }
            other => panic!("{form:?}: {other:?}"),
        }
    }
}

#[test]
fn a_1024_bit_key_is_refused() {
    for form in [Form::Pem, Form::Pkcs1Pem, Form::Base64Pem] {
        let public = PublicKey::parse(small_rsa().public_text(form).as_bytes()).unwrap_err();
        let private = PrivateKey::parse(small_rsa().private_text(form).as_bytes()).unwrap_err();
        for err in [public, private] {
            assert!(err.to_string().contains("1024"), "{form:?}: {err}");
        }
    }
    assert!(PrivateKey::generate(1024).is_err());
}

#[test]
fn an_encrypted_private_key_is_refused() {
    let encrypted = openssl(&["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:test"], rsa().private_pkcs8.as_bytes());
    assert!(String::from_utf8_lossy(&encrypted).starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let err = PrivateKey::parse(&encrypted).unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn text_that_is_not_a_key_is_refused() {
    let garbage = [
        &b""[..],
        b"hello",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K",
    ];
    for text in garbage {
        assert!(PublicKey::parse(text).is_err(), "{:?}", String::from_utf8_lossy(text));
        assert!(PrivateKey::parse(text).is_err(), "{:?}", String::from_utf8_lossy(text));
    }
}

#[test]
fn a_non_rsa_key_is_refused() {
    let private = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], b"");
    let public = openssl(&["pkey", "-pubout"], &private);
    assert!(PrivateKey::parse(&private).is_err(), "an EC private key");
    assert!(PublicKey::parse(&public).is_err(), "an EC public key");
}

/// A fresh v2 blob of the sample keys.
fn v2_blob() -> String {
    let (keys, active) = sample_keys();
    blob::export(&keys, Some(&active), &rsa().public(Form::Pem), WriteFormat::V2).unwrap()
}

/// Flips one bit of field `name` of the envelope at byte `at` (negative: from the end).
fn flip(blob: &str, name: &str, at: isize) -> String {
    rebuild(blob, |env| {
        let mut raw = field(env, name);
        let i = if at < 0 { raw.len() - at.unsigned_abs() } else { at.unsigned_abs() };
        raw[i] ^= 0x01;
        env[name] = json!(STANDARD.encode(raw));
    })
}

fn check_garbage(blob: &str, expected: fn(&Error) -> bool) {
    match blob::import(blob.as_bytes(), &rsa().private(Form::Pem)) {
        Err(e) => assert!(expected(&e), "unexpected error: {e}"),
        Ok(_) => panic!("a damaged blob imported"),
    }
}

macro_rules! garbage_blobs {
    ($($name:ident: $blob:expr => $expected:pat,)+) => {$(
        #[test]
        fn $name() {
            let blob: String = $blob;
            check_garbage(&blob, |e| matches!(e, $expected));
        }
    )+};
}

garbage_blobs! {
    a_blob_that_is_not_base64_fails: "this is not base64!".to_owned() => Error::Blob(..),
    an_empty_blob_fails: String::new() => Error::Blob(..),
    base64_of_non_json_fails: STANDARD.encode("hello") => Error::Blob(..),
    base64_of_unrelated_json_fails: STANDARD.encode(r#"{"keys":{}}"#) => Error::Blob(..),
    a_truncated_blob_fails: { let b = v2_blob(); b[..b.len() / 2].to_owned() } => Error::Blob(..),
    a_blob_missing_its_last_quad_fails: { let b = v2_blob(); b[..b.len() - 4].to_owned() } => Error::Blob(..),
    v2_blob_with_tampered_ciphertext_fails: flip(&v2_blob(), "d", 0) => Error::Authentication,
    v2_blob_with_tampered_tag_fails: flip(&v2_blob(), "d", -1) => Error::Authentication,
    v2_blob_with_tampered_nonce_fails: flip(&v2_blob(), "n", 3) => Error::Authentication,
    v2_blob_with_tampered_wrapped_key_fails: flip(&v2_blob(), "k", 100) => Error::Rsa(_),
    v2_blob_with_another_blobs_wrapped_key_fails:
        {
            let other = envelope(&v2_blob());
            rebuild(&v2_blob(), |env| env["k"] = other["k"].clone())
        } => Error::Authentication,
    v2_blob_with_its_tag_cut_off_fails:
        rebuild(&v2_blob(), |env| {
            let d = field(env, "d");
            env["d"] = json!(STANDARD.encode(&d[..d.len() - 16]));
        }) => Error::Authentication,
    v2_blob_with_data_shorter_than_a_tag_fails:
        rebuild(&v2_blob(), |env| env["d"] = json!(STANDARD.encode([0u8; 15]))) => Error::Blob(..),
    v2_blob_relabelled_as_v1_fails: rebuild(&v2_blob(), |env| { env.as_object_mut().unwrap().remove("v"); })
        => Error::Rsa(_) | Error::KeyLength | Error::Blob(..),
    a_blob_of_an_unknown_version_fails: rebuild(&v2_blob(), |env| env["v"] = json!(3)) => Error::Blob(..),
    a_blob_with_an_11_byte_nonce_fails:
        rebuild(&v2_blob(), |env| env["n"] = json!(STANDARD.encode([0u8; 11]))) => Error::Blob(..),
    a_blob_whose_wrapped_key_is_not_base64_fails:
        rebuild(&v2_blob(), |env| env["k"] = json!("%%%")) => Error::Base64(_),
}

#[test]
fn a_blob_listing_one_id_twice_with_different_material_fails() {
    let (first, second) = (random::<32>(), random::<32>());
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&[(ID, &first), (ID, &second)], ID), false);
    let err = blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap_err();
    assert_eq!(err, Error::Blob("export blob", "lists one key id twice with different material".into()));
}

#[test]
fn a_blob_listing_one_key_twice_imports_it_once() {
    let key = random::<32>();
    let blob = ee_blob(&rsa().public_spki, &ee_inner(&[(ID, &key), (ID, &key)], ID), false);
    let imported = blob::import(blob.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    assert_same_keys(&imported, &[(id(ID), key_bytes(&key))], Some(&id(ID)));
}
