//! docs/formats.md, "Key ids", and docs/design.md, "Keys on the ring": key
//! ids, adding, activating and removing keys, the errors their callers map to
//! status codes, `keyring_accept_legacy`, and a full region.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{id, key_bytes, random, ring, ring_with_active, seal, CTX, ID};
use kong_keyring::format::{KeyBytes, KeyId};
use kong_keyring::keyring::WriteFormat;
use kong_keyring::region::SLOTS;
use kong_keyring::Error;

macro_rules! key_ids {
    ($($name:ident: $raw:expr => $valid:expr;)+) => {$(
        #[test]
        fn $name() {
            let raw: &[u8] = &$raw;
            assert_eq!(KeyId::new(raw).is_ok(), $valid, "{:?}", String::from_utf8_lossy(raw));
        }
    )+};
}

key_ids! {
    a_generated_style_id_is_valid: *b"AbC123xy" => true;
    a_one_char_id_is_valid: *b"a" => true;
    a_255_char_id_is_valid: [b'z'; 255] => true;
    every_printable_char_but_dash_and_dollar_is_valid:
        (0x21..=0x7e).filter(|b| *b != b'-' && *b != b'$').collect::<Vec<u8>>() => true;
    an_empty_id_is_invalid: *b"" => false;
    a_256_char_id_is_invalid: [b'z'; 256] => false;
    an_id_with_a_dash_is_invalid: *b"ab-cd" => false;
    an_id_with_a_dollar_is_invalid: *b"ab$cd" => false;
    an_id_with_a_space_is_invalid: *b"ab cd" => false;
    an_id_with_a_tab_is_invalid: *b"ab\tcd" => false;
    an_id_with_a_newline_is_invalid: *b"abcd\n" => false;
    an_id_with_a_nul_is_invalid: *b"ab\0cd" => false;
    an_id_with_del_is_invalid: *b"ab\x7fcd" => false;
    an_id_with_non_ascii_is_invalid: *b"ab\xc3\xa9" => false;
}

#[test]
fn generated_keys_have_eight_alphanumeric_ids_and_are_not_activated() {
    let ring = ring();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (key_id, _) = ring.generate().unwrap();
        assert_eq!(key_id.as_str().len(), 8);
        assert!(key_id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()), "{key_id}");
        ids.push(key_id);
    }
    let listing = ring.list().unwrap();
    assert_eq!(listing.active, None);
    assert_eq!(listing.ids.len(), 20);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(ring.encrypt(b"secret", b""), Err(Error::NoActiveKey));
}

#[test]
fn generated_key_material_is_what_the_ring_uses() {
    let first = ring();
    let (key_id, key) = first.generate().unwrap();
    first.activate(&key_id).unwrap();
    let value = seal(&first, b"secret", CTX);
    let other = ring();
    other.add(&key_id, &key).unwrap();
    assert_eq!(other.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn adding_a_new_id_returns_true() {
    let ring = ring();
    assert_eq!(ring.add(&id(ID), &key_bytes(&random::<32>())), Ok(true));
    assert_eq!(ring.list().unwrap().ids, vec![id(ID)]);
}

#[test]
fn adding_the_same_id_and_bytes_again_returns_false() {
    let ring = ring();
    let key = random::<32>();
    assert_eq!(ring.add(&id(ID), &key_bytes(&key)), Ok(true));
    assert_eq!(ring.add(&id(ID), &key_bytes(&key)), Ok(false));
    assert_eq!(ring.list().unwrap().ids.len(), 1);
}

#[test]
fn adding_an_existing_id_with_different_bytes_is_a_conflict() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"secret", CTX);
    let mut other = random::<32>();
    other[0] ^= 1;
    let err = ring.add(&id(ID), &key_bytes(&other)).unwrap_err();
    assert_eq!(err, Error::KeyConflict(ID.to_owned()));
    assert_eq!(err.to_string(), "key 'AbC123xy' already exists with different material");
    assert_eq!(ring.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]), "the old key stays");
}

