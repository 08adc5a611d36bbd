//! Who may download a blob from this gateway. Every blob here was uploaded by a member of the
//! gateway's own org ([`crate::service::blobs::uploader`]), so:
//!
//! - members of the gateway's own org may read any of them;
//! - a blob no dataset lists: nobody else (a provider checking an upload before listing it);
//! - a blob listed by a dataset of *another* org: nobody else. Anyone may list any CID, so if a
//!   listing decided, another org could list a CID held here (before this org does) and make it
//!   downloadable to its own members and buyers (finding 6 of the audit);
//! - a blob listed by this org's dataset: members with a live purchase of it — a sale, or a
//!   validator's key request only if the org's policy delivers to those (`deliver_validation_keys`,
//!   off by default; finding 1).
//!
//! Decided from the chain at the latest height on every call; the rule itself is [`decide`].

use std::sync::Arc;

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, BuyerDataset};
use neurodata_client::ChainAccess;
use neurodata_proto::chain::v1 as pb;
use tonic::Status;

use super::dataset_by_cid;
use crate::auth::{Caller, Member, chain_status};
use crate::chain::Chain;
use crate::cid::Cid;
use crate::service::blobs::BlobAccess;

/// The marketplace's download policy.
pub struct MarketAccess {
    chain: Arc<Chain>,
    own_org: Option<String>,
    deliver_validation_keys: bool,
}

impl MarketAccess {
    /// The policy for a gateway of `own_org` (None: only plain-text development callers may
    /// read), serving validators' key requests if `deliver_validation_keys`.
    pub fn new(chain: Arc<Chain>, own_org: Option<String>, deliver_validation_keys: bool) -> Self {
        MarketAccess {
            chain,
            own_org,
            deliver_validation_keys,
        }
    }

    /// The caller's live purchase of `dataset`, if any.
    async fn live_purchase(
        &self,
        member: &Member,
        dataset: u64,
    ) -> Result<Option<pb::Purchase>, Status> {
        let chain = &*self.chain;
        let id = chain
            .record(query::live_purchase(BuyerDataset {
                buyer: Address(member.fingerprint),
                dataset,
            }))
            .await
            .map_err(|e| chain_status(e.into()))?;
        // The mark answers for sales and validation requests alike; the kind is in the record.
        let Some(id) = id else {
            return Ok(None);
        };
        chain
            .record(query::purchase(id.0))
            .await
            .map_err(|e| chain_status(e.into()))
    }
}

/// What the download decision is made from.
pub struct Facts<'a> {
    /// The gateway's org (`org_id`).
    pub own_org: Option<&'a str>,
    /// The org policy `deliver_validation_keys`.
    pub deliver_validation_keys: bool,
    /// The caller.
    pub member: &'a Member,
    /// The blob asked for.
    pub cid: &'a str,
    /// The dataset listing it, if any.
    pub dataset: Option<&'a pb::Dataset>,
    /// The caller's live purchase of that dataset, if any.
    pub purchase: Option<&'a pb::Purchase>,
}

/// The download rule (see the module doc).
pub fn decide(f: &Facts<'_>) -> Result<(), Status> {
    let own = f.own_org;
    if own == Some(f.member.org_id.as_str()) {
        return Ok(());
    }
    let Some(dataset) = f.dataset else {
        return Err(Status::permission_denied(format!(
            "blob {} is not a listed dataset; only members of this gateway's org may read it",
            f.cid
        )));
    };
    if own != Some(dataset.provider_org.as_str()) {
        return Err(Status::permission_denied(format!(
            "blob {} is listed by dataset {} of org {}, not by this gateway's org ({}); a \
             gateway serves only its own org's datasets",
            f.cid,
            dataset.id,
            dataset.provider_org,
            own.unwrap_or("none configured")
        )));
    }
    let buy_first = || {
        Status::permission_denied(format!(
            "dataset {} ({}) is downloadable by its provider's org and by members who bought \
             it; buy it first (ndctl dataset buy {})",
            dataset.id, f.cid, dataset.id
        ))
    };
    let Some(p) = f.purchase.filter(|p| p.dataset_id == dataset.id) else {
        return Err(buy_first());
    };
    match pb::PurchaseKind::try_from(p.kind) {
        Ok(pb::PurchaseKind::Sale) => Ok(()),
        Ok(pb::PurchaseKind::Validation) if f.deliver_validation_keys => Ok(()),
        Ok(pb::PurchaseKind::Validation) => Err(Status::permission_denied(format!(
            "purchase {} is a validator's key request, and org {} does not serve validation \
             requests (its gateway setting deliver_validation_keys is off)",
            p.id, dataset.provider_org
        ))),
        Ok(pb::PurchaseKind::Unspecified) | Err(_) => Err(buy_first()),
    }
}

