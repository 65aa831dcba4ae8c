//! docs/formats.md, "Recovery rows": recovery rows
//! (`keyring_keys.key_encrypted`) and the `recovery_key_id`. Our rows open with
//! `openssl pkeyutl`, rows made by `openssl pkeyutl` (Kong Enterprise's
//! `$ker$1$`, our `$ker$2$`) open with ours, and the fingerprint is `sha256sum`
//! of openssl's DER.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{
    key_bytes, openssl, openssl_base64, openssl_rsa_decrypt, openssl_rsa_encrypt, openssl_rsa_recovers, other_rsa,
    random, rsa, run, Form, OAEP_SHA1, OAEP_SHA256, PKCS1,
};
use kong_keyring::aead::check_value;
use kong_keyring::blob;
use kong_keyring::keyring::WriteFormat;
use kong_keyring::wrap::PublicKey;
use kong_keyring::Error;

fn check_row_round_trip(format: WriteFormat, public: Form, private: Form) {
    let key = random::<32>();
    let row = blob::recovery_row(&key_bytes(&key), &rsa().public(public), format).unwrap();
    let prefix = match format {
        WriteFormat::V2 => "$ker$2$",
        WriteFormat::V1 => "$ker$1$",
    };
    assert!(row.starts_with(prefix), "{format:?} row starts with {prefix}");
    let back = blob::open_recovery_row(row.as_bytes(), &rsa().private(private)).unwrap();
    assert!(back.as_bytes() == &key, "the recovered key differs");
}

macro_rules! row_round_trips {
    ($($name:ident: $format:expr, $public:expr, $private:expr;)+) => {$(
        #[test]
        fn $name() {
            check_row_round_trip($format, $public, $private);
        }
    )+};
}

row_round_trips! {
    ker2_row_round_trips_with_spki_and_pkcs8: WriteFormat::V2, Form::Pem, Form::Pem;
    ker2_row_round_trips_with_pkcs1_keys: WriteFormat::V2, Form::Pkcs1Pem, Form::Pkcs1Pem;
    ker2_row_round_trips_with_base64_of_pem_keys: WriteFormat::V2, Form::Base64Pem, Form::Base64Pkcs1Pem;
    ker1_row_round_trips_in_v1_mode: WriteFormat::V1, Form::Pem, Form::Pem;
    ker1_row_round_trips_in_v1_mode_with_pkcs1_keys: WriteFormat::V1, Form::Pkcs1Pem, Form::Base64Pkcs1Pem;
}

/// The base64 body of a row after its `$ker$N$` prefix.
fn body(row: &str) -> Vec<u8> {
    openssl(&["base64", "-d", "-A"], &row.as_bytes()[7..])
}

