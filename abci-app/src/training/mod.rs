//! Proof-of-Validation training: jobs on bought data, the workers that run them, and the
//! validators that re-run sampled segments and make a result final.
//!
//! A job's life ([`pb::JobStatus`]), each step recorded in `Job.steps` with its height:
//! 1. [`SubmitJob`]: the spec (checked with the trainer's own rules, stored canonical), the
//!    datasets (the submitter bought or provides each), bounty (into escrow at once), stake,
//!    deadline and sample fraction. → queued.
//! 2. End of a later block ([`schedule`]): a worker is drawn with that block's hash among the
//!    registered workers ([`RegisterWorker`]) with free capacity. → assigned.
//! 3. [`AcceptJob`] within `ACCEPT_BLOCKS`, locking the stake (else the worker is marked as
//!    missing and another is drawn). → training; the worker must post a result by `result_by`.
//! 4. [`SubmitResult`]: hashes, metrics and the artifacts' CIDs. → attesting. The hash of the
//!    next block becomes the beacon that picks each validator's segments (the worker could not
//!    know it when it submitted).
//! 5. Validators commit to a verdict, then reveal it, inside their vote extensions
//!    ([`attest`]); the proposer injects the signed extensions into the next block.
//! 6. More than 2/3 of the attestors' power reveals "matches": final — a [`pb::ModelVersion`],
//!    the bounty to the worker and the agreeing validators, the stake back. More than 1/3
//!    reveals "mismatch": rejected — the stake is slashed to the submitter and those validators,
//!    and the job is drawn again. A job no worker finishes by its deadline is refunded.
//!
//! Every window is bounded (accept, result, commit, reveal, the job's deadline), so no NRC stays
//! in escrow forever.

pub mod attest;
mod job;
mod result;
pub mod schedule;
mod settle;
pub mod state_key;
pub mod view;
mod worker;

pub use attest::{
    CastVote, INJECTED_MARKER, Verdict, apply_votes, check_extension, votes_to_extend,
};
pub use job::{AcceptJob, CancelJob, RequestJobKeys, SubmitJob};
pub use result::SubmitResult;
pub use schedule::end_block;
pub use view::{TrainingRead, TrainingWrite};
pub use worker::{RegisterWorker, move_member};

use neurodata_proto::chain::v1 as pb;

use crate::TxError;
use crate::address::Address;

/// Blocks an assigned worker has to accept.
pub const ACCEPT_BLOCKS: u64 = 20;
/// Seconds a worker gets past the spec's own time limit to upload and submit its result.
pub const RESULT_SLACK_SECONDS: i64 = 60;
/// Blocks validators have to commit after the beacon.
pub const COMMIT_BLOCKS: u64 = 120;
/// Blocks the commit phase stays open after commits of more than 2/3 of the power are in, so
/// slower honest validators still commit.
pub const COMMIT_GRACE_BLOCKS: u64 = 2;
/// Blocks validators have to reveal.
pub const REVEAL_BLOCKS: u64 = 30;
/// Share of the bounty paid to the validators whose verdict made the job final, basis points.
pub const ATTEST_REWARD_BPS: u128 = 1_000;
/// Workers drawn for one job before it is refunded.
pub const MAX_ATTEMPTS: usize = 3;
/// Most jobs one worker runs at once.
pub const MAX_CAPACITY: u32 = 16;
/// Most datasets one job trains on.
pub const MAX_DATASETS: usize = 8;
/// Largest spec.
pub const MAX_SPEC_BYTES: usize = 16 * 1024;
/// Most segments (checkpoints - 1) a result may have.
pub const MAX_SEGMENTS: u32 = 512;
/// Largest metrics JSON.
pub const MAX_METRICS_BYTES: usize = 4 * 1024;
/// Shortest time between submission and deadline.
pub const MIN_DEADLINE_SECONDS: i64 = 60;

/// The account bounties and stakes wait in.
pub fn escrow_account() -> Address {
    Address::module("training")
}

/// Job `id`, or [`TrainingError::UnknownJob`].
pub fn existing_job<S: TrainingRead>(state: &S, id: u64) -> Result<pb::Job, TxError> {
    Ok(state.job(id)?.ok_or(TrainingError::UnknownJob(id))?)
}

/// The status of a stored job (an unknown number reads as unspecified).
pub fn status(job: &pb::Job) -> pb::JobStatus {
    pb::JobStatus::try_from(job.status).unwrap_or(pb::JobStatus::Unspecified)
}

/// Lower-case name of a status, for messages.
pub fn status_name(s: pb::JobStatus) -> &'static str {
    match s {
        pb::JobStatus::Unspecified => "unspecified",
        pb::JobStatus::Queued => "queued",
        pb::JobStatus::Assigned => "assigned",
        pb::JobStatus::Training => "training",
        pb::JobStatus::Attesting => "attesting",
        pb::JobStatus::Final => "final",
        pb::JobStatus::Refunded => "refunded",
    }
}

