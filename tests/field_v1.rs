//! docs/formats.md, "Field value v1": legacy v1 values. Values built with
//! `openssl enc -aes-256-ctr` from the counter block `nonce || 00000002`
//! decrypt, and v1 writes (when `keyring_write_format = v1`) are exactly what
//! openssl produces for the nonce they chose. Keys and nonces are random per
//! run.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{id, key_bytes, openssl_gcm_keystream, random, ring, ring_with_active, seal, CTX, ID};
use kong_keyring::keyring::WriteFormat;
use kong_keyring::Error;

/// One v1 case: the key and nonce are random, the ciphertext comes from openssl.
struct Vector<'a> {
    id: &'a str,
    plaintext: &'a [u8],
}

/// Builds the value with openssl and checks it decrypts, in lower, upper and
/// mixed case hex, with and without a context (v1 has no AAD).
fn check_openssl_v1(v: &Vector<'_>) {
    let key = random::<32>();
    let nonce = random::<12>();
    let ciphertext = openssl_gcm_keystream(&key, &nonce, v.plaintext);
    assert_eq!(ciphertext.len(), v.plaintext.len(), "v1 ciphertext length = plaintext length");
    let ring = ring();
    // No activation: every key on the ring decrypts (docs/design.md, "Keys on
    // the ring").
    assert!(ring.add(&id(v.id), &key_bytes(&key)).unwrap());

    let lower = format!("$ke$1$-{}-{}-{}", v.id, hex::encode(nonce), hex::encode(&ciphertext));
    let upper = format!("$ke$1$-{}-{}-{}", v.id, hex::encode_upper(nonce), hex::encode_upper(&ciphertext));
    let mixed = format!("$ke$1$-{}-{}-{}", v.id, hex::encode_upper(nonce), hex::encode(&ciphertext));
    for value in [&lower, &upper, &mixed] {
        for context in [&b""[..], CTX] {
            let got = ring.decrypt(value.as_bytes(), context).unwrap();
            assert_eq!(got.as_deref(), Some(v.plaintext), "id {}", v.id);
        }
    }
}

macro_rules! openssl_v1_vectors {
    ($($name:ident: $id:expr, $plaintext:expr;)+) => {$(
        #[test]
        fn $name() {
            check_openssl_v1(&Vector { id: $id, plaintext: $plaintext });
        }
    )+};
}

openssl_v1_vectors! {
    v1_of_one_byte_from_openssl_decrypts: ID, b"x";
    v1_of_a_basic_auth_sha1_hex_from_openssl_decrypts: ID, b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8";
    v1_of_exactly_one_block_from_openssl_decrypts: "k", b"0123456789abcdef";
    v1_of_many_blocks_from_openssl_decrypts: ID, &[0xa5; 1000];
    v1_of_binary_bytes_from_openssl_decrypts: "a!~_.Z", &(0..=255).collect::<Vec<u8>>();
    v1_under_a_255_char_id_from_openssl_decrypts: &"z".repeat(255), b"secret";
}

#[test]
fn v1_writes_match_openssl_for_the_nonce_they_chose() {
    let key = random::<32>();
    let ring = ring_with_active(ID, &key);
    ring.configure(WriteFormat::V1, true);
    let mut nonces = Vec::new();
    for plain in [&b"x"[..], b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", &[0x5a; 1000]] {
        let value = String::from_utf8(seal(&ring, plain, CTX)).unwrap();
        let rest = value.strip_prefix(&format!("$ke$1$-{ID}-")).expect("a v1 header");
        let (nonce_hex, ciphertext_hex) = rest.split_once('-').expect("nonce and ciphertext");
        assert_eq!(nonce_hex.len(), 24);
        let lowercase_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        assert!(lowercase_hex(nonce_hex) && lowercase_hex(ciphertext_hex), "hex is lowercase on output: {value}");
        let nonce: [u8; 12] = hex::decode(nonce_hex).unwrap().try_into().unwrap();
        assert_eq!(ciphertext_hex, hex::encode(openssl_gcm_keystream(&key, &nonce, plain)));
        assert_eq!(ring.decrypt(value.as_bytes(), b"").unwrap().as_deref(), Some(plain));
        nonces.push(nonce);
    }
    nonces.sort_unstable();
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "every write draws a fresh nonce");
}

#[test]
fn v1_under_the_wrong_key_decrypts_to_garbage_not_an_error() {
    // docs/formats.md, "Field value v1": v1 has no integrity; this is why v2
    // exists and why keyring_accept_legacy = off can refuse v1 altogether.
    let (right, wrong) = (random::<32>(), random::<32>());
    let nonce = random::<12>();
    let plain = b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8";
    let value = format!("$ke$1$-{ID}-{}-{}", hex::encode(nonce), hex::encode(openssl_gcm_keystream(&right, &nonce, plain)));
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&wrong)).unwrap();
    let got = ring.decrypt(value.as_bytes(), b"").unwrap().unwrap();
    assert_eq!(got.len(), plain.len());
    assert_ne!(got, plain);
}

/// A value that must be refused as malformed while its key is on the ring.
fn check_malformed(value: &str) {
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&random::<32>())).unwrap();
    match ring.decrypt(value.as_bytes(), b"") {
        Err(Error::Malformed(_)) => {}
        other => panic!("{value:?} gave {other:?}, expected a malformed-value error"),
    }
}

macro_rules! malformed_v1 {
    ($($name:ident: $value:expr;)+) => {$(
        #[test]
        fn $name() {
            check_malformed(&$value);
        }
    )+};
}

const NONCE_HEX: &str = "000102030405060708090a0b";

malformed_v1! {
    v1_with_odd_length_ciphertext_hex_is_malformed: format!("$ke$1$-{ID}-{NONCE_HEX}-abc");
    v1_with_a_bad_hex_pair_in_the_ciphertext_is_malformed: format!("$ke$1$-{ID}-{NONCE_HEX}-00zz");
    v1_with_a_non_ascii_byte_in_the_ciphertext_is_malformed: format!("$ke$1$-{ID}-{NONCE_HEX}-00\u{e9}");
    v1_with_whitespace_in_the_ciphertext_is_malformed: format!("$ke$1$-{ID}-{NONCE_HEX}- 0ab");
    v1_with_a_bad_hex_pair_in_the_nonce_is_malformed: format!("$ke$1$-{ID}-000102030405060708090a0g-00");
    v1_with_a_short_nonce_is_malformed: format!("$ke$1$-{ID}-000102030405060708090a-00");
    v1_with_a_long_nonce_is_malformed: format!("$ke$1$-{ID}-000102030405060708090a0b0c-00");
    v1_with_an_odd_length_nonce_is_malformed: format!("$ke$1$-{ID}-000102030405060708090a0b0-00");
    v1_without_a_ciphertext_part_is_malformed: format!("$ke$1$-{ID}-{NONCE_HEX}");
    v1_without_a_nonce_part_is_malformed: format!("$ke$1$-{ID}");
    v1_with_an_empty_id_is_malformed: format!("$ke$1$--{NONCE_HEX}-00");
    v1_with_a_dollar_in_the_id_is_malformed: format!("$ke$1$-a$b-{NONCE_HEX}-00");
    v1_with_a_space_in_the_id_is_malformed: format!("$ke$1$-a b-{NONCE_HEX}-00");
    v1_without_the_dash_after_the_version_is_malformed: format!("$ke$1${ID}-{NONCE_HEX}-00");
}
