//! Evaluations: validators score a final model version on the hidden evaluation split of a
//! dataset it was trained on, and the score they agree on goes on the dataset's leaderboard
//! ([`mod@super::leaderboard`]).
//!
//! An evaluation's life ([`pb::EvaluationStatus`]):
//! 1. [`RequestEvaluation`] (any member): the model version must list the dataset among its
//!    datasets, the dataset must have a split ([`crate::market::RegisterEvalSplit`]), and no
//!    evaluation of that model version on that split may be attesting or scored (a failed one may
//!    be asked again). The attestors are the validators with power at that height; the chain
//!    opens an evaluation key request of the split for each one's first operator
//!    ([`crate::escrow::open_evaluation_key_request`]), which the split provider's gateway
//!    answers like a training key. → attesting, commits open for [`EVAL_COMMIT_BLOCKS`].
//! 2. Each validator's verifier runs the model's ONNX export on the split and leaves its score in
//!    the validator's inbox ([`crate::extension::EvaluationVerdictFile`]); the validator commits
//!    to it, then reveals it, in its vote extensions — the same commit–reveal, slots and
//!    injected-votes path as a job's result ([`crate::training::attest`]), with the score as the
//!    verdict: the commit binds the evaluation, its [`subject_digest`], the validator's address,
//!    whether it could score, the SHA-256 of the score JSON and a salt ([`commitment`]); the
//!    reveal carries the score itself (at most [`MAX_SCORE_BYTES`]) and its SHA-256, which must
//!    agree. Nothing is revealed while commits are accepted, so a validator that did not run the
//!    model has no score to copy, and a copied commit cannot be opened.
//! 3. End of block ([`end_block`]): commits close when all are in, at the deadline, or
//!    [`COMMIT_GRACE_BLOCKS`] after commits of more than 2/3 of the power; reveals stay open for
//!    [`EVAL_REVEAL_BLOCKS`] (never past the reveal deadline set at the request). The evaluation
//!    settles when every committed attestor has revealed, when the reveal deadline passes, or as
//!    soon as one score holds more than 2/3 of the power (no later reveal can change that):
//!    revealed attestors that could score are grouped by the SHA-256 of their score, and the
//!    group with the most power wins if it holds more than 2/3 of all the attestors' power →
//!    scored, with the metric, value and direction parsed from the score ([`parse_score`]); else
//!    → failed, with the reason. Validators agree on bytes first: a winning score that does not
//!    parse fails the evaluation too.
//!
//! Why a model version is scored once per split: the leaderboard shows one score per model, and
//! re-asking until the validators' scores happen to differ would let anyone hide a model's
//! score. A failed evaluation (validators offline, the key undelivered) may be asked again.

use neurodata_proto::chain::v1 as pb;
use sha2::{Digest, Sha256};

use super::evaluation_view::{EvaluationRead, EvaluationWrite};
use crate::TxError;
use crate::address::Address;
use crate::app::BlockCtx;
use crate::events::{EventKind, attr};
use crate::governance::GovernanceRead;
use crate::market::{MarketRead, existing_dataset, require_public};
use crate::membership::{MembershipRead, Signer};
use crate::state::{Event, StateError, StateRead, StateWrite};
use crate::training::attest::{Recorded, count_bad_reveal, record_step, validator_address};
use crate::training::{COMMIT_GRACE_BLOCKS, TrainingRead, TrainingWrite};
use crate::tx::{ExecCtx, invalid};

/// Blocks validators have to fetch the split's key, score the model and commit.
pub const EVAL_COMMIT_BLOCKS: u64 = 60;
/// Blocks validators have to reveal once commits close.
pub const EVAL_REVEAL_BLOCKS: u64 = 30;
/// Largest score JSON a reveal carries (the canonical score JSON is about 90 bytes).
pub const MAX_SCORE_BYTES: usize = 256;

