//! Test harness: a consortium of orgs with members of every role, and nodes driven in-process
//! through the same entry points the ABCI adapter calls.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;

use base64::Engine as _;
use neurodata_abci::abci::{FinalizedBlock, Node};
use neurodata_abci::address::Address;
use neurodata_abci::app::TxOutcome;
use neurodata_abci::genesis::{Allocation, AppState, GenesisOrg, GenesisParams, GenesisValidator};
use neurodata_abci::governance::Params;
use neurodata_abci::governance::jail::{Evidence, EvidenceKind};
use neurodata_abci::ledger::LedgerRead;
use neurodata_abci::membership::MembershipRead;
use neurodata_abci::storage::Storage;
use neurodata_certs::{Member, OrgCa, Role, Validity};
use neurodata_client::{Amount, Signer, TxParams};
use neurodata_crypto::DataKey;
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;

pub const CHAIN: &str = "neurodata-test";
/// Block time of height h is T0 + 5h.
pub const T0: i64 = 1_800_000_000;
pub const START_BALANCE: u128 = 1_000_000;

/// A stand-in for CometBFT's header hash of block `height`: distinct per height.
pub fn block_hash(height: u64) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(height.to_be_bytes()).into()
}

pub fn block_time(height: u64) -> i64 {
    T0 + 5 * height as i64
}

pub fn validity() -> Validity {
    Validity {
        not_before: T0 - 3600,
        not_after: T0 + 365 * 86_400,
    }
}

pub struct TestOrg {
    pub id: String,
    pub ca: OrgCa,
    pub members: BTreeMap<Role, Member>,
}

impl TestOrg {
    pub fn new(id: &str) -> Self {
        let ca = OrgCa::create(id, &format!("Org {id}"), validity()).unwrap();
        let members = Role::ALL
            .into_iter()
            .map(|r| (r, ca.issue(&format!("{r}@{id}"), r, validity()).unwrap()))
            .collect();
        TestOrg {
            id: id.into(),
            ca,
            members,
        }
    }

    pub fn signer(&self, role: Role) -> Signer {
        let m = &self.members[&role];
        Signer::new(&m.cert, m.key.clone()).unwrap()
    }

    pub fn ca_pem(&self) -> String {
        String::from_utf8(self.ca.cert.to_pem().unwrap()).unwrap()
    }
}

pub struct Consortium {
    pub orgs: Vec<TestOrg>,
    pub validators: Vec<([u8; 32], i64)>,
    pub params: Params,
}

impl Consortium {
    /// `n` orgs, each member funded with START_BALANCE, `v` validators of power 10.
    pub fn new(n: usize, v: usize) -> Self {
        let orgs = (0..n).map(|i| TestOrg::new(&format!("org{i}"))).collect();
        let validators = (0..v)
            .map(|_| {
                let mut k = [0u8; 32];
                openssl::rand::rand_bytes(&mut k).unwrap();
                (k, 10)
            })
            .collect();
        Consortium {
            orgs,
            validators,
            params: Params {
                min_fee: Amount(1),
                proposal_voting_blocks: 50,
                max_tx_bytes: 16 * 1024,
                max_messages_per_tx: 8,
                key_delivery_blocks: 5,
                confirm_blocks: 10,
                market_fee_bps: 200,
                // Rewards are paid only in the tests about them.
                reward_epoch_blocks: 0,
                ..Params::default()
            },
        }
    }

    pub fn signer(&self, org: usize, role: Role) -> Signer {
        self.orgs[org].signer(role)
    }

    pub fn app_state(&self) -> AppState {
        AppState {
            orgs: self
                .orgs
                .iter()
                .map(|o| GenesisOrg {
                    org_id: o.id.clone(),
                    name: format!("Org {}", o.id),
                    ca_cert_pem: o.ca_pem(),
                })
                .collect(),
            // Validator i is run by org i mod n.
            validators: self
                .validators
                .iter()
                .enumerate()
                .map(|(i, (key, power))| GenesisValidator {
                    name: format!("v{i}"),
                    org_id: self.orgs[i % self.orgs.len()].id.clone(),
                    pub_key: base64::engine::general_purpose::STANDARD.encode(key),
                    power: *power,
                    // Operated by the org's validator-role member.
                    operators: vec![
                        self.orgs[i % self.orgs.len()]
                            .signer(Role::Validator)
                            .address()
                            .to_hex(),
                    ],
                })
                .collect(),
            allocations: self
                .orgs
                .iter()
                .flat_map(|o| o.members.keys().map(|r| o.signer(*r).address()))
                .map(|a| Allocation {
                    address: a.to_hex(),
                    amount: START_BALANCE.to_string(),
                })
                .collect(),
            params: Some(GenesisParams::from(&self.params)),
        }
    }
}

pub struct TestNode {
    pub node: Node,
    pub dir: tempfile::TempDir,
    pub height: u64,
    pub genesis_hash: [u8; 32],
}

impl TestNode {
    pub fn start(c: &Consortium) -> Self {
        Self::start_with(c, &c.app_state())
    }

