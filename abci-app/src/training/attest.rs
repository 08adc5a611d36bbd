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
//!
//! Evaluations ([`crate::models::evaluation`]) ride the same extensions and the same slots: a
//! vote is about a job (`job_id` set, `evaluation_id` 0) or about an evaluation (`job_id` 0,
//! `evaluation_id` set), and its commit and reveal are recorded by the same rules
//! ([`record_step`]); an evaluation's verdict is a score, so its reveal also carries the score
//! JSON (at most 256 bytes), whose SHA-256 is the reveal's `segments_digest`. An extension with
//! both kinds stays under [`MAX_EXTENSION_BYTES`]: [`votes_to_extend`] leaves out a vote that
//! would push it over.

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{TrainingError, TrainingWrite, status, step};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::models::evaluation::{self, EvaluationVerdict, MAX_SCORE_BYTES};
use crate::state::{Event, StateRead, StateWrite};
use crate::tx::ExecCtx;

/// Marks the injected-votes tx (first tx of a block); no protobuf `Tx` starts with a zero byte.
pub const INJECTED_MARKER: [u8; 4] = *b"\0NDV";
/// Most votes (job and evaluation) in one extension.
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

/// What a vote is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A job's result.
    Job(u64),
    /// An evaluation's score.
    Evaluation(u64),
}

/// The subject of a vote: exactly one of `job_id` and `evaluation_id` is set.
pub fn subject(v: &pb::JobVote) -> Option<Subject> {
    match (v.job_id, v.evaluation_id) {
        (job, 0) if job != 0 => Some(Subject::Job(job)),
        (0, e) if e != 0 => Some(Subject::Evaluation(e)),
        _ => None,
    }
}

/// Stateless checks of an extension (VerifyVoteExtension): it decodes, is small, and each vote
/// is well formed and about a distinct job or evaluation. An evaluation reveal carries its score
/// (at most [`MAX_SCORE_BYTES`]) and the score's SHA-256 as its `segments_digest`; a job reveal
/// carries no score.
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
    let mut subjects = std::collections::BTreeSet::new();
    for v in &ext.votes {
        let Some(subject) = subject(v) else {
            return Err(bad(format!(
                "a vote names job {} and evaluation {}; exactly one must be set",
                v.job_id, v.evaluation_id
            )));
        };
        let name = match subject {
            Subject::Job(id) => format!("job {id}"),
            Subject::Evaluation(id) => format!("evaluation {id}"),
        };
        if !subjects.insert(subject) {
            return Err(bad(format!("{name} voted twice")));
        }
        match (&v.step, subject) {
            (Some(pb::job_vote::Step::Commit(c)), _) if c.len() == 32 => {}
            (Some(pb::job_vote::Step::Reveal(r)), Subject::Job(_))
                if r.segments_digest.len() == 32
                    && r.salt.len() == 32
                    && r.score_json.is_empty() => {}
            (Some(pb::job_vote::Step::Reveal(r)), Subject::Evaluation(_))
                if r.salt.len() == 32 && r.score_json.len() <= MAX_SCORE_BYTES =>
            {
                if !evaluation::digest_opens_score(r) {
                    return Err(bad(format!(
                        "{name}: the reveal's segments_digest is not the SHA-256 of its score"
                    )));
                }
            }
            _ => return Err(bad(format!("{name}: malformed vote"))),
        }
    }
    Ok(ext)
}

/// The votes validator `me` extends its precommit with now, from the committed state and its
/// verifier's verdicts on jobs and evaluations: a commit for each one in its commit phase it has
/// not committed to, a reveal for each one in its reveal phase it committed to and has not
/// revealed. Job votes first, then evaluation votes, each ascending by id; a vote that would push
/// the extension past [`MAX_EXTENSION_BYTES`] (or the count past [`MAX_VOTES_PER_EXTENSION`]) is
/// left for a later height.
pub fn votes_to_extend<S: StateRead>(
    state: &S,
    me: &[u8; 20],
    verdicts: &[Verdict],
    evaluations: &[EvaluationVerdict],
) -> Result<Vec<pb::JobVote>, TxError> {
    let mut candidates = Vec::new();
    for v in verdicts {
        if let Some(vote) = job_vote(state, me, v)? {
            candidates.push(vote);
        }
    }
    for v in evaluations {
        if let Some(vote) = evaluation::vote(state, me, v)? {
            candidates.push(vote);
        }
    }
    let mut ext = pb::VoteExtension { votes: Vec::new() };
    for vote in candidates {
        if ext.votes.len() == MAX_VOTES_PER_EXTENSION {
            break;
        }
        ext.votes.push(vote);
        if ext.encoded_len() > MAX_EXTENSION_BYTES {
            ext.votes.pop();
        }
    }
    Ok(ext.votes)
}

/// The vote on job `v.job_id` that validator `me` owes now, if any.
fn job_vote<S: StateRead>(
    state: &S,
    me: &[u8; 20],
    v: &Verdict,
) -> Result<Option<pb::JobVote>, TxError> {
    let Some(job) = super::TrainingRead::job(state, v.job_id)? else {
        return Ok(None);
    };
    let (Some(result), Some(att)) = (&job.result, &job.attestation) else {
        return Ok(None);
    };
    if status(&job) != pb::JobStatus::Attesting || result.digest != v.result_digest {
        return Ok(None);
    }
    let Some(slot) = att.attestors.iter().find(|a| a.validator == me) else {
        return Ok(None);
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
            score_json: String::new(),
        })
    } else {
        return Ok(None);
    };
    Ok(Some(pb::JobVote {
        job_id: v.job_id,
        step: Some(step),
        evaluation_id: 0,
    }))
}

