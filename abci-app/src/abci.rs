//! The ABCI 2.0 adapter for CometBFT v0.38: decode the request, call the state machine, encode the
//! response. No business rule lives here.
//!
//! Consensus-connection calls arrive one at a time; CheckTx and Query read the last committed
//! state concurrently. Crash rules: FinalizeBlock computes the app hash and keeps the block in
//! memory; Commit writes it atomically; Info reports the last committed height and hash, so after
//! a crash CometBFT replays from there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use tendermint::abci::types::{ExecTxResult, MisbehaviorKind};
use tendermint::abci::{Event as AbciEvent, EventAttributeIndexExt, response};
use tendermint::merkle::proof::{ProofOp, ProofOps};
use tendermint::v0_38::abci::request;
use tendermint::v0_38::abci::{
    ConsensusRequest, ConsensusResponse, InfoRequest, InfoResponse, MempoolRequest,
    MempoolResponse, SnapshotRequest, SnapshotResponse,
};
use tower_abci::BoxError;

use crate::TxError;
use crate::address::Address;
use crate::app::{self, BlockCtx, Mode};
use crate::extension::{self, Attester, InjectError};
use crate::fault;
use crate::genesis::{self, AppState};
use crate::governance::GovernanceRead;
use crate::governance::jail::{self, Evidence, EvidenceKind};
use crate::governance::upgrade::{self, AtBlock, Upgrade};
use crate::query::{self, Proof, Query};
use crate::snapshot::{Applied, OfferError, Restore, SnapshotError, Snapshots};
use crate::state::{Event, MemoryState, ReadCache, StateDelta};
use crate::storage::{Committed, PreparedCommit, Storage, StorageError};
use crate::tx::{EnvelopeError, EnvelopeLimits, Tx};
use crate::verifier::SignatureVerifier;

/// Name and version reported in Info.
pub const APP_NAME: &str = "neurodata";

/// What FinalizeBlock produced.
#[derive(Clone, Debug)]
pub struct FinalizedBlock {
    /// One outcome per tx, in order.
    pub outcomes: Vec<app::TxOutcome>,
    /// Validator power changes for CometBFT.
    pub validator_updates: Vec<([u8; 32], i64)>,
    /// The new app hash.
    pub app_hash: [u8; 32],
    /// Events of the block-level work: CometBFT's evidence handled before the txs (validators
    /// jailed), then the end-of-block work (escrow purchases closing by themselves, ...).
    pub block_events: Vec<Event>,
}

/// Why ProcessProposal refuses a block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// A tx no honest PrepareProposal includes: it does not decode or is oversize.
    #[error("tx {index} is not a tx: {error}")]
    Undecodable {
        /// Its position in the block.
        index: usize,
        /// Why it does not decode.
        error: TxError,
    },
    /// The injected votes are misplaced or do not verify.
    #[error(transparent)]
    Injected(#[from] InjectError),
}

/// A block executed by FinalizeBlock, waiting for Commit.
struct PendingBlock {
    prepared: PreparedCommit,
}

/// The application behind the four ABCI connections.
pub struct Node {
    storage: Storage,
    verifier: SignatureVerifier,
    pending: Mutex<Option<PendingBlock>>,
    /// Each signer's account (nonce and balance) as the txs admitted to the mempool since the
    /// last commit leave it; rebuilt by CometBFT's recheck after every commit.
    mempool_accounts: Mutex<BTreeMap<Address, pb::Account>>,
    /// This validator's identity and verdict inbox, when it attests training results.
    attester: Option<Attester>,
    /// The state-sync snapshots this node takes and serves.
    snapshots: Option<Snapshots>,
    /// The snapshot being restored while this node joins by state sync.
    restore: Mutex<Option<Restore>>,
    /// The software upgrades this build knows.
    upgrades: Vec<Upgrade>,
}

/// An upgrade is due at this height and this build does not know it: the node stops before
/// executing the block (see [`crate::governance::upgrade`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "UPGRADE NEEDED: upgrade {name:?} is scheduled at height {height} and this build does not \
     know it. Nothing of height {height} was executed. Stop this node's CometBFT and start a \
     build that knows {name:?} (info: {info:?}); the handshake replays the block into it."
)]
pub struct UpgradeNeeded {
    /// The upgrade.
    pub name: String,
    /// Its height.
    pub height: u64,
    /// Its plan's notes.
    pub info: String,
}

/// This build does not know an upgrade the state already went through.
#[derive(Debug, thiserror::Error)]
#[error(
    "the state went through upgrade {name:?} at height {height}, which this build does not \
     know: it is older than the chain; start the build that knows {name:?}"
)]
pub struct BuildTooOld {
    /// The upgrade.
    pub name: String,
    /// Where it ran.
    pub height: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn abci_events(events: &[Event]) -> Vec<AbciEvent> {
    events
        .iter()
        .map(|e| {
            AbciEvent::new(
                e.kind.as_str(),
                e.attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()).index()),
            )
        })
        .collect()
}

