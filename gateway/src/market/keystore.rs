//! The org's data keys at rest: one file per key, named by its commitment (SHA-256 of the key),
//! holding the key sealed with AES-256-GCM under a master key derived from the keystore
//! passphrase (PBKDF2-HMAC-SHA256 with a per-keystore random salt). A stolen disk without the
//! passphrase yields no key; the commitment is bound as AAD, so files cannot be swapped.

use std::io::Write;
use std::path::{Path, PathBuf};

use neurodata_crypto::DataKey;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

const SALT_FILE: &str = "keystore.salt";
const ITERATIONS: usize = 210_000;

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
    /// OpenSSL failed.
    #[error("keystore crypto: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// An encrypted directory of data keys.
pub struct KeyStore {
    dir: PathBuf,
    master: [u8; 32],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyStoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
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
        })
    }

    fn path(&self, commitment: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.key", hex::encode(commitment)))
    }

    /// Stores `key`; returns its commitment.
    pub fn put(&self, key: &DataKey) -> Result<[u8; 32], KeyStoreError> {
        let commitment = key.commitment();
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce)?;
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.master,
            Some(&nonce),
            &commitment,
            key.as_bytes(),
            &mut tag,
        )?;
        write_atomic(&self.path(&commitment), &[&nonce[..], &ct, &tag].concat())?;
        Ok(commitment)
    }

    /// The key with this commitment, if deposited.
    pub fn get(&self, commitment: &[u8; 32]) -> Result<Option<DataKey>, KeyStoreError> {
        let path = self.path(commitment);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        if bytes.len() != 12 + 32 + 16 {
            return Err(KeyStoreError::Sealed(path));
        }
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.master,
            Some(&bytes[..12]),
            commitment,
            &bytes[12..44],
            &bytes[44..],
        )
        .map_err(|_| KeyStoreError::Sealed(path.clone()))?;
        let key = DataKey::from_slice(&plain).map_err(|_| KeyStoreError::Sealed(path.clone()))?;
        // A key that does not match its own file name was planted.
        if &key.commitment() != commitment {
            return Err(KeyStoreError::Sealed(path));
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_only_with_the_passphrase_and_files_cannot_be_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(dir.path(), b"correct horse").unwrap();
        let k1 = DataKey::generate().unwrap();
        let k2 = DataKey::generate().unwrap();
        let c1 = ks.put(&k1).unwrap();
        let c2 = ks.put(&k2).unwrap();
        assert_eq!(ks.get(&c1).unwrap(), Some(k1.clone()));
        assert_eq!(ks.get(&[9; 32]).unwrap(), None);
        // The key bytes are not on disk in the clear.
        let raw = std::fs::read(ks.path(&c1)).unwrap();
        assert!(!raw.windows(32).any(|w| w == k1.as_bytes()));
        // Reopened with the same passphrase: same keys; another passphrase: refused.
        let again = KeyStore::open(dir.path(), b"correct horse").unwrap();
        assert_eq!(again.get(&c2).unwrap(), Some(k2));
        let wrong = KeyStore::open(dir.path(), b"battery staple").unwrap();
        assert!(matches!(wrong.get(&c1), Err(KeyStoreError::Sealed(_))));
        // Swapping two files is detected through the AAD.
        std::fs::copy(ks.path(&c2), ks.path(&c1)).unwrap();
        assert!(matches!(ks.get(&c1), Err(KeyStoreError::Sealed(_))));
    }
}
