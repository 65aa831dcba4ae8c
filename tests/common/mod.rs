//! Helpers shared by the integration tests.
//!
//! The independent implementation is the `openssl` CLI (OpenSSL 3): AES-256-CTR
//! for the v1 keystream and the GCM counter blocks, `openssl kdf` for HKDF,
//! `openssl pkeyutl` for RSA. GCM's GHASH, which the CLI does not expose, is
//! written here from NIST SP 800-38D §6.3–6.4 (Algorithm 1, bit by bit), so
//! nothing below calls this crate's cipher code or its RustCrypto dependencies.
//!
//! Panic messages name the openssl subcommand only: the arguments carry keys.

#![allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use kong_keyring::format::{KeyBytes, KeyId};
use kong_keyring::keyring::Keyring;
use kong_keyring::region::Region;
use kong_keyring::wrap::{PrivateKey, PublicKey};

/// The id most tests use: 8 alphanumerics, like a generated id
/// (docs/formats.md, "Key ids").
pub const ID: &str = "AbC123xy";
/// A DAO-style context (docs/design.md, "Contexts").
pub const CTX: &[u8] = b"basicauth_credentials:fc46ce48-c1d6-4078-9f51-5a777350a8a2";
/// `info` of the v2 field subkey (docs/formats.md, "Field value v2").
pub const V2_INFO: &str = "kong-keyring field v2";

/// A directory under `.tmp/cargo-tests/`, unique per call, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".tmp/cargo-tests")
            .join(format!("{}-{label}-{}-{n}", env!("CARGO_CRATE_NAME"), std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// Writes `bytes` to `name` in this directory and returns the path as text.
    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path.join(name);
        fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs `program args` with `input` on stdin; stdout, or stderr as the error.
pub fn run(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feed stdin from a thread so a large input cannot deadlock against stdout.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

/// `openssl args` with `input` on stdin; panics naming only the subcommand.
pub fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    run("openssl", args, input).unwrap_or_else(|e| panic!("openssl {} failed: {e}", args[0]))
}

/// Fresh random bytes (test data only).
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).unwrap();
    b
}

/// Random bytes that cannot be mistaken for a marked value.
pub fn random_plaintext(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    getrandom::fill(&mut b).unwrap();
    if let Some(first) = b.first_mut() {
        *first = b'p';
    }
    b
}

pub fn id(text: &str) -> KeyId {
    KeyId::new(text.as_bytes()).unwrap()
}

pub fn key_bytes(raw: &[u8; 32]) -> KeyBytes {
    KeyBytes::from_slice(raw).unwrap()
}

/// A keyring over a fresh region (each test its own: the worker cache is per thread).
pub fn ring() -> Keyring {
    Keyring::new(Region::create().unwrap())
}

/// A keyring holding `raw` under `key_id`, active.
pub fn ring_with_active(key_id: &str, raw: &[u8; 32]) -> Keyring {
    let ring = ring();
    assert!(ring.add(&id(key_id), &key_bytes(raw)).unwrap());
    ring.activate(&id(key_id)).unwrap();
    ring
}

/// `ring.encrypt` that must produce a value.
pub fn seal(ring: &Keyring, plain: &[u8], context: &[u8]) -> Vec<u8> {
    ring.encrypt(plain, context).unwrap().expect("a non-empty plaintext is encrypted")
}

/// Standard base64 by `openssl base64 -A` (no line breaks).
pub fn openssl_base64(bytes: &[u8]) -> String {
    String::from_utf8(openssl(&["base64", "-A"], bytes)).unwrap()
}

/// GCM's keystream without the tag, by `openssl enc -aes-256-ctr` from the
/// counter block `nonce || 00000002` (docs/formats.md, "Field value v1").
/// Encrypts and decrypts.
pub fn openssl_gcm_keystream(key: &[u8; 32], nonce: &[u8; 12], data: &[u8]) -> Vec<u8> {
    let iv = format!("{}00000002", hex::encode(nonce));
    openssl(&["enc", "-aes-256-ctr", "-K", &hex::encode(key), "-iv", &iv, "-nosalt"], data)
}

/// AES-256 of whole blocks, by `openssl enc -aes-256-ecb -nopad`.
pub fn openssl_aes_blocks(key: &[u8; 32], blocks: &[u8]) -> Vec<u8> {
    openssl(&["enc", "-aes-256-ecb", "-nopad", "-K", &hex::encode(key)], blocks)
}

/// `HKDF-SHA256(ikm = key, no salt, info)` by `openssl kdf` (RFC 5869).
pub fn openssl_hkdf(key: &[u8; 32], info: &str) -> [u8; 32] {
    let out = openssl(
        &[
            "kdf",
            "-binary",
            "-keylen",
            "32",
            "-kdfopt",
            "digest:SHA256",
            "-kdfopt",
            &format!("hexkey:{}", hex::encode(key)),
            "-kdfopt",
            &format!("info:{info}"),
            "HKDF",
        ],
        b"",
    );
    out.as_slice().try_into().unwrap()
}

