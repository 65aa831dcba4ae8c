//! kong-keyring: field-level encryption keyring for Kong Gateway and OpenResty.
//!
//! The layers, bottom up (docs/design.md, "Layers"):
//! - Rust core, no Lua and no IO: [`format`], [`aead`], [`region`],
//!   [`secure_mem`], [`keyring`], [`wrap`], [`transport`], [`blob`], [`rng`].
//! - Binding: `lua` (mlua, `require "kong.keyring.native"`) and `ffi`
//!   (the `extern "C"` per-field hot path called through LuaJIT FFI).

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests"))]

pub mod aead;
pub mod blob;
pub mod error;
pub mod format;
pub mod keyring;
pub mod region;
pub mod rng;
pub mod secure_mem;
pub mod transport;
pub mod wrap;

pub mod ffi;
pub mod lua;

pub use error::{Error, Kind, Result};