impl Node {
    /// A node over an opened store.
    pub fn new(storage: Storage) -> Self {
        Node {
            storage,
            verifier: SignatureVerifier::default(),
            pending: Mutex::new(None),
            mempool_accounts: Mutex::new(BTreeMap::new()),
            attester: None,
            snapshots: None,
            restore: Mutex::new(None),
            upgrades: upgrade::known(),
        }
    }

    /// A node whose build knows `upgrades` (instead of [`upgrade::known`]).
    pub fn with_upgrades(mut self, upgrades: Vec<Upgrade>) -> Self {
        self.upgrades = upgrades;
        self
    }

    /// Refuses a state that went through an upgrade this build does not know.
    pub fn check_build(&self) -> Result<(), BuildTooOld> {
        match upgrade::unknown_applied(&self.storage, &self.upgrades) {
            Ok(unknown) => match unknown.into_iter().next() {
                Some(p) => Err(BuildTooOld {
                    name: p.name,
                    height: p.applied_height,
                }),
                None => Ok(()),
            },
            // An unreadable store fails at the first block with its own error.
            Err(_) => Ok(()),
        }
    }

    /// A node that takes and serves state-sync snapshots.
    pub fn with_snapshots(mut self, snapshots: Snapshots) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The node of a validator that attests training results: ExtendVote says what its
    /// verifier's verdicts and the committed state ask of it.
    pub fn with_attester(mut self, attester: Attester) -> Self {
        self.attester = Some(attester);
        self
    }

    /// The store (for tests and tools).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Info: the last committed height and app hash (height 0 before the first block).
    pub fn info(&self) -> Result<response::Info, BoxError> {
        let (height, hash) = match (self.storage.committed()?, self.storage.genesis_height()?) {
            (Some(c), Some(g)) if c.height > g => (c.height, c.app_hash.to_vec()),
            _ => (0, Vec::new()),
        };
        Ok(response::Info {
            data: APP_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app_version: 1,
            last_block_height: height.try_into()?,
            last_block_app_hash: hash.try_into()?,
        })
    }

