//! Private memory for key material (docs/design.md, "Memory that holds keys").
//!
//! Everything that holds a key outside the shared region lives in [`Pages`]:
//! an anonymous private mapping that is
//! - excluded from core dumps (`MADV_DONTDUMP`, inherited by forked children),
//! - locked in RAM (`mlock`) when `RLIMIT_MEMLOCK` allows; when it does not,
//!   the mapping is still excluded from dumps and wiped, and the failure is
//!   counted ([`lock_failures`]) so `init_worker()` can report it,
//! - wiped (volatile zeroes over every byte, whatever was moved in or out of
//!   it) before it is unmapped.
//!
//! Two containers sit on top: [`LockedVec`], a vector of fixed capacity that
//! never reallocates (the worker's expanded keys, snapshots of the region,
//! keys read from a blob, the random generator), and [`LockedBuf`], a growable
//! byte buffer whose growth maps new pages, copies, and wipes the old ones
//! (the cache's scratch buffers, JSON of export blobs). The wipe is of the
//! memory, not of the values: an element moved out (`remove`, `mem::replace`)
//! leaves nothing behind, and nothing is skipped because a value moved.
//!
//! `mlock` does not survive `fork`: a worker drops what it inherited from the
//! master (the keyring's `init_worker`) and builds its own.
//!
//! Like `region.rs`, this module is allowed `unsafe`; each block says why it
//! is sound.
#![allow(unsafe_code)]

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use zeroize::Zeroize;

use crate::error::{Error, Result};

static LOCK_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Live mappings (start, length), so a forked child can lock what it
/// inherited (`relock_all`): nginx daemonizes after `init_by_lua`, and a
/// cache the master built there would otherwise be unlocked in the real
/// master. Fixed size and lock-free: the fork handler may not allocate or
/// take locks. A mapping that finds no free entry is simply not relocked.
const REGISTRY: usize = 64;
static LIVE_ADDR: [AtomicUsize; REGISTRY] = [const { AtomicUsize::new(0) }; REGISTRY];
static LIVE_LEN: [AtomicUsize; REGISTRY] = [const { AtomicUsize::new(0) }; REGISTRY];

fn register(addr: usize, len: usize) {
    for (a, l) in LIVE_ADDR.iter().zip(LIVE_LEN.iter()) {
        if a.load(Ordering::Relaxed) == 0 {
            l.store(len, Ordering::Relaxed);
            if a.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }
}

fn unregister(addr: usize) {
    for a in &LIVE_ADDR {
        if a.compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return;
        }
    }
}

/// Locks again every live mapping; called in a forked child (the fork
/// handler in `region.rs`), where locks inherited from the parent are gone.
pub(crate) fn relock_all() {
    for (a, l) in LIVE_ADDR.iter().zip(LIVE_LEN.iter()) {
        let addr = a.load(Ordering::Acquire);
        if addr != 0 {
            // SAFETY: a registered mapping is live until `Pages::drop`
            // unregisters it before unmapping; a child has one thread, so it
            // cannot be unmapped meanwhile. mlock is a plain system call.
            unsafe {
                libc::mlock(addr as *const libc::c_void, l.load(Ordering::Relaxed));
            }
        }
    }
}

/// Mappings of this process that `mlock` refused (RLIMIT_MEMLOCK too small):
/// they are still excluded from core dumps and wiped, but may be swapped out.
pub fn lock_failures() -> u64 {
    LOCK_FAILURES.load(Ordering::Relaxed)
}

/// Counts a lock that failed elsewhere (the shared region in the master).
pub fn note_lock_failure() {
    LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
}

fn os_error(what: &'static str) -> Error {
    Error::Os(what, std::io::Error::last_os_error().to_string())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
}

/// One anonymous private mapping: excluded from core dumps, locked when the
/// limit allows, wiped before it is unmapped. Owns its memory like a `Box`.
#[derive(Debug)]
pub struct Pages {
    ptr: NonNull<u8>,
    len: usize,
    locked: bool,
}

// SAFETY: `Pages` owns its mapping exclusively (like `Box<[u8]>`); moving it to
// another thread moves that ownership.
unsafe impl Send for Pages {}
// SAFETY: shared references only give shared access to the bytes.
unsafe impl Sync for Pages {}

