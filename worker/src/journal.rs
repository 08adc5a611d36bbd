//! What this machine did for a job, kept in `<state>/job-<id>/journal.json`, and the decisions a
//! restarted worker or verifier takes from it together with the chain's view of the job.
//!
//! The chain is the authority on where a job stands (assigned, training, attesting, ...); the
//! journal only records what happened here that the chain cannot tell: that the data is
//! decrypted, that the run finished, which CIDs the artifacts got, and — for a verifier — that
//! the keys were asked for and which verdict (with its secret salt) was written. Every entry is
//! written after the step it records succeeded, atomically, so a crash repeats at most the step
//! under way, and every step is safe to repeat: an accept or a result the chain already has is
//! refused ("wrong status") and logged, an upload is content-addressed, a run whose outputs are
//! complete is not started again.

use std::path::{Path, PathBuf};

use neurodata_abci::extension::VerdictFile;
use neurodata_proto::chain::v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A journal that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {reason}")]
pub struct JournalError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// A job's directory under the state directory: `<state>/job-<id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDir {
    /// The job.
    pub job_id: u64,
    /// The directory.
    pub path: PathBuf,
    /// Where its decrypted data goes: `<path>/data`, or a directory of its own under a scratch
    /// directory kept off shared storage (see [`JobDir::with_scratch`]).
    pub data: PathBuf,
}

impl JobDir {
    /// Job `job_id`'s directory under `state` (not created), its data in `data/` inside it.
    pub fn new(state: &Path, job_id: u64) -> JobDir {
        let path = state.join(format!("job-{job_id}"));
        JobDir {
            job_id,
            data: path.join("data"),
            path,
        }
    }

    /// As [`JobDir::new`], with the decrypted data in `<scratch>/job-<id>` when a scratch
    /// directory is given: a worker whose state is on a volume its run pods share keeps the
    /// plaintext on a volume of its own.
    pub fn with_scratch(state: &Path, scratch: Option<&Path>, job_id: u64) -> JobDir {
        let mut dir = JobDir::new(state, job_id);
        if let Some(scratch) = scratch {
            dir.data = scratch.join(format!("job-{job_id}"));
        }
        dir
    }

    /// The job ids of every job directory under `state` (none if it does not exist).
    pub fn list(state: &Path) -> Vec<u64> {
        let Ok(entries) = std::fs::read_dir(state) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("job-"))
                    .and_then(|id| id.parse().ok())
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// `journal.json`.
    pub fn journal_path(&self) -> PathBuf {
        self.path.join("journal.json")
    }

    /// Where the decrypted data goes (deleted as soon as the job no longer needs it).
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// The trainer's output directory.
    pub fn out_dir(&self) -> PathBuf {
        self.path.join("out")
    }

    /// The spec file the trainer reads.
    pub fn spec_path(&self) -> PathBuf {
        self.path.join("spec.json")
    }

