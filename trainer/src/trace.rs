//! The checkpoint trace: SHA-256 of each checkpoint, committed as a Merkle root, and the choice
//! of segments a validator re-runs.
//!
//! Assignment ([`assign_segments`]): once a result is on chain, the hash of a later block (the
//! beacon, which the trainer did not know when it committed its trace) and the job id choose a
//! uniform sample of segments; each sampled segment goes to two validators (one when there is
//! only one), so a single lazy or colluding validator cannot hide a forged segment it was given.
//! [`escape_probability`] is the chance that a result with forged segments is not caught.

use std::collections::BTreeMap;

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

    /// Why the checkpoint steps are not the ones a run of this spec records, or `None` when
    /// they are. A run checkpoints at step 0, after every `checkpoint_every` steps and at its
    /// end, so checkpoint `i` is at `min(i * checkpoint_every, total)`. `total` is the run's
    /// step count when the spec fixes it (networks); without it (trees, which stop when fully
    /// grown) every checkpoint but the last must be at `i * checkpoint_every` and the last within
    /// the final interval (whether that state is finished is for the caller to check). Cheap: no
    /// checkpoint is read.
    pub fn schedule_error(&self, checkpoint_every: u64, total: Option<u64>) -> Option<String> {
        if self.checkpoint_every != checkpoint_every {
            return Some(format!(
                "the trace checkpoints every {} steps, the spec every {checkpoint_every}",
                self.checkpoint_every
            ));
        }
        if checkpoint_every == 0 {
            return Some("the spec's checkpoint_every is 0".into());
        }
        let Some(&end) = self.steps.last() else {
            return Some("the trace has no checkpoints".into());
        };
        let last = self.steps.len() - 1;
        if let Some(total) = total {
            if end != total {
                return Some(format!(
                    "the trace ends at step {end}, the spec runs {total} steps"
                ));
            }
            let want = total.div_ceil(checkpoint_every) + 1;
            if self.steps.len() as u64 != want {
                return Some(format!(
                    "the trace has {} checkpoints, the spec implies {want}",
                    self.steps.len()
                ));
            }
        }
        for (i, &at) in self.steps.iter().enumerate() {
            // i * checkpoint_every, saturated: a step count past u64 is not any checkpoint's.
            let planned = (i as u64).saturating_mul(checkpoint_every);
            let ok = match total {
                Some(total) => at == planned.min(total),
                None if i < last || i == 0 => at == planned,
                // The last checkpoint of a tree: after the previous one, at most a full interval.
                None => at > planned - checkpoint_every && at <= planned,
            };
            if !ok {
                let want = match total {
                    Some(total) => planned.min(total).to_string(),
                    None if i < last || i == 0 => planned.to_string(),
                    None => format!(
                        "after step {} and at most {planned}",
                        planned - checkpoint_every
                    ),
                };
                return Some(format!(
                    "checkpoint {i} is at step {at}, the spec puts it at {want}"
                ));
            }
        }
        None
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

/// A CometBFT validator address (the first 20 bytes of SHA-256 of its public key).
pub type ValidatorAddress = [u8; 20];

/// Domain tag of the assignment seed, so no other hash of (beacon, job id) can collide with it.
const ASSIGN_DOMAIN: &[u8] = b"neurodata-trainer/assign/v1\0";

/// Which segments of job `job_id`'s trace (`segments` of them) each validator re-runs, given the
/// `beacon` (the hash of a block after the result's block).
///
/// The scheme, which every validator computes alike from public inputs:
/// - the seed is SHA-256(`"neurodata-trainer/assign/v1\0"` ‖ beacon ‖ job_id as 8 bytes
///   big-endian); the job id is fixed-width and last, so (beacon, job id) pairs cannot collide;
/// - the sample S is the first `ceil(segments * sample_bps / 10000)` segments of a Fisher-Yates
///   shuffle of `0..segments` (at least one when there are segments) — a uniformly drawn subset;
///   `sample_bps` is clamped to 1..=10000;
/// - validators are deduplicated and sorted, so the result does not depend on the order they are
///   given in, and a rotation offset is drawn from the same stream; the j-th segment of S goes to
///   the validators at sorted positions `(offset + j + t) % n` for `t < min(2, n)`;
/// - a validator given nothing then takes `S[position % |S|]`, so none is idle (the union of all
///   assignments is still S).
///
/// Every validator of the set is a key of the map (with an empty list only when `segments` is 0);
/// each list is ascending without duplicates.
pub fn assign_segments(
    beacon: &[u8],
    job_id: u64,
    validators: &[ValidatorAddress],
    segments: usize,
    sample_bps: u32,
) -> BTreeMap<ValidatorAddress, Vec<usize>> {
    let mut sorted = validators.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); sorted.len()];
    let n = sorted.len();
    if n > 0 && segments > 0 {
        let mut stream = Stream::new(assignment_seed(beacon, job_id), "assign", 0);
        let mut order: Vec<usize> = (0..segments).collect();
        stream.shuffle(&mut order);
        let sample = &order[..sample_size(segments, sample_bps)];
        let offset = stream.below(n as u64) as usize;
        for (j, &segment) in sample.iter().enumerate() {
            for t in 0..n.min(2) {
                assigned[(offset + j % n + t) % n].push(segment);
            }
        }
        for (i, list) in assigned.iter_mut().enumerate() {
            if list.is_empty() {
                list.push(sample[i % sample.len()]);
            }
        }
        for list in &mut assigned {
            list.sort_unstable();
            list.dedup();
        }
    }
    sorted.into_iter().zip(assigned).collect()
}

