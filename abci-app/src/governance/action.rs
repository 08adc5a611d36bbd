//! What a proposal does: each action's static checks, its preflight against the state at
//! submission, and its execution when the proposal passes.

use crate::events::{EventKind, attr};
use neurodata_proto::chain::v1 as pb;

use super::{GovernanceError, GovernanceRead, GovernanceWrite, Params};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::membership::certificate::subject_hash;
use crate::membership::{CaCertificate, MembershipRead, MembershipWrite};
use crate::state::{Event, StateRead, StateWrite};
use crate::tx::ExecCtx;

/// A checked proposal action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalAction {
    /// Admit an org with its root CA.
    AdmitOrg {
        /// New org id.
        org_id: String,
        /// Display name.
        name: String,
        /// Root CA PEM (checked).
        ca_cert_pem: String,
    },
    /// Remove an org.
    RemoveOrg {
        /// The org.
        org_id: String,
    },
    /// Replace an org's root CA.
    RotateOrgCa {
        /// The org.
        org_id: String,
        /// New root CA PEM (checked).
        ca_cert_pem: String,
        /// Seconds the old CA's certificates stay live after the rotation (at most
        /// [`MAX_ROTATION_GRACE_SECS`]).
        grace_secs: u64,
    },
    /// Add, reweight or remove a validator; power > 0 for a jailed validator re-admits it (see
    /// [`super::jail`]).
    SetValidator {
        /// Ed25519 key.
        pub_key: [u8; 32],
        /// Voting power, 0 removes.
        power: i64,
        /// Operating org.
        org_id: String,
        /// Display name.
        name: String,
        /// Certificate fingerprints of its operators (members of `org_id`).
        operators: Vec<Address>,
    },
    /// Replace the chain parameters.
    SetParams(Params),
    /// Mint into the treasury.
    Mint(Amount),
    /// Pay out of the treasury or the reward pool.
    Spend {
        /// Where the NRC comes from.
        source: SpendSource,
        /// Recipient.
        to: Address,
        /// How much.
        amount: Amount,
    },
    /// Schedule (or, at height 0, cancel) a software upgrade; see [`super::upgrade`].
    ScheduleUpgrade {
        /// Upgrade name (checked).
        name: String,
        /// Height it runs at; 0 cancels the pending plan of this name.
        height: u64,
        /// Notes for operators.
        info: String,
    },
}

/// The module accounts governance may spend from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendSource {
    /// [`Address::treasury`].
    Treasury,
    /// [`Address::reward_pool`].
    RewardPool,
}

impl SpendSource {
    /// The module account.
    pub fn address(self) -> Address {
        match self {
            SpendSource::Treasury => Address::treasury(),
            SpendSource::RewardPool => Address::reward_pool(),
        }
    }
}

/// Most operators one validator may name.
pub const MAX_OPERATORS: usize = 8;

/// Org ids: 2..=32 of `a-z0-9-`, so they are safe in keys, events and file names.
pub fn check_org_id(org_id: &str) -> Result<(), GovernanceError> {
    let ok = (2..=32).contains(&org_id.len())
        && org_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GovernanceError::BadOrgId {
            org_id: org_id.to_owned(),
        })
    }
}

/// A positive NRC amount of a mint or spend.
fn governance_amount(field: &'static str, s: &str) -> Result<Amount, GovernanceError> {
    let amount: Amount = s.parse().map_err(|e| GovernanceError::BadAmount {
        field,
        reason: format!("{e}"),
    })?;
    if amount == Amount::ZERO {
        return Err(GovernanceError::ZeroAmount { field });
    }
    Ok(amount)
}

/// CometBFT's `MaxTotalVotingPower` (MaxInt64 / 8): a validator set whose total exceeds it makes
/// CometBFT refuse the validator updates, halting every node. It bounds each power too.
pub const MAX_TOTAL_POWER: i64 = i64::MAX / 8;

/// Longest grace period of a CA rotation (366 days): the old CA's certificates stay live that
/// long at most, time for every member to renew.
pub const MAX_ROTATION_GRACE_SECS: u64 = 366 * 86_400;