    /// Reads the journal; a missing one is the default (nothing done yet).
    pub fn load<J: DeserializeOwned + Default>(&self) -> Result<J, JournalError> {
        let path = self.journal_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError {
                path: path.display().to_string(),
                reason: format!("does not parse ({e}); move it away to start the job over"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(J::default()),
            Err(e) => Err(JournalError {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the journal atomically (a temporary file synced, then renamed over the old one).
    pub fn save<J: Serialize>(&self, journal: &J) -> Result<(), JournalError> {
        let path = self.journal_path();
        let fail = |e: std::io::Error| JournalError {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let json = serde_json::to_vec_pretty(journal).map_err(|e| JournalError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.path).map_err(fail)?;
        let tmp = self.path.join(".journal.json.tmp");
        (|| {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.path)?.sync_all()
        })()
        .map_err(fail)
    }

    /// Deletes the decrypted data (best effort is not enough: the data is a buyer's secret, so a
    /// failure is returned).
    pub fn remove_data(&self) -> std::io::Result<()> {
        remove_dir(&self.data_dir())
    }

    /// Deletes the whole directory, and the data wherever it is.
    pub fn remove(&self) -> std::io::Result<()> {
        remove_dir(&self.data)?;
        remove_dir(&self.path)
    }
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The assembled data file of a job and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReady {
    /// The file (under the job's data directory).
    pub file: PathBuf,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// The CIDs the artifacts got at the worker's gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// model.safetensors.
    pub model_cid: String,
    /// model.onnx.
    pub onnx_cid: String,
    /// trace.json.
    pub trace_cid: String,
    /// checkpoints/NNNNN.ckpt, in order.
    pub checkpoint_cids: Vec<String>,
}

/// A worker's journal of one job. Phases, in order: accepted, data ready, run done, uploaded,
/// submitted; or failed (the run did not produce a result).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainJournal {
    /// AcceptJob committed.
    pub accepted: bool,
    /// The data is decrypted, checked and assembled.
    pub data: Option<DataReady>,
    /// The run finished with complete outputs.
    pub run_done: bool,
    /// Why the run (or the submission) failed for good; nothing more is done for the job.
    pub failed: Option<String>,
    /// The artifacts are at the gateway.
    pub uploaded: Option<Uploaded>,
    /// SubmitResult committed.
    pub submitted: bool,
}

impl TrainJournal {
    /// The last phase reached, for logs.
    pub fn phase(&self) -> &'static str {
        if self.failed.is_some() {
            "failed"
        } else if self.submitted {
            "submitted"
        } else if self.uploaded.is_some() {
            "uploaded"
        } else if self.run_done {
            "run done"
        } else if self.data.is_some() {
            "data ready"
        } else if self.accepted {
            "accepted"
        } else {
            "new"
        }
    }
}

/// What a worker does next for a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrainStep {
    /// Assigned to us and the accept window is open: send AcceptJob.
    Accept,
    /// Assigned to us but the accept window closed: nothing (the chain draws another worker).
    AcceptMissed,
    /// Training: get the keys, download, decrypt, check and assemble the data.
    PrepareData,
    /// Training, data ready: run the trainer.
    Run,
    /// Training, run done: upload the artifacts.
    Upload,
    /// Training, uploaded: send SubmitResult (the chain has no result yet).
    Submit,
    /// The run or its submission failed for good: nothing more (the chain times the job out).
    Failed(String),
    /// The chain has our result: the plaintext is no longer needed.
    Submitted,
    /// The job is no longer ours (drawn to another worker, final, refunded): delete everything.
    Left,
}

/// The chain's view of a job as a worker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    /// Its status.
    pub status: pb::JobStatus,
    /// Whether its (current) worker is us.
    pub ours: bool,
    /// Last height to accept at.
    pub accept_by: u64,
    /// Whether a result is recorded.
    pub has_result: bool,
}

impl JobView {
    /// The view of `job` for the worker `me` (its certificate fingerprint).
    pub fn of(job: &pb::Job, me: &[u8]) -> JobView {
        JobView {
            status: pb::JobStatus::try_from(job.status).unwrap_or(pb::JobStatus::Unspecified),
            ours: job.worker == me,
            accept_by: job.accept_by,
            has_result: job.result.is_some(),
        }
    }
}

/// What local files show, beside the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalFiles {
    /// The data file the journal names exists.
    pub data_present: bool,
    /// The trainer's output directory holds a complete run (result, model, ONNX, trace and every
    /// checkpoint).
    pub outputs_complete: bool,
}

/// The worker's next step for a job at `height` (the latest committed block).
pub fn train_step(
    job: &JobView,
    height: u64,
    journal: &TrainJournal,
    files: LocalFiles,
) -> TrainStep {
    use pb::JobStatus as S;
    if !job.ours {
        return TrainStep::Left;
    }
    match job.status {
        S::Assigned if height <= job.accept_by => TrainStep::Accept,
        // The accept tx may still be in the next block: AcceptJob at height accept_by + 1 is
        // refused, so there is nothing to send.
        S::Assigned => TrainStep::AcceptMissed,
        S::Training => {
            if let Some(reason) = &journal.failed {
                return TrainStep::Failed(reason.clone());
            }
            // The chain says no result yet; a journal that says submitted crashed before the
            // chain saw it (or the tx was refused): submitting again is what is left.
            if journal.uploaded.is_some() {
                TrainStep::Submit
            } else if files.outputs_complete {
                // A run's outputs, complete, are never produced twice (the journal's run_done
                // may be missing after a crash; a run_done without the files means run again).
                TrainStep::Upload
            } else if journal.data.is_some() && files.data_present {
                TrainStep::Run
            } else {
                TrainStep::PrepareData
            }
        }
        S::Attesting if job.has_result => TrainStep::Submitted,
        // Queued again after a rejection (a worker is never drawn twice for a job), final,
        // refunded, or a status this worker does not know.
        S::Attesting | S::Queued | S::Final | S::Refunded | S::Unspecified => TrainStep::Left,
    }
}

/// A verifier's journal of one job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyJournal {
    /// The result digest (hex) RequestJobKeys was sent for.
    pub keys_requested_for: Option<String>,
    /// The verdict written, salt included: written again unchanged if the inbox loses it, never
    /// replaced by another for the same result (the commit on chain is to this salt).
    pub verdict: Option<VerdictFile>,
}

