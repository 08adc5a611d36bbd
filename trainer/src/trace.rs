//! The checkpoint trace: SHA-256 of each checkpoint, committed as a Merkle root, and the choice
//! of segments a validator re-runs.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rng::Stream;

/// A run's trace, as written to `trace.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Step count at each checkpoint (the first is 0, the last is the end of the run).
    pub steps: Vec<u64>,
    /// Hex SHA-256 of each checkpoint file.
    pub leaves: Vec<String>,
    /// Hex Merkle root over the leaves.
    pub root: String,
}

impl Trace {
    /// Builds the trace from checkpoint digests.
    pub fn new(checkpoint_every: u64, steps: Vec<u64>, leaves: Vec<[u8; 32]>) -> Trace {
        Trace {
            checkpoint_every,
            steps,
            root: hex::encode(root(&leaves)),
            leaves: leaves.iter().map(hex::encode).collect(),
        }
    }

    /// Segments (checkpoint i to i+1).
    pub fn segments(&self) -> usize {
        self.leaves.len().saturating_sub(1)
    }

    /// Whether the root is the Merkle root of the leaves and the lists agree in length.
    pub fn consistent(&self) -> bool {
        let leaves: Option<Vec<[u8; 32]>> = self
            .leaves
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect();
        leaves.is_some_and(|l| hex::encode(root(&l)) == self.root)
            && self.steps.len() == self.leaves.len()
            && self.steps.windows(2).all(|w| w[0] < w[1])
    }

    /// `ceil(fraction * segments)` distinct segments drawn with randomness from `beacon`
    /// (e.g. the hash of a block produced after the result was submitted) and this root, in
    /// increasing order.
    pub fn sample(&self, fraction: f64, beacon: &[u8]) -> Vec<usize> {
        let n = self.segments();
        let want = ((fraction * n as f64).ceil() as usize).clamp(usize::from(n > 0), n);
        let digest = Sha256::new()
            .chain_update(b"neurodata-trainer/sample/v1\0")
            .chain_update(beacon)
            .chain_update(self.root.as_bytes())
            .finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        let mut all: Vec<usize> = (0..n).collect();
        Stream::new(u64::from_le_bytes(seed), "sample", 0).shuffle(&mut all);
        let mut chosen = all[..want].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

/// Merkle root: leaves hashed with a 0x00 prefix, inner nodes with 0x01, an odd node carried up.
pub fn root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return Sha256::digest(b"").into();
    }
    let mut level: Vec<[u8; 32]> = leaves
        .iter()
        .map(|l| {
            Sha256::new()
                .chain_update([0u8])
                .chain_update(l)
                .finalize()
                .into()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => Sha256::new()
                    .chain_update([1u8])
                    .chain_update(a)
                    .chain_update(b)
                    .finalize()
                    .into(),
                [a] => *a,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_leaf_changes_the_root_and_samples_are_stable() {
        let leaves: Vec<[u8; 32]> = (0..5u8).map(|i| [i; 32]).collect();
        let t = Trace::new(10, vec![0, 10, 20, 30, 35], leaves.clone());
        assert!(t.consistent());
        for i in 0..5 {
            let mut l = leaves.clone();
            l[i][0] ^= 1;
            assert_ne!(hex::encode(root(&l)), t.root);
        }
        let mut bad = t.clone();
        bad.leaves.swap(0, 1);
        assert!(!bad.consistent());
        let s = t.sample(0.1, b"block");
        assert_eq!(s.len(), 1);
        assert_eq!(s, t.sample(0.1, b"block"));
        assert_eq!(t.sample(1.0, b"x"), vec![0, 1, 2, 3]);
    }
}