/// The segments [`assign_segments`] gives `me`; empty when `me` is not in `validators`.
pub fn segments_for(
    beacon: &[u8],
    job_id: u64,
    validators: &[ValidatorAddress],
    segments: usize,
    sample_bps: u32,
    me: &ValidatorAddress,
) -> Vec<usize> {
    assign_segments(beacon, job_id, validators, segments, sample_bps)
        .remove(me)
        .unwrap_or_default()
}

/// How many segments [`assign_segments`] samples: `ceil(segments * sample_bps / 10000)`, at least
/// one when `segments >= 1`, at most `segments`; `sample_bps` is clamped to 1..=10000.
pub fn sample_size(segments: usize, sample_bps: u32) -> usize {
    let bps = u128::from(sample_bps.clamp(1, 10_000));
    // u128: segments * 10000 cannot overflow, and the result is at most `segments`.
    let want = (segments as u128 * bps).div_ceil(10_000) as usize;
    want.clamp(usize::from(segments > 0), segments)
}

/// The 64-bit seed of an assignment (the same reduction as [`Trace::sample`]: the first 8 bytes
/// of the digest, little-endian, which [`Stream`] hashes again with the purpose).
fn assignment_seed(beacon: &[u8], job_id: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(ASSIGN_DOMAIN)
        .chain_update(beacon)
        .chain_update(job_id.to_be_bytes())
        .finalize();
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(seed)
}

