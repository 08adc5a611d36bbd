//! Submitting, accepting and cancelling a job.

use neurodata_proto::chain::v1 as pb;
use neurodata_trainer::JobSpec;
use sha2::{Digest, Sha256};

use super::{
    MAX_DATASETS, MAX_SPEC_BYTES, MIN_DEADLINE_SECONDS, RESULT_SLACK_SECONDS, TrainingError,
    TrainingRead, TrainingWrite, escrow_account, existing_job, require_status, status, step,
};
use crate::TxError;
use crate::amount::Amount;
use crate::escrow::EscrowRead;
use crate::escrow::lifecycle::{PurchaseKind, PurchaseState};
use crate::events::{EventKind, attr};
use crate::ledger::{LedgerWrite, signer_address};
use crate::market::existing_dataset;
use crate::membership::{MembershipRead, Signer};
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, amount_field, invalid};

/// Ask for a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitJob {
    /// Datasets, distinct, in the order given.
    pub dataset_ids: Vec<u64>,
    /// The checked spec.
    pub spec: JobSpec,
    /// Its canonical JSON (what is stored and what the trainer runs).
    pub spec_json: String,
    /// Paid when final.
    pub bounty: Amount,
    /// Locked by the worker that accepts.
    pub stake: Amount,
    /// Unix seconds.
    pub deadline: i64,
    /// Sampled share of segments, basis points.
    pub sample_bps: u32,
}

// JobSpec holds floats, so no derived Eq; two submissions are the same if their canonical
// specs and other fields are.
impl Eq for SubmitJob {}

