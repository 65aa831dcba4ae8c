//! `require "kong.keyring.native"`: the mlua binding. Conversion and error
//! mapping only; the work is in the core.
//!
//! Every function returns its result, or `nil, err` for an expected failure.
//! Wrong argument types raise: `encrypt`/`decrypt` with the same text as the
//! Lua API (`bad 'value' argument: string expected, got number`), the others
//! with mlua's "bad argument" errors. Panics are caught and become
//! `nil, "internal error ..."`, so a bug never kills a worker.
//! Bytes travel as Lua strings (`as_bytes`/`create_string`), never as UTF-8.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::prelude::*;

use crate::blob;
use crate::error::{Error, Kind};
use crate::format::{KeyBytes, KeyId};
use crate::keyring::{global, init_global, Keyring, Listing, WriteFormat};
use crate::secure_mem::{lock_failures, scrub_stack};
use crate::transport;
use crate::wrap::{PrivateKey, PublicKey};

/// Why a call did not return values.
enum Failure {
    /// An expected failure: `nil, message`.
    Expected(Error),
    /// A programmer error (wrong argument type): raised as a Lua error.
    Raise(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Expected(e)
    }
}

type Out = Result<LuaMultiValue, Failure>;

/// Registers `f` so that failures become `nil, message, kind` (or a raised error
/// for wrong argument types) and a panic cannot escape. Functions that handle
/// key material (`scrub`) overwrite the stack they used before returning to
/// Lua (`secure_mem::scrub_stack`); the per-field ones do not need to.
fn expose_with<A, F>(lua: &Lua, scrub: bool, f: F) -> LuaResult<LuaFunction>
where
    A: FromLuaMulti,
    F: Fn(&Lua, A) -> Out + 'static,
{
    lua.create_function(move |lua, args: A| {
        let outcome = catch_unwind(AssertUnwindSafe(|| f(lua, args)));
        if scrub {
            scrub_stack();
        }
        match outcome {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(Failure::Expected(e))) => (LuaNil, e.to_string(), e.kind().name()).into_lua_multi(lua),
            Ok(Err(Failure::Raise(message))) => Err(LuaError::runtime(message)),
            Err(_) => (LuaNil, "internal error in kong.keyring (panic caught)", Kind::Internal.name()).into_lua_multi(lua),
        }
    })
}

fn expose<A, F>(lua: &Lua, f: F) -> LuaResult<LuaFunction>
where
    A: FromLuaMulti,
    F: Fn(&Lua, A) -> Out + 'static,
{
    expose_with(lua, true, f)
}

fn lua_err(e: LuaError) -> Failure {
    Failure::Expected(Error::Os("lua", e.to_string()))
}

/// A string argument, or a raised error naming it and the type received.
fn string_arg(name: &str, value: &LuaValue, optional: bool) -> Result<Option<LuaString>, Failure> {
    match value {
        LuaValue::String(s) => Ok(Some(s.clone())),
        LuaValue::Nil if optional => Ok(None),
        // LuaJIT has one number type; mlua reports integral ones as "integer"
        LuaValue::Integer(_) => Err(Failure::Raise(format!("bad '{name}' argument: string expected, got number"))),
        other => Err(Failure::Raise(format!("bad '{name}' argument: string expected, got {}", other.type_name()))),
    }
}

fn ret(lua: &Lua, values: impl IntoLuaMulti) -> Out {
    values.into_lua_multi(lua).map_err(lua_err)
}

fn key_id(s: &LuaString) -> Result<KeyId, Failure> {
    Ok(KeyId::new(&s.as_bytes())?)
}

fn listing_table(lua: &Lua, listing: &Listing) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    t.set("ids", lua.create_sequence_from(listing.ids.iter().map(KeyId::as_str))?)?;
    t.set("active", listing.active.as_ref().map(KeyId::as_str))?;
    Ok(t)
}

fn ring() -> Result<&'static Keyring, Failure> {
    Ok(global()?)
}

fn init(lua: &Lua, opts: Option<LuaTable>) -> Out {
    let (mut format, mut accept_legacy) = (WriteFormat::V2, true);
    if let Some(opts) = opts {
        match opts.get::<Option<LuaString>>("write_format").map_err(lua_err)? {
            None => {}
            Some(s) if &*s.as_bytes() == b"v2" => format = WriteFormat::V2,
            Some(s) if &*s.as_bytes() == b"v1" => format = WriteFormat::V1,
            Some(_) => return Err(Error::Blob("option", "write_format must be 'v1' or 'v2'".into()).into()),
        }
        if let Some(b) = opts.get::<Option<bool>>("accept_legacy").map_err(lua_err)? {
            accept_legacy = b;
        }
    }
    init_global()?.configure(format, accept_legacy);
    ret(lua, true)
}

