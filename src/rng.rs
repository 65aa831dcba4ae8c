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

thread_local! {
    static GENERATOR: RefCell<Option<(u64, ChaCha20Rng)>> = const { RefCell::new(None) };
}

fn fresh() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    // Without the OS generator there is no safe way on; getrandom only fails on
    // broken systems, and the panic becomes a Lua error at the binding.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut seed).expect("operating system random generator unavailable");
    let rng = ChaCha20Rng::from_seed(seed);
    zeroize::Zeroize::zeroize(&mut seed);
    rng
}

/// Fills `dst` with random bytes from this process's generator.
pub fn fill(dst: &mut [u8]) {
    let epoch = fork_epoch();
    GENERATOR.with(|g| {
        let mut g = g.borrow_mut();
        match &mut *g {
            Some((seen, rng)) if *seen == epoch => rng.fill_bytes(dst),
            slot => {
                let mut rng = fresh();
                rng.fill_bytes(dst);
                *slot = Some((epoch, rng));
            }
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
