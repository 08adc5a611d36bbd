//! `SubmitResult`: the assigned worker's claim, which validators then check.

use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use sha2::{Digest, Sha256};

use super::{
    MAX_METRICS_BYTES, MAX_SEGMENTS, TrainingError, TrainingWrite, existing_job, require_status,
    step,
};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::market::{MarketRead, MarketWrite};
use crate::membership::Signer;
use crate::state::{Event, StateWrite};
use crate::tx::ExecCtx;

/// A worker's result.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitResult {
    /// The job.
    pub job_id: u64,
    /// The result as it will be stored (height and digest set at execution).
    pub result: pb::JobResult,
}

// Bytes and strings only (prost derives no Eq).
impl Eq for SubmitResult {}

fn hash32(field: &'static str, bytes: &[u8]) -> Result<(), TxError> {
    if bytes.len() != 32 {
        return Err(TrainingError::BadResult(format!(
            "{field} is {} bytes; a SHA-256 is 32",
            bytes.len()
        ))
        .into());
    }
    Ok(())
}

fn cid(field: &'static str, text: &str) -> Result<(), TxError> {
    text.parse::<Cid>()
        .map(|_| ())
        .map_err(|e| TrainingError::BadResult(format!("{field}: {e}")).into())
}

/// What validators attest: SHA-256 over the job, the worker and every field of the result
/// (its height included), each length-prefixed. The job, worker and height make every attempt's
/// digest its own: a verdict (or a commit) on a rejected attempt never counts for a later one
/// that posts the same files.
pub fn result_digest(job_id: u64, worker: &[u8], r: &pb::JobResult) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"neurodata/result/v2\0");
    h.update(job_id.to_be_bytes());
    h.update((worker.len() as u64).to_be_bytes());
    h.update(worker);
    h.update(r.height.to_be_bytes());
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(&r.model_sha256);
    field(&r.trace_root);
    field(&r.segments.to_be_bytes());
    field(r.metrics_json.as_bytes());
    field(r.model_cid.as_bytes());
    field(r.onnx_cid.as_bytes());
    field(r.trace_cid.as_bytes());
    field(&(r.checkpoint_cids.len() as u64).to_be_bytes());
    for c in &r.checkpoint_cids {
        field(c.as_bytes());
    }
    field(&r.sandbox_sha256);
    h.finalize().into()
}

impl TryFrom<pb::SubmitResult> for SubmitResult {
    type Error = TxError;
    fn try_from(m: pb::SubmitResult) -> Result<Self, TxError> {
        hash32("model_sha256", &m.model_sha256)?;
        hash32("trace_root", &m.trace_root)?;
        if !m.sandbox_sha256.is_empty() {
            hash32("sandbox_sha256", &m.sandbox_sha256)?;
        }
        if m.segments == 0 || m.segments > MAX_SEGMENTS {
            return Err(TrainingError::BadResult(format!(
                "{} segments; allowed 1..={MAX_SEGMENTS}",
                m.segments
            ))
            .into());
        }
        if m.checkpoint_cids.len() != m.segments as usize + 1 {
            return Err(TrainingError::BadResult(format!(
                "{} checkpoint CIDs for {} segments; a trace of n segments has n+1 checkpoints",
                m.checkpoint_cids.len(),
                m.segments
            ))
            .into());
        }
        cid("model_cid", &m.model_cid)?;
        cid("onnx_cid", &m.onnx_cid)?;
        cid("trace_cid", &m.trace_cid)?;
        for c in &m.checkpoint_cids {
            cid("checkpoint_cids", c)?;
        }
        if m.metrics_json.len() > MAX_METRICS_BYTES {
            return Err(TrainingError::BadResult(format!(
                "metrics are {} bytes; the limit is {MAX_METRICS_BYTES}",
                m.metrics_json.len()
            ))
            .into());
        }
        match serde_json::from_str::<serde_json::Value>(&m.metrics_json) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(
                    TrainingError::BadResult("metrics_json is not a JSON object".into()).into(),
                );
            }
        }
        Ok(SubmitResult {
            job_id: m.job_id,
            result: pb::JobResult {
                model_sha256: m.model_sha256,
                trace_root: m.trace_root,
                segments: m.segments,
                metrics_json: m.metrics_json,
                model_cid: m.model_cid,
                onnx_cid: m.onnx_cid,
                trace_cid: m.trace_cid,
                checkpoint_cids: m.checkpoint_cids,
                sandbox_sha256: m.sandbox_sha256,
                height: 0,
                digest: Vec::new(),
            },
        })
    }
}

impl SubmitResult {
    /// Records the result; the beacon is drawn from the next block's hash.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut job = existing_job(state, self.job_id)?;
        require_status(&job, pb::JobStatus::Training)?;
        super::job::require_worker(&job, signer)?;
        if ctx.time > job.result_by {
            return Err(TrainingError::WindowClosed {
                job: job.id,
                what: "result",
                at: job.result_by,
            }
            .into());
        }
        let mut result = self.result.clone();
        result.height = ctx.height;
        let digest = result_digest(job.id, &job.worker, &result);
        result.digest = digest.to_vec();
        job.result = Some(result);
        job.attestation = Some(pb::ResultAttestation {
            beacon_height: ctx.height + 1,
            ..Default::default()
        });
        job.status = pb::JobStatus::Attesting as i32;
        step(
            &mut job,
            ctx.height,
            "result",
            format!("model {}", hex::encode(&self.result.model_sha256)),
        );
        for d in &job.dataset_ids {
            if state.dataset(*d)?.is_some() {
                let mut stats = state.dataset_stats(*d)?;
                stats.training_runs += 1;
                state.put_dataset_stats(&stats);
            }
        }
        state.put_job(&job);
        state.emit(
            Event::new(EventKind::JobResult)
                .attr(attr::JOB, job.id)
                .attr(attr::WORKER, hex::encode(&job.worker))
                .attr(attr::HASH, hex::encode(digest)),
        );
        Ok(())
    }
}
