//! Where a job's money goes when it ends or a worker drops out: every movement out of the
//! training escrow account is here.

use neurodata_proto::chain::v1 as pb;

use super::{ATTEST_REWARD_BPS, MAX_ATTEMPTS, TrainingRead, TrainingWrite, escrow_account, step};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::escrow::EscrowRead;
use crate::events::{EventKind, attr};
use crate::governance::GovernanceRead;
use crate::governance::rewards::share;
use crate::ledger::LedgerWrite;
use crate::market::{MarketRead, MarketWrite};
use crate::state::{Event, StateError, StateWrite};

fn amount(job: &pb::Job, text: &str) -> Result<Amount, StateError> {
    crate::state::stored_amount(text, || super::state_key::job(job.id))
}

fn address(job: &pb::Job, bytes: &[u8]) -> Result<Address, StateError> {
    Address::from_slice(bytes).ok_or_else(|| StateError::Corrupt {
        key: super::state_key::job(job.id),
        reason: "address is not 32 bytes".into(),
    })
}

/// The account a validator's rewards go to: its first operator's (as the reward pool pays).
fn operator_of<S: GovernanceRead>(
    state: &S,
    validator: &[u8],
) -> Result<Option<Address>, StateError> {
    Ok(state
        .validators()?
        .iter()
        .find(|v| super::attest::validator_address(&v.pub_key) == validator)
        .and_then(|v| v.operators.first().and_then(|o| Address::from_slice(o))))
}

/// Pays `pool` out of escrow to the validators in `to` in proportion to their power; returns
/// what was paid (rounding and operator-less validators leave the rest).
fn pay_validators<S: StateWrite>(
    state: &mut S,
    pool: Amount,
    to: &[pb::Attestor],
) -> Result<Amount, TxError> {
    let total: u128 = to
        .iter()
        .map(|a| u128::try_from(a.power).unwrap_or(0))
        .sum();
    let mut paid = Amount::ZERO;
    for a in to {
        let Some(operator) = operator_of(state, &a.validator)? else {
            continue;
        };
        let amount = share(pool, u128::try_from(a.power).unwrap_or(0), total);
        if amount == Amount::ZERO {
            continue;
        }
        state.move_funds(&escrow_account(), &operator, amount)?;
        paid = Amount(paid.0 + amount.0);
    }
    Ok(paid)
}

/// Frees the assigned worker's slot (if the job holds one).
pub fn release_worker<S: StateWrite>(state: &mut S, job: &pb::Job) -> Result<(), TxError> {
    if job.worker.is_empty() {
        return Ok(());
    }
    let w = address(job, &job.worker)?;
    if let Some(mut worker) = state.worker(&w)? {
        worker.active = worker.active.saturating_sub(1);
        state.put_worker(&worker);
    }
    Ok(())
}

/// Ends a job without a model: the bounty back to the submitter (a locked stake is settled by
/// the caller before).
pub fn refund<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
    why: &str,
) -> Result<(), TxError> {
    let bounty = amount(job, &job.bounty)?;
    let submitter = address(job, &job.submitter)?;
    state.move_funds(&escrow_account(), &submitter, bounty)?;
    job.status = pb::JobStatus::Refunded as i32;
    job.finished_height = height;
    step(job, height, "refunded", why);
    state.put_job(job);
    state.emit(
        Event::new(EventKind::JobRefunded)
            .attr(attr::JOB, job.id)
            .attr(attr::AMOUNT, bounty)
            .attr(attr::REASON, why),
    );
    Ok(())
}

/// Returns a locked stake to the worker.
fn return_stake<S: StateWrite>(state: &mut S, job: &mut pb::Job) -> Result<(), TxError> {
    if job.stake_locked {
        let stake = amount(job, &job.stake)?;
        let worker = address(job, &job.worker)?;
        state.move_funds(&escrow_account(), &worker, stake)?;
        job.stake_locked = false;
    }
    Ok(())
}

