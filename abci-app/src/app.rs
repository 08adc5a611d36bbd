//! The state machine: how one transaction and one block change the state.
//!
//! [`execute_tx`] is the whole path of a tx after its bytes arrive: stateless checks
//! ([`Tx::decode`]), membership ([`authenticate`]), signature, nonce and fee — charged in a stage
//! of their own — then each message in order on a fork over that stage, kept only if all
//! succeeded. CheckTx and FinalizeBlock run the same function; only the source of the signer's
//! account (mempool-pending or committed) and the signature cache mode differ.

use crate::TxError;
use crate::address::Address;
use crate::events::{EventKind, attr};
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::membership::{MembershipWrite, authenticate};
use crate::state::{Changes, Event, StateDelta, StateRead, StateWrite};
use crate::tx::{EnvelopeError, EnvelopeLimits, ExecCtx, Tx};
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
    /// The block's hash (CometBFT's header hash): randomness nobody knew before the block, e.g.
    /// for drawing a training job's worker and the segments validators re-run.
    pub hash: [u8; 32],
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
pub enum Mode<'a> {
    /// Mempool admission. `pending` is the signer's account as the txs it already has in the
    /// mempool leave it (None: take it from the state), so the nonce and the balance a new tx is
    /// checked against count what the signer has queued: an account with one fee's worth cannot
    /// queue a hundred txs that each pass against the committed balance.
    CheckTx {
        /// The signer's account after its mempool txs.
        pending: Option<&'a pb::Account>,
    },
    /// Block execution.
    Deliver,
}

/// A tx that paid for itself: its fee and nonce are charged whether or not its messages
/// succeeded.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The decoded tx.
    pub tx: Tx,
    /// What to apply: the charge (identity registration, fee, nonce) and, when every message
    /// succeeded, the messages' changes.
    pub changes: Changes,
    /// Why the messages failed (their changes were dropped; the charge stands).
    pub failure: Option<TxError>,
    /// The signer's account after the tx.
    pub signer_account: pb::Account,
}

/// Runs one tx on `state`. `Err` is a tx that cannot be charged (bad envelope, signer,
/// signature, nonce, or a fee the signer cannot pay): nothing to apply. `Ok` is a tx that paid
/// its fee and used its nonce, in a stage kept even when its messages fail — otherwise a failed tx
/// would stay valid, and anyone could include it later when it would succeed (in place of the
/// signer's next tx), or fill blocks with failing txs for free. In CheckTx a message failure is a
/// refusal (`Err`): the mempool admits only txs that succeed against the state it knows.
pub fn execute_tx<S: StateRead>(
    state: &S,
    bytes: &[u8],
    block: &BlockCtx,
    verifier: &SignatureVerifier,
    mode: Mode<'_>,
) -> Result<Executed, TxError> {
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

    // The signer's pending mempool account shadows the committed one in CheckTx.
    let mut base = StateDelta::new(state);
    if let Mode::CheckTx {
        pending: Some(account),
    } = mode
    {
        base.put_account(account)?;
    }
    let mut charged = StateDelta::new(&base);
    let address = tx.body.signer;
    let mut account = charged.account(&address)?;
    let expected = account.nonce;
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
        charged.put_identity(&signer.identity)?;
        charged.emit(
            Event::new(EventKind::IdentityRegistered)
                .attr(attr::FINGERPRINT, address)
                .attr(attr::ORG, &signer.identity.org_id)
                .attr(attr::ROLE, &signer.identity.role)
                .attr(attr::COMMON_NAME, &signer.identity.common_name),
        );
    }
    account.nonce = tx.body.nonce + 1;
    charged.put_account(&account)?;
    if tx.body.fee > crate::amount::Amount::ZERO {
        charged.debit(&address, tx.body.fee)?;
        charged.credit(&Address::reward_pool(), tx.body.fee)?;
        charged.emit(
            Event::new(EventKind::FeePaid)
                .attr(attr::PAYER, address)
                .attr(attr::AMOUNT, tx.body.fee),
        );
    }
    let ctx = ExecCtx {
        height: block.height,
        time: block.time,
        params: block.params.clone(),
    };
    let mut fork = StateDelta::new(&charged);
    let failure = tx
        .body
        .messages
        .iter()
        .try_for_each(|action| action.execute(&mut fork, &signer, &ctx))
        .err();
    let failure = match (failure, mode) {
        (Some(e), Mode::CheckTx { .. }) => return Err(e),
        (f, _) => f,
    };
    let (signer_account, message_changes) = match failure {
        None => (fork.account(&address)?, Some(fork.into_changes())),
        Some(_) => {
            drop(fork);
            (charged.account(&address)?, None)
        }
    };
    let mut changes = charged.into_changes();
    if let Some(m) = message_changes {
        changes.extend(m);
    }
    Ok(Executed {
        tx,
        changes,
        failure,
        signer_account,
    })
}

