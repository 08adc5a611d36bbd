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

// --- Renewal -------------------------------------------------------------------------------

/// A certificate of `org`'s CA for the key of its `role` member: the member's common name and
/// role unless changed, valid from `validity()`'s start to `not_after`.
fn reissue(
    ca: &OrgCa,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    cn: &str,
    role: Role,
    not_before: i64,
    not_after: i64,
) -> Signer {
    let cert = ca
        .issue_for_key(
            cn,
            role,
            Validity {
                not_before,
                not_after,
            },
            key,
        )
        .unwrap();
    Signer::new(&cert, key.clone()).unwrap()
}

/// `role`@org`org`'s certificate renewed by its own org's CA for one more year.
fn renewed(c: &Consortium, org: usize, role: Role) -> Signer {
    let o = &c.orgs[org];
    reissue(
        &o.ca,
        &o.members[&role].key,
        &format!("{role}@{}", o.id),
        role,
        validity().not_before,
        validity().not_after + 365 * 86_400,
    )
}

fn renew(new: &Signer) -> Vec<pb::Message> {
    vec![msg::renew_certificate(new.certificate_der().to_vec())]
}

#[test]
fn a_renewal_carries_balance_purchases_and_listings_over_and_retires_the_old_certificate() {
    use neurodata_abci::escrow::EscrowRead;
    use neurodata_abci::ledger::LedgerRead;
    use neurodata_abci::market::MarketRead;
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let provider = c.signer(0, Role::Provider);
    let buyer = c.signer(1, Role::Buyer);
    let key = neurodata_crypto::DataKey::generate().unwrap();
    t.ok(
        &provider,
        vec![msg::register_dataset(listing(&key, "100", 1))],
    );
    let dataset = t.a.storage().next_dataset_id().unwrap() - 1;
    t.ok(&buyer, vec![msg::buy(dataset, Amount(100))]);
    let purchase =
        t.a.storage()
            .live_purchase(&buyer.address(), dataset)
            .unwrap()
            .unwrap();

    // The buyer renews: its balance and open purchase follow it.
    let new_buyer = renewed(&c, 1, Role::Buyer);
    let balance = t.a.balance(buyer.address()) - 1; // the renewal's fee
    let o = t.ok(&buyer, renew(&new_buyer));
    let e = o
        .events
        .iter()
        .find(|e| e.kind == "certificate.renewed")
        .expect("certificate.renewed");
    assert_eq!(e.get("from"), Some(buyer.address().to_hex().as_str()));
    assert_eq!(e.get("to"), Some(new_buyer.address().to_hex().as_str()));
    assert_eq!(e.get("purchases"), Some("1"));
    let s = t.a.storage();
    assert_eq!(s.balance(&buyer.address()).unwrap(), Amount::ZERO);
    assert_eq!(s.balance(&new_buyer.address()).unwrap(), Amount(balance));
    let p = s.purchase(purchase).unwrap().unwrap();
    assert_eq!(
        p.buyer,
        new_buyer.address().0.to_vec(),
        "the purchase moved"
    );
    assert_eq!(
        s.live_purchase(&new_buyer.address(), dataset).unwrap(),
        Some(purchase)
    );
    // The chain of certificates, both ways.
    let old = s.identity(&buyer.address().0).unwrap().unwrap();
    let new = s.identity(&new_buyer.address().0).unwrap().unwrap();
    assert_eq!(old.renewed_to, new_buyer.address().0.to_vec());
    assert_eq!(old.successor, new_buyer.address().0.to_vec());
    assert_eq!(new.renewed_from, buyer.address().0.to_vec());
    assert_eq!(
        (
            new.org_id.as_str(),
            new.role.as_str(),
            new.common_name.as_str()
        ),
        ("org1", "buyer", "buyer@org1")
    );

    // The provider renews: its listing follows it.
    let new_provider = renewed(&c, 0, Role::Provider);
    let o = t.ok(&provider, renew(&new_provider));
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "certificate.renewed" && e.get("listings") == Some("1")),
        "{:?}",
        o.events
    );
    let d = t.a.storage().dataset(dataset).unwrap().unwrap();
    assert_eq!(d.provider, new_provider.address().0.to_vec());
    let p = t.a.storage().purchase(purchase).unwrap().unwrap();
    assert_eq!(
        p.provider,
        new_provider.address().0.to_vec(),
        "paid to the new"
    );

    // The new certificates sign; the old ones are refused, naming their successor.
    t.ok(&new_buyer, transfer_to_self(&new_buyer));
    t.ok(&new_provider, vec![msg::update_price(dataset, Amount(150))]);
    let o = t.reject_signed(&buyer, transfer_to_self(&buyer), "membership", 222);
    assert!(
        o.log.contains(&new_buyer.address().to_hex()),
        "names the successor: {}",
        o.log
    );
    t.reject_signed(&provider, renew(&new_provider), "membership", 222);
}

