//! docs/formats.md, "Field value v2": the authenticated v2 format. Round trips,
//! the exact layout, and that every kind of tampering (any single bit of the
//! text, any single bit of the decoded payload, truncation, a swapped key id, a
//! wrong or moved context) is an error, never plaintext.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{id, join_v2, key_bytes, random, random_plaintext, ring, ring_with_active, seal, split_v2, CTX, ID};
use kong_keyring::keyring::{Keyring, WriteFormat};
use kong_keyring::Error;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Encrypts `len` random bytes under `context`, checks the layout, decrypts.
fn check_round_trip(len: usize, context: &[u8]) {
    let ring = ring_with_active(ID, &random::<32>());
    let plain = random_plaintext(len);
    let value = seal(&ring, &plain, context);

    let header = format!("$ke$2$-{ID}-");
    assert!(value.starts_with(header.as_bytes()));
    let payload = &value[header.len()..];
    assert_eq!(payload.len(), (4 * (NONCE_LEN + len + TAG_LEN)).div_ceil(3), "unpadded base64 length");
    assert!(payload.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'), "base64url without padding");
    assert_eq!(URL_SAFE_NO_PAD.decode(payload).unwrap().len(), NONCE_LEN + len + TAG_LEN);

    let got = ring.decrypt(&value, context).unwrap().expect("a v2 value decrypts");
    assert!(got == plain, "round trip of {len} bytes changed the plaintext");
}

macro_rules! round_trips {
    ($($name:ident: $len:expr, $context:expr;)+) => {$(
        #[test]
        fn $name() {
            check_round_trip($len, $context);
        }
    )+};
}

round_trips! {
    v2_of_one_byte_round_trips_without_context: 1, b"";
    v2_of_one_byte_round_trips_with_context: 1, CTX;
    v2_of_forty_bytes_round_trips_without_context: 40, b"";
    v2_of_forty_bytes_round_trips_with_context: 40, CTX;
    v2_of_one_block_round_trips_with_context: 16, CTX;
    v2_of_one_mebibyte_round_trips_without_context: 1 << 20, b"";
    v2_of_one_mebibyte_round_trips_with_context: 1 << 20, CTX;
}

#[test]
fn encrypting_an_empty_string_returns_it_unchanged() {
    let ring = ring_with_active(ID, &random::<32>());
    assert_eq!(ring.encrypt(b"", CTX).unwrap(), None);
    assert_eq!(ring.decrypt(b"", CTX).unwrap(), None);
}

#[test]
fn encrypting_a_marked_value_returns_it_unchanged() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"secret", CTX);
    assert_eq!(ring.encrypt(&value, CTX).unwrap(), None, "no double encryption");
    assert_eq!(ring.encrypt(b"$ke$1$-x-00-00", CTX).unwrap(), None);
}

#[test]
fn decrypting_an_unmarked_value_returns_it_unchanged() {
    let ring = ring_with_active(ID, &random::<32>());
    for plain in [&b"hunter2"[..], b"$k", b"ke$2$-AbC123xy-AAAA", b"$KE$2$-x-AAAA"] {
        assert_eq!(ring.decrypt(plain, CTX).unwrap(), None, "{plain:?}");
    }
}

#[test]
fn two_encryptions_of_one_value_differ() {
    let ring = ring_with_active(ID, &random::<32>());
    let a = seal(&ring, b"secret", CTX);
    let b = seal(&ring, b"secret", CTX);
    assert_ne!(split_v2(&a).1[..NONCE_LEN], split_v2(&b).1[..NONCE_LEN], "fresh nonce per value");
    assert_ne!(a, b);
}

#[test]
fn v2_is_written_even_when_v1_values_are_accepted() {
    let ring = ring_with_active(ID, &random::<32>());
    ring.configure(WriteFormat::V2, true);
    assert!(seal(&ring, b"secret", b"").starts_with(b"$ke$2$-"));
}

