//! Evaluations on an in-memory state: requests and their refusals, the commit–reveal of scores
//! in vote extensions (copied commits, reveals that do not open their score, late and early
//! votes), settling by power, the leaderboard built from the scores, and hidden splits refused
//! where only listings go. (The path from signed vote extensions to `apply_votes` is the one
//! jobs use, tested with the ABCI adapter.)
#![allow(clippy::unwrap_used)]

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::evaluation::{
    EVAL_COMMIT_BLOCKS, EvaluationError, EvaluationVerdict, MAX_SCORE_BYTES, RequestEvaluation,
    commitment, parse_score, status,
};
use super::{EvaluationRead, EvaluationWrite, leaderboard};
use crate::TxError;
use crate::address::Address;
use crate::app::BlockCtx;
use crate::escrow::EscrowRead;
use crate::governance::{GovernanceWrite, Params};
use crate::market::{MarketError, MarketRead, MarketWrite, RegisterEvalSplit};
use crate::membership::{MembershipWrite, Role, Signer};
use crate::state::{MemoryState, StateDelta};
use crate::training::attest::{MAX_EXTENSION_BYTES, validator_address};
use crate::training::{
    CastVote, TrainingRead, TrainingWrite, apply_votes, check_extension, votes_to_extend,
};
use crate::tx::ExecCtx;

const PROVIDER: Address = Address([0xa1; 32]);
const OWNER: Address = Address([0xa2; 32]);
const ACCURACY_90: &str = r#"{"higher_is_better":true,"metric":"accuracy","rows":20,"value":0.9}"#;
const ACCURACY_80: &str = r#"{"higher_is_better":true,"metric":"accuracy","rows":20,"value":0.8}"#;

fn operator(i: u8) -> Address {
    Address([0x10 + i; 32])
}

fn key(i: u8) -> [u8; 32] {
    [0xc0 + i; 32]
}

fn val(i: u8) -> [u8; 20] {
    validator_address(&key(i))
}

fn col(name: &str, t: pb::ColumnType) -> pb::Column {
    pb::Column {
        name: name.into(),
        r#type: t as i32,
    }
}

fn schema() -> pb::Schema {
    pb::Schema {
        columns: vec![
            col("age", pb::ColumnType::Int),
            col("chol", pb::ColumnType::Float),
            col("target", pb::ColumnType::Bool),
        ],
    }
}

fn signer(fingerprint: Address, org: &str, role: Role) -> Signer {
    Signer {
        identity: pb::Identity {
            fingerprint: fingerprint.0.to_vec(),
            org_id: org.into(),
            ..Default::default()
        },
        role,
        is_new: false,
    }
}

fn requester() -> Signer {
    signer(Address([0xb0; 32]), "healthtech", Role::Buyer)
}

struct World {
    state: MemoryState,
    height: u64,
}