fn init_worker(lua: &Lua, _: ()) -> Out {
    ring()?.init_worker()?;
    ret(lua, true)
}

type FieldOp = fn(&Keyring, &[u8], &[u8]) -> crate::Result<Option<Vec<u8>>>;

/// encrypt / decrypt through mlua: nil stays nil, the input comes back when
/// the core leaves it unchanged.
fn field(lua: &Lua, op: FieldOp, value: LuaValue, context: LuaValue) -> Out {
    let Some(value) = string_arg("value", &value, true)? else { return ret(lua, LuaNil) };
    let context = string_arg("context", &context, true)?;
    let ctx = context.as_ref().map(|c| c.as_bytes().to_vec()).unwrap_or_default();
    match op(ring()?, &value.as_bytes(), &ctx)? {
        Some(bytes) => ret(lua, lua.create_string(bytes).map_err(lua_err)?),
        None => ret(lua, value),
    }
}

fn encrypt(lua: &Lua, (value, context): (LuaValue, LuaValue)) -> Out {
    field(lua, Keyring::encrypt, value, context)
}

fn decrypt(lua: &Lua, (value, context): (LuaValue, LuaValue)) -> Out {
    field(lua, Keyring::decrypt, value, context)
}

fn generate(lua: &Lua, _: ()) -> Out {
    let (id, key) = ring()?.generate()?;
    ret(lua, (id.as_str(), key.to_base64().as_str()))
}

fn add(lua: &Lua, (id, key): (LuaString, LuaString)) -> Out {
    let added = ring()?.add(&key_id(&id)?, &KeyBytes::from_base64(&key.as_bytes())?)?;
    ret(lua, added)
}

fn activate(lua: &Lua, id: LuaString) -> Out {
    ring()?.activate(&key_id(&id)?)?;
    ret(lua, true)
}

fn remove(lua: &Lua, id: LuaString) -> Out {
    ret(lua, ring()?.remove(&key_id(&id)?)?)
}

fn keys(lua: &Lua, _: ()) -> Out {
    ret(lua, listing_table(lua, &ring()?.list()?).map_err(lua_err)?)
}

fn export(lua: &Lua, public_pem: LuaString) -> Out {
    let public = PublicKey::parse(&public_pem.as_bytes())?;
    let ring = ring()?;
    let listing = ring.list()?;
    let blob = blob::export(&ring.material(None)?, listing.active.as_ref(), &public, ring.write_format())?;
    ret(lua, blob)
}

fn import(lua: &Lua, (data, private_pem): (LuaString, LuaString)) -> Out {
    let private = PrivateKey::parse(&private_pem.as_bytes())?;
    let imported = blob::import(&data.as_bytes(), &private)?;
    ring()?.add_all(&imported.keys, imported.active.as_ref())?;
    let listing = Listing { ids: imported.keys.iter().map(|(id, _)| id.clone()).collect(), active: imported.active };
    ret(lua, listing_table(lua, &listing).map_err(lua_err)?)
}

fn recovery_row(lua: &Lua, (id, public_pem): (LuaString, LuaString)) -> Out {
    let public = PublicKey::parse(&public_pem.as_bytes())?;
    let ring = ring()?;
    let material = ring.material(Some(&[key_id(&id)?]))?;
    let row = blob::recovery_row(&material[0].1, &public, ring.write_format())?;
    ret(lua, (row, public.fingerprint()?))
}

/// Opens `row` with `private`, checks the key against `check` (when given)
/// and adds it as `id`.
fn add_opened(id: &LuaString, row: &LuaString, private: &PrivateKey, check: Option<LuaString>) -> Result<(), Failure> {
    let id = key_id(id)?;
    let key = blob::open_recovery_row(&row.as_bytes(), private)?;
    if let Some(check) = check {
        if !crate::aead::check_value(&key).as_bytes().eq_ignore_ascii_case(&check.as_bytes()) {
            return Err(Error::CheckValue(id.to_string()).into());
        }
    }
    ring()?.add(&id, &key)?;
    Ok(())
}