/// Multiplication in GF(2^128) with GCM's bit order (SP 800-38D §6.3, Algorithm 1).
fn gf128_mul(x: u128, y: u128) -> u128 {
    const R: u128 = 0xe1 << 120;
    let (mut z, mut v) = (0u128, y);
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ R } else { v >> 1 };
    }
    z
}

/// GHASH_H(A || pad || C || pad || [len(A)]64 || [len(C)]64) (SP 800-38D §6.4, §7.1 step 5).
fn ghash(h: u128, aad: &[u8], ciphertext: &[u8]) -> u128 {
    let mut y = 0u128;
    for part in [aad, ciphertext] {
        for chunk in part.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            y = gf128_mul(y ^ u128::from_be_bytes(block), h);
        }
    }
    let lengths = (u128::from(aad.len() as u64 * 8) << 64) | u128::from(ciphertext.len() as u64 * 8);
    gf128_mul(y ^ lengths, h)
}

/// The GCM tag of `ciphertext` (SP 800-38D §7.1): `E(K, J0) xor GHASH`, with
/// `H = E(K, 0^128)` and `J0 = nonce || 00000001`, both blocks from openssl.
pub fn independent_gcm_tag(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
    let mut blocks = [0u8; 32];
    blocks[16..28].copy_from_slice(nonce);
    blocks[31] = 1;
    let enc = openssl_aes_blocks(key, &blocks);
    let h = u128::from_be_bytes(enc[..16].try_into().unwrap());
    let e_j0 = u128::from_be_bytes(enc[16..32].try_into().unwrap());
    (ghash(h, aad, ciphertext) ^ e_j0).to_be_bytes()
}

/// AES-256-GCM seal built from the pieces above: `ciphertext || tag`.
pub fn independent_gcm_seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = openssl_gcm_keystream(key, nonce, plain);
    let tag = independent_gcm_tag(key, nonce, aad, &out);
    out.extend_from_slice(&tag);
    out
}

/// A v2 value (docs/formats.md, "Field value v2") built without this crate:
/// openssl HKDF and AES, our GHASH.
pub fn independent_v2(key: &[u8; 32], key_id: &str, context: &[u8], nonce: &[u8; 12], plain: &[u8]) -> String {
    let subkey = openssl_hkdf(key, V2_INFO);
    let header = format!("$ke$2$-{key_id}-");
    let aad = [header.as_bytes(), context].concat();
    let raw = [&nonce[..], &independent_gcm_seal(&subkey, nonce, &aad, plain)].concat();
    format!("{header}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Splits a v2 value into its id and decoded `nonce || ciphertext || tag`.
pub fn split_v2(value: &[u8]) -> (String, Vec<u8>) {
    let text = std::str::from_utf8(value).unwrap();
    let rest = text.strip_prefix("$ke$2$-").unwrap();
    let (key_id, payload) = rest.split_once('-').unwrap();
    (key_id.to_owned(), URL_SAFE_NO_PAD.decode(payload).unwrap())
}

/// Reassembles a v2 value from an id and raw `nonce || ciphertext || tag`.
pub fn join_v2(key_id: &str, raw: &[u8]) -> Vec<u8> {
    format!("$ke$2$-{key_id}-{}", URL_SAFE_NO_PAD.encode(raw)).into_bytes()
}

/// One RSA key pair in every PEM form the core accepts (docs/formats.md, "RSA keys").
#[derive(Debug)]
pub struct RsaPair {
    /// `openssl genrsa`: PKCS#8 `PRIVATE KEY`.
    pub private_pkcs8: String,
    /// `openssl rsa -traditional`: PKCS#1 `RSA PRIVATE KEY`.
    pub private_pkcs1: String,
    /// `openssl rsa -pubout`: SPKI `PUBLIC KEY`.
    pub public_spki: String,
    /// `openssl rsa -RSAPublicKey_out`: PKCS#1 `RSA PUBLIC KEY`.
    pub public_pkcs1: String,
}

/// How a key is handed to the core (docs/formats.md, "RSA keys"): SPKI /
/// PKCS#8 or PKCS#1 PEM, inline or as base64 of the PEM text.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    Pem,
    Pkcs1Pem,
    Base64Pem,
    Base64Pkcs1Pem,
}

impl RsaPair {
    pub fn public_text(&self, form: Form) -> String {
        match form {
            Form::Pem => self.public_spki.clone(),
            Form::Pkcs1Pem => self.public_pkcs1.clone(),
            Form::Base64Pem => base64_of(&self.public_spki),
            Form::Base64Pkcs1Pem => base64_of(&self.public_pkcs1),
        }
    }

    pub fn private_text(&self, form: Form) -> String {
        match form {
            Form::Pem => self.private_pkcs8.clone(),
            Form::Pkcs1Pem => self.private_pkcs1.clone(),
            Form::Base64Pem => base64_of(&self.private_pkcs8),
            Form::Base64Pkcs1Pem => base64_of(&self.private_pkcs1),
        }
    }

    pub fn public(&self, form: Form) -> PublicKey {
        PublicKey::parse(self.public_text(form).as_bytes()).unwrap()
    }

    pub fn private(&self, form: Form) -> PrivateKey {
        PrivateKey::parse(self.private_text(form).as_bytes()).unwrap()
    }
}

fn generate_pair(bits: &str) -> RsaPair {
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    let private_pkcs8 = text(openssl(&["genrsa", bits], b""));
    let pem = private_pkcs8.as_bytes();
    RsaPair {
        private_pkcs1: text(openssl(&["rsa", "-traditional"], pem)),
        public_spki: text(openssl(&["rsa", "-pubout"], pem)),
        public_pkcs1: text(openssl(&["rsa", "-RSAPublicKey_out"], pem)),
        private_pkcs8,
    }
}

/// The 2048-bit pair most tests use (generated once per test binary).
pub fn rsa() -> &'static RsaPair {
    static PAIR: OnceLock<RsaPair> = OnceLock::new();
    PAIR.get_or_init(|| generate_pair("2048"))
}

