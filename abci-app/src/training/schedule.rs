//! End-of-block work: drawing workers, the beacon, closing phases, deciding and enforcing every
//! window. Runs over the jobs still active, in id order, after the block's txs.

use neurodata_proto::chain::v1 as pb;
use sha2::{Digest, Sha256};

use super::{
    ACCEPT_BLOCKS, COMMIT_BLOCKS, COMMIT_GRACE_BLOCKS, REVEAL_BLOCKS, TrainingRead, TrainingWrite,
    settle, status, step,
};
use crate::TxError;
use crate::address::Address;
use crate::app::BlockCtx;
use crate::events::{EventKind, attr};
use crate::governance::GovernanceRead;
use crate::membership::MembershipRead;
use crate::state::{Event, StateWrite};

/// Runs every active job's due work for this block.
pub fn end_block<S: StateWrite>(state: &mut S, block: &BlockCtx) -> Result<(), TxError> {
    for id in state.active_jobs()? {
        let Some(mut job) = state.job(id)? else {
            continue;
        };
        match status(&job) {
            pb::JobStatus::Queued => queued(state, &mut job, block)?,
            pb::JobStatus::Assigned if block.height > job.accept_by => {
                settle::missed(state, &mut job, block.height, block.time, "accept")?
            }
            pb::JobStatus::Training if block.time > job.result_by => {
                settle::missed(state, &mut job, block.height, block.time, "result")?
            }
            pb::JobStatus::Attesting => attesting(state, &mut job, block)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether a worker may be drawn: capacity free, its org active, its certificate not revoked,
/// not the submitter, not drawn for this job before.
fn eligible<S: StateWrite>(state: &S, job: &pb::Job, w: &pb::Worker) -> Result<bool, TxError> {
    if w.capacity <= w.active || w.address == job.submitter || job.tried.contains(&w.address) {
        return Ok(false);
    }
    if !state.org_is_active(&w.org_id)? {
        return Ok(false);
    }
    let Some(fp) = <[u8; 32]>::try_from(w.address.as_slice()).ok() else {
        return Ok(false);
    };
    Ok(state.revocation(&fp)?.is_none())
}

/// Draws a worker for a queued job with this block's hash, which did not exist when the job
/// was submitted (or requeued) so nobody could aim the draw; refunds at the deadline.
fn queued<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    block: &BlockCtx,
) -> Result<(), TxError> {
    if block.time >= job.deadline {
        return settle::refund(
            state,
            job,
            block.height,
            "deadline passed before a worker accepted",
        );
    }
    let last = job
        .steps
        .last()
        .map(|s| s.height)
        .unwrap_or(job.submitted_height);
    if block.height <= last {
        return Ok(());
    }
    let mut candidates = Vec::new();
    for w in state.workers()? {
        if eligible(state, job, &w)? {
            candidates.push(w);
        }
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let draw = Sha256::new()
        .chain_update(b"neurodata/assign/v1\0")
        .chain_update(block.hash)
        .chain_update(job.id.to_be_bytes())
        .chain_update((job.tried.len() as u64).to_be_bytes())
        .finalize();
    let mut n = [0u8; 8];
    n.copy_from_slice(&draw[..8]);
    let pick = (u64::from_be_bytes(n) % candidates.len() as u64) as usize;
    let mut worker = candidates.swap_remove(pick);
    worker.active += 1;
    state.put_worker(&worker);
    job.worker = worker.address.clone();
    job.worker_org = worker.org_id.clone();
    job.assigned_height = block.height;
    job.accept_by = block.height + ACCEPT_BLOCKS;
    job.status = pb::JobStatus::Assigned as i32;
    let who = Address::from_slice(&worker.address)
        .map(|a| a.to_hex())
        .unwrap_or_default();
    step(
        job,
        block.height,
        "assigned",
        format!(
            "{who} ({}); accept by height {}",
            worker.org_id, job.accept_by
        ),
    );
    state.put_job(job);
    state.emit(
        Event::new(EventKind::JobAssigned)
            .attr(attr::JOB, job.id)
            .attr(attr::WORKER, who)
            .attr(attr::ORG, &worker.org_id)
            .attr(attr::DUE, job.accept_by),
    );
    Ok(())
}

/// Power (as u128) of the attestors passing `f`.
fn power(att: &pb::ResultAttestation, f: impl Fn(&pb::Attestor) -> bool) -> u128 {
    att.attestors
        .iter()
        .filter(|a| f(a))
        .map(|a| u128::try_from(a.power).unwrap_or(0))
        .sum()
}

/// The attestation's phases: beacon, commits (closed early once all are in, or a grace after
/// more than 2/3 of the power), reveals, then the decision.
fn attesting<S: StateWrite>(
    state: &mut S,
    job: &mut pb::Job,
    block: &BlockCtx,
) -> Result<(), TxError> {
    let Some(mut att) = job.attestation.clone() else {
        return Ok(());
    };
    if att.beacon.is_empty() {
        if block.height < att.beacon_height {
            return Ok(());
        }
        att.beacon = block.hash.to_vec();
        att.beacon_height = block.height;
        att.commit_until = block.height + COMMIT_BLOCKS;
        att.attestors = state
            .active_validators()?
            .iter()
            .filter(|v| v.power > 0)
            .map(|v| pb::Attestor {
                validator: super::attest::validator_address(&v.pub_key).to_vec(),
                power: v.power,
                org_id: v.org_id.clone(),
                ..Default::default()
            })
            .collect();
        att.attestors.sort_by(|a, b| a.validator.cmp(&b.validator));
        job.attestation = Some(att);
        step(
            job,
            block.height,
            "beacon",
            format!(
                "beacon {}; commits until height {}",
                hex::encode(block.hash),
                block.height + COMMIT_BLOCKS
            ),
        );
        state.put_job(job);
        state.emit(
            Event::new(EventKind::JobBeacon)
                .attr(attr::JOB, job.id)
                .attr(attr::HASH, hex::encode(block.hash)),
        );
        return Ok(());
    }
    let total = power(&att, |_| true);
    if !att.revealing {
        let committed = power(&att, |a| !a.commit.is_empty());
        if committed * 3 > total * 2 {
            att.commit_until = att.commit_until.min(block.height + COMMIT_GRACE_BLOCKS);
        }
        let all = att.attestors.iter().all(|a| !a.commit.is_empty());
        if all || block.height >= att.commit_until {
            att.revealing = true;
            att.commit_until = block.height;
            att.reveal_until = block.height + REVEAL_BLOCKS;
            let detail = format!(
                "{} of {} validators committed; reveals until height {}",
                att.attestors
                    .iter()
                    .filter(|a| !a.commit.is_empty())
                    .count(),
                att.attestors.len(),
                att.reveal_until
            );
            job.attestation = Some(att);
            step(job, block.height, "revealing", detail);
            state.put_job(job);
            state.emit(Event::new(EventKind::JobRevealing).attr(attr::JOB, job.id));
        } else if job.attestation.as_ref() != Some(&att) {
            job.attestation = Some(att);
            state.put_job(job);
        }
        return Ok(());
    }
    let valid = |a: &pb::Attestor| a.revealed && a.refused.is_empty();
    let agree = power(&att, |a| valid(a) && a.matches);
    let disagree = power(&att, |a| valid(a) && !a.matches);
    if agree * 3 > total * 2 {
        return settle::finalize(state, job, block.height);
    }
    if disagree * 3 > total {
        return settle::reject(state, job, block.height, block.time);
    }
    let pending = att
        .attestors
        .iter()
        .any(|a| !a.commit.is_empty() && !a.revealed && a.refused.is_empty());
    if !pending || block.height >= att.reveal_until {
        return settle::undecided(state, job, block.height, block.time);
    }
    Ok(())
}
