//! Chunked streaming AES-256-GCM.
//!
//! Layout: a 20-byte header, then chunks of `chunk_size` plaintext bytes, each followed by its
//! 16-byte tag; the last chunk holds 1..=chunk_size bytes (an empty file is one empty last chunk). Each chunk's 96-bit nonce is `prefix(7) || index(4, BE) || last(1)`, and the
//! header is every chunk's AAD. So a chunk moved to another position, a chunk from another stream,
//! a stream cut at a chunk boundary (its new last chunk was sealed as "not last") or a changed
//! header all fail authentication. The prefix is random per stream, and each dataset has a fresh
//! key, so nonces never repeat under one key.
//!
//! [`EncryptingReader`] turns a plaintext reader into a ciphertext reader and
//! [`DecryptingWriter`] a plaintext writer into a ciphertext writer; both hold one chunk, so
//! memory does not grow with the file. [`ChunkCipher`] is the per-chunk primitive for callers
//! that pipeline chunks across threads.

use std::io::{self, Read, Write};

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::rand::rand_bytes;
use openssl::sha::Sha256;

use crate::{CryptoError, DataKey};

/// Bytes of a chunk's authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the stream header.
pub const HEADER_LEN: usize = 20;
/// The default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Name and format version.
const MAGIC: [u8; 6] = *b"NDENC\x01";
/// Chunk sizes a header may declare: small enough to bound memory, large enough to be efficient.
const CHUNK_SIZES: std::ops::RangeInclusive<u32> = 1024..=(16 << 20);

/// The stream header: chunk size and nonce prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Random per-stream nonce prefix.
    pub nonce_prefix: [u8; 7],
}

impl StreamHeader {
    /// A header with a fresh random nonce prefix.
    pub fn new(chunk_size: u32) -> Result<Self, CryptoError> {
        if !CHUNK_SIZES.contains(&chunk_size) {
            return Err(CryptoError::BadHeader(format!(
                "chunk size {chunk_size} is outside {CHUNK_SIZES:?}"
            )));
        }
        let mut nonce_prefix = [0u8; 7];
        rand_bytes(&mut nonce_prefix)?;
        Ok(StreamHeader {
            chunk_size,
            nonce_prefix,
        })
    }

    /// The 20 header bytes: magic+version (6), zero (2), chunk size (4, BE), prefix (7), zero (1).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..6].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.chunk_size.to_be_bytes());
        h[12..19].copy_from_slice(&self.nonce_prefix);
        h
    }

    /// Parses and checks header bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let h: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                CryptoError::BadHeader(format!(
                    "{} bytes, shorter than the {HEADER_LEN}-byte header",
                    bytes.len()
                ))
            })?;
        if h[..6] != MAGIC || h[6..8] != [0, 0] || h[19] != 0 {
            return Err(CryptoError::BadHeader(
                "magic or version does not match (not encrypted by NeuroData, or a newer format)"
                    .into(),
            ));
        }
        let chunk_size = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if !CHUNK_SIZES.contains(&chunk_size) {
            return Err(CryptoError::BadHeader(format!(
                "chunk size {chunk_size} is outside {CHUNK_SIZES:?}"
            )));
        }
        let mut nonce_prefix = [0u8; 7];
        nonce_prefix.copy_from_slice(&h[12..19]);
        Ok(StreamHeader {
            chunk_size,
            nonce_prefix,
        })
    }

    /// Ciphertext size of a `plaintext_len`-byte file.
    pub fn ciphertext_len(&self, plaintext_len: u64) -> u64 {
        let cs = u64::from(self.chunk_size);
        // The last chunk is the final partial or full one; an empty file is one empty chunk.
        let chunks = plaintext_len.div_ceil(cs).max(1);
        HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
    }
}

/// Seals or opens single chunks of one stream.
pub struct ChunkCipher {
    ctx: CipherCtx,
    header: [u8; HEADER_LEN],
    prefix: [u8; 7],
    encrypt: bool,
}

