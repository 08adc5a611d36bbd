//! Who may sign: certificates checked against org CAs at the block time, revocation, roles.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use neurodata_abci::address::Address;
use neurodata_abci::membership::MembershipRead;
use neurodata_certs::{OrgCa, Role, Validity};
use neurodata_client::{Amount, Signer, TxParams, msg};
use neurodata_proto::chain::v1 as pb;

fn transfer_to_self(s: &Signer) -> Vec<pb::Message> {
    vec![msg::transfer(s.address(), Amount(1))]
}

fn issue(ca: &OrgCa, role: Role, validity: Validity) -> Signer {
    let m = ca.issue("someone", role, validity).unwrap();
    Signer::new(&m.cert, m.key).unwrap()
}

#[test]
fn first_tx_registers_the_certificate_with_org_and_role() {
    let c = Consortium::new(2, 1);
    let mut n = TestNode::start(&c);
    let s = c.signer(1, Role::Trainer);
    n.ok(&s, transfer_to_self(&s));
    let id = n.storage().identity(&s.address().0).unwrap().unwrap();
    assert_eq!((id.org_id.as_str(), id.role.as_str()), ("org1", "trainer"));
    assert_eq!(id.registered_height, 1);
}

#[test]
fn certificate_from_an_unknown_ca_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let outsider = TestOrg::new("outsider").signer(Role::Buyer);
    let o = t.reject_signed(&outsider, transfer_to_self(&outsider), "membership", 23);
    assert!(o.log.contains("outsider CA"), "{}", o.log);
}

#[test]
fn certificate_signed_by_an_impostor_ca_with_the_same_name_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    // Same subject name as org0's CA, different key.
    let fake = OrgCa::create("org0", "Org org0", validity()).unwrap();
    let s = issue(&fake, Role::Admin, validity());
    t.reject_signed(&s, transfer_to_self(&s), "membership", 24);
}

#[test]
fn expired_certificate_is_rejected_at_block_time() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = issue(
        &c.orgs[0].ca,
        Role::Buyer,
        Validity {
            not_before: T0 - 86_400,
            not_after: T0 - 1,
        },
    );
    let o = t.reject_signed(&s, transfer_to_self(&s), "membership", 28);
    assert!(
        o.log.contains(&format!("expired at {}", T0 - 1)),
        "{}",
        o.log
    );
}

#[test]
fn certificate_expiring_between_blocks_stops_working_at_the_first_later_block() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    // Valid through block 2's time, not block 3's.
    let s = issue(
        &c.orgs[0].ca,
        Role::Buyer,
        Validity {
            not_before: T0 - 60,
            not_after: block_time(2),
        },
    );
    let fund = c.signer(0, Role::Provider);
    t.ok(&fund, vec![msg::transfer(s.address(), Amount(100))]);
    t.ok(&s, transfer_to_self(&s));
    t.reject_signed(&s, transfer_to_self(&s), "membership", 28);
}

#[test]
fn not_yet_valid_certificate_is_rejected_at_block_time() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = issue(
        &c.orgs[0].ca,
        Role::Buyer,
        Validity {
            not_before: T0 + 86_400,
            not_after: T0 + 2 * 86_400,
        },
    );
    t.reject_signed(&s, transfer_to_self(&s), "membership", 27);
}

#[test]
fn revoked_certificate_cannot_transfer() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let buyer = c.signer(0, Role::Buyer);
    let admin = c.signer(0, Role::Admin);
    t.ok(&buyer, transfer_to_self(&buyer));
    let o = t.ok(
        &admin,
        vec![msg::revoke(buyer.address(), None, "laptop stolen")],
    );
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "certificate.revoked" && e.get("reason") == Some("laptop stolen"))
    );
    let o = t.reject_signed(&buyer, transfer_to_self(&buyer), "membership", 29);
    assert!(o.log.contains("revoked at height 2"), "{}", o.log);
    // Revoking twice is refused.
    t.reject_signed(
        &admin,
        vec![msg::revoke(buyer.address(), None, "again")],
        "membership",
        32,
    );
}

#[test]
fn a_certificate_never_used_on_chain_is_revoked_by_attaching_it() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let admin = c.signer(0, Role::Admin);
    let trainer = c.signer(0, Role::Trainer);
    t.reject_signed(
        &admin,
        vec![msg::revoke(trainer.address(), None, "x")],
        "membership",
        33,
    );
    t.ok(
        &admin,
        vec![msg::revoke(
            trainer.address(),
            Some(trainer.certificate_der().to_vec()),
            "left the org",
        )],
    );
    t.reject_signed(&trainer, transfer_to_self(&trainer), "membership", 29);
}

#[test]
fn an_admin_cannot_revoke_another_orgs_certificate() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let victim = c.signer(1, Role::Buyer);
    t.ok(&victim, transfer_to_self(&victim));
    let admin0 = c.signer(0, Role::Admin);
    t.reject_signed(
        &admin0,
        vec![msg::revoke(victim.address(), None, "hostile")],
        "membership",
        31,
    );
}

#[test]
fn wrong_role_for_the_message_is_rejected() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let buyer = c.signer(0, Role::Buyer);
    let o = t.reject_signed(
        &buyer,
        vec![msg::revoke(Address([3; 32]), None, "x")],
        "membership",
        30,
    );
    assert!(
        o.log.contains("role buyer may not send RevokeCertificate"),
        "{}",
        o.log
    );
    // A vote by a non-admin.
    let validator = c.signer(0, Role::Validator);
    t.reject_signed(&validator, vec![msg::vote(1, true)], "membership", 30);
}

#[test]
fn attached_certificate_must_hash_to_the_signer() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let a = c.signer(0, Role::Buyer);
    let b = c.signer(0, Role::Provider);
    use prost::Message as _;
    let body = pb::TxBody {
        chain_id: CHAIN.into(),
        signer: a.address().0.to_vec(),
        nonce: 0,
        fee: "1".into(),
        certificate: b.certificate_der().to_vec(),
        memo: String::new(),
        messages: transfer_to_self(&a),
    };
    t.reject(
        b.sign_bytes(body.encode_to_vec()).unwrap(),
        "membership",
        21,
    );
}

#[test]
fn unknown_signer_without_a_certificate_is_told_to_attach_it() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let tx = s
        .sign(
            TxParams {
                chain_id: CHAIN.into(),
                nonce: 0,
                fee: Amount(1),
                attach_certificate: false,
                memo: String::new(),
            },
            transfer_to_self(&s),
        )
        .unwrap();
    let o = t.reject(tx, "membership", 22);
    assert!(o.log.contains("attach the certificate"), "{}", o.log);
}

#[test]
fn garbage_certificate_is_rejected() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let s = c.signer(0, Role::Buyer);
    let junk = b"not a certificate".to_vec();
    use prost::Message as _;
    let signer = neurodata_abci::membership::certificate::sha256(&junk);
    let body = pb::TxBody {
        chain_id: CHAIN.into(),
        signer: signer.to_vec(),
        nonce: 0,
        fee: "1".into(),
        certificate: junk,
        memo: String::new(),
        messages: transfer_to_self(&s),
    };
    t.reject(
        s.sign_bytes(body.encode_to_vec()).unwrap(),
        "membership",
        20,
    );
}