/// Flips every bit of every byte of a v2 value's text (marker, version, id,
/// dashes, payload). With `keyring_accept_legacy` off every flip is an error.
/// With it on, a flip inside `$ke$` makes the value unmarked, which `decrypt`
/// hands back unchanged by design (docs/formats.md, "Reading values"); any
/// other outcome is an error.
/// No flip may ever produce plaintext.
fn check_every_text_bit_flip(len: usize) {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, &random_plaintext(len), CTX);
    for lenient in [false, true] {
        ring.configure(WriteFormat::V2, lenient);
        for i in 0..value.len() {
            for bit in 0..8 {
                let mut flipped = value.clone();
                flipped[i] ^= 1 << bit;
                let what = format!("bit {bit} of byte {i} ({:?} -> {:?})", char::from(value[i]), char::from(flipped[i]));
                match ring.decrypt(&flipped, CTX) {
                    Err(_) => {}
                    Ok(None) if lenient && !flipped.starts_with(b"$ke$") => {}
                    Ok(None) => panic!("flipping {what} passed the value through (accept_legacy = {lenient})"),
                    Ok(Some(_)) => panic!("flipping {what} still decrypted (accept_legacy = {lenient})"),
                }
            }
        }
    }
}

/// Flips every bit of the decoded `nonce || ciphertext || tag` and re-encodes.
fn check_every_payload_bit_flip(len: usize) {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, &random_plaintext(len), CTX);
    let (key_id, raw) = split_v2(&value);
    for i in 0..raw.len() {
        for bit in 0..8 {
            let mut flipped = raw.clone();
            flipped[i] ^= 1 << bit;
            let part = if i < NONCE_LEN { "nonce" } else if i < raw.len() - TAG_LEN { "ciphertext" } else { "tag" };
            assert_eq!(
                ring.decrypt(&join_v2(&key_id, &flipped), CTX),
                Err(Error::Authentication),
                "flipping bit {bit} of payload byte {i} ({part})"
            );
        }
    }
}

macro_rules! bit_flips {
    ($($text:ident, $payload:ident: $len:expr;)+) => {$(
        #[test]
        fn $text() {
            check_every_text_bit_flip($len);
        }

        #[test]
        fn $payload() {
            check_every_payload_bit_flip($len);
        }
    )+};
}

// 12 + len + 16 raw bytes: 69 leave no spare bits in the last base64url char,
// 68 leave two and 67 four, where a lenient decoder would accept other chars.
bit_flips! {
    every_text_bit_flip_fails_when_the_last_char_has_no_spare_bits,
    every_payload_bit_flip_fails_when_the_last_char_has_no_spare_bits: 41;
    every_text_bit_flip_fails_when_the_last_char_has_two_spare_bits,
    every_payload_bit_flip_fails_when_the_last_char_has_two_spare_bits: 40;
    every_text_bit_flip_fails_when_the_last_char_has_four_spare_bits,
    every_payload_bit_flip_fails_when_the_last_char_has_four_spare_bits: 39;
}

#[test]
fn every_other_last_char_fails() {
    // Beyond single bit flips: any replacement of the final char, including the
    // non-canonical ones that differ only in the spare bits.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for len in [39, 40, 41] {
        let ring = ring_with_active(ID, &random::<32>());
        let value = seal(&ring, &random_plaintext(len), CTX);
        let last = value.len() - 1;
        for &c in alphabet.iter().chain(b"=+/.") {
            if c == value[last] {
                continue;
            }
            let mut changed = value.clone();
            changed[last] = c;
            let what = format!("last char {:?} -> {:?}", char::from(value[last]), char::from(c));
            assert!(ring.decrypt(&changed, CTX).is_err(), "{what} accepted");
        }
    }
}

#[test]
fn every_truncation_of_a_v2_value_fails() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", CTX);
    for cut in 4..value.len() {
        assert!(ring.decrypt(&value[..cut], CTX).is_err(), "prefix of {cut} chars accepted");
    }
}

