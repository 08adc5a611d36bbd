//! Typed reads and writes of jobs, workers, model versions and attestor records; the only code
//! that uses training state keys.

use neurodata_proto::chain::v1 as pb;

use super::state_key;
use crate::address::Address;
use crate::market::view::read_u64;
use crate::state::{StateError, StateRead, StateWrite};

/// Reads of training records.
pub trait TrainingRead: StateRead + Sized {
    /// Job `id`.
    fn job(&self, id: u64) -> Result<Option<pb::Job>, StateError> {
        self.get_proto(&state_key::job(id))
    }

    /// Every job, ascending by id.
    fn jobs(&self) -> Result<Vec<pb::Job>, StateError> {
        self.prefix_proto(state_key::JOBS)
    }

    /// Ids of the jobs still running, ascending.
    fn active_jobs(&self) -> Result<Vec<u64>, StateError> {
        self.prefix_raw(state_key::ACTIVE)?
            .into_iter()
            .map(|(key, _)| {
                key.rsplit('/')
                    .next()
                    .and_then(|id| id.parse().ok())
                    .ok_or(StateError::Corrupt {
                        key,
                        reason: "active-job entry without an id".into(),
                    })
            })
            .collect()
    }

    /// The id the next job gets.
    fn next_job_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_job_id())?.unwrap_or(1))
    }

    /// The worker registered by `address`.
    fn worker(&self, address: &Address) -> Result<Option<pb::Worker>, StateError> {
        self.get_proto(&state_key::worker(address))
    }

    /// Every worker, ascending by address.
    fn workers(&self) -> Result<Vec<pb::Worker>, StateError> {
        self.prefix_proto(state_key::WORKERS)
    }

    /// Model version `id`.
    fn model_version(&self, id: u64) -> Result<Option<pb::ModelVersion>, StateError> {
        self.get_proto(&state_key::model(id))
    }

    /// Every model version, ascending by id.
    fn model_versions(&self) -> Result<Vec<pb::ModelVersion>, StateError> {
        self.prefix_proto(state_key::MODELS)
    }

    /// The id the next model version gets.
    fn next_model_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_model_id())?.unwrap_or(1))
    }

    /// A validator's attestation record (zero counts if it never attested).
    fn attestor_stats(&self, validator: &[u8]) -> Result<pb::AttestorStats, StateError> {
        Ok(self
            .get_proto(&state_key::attestor(validator))?
            .unwrap_or_else(|| pb::AttestorStats {
                validator: validator.to_vec(),
                ..Default::default()
            }))
    }
}

impl<T: StateRead + Sized> TrainingRead for T {}

/// Writes of training records.
pub trait TrainingWrite: StateWrite + TrainingRead {
    /// Stores a job, keeping the active index in step with its status.
    fn put_job(&mut self, job: &pb::Job) {
        self.put_proto(state_key::job(job.id), job);
        let done = matches!(
            super::status(job),
            pb::JobStatus::Final | pb::JobStatus::Refunded
        );
        if done {
            self.delete(state_key::active(job.id));
        } else {
            self.put_raw(state_key::active(job.id), Vec::new());
        }
    }

    /// Sets the next job id.
    fn put_next_job_id(&mut self, id: u64) {
        self.put_raw(state_key::next_job_id().into(), id.to_be_bytes().to_vec());
    }

    /// Stores a worker.
    fn put_worker(&mut self, worker: &pb::Worker) {
        if let Some(a) = Address::from_slice(&worker.address) {
            self.put_proto(state_key::worker(&a), worker);
        }
    }

    /// Forgets a worker (its identity moved to a successor).
    fn delete_worker(&mut self, address: &Address) {
        self.delete(state_key::worker(address));
    }

    /// Stores a model version.
    fn put_model_version(&mut self, model: &pb::ModelVersion) {
        self.put_proto(state_key::model(model.id), model);
    }

    /// Sets the next model id.
    fn put_next_model_id(&mut self, id: u64) {
        self.put_raw(state_key::next_model_id().into(), id.to_be_bytes().to_vec());
    }

    /// Stores a validator's attestation record.
    fn put_attestor_stats(&mut self, stats: &pb::AttestorStats) {
        self.put_proto(state_key::attestor(&stats.validator), stats);
    }
}

impl<T: StateWrite + Sized> TrainingWrite for T {}