/// A second 2048-bit pair, for "wrong private key" cases.
pub fn other_rsa() -> &'static RsaPair {
    static PAIR: OnceLock<RsaPair> = OnceLock::new();
    PAIR.get_or_init(|| generate_pair("2048"))
}

/// A 1024-bit pair, which every entry point must refuse.
pub fn small_rsa() -> &'static RsaPair {
    static PAIR: OnceLock<RsaPair> = OnceLock::new();
    PAIR.get_or_init(|| generate_pair("1024"))
}

/// Base64 of a PEM text, the third accepted form (docs/formats.md, "RSA keys").
pub fn base64_of(pem: &str) -> String {
    STANDARD.encode(pem)
}

/// `openssl pkeyutl -encrypt` of `secret` for `public_pem` with `padding` options.
pub fn openssl_rsa_encrypt(public_pem: &str, padding: &[&str], secret: &[u8]) -> Vec<u8> {
    let dir = TempDir::new("pkeyutl-encrypt");
    let public = dir.write("public.pem", public_pem.as_bytes());
    let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", &public];
    args.extend_from_slice(padding);
    openssl(&args, secret)
}

/// `openssl pkeyutl -decrypt` of `wrapped` with `private_pem` and `padding`
/// options; the error is openssl's stderr.
pub fn try_openssl_rsa_decrypt(private_pem: &str, padding: &[&str], wrapped: &[u8]) -> Result<Vec<u8>, String> {
    let dir = TempDir::new("pkeyutl-decrypt");
    let private = dir.write("private.pem", private_pem.as_bytes());
    let mut args = vec!["pkeyutl", "-decrypt", "-inkey", &private];
    args.extend_from_slice(padding);
    run("openssl", &args, wrapped)
}

/// `try_openssl_rsa_decrypt` that must succeed.
pub fn openssl_rsa_decrypt(private_pem: &str, padding: &[&str], wrapped: &[u8]) -> Vec<u8> {
    try_openssl_rsa_decrypt(private_pem, padding, wrapped).unwrap_or_else(|e| panic!("openssl pkeyutl -decrypt failed: {e}"))
}

/// Whether unpadding `wrapped` with `padding` yields exactly `key`. The
/// negative checks use this rather than "decryption fails": an OAEP block
/// always starts with 0x00, so PKCS#1 v1.5 unpadding accepts about one in
/// 400 of them (when the next byte happens to be 0x02) and returns other
/// bytes.
pub fn openssl_rsa_recovers(private_pem: &str, padding: &[&str], wrapped: &[u8], key: &[u8]) -> bool {
    try_openssl_rsa_decrypt(private_pem, padding, wrapped).is_ok_and(|opened| opened == key)
}

/// Kong Enterprise's padding (docs/formats.md, "Export blob v1", "Recovery
/// rows" `$ker$1$`).
pub const PKCS1: &[&str] = &["-pkeyopt", "rsa_padding_mode:pkcs1"];
/// Ours: RSA-OAEP with SHA-256 and MGF1-SHA-256 (docs/formats.md, "Export
/// blob v2", "Recovery rows" `$ker$2$`).
pub const OAEP_SHA256: &[&str] = &[
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];
/// OpenSSL's OAEP default (SHA-1), which is not what docs/formats.md,
/// "Recovery rows" asks for.
pub const OAEP_SHA1: &[&str] = &["-pkeyopt", "rsa_padding_mode:oaep"];
