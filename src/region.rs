//! The locked shared region (docs/design.md, "The locked shared region").
//!
//! One anonymous `MAP_SHARED` mapping, created in the nginx master before the
//! workers fork, so every worker sees the same bytes. It is excluded from core
//! dumps (`MADV_DONTDUMP`, inherited by children) and each worker `mlock`s it
//! (locks do not survive fork).
//!
//! Layout: a header (magic, layout version, generation, active
//! slot, a robust process-shared mutex) and fixed key slots. All slot fields are
//! atomics, so concurrent readers never race in the Rust memory model.
//!
//! Writers take the mutex and bracket their changes with two generation bumps
//! (odd while writing). Readers never lock: a seqlock read copies the slots and
//! retries if the generation moved. A writer killed by SIGKILL cannot wedge the
//! others: the kernel marks the robust mutex owner-dead, the next locker gets
//! `EOWNERDEAD`, clears half-written slots and makes the generation even again.
//!
//! This is the one module (with `ffi.rs`) allowed `unsafe`; each block says why
//! it is sound.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::error::{Error, Result};
use crate::format::{KeyBytes, KeyId, KEY_LEN, MAX_ID_LEN};
use crate::secure_mem::LockedVec;

/// Number of key slots: far more than any ring holds, small enough to lock.
pub const SLOTS: usize = 256;
const ID_WORDS: usize = (MAX_ID_LEN + 1) / 8;
const KEY_WORDS: usize = KEY_LEN / 8;
const MAGIC: u64 = u64::from_le_bytes(*b"KKRING\0\0");
const LAYOUT_VERSION: u64 = 1;

const EMPTY: u64 = 0;
const ALIVE: u64 = 1;
const WRITING: u64 = 2;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    layout: AtomicU64,
    /// Even when stable, odd while a writer is between its two bumps.
    generation: AtomicU64,
    /// Active slot index + 1; 0 when no key is active.
    active: AtomicU64,
    /// Next value of `Slot::seq`: gives keys their order of addition.
    next_seq: AtomicU64,
    lock: UnsafeCell<libc::pthread_mutex_t>,
}

#[repr(C)]
struct Slot {
    state: AtomicU64,
    id_len: AtomicU64,
    /// Order of addition on this region (1, 2, ...).
    seq: AtomicU64,
    /// Encryptions with this key; counted outside the lock.
    uses: AtomicU64,
    id: [AtomicU64; ID_WORDS],
    key: [AtomicU64; KEY_WORDS],
}

#[repr(C)]
struct Layout {
    header: Header,
    slots: [Slot; SLOTS],
}

/// A key as seen by one consistent read of the region. SlotViews exist only
/// inside a [`Snapshot`]'s locked vector, which hands out references, never
/// values: the key bytes are written there in place and wiped with it.
#[derive(Debug)]
pub struct SlotView {
    /// Slot index, stable while the key stays on the ring.
    pub slot: usize,
    /// The key id.
    pub id: KeyId,
    /// The key material (in the snapshot's locked memory, wiped with it).
    pub key: KeyBytes,
    /// Order of addition: larger was added later.
    pub seq: u64,
}

/// One consistent read of every live slot, in locked memory that is wiped
/// when the snapshot is dropped.
#[derive(Debug)]
pub struct Snapshot {
    /// Generation the read is valid for (always even).
    pub generation: u64,
    /// Index into `keys()` of the active key.
    pub active: Option<usize>,
    keys: LockedVec<SlotView>,
}

impl Snapshot {
    /// Live keys in slot order.
    pub fn keys(&self) -> &[SlotView] {
        &self.keys
    }

    /// Its memory, wiped, for the next `snapshot_reusing`.
    pub fn into_spare(mut self) -> LockedVec<SlotView> {
        self.keys.clear();
        self.keys
    }
}

/// The shared mapping. Cloning is not offered: one per process, or per test.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<Layout>,
    len: usize,
    /// Random per mapping, inherited by forked workers: tells worker caches
    /// which region they describe (tests map several in one process).
    instance: u64,
}

// SAFETY: every field of the mapping is an atomic or the process-shared mutex,
// which is made for concurrent use; the pointer itself never changes.
unsafe impl Send for Region {}
// SAFETY: as above, all shared access goes through atomics or the mutex.
unsafe impl Sync for Region {}