#[test]
fn key_material_must_be_32_bytes() {
    for len in [0, 16, 31, 33, 64] {
        assert_eq!(KeyBytes::from_slice(&vec![7; len]).unwrap_err(), Error::KeyLength, "{len} bytes");
    }
    assert_eq!(Error::KeyLength.to_string(), "key must be 32 bytes");
    assert!(KeyBytes::from_base64(b"AAAA").is_err());
    assert!(KeyBytes::from_base64(b"not base64!").is_err());
    let key = random::<32>();
    let round = KeyBytes::from_base64(common::openssl_base64(&key).as_bytes()).unwrap();
    assert!(round.as_bytes() == &key, "base64 key material decodes to the same bytes");
}

#[test]
fn activating_an_unknown_id_is_not_found() {
    let ring = ring_with_active(ID, &random::<32>());
    let err = ring.activate(&id("nope")).unwrap_err();
    assert_eq!(err, Error::KeyNotFound("nope".to_owned()));
    assert_eq!(err.to_string(), "key 'nope' not found");
    assert_eq!(ring.list().unwrap().active, Some(id(ID)), "the active key is unchanged");
}

#[test]
fn activating_switches_the_key_used_for_writes() {
    let ring = ring_with_active("A", &random::<32>());
    ring.add(&id("B"), &key_bytes(&random::<32>())).unwrap();
    let under_a = seal(&ring, b"secret", CTX);
    ring.activate(&id("B")).unwrap();
    let under_b = seal(&ring, b"secret", CTX);
    assert!(under_a.starts_with(b"$ke$2$-A-"));
    assert!(under_b.starts_with(b"$ke$2$-B-"));
    assert_eq!(ring.list().unwrap().active, Some(id("B")));
    for value in [under_a, under_b] {
        assert_eq!(ring.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]), "every key on the ring decrypts");
    }
}

#[test]
fn removing_the_active_key_is_refused() {
    let ring = ring_with_active(ID, &random::<32>());
    let err = ring.remove(&id(ID)).unwrap_err();
    assert_eq!(err, Error::RemoveActive);
    assert_eq!(err.to_string(), "cannot remove active key");
    assert_eq!(ring.list().unwrap().ids, vec![id(ID)]);
}

#[test]
fn removing_a_key_makes_its_values_unavailable() {
    let ring = ring_with_active("A", &random::<32>());
    ring.add(&id("B"), &key_bytes(&random::<32>())).unwrap();
    let under_a = seal(&ring, b"secret", CTX);
    ring.activate(&id("B")).unwrap();
    assert_eq!(ring.remove(&id("A")), Ok(true));
    assert_eq!(ring.remove(&id("A")), Ok(false), "an unknown id is not an error");
    assert_eq!(ring.decrypt(&under_a, CTX), Err(Error::KeyUnavailable("A".to_owned())));
    assert_eq!(ring.list().unwrap().ids, vec![id("B")]);
}

#[test]
fn an_id_removed_and_added_again_with_other_bytes_does_not_open_old_values() {
    let ring = ring_with_active("A", &random::<32>());
    ring.add(&id("B"), &key_bytes(&random::<32>())).unwrap();
    let under_a = seal(&ring, b"secret", CTX);
    ring.activate(&id("B")).unwrap();
    ring.remove(&id("A")).unwrap();
    assert_eq!(ring.add(&id("A"), &key_bytes(&random::<32>())), Ok(true));
    assert_eq!(ring.decrypt(&under_a, CTX), Err(Error::Authentication));
}

#[test]
fn decrypting_under_an_unknown_id_names_the_id() {
    let ring = ring_with_active(ID, &random::<32>());
    let value = seal(&ring, b"secret", CTX);
    let other = ring_with_active("other", &random::<32>());
    let err = other.decrypt(&value, CTX).unwrap_err();
    assert_eq!(err, Error::KeyUnavailable(ID.to_owned()));
    assert_eq!(err.to_string(), "keyring key 'AbC123xy' is not available on this node");
}

