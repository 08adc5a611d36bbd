//! `AttestModelListing`: a validator operator's findings about a model listing's ciphertexts,
//! and the listing's `verified` flag.
//!
//! A buyer's `install` refuses ciphertexts that do not decrypt to the card's model hash and ONNX
//! CID, but the escrow's dispute proves only a wrong key: an owner who lists junk encrypted under
//! the committed key would be paid when the confirm window passes. So validators check the
//! ciphertexts before anyone buys, with the key the owner's gateway delivered for their
//! validation request, and the listing is verified by the datasets' rule
//! ([`crate::market::verified_by_power`]).

use neurodata_proto::chain::v1 as pb;

use super::{ModelsError, ModelsWrite, existing_listing, require_listed};
use crate::TxError;
use crate::escrow::{EscrowRead, Item};
use crate::events::{EventKind, attr};
use crate::ledger::signer_address;
use crate::market::{require_operator, verified_by_power};
use crate::membership::{MembershipRead, Signer};
use crate::state::{Event, StateRead, StateWrite};
use crate::tx::ExecCtx;

/// A validator operator's findings about a model listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestModelListing {
    /// The listing.
    pub listing_id: u64,
    /// Both ciphertexts downloaded and hashed to the listing's CIDs.
    pub ciphertexts_match_cids: bool,
    /// The model file decrypted to the card's SHA-256.
    pub model_matches: bool,
    /// The ONNX export decrypted to the card's CID.
    pub onnx_matches: bool,
}

impl From<pb::AttestModelListing> for AttestModelListing {
    fn from(m: pb::AttestModelListing) -> Self {
        AttestModelListing {
            listing_id: m.listing_id,
            ciphertexts_match_cids: m.ciphertexts_match_cids,
            model_matches: m.model_matches,
            onnx_matches: m.onnx_matches,
        }
    }
}

impl AttestModelListing {
    /// Whether every finding agrees with the listing.
    pub fn positive(&self) -> bool {
        self.ciphertexts_match_cids && self.model_matches && self.onnx_matches
    }
}

/// Model listing `id` if `signer` may ask for its key to validate it: a registered operator of a
/// validator with voting power, the listing listed, its owner org active (nobody else delivers
/// the key) and the listing not verified yet. `crate::escrow::RequestValidation` opens the
/// request.
pub fn validatable_listing<S: StateRead>(
    state: &S,
    id: u64,
    signer: &Signer,
) -> Result<pb::ModelListing, TxError> {
    let listing = existing_listing(state, id)?;
    require_operator(state, signer)?;
    require_listed(&listing)?;
    if !state.org_is_active(&listing.owner_org)? {
        return Err(ModelsError::OwnerOrgInactive {
            listing: id,
            org: listing.owner_org,
        }
        .into());
    }
    if listing.verified {
        return Err(ModelsError::AlreadyVerified(id).into());
    }
    Ok(listing)
}

/// Refuses a signer that holds no purchase of listing `id` with a key delivered: an attestation
/// is made with the listing's key, and a validator gets it only through its validation request
/// (the purchase stays marked once confirmed or released, so a later correction is accepted).
fn require_key_delivered<S: StateRead>(state: &S, id: u64, signer: &Signer) -> Result<(), TxError> {
    let me = signer_address(signer)?;
    let delivered = match state.live_mark(&me, Item::Model(id))? {
        Some(purchase) => state
            .load_purchase(purchase)?
            .is_some_and(|p| p.state.delivery().is_some()),
        None => false,
    };
    if !delivered {
        return Err(ModelsError::NoKeyDelivered { listing: id }.into());
    }
    Ok(())
}

impl AttestModelListing {
    /// Records the org's attestation (replacing its earlier one) and recomputes `verified`
    /// against the current validator set.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut listing = existing_listing(state, self.listing_id)?;
        require_operator(state, signer)?;
        // A delisted listing sells nothing more: there is nothing left to attest for.
        require_listed(&listing)?;
        require_key_delivered(state, self.listing_id, signer)?;
        let org = &signer.identity.org_id;
        let positive = self.positive();
        listing.attestations.retain(|a| &a.org_id != org);
        listing.attestations.push(pb::ModelAttestation {
            org_id: org.clone(),
            validator: signer.identity.fingerprint.clone(),
            height: ctx.height,
            positive,
            ciphertexts_match_cids: self.ciphertexts_match_cids,
            model_matches: self.model_matches,
            onnx_matches: self.onnx_matches,
        });
        listing.attestations.sort_by(|a, b| a.org_id.cmp(&b.org_id));
        let verified = verified_by_power(
            state,
            listing
                .attestations
                .iter()
                .filter(|a| a.positive)
                .map(|a| a.org_id.as_str()),
        )?;
        if verified && !listing.verified {
            listing.verified_height = ctx.height;
        }
        listing.verified = verified;
        state.put_model_listing(&listing);
        state.emit(
            Event::new(EventKind::ModelAttested)
                .attr(attr::LISTING, self.listing_id)
                .attr(attr::ORG, org)
                .attr(attr::POSITIVE, positive)
                .attr(attr::VERIFIED, verified),
        );
        Ok(())
    }
}