impl World {
    /// Four validators of power 10 (org0..org3, operated by `operator(i)`); medlab's dataset 1
    /// with its hidden split (dataset 2) and dataset 3 without one; healthtech's model versions
    /// 1 and 2 (trained on dataset 1 to predict `target`), 3 and 4 (on dataset 1, predicting
    /// `chol`), 5 (on dataset 3 only) and 6 (on dataset 1 and its split).
    fn new() -> World {
        let mut state = MemoryState::default();
        let mut d = StateDelta::new(&state);
        for (i, org) in [
            "org0",
            "org1",
            "org2",
            "org3",
            "medlab",
            "healthtech",
            "datacorp",
        ]
        .iter()
        .enumerate()
        {
            d.put_org(
                &pb::Org {
                    org_id: (*org).into(),
                    status: pb::OrgStatus::Active as i32,
                    ..Default::default()
                },
                &[i as u8; 32],
            );
        }
        for i in 0..4u8 {
            d.put_validator(
                &key(i),
                &pb::Validator {
                    pub_key: key(i).to_vec(),
                    power: 10,
                    org_id: format!("org{i}"),
                    name: format!("v{i}"),
                    operators: vec![operator(i).0.to_vec()],
                },
            );
        }
        for id in [1, 3] {
            d.put_dataset(&pb::Dataset {
                id,
                provider: PROVIDER.0.to_vec(),
                provider_org: "medlab".into(),
                cid: format!("bafk-{id}"),
                key_commitment: vec![id as u8; 32],
                schema: Some(schema()),
                price: "100".into(),
                license: "CC-BY-4.0".into(),
                title: "heart".into(),
                status: pb::DatasetStatus::Listed as i32,
                ..Default::default()
            });
        }
        d.put_next_dataset_id(4);
        let spec = |target: &str| {
            serde_json::json!({
                "schema": {"columns": [], "target": target},
                "model": {"algorithm": "mlp"}
            })
            .to_string()
        };
        let models: [(u64, &str, Vec<u64>); 6] = [
            (1, "target", vec![1]),
            (2, "target", vec![1, 3]),
            (3, "chol", vec![1]),
            (4, "chol", vec![1]),
            (5, "target", vec![3]),
            (6, "target", vec![1, 4]),
        ];
        for (id, target, datasets) in models {
            d.put_job(&pb::Job {
                id,
                submitter: OWNER.0.to_vec(),
                submitter_org: "healthtech".into(),
                dataset_ids: datasets.clone(),
                spec_json: spec(target),
                status: pb::JobStatus::Final as i32,
                worker_org: "gpucloud".into(),
                model_version: id,
                ..Default::default()
            });
            d.put_model_version(&pb::ModelVersion {
                id,
                job_id: id,
                model_sha256: vec![id as u8; 32],
                dataset_ids: datasets,
                onnx_cid: format!("bafk-onnx-{id}"),
                owner: OWNER.0.to_vec(),
                owner_org: "healthtech".into(),
                algorithm: "mlp".into(),
                ..Default::default()
            });
        }
        state.apply(d.into_changes());
        let mut w = World { state, height: 10 };
        let split = RegisterEvalSplit::try_from(pb::RegisterEvalSplit {
            dataset_id: 1,
            cid: neurodata_crypto::cid::Cid::of(b"split").to_string(),
            plaintext_sha256: vec![0x5a; 32],
            key_commitment: vec![0x5b; 32],
            size: 100,
            ciphertext_size: 140,
            rows: 20,
            schema: Some(schema()),
            format: pb::DataFormat::Csv as i32,
            location: "https://gw.medlab.example".into(),
        })
        .unwrap();
        let mut d = StateDelta::new(&w.state);
        split
            .check_and_execute(
                &mut d,
                &signer(PROVIDER, "medlab", Role::Provider),
                &w.exec(),
            )
            .unwrap();
        w.state.apply(d.into_changes());
        assert_eq!(w.state.dataset(1).unwrap().unwrap().evaluation_split, 4);
        w
    }

    fn block_ctx(&self) -> BlockCtx {
        BlockCtx {
            chain_id: "t".into(),
            height: self.height,
            time: 1_000 + self.height as i64,
            hash: [self.height as u8; 32],
            params: Params::default(),
        }
    }

    fn exec(&self) -> ExecCtx {
        ExecCtx {
            height: self.height,
            time: 1_000 + self.height as i64,
            params: Params::default(),
        }
    }

    /// Runs `f` as a tx in the next block; a refused tx must have written nothing.
    fn tx(
        &mut self,
        f: impl FnOnce(&mut StateDelta<&MemoryState>, &ExecCtx) -> Result<(), TxError>,
    ) -> Result<(), TxError> {
        self.height += 1;
        let exec = self.exec();
        let mut d = StateDelta::new(&self.state);
        let r = f(&mut d, &exec);
        let changes = d.into_changes();
        match r {
            Ok(()) => self.state.apply(changes),
            Err(_) => assert!(
                changes.writes.is_empty() && changes.events.is_empty(),
                "a refused tx wrote {:?}",
                changes.writes.keys().collect::<Vec<_>>()
            ),
        }
        r
    }

    fn request(&mut self, model_version: u64, dataset_id: u64) -> Result<(), TxError> {
        let m = RequestEvaluation::try_from(pb::RequestEvaluation {
            model_version,
            dataset_id,
        })?;
        self.tx(|d, exec| m.check_and_execute(d, &requester(), exec))
    }

    /// A block carrying `cast` as its injected votes, then the end-of-block work.
    fn block(&mut self, cast: &[CastVote]) {
        self.height += 1;
        let block = self.block_ctx();
        let exec = self.exec();
        let mut d = StateDelta::new(&self.state);
        apply_votes(&mut d, cast, &exec).unwrap();
        crate::app::end_block(&mut d, &block).unwrap();
        let changes = d.into_changes();
        self.state.apply(changes);
    }