#[test]
fn a_renewal_is_refused_unless_the_new_certificate_is_the_same_members_later_one() {
    let c = Consortium::new(2, 1);
    let mut t = Twin::start(&c);
    let (o0, o1) = (&c.orgs[0], &c.orgs[1]);
    let buyer = c.signer(0, Role::Buyer);
    let key = &o0.members[&Role::Buyer].key;
    t.ok(&buyer, transfer_to_self(&buyer));
    let (from, later) = (validity().not_before, validity().not_after + 86_400);
    let outsider = TestOrg::new("outsider");
    let cases: Vec<(&str, Signer, u32, &str)> = vec![
        (
            "another org's CA",
            reissue(&o1.ca, key, "buyer@org0", Role::Buyer, from, later),
            223,
            "keeps the org",
        ),
        (
            "a CA of no org",
            reissue(&outsider.ca, key, "buyer@org0", Role::Buyer, from, later),
            23,
            "outsider CA",
        ),
        (
            "another common name",
            reissue(&o0.ca, key, "mallory@org0", Role::Buyer, from, later),
            223,
            "keeps the common name",
        ),
        (
            "another role",
            reissue(&o0.ca, key, "buyer@org0", Role::Admin, from, later),
            223,
            "keeps the role",
        ),
        (
            "an earlier expiry",
            reissue(
                &o0.ca,
                key,
                "buyer@org0",
                Role::Buyer,
                from,
                validity().not_after - 1,
            ),
            224,
            "not after the current one",
        ),
        (
            "the same expiry",
            reissue(
                &o0.ca,
                key,
                "buyer@org0",
                Role::Buyer,
                T0,
                validity().not_after,
            ),
            224,
            "a renewal extends",
        ),
        (
            "a notBefore after the block time",
            reissue(&o0.ca, key, "buyer@org0", Role::Buyer, T0 + 86_400, later),
            27,
            "not valid until",
        ),
        (
            "the signing certificate itself",
            c.signer(0, Role::Buyer),
            226,
            "the one signing",
        ),
    ];
    for (what, new, code, says) in cases {
        let o = t.reject_signed(&buyer, renew(&new), "membership", code);
        assert!(o.log.contains(says), "{what}: {}", o.log);
    }

    // A new certificate that was revoked before it was ever used.
    let revoked = reissue(&o0.ca, key, "buyer@org0", Role::Buyer, from, later + 1);
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::revoke(
            revoked.address(),
            Some(revoked.certificate_der().to_vec()),
            "issued by mistake",
        )],
    );
    t.reject_signed(&buyer, renew(&revoked), "membership", 29);

    // A new certificate that already holds an identity of its own.
    let used = reissue(&o0.ca, key, "buyer@org0", Role::Buyer, from, later + 2);
    t.ok(&buyer, vec![msg::transfer(used.address(), Amount(10))]);
    t.ok(&used, transfer_to_self(&used));
    let o = t.reject_signed(&buyer, renew(&used), "membership", 225);
    assert!(o.log.contains("never used"), "{}", o.log);

    // Not a certificate at all: refused before it is charged.
    let junk = buyer
        .sign(
            TxParams {
                chain_id: CHAIN.into(),
                nonce: neurodata_abci::ledger::LedgerRead::account(t.a.storage(), &buyer.address())
                    .unwrap()
                    .nonce,
                fee: Amount(1),
                attach_certificate: false,
                memo: String::new(),
            },
            vec![msg::renew_certificate(b"junk".to_vec())],
        )
        .unwrap();
    t.reject(junk, "membership", 20);
}

