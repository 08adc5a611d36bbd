//! Preview requests: a member asks to see a few rows of a listing before buying. The request is
//! on chain so the rows can be drawn from a block hash that did not exist when it was made (the
//! provider cannot pick its best rows) and so each member asks once per dataset (a preview is
//! not a way to read the whole table). The provider org's gateway answers with the drawn rows
//! and their Merkle proofs against the listing's `rows_root`.

use neurodata_proto::chain::v1 as pb;

use super::{MarketError, MarketWrite, existing_dataset, require_listed, state_key};
use crate::TxError;
use crate::address::Address;
use crate::events::{EventKind, attr};
use crate::membership::Signer;
use crate::state::{Event, StateWrite};
use crate::tx::ExecCtx;

/// Ask for a preview of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPreview {
    /// The dataset.
    pub dataset_id: u64,
}

impl From<pb::RequestPreview> for RequestPreview {
    fn from(m: pb::RequestPreview) -> Self {
        RequestPreview {
            dataset_id: m.dataset_id,
        }
    }
}

impl RequestPreview {
    /// Records the request; the rows are drawn from the next block's hash.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let dataset = existing_dataset(state, self.dataset_id)?;
        require_listed(&dataset)?;
        if dataset.preview_rows == 0 {
            return Err(MarketError::NoPreview(dataset.id).into());
        }
        let org = &signer.identity.org_id;
        if dataset.provider_org == *org {
            return Err(MarketError::OwnPreview {
                dataset: dataset.id,
                org: org.clone(),
            }
            .into());
        }
        let requester = Address::from_slice(&signer.identity.fingerprint)
            .ok_or_else(|| crate::tx::invalid("signer", "fingerprint is not 32 bytes"))?;
        let key = state_key::preview(dataset.id, &requester);
        if let Some(earlier) = state.get_proto::<pb::PreviewRequest>(&key)? {
            return Err(MarketError::PreviewRequested {
                dataset: dataset.id,
                height: earlier.height,
            }
            .into());
        }
        let rows = u64::from(dataset.preview_rows).min(dataset.rows) as u32;
        state.put_preview_request(
            &pb::PreviewRequest {
                dataset_id: dataset.id,
                requester: requester.0.to_vec(),
                requester_org: org.clone(),
                height: ctx.height,
                rows,
            },
            &requester,
        );
        state.emit(
            Event::new(EventKind::PreviewRequested)
                .attr(attr::DATASET, dataset.id)
                .attr(attr::BUYER, requester.to_hex())
                .attr(attr::PROVIDER_ORG, &dataset.provider_org),
        );
        Ok(())
    }
}