static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static FORK_HOOK: Once = Once::new();
/// The process-wide region, locked again in every forked child: nginx
/// daemonizes (forks) after `init_by_lua`, so the master itself is a child of
/// the process that created and locked the region.
static RELOCK_ADDR: AtomicUsize = AtomicUsize::new(0);
static RELOCK_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
    crate::secure_mem::relock_all();
    let (addr, len) = (RELOCK_ADDR.load(Ordering::Relaxed), RELOCK_LEN.load(Ordering::Relaxed));
    if addr != 0 {
        // SAFETY: the registered region is the process-wide one, never unmapped
        // (leaked in a static); mlock is a plain system call, safe in a fork
        // handler. A failure is left to `init_worker()` to report.
        unsafe {
            libc::mlock(addr as *const libc::c_void, len);
        }
    }
}

/// `fork_epoch()` without registering the fork handler: for callers that
/// hold a region, whose creation registered it (the per-field calls).
#[inline]
pub fn fork_epoch_registered() -> u64 {
    FORK_EPOCH.load(Ordering::Relaxed)
}

/// A number that changes in every child after `fork()`; the CSPRNG reseeds
/// when it sees a new value.
pub fn fork_epoch() -> u64 {
    FORK_HOOK.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function that only touches an
        // atomic, which is async-signal-safe as a fork handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    FORK_EPOCH.load(Ordering::Relaxed)
}

fn os_error(what: &'static str) -> Error {
    Error::Os(what, std::io::Error::last_os_error().to_string())
}

fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    for (i, w) in words.iter().enumerate() {
        let mut chunk = [0u8; 8];
        let start = (i * 8).min(bytes.len());
        let end = (start + 8).min(bytes.len());
        chunk[..end - start].copy_from_slice(&bytes[start..end]);
        w.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        zeroize::Zeroize::zeroize(&mut chunk);
    }
}

fn load_bytes(words: &[AtomicU64], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut w = words[i].load(Ordering::Relaxed).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
        zeroize::Zeroize::zeroize(&mut w);
    }
}

impl Slot {
    fn id_matches(&self, id: &KeyId) -> bool {
        let len = self.id_len.load(Ordering::Relaxed) as usize;
        if len != id.as_bytes().len() {
            return false;
        }
        let mut buf = [0u8; ID_WORDS * 8];
        load_bytes(&self.id, &mut buf[..len]);
        &buf[..len] == id.as_bytes()
    }

    /// Appends this slot to `out`, its key bytes copied straight into the
    /// locked vector. `Ok(false)` when the id does not parse (a torn read the
    /// generation check will catch); `Err(())` when `out` is full.
    fn push_view(&self, slot: usize, out: &mut LockedVec<SlotView>) -> core::result::Result<bool, ()> {
        let len = (self.id_len.load(Ordering::Relaxed) as usize).min(MAX_ID_LEN);
        let mut id = [0u8; ID_WORDS * 8];
        load_bytes(&self.id, &mut id[..len]);
        let Ok(id) = KeyId::new(&id[..len]) else { return Ok(false) };
        let view = SlotView { slot, id, key: KeyBytes::zeroed(), seq: self.seq.load(Ordering::Relaxed) };
        out.push(view).map_err(|_| ())?;
        if let Some(last) = out.last_mut() {
            load_bytes(&self.key, last.key.bytes_mut());
        }
        Ok(true)
    }

    /// Compares the stored key with `key` without an early exit or a copy.
    fn key_matches(&self, key: &KeyBytes) -> bool {
        let mut diff = 0u64;
        for (word, chunk) in self.key.iter().zip(key.as_bytes().chunks_exact(8)) {
            let mut mine = [0u8; 8];
            mine.copy_from_slice(chunk);
            diff |= word.load(Ordering::Relaxed) ^ u64::from_le_bytes(mine);
            zeroize::Zeroize::zeroize(&mut mine);
        }
        diff == 0
    }

    fn clear(&self) {
        self.state.store(WRITING, Ordering::Relaxed);
        store_bytes(&self.key, &[]);
        store_bytes(&self.id, &[]);
        self.id_len.store(0, Ordering::Relaxed);
        self.seq.store(0, Ordering::Relaxed);
        self.uses.store(0, Ordering::Relaxed);
        self.state.store(EMPTY, Ordering::Relaxed);
    }
}