#[test]
fn a_renewal_must_be_the_last_message_of_its_tx() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let buyer = c.signer(0, Role::Buyer);
    t.ok(&buyer, transfer_to_self(&buyer));
    let new = renewed(&c, 0, Role::Buyer);
    // A message after the renewal would act as the retired certificate.
    let mut msgs = renew(&new);
    msgs.extend(transfer_to_self(&buyer));
    let o = t.reject_signed(&buyer, msgs, "tx", 11);
    assert!(o.log.contains("last message"), "{}", o.log);
    // Last is fine.
    let mut msgs = transfer_to_self(&buyer);
    msgs.extend(renew(&new));
    t.ok(&buyer, msgs);
    t.ok(&new, transfer_to_self(&new));
}

#[test]
fn an_expired_certificate_cannot_sign_its_renewal_and_is_told_to_ask_its_admin() {
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let ca = &c.orgs[0].ca;
    let key = neurodata_certs::new_p256_key().unwrap();
    // Valid through block 2's time only.
    let old = reissue(ca, &key, "late", Role::Buyer, T0 - 60, block_time(2));
    let fund = c.signer(0, Role::Provider);
    t.ok(&fund, vec![msg::transfer(old.address(), Amount(100))]);
    t.ok(&old, transfer_to_self(&old));
    let new = reissue(ca, &key, "late", Role::Buyer, T0 - 60, T0 + 86_400);
    let o = t.reject_signed(&old, renew(&new), "membership", 28);
    assert!(o.log.contains("MoveIdentity"), "{}", o.log);
    // The admin's move is the way out.
    t.ok(
        &c.signer(0, Role::Admin),
        vec![msg::move_identity(
            old.address(),
            new.address(),
            Some(new.certificate_der().to_vec()),
            "expired before renewal",
        )],
    );
    t.ok(&new, transfer_to_self(&new));
}

// --- Expiry notices ------------------------------------------------------------------------

/// The `certificate.expiring` events of a block: (kind, org, fingerprint).
fn expiring(b: &neurodata_abci::abci::FinalizedBlock) -> Vec<(String, String, String)> {
    b.block_events
        .iter()
        .filter(|e| e.kind == "certificate.expiring")
        .map(|e| {
            let get = |k| e.get(k).unwrap_or_default().to_owned();
            (get("kind"), get("org"), get("fingerprint"))
        })
        .collect()
}

const DAY: i64 = 86_400;

