//! The state machine: how one transaction and one block change the state.
//!
//! [`execute_tx`] is the whole path of a tx after its bytes arrive: stateless checks
//! ([`Tx::decode`]), membership ([`authenticate`]), signature, nonce and fee, then each message in
//! order on a fork that is returned as [`Changes`] only if all succeeded. CheckTx and FinalizeBlock
//! run the same function; only the nonce source and the signature cache mode differ.

use crate::TxError;
use crate::address::Address;
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::membership::{MembershipWrite, Signer, authenticate};
use crate::state::{Changes, Event, StateDelta, StateRead, StateWrite};
use crate::tx::{Action, EnvelopeError, EnvelopeLimits, ExecCtx, Tx};
use crate::verifier::{SignatureVerifier, VerifyMode};
use neurodata_proto::chain::v1 as pb;

/// Chain-wide records that belong to no domain.
pub mod state_key {
    /// The chain id, written at genesis.
    pub fn chain_id() -> &'static str {
        "chain/id"
    }

    /// The last executed block's height and time.
    pub fn block() -> &'static str {
        "chain/block"
    }
}

/// The block a tx executes in.
#[derive(Clone, Debug)]
pub struct BlockCtx {
    /// Chain id.
    pub chain_id: String,
    /// Height.
    pub height: u64,
    /// Block time, Unix seconds.
    pub time: i64,
    /// Parameters as of the start of the block: a parameter change takes effect from the next
    /// block, so every tx of a block is judged by the same limits and fee.
    pub params: crate::governance::Params,
}

/// What a tx did, successful or not, for the ABCI result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    /// 0 on success, else the error's stable code.
    pub code: u32,
    /// The rejecting domain, empty on success.
    pub codespace: &'static str,
    /// The error message, empty on success.
    pub log: String,
    /// Events of a successful tx.
    pub events: Vec<Event>,
}

impl TxOutcome {
    /// The outcome of a rejected tx.
    pub fn rejected(e: &TxError) -> Self {
        TxOutcome {
            code: e.code(),
            codespace: e.codespace(),
            log: e.to_string(),
            events: vec![],
        }
    }
}

/// Where a tx is being run.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Mempool admission; `next_nonce` is the signer's next nonce counting txs already in the
    /// mempool (None: take it from the state).
    CheckTx {
        /// Mempool-adjusted next nonce.
        next_nonce: Option<u64>,
    },
    /// Block execution.
    Deliver,
}

/// Runs one tx on `state`, returning its changes (to apply) or why it was rejected (nothing to
/// apply: a rejected tx changes nothing, not even its nonce or fee).
pub fn execute_tx<S: StateRead>(
    state: &S,
    bytes: &[u8],
    block: &BlockCtx,
    verifier: &SignatureVerifier,
    mode: Mode,
) -> Result<(Tx, Changes), TxError> {
    let params = &block.params;
    let limits = EnvelopeLimits {
        chain_id: block.chain_id.clone(),
        max_tx_bytes: params.max_tx_bytes,
        max_messages: params.max_messages_per_tx,
    };
    let tx = Tx::decode(bytes, &limits)?;
    let signer = authenticate(state, &tx.body, block.time, block.height)?;
    let verify_mode = match mode {
        Mode::CheckTx { .. } => VerifyMode::CheckTx,
        Mode::Deliver => VerifyMode::Deliver,
    };
    verifier.verify(&tx, &signer.identity.public_key_spki, verify_mode)?;

    let mut fork = StateDelta::new(state);
    let address = tx.body.signer;
    let expected = match mode {
        Mode::CheckTx {
            next_nonce: Some(n),
        } => n,
        _ => fork.account(&address)?.nonce,
    };
    if tx.body.nonce < expected {
        return Err(EnvelopeError::NonceReplay {
            expected,
            got: tx.body.nonce,
        }
        .into());
    }
    if tx.body.nonce > expected {
        return Err(EnvelopeError::NonceGap {
            expected,
            got: tx.body.nonce,
        }
        .into());
    }
    if tx.body.fee < params.min_fee {
        return Err(EnvelopeError::FeeTooLow {
            fee: tx.body.fee,
            min: params.min_fee,
        }
        .into());
    }
    if signer.is_new {
        fork.put_identity(&signer.identity);
        fork.emit(
            Event::new("identity.registered")
                .attr("fingerprint", address)
                .attr("org", &signer.identity.org_id)
                .attr("role", &signer.identity.role)
                .attr("common_name", &signer.identity.common_name),
        );
    }
    if tx.body.fee > crate::amount::Amount::ZERO {
        fork.debit(&address, tx.body.fee)?;
        fork.credit(&Address::reward_pool(), tx.body.fee)?;
        fork.emit(
            Event::new("fee.paid")
                .attr("payer", address)
                .attr("amount", tx.body.fee),
        );
    }
    let ctx = ExecCtx {
        height: block.height,
        time: block.time,
        params: block.params.clone(),
    };
    for action in &tx.body.messages {
        execute_action(&mut fork, action, &signer, &ctx)?;
    }
    let mut account = fork.account(&address)?;
    account.nonce = tx.body.nonce + 1;
    fork.put_account(&account)?;
    let changes = fork.into_changes();
    Ok((tx, changes))
}