impl Region {
    /// Maps a fresh region. Call before the workers fork.
    pub fn create() -> Result<Region> {
        let size = core::mem::size_of::<Layout>();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = size.div_ceil(page) * page;
        // SAFETY: an anonymous shared mapping with no address hint; the result is
        // checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let ptr = NonNull::new(addr.cast::<Layout>()).ok_or_else(|| os_error("mmap"))?;
        let mut instance = [0u8; 8];
        crate::rng::fill(&mut instance);
        let region = Region { ptr, len, instance: u64::from_le_bytes(instance) };
        // SAFETY: `addr`/`len` describe the mapping created above.
        if unsafe { libc::madvise(addr, len, libc::MADV_DONTDUMP) } != 0 {
            return Err(os_error("madvise(MADV_DONTDUMP)"));
        }
        // The master holds the keys too (it decrypts in `init` after a reload):
        // lock here as well, best effort; each worker locks again and reports.
        if region.lock_in_memory().is_err() {
            crate::secure_mem::note_lock_failure();
        }
        region.init_lock()?;
        let h = region.header();
        h.layout.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        fork_epoch();
        Ok(region)
    }

    fn init_lock(&self) -> Result<()> {
        // SAFETY: the attribute lives on the stack for the duration of these
        // calls and is destroyed after initializing the mutex; the mutex memory
        // is inside the fresh zero-filled mapping that nobody else uses yet.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = core::mem::zeroed();
            if libc::pthread_mutexattr_init(&mut attr) != 0 {
                return Err(Error::Os("pthread_mutexattr_init", "failed".into()));
            }
            let ok = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED) == 0
                && libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST) == 0
                && libc::pthread_mutex_init(self.header().lock.get(), &attr) == 0;
            libc::pthread_mutexattr_destroy(&mut attr);
            if !ok {
                return Err(Error::Os("pthread_mutex_init", "robust shared mutex unavailable".into()));
            }
        }
        Ok(())
    }

    fn layout(&self) -> &Layout {
        // SAFETY: `ptr` points to a live mapping of at least size_of::<Layout>()
        // bytes for the lifetime of `self`; all fields are valid when zeroed.
        unsafe { self.ptr.as_ref() }
    }

    fn header(&self) -> &Header {
        &self.layout().header
    }

    /// Locks the mapping in RAM for this process (call in every worker).
    pub fn lock_in_memory(&self) -> Result<()> {
        // SAFETY: the range is exactly our mapping.
        if unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) } != 0 {
            return Err(os_error("mlock"));
        }
        Ok(())
    }

    /// Locks this region again in every child forked from now on (the nginx
    /// master after daemonizing, workers before their `init_worker`). Only for
    /// a region that is never unmapped: the process-wide one.
    pub fn relock_in_children(&'static self) {
        RELOCK_LEN.store(self.len, Ordering::Relaxed);
        RELOCK_ADDR.store(self.ptr.as_ptr() as usize, Ordering::Relaxed);
        fork_epoch();
    }

    /// Start address and length of the mapping (for `/proc/PID/smaps` checks).
    pub fn span(&self) -> (usize, usize) {
        (self.ptr.as_ptr() as usize, self.len)
    }

    /// Identifies this mapping among others in one process (tests make several).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The generation, one atomic load: what worker caches revalidate against.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Ordering::Acquire)
    }

    /// Counts one encryption with the key in `slot`.
    #[inline]
    pub fn count_use(&self, slot: usize) {
        if let Some(s) = self.layout().slots.get(slot) {
            s.uses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Encryptions counted for `slot`.
    pub fn uses(&self, slot: usize) -> u64 {
        self.layout().slots.get(slot).map_or(0, |s| s.uses.load(Ordering::Relaxed))
    }

    /// A consistent copy of every live slot, without locking. `Ok(None)` when a
    /// live writer is mid-change: the caller may keep its previous copy.
    pub fn snapshot(&self) -> Result<Option<Snapshot>> {
        self.snapshot_reusing(LockedVec::new())
    }

    /// `snapshot`, written into `spare` (an empty vector from
    /// `Snapshot::into_spare`) when it has room: no new mapping per read.
    pub fn snapshot_reusing(&self, mut spare: LockedVec<SlotView>) -> Result<Option<Snapshot>> {
        let h = self.header();
        let mut torn = false;
        loop {
            let g1 = h.generation.load(Ordering::Acquire);
            if g1 & 1 == 1 {
                if self.repair_if_abandoned()? {
                    continue;
                }
                return Ok(None);
            }
            let active = h.active.load(Ordering::Relaxed) as usize;
            let slots = &self.layout().slots;
            // Sized once, in locked memory: never a reallocation that leaves
            // key bytes behind. After a torn read, room for every slot.
            let alive = slots.iter().filter(|s| s.state.load(Ordering::Relaxed) == ALIVE).count();
            let room = if torn { SLOTS } else { alive };
            let mut keys = if spare.capacity() >= room && spare.is_empty() {
                core::mem::take(&mut spare)
            } else {
                LockedVec::with_capacity(room)?
            };
            let mut active_index = None;
            let mut overflow = false;
            for (i, slot) in slots.iter().enumerate() {
                if slot.state.load(Ordering::Relaxed) != ALIVE {
                    continue;
                }
                match slot.push_view(i, &mut keys) {
                    Ok(true) if active == i + 1 => active_index = Some(keys.len() - 1),
                    Ok(_) => {}
                    // More alive slots than counted: a writer came by; read again.
                    Err(()) => {
                        overflow = true;
                        break;
                    }
                }
            }
            fence(Ordering::Acquire);
            if h.generation.load(Ordering::Relaxed) == g1 && !overflow {
                return Ok(Some(Snapshot { generation: g1, active: active_index, keys }));
            }
            keys.clear();
            spare = keys;
            torn = true;
        }
    }

    /// Tries the lock to see whether an odd generation was left by a dead
    /// writer; repairs it if so. `Ok(true)` when the generation may be even now.
    fn repair_if_abandoned(&self) -> Result<bool> {
        // SAFETY: the mutex was initialized in `create` and lives in the mapping.
        let rc = unsafe { libc::pthread_mutex_trylock(self.header().lock.get()) };
        match rc {
            libc::EBUSY => Ok(false),
            0 | libc::EOWNERDEAD => {
                let guard = self.finish_lock(rc)?;
                // Nobody is writing: make the generation even again on release.
                drop(guard);
                Ok(true)
            }
            _ => Err(Error::Os("pthread_mutex_trylock", std::io::Error::from_raw_os_error(rc).to_string())),
        }
    }

    /// Takes the write lock; blocks only while another worker is mid-change
    /// (microseconds, no IO under the lock).
    pub fn write(&self) -> Result<WriteGuard<'_>> {
        // SAFETY: the mutex was initialized in `create` and lives in the mapping.
        let rc = unsafe { libc::pthread_mutex_lock(self.header().lock.get()) };
        self.finish_lock(rc)
    }

    fn finish_lock(&self, rc: i32) -> Result<WriteGuard<'_>> {
        let h = self.header();
        match rc {
            0 => {}
            libc::EOWNERDEAD => {
                // The previous writer died mid-change: drop what it half wrote.
                for slot in &self.layout().slots {
                    if slot.state.load(Ordering::Relaxed) == WRITING {
                        slot.clear();
                    }
                }
                let active = h.active.load(Ordering::Relaxed) as usize;
                let alive = active > 0
                    && self.layout().slots.get(active - 1).is_some_and(|s| s.state.load(Ordering::Relaxed) == ALIVE);
                if !alive {
                    h.active.store(0, Ordering::Relaxed);
                }
                // SAFETY: we hold the mutex (EOWNERDEAD transfers ownership).
                if unsafe { libc::pthread_mutex_consistent(h.lock.get()) } != 0 {
                    return Err(os_error("pthread_mutex_consistent"));
                }
            }
            _ => return Err(Error::Os("pthread_mutex_lock", std::io::Error::from_raw_os_error(rc).to_string())),
        }
        // Make the generation odd (it already is if a dead writer left it so).
        if h.generation.load(Ordering::Relaxed) & 1 == 0 {
            h.generation.fetch_add(1, Ordering::Relaxed);
        }
        fence(Ordering::Release);
        Ok(WriteGuard { region: self })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; `self` is gone afterwards. The
        // process-wide region is leaked on purpose and never reaches this.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Exclusive access to the slots; releasing it publishes the changes.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    region: &'a Region,
}

