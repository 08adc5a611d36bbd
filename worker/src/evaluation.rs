//! A validator's score of a model on a dataset's hidden evaluation split, for the leaderboard:
//! what the verifier keeps per evaluation (`<state>/evaluations/<id>/journal.json`), the pure
//! decision of what to do next from the chain's view of the evaluation and that record, and the
//! scoring itself (the model file checked against the model version's hash, the ONNX export
//! against its CID, both loaded and run on the split by [`neurodata_trainer::score`]).
//!
//! Every validator scores the same bytes with the same code, so honest ones reveal the same
//! score JSON and the chain needs more than two thirds of the power on one score to accept it. A
//! model that does not load or does not run on the split's rows is a verdict too (`matches:
//! false`, no score): the model is at fault, not the validator. Not having the split or the
//! artifacts yet is no verdict: the verifier waits and retries.

use std::path::{Path, PathBuf};

use neurodata_abci::extension::EvaluationVerdictFile;
use neurodata_proto::chain::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::journal::{JobDir, JournalError};

/// An evaluation's directory under the verifier's state directory: `<state>/evaluations/<id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluationDir {
    /// The evaluation.
    pub evaluation_id: u64,
    /// The directory.
    pub path: PathBuf,
}

impl EvaluationDir {
    /// Evaluation `evaluation_id`'s directory under `state` (not created).
    pub fn new(state: &Path, evaluation_id: u64) -> EvaluationDir {
        EvaluationDir {
            evaluation_id,
            path: state.join("evaluations").join(evaluation_id.to_string()),
        }
    }

    /// The ids of every evaluation directory under `state` (none if there is none).
    pub fn list(state: &Path) -> Vec<u64> {
        let Ok(entries) = std::fs::read_dir(state.join("evaluations")) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The journal file's directory, kept as the job journals are (same atomic writes).
    fn journal_dir(&self) -> JobDir {
        JobDir {
            job_id: self.evaluation_id,
            path: self.path.clone(),
            data: self.data_dir(),
        }
    }

    /// Reads the journal; a missing one is the default (nothing done yet).
    pub fn load(&self) -> Result<EvaluationJournal, JournalError> {
        self.journal_dir().load()
    }

    /// Writes the journal atomically.
    pub fn save(&self, journal: &EvaluationJournal) -> Result<(), JournalError> {
        self.journal_dir().save(journal)
    }

    /// Where the decrypted split and the model's artifacts go while it is scored (deleted
    /// after: the split is the provider's secret).
    pub fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    /// Deletes the split and the artifacts (a failure is returned).
    pub fn remove_data(&self) -> std::io::Result<()> {
        remove_dir(&self.data_dir())
    }

    /// Deletes the whole directory.
    pub fn remove(&self) -> std::io::Result<()> {
        remove_dir(&self.path)
    }
}

fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// A verifier's journal of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationJournal {
    /// The verdict written, salt included: written again unchanged if the inbox loses it, never
    /// replaced by another (the commit on chain is to this salt).
    pub verdict: Option<EvaluationVerdictFile>,
}

/// What a verifier does next for an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvaluationStep {
    /// Not ours to score now (the reason, for debug logs).
    Skip(&'static str),
    /// Wait for the split's key, fetch the split and the model, score, write the verdict.
    Score,
    /// The journal holds the verdict but the inbox lost it: write the same one again.
    Rewrite(EvaluationVerdictFile),
    /// The inbox holds our verdict on this evaluation.
    Done,
}