impl Pages {
    /// Maps at least `min_len` bytes (whole pages, at least one), zero-filled.
    pub fn map(min_len: usize) -> Result<Pages> {
        let page = page_size();
        let len = min_len
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| Error::Os("mmap", "size overflow".into()))?;
        // SAFETY: an anonymous private mapping with no address hint; the result
        // is checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| os_error("mmap"))?;
        let mut pages = Pages { ptr, len, locked: false };
        // SAFETY: `addr`/`len` are exactly the mapping made above; on error
        // `pages` is dropped, which unmaps it.
        if unsafe { libc::madvise(addr, len, libc::MADV_DONTDUMP) } != 0 {
            return Err(os_error("madvise(MADV_DONTDUMP)"));
        }
        // SAFETY: as above; mlock only pins the pages of our own mapping.
        pages.locked = unsafe { libc::mlock(addr, len) } == 0;
        if !pages.locked {
            LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        register(addr as usize, len);
        Ok(pages)
    }

    /// Whether `mlock` succeeded for this mapping (in the process that made it).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start address (for `/proc/self/smaps` checks).
    pub fn address(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping holds `len` readable and writable bytes owned by
        // `self`; the `&mut self` borrow makes this the only access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Zeroes every byte with volatile writes (not optimized away).
    pub fn wipe(&mut self) {
        // Page-aligned and a whole number of pages: view it as u64 words.
        let words = self.len / 8;
        // SAFETY: the mapping is page aligned (so aligned for u64) and holds
        // `len` bytes, `len` a multiple of 8; `&mut self` gives exclusive access.
        let as_words = unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u64>(), words) };
        as_words.zeroize();
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.wipe();
        unregister(self.address());
        // SAFETY: unmapping our own mapping; nothing refers to it after `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A vector of fixed capacity in [`Pages`]. It never reallocates: a push
/// beyond the capacity gives the value back. Elements are dropped in place
/// and then every byte of the mapping is wiped, so moving an element out
/// through `&mut` (`mem::replace`) cannot leave a copy behind in it.
pub struct LockedVec<T> {
    pages: Option<Pages>,
    len: usize,
    cap: usize,
    _owns: PhantomData<T>,
}

impl<T> core::fmt::Debug for LockedVec<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LockedVec").field("len", &self.len).field("cap", &self.cap).finish_non_exhaustive()
    }
}

impl<T> Default for LockedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LockedVec<T> {
    /// An empty vector of capacity 0 (no mapping).
    pub const fn new() -> Self {
        LockedVec { pages: None, len: 0, cap: 0, _owns: PhantomData }
    }

    /// An empty vector with room for at least `cap` elements (whole pages; no
    /// mapping when 0).
    pub fn with_capacity(cap: usize) -> Result<Self> {
        let size = core::mem::size_of::<T>();
        if cap == 0 || size == 0 {
            return Ok(LockedVec { pages: None, len: 0, cap: if size == 0 { usize::MAX } else { 0 }, _owns: PhantomData });
        }
        if core::mem::align_of::<T>() > page_size() {
            return Err(Error::Os("mmap", "alignment larger than a page".into()));
        }
        let bytes = cap.checked_mul(size).ok_or_else(|| Error::Os("mmap", "size overflow".into()))?;
        let pages = Pages::map(bytes)?;
        // Whole pages: use all the room they give.
        let cap = pages.len() / size;
        Ok(LockedVec { pages: Some(pages), len: 0, cap, _owns: PhantomData })
    }

    fn base(&self) -> *mut T {
        match &self.pages {
            Some(p) => p.ptr.as_ptr().cast::<T>(),
            None => NonNull::<T>::dangling().as_ptr(),
        }
    }

    /// Room for this many elements.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The mapping, if any (for tests and reports).
    pub fn pages(&self) -> Option<&Pages> {
        self.pages.as_ref()
    }

