//! The authorization matrix: every chain message × every role × every certificate state, each
//! cell one tx of one message executed in a block on an in-process node, classified by what
//! decided it, checked against the membership rule, and compared with the checked-in
//! `docs/authz-matrix.md`. With `NEURODATA_BLESS=1` the test rewrites that file instead of
//! comparing. A message added to the `actions!` table fails here until it has a sample in
//! [`samples`] and its rows are blessed.
//!
//! One world holds a signer of every role in every state (the states need different orgs and
//! histories, none of which excludes another). Each cell's tx runs in a FinalizeBlock of the
//! next height that is never committed, so every cell sees the same committed state.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fmt;

use common::*;
use neurodata_abci::address::Address;
use neurodata_abci::app::TxOutcome;
use neurodata_abci::events::EventKind;
use neurodata_abci::genesis::Allocation;
use neurodata_abci::membership::MembershipError;
use neurodata_abci::tx::{EnvelopeLimits, MESSAGES, Tx};
use neurodata_certs::{Role, Validity};
use neurodata_client::{Amount, Signer, TxParams, msg};
use neurodata_crypto::cid::Cid;
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use pb::proposal_action::Action as A;

const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/authz-matrix.md");

/// A state a signer's certificate can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CertState {
    Active,
    Revoked,
    Expired,
    NotYetValid,
    OrgRemoved,
    CaRotated,
    ForeignCa,
}

impl CertState {
    const ALL: [CertState; 7] = [
        CertState::Active,
        CertState::Revoked,
        CertState::Expired,
        CertState::NotYetValid,
        CertState::OrgRemoved,
        CertState::CaRotated,
        CertState::ForeignCa,
    ];

    fn title(self) -> &'static str {
        match self {
            CertState::Active => "active",
            CertState::Revoked => "revoked",
            CertState::Expired => "expired",
            CertState::NotYetValid => "not yet valid",
            CertState::OrgRemoved => "org removed",
            CertState::CaRotated => "CA rotated out",
            CertState::ForeignCa => "foreign CA",
        }
    }

    /// The certificate each role signs with in this state.
    fn holder(self) -> &'static str {
        match self {
            CertState::Active => {
                "issued by its org's current CA, registered by an earlier tx, within its \
                 validity, not revoked"
            }
            CertState::Revoked => "registered, then revoked by its org's admin",
            CertState::Expired => "registered while valid; its notAfter is before the block time",
            CertState::NotYetValid => "never used; its notBefore is after the block time",
            CertState::OrgRemoved => "registered, then its org removed by governance",
            CertState::CaRotated => {
                "registered, then its org's CA rotated by governance (it is the old CA's)"
            }
            CertState::ForeignCa => "never used; issued by a CA no org was admitted with",
        }
    }

    /// The membership rule's refusal of a signer in this state, whatever it sends (None: it is a
    /// member, and its role decides).
    fn refusal(self) -> Option<MembershipError> {
        let s = String::new;
        match self {
            CertState::Active => None,
            CertState::Revoked => Some(MembershipError::Revoked {
                fingerprint: s(),
                height: 0,
            }),
            CertState::Expired => Some(MembershipError::Expired {
                not_after: 0,
                block_time: 0,
            }),
            CertState::NotYetValid => Some(MembershipError::NotYetValid {
                not_before: 0,
                block_time: 0,
            }),
            CertState::OrgRemoved => Some(MembershipError::OrgNotActive { org: s() }),
            CertState::CaRotated => Some(MembershipError::CaRotated { org: s() }),
            CertState::ForeignCa => Some(MembershipError::UnknownCa { issuer: s() }),
        }
    }
}

fn role_refusal() -> MembershipError {
    MembershipError::RoleNotAllowed {
        role: String::new(),
        message: "",
        allowed: String::new(),
    }
}

/// The variant's name, for the legend.
fn variant(e: &MembershipError) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What decided a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// The tx committed.
    Ok,
    /// Membership admitted the signer; the message's own checks refused it.
    PassesAuth,
    /// Membership refused the signer before the tx was charged.
    Refused { codespace: &'static str, code: u32 },
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Ok => f.write_str("ok"),
            Cell::PassesAuth => f.write_str("passes-auth"),
            Cell::Refused { codespace, code } => write!(f, "refused:{codespace}/{code}"),
        }
    }
}