    fn evaluation(&self, id: u64) -> pb::Evaluation {
        self.state.evaluation(id).unwrap().unwrap()
    }

    fn att(&self, id: u64) -> pb::ResultAttestation {
        self.evaluation(id).attestation.unwrap()
    }

    fn verdict(&self, id: u64, i: u8, score: &str) -> EvaluationVerdict {
        EvaluationVerdict {
            evaluation_id: id,
            subject_digest: self.evaluation(id).subject_digest.try_into().unwrap(),
            matches: true,
            score_json: score.into(),
            salt: [0x50 + i; 32],
        }
    }

    /// What validator `i`'s abci-app would extend with now, scoring `score`.
    fn extend(&self, id: u64, i: u8, score: &str) -> CastVote {
        CastVote {
            validator: val(i),
            votes: votes_to_extend(&self.state, &val(i), &[], &[self.verdict(id, i, score)])
                .unwrap(),
        }
    }

    /// Commits, waits for the reveal phase, reveals, and runs blocks until it settles.
    fn attest(&mut self, id: u64, scores: &[(u8, &str)]) {
        let commits: Vec<CastVote> = scores.iter().map(|(i, s)| self.extend(id, *i, s)).collect();
        self.block(&commits);
        while !self.att(id).revealing {
            self.block(&[]);
        }
        let reveals: Vec<CastVote> = scores.iter().map(|(i, s)| self.extend(id, *i, s)).collect();
        self.block(&reveals);
        while status(&self.evaluation(id)) == pb::EvaluationStatus::Attesting {
            self.block(&[]);
        }
    }

    /// Requests an evaluation of `model_version` on dataset 1 and has every validator score it
    /// `score`; returns its id.
    fn score(&mut self, model_version: u64, score: &str) -> u64 {
        self.request(model_version, 1).unwrap();
        let id = self.state.next_evaluation_id().unwrap() - 1;
        self.attest(id, &[(0, score), (1, score), (2, score), (3, score)]);
        id
    }
}

fn accuracy(value: &str) -> String {
    format!(r#"{{"higher_is_better":true,"metric":"accuracy","rows":20,"value":{value}}}"#)
}

fn rmse(value: &str) -> String {
    format!(r#"{{"higher_is_better":false,"metric":"rmse","rows":20,"value":{value}}}"#)
}

#[test]
fn a_request_fixes_the_attestors_the_subject_and_opens_the_split_keys() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    let e = w.evaluation(1);
    assert_eq!(status(&e), pb::EvaluationStatus::Attesting);
    assert_eq!((e.model_version, e.dataset_id, e.split_id), (1, 1, 4));
    assert_eq!(e.requester_org, "healthtech");
    let att = e.attestation.unwrap();
    assert_eq!(att.attestors.len(), 4);
    assert_eq!(att.commit_until, w.height + EVAL_COMMIT_BLOCKS);
    assert!(!att.revealing);
    let split = w.state.dataset(4).unwrap().unwrap();
    assert_eq!(
        e.subject_digest,
        super::evaluation::subject_digest(1, &[1; 32], "bafk-onnx-1", &split.plaintext_sha256)
    );
    for i in 0..4 {
        let purchase = w.state.live_purchase(&operator(i), 4).unwrap();
        let purchase = w.state.purchase(purchase.unwrap()).unwrap().unwrap();
        assert_eq!(purchase.kind, pb::PurchaseKind::Evaluation as i32);
        assert_eq!(purchase.evaluation, 1);
    }
}

#[test]
fn scores_agreed_by_more_than_two_thirds_of_the_power_put_the_model_on_the_board() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    // Validator 3 is down for the whole evaluation.
    w.attest(1, &[(0, ACCURACY_90), (1, ACCURACY_90), (2, ACCURACY_90)]);
    let e = w.evaluation(1);
    assert_eq!(status(&e), pb::EvaluationStatus::Scored, "{}", e.failure);
    assert_eq!(e.score_json, ACCURACY_90);
    assert_eq!((e.metric.as_str(), e.score.as_str()), ("accuracy", "0.9"));
    assert!(e.higher_is_better);
    assert_eq!(e.revealed_scores, vec![ACCURACY_90; 3]);
    assert_eq!(w.state.attestor_stats(&val(0)).unwrap().agreed, 1);
    assert_eq!(w.state.attestor_stats(&val(3)).unwrap().no_reveal, 1);
    assert!(w.state.attesting_evaluations().unwrap().is_empty());
    // Scored once: asking again is refused, and nothing changes.
    assert_eq!(
        w.request(1, 1),
        Err(EvaluationError::AlreadyEvaluated {
            model_version: 1,
            dataset: 1,
            evaluation: 1,
            status: "scored"
        }
        .into())
    );
}