/// Why an evaluation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// No model version with this id.
    #[error("model version {0} does not exist (a job's result becomes one when it is final)")]
    UnknownModelVersion(u64),
    /// The model version was not trained on the dataset.
    #[error(
        "model version {model_version} was not trained on dataset {dataset} (its datasets: {trained_on}); a model is scored only on the split of a dataset it was trained on"
    )]
    NotTrainedOn {
        /// The model version.
        model_version: u64,
        /// The dataset asked for.
        dataset: u64,
        /// The datasets it was trained on.
        trained_on: String,
    },
    /// The dataset has no hidden evaluation split.
    #[error(
        "dataset {0} has no hidden evaluation split; its provider registers one (RegisterEvalSplit)"
    )]
    NoSplit(u64),
    /// The model was trained on the very split it would be scored on.
    #[error(
        "model version {model_version} was trained on dataset {dataset}'s hidden split {split} itself; its score there would say nothing"
    )]
    TrainedOnSplit {
        /// The model version.
        model_version: u64,
        /// The dataset.
        dataset: u64,
        /// Its split.
        split: u64,
    },
    /// The model version is being (or was) scored on this split.
    #[error(
        "model version {model_version} already has evaluation {evaluation} on dataset {dataset}'s split, {status}; one score per model and split (a failed evaluation may be asked again)"
    )]
    AlreadyEvaluated {
        /// The model version.
        model_version: u64,
        /// The dataset.
        dataset: u64,
        /// The existing evaluation.
        evaluation: u64,
        /// Its status.
        status: &'static str,
    },
    /// Only the model's owner org asks for its scoring.
    #[error(
        "model version {model_version} belongs to org {owner_org}; only its members ask validators to score it"
    )]
    NotOwnerOrg {
        /// The model version.
        model_version: u64,
        /// Its owner's org.
        owner_org: String,
    },
    /// No validator has voting power to score it.
    #[error("no validator has voting power; nobody could score the model")]
    NoAttestors,
}

impl EvaluationError {
    /// Stable code (160..180).
    pub fn code(&self) -> u32 {
        match self {
            EvaluationError::UnknownModelVersion(_) => 160,
            EvaluationError::NotTrainedOn { .. } => 161,
            EvaluationError::NoSplit(_) => 162,
            EvaluationError::TrainedOnSplit { .. } => 163,
            EvaluationError::AlreadyEvaluated { .. } => 164,
            EvaluationError::NoAttestors => 165,
            EvaluationError::NotOwnerOrg { .. } => 166,
        }
    }
}

/// The status of a stored evaluation (an unknown number reads as unspecified).
pub fn status(e: &pb::Evaluation) -> pb::EvaluationStatus {
    pb::EvaluationStatus::try_from(e.status).unwrap_or(pb::EvaluationStatus::Unspecified)
}

/// Lower-case name of a status, for messages.
pub fn status_name(s: pb::EvaluationStatus) -> &'static str {
    match s {
        pb::EvaluationStatus::Unspecified => "unspecified",
        pb::EvaluationStatus::Attesting => "attesting",
        pb::EvaluationStatus::Scored => "scored",
        pb::EvaluationStatus::Failed => "failed",
    }
}

/// What validators attest a score of: SHA-256 over the evaluation id, the model's hash, its
/// ONNX export's CID and the split's plaintext hash. A score committed for one evaluation never
/// counts for another, and a verifier that ran another model or split has a different subject.
pub fn subject_digest(
    evaluation_id: u64,
    model_sha256: &[u8],
    onnx_cid: &str,
    split_plaintext_sha256: &[u8],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"neurodata/evaluation/v1\0")
        .chain_update(evaluation_id.to_be_bytes())
        .chain_update(model_sha256)
        .chain_update(onnx_cid.as_bytes())
        .chain_update(split_plaintext_sha256)
        .finalize()
        .into()
}

/// The committed hash of a validator's score: the evaluation, its subject, the validator's
/// address (so a copied commit cannot be opened by the copier), whether it could score, the
/// SHA-256 of the score JSON and the salt.
pub fn commitment(
    evaluation_id: u64,
    subject_digest: &[u8],
    validator: &[u8],
    matches: bool,
    score_digest: &[u8],
    salt: &[u8],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"neurodata/evaluation-attest/v1\0")
        .chain_update(evaluation_id.to_be_bytes())
        .chain_update(subject_digest)
        .chain_update(validator)
        .chain_update([u8::from(matches)])
        .chain_update(score_digest)
        .chain_update(salt)
        .finalize()
        .into()
}

/// Whether a reveal's `segments_digest` is the SHA-256 of its score JSON.
pub fn digest_opens_score(r: &pb::Reveal) -> bool {
    Sha256::digest(r.score_json.as_bytes()).as_slice() == r.segments_digest.as_slice()
}

/// A verifier's score of an evaluation, as the local abci-app reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluationVerdict {
    /// The evaluation.
    pub evaluation_id: u64,
    /// The subject digest the score is about.
    pub subject_digest: [u8; 32],
    /// The model loaded, matched its hashes and ran on the split.
    pub matches: bool,
    /// The canonical score JSON.
    pub score_json: String,
    /// Random, kept secret until the reveal.
    pub salt: [u8; 32],
}