#[test]
fn decrypting_a_v1_value_under_an_unknown_id_names_the_id() {
    let ring = ring_with_active(ID, &random::<32>());
    let err = ring.decrypt(b"$ke$1$-Gone42-000102030405060708090a0b-00ff", b"").unwrap_err();
    assert_eq!(err.to_string(), "keyring key 'Gone42' is not available on this node");
}

#[test]
fn decrypting_a_v2_value_with_an_invalid_id_is_malformed() {
    let ring = ring_with_active(ID, &random::<32>());
    let (_, raw) = common::split_v2(&seal(&ring, b"secret", CTX));
    let payload = &common::join_v2("x", &raw)[b"$ke$2$-x-".len()..];
    for bad in ["a$b", "a b", "\u{e9}"] {
        let value = [format!("$ke$2$-{bad}-").as_bytes(), payload].concat();
        assert!(matches!(ring.decrypt(&value, CTX), Err(Error::Malformed(_))), "{bad:?}");
    }
}

#[test]
fn encrypting_without_an_active_key_is_refused() {
    let ring = ring();
    ring.add(&id(ID), &key_bytes(&random::<32>())).unwrap();
    let err = ring.encrypt(b"secret", CTX).unwrap_err();
    assert_eq!(err, Error::NoActiveKey);
    assert_eq!(err.to_string(), "no active keyring key on this node");
    assert_eq!(ring.encrypt(b"", CTX), Ok(None), "an empty value needs no key");
}