/// Membership runs before the fee is charged and the messages after, so a charged tx got past
/// authorization whatever its messages failed with (membership's own actions, revocation and
/// moves, refuse in the membership codespace too).
fn classify(o: &TxOutcome) -> Cell {
    if o.code == 0 {
        return Cell::Ok;
    }
    if o.events.iter().any(|e| e.kind == EventKind::FeePaid) {
        return Cell::PassesAuth;
    }
    assert_eq!(
        o.codespace, "membership",
        "refused before its messages ran, but not by membership (a harness bug): {}",
        o.log
    );
    Cell::Refused {
        codespace: o.codespace,
        code: o.code,
    }
}

/// Whether `cell` is what the membership rule says for a signer in `state` with `role` sending a
/// message `allowed` roles may send: the state's refusal, else the role's, else not refused.
fn follows_the_rule(cell: Cell, state: CertState, role: Role, allowed: &[Role]) -> bool {
    let refusal = state
        .refusal()
        .or_else(|| (!allowed.contains(&role)).then(role_refusal));
    match (refusal, cell) {
        (Some(e), Cell::Refused { codespace, code }) => {
            (codespace, code) == ("membership", e.code())
        }
        (None, Cell::Ok | Cell::PassesAuth) => true,
        _ => false,
    }
}

/// org0's members sign in the active state and own what the samples act on; org1 is another
/// active org that trades with it; org2 is removed and org3's CA rotated by governance.
const ACTIVE: usize = 0;
const PEER: usize = 1;
const REMOVED: usize = 2;
const ROTATED: usize = 3;

/// What the samples refer to besides ids.
struct Fixtures {
    /// Buyer of purchase 1 (dataset 1, org0's), waiting for its key.
    peer_buyer: Address,
    /// Dataset 1's key wrapped to `peer_buyer`.
    delivery: Vec<u8>,
    /// org0's buyer's proof about the key delivered for its purchase 2.
    dispute_proof: Vec<u8>,
    /// A certificate of org0 the chain never saw, for revocation.
    revokee: Signer,
    /// A registered identity of org0 and a successor the chain never saw, for a move.
    leaver: Address,
    successor: Signer,
    /// An org nobody proposed yet.
    newcomer: TestOrg,
}

/// The world every cell runs in: the node, and the signer of each role in each state.
struct World {
    node: TestNode,
    signers: BTreeMap<(CertState, Role), Signer>,
    fixtures: Fixtures,
    limits: EnvelopeLimits,
}

/// Commits one block of txs from distinct signers, each of which must succeed.
fn commit(n: &mut TestNode, txs: &[(&Signer, Vec<pb::Message>)]) {
    let signed: Vec<Vec<u8>> = txs.iter().map(|(s, m)| n.sign(s, m.clone())).collect();
    let block = n.block(&signed);
    for (o, (s, m)) in block.outcomes.iter().zip(txs) {
        assert_eq!(
            o.code,
            0,
            "setup tx {m:?} of {} failed: {} {}",
            s.address(),
            o.codespace,
            o.log
        );
    }
}

fn spki(s: &Signer) -> Vec<u8> {
    openssl::x509::X509::from_der(s.certificate_der())
        .unwrap()
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap()
}

/// A logistic regression on the test listing's columns.
fn spec() -> String {
    serde_json::json!({
        "schema": {
            "columns": [
                {"name": "age", "type": "numeric"},
                {"name": "chol", "type": "numeric"},
                {"name": "target", "type": "categorical"}
            ],
            "target": "target"
        },
        "model": {"algorithm": "logistic_regression", "l2": 0.001},
        "seed": 7,
        "training": {"epochs": 5, "batch_size": 4, "optimizer": {"kind": "adam", "lr": 0.01}},
        "checkpoint_every": 2
    })
    .to_string()
}

fn job(dataset: u64, deadline: i64) -> pb::SubmitJob {
    pb::SubmitJob {
        dataset_ids: vec![dataset],
        spec_json: spec(),
        bounty: "5000".into(),
        stake: "1000".into(),
        deadline,
        sample_bps: 2_500,
    }
}