#[tonic::async_trait]
impl BlobAccess for MarketAccess {
    async fn may_download(&self, caller: Option<&Caller>, cid: &Cid) -> Result<(), Status> {
        // Plain-text development mode has no identities to check.
        let Some(caller) = caller else {
            return Ok(());
        };
        let member = &caller.member;
        let own_org = self.own_org.as_deref();
        let cid_text = cid.to_string();
        let mut facts = Facts {
            own_org,
            deliver_validation_keys: self.deliver_validation_keys,
            member,
            cid: &cid_text,
            dataset: None,
            purchase: None,
        };
        // Own members need no chain reads.
        if own_org == Some(member.org_id.as_str()) {
            return decide(&facts);
        }
        // Only the gateway's own org's listing of a CID counts (a listing of it by another org
        // opens nothing here).
        let dataset = match own_org {
            Some(org) => dataset_by_cid(&self.chain, org, &cid_text)
                .await
                .map_err(chain_status)?,
            None => None,
        };
        facts.dataset = dataset.as_ref();
        let purchase = match &dataset {
            Some(d) if own_org == Some(d.provider_org.as_str()) => {
                self.live_purchase(member, d.id).await?
            }
            _ => None,
        };
        facts.purchase = purchase.as_ref();
        decide(&facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_abci::membership::Role;

    fn dataset(org: &str) -> pb::Dataset {
        pb::Dataset {
            id: 4,
            provider_org: org.into(),
            ..Default::default()
        }
    }

    fn purchase(kind: pb::PurchaseKind) -> pb::Purchase {
        pb::Purchase {
            id: 9,
            dataset_id: 4,
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn verdict(
        member_org: &str,
        dataset: Option<&pb::Dataset>,
        purchase: Option<&pb::Purchase>,
        deliver_validation_keys: bool,
    ) -> Result<(), (tonic::Code, String)> {
        let member = Member::for_tests([3; 32], member_org, Role::Buyer);
        decide(&Facts {
            own_org: Some("medlab"),
            deliver_validation_keys,
            member: &member,
            cid: "bafyblob",
            dataset,
            purchase,
        })
        .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn a_blob_listed_by_another_org_is_not_served_to_that_org_or_its_buyers() {
        let theirs = dataset("datacorp");
        // The org that listed medlab's blob, and a buyer of that listing: both refused.
        let sale = purchase(pb::PurchaseKind::Sale);
        for (who, p) in [("datacorp", None), ("healthtech", Some(&sale))] {
            let err = verdict(who, Some(&theirs), p, false).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied, "{who}");
            assert!(
                err.1.contains("listed by dataset 4 of org datacorp"),
                "{who}: {}",
                err.1
            );
        }
        // The gateway's own org still reads what its members uploaded.
        assert!(verdict("medlab", Some(&theirs), None, false).is_ok());
    }

    #[test]
    fn buyers_of_the_orgs_own_listing_may_download_and_others_may_not() {
        let ours = dataset("medlab");
        let sale = purchase(pb::PurchaseKind::Sale);
        assert!(verdict("healthtech", Some(&ours), Some(&sale), false).is_ok());
        let err = verdict("healthtech", Some(&ours), None, false).unwrap_err();
        assert!(err.1.contains("buy it first"), "{}", err.1);
        let err = verdict("healthtech", None, None, false).unwrap_err();
        assert!(err.1.contains("not a listed dataset"), "{}", err.1);
        // A purchase of another dataset does not count.
        let other = pb::Purchase {
            dataset_id: 5,
            ..sale
        };
        assert!(verdict("healthtech", Some(&ours), Some(&other), false).is_err());
    }

    #[test]
    fn a_validation_request_downloads_only_under_the_orgs_explicit_policy() {
        let ours = dataset("medlab");
        let request = purchase(pb::PurchaseKind::Validation);
        let err = verdict("healthtech", Some(&ours), Some(&request), false).unwrap_err();
        assert_eq!(err.0, tonic::Code::PermissionDenied);
        assert!(err.1.contains("deliver_validation_keys"), "{}", err.1);
        assert!(verdict("healthtech", Some(&ours), Some(&request), true).is_ok());
    }
}