/// The vote on evaluation `v.evaluation_id` that validator `me` owes now, if any: a commit
/// while commits are open and it has none, a reveal once reveals are open.
pub fn vote<S: StateRead>(
    state: &S,
    me: &[u8; 20],
    v: &EvaluationVerdict,
) -> Result<Option<pb::JobVote>, TxError> {
    if v.score_json.len() > MAX_SCORE_BYTES {
        return Ok(None);
    }
    let Some(e) = state.evaluation(v.evaluation_id)? else {
        return Ok(None);
    };
    let Some(att) = &e.attestation else {
        return Ok(None);
    };
    if status(&e) != pb::EvaluationStatus::Attesting || e.subject_digest != v.subject_digest {
        return Ok(None);
    }
    let Some(slot) = att.attestors.iter().find(|a| a.validator == me) else {
        return Ok(None);
    };
    let score_digest = Sha256::digest(v.score_json.as_bytes());
    let step = if !att.revealing && slot.commit.is_empty() {
        pb::job_vote::Step::Commit(
            commitment(
                e.id,
                &v.subject_digest,
                me,
                v.matches,
                &score_digest,
                &v.salt,
            )
            .to_vec(),
        )
    } else if att.revealing && !slot.commit.is_empty() && !slot.revealed {
        pb::job_vote::Step::Reveal(pb::Reveal {
            matches: v.matches,
            segments_digest: score_digest.to_vec(),
            salt: v.salt.to_vec(),
            score_json: v.score_json.clone(),
        })
    } else {
        return Ok(None);
    };
    Ok(Some(pb::JobVote {
        job_id: 0,
        step: Some(step),
        evaluation_id: e.id,
    }))
}

/// Records validator `validator`'s vote on evaluation `id` (from a block's injected
/// extensions). A vote that does not fit the phase changes nothing; a reveal that does not open
/// its commit, or whose `segments_digest` is not the SHA-256 of its score, is recorded as
/// refused.
pub fn apply_vote<S: StateWrite>(
    state: &mut S,
    validator: &[u8; 20],
    id: u64,
    v: &pb::JobVote,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    let Some(mut e) = state.evaluation(id)? else {
        return Ok(());
    };
    if status(&e) != pb::EvaluationStatus::Attesting {
        return Ok(());
    }
    let subject = e.subject_digest.clone();
    let (Some(att), Some(step)) = (e.attestation.as_mut(), v.step.as_ref()) else {
        return Ok(());
    };
    let expected = |r: &pb::Reveal| {
        if r.score_json.len() > MAX_SCORE_BYTES {
            return Err(format!(
                "the revealed score is {} bytes; the limit is {MAX_SCORE_BYTES}",
                r.score_json.len()
            ));
        }
        if !digest_opens_score(r) {
            return Err("the reveal's segments_digest is not the SHA-256 of its score".into());
        }
        Ok(commitment(
            id,
            &subject,
            validator,
            r.matches,
            &r.segments_digest,
            &r.salt,
        ))
    };
    let what = match record_step(att, validator, step, ctx.height, expected) {
        None => return Ok(()),
        Some(Recorded::Commit) => "commit".to_owned(),
        Some(Recorded::Reveal { index, matches }) => {
            // Revealed scores stay in attestor order: this one goes after those of the
            // attestors before it that revealed.
            let at = att.attestors[..index].iter().filter(|a| a.revealed).count();
            let score = match step {
                pb::job_vote::Step::Reveal(r) => r.score_json.clone(),
                pb::job_vote::Step::Commit(_) => String::new(),
            };
            let what = if matches {
                format!("reveal: score {score}")
            } else {
                "reveal: could not score".to_owned()
            };
            let at = at.min(e.revealed_scores.len());
            e.revealed_scores.insert(at, score);
            what
        }
        Some(Recorded::Refused { reason }) => {
            count_bad_reveal(state, validator)?;
            format!("refused: {reason}")
        }
    };
    state.put_evaluation(&e)?;
    state.emit(
        Event::new(EventKind::EvaluationAttested)
            .attr(attr::EVALUATION, id)
            .attr(attr::VALIDATOR, hex::encode(validator))
            .attr(attr::STEP, what),
    );
    Ok(())
}

