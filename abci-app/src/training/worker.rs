//! `RegisterWorker`: a trainer-role member offers (or withdraws) capacity to run jobs.

use neurodata_proto::chain::v1 as pb;

use super::{MAX_CAPACITY, TrainingError, TrainingRead, TrainingWrite};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::ledger::signer_address;
use crate::membership::Signer;
use crate::state::{Event, StateWrite};
use crate::tx::ExecCtx;

/// Offer `capacity` concurrent jobs (0 withdraws: no new jobs are drawn for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterWorker {
    /// Jobs at once.
    pub capacity: u32,
    /// Its org's gateway URL.
    pub location: String,
}

impl TryFrom<pb::RegisterWorker> for RegisterWorker {
    type Error = TxError;
    fn try_from(m: pb::RegisterWorker) -> Result<Self, TxError> {
        if m.capacity > MAX_CAPACITY {
            return Err(TrainingError::Capacity(m.capacity).into());
        }
        if m.location.len() > 256 {
            return Err(crate::tx::invalid(
                "register_worker.location",
                "at most 256 bytes",
            ));
        }
        Ok(RegisterWorker {
            capacity: m.capacity,
            location: m.location,
        })
    }
}

impl RegisterWorker {
    /// Creates or updates the signer's worker record; jobs it holds are unaffected.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let address = signer_address(signer)?;
        let mut worker = state.worker(&address)?.unwrap_or_else(|| pb::Worker {
            address: address.0.to_vec(),
            registered_height: ctx.height,
            ..Default::default()
        });
        worker.org_id = signer.identity.org_id.clone();
        worker.capacity = self.capacity;
        worker.location = self.location.clone();
        state.put_worker(&worker);
        state.emit(
            Event::new(EventKind::WorkerRegistered)
                .attr(attr::WORKER, address)
                .attr(attr::ORG, &worker.org_id)
                .attr(attr::CAPACITY, self.capacity),
        );
        Ok(())
    }
}

/// Hands `from`'s training to its successor `to` (see `crate::membership::succession`): its
/// worker registration (merged into `to`'s if it has one) and every open job it runs or
/// submitted, so the successor accepts, submits results and is paid for the jobs `from` was
/// drawn for, and gets the refunds and models of the jobs `from` asked for. A result already in
/// keeps its digest, which named `from`: validators attest the digest recorded, not a recomputed
/// one. Returns how many jobs changed.
pub fn move_member<S: StateWrite>(
    state: &mut S,
    from: &crate::address::Address,
    to: &crate::address::Address,
) -> Result<u64, TxError> {
    if let Some(old) = state.worker(from)? {
        let worker = match state.worker(to)? {
            None => pb::Worker {
                address: to.0.to_vec(),
                ..old
            },
            Some(mut w) => {
                w.active = w.active.saturating_add(old.active);
                w.finalized = w.finalized.saturating_add(old.finalized);
                w.rejected = w.rejected.saturating_add(old.rejected);
                w.missed = w.missed.saturating_add(old.missed);
                w
            }
        };
        state.put_worker(&worker);
        state.delete_worker(from);
    }
    let mut moved = 0;
    for id in state.active_jobs()? {
        let Some(mut job) = state.job(id)? else {
            continue;
        };
        let mut changed = false;
        if job.worker == from.0 {
            job.worker = to.0.to_vec();
            changed = true;
        }
        if job.submitter == from.0 {
            job.submitter = to.0.to_vec();
            changed = true;
        }
        if changed {
            state.put_job(&job);
            moved += 1;
        }
    }
    Ok(moved)
}