fn world() -> World {
    let mut c = Consortium::new(4, 1);
    // Windows longer than the setup, so nothing it opens closes before the matrix block.
    c.params.key_delivery_blocks = 100;
    c.params.confirm_blocks = 100;
    let org0 = &c.orgs[ACTIVE].ca;
    let issue = |role: Role, validity: Validity| {
        let m = org0
            .issue(&format!("{role}-matrix"), role, validity)
            .unwrap();
        Signer::new(&m.cert, m.key).unwrap()
    };
    let each_role = |validity: Validity| -> BTreeMap<Role, Signer> {
        Role::ALL.map(|r| (r, issue(r, validity))).into()
    };
    let mut revoked = each_role(validity());
    // Valid through block 1's time: registered there, expired from block 2 on.
    let mut expired = each_role(Validity {
        not_before: T0 - 3600,
        not_after: block_time(1),
    });
    let mut not_yet_valid = each_role(Validity {
        not_before: T0 + 365 * 86_400,
        not_after: T0 + 730 * 86_400,
    });
    let foreign = TestOrg::new("outsider");
    let fixtures_leaver = issue(Role::Buyer, validity());
    let revokee = issue(Role::Trainer, validity());
    let successor = issue(Role::Buyer, validity());

    let mut genesis = c.app_state();
    for s in revoked
        .values()
        .chain(expired.values())
        .chain([&fixtures_leaver])
    {
        genesis.allocations.push(Allocation {
            address: s.address().to_hex(),
            amount: START_BALANCE.to_string(),
        });
    }
    let mut n = TestNode::start_with(&c, &genesis);
    let member = |org: usize, role| c.signer(org, role);
    let (provider0, buyer0, admin0) = (
        member(ACTIVE, Role::Provider),
        member(ACTIVE, Role::Buyer),
        member(ACTIVE, Role::Admin),
    );
    let (provider1, buyer1, admin1) = (
        member(PEER, Role::Provider),
        member(PEER, Role::Buyer),
        member(PEER, Role::Admin),
    );
    let admin3 = member(ROTATED, Role::Admin);

    // Block 1: every certificate that is to be registered is, by a first tx.
    let members: Vec<Signer> = [ACTIVE, PEER, REMOVED, ROTATED]
        .into_iter()
        .flat_map(|o| Role::ALL.map(|r| member(o, r)))
        .collect();
    let registering: Vec<(&Signer, Vec<pb::Message>)> = members
        .iter()
        .chain(revoked.values())
        .chain(expired.values())
        .chain([&fixtures_leaver])
        .map(|s| (s, vec![msg::transfer(s.address(), Amount(1))]))
        .collect();
    commit(&mut n, &registering);

    // Block 2: org0 lists dataset 1 and org1 dataset 2; org0's admin revokes; org1's trainer
    // offers to work.
    let keys: Vec<DataKey> = (0..3).map(|_| DataKey::generate().unwrap()).collect();
    commit(
        &mut n,
        &[
            (
                &provider0,
                vec![msg::register_dataset(listing(&keys[0], "1000", 1))],
            ),
            (
                &provider1,
                vec![msg::register_dataset(listing(&keys[1], "1000", 2))],
            ),
            (
                &admin0,
                revoked
                    .values()
                    .map(|s| msg::revoke(s.address(), None, "matrix"))
                    .collect(),
            ),
            (
                &member(PEER, Role::Trainer),
                vec![msg::register_worker(1, "https://gw.org1.example:27008")],
            ),
        ],
    );

    // Block 3: org1 lists dataset 3; org1 buys dataset 1 (purchase 1), org0 dataset 2
    // (purchase 2); org0 proposes to remove org2 (proposal 1).
    commit(
        &mut n,
        &[
            (
                &provider1,
                vec![msg::register_dataset(listing(&keys[2], "1000", 3))],
            ),
            (&buyer1, vec![msg::buy(1, Amount(1000))]),
            (&buyer0, vec![msg::buy(2, Amount(1000))]),
            (
                &admin0,
                vec![msg::propose(
                    "remove org2",
                    A::RemoveOrg(pb::RemoveOrg {
                        org_id: c.orgs[REMOVED].id.clone(),
                    }),
                )],
            ),
        ],
    );

    // Block 4: org1 and org3 approve, so org2 is removed (3 of 4 orgs); org1 delivers purchase
    // 2's key; org0's provider asks for training on dataset 1 (job 1).
    let wrapped_to_buyer0 = wrap::wrap(&keys[1], &spki(&buyer0)).unwrap();
    let deadline = block_time(n.height + 1) + 7_200;
    commit(
        &mut n,
        &[
            (&admin1, vec![msg::vote(1, true)]),
            (&admin3, vec![msg::vote(1, true)]),
            (
                &provider1,
                vec![msg::deliver_key(
                    2,
                    buyer0.address(),
                    wrapped_to_buyer0.to_bytes(),
                )],
            ),
            (&provider0, vec![msg::submit_job(job(1, deadline))]),
        ],
    );

    // Blocks 5 and 6: org3's CA rotated (proposal 2, all three active orgs).
    let rotated_ca = TestOrg::new(&c.orgs[ROTATED].id);
    commit(
        &mut n,
        &[(
            &admin0,
            vec![msg::propose(
                "rotate org3's CA",
                A::RotateOrgCa(pb::RotateOrgCa {
                    org_id: c.orgs[ROTATED].id.clone(),
                    ca_cert_pem: rotated_ca.ca_pem(),
                    // No grace: the old CA's certificates are refused from the next block on.
                    grace_secs: 0,
                }),
            )],
        )],
    );
    commit(
        &mut n,
        &[
            (&admin1, vec![msg::vote(2, true)]),
            (&admin3, vec![msg::vote(2, true)]),
        ],
    );

    // Block 7: org1 proposes an org (proposal 3), open for org0's vote.
    let visitor = TestOrg::new("visitor");
    commit(
        &mut n,
        &[(
            &admin1,
            vec![msg::propose(
                "admit visitor",
                A::AdmitOrg(pb::AdmitOrg {
                    org_id: visitor.id.clone(),
                    name: "Visitor".into(),
                    ca_cert_pem: visitor.ca_pem(),
                }),
            )],
        )],
    );

    let mut signers = BTreeMap::new();
    for role in Role::ALL {
        let mut put = |state, s: Signer| signers.insert((state, role), s);
        put(CertState::Active, member(ACTIVE, role));
        put(CertState::Revoked, revoked.remove(&role).unwrap());
        put(CertState::Expired, expired.remove(&role).unwrap());
        put(CertState::NotYetValid, not_yet_valid.remove(&role).unwrap());
        put(CertState::OrgRemoved, member(REMOVED, role));
        put(CertState::CaRotated, member(ROTATED, role));
        put(CertState::ForeignCa, foreign.signer(role));
    }
    let dispute_proof = dleq::prove(
        &wrapped_to_buyer0,
        &c.orgs[ACTIVE].members[&Role::Buyer].key,
    )
    .unwrap()
    .to_bytes();
    let fixtures = Fixtures {
        peer_buyer: buyer1.address(),
        delivery: wrap::wrap(&keys[0], &spki(&buyer1)).unwrap().to_bytes(),
        dispute_proof,
        revokee,
        leaver: fixtures_leaver.address(),
        successor,
        newcomer: TestOrg::new("newcomer"),
    };
    World {
        node: n,
        signers,
        fixtures,
        limits: EnvelopeLimits {
            chain_id: CHAIN.into(),
            max_tx_bytes: c.params.max_tx_bytes,
            max_messages: c.params.max_messages_per_tx,
        },
    }
}

