//! Validators' commit–reveal on a result, carried in CometBFT vote extensions.
//!
//! A validator's verifier (a process beside its abci-app) re-runs the segments the beacon gave
//! it and leaves a [`Verdict`] for the app. At each height the app extends its precommit with
//! what the committed state asks of it ([`votes_to_extend`]): while the job's commit phase is
//! open, a commit — SHA-256 of ([`commitment`]) the job, the result digest, the validator's own
//! address, the verdict, the digest of the checkpoints it computed and a random salt; once the
//! commit phase is closed, the reveal. The next proposer injects the signed extensions into its
//! block, and [`apply_votes`] records them.
//!
//! Why this shape:
//! - Nothing is revealed while commits are accepted, so a lazy validator has no verdict to copy.
//! - A commit binds its validator's address, so copying another's commit is useless: its
//!   reveal cannot match (it does not know the salt, and the address differs anyway); such a
//!   reveal counts as no vote and is recorded.
//! - A commit binds the job and its result digest, so a reveal replayed into another job or
//!   onto another result does not match either; a second reveal of the same validator is
//!   ignored.
//! - Extensions carry ids and hashes only (a commit is ~45 bytes, a reveal ~80), far under the
//!   2 KiB at which CometBFT's QA saw latency double.

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{TrainingError, TrainingWrite, status, step};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::state::{Event, StateRead, StateWrite};
use crate::tx::ExecCtx;

/// Marks the injected-votes tx (first tx of a block); no protobuf `Tx` starts with a zero byte.
pub const INJECTED_MARKER: [u8; 4] = *b"\0NDV";
/// Most job votes in one extension.
pub const MAX_VOTES_PER_EXTENSION: usize = 16;
/// Largest extension.
pub const MAX_EXTENSION_BYTES: usize = 2048;

/// A verifier's verdict on a job's result, as the local abci-app reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The job.
    pub job_id: u64,
    /// The result digest the verdict is about.
    pub result_digest: [u8; 32],
    /// Every sampled segment and the final model reproduced.
    pub matches: bool,
    /// SHA-256 over the checkpoint digests it computed.
    pub segments_digest: [u8; 32],
    /// Random, kept secret until the reveal.
    pub salt: [u8; 32],
}

/// A validator's votes from a verified extension in a block.
#[derive(Clone, Debug, PartialEq)]
pub struct CastVote {
    /// CometBFT address (20 bytes).
    pub validator: [u8; 20],
    /// Its job votes.
    pub votes: Vec<pb::JobVote>,
}

/// The committed hash of a verdict.
pub fn commitment(
    job_id: u64,
    result_digest: &[u8],
    validator: &[u8],
    matches: bool,
    segments_digest: &[u8],
    salt: &[u8],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"neurodata/attest/v1\0")
        .chain_update(job_id.to_be_bytes())
        .chain_update(result_digest)
        .chain_update(validator)
        .chain_update([u8::from(matches)])
        .chain_update(segments_digest)
        .chain_update(salt)
        .finalize()
        .into()
}

/// Stateless checks of an extension (VerifyVoteExtension): it decodes, is small, and each vote
/// is well formed and about a distinct job.
pub fn check_extension(bytes: &[u8]) -> Result<pb::VoteExtension, TxError> {
    let bad = |reason: String| TxError::from(TrainingError::BadResult(reason));
    if bytes.len() > MAX_EXTENSION_BYTES {
        return Err(bad(format!(
            "vote extension is {} bytes; the limit is {MAX_EXTENSION_BYTES}",
            bytes.len()
        )));
    }
    let ext = pb::VoteExtension::decode(bytes)
        .map_err(|e| bad(format!("vote extension does not decode: {e}")))?;
    if ext.votes.len() > MAX_VOTES_PER_EXTENSION {
        return Err(bad(format!(
            "vote extension has {} votes; the limit is {MAX_VOTES_PER_EXTENSION}",
            ext.votes.len()
        )));
    }
    let mut jobs = std::collections::BTreeSet::new();
    for v in &ext.votes {
        if !jobs.insert(v.job_id) {
            return Err(bad(format!("job {} voted twice", v.job_id)));
        }
        match &v.step {
            Some(pb::job_vote::Step::Commit(c)) if c.len() == 32 => {}
            Some(pb::job_vote::Step::Reveal(r))
                if r.segments_digest.len() == 32 && r.salt.len() == 32 => {}
            _ => return Err(bad(format!("job {}: malformed vote", v.job_id))),
        }
    }
    Ok(ext)
}

