//! The keyring: key management over the shared region and the per-field
//! encrypt/decrypt both bindings call (docs/design.md, "Keys on the ring";
//! docs/formats.md).
//!
//! Each worker keeps a cache of expanded keys (`FieldKey`) tagged with the
//! region's generation; a call costs one atomic load to revalidate it. The
//! cache lives in locked memory excluded from core dumps (`secure_mem`) and is
//! wiped when it is rebuilt, when the thread ends, and in a freshly forked
//! worker (`init_worker`).

use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::aead::{check_value, FieldKey};
use crate::error::{Error, Result};
use crate::format::{self, KeyBytes, KeyId, Parsed, MARKER, MAX_PLAINTEXT, NONCE_LEN, TAG_LEN};
use crate::region::{fork_epoch, fork_epoch_registered, Region};
use crate::rng::{self, WorkerRng};
use crate::secure_mem::{clear_vector_registers, scrub_stack, LockedBuf, LockedVec};

/// Which format `encrypt` writes (docs/formats.md, "When to write v1";
/// `keyring_write_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFormat {
    /// Authenticated, the default.
    V2,
    /// Kong Enterprise's tagless format, for mixed clusters and roll-back.
    V1,
}

/// What a call into a caller-sized buffer produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `n` bytes were written to the output buffer.
    Written(usize),
    /// The input is the answer (already encrypted, empty, or plaintext on read).
    Unchanged,
    /// The output buffer must hold at least this many bytes; nothing was done.
    NeedSpace(usize),
}

/// The ring's ids in creation order and the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Every id on the ring.
    pub ids: Vec<KeyId>,
    /// The active id, if any.
    pub active: Option<KeyId>,
}

struct CachedKey {
    slot: usize,
    id: KeyId,
    field: FieldKey,
}

/// Key copies handed out by [`Keyring::material`]: in locked memory, wiped on drop.
pub type Material = LockedVec<(KeyId, KeyBytes)>;

/// Scratch buffers larger than this are given back after the call.
const SCRATCH_KEEP: usize = 64 * 1024;

#[derive(Default)]
struct Cache {
    instance: u64,
    generation: u64,
    /// `region::fork_epoch()` when built: a forked child never uses its
    /// parent's copy (not locked in the child), it builds its own.
    epoch: u64,
    /// The expanded keys, in one locked mapping sized for the ring.
    keys: LockedVec<CachedKey>,
    /// The previous `keys`' mapping, wiped, reused by the next rebuild; and
    /// the last snapshot's, likewise: a rebuild maps nothing new.
    spare_keys: LockedVec<CachedKey>,
    spare_views: LockedVec<crate::region::SlotView>,
    active: Option<usize>,
    /// Raw `nonce || ciphertext || tag` of the value being processed. Between
    /// calls it holds only public bytes.
    scratch: LockedBuf,
    /// `header || context` of the value being processed.
    aad: LockedBuf,
}

/// Linear search: rings hold a handful of keys, and comparing short ids beats hashing them.
fn find_key<'a>(keys: &'a [CachedKey], id: &[u8]) -> Option<&'a CachedKey> {
    keys.iter().find(|k| k.id.as_bytes() == id)
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// A keyring living in one shared region.
#[derive(Debug)]
pub struct Keyring {
    region: Region,
    write_v1: AtomicBool,
    accept_legacy: AtomicBool,
}

static GLOBAL: OnceLock<Keyring> = OnceLock::new();

/// Creates the process-wide keyring (once; later calls return the same one,
/// which is how it survives `nginx -s reload`). Call before workers fork.
pub fn init_global() -> Result<&'static Keyring> {
    if let Some(k) = GLOBAL.get() {
        return Ok(k);
    }
    let ring = Keyring::new(Region::create()?);
    let ring = GLOBAL.get_or_init(|| ring);
    ring.region.relock_in_children();
    Ok(ring)
}

/// The process-wide keyring, if `init_global` ran in this process or its parent.
#[inline]
pub fn global() -> Result<&'static Keyring> {
    GLOBAL.get().ok_or(Error::NotInitialized)
}

impl Keyring {
    /// A keyring over `region`, writing v2 and accepting legacy values.
    pub fn new(region: Region) -> Self {
        Keyring { region, write_v1: AtomicBool::new(false), accept_legacy: AtomicBool::new(true) }
    }

    /// Sets `keyring_write_format` and `keyring_accept_legacy` for this process.
    pub fn configure(&self, format: WriteFormat, accept_legacy: bool) {
        self.write_v1.store(format == WriteFormat::V1, Ordering::Relaxed);
        self.accept_legacy.store(accept_legacy, Ordering::Relaxed);
    }

    /// The configured write format.
    pub fn write_format(&self) -> WriteFormat {
        if self.write_v1.load(Ordering::Relaxed) {
            WriteFormat::V1
        } else {
            WriteFormat::V2
        }
    }

