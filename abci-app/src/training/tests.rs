//! The attestation rules on an in-memory state: commits, reveals, quorums, copied commits,
//! replayed reveals, lazy and wrong validators, and where every coin goes. (The path from
//! signed vote extensions to [`apply_votes`] is tested with the ABCI adapter.)
#![allow(clippy::unwrap_used)]

use neurodata_proto::chain::v1 as pb;

use super::attest::{commitment, validator_address};
use super::*;
use crate::address::Address;
use crate::amount::Amount;
use crate::app::BlockCtx;
use crate::governance::{GovernanceWrite, Params};
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::membership::MembershipWrite;
use crate::state::{MemoryState, StateDelta};

const BOUNTY: u128 = 10_000;
const STAKE: u128 = 2_000;
const SUBMITTER: Address = Address([0xa1; 32]);
const WORKER: Address = Address([0xb2; 32]);

fn operator(i: u8) -> Address {
    Address([0x10 + i; 32])
}

fn key(i: u8) -> [u8; 32] {
    [0xc0 + i; 32]
}

fn val(i: u8) -> [u8; 20] {
    validator_address(&key(i))
}

struct World {
    state: MemoryState,
    height: u64,
}

impl World {
    /// Four validators of power 10 (one org each, operated by `operator(i)`), a worker, and
    /// job 1 attesting with its bounty and stake in escrow.
    fn new() -> World {
        let mut state = MemoryState::default();
        let mut d = StateDelta::new(&state);
        for i in 0..4u8 {
            let org = format!("org{i}");
            d.put_org(
                &pb::Org {
                    org_id: org.clone(),
                    status: pb::OrgStatus::Active as i32,
                    ..Default::default()
                },
                &[i; 32],
            );
            d.put_validator(
                &key(i),
                &pb::Validator {
                    pub_key: key(i).to_vec(),
                    power: 10,
                    org_id: org,
                    name: format!("v{i}"),
                    operators: vec![operator(i).0.to_vec()],
                },
            );
        }
        d.credit(&escrow_account(), Amount(BOUNTY + STAKE)).unwrap();
        d.put_worker(&pb::Worker {
            address: WORKER.0.to_vec(),
            org_id: "org9".into(),
            capacity: 1,
            active: 1,
            ..Default::default()
        });
        let mut job = pb::Job {
            id: 1,
            submitter: SUBMITTER.0.to_vec(),
            dataset_ids: vec![],
            spec_json: r#"{"model":{"algorithm":"mlp"}}"#.into(),
            bounty: BOUNTY.to_string(),
            stake: STAKE.to_string(),
            deadline: i64::MAX,
            sample_bps: 2_500,
            status: pb::JobStatus::Attesting as i32,
            worker: WORKER.0.to_vec(),
            stake_locked: true,
            ..Default::default()
        };
        let mut result = pb::JobResult {
            model_sha256: vec![7; 32],
            height: 1,
            ..Default::default()
        };
        result.digest = super::result::result_digest(1, &WORKER.0, &result).to_vec();
        job.result = Some(result);
        job.attestation = Some(pb::ResultAttestation {
            beacon_height: 2,
            ..Default::default()
        });
        d.put_job(&job);
        state.apply(d.into_changes());
        let mut w = World { state, height: 1 };
        w.block(&[]); // height 2: the beacon
        w
    }

    fn ctx(&self) -> BlockCtx {
        BlockCtx {
            chain_id: "t".into(),
            height: self.height,
            time: 1_000 + self.height as i64,
            hash: [self.height as u8; 32],
            params: Params::default(),
        }
    }

    /// A block carrying `cast` as its injected votes.
    fn block(&mut self, cast: &[CastVote]) {
        self.height += 1;
        let block = self.ctx();
        let exec = crate::tx::ExecCtx {
            height: block.height,
            time: block.time,
            params: block.params.clone(),
        };
        let mut d = StateDelta::new(&self.state);
        apply_votes(&mut d, cast, &exec).unwrap();
        end_block(&mut d, &block).unwrap();
        let changes = d.into_changes();
        self.state.apply(changes);
    }

    fn job(&self) -> pb::Job {
        self.state.job(1).unwrap().unwrap()
    }

    fn att(&self) -> pb::ResultAttestation {
        self.job().attestation.unwrap()
    }

    fn digest(&self) -> [u8; 32] {
        self.job().result.unwrap().digest.try_into().unwrap()
    }

    fn balance(&self, a: Address) -> u128 {
        self.state.balance(&a).unwrap().0
    }

    fn verdict(&self, i: u8, matches: bool) -> Verdict {
        Verdict {
            job_id: 1,
            result_digest: self.digest(),
            matches,
            segments_digest: [i; 32],
            salt: [0x50 + i; 32],
        }
    }