    /// A node whose genesis is `app_state` (the consortium's, amended), with `c`'s validators.
    pub fn start_with(c: &Consortium, app_state: &AppState) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(Storage::open(dir.path()).unwrap());
        let json = serde_json::to_vec(app_state).unwrap();
        let genesis_hash = node.init(CHAIN, &json, &c.validators, T0, 1).unwrap();
        TestNode {
            node,
            dir,
            height: 0,
            genesis_hash,
        }
    }

    pub fn storage(&self) -> &Storage {
        self.node.storage()
    }

    /// Finalizes and commits the next block with `txs`.
    pub fn block(&mut self, txs: &[Vec<u8>]) -> FinalizedBlock {
        self.block_with_misbehaviour(txs, &[])
    }

    /// Finalizes and commits the next block with `txs`, CometBFT's evidence `misbehaviour` in
    /// its FinalizeBlock.
    pub fn block_with_misbehaviour(
        &mut self,
        txs: &[Vec<u8>],
        misbehaviour: &[Evidence],
    ) -> FinalizedBlock {
        let h = self.height + 1;
        let b = self
            .node
            .finalize_with_misbehaviour(h, block_time(h), 0, block_hash(h), txs, misbehaviour)
            .unwrap();
        let c = self.node.commit_block().unwrap();
        assert_eq!(
            c.app_hash, b.app_hash,
            "Commit persisted the hash FinalizeBlock returned"
        );
        self.height = h;
        b
    }

    /// Signs with the signer's next nonce from the committed state, attaching the certificate
    /// when the chain has not seen it.
    pub fn sign(&self, signer: &Signer, msgs: Vec<pb::Message>) -> Vec<u8> {
        let nonce = self.storage().account(&signer.address()).unwrap().nonce;
        self.sign_with(signer, nonce, msgs)
    }

    pub fn sign_with(&self, signer: &Signer, nonce: u64, msgs: Vec<pb::Message>) -> Vec<u8> {
        let known = self
            .storage()
            .identity(&signer.address().0)
            .unwrap()
            .is_some();
        signer
            .sign(
                TxParams {
                    chain_id: CHAIN.into(),
                    nonce,
                    fee: Amount(1),
                    attach_certificate: !known,
                    memo: String::new(),
                },
                msgs,
            )
            .unwrap()
    }

    /// Runs one tx in its own block.
    pub fn run(&mut self, signer: &Signer, msgs: Vec<pb::Message>) -> TxOutcome {
        let tx = self.sign(signer, msgs);
        self.block(&[tx]).outcomes.remove(0)
    }

    /// Runs one tx that must succeed.
    pub fn ok(&mut self, signer: &Signer, msgs: Vec<pb::Message>) -> TxOutcome {
        let o = self.run(signer, msgs);
        assert_eq!(o.code, 0, "tx failed: {} {}", o.codespace, o.log);
        o
    }

    pub fn balance(&self, a: Address) -> u128 {
        self.storage().balance(&a).unwrap().0
    }
}

/// Two nodes with the same genesis kept in lockstep: a rejected tx goes to `a` inside a block,
/// `b` gets the same block without it, and their app hashes must stay equal.
pub struct Twin {
    pub a: TestNode,
    pub b: TestNode,
}

impl Twin {
    pub fn start(c: &Consortium) -> Self {
        let t = Twin {
            a: TestNode::start(c),
            b: TestNode::start(c),
        };
        assert_eq!(
            t.a.genesis_hash, t.b.genesis_hash,
            "genesis is deterministic"
        );
        t
    }

    pub fn apply(&mut self, txs: &[Vec<u8>]) -> FinalizedBlock {
        self.apply_with_misbehaviour(txs, &[])
    }

    /// A block with CometBFT's evidence: both nodes must jail alike, return the same validator
    /// updates and reach the same app hash.
    pub fn apply_with_misbehaviour(
        &mut self,
        txs: &[Vec<u8>],
        misbehaviour: &[Evidence],
    ) -> FinalizedBlock {
        let x = self.a.block_with_misbehaviour(txs, misbehaviour);
        let y = self.b.block_with_misbehaviour(txs, misbehaviour);
        assert_eq!(x.app_hash, y.app_hash);
        assert_eq!(x.validator_updates, y.validator_updates);
        x
    }

    pub fn ok(&mut self, signer: &Signer, msgs: Vec<pb::Message>) -> TxOutcome {
        let tx = self.a.sign(signer, msgs);
        let o = self.apply(&[tx]).outcomes.remove(0);
        assert_eq!(o.code, 0, "tx failed: {} {}", o.codespace, o.log);
        o
    }

