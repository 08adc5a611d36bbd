//! Governance: more than two thirds of active orgs decide; each action's effect and limits.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::governance::GovernanceRead;
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::membership::MembershipRead;
use neurodata_certs::Role;
use neurodata_client::{Amount, Signer, msg};
use neurodata_proto::chain::v1 as pb;
use pb::proposal_action::Action as A;

fn admit(org: &TestOrg) -> A {
    A::AdmitOrg(pb::AdmitOrg {
        org_id: org.id.clone(),
        name: format!("Org {}", org.id),
        ca_cert_pem: org.ca_pem(),
    })
}

fn status(n: &TestNode, id: u64) -> pb::ProposalStatus {
    pb::ProposalStatus::try_from(n.storage().proposal(id).unwrap().unwrap().status).unwrap()
}

#[test]
fn admitting_an_org_needs_more_than_two_thirds_of_orgs() {
    let c = Consortium::new(3, 1);
    let mut t = Twin::start(&c);
    let newcomer = TestOrg::new("newcomer");
    let o = t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose("admit newcomer", admit(&newcomer))],
    );
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "proposal.submitted" && e.get("id") == Some("1"))
    );
    // Two of three is not more than two thirds.
    t.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    assert_eq!(status(&t.a, 1), pb::ProposalStatus::Voting);
    assert!(t.a.storage().org("newcomer").unwrap().is_none());
    let o = t.ok(&c.signer(2, Role::Admin), vec![msg::vote(1, true)]);
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "org.admitted" && e.get("org") == Some("newcomer"))
    );
    assert_eq!(status(&t.a, 1), pb::ProposalStatus::Passed);
    // Members of the new org can now transact.
    let buyer = newcomer.signer(Role::Buyer);
    t.ok(
        &c.signer(0, Role::Provider),
        vec![msg::transfer(buyer.address(), Amount(10))],
    );
    t.ok(
        &buyer,
        vec![msg::transfer(
            c.signer(0, Role::Provider).address(),
            Amount(2),
        )],
    );
}

#[test]
fn double_votes_unknown_and_closed_proposals_are_rejected() {
    let c = Consortium::new(3, 1);
    let mut t = Twin::start(&c);
    let a0 = c.signer(0, Role::Admin);
    t.ok(
        &a0,
        vec![msg::propose(
            "mint",
            A::Mint(pb::Mint { amount: "5".into() }),
        )],
    );
    // The proposer's org already approved.
    let o = t.reject_signed(&a0, vec![msg::vote(1, true)], "governance", 63);
    assert!(o.log.contains("org0 already voted"), "{}", o.log);
    t.reject_signed(&a0, vec![msg::vote(99, true)], "governance", 60);
    // With three orgs passing needs all three, so one rejection decides it.
    let o = t.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, false)]);
    assert!(o.events.iter().any(|e| e.kind == "proposal.rejected"));
    assert_eq!(status(&t.a, 1), pb::ProposalStatus::Rejected);
    t.reject_signed(
        &c.signer(2, Role::Admin),
        vec![msg::vote(1, true)],
        "governance",
        61,
    );
}

#[test]
fn votes_after_the_voting_period_are_rejected() {
    let c = Consortium::new(3, 1);
    let mut t = Twin::start(&c);
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose(
            "mint",
            A::Mint(pb::Mint { amount: "5".into() }),
        )],
    );
    for _ in 0..c.params.proposal_voting_blocks {
        t.apply(&[]);
    }
    let o = t.reject_signed(
        &c.signer(1, Role::Admin),
        vec![msg::vote(1, true)],
        "governance",
        62,
    );
    assert!(o.log.contains("ended at height 51"), "{}", o.log);
}

#[test]
fn removing_the_last_org_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let a0 = c.signer(0, Role::Admin);
    t.reject_signed(
        &a0,
        vec![msg::propose(
            "dissolve",
            A::RemoveOrg(pb::RemoveOrg {
                org_id: "org0".into(),
            }),
        )],
        "governance",
        64,
    );
}

#[test]
fn removing_the_last_validator_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let a0 = c.signer(0, Role::Admin);
    let key = c.validators[0].0;
    t.reject_signed(
        &a0,
        vec![msg::propose(
            "halt",
            A::SetValidator(pb::SetValidator {
                pub_key: key.to_vec(),
                power: 0,
                org_id: String::new(),
                name: String::new(),
                operators: vec![],
            }),
        )],
        "governance",
        65,
    );
}

