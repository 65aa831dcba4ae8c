//! The per-field hot path as plain C functions, called from LuaJIT through FFI
//! (LuaJIT compiles FFI calls into traces; it cannot compile Lua C-API calls).
//!
//! Contract for both functions, mirroring `resty.core.base` return codes:
//! - `in`/`ctx` point to `in_len`/`ctx_len` readable bytes (may be NULL when 0);
//! - `out` has `*out_len` writable bytes; on return `*out_len` is the length
//!   written, or the length needed when the result is `KK_AGAIN`;
//! - `err` has `*err_len` writable bytes; on failure it receives a message
//!   (truncated to fit) and `*err_len` its length. Messages never carry key
//!   bytes or plaintext.
//!
//! Each body runs under `catch_unwind`: a panic is reported as `KK_ERROR` and
//! never unwinds into LuaJIT.
#![allow(unsafe_code)]

use core::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Kind;
use crate::keyring::{global, Outcome};

/// Done; `*out_len` bytes of `out` are the result.
pub const KK_OK: c_int = 0;
/// The input is the result (already encrypted, empty, or plaintext on read).
pub const KK_UNCHANGED: c_int = 1;
/// Failed; `err` holds the reason.
pub const KK_ERROR: c_int = -1;
/// `out` is too small; `*out_len` is the size needed. Nothing was done.
pub const KK_AGAIN: c_int = -2;
/// Bad input (a malformed, oversized or refused value); `err` says why.
pub const KK_INVALID: c_int = -3;
/// The value does not verify under its key and context; `err` says so.
pub const KK_AUTHENTICATION: c_int = -4;
/// The value names a key this node does not hold, or no key is active; `err` says which.
pub const KK_NO_KEY: c_int = -5;

type FieldFn = fn(&[u8], &[u8], &mut [u8]) -> crate::Result<Outcome>;

/// Reads a caller buffer, tolerating NULL for empty input.
///
/// # Safety
/// `ptr` must point to `len` readable bytes when `len > 0`.
unsafe fn input<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by this function's contract.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }
}

/// # Safety
/// The pointers follow the module-level contract.
#[allow(clippy::too_many_arguments, reason = "mirrors the C signature of kk_encrypt / kk_decrypt")]
unsafe fn call(
    f: FieldFn,
    inp: *const u8,
    in_len: usize,
    ctx: *const u8,
    ctx_len: usize,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut u8,
    err_len: *mut usize,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller passes `in_len` readable bytes at `inp` and `ctx_len` at `ctx`.
        let (value, context) = unsafe { (input(inp, in_len), input(ctx, ctx_len)) };
        // SAFETY: the caller passes `*out_len` writable bytes at `out`, not aliasing the inputs.
        let out = unsafe {
            if out.is_null() || *out_len == 0 {
                &mut [][..]
            } else {
                core::slice::from_raw_parts_mut(out, *out_len)
            }
        };
        f(value, context, out)
    }));
    let (code, written, message) = match result {
        Ok(Ok(Outcome::Written(n))) => (KK_OK, n, None),
        Ok(Ok(Outcome::Unchanged)) => (KK_UNCHANGED, 0, None),
        Ok(Ok(Outcome::NeedSpace(n))) => (KK_AGAIN, n, None),
        Ok(Err(e)) => {
            let code = match e.kind() {
                Kind::Invalid => KK_INVALID,
                Kind::Authentication => KK_AUTHENTICATION,
                Kind::Unavailable => KK_NO_KEY,
                _ => KK_ERROR,
            };
            (code, 0, Some(e.to_string()))
        }
        Err(_) => (KK_ERROR, 0, Some("internal error in kong.keyring (panic caught)".to_string())),
    };
    // SAFETY: `out_len` and `err_len` are valid for writes per the contract; `err` has `*err_len` bytes.
    unsafe {
        *out_len = written;
        if let Some(m) = message {
            let n = m.len().min(*err_len);
            if !err.is_null() {
                core::ptr::copy_nonoverlapping(m.as_ptr(), err, n);
            }
            *err_len = n;
        }
    }
    code
}