impl WriteGuard<'_> {
    fn slots(&self) -> &[Slot; SLOTS] {
        &self.region.layout().slots
    }

    /// Slot holding `id`, if any.
    pub fn find(&self, id: &KeyId) -> Option<usize> {
        self.slots().iter().position(|s| s.state.load(Ordering::Relaxed) == ALIVE && s.id_matches(id))
    }

    /// Whether `slot` is alive and holds `key` (compared in place, no copy).
    pub fn key_matches(&self, slot: usize, key: &KeyBytes) -> bool {
        self.slots().get(slot).is_some_and(|s| s.state.load(Ordering::Relaxed) == ALIVE && s.key_matches(key))
    }

    /// Free slots left.
    pub fn free_slots(&self) -> usize {
        self.slots().iter().filter(|s| s.state.load(Ordering::Relaxed) == EMPTY).count()
    }

    /// Stores a new key; the slot becomes visible only once complete.
    pub fn insert(&self, id: &KeyId, key: &KeyBytes) -> Result<usize> {
        let (index, slot) = self
            .slots()
            .iter()
            .enumerate()
            .find(|(_, s)| s.state.load(Ordering::Relaxed) == EMPTY)
            .ok_or(Error::RingFull(SLOTS))?;
        slot.state.store(WRITING, Ordering::Relaxed);
        store_bytes(&slot.id, id.as_bytes());
        slot.id_len.store(id.as_bytes().len() as u64, Ordering::Relaxed);
        store_bytes(&slot.key, key.as_bytes());
        let seq = self.region.header().next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        slot.seq.store(seq, Ordering::Relaxed);
        slot.uses.store(0, Ordering::Relaxed);
        slot.state.store(ALIVE, Ordering::Relaxed);
        Ok(index)
    }

    /// Zeroes a slot (key bytes included).
    pub fn clear(&self, slot: usize) {
        if let Some(s) = self.slots().get(slot) {
            s.clear();
        }
    }

    /// The active slot.
    pub fn active(&self) -> Option<usize> {
        match self.region.header().active.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    /// Sets the active slot.
    pub fn set_active(&self, slot: Option<usize>) {
        self.region.header().active.store(slot.map_or(0, |s| s as u64 + 1), Ordering::Relaxed);
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let h = self.region.header();
        // Odd -> even, publishing every store made under the lock.
        h.generation.fetch_add(1, Ordering::Release);
        // SAFETY: this guard exists only while we hold the mutex.
        unsafe {
            libc::pthread_mutex_unlock(h.lock.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> KeyId {
        KeyId::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn writes_are_seen_by_snapshots_and_bump_the_generation() {
        let r = Region::create().unwrap();
        let g0 = r.generation();
        let slot = r.write().unwrap().insert(&id("a1"), &KeyBytes::from_slice(&[1; 32]).unwrap()).unwrap();
        assert_eq!(r.generation(), g0 + 2);
        let snap = r.snapshot().unwrap().unwrap();
        assert_eq!(snap.keys().len(), 1);
        assert_eq!(snap.keys()[0].slot, slot);
        assert_eq!(snap.keys()[0].id, id("a1"));
        assert!(snap.keys()[0].key.same_as(&KeyBytes::from_slice(&[1; 32]).unwrap()));
        assert_eq!(snap.active, None);
    }

    #[test]
    fn a_live_writer_makes_snapshots_wait_and_a_cleared_slot_is_zero() {
        let r = Region::create().unwrap();
        let g = r.write().unwrap();
        let slot = g.insert(&id("max255"), &KeyBytes::from_slice(&[9; 32]).unwrap()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| assert!(r.snapshot().unwrap().is_none()));
        });
        g.clear(slot);
        drop(g);
        let s = &r.layout().slots[slot];
        assert!(s.key.iter().chain(s.id.iter()).all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn a_writer_killed_holding_the_lock_does_not_wedge_the_region() {
        let r = Region::create().unwrap();
        r.write().unwrap().insert(&id("keep"), &KeyBytes::from_slice(&[2; 32]).unwrap()).unwrap();
        // Everything the child needs is allocated before fork (other test threads may hold malloc's lock).
        let (half, key) = (id("half"), KeyBytes::from_slice(&[3; 32]).unwrap());
        // SAFETY: the child only takes the lock, half-writes a slot and waits to be killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let g = r.write().unwrap();
            let s = g.insert(&half, &key).unwrap();
            g.slots()[s].state.store(WRITING, Ordering::Relaxed);
            core::mem::forget(g);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        while r.generation() & 1 == 0 {
            std::thread::yield_now();
        }
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, core::ptr::null_mut(), 0);
        }
        let snap = r.snapshot().unwrap().unwrap();
        assert_eq!(snap.keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["keep"]);
        let g = r.write().unwrap();
        assert_eq!(g.find(&half), None);
        drop(g);
        assert_eq!(r.generation() & 1, 0);
    }
}