#[test]
fn scores_split_between_validators_fail_and_may_be_asked_again() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    w.attest(
        1,
        &[
            (0, ACCURACY_90),
            (1, ACCURACY_90),
            (2, ACCURACY_80),
            (3, ACCURACY_80),
        ],
    );
    let e = w.evaluation(1);
    assert_eq!(status(&e), pb::EvaluationStatus::Failed);
    assert!(e.failure.contains("2/3"), "{}", e.failure);
    assert!(e.score.is_empty() && e.score_json.is_empty());
    assert_eq!(e.revealed_scores.len(), 4);
    assert!(leaderboard(&w.state, 1).unwrap().entries.is_empty());
    w.request(1, 1).unwrap();
    assert_eq!(status(&w.evaluation(2)), pb::EvaluationStatus::Attesting);
}

#[test]
fn an_agreed_score_that_does_not_parse_fails() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    let odd = r#"{"metric":"f1","value":0.5,"higher_is_better":true}"#;
    w.attest(1, &[(0, odd), (1, odd), (2, odd), (3, odd)]);
    let e = w.evaluation(1);
    assert_eq!(status(&e), pb::EvaluationStatus::Failed);
    assert!(
        e.failure.starts_with("score does not parse"),
        "{}",
        e.failure
    );
}

#[test]
fn a_copied_commit_cannot_be_revealed_and_counts_as_no_vote() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    let honest = w.extend(1, 0, ACCURACY_90);
    let copied = CastVote {
        validator: val(1),
        votes: honest.votes.clone(),
    };
    w.block(&[honest, copied, w.extend(1, 2, ACCURACY_90)]);
    while !w.att(1).revealing {
        w.block(&[]);
    }
    // The copier reveals the original's score and salt once they are public.
    let reveal0 = w.extend(1, 0, ACCURACY_90);
    let copy_reveal = CastVote {
        validator: val(1),
        votes: reveal0.votes.clone(),
    };
    w.block(&[reveal0, copy_reveal]);
    let att = w.att(1);
    let copier = att
        .attestors
        .iter()
        .find(|a| a.validator == val(1))
        .unwrap();
    assert!(!copier.revealed);
    assert!(copier.refused.contains("copy"), "{}", copier.refused);
    assert_eq!(w.state.attestor_stats(&val(1)).unwrap().bad_reveal, 1);
    // Validators 0 and 2 alone hold 20 of 40: not enough.
    w.block(&[w.extend(1, 2, ACCURACY_90)]);
    while status(&w.evaluation(1)) == pb::EvaluationStatus::Attesting {
        w.block(&[]);
    }
    assert_eq!(status(&w.evaluation(1)), pb::EvaluationStatus::Failed);
}

#[test]
fn a_reveal_whose_digest_is_not_the_sha256_of_its_score_is_refused() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    w.block(&[w.extend(1, 0, ACCURACY_90), w.extend(1, 1, ACCURACY_90)]);
    while !w.att(1).revealing {
        w.block(&[]);
    }
    // Validator 0 reveals its committed digest and salt but another score.
    let mut bent = w.extend(1, 0, ACCURACY_90);
    let Some(pb::job_vote::Step::Reveal(r)) = bent.votes[0].step.as_mut() else {
        panic!("expected a reveal");
    };
    r.score_json = ACCURACY_80.into();
    // Its validator's peers refuse such an extension outright...
    let bytes = pb::VoteExtension {
        votes: bent.votes.clone(),
    }
    .encode_to_vec();
    let refused = check_extension(&bytes).unwrap_err().to_string();
    assert!(
        refused.contains("not the SHA-256 of its score"),
        "{refused}"
    );
    // ...and should one reach the state, it counts as a reveal that does not open its commit.
    w.block(&[bent]);
    let slot = w
        .att(1)
        .attestors
        .into_iter()
        .find(|a| a.validator == val(0))
        .unwrap();
    assert!(!slot.revealed);
    assert!(slot.refused.contains("SHA-256"), "{}", slot.refused);
    assert!(w.evaluation(1).revealed_scores.is_empty());
}