fn cid(i: u8) -> String {
    Cid::of(&[i]).to_string()
}

/// One well-formed message of every type (each passes its message's stateless checks), acting
/// on the world's objects: dataset 1 (org0's, bought by org1: purchase 1, no key yet), datasets
/// 2 and 3 (org1's; org0's buyer bought 2: purchase 2, key delivered), job 1 (org0's provider's,
/// on dataset 1), proposal 3 (org1's, open). No model version exists, so the models' messages
/// are refused by their own checks whoever sends them.
fn samples(f: &Fixtures, next_height: u64) -> Vec<pb::Message> {
    let key = DataKey::generate().unwrap();
    let split = listing(&key, "0", 9);
    let encrypted = |plain: &[u8]| {
        let mut ct = Vec::new();
        neurodata_crypto::stream::encrypt(plain, &mut ct, &key, 1024).unwrap();
        ct
    };
    let (model, onnx) = (encrypted(&[1; 300]), encrypted(&[2; 200]));
    vec![
        msg::transfer(f.peer_buyer, Amount(1)),
        msg::revoke(
            f.revokee.address(),
            Some(f.revokee.certificate_der().to_vec()),
            "matrix",
        ),
        msg::propose(
            "admit newcomer",
            A::AdmitOrg(pb::AdmitOrg {
                org_id: f.newcomer.id.clone(),
                name: "Newcomer".into(),
                ca_cert_pem: f.newcomer.ca_pem(),
            }),
        ),
        msg::vote(3, true),
        msg::register_dataset(listing(&key, "1000", 4)),
        msg::update_price(1, Amount(2000)),
        msg::delist(1),
        msg::buy(3, Amount(1000)),
        msg::request_validation(3),
        msg::deliver_key(1, f.peer_buyer, f.delivery.clone()),
        msg::confirm(2),
        msg::refund(2),
        msg::dispute(2, f.dispute_proof.clone()),
        msg::attest(pb::AttestDataset {
            dataset_id: 3,
            ciphertext_matches_cid: true,
            plaintext_matches: true,
            rows: 2,
            schema_matches: true,
        }),
        msg::move_identity(
            f.leaver,
            f.successor.address(),
            Some(f.successor.certificate_der().to_vec()),
            "matrix",
        ),
        msg::request_preview(3),
        msg::register_worker(1, "https://gw.org0.example:27008"),
        msg::submit_job(job(1, block_time(next_height) + 7_200)),
        msg::accept_job(1),
        msg::submit_result(pb::SubmitResult {
            job_id: 1,
            model_sha256: vec![1; 32],
            trace_root: vec![2; 32],
            segments: 2,
            metrics_json: r#"{"accuracy":0.5}"#.into(),
            model_cid: cid(1),
            onnx_cid: cid(2),
            trace_cid: cid(3),
            checkpoint_cids: (0..=2).map(|i| cid(10 + i)).collect(),
            sandbox_sha256: Vec::new(),
        }),
        msg::cancel_job(1),
        msg::request_job_keys(1),
        msg::register_eval_split(pb::RegisterEvalSplit {
            dataset_id: 1,
            cid: split.cid,
            plaintext_sha256: split.plaintext_sha256,
            key_commitment: split.key_commitment,
            size: split.size,
            ciphertext_size: split.ciphertext_size,
            rows: split.rows,
            schema: split.schema,
            format: split.format,
            location: split.location,
        }),
        msg::request_evaluation(1, 1),
        msg::publish_model(pb::PublishModel {
            model_version: 1,
            price: "1000".into(),
            license: "CC-BY-4.0".into(),
            intended_use: "screening research".into(),
            model_cid: Cid::of(&model).to_string(),
            onnx_cid: Cid::of(&onnx).to_string(),
            key_commitment: key.commitment().to_vec(),
            model_ciphertext_size: model.len() as u64,
            onnx_ciphertext_size: onnx.len() as u64,
            location: "https://gw.org0.example:27008".into(),
            card: None,
        }),
        msg::update_model_price(1, Amount(2000)),
        msg::delist_model(1),
        msg::buy_model(1, Amount(1000)),
        // A certificate of another member (not the signer's own renewal): membership decides
        // first, then the renewal's own checks refuse it.
        msg::renew_certificate(f.successor.certificate_der().to_vec()),
        msg::attest_model_listing(pb::AttestModelListing {
            listing_id: 1,
            ciphertexts_match_cids: true,
            model_matches: true,
            onnx_matches: true,
        }),
    ]
}