/// Ask validators to score a model version on a dataset's hidden evaluation split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEvaluation {
    /// The final model version.
    pub model_version: u64,
    /// The public dataset whose split scores it.
    pub dataset_id: u64,
}

impl TryFrom<pb::RequestEvaluation> for RequestEvaluation {
    type Error = TxError;
    fn try_from(m: pb::RequestEvaluation) -> Result<Self, TxError> {
        if m.model_version == 0 {
            return Err(invalid(
                "request_evaluation.model_version",
                "model version ids start at 1",
            ));
        }
        if m.dataset_id == 0 {
            return Err(invalid(
                "request_evaluation.dataset_id",
                "dataset ids start at 1",
            ));
        }
        Ok(RequestEvaluation {
            model_version: m.model_version,
            dataset_id: m.dataset_id,
        })
    }
}

impl RequestEvaluation {
    /// Checks the model version, the dataset and its split, then opens the evaluation and the
    /// attestors' key requests.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mv = state
            .model_version(self.model_version)?
            .ok_or(EvaluationError::UnknownModelVersion(self.model_version))?;
        // Scoring hands the model's plaintext to every attesting validator's operator (they run
        // it): the owner's choice, not any member's, and each retry of a failed one costs the
        // validators a download and a run, so only the owner's org pays for it.
        if signer.identity.org_id != mv.owner_org {
            return Err(EvaluationError::NotOwnerOrg {
                model_version: mv.id,
                owner_org: mv.owner_org,
            }
            .into());
        }
        let dataset = existing_dataset(state, self.dataset_id)?;
        require_public(&dataset)?;
        if !mv.dataset_ids.contains(&dataset.id) {
            return Err(EvaluationError::NotTrainedOn {
                model_version: mv.id,
                dataset: dataset.id,
                trained_on: mv
                    .dataset_ids
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .into());
        }
        if dataset.evaluation_split == 0 {
            return Err(EvaluationError::NoSplit(dataset.id).into());
        }
        let split =
            state
                .dataset(dataset.evaluation_split)?
                .ok_or_else(|| StateError::Corrupt {
                    key: crate::market::state_key::dataset(dataset.id),
                    reason: format!(
                        "names evaluation split {}, which does not exist",
                        dataset.evaluation_split
                    ),
                })?;
        if mv.dataset_ids.contains(&split.id) {
            return Err(EvaluationError::TrainedOnSplit {
                model_version: mv.id,
                dataset: dataset.id,
                split: split.id,
            }
            .into());
        }
        if let Some(earlier) = state.evaluation_of(mv.id, split.id)? {
            let s = state
                .evaluation(earlier)?
                .map(|e| status(&e))
                .unwrap_or(pb::EvaluationStatus::Unspecified);
            if matches!(
                s,
                pb::EvaluationStatus::Attesting | pb::EvaluationStatus::Scored
            ) {
                return Err(EvaluationError::AlreadyEvaluated {
                    model_version: mv.id,
                    dataset: dataset.id,
                    evaluation: earlier,
                    status: status_name(s),
                }
                .into());
            }
        }
        // Nobody could deliver the split's key to the validators.
        if !state.org_is_active(&split.provider_org)? {
            return Err(crate::escrow::EscrowError::ProviderOrgInactive {
                dataset: split.id,
                org: split.provider_org.clone(),
            }
            .into());
        }
        let validators: Vec<pb::Validator> = state
            .active_validators()?
            .into_iter()
            .filter(|v| v.power > 0)
            .collect();
        let mut attestors: Vec<pb::Attestor> = validators
            .iter()
            .map(|v| pb::Attestor {
                validator: validator_address(&v.pub_key).to_vec(),
                power: v.power,
                org_id: v.org_id.clone(),
                ..Default::default()
            })
            .collect();
        if attestors.is_empty() {
            return Err(EvaluationError::NoAttestors.into());
        }
        attestors.sort_by(|a, b| a.validator.cmp(&b.validator));

        let id = state.next_evaluation_id()?;
        state.put_next_evaluation_id(id + 1);
        let subject = subject_digest(id, &mv.model_sha256, &mv.onnx_cid, &split.plaintext_sha256);
        let commit_until = ctx.height + EVAL_COMMIT_BLOCKS;
        let evaluation = pb::Evaluation {
            id,
            model_version: mv.id,
            dataset_id: dataset.id,
            split_id: split.id,
            requester: signer.identity.fingerprint.clone(),
            requester_org: signer.identity.org_id.clone(),
            status: pb::EvaluationStatus::Attesting as i32,
            requested_height: ctx.height,
            subject_digest: subject.to_vec(),
            attestation: Some(pb::ResultAttestation {
                commit_until,
                reveal_until: commit_until + EVAL_REVEAL_BLOCKS,
                attestors,
                ..Default::default()
            }),
            ..Default::default()
        };
        state.put_evaluation(&evaluation)?;
        // The split's key, for whoever runs each attestor's verifier (its first operator, the
        // account validators are paid to).
        for v in &validators {
            let Some(operator) = v.operators.first().and_then(|o| Address::from_slice(o)) else {
                continue;
            };
            crate::escrow::open_evaluation_key_request(
                state, split.id, operator, &v.org_id, id, ctx,
            )?;
        }
        state.emit(
            Event::new(EventKind::EvaluationRequested)
                .attr(attr::EVALUATION, id)
                .attr(attr::MODEL, mv.id)
                .attr(attr::DATASET, dataset.id)
                .attr(attr::SPLIT, split.id)
                .attr(attr::ORG, &signer.identity.org_id)
                .attr(attr::DUE, commit_until),
        );
        Ok(())
    }
}