/// Whether a job passes a `/jobs` filter (empty fields do not filter).
pub fn matches_filter(job: &pb::Job, f: &pb::JobFilter) -> bool {
    (f.submitter.is_empty() || f.submitter == job.submitter)
        && (f.worker.is_empty() || f.worker == job.worker)
        && (f.statuses.is_empty() || f.statuses.contains(&job.status))
        && (f.dataset_id == 0 || job.dataset_ids.contains(&f.dataset_id))
        && (f.artifact_cid.is_empty() || result_names(job, &f.artifact_cid))
}

/// Whether the job's current result names `cid` (model, ONNX export, trace or a checkpoint).
pub fn result_names(job: &pb::Job, cid: &str) -> bool {
    job.result.as_ref().is_some_and(|r| {
        [&r.model_cid, &r.onnx_cid, &r.trace_cid]
            .into_iter()
            .chain(&r.checkpoint_cids)
            .any(|c| c == cid)
    })
}

/// Whether the member `fingerprint` operates one of `validators` that is among the job's
/// attestors: who may have the job's data keys and fetch its artifacts.
pub fn operates_attestor(job: &pb::Job, validators: &[pb::Validator], fingerprint: &[u8]) -> bool {
    let Some(att) = &job.attestation else {
        return false;
    };
    validators.iter().any(|v| {
        v.operators.iter().any(|o| o == fingerprint) && {
            let address = attest::validator_address(&v.pub_key);
            att.attestors.iter().any(|a| a.validator == address)
        }
    })
}

/// Records a step of the job's life.
fn step(job: &mut pb::Job, height: u64, step: &str, detail: impl Into<String>) {
    job.steps.push(pb::JobStep {
        height,
        step: step.into(),
        detail: detail.into(),
    });
}

/// Why a training action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainingError {
    /// No job with this id.
    #[error("job {0} does not exist")]
    UnknownJob(u64),
    /// The submitter neither provides the dataset nor holds a confirmed purchase of it.
    #[error(
        "you hold no confirmed purchase of dataset {0} and do not provide it; buy it (and confirm the key) before training on it"
    )]
    NotPurchased(u64),
    /// The spec fails the trainer's checks.
    #[error("spec refused by the trainer's checks: {0}")]
    BadSpec(String),
    /// The spec names a column the dataset does not have.
    #[error("spec does not fit dataset {dataset}: {reason}")]
    SpecSchemaMismatch {
        /// The dataset.
        dataset: u64,
        /// What does not fit.
        reason: String,
    },
    /// The job is not in the state the action needs.
    #[error("job {job} is {status}; this needs it {needed}")]
    WrongStatus {
        /// The job.
        job: u64,
        /// Its status.
        status: &'static str,
        /// The status the action needs.
        needed: &'static str,
    },
    /// Only the assigned worker may accept or submit a result.
    #[error("job {job} is assigned to {assigned}, not to you")]
    NotAssigned {
        /// The job.
        job: u64,
        /// The assigned worker.
        assigned: String,
    },
    /// Only the job's submitter may cancel it.
    #[error("only job {0}'s submitter may cancel it")]
    NotSubmitter(u64),
    /// The deadline is in the past or too near.
    #[error("deadline {deadline} is less than {min} s after the block time {now}")]
    DeadlineTooSoon {
        /// The deadline given.
        deadline: i64,
        /// Block time.
        now: i64,
        /// The least gap.
        min: i64,
    },
    /// A window closed.
    #[error("job {job}: the {what} window closed at {at}")]
    WindowClosed {
        /// The job.
        job: u64,
        /// Which window.
        what: &'static str,
        /// When it closed (height or Unix seconds).
        at: i64,
    },
    /// The result does not describe a usable run.
    #[error("result refused: {0}")]
    BadResult(String),
    /// A worker's capacity over the limit.
    #[error("capacity {0} is above the limit {MAX_CAPACITY}")]
    Capacity(u32),
    /// Key requests from someone who attests no validator of the job.
    #[error(
        "{fingerprint} operates no validator among job {job}'s attestors (or the beacon is not drawn yet)"
    )]
    NotAttestor {
        /// The job.
        job: u64,
        /// The signer.
        fingerprint: String,
    },
}

impl TrainingError {
    /// Stable code (120..140).
    pub fn code(&self) -> u32 {
        match self {
            TrainingError::UnknownJob(_) => 120,
            TrainingError::NotPurchased(_) => 121,
            TrainingError::BadSpec(_) => 122,
            TrainingError::SpecSchemaMismatch { .. } => 123,
            TrainingError::WrongStatus { .. } => 124,
            TrainingError::NotAssigned { .. } => 125,
            TrainingError::NotSubmitter(_) => 126,
            TrainingError::DeadlineTooSoon { .. } => 127,
            TrainingError::WindowClosed { .. } => 128,
            TrainingError::BadResult(_) => 129,
            TrainingError::Capacity(_) => 130,
            TrainingError::NotAttestor { .. } => 131,
        }
    }
}

/// Refuses a job not in `needed`.
fn require_status(job: &pb::Job, needed: pb::JobStatus) -> Result<(), TxError> {
    let s = status(job);
    if s != needed {
        return Err(TrainingError::WrongStatus {
            job: job.id,
            status: status_name(s),
            needed: status_name(needed),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
