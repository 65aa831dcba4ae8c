//! This node's transport key for the cluster exchange (docs/design.md,
//! "Messages"): an RSA-2048 pair made once per start of the node, in the
//! master during `init`, so that every worker inherits it. Other nodes wrap
//! the keys they send here for its public half.
//!
//! The private half is kept only as PKCS#8 DER in a [`LockedBuf`] (excluded
//! from core dumps, locked in RAM, wiped) and parsed for the moment it is
//! used: the parsed key is on the heap for one unwrap, and `rsa` zeroizes it
//! on drop. It never reaches the Lua heap, where a string can be neither
//! wiped nor kept out of a core dump.

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::secure_mem::LockedBuf;
use crate::wrap::PrivateKey;

/// Modulus size of the transport key.
pub const BITS: usize = 2048;

struct TransportKey {
    private_der: LockedBuf,
    public_pem: String,
}

static KEY: Mutex<Option<TransportKey>> = Mutex::new(None);

fn slot() -> std::sync::MutexGuard<'static, Option<TransportKey>> {
    // A panic while the lock was held cannot leave a half-made key: the slot
    // is only ever assigned a complete one.
    KEY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The public half (SPKI PEM) of this process's transport key, made on the
/// first call.
pub fn public_pem() -> Result<String> {
    let mut slot = slot();
    if let Some(key) = slot.as_ref() {
        return Ok(key.public_pem.clone());
    }
    let private = PrivateKey::generate(BITS)?;
    let public_pem = private.public().to_pem()?;
    let mut private_der = LockedBuf::new();
    private.write_der(&mut private_der)?;
    *slot = Some(TransportKey { private_der, public_pem: public_pem.clone() });
    Ok(public_pem)
}

/// `f` given the private half; an error when `public_pem` was never called.
pub fn with_private<T>(f: impl FnOnce(&PrivateKey) -> Result<T>) -> Result<T> {
    let slot = slot();
    let key = slot
        .as_ref()
        .ok_or_else(|| Error::Rsa("this node has no transport key yet (it is made in init)".into()))?;
    let private = PrivateKey::from_der(&key.private_der)?;
    f(&private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::PublicKey;

    #[test]
    fn one_pair_per_process_and_it_opens_what_was_wrapped_for_it() {
        let first = public_pem().unwrap();
        assert_eq!(public_pem().unwrap(), first, "the pair is made once");
        assert!(slot().as_ref().is_some_and(|key| key.private_der.pages().is_some()), "kept in mapped pages");

        let wrapped = PublicKey::parse(first.as_bytes()).unwrap().wrap(b"thirty-two bytes of key material").unwrap();
        let opened = with_private(|private| private.unwrap(&wrapped)).unwrap();
        assert_eq!(&opened[..], b"thirty-two bytes of key material");

        let other = PrivateKey::generate(BITS).unwrap().public().wrap(b"for another node").unwrap();
        assert!(with_private(|private| private.unwrap(&other)).is_err());
    }
}