/// One match over every action: a new action does not compile until it is dispatched here.
fn execute_action<S: StateWrite>(
    state: &mut S,
    action: &Action,
    signer: &Signer,
    ctx: &ExecCtx,
) -> Result<(), TxError> {
    match action {
        Action::Transfer(a) => a.check_and_execute(state, signer),
        Action::RevokeCertificate(a) => a.check_and_execute(state, signer, ctx),
        Action::SubmitProposal(a) => a.check_and_execute(state, signer, ctx),
        Action::Vote(a) => a.check_and_execute(state, signer, ctx),
        Action::RegisterDataset(a) => a.check_and_execute(state, signer, ctx),
        Action::UpdateDatasetPrice(a) => a.check_and_execute(state, signer),
        Action::DelistDataset(a) => a.check_and_execute(state, signer),
        Action::BuyDataset(a) => a.check_and_execute(state, signer, ctx),
        Action::RequestValidation(a) => a.check_and_execute(state, signer, ctx),
        Action::DeliverKey(a) => a.check_and_execute(state, signer, ctx),
        Action::ConfirmAccess(a) => a.check_and_execute(state, signer, ctx),
        Action::RefundPurchase(a) => a.check_and_execute(state, signer, ctx),
        Action::DisputeKey(a) => a.check_and_execute(state, signer, ctx),
        Action::AttestDataset(a) => a.check_and_execute(state, signer, ctx),
    }
}

/// Runs a tx inside a block: applies its changes to `block_state` on success.
pub fn deliver_tx<S: StateRead>(
    block_state: &mut StateDelta<S>,
    bytes: &[u8],
    block: &BlockCtx,
    verifier: &SignatureVerifier,
) -> TxOutcome {
    match execute_tx(&*block_state, bytes, block, verifier, Mode::Deliver) {
        Ok((_, changes)) => {
            let events = changes.events.clone();
            block_state.apply(changes);
            TxOutcome {
                code: 0,
                codespace: "",
                log: String::new(),
                events,
            }
        }
        Err(e) => TxOutcome::rejected(&e),
    }
}

/// Start-of-block bookkeeping: records the block's height and time, which also guarantees every
/// block writes at least one key (so every height has its own Merkle root).
pub fn begin_block<S: StateWrite>(state: &mut S, block: &BlockCtx, time_nanos: i32) {
    state.put_proto(
        state_key::block().into(),
        &pb::BlockInfo {
            height: block.height,
            time_seconds: block.time,
            time_nanos,
        },
    );
}

/// End-of-block work after the block's txs: escrow closes the purchases due at this height.
/// Its events are block-level events. A failure here is a broken state, not a user's error.
pub fn end_block<S: StateWrite>(state: &mut S, block: &BlockCtx) -> Result<(), TxError> {
    crate::escrow::end_block(state, block.height)
}

/// The last executed block, if any.
pub fn last_block<S: StateRead>(
    state: &S,
) -> Result<Option<pb::BlockInfo>, crate::state::StateError> {
    state.get_proto(state_key::block())
}