    /// Appends `value`, or gives it back when the vector is full.
    pub fn push(&mut self, value: T) -> core::result::Result<(), T> {
        if self.len == self.cap {
            return Err(value);
        }
        // SAFETY: `len < cap`, so the slot is inside the mapping (or T is a
        // ZST and the dangling pointer is valid for it), aligned for T (the
        // mapping is page aligned and align_of::<T>() <= page size), and unused.
        unsafe { self.base().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Drops the elements from `len` on and wipes their bytes.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let old = self.len;
        self.len = len;
        // SAFETY: slots `len..old` were initialized; `self.len` no longer covers
        // them, so they are dropped exactly once and never read again.
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.base().add(len), old - len));
        }
        let size = core::mem::size_of::<T>();
        if let Some(p) = &mut self.pages {
            // A plain memset: the memory stays mapped and readable, so it cannot
            // be optimized away; the volatile wipe comes when the pages go.
            p.bytes_mut()[len * size..old * size].fill(0);
        }
    }

    /// Moves the element at `index` out (later ones move down) and zeroes the
    /// slot left free: nothing of it stays behind in the mapping. The value
    /// returned is the caller's to keep safe.
    ///
    /// # Panics
    /// When `index` is out of bounds, like `Vec::remove`.
    pub fn remove(&mut self, index: usize) -> T {
        assert!(index < self.len, "LockedVec::remove: index {index} out of bounds ({})", self.len);
        let size = core::mem::size_of::<T>();
        let base = self.base();
        // SAFETY: `index < len`: the slot is initialized; it is read once and
        // then overwritten by the shift (or zeroed below as past `len`), so the
        // value is not dropped twice. The shifted range stays inside the first
        // `len` slots.
        let value = unsafe {
            let value = base.add(index).read();
            core::ptr::copy(base.add(index + 1), base.add(index), self.len - index - 1);
            value
        };
        self.len -= 1;
        if let Some(p) = &mut self.pages {
            p.bytes_mut()[self.len * size..(self.len + 1) * size].fill(0);
        }
        value
    }

    /// Drops every element and wipes the whole mapping.
    pub fn clear(&mut self) {
        self.truncate(0);
        if let Some(p) = &mut self.pages {
            p.wipe();
        }
    }
}