#[test]
fn our_ker2_row_opens_with_openssl_oaep_sha256_only() {
    let key = random::<32>();
    let row = blob::recovery_row(&key_bytes(&key), &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    let wrapped = body(&row);
    assert!(openssl_rsa_decrypt(&rsa().private_pkcs8, OAEP_SHA256, &wrapped) == key, "openssl recovers the key");
    assert!(!openssl_rsa_recovers(&rsa().private_pkcs8, OAEP_SHA1, &wrapped, &key), "not OAEP-SHA-1");
    assert!(!openssl_rsa_recovers(&rsa().private_pkcs8, PKCS1, &wrapped, &key), "not PKCS#1 v1.5");
}

#[test]
fn our_ker1_row_opens_with_openssl_pkcs1_like_kong_enterprise() {
    let key = random::<32>();
    let row = blob::recovery_row(&key_bytes(&key), &rsa().public(Form::Pem), WriteFormat::V1).unwrap();
    assert!(openssl_rsa_decrypt(&rsa().private_pkcs8, PKCS1, &body(&row)) == key, "openssl recovers the key");
}

/// A row of `prefix` + base64 of `key` wrapped by openssl with `padding`.
fn openssl_row(prefix: &str, padding: &[&str], key: &[u8]) -> String {
    format!("{prefix}{}", openssl_base64(&openssl_rsa_encrypt(&rsa().public_spki, padding, key)))
}

#[test]
fn ee_ker1_row_built_with_openssl_opens() {
    let key = random::<32>();
    let row = openssl_row("$ker$1$", PKCS1, &key);
    for form in [Form::Pem, Form::Pkcs1Pem, Form::Base64Pem] {
        let back = blob::open_recovery_row(row.as_bytes(), &rsa().private(form)).unwrap();
        assert!(back.as_bytes() == &key, "{form:?}: the recovered key differs");
    }
}

#[test]
fn ker2_row_built_with_openssl_oaep_sha256_opens() {
    let key = random::<32>();
    let row = openssl_row("$ker$2$", OAEP_SHA256, &key);
    let back = blob::open_recovery_row(row.as_bytes(), &rsa().private(Form::Pem)).unwrap();
    assert!(back.as_bytes() == &key, "the recovered key differs");
}

#[test]
fn ker2_row_wrapped_with_oaep_sha1_fails() {
    let row = openssl_row("$ker$2$", OAEP_SHA1, &random::<32>());
    assert!(matches!(blob::open_recovery_row(row.as_bytes(), &rsa().private(Form::Pem)), Err(Error::Rsa(_))));
}

#[test]
fn ker2_row_wrapped_with_pkcs1_fails() {
    let row = openssl_row("$ker$2$", PKCS1, &random::<32>());
    assert!(matches!(blob::open_recovery_row(row.as_bytes(), &rsa().private(Form::Pem)), Err(Error::Rsa(_))));
}

#[test]
fn ker2_row_under_the_wrong_private_key_fails() {
    let row = blob::recovery_row(&key_bytes(&random::<32>()), &rsa().public(Form::Pem), WriteFormat::V2).unwrap();
    assert!(matches!(blob::open_recovery_row(row.as_bytes(), &other_rsa().private(Form::Pem)), Err(Error::Rsa(_))));
}

#[test]
fn ker1_row_under_the_wrong_private_key_never_yields_the_key_and_its_check_value_differs() {
    // `$ker$1$` has no integrity, and rsa's PKCS#1 v1.5 decryption uses implicit
    // rejection (the Marvin countermeasure): a wrong private key gives a
    // pseudo-random message instead of an error. About one row in 500
    // (measured: 10 of 5000) comes out 32 bytes long and "opens" to a bogus
    // key. Only the key check value (docs/formats.md, "Key check value") can
    // tell, which is why recovery must compare it (`native.recover`'s
    // `check_value` argument).
    let wrong = other_rsa().private(Form::Pem);
    let public = rsa().public(Form::Pem);
    const ROWS: usize = 300;
    let mut bogus = 0;
    for _ in 0..ROWS {
        let key = key_bytes(&random::<32>());
        let row = blob::recovery_row(&key, &public, WriteFormat::V1).unwrap();
        match blob::open_recovery_row(row.as_bytes(), &wrong) {
            Err(e) => assert!(matches!(e, Error::KeyLength | Error::Rsa(_)), "{e}"),
            Ok(other) => {
                bogus += 1;
                assert!(!other.same_as(&key), "a wrong private key recovered the real key");
                assert_ne!(check_value(&other), check_value(&key));
            }
        }
    }
    eprintln!("{bogus} of {ROWS} $ker$1$ rows opened to a bogus key under the wrong private key");
}

#[test]
fn a_row_holding_a_key_of_the_wrong_length_fails() {
    for len in [16, 31, 33] {
        for (prefix, padding) in [("$ker$1$", PKCS1), ("$ker$2$", OAEP_SHA256)] {
            let row = openssl_row(prefix, padding, &vec![7; len]);
            // `$ker$1$` reports a wrong length like a wrong key (implicit rejection, below).
            match blob::open_recovery_row(row.as_bytes(), &rsa().private(Form::Pem)) {
                Err(Error::KeyLength | Error::Rsa(_)) => {}
                other => panic!("{prefix} with {len} bytes: {other:?}"),
            }
        }
    }
}

macro_rules! garbage_rows {
    ($($name:ident: $row:expr;)+) => {$(
        #[test]
        fn $name() {
            let row: String = $row;
            assert!(blob::open_recovery_row(row.as_bytes(), &rsa().private(Form::Pem)).is_err(), "{row:?}");
        }
    )+};
}

garbage_rows! {
    an_empty_row_fails: String::new();
    a_row_without_a_prefix_fails: openssl_base64(&random::<256>());
    a_row_of_an_unknown_version_fails: format!("$ker$3${}", openssl_base64(&random::<256>()));
    a_row_marked_as_a_field_value_fails: format!("$ke$2${}", openssl_base64(&random::<256>()));
    a_row_that_is_not_base64_fails: "$ker$2$not base64!".to_owned();
    a_row_with_a_short_body_fails: format!("$ker$2${}", openssl_base64(&[1; 10]));
    a_row_with_a_random_body_fails: format!("$ker$2${}", openssl_base64(&random::<256>()));
    a_row_with_an_empty_body_fails: "$ker$1$".to_owned();
}

/// `sha256sum` of `openssl rsa -pubin -outform DER` of `pem`.
fn openssl_fingerprint(pem: &str, pkcs1: bool) -> String {
    let inform = if pkcs1 { "-RSAPublicKey_in" } else { "-pubin" };
    let der = openssl(&["rsa", inform, "-outform", "DER"], pem.as_bytes());
    let sum = String::from_utf8(run("sha256sum", &[], &der).unwrap()).unwrap();
    sum.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn recovery_key_id_is_sha256_of_the_public_key_der() {
    let expected = openssl_fingerprint(&rsa().public_spki, false);
    assert_eq!(expected, openssl_fingerprint(&rsa().public_pkcs1, true), "openssl gives one SPKI DER for both forms");
    for form in [Form::Pem, Form::Pkcs1Pem, Form::Base64Pem, Form::Base64Pkcs1Pem] {
        assert_eq!(rsa().public(form).fingerprint().unwrap(), expected, "{form:?}");
    }
    assert_eq!(rsa().private(Form::Pem).public().fingerprint().unwrap(), expected);
}

#[test]
fn recovery_key_ids_differ_between_keys() {
    let a = rsa().public(Form::Pem).fingerprint().unwrap();
    let b = other_rsa().public(Form::Pem).fingerprint().unwrap();
    assert_ne!(a, b);
    assert_eq!(b, openssl_fingerprint(&other_rsa().public_spki, false));
}

#[test]
fn a_public_key_written_back_as_pem_reads_the_same_in_openssl() {
    let pem = rsa().public(Form::Pkcs1Pem).to_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(openssl_fingerprint(&pem, false), openssl_fingerprint(&rsa().public_spki, false));
    assert!(PublicKey::parse(pem.as_bytes()).is_ok());
}