/// The probability that none of `forged` segments out of `segments` is among `sampled` segments
/// drawn uniformly without replacement: the hypergeometric
/// `P(escape) = C(n - f, s) / C(n, s) = prod_{i < s} (n - f - i) / (n - i)`
/// (equivalently `prod_{i < f} (n - s - i) / (n - i)`; the shorter product is used, so no
/// binomial coefficient is ever formed and nothing overflows). Arguments beyond `segments` are
/// clamped to it; 1 when `forged` is 0, 0 when `forged + sampled > segments`.
///
/// Why this is the chance that a forged result escapes: re-execution is bit-exact (see
/// [`crate::kernels`]), so any honest validator that re-runs a forged segment — one whose end
/// checkpoint is not what its start checkpoint gives — sees a digest other than the trace's leaf
/// and reports it. [`assign_segments`] re-runs exactly the sample S (idle validators are given
/// segments of S, never others), S is a uniform subset because the beacon is a block hash the
/// trainer could not know when it committed the trace, and each segment of S has two re-runners,
/// so one lazy or colluding validator alone cannot hide a forged segment it drew. The result
/// escapes only when S misses every forged segment. Not covered: both re-runners of a forged
/// segment colluding, or a block proposer in league with the trainer withholding blocks whose
/// hash samples a forged segment (each such retry is a fresh draw: k tries raise the escape
/// probability to at most `1 - (1 - p)^k`).
pub fn escape_probability(segments: usize, forged: usize, sampled: usize) -> f64 {
    let n = segments;
    let f = forged.min(n);
    let s = sampled.min(n);
    if f + s > n {
        return 0.0;
    }
    let (outer, inner) = if f <= s { (s, f) } else { (f, s) };
    // prod_{i < inner} (n - outer - i) / (n - i); every factor is in [0, 1].
    (0..inner).fold(1.0, |p, i| p * (n - outer - i) as f64 / (n - i) as f64)
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

    fn address(i: u8) -> ValidatorAddress {
        let mut a = [0u8; 20];
        a[0] = i;
        a[19] = i.wrapping_mul(7);
        a
    }

    /// Segment -> how many validators re-run it.
    fn coverage(map: &BTreeMap<ValidatorAddress, Vec<usize>>) -> BTreeMap<usize, usize> {
        let mut c = BTreeMap::new();
        for list in map.values() {
            for &s in list {
                *c.entry(s).or_insert(0) += 1;
            }
        }
        c
    }

    #[test]
    fn assignment_is_pinned() {
        // A change of this vector is a change of the protocol: validators would disagree.
        let validators: Vec<ValidatorAddress> = (1..=4).map(address).collect();
        let map = assign_segments(b"block", 7, &validators, 20, 2_500);
        assert_eq!(coverage(&map).len(), 5);
        let again = assign_segments(b"block", 7, &validators, 20, 2_500);
        assert_eq!(map, again);
        let lists: Vec<&Vec<usize>> = map.values().collect();
        assert_eq!(format!("{lists:?}"), PINNED_ASSIGNMENT);
    }

    const PINNED_ASSIGNMENT: &str = "[[6, 13], [13, 17, 19], [9, 17, 19], [6, 9]]";

    #[test]
    fn sample_size_rounds_up_within_bounds() {
        assert_eq!(sample_size(0, 5_000), 0);
        assert_eq!(sample_size(1, 1), 1);
        assert_eq!(sample_size(20, 1_000), 2);
        assert_eq!(sample_size(20, 2_500), 5);
        assert_eq!(sample_size(21, 2_500), 6);
        assert_eq!(sample_size(100, 1_000), 10);
        assert_eq!(sample_size(7, 10_000), 7);
        // Out-of-range shares are clamped.
        assert_eq!(sample_size(7, 0), 1);
        assert_eq!(sample_size(7, 20_000), 7);
        assert_eq!(sample_size(usize::MAX, 10_000), usize::MAX);
    }

    #[test]
    fn a_validator_outside_the_set_gets_nothing() {
        let validators: Vec<ValidatorAddress> = (1..=3).map(address).collect();
        assert!(segments_for(b"b", 1, &validators, 10, 5_000, &address(9)).is_empty());
        assert!(!segments_for(b"b", 1, &validators, 10, 5_000, &address(2)).is_empty());
        assert!(assign_segments(b"b", 1, &[], 10, 5_000).is_empty());
        let none = assign_segments(b"b", 1, &validators, 0, 5_000);
        assert_eq!(none.len(), 3);
        assert!(none.values().all(Vec::is_empty));
    }

    #[test]
    fn the_job_id_changes_the_sample() {
        let validators: Vec<ValidatorAddress> = (1..=4).map(address).collect();
        let differ = (0..50u64)
            .filter(|&job| {
                coverage(&assign_segments(b"block", job, &validators, 100, 1_000))
                    != coverage(&assign_segments(b"block", job + 1, &validators, 100, 1_000))
            })
            .count();
        assert!(differ >= 49, "{differ} of 50");
    }

    /// 2,000 beacons, 20 segments, 5 sampled: each segment is expected 500 times (binomial,
    /// standard deviation ~19); 400..600 is over five deviations either side.
    #[test]
    fn beacons_draw_every_segment_about_equally_often() {
        let validators: Vec<ValidatorAddress> = (1..=6).map(address).collect();
        let mut counts = [0usize; 20];
        let mut samples = std::collections::BTreeSet::new();
        for b in 0..2_000u32 {
            let map = assign_segments(&b.to_be_bytes(), 3, &validators, 20, 2_500);
            let sample: Vec<usize> = coverage(&map).into_keys().collect();
            assert_eq!(sample.len(), 5);
            for s in &sample {
                counts[*s] += 1;
            }
            samples.insert(sample);
        }
        assert!(counts.iter().all(|c| (400..=600).contains(c)), "{counts:?}");
        // C(20, 5) = 15,504 subsets: 2,000 uniform draws repeat about 125 times.
        assert!(samples.len() > 1_800, "{} distinct samples", samples.len());
    }

    #[test]
    fn escape_probability_is_the_hypergeometric_zero_term() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(escape_probability(20, 1, 2), 0.9));
        assert!(close(escape_probability(20, 1, 5), 0.75));
        assert!(close(escape_probability(20, 1, 10), 0.5));
        // C(95, 10) / C(100, 10) = prod_{i<5} (90 - i) / (100 - i).
        let p: f64 = (0..5).map(|i| (90 - i) as f64 / (100 - i) as f64).product();
        assert!(close(escape_probability(100, 5, 10), p));
        assert!(
            close(escape_probability(100, 10, 5), p),
            "symmetric in f and s"
        );
        assert!(close(escape_probability(10, 0, 10), 1.0));
        assert!(close(escape_probability(10, 3, 0), 1.0));
        assert!(close(escape_probability(10, 6, 5), 0.0));
        assert!(close(escape_probability(10, 11, 1), 0.0));
        // No overflow on large inputs: about (1 - 1/1e6)^(1e5).
        let big = escape_probability(1_000_000, 1, 100_000);
        assert!(close(big, 0.9), "{big}");
    }

    proptest::proptest! {
        #[test]
        fn assignments_cover_the_sample_twice_and_idle_no_one(
            beacon in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            job_id in proptest::num::u64::ANY,
            picks in proptest::collection::vec(0u8..12, 0..10),
            segments in 0usize..60,
            sample_bps in 1u32..=10_000,
        ) {
            // Small address pool: duplicates are common.
            let validators: Vec<ValidatorAddress> = picks.iter().map(|&i| address(i)).collect();
            let map = assign_segments(&beacon, job_id, &validators, segments, sample_bps);
            proptest::prop_assert_eq!(
                &map,
                &assign_segments(&beacon, job_id, &validators, segments, sample_bps)
            );
            let mut shuffled: Vec<ValidatorAddress> = validators.iter().rev().copied().collect();
            shuffled.extend(validators.iter().step_by(2));
            proptest::prop_assert_eq!(
                &map,
                &assign_segments(&beacon, job_id, &shuffled, segments, sample_bps)
            );

            let distinct: std::collections::BTreeSet<ValidatorAddress> =
                validators.iter().copied().collect();
            proptest::prop_assert_eq!(map.keys().copied().collect::<Vec<_>>(),
                distinct.iter().copied().collect::<Vec<_>>());
            let n = distinct.len();
            let cover = coverage(&map);
            if n > 0 {
                proptest::prop_assert_eq!(cover.len(), sample_size(segments, sample_bps));
            }
            for (segment, count) in &cover {
                proptest::prop_assert!(*segment < segments);
                proptest::prop_assert!(*count >= n.min(2), "segment {} re-run {} time(s)", segment, count);
            }
            for (v, list) in &map {
                proptest::prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "{:?}", list);
                proptest::prop_assert_eq!(list.is_empty(), segments == 0);
                proptest::prop_assert_eq!(
                    list,
                    &segments_for(&beacon, job_id, &validators, segments, sample_bps, v)
                );
            }
        }
    }
}