impl TryFrom<pb::SubmitJob> for SubmitJob {
    type Error = TxError;
    fn try_from(m: pb::SubmitJob) -> Result<Self, TxError> {
        let n = m.dataset_ids.len();
        if n == 0 || n > MAX_DATASETS {
            return Err(invalid(
                "submit_job.dataset_ids",
                format!("{n} datasets; allowed 1..={MAX_DATASETS}"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if !m.dataset_ids.iter().all(|d| seen.insert(*d)) {
            return Err(invalid("submit_job.dataset_ids", "a dataset appears twice"));
        }
        if m.spec_json.len() > MAX_SPEC_BYTES {
            return Err(invalid(
                "submit_job.spec_json",
                format!("{} bytes; the limit is {MAX_SPEC_BYTES}", m.spec_json.len()),
            ));
        }
        let spec =
            JobSpec::from_json(&m.spec_json).map_err(|e| TrainingError::BadSpec(e.to_string()))?;
        let bounty = amount_field("submit_job.bounty", &m.bounty)?;
        if bounty == Amount::ZERO {
            return Err(invalid("submit_job.bounty", "must be above zero"));
        }
        let stake = amount_field("submit_job.stake", &m.stake)?;
        if m.sample_bps == 0 || m.sample_bps > 10_000 {
            return Err(invalid(
                "submit_job.sample_bps",
                format!("{} is outside 1..=10000", m.sample_bps),
            ));
        }
        Ok(SubmitJob {
            dataset_ids: m.dataset_ids,
            spec_json: spec.canonical_json(),
            spec,
            bounty,
            stake,
            deadline: m.deadline,
            sample_bps: m.sample_bps,
        })
    }
}

/// Whether `signer` may train on `dataset`: it provides it, or holds a confirmed (or released)
/// purchase of it.
fn may_train_on<S: StateWrite>(
    state: &S,
    dataset: &pb::Dataset,
    signer: &crate::address::Address,
) -> Result<bool, TxError> {
    if dataset.provider == signer.0 {
        return Ok(true);
    }
    let Some(id) = state.live_purchase(signer, dataset.id)? else {
        return Ok(false);
    };
    let Some(purchase) = state.load_purchase(id)? else {
        return Ok(false);
    };
    Ok(matches!(purchase.kind, PurchaseKind::Sale { .. })
        && matches!(
            purchase.state,
            PurchaseState::Confirmed { .. } | PurchaseState::Released { .. }
        ))
}

/// Refuses a spec naming a column the dataset's listing lacks.
fn check_fits(spec: &JobSpec, dataset: &pb::Dataset) -> Result<(), TxError> {
    let columns: std::collections::BTreeSet<&str> = dataset
        .schema
        .iter()
        .flat_map(|s| s.columns.iter().map(|c| c.name.as_str()))
        .collect();
    for c in &spec.schema.columns {
        if !columns.contains(c.name.as_str()) {
            return Err(TrainingError::SpecSchemaMismatch {
                dataset: dataset.id,
                reason: format!(
                    "column {:?} is not in its schema ({})",
                    c.name,
                    columns.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            }
            .into());
        }
    }
    Ok(())
}

impl SubmitJob {
    /// Checks the submitter's access and the spec against each dataset, escrows the bounty and
    /// queues the job (a worker is drawn at the end of a later block).
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        // Room for a worker to run the spec to its own limit and upload: a deadline that cuts a
        // run short would only cost workers their stakes.
        let min = MIN_DEADLINE_SECONDS
            .saturating_add(RESULT_SLACK_SECONDS)
            .saturating_add(i64::try_from(self.spec.limits.max_seconds).unwrap_or(i64::MAX));
        if self.deadline < ctx.time.saturating_add(min) {
            return Err(TrainingError::DeadlineTooSoon {
                deadline: self.deadline,
                now: ctx.time,
                min,
            }
            .into());
        }
        let submitter = signer_address(signer)?;
        for id in &self.dataset_ids {
            let dataset = existing_dataset(state, *id)?;
            if !state.org_is_active(&dataset.provider_org)? {
                // Nobody could deliver its key to the worker.
                return Err(crate::escrow::EscrowError::ProviderOrgInactive {
                    dataset: dataset.id,
                    org: dataset.provider_org.clone(),
                }
                .into());
            }
            if !may_train_on(state, &dataset, &submitter)? {
                return Err(TrainingError::NotPurchased(*id).into());
            }
            check_fits(&self.spec, &dataset)?;
        }
        state.move_funds(&submitter, &escrow_account(), self.bounty)?;
        let id = state.next_job_id()?;
        state.put_next_job_id(id + 1);
        let mut job = pb::Job {
            id,
            submitter: submitter.0.to_vec(),
            submitter_org: signer.identity.org_id.clone(),
            dataset_ids: self.dataset_ids.clone(),
            spec_sha256: Sha256::digest(self.spec_json.as_bytes()).to_vec(),
            spec_json: self.spec_json.clone(),
            bounty: self.bounty.to_string(),
            stake: self.stake.to_string(),
            deadline: self.deadline,
            sample_bps: self.sample_bps,
            status: pb::JobStatus::Queued as i32,
            submitted_height: ctx.height,
            ..Default::default()
        };
        step(
            &mut job,
            ctx.height,
            "submitted",
            format!("bounty {}", self.bounty),
        );
        state.put_job(&job);
        state.emit(
            Event::new(EventKind::JobSubmitted)
                .attr(attr::JOB, id)
                .attr(attr::BUYER, submitter)
                .attr(attr::ORG, &job.submitter_org)
                .attr(attr::AMOUNT, self.bounty),
        );
        Ok(())
    }
}

/// The assigned worker takes its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptJob {
    /// The job.
    pub job_id: u64,
}

impl From<pb::AcceptJob> for AcceptJob {
    fn from(m: pb::AcceptJob) -> Self {
        AcceptJob { job_id: m.job_id }
    }
}

/// Refuses a signer other than the job's assigned worker.
pub(super) fn require_worker(job: &pb::Job, signer: &Signer) -> Result<(), TxError> {
    if job.worker != signer.identity.fingerprint {
        return Err(TrainingError::NotAssigned {
            job: job.id,
            assigned: hex::encode(&job.worker),
        }
        .into());
    }
    Ok(())
}

impl AcceptJob {
    /// Locks the stake and starts the result window: the spec's own time limit plus slack for
    /// uploading, never past the job's deadline.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut job = existing_job(state, self.job_id)?;
        require_status(&job, pb::JobStatus::Assigned)?;
        require_worker(&job, signer)?;
        if ctx.height > job.accept_by {
            return Err(TrainingError::WindowClosed {
                job: job.id,
                what: "accept",
                at: job.accept_by as i64,
            }
            .into());
        }
        let stake = crate::state::stored_amount(&job.stake, || super::state_key::job(job.id))?;
        let worker = signer_address(signer)?;
        state.move_funds(&worker, &escrow_account(), stake)?;
        let spec =
            JobSpec::from_json(&job.spec_json).map_err(|e| crate::state::StateError::Corrupt {
                key: super::state_key::job(job.id),
                reason: format!("stored spec: {e}"),
            })?;
        let limit = i64::try_from(spec.limits.max_seconds).unwrap_or(i64::MAX);
        job.result_by = ctx
            .time
            .saturating_add(limit)
            .saturating_add(RESULT_SLACK_SECONDS)
            .min(job.deadline);
        job.stake_locked = true;
        job.status = pb::JobStatus::Training as i32;
        open_key_requests(state, &job, worker, &signer.identity.org_id, ctx)?;
        let detail = format!("stake {stake} locked; result due by {}", job.result_by);
        step(&mut job, ctx.height, "accepted", detail);
        state.put_job(&job);
        state.emit(
            Event::new(EventKind::JobAccepted)
                .attr(attr::JOB, job.id)
                .attr(attr::WORKER, worker)
                .attr(attr::AMOUNT, stake)
                .attr(attr::DUE, job.result_by),
        );
        Ok(())
    }
}

/// Opens `recipient`'s key request for every dataset of the job (the worker on accepting, an
/// attesting validator's operator on asking).
fn open_key_requests<S: StateWrite>(
    state: &mut S,
    job: &pb::Job,
    recipient: crate::address::Address,
    org: &str,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    for d in &job.dataset_ids {
        crate::escrow::open_training_key_request(state, *d, recipient, org, job.id, ctx)?;
    }
    Ok(())
}

/// The submitter withdraws a job no worker has accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelJob {
    /// The job.
    pub job_id: u64,
}

impl From<pb::CancelJob> for CancelJob {
    fn from(m: pb::CancelJob) -> Self {
        CancelJob { job_id: m.job_id }
    }
}

impl CancelJob {
    /// Refunds the bounty of a queued or assigned job (an accepted job runs to its windows'
    /// end: its worker has locked a stake and may be training).
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut job = existing_job(state, self.job_id)?;
        if job.submitter != signer.identity.fingerprint {
            return Err(TrainingError::NotSubmitter(job.id).into());
        }
        let s = status(&job);
        if !matches!(s, pb::JobStatus::Queued | pb::JobStatus::Assigned) {
            return Err(TrainingError::WrongStatus {
                job: job.id,
                status: super::status_name(s),
                needed: "queued or assigned",
            }
            .into());
        }
        // A queued job holds no worker (requeuing forgets it), so this frees only a drawn one.
        super::settle::release_worker(state, &job)?;
        super::settle::refund(state, &mut job, ctx.height, "cancelled by its submitter")
    }
}