/// The verifier's next step for evaluation `e` at `height`, as validator `me`; `inbox` is the
/// verdict file for the evaluation found in the inbox, if any. No key request is sent: the
/// chain opened one for each attestor's first operator when the evaluation was requested.
pub fn evaluation_step(
    e: &pb::Evaluation,
    me: &[u8; 20],
    height: u64,
    journal: &EvaluationJournal,
    inbox: Option<&EvaluationVerdictFile>,
) -> EvaluationStep {
    if e.status != pb::EvaluationStatus::Attesting as i32 {
        return EvaluationStep::Skip("not attesting");
    }
    let Some(att) = &e.attestation else {
        return EvaluationStep::Skip("no attestation");
    };
    if !att.attestors.iter().any(|a| a.validator == me.as_slice()) {
        return EvaluationStep::Skip("not an attestor");
    }
    // A verdict is about this evaluation's subject; one about another (a file left from an
    // earlier chain in the same directory) is not ours.
    let ours = |v: &EvaluationVerdictFile| {
        v.evaluation_id == e.id && v.subject_digest.as_slice() == e.subject_digest
    };
    if inbox.is_some_and(ours) {
        return EvaluationStep::Done;
    }
    if let Some(v) = journal.verdict.as_ref().filter(|v| ours(v)) {
        return EvaluationStep::Rewrite(v.clone());
    }
    if att.revealing || height > att.commit_until {
        return EvaluationStep::Skip("commit window closed");
    }
    EvaluationStep::Score
}

/// A validator's verdict on evaluation `e`: `Ok(score_json)` when the model scored on the
/// split (the canonical score JSON), `Err(finding)` when the model did not load or run on it
/// (`matches: false`, no score). `None` if the evaluation's subject digest is not 32 bytes
/// (the chain never makes one).
pub fn verdict(
    e: &pb::Evaluation,
    outcome: &Result<String, String>,
    salt: [u8; 32],
) -> Option<EvaluationVerdictFile> {
    let subject_digest = <[u8; 32]>::try_from(e.subject_digest.as_slice()).ok()?;
    let (matches, score_json) = match outcome {
        Ok(json) => (true, json.clone()),
        Err(_) => (false, String::new()),
    };
    Some(EvaluationVerdictFile {
        evaluation_id: e.id,
        subject_digest,
        matches,
        score_json,
        salt,
    })
}

