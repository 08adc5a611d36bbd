//! The org's data keys at rest: one file per key, named by its commitment (SHA-256 of the key),
//! holding a [`Deposit`] — the key, who deposited it and the ciphertext CID it encrypts — sealed
//! with AES-256-GCM under a master key derived from the keystore passphrase (PBKDF2-HMAC-SHA256
//! with a per-keystore random salt). A stolen disk without the passphrase yields no key; the
//! format tag and the commitment are bound as AAD, so files cannot be swapped.
//!
//! Why the depositor and CID: keys are looked up by the commitment a listing names, and anyone
//! may put any commitment in a listing. Recording who deposited a key for which ciphertext lets
//! the delivery task hand a key only to buyers of the listing it was deposited for (the
//! depositor's own, for that CID), so a rogue provider's decoy listing carrying a colleague's
//! commitment gets nothing (finding 7 of the audit). The first deposit of a key binds it; a
//! deposit of the same key for another depositor or CID is refused.
//!
//! Files of the earlier format (the key alone, 60 bytes) carry no binding and are refused with
//! [`KeyStoreError::Unbound`]: delivering them would reopen the hole.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use neurodata_crypto::DataKey;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

const SALT_FILE: &str = "keystore.salt";
const ITERATIONS: usize = 210_000;
/// Leads every key file of the current format (and is part of its AAD).
const FORMAT: &[u8; 4] = b"NDK2";
/// Size of a file of the first format: nonce, key, tag.
const UNBOUND_LEN: usize = 12 + 32 + 16;
/// Longest CID a deposit may name (a CIDv1 string is 59 bytes).
const MAX_CID_LEN: usize = 128;

/// Why the keystore failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// Reading or writing the directory failed.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file does not open with this passphrase.
    #[error("keystore file {0} does not open: wrong passphrase, or the file was altered")]
    Sealed(PathBuf),
    /// A key file of the first format, which records no depositor and no CID.
    #[error(
        "keystore file {0} predates deposit records (it holds the key without who deposited it \
         for which ciphertext), so its key is never delivered; the provider must deposit the key \
         again with its CID (Keys.Deposit) after an operator moves this file away"
    )]
    Unbound(PathBuf),
    /// The key is already deposited for another depositor or ciphertext.
    #[error(
        "this data key (commitment {commitment}) is already deposited by {depositor} for \
         ciphertext {cid}; every listing needs its own data key"
    )]
    AlreadyBound {
        /// The key's commitment, hex.
        commitment: String,
        /// The first depositor's fingerprint, hex.
        depositor: String,
        /// The CID it was deposited for.
        cid: String,
    },
    /// The deposit names no usable CID.
    #[error(
        "a deposit must name the ciphertext CID its key encrypts (at most {MAX_CID_LEN} bytes)"
    )]
    BadCid,
    /// OpenSSL failed.
    #[error("keystore crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// A data key with what it was deposited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    /// The key.
    pub key: DataKey,
    /// Certificate fingerprint of the member who deposited it.
    pub depositor: [u8; 32],
    /// The ciphertext CID the key encrypts, as the depositor named it.
    pub cid: String,
}

/// An encrypted directory of data keys.
pub struct KeyStore {
    dir: PathBuf,
    master: [u8; 32],
    /// Serialises deposits, so two racing deposits of one key cannot both bind it.
    writing: Mutex<()>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, directory fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    crate::durable::write_atomic(path, bytes).map_err(io(path))
}

fn aad(commitment: &[u8; 32]) -> Vec<u8> {
    [&FORMAT[..], commitment].concat()
}

