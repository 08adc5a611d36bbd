//! Signature verification with two caches that never change a result, only skip repeated work:
//! parsed public keys by signer, and tx hashes whose signature CheckTx already verified (so
//! FinalizeBlock does not verify a mempool tx twice). A tx hash covers the body, the signer (the
//! certificate fingerprint, hence the key) and the signature, so a hit means the same check passed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::Public;
use sha2::{Digest, Sha256};

use crate::TxError;
use crate::membership::certificate::p256_public_key;
use crate::tx::{EnvelopeError, Tx};

const MAX_CACHED_KEYS: usize = 100_000;
const MAX_CACHED_TXS: usize = 200_000;

/// Where a verification happens, which decides how the tx-hash cache is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Mempool admission: remember a good signature.
    CheckTx,
    /// Block execution: use (and forget) a remembered one.
    Deliver,
}

/// ECDSA P-256 / SHA-256 verification with caches.
#[derive(Default)]
pub struct SignatureVerifier {
    keys: Mutex<BTreeMap<[u8; 32], EcKey<Public>>>,
    verified: Mutex<BTreeSet<[u8; 32]>>,
}

impl SignatureVerifier {
    /// Checks `tx.signature` over `tx.body_bytes` with the key in `spki`.
    pub fn verify(&self, tx: &Tx, spki: &[u8], mode: VerifyMode) -> Result<(), TxError> {
        if self.was_verified(&tx.hash, mode) {
            return Ok(());
        }
        let key = self.key(&tx.body.signer.0, spki)?;
        let digest = Sha256::digest(&tx.body_bytes);
        // ECDSA_do_verify on the digest: the same check as EVP_DigestVerify with SHA-256, without
        // the per-call EVP context setup. A malformed DER signature is an error, i.e. invalid.
        let ok = EcdsaSig::from_der(&tx.signature)
            .and_then(|sig| sig.verify(&digest, &key))
            .unwrap_or(false);
        if !ok {
            return Err(EnvelopeError::BadSignature(tx.body.signer.to_hex()).into());
        }
        if mode == VerifyMode::CheckTx {
            let mut verified = lock(&self.verified);
            if verified.len() >= MAX_CACHED_TXS {
                verified.clear();
            }
            verified.insert(tx.hash);
        }
        Ok(())
    }

    fn was_verified(&self, hash: &[u8; 32], mode: VerifyMode) -> bool {
        let mut verified = lock(&self.verified);
        match mode {
            VerifyMode::CheckTx => verified.contains(hash),
            VerifyMode::Deliver => verified.remove(hash),
        }
    }

    fn key(&self, signer: &[u8; 32], spki: &[u8]) -> Result<EcKey<Public>, TxError> {
        if let Some(k) = lock(&self.keys).get(signer) {
            return Ok(k.clone());
        }
        let key = p256_public_key(spki)?
            .ec_key()
            .map_err(|_| crate::membership::MembershipError::KeyNotP256)?;
        let mut keys = lock(&self.keys);
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(*signer, key.clone());
        Ok(key)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves the cache valid (entries are inserted whole).
    m.lock().unwrap_or_else(|p| p.into_inner())
}