#[test]
fn early_late_and_foreign_votes_change_nothing() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    // A reveal while commits are open.
    let score_digest = Sha256::digest(ACCURACY_90.as_bytes()).to_vec();
    let early = CastVote {
        validator: val(0),
        votes: vec![pb::JobVote {
            job_id: 0,
            evaluation_id: 1,
            step: Some(pb::job_vote::Step::Reveal(pb::Reveal {
                matches: true,
                segments_digest: score_digest,
                salt: vec![0x50; 32],
                score_json: ACCURACY_90.into(),
            })),
        }],
    };
    let before = w.evaluation(1);
    w.block(&[early]);
    assert_eq!(w.evaluation(1), before);
    // A validator outside the attestors.
    let stranger = CastVote {
        validator: validator_address(&[0xee; 32]),
        votes: w.extend(1, 0, ACCURACY_90).votes,
    };
    w.block(&[stranger]);
    assert_eq!(w.evaluation(1), before);
    // Three commit; the fourth's commit comes after the commit phase closed.
    let late = w.extend(1, 3, ACCURACY_90);
    w.block(&[
        w.extend(1, 0, ACCURACY_90),
        w.extend(1, 1, ACCURACY_90),
        w.extend(1, 2, ACCURACY_90),
    ]);
    while !w.att(1).revealing {
        w.block(&[]);
    }
    w.block(&[late]);
    let slot = w
        .att(1)
        .attestors
        .into_iter()
        .find(|a| a.validator == val(3))
        .unwrap();
    assert!(slot.commit.is_empty(), "a late commit is not recorded");
    // Settled: a reveal after that changes nothing either.
    let reveals = [0, 1, 2].map(|i| w.extend(1, i, ACCURACY_90));
    let late_reveal = reveals[2].clone();
    w.block(&reveals[..2]);
    w.block(&[]);
    // Validators 0 and 1 hold 20 of 40; validator 2 is pending until the reveal deadline.
    assert_eq!(status(&w.evaluation(1)), pb::EvaluationStatus::Attesting);
    while status(&w.evaluation(1)) == pb::EvaluationStatus::Attesting {
        w.block(&[]);
    }
    let settled = w.evaluation(1);
    assert_eq!(status(&settled), pb::EvaluationStatus::Failed);
    w.block(&[late_reveal]);
    assert_eq!(w.evaluation(1), settled);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut w = World::new();
    w.request(1, 1).unwrap();
    let cases: Vec<(u64, u64, TxError)> = vec![
        (99, 1, EvaluationError::UnknownModelVersion(99).into()),
        (1, 99, MarketError::UnknownDataset(99).into()),
        (
            5,
            1,
            EvaluationError::NotTrainedOn {
                model_version: 5,
                dataset: 1,
                trained_on: "3".into(),
            }
            .into(),
        ),
        (5, 3, EvaluationError::NoSplit(3).into()),
        (1, 4, MarketError::HiddenSplit(4).into()),
        (
            6,
            1,
            EvaluationError::TrainedOnSplit {
                model_version: 6,
                dataset: 1,
                split: 4,
            }
            .into(),
        ),
        (
            1,
            1,
            EvaluationError::AlreadyEvaluated {
                model_version: 1,
                dataset: 1,
                evaluation: 1,
                status: "attesting",
            }
            .into(),
        ),
    ];
    for (mv, dataset, expected) in cases {
        assert_eq!(
            w.request(mv, dataset),
            Err(expected),
            "model {mv}, dataset {dataset}"
        );
    }
    // Another org's member (here a validator's operator, who would get the model to run).
    let m = RequestEvaluation::try_from(pb::RequestEvaluation {
        model_version: 2,
        dataset_id: 1,
    })
    .unwrap();
    let operator0 = signer(operator(0), "org0", Role::Validator);
    assert_eq!(
        w.tx(|d, exec| m.check_and_execute(d, &operator0, exec)),
        Err(EvaluationError::NotOwnerOrg {
            model_version: 2,
            owner_org: "healthtech".into(),
        }
        .into())
    );
    assert_eq!(w.state.next_evaluation_id().unwrap(), 2);
    assert!(RequestEvaluation::try_from(pb::RequestEvaluation::default()).is_err());
}

