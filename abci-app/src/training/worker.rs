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
