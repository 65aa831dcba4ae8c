//! docs/formats.md, "Field value v2", against implementations other than ours.
//!
//! - Frozen vectors computed once with Node.js `crypto` (OpenSSL's HKDF-SHA256
//!   and AES-256-GCM) by `tests/data/v2_vectors.js`; not produced by this crate.
//! - Fresh values built at run time from `openssl kdf` (HKDF subkey),
//!   `openssl enc` (AES blocks, CTR) and a GHASH written from NIST SP 800-38D
//!   in `tests/common/mod.rs`, in both directions.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{
    id, independent_gcm_seal, independent_gcm_tag, independent_v2, key_bytes, openssl_gcm_keystream, openssl_hkdf,
    random, random_plaintext, ring, ring_with_active, seal, split_v2, CTX, ID, V2_INFO,
};
use hex_literal::hex;
use kong_keyring::Error;

/// One frozen v2 value and what it was made from.
struct Vector {
    key: [u8; 32],
    id: &'static str,
    context: &'static [u8],
    nonce: [u8; 12],
    plaintext: &'static [u8],
    value: &'static str,
}

const ALL_BYTES: [u8; 256] = {
    let mut a = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        a[i] = i as u8;
        i += 1;
    }
    a
};

/// Our decrypt gives the plaintext; the openssl + GHASH builder agrees with
/// Node byte for byte; any other context is refused.
fn check_frozen(v: &Vector) {
    let ring = ring();
    ring.add(&id(v.id), &key_bytes(&v.key)).unwrap();
    let got = ring.decrypt(v.value.as_bytes(), v.context).unwrap();
    assert_eq!(got.as_deref(), Some(v.plaintext), "id {}", v.id);
    assert_eq!(independent_v2(&v.key, v.id, v.context, &v.nonce, v.plaintext), v.value, "openssl + GHASH disagree with node");
    assert_eq!(ring.decrypt(v.value.as_bytes(), b"other:context"), Err(Error::Authentication));
}

macro_rules! frozen_vectors {
    ($($name:ident: $vector:expr;)+) => {$(
        #[test]
        fn $name() {
            check_frozen(&$vector);
        }
    )+};
}