/// Scores model version `mv` on the split: `model` must hash to its `model_sha256` and `onnx`
/// to its ONNX CID; both are loaded and run on the split's rows (`split_path` names the file,
/// whose extension gives its format; `split` is its bytes). `Ok`: the canonical score JSON;
/// `Err`: what is wrong with the model (the verdict's finding).
pub fn score(
    mv: &pb::ModelVersion,
    model: &[u8],
    onnx: &[u8],
    split_path: &Path,
    split: &[u8],
) -> Result<String, String> {
    let have = openssl::sha::sha256(model);
    if have.as_slice() != mv.model_sha256 {
        return Err(format!(
            "model.safetensors hashes to {}, model version {} says {}",
            hex::encode(have),
            mv.id,
            hex::encode(&mv.model_sha256)
        ));
    }
    let cid = neurodata_crypto::cid::Cid::of(onnx).to_string();
    if cid != mv.onnx_cid {
        return Err(format!(
            "the ONNX export is {cid}, model version {} names {}",
            mv.id, mv.onnx_cid
        ));
    }
    let loaded = neurodata_trainer::model::Model::from_bytes(model)
        .map_err(|e| format!("model.safetensors does not load: {e}"))?;
    neurodata_trainer::score::score(&loaded, onnx, split_path, split)
        .map(|s| s.json)
        .map_err(|e| format!("the model does not score on the split: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ME: [u8; 20] = [7; 20];

    fn evaluation(status: pb::EvaluationStatus) -> pb::Evaluation {
        pb::Evaluation {
            id: 4,
            model_version: 1,
            dataset_id: 1,
            split_id: 2,
            status: status as i32,
            subject_digest: vec![9; 32],
            attestation: Some(pb::ResultAttestation {
                commit_until: 100,
                reveal_until: 130,
                attestors: vec![pb::Attestor {
                    validator: ME.to_vec(),
                    power: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn file(e: &pb::Evaluation) -> EvaluationVerdictFile {
        verdict(e, &Ok("{\"metric\":\"accuracy\"}".into()), [3; 32]).unwrap()
    }

    #[test]
    fn an_attestor_scores_an_attesting_evaluation_within_the_commit_window() {
        let e = evaluation(pb::EvaluationStatus::Attesting);
        let none = EvaluationJournal::default();
        assert_eq!(
            evaluation_step(&e, &ME, 100, &none, None),
            EvaluationStep::Score
        );
        assert_eq!(
            evaluation_step(&e, &ME, 101, &none, None),
            EvaluationStep::Skip("commit window closed")
        );
        let mut revealing = e.clone();
        if let Some(a) = revealing.attestation.as_mut() {
            a.revealing = true;
        }
        assert_eq!(
            evaluation_step(&revealing, &ME, 50, &none, None),
            EvaluationStep::Skip("commit window closed")
        );
    }

    #[test]
    fn only_attestors_of_attesting_evaluations_score() {
        let none = EvaluationJournal::default();
        for status in [
            pb::EvaluationStatus::Scored,
            pb::EvaluationStatus::Failed,
            pb::EvaluationStatus::Unspecified,
        ] {
            assert_eq!(
                evaluation_step(&evaluation(status), &ME, 5, &none, None),
                EvaluationStep::Skip("not attesting"),
                "{status:?}"
            );
        }
        let e = evaluation(pb::EvaluationStatus::Attesting);
        assert_eq!(
            evaluation_step(&e, &[8; 20], 5, &none, None),
            EvaluationStep::Skip("not an attestor")
        );
        let mut bare = e;
        bare.attestation = None;
        assert_eq!(
            evaluation_step(&bare, &ME, 5, &none, None),
            EvaluationStep::Skip("no attestation")
        );
    }

    #[test]
    fn a_verdict_in_the_inbox_is_done_and_a_lost_one_is_written_again_unchanged() {
        let e = evaluation(pb::EvaluationStatus::Attesting);
        let v = file(&e);
        let journal = EvaluationJournal {
            verdict: Some(v.clone()),
        };
        assert_eq!(
            evaluation_step(&e, &ME, 5, &journal, Some(&v)),
            EvaluationStep::Done
        );
        // Even after the commit window: the salt must reach the reveal.
        assert_eq!(
            evaluation_step(&e, &ME, 120, &journal, None),
            EvaluationStep::Rewrite(v.clone())
        );
        // A file about another subject (another chain in the same directory) is not ours.
        let mut other = v;
        other.subject_digest = [1; 32];
        assert_eq!(
            evaluation_step(&e, &ME, 5, &EvaluationJournal::default(), Some(&other)),
            EvaluationStep::Score
        );
    }

    #[test]
    fn a_score_is_a_matching_verdict_and_a_finding_is_a_mismatch_without_score() {
        let e = evaluation(pb::EvaluationStatus::Attesting);
        let ok = verdict(&e, &Ok("{\"rows\":3}".into()), [5; 32]).unwrap();
        assert_eq!(
            (ok.evaluation_id, ok.matches, ok.score_json.as_str()),
            (4, true, "{\"rows\":3}")
        );
        assert_eq!(ok.subject_digest, [9; 32]);
        assert_eq!(ok.salt, [5; 32]);
        let bad = verdict(&e, &Err("does not load".into()), [5; 32]).unwrap();
        assert_eq!((bad.matches, bad.score_json.as_str()), (false, ""));
        let mut short = e;
        short.subject_digest = vec![1; 31];
        assert_eq!(verdict(&short, &Ok(String::new()), [5; 32]), None);
    }

    #[test]
    fn a_model_that_is_not_the_model_versions_bytes_is_a_finding() {
        let model = b"not safetensors".to_vec();
        let onnx = b"not onnx".to_vec();
        let mv = pb::ModelVersion {
            id: 1,
            model_sha256: openssl::sha::sha256(&model).to_vec(),
            onnx_cid: neurodata_crypto::cid::Cid::of(&onnx).to_string(),
            ..Default::default()
        };
        let split = Path::new("split.csv");
        let mut other = mv.clone();
        other.model_sha256 = vec![0; 32];
        let e = score(&other, &model, &onnx, split, b"a\n1\n").unwrap_err();
        assert!(e.starts_with("model.safetensors hashes to "), "{e}");
        let mut other = mv.clone();
        other.onnx_cid = "bafkreiother".into();
        let e = score(&other, &model, &onnx, split, b"a\n1\n").unwrap_err();
        assert!(e.contains("names bafkreiother"), "{e}");
        // The right bytes, but not a model file: the model's fault, a verdict.
        let e = score(&mv, &model, &onnx, split, b"a\n1\n").unwrap_err();
        assert!(e.starts_with("model.safetensors does not load: "), "{e}");
    }

    /// `rows` rows of `x,y,target`: the target is 1 when x + y > 1 (a little noise aside).
    fn rows(rows: usize, seed: u64) -> String {
        let mut s = seed | 1;
        let mut next = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 33) as f64 / f64::from(1u32 << 31)
        };
        let mut out = String::from("x,y,target\n");
        for _ in 0..rows {
            let (x, y) = (next(), next());
            let target = u8::from(x + y + (next() - 0.5) * 0.1 > 1.0);
            out.push_str(&format!("{x:.4},{y:.4},{target}\n"));
        }
        out
    }

    /// A logistic regression trained on 200 rows: its model version, model file and export.
    fn trained(dir: &Path) -> (pb::ModelVersion, Vec<u8>, Vec<u8>) {
        let spec = neurodata_trainer::JobSpec::from_json(
            r#"{"schema":{"columns":[{"name":"x","type":"numeric"},{"name":"y","type":"numeric"},
                {"name":"target","type":"categorical"}],"target":"target"},
                "model":{"algorithm":"logistic_regression"},"seed":3,"test_fraction":0.2,
                "training":{"epochs":5,"batch_size":16,"optimizer":{"kind":"adam","lr":0.05}},
                "checkpoint_every":1000}"#,
        )
        .unwrap();
        let data = dir.join("train.csv");
        std::fs::write(&data, rows(200, 1)).unwrap();
        let out = dir.join("out");
        neurodata_trainer::job::run(&spec, &data, &out, &mut neurodata_trainer::job::Quiet)
            .unwrap();
        let model = std::fs::read(out.join("model.safetensors")).unwrap();
        let onnx = std::fs::read(out.join("model.onnx")).unwrap();
        let mv = pb::ModelVersion {
            id: 1,
            model_sha256: openssl::sha::sha256(&model).to_vec(),
            onnx_cid: neurodata_crypto::cid::Cid::of(&onnx).to_string(),
            ..Default::default()
        };
        (mv, model, onnx)
    }

    #[test]
    fn a_model_is_scored_on_every_row_of_the_split_and_rows_it_cannot_read_are_a_finding() {
        let dir = tempfile::tempdir().unwrap();
        let (mv, model, onnx) = trained(dir.path());
        let split = rows(50, 9);
        let path = Path::new("split.csv");
        let json = score(&mv, &model, &onnx, path, split.as_bytes()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["metric"], "accuracy", "{json}");
        assert_eq!(parsed["rows"], 50, "{json}");
        assert!(json.starts_with("{\"higher_is_better\":true,"), "{json}");
        // Every validator gets the same bytes from the same inputs.
        assert_eq!(
            score(&mv, &model, &onnx, path, split.as_bytes()).unwrap(),
            json
        );
        // A split without the target cannot be scored: the verdict says the model did not.
        let no_target: String = split
            .lines()
            .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_owned() + "\n")
            .collect();
        let e = score(&mv, &model, &onnx, path, no_target.as_bytes()).unwrap_err();
        assert!(
            e.starts_with("the model does not score on the split: "),
            "{e}"
        );
        // Another export than the model version's: refused before it runs.
        let e = score(&mv, &model, b"other", path, split.as_bytes()).unwrap_err();
        assert!(e.starts_with("the ONNX export is "), "{e}");
    }

    #[test]
    fn an_evaluation_journal_round_trips_under_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ed = EvaluationDir::new(dir.path(), 3);
        assert_eq!(ed.load().unwrap(), EvaluationJournal::default());
        let j = EvaluationJournal {
            verdict: Some(file(&evaluation(pb::EvaluationStatus::Attesting))),
        };
        ed.save(&j).unwrap();
        assert_eq!(ed.load().unwrap(), j);
        assert_eq!(EvaluationDir::list(dir.path()), vec![3]);
        assert!(
            JobDir::list(dir.path()).is_empty(),
            "not taken for a job directory"
        );
        std::fs::create_dir_all(ed.data_dir()).unwrap();
        ed.remove_data().unwrap();
        assert!(!ed.data_dir().exists());
        ed.remove().unwrap();
        assert!(EvaluationDir::list(dir.path()).is_empty());
    }
}