#[test]
fn validator_changes_are_returned_to_cometbft() {
    let c = Consortium::new(1, 1);
    let mut n = TestNode::start(&c);
    let a0 = c.signer(0, Role::Admin);
    let key = [9u8; 32];
    let set = |power| {
        msg::propose(
            "validator",
            A::SetValidator(pb::SetValidator {
                pub_key: key.to_vec(),
                power,
                org_id: "org0".into(),
                name: "v9".into(),
                operators: vec![],
            }),
        )
    };
    let tx = n.sign(&a0, vec![set(7)]);
    let b = n.block(&[tx]);
    assert_eq!(b.outcomes[0].code, 0, "{}", b.outcomes[0].log);
    assert_eq!(b.validator_updates, vec![(key, 7)]);
    assert_eq!(n.storage().validators().unwrap().len(), 2);
    let tx = n.sign(&a0, vec![set(0)]);
    let b = n.block(&[tx]);
    assert_eq!(b.validator_updates, vec![(key, 0)]);
    assert_eq!(n.storage().validators().unwrap().len(), 1);
}

#[test]
fn mint_grows_supply_and_treasury_only_through_governance() {
    let c = Consortium::new(1, 1);
    let mut n = TestNode::start(&c);
    let before = n.storage().supply().unwrap().0;
    n.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose(
            "mint",
            A::Mint(pb::Mint {
                amount: "1000".into(),
            }),
        )],
    );
    assert_eq!(n.storage().supply().unwrap().0, before + 1000);
    assert_eq!(
        n.balance(neurodata_abci::address::Address::treasury()),
        1000
    );
}

#[test]
fn rotating_an_org_ca_invalidates_certificates_of_the_old_ca() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let old_buyer = c.signer(0, Role::Buyer);
    t.ok(
        &old_buyer,
        vec![msg::transfer(old_buyer.address(), Amount(1))],
    );
    let rotated = TestOrg::new("org0");
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose(
            "rotate",
            A::RotateOrgCa(pb::RotateOrgCa {
                org_id: "org0".into(),
                ca_cert_pem: rotated.ca_pem(),
                grace_secs: 0,
            }),
        )],
    );
    t.reject_signed(
        &old_buyer,
        vec![msg::transfer(old_buyer.address(), Amount(1))],
        "membership",
        26,
    );
    // A certificate from the new CA works (funded by nobody yet: transfer zero is refused, so just
    // check it is accepted as a signer by paying its fee from a fresh balance).
    let new_admin = rotated.signer(Role::Admin);
    let o = t.a.run(
        &new_admin,
        vec![msg::transfer(new_admin.address(), Amount(1))],
    );
    let _ = t.b.run(
        &new_admin,
        vec![msg::transfer(new_admin.address(), Amount(1))],
    );
    assert_eq!(
        (o.codespace, o.code),
        ("ledger", 40),
        "signer accepted, only unfunded: {}",
        o.log
    );
}

#[test]
fn members_of_a_removed_org_are_rejected() {
    let c = Consortium::new(3, 1);
    let mut t = Twin::start(&c);
    let b = c.signer(2, Role::Buyer);
    t.ok(&b, vec![msg::transfer(b.address(), Amount(1))]);
    let remove = msg::propose(
        "remove org2",
        A::RemoveOrg(pb::RemoveOrg {
            org_id: "org2".into(),
        }),
    );
    t.ok(&c.signer(0, Role::Admin), vec![remove]);
    t.ok(&c.signer(1, Role::Admin), vec![msg::vote(1, true)]);
    t.ok(&c.signer(2, Role::Admin), vec![msg::vote(1, true)]);
    assert_eq!(t.a.storage().active_orgs().unwrap().len(), 2);
    // Known member: its org is gone.
    t.reject_signed(
        &b,
        vec![msg::transfer(b.address(), Amount(1))],
        "membership",
        25,
    );
    // A certificate the chain never saw: its CA is no longer an admitted CA.
    let p = c.signer(2, Role::Provider);
    t.reject_signed(
        &p,
        vec![msg::transfer(p.address(), Amount(1))],
        "membership",
        23,
    );
}

#[test]
fn parameter_changes_apply_to_later_transactions() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let params = pb::Params {
        min_fee: "5".into(),
        proposal_voting_blocks: 10,
        max_tx_bytes: 8192,
        max_messages_per_tx: 4,
        key_delivery_blocks: 10,
        confirm_blocks: 20,
        market_fee_bps: 100,
        max_open_validations_per_org: 4,
        reward_epoch_blocks: 0,
        model_royalty_bps: 1_000,
        cert_expiry_notice_secs: 30 * 86_400,
    };
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose("fees up", A::SetParams(params))],
    );
    assert_eq!(t.a.storage().params().unwrap().min_fee, Amount(5));
    let s = c.signer(0, Role::Buyer);
    // The harness pays fee 1.
    t.reject_signed(&s, vec![msg::transfer(s.address(), Amount(1))], "tx", 10);
}