    /// InitChain: writes the consortium from the genesis `app_state` and commits it as the
    /// genesis height (initial height − 1). Idempotent: CometBFT calls it again if the node
    /// crashed before its first block.
    pub fn init_chain(&self, req: request::InitChain) -> Result<response::InitChain, BoxError> {
        let validators = req
            .validators
            .iter()
            .map(|u| {
                let key = u
                    .pub_key
                    .ed25519()
                    .ok_or("only Ed25519 validator keys are supported")?;
                let key: [u8; 32] = key.as_bytes().try_into()?;
                Ok((key, i64::try_from(u.power.value())?))
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        let app_hash = self.init(
            &req.chain_id,
            &req.app_state_bytes,
            &validators,
            req.time.unix_timestamp(),
            req.initial_height.value(),
        )?;
        Ok(response::InitChain {
            consensus_params: None,
            validators: vec![],
            app_hash: app_hash.to_vec().try_into()?,
        })
    }

    /// The body of InitChain with plain types; returns the genesis app hash.
    pub fn init(
        &self,
        chain_id: &str,
        app_state_json: &[u8],
        validators: &[([u8; 32], i64)],
        time: i64,
        initial_height: u64,
    ) -> Result<[u8; 32], BoxError> {
        let app_state: AppState = serde_json::from_slice(app_state_json)?;
        let genesis_height = initial_height.saturating_sub(1);
        let empty = MemoryState::default();
        let mut delta = StateDelta::new(&empty);
        genesis::init_genesis(&mut delta, chain_id, &app_state, validators, genesis_height)?;
        let block = BlockCtx {
            chain_id: chain_id.to_owned(),
            height: genesis_height,
            time,
            hash: [0; 32],
            params: delta.params()?,
        };
        app::begin_block(&mut delta, &block, 0);
        let changes = delta.into_changes();
        let prepared = self.storage.prepare(genesis_height, true, changes.writes)?;
        let committed = self.storage.commit(prepared)?;
        tracing::info!(chain_id, app_hash = %hex::encode(committed.app_hash), "genesis committed");
        Ok(committed.app_hash)
    }

    fn limits(&self) -> Result<EnvelopeLimits, BoxError> {
        let params = self.storage.params()?;
        Ok(EnvelopeLimits {
            chain_id: genesis::chain_id(&self.storage)?.ok_or("no genesis yet")?,
            max_tx_bytes: params.max_tx_bytes,
            max_messages: params.max_messages_per_tx,
        })
    }

    /// PrepareProposal: puts the last commit's signed vote extensions first when any has
    /// something in it, then keeps mempool order, drops txs that cannot even decode, stays under
    /// the block byte limit.
    pub fn prepare_proposal(
        &self,
        req: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, BoxError> {
        let limits = self.limits()?;
        let max = usize::try_from(req.max_tx_bytes).unwrap_or(usize::MAX);
        let mut total = 0usize;
        let mut txs = Vec::with_capacity(req.txs.len() + 1);
        let height = req.height.value();
        if let Some(injected) = req
            .local_last_commit
            .as_ref()
            .and_then(|commit| extension::injected_votes_tx(height, commit))
        {
            // Proposed only if every node will accept it: a block refused for it would cost a
            // round, and the votes can wait for the next proposer.
            let validators = self.storage.validators()?;
            match extension::verify_injected(&injected, &limits.chain_id, height, &validators) {
                Ok(_) if injected.len() <= max => {
                    total += injected.len();
                    txs.push(Bytes::from(injected));
                }
                Ok(_) => {
                    tracing::warn!(
                        height,
                        size = injected.len(),
                        max,
                        "injected votes exceed the block's tx bytes; left out"
                    )
                }
                Err(e) => {
                    tracing::warn!(height, error = %e, "injected votes would not verify; left out")
                }
            }
        }
        for tx in self.in_nonce_order(req.txs)? {
            if total + tx.len() > max {
                break;
            }
            total += tx.len();
            txs.push(tx);
        }
        Ok(response::PrepareProposal { txs })
    }

    /// The mempool's txs that decode, each signer's in nonce order from its committed nonce, in
    /// the slots its txs held; a tx after a gap or a reused nonce waits in the mempool. CometBFT
    /// can list a signer's n+1 before its n (two peers' gossip racing on a busy node): proposed
    /// as listed, n+1 would fail in the block, and the signer's later txs, evicted at recheck
    /// behind the gap, be lost to a client that saw them accepted.
    pub fn in_nonce_order(&self, mempool: Vec<Bytes>) -> Result<Vec<Bytes>, BoxError> {
        use crate::ledger::LedgerRead as _;
        let limits = &self.limits()?;
        let decoded: Vec<(Bytes, Address, u64)> = mempool
            .into_iter()
            .filter_map(|bytes| {
                let tx = Tx::decode(&bytes, limits).ok()?;
                Some((bytes, tx.body.signer, tx.body.nonce))
            })
            .collect();
        let mut slots: BTreeMap<Address, Vec<usize>> = BTreeMap::new();
        for (i, (_, signer, _)) in decoded.iter().enumerate() {
            slots.entry(*signer).or_default().push(i);
        }
        let mut order: Vec<usize> = (0..decoded.len()).collect();
        for positions in slots.values() {
            let mut by_nonce = positions.clone();
            by_nonce.sort_by_key(|&i| decoded[i].2);
            for (&slot, &i) in positions.iter().zip(&by_nonce) {
                order[slot] = i;
            }
        }
        let mut next: BTreeMap<Address, u64> = BTreeMap::new();
        let mut out = Vec::with_capacity(decoded.len());
        for i in order {
            let (bytes, signer, nonce) = &decoded[i];
            let expected = match next.get(signer) {
                Some(n) => *n,
                None => self.storage.account(signer)?.nonce,
            };
            if *nonce == expected {
                next.insert(*signer, expected + 1);
                out.push(bytes.clone());
            }
        }
        Ok(out)
    }

    /// ProcessProposal: rejects a block carrying a tx that no honest PrepareProposal would have
    /// included (undecodable or oversize, injected votes that do not verify or are not first);
    /// other invalid txs are rejected one by one in FinalizeBlock.
    pub fn process_proposal(
        &self,
        req: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, BoxError> {
        let height = req.height.value();
        Ok(match self.process(height, &req.txs)? {
            Ok(()) => response::ProcessProposal::Accept,
            Err(e) => {
                tracing::warn!(height, error = %e, "proposal rejected");
                response::ProcessProposal::Reject
            }
        })
    }

    /// The body of ProcessProposal: `Ok(Err(_))` is a rejected block, `Err(_)` a broken node.
    pub fn process<T: AsRef<[u8]>>(
        &self,
        height: u64,
        txs: &[T],
    ) -> Result<Result<(), ProposalError>, BoxError> {
        let limits = self.limits()?;
        for (index, tx) in txs.iter().enumerate() {
            let tx = tx.as_ref();
            if !extension::is_injected(tx) {
                if let Err(error) = Tx::decode(tx, &limits) {
                    return Ok(Err(ProposalError::Undecodable { index, error }));
                }
            } else if index > 0 {
                return Ok(Err(InjectError::NotFirst { index }.into()));
            } else {
                let validators = self.storage.validators()?;
                if let Err(e) =
                    extension::verify_injected(tx, &limits.chain_id, height, &validators)
                {
                    return Ok(Err(e.into()));
                }
            }
        }
        Ok(Ok(()))
    }

    /// FinalizeBlock: executes every tx, computes the app hash, persists nothing.
    pub fn finalize_block(
        &self,
        req: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, BoxError> {
        let nanos = i32::try_from(req.time.unix_timestamp_nanos().rem_euclid(1_000_000_000))?;
        let hash: [u8; 32] = req
            .hash
            .as_bytes()
            .try_into()
            .map_err(|_| "block hash is not 32 bytes")?;
        let misbehaviour: Vec<Evidence> = req
            .misbehavior
            .iter()
            .map(|m| Evidence {
                kind: match m.kind {
                    MisbehaviorKind::DuplicateVote => EvidenceKind::DuplicateVote,
                    MisbehaviorKind::LightClientAttack => EvidenceKind::LightClientAttack,
                    MisbehaviorKind::Unknown => EvidenceKind::Unknown,
                },
                address: m.validator.address,
                height: m.height.value(),
                time: m.time.unix_timestamp(),
            })
            .collect();
        let block = self.finalize_with_misbehaviour(
            req.height.value(),
            req.time.unix_timestamp(),
            nanos,
            hash,
            &req.txs,
            &misbehaviour,
        )?;
        let validator_updates = block
            .validator_updates
            .iter()
            .map(|(key, power)| {
                Ok(tendermint::validator::Update {
                    pub_key: tendermint::PublicKey::from_raw_ed25519(key)
                        .ok_or("bad validator key")?,
                    power: (*power).try_into()?,
                })
            })
            .collect::<Result<Vec<_>, BoxError>>()?;
        Ok(response::FinalizeBlock {
            events: abci_events(&block.block_events),
            tx_results: block
                .outcomes
                .into_iter()
                .map(|o| ExecTxResult {
                    code: o.code.into(),
                    log: o.log,
                    codespace: o.codespace.into(),
                    events: abci_events(&o.events),
                    ..Default::default()
                })
                .collect(),
            validator_updates,
            consensus_param_updates: None,
            app_hash: block.app_hash.to_vec().try_into()?,
        })
    }

    /// The body of FinalizeBlock with plain types, for a block without evidence.
    pub fn finalize<T: AsRef<[u8]>>(
        &self,
        height: u64,
        time: i64,
        time_nanos: i32,
        hash: [u8; 32],
        txs: &[T],
    ) -> Result<FinalizedBlock, BoxError> {
        self.finalize_with_misbehaviour(height, time, time_nanos, hash, txs, &[])
    }

    /// The body of FinalizeBlock with plain types: CometBFT's evidence first (see
    /// [`crate::governance::jail`]), then the txs, then the end-of-block work.
    pub fn finalize_with_misbehaviour<T: AsRef<[u8]>>(
        &self,
        height: u64,
        time: i64,
        time_nanos: i32,
        hash: [u8; 32],
        txs: &[T],
        misbehaviour: &[Evidence],
    ) -> Result<FinalizedBlock, BoxError> {
        let mut block = BlockCtx {
            chain_id: genesis::chain_id(&self.storage)?.ok_or("no genesis yet")?,
            height,
            time,
            hash,
            params: self.storage.params()?,
        };
        let cached = ReadCache::new(&self.storage);
        let mut state = StateDelta::new(&cached);
        // A scheduled upgrade runs before anything else of its block, or stops this build.
        let mut upgrade_events = Vec::new();
        match upgrade::at_block(&state, height, &self.upgrades)? {
            AtBlock::Nothing => {}
            AtBlock::Halt(plan) => {
                return Err(UpgradeNeeded {
                    name: plan.name,
                    height,
                    info: plan.info,
                }
                .into());
            }
            AtBlock::Migrate(u, plan) => {
                tracing::warn!(
                    upgrade = u.name,
                    height,
                    "running the upgrade's state migration"
                );
                let changes = {
                    let reader: &dyn crate::state::StateRead = &state;
                    let mut migration = StateDelta::new(reader);
                    upgrade::migrate(&mut migration, &u, plan, height)?;
                    migration.into_changes()
                };
                upgrade_events = changes.events.clone();
                state.apply(changes);
                // The block runs under the migrated parameters.
                block.params = state.params()?;
            }
        }
        app::begin_block(&mut state, &block, time_nanos);
        // Evidence before the txs: a jailed validator's operators lose their validation rights
        // from this block on, and a governance tx of the block that re-admits it comes after.
        let mut evidence = StateDelta::new(&state);
        jail::punish(&mut evidence, misbehaviour, block.height)?;
        let evidence_changes = evidence.into_changes();
        let mut block_events = upgrade_events;
        block_events.extend(evidence_changes.events.iter().cloned());
        state.apply(evidence_changes);
        let mut outcomes = Vec::with_capacity(txs.len());
        // The last commit's attestations, injected first by the proposer, before any tx can
        // change a job (a marker tx anywhere else fails to decode like any garbage).
        let txs = match txs.split_first() {
            Some((first, rest)) if extension::is_injected(first.as_ref()) => {
                let validators = self.storage.validators()?;
                outcomes.push(extension::deliver_injected(
                    &mut state,
                    first.as_ref(),
                    &block,
                    &validators,
                )?);
                rest
            }
            _ => txs,
        };
        for (i, tx) in txs.iter().enumerate() {
            if i == 1 {
                fault::hit(fault::Point::Finalize, height);
            }
            outcomes.push(app::deliver_tx(
                &mut state,
                tx.as_ref(),
                &block,
                &self.verifier,
            )?);
        }
        if txs.len() < 2 {
            fault::hit(fault::Point::Finalize, height);
        }
        let mut end = StateDelta::new(&state);
        app::end_block(&mut end, &block)?;
        let end_changes = end.into_changes();
        block_events.extend(end_changes.events.iter().cloned());
        state.apply(end_changes);
        let changes = state.into_changes();
        let at_start: BTreeMap<[u8; 32], i64> = self
            .storage
            .validators()?
            .into_iter()
            .filter_map(|v| Some((<[u8; 32]>::try_from(v.pub_key.as_slice()).ok()?, v.power)))
            .collect();
        let validator_updates = app::validator_updates(&at_start, &changes.validator_updates);
        let prepared = self.storage.prepare(block.height, false, changes.writes)?;
        let app_hash = prepared.app_hash;
        *lock(&self.pending) = Some(PendingBlock { prepared });
        Ok(FinalizedBlock {
            outcomes,
            validator_updates,
            app_hash,
            block_events,
        })
    }

    /// Commit: writes the finalized block atomically.
    pub fn commit(&self) -> Result<response::Commit, BoxError> {
        self.commit_block()?;
        Ok(response::Commit {
            data: Default::default(),
            retain_height: 0u32.into(),
        })
    }

    /// The body of Commit: writes the pending block.
    pub fn commit_block(&self) -> Result<Committed, BoxError> {
        let pending = lock(&self.pending)
            .take()
            .ok_or("Commit without FinalizeBlock")?;
        fault::hit(fault::Point::BeforeCommit, pending.prepared.height);
        let committed = self.storage.commit(pending.prepared)?;
        lock(&self.mempool_accounts).clear();
        if let Some(snapshots) = &self.snapshots {
            snapshots.after_commit(&self.storage, committed);
        }
        tracing::debug!(height = committed.height, app_hash = %hex::encode(committed.app_hash), "committed");
        Ok(committed)
    }

    /// CheckTx: the full tx path against the last committed state, with mempool-aware nonces.
    pub fn check_tx(&self, req: request::CheckTx) -> Result<response::CheckTx, BoxError> {
        Ok(match self.check(&req.tx)? {
            Ok(()) => response::CheckTx::default(),
            Err(e) => response::CheckTx {
                code: e.code().into(),
                log: e.to_string(),
                codespace: e.codespace().into(),
                ..Default::default()
            },
        })
    }

    /// The body of CheckTx: `Ok(Err(_))` is a rejected tx, `Err(_)` a broken node.
    pub fn check(&self, tx: &[u8]) -> Result<Result<(), TxError>, BoxError> {
        if extension::is_injected(tx) {
            return Ok(Err(EnvelopeError::Malformed(
                "an injected-votes tx (validators' signed vote extensions) is put in blocks by \
                 their proposers, never submitted"
                    .into(),
            )
            .into()));
        }
        let last = app::last_block(&self.storage)?.ok_or("no genesis yet")?;
        let block = BlockCtx {
            chain_id: genesis::chain_id(&self.storage)?.ok_or("no genesis yet")?,
            height: last.height + 1,
            time: last.time_seconds,
            // CheckTx runs no end-of-block work, the only reader of the hash.
            hash: [0; 32],
            params: self.storage.params()?,
        };
        let signer = pb::Tx::decode(tx)
            .ok()
            .and_then(|t| pb::TxBody::decode(t.body.as_slice()).ok())
            .and_then(|b| Address::from_slice(&b.signer));
        let mut accounts = lock(&self.mempool_accounts);
        let pending = signer.and_then(|s| accounts.get(&s));
        let result = app::execute_tx(
            &self.storage,
            tx,
            &block,
            &self.verifier,
            Mode::CheckTx { pending },
        );
        Ok(result.map(|executed| {
            accounts.insert(executed.tx.body.signer, executed.signer_account);
        }))
    }

    /// Query: one key (with a Merkle proof on request) or a list, at a height (0 = latest).
    pub fn query(&self, req: request::Query) -> Result<response::Query, BoxError> {
        let fail = |log: String| response::Query {
            code: 1u32.into(),
            log,
            codespace: "query".into(),
            ..Default::default()
        };
        let Some(committed) = self.storage.committed()? else {
            return Ok(fail("no state yet".into()));
        };
        let height = match req.height.value() {
            0 => committed.height,
            h => h,
        };
        let q = match Query::parse(&req.path, &req.data) {
            Ok(q) => q,
            Err(e) => return Ok(fail(e.to_string())),
        };
        match q.proof() {
            Proof::Key(key) => {
                let (value, proof) = if req.prove {
                    match self.storage.get_with_proof(&key, height) {
                        Ok((v, p)) => (v, Some(p)),
                        Err(e) => return Ok(fail(e.to_string())),
                    }
                } else {
                    match self.storage.get_at(&key, height) {
                        Ok(v) => (v, None),
                        Err(e) => return Ok(fail(e.to_string())),
                    }
                };
                Ok(response::Query {
                    code: 0u32.into(),
                    log: if value.is_some() {
                        "exists"
                    } else {
                        "does not exist"
                    }
                    .into(),
                    key: key.clone().into_bytes().into(),
                    value: value.unwrap_or_default().into(),
                    proof: proof.map(|data| ProofOps {
                        ops: vec![ProofOp {
                            field_type: query::PROOF_TYPE.into(),
                            key: key.into_bytes(),
                            data,
                        }],
                    }),
                    height: height.try_into()?,
                    ..Default::default()
                })
            }
            Proof::None => {
                if height != committed.height {
                    return Ok(fail("list queries serve the latest height only".into()));
                }
                let value = query::list(&q, &self.storage)?.ok_or_else(|| {
                    format!("{} is in the table as a list but has no answer", q.path())
                })?;
                Ok(response::Query {
                    code: 0u32.into(),
                    value: value.into(),
                    height: height.try_into()?,
                    ..Default::default()
                })
            }
        }
    }

    fn consensus(&self, req: ConsensusRequest) -> Result<ConsensusResponse, BoxError> {
        Ok(match req {
            ConsensusRequest::InitChain(r) => ConsensusResponse::InitChain(self.init_chain(r)?),
            ConsensusRequest::PrepareProposal(r) => {
                ConsensusResponse::PrepareProposal(self.prepare_proposal(r)?)
            }
            ConsensusRequest::ProcessProposal(r) => {
                ConsensusResponse::ProcessProposal(self.process_proposal(r)?)
            }
            ConsensusRequest::FinalizeBlock(r) => {
                ConsensusResponse::FinalizeBlock(self.finalize_block(r)?)
            }
            ConsensusRequest::Commit => ConsensusResponse::Commit(self.commit()?),
            ConsensusRequest::ExtendVote(r) => {
                ConsensusResponse::ExtendVote(response::ExtendVote {
                    vote_extension: self.extend_vote(r.height.value()).into(),
                })
            }
            ConsensusRequest::VerifyVoteExtension(r) => ConsensusResponse::VerifyVoteExtension(
                self.verify_vote_extension(&r.vote_extension),
            ),
        })
    }

    /// ExtendVote: this validator's attestations the committed state asks for, or nothing. Never
    /// fails: a problem (an unreadable inbox, a store error) is logged and the vote goes out with
    /// an empty extension, as CometBFT needs one to precommit.
    pub fn extend_vote(&self, height: u64) -> Vec<u8> {
        let Some(attester) = &self.attester else {
            return Vec::new();
        };
        match extension::vote_extension(&self.storage, attester) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(height, error = %e, "extending the vote with nothing");
                Vec::new()
            }
        }
    }

    /// VerifyVoteExtension: stateless checks only (an empty extension passes), so honest
    /// validators, whatever state they are at, never disagree about another's extension.
    pub fn verify_vote_extension(&self, extension: &[u8]) -> response::VerifyVoteExtension {
        if extension.is_empty() {
            return response::VerifyVoteExtension::Accept;
        }
        match crate::training::check_extension(extension) {
            Ok(_) => response::VerifyVoteExtension::Accept,
            Err(e) => {
                tracing::warn!(error = %e, "vote extension rejected");
                response::VerifyVoteExtension::Reject
            }
        }
    }

    /// ListSnapshots: the complete snapshots on disk, newest first (none when snapshots are off
    /// or the directory cannot be read, which is logged).
    pub fn list_snapshots(&self) -> response::ListSnapshots {
        let Some(snapshots) = &self.snapshots else {
            return Default::default();
        };
        match snapshots.list() {
            Ok(list) => response::ListSnapshots {
                snapshots: list
                    .into_iter()
                    .filter_map(|l| {
                        Some(tendermint::abci::types::Snapshot {
                            height: l.height.try_into().ok()?,
                            format: l.format,
                            chunks: l.chunks,
                            hash: Bytes::copy_from_slice(&l.hash),
                            metadata: l.metadata.into(),
                        })
                    })
                    .collect(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "listing snapshots failed; offering none");
                Default::default()
            }
        }
    }

    /// LoadSnapshotChunk: a chunk of one of this node's snapshots (empty when it has none).
    pub fn load_snapshot_chunk(&self, height: u64, format: u32, chunk: u32) -> Vec<u8> {
        self.snapshots
            .as_ref()
            .and_then(|s| s.chunk(height, format, chunk))
            .unwrap_or_default()
    }

    /// OfferSnapshot: a joining node accepts a well-formed snapshot of our format; `app_hash` is
    /// what CometBFT's light client verified for its height.
    pub fn offer_snapshot(
        &self,
        snapshot: &tendermint::abci::types::Snapshot,
        app_hash: &[u8],
    ) -> Result<response::OfferSnapshot, BoxError> {
        if let Some(c) = self.storage.committed()? {
            tracing::warn!(
                height = c.height,
                "a snapshot offered to a node that has state: refused"
            );
            return Ok(response::OfferSnapshot::Abort);
        }
        let height = snapshot.height.value();
        Ok(
            match Restore::offer(
                height,
                snapshot.format,
                snapshot.chunks,
                &snapshot.hash,
                &snapshot.metadata,
                app_hash,
            ) {
                Ok(r) => {
                    tracing::info!(height, chunks = snapshot.chunks, "restoring a snapshot");
                    *lock(&self.restore) = Some(r);
                    response::OfferSnapshot::Accept
                }
                Err(OfferError::Format(f)) => {
                    *lock(&self.restore) = None;
                    tracing::warn!(height, format = f, "snapshot of an unknown format refused");
                    response::OfferSnapshot::RejectFormat
                }
                Err(e) => {
                    *lock(&self.restore) = None;
                    tracing::warn!(height, error = %e, "snapshot refused");
                    response::OfferSnapshot::Reject
                }
            },
        )
    }

    /// ApplySnapshotChunk: checks the chunk against the offered metadata (a bad one is fetched
    /// again and its sender rejected); after the last, writes the state if it gives the verified
    /// app hash, else rejects the snapshot and keeps nothing.
    pub fn apply_snapshot_chunk(
        &self,
        index: u32,
        chunk: &[u8],
        sender: &str,
    ) -> response::ApplySnapshotChunk {
        use response::ApplySnapshotChunkResult as R;
        let answer = |result| response::ApplySnapshotChunk {
            result,
            refetch_chunks: vec![],
            reject_senders: vec![],
        };
        let mut slot = lock(&self.restore);
        let Some(restore) = slot.as_mut() else {
            tracing::warn!(index, "a snapshot chunk with no snapshot accepted");
            return answer(R::Abort);
        };
        match restore.apply(index, chunk) {
            Ok(Applied::More) => answer(R::Accept),
            Ok(Applied::Refetch) => {
                tracing::warn!(
                    index,
                    sender,
                    "snapshot chunk does not match its hash; refetching from another peer"
                );
                response::ApplySnapshotChunk {
                    result: R::Retry,
                    refetch_chunks: vec![index],
                    reject_senders: vec![sender.to_owned()],
                }
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "snapshot chunk refused");
                *slot = None;
                answer(R::RejectSnapshot)
            }
            Ok(Applied::Complete) => {
                let Some(restore) = slot.take() else {
                    return answer(R::Abort);
                };
                let height = restore.height();
                let known: Vec<&str> = self.upgrades.iter().map(|u| u.name).collect();
                match restore.finish(&self.storage, &known) {
                    Ok(c) => {
                        tracing::info!(height, app_hash = %hex::encode(c.app_hash), "state restored from a snapshot");
                        answer(R::Accept)
                    }
                    // This snapshot is bad: another may do.
                    Err(
                        e @ (SnapshotError::Malformed(_)
                        | SnapshotError::Storage(StorageError::RestoreMismatch { .. })),
                    ) => {
                        tracing::error!(height, error = %e, "snapshot restore failed; trying another");
                        answer(R::RejectSnapshot)
                    }
                    // Any snapshot would fail the same way (an old build, a store that is not
                    // empty or fails): stop state sync with the reason.
                    Err(e) => {
                        tracing::error!(height, error = %e, "snapshot restore failed; state sync stops");
                        answer(R::Abort)
                    }
                }
            }
        }
    }

    fn snapshot_call(&self, req: SnapshotRequest) -> Result<SnapshotResponse, BoxError> {
        Ok(match req {
            SnapshotRequest::ListSnapshots => {
                SnapshotResponse::ListSnapshots(self.list_snapshots())
            }
            SnapshotRequest::OfferSnapshot(r) => SnapshotResponse::OfferSnapshot(
                self.offer_snapshot(&r.snapshot, r.app_hash.as_bytes())?,
            ),
            SnapshotRequest::LoadSnapshotChunk(r) => {
                SnapshotResponse::LoadSnapshotChunk(response::LoadSnapshotChunk {
                    chunk: self
                        .load_snapshot_chunk(r.height.value(), r.format, r.chunk)
                        .into(),
                })
            }
            SnapshotRequest::ApplySnapshotChunk(r) => SnapshotResponse::ApplySnapshotChunk(
                self.apply_snapshot_chunk(r.index, &r.chunk, &r.sender),
            ),
        })
    }

    fn info_call(&self, req: InfoRequest) -> Result<InfoResponse, BoxError> {
        Ok(match req {
            InfoRequest::Info(_) => InfoResponse::Info(self.info()?),
            InfoRequest::Query(q) => InfoResponse::Query(self.query(q)?),
            InfoRequest::Echo(e) => InfoResponse::Echo(response::Echo { message: e.message }),
        })
    }
}

/// The exit status after a failed block step (`EX_SOFTWARE`).
pub const EXIT_CONSENSUS_FAILED: i32 = 70;

/// The exit status at a scheduled upgrade this build does not know (`EX_TEMPFAIL`: run again,
/// with the new build).
pub const EXIT_UPGRADE_NEEDED: i32 = 75;

/// Ends the process after an error on the consensus connection: a block that cannot be executed
/// or written (a full disk, a damaged store) leaves no way to go on that keeps every node equal.
/// CometBFT halts on the same error anyway; this process must not linger behind it serving
/// queries and CheckTx from a state that stopped. What is on disk is the last committed block
/// (Commit's write is one atomic batch), so once the cause is fixed a restart replays the rest
/// through the handshake.
fn stop(e: &BoxError) -> ! {
    if let Some(upgrade) = e.downcast_ref::<UpgradeNeeded>() {
        tracing::error!(upgrade = %upgrade.name, height = upgrade.height, "{upgrade}");
        eprintln!("neurodata-abci: {upgrade} (exit {EXIT_UPGRADE_NEEDED})");
        std::process::exit(EXIT_UPGRADE_NEEDED)
    }
    tracing::error!(error = %e, "a block step failed: stopping; the store holds the last committed block, and a restart after fixing the cause replays the rest");
    eprintln!(
        "neurodata-abci: a block step failed: {e}; stopping (exit {EXIT_CONSENSUS_FAILED}): the \
         store holds the last committed block, and a restart after fixing the cause replays the \
         rest"
    );
    std::process::exit(EXIT_CONSENSUS_FAILED)
}

/// Where the ABCI server listens.
#[derive(Clone, Debug)]
pub enum Listen {
    /// A Unix socket path (the default; several times faster than TCP for block execution).
    Unix(std::path::PathBuf),
    /// A TCP address.
    Tcp(String),
}

/// Serves the four ABCI connections until the process ends.
pub async fn serve(node: Arc<Node>, listen: Listen) -> Result<(), BoxError> {
    let n = node.clone();
    let consensus = tower::service_fn(move |req: ConsensusRequest| {
        let n = n.clone();
        async move {
            let answer = tokio::task::spawn_blocking(move || n.consensus(req)).await?;
            if let Err(e) = &answer {
                stop(e);
            }
            answer
        }
    });
    let n = node.clone();
    // CheckTx runs inside `call`, not in the returned future: tower-abci calls the service in
    // arrival order but polls the futures of a connection concurrently, and mempool-aware nonces
    // need txs checked in exactly the order CometBFT sent them (a signer's nonce 7 checked before
    // its nonce 6 would be refused as a gap, and recheck after Commit would evict it).
    let mempool = tower::service_fn(move |req: MempoolRequest| {
        let MempoolRequest::CheckTx(r) = req;
        let resp = n.check_tx(r).map(MempoolResponse::CheckTx);
        std::future::ready(resp)
    });
    let n = node.clone();
    let info = tower::service_fn(move |req: InfoRequest| {
        let n = n.clone();
        async move { tokio::task::spawn_blocking(move || n.info_call(req)).await? }
    });
    let n = node.clone();
    let snapshot = tower::service_fn(move |req: SnapshotRequest| {
        let n = n.clone();
        async move { tokio::task::spawn_blocking(move || n.snapshot_call(req)).await? }
    });
    let server = tower_abci::v038::Server::builder()
        .consensus(consensus)
        .mempool(mempool)
        .info(info)
        .snapshot(snapshot)
        .finish()
        .ok_or("incomplete ABCI server")?;
    match listen {
        Listen::Unix(path) => {
            // A socket left by a crashed process would make bind fail.
            let _ = std::fs::remove_file(&path);
            server.listen_unix(path).await
        }
        Listen::Tcp(addr) => server.listen_tcp(addr).await,
    }
}