impl ChunkCipher {
    fn new(key: &DataKey, header: &StreamHeader, encrypt: bool) -> Result<Self, CryptoError> {
        let mut ctx = CipherCtx::new()?;
        // The key schedule is computed once; each chunk only sets a new nonce.
        if encrypt {
            ctx.encrypt_init(Some(Cipher::aes_256_gcm()), Some(key.as_bytes()), None)?;
        } else {
            ctx.decrypt_init(Some(Cipher::aes_256_gcm()), Some(key.as_bytes()), None)?;
        }
        Ok(ChunkCipher {
            ctx,
            header: header.to_bytes(),
            prefix: header.nonce_prefix,
            encrypt,
        })
    }

    /// A sealer for a stream with `header`.
    pub fn sealer(key: &DataKey, header: &StreamHeader) -> Result<Self, CryptoError> {
        Self::new(key, header, true)
    }

    /// An opener for a stream with `header`.
    pub fn opener(key: &DataKey, header: &StreamHeader) -> Result<Self, CryptoError> {
        Self::new(key, header, false)
    }

    fn nonce(&self, index: u64, last: bool) -> Result<[u8; 12], CryptoError> {
        let index = u32::try_from(index).map_err(|_| {
            CryptoError::BadHeader("more than 2^32 chunks: use a larger chunk size".into())
        })?;
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        Ok(n)
    }

    /// Appends `ciphertext || tag` of chunk `index` to `out`.
    pub fn seal(
        &mut self,
        index: u64,
        last: bool,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        debug_assert!(self.encrypt);
        let nonce = self.nonce(index, last)?;
        self.ctx.encrypt_init(None, None, Some(&nonce))?;
        self.ctx.cipher_update(&self.header, None)?;
        let start = out.len();
        out.resize(start + plaintext.len() + TAG_LEN, 0);
        let n = self
            .ctx
            .cipher_update(plaintext, Some(&mut out[start..start + plaintext.len()]))?;
        let fin = self.ctx.cipher_final(&mut out[start + n..])?;
        let tag_at = start + n + fin;
        self.ctx.tag(&mut out[tag_at..tag_at + TAG_LEN])?;
        out.truncate(tag_at + TAG_LEN);
        Ok(())
    }

    /// Authenticates and decrypts chunk `index` (`ciphertext || tag`), appending the plaintext to
    /// `out`; on failure `out` is left as it was.
    pub fn open(
        &mut self,
        index: u64,
        last: bool,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        debug_assert!(!self.encrypt);
        let tampered = CryptoError::Tampered { chunk: index };
        let Some(body_len) = chunk.len().checked_sub(TAG_LEN) else {
            return Err(tampered);
        };
        let (body, tag) = chunk.split_at(body_len);
        let nonce = self.nonce(index, last)?;
        self.ctx.decrypt_init(None, None, Some(&nonce))?;
        self.ctx.set_tag(tag)?;
        self.ctx.cipher_update(&self.header, None)?;
        let start = out.len();
        out.resize(start + body_len, 0);
        let opened = self
            .ctx
            .cipher_update(body, Some(&mut out[start..]))
            .and_then(|n| self.ctx.cipher_final(&mut out[start + n..]).map(|m| n + m));
        match opened {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(_) => {
                // Do not hand out unauthenticated plaintext.
                out.truncate(start);
                Err(tampered)
            }
        }
    }
}

/// Reads plaintext from `inner` and yields the encrypted stream, hashing the plaintext on the way.
pub struct EncryptingReader<R> {
    inner: R,
    cipher: ChunkCipher,
    chunk_size: usize,
    /// Plaintext read ahead: one chunk plus one byte, to know whether a chunk is the last.
    plain: Vec<u8>,
    /// Encrypted bytes not yet handed out, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    index: u64,
    sealed_last: bool,
    hasher: Option<Sha256>,
    digest: Option<[u8; 32]>,
    plaintext_len: u64,
}

impl<R: Read> EncryptingReader<R> {
    /// Encrypts `inner` under `key` with a fresh header of `chunk_size`.
    pub fn new(inner: R, key: &DataKey, chunk_size: u32) -> Result<Self, CryptoError> {
        let header = StreamHeader::new(chunk_size)?;
        let cipher = ChunkCipher::sealer(key, &header)?;
        let cs = chunk_size as usize;
        let mut out = Vec::with_capacity(cs + TAG_LEN);
        out.extend_from_slice(&header.to_bytes());
        Ok(EncryptingReader {
            inner,
            cipher,
            chunk_size: cs,
            plain: Vec::with_capacity(cs + 1),
            out,
            out_pos: 0,
            index: 0,
            sealed_last: false,
            hasher: Some(Sha256::new()),
            digest: None,
            plaintext_len: 0,
        })
    }