/// Whether the member `fingerprint` operates one of `validators` that is among the
/// evaluation's attestors: who may fetch the model's artifacts to score it.
pub fn operates_attestor(
    evaluation: &pb::Evaluation,
    validators: &[pb::Validator],
    fingerprint: &[u8],
) -> bool {
    let Some(att) = &evaluation.attestation else {
        return false;
    };
    validators.iter().any(|v| {
        v.operators.iter().any(|o| o == fingerprint) && {
            let address = validator_address(&v.pub_key);
            att.attestors.iter().any(|a| a.validator == address)
        }
    })
}

/// A score as the leaderboard reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedScore {
    /// `accuracy` or `rmse`.
    pub metric: String,
    /// The value, as its JSON text.
    pub value: String,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
}

/// Reads the leaderboard's facts from a canonical score JSON
/// (`{"higher_is_better":true,"metric":"accuracy","rows":168,"value":0.845...}`): `metric`
/// (`accuracy` or `rmse`), `value` (a finite number, kept as its JSON text) and
/// `higher_is_better`. Other fields are allowed and ignored.
pub fn parse_score(json: &str) -> Result<ParsedScore, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let metric = obj
        .get("metric")
        .and_then(serde_json::Value::as_str)
        .ok_or("no \"metric\" string")?;
    if !matches!(metric, "accuracy" | "rmse") {
        return Err(format!(
            "metric {metric:?} is neither \"accuracy\" nor \"rmse\""
        ));
    }
    let value = match obj.get("value") {
        Some(serde_json::Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            n.to_string()
        }
        _ => return Err("no finite number \"value\"".into()),
    };
    let higher_is_better = obj
        .get("higher_is_better")
        .and_then(serde_json::Value::as_bool)
        .ok_or("no \"higher_is_better\" bool")?;
    // The direction is the metric's, never the score's word: a leaderboard sorts by it, and
    // one group with both directions would have no order.
    if higher_is_better != (metric == "accuracy") {
        return Err(format!(
            "higher_is_better {higher_is_better} is wrong for metric {metric:?}"
        ));
    }
    Ok(ParsedScore {
        metric: metric.to_owned(),
        value,
        higher_is_better,
    })
}

/// Power (as u128) of the attestors passing `f`.
fn power(att: &pb::ResultAttestation, f: impl Fn(&pb::Attestor) -> bool) -> u128 {
    att.attestors
        .iter()
        .filter(|a| f(a))
        .map(|a| u128::try_from(a.power).unwrap_or(0))
        .sum()
}

/// A revealed attestor that could score and whose reveal counted.
fn scored(a: &pb::Attestor) -> bool {
    a.revealed && a.matches && a.refused.is_empty()
}