#[test]
fn invalid_proposals_are_rejected_at_submission() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let a0 = c.signer(0, Role::Admin);
    let bad_pem = A::AdmitOrg(pb::AdmitOrg {
        org_id: "x1".into(),
        name: "X".into(),
        ca_cert_pem: "nope".into(),
    });
    t.reject_signed(&a0, vec![msg::propose("bad", bad_pem)], "membership", 20);
    let bad_id = A::RemoveOrg(pb::RemoveOrg {
        org_id: "NOT VALID".into(),
    });
    let o = t.reject_signed(&a0, vec![msg::propose("bad", bad_id)], "governance", 72);
    assert!(o.log.contains("\"NOT VALID\""), "{}", o.log);
    let taken = admit(&c.orgs[0]);
    t.reject_signed(&a0, vec![msg::propose("again", taken)], "governance", 66);
}

/// `role`@org0's key certified by `ca` until `not_after`, as its certificate says.
fn certified(c: &Consortium, ca: &neurodata_certs::OrgCa, role: Role, not_after: i64) -> Signer {
    let key = &c.orgs[0].members[&role].key;
    let cert = ca
        .issue_for_key(
            &format!("{role}@org0"),
            role,
            neurodata_certs::Validity {
                not_before: validity().not_before,
                not_after,
            },
            key,
        )
        .unwrap();
    Signer::new(&cert, key.clone()).unwrap()
}

#[test]
fn during_a_rotations_grace_both_cas_sign_and_members_renew_to_the_new_one() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let (buyer, trainer) = (c.signer(0, Role::Buyer), c.signer(0, Role::Trainer));
    let provider = c.signer(0, Role::Provider);
    t.ok(&buyer, vec![msg::transfer(buyer.address(), Amount(1))]);
    t.ok(
        &provider,
        vec![msg::transfer(provider.address(), Amount(1))],
    );
    // Another subject name: new certificates of either CA must still find the org.
    let new_ca = neurodata_certs::OrgCa::create("org0", "Org org0 2027", validity()).unwrap();
    let grace = 30;
    let o = t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::propose(
            "rotate with grace",
            A::RotateOrgCa(pb::RotateOrgCa {
                org_id: "org0".into(),
                ca_cert_pem: String::from_utf8(new_ca.cert.to_pem().unwrap()).unwrap(),
                grace_secs: grace,
            }),
        )],
    );
    let until = block_time(t.a.height) + grace as i64;
    assert!(
        o.events.iter().any(|e| e.kind == "org.ca_rotated"
            && e.get("grace_until") == Some(until.to_string().as_str())),
        "{:?}",
        o.events
    );
    let org = t.a.storage().org("org0").unwrap().unwrap();
    assert_eq!(org.previous_ca_until, until);

    // In the grace period: the old CA's registered members sign; it registers nobody new (its
    // key may be why it is rotated out).
    t.ok(&buyer, vec![msg::transfer(buyer.address(), Amount(1))]);
    t.reject_signed(
        &trainer,
        vec![msg::transfer(trainer.address(), Amount(1))],
        "membership",
        23,
    );
    // A renewal goes to the new CA, never to the one being retired.
    let later = validity().not_after + 86_400;
    let to_old = certified(&c, &c.orgs[0].ca, Role::Buyer, later);
    let o = t.reject_signed(
        &buyer,
        vec![msg::renew_certificate(to_old.certificate_der().to_vec())],
        "membership",
        227,
    );
    assert!(o.log.contains("current CA"), "{}", o.log);
    let renewed = certified(&c, &new_ca, Role::Buyer, later);
    t.ok(
        &buyer,
        vec![msg::renew_certificate(renewed.certificate_der().to_vec())],
    );
    t.ok(&renewed, vec![msg::transfer(renewed.address(), Amount(1))]);

    // After it: the old CA's certificates are refused, registered or new; the renewed one signs.
    while block_time(t.a.height + 1) <= until {
        t.apply(&[]);
    }
    t.reject_signed(
        &provider,
        vec![msg::transfer(provider.address(), Amount(1))],
        "membership",
        26,
    );
    t.reject_signed(
        &trainer,
        vec![msg::transfer(trainer.address(), Amount(1))],
        "membership",
        23,
    );
    t.ok(&renewed, vec![msg::transfer(renewed.address(), Amount(1))]);
}

#[test]
fn a_rotation_grace_above_a_year_is_refused() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let o = t.reject_signed(
        &c.signer(0, Role::Admin),
        vec![msg::propose(
            "rotate",
            A::RotateOrgCa(pb::RotateOrgCa {
                org_id: "org0".into(),
                ca_cert_pem: TestOrg::new("org0").ca_pem(),
                grace_secs: 367 * 86_400,
            }),
        )],
        "governance",
        205,
    );
    assert!(o.log.contains("grace_secs"), "{}", o.log);
}