#[test]
fn the_leaderboard_ranks_each_target_in_its_metrics_direction_with_lineage() {
    let mut w = World::new();
    let e1 = w.score(1, &accuracy("0.8"));
    let e2 = w.score(2, &accuracy("0.9"));
    let e3 = w.score(3, &rmse("2.5"));
    let e4 = w.score(4, &rmse("1.5"));
    let board = leaderboard(&w.state, 1).unwrap();
    assert_eq!((board.dataset_id, board.split_id), (1, 4));
    let rows: Vec<(&str, u32, u64, &str)> = board
        .entries
        .iter()
        .map(|e| (e.target.as_str(), e.rank, e.evaluation_id, e.score.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("chol", 1, e4, "1.5"),
            ("chol", 2, e3, "2.5"),
            ("target", 1, e2, "0.9"),
            ("target", 2, e1, "0.8"),
        ],
        "lower RMSE first, higher accuracy first, ranks per target"
    );
    let best = &board.entries[2];
    assert_eq!(best.model_version, 2);
    assert_eq!(best.lineage, vec![1, 3]);
    assert_eq!(best.owner_org, "healthtech");
    assert_eq!(best.trainer_org, "gpucloud");
    assert_eq!(best.algorithm, "mlp");
    assert_eq!(best.listing_id, 0);
    assert!(best.scored_height > 0);
    assert!(leaderboard(&w.state, 3).unwrap().entries.is_empty());
    assert!(leaderboard(&w.state, 99).unwrap().entries.is_empty());
}

#[test]
fn equal_scores_rank_the_earlier_evaluation_first() {
    let mut w = World::new();
    let first = w.score(2, &accuracy("0.9"));
    let second = w.score(1, &accuracy("0.9"));
    let board = leaderboard(&w.state, 1).unwrap();
    let order: Vec<(u32, u64)> = board
        .entries
        .iter()
        .map(|e| (e.rank, e.evaluation_id))
        .collect();
    assert_eq!(order, vec![(1, first), (2, second)]);
}

#[test]
fn a_hidden_split_is_not_validated() {
    let mut w = World::new();
    let operator0 = signer(operator(0), "org0", Role::Validator);
    let m = crate::escrow::RequestValidation::try_from(pb::RequestValidation {
        dataset_id: 4,
        model_listing_id: 0,
    })
    .unwrap();
    assert_eq!(
        w.tx(|d, exec| m.check_and_execute(d, &operator0, exec)),
        Err(MarketError::HiddenSplit(4).into())
    );
    let buy = crate::escrow::BuyDataset::try_from(pb::BuyDataset {
        dataset_id: 4,
        max_price: "0".into(),
    })
    .unwrap();
    assert_eq!(
        w.tx(|d, exec| buy.check_and_execute(d, &requester(), exec)),
        Err(MarketError::HiddenSplit(4).into())
    );
    let listed: Vec<u64> = w
        .state
        .datasets()
        .unwrap()
        .iter()
        .filter(|d| crate::market::matches_filter(d, &pb::DatasetFilter::default()))
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, vec![1, 3], "the split is not browsed");
}