/// Closes phases and settles every attesting evaluation that is due, by reveal deadline, then
/// id.
pub fn end_block<S: StateWrite>(state: &mut S, block: &BlockCtx) -> Result<(), TxError> {
    for id in state.attesting_evaluations()? {
        let Some(mut e) = state.evaluation(id)? else {
            continue;
        };
        if status(&e) != pb::EvaluationStatus::Attesting {
            continue;
        }
        let Some(mut att) = e.attestation.clone() else {
            continue;
        };
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
                att.reveal_until = att.reveal_until.min(block.height + EVAL_REVEAL_BLOCKS);
            }
            if e.attestation.as_ref() != Some(&att) {
                e.attestation = Some(att);
                state.put_evaluation(&e)?;
            }
            continue;
        }
        // Power behind each score, by its SHA-256; the strongest wins, ties to the lowest digest
        // (neither of two tied scores can hold more than 2/3, so a tie always fails).
        let mut groups = std::collections::BTreeMap::<&[u8], u128>::new();
        for a in att.attestors.iter().filter(|a| scored(a)) {
            *groups.entry(a.segments_digest.as_slice()).or_default() +=
                u128::try_from(a.power).unwrap_or(0);
        }
        let best = groups
            .iter()
            .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
            .map(|(d, p)| (d.to_vec(), *p));
        let decided = best.as_ref().is_some_and(|(_, p)| p * 3 > total * 2);
        let pending = att
            .attestors
            .iter()
            .any(|a| !a.commit.is_empty() && !a.revealed && a.refused.is_empty());
        if decided || !pending || block.height >= att.reveal_until {
            settle(state, &mut e, best, decided, total, block.height)?;
        }
    }
    Ok(())
}

/// Ends an evaluation: scored with the strongest score (`best`: its digest and power) when it
/// is `decided` (more than 2/3 of the `total` power), else failed; records each attestor's
/// part.
fn settle<S: StateWrite>(
    state: &mut S,
    e: &mut pb::Evaluation,
    best: Option<(Vec<u8>, u128)>,
    decided: bool,
    total: u128,
    height: u64,
) -> Result<(), TxError> {
    let att = e.attestation.clone().unwrap_or_default();
    let winner = best.clone().filter(|_| decided);
    let outcome = match &winner {
        Some((digest, _)) => {
            // The winners' score text: revealed scores are in attestor order, one per
            // attestor that revealed.
            let text = att
                .attestors
                .iter()
                .filter(|a| a.revealed)
                .zip(&e.revealed_scores)
                .find(|(a, _)| scored(a) && a.segments_digest == *digest)
                .map(|(_, s)| s.clone());
            match text {
                Some(text) => parse_score(&text)
                    .map(|p| (text, p))
                    .map_err(|why| format!("score does not parse: {why}")),
                None => Err("the agreed score's text is missing".into()),
            }
        }
        None => {
            let revealed = att.attestors.iter().filter(|a| scored(a)).count();
            let best = best.map(|(_, p)| p).unwrap_or(0);
            Err(format!(
                "no score reached more than 2/3 of the attestors' power ({total}): the most agreed on had {best}; {revealed} of {} attestors revealed a score",
                att.attestors.len()
            ))
        }
    };
    let winning_digest = winner.as_ref().map(|(d, _)| d.as_slice());
    for a in &att.attestors {
        if !a.refused.is_empty() {
            continue; // counted as a bad reveal when it happened
        }
        let mut stats = state.attestor_stats(&a.validator)?;
        match (a.revealed, outcome.is_ok()) {
            (false, _) => stats.no_reveal += 1,
            (true, false) => continue,
            (true, true) if scored(a) && Some(a.segments_digest.as_slice()) == winning_digest => {
                stats.agreed += 1
            }
            (true, true) => stats.outvoted += 1,
        }
        state.put_attestor_stats(&stats);
    }
    e.finished_height = height;
    match outcome {
        Ok((text, parsed)) => {
            e.status = pb::EvaluationStatus::Scored as i32;
            e.score_json = text;
            e.metric = parsed.metric;
            e.score = parsed.value;
            e.higher_is_better = parsed.higher_is_better;
            state.put_evaluation(e)?;
            state.emit(
                Event::new(EventKind::EvaluationScored)
                    .attr(attr::EVALUATION, e.id)
                    .attr(attr::MODEL, e.model_version)
                    .attr(attr::DATASET, e.dataset_id)
                    .attr(attr::METRIC, &e.metric)
                    .attr(attr::SCORE, &e.score),
            );
        }
        Err(failure) => {
            e.status = pb::EvaluationStatus::Failed as i32;
            e.failure = failure;
            state.put_evaluation(e)?;
            state.emit(
                Event::new(EventKind::EvaluationFailed)
                    .attr(attr::EVALUATION, e.id)
                    .attr(attr::MODEL, e.model_version)
                    .attr(attr::DATASET, e.dataset_id)
                    .attr(attr::REASON, &e.failure),
            );
        }
    }
    Ok(())
}
