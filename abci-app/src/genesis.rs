//! The consortium at genesis: the `app_state` of CometBFT's genesis document, and InitChain.

use base64::Engine as _;
use neurodata_proto::chain::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::governance::action::check_org_id;
use crate::governance::{GovernanceWrite, Params};
use crate::ledger::LedgerWrite;
use crate::membership::CaCertificate;
use crate::state::{StateRead, StateWrite};

/// The genesis `app_state` (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppState {
    /// Founding orgs.
    pub orgs: Vec<GenesisOrg>,
    /// Initial validators; must match CometBFT's genesis validators when given.
    #[serde(default)]
    pub validators: Vec<GenesisValidator>,
    /// Initial NRC balances.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Chain parameters (defaults when absent).
    #[serde(default)]
    pub params: Option<GenesisParams>,
}

/// A founding org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisOrg {
    /// Org id.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Root CA certificate, PEM.
    pub ca_cert_pem: String,
}

/// An initial validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Display name.
    pub name: String,
    /// Operating org.
    pub org_id: String,
    /// Ed25519 public key, base64 (as in CometBFT's genesis).
    pub pub_key: String,
    /// Voting power.
    pub power: i64,
    /// Certificate fingerprints (64 hex digits) of the org members who operate it.
    #[serde(default)]
    pub operators: Vec<String>,
}

/// An initial balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// Account address, 64 hex digits.
    pub address: String,
    /// NRC base units, decimal.
    pub amount: String,
}

/// Parameters in the genesis (same fields as the `Params` message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisParams {
    /// Smallest fee.
    pub min_fee: String,
    /// Blocks a proposal is open.
    pub proposal_voting_blocks: u64,
    /// Largest tx.
    pub max_tx_bytes: u64,
    /// Most messages per tx.
    pub max_messages_per_tx: u32,
    /// Blocks to deliver a purchased key (default if absent).
    #[serde(default = "default_key_delivery_blocks")]
    pub key_delivery_blocks: u64,
    /// Blocks to confirm a purchase (default if absent).
    #[serde(default = "default_confirm_blocks")]
    pub confirm_blocks: u64,
    /// Reward-pool share of a sale in basis points (default if absent).
    #[serde(default = "default_market_fee_bps")]
    pub market_fee_bps: u32,
    /// Most open validation requests per org (default if absent).
    #[serde(default = "default_max_open_validations_per_org")]
    pub max_open_validations_per_org: u32,
    /// Blocks between reward payouts (default if absent).
    #[serde(default = "default_reward_epoch_blocks")]
    pub reward_epoch_blocks: u64,
    /// Royalty share of a model sale in basis points (default if absent).
    #[serde(default = "default_model_royalty_bps")]
    pub model_royalty_bps: u32,
    /// Seconds of notice before a certificate expires (default if absent).
    #[serde(default = "default_cert_expiry_notice_secs")]
    pub cert_expiry_notice_secs: u64,
}

fn default_cert_expiry_notice_secs() -> u64 {
    Params::default().cert_expiry_notice_secs
}

fn default_model_royalty_bps() -> u32 {
    Params::default().model_royalty_bps
}

fn default_max_open_validations_per_org() -> u32 {
    Params::default().max_open_validations_per_org
}

fn default_reward_epoch_blocks() -> u64 {
    Params::default().reward_epoch_blocks
}

fn default_key_delivery_blocks() -> u64 {
    Params::default().key_delivery_blocks
}

fn default_confirm_blocks() -> u64 {
    Params::default().confirm_blocks
}

fn default_market_fee_bps() -> u32 {
    Params::default().market_fee_bps
}

impl From<&Params> for GenesisParams {
    fn from(p: &Params) -> Self {
        GenesisParams {
            min_fee: p.min_fee.to_string(),
            proposal_voting_blocks: p.proposal_voting_blocks,
            max_tx_bytes: p.max_tx_bytes,
            max_messages_per_tx: p.max_messages_per_tx,
            key_delivery_blocks: p.key_delivery_blocks,
            confirm_blocks: p.confirm_blocks,
            market_fee_bps: p.market_fee_bps,
            max_open_validations_per_org: p.max_open_validations_per_org,
            reward_epoch_blocks: p.reward_epoch_blocks,
            model_royalty_bps: p.model_royalty_bps,
            cert_expiry_notice_secs: p.cert_expiry_notice_secs,
        }
    }
}

impl GenesisOrg {
    /// A founding org whose root CA certificate is the PEM file `ca_pem`.
    pub fn from_ca_file(
        org_id: &str,
        name: &str,
        ca_pem: &std::path::Path,
    ) -> Result<Self, GenesisError> {
        Ok(GenesisOrg {
            org_id: org_id.into(),
            name: name.into(),
            ca_cert_pem: std::fs::read_to_string(ca_pem)
                .map_err(|e| invalid(format!("org {org_id}: {}: {e}", ca_pem.display())))?,
        })
    }
}

impl AppState {
    /// Writes this state as the `app_state` of a CometBFT genesis document, the one place a
    /// genesis file gets it.
    pub fn put_into(&self, genesis_doc: &mut serde_json::Value) -> Result<(), GenesisError> {
        genesis_doc
            .as_object_mut()
            .ok_or_else(|| invalid("genesis.json is not a JSON object"))?
            .insert("app_state".into(), serde_json::to_value(self)?);
        Ok(())
    }
}

/// Why a genesis was refused (the node cannot start with it).
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The `app_state` JSON does not parse.
    #[error("app_state is not valid JSON for NeuroData: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is wrong; the message names it.
    #[error("genesis: {0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