#[test]
fn a_v2_value_with_anything_appended_fails() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", CTX);
    for extra in [&b"A"[..], b"AA", b"AAA", b"AAAA", b"=", b"==", b"-", b" ", b"\n", b"\0"] {
        let longer = [&value[..], extra].concat();
        assert!(ring.decrypt(&longer, CTX).is_err(), "appending {extra:?} accepted");
    }
}

/// A ring with keys `A` and `B` (both on the ring, `A` active).
fn two_key_ring(same_material: bool) -> Keyring {
    let ring = ring();
    let a = random::<32>();
    let b = if same_material { a } else { random::<32>() };
    ring.add(&id("A"), &key_bytes(&a)).unwrap();
    ring.add(&id("B"), &key_bytes(&b)).unwrap();
    ring.activate(&id("A")).unwrap();
    ring
}

#[test]
fn v2_with_swapped_key_id_fails() {
    let ring = two_key_ring(false);
    let value = seal(&ring, b"secret", CTX);
    let (key_id, raw) = split_v2(&value);
    assert_eq!(key_id, "A");
    assert_eq!(ring.decrypt(&join_v2("B", &raw), CTX), Err(Error::Authentication));
}

#[test]
fn v2_with_swapped_key_id_fails_even_when_both_ids_hold_the_same_key() {
    // The id is authenticated as part of the header (docs/formats.md, "Field
    // value v2": AAD = header || context).
    let ring = two_key_ring(true);
    let (_, raw) = split_v2(&seal(&ring, b"secret", CTX));
    assert_eq!(ring.decrypt(&join_v2("B", &raw), CTX), Err(Error::Authentication));
    assert_eq!(ring.decrypt(&join_v2("A", &raw), CTX).unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn v2_under_a_wrong_context_fails() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"secret", CTX);
    let wrong = b"basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a3";
    for context in [&wrong[..], b"", &CTX[..CTX.len() - 1], &[CTX, b"x"].concat()] {
        assert_eq!(ring.decrypt(&value, context), Err(Error::Authentication), "{:?}", String::from_utf8_lossy(context));
    }
}