    /// What validator `i`'s abci-app would extend with now.
    fn extend(&self, i: u8, matches: bool) -> CastVote {
        CastVote {
            validator: val(i),
            votes: votes_to_extend(&self.state, &val(i), &[self.verdict(i, matches)], &[]).unwrap(),
        }
    }

    /// Commits, then reveals, for each (validator, verdict).
    fn attest(&mut self, verdicts: &[(u8, bool)]) {
        let commits: Vec<CastVote> = verdicts.iter().map(|(i, m)| self.extend(*i, *m)).collect();
        self.block(&commits);
        while !self.att().revealing {
            self.block(&[]);
        }
        let reveals: Vec<CastVote> = verdicts.iter().map(|(i, m)| self.extend(*i, *m)).collect();
        self.block(&reveals);
    }
}

#[test]
fn the_beacon_fixes_the_attestors_and_a_commit_reveals_only_after_the_commit_phase() {
    let mut w = World::new();
    let att = w.att();
    assert_eq!(att.beacon, vec![2u8; 32]);
    assert_eq!(att.attestors.len(), 4);
    // Commit phase: the extension is a commit, never the verdict.
    let c = w.extend(0, true);
    assert!(matches!(
        c.votes[0].step,
        Some(pb::job_vote::Step::Commit(_))
    ));
    w.block(&[c]);
    assert_eq!(
        w.att()
            .attestors
            .iter()
            .filter(|a| !a.commit.is_empty())
            .count(),
        1
    );
    // Committed once: nothing more to say until the reveal phase.
    assert!(w.extend(0, true).votes.is_empty());
    // A reveal during the commit phase changes nothing.
    let early = CastVote {
        validator: val(0),
        votes: vec![pb::JobVote {
            job_id: 1,
            step: Some(pb::job_vote::Step::Reveal(pb::Reveal {
                matches: true,
                segments_digest: vec![0; 32],
                salt: vec![0x50; 32],
                score_json: String::new(),
            })),
            evaluation_id: 0,
        }],
    };
    w.block(&[early]);
    assert!(!w.att().attestors.iter().any(|a| a.revealed));
}

#[test]
fn more_than_two_thirds_agreeing_makes_the_model_final_and_pays_by_rule() {
    let mut w = World::new();
    // Validator 3 is down for the whole job.
    w.attest(&[(0, true), (1, true), (2, true)]);
    let job = w.job();
    assert_eq!(status(&job), pb::JobStatus::Final, "{:?}", job.steps);
    let model = w.state.model_version(job.model_version).unwrap().unwrap();
    assert_eq!(model.model_sha256, vec![7; 32]);
    assert_eq!(model.algorithm, "mlp");
    // 10% of the bounty to the three agreeing validators' operators, the rest and the stake
    // to the worker; validator 3 gets nothing.
    let share = BOUNTY / 10 / 3;
    for i in 0..3 {
        assert_eq!(w.balance(operator(i)), share);
    }
    assert_eq!(w.balance(operator(3)), 0);
    assert_eq!(w.balance(WORKER), BOUNTY - 3 * share + STAKE);
    assert_eq!(w.balance(escrow_account()), 0);
    assert_eq!(w.state.attestor_stats(&val(0)).unwrap().agreed, 1);
    assert_eq!(w.state.attestor_stats(&val(3)).unwrap().no_reveal, 1);
    let worker = w.state.worker(&WORKER).unwrap().unwrap();
    assert_eq!((worker.active, worker.finalized), (0, 1));
}

#[test]
fn a_wrong_validator_is_outvoted_unpaid_and_recorded() {
    let mut w = World::new();
    w.attest(&[(0, true), (1, true), (2, true), (3, false)]);
    assert_eq!(status(&w.job()), pb::JobStatus::Final);
    assert_eq!(w.balance(operator(3)), 0);
    assert_eq!(w.state.attestor_stats(&val(3)).unwrap().outvoted, 1);
}

#[test]
fn more_than_a_third_finding_a_mismatch_slashes_the_stake_and_requeues_the_job() {
    let mut w = World::new();
    w.attest(&[(0, false), (1, false), (2, true), (3, true)]);
    let job = w.job();
    assert_eq!(status(&job), pb::JobStatus::Queued, "{:?}", job.steps);
    assert_eq!(job.tried, vec![WORKER.0.to_vec()]);
    assert!(job.result.is_none());
    // Half the stake to the two finders, the rest to the submitter; the bounty stays.
    assert_eq!(w.balance(operator(0)), STAKE / 4);
    assert_eq!(w.balance(operator(1)), STAKE / 4);
    assert_eq!(w.balance(SUBMITTER), STAKE / 2);
    assert_eq!(w.balance(WORKER), 0);
    assert_eq!(w.balance(escrow_account()), BOUNTY);
    assert_eq!(w.state.worker(&WORKER).unwrap().unwrap().rejected, 1);
}