#[test]
fn live_certificates_and_org_cas_are_announced_once_as_they_enter_the_notice_window() {
    let mut c = Consortium::new(2, 1);
    c.params.cert_expiry_notice_secs = DAY as u64;
    // org1's CA expires a day after block 6's time: announced at the end of block 6.
    let ca_end = block_time(6) + DAY;
    let ca = OrgCa::create(
        "org1",
        "Org org1",
        Validity {
            not_before: T0 - 3600,
            not_after: ca_end,
        },
    )
    .unwrap();
    c.orgs[1] = TestOrg {
        id: "org1".into(),
        members: Role::ALL
            .into_iter()
            .map(|r| {
                let v = Validity {
                    not_before: T0 - 3600,
                    not_after: ca_end,
                };
                (r, ca.issue(&format!("{r}@org1"), r, v).unwrap())
            })
            .collect(),
        ca,
    };
    let mut n = TestNode::start(&c);
    let ca0 = &c.orgs[0].ca;
    let key = neurodata_certs::new_p256_key().unwrap();
    let member = |cn: &str, not_after: i64| reissue(ca0, &key, cn, Role::Buyer, T0 - 60, not_after);
    // Each enters the window (block time + 1 day) at the block its name says.
    let soon = member("soon", block_time(3) + DAY);
    let revoked = member("revoked", block_time(4) + DAY);
    let renewing = member("renewing", block_time(5) + DAY);
    let renewal = member("renewing", T0 + 400 * DAY);
    // Registered at block 7, when the window already reached past its expiry.
    let late = member("late", block_time(6) + 100);
    let admin = c.signer(0, Role::Admin);
    let fund = |n: &TestNode, nonce, to: &Signer| {
        n.sign_with(&admin, nonce, vec![msg::transfer(to.address(), Amount(10))])
    };
    let mut blocks: Vec<Vec<Vec<u8>>> = vec![vec![
        fund(&n, 0, &soon),
        fund(&n, 1, &revoked),
        fund(&n, 2, &renewing),
        fund(&n, 3, &late),
    ]];
    let mut seen = Vec::new();
    let mut run = |n: &mut TestNode, txs: Vec<Vec<u8>>| {
        let b = n.block(&txs);
        assert!(b.outcomes.iter().all(|o| o.code == 0), "{:?}", b.outcomes);
        seen.extend(expiring(&b).into_iter().map(|e| (n.height, e)));
    };
    run(&mut n, blocks.remove(0));
    let txs = vec![
        n.sign(&soon, transfer_to_self(&soon)),
        n.sign(&revoked, transfer_to_self(&revoked)),
        n.sign(&renewing, renew(&renewal)),
    ];
    run(&mut n, txs);
    let revoke = n.sign(&admin, vec![msg::revoke(revoked.address(), None, "left")]);
    run(&mut n, vec![revoke]);
    while n.height < 6 {
        run(&mut n, vec![]);
    }
    let register_late = n.sign(&late, transfer_to_self(&late));
    run(&mut n, vec![register_late]);
    run(&mut n, vec![]);

    let fp = |s: &Signer| s.address().to_hex();
    let ca1 = hex::encode(neurodata_certs::fingerprint(&c.orgs[1].ca.cert).unwrap());
    let m = |s: &Signer| ("member".to_owned(), "org0".to_owned(), fp(s));
    assert_eq!(
        seen,
        vec![
            (3, m(&soon)),
            (6, ("org_ca".into(), "org1".into(), ca1.clone())),
            (7, m(&late)),
        ],
        "once each, when it enters the window; never the revoked or the renewed one"
    );

    // The listing: what is live and expires within two days of the last block, soonest first.
    let list = neurodata_abci::membership::expiry::expiring(n.storage(), 2 * DAY as u64).unwrap();
    assert_eq!(list.block_time, block_time(8));
    let listed: Vec<(i32, String)> = list
        .certificates
        .iter()
        .map(|c| (c.kind, hex::encode(&c.fingerprint)))
        .collect();
    let (member_kind, ca_kind) = (
        pb::CertificateKind::Member as i32,
        pb::CertificateKind::OrgCa as i32,
    );
    assert_eq!(
        listed,
        vec![
            (member_kind, fp(&late)),
            (member_kind, fp(&soon)),
            (ca_kind, ca1)
        ],
    );
    let times: Vec<i64> = list.certificates.iter().map(|c| c.not_after).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // A window that ends before the first of them lists nothing.
    let none = neurodata_abci::membership::expiry::expiring(n.storage(), 60).unwrap();
    assert!(none.certificates.is_empty(), "{:?}", none.certificates);
}

#[test]
fn a_renewal_carries_a_worker_registration_and_a_validator_operator_role_over() {
    use neurodata_abci::governance::GovernanceRead;
    use neurodata_abci::training::TrainingRead;
    let c = Consortium::new(1, 1);
    let mut t = Twin::start(&c);
    let trainer = c.signer(0, Role::Trainer);
    t.ok(
        &trainer,
        vec![msg::register_worker(2, "https://gw.org0.example:27008")],
    );
    let new_trainer = renewed(&c, 0, Role::Trainer);
    t.ok(&trainer, renew(&new_trainer));
    let s = t.a.storage();
    assert_eq!(s.worker(&trainer.address()).unwrap(), None);
    let w = s.worker(&new_trainer.address()).unwrap().expect("moved");
    assert_eq!((w.capacity, w.org_id.as_str()), (2, "org0"));

    let validator = c.signer(0, Role::Validator);
    let new_validator = renewed(&c, 0, Role::Validator);
    let o = t.ok(&validator, renew(&new_validator));
    assert!(
        o.events
            .iter()
            .any(|e| e.kind == "certificate.renewed" && e.get("validators") == Some("1")),
        "{:?}",
        o.events
    );
    let operators = &t.a.storage().validators().unwrap()[0].operators;
    assert_eq!(operators, &vec![new_validator.address().0.to_vec()]);
}