/// The samples by the name of the message each decodes to, through the chain's own stateless
/// checks.
fn samples_by_name(w: &World) -> BTreeMap<&'static str, pb::Message> {
    let anyone = &w.signers[&(CertState::Active, Role::Admin)];
    let mut by_name = BTreeMap::new();
    for m in samples(&w.fixtures, w.node.height + 1) {
        let params = TxParams {
            chain_id: CHAIN.into(),
            nonce: 0,
            fee: Amount(1),
            attach_certificate: false,
            memo: String::new(),
        };
        let tx = anyone.sign(params, vec![m.clone()]).unwrap();
        let decoded = Tx::decode(&tx, &w.limits)
            .unwrap_or_else(|e| panic!("sample {m:?} fails its stateless checks: {e}"));
        let name = decoded.body.messages[0].name();
        assert!(by_name.insert(name, m).is_none(), "two samples of {name}");
    }
    by_name
}

/// Runs `tx` in a FinalizeBlock of the next height, which is never committed.
fn trial(n: &TestNode, tx: &[u8]) -> TxOutcome {
    let h = n.height + 1;
    n.node
        .finalize(h, block_time(h), 0, block_hash(h), &[tx])
        .unwrap()
        .outcomes
        .remove(0)
}

type Results = BTreeMap<(CertState, &'static str, Role), Cell>;

fn render(results: &Results) -> String {
    let mut codes: BTreeMap<u32, String> = CertState::ALL
        .iter()
        .filter_map(|s| s.refusal())
        .chain([role_refusal()])
        .map(|e| (e.code(), variant(&e)))
        .collect();
    codes.retain(|code, _| {
        results
            .values()
            .any(|c| matches!(c, Cell::Refused { code: x, .. } if x == code))
    });
    let mut out = String::from(
        "# Authorization matrix: chain messages\n\
         \n\
         <!-- Generated by abci-app/tests/authz_matrix.rs; do not edit by hand. -->\n\
         \n\
         Every chain message (the `actions!` table in `abci-app/src/tx.rs`) signed by a member \
         of each role\nwhose certificate is in each state, as one tx in a block of an in-process \
         node. A cell says\nwhat decided the tx:\n\
         \n\
         - `ok`: it committed.\n\
         - `passes-auth`: membership admitted the signer, and the message's own checks refused \
         it (the\n  sample acts on an object the signer may not act on, or one that does not \
         exist).\n\
         - `refused:<codespace>/<code>`: membership refused the signer before the tx was \
         charged:\n",
    );
    for (code, name) in &codes {
        out += &format!("  - `membership/{code}`: {name}\n");
    }
    out += "\n\
        The test checks every cell against the membership rule (a certificate that is not \
        active is\nrefused for its state whatever it sends; an active one is refused for its \
        role unless the message\nallows it) and this file against the cells. After changing \
        a message, its roles or the rule,\nregenerate it and review the diff:\n\
        \n\
        \x20   NEURODATA_BLESS=1 cargo test -p neurodata-abci --test authz_matrix\n\
        \n\
        What the gateway admits: [authz-matrix-gateway.md](authz-matrix-gateway.md).\n";
    let header: Vec<String> = std::iter::once("message".to_owned())
        .chain(Role::ALL.iter().map(|r| r.to_string()))
        .collect();
    for state in CertState::ALL {
        out += &format!(
            "\n## {}\n\nCertificate: {}.\n\n",
            state.title(),
            state.holder()
        );
        let rows: Vec<Vec<String>> = MESSAGES
            .iter()
            .map(|(name, _)| {
                std::iter::once(name.to_string())
                    .chain(
                        Role::ALL
                            .iter()
                            .map(|r| results[&(state, *name, *r)].to_string()),
                    )
                    .collect()
            })
            .collect();
        out += &markdown_table(&header, &rows);
    }
    out
}

/// A markdown table with padded columns, so the file reads as a table in plain text too.
fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.to_vec());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// The lines that differ between `old` and `new` (a longest-common-subsequence diff), each with
/// the section it is in.
fn diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let sections = |lines: &[&str]| -> Vec<String> {
        let mut current = String::new();
        lines
            .iter()
            .map(|l| {
                if let Some(s) = l.strip_prefix("## ") {
                    current = s.to_owned();
                }
                current.clone()
            })
            .collect()
    };
    let (sa, sb) = (sections(&a), sections(&b));
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- [{}] {}\n", sa[i], a[i]);
            i += 1;
        } else {
            out += &format!("+ [{}] {}\n", sb[j], b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn every_message_role_and_certificate_state_is_decided_as_the_checked_in_matrix_says() {
    let w = world();
    let samples = samples_by_name(&w);
    let missing: Vec<&str> = MESSAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !samples.contains_key(name))
        .collect();
    assert!(
        missing.is_empty(),
        "no sample of {missing:?}: add a well-formed one to `samples` in {}",
        file!()
    );

    let mut results = Results::new();
    let mut broken = Vec::new();
    for state in CertState::ALL {
        for role in Role::ALL {
            let signer = &w.signers[&(state, role)];
            for (name, allowed) in MESSAGES {
                let tx = w.node.sign(signer, vec![samples[name].clone()]);
                let outcome = trial(&w.node, &tx);
                let cell = classify(&outcome);
                if !follows_the_rule(cell, state, role, allowed) {
                    broken.push(format!(
                        "{name} by a {role} ({}): {cell}: {} {}",
                        state.title(),
                        outcome.codespace,
                        outcome.log
                    ));
                }
                results.insert((state, *name, role), cell);
            }
        }
    }
    assert!(
        broken.is_empty(),
        "cells against the membership rule:\n{}",
        broken.join("\n")
    );

    let rendered = render(&results);
    if std::env::var("NEURODATA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(TABLE, &rendered).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(TABLE).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "docs/authz-matrix.md differs from what the chain decides (- file, + now); if the \
         change is intended, rerun with NEURODATA_BLESS=1 and commit the file:\n{}",
        diff(&checked_in, &rendered)
    );
}
