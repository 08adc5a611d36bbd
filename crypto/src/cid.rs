//! Content identifiers: CIDv1 with the `raw` codec and a sha2-256 multihash, written in multibase
//! base32 (lower case, no padding, prefix `b`) — the form IPFS prints, so a blob's CID here is
//! the CID IPFS would give the same bytes. Shared by the gateway (which stores blobs under it) and
//! its clients (which check what they upload and download).

use std::fmt;
use std::str::FromStr;

const CID_V1: u8 = 0x01;
const RAW_CODEC: u8 = 0x55;
const SHA2_256: u8 = 0x12;
const DIGEST_LEN: u8 = 32;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A CIDv1 (raw, sha2-256): the SHA-256 of the blob's bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cid(pub [u8; 32]);

/// Why a string is not a CID this store accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a CIDv1 (raw codec, sha2-256, base32 'b…'): {reason}")]
pub struct CidError {
    input: String,
    reason: &'static str,
}

impl Cid {
    /// The CID of `digest`, a SHA-256 of the content.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Cid(digest)
    }

    /// The CID of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Cid(openssl::sha::sha256(bytes))
    }

    fn binary(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[..4].copy_from_slice(&[CID_V1, RAW_CODEC, SHA2_256, DIGEST_LEN]);
        b[4..].copy_from_slice(&self.0);
        b
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(60);
        out.push('b');
        let (mut acc, mut bits) = (0u32, 0u32);
        for byte in self.binary() {
            acc = (acc << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
            }
        }
        if bits > 0 {
            out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Self, CidError> {
        let err = |reason| CidError {
            input: s.chars().take(80).collect(),
            reason,
        };
        let body = s
            .strip_prefix('b')
            .ok_or_else(|| err("multibase prefix must be 'b' (base32 lower case)"))?;
        let mut bytes = Vec::with_capacity(36);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in body.bytes() {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or_else(|| err("character outside the base32 alphabet"))?;
            acc = (acc << 5) | v as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
            }
        }
        if bits >= 5 || acc & ((1 << bits) - 1) != 0 {
            return Err(err("non-canonical base32 padding bits"));
        }
        if bytes.len() != 36 {
            return Err(err("wrong length for a sha2-256 CID"));
        }
        if bytes[..4] != [CID_V1, RAW_CODEC, SHA2_256, DIGEST_LEN] {
            return Err(err("not version 1 / raw codec / sha2-256"));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[4..]);
        Ok(Cid(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_ipfs_for_known_content() {
        // `ipfs add --cid-version 1 --raw-leaves` of an empty file, and of "hello world".
        assert_eq!(
            Cid::of(b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(
            Cid::of(b"hello world").to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
    }

    #[test]
    fn round_trips() {
        for data in [&b""[..], b"a", b"hello world", &[0xffu8; 1000]] {
            let cid = Cid::of(data);
            assert_eq!(cid.to_string().parse::<Cid>(), Ok(cid));
        }
    }

    #[test]
    fn refuses_what_is_not_a_raw_sha256_cid() {
        let good = Cid::of(b"x").to_string();
        for bad in [
            "".to_owned(),
            good.replacen('b', "B", 1),
            good[..good.len() - 1].to_owned(),
            format!("{good}a"),
            good.replace('a', "1"),
            // dag-pb (0x70) instead of raw
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".to_owned(),
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".to_owned(),
        ] {
            assert!(bad.parse::<Cid>().is_err(), "{bad}");
        }
    }
}