    /// The shared region (for locking it in a worker and for tests).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Prepares a freshly forked worker: reseeds, wipes the cache inherited
    /// from the master (memory locks do not survive fork), locks the region in
    /// RAM and checks that this process may lock its own key memory. An error
    /// means keys may reach swap; they still stay out of core dumps.
    pub fn init_worker(&self) -> Result<()> {
        rng::reseed();
        CACHE.with(|cell| *cell.borrow_mut() = Cache::default());
        self.region.lock_in_memory()?;
        crate::secure_mem::lock_probe()
    }

    #[inline]
    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> Result<T> {
        CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            let generation = self.region.generation();
            let instance = self.region.instance();
            if cache.generation != generation || cache.instance != instance || cache.epoch != fork_epoch_registered() {
                self.refresh_and_scrub(&mut cache, instance)?;
            }
            let out = f(&mut cache);
            // AES-NI leaves round keys in the vector registers, which a core
            // dump records
            clear_vector_registers();
            Ok(out)
        })
    }

    /// `refresh`, then the stack it used is overwritten: key schedules are
    /// built by value and moved into locked memory, leaving copies in the frames.
    #[cold]
    #[inline(never)]
    fn refresh_and_scrub(&self, cache: &mut Cache, instance: u64) -> Result<()> {
        let done = self.refresh(cache, instance);
        scrub_stack();
        done
    }

    #[inline(never)]
    fn refresh(&self, cache: &mut Cache, instance: u64) -> Result<()> {
        let epoch = fork_epoch();
        if cache.epoch != epoch {
            // Inherited through fork: wipe it here, build our own below.
            *cache = Cache::default();
        }
        let snapshot = loop {
            match self.region.snapshot_reusing(core::mem::take(&mut cache.spare_views))? {
                Some(s) => break s,
                // A writer is mid-change: keep the copy we have, if it is ours.
                None if cache.instance == instance && cache.epoch == epoch => return Ok(()),
                None => std::thread::yield_now(),
            }
        };
        let n = snapshot.keys().len();
        let mut keys = if cache.spare_keys.capacity() >= n {
            core::mem::take(&mut cache.spare_keys)
        } else {
            LockedVec::with_capacity(n)?
        };
        for view in snapshot.keys() {
            let cached = CachedKey { slot: view.slot, id: view.id.clone(), field: FieldKey::new(&view.key)? };
            if keys.push(cached).is_err() {
                return Err(Error::Os("cache", "more keys than the snapshot".into()));
            }
        }
        // The previous keys are dropped and their memory wiped, kept for next time.
        let mut old = core::mem::replace(&mut cache.keys, keys);
        old.clear();
        cache.spare_keys = old;
        cache.active = snapshot.active;
        cache.generation = snapshot.generation;
        cache.instance = instance;
        cache.epoch = epoch;
        cache.spare_views = snapshot.into_spare();
        Ok(())
    }

    /// Encrypts `plain` for `context` into `out` (docs/formats.md, "Field value
    /// v2"; v1 when configured).
    /// Values that already carry a marker, and the empty string, are `Unchanged`.
    pub fn encrypt_into(&self, plain: &[u8], context: &[u8], out: &mut [u8]) -> Result<Outcome> {
        if plain.is_empty() || plain.starts_with(MARKER) {
            return Ok(Outcome::Unchanged);
        }
        if plain.len() > MAX_PLAINTEXT {
            return Err(Error::TooLarge(plain.len(), MAX_PLAINTEXT));
        }
        let write_v1 = self.write_v1.load(Ordering::Relaxed);
        self.with_cache(|cache| {
            let Some(active) = cache.active else { return Err(Error::NoActiveKey) };
            let key = &cache.keys[active];
            let need = if write_v1 { format::v1_len(&key.id, plain.len()) } else { format::v2_len(&key.id, plain.len()) };
            if out.len() < need {
                return Ok(Outcome::NeedSpace(need));
            }
            let mut nonce = [0u8; NONCE_LEN];
            rng::fill(&mut nonce);
            let scratch = &mut cache.scratch;
            scratch.reset();
            if write_v1 {
                scratch.extend_from_slice(plain)?;
                key.field.keystream_v1(&nonce, scratch);
                format::write_v1(&key.id, &nonce, scratch, out);
            } else {
                let header_len = format::write_v2_header(&key.id, out);
                let aad = &mut cache.aad;
                aad.reset();
                aad.extend_from_slice(&out[..header_len])?;
                aad.extend_from_slice(context)?;
                scratch.extend_from_slice(&nonce)?;
                scratch.extend_from_slice(plain)?;
                let tag = key.field.seal_v2(&nonce, aad, &mut scratch[NONCE_LEN..])?;
                scratch.extend_from_slice(&tag)?;
                format::write_v2_payload(scratch, &mut out[header_len..need])?;
            }
            if scratch.capacity() > SCRATCH_KEEP {
                scratch.release();
            }
            self.region.count_use(key.slot);
            Ok(Outcome::Written(need))
        })?
    }

    /// Decrypts a marked value for `context` into `out`; plaintext comes back
    /// `Unchanged` unless `keyring_accept_legacy` is off (docs/formats.md,
    /// "Reading values").
    pub fn decrypt_into(&self, value: &[u8], context: &[u8], out: &mut [u8]) -> Result<Outcome> {
        let accept_legacy = self.accept_legacy.load(Ordering::Relaxed);
        match format::parse(value)? {
            Parsed::Plain if value.is_empty() || accept_legacy => Ok(Outcome::Unchanged),
            Parsed::Plain => Err(Error::LegacyRefused("unencrypted value")),
            Parsed::V1 { .. } if !accept_legacy => Err(Error::LegacyRefused("legacy v1 value")),
            Parsed::V1 { id, nonce, ciphertext_hex } => {
                let n = ciphertext_hex.len() / 2;
                if out.len() < n {
                    return Ok(Outcome::NeedSpace(n));
                }
                self.with_cache(|cache| {
                    let key = find_key(&cache.keys, id).ok_or_else(|| unavailable(id))?;
                    format::read_v1_ciphertext(ciphertext_hex, &mut out[..n])?;
                    key.field.keystream_v1(&nonce, &mut out[..n]);
                    Ok(Outcome::Written(n))
                })?
            }
            Parsed::V2 { header, id, payload } => self.with_cache(|cache| {
                let key = find_key(&cache.keys, id).ok_or_else(|| unavailable(id))?;
                // Work in `out`: decode nonce || ciphertext || tag, open in place,
                // then move the plaintext to the front. No plaintext copy elsewhere.
                let raw_max = payload.len() * 3 / 4 + 3;
                if out.len() < raw_max {
                    return Ok(Outcome::NeedSpace(raw_max));
                }
                let raw_len = format::read_v2_payload(payload, &mut out[..raw_max])?;
                let n = raw_len - NONCE_LEN - TAG_LEN;
                let (nonce, rest) = out[..raw_len].split_at_mut(NONCE_LEN);
                let (body, tag) = rest.split_at_mut(n);
                let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| Error::Malformed("truncated v2 value"))?;
                let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Malformed("truncated v2 value"))?;
                let aad = &mut cache.aad;
                aad.reset();
                aad.extend_from_slice(header)?;
                aad.extend_from_slice(context)?;
                key.field.open_v2(&nonce, aad, body, &tag)?;
                if aad.capacity() > SCRATCH_KEEP {
                    aad.release();
                }
                out.copy_within(NONCE_LEN..NONCE_LEN + n, 0);
                Ok(Outcome::Written(n))
            })?,
        }
    }

    /// `encrypt_into` with an exactly sized buffer; `None` means unchanged.
    pub fn encrypt(&self, plain: &[u8], context: &[u8]) -> Result<Option<Vec<u8>>> {
        grow_until_done(|out| self.encrypt_into(plain, context, out), 0)
    }

    /// `decrypt_into` with an exactly sized buffer; `None` means unchanged.
    pub fn decrypt(&self, value: &[u8], context: &[u8]) -> Result<Option<Vec<u8>>> {
        grow_until_done(|out| self.decrypt_into(value, context, out), value.len() + 3)
    }

    /// Adds a key (not activated). `Ok(false)` when the same id already holds
    /// the same bytes; another key under that id is a conflict
    /// (docs/design.md, "Keys on the ring").
    pub fn add(&self, id: &KeyId, key: &KeyBytes) -> Result<bool> {
        let guard = self.region.write()?;
        if let Some(slot) = guard.find(id) {
            return if guard.key_matches(slot, key) { Ok(false) } else { Err(Error::KeyConflict(id.to_string())) };
        }
        guard.insert(id, key)?;
        Ok(true)
    }

    /// Generates and adds a key with a fresh id; it is not activated.
    pub fn generate(&self) -> Result<(KeyId, KeyBytes)> {
        let key = KeyBytes::generate(&mut WorkerRng);
        let guard = self.region.write()?;
        let id = loop {
            let id = KeyId::generate(&mut WorkerRng);
            if guard.find(&id).is_none() {
                break id;
            }
        };
        guard.insert(&id, &key)?;
        Ok((id, key))
    }

    /// Makes `id` the key used for writes.
    pub fn activate(&self, id: &KeyId) -> Result<()> {
        let guard = self.region.write()?;
        let slot = guard.find(id).ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        guard.set_active(Some(slot));
        Ok(())
    }

    /// Removes `id` and zeroes its slot. `Ok(false)` when it was not there.
    pub fn remove(&self, id: &KeyId) -> Result<bool> {
        let guard = self.region.write()?;
        let Some(slot) = guard.find(id) else { return Ok(false) };
        if guard.active() == Some(slot) {
            return Err(Error::RemoveActive);
        }
        guard.clear(slot);
        Ok(true)
    }

    /// Adds every key and activates `active`, all or nothing: nothing is
    /// changed when any id conflicts or the ring has no room.
    pub fn add_all(&self, keys: &[(KeyId, KeyBytes)], active: Option<&KeyId>) -> Result<()> {
        // One id twice in the batch must carry the same bytes, like an id on the ring.
        for (i, (id, key)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(other, k)| other == id && !k.same_as(key)) {
                return Err(Error::KeyConflict(id.to_string()));
            }
        }
        let guard = self.region.write()?;
        let mut new = 0;
        for (i, (id, key)) in keys.iter().enumerate() {
            match guard.find(id) {
                Some(slot) if !guard.key_matches(slot, key) => return Err(Error::KeyConflict(id.to_string())),
                Some(_) => {}
                None if keys[..i].iter().any(|(other, _)| other == id) => {}
                None => new += 1,
            }
        }
        if let Some(a) = active {
            if guard.find(a).is_none() && !keys.iter().any(|(id, _)| id == a) {
                return Err(Error::KeyNotFound(a.to_string()));
            }
        }
        if new > guard.free_slots() {
            return Err(Error::RingFull(crate::region::SLOTS));
        }
        for (id, key) in keys {
            if guard.find(id).is_none() {
                guard.insert(id, key)?;
            }
        }
        if let Some(a) = active {
            guard.set_active(guard.find(a));
        }
        Ok(())
    }

    fn snapshot_now(&self) -> Result<crate::region::Snapshot> {
        loop {
            if let Some(s) = self.region.snapshot()? {
                return Ok(s);
            }
            std::thread::yield_now();
        }
    }

    /// Ids in creation order and the active id.
    pub fn list(&self) -> Result<Listing> {
        let snap = self.snapshot_now()?;
        let active = snap.active.map(|i| snap.keys()[i].id.clone());
        let mut ids: Vec<(u64, KeyId)> = snap.keys().iter().map(|k| (k.seq, k.id.clone())).collect();
        ids.sort_by_key(|(seq, _)| *seq);
        Ok(Listing { ids: ids.into_iter().map(|(_, id)| id).collect(), active })
    }

    /// Encryptions counted per key since it was added to this node's region.
    pub fn usage(&self) -> Result<Vec<(KeyId, u64)>> {
        let snap = self.snapshot_now()?;
        Ok(snap.keys().iter().map(|k| (k.id.clone(), self.region.uses(k.slot))).collect())
    }

    /// Copies of the keys named (all keys when `ids` is `None`), for wrapping,
    /// in locked memory wiped on drop.
    pub fn material(&self, ids: Option<&[KeyId]>) -> Result<Material> {
        let snap = self.snapshot_now()?;
        if let Some(ids) = ids {
            if let Some(missing) = ids.iter().find(|id| !snap.keys().iter().any(|k| &k.id == *id)) {
                return Err(Error::KeyNotFound(missing.to_string()));
            }
        }
        let wanted = |k: &&crate::region::SlotView| ids.is_none_or(|ids| ids.contains(&k.id));
        let mut out = LockedVec::with_capacity(snap.keys().iter().filter(wanted).count())?;
        for k in snap.keys().iter().filter(wanted) {
            if out.push((k.id.clone(), KeyBytes::zeroed())).is_err() {
                return Err(Error::Os("material", "more keys than counted".into()));
            }
            if let Some((_, key)) = out.last_mut() {
                key.bytes_mut().copy_from_slice(k.key.as_bytes());
            }
        }
        Ok(out)
    }

    /// The key check value of `id` (docs/formats.md, "Key check value").
    pub fn check_value(&self, id: &KeyId) -> Result<String> {
        let keys = self.material(Some(core::slice::from_ref(id)))?;
        Ok(check_value(&keys[0].1))
    }
}

/// A value naming no key on the ring: malformed if the id itself is invalid.
fn unavailable(id: &[u8]) -> Error {
    match KeyId::new(id) {
        Ok(id) => Error::KeyUnavailable(id.to_string()),
        Err(_) => Error::Malformed("bad key id"),
    }
}

fn grow_until_done(mut call: impl FnMut(&mut [u8]) -> Result<Outcome>, first: usize) -> Result<Option<Vec<u8>>> {
    let mut out = vec![0u8; first];
    loop {
        match call(&mut out)? {
            Outcome::Written(n) => {
                out.truncate(n);
                return Ok(Some(out));
            }
            Outcome::Unchanged => return Ok(None),
            Outcome::NeedSpace(n) => out.resize(n, 0),
        }
    }
}