    /// SHA-256 of the plaintext, once the stream has been read to its end.
    pub fn plaintext_sha256(&self) -> Option<[u8; 32]> {
        self.digest
    }

    /// The plaintext reader.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Plaintext bytes read so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        // Fill to chunk_size + 1 bytes (or EOF).
        while self.plain.len() < self.chunk_size + 1 {
            let have = self.plain.len();
            self.plain.resize(self.chunk_size + 1, 0);
            match self.inner.read(&mut self.plain[have..]) {
                Ok(0) => {
                    self.plain.truncate(have);
                    break;
                }
                Ok(n) => self.plain.truncate(have + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.plain.truncate(have),
                Err(e) => {
                    self.plain.truncate(have);
                    return Err(e);
                }
            }
        }
        let last = self.plain.len() <= self.chunk_size;
        let take = self.plain.len().min(self.chunk_size);
        self.out.clear();
        self.out_pos = 0;
        self.cipher
            .seal(self.index, last, &self.plain[..take], &mut self.out)
            .map_err(io::Error::other)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&self.plain[..take]);
        }
        self.plaintext_len += take as u64;
        self.plain.drain(..take);
        self.index += 1;
        if last {
            self.sealed_last = true;
            self.digest = self.hasher.take().map(Sha256::finish);
        }
        Ok(())
    }
}

impl<R: Read> Read for EncryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos == self.out.len() {
            if self.sealed_last {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// What a completed decryption produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decrypted {
    /// SHA-256 of the plaintext written.
    pub plaintext_sha256: [u8; 32],
    /// Plaintext bytes written.
    pub plaintext_len: u64,
    /// Chunks opened.
    pub chunks: u64,
}

/// Takes the encrypted stream and writes the plaintext to `inner`, one authenticated chunk at a
/// time. Plaintext of a chunk is written only after it authenticated, but the stream as a whole
/// is proven complete only by [`DecryptingWriter::finish`]: write to a temporary file and keep it
/// only if `finish` succeeds.
pub struct DecryptingWriter<W> {
    inner: W,
    key: DataKey,
    cipher: Option<(ChunkCipher, usize)>,
    pending: Vec<u8>,
    plain: Vec<u8>,
    index: u64,
    hasher: Sha256,
    plaintext_len: u64,
}

impl<W: Write> DecryptingWriter<W> {
    /// Decrypts with `key` into `inner`.
    pub fn new(inner: W, key: &DataKey) -> Self {
        DecryptingWriter {
            inner,
            key: key.clone(),
            cipher: None,
            pending: Vec::new(),
            plain: Vec::new(),
            index: 0,
            hasher: Sha256::new(),
            plaintext_len: 0,
        }
    }

    fn open_chunk(&mut self, start: usize, len: usize, last: bool) -> Result<(), CryptoError> {
        let Some((cipher, _)) = self.cipher.as_mut() else {
            return Err(CryptoError::BadHeader("no header".into()));
        };
        self.plain.clear();
        cipher.open(
            self.index,
            last,
            &self.pending[start..start + len],
            &mut self.plain,
        )?;
        self.hasher.update(&self.plain);
        self.plaintext_len += self.plain.len() as u64;
        self.inner.write_all(&self.plain)?;
        self.index += 1;
        Ok(())
    }

    fn absorb(&mut self, data: &[u8]) -> Result<(), CryptoError> {
        self.pending.extend_from_slice(data);
        if self.cipher.is_none() {
            if self.pending.len() < HEADER_LEN {
                return Ok(());
            }
            let header = StreamHeader::parse(&self.pending)?;
            let cipher = ChunkCipher::opener(&self.key, &header)?;
            let sealed = header.chunk_size as usize + TAG_LEN;
            self.cipher = Some((cipher, sealed));
            self.pending.drain(..HEADER_LEN);
            self.pending.reserve(sealed);
        }
        let sealed = self.cipher.as_ref().map(|c| c.1).unwrap_or(usize::MAX);
        // A full chunk followed by at least one more byte cannot be the last one.
        let mut pos = 0;
        while self.pending.len() - pos > sealed {
            self.open_chunk(pos, sealed, false)?;
            pos += sealed;
        }
        self.pending.drain(..pos);
        Ok(())
    }

