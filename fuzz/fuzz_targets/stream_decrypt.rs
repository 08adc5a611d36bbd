//! The chunked-stream decryptor (`neurodata_crypto::stream`) on tampered input.
//!
//! Input: chunk-size selector (1024, 1536, 2048, 4096), key byte, write size (u16 LE), count of
//! tamperings (0..=4) each `kind, a (u16 LE), b (u16 LE)`, then the plaintext. The plaintext is
//! encrypted with `encrypt` (a fresh random nonce prefix per stream, as in production), the
//! tamperings applied to the ciphertext (flip a bit, truncate, insert, delete, swap, duplicate
//! or drop a sealed chunk, append, rewrite the header's chunk size, overwrite a byte), and the
//! result decrypted twice: with `decrypt` and through a `DecryptingWriter` fed in writes of the
//! chosen size. Properties: no panic; the ciphertext has `StreamHeader::ciphertext_len` bytes;
//! bytes equal to the ciphertext decrypt to exactly the plaintext (and its SHA-256 and length)
//! on both paths; any other bytes fail on both paths, and no plaintext of an unauthenticated
//! chunk reaches the writer.

#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;
use neurodata_crypto::DataKey;
use neurodata_crypto::stream::{self, DecryptingWriter, HEADER_LEN, StreamHeader, TAG_LEN};
use neurodata_fuzz as fx;

/// Decrypts through the writer in `split`-byte writes: the plaintext written, and whether the
/// stream completed.
fn through_writer(ct: &[u8], key: &DataKey, split: usize) -> (Vec<u8>, bool) {
    let mut w = DecryptingWriter::new(Vec::new(), key);
    for part in ct.chunks(split) {
        if w.write_all(part).is_err() {
            return (Vec::new(), false);
        }
    }
    match w.finish() {
        Ok((_, out)) => (out, true),
        Err(_) => (Vec::new(), false),
    }
}

fn tamper(ct: &mut Vec<u8>, kind: u8, a: usize, b: usize, sealed: usize) {
    let len = ct.len();
    let chunks = (len.saturating_sub(HEADER_LEN)).div_ceil(sealed).max(1);
    let range = |i: usize| {
        let start = HEADER_LEN + (i % chunks) * sealed;
        start.min(len)..(start + sealed).min(len)
    };
    match kind % 10 {
        0 if len > 0 => ct[a % len] ^= 1 << (b % 8),
        1 => ct.truncate(a % (len + 1)),
        2 => ct.insert(a % (len + 1), b as u8),
        3 if len > 0 => {
            let at = a % len;
            ct.drain(at..(at + 1 + b % 64).min(len));
        }
        4 => {
            // Swap two sealed chunks of equal length.
            let (x, y) = (range(a), range(b));
            if x.len() == y.len() && x.start != y.start {
                let copy = ct[x.clone()].to_vec();
                ct.copy_within(y.clone(), x.start);
                ct[y].copy_from_slice(&copy);
            }
        }
        5 => {
            let r = range(a);
            let copy = ct[r.clone()].to_vec();
            ct.splice(r.end..r.end, copy);
        }
        6 => {
            ct.drain(range(a));
        }
        7 => ct.extend(std::iter::repeat_n(b as u8, 1 + a % 32)),
        8 if len >= HEADER_LEN => ct[8..12].copy_from_slice(&((a as u32) << 8 | b as u32).to_be_bytes()),
        9 if len > 0 => ct[a % len] = b as u8,
        _ => {}
    }
}

fuzz_target!(init: fx::seed_mode("stream_decrypt", fx::seeds::stream_decrypt), |data: &[u8]| {
    let mut c = fx::Cursor::new(data);
    let chunk_size = [1024u32, 1536, 2048, 4096][usize::from(c.u8() % 4)];
    let key = DataKey::from_bytes([c.u8(); 32]);
    let split = usize::from(c.u16()).max(1);
    let ops: Vec<(u8, usize, usize)> = (0..c.u8() % 5)
        .map(|_| (c.u8(), usize::from(c.u16()), usize::from(c.u16())))
        .collect();
    let plaintext = c.rest();

    let mut ct = Vec::new();
    let (digest, len) = stream::encrypt(plaintext, &mut ct, &key, chunk_size).expect("encrypts");
    assert_eq!(digest, fx::sha256(plaintext));
    assert_eq!(len, plaintext.len() as u64);
    let header = StreamHeader::parse(&ct).expect("its own header parses");
    assert_eq!(header.chunk_size, chunk_size);
    assert_eq!(ct.len() as u64, header.ciphertext_len(len));

    let mut tampered = ct.clone();
    for &(kind, a, b) in &ops {
        tamper(&mut tampered, kind, a, b, chunk_size as usize + TAG_LEN);
    }

    let mut out = Vec::new();
    let read = stream::decrypt(tampered.as_slice(), &mut out, &key);
    let (written, complete) = through_writer(&tampered, &key, split);
    if tampered == ct {
        let d = read.expect("an untouched stream decrypts");
        assert_eq!(out, plaintext);
        assert_eq!((d.plaintext_sha256, d.plaintext_len), (digest, len));
        assert!(complete, "an untouched stream decrypts through the writer");
        assert_eq!(written, plaintext);
    } else {
        assert!(read.is_err(), "tampered bytes decrypted ({ops:?})");
        assert!(!complete, "tampered bytes decrypted through the writer ({ops:?})");
        // What was written before the failure authenticated: a prefix of whole chunks.
        assert!(plaintext.starts_with(&out), "unauthenticated plaintext was written");
        assert_eq!(out.len() % chunk_size as usize, 0, "a partial chunk was written");
    }
});