#[test]
fn an_extension_with_many_scores_stays_under_its_byte_limit() {
    let mut w = World::new();
    // Sixteen evaluations in their reveal phase, each committed by validator 0.
    let frame = |pad: &str| {
        format!(r#"{{"higher_is_better":true,"metric":"accuracy","pad":"{pad}","value":0.5}}"#)
    };
    let long = frame(&"x".repeat(MAX_SCORE_BYTES - frame("").len()));
    assert_eq!(long.len(), MAX_SCORE_BYTES);
    let mut d = StateDelta::new(&w.state);
    let mut verdicts = Vec::new();
    for id in 1..=16u64 {
        let subject = [id as u8; 32];
        let salt = [7; 32];
        let digest = Sha256::digest(long.as_bytes());
        d.put_evaluation(&pb::Evaluation {
            id,
            model_version: 100 + id,
            split_id: 4,
            status: pb::EvaluationStatus::Attesting as i32,
            subject_digest: subject.to_vec(),
            attestation: Some(pb::ResultAttestation {
                revealing: true,
                reveal_until: 1_000,
                attestors: vec![pb::Attestor {
                    validator: val(0).to_vec(),
                    power: 10,
                    commit: commitment(id, &subject, &val(0), true, &digest, &salt).to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        verdicts.push(EvaluationVerdict {
            evaluation_id: id,
            subject_digest: subject,
            matches: true,
            score_json: long.clone(),
            salt,
        });
    }
    w.state.apply(d.into_changes());
    let votes = votes_to_extend(&w.state, &val(0), &[], &verdicts).unwrap();
    let bytes = pb::VoteExtension {
        votes: votes.clone(),
    }
    .encode_to_vec();
    assert!(bytes.len() <= MAX_EXTENSION_BYTES, "{} bytes", bytes.len());
    assert!(
        (1..16).contains(&votes.len()),
        "{} reveals fit; the rest wait",
        votes.len()
    );
    check_extension(&bytes).unwrap();
    // What was left out goes in a later extension, once these are recorded.
    w.block(&[CastVote {
        validator: val(0),
        votes: votes.clone(),
    }]);
    let next = votes_to_extend(&w.state, &val(0), &[], &verdicts).unwrap();
    assert!(!next.is_empty());
    assert!(
        next.iter()
            .all(|v| !votes.iter().any(|o| o.evaluation_id == v.evaluation_id))
    );
}

#[test]
fn extensions_carry_job_and_evaluation_votes_each_once() {
    let commit = |job_id, evaluation_id| pb::JobVote {
        job_id,
        evaluation_id,
        step: Some(pb::job_vote::Step::Commit(vec![0; 32])),
    };
    let ext = |votes: Vec<pb::JobVote>| pb::VoteExtension { votes }.encode_to_vec();
    assert!(check_extension(&ext(vec![commit(1, 0), commit(0, 1)])).is_ok());
    assert!(check_extension(&ext(vec![commit(0, 1), commit(0, 1)])).is_err());
    assert!(check_extension(&ext(vec![commit(1, 1)])).is_err());
    assert!(check_extension(&ext(vec![commit(0, 0)])).is_err());
    let reveal = |job_id, evaluation_id, score: &str, digest: Vec<u8>| pb::JobVote {
        job_id,
        evaluation_id,
        step: Some(pb::job_vote::Step::Reveal(pb::Reveal {
            matches: true,
            segments_digest: digest,
            salt: vec![0; 32],
            score_json: score.into(),
        })),
    };
    let sha = |s: &str| Sha256::digest(s.as_bytes()).to_vec();
    assert!(check_extension(&ext(vec![reveal(0, 1, ACCURACY_90, sha(ACCURACY_90))])).is_ok());
    let too_long = "x".repeat(MAX_SCORE_BYTES + 1);
    assert!(check_extension(&ext(vec![reveal(0, 1, &too_long, sha(&too_long))])).is_err());
    assert!(
        check_extension(&ext(vec![reveal(1, 0, ACCURACY_90, sha(ACCURACY_90))])).is_err(),
        "a job reveal carries no score"
    );
    let bytes = ext(vec![reveal(0, u64::MAX, ACCURACY_90, sha(ACCURACY_90))]);
    assert!(
        bytes.len() < 256,
        "an evaluation reveal of a real score stays small"
    );
}

#[test]
fn scores_parse_to_metric_value_and_direction() {
    let p = parse_score(ACCURACY_90).unwrap();
    assert_eq!(
        (p.metric.as_str(), p.value.as_str(), p.higher_is_better),
        ("accuracy", "0.9", true)
    );
    let p = parse_score(&rmse("12.25")).unwrap();
    assert_eq!((p.metric.as_str(), p.value.as_str()), ("rmse", "12.25"));
    assert_eq!(
        parse_score(r#"{"higher_is_better":true,"metric":"accuracy","value":0.8452380952380952}"#)
            .unwrap()
            .value,
        "0.8452380952380952",
        "the value keeps its JSON text"
    );
    for bad in [
        "",
        "[]",
        r#"{"metric":"f1","value":1,"higher_is_better":true}"#,
        r#"{"metric":"rmse","value":"1","higher_is_better":false}"#,
        r#"{"metric":"rmse","higher_is_better":false}"#,
        r#"{"metric":"rmse","value":1}"#,
        r#"{"metric":"rmse","value":1e999,"higher_is_better":false}"#,
        // A direction that is not the metric's.
        r#"{"metric":"rmse","value":1,"higher_is_better":true}"#,
        r#"{"metric":"accuracy","value":1,"higher_is_better":false}"#,
    ] {
        assert!(parse_score(bad).is_err(), "{bad}");
    }
}
