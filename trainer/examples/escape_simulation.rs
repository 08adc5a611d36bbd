//! Measures how often a result with forged segments escapes sampled re-execution, against the
//! analytic value ([`escape_probability`]).
//!
//! For each case, `trials` beacons (SHA-256 of the trial index, standing in for block hashes)
//! assign segments to eight validators through [`assign_segments`]; a trial is an escape when no
//! forged segment is assigned to any validator. The forged segments are fixed before the beacons
//! are drawn, as a trainer must commit its trace before the beacon block exists.
//!
//! ```sh
//! cargo run --release -p neurodata-trainer --example escape_simulation [trials, default 20000]
//! ```
//!
//! The last line is one JSON object: `{"trials":..,"cases":[{segments, forged, sample_bps,
//! sampled, analytic, measured, sigma}]}`, `sigma` being |measured - analytic| in binomial
//! standard errors of the measured share.

use std::collections::BTreeSet;

use neurodata_trainer::trace::{
    ValidatorAddress, assign_segments, escape_probability, sample_size,
};
use sha2::{Digest, Sha256};

/// Trials per case unless given as the first argument.
const TRIALS: u64 = 20_000;
const VALIDATORS: u8 = 8;

/// (segments, forged, sample_bps)
const CASES: [(usize, usize, u32); 6] = [
    (20, 1, 1_000),
    (20, 1, 2_500),
    (20, 1, 5_000),
    (100, 1, 1_000),
    (100, 5, 1_000),
    (100, 5, 2_500),
];

fn main() {
    let trials = match std::env::args().nth(1) {
        None => TRIALS,
        Some(arg) => match arg.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: escape_simulation [trials], got {arg:?}");
                std::process::exit(2);
            }
        },
    };
    let validators: Vec<ValidatorAddress> = (0..VALIDATORS)
        .map(|i| {
            let digest = Sha256::digest([b'v', i]);
            let mut a = [0u8; 20];
            a.copy_from_slice(&digest[..20]);
            a
        })
        .collect();
    let mut rows = Vec::new();
    for (case, &(segments, forged, sample_bps)) in CASES.iter().enumerate() {
        // Spread over the trace; where they lie does not matter to a uniform sample.
        let forged_set: BTreeSet<usize> = (0..forged).map(|k| k * segments / forged).collect();
        let job_id = case as u64 + 1;
        let mut escapes = 0u64;
        for trial in 0..trials {
            let beacon = Sha256::digest(trial.to_be_bytes());
            let map = assign_segments(&beacon, job_id, &validators, segments, sample_bps);
            let caught = map.values().flatten().any(|s| forged_set.contains(s));
            if !caught {
                escapes += 1;
            }
        }
        let sampled = sample_size(segments, sample_bps);
        let analytic = escape_probability(segments, forged, sampled);
        let measured = escapes as f64 / trials as f64;
        let se = (analytic * (1.0 - analytic) / trials as f64).sqrt();
        let sigma = if se > 0.0 {
            (measured - analytic).abs() / se
        } else {
            0.0
        };
        println!(
            "segments {segments:>4}  forged {forged:>2}  sample {:>5.1}% ({sampled:>2} segments)  \
             analytic {analytic:.4}  measured {measured:.4}  ({escapes}/{trials}, {sigma:.2} sigma)",
            f64::from(sample_bps) / 100.0
        );
        rows.push(serde_json::json!({
            "segments": segments,
            "forged": forged,
            "sample_bps": sample_bps,
            "sampled": sampled,
            "analytic": analytic,
            "measured": measured,
            "sigma": sigma,
        }));
    }
    println!(
        "{}",
        serde_json::json!({"trials": trials, "validators": VALIDATORS, "cases": rows})
    );
}