frozen_vectors! {
    frozen_v2_vector_without_context_decrypts: Vector {
        key: hex!("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        id: "AbC123xy",
        context: b"",
        nonce: hex!("000102030405060708090a0b"),
        plaintext: b"hello",
        value: "$ke$2$-AbC123xy-AAECAwQFBgcICQoLSI-JXLtGnbBqXoZf8SfGJ8tKbj6V",
    };
    frozen_v2_vector_of_a_basic_auth_hash_with_a_row_context_decrypts: Vector {
        key: hex!("8f3a1c5e7b9d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a"),
        id: "k1",
        context: b"basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2",
        nonce: hex!("cafebabedeadbeef01234567"),
        plaintext: b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8",
        value: "$ke$2$-k1-yv66vt6tvu8BI0VnSJQDrV_BCGsLkHGd0AMX5Y3B69geU0yIKQ2QVv4vZKnsR6a0REOUvIo2W8Fl5MibACSw9Hzmooc",
    };
    frozen_v2_vector_with_punctuation_id_and_utf8_context_decrypts: Vector {
        key: hex!("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        id: "a!~_.Z",
        context: "plugins:\u{fc}".as_bytes(),
        nonce: hex!("ffffffffffffffffffffffff"),
        plaintext: b"x",
        value: "$ke$2$-a!~_.Z-_________________brHscIiNeexgn2kmi_yQOQ",
    };
    frozen_v2_vector_of_every_byte_value_decrypts: Vector {
        key: [0; 32],
        id: "x",
        context: b"vaults:1",
        nonce: [0; 12],
        plaintext: &ALL_BYTES,
        value: concat!(
            "$ke$2$-x-AAAAAAAAAAAAAAAALHzAkMY8JF-9yRiVlDPx5XWPMFvZBR7Y6FFImgBz_M9wjdaAxJ2fiVat2MlNrhZCRVNu77O",
            "fMpW5WIa9RHSTAMHR3KAQnqVn7NCoA4e48Xc3pIG2uFWjmhWeZjcb4i89g554km9xOBB8dIzLqaaxgCvjrBMdXo8NK38Amtk",
            "76OrQbqmdmUu08rsRubdDQB-lWWEqA83AGC6eRlVBzxGnBN6Ok6UN-60oQrr5GUOhNGFUf8lXLQa9NITmNrO06reX6ILIBhT",
            "ZaeOCrBeXBvKpISE0UTze2GRfR1GR7yElF9zsrPdgx0CZ-wJvCUFTBkdqDFBqgLeVYzYAC4yl_YN3BQXkjXRvKJKiMqrkE5l",
            "FPvw",
        ),
    };
    frozen_v2_vector_with_dashes_in_the_payload_decrypts: Vector {
        key: [0x11; 32],
        id: "dash",
        context: b"ctx",
        nonce: [0; 12],
        plaintext: b"payload with dashes",
        value: "$ke$2$-dash-AAAAAAAAAAAAAAAARXA2egsLa6F1XillVi5X92dLgLOA1amhW_a4-GShPnUy9fI",
    };
}

#[test]
fn v2_values_we_write_match_openssl_hkdf_and_an_independent_gcm() {
    let key = random::<32>();
    let subkey = openssl_hkdf(&key, V2_INFO);
    let ring = ring_with_active(ID, &key);
    for len in [1, 15, 16, 17, 40, 300] {
        for context in [&b""[..], CTX] {
            let plain = random_plaintext(len);
            let (key_id, raw) = split_v2(&seal(&ring, &plain, context));
            assert_eq!(key_id, ID);
            let (nonce, rest) = raw.split_at(12);
            let (ciphertext, tag) = rest.split_at(rest.len() - 16);
            let nonce: [u8; 12] = nonce.try_into().unwrap();
            assert_eq!(ciphertext, openssl_gcm_keystream(&subkey, &nonce, &plain), "ciphertext of {len} bytes");
            let aad = [format!("$ke$2$-{ID}-").as_bytes(), context].concat();
            assert_eq!(tag, independent_gcm_tag(&subkey, &nonce, &aad, ciphertext), "tag of {len} bytes");
        }
    }
}

#[test]
fn v2_values_built_with_openssl_and_an_independent_gcm_decrypt() {
    let key = random::<32>();
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&key)).unwrap();
    for len in [1, 16, 40, 1000] {
        for context in [&b""[..], CTX] {
            let plain = random_plaintext(len);
            let value = independent_v2(&key, ID, context, &random::<12>(), &plain);
            let got = ring.decrypt(value.as_bytes(), context).unwrap();
            assert!(got.as_deref() == Some(&plain[..]), "{len} bytes with context {context:?}");
        }
    }
}

/// A v2 value sealed by the independent GCM under `gcm_key` with `aad`.
fn value_sealed_with(gcm_key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = random::<12>();
    let raw = [&nonce[..], &independent_gcm_seal(gcm_key, &nonce, aad, plain)].concat();
    common::join_v2(ID, &raw)
}

#[test]
fn a_v2_value_sealed_under_the_raw_key_instead_of_the_subkey_fails() {
    let key = random::<32>();
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&key)).unwrap();
    let aad = [format!("$ke$2$-{ID}-").as_bytes(), CTX].concat();
    let with_raw_key = value_sealed_with(&key, &aad, b"secret");
    assert_eq!(ring.decrypt(&with_raw_key, CTX), Err(Error::Authentication));
    let with_subkey = value_sealed_with(&openssl_hkdf(&key, V2_INFO), &aad, b"secret");
    assert_eq!(ring.decrypt(&with_subkey, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn a_v2_value_whose_aad_lacks_the_header_fails() {
    let key = random::<32>();
    let subkey = openssl_hkdf(&key, V2_INFO);
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&key)).unwrap();
    for aad in [CTX.to_vec(), b"".to_vec(), [format!("$ke$2$-{ID}").as_bytes(), CTX].concat()] {
        let value = value_sealed_with(&subkey, &aad, b"secret");
        assert_eq!(ring.decrypt(&value, CTX), Err(Error::Authentication), "aad {:?}", String::from_utf8_lossy(&aad));
    }
}

#[test]
fn a_v2_subkey_with_another_info_fails() {
    let key = random::<32>();
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&key)).unwrap();
    let aad = format!("$ke$2$-{ID}-").into_bytes();
    let value = value_sealed_with(&openssl_hkdf(&key, "kong-keyring field v1"), &aad, b"secret");
    assert_eq!(ring.decrypt(&value, b""), Err(Error::Authentication));
}
