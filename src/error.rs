//! The crate's one error type.
//!
//! Messages are lowercase, name ids and options, and never carry key bytes,
//! plaintext or ciphertext. A failed decryption says only `authentication
//! failed`, like `aead::Error`, so it leaks nothing about why.

/// Everything the keyring core can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key id outside the alphabet or length of docs/formats.md, "Key ids".
    #[error("invalid key id: {0}")]
    InvalidKeyId(&'static str),
    /// Key material that is not 32 bytes (after decoding).
    #[error("key must be 32 bytes")]
    KeyLength,
    /// Base64 that does not decode.
    #[error("invalid base64 in {0}")]
    Base64(&'static str),
    /// Adding an id that is already on the ring with other bytes
    /// (docs/design.md, "Keys on the ring").
    #[error("key '{0}' already exists with different material")]
    KeyConflict(String),
    /// A value names a key this node does not hold (docs/design.md, "Missing keys").
    #[error("keyring key '{0}' is not available on this node")]
    KeyUnavailable(String),
    /// Activate, export or recovery-row of an id that is not on the ring.
    #[error("key '{0}' not found")]
    KeyNotFound(String),
    /// Writing while no key is active (docs/design.md, "Missing keys").
    #[error("no active keyring key on this node")]
    NoActiveKey,
    /// Removing the active key (docs/design.md, "Keys on the ring").
    #[error("cannot remove active key")]
    RemoveActive,
    /// Every slot of the shared region is in use.
    #[error("keyring is full ({0} keys)")]
    RingFull(usize),
    /// A value that starts with `$ke$` but is not well-formed v1 or v2.
    #[error("malformed encrypted value: {0}")]
    Malformed(&'static str),
    /// A v2 value, export blob or recovery row whose tag does not verify.
    #[error("authentication failed")]
    Authentication,
    /// A legacy or unmarked value refused because `keyring_accept_legacy` is off.
    #[error("{0} refused: keyring_accept_legacy is off")]
    LegacyRefused(&'static str),
    /// A value larger than the format accepts.
    #[error("value too large ({0} bytes, limit {1})")]
    TooLarge(usize, usize),
    /// An RSA key that cannot be used, or an RSA operation that failed.
    #[error("{0}")]
    Rsa(String),
    /// Key material that does not match the check value it must have (a
    /// recovery row opened with the wrong private key; docs/formats.md,
    /// "Key check value").
    #[error("recovered key '{0}' does not match its check value (wrong private key?)")]
    CheckValue(String),
    /// An export blob or recovery row that cannot be decoded.
    #[error("invalid {0}: {1}")]
    Blob(&'static str, String),
    /// The shared region does not exist yet in this process.
    #[error("keyring not initialized: call init() in init_by_lua first")]
    NotInitialized,
    /// An operating-system call on the shared region failed.
    #[error("{0} failed: {1}")]
    Os(&'static str, String),
}

/// What kind of failure an [`Error`] is, for callers that choose an answer
/// by it (the Kong glue maps kinds to HTTP statuses in one place) instead of
/// matching message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input: an id, key, value, blob or RSA key that cannot be used.
    Invalid,
    /// A tag or check value that does not verify.
    Authentication,
    /// The id is not on the ring.
    NotFound,
    /// The request contradicts the ring (an id with other material, the active key).
    Conflict,
    /// A key this node does not hold, or no active key.
    Unavailable,
    /// No free slot in the shared region.
    Full,
    /// The region or the operating system failed.
    Internal,
}

impl Kind {
    /// The kind's name as the bindings return it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::Authentication => "authentication",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Unavailable => "unavailable",
            Kind::Full => "full",
            Kind::Internal => "internal",
        }
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        match self {
            Error::InvalidKeyId(_)
            | Error::KeyLength
            | Error::Base64(_)
            | Error::Malformed(_)
            | Error::LegacyRefused(_)
            | Error::TooLarge(..)
            | Error::Rsa(_)
            | Error::Blob(..) => Kind::Invalid,
            Error::Authentication | Error::CheckValue(_) => Kind::Authentication,
            Error::KeyNotFound(_) => Kind::NotFound,
            Error::KeyConflict(_) | Error::RemoveActive => Kind::Conflict,
            Error::KeyUnavailable(_) | Error::NoActiveKey => Kind::Unavailable,
            Error::RingFull(_) => Kind::Full,
            Error::NotInitialized | Error::Os(..) => Kind::Internal,
        }
    }
}

/// Result alias used across the core.
pub type Result<T, E = Error> = core::result::Result<T, E>;