fn invalid(s: impl Into<String>) -> GenesisError {
    GenesisError::Invalid(s.into())
}

/// Decodes a base64 Ed25519 validator key.
pub fn decode_validator_key(b64: &str) -> Result<[u8; 32], GenesisError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| invalid(format!("validator key {b64:?}: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| invalid(format!("validator key {b64:?} is not 32 bytes")))
}

/// Writes the genesis state. `comet_validators` are the validators CometBFT's genesis lists (the
/// set consensus starts with): the app's record must agree with it exactly.
pub fn init_genesis<S: StateWrite>(
    state: &mut S,
    chain_id: &str,
    app_state: &AppState,
    comet_validators: &[([u8; 32], i64)],
    height: u64,
) -> Result<(), GenesisError> {
    state.put_raw(
        crate::app::state_key::chain_id().into(),
        chain_id.as_bytes().to_vec(),
    );
    let params = match &app_state.params {
        None => Params::default(),
        Some(p) => Params::try_from(pb::Params {
            min_fee: p.min_fee.clone(),
            proposal_voting_blocks: p.proposal_voting_blocks,
            max_tx_bytes: p.max_tx_bytes,
            max_messages_per_tx: p.max_messages_per_tx,
            key_delivery_blocks: p.key_delivery_blocks,
            confirm_blocks: p.confirm_blocks,
            market_fee_bps: p.market_fee_bps,
            max_open_validations_per_org: p.max_open_validations_per_org,
            reward_epoch_blocks: p.reward_epoch_blocks,
            model_royalty_bps: p.model_royalty_bps,
            cert_expiry_notice_secs: p.cert_expiry_notice_secs,
        })
        .map_err(|e| invalid(e.to_string()))?,
    };
    state.put_params(&params);

    if app_state.orgs.is_empty() {
        return Err(invalid("at least one org is required"));
    }
    for org in &app_state.orgs {
        check_org_id(&org.org_id).map_err(|e| invalid(e.to_string()))?;
        if state
            .get_raw(&crate::membership::state_key::org(&org.org_id))?
            .is_some()
        {
            return Err(invalid(format!("org {} listed twice", org.org_id)));
        }
        let ca = CaCertificate::from_pem(&org.ca_cert_pem)
            .map_err(|e| invalid(format!("org {}: {e}", org.org_id)))?;
        if state
            .get_raw(&crate::membership::state_key::ca_subject(&ca.subject_hash))?
            .is_some()
        {
            return Err(invalid(format!(
                "org {}: CA subject already used by another org",
                org.org_id
            )));
        }
        crate::governance::action::admit_org(state, &org.org_id, &org.name, &ca, height)?;
    }

    if comet_validators.is_empty() {
        return Err(invalid("at least one validator is required"));
    }
    let mut named = Vec::new();
    for v in &app_state.validators {
        let key = decode_validator_key(&v.pub_key)?;
        if !app_state.orgs.iter().any(|o| o.org_id == v.org_id) {
            return Err(invalid(format!(
                "validator {}: unknown org {}",
                v.name, v.org_id
            )));
        }
        let operators = v
            .operators
            .iter()
            .map(|o| {
                Address::from_hex(o).map(|a| a.0.to_vec()).ok_or_else(|| {
                    invalid(format!(
                        "validator {}: operator {o:?} is not 64 hex digits",
                        v.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if operators.len() > crate::governance::action::MAX_OPERATORS {
            return Err(invalid(format!(
                "validator {}: at most {} operators",
                v.name,
                crate::governance::action::MAX_OPERATORS
            )));
        }
        named.push((key, v.power, v.org_id.clone(), v.name.clone(), operators));
    }
    if !named.is_empty() {
        let mut ours: Vec<_> = named.iter().map(|(k, p, ..)| (*k, *p)).collect();
        let total = ours.iter().try_fold(0i64, |t, (_, p)| t.checked_add(*p));
        if total.is_none_or(|t| t > crate::governance::action::MAX_TOTAL_POWER) {
            return Err(invalid(format!(
                "total validator power exceeds CometBFT's maximum {}",
                crate::governance::action::MAX_TOTAL_POWER
            )));
        }
        let mut theirs = comet_validators.to_vec();
        ours.sort();
        theirs.sort();
        if ours != theirs {
            return Err(invalid(
                "app_state validators differ from the CometBFT genesis validators",
            ));
        }
    } else {
        named = comet_validators
            .iter()
            .map(|(k, p)| (*k, *p, String::new(), String::new(), vec![]))
            .collect();
    }
    for (key, power, org_id, name, operators) in named {
        if power <= 0 {
            return Err(invalid("validator power must be positive"));
        }
        state.put_validator(
            &key,
            &pb::Validator {
                pub_key: key.to_vec(),
                power,
                org_id,
                name,
                operators,
            },
        );
    }

    let mut supply = Amount::ZERO;
    for a in &app_state.allocations {
        let address = Address::from_hex(&a.address).ok_or_else(|| {
            invalid(format!(
                "allocation address {:?} is not 64 hex digits",
                a.address
            ))
        })?;
        let amount: Amount = a
            .amount
            .parse()
            .map_err(|e| invalid(format!("allocation to {}: {e}", a.address)))?;
        supply = supply
            .checked_add(amount)
            .ok_or_else(|| invalid("allocations overflow u128"))?;
        state
            .credit(&address, amount)
            .map_err(|e| invalid(e.to_string()))?;
    }
    state.set_supply(supply);
    Ok(())
}

/// The chain id recorded at genesis.
pub fn chain_id<S: StateRead>(state: &S) -> Result<Option<String>, crate::state::StateError> {
    Ok(state
        .get_raw(crate::app::state_key::chain_id())?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}