/// Runs a tx inside a block: applies its charge, and its messages' changes if they all
/// succeeded. A failed tx's outcome carries its error code and the charge's events. A storage
/// failure is the node's, not the tx's: it is returned as an error (FinalizeBlock fails and the
/// node stops) rather than recorded as a failed tx, which would give this node another app hash.
pub fn deliver_tx<S: StateRead>(
    block_state: &mut StateDelta<S>,
    bytes: &[u8],
    block: &BlockCtx,
    verifier: &SignatureVerifier,
) -> Result<TxOutcome, crate::state::StateError> {
    match execute_tx(&*block_state, bytes, block, verifier, Mode::Deliver) {
        Ok(executed) => {
            if let Some(TxError::State(e)) = executed.failure {
                return Err(e);
            }
            let events = executed.changes.events.clone();
            block_state.apply(executed.changes);
            Ok(match executed.failure {
                None => TxOutcome {
                    code: 0,
                    codespace: "",
                    log: String::new(),
                    events,
                },
                Some(e) => TxOutcome {
                    events,
                    ..TxOutcome::rejected(&e)
                },
            })
        }
        Err(TxError::State(e)) => Err(e),
        Err(e) => Ok(TxOutcome::rejected(&e)),
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

/// End-of-block work after the block's txs: escrow closes the purchases due at this height,
/// training and evaluations move their attestations on (and settle what is decided), the
/// certificates entering the expiry notice window are announced, and at the end of a reward
/// epoch the reward pool pays the validators. Its events are block-level
/// events. A failure here is a broken state, not a user's error.
pub fn end_block<S: StateWrite>(state: &mut S, block: &BlockCtx) -> Result<(), TxError> {
    crate::escrow::end_block(state, block.height)?;
    crate::training::end_block(state, block)?;
    crate::models::evaluation::end_block(state, block)?;
    crate::membership::expiry::end_block(state, block)?;
    crate::governance::rewards::pay_rewards(state, block.height, block.params.reward_epoch_blocks)
}

/// The validator updates CometBFT gets for a block: one per key (the block's last change to it),
/// without no-ops — a removal of a key that was not in the set when the block began (added and
/// removed in one block), or a power equal to the one it began with — each of which CometBFT
/// would refuse or ignore. Ascending by key, so every node hands CometBFT the same list.
pub fn validator_updates(
    at_start: &std::collections::BTreeMap<[u8; 32], i64>,
    changes: &std::collections::BTreeMap<[u8; 32], i64>,
) -> Vec<([u8; 32], i64)> {
    changes
        .iter()
        .filter(|(key, power)| at_start.get(*key).copied().unwrap_or(0) != **power)
        .map(|(key, power)| (*key, *power))
        .collect()
}

/// The last executed block, if any.
pub fn last_block<S: StateRead>(
    state: &S,
) -> Result<Option<pb::BlockInfo>, crate::state::StateError> {
    state.get_proto(state_key::block())
}
