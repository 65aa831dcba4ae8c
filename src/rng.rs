//! Per-process CSPRNG for nonces and keys (docs/design.md, "Randomness").
//!
//! The OS CSPRNG seeds a ChaCha20 generator per thread. nginx forks its workers
//! from a master that may already have used the generator, so a child would
//! inherit the same stream: `region::fork_epoch()` changes in every forked child
//! (a `pthread_atfork` handler) and a changed epoch forces a fresh seed before
//! the next byte is produced. Two workers therefore never share a nonce stream.

use core::cell::RefCell;
use core::convert::Infallible;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};

use crate::region::fork_epoch;
use crate::secure_mem::{scrub_stack, LockedVec};

thread_local! {
    /// The fork epoch it was seeded under, and the generator in locked memory
    /// excluded from core dumps: its state would let anyone recompute every
    /// key it generated, and its output buffer holds the last bytes it gave.
    static GENERATOR: RefCell<Option<(u64, LockedVec<ChaCha20Rng>)>> = const { RefCell::new(None) };
}

/// A generator seeded from the OS, built in locked memory. Not inlined: the
/// caller scrubs the stack it used (the seed, the generator moved by value).
#[inline(never)]
fn fresh() -> LockedVec<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    // Without the OS generator or memory there is no safe way on; both only
    // fail on broken systems, and the panic becomes a Lua error at the binding.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut seed).expect("operating system random generator unavailable");
    #[allow(clippy::expect_used)]
    let mut slot = LockedVec::with_capacity(1).expect("cannot map memory for the random generator");
    if slot.push(ChaCha20Rng::from_seed(seed)).is_err() {
        unreachable!("room for one generator");
    }
    zeroize::Zeroize::zeroize(&mut seed);
    slot
}

/// Fills `dst` with random bytes from this process's generator.
pub fn fill(dst: &mut [u8]) {
    let epoch = fork_epoch();
    GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        if !matches!(&*g, Some((seen, _)) if *seen == epoch) {
            // Inherited or first use: wipe the old one, seed a new one.
            *g = None;
            *g = Some((epoch, fresh()));
            scrub_stack();
        }
        if let Some(rng) = g.as_mut().and_then(|(_, v)| v.first_mut()) {
            rng.fill_bytes(dst);
        }
    });
}

/// Drops the current generator so the next call reseeds from the OS
/// (called from `init_worker` as a second line of defence after fork).
pub fn reseed() {
    GENERATOR.with(|g| *g.borrow_mut() = None);
}

/// A handle on this process's generator for APIs that take an `Rng`
/// (RSA padding, key and id generation).
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerRng;

impl TryRng for WorkerRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for WorkerRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_outputs_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a);
        fill(&mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn reseed_starts_a_new_stream() {
        let mut a = [0u8; 16];
        fill(&mut a);
        reseed();
        let mut b = [0u8; 16];
        fill(&mut b);
        assert_ne!(a, b);
    }
}