    /// `tx` must be rejected with `code` in `codespace` and change nothing but what a failed tx
    /// pays: its signer's nonce and fee (to the reward pool), and the registration of a signer
    /// seen for the first time. A tx refused before it could be charged changes nothing at all.
    pub fn reject(&mut self, tx: Vec<u8>, codespace: &str, code: u32) -> TxOutcome {
        let before = all_state(self.a.storage());
        let x = self.apply(std::slice::from_ref(&tx));
        let o = x.outcomes[0].clone();
        assert_eq!(
            (o.codespace, o.code),
            (codespace, code),
            "unexpected outcome: {}",
            o.log
        );
        assert!(!o.log.is_empty(), "a rejection says why");
        for e in &o.events {
            assert!(
                ["fee.paid", "identity.registered"].contains(&e.kind.as_str()),
                "a rejected tx emitted {}",
                e.kind
            );
        }
        let after = all_state(self.a.storage());
        assert_only_charged(&before, &after, &tx);
        o
    }

    pub fn reject_signed(
        &mut self,
        signer: &Signer,
        msgs: Vec<pb::Message>,
        codespace: &str,
        code: u32,
    ) -> TxOutcome {
        let tx = self.a.sign(signer, msgs);
        self.reject(tx, codespace, code)
    }
}

/// CometBFT's evidence that the validator with Ed25519 key `key` signed two votes at `height`.
pub fn double_sign(key: &[u8; 32], height: u64) -> Evidence {
    Evidence {
        kind: EvidenceKind::DuplicateVote,
        address: neurodata_abci::training::attest::validator_address(key),
        height,
        time: block_time(height),
    }
}

/// Every key and value of the latest committed state.
pub fn all_state(storage: &Storage) -> BTreeMap<String, Vec<u8>> {
    use neurodata_abci::state::StateRead;
    storage.prefix_raw("").unwrap().into_iter().collect()
}

/// Asserts that `after` differs from `before` only by what charging `tx` (nonce, fee, first-use
/// registration) changes, or not at all.
pub fn assert_only_charged(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
    tx: &[u8],
) {
    use prost::Message as _;
    let body = pb::Tx::decode(tx)
        .ok()
        .and_then(|t| pb::TxBody::decode(t.body.as_slice()).ok());
    let mut changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        // Block-level bookkeeping every block writes: its height and time, and how far the
        // certificate expiry notices reached.
        .filter(|k| {
            before.get(*k) != after.get(*k)
                && !["chain/block", "membership/expiry-cursor"].contains(&k.as_str())
        })
        .collect();
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        return;
    }
    let body = body.expect("state changed for a tx that does not decode");
    let signer = Address::from_slice(&body.signer).unwrap();
    let fee: u128 = body.fee.parse().unwrap_or(0);
    let account = |m: &BTreeMap<String, Vec<u8>>, a: Address| {
        m.get(&format!("ledger/account/{}", a.to_hex()))
            .map(|b| pb::Account::decode(b.as_slice()).unwrap())
            .unwrap_or_default()
    };
    let balance = |a: &pb::Account| a.balance.parse::<u128>().unwrap_or(0);
    let (was, now) = (account(before, signer), account(after, signer));
    assert_eq!(now.nonce, was.nonce + 1, "a charged tx uses its nonce");
    assert_eq!(
        balance(&now),
        balance(&was) - fee,
        "a charged tx pays its fee"
    );
    let pool = Address::reward_pool();
    assert_eq!(
        balance(&account(after, pool)),
        balance(&account(before, pool)) + fee,
        "the fee goes to the reward pool"
    );
    let allowed = [
        format!("ledger/account/{}", signer.to_hex()),
        format!("ledger/account/{}", pool.to_hex()),
        format!("membership/identity/{}", signer.to_hex()),
    ];
    // A first-use registration also files the signer's certificate in the expiry index.
    let expiry_entry = |k: &str| {
        (k.starts_with("membership/expiry/") || k.starts_with("membership/expiry-late/"))
            && k.ends_with(&format!("/member/{}", signer.to_hex()))
    };
    for k in changed {
        assert!(
            allowed.contains(k) || expiry_entry(k),
            "a rejected tx changed {k} beyond its fee and nonce"
        );
    }
}

/// The schema of the test listings: age, chol, target.
pub fn schema() -> pb::Schema {
    let col = |name: &str, t: pb::ColumnType| pb::Column {
        name: name.into(),
        r#type: t as i32,
    };
    pb::Schema {
        columns: vec![
            col("age", pb::ColumnType::Int),
            col("chol", pb::ColumnType::Float),
            col("target", pb::ColumnType::Bool),
        ],
    }
}

/// A listing of a real encrypted CSV under `key`.
pub fn listing(key: &DataKey, price: &str, salt: u8) -> pb::RegisterDataset {
    let plain = format!("age,chol,target\n63,233.0,1\n{salt},250.5,0\n");
    let mut ct = Vec::new();
    let (sha, size) =
        neurodata_crypto::stream::encrypt(plain.as_bytes(), &mut ct, key, 1024).unwrap();
    pb::RegisterDataset {
        cid: Cid::of(&ct).to_string(),
        plaintext_sha256: sha.to_vec(),
        key_commitment: key.commitment().to_vec(),
        size,
        ciphertext_size: ct.len() as u64,
        rows: 2,
        schema: Some(schema()),
        price: price.into(),
        license: "CC-BY-4.0".into(),
        title: "heart".into(),
        location: "https://gw.org0.example:27008".into(),
        ..Default::default()
    }
}
