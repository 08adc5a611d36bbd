//! Validators' signed vote extensions, injected by the proposer as the first tx of a block:
//! accepted by ProcessProposal and executed first by FinalizeBlock when they verify; refused
//! anywhere else, when forged, or from the mempool.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::abci::ProposalError;
use neurodata_abci::extension::{InjectError, sign_bytes};
use neurodata_abci::training::INJECTED_MARKER;
use neurodata_abci::training::attest::validator_address;
use neurodata_certs::Role;
use neurodata_client::{Amount, msg};
use neurodata_proto::chain::v1 as pb;
use openssl::pkey::{PKey, Private};
use prost::Message as _;

/// A consortium whose validators have real Ed25519 keys, and those keys.
fn consortium(validators: usize) -> (Consortium, Vec<PKey<Private>>) {
    let mut c = Consortium::new(2, validators);
    let keys: Vec<PKey<Private>> = (0..validators)
        .map(|_| PKey::generate_ed25519().unwrap())
        .collect();
    c.validators = keys
        .iter()
        .map(|k| (k.raw_public_key().unwrap().try_into().unwrap(), 10))
        .collect();
    (c, keys)
}

/// A commit for a job nobody submitted: verifies, records nothing.
fn extension() -> Vec<u8> {
    pb::VoteExtension {
        votes: vec![pb::JobVote {
            job_id: 999_999,
            step: Some(pb::job_vote::Step::Commit(vec![9; 32])),
            evaluation_id: 0,
        }],
    }
    .encode_to_vec()
}

/// The injected tx of block `height`: each key's signed `extension()` of height - 1.
fn injected(keys: &[PKey<Private>], height: u64) -> Vec<u8> {
    let vote_height = i64::try_from(height - 1).unwrap();
    let votes = keys
        .iter()
        .map(|k| {
            let ext = extension();
            let signature = openssl::sign::Signer::new_without_digest(k)
                .unwrap()
                .sign_oneshot_to_vec(&sign_bytes(CHAIN, vote_height, 0, &ext))
                .unwrap();
            pb::InjectedVote {
                validator: validator_address(&k.raw_public_key().unwrap()).to_vec(),
                extension: ext,
                signature,
            }
        })
        .collect();
    let mut tx = INJECTED_MARKER.to_vec();
    tx.extend(
        pb::InjectedVotes {
            height: vote_height,
            round: 0,
            votes,
        }
        .encode_to_vec(),
    );
    tx
}

#[test]
fn injected_votes_first_in_a_block_are_accepted_and_executed_first() {
    let (c, keys) = consortium(4);
    let mut a = TestNode::start(&c);
    let mut b = TestNode::start(&c);
    a.block(&[]);
    b.block(&[]);
    let alice = c.signer(0, Role::Buyer);
    let transfer = a.sign(&alice, vec![msg::transfer(alice.address(), Amount(5))]);
    let txs = vec![injected(&keys[..3], 2), transfer];
    assert_eq!(
        a.node.process(2, &txs).unwrap(),
        Ok(()),
        "3 of 4 validators' signed extensions, first in the block"
    );
    let block = a.block(&txs);
    let codes: Vec<_> = block.outcomes.iter().map(|o| o.code).collect();
    assert_eq!(
        codes,
        [0, 0],
        "the injected tx and the transfer both succeed"
    );
    assert_eq!(
        b.block(&txs).app_hash,
        block.app_hash,
        "every node reaches the same app hash"
    );
}

#[test]
fn injected_votes_placed_second_are_refused() {
    let (c, keys) = consortium(4);
    let mut n = TestNode::start(&c);
    n.block(&[]);
    let alice = c.signer(0, Role::Buyer);
    let transfer = n.sign(&alice, vec![msg::transfer(alice.address(), Amount(5))]);
    assert_eq!(
        n.node.process(2, &[transfer, injected(&keys, 2)]).unwrap(),
        Err(ProposalError::Injected(InjectError::NotFirst { index: 1 }))
    );
}

#[test]
fn forged_injected_votes_are_refused_and_skipped_in_finalize() {
    let (c, keys) = consortium(4);
    let mut n = TestNode::start(&c);
    n.block(&[]);
    let mut forged = injected(&keys, 2);
    let last = forged.len() - 1;
    // The last vote's signature is the tx's last field.
    forged[last] ^= 1;
    assert!(
        matches!(
            n.node.process(2, &[&forged]).unwrap(),
            Err(ProposalError::Injected(InjectError::BadSignature(_)))
        ),
        "ProcessProposal refuses a forged signature"
    );
    // Had the block been decided anyway, FinalizeBlock records nothing and goes on.
    let alice = c.signer(0, Role::Buyer);
    let transfer = n.sign(&alice, vec![msg::transfer(alice.address(), Amount(5))]);
    let block = n.block(&[forged, transfer]);
    assert_eq!(
        (block.outcomes[0].code, block.outcomes[0].codespace),
        (245, "extension"),
        "{}",
        block.outcomes[0].log
    );
    assert_eq!(block.outcomes[1].code, 0, "{}", block.outcomes[1].log);
}

#[test]
fn votes_of_two_thirds_of_the_power_are_refused() {
    let (c, keys) = consortium(3);
    let mut n = TestNode::start(&c);
    n.block(&[]);
    assert_eq!(
        n.node.process(2, &[injected(&keys[..2], 2)]).unwrap(),
        Err(ProposalError::Injected(InjectError::InsufficientPower {
            signed: 20,
            total: 30
        }))
    );
}

#[test]
fn injected_votes_are_refused_from_the_mempool() {
    let (c, keys) = consortium(1);
    let mut n = TestNode::start(&c);
    n.block(&[]);
    let refused = n.node.check(&injected(&keys, 2)).unwrap().unwrap_err();
    assert!(
        refused.to_string().contains("injected-votes tx"),
        "{refused}"
    );
}

#[test]
fn extend_vote_without_attester_is_empty_and_verify_checks_statelessly() {
    let (c, _) = consortium(1);
    let n = TestNode::start(&c);
    assert!(n.node.extend_vote(1).is_empty());
    use tendermint::abci::response::VerifyVoteExtension as V;
    assert_eq!(n.node.verify_vote_extension(b""), V::Accept);
    assert_eq!(n.node.verify_vote_extension(&extension()), V::Accept);
    assert_eq!(n.node.verify_vote_extension(b"\xff\xff"), V::Reject);
}