impl TryFrom<pb::ProposalAction> for ProposalAction {
    type Error = TxError;
    fn try_from(a: pb::ProposalAction) -> Result<Self, TxError> {
        use pb::proposal_action::Action as A;
        let action = a.action.ok_or(GovernanceError::NoAction)?;
        Ok(match action {
            A::ScheduleUpgrade(m) => {
                super::upgrade::check_name(&m.name)?;
                if m.info.len() > super::upgrade::MAX_INFO_BYTES {
                    return Err(GovernanceError::UpgradeInfoTooLong { len: m.info.len() }.into());
                }
                ProposalAction::ScheduleUpgrade {
                    name: m.name,
                    height: m.height,
                    info: m.info,
                }
            }
            A::AdmitOrg(m) => {
                check_org_id(&m.org_id)?;
                if m.name.is_empty() || m.name.len() > 128 {
                    return Err(GovernanceError::BadOrgName { len: m.name.len() }.into());
                }
                CaCertificate::from_pem(&m.ca_cert_pem)?;
                ProposalAction::AdmitOrg {
                    org_id: m.org_id,
                    name: m.name,
                    ca_cert_pem: m.ca_cert_pem,
                }
            }
            A::RemoveOrg(m) => {
                check_org_id(&m.org_id)?;
                ProposalAction::RemoveOrg { org_id: m.org_id }
            }
            A::RotateOrgCa(m) => {
                check_org_id(&m.org_id)?;
                CaCertificate::from_pem(&m.ca_cert_pem)?;
                if m.grace_secs > MAX_ROTATION_GRACE_SECS {
                    return Err(GovernanceError::ParamOutOfRange {
                        param: "rotate_org_ca.grace_secs",
                        value: m.grace_secs,
                        min: 0,
                        max: MAX_ROTATION_GRACE_SECS,
                    }
                    .into());
                }
                ProposalAction::RotateOrgCa {
                    org_id: m.org_id,
                    ca_cert_pem: m.ca_cert_pem,
                    grace_secs: m.grace_secs,
                }
            }
            A::SetValidator(m) => {
                let pub_key = <[u8; 32]>::try_from(m.pub_key.as_slice()).map_err(|_| {
                    GovernanceError::BadValidatorKey {
                        len: m.pub_key.len(),
                    }
                })?;
                if !(0..=MAX_TOTAL_POWER).contains(&m.power) {
                    return Err(GovernanceError::PowerOutOfRange {
                        power: m.power,
                        max: MAX_TOTAL_POWER,
                    }
                    .into());
                }
                if m.operators.len() > MAX_OPERATORS {
                    return Err(GovernanceError::TooManyOperators {
                        count: m.operators.len(),
                        max: MAX_OPERATORS,
                    }
                    .into());
                }
                let operators = m
                    .operators
                    .iter()
                    .enumerate()
                    .map(|(index, o)| {
                        Address::from_slice(o).ok_or(GovernanceError::BadOperator {
                            index,
                            len: o.len(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if m.power > 0 {
                    check_org_id(&m.org_id)?;
                }
                if m.name.len() > 64 {
                    return Err(GovernanceError::BadValidatorName { len: m.name.len() }.into());
                }
                ProposalAction::SetValidator {
                    pub_key,
                    power: m.power,
                    org_id: m.org_id,
                    name: m.name,
                    operators,
                }
            }
            A::SetParams(p) => ProposalAction::SetParams(Params::try_from(p)?),
            A::Mint(m) => {
                let amount = governance_amount("mint.amount", &m.amount)?;
                ProposalAction::Mint(amount)
            }
            A::Spend(m) => {
                let source = match pb::SpendSource::try_from(m.source) {
                    Ok(pb::SpendSource::Treasury) => SpendSource::Treasury,
                    Ok(pb::SpendSource::RewardPool) => SpendSource::RewardPool,
                    _ => {
                        return Err(GovernanceError::BadSpendSource { given: m.source }.into());
                    }
                };
                let to = Address::from_slice(&m.to)
                    .ok_or(GovernanceError::BadSpendRecipient { len: m.to.len() })?;
                let amount = governance_amount("spend.amount", &m.amount)?;
                ProposalAction::Spend { source, to, amount }
            }
        })
    }
}

impl From<&ProposalAction> for pb::ProposalAction {
    fn from(a: &ProposalAction) -> Self {
        use pb::proposal_action::Action as A;
        let action = match a {
            ProposalAction::ScheduleUpgrade { name, height, info } => {
                A::ScheduleUpgrade(pb::ScheduleUpgrade {
                    name: name.clone(),
                    height: *height,
                    info: info.clone(),
                })
            }
            ProposalAction::AdmitOrg {
                org_id,
                name,
                ca_cert_pem,
            } => A::AdmitOrg(pb::AdmitOrg {
                org_id: org_id.clone(),
                name: name.clone(),
                ca_cert_pem: ca_cert_pem.clone(),
            }),
            ProposalAction::RemoveOrg { org_id } => A::RemoveOrg(pb::RemoveOrg {
                org_id: org_id.clone(),
            }),
            ProposalAction::RotateOrgCa {
                org_id,
                ca_cert_pem,
                grace_secs,
            } => A::RotateOrgCa(pb::RotateOrgCa {
                org_id: org_id.clone(),
                ca_cert_pem: ca_cert_pem.clone(),
                grace_secs: *grace_secs,
            }),
            ProposalAction::SetValidator {
                pub_key,
                power,
                org_id,
                name,
                operators,
            } => A::SetValidator(pb::SetValidator {
                pub_key: pub_key.to_vec(),
                power: *power,
                org_id: org_id.clone(),
                name: name.clone(),
                operators: operators.iter().map(|o| o.0.to_vec()).collect(),
            }),
            ProposalAction::SetParams(p) => A::SetParams(p.into()),
            ProposalAction::Mint(amount) => A::Mint(pb::Mint {
                amount: amount.to_string(),
            }),
            ProposalAction::Spend { source, to, amount } => A::Spend(pb::Spend {
                source: match source {
                    SpendSource::Treasury => pb::SpendSource::Treasury,
                    SpendSource::RewardPool => pb::SpendSource::RewardPool,
                } as i32,
                to: to.0.to_vec(),
                amount: amount.to_string(),
            }),
        };
        pb::ProposalAction {
            action: Some(action),
        }
    }
}

impl ProposalAction {
    /// Checks against the current state that the action could run (at submission, so a proposal
    /// that would remove the last org or validator is refused up front, and again at execution).
    pub fn preflight<S: StateRead>(&self, state: &S) -> Result<(), TxError> {
        match self {
            ProposalAction::AdmitOrg {
                org_id,
                ca_cert_pem,
                ..
            } => {
                if state.org(org_id)?.is_some() {
                    return Err(GovernanceError::OrgExists(org_id.clone()).into());
                }
                let ca = CaCertificate::from_pem(ca_cert_pem)?;
                if let Some(other) = state.org_by_ca_subject(&ca.subject_hash)? {
                    return Err(GovernanceError::CaSubjectInUse(other).into());
                }
            }
            ProposalAction::RemoveOrg { org_id } => {
                let active = state.active_orgs()?;
                if !active.iter().any(|o| &o.org_id == org_id) {
                    return Err(GovernanceError::UnknownOrg(org_id.clone()).into());
                }
                if active.len() == 1 {
                    return Err(GovernanceError::LastOrg(org_id.clone()).into());
                }
                // The org's validators leave with it; someone must remain to make blocks.
                if state.validators()?.iter().all(|v| &v.org_id == org_id) {
                    return Err(GovernanceError::LastValidator.into());
                }
            }
            ProposalAction::RotateOrgCa {
                org_id,
                ca_cert_pem,
                ..
            } => {
                active_org(state, org_id)?;
                let ca = CaCertificate::from_pem(ca_cert_pem)?;
                if let Some(other) = state.org_by_ca_subject(&ca.subject_hash)?
                    && &other != org_id
                {
                    return Err(GovernanceError::CaSubjectInUse(other).into());
                }
            }
            ProposalAction::SetValidator {
                pub_key,
                power,
                org_id,
                operators,
                ..
            } => {
                let validators = state.validators()?;
                let others = validators
                    .iter()
                    .filter(|v| v.pub_key.as_slice() != pub_key.as_slice())
                    .try_fold(0i64, |t, v| t.checked_add(v.power));
                let total = others.and_then(|t| t.checked_add(*power));
                if total.is_none_or(|t| t > MAX_TOTAL_POWER) {
                    return Err(GovernanceError::TotalPowerTooHigh {
                        max: MAX_TOTAL_POWER,
                    }
                    .into());
                }
                for operator in operators {
                    let module = [
                        Address::treasury(),
                        Address::reward_pool(),
                        crate::escrow::escrow_account(),
                    ];
                    if module.contains(operator) {
                        return Err(GovernanceError::OperatorIsModuleAccount {
                            operator: operator.to_string(),
                        }
                        .into());
                    }
                    if let Some(identity) = state.identity(&operator.0)?
                        && &identity.org_id != org_id
                    {
                        return Err(GovernanceError::OperatorOfOtherOrg {
                            operator: operator.to_string(),
                            member_of: identity.org_id,
                            org: org_id.clone(),
                        }
                        .into());
                    }
                }
                if *power > 0 {
                    active_org(state, org_id)?;
                } else {
                    if state.validator(pub_key)?.is_none() {
                        return Err(GovernanceError::UnknownValidator(hex::encode(pub_key)).into());
                    }
                    if state.validators()?.len() <= 1 {
                        return Err(GovernanceError::LastValidator.into());
                    }
                }
            }
            ProposalAction::SetParams(_) => {}
            ProposalAction::ScheduleUpgrade { name, height, .. } => {
                let current = crate::app::last_block(state)?.map_or(0, |b| b.height);
                super::upgrade::check_schedule(state, name, *height, current)?;
            }
            ProposalAction::Mint(amount) => {
                state
                    .supply()?
                    .checked_add(*amount)
                    .ok_or_else(|| crate::ledger::LedgerError::Overflow("total supply".into()))?;
            }
            ProposalAction::Spend { source, amount, .. } => {
                let have = state.balance(&source.address())?;
                if have < *amount {
                    return Err(crate::ledger::LedgerError::InsufficientFunds {
                        account: source.address().to_hex(),
                        have,
                        need: *amount,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Runs the action (after [`ProposalAction::preflight`] passed on the same state).
    pub fn execute<S: StateWrite>(
        &self,
        state: &mut S,
        ctx: &ExecCtx,
        proposal_id: u64,
    ) -> Result<(), TxError> {
        self.preflight(&*state)?;
        match self {
            ProposalAction::AdmitOrg {
                org_id,
                name,
                ca_cert_pem,
            } => {
                let ca = CaCertificate::from_pem(ca_cert_pem)?;
                admit_org(state, org_id, name, &ca, ctx.height)?;
            }
            ProposalAction::RemoveOrg { org_id } => {
                let mut org = active_org(&*state, org_id)?;
                let ca = CaCertificate::from_der(&org.ca_cert_der)?;
                org.status = pb::OrgStatus::Removed as i32;
                state.put_org(&org, &ca.subject_hash);
                state.drop_ca_subject(&ca.subject_hash);
                if !org.previous_ca_cert_der.is_empty() {
                    state.drop_ca_subject(&subject_hash(&org.previous_ca_cert_der)?);
                }
                // A removed org's validators stop signing blocks and stop counting in
                // attestation totals.
                for v in state.validators()? {
                    if &v.org_id != org_id {
                        continue;
                    }
                    let key = <[u8; 32]>::try_from(v.pub_key.as_slice()).map_err(|_| {
                        crate::state::StateError::Corrupt {
                            key: super::state_key::VALIDATORS.into(),
                            reason: "validator key is not 32 bytes".into(),
                        }
                    })?;
                    state.put_validator(
                        &key,
                        &pb::Validator {
                            power: 0,
                            ..v.clone()
                        },
                    );
                    state.push_validator_update(key, 0);
                    state.emit(
                        Event::new(EventKind::ValidatorUpdated)
                            .attr(attr::PUB_KEY, hex::encode(key))
                            .attr(attr::POWER, 0)
                            .attr(attr::ORG, org_id),
                    );
                }
                state.emit(Event::new(EventKind::OrgRemoved).attr(attr::ORG, org_id));
            }
            ProposalAction::RotateOrgCa {
                org_id,
                ca_cert_pem,
                grace_secs,
            } => {
                let mut org = active_org(&*state, org_id)?;
                let old = CaCertificate::from_der(&org.ca_cert_der)?;
                let new = CaCertificate::from_pem(ca_cert_pem)?;
                // The ca-subject index names the org by its current CA's subject and, while the
                // org record keeps it, by the subject of the CA its last rotation replaced (so a
                // new certificate of that CA finds its org during the grace period; afterwards
                // the rule refuses it). This rotation replaces both.
                if !org.previous_ca_cert_der.is_empty() {
                    state.drop_ca_subject(&subject_hash(&org.previous_ca_cert_der)?);
                }
                state.drop_ca_subject(&old.subject_hash);
                if *grace_secs > 0 {
                    let until = ctx
                        .time
                        .saturating_add(i64::try_from(*grace_secs).unwrap_or(i64::MAX));
                    org.previous_ca_cert_der = old.der.clone();
                    org.previous_ca_fingerprint = old.fingerprint.to_vec();
                    org.previous_ca_until = until;
                    state.put_ca_subject(&old.subject_hash, org_id);
                } else {
                    org.previous_ca_cert_der.clear();
                    org.previous_ca_fingerprint.clear();
                    org.previous_ca_until = 0;
                }
                org.ca_cert_der = new.der.clone();
                org.ca_fingerprint = new.fingerprint.to_vec();
                state.put_org(&org, &new.subject_hash);
                state.track_ca_expiry(org_id, &new)?;
                state.emit(
                    Event::new(EventKind::OrgCaRotated)
                        .attr(attr::ORG, org_id)
                        .attr(attr::CA_FINGERPRINT, hex::encode(new.fingerprint))
                        .attr(attr::GRACE_UNTIL, org.previous_ca_until),
                );
            }
            ProposalAction::SetValidator {
                pub_key,
                power,
                org_id,
                name,
                operators,
            } => {
                // A re-admission voted on before the jail would re-admit without the consortium
                // having weighed the misbehaviour.
                if *power > 0
                    && let Some(jail) = state.jailed(pub_key)?
                    && let Some(proposal) = state.proposal(proposal_id)?
                    && jail.jailed_height > proposal.submitted_height
                {
                    return Err(GovernanceError::JailedAfterProposal {
                        pub_key: hex::encode(pub_key),
                        jailed_height: jail.jailed_height,
                        submitted_height: proposal.submitted_height,
                    }
                    .into());
                }
                state.put_validator(
                    pub_key,
                    &pb::Validator {
                        pub_key: pub_key.to_vec(),
                        power: *power,
                        org_id: org_id.clone(),
                        name: name.clone(),
                        operators: operators.iter().map(|o| o.0.to_vec()).collect(),
                    },
                );
                state.push_validator_update(*pub_key, *power);
                state.emit(
                    Event::new(EventKind::ValidatorUpdated)
                        .attr(attr::PUB_KEY, hex::encode(pub_key))
                        .attr(attr::POWER, power)
                        .attr(attr::ORG, org_id),
                );
                // Re-admission of a jailed validator is this vote of the consortium.
                if *power > 0 && state.jailed(pub_key)?.is_some() {
                    state.clear_jailed(pub_key);
                    state.emit(
                        Event::new(EventKind::ValidatorUnjailed)
                            .attr(attr::PUB_KEY, hex::encode(pub_key))
                            .attr(attr::POWER, power)
                            .attr(attr::ORG, org_id),
                    );
                }
            }
            ProposalAction::SetParams(params) => {
                state.put_params(params);
                state.emit(
                    Event::new(EventKind::ParamsChanged)
                        .attr(attr::MIN_FEE, params.min_fee)
                        .attr(attr::PROPOSAL_VOTING_BLOCKS, params.proposal_voting_blocks)
                        .attr(attr::MAX_TX_BYTES, params.max_tx_bytes)
                        .attr(attr::MAX_MESSAGES_PER_TX, params.max_messages_per_tx),
                );
            }
            ProposalAction::ScheduleUpgrade { name, height, info } => {
                super::upgrade::schedule(state, name, *height, info, proposal_id);
            }
            ProposalAction::Mint(amount) => state.mint(*amount)?,
            ProposalAction::Spend { source, to, amount } => {
                state.move_funds(&source.address(), to, *amount)?;
                state.emit(
                    Event::new(EventKind::GovernanceSpent)
                        .attr(attr::SOURCE, source.address())
                        .attr(attr::TO, to)
                        .attr(attr::AMOUNT, amount),
                );
            }
        }
        Ok(())
    }
}

/// Writes a newly admitted org (genesis or governance), files its CA for expiry notices and
/// emits `org.admitted`.
pub fn admit_org<S: StateWrite>(
    state: &mut S,
    org_id: &str,
    name: &str,
    ca: &CaCertificate,
    height: u64,
) -> Result<(), crate::state::StateError> {
    state.put_org(
        &pb::Org {
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            ca_cert_der: ca.der.clone(),
            ca_fingerprint: ca.fingerprint.to_vec(),
            status: pb::OrgStatus::Active as i32,
            admitted_height: height,
            ..Default::default()
        },
        &ca.subject_hash,
    );
    state.track_ca_expiry(org_id, ca)?;
    state.emit(
        Event::new(EventKind::OrgAdmitted)
            .attr(attr::ORG, org_id)
            .attr(attr::CA_FINGERPRINT, hex::encode(ca.fingerprint)),
    );
    Ok(())
}

fn active_org<S: StateRead>(state: &S, org_id: &str) -> Result<pb::Org, TxError> {
    state
        .org(org_id)?
        .filter(|o| o.status == pb::OrgStatus::Active as i32)
        .ok_or_else(|| GovernanceError::UnknownOrg(org_id.to_owned()).into())
}