#[test]
fn v2_without_context_fails_under_a_context() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"secret", b"");
    assert_eq!(ring.decrypt(&value, CTX), Err(Error::Authentication));
    assert_eq!(ring.decrypt(&value, b"").unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn v2_moved_between_rows_fails() {
    let ring = ring_with_active(ID, &random::<32>());
    let row_a = b"plugins:0c3c5b8e-5a0a-4ad5-8d22-5d9f9c1e9a01";
    let row_b = b"plugins:0c3c5b8e-5a0a-4ad5-8d22-5d9f9c1e9a02";
    let in_a = seal(&ring, b"secret of a", row_a);
    let in_b = seal(&ring, b"secret of b", row_b);
    assert_eq!(ring.decrypt(&in_a, row_a).unwrap().as_deref(), Some(&b"secret of a"[..]));
    assert_eq!(ring.decrypt(&in_b, row_b).unwrap().as_deref(), Some(&b"secret of b"[..]));
    assert_eq!(ring.decrypt(&in_a, row_b), Err(Error::Authentication));
    assert_eq!(ring.decrypt(&in_b, row_a), Err(Error::Authentication));
}

#[test]
fn v2_context_is_bytes_not_text() {
    let ring = ring_with_active(ID, &random::<32>());
    let context = "plugins:\u{fc}".as_bytes();
    let value = seal(&ring, b"secret", context);
    assert_eq!(ring.decrypt(&value, context).unwrap().as_deref(), Some(&b"secret"[..]));
    assert_eq!(ring.decrypt(&value, b"plugins:\xfc"), Err(Error::Authentication), "latin-1 is another context");
}

/// Rewrites the decoded payload of a fresh 40-byte value; decryption must fail.
fn check_tampered(tamper: impl Fn(&mut Vec<u8>), expected: Error) {
    let ring = ring_with_active(ID, &random::<32>());
    let (key_id, mut raw) = split_v2(&seal(&ring, b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", CTX));
    tamper(&mut raw);
    assert_eq!(ring.decrypt(&join_v2(&key_id, &raw), CTX), Err(expected));
}

/// `nonce || tag || ciphertext`: every byte kept, in the wrong place.
fn swap_ciphertext_and_tag(raw: &mut Vec<u8>) {
    let body = raw.split_off(NONCE_LEN);
    let (ciphertext, tag) = body.split_at(body.len() - TAG_LEN);
    raw.extend_from_slice(tag);
    raw.extend_from_slice(ciphertext);
}

macro_rules! tampered {
    ($($name:ident: |$raw:ident| $body:expr => $expected:expr;)+) => {$(
        #[test]
        fn $name() {
            check_tampered(|$raw: &mut Vec<u8>| { $body; }, $expected);
        }
    )+};
}

tampered! {
    v2_with_tampered_nonce_fails: |raw| raw[0] ^= 0x01 => Error::Authentication;
    v2_with_tampered_ciphertext_fails: |raw| raw[NONCE_LEN] ^= 0x80 => Error::Authentication;
    v2_with_tampered_tag_fails: |raw| *raw.last_mut().unwrap() ^= 0x01 => Error::Authentication;
    v2_with_zeroed_tag_fails: |raw| { let n = raw.len(); raw[n - TAG_LEN..].fill(0) } => Error::Authentication;
    v2_with_one_tag_byte_missing_fails: |raw| raw.pop() => Error::Authentication;
    v2_with_the_tag_missing_fails: |raw| raw.truncate(raw.len() - TAG_LEN) => Error::Authentication;
    v2_with_an_extra_byte_fails: |raw| raw.push(0) => Error::Authentication;
    v2_with_ciphertext_and_tag_swapped_fails: |raw| swap_ciphertext_and_tag(raw) => Error::Authentication;
    v2_with_only_a_nonce_and_tag_fails: |raw| raw.drain(NONCE_LEN..raw.len() - TAG_LEN) => Error::Authentication;
    v2_shorter_than_nonce_and_tag_is_malformed:
        |raw| raw.truncate(NONCE_LEN + TAG_LEN - 1) => Error::Malformed("truncated v2 value");
}

#[test]
fn v2_with_its_tag_stripped_is_not_a_v1_value() {
    // docs/formats.md, "Field value v2": the HKDF subkey means v2 nonce ||
    // ciphertext relabelled as v1 (the raw key's GCM keystream) does not give
    // the plaintext back.
    let ring = ring_with_active(ID, &random::<32>());
    let plain = b"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8";
    let (key_id, raw) = split_v2(&seal(&ring, plain, b""));
    let v1 = format!(
        "$ke$1$-{key_id}-{}-{}",
        hex::encode(&raw[..NONCE_LEN]),
        hex::encode(&raw[NONCE_LEN..raw.len() - TAG_LEN])
    );
    let got = ring.decrypt(v1.as_bytes(), b"").unwrap().unwrap();
    assert_ne!(got, plain);
}

#[test]
fn v2_payload_may_contain_dashes_after_the_id() {
    // docs/formats.md, "Field value v2": the id ends at the first '-';
    // base64url uses '-' too.
    let ring = ring_with_active(ID, &random::<32>());
    let mut seen_dash = false;
    for _ in 0..200 {
        let value = seal(&ring, b"secret", CTX);
        let payload = &value[format!("$ke$2$-{ID}-").len()..];
        seen_dash |= payload.contains(&b'-');
        assert_eq!(ring.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
    }
    assert!(seen_dash, "200 payloads of 46 chars without a '-' (p < 1e-60)");
}