fn recover(lua: &Lua, (id, row, private_pem, check): (LuaString, LuaString, LuaString, Option<LuaString>)) -> Out {
    add_opened(&id, &row, &PrivateKey::parse(&private_pem.as_bytes())?, check)?;
    ret(lua, true)
}

fn transport_key(lua: &Lua, _: ()) -> Out {
    ret(lua, transport::public_pem()?)
}

/// `recover` with this node's transport key (a key another node sent here).
fn receive(lua: &Lua, (id, row, check): (LuaString, LuaString, Option<LuaString>)) -> Out {
    // the outer error: no transport key; the inner one: the row or the id
    let added = transport::with_private(|private| Ok(add_opened(&id, &row, private, check)))?;
    added?;
    ret(lua, true)
}

fn public_key_id(lua: &Lua, public_pem: LuaString) -> Out {
    ret(lua, PublicKey::parse(&public_pem.as_bytes())?.fingerprint()?)
}

/// The `recovery_key_id` of a private key's public half (validates the key).
fn private_key_id(lua: &Lua, private_pem: LuaString) -> Out {
    ret(lua, PrivateKey::parse(&private_pem.as_bytes())?.public().fingerprint()?)
}

fn usage(lua: &Lua, _: ()) -> Out {
    let t = lua.create_table().map_err(lua_err)?;
    for (id, n) in ring()?.usage()? {
        t.set(id.as_str(), n).map_err(lua_err)?;
    }
    ret(lua, t)
}

fn check_value(lua: &Lua, id: LuaString) -> Out {
    ret(lua, ring()?.check_value(&key_id(&id)?)?)
}

fn region(lua: &Lua, _: ()) -> Out {
    let (address, size) = ring()?.region().span();
    let t = lua.create_table().map_err(lua_err)?;
    t.set("address", format!("{address:x}")).map_err(lua_err)?;
    t.set("size", size).map_err(lua_err)?;
    // Private key mappings mlock refused (RLIMIT_MEMLOCK): still not dumped.
    t.set("lock_failures", lock_failures()).map_err(lua_err)?;
    ret(lua, t)
}

/// Test support, exported only with `KONG_KEYRING_TEST_HOOKS=1`: takes the
/// write lock and blocks for `ms`, so a spec can SIGKILL a worker holding it.
fn hold_write_lock(lua: &Lua, ms: u64) -> Out {
    let guard = ring()?.region().write()?;
    std::thread::sleep(std::time::Duration::from_millis(ms));
    drop(guard);
    ret(lua, true)
}

fn ffi_entries(lua: &Lua) -> LuaResult<LuaTable> {
    let t = lua.create_table()?;
    for (name, ptr) in crate::ffi::entry_points() {
        t.set(name, LuaLightUserData(ptr))?;
    }
    Ok(t)
}

/// Module entry: `luaopen_kong_keyring_native`.
#[cfg_attr(feature = "module", mlua::lua_module(name = "kong_keyring_native"))]
pub fn kong_keyring_native(lua: &Lua) -> LuaResult<LuaTable> {
    let m = lua.create_table()?;
    m.set("init", expose(lua, init)?)?;
    m.set("init_worker", expose(lua, init_worker)?)?;
    m.set("encrypt", expose_with(lua, false, encrypt)?)?;
    m.set("decrypt", expose_with(lua, false, decrypt)?)?;
    m.set("generate", expose(lua, generate)?)?;
    m.set("add", expose(lua, add)?)?;
    m.set("activate", expose(lua, activate)?)?;
    m.set("remove", expose(lua, remove)?)?;
    m.set("keys", expose(lua, keys)?)?;
    m.set("export", expose(lua, export)?)?;
    m.set("import", expose(lua, import)?)?;
    m.set("recovery_row", expose(lua, recovery_row)?)?;
    m.set("recover", expose(lua, recover)?)?;
    m.set("transport_key", expose(lua, transport_key)?)?;
    m.set("receive", expose(lua, receive)?)?;
    m.set("public_key_id", expose(lua, public_key_id)?)?;
    m.set("private_key_id", expose(lua, private_key_id)?)?;
    m.set("usage", expose(lua, usage)?)?;
    m.set("check_value", expose(lua, check_value)?)?;
    m.set("region", expose(lua, region)?)?;
    m.set("ffi", ffi_entries(lua)?)?;
    if std::env::var_os("KONG_KEYRING_TEST_HOOKS").is_some_and(|v| v == "1") {
        m.set("hold_write_lock", expose(lua, hold_write_lock)?)?;
    }
    Ok(m)
}