/// What recording one vote did to an attestor's slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The commit was recorded.
    Commit,
    /// The reveal opened the commit and was recorded in slot `index`.
    Reveal {
        /// The slot.
        index: usize,
        /// Its verdict.
        matches: bool,
    },
    /// The reveal did not open the commit (or was malformed): recorded as refused, `reason`
    /// in the slot's `refused`.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Records validator `validator`'s `step` in `att` at `height`, if it fits the phase: a commit
/// while commits are open and the slot has none; a reveal once reveals are open, of a committed
/// slot not yet revealed or refused. `expected` gives the commitment a reveal must open, or why
/// it cannot open any. `None`: the vote does not fit (a validator outside the attestors, a late
/// commit, an early or repeated reveal) and changes nothing.
pub fn record_step(
    att: &mut pb::ResultAttestation,
    validator: &[u8; 20],
    step: &pb::job_vote::Step,
    height: u64,
    expected: impl FnOnce(&pb::Reveal) -> Result<[u8; 32], String>,
) -> Option<Recorded> {
    let revealing = att.revealing;
    let i = att
        .attestors
        .iter()
        .position(|a| a.validator == validator)?;
    match step {
        pb::job_vote::Step::Commit(commit) => {
            let slot = &mut att.attestors[i];
            if revealing || !slot.commit.is_empty() {
                return None;
            }
            slot.commit = commit.clone();
            slot.commit_height = height;
            Some(Recorded::Commit)
        }
        pb::job_vote::Step::Reveal(r) => {
            let slot = &att.attestors[i];
            if !revealing || slot.commit.is_empty() || slot.revealed || !slot.refused.is_empty() {
                return None;
            }
            let reason = match expected(r) {
                Ok(expected) if slot.commit == expected => {
                    let slot = &mut att.attestors[i];
                    slot.revealed = true;
                    slot.matches = r.matches;
                    slot.segments_digest = r.segments_digest.clone();
                    slot.reveal_height = height;
                    return Some(Recorded::Reveal {
                        index: i,
                        matches: r.matches,
                    });
                }
                Err(reason) => reason,
                Ok(_) => {
                    // Whose commit it copied, if it is another attestor's.
                    let copied = att
                        .attestors
                        .iter()
                        .enumerate()
                        .find(|(j, a)| *j != i && a.commit == slot.commit)
                        .map(|(_, a)| hex::encode(&a.validator));
                    match copied {
                        Some(other) => format!(
                            "reveal does not match its commit, which is a copy of {other}'s"
                        ),
                        None => "reveal does not match its commit".into(),
                    }
                }
            };
            let slot = &mut att.attestors[i];
            slot.refused = reason.clone();
            slot.reveal_height = height;
            Some(Recorded::Refused { reason })
        }
    }
}

/// Counts a refused reveal in the validator's attestation record.
pub fn count_bad_reveal<S: StateWrite>(state: &mut S, validator: &[u8; 20]) -> Result<(), TxError> {
    let mut stats = super::TrainingRead::attestor_stats(state, validator)?;
    stats.bad_reveal += 1;
    state.put_attestor_stats(&stats);
    Ok(())
}

/// Records the votes of a block's injected extensions (already verified as signed by their
/// validators). A vote that does not fit its job's or evaluation's phase (late commit, early
/// reveal, a validator outside the attestors, a repeat) changes nothing; a reveal that does not
/// match its commit is recorded as refused. Evaluation votes go to
/// [`crate::models::evaluation::apply_vote`].
pub fn apply_votes<S: StateWrite>(
    state: &mut S,
    cast: &[CastVote],
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    for c in cast {
        for v in &c.votes {
            match subject(v) {
                Some(Subject::Job(id)) => apply_job_vote(state, &c.validator, id, v, ctx)?,
                Some(Subject::Evaluation(id)) => {
                    evaluation::apply_vote(state, &c.validator, id, v, ctx)?
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Records validator `validator`'s vote on job `job_id`.
fn apply_job_vote<S: StateWrite>(
    state: &mut S,
    validator: &[u8; 20],
    job_id: u64,
    v: &pb::JobVote,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    let Some(mut job) = super::TrainingRead::job(state, job_id)? else {
        return Ok(());
    };
    if status(&job) != pb::JobStatus::Attesting {
        return Ok(());
    }
    let digest = job
        .result
        .as_ref()
        .map(|r| r.digest.clone())
        .unwrap_or_default();
    let (Some(att), Some(step_)) = (job.attestation.as_mut(), v.step.as_ref()) else {
        return Ok(());
    };
    let expected = |r: &pb::Reveal| {
        Ok(commitment(
            job_id,
            &digest,
            validator,
            r.matches,
            &r.segments_digest,
            &r.salt,
        ))
    };
    let what = match record_step(att, validator, step_, ctx.height, expected) {
        None => return Ok(()),
        Some(Recorded::Commit) => "commit".to_owned(),
        Some(Recorded::Reveal { matches, .. }) => {
            format!("reveal: {}", if matches { "matches" } else { "mismatch" })
        }
        Some(Recorded::Refused { reason }) => {
            count_bad_reveal(state, validator)?;
            format!("refused: {reason}")
        }
    };
    let validator = hex::encode(validator);
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
    Ok(())
}

/// A validator's CometBFT address: the first 20 bytes of SHA-256 of its Ed25519 key.
pub fn validator_address(pub_key: &[u8]) -> [u8; 20] {
    let digest = Sha256::digest(pub_key);
    let mut a = [0u8; 20];
    a.copy_from_slice(&digest[..20]);
    a
}