/// A validator operator asks for the keys of a job it attests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestJobKeys {
    /// The job.
    pub job_id: u64,
}

impl From<pb::RequestJobKeys> for RequestJobKeys {
    fn from(m: pb::RequestJobKeys) -> Self {
        RequestJobKeys { job_id: m.job_id }
    }
}

impl RequestJobKeys {
    /// Opens a key request per dataset for the signer, if it operates a validator among the
    /// job's attestors and the job is attesting (its beacon drawn): the data goes only to those
    /// who re-run it, and only while they do.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let job = existing_job(state, self.job_id)?;
        require_status(&job, pb::JobStatus::Attesting)?;
        // Keys serve re-runs, which end with the commit phase.
        if let Some(att) = job.attestation.as_ref().filter(|a| a.revealing) {
            return Err(TrainingError::WindowClosed {
                job: job.id,
                what: "commit",
                at: att.commit_until as i64,
            }
            .into());
        }
        let me = signer.identity.fingerprint.as_slice();
        let validators = crate::governance::GovernanceRead::validators(state)?;
        if !super::operates_attestor(&job, &validators, me) {
            return Err(TrainingError::NotAttestor {
                job: job.id,
                fingerprint: hex::encode(me),
            }
            .into());
        }
        let me = signer_address(signer)?;
        open_key_requests(state, &job, me, &signer.identity.org_id, ctx)
    }
}