/// The job votes validator `me` extends its precommit with now, from the committed state and
/// its verifier's verdicts: a commit for each job in its commit phase it has not committed to,
/// a reveal for each job in its reveal phase it committed to and has not revealed.
pub fn votes_to_extend<S: StateRead>(
    state: &S,
    me: &[u8; 20],
    verdicts: &[Verdict],
) -> Result<Vec<pb::JobVote>, TxError> {
    let mut votes = Vec::new();
    for v in verdicts {
        if votes.len() == MAX_VOTES_PER_EXTENSION {
            break;
        }
        let Some(job) = super::TrainingRead::job(state, v.job_id)? else {
            continue;
        };
        let (Some(result), Some(att)) = (&job.result, &job.attestation) else {
            continue;
        };
        if status(&job) != pb::JobStatus::Attesting || result.digest != v.result_digest {
            continue;
        }
        let Some(slot) = att.attestors.iter().find(|a| a.validator == me) else {
            continue;
        };
        let step = if !att.revealing && slot.commit.is_empty() {
            pb::job_vote::Step::Commit(
                commitment(
                    v.job_id,
                    &v.result_digest,
                    me,
                    v.matches,
                    &v.segments_digest,
                    &v.salt,
                )
                .to_vec(),
            )
        } else if att.revealing && !slot.commit.is_empty() && !slot.revealed {
            pb::job_vote::Step::Reveal(pb::Reveal {
                matches: v.matches,
                segments_digest: v.segments_digest.to_vec(),
                salt: v.salt.to_vec(),
            })
        } else {
            continue;
        };
        votes.push(pb::JobVote {
            job_id: v.job_id,
            step: Some(step),
        });
    }
    Ok(votes)
}

/// Records the votes of a block's injected extensions (already verified as signed by their
/// validators). A vote that does not fit the job's phase (late commit, early reveal, a validator
/// outside the job's attestors, a repeat) changes nothing; a reveal that does not match its
/// commit is recorded as refused.
pub fn apply_votes<S: StateWrite>(
    state: &mut S,
    cast: &[CastVote],
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    for c in cast {
        for v in &c.votes {
            let Some(mut job) = super::TrainingRead::job(state, v.job_id)? else {
                continue;
            };
            if status(&job) != pb::JobStatus::Attesting {
                continue;
            }
            let digest = job
                .result
                .as_ref()
                .map(|r| r.digest.clone())
                .unwrap_or_default();
            let Some(att) = job.attestation.as_mut() else {
                continue;
            };
            let revealing = att.revealing;
            let Some(i) = att
                .attestors
                .iter()
                .position(|a| a.validator == c.validator)
            else {
                continue;
            };
            let what = match &v.step {
                Some(pb::job_vote::Step::Commit(commit)) => {
                    let slot = &mut att.attestors[i];
                    if revealing || !slot.commit.is_empty() {
                        continue;
                    }
                    slot.commit = commit.clone();
                    slot.commit_height = ctx.height;
                    "commit".to_owned()
                }
                Some(pb::job_vote::Step::Reveal(r)) => {
                    let slot = &att.attestors[i];
                    if !revealing
                        || slot.commit.is_empty()
                        || slot.revealed
                        || !slot.refused.is_empty()
                    {
                        continue;
                    }
                    let expected = commitment(
                        job.id,
                        &digest,
                        &c.validator,
                        r.matches,
                        &r.segments_digest,
                        &r.salt,
                    );
                    if slot.commit == expected {
                        let slot = &mut att.attestors[i];
                        slot.revealed = true;
                        slot.matches = r.matches;
                        slot.segments_digest = r.segments_digest.clone();
                        slot.reveal_height = ctx.height;
                        format!("reveal: {}", if r.matches { "matches" } else { "mismatch" })
                    } else {
                        // Whose commit it copied, if it is another attestor's.
                        let copied = att
                            .attestors
                            .iter()
                            .enumerate()
                            .find(|(j, a)| *j != i && a.commit == slot.commit)
                            .map(|(_, a)| hex::encode(&a.validator));
                        let slot = &mut att.attestors[i];
                        slot.refused = match copied {
                            Some(other) => format!(
                                "reveal does not match its commit, which is a copy of {other}'s"
                            ),
                            None => "reveal does not match its commit".into(),
                        };
                        slot.reveal_height = ctx.height;
                        let mut stats = super::TrainingRead::attestor_stats(state, &c.validator)?;
                        stats.bad_reveal += 1;
                        state.put_attestor_stats(&stats);
                        format!("refused: {}", att.attestors[i].refused)
                    }
                }
                None => continue,
            };
            let validator = hex::encode(c.validator);
            step(
                &mut job,
                ctx.height,
                "attested",
                format!("{validator} {what}"),
            );
            state.put_job(&job);
            state.emit(
                Event::new(EventKind::JobAttested)
                    .attr(attr::JOB, job.id)
                    .attr(attr::VALIDATOR, &validator)
                    .attr(attr::STEP, what),
            );
        }
    }
    Ok(())
}

/// A validator's CometBFT address: the first 20 bytes of SHA-256 of its Ed25519 key.
pub fn validator_address(pub_key: &[u8]) -> [u8; 20] {
    let digest = Sha256::digest(pub_key);
    let mut a = [0u8; 20];
    a.copy_from_slice(&digest[..20]);
    a
}
