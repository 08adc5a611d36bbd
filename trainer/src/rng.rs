//! Seeded randomness. Every use (split, initialisation, shuffling, dropout) draws from its own
//! ChaCha20 stream keyed by SHA-256 of (seed, purpose, index), so a segment of a run can be
//! replayed from a checkpoint without carrying generator state, and candle's unseedable CPU
//! generator is never used.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// One purpose's random stream.
pub struct Stream(ChaCha20Rng);

impl Stream {
    /// The stream for `purpose` number `index` of a job seeded with `seed`.
    pub fn new(seed: u64, purpose: &str, index: u64) -> Stream {
        let mut h = Sha256::new();
        h.update(b"neurodata-trainer/rng/v1\0");
        h.update(seed.to_le_bytes());
        h.update((purpose.len() as u64).to_le_bytes());
        h.update(purpose.as_bytes());
        h.update(index.to_le_bytes());
        Stream(ChaCha20Rng::from_seed(h.finalize().into()))
    }

    /// 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `0..n` without modulo bias (rejection sampling on 64-bit draws).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.0.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_pinned_and_independent() {
        let mut a = Stream::new(42, "init", 0);
        let first: Vec<u32> = (0..3).map(|_| a.next_u32()).collect();
        let mut again = Stream::new(42, "init", 0);
        assert_eq!(first, (0..3).map(|_| again.next_u32()).collect::<Vec<_>>());
        let mut other = Stream::new(42, "init", 1);
        assert_ne!(first[0], other.next_u32());
        let u = Stream::new(1, "x", 0).unit_f32();
        assert!((0.0..1.0).contains(&u));
        let mut v: Vec<u32> = (0..10).collect();
        Stream::new(3, "shuffle", 0).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