#[test]
fn a_copied_commit_cannot_be_revealed_and_counts_as_no_vote() {
    let mut w = World::new();
    let honest = w.extend(0, true);
    let copied = CastVote {
        validator: val(1),
        votes: honest.votes.clone(),
    };
    w.block(&[honest, copied, w.extend(2, true)]);
    while !w.att().revealing {
        w.block(&[]);
    }
    // The copier reveals the original's verdict and salt once they are public.
    let reveal0 = w.extend(0, true);
    let copy_reveal = CastVote {
        validator: val(1),
        votes: reveal0.votes.clone(),
    };
    w.block(&[reveal0, copy_reveal]);
    let att = w.att();
    let copier = att
        .attestors
        .iter()
        .find(|a| a.validator == val(1))
        .unwrap();
    assert!(!copier.revealed);
    assert!(copier.refused.contains("copy"), "{}", copier.refused);
    assert_eq!(w.state.attestor_stats(&val(1)).unwrap().bad_reveal, 1);
    // Validators 0 and 2 alone are 20 of 40: not final yet.
    assert_eq!(status(&w.job()), pb::JobStatus::Attesting);
    w.block(&[w.extend(2, true)]);
    // Without validator 1, no quorum either way: undecided at the reveal deadline at the latest,
    // and the stake goes back.
    while status(&w.job()) == pb::JobStatus::Attesting {
        w.block(&[]);
    }
    assert!(w.job().steps.iter().any(|s| s.step == "undecided"));
    assert_eq!(w.balance(WORKER), STAKE);
    assert_eq!(w.balance(operator(1)), 0);
}

#[test]
fn a_replayed_or_foreign_reveal_changes_nothing() {
    let mut w = World::new();
    w.block(&[w.extend(0, true), w.extend(1, true)]);
    while !w.att().revealing {
        w.block(&[]);
    }
    let reveal = w.extend(0, true);
    w.block(std::slice::from_ref(&reveal));
    let before = w.att();
    // The same reveal again, and validator 0's reveal sent for a job it is no attestor of.
    w.block(std::slice::from_ref(&reveal));
    let stranger = CastVote {
        validator: validator_address(&[0xee; 32]),
        votes: reveal.votes.clone(),
    };
    w.block(&[stranger]);
    let after = w.att();
    assert_eq!(before.attestors, after.attestors);
}

#[test]
fn a_reveal_must_match_the_result_it_committed_to() {
    let w = World::new();
    let digest = w.digest();
    let c = commitment(1, &digest, &val(0), true, &[0; 32], &[1; 32]);
    assert_ne!(c, commitment(1, &digest, &val(1), true, &[0; 32], &[1; 32]));
    assert_ne!(c, commitment(2, &digest, &val(0), true, &[0; 32], &[1; 32]));
    assert_ne!(
        c,
        commitment(1, &[9; 32], &val(0), true, &[0; 32], &[1; 32])
    );
    assert_ne!(
        c,
        commitment(1, &digest, &val(0), false, &[0; 32], &[1; 32])
    );
    // A verdict about another result digest yields no vote at all.
    let mut v = w.verdict(0, true);
    v.result_digest = [9; 32];
    assert!(
        votes_to_extend(&w.state, &val(0), &[v], &[])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn extensions_are_checked_for_shape_and_size() {
    use prost::Message as _;
    let ok = pb::VoteExtension {
        votes: vec![pb::JobVote {
            job_id: 1,
            step: Some(pb::job_vote::Step::Commit(vec![0; 32])),
            evaluation_id: 0,
        }],
    };
    assert!(check_extension(&ok.encode_to_vec()).is_ok());
    assert!(ok.encode_to_vec().len() < 64, "a commit stays small");
    let mut twice = ok.clone();
    twice.votes.push(ok.votes[0].clone());
    assert!(check_extension(&twice.encode_to_vec()).is_err());
    let short = pb::VoteExtension {
        votes: vec![pb::JobVote {
            job_id: 1,
            step: Some(pb::job_vote::Step::Commit(vec![0; 31])),
            evaluation_id: 0,
        }],
    };
    assert!(check_extension(&short.encode_to_vec()).is_err());
    assert!(check_extension(&[0xff, 0xff]).is_err());
    assert!(check_extension(&vec![0; attest::MAX_EXTENSION_BYTES + 1]).is_err());
    let reveal = pb::VoteExtension {
        votes: vec![pb::JobVote {
            job_id: u64::MAX,
            step: Some(pb::job_vote::Step::Reveal(pb::Reveal {
                matches: true,
                segments_digest: vec![0; 32],
                salt: vec![0; 32],
                score_json: String::new(),
            })),
            evaluation_id: 0,
        }],
    };
    let bytes = reveal.encode_to_vec();
    assert!(check_extension(&bytes).is_ok());
    assert!(
        bytes.len() + 46 <= 256,
        "commit + reveal per job fit in 256 bytes"
    );
}