    /// Checks the final chunk and returns the plaintext's hash and size; the inner writer is
    /// flushed and returned.
    pub fn finish(mut self) -> Result<(Decrypted, W), CryptoError> {
        if self.cipher.is_none() {
            return Err(CryptoError::BadHeader(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                self.pending.len()
            )));
        }
        let len = self.pending.len();
        if len < TAG_LEN {
            return Err(CryptoError::Truncated { chunks: self.index });
        }
        if let Err(e) = self.open_chunk(0, len, true) {
            // A full chunk that opens as "not last" means the real last chunk was cut off.
            let mut probe = Vec::new();
            let truncated = self.cipher.as_mut().is_some_and(|(c, _)| {
                c.open(self.index, false, &self.pending[..len], &mut probe)
                    .is_ok()
            });
            return Err(if truncated {
                CryptoError::Truncated {
                    chunks: self.index + 1,
                }
            } else {
                e
            });
        }
        self.inner.flush()?;
        Ok((
            Decrypted {
                plaintext_sha256: self.hasher.finish(),
                plaintext_len: self.plaintext_len,
                chunks: self.index,
            },
            self.inner,
        ))
    }
}

impl<W: Write> Write for DecryptingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.absorb(buf).map_err(|e| match e {
            CryptoError::Io(io) => io,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts all of `input` into `output`; returns the plaintext's SHA-256 and length.
pub fn encrypt<R: Read, W: Write>(
    input: R,
    mut output: W,
    key: &DataKey,
    chunk_size: u32,
) -> Result<([u8; 32], u64), CryptoError> {
    let mut reader = EncryptingReader::new(input, key, chunk_size)?;
    io::copy(&mut reader, &mut output)?;
    output.flush()?;
    let digest = reader
        .plaintext_sha256()
        .ok_or_else(|| CryptoError::Io(io::Error::other("stream ended before its last chunk")))?;
    Ok((digest, reader.plaintext_len()))
}

/// Decrypts all of `input` into `output`.
pub fn decrypt<R: Read, W: Write>(
    mut input: R,
    output: W,
    key: &DataKey,
) -> Result<Decrypted, CryptoError> {
    let mut writer = DecryptingWriter::new(output, key);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        writer.absorb(&buf[..n])?;
    }
    writer.finish().map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CS: u32 = 1024;

    fn key() -> DataKey {
        DataKey::from_bytes([7; 32])
    }

    fn seal(plain: &[u8]) -> Vec<u8> {
        let mut ct = Vec::new();
        encrypt(plain, &mut ct, &key(), CS).unwrap();
        ct
    }

    fn open(ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        decrypt(ct, &mut out, &key())?;
        Ok(out)
    }

    #[test]
    fn known_answer_for_a_fixed_key_and_prefix() {
        // Pinned output for a fixed key, prefix and plaintext, so a format change cannot go
        // unnoticed; the single-chunk value was checked against Python's `cryptography`
        // (AESGCM(key).encrypt(prefix + 0u32 + b"\x01", b"abc", header)).
        let header = StreamHeader {
            chunk_size: CS,
            nonce_prefix: [1, 2, 3, 4, 5, 6, 7],
        };
        let mut sealer = ChunkCipher::sealer(&key(), &header).unwrap();
        let mut out = Vec::new();
        sealer.seal(0, true, b"abc", &mut out).unwrap();
        assert_eq!(hex::encode(&out), KAT_ABC);
        let mut opener = ChunkCipher::opener(&key(), &header).unwrap();
        let mut plain = Vec::new();
        opener.open(0, true, &out, &mut plain).unwrap();
        assert_eq!(plain, b"abc");
        assert_eq!(
            hex::encode(header.to_bytes()),
            "4e44454e43010000000004000102030405060700"
        );
    }

    const KAT_ABC: &str = "66d9f3924109985abd8dab9daf024e27c9b8b6";

    #[test]
    fn round_trips_at_every_boundary_and_hashes_the_plaintext() {
        for len in [0, 1, 1023, 1024, 1025, 2048, 5000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut ct = Vec::new();
            let (digest, n) = encrypt(plain.as_slice(), &mut ct, &key(), CS).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(digest, crate::sha256(&plain));
            let header = StreamHeader::parse(&ct).unwrap();
            assert_eq!(
                ct.len() as u64,
                header.ciphertext_len(len as u64),
                "len {len}"
            );
            let mut out = Vec::new();
            let d = decrypt(ct.as_slice(), &mut out, &key()).unwrap();
            assert_eq!(out, plain);
            assert_eq!(d.plaintext_sha256, digest);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected() {
        let ct = seal(&[5u8; 3000]);
        for at in [0, 7, 12, HEADER_LEN, HEADER_LEN + 1500, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 0x10;
            let e = open(&bad).unwrap_err();
            assert!(
                matches!(e, CryptoError::Tampered { .. } | CryptoError::BadHeader(_)),
                "flip at {at}: {e}"
            );
        }
    }

    #[test]
    fn reordered_chunks_fail_to_authenticate() {
        let ct = seal(&(0..3000).map(|i| i as u8).collect::<Vec<_>>());
        let sealed = CS as usize + TAG_LEN;
        let mut swapped = ct[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&ct[HEADER_LEN + sealed..HEADER_LEN + 2 * sealed]);
        swapped.extend_from_slice(&ct[HEADER_LEN..HEADER_LEN + sealed]);
        swapped.extend_from_slice(&ct[HEADER_LEN + 2 * sealed..]);
        assert!(matches!(
            open(&swapped).unwrap_err(),
            CryptoError::Tampered { chunk: 0 }
        ));
    }

    #[test]
    fn truncation_at_a_chunk_boundary_or_inside_a_chunk_is_detected() {
        let ct = seal(&[9u8; 3000]);
        let sealed = CS as usize + TAG_LEN;
        // Dropping the final chunk: the stream now ends with a chunk sealed as "not last".
        let cut = &ct[..HEADER_LEN + 2 * sealed];
        assert!(matches!(
            open(cut).unwrap_err(),
            CryptoError::Truncated { chunks: 2 }
        ));
        // Cut inside a chunk, and cut inside the header.
        assert!(matches!(
            open(&ct[..ct.len() - 3]).unwrap_err(),
            CryptoError::Tampered { .. }
        ));
        assert!(matches!(
            open(&ct[..10]).unwrap_err(),
            CryptoError::BadHeader(_)
        ));
        assert!(matches!(
            open(&ct[..HEADER_LEN + 5]).unwrap_err(),
            CryptoError::Truncated { .. }
        ));
    }

    #[test]
    fn the_wrong_key_fails_on_the_first_chunk() {
        let ct = seal(b"patient_id,age\n1,63\n");
        let mut out = Vec::new();
        let e = decrypt(ct.as_slice(), &mut out, &DataKey::from_bytes([8; 32])).unwrap_err();
        assert!(matches!(e, CryptoError::Tampered { chunk: 0 }));
        assert!(out.is_empty(), "no unauthenticated plaintext is written");
    }

    #[test]
    fn headers_with_bad_magic_or_chunk_size_are_refused() {
        let mut h = StreamHeader::new(CS).unwrap().to_bytes();
        h[0] = b'X';
        assert!(StreamHeader::parse(&h).is_err());
        let mut h = StreamHeader::new(CS).unwrap().to_bytes();
        h[8..12].copy_from_slice(&1u32.to_be_bytes());
        assert!(StreamHeader::parse(&h).is_err());
        assert!(StreamHeader::new(10).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_plaintext_round_trips_through_any_write_pattern(
            plain in proptest::collection::vec(any::<u8>(), 0..5000),
            split in 1usize..3000,
        ) {
            let ct = seal(&plain);
            let mut w = DecryptingWriter::new(Vec::new(), &key());
            for part in ct.chunks(split) {
                w.write_all(part).unwrap();
            }
            let (d, out) = w.finish().unwrap();
            prop_assert_eq!(&out, &plain);
            prop_assert_eq!(d.plaintext_sha256, crate::sha256(&plain));
        }
    }
}
