//! Buying a model: a sale in the market's escrow with the royalties fixed as it opens.

use neurodata_proto::chain::v1 as pb;

use super::listing::require_listed;
use super::royalty::{RoyaltySource, split_royalties};
use super::{ModelsError, existing_listing};
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::escrow::{EscrowRead, Item, ModelSale, fee_of, open_model_sale};
use crate::ledger::signer_address;
use crate::market::existing_dataset;
use crate::membership::{MembershipRead, Signer};
use crate::state::{StateError, StateRead, StateWrite, stored_amount};
use crate::training::TrainingRead;
use crate::tx::{ExecCtx, amount_field};

/// Buy a model listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuyModel {
    /// The listing.
    pub listing_id: u64,
    /// Most the buyer pays.
    pub max_price: Amount,
}

impl TryFrom<pb::BuyModel> for BuyModel {
    type Error = TxError;
    fn try_from(m: pb::BuyModel) -> Result<Self, TxError> {
        Ok(BuyModel {
            listing_id: m.listing_id,
            max_price: amount_field("buy_model.max_price", &m.max_price)?,
        })
    }
}

/// The datasets model listing `listing` was trained on whose provider org is active, each with
/// its provider now and its validator-attested rows (0 when not verified).
fn royalty_sources<S: StateRead>(
    state: &S,
    listing: &pb::ModelListing,
) -> Result<Vec<RoyaltySource>, TxError> {
    let corrupt = |reason: String| StateError::Corrupt {
        key: super::state_key::listing(listing.id),
        reason,
    };
    let mv = state
        .model_version(listing.model_version)?
        .ok_or_else(|| corrupt(format!("model version {} is gone", listing.model_version)))?;
    let mut sources = Vec::new();
    for &id in &mv.dataset_ids {
        let d = existing_dataset(state, id)?;
        // A removed org's identities can neither spend nor be moved to a successor: a share
        // paid there would be burnt, so the owner keeps it.
        if !state.org_is_active(&d.provider_org)? {
            continue;
        }
        let provider = Address::from_slice(&d.provider).ok_or_else(|| StateError::Corrupt {
            key: crate::market::state_key::dataset(id),
            reason: "provider is not 32 bytes".into(),
        })?;
        sources.push(RoyaltySource {
            dataset: id,
            // Only rows validators attested weigh: a provider's own count of an unverified
            // listing (a dummy dataset slipped into a job, or inflated rows) would take the pool.
            rows: if d.verified { d.rows } else { 0 },
            provider,
            provider_org: d.provider_org,
        });
    }
    Ok(sources)
}

impl BuyModel {
    /// Escrows the current price and opens the purchase, its royalties fixed by the rule in
    /// [`super::royalty`].
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let listing = existing_listing(state, self.listing_id)?;
        require_listed(&listing)?;
        // Nobody in a removed org can deliver the key: the price would sit in escrow until the
        // deadline.
        if !state.org_is_active(&listing.owner_org)? {
            return Err(ModelsError::OwnerOrgInactive {
                listing: listing.id,
                org: listing.owner_org,
            }
            .into());
        }
        if listing.owner_org == signer.identity.org_id {
            return Err(ModelsError::OwnModel {
                listing: listing.id,
                org: listing.owner_org,
            }
            .into());
        }
        let price = stored_amount(&listing.price, || super::state_key::listing(listing.id))?;
        if price > self.max_price {
            return Err(ModelsError::PriceAboveMax {
                price,
                max: self.max_price,
            }
            .into());
        }
        let buyer = signer_address(signer)?;
        if let Some(purchase) = state.live_mark(&buyer, Item::Model(listing.id))? {
            return Err(ModelsError::AlreadyBought {
                listing: listing.id,
                purchase,
            }
            .into());
        }
        let owner = Address::from_slice(&listing.owner).ok_or_else(|| StateError::Corrupt {
            key: super::state_key::listing(listing.id),
            reason: "owner is not 32 bytes".into(),
        })?;
        let params = &ctx.params;
        // market_fee_bps + model_royalty_bps <= 10000 (the parameters' check), so the fee and the
        // pool, each rounded down, never add up to more than the price.
        let fee = fee_of(price, params.market_fee_bps);
        let pool = fee_of(price, params.model_royalty_bps);
        let royalties = split_royalties(pool, &royalty_sources(state, &listing)?);
        open_model_sale(
            state,
            ModelSale {
                listing: listing.id,
                buyer,
                buyer_org: signer.identity.org_id.clone(),
                owner,
                owner_org: listing.owner_org,
                price,
                fee,
                royalties,
            },
            ctx,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::market::MarketWrite as _;
    use crate::membership::MembershipWrite as _;
    use crate::state::{MemoryState, StateDelta};
    use crate::training::TrainingWrite as _;

    /// Datasets 1 (verified, 300 rows), 2 (unverified, claims 10^12 rows) and 3 (verified, of
    /// a removed org), and model version 7 trained on all three.
    fn world() -> MemoryState {
        let mut state = MemoryState::default();
        let mut d = StateDelta::new(&state);
        for (org, status) in [
            ("medlab", pb::OrgStatus::Active),
            ("datacorp", pb::OrgStatus::Active),
            ("gone", pb::OrgStatus::Removed),
        ] {
            let o = pb::Org {
                org_id: org.into(),
                status: status as i32,
                ..Default::default()
            };
            d.put_org(&o, &[org.len() as u8; 32]);
        }
        for (id, org, rows, verified) in [
            (1u64, "medlab", 300, true),
            (2, "datacorp", 1_000_000_000_000, false),
            (3, "gone", 100, true),
        ] {
            d.put_dataset(&pb::Dataset {
                id,
                provider: vec![id as u8; 32],
                provider_org: org.into(),
                rows,
                verified,
                ..Default::default()
            });
        }
        d.put_model_version(&pb::ModelVersion {
            id: 7,
            dataset_ids: vec![1, 2, 3],
            ..Default::default()
        });
        state.apply(d.into_changes());
        state
    }

    #[test]
    fn only_attested_rows_of_active_orgs_weigh() {
        let state = world();
        let listing = pb::ModelListing {
            id: 1,
            model_version: 7,
            ..Default::default()
        };
        let sources = royalty_sources(&state, &listing).unwrap();
        let weights: Vec<(u64, u64)> = sources.iter().map(|s| (s.dataset, s.rows)).collect();
        // The removed org's dataset is left out; the unverified one's claim weighs nothing.
        assert_eq!(weights, vec![(1, 300), (2, 0)]);
        let royalties = split_royalties(Amount(1_000), &sources);
        assert_eq!(royalties.len(), 1);
        assert_eq!(
            (royalties[0].dataset, royalties[0].amount),
            (1, Amount(1_000))
        );
    }
}
