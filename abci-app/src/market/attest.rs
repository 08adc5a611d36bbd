//! `AttestDataset`: a validator member's findings about a listing, and the `verified` flag; the
//! rule both it and `crate::models::AttestModelListing` verify by ([`verified_by_power`]) and
//! who may attest ([`require_operator`]).

use crate::events::{EventKind, attr};
use std::collections::BTreeMap;

use neurodata_proto::chain::v1 as pb;

use super::{MarketError, MarketWrite};
use crate::TxError;
use crate::governance::GovernanceRead;
use crate::membership::{MembershipRead, Signer};
use crate::state::{Event, StateWrite};
use crate::tx::ExecCtx;

/// A validator member's findings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestDataset {
    /// The dataset.
    pub dataset_id: u64,
    /// Ciphertext downloaded and hashed to the CID.
    pub ciphertext_matches_cid: bool,
    /// Plaintext hashed to the listed SHA-256.
    pub plaintext_matches: bool,
    /// Rows found.
    pub rows: u64,
    /// Header matched the schema.
    pub schema_matches: bool,
}

impl From<pb::AttestDataset> for AttestDataset {
    fn from(m: pb::AttestDataset) -> Self {
        AttestDataset {
            dataset_id: m.dataset_id,
            ciphertext_matches_cid: m.ciphertext_matches_cid,
            plaintext_matches: m.plaintext_matches,
            rows: m.rows,
            schema_matches: m.schema_matches,
        }
    }
}

/// Voting power per active org, from the validator set.
fn power_by_org<S: GovernanceRead>(state: &S) -> Result<BTreeMap<String, u128>, TxError> {
    let mut power = BTreeMap::new();
    for v in state.active_validators()? {
        *power.entry(v.org_id).or_insert(0u128) += u128::try_from(v.power).unwrap_or(0);
    }
    Ok(power)
}

/// Refuses a signer that is not a registered operator of a validator with voting power in its
/// own org. Validation rights come from governance (SetValidator's operators), never from a
/// certificate's OU alone: any org admin can issue itself a `validator` certificate.
pub fn require_operator<S: GovernanceRead + MembershipRead>(
    state: &S,
    signer: &Signer,
) -> Result<(), TxError> {
    let me = signer.identity.fingerprint.as_slice();
    let org = &signer.identity.org_id;
    let operates = state
        .validators()?
        .iter()
        .any(|v| &v.org_id == org && v.power > 0 && v.operators.iter().any(|o| o == me));
    if !operates {
        return Err(MarketError::NotOperator {
            fingerprint: hex::encode(me),
            org: org.clone(),
        }
        .into());
    }
    require_voting_power(state, org)
}

/// Refuses an org that runs no validator with voting power.
pub fn require_voting_power<S: GovernanceRead + MembershipRead>(
    state: &S,
    org: &str,
) -> Result<(), TxError> {
    if power_by_org(state)?.get(org).copied().unwrap_or(0) == 0 {
        return Err(MarketError::NoVotingPower(org.to_owned()).into());
    }
    Ok(())
}

/// The verification rule of datasets and model listings: whether the orgs in `positive` (those
/// whose latest attestation is positive) hold more than two thirds of the validator voting
/// power now. Recomputed at every attestation, against the validator set of that block.
pub fn verified_by_power<'a, S: GovernanceRead>(
    state: &S,
    positive: impl IntoIterator<Item = &'a str>,
) -> Result<bool, TxError> {
    let power = power_by_org(state)?;
    let total: u128 = power.values().sum();
    let approving: u128 = positive
        .into_iter()
        .map(|org| power.get(org).copied().unwrap_or(0))
        .sum();
    Ok(approving * 3 > total * 2)
}

impl AttestDataset {
    /// Records the org's attestation (replacing its earlier one) and recomputes `verified`
    /// against the current validator set.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut dataset = super::existing_dataset(state, self.dataset_id)?;
        let org = &signer.identity.org_id;
        require_operator(state, signer)?;
        let positive = self.ciphertext_matches_cid
            && self.plaintext_matches
            && self.schema_matches
            && self.rows == dataset.rows;
        dataset.attestations.retain(|a| &a.org_id != org);
        dataset.attestations.push(pb::Attestation {
            org_id: org.clone(),
            validator: signer.identity.fingerprint.clone(),
            height: ctx.height,
            positive,
            rows: self.rows,
        });
        dataset.attestations.sort_by(|a, b| a.org_id.cmp(&b.org_id));
        let verified = verified_by_power(
            state,
            dataset
                .attestations
                .iter()
                .filter(|a| a.positive)
                .map(|a| a.org_id.as_str()),
        )?;
        if verified && !dataset.verified {
            dataset.verified_height = ctx.height;
        }
        dataset.verified = verified;
        state.put_dataset(&dataset);
        state.emit(
            Event::new(EventKind::DatasetAttested)
                .attr(attr::DATASET, self.dataset_id)
                .attr(attr::ORG, org)
                .attr(attr::POSITIVE, positive)
                .attr(attr::VERIFIED, verified),
        );
        Ok(())
    }
}