impl KeyStore {
    /// Opens (creating if needed) the keystore in `dir` with `passphrase`.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Self, KeyStoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let salt_path = dir.join(SALT_FILE);
        let salt = match std::fs::read(&salt_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = vec![0u8; 16];
                openssl::rand::rand_bytes(&mut s)?;
                write_atomic(&salt_path, &s)?;
                s
            }
            Err(e) => return Err(io(&salt_path)(e)),
        };
        let mut master = [0u8; 32];
        openssl::pkcs5::pbkdf2_hmac(
            passphrase,
            &salt,
            ITERATIONS,
            openssl::hash::MessageDigest::sha256(),
            &mut master,
        )?;
        Ok(KeyStore {
            dir: dir.to_owned(),
            master,
            writing: Mutex::new(()),
        })
    }

    fn path(&self, commitment: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.key", hex::encode(commitment)))
    }

    /// Stores a deposit; returns the key's commitment. Depositing the same key again for the
    /// same depositor and CID is a no-op; for anyone or anything else it is
    /// [`KeyStoreError::AlreadyBound`].
    pub fn put(&self, deposit: &Deposit) -> Result<[u8; 32], KeyStoreError> {
        if deposit.cid.is_empty() || deposit.cid.len() > MAX_CID_LEN {
            return Err(KeyStoreError::BadCid);
        }
        let commitment = deposit.key.commitment();
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = self.get(&commitment)? {
            if existing.depositor == deposit.depositor && existing.cid == deposit.cid {
                return Ok(commitment);
            }
            return Err(KeyStoreError::AlreadyBound {
                commitment: hex::encode(commitment),
                depositor: hex::encode(existing.depositor),
                cid: existing.cid,
            });
        }
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce)?;
        let mut tag = [0u8; 16];
        let plain = [
            &deposit.key.as_bytes()[..],
            &deposit.depositor,
            deposit.cid.as_bytes(),
        ]
        .concat();
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.master,
            Some(&nonce),
            &aad(&commitment),
            &plain,
            &mut tag,
        )?;
        write_atomic(
            &self.path(&commitment),
            &[&FORMAT[..], &nonce, &ct, &tag].concat(),
        )?;
        Ok(commitment)
    }

    /// The deposit of the key with this commitment, if any.
    pub fn get(&self, commitment: &[u8; 32]) -> Result<Option<Deposit>, KeyStoreError> {
        let path = self.path(commitment);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        if bytes.len() == UNBOUND_LEN {
            return Err(KeyStoreError::Unbound(path));
        }
        let Some(rest) = bytes.strip_prefix(&FORMAT[..]) else {
            return Err(KeyStoreError::Sealed(path));
        };
        if rest.len() < 12 + 32 + 32 + 1 + 16 {
            return Err(KeyStoreError::Sealed(path));
        }
        let (nonce, rest) = rest.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.master,
            Some(nonce),
            &aad(commitment),
            ct,
            tag,
        )
        .map_err(|_| KeyStoreError::Sealed(path.clone()))?;
        let (key, rest) = plain.split_at(32);
        let (depositor, cid) = rest.split_at(32);
        let key = DataKey::from_slice(key).map_err(|_| KeyStoreError::Sealed(path.clone()))?;
        // A key that does not match its own file name was planted.
        if &key.commitment() != commitment {
            return Err(KeyStoreError::Sealed(path));
        }
        Ok(Some(Deposit {
            key,
            depositor: <[u8; 32]>::try_from(depositor)
                .map_err(|_| KeyStoreError::Sealed(path.clone()))?,
            cid: String::from_utf8(cid.to_vec()).map_err(|_| KeyStoreError::Sealed(path))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deposit(key: &DataKey, depositor: u8, cid: &str) -> Deposit {
        Deposit {
            key: key.clone(),
            depositor: [depositor; 32],
            cid: cid.into(),
        }
    }

    #[test]
    fn keys_round_trip_only_with_the_passphrase_and_files_cannot_be_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path(), b"correct horse").unwrap();
        let k1 = DataKey::generate().unwrap();
        let k2 = DataKey::generate().unwrap();
        let c1 = ks.put(&deposit(&k1, 1, "bafy-one")).unwrap();
        let c2 = ks.put(&deposit(&k2, 2, "bafy-two")).unwrap();
        assert_eq!(ks.get(&c1).unwrap(), Some(deposit(&k1, 1, "bafy-one")));
        assert_eq!(ks.get(&[9; 32]).unwrap(), None);
        // The key bytes are not on disk in the clear.
        let raw = std::fs::read(ks.path(&c1)).unwrap();
        assert!(!raw.windows(32).any(|w| w == k1.as_bytes()));
        // Reopened with the same passphrase: same keys; another passphrase: refused.
        let again = KeyStore::open(dir.path(), b"correct horse").unwrap();
        assert_eq!(again.get(&c2).unwrap(), Some(deposit(&k2, 2, "bafy-two")));
        let wrong = KeyStore::open(dir.path(), b"battery staple").unwrap();
        assert!(matches!(wrong.get(&c1), Err(KeyStoreError::Sealed(_))));
        // Swapping two files is detected through the AAD.
        std::fs::copy(ks.path(&c2), ks.path(&c1)).unwrap();
        assert!(matches!(ks.get(&c1), Err(KeyStoreError::Sealed(_))));
    }

    #[test]
    fn a_key_stays_bound_to_its_first_depositor_and_cid() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path(), b"pass").unwrap();
        let k = DataKey::generate().unwrap();
        let c = ks.put(&deposit(&k, 1, "bafy-data")).unwrap();
        // The same deposit again is fine (a retried upload).
        assert_eq!(ks.put(&deposit(&k, 1, "bafy-data")).unwrap(), c);
        // A colleague who learned the key cannot re-bind it to himself or to his decoy.
        assert!(matches!(
            ks.put(&deposit(&k, 2, "bafy-data")),
            Err(KeyStoreError::AlreadyBound { .. })
        ));
        assert!(matches!(
            ks.put(&deposit(&k, 1, "bafy-decoy")),
            Err(KeyStoreError::AlreadyBound { .. })
        ));
        assert_eq!(ks.get(&c).unwrap(), Some(deposit(&k, 1, "bafy-data")));
        assert!(matches!(
            ks.put(&deposit(&k, 1, "")),
            Err(KeyStoreError::BadCid)
        ));
    }

    #[test]
    fn key_files_of_the_first_format_are_refused_as_unbound() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path(), b"pass").unwrap();
        let k = DataKey::generate().unwrap();
        let c = k.commitment();
        // The first format: nonce, the key sealed with the commitment as AAD, tag.
        let nonce = [7u8; 12];
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &ks.master,
            Some(&nonce),
            &c,
            k.as_bytes(),
            &mut tag,
        )
        .unwrap();
        std::fs::write(ks.path(&c), [&nonce[..], &ct, &tag].concat()).unwrap();
        let err = ks.get(&c).unwrap_err();
        assert!(matches!(err, KeyStoreError::Unbound(_)));
        assert!(err.to_string().contains("never delivered"), "{err}");
        // Nor can a deposit silently take it over.
        assert!(matches!(
            ks.put(&deposit(&k, 1, "bafy-data")),
            Err(KeyStoreError::Unbound(_))
        ));
    }
}