#[test]
fn accept_legacy_off_refuses_v1_values() {
    let ring = ring_with_active(ID, &random::<32>());
    ring.configure(WriteFormat::V1, true);
    let v1 = seal(&ring, b"secret", CTX);
    assert!(v1.starts_with(b"$ke$1$-"));
    assert_eq!(ring.decrypt(&v1, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
    ring.configure(WriteFormat::V2, false);
    assert!(matches!(ring.decrypt(&v1, CTX), Err(Error::LegacyRefused(_))));
}

#[test]
fn accept_legacy_off_refuses_unmarked_values() {
    let ring = ring_with_active(ID, &random::<32>());
    ring.configure(WriteFormat::V2, false);
    let err = ring.decrypt(b"plaintext substituted in the database", CTX).unwrap_err();
    assert!(matches!(err, Error::LegacyRefused(_)));
    assert!(err.to_string().contains("keyring_accept_legacy"), "{err}");
}

#[test]
fn accept_legacy_off_still_reads_v2_values() {
    let ring = ring_with_active(ID, &random::<32>());
    ring.configure(WriteFormat::V2, false);
    let value = seal(&ring, b"secret", CTX);
    assert_eq!(ring.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn values_with_an_unknown_marker_version_are_errors() {
    let ring = ring_with_active(ID, &random::<32>());
    for value in [&b"$ke$"[..], b"$ke$3$-AbC123xy-AAAA", b"$ke$unavailable$00ff", b"$ke$2", b"$ke$2$AbC123xy-AAAA"] {
        assert!(matches!(ring.decrypt(value, CTX), Err(Error::Malformed(_))), "{value:?}");
    }
}

/// `n` distinct ids with random keys.
fn keys(prefix: &str, n: usize) -> Vec<(KeyId, KeyBytes)> {
    (0..n).map(|i| (id(&format!("{prefix}{i}")), key_bytes(&random::<32>()))).collect()
}

#[test]
fn a_full_region_refuses_another_key() {
    let ring = ring();
    for (key_id, key) in keys("k", SLOTS) {
        assert_eq!(ring.add(&key_id, &key), Ok(true));
    }
    assert_eq!(ring.list().unwrap().ids.len(), SLOTS);
    let err = ring.add(&id("extra"), &key_bytes(&random::<32>())).unwrap_err();
    assert_eq!(err, Error::RingFull(256));
    assert!(matches!(ring.generate(), Err(Error::RingFull(_))));
    // Removing one frees its slot.
    assert_eq!(ring.remove(&id("k7")), Ok(true));
    assert_eq!(ring.add(&id("onemore"), &key_bytes(&random::<32>())), Ok(true));
}

#[test]
fn add_all_adds_and_activates() {
    let ring = ring();
    let batch = keys("b", 3);
    ring.add_all(&batch, Some(&id("b1"))).unwrap();
    let listing = ring.list().unwrap();
    assert_eq!(listing.ids.len(), 3);
    assert_eq!(listing.active, Some(id("b1")));
    assert!(seal(&ring, b"secret", b"").starts_with(b"$ke$2$-b1-"));
    // Again, unchanged material: nothing new, no error.
    ring.add_all(&batch, None).unwrap();
    assert_eq!(ring.list().unwrap().ids.len(), 3);
}

#[test]
fn add_all_beyond_the_region_changes_nothing() {
    let ring = ring();
    for (key_id, key) in keys("k", SLOTS - 5) {
        ring.add(&key_id, &key).unwrap();
    }
    ring.activate(&id("k0")).unwrap();
    let before = ring.list().unwrap();
    let err = ring.add_all(&keys("new", 6), Some(&id("new0"))).unwrap_err();
    assert_eq!(err, Error::RingFull(256));
    assert_eq!(ring.list().unwrap(), before, "all or nothing");
    ring.add_all(&keys("new", 5), Some(&id("new4"))).unwrap();
    assert_eq!(ring.list().unwrap().ids.len(), SLOTS);
    assert_eq!(ring.list().unwrap().active, Some(id("new4")));
}

#[test]
fn add_all_with_a_conflicting_id_changes_nothing() {
    let ring = ring_with_active(ID, &random::<32>());
    let before = ring.list().unwrap();
    let mut batch = keys("n", 3);
    batch.push((id(ID), key_bytes(&random::<32>())));
    assert_eq!(ring.add_all(&batch, Some(&id("n0"))), Err(Error::KeyConflict(ID.to_owned())));
    assert_eq!(ring.list().unwrap(), before);
}

#[test]
fn add_all_with_an_unknown_active_id_changes_nothing() {
    let ring = ring_with_active(ID, &random::<32>());
    let before = ring.list().unwrap();
    assert_eq!(ring.add_all(&keys("n", 3), Some(&id("missing"))), Err(Error::KeyNotFound("missing".to_owned())));
    assert_eq!(ring.list().unwrap(), before);
}

#[test]
fn two_keyrings_on_one_thread_keep_their_own_keys() {
    // The worker cache is per thread; it must follow whichever region is used.
    let a = ring_with_active(ID, &random::<32>());
    let b = ring_with_active(ID, &random::<32>());
    let in_a = seal(&a, b"secret a", CTX);
    let in_b = seal(&b, b"secret b", CTX);
    for _ in 0..3 {
        assert_eq!(a.decrypt(&in_a, CTX).unwrap().as_deref(), Some(&b"secret a"[..]));
        assert_eq!(b.decrypt(&in_a, CTX), Err(Error::Authentication));
        assert_eq!(b.decrypt(&in_b, CTX).unwrap().as_deref(), Some(&b"secret b"[..]));
        assert_eq!(a.decrypt(&in_b, CTX), Err(Error::Authentication));
    }
}

#[test]
fn a_key_added_after_a_miss_is_used_at_once() {
    let source = ring_with_active(ID, &random::<32>());
    let key = source.material(None).unwrap().remove(0).1;
    let value = seal(&source, b"secret", CTX);
    let node = ring_with_active("local", &random::<32>());
    assert_eq!(node.decrypt(&value, CTX), Err(Error::KeyUnavailable(ID.to_owned())));
    node.add(&id(ID), &key).unwrap();
    assert_eq!(node.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
}

#[test]
fn a_ring_shared_across_threads_sees_changes() {
    let ring = ring_with_active("A", &random::<32>());
    let value = seal(&ring, b"secret", CTX);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(ring.decrypt(&value, CTX).unwrap().as_deref(), Some(&b"secret"[..]));
            ring.add(&id("B"), &key_bytes(&random::<32>())).unwrap();
            ring.activate(&id("B")).unwrap();
        })
        .join()
        .unwrap();
    });
    assert!(seal(&ring, b"secret", CTX).starts_with(b"$ke$2$-B-"), "this thread's cache follows the region");
}

#[test]
fn key_material_is_never_shown_by_debug() {
    let key = key_bytes(&[0xab; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"), "KeyBytes Debug shows bytes");
}

#[test]
fn keys_are_listed_in_order_of_addition() {
    let ring = ring();
    for name in ["zeta", "Alpha", "mid", "0"] {
        ring.add(&id(name), &key_bytes(&random::<32>())).unwrap();
    }
    ring.remove(&id("Alpha")).unwrap();
    ring.add(&id("Alpha"), &key_bytes(&random::<32>())).unwrap();
    let (g, _) = ring.generate().unwrap();
    let expected = vec![id("zeta"), id("mid"), id("0"), id("Alpha"), g];
    assert_eq!(ring.list().unwrap().ids, expected);
}

#[test]
fn add_all_with_one_id_twice_and_different_bytes_is_a_conflict() {
    // Ids are checked against each other, not only against the ring: the second
    // pair must not be dropped silently. (blob::import cannot produce this: its
    // inner JSON goes through a map.)
    let ring = ring();
    let batch = vec![(id("dup"), key_bytes(&random::<32>())), (id("dup"), key_bytes(&random::<32>()))];
    assert_eq!(ring.add_all(&batch, None), Err(Error::KeyConflict("dup".to_owned())));
    assert!(ring.list().unwrap().ids.is_empty(), "all or nothing");
}

#[test]
fn check_value_is_the_first_half_of_openssl_hmac_sha256() {
    // docs/formats.md, "Key check value": kcv = first 32 hex chars of
    // HMAC-SHA256(key, "kong-keyring-kcv").
    let key = random::<32>();
    let ring = ring_with_active(ID, &key);
    let mac = common::openssl(
        &["dgst", "-sha256", "-mac", "HMAC", "-macopt", &format!("hexkey:{}", hex::encode(key)), "-hex", "-r"],
        b"kong-keyring-kcv",
    );
    let mac = String::from_utf8(mac).unwrap();
    assert_eq!(ring.check_value(&id(ID)).unwrap(), mac[..32]);
    assert_eq!(kong_keyring::aead::check_value(&key_bytes(&key)), mac[..32]);
    assert_eq!(ring.check_value(&id("nope")), Err(Error::KeyNotFound("nope".to_owned())));
}

#[test]
fn usage_counts_encryptions_per_key() {
    let ring = ring_with_active("A", &random::<32>());
    ring.add(&id("B"), &key_bytes(&random::<32>())).unwrap();
    for _ in 0..3 {
        seal(&ring, b"secret", CTX);
    }
    ring.decrypt(&seal(&ring, b"secret", CTX), CTX).unwrap();
    ring.encrypt(b"", CTX).unwrap();
    let mut usage = ring.usage().unwrap();
    usage.sort();
    assert_eq!(usage, vec![(id("A"), 4), (id("B"), 0)]);
}

#[test]
fn encrypting_more_than_64_mib_is_refused() {
    let ring = ring_with_active(ID, &random::<32>());
    let big = vec![b'p'; (64 << 20) + 1];
    assert!(matches!(ring.encrypt(&big, CTX), Err(Error::TooLarge(..))));
}