/// Puts a job back in the queue for another worker, or refunds it when it has had
/// [`MAX_ATTEMPTS`] workers or its deadline passed.
fn requeue_or_refund<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
    time: i64,
) -> Result<(), TxError> {
    job.tried.push(std::mem::take(&mut job.worker));
    job.worker_org.clear();
    job.result = None;
    job.attestation = None;
    if job.tried.len() >= MAX_ATTEMPTS {
        return refund(state, job, height, "no worker produced a final result");
    }
    if time >= job.deadline {
        return refund(state, job, height, "deadline passed");
    }
    job.status = pb::JobStatus::Queued as i32;
    step(job, height, "queued", "drawing another worker");
    state.put_job(job);
    Ok(())
}

/// Whether every dataset key of the job reached the worker (its live purchase of each has a
/// delivered key): if one did not, a missed result window is not the worker's fault.
fn keys_delivered<S: StateWrite>(
    state: &S,
    job: &pb::Job,
    worker: &Address,
) -> Result<bool, TxError> {
    for d in &job.dataset_ids {
        let delivered = match state.live_purchase(worker, *d)? {
            Some(id) => state
                .load_purchase(id)?
                .is_some_and(|p| p.state.delivery().is_some()),
            None => false,
        };
        if !delivered {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A worker let its accept or result window pass: it is marked and the job is drawn again. A
/// locked stake goes to the reward pool — not to the submitter, who set the job's terms and
/// could otherwise profit from windows it made too short — unless a data key never reached the
/// worker, which is then not its fault and gets the stake back.
pub fn missed<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
    time: i64,
    what: &str,
) -> Result<(), TxError> {
    release_worker(state, job)?;
    let w = address(job, &job.worker)?;
    if let Some(mut worker) = state.worker(&w)? {
        worker.missed += 1;
        state.put_worker(&worker);
    }
    let mut detail = format!("{} missed the {what} window", hex::encode(&job.worker));
    if job.stake_locked {
        let stake = amount(job, &job.stake)?;
        if keys_delivered(state, job, &w)? {
            state.move_funds(&escrow_account(), &Address::reward_pool(), stake)?;
            detail.push_str(&format!("; stake {stake} to the reward pool"));
        } else {
            state.move_funds(&escrow_account(), &w, stake)?;
            detail.push_str(&format!(
                "; stake {stake} returned: a data key never reached the worker"
            ));
        }
        job.stake_locked = false;
    }
    step(job, height, "missed", &detail);
    state.emit(
        Event::new(EventKind::JobMissed)
            .attr(attr::JOB, job.id)
            .attr(attr::WORKER, hex::encode(&job.worker))
            .attr(attr::REASON, what),
    );
    requeue_or_refund(state, job, height, time)
}

/// Records each attestor's part in a decided job.
fn record_attestors<S: StateWrite>(
    state: &mut S,
    job: &pb::Job,
    outcome: Option<bool>,
) -> Result<(), TxError> {
    for a in job.attestation.iter().flat_map(|a| a.attestors.iter()) {
        if !a.refused.is_empty() {
            continue; // counted as a bad reveal when it happened
        }
        let mut stats = state.attestor_stats(&a.validator)?;
        match (a.revealed, outcome) {
            (false, _) => stats.no_reveal += 1,
            (true, None) => continue,
            (true, Some(o)) if a.matches == o => stats.agreed += 1,
            (true, Some(_)) => stats.outvoted += 1,
        }
        state.put_attestor_stats(&stats);
    }
    Ok(())
}

/// More than 2/3 of the power agreed the result reproduces: the model version goes on chain,
/// the bounty is split between the agreeing validators ([`ATTEST_REWARD_BPS`]) and the worker,
/// and the stake goes back.
pub fn finalize<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
) -> Result<(), TxError> {
    let result = job.result.clone().unwrap_or_default();
    let agreeing: Vec<pb::Attestor> = job
        .attestation
        .iter()
        .flat_map(|a| a.attestors.iter())
        .filter(|a| a.revealed && a.matches && a.refused.is_empty())
        .cloned()
        .collect();
    let bounty = amount(job, &job.bounty)?;
    let pool = Amount(
        bounty.0 / 10_000 * ATTEST_REWARD_BPS + bounty.0 % 10_000 * ATTEST_REWARD_BPS / 10_000,
    );
    let paid = pay_validators(state, pool, &agreeing)?;
    let to_worker = Amount(bounty.0 - paid.0);
    let worker = address(job, &job.worker)?;
    state.move_funds(&escrow_account(), &worker, to_worker)?;
    return_stake(state, job)?;
    release_worker(state, job)?;
    if let Some(mut w) = state.worker(&worker)? {
        w.finalized += 1;
        state.put_worker(&w);
    }
    record_attestors(state, job, Some(true))?;
    let id = state.next_model_id()?;
    state.put_next_model_id(id + 1);
    let algorithm = serde_json::from_str::<serde_json::Value>(&job.spec_json)
        .ok()
        .and_then(|v| v["model"]["algorithm"].as_str().map(str::to_owned))
        .unwrap_or_default();
    state.put_model_version(&pb::ModelVersion {
        id,
        job_id: job.id,
        model_sha256: result.model_sha256.clone(),
        dataset_ids: job.dataset_ids.clone(),
        metrics_json: result.metrics_json.clone(),
        model_cid: result.model_cid.clone(),
        onnx_cid: result.onnx_cid.clone(),
        owner: job.submitter.clone(),
        owner_org: job.submitter_org.clone(),
        trainer: job.worker.clone(),
        algorithm,
        spec_sha256: job.spec_sha256.clone(),
        height,
    });
    for d in &job.dataset_ids {
        if state.dataset(*d)?.is_some() {
            let mut stats = state.dataset_stats(*d)?;
            stats.derived_models += 1;
            state.put_dataset_stats(&stats);
        }
    }
    job.status = pb::JobStatus::Final as i32;
    job.model_version = id;
    job.finished_height = height;
    step(
        job,
        height,
        "final",
        format!(
            "model version {id}; {to_worker} to the worker, {paid} to {} validators",
            agreeing.len()
        ),
    );
    state.put_job(job);
    state.emit(
        Event::new(EventKind::JobFinalized)
            .attr(attr::JOB, job.id)
            .attr(attr::MODEL, id)
            .attr(attr::HASH, hex::encode(&result.model_sha256))
            .attr(attr::WORKER, worker)
            .attr(attr::AMOUNT, to_worker),
    );
    Ok(())
}

/// More than 1/3 of the power found a mismatch: the stake is slashed — half to the submitter,
/// half to the validators that found it — and the job is drawn again (or refunded).
pub fn reject<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
    time: i64,
) -> Result<(), TxError> {
    let finders: Vec<pb::Attestor> = job
        .attestation
        .iter()
        .flat_map(|a| a.attestors.iter())
        .filter(|a| a.revealed && !a.matches && a.refused.is_empty())
        .cloned()
        .collect();
    record_attestors(state, job, Some(false))?;
    let mut detail = String::from("validators found a mismatch");
    if job.stake_locked {
        let stake = amount(job, &job.stake)?;
        let to_finders = Amount(stake.0 / 2);
        let paid = pay_validators(state, to_finders, &finders)?;
        let to_submitter = Amount(stake.0 - paid.0);
        let submitter = address(job, &job.submitter)?;
        state.move_funds(&escrow_account(), &submitter, to_submitter)?;
        job.stake_locked = false;
        detail.push_str(&format!(
            "; stake {stake} slashed: {paid} to {} validators, {to_submitter} to the submitter",
            finders.len()
        ));
    }
    release_worker(state, job)?;
    let w = address(job, &job.worker)?;
    if let Some(mut worker) = state.worker(&w)? {
        worker.rejected += 1;
        state.put_worker(&worker);
    }
    step(job, height, "rejected", &detail);
    state.emit(
        Event::new(EventKind::JobRejected)
            .attr(attr::JOB, job.id)
            .attr(attr::WORKER, hex::encode(&job.worker))
            .attr(attr::REASON, &detail),
    );
    requeue_or_refund(state, job, height, time)
}

/// The reveal window closed without either quorum (too few validators revealed): nobody is
/// proven wrong, so the stake goes back and the job is drawn again (or refunded).
pub fn undecided<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    height: u64,
    time: i64,
) -> Result<(), TxError> {
    record_attestors(state, job, None)?;
    return_stake(state, job)?;
    release_worker(state, job)?;
    step(
        job,
        height,
        "undecided",
        "too few reveals for either quorum; stake returned",
    );
    requeue_or_refund(state, job, height, time)
}
