//! Content addressing and dataset encryption for the NeuroData marketplace (DESIGN.md, "Data
//! marketplace and escrow").
//!
//! - [`cid`]: IPFS-compatible CIDv1 (raw, sha2-256) of a blob, shared by the chain, the gateway
//!   and clients.
//! - [`stream`]: a provider encrypts a dataset of any size in constant memory with a fresh
//!   [`DataKey`]: chunked AES-256-GCM where each chunk's nonce binds its index and whether it is
//!   the last one, so chunks cannot be reordered, dropped or the stream truncated unnoticed.
//! - [`wrap`]: the data key travels to a buyer wrapped to the buyer's certificate key (ECIES over
//!   P-256: ephemeral ECDH, HKDF-SHA256, AES-256-GCM).
//! - [`dleq`]: if the delivered key is wrong, the buyer proves it on chain by revealing the ECDH
//!   shared secret of that one wrapping with a proof that it is the right one (Chaum–Pedersen),
//!   without revealing its private key; anyone can then unwrap and compare with the commitment.
//!
//! Everything is built on OpenSSL.

pub mod cid;
pub mod dleq;
pub mod stream;
pub mod wrap;

use openssl::rand::rand_bytes;

pub use stream::{DecryptingWriter, EncryptingReader, StreamHeader};
pub use wrap::WrappedKey;

/// What went wrong, with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext does not start with a NeuroData stream header.
    #[error("not a NeuroData encrypted stream: {0}")]
    BadHeader(String),
    /// A chunk failed authentication: wrong key, or the bytes were changed or moved.
    #[error(
        "chunk {chunk} does not authenticate: wrong key, or the ciphertext was tampered with or reordered"
    )]
    Tampered {
        /// Index of the chunk.
        chunk: u64,
    },
    /// The stream ends before its last chunk.
    #[error("ciphertext is truncated: it ends after chunk {chunks} without the final chunk")]
    Truncated {
        /// Chunks that authenticated before the end.
        chunks: u64,
    },
    /// A wrapped key or proof has the wrong shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Unwrapping failed: the key was wrapped to someone else, or the bytes were changed.
    #[error("wrapped key does not open with this private key (wrapped to another key, or altered)")]
    UnwrapFailed,
    /// The shared-secret proof does not verify.
    #[error("the revealed shared secret's proof does not verify")]
    BadProof,
    /// Reading or writing the data failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// OpenSSL refused an operation (bad key material).
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// A dataset's 256-bit AES key. Zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh random key from OpenSSL's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        rand_bytes(&mut k)?;
        Ok(DataKey(k))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }

    /// From a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        <[u8; 32]>::try_from(bytes)
            .map(DataKey)
            .map_err(|_| CryptoError::Malformed {
                what: "data key",
                reason: format!("{} bytes, expected 32", bytes.len()),
            })
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The commitment published on chain: SHA-256 of the key. The key is uniformly random, so
    /// the hash reveals nothing, and a delivered key is checked against it.
    pub fn commitment(&self) -> [u8; 32] {
        sha256(&self.0)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey(commitment {})", hex::encode(self.commitment()))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // Best effort: moves may have left copies, but this buffer does not keep the key;
        // black_box keeps the zeroing from being optimised away as a dead store.
        self.0 = [0; 32];
        std::hint::black_box(&self.0);
    }
}

/// SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_commit_by_sha256() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.commitment(), sha256(a.as_bytes()));
        // Known answer: SHA-256 of 32 zero bytes.
        assert_eq!(
            hex::encode(DataKey::from_bytes([0; 32]).commitment()),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert!(DataKey::from_slice(&[1; 31]).is_err());
        assert!(format!("{a:?}").starts_with("DataKey(commitment "));
    }
}