impl<T> Deref for LockedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` slots are initialized and live as long as `self`.
        unsafe { core::slice::from_raw_parts(self.base(), self.len) }
    }
}

impl<T> DerefMut for LockedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, with exclusive access through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.base(), self.len) }
    }
}

impl<T> Drop for LockedVec<T> {
    fn drop(&mut self) {
        let len = self.len;
        self.len = 0;
        // SAFETY: the first `len` slots are initialized and dropped once here;
        // `Pages`' own drop then wipes and unmaps the memory.
        unsafe {
            core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(self.base(), len));
        }
    }
}

/// A growable byte buffer in [`Pages`]. Growing maps larger pages, copies,
/// and wipes and unmaps the old ones: its bytes never reach the ordinary heap.
/// `truncate` and `clear` zero what they drop; `reset` does not.
#[derive(Debug)]
pub struct LockedBuf {
    /// Start of `pages` (dangling when there are none), kept beside it so the
    /// per-field calls copy into it as cheaply as into a `Vec`.
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    /// Set by `reset`: bytes past `len` may not be zero.
    dirty: bool,
    pages: Option<Pages>,
}

// SAFETY: `ptr` points into `pages`, which the buffer owns exclusively.
unsafe impl Send for LockedBuf {}
// SAFETY: shared references only read.
unsafe impl Sync for LockedBuf {}

impl Default for LockedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LockedBuf {
    /// An empty buffer (no mapping until the first byte).
    pub const fn new() -> Self {
        LockedBuf { ptr: NonNull::dangling(), cap: 0, len: 0, dirty: false, pages: None }
    }

    /// An empty buffer with room for at least `cap` bytes.
    pub fn with_capacity(cap: usize) -> Result<Self> {
        let mut buf = LockedBuf::new();
        buf.reserve(cap)?;
        Ok(buf)
    }

    /// Bytes it can hold before it grows.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The mapping, if any (for tests and reports).
    pub fn pages(&self) -> Option<&Pages> {
        self.pages.as_ref()
    }

    /// Makes room for `extra` more bytes.
    #[inline]
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        if extra <= self.cap - self.len {
            return Ok(());
        }
        self.grow(extra)
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, extra: usize) -> Result<()> {
        let need = self.len.checked_add(extra).ok_or_else(|| Error::Os("mmap", "size overflow".into()))?;
        let mut fresh = Pages::map(need.max(self.cap.saturating_mul(2)))?;
        fresh.bytes_mut()[..self.len].copy_from_slice(self);
        self.ptr = fresh.ptr;
        self.cap = fresh.len;
        // The old pages are wiped and unmapped by their drop.
        self.pages = Some(fresh);
        Ok(())
    }

    /// Appends `bytes`.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<()> {
        self.reserve(bytes.len())?;
        // SAFETY: `reserve` made `cap - len >= bytes.len()`, so the destination
        // lies inside the mapping `ptr` points to; a caller's slice cannot
        // overlap it while we hold `&mut self`.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(self.len), bytes.len()) };
        self.len += bytes.len();
        Ok(())
    }

    /// Grows or shrinks to `len` bytes; new bytes are zero, dropped ones wiped.
    pub fn resize_zeroed(&mut self, len: usize) -> Result<()> {
        if len <= self.len {
            self.truncate(len);
            return Ok(());
        }
        self.reserve(len - self.len)?;
        if self.dirty {
            // SAFETY: `self.len..len` lies inside the mapping after `reserve`.
            unsafe { core::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, len - self.len) };
        }
        self.len = len;
        Ok(())
    }

    /// Keeps the first `len` bytes and zeroes the rest.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let old = self.len;
        self.len = len;
        // A plain memset, cheap on the hot path: the memory stays mapped and
        // readable, so it cannot be optimized away; the volatile wipe comes
        // when the pages go.
        // SAFETY: `len..old` lies inside the mapping (`old <= cap`).
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr().add(len), 0, old - len) };
    }

    /// Empties the buffer, zeroing what it held.
    #[inline]
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Empties the buffer without zeroing: for a buffer that holds only public
    /// bytes between uses (the per-field calls' AAD and ciphertext), where the
    /// memset would cost more than the rest of the bookkeeping. The bytes stay
    /// until overwritten, or wiped with the pages.
    #[inline]
    pub fn reset(&mut self) {
        self.len = 0;
        self.dirty = true;
    }

    /// Wipes and unmaps the pages (the next byte maps new ones).
    pub fn release(&mut self) {
        *self = LockedBuf::new();
    }
}

impl Deref for LockedBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is the mapping's start (or dangling with `len == 0`)
        // and the first `len` bytes are initialized for as long as `self` lives.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for LockedBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, with exclusive access through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::io::Write for LockedBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of stack [`scrub_stack`] overwrites: more than the deepest call
/// that handles key material (RSA unwrapping) uses.
pub const SCRUB_BYTES: usize = 64 * 1024;

/// Overwrites the stack below the caller with zeroes. Values returned or moved
/// by value (a freshly expanded key schedule, a `KeyBytes`, a generator's
/// state) leave copies in the frames of the functions that made them; calling
/// this right after such a call, from the frame that made it, erases them.
#[inline(never)]
pub fn scrub_stack() {
    let mut area = [0u64; SCRUB_BYTES / 8];
    area.zeroize();
    core::hint::black_box(&area);
}

/// Zeroes the SIMD registers ymm0-15 (`vzeroall`, when the CPU has AVX):
/// AES-NI code leaves round keys in them after a call, and a core dump
/// records the registers of every thread.
#[inline]
pub fn clear_vector_registers() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all
        // `vzeroall` needs; it only zeroes ymm0-15, and the compiler treats
        // the intrinsic as clobbering them, so no live value is lost.
        unsafe { zero_all_avx() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_all_avx() {
    core::arch::x86_64::_mm256_zeroall();
}

/// Maps and locks one page to learn whether this process may lock memory.
pub fn lock_probe() -> Result<()> {
    let pages = Pages::map(1)?;
    if pages.is_locked() {
        Ok(())
    } else {
        Err(os_error("mlock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VmFlags of the mapping that holds `address` (the kernel merges
    /// neighbouring mappings with the same flags, so it need not start there).
    fn vm_flags(address: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_block = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((from, to)) = range.split_once('-') {
                    if let (Ok(from), Ok(to)) = (usize::from_str_radix(from, 16), usize::from_str_radix(to, 16)) {
                        in_block = (from..to).contains(&address);
                        continue;
                    }
                }
            }
            if in_block {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no mapping at {address:x}");
    }

    #[test]
    fn pages_are_locked_and_excluded_from_core_dumps() {
        let v: LockedVec<[u8; 100]> = LockedVec::with_capacity(3).unwrap();
        let pages = v.pages().unwrap();
        let flags = vm_flags(pages.address());
        assert!(flags.iter().any(|f| f == "dd"), "VmFlags {flags:?}");
        assert!(pages.is_locked(), "mlock failed (RLIMIT_MEMLOCK?)");
        assert!(flags.iter().any(|f| f == "lo"), "VmFlags {flags:?}");
        let mut b = LockedBuf::new();
        b.extend_from_slice(b"grown").unwrap();
        let flags = vm_flags(b.pages().unwrap().address());
        assert!(flags.iter().any(|f| f == "dd") && flags.iter().any(|f| f == "lo"), "VmFlags {flags:?}");
    }

    #[test]
    fn a_vector_never_reallocates_and_refuses_a_push_beyond_capacity() {
        let mut v = LockedVec::with_capacity(2).unwrap();
        let at = v.pages().unwrap().address();
        let cap = v.capacity();
        assert_eq!(cap, 4096 / 4, "the whole page");
        for i in 0..cap as u32 {
            v.push(i).unwrap();
        }
        assert_eq!(v.push(7), Err(7));
        assert_eq!(&v[..2], &[0, 1]);
        assert_eq!(v.pages().unwrap().address(), at);
        let empty: LockedVec<u32> = LockedVec::with_capacity(0).unwrap();
        assert!(empty.pages().is_none() && empty.is_empty());
    }

    #[test]
    fn clear_and_truncate_zero_every_byte_even_of_moved_out_elements() {
        let mut v: LockedVec<[u8; 32]> = LockedVec::with_capacity(4).unwrap();
        for i in 1..=4u8 {
            v.push([i; 32]).unwrap();
        }
        // moving a value out through &mut leaves its bytes to the wipe
        let taken = core::mem::replace(&mut v[0], [0xee; 32]);
        assert_eq!(taken, [1; 32]);
        v.truncate(2);
        let raw = |v: &mut LockedVec<[u8; 32]>| v.pages.as_mut().unwrap().bytes_mut().to_vec();
        let bytes = raw(&mut v);
        assert!(bytes[64..].iter().all(|&b| b == 0), "truncated slots are zero");
        assert_eq!(&bytes[32..64], &[2; 32]);
        let second = v.remove(0);
        assert_eq!(second, [0xee; 32]);
        assert_eq!(&v[..], &[[2; 32]]);
        assert!(raw(&mut v)[32..].iter().all(|&b| b == 0), "the slot freed by remove is zero");
        v.clear();
        assert!(raw(&mut v).iter().all(|&b| b == 0), "the whole mapping is zero after clear");
    }

    #[test]
    fn drop_runs_element_destructors() {
        use std::rc::Rc;
        let counter = Rc::new(());
        let mut v = LockedVec::with_capacity(3).unwrap();
        v.push(Rc::clone(&counter)).unwrap();
        v.push(Rc::clone(&counter)).unwrap();
        assert_eq!(Rc::strong_count(&counter), 3);
        drop(v);
        assert_eq!(Rc::strong_count(&counter), 1);
    }

    #[test]
    fn wipe_zeroes_the_whole_mapping() {
        let mut p = Pages::map(10).unwrap();
        p.bytes_mut().fill(0xa5);
        p.wipe();
        assert!(p.bytes_mut().iter().all(|&b| b == 0));
        assert_eq!(p.len() % 4096, 0);
    }

    #[test]
    fn a_buffer_grows_in_locked_pages_and_zeroes_what_it_drops() {
        let mut b = LockedBuf::with_capacity(8).unwrap();
        let first = b.pages().unwrap().address();
        let cap = b.capacity();
        b.extend_from_slice(&vec![7u8; cap]).unwrap();
        b.extend_from_slice(b"more").unwrap();
        assert_ne!(b.pages().unwrap().address(), first, "grew into a new mapping");
        assert_eq!(b.len(), cap + 4);
        assert_eq!(&b[cap..], b"more");
        b.truncate(3);
        b.resize_zeroed(10).unwrap();
        assert_eq!(&b[..], &[7, 7, 7, 0, 0, 0, 0, 0, 0, 0]);
        std::io::Write::write_all(&mut b, b"json").unwrap();
        assert_eq!(&b[10..], b"json");
        b.clear();
        assert!(b.pages.as_mut().unwrap().bytes_mut().iter().all(|&x| x == 0));
        b.release();
        assert!(b.pages().is_none() && b.is_empty());
    }

    #[test]
    fn the_lock_probe_succeeds_here() {
        lock_probe().unwrap();
    }
}