fn encrypt_global(value: &[u8], context: &[u8], out: &mut [u8]) -> crate::Result<Outcome> {
    global()?.encrypt_into(value, context, out)
}

fn decrypt_global(value: &[u8], context: &[u8], out: &mut [u8]) -> crate::Result<Outcome> {
    global()?.decrypt_into(value, context, out)
}

/// Encrypts one field value with the active key (docs/formats.md, "Field value v2").
///
/// # Safety
/// Pointers follow the module-level contract.
#[no_mangle]
pub unsafe extern "C" fn kk_encrypt(
    inp: *const u8,
    in_len: usize,
    ctx: *const u8,
    ctx_len: usize,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut u8,
    err_len: *mut usize,
) -> c_int {
    // SAFETY: forwarded unchanged under the same contract.
    unsafe { call(encrypt_global, inp, in_len, ctx, ctx_len, out, out_len, err, err_len) }
}

/// Decrypts one field value (v2, or v1 when legacy values are accepted).
///
/// # Safety
/// Pointers follow the module-level contract.
#[no_mangle]
pub unsafe extern "C" fn kk_decrypt(
    inp: *const u8,
    in_len: usize,
    ctx: *const u8,
    ctx_len: usize,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut u8,
    err_len: *mut usize,
) -> c_int {
    // SAFETY: forwarded unchanged under the same contract.
    unsafe { call(decrypt_global, inp, in_len, ctx, ctx_len, out, out_len, err, err_len) }
}

/// The two entry points as addresses, handed to Lua as light userdata so
/// `ffi.cast` can call them without knowing where the library lives on disk.
pub fn entry_points() -> [(&'static str, *mut core::ffi::c_void); 2] {
    [("encrypt", kk_encrypt as *mut core::ffi::c_void), ("decrypt", kk_decrypt as *mut core::ffi::c_void)]
}

/// Instruction-set extensions the crates may use without a runtime check,
/// as `/proc/cpuinfo` names them. `make build` enables them when the build
/// host has them (scripts/cargo-build.sh); `KONG_KEYRING_PORTABLE=1` does not.
const COMPILED_FOR: [(bool, &str); 3] = [
    (cfg!(target_feature = "aes"), "aes"),
    (cfg!(target_feature = "pclmulqdq"), "pclmulqdq"),
    (cfg!(target_feature = "avx2"), "avx2"),
];

const REQUIRED_CPU_LEN: usize = 64;

const fn required_cpu() -> [u8; REQUIRED_CPU_LEN] {
    let mut out = [0u8; REQUIRED_CPU_LEN];
    let mut n = 0;
    let mut i = 0;
    while i < COMPILED_FOR.len() {
        let (enabled, name) = COMPILED_FOR[i];
        if enabled {
            if n > 0 {
                out[n] = b' ';
                n += 1;
            }
            let name = name.as_bytes();
            let mut j = 0;
            while j < name.len() {
                out[n] = name[j];
                n += 1;
                j += 1;
            }
        }
        i += 1;
    }
    out
}

/// The space-separated list of [`COMPILED_FOR`] features this build uses,
/// NUL-terminated. Data, not code: a library moved to a CPU without them
/// would die on SIGILL in its first AES call, so the Lua loader reads this
/// symbol (`kong/keyring/cpu.lua`) before running any code of the library.
#[no_mangle]
#[allow(non_upper_case_globals, reason = "a C symbol, read through LuaJIT FFI")]
pub static kk_required_cpu: [u8; REQUIRED_CPU_LEN] = required_cpu();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_cpu_lists_exactly_the_compiled_features() {
        let len = kk_required_cpu.iter().position(|&b| b == 0).unwrap();
        let listed = core::str::from_utf8(&kk_required_cpu[..len]).unwrap();
        let expected: Vec<&str> = COMPILED_FOR.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        assert_eq!(listed.split_whitespace().collect::<Vec<_>>(), expected);
    }
}