/// What a verifier does next for a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyStep {
    /// Not ours to check now (the reason, for debug logs).
    Skip(&'static str),
    /// Send RequestJobKeys.
    RequestKeys,
    /// Fetch, rebuild, re-run, write the verdict.
    Verify,
    /// The journal holds the verdict but the inbox lost it: write the same one again.
    Rewrite(VerdictFile),
    /// The inbox holds our verdict on this result.
    Done,
}

/// The verifier's next step for `job` at `height`, as validator `me`; `inbox` is the verdict
/// file for the job found in the inbox, if any.
pub fn verify_step(
    job: &pb::Job,
    me: &[u8; 20],
    height: u64,
    journal: &VerifyJournal,
    inbox: Option<&VerdictFile>,
) -> VerifyStep {
    if job.status != pb::JobStatus::Attesting as i32 {
        return VerifyStep::Skip("not attesting");
    }
    let Some(result) = &job.result else {
        return VerifyStep::Skip("no result");
    };
    let Some(att) = &job.attestation else {
        return VerifyStep::Skip("no attestation");
    };
    if att.beacon.is_empty() {
        return VerifyStep::Skip("beacon not drawn yet");
    }
    if !att.attestors.iter().any(|a| a.validator == me.as_slice()) {
        return VerifyStep::Skip("not an attestor");
    }
    let ours = |v: &VerdictFile| v.result_digest.as_slice() == result.digest;
    if inbox.is_some_and(ours) {
        return VerifyStep::Done;
    }
    if let Some(v) = journal.verdict.as_ref().filter(|v| ours(v)) {
        return VerifyStep::Rewrite(v.clone());
    }
    if att.revealing || height > att.commit_until {
        return VerifyStep::Skip("commit window closed");
    }
    if journal.keys_requested_for.as_deref() != Some(&hex::encode(&result.digest)) {
        return VerifyStep::RequestKeys;
    }
    VerifyStep::Verify
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: pb::JobStatus) -> JobView {
        JobView {
            status,
            ours: true,
            accept_by: 20,
            has_result: status == pb::JobStatus::Attesting,
        }
    }

    const NONE: LocalFiles = LocalFiles {
        data_present: false,
        outputs_complete: false,
    };

    #[test]
    fn an_assigned_job_is_accepted_only_within_its_window() {
        let j = TrainJournal::default();
        assert_eq!(
            train_step(&view(pb::JobStatus::Assigned), 20, &j, NONE),
            TrainStep::Accept
        );
        assert_eq!(
            train_step(&view(pb::JobStatus::Assigned), 21, &j, NONE),
            TrainStep::AcceptMissed
        );
    }

    #[test]
    fn a_training_job_resumes_at_the_first_phase_not_done() {
        let training = view(pb::JobStatus::Training);
        let mut j = TrainJournal {
            accepted: true,
            ..Default::default()
        };
        assert_eq!(train_step(&training, 5, &j, NONE), TrainStep::PrepareData);
        j.data = Some(DataReady {
            file: "data.csv".into(),
            sha256: "00".into(),
        });
        assert_eq!(
            train_step(&training, 5, &j, NONE),
            TrainStep::PrepareData,
            "the journal says ready but the file is gone"
        );
        let data = LocalFiles {
            data_present: true,
            outputs_complete: false,
        };
        assert_eq!(train_step(&training, 5, &j, data), TrainStep::Run);
        j.run_done = true;
        assert_eq!(
            train_step(&training, 5, &j, data),
            TrainStep::Run,
            "the journal says done but the outputs are incomplete: run again"
        );
        let complete = LocalFiles {
            data_present: false,
            outputs_complete: true,
        };
        assert_eq!(train_step(&training, 5, &j, complete), TrainStep::Upload);
        j.uploaded = Some(Uploaded::default());
        assert_eq!(train_step(&training, 5, &j, complete), TrainStep::Submit);
    }

    #[test]
    fn complete_outputs_are_never_produced_again_even_without_a_journal_entry() {
        let training = view(pb::JobStatus::Training);
        let j = TrainJournal {
            accepted: true,
            data: Some(DataReady {
                file: "data.csv".into(),
                sha256: "00".into(),
            }),
            ..Default::default()
        };
        let files = LocalFiles {
            data_present: true,
            outputs_complete: true,
        };
        assert_eq!(
            train_step(&training, 5, &j, files),
            TrainStep::Upload,
            "crashed between the run's end and the journal entry"
        );
    }

    #[test]
    fn a_result_on_chain_is_never_submitted_again() {
        let j = TrainJournal {
            uploaded: Some(Uploaded::default()),
            submitted: false,
            ..Default::default()
        };
        // Crashed after the tx committed, before the journal entry: the chain decides.
        assert_eq!(
            train_step(&view(pb::JobStatus::Attesting), 5, &j, NONE),
            TrainStep::Submitted
        );
    }

    #[test]
    fn a_failed_run_is_not_retried() {
        let j = TrainJournal {
            failed: Some("time limit".into()),
            ..Default::default()
        };
        assert_eq!(
            train_step(&view(pb::JobStatus::Training), 5, &j, NONE),
            TrainStep::Failed("time limit".into())
        );
    }

    #[test]
    fn a_job_that_left_the_worker_is_cleaned_up() {
        let j = TrainJournal::default();
        let mut other = view(pb::JobStatus::Training);
        other.ours = false;
        assert_eq!(train_step(&other, 5, &j, NONE), TrainStep::Left);
        for s in [
            pb::JobStatus::Final,
            pb::JobStatus::Refunded,
            pb::JobStatus::Queued,
        ] {
            assert_eq!(train_step(&view(s), 5, &j, NONE), TrainStep::Left, "{s:?}");
        }
    }

    fn attesting(me: [u8; 20]) -> pb::Job {
        pb::Job {
            id: 3,
            status: pb::JobStatus::Attesting as i32,
            result: Some(pb::JobResult {
                digest: vec![7; 32],
                ..Default::default()
            }),
            attestation: Some(pb::ResultAttestation {
                beacon: vec![1; 32],
                commit_until: 100,
                attestors: vec![pb::Attestor {
                    validator: me.to_vec(),
                    power: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn verdict(digest: u8) -> VerdictFile {
        VerdictFile {
            job_id: 3,
            result_digest: [digest; 32],
            matches: true,
            segments_digest: [0; 32],
            salt: [9; 32],
        }
    }

    #[test]
    fn a_verifier_asks_for_keys_once_then_verifies_then_is_done() {
        let me = [5; 20];
        let job = attesting(me);
        let mut j = VerifyJournal::default();
        assert_eq!(
            verify_step(&job, &me, 50, &j, None),
            VerifyStep::RequestKeys
        );
        j.keys_requested_for = Some(hex::encode([7; 32]));
        assert_eq!(verify_step(&job, &me, 50, &j, None), VerifyStep::Verify);
        assert_eq!(
            verify_step(&job, &me, 50, &j, Some(&verdict(7))),
            VerifyStep::Done
        );
        assert_eq!(
            verify_step(&job, &me, 50, &j, Some(&verdict(8))),
            VerifyStep::Verify,
            "a verdict on an earlier result of the job is not one on this result"
        );
    }

    #[test]
    fn a_journaled_verdict_is_written_again_unchanged_never_redone() {
        let me = [5; 20];
        let job = attesting(me);
        let j = VerifyJournal {
            keys_requested_for: Some(hex::encode([7; 32])),
            verdict: Some(verdict(7)),
        };
        assert_eq!(
            verify_step(&job, &me, 150, &j, None),
            VerifyStep::Rewrite(verdict(7)),
            "even past the commit window: the salt must stay for the reveal"
        );
    }

    #[test]
    fn a_verifier_skips_jobs_it_does_not_attest_or_can_no_longer_commit_to() {
        let me = [5; 20];
        let j = VerifyJournal::default();
        assert!(matches!(
            verify_step(&attesting([6; 20]), &me, 50, &j, None),
            VerifyStep::Skip(_)
        ));
        assert!(matches!(
            verify_step(&attesting(me), &me, 101, &j, None),
            VerifyStep::Skip(_)
        ));
        let mut no_beacon = attesting(me);
        if let Some(a) = no_beacon.attestation.as_mut() {
            a.beacon.clear();
        }
        assert!(matches!(
            verify_step(&no_beacon, &me, 50, &j, None),
            VerifyStep::Skip(_)
        ));
    }

    #[test]
    fn a_journal_round_trips_through_its_file_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let jd = JobDir::new(dir.path(), 4);
        assert_eq!(jd.load::<TrainJournal>().unwrap(), TrainJournal::default());
        let j = TrainJournal {
            accepted: true,
            uploaded: Some(Uploaded {
                model_cid: "bafk".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        jd.save(&j).unwrap();
        assert_eq!(jd.load::<TrainJournal>().unwrap(), j);
        assert_eq!(JobDir::list(dir.path()), vec![4]);
        jd.remove().unwrap();
        assert!(JobDir::list(dir.path()).is_empty());
    }
}
