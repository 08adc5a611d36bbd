//! Who may download a blob from this gateway. Every blob here was uploaded by a member of the
//! gateway's own org ([`crate::service::blobs::uploader`]), so:
//!
//! - members of the gateway's own org may read any of them;
//! - a blob no dataset lists: nobody else, unless it is an artifact of a training run by this
//!   org's worker (below); otherwise it is private (a provider checking an upload before listing
//!   it);
//! - a blob listed by a dataset of *another* org: nobody else. Anyone may list any CID, so if a
//!   listing decided, another org could list a CID held here (before this org does) and make it
//!   downloadable to its own members and buyers (finding 6 of the audit);
//! - a blob listed by this org's dataset: members with a live purchase of it — a sale, a
//!   training job's key request (the chain opens those for the job's worker and for the
//!   operators of validators attesting it; the provider agreed to on-platform training of what
//!   it sells), an evaluation's key request of a hidden evaluation split (the chain opens those
//!   for the operators of validators scoring a model on it), or a validator's key request only
//!   if the org's policy delivers to those (`deliver_validation_keys`, off by default;
//!   finding 1);
//! - a blob that is a ciphertext of this org's model listing (its model file or ONNX export):
//!   members with a live purchase of that listing — a sale, or a validator's key request (served
//!   whatever `deliver_validation_keys` says: validators attest a listing's ciphertexts before
//!   buyers buy it). The same reasoning as for datasets: only this org's listing of a CID
//!   counts.
//!
//! Training artifacts. A worker uploads its run's files (model, ONNX export, trace,
//! checkpoints) to its own org's gateway as plain blobs and names their CIDs in `SubmitResult`.
//! Such a blob, listed by no dataset, is readable by another org's member if a job whose current
//! result names it was run by a worker of *this* org (only the worker's own gateway serves them:
//! anyone else could name a CID held here in a result) and the member is either of the job's
//! submitter org (which owns the model) or an operator of a validator attesting that result (it
//! re-runs sampled segments). A trainer of this org can thereby open any unlisted blob held here
//! to those readers, as it could by downloading and passing it on; nobody outside the org can.
//!
//! Evaluation artifacts. When a member asks validators to score a model version on a hidden
//! split, each attestor's verifier needs the model file and its ONNX export (in the clear: the
//! training run's own artifacts, not a listing's ciphertexts). So the model file or ONNX export
//! of a final job run by this org's worker is also readable by operators of the validators
//! attesting an evaluation of that model version while it is ATTESTING.
//!
//! Decided from the chain at the latest height on every call; the rule itself is [`decide`].

use std::collections::BTreeSet;
use std::sync::Arc;

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, BuyerDataset, OrgCid};
use neurodata_abci::training;
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

    /// The jobs whose current result names `cid` and whose worker is of `own_org` (the only
    /// ones [`decide`] counts).
    async fn artifact_jobs(&self, own_org: &str, cid: &str) -> Result<Vec<pb::Job>, Status> {
        let jobs = self
            .chain
            .record(query::jobs(pb::JobFilter {
                artifact_cid: cid.to_owned(),
                ..Default::default()
            }))
            .await
            .map_err(|e| chain_status(e.into()))?
            .unwrap_or_default()
            .jobs;
        Ok(jobs
            .into_iter()
            .filter(|j| j.worker_org == own_org)
            .collect())
    }

    /// This org's model listing whose ciphertext is `cid`, if any.
    async fn model_listing(
        &self,
        own_org: &str,
        cid: &str,
    ) -> Result<Option<pb::ModelListing>, Status> {
        let chain = &*self.chain;
        let id = chain
            .record(query::model_listing_by_cid(OrgCid {
                org: own_org.into(),
                cid: cid.into(),
            }))
            .await
            .map_err(|e| chain_status(e.into()))?;
        let Some(id) = id else {
            return Ok(None);
        };
        chain
            .record(query::model_listing(id.0))
            .await
            .map_err(|e| chain_status(e.into()))
    }

    /// The caller's live purchase of model listing `listing`, if any.
    async fn live_model_purchase(
        &self,
        member: &Member,
        listing: u64,
    ) -> Result<Option<pb::Purchase>, Status> {
        let chain = &*self.chain;
        let id = chain
            .record(query::live_model_purchase(BuyerDataset {
                buyer: Address(member.fingerprint),
                dataset: listing,
            }))
            .await
            .map_err(|e| chain_status(e.into()))?;
        let Some(id) = id else {
            return Ok(None);
        };
        chain
            .record(query::purchase(id.0))
            .await
            .map_err(|e| chain_status(e.into()))
    }

    /// The model versions of final `jobs`, and the evaluations of them still ATTESTING.
    async fn evaluated_models(
        &self,
        jobs: &[pb::Job],
    ) -> Result<(Vec<pb::ModelVersion>, Vec<pb::Evaluation>), Status> {
        let chain = &*self.chain;
        let mut versions = Vec::new();
        for id in jobs.iter().map(|j| j.model_version).filter(|&v| v != 0) {
            if let Some(v) = chain
                .record(query::model_version(id))
                .await
                .map_err(|e| chain_status(e.into()))?
            {
                versions.push(v);
            }
        }
        if versions.is_empty() {
            return Ok((versions, Vec::new()));
        }
        let evaluations = chain
            .record(query::evaluations())
            .await
            .map_err(|e| chain_status(e.into()))?
            .unwrap_or_default()
            .evaluations
            .into_iter()
            .filter(|e| {
                e.status == pb::EvaluationStatus::Attesting as i32
                    && versions.iter().any(|v| v.id == e.model_version)
            })
            .collect();
        Ok((versions, evaluations))
    }

    /// The validator set.
    async fn validators(&self) -> Result<Vec<pb::Validator>, Status> {
        Ok(self
            .chain
            .record(query::validators())
            .await
            .map_err(|e| chain_status(e.into()))?
            .unwrap_or_default()
            .validators)
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
    /// The model listing of the gateway's org whose ciphertext the blob is, if any (read only
    /// for a blob no dataset lists).
    pub model_listing: Option<&'a pb::ModelListing>,
    /// The caller's live purchase of that model listing, if any.
    pub model_purchase: Option<&'a pb::Purchase>,
    /// Training jobs whose current result names the blob (read only for a blob no listing
    /// names; others are ignored).
    pub jobs: &'a [pb::Job],
    /// The model versions of those jobs that are final.
    pub model_versions: &'a [pb::ModelVersion],
    /// Evaluations of those model versions (only ATTESTING ones open anything).
    pub evaluations: &'a [pb::Evaluation],
    /// The validator set (read only when the caller's access hangs on attesting a job or an
    /// evaluation).
    pub validators: &'a [pb::Validator],
}

/// The download rule (see the module doc).
pub fn decide(f: &Facts<'_>) -> Result<(), Status> {
    let own = f.own_org;
    if own == Some(f.member.org_id.as_str()) {
        return Ok(());
    }
    let Some(dataset) = f.dataset else {
        return match f.model_listing {
            Some(listing) => decide_model(f, listing),
            None => decide_artifact(f),
        };
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
        // A training key request is the chain's, for a job's worker or attesting validators:
        // not subject to the validation policy (the provider agreed to on-platform training).
        Ok(pb::PurchaseKind::Sale | pb::PurchaseKind::Training) => Ok(()),
        // An evaluation's key request is the chain's too, for the operators of validators
        // scoring a model on a hidden split: it opens that split only.
        Ok(pb::PurchaseKind::Evaluation) if dataset.status == pb::DatasetStatus::Hidden as i32 => {
            Ok(())
        }
        Ok(pb::PurchaseKind::Evaluation) => Err(buy_first()),
        Ok(pb::PurchaseKind::Validation) if f.deliver_validation_keys => Ok(()),
        Ok(pb::PurchaseKind::Validation) => Err(Status::permission_denied(format!(
            "purchase {} is a validator's key request, and org {} does not serve validation \
             requests (its gateway setting deliver_validation_keys is off)",
            p.id, dataset.provider_org
        ))),
        Ok(pb::PurchaseKind::Unspecified) | Err(_) => Err(buy_first()),
    }
}

/// The rule for a ciphertext of a model listing: this org's listing, to members with a live
/// purchase of it (a sale, or a validator's key request).
fn decide_model(f: &Facts<'_>, listing: &pb::ModelListing) -> Result<(), Status> {
    let own = f.own_org;
    if own != Some(listing.owner_org.as_str()) {
        return Err(Status::permission_denied(format!(
            "blob {} is a ciphertext of model listing {} of org {}, not of this gateway's org \
             ({}); a gateway serves only its own org's listings",
            f.cid,
            listing.id,
            listing.owner_org,
            own.unwrap_or("none configured")
        )));
    }
    // A validator's key request of the listing reads the ciphertexts to attest them, whatever
    // `deliver_validation_keys` says (the owner's gateway delivers its key for the same reason).
    let may = f.model_purchase.is_some_and(|p| {
        p.model_listing == listing.id
            && (p.kind == pb::PurchaseKind::Sale as i32
                || p.kind == pb::PurchaseKind::Validation as i32)
    });
    if may {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "blob {} is a ciphertext of model listing {} (model version {}), downloadable by its \
         owner's org and by members who bought it; buy it first (ndctl model buy {})",
        f.cid, listing.id, listing.model_version, listing.id
    )))
}

/// The rule for a blob no listing names: private to the gateway's org, except a training
/// artifact of this org's worker, to the job's submitter org and its attestors' operators, and
/// the model file or ONNX export of such a job's model version, to the operators of validators
/// attesting an evaluation of it.
fn decide_artifact(f: &Facts<'_>) -> Result<(), Status> {
    let Some(own) = f.own_org else {
        return Err(Status::permission_denied(format!(
            "blob {} is not a listed dataset, and this gateway has no org configured: nobody \
             may read it",
            f.cid
        )));
    };
    // Only a result of this org's worker: a worker of another org could name any CID held here.
    let ours: Vec<&pb::Job> = f
        .jobs
        .iter()
        .filter(|j| j.worker_org == own && training::result_names(j, f.cid))
        .collect();
    if ours.is_empty() {
        return Err(Status::permission_denied(format!(
            "blob {} is not a listed dataset, nor an artifact of a training result by a \
             worker of this gateway's org ({own}); only members of {own} may read it",
            f.cid
        )));
    }
    let caller = f.member;
    if ours.iter().any(|j| j.submitter_org == caller.org_id) {
        return Ok(());
    }
    // The same rule as the chain's for the job's data keys (RequestJobKeys).
    if ours
        .iter()
        .any(|j| training::operates_attestor(j, f.validators, &caller.fingerprint))
    {
        return Ok(());
    }
    // A scorer of the model on a hidden split reads the model file and the ONNX export (not
    // the trace or checkpoints) of a final job's model version while the evaluation attests.
    let versions: Vec<u64> = f
        .model_versions
        .iter()
        .filter(|v| {
            (v.model_cid == f.cid || v.onnx_cid == f.cid)
                && ours.iter().any(|j| j.model_version == v.id)
        })
        .map(|v| v.id)
        .collect();
    if f.evaluations.iter().any(|e| {
        e.status == pb::EvaluationStatus::Attesting as i32
            && versions.contains(&e.model_version)
            && neurodata_abci::models::evaluation::operates_attestor(
                e,
                f.validators,
                &caller.fingerprint,
            )
    }) {
        return Ok(());
    }
    let ids: Vec<String> = ours.iter().map(|j| j.id.to_string()).collect();
    let submitters: BTreeSet<&str> = ours.iter().map(|j| j.submitter_org.as_str()).collect();
    Err(Status::permission_denied(format!(
        "blob {} is an artifact of training job {} run by org {own}; it is readable by members \
         of the job's submitter org ({}), by operators of the validators attesting its \
         result and (its model file and ONNX export) by operators of the validators attesting \
         an evaluation of its model; {} ({}, org {}) is none of these",
        f.cid,
        ids.join(", "),
        submitters.into_iter().collect::<Vec<_>>().join(", "),
        caller.common_name,
        caller.fingerprint_hex(),
        caller.org_id
    )))
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
            model_listing: None,
            model_purchase: None,
            jobs: &[],
            model_versions: &[],
            evaluations: &[],
            validators: &[],
        };
        // Own members need no chain reads.
        if own_org == Some(member.org_id.as_str()) {
            return decide(&facts);
        }
        // Only the gateway's own org's listing of a CID counts (a listing of it by another org
        // opens nothing here).
        let Some(org) = own_org else {
            return decide(&facts);
        };
        let dataset = dataset_by_cid(&self.chain, org, &cid_text)
            .await
            .map_err(chain_status)?;
        facts.dataset = dataset.as_ref();
        let purchase = match &dataset {
            Some(d) if d.provider_org == org => self.live_purchase(member, d.id).await?,
            _ => None,
        };
        facts.purchase = purchase.as_ref();
        // A blob no dataset lists may be a ciphertext of this org's model listing.
        let model_listing = match &dataset {
            None => self.model_listing(org, &cid_text).await?,
            Some(_) => None,
        };
        facts.model_listing = model_listing.as_ref();
        let model_purchase = match &model_listing {
            Some(l) if l.owner_org == org => self.live_model_purchase(member, l.id).await?,
            _ => None,
        };
        facts.model_purchase = model_purchase.as_ref();
        // A blob no listing names may be a training artifact of this org's worker.
        let (jobs, versions, evaluations, validators) =
            if dataset.is_none() && model_listing.is_none() {
                let jobs = self.artifact_jobs(org, &cid_text).await?;
                // The rest matters only to a caller outside every job's submitter org.
                if !jobs.is_empty() && !jobs.iter().any(|j| j.submitter_org == member.org_id) {
                    let (versions, evaluations) = self.evaluated_models(&jobs).await?;
                    (jobs, versions, evaluations, self.validators().await?)
                } else {
                    (jobs, Vec::new(), Vec::new(), Vec::new())
                }
            } else {
                (Vec::new(), Vec::new(), Vec::new(), Vec::new())
            };
        facts.jobs = &jobs;
        facts.model_versions = &versions;
        facts.evaluations = &evaluations;
        facts.validators = &validators;
        decide(&facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_abci::membership::Role;
    use neurodata_abci::training::attest::validator_address;

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
            model_listing: None,
            model_purchase: None,
            jobs: &[],
            model_versions: &[],
            evaluations: &[],
            validators: &[],
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

    #[test]
    fn a_training_key_request_downloads_whatever_the_validation_policy() {
        let ours = dataset("medlab");
        let request = purchase(pb::PurchaseKind::Training);
        assert!(verdict("healthtech", Some(&ours), Some(&request), false).is_ok());
        assert!(verdict("healthtech", Some(&ours), Some(&request), true).is_ok());
        // Of another dataset, it opens nothing.
        let other = pb::Purchase {
            dataset_id: 5,
            ..request
        };
        assert!(verdict("healthtech", Some(&ours), Some(&other), false).is_err());
    }

    const ARTIFACT: &str = "bafymodel";
    /// The caller's certificate fingerprint.
    const CALLER: [u8; 32] = [3; 32];
    const VALIDATOR_KEY: [u8; 32] = [8; 32];
    const OTHER_VALIDATOR_KEY: [u8; 32] = [9; 32];

    /// Job 12, submitted by `submitter_org`, run by a worker of `worker_org`, whose result names
    /// [`ARTIFACT`] (as its third checkpoint) and is attested by the validator of
    /// [`VALIDATOR_KEY`].
    fn job(worker_org: &str, submitter_org: &str) -> pb::Job {
        pb::Job {
            id: 12,
            submitter_org: submitter_org.into(),
            worker_org: worker_org.into(),
            result: Some(pb::JobResult {
                model_cid: "bafyother".into(),
                checkpoint_cids: vec!["bafyc0".into(), "bafyc1".into(), ARTIFACT.into()],
                ..Default::default()
            }),
            attestation: Some(pb::ResultAttestation {
                attestors: vec![pb::Attestor {
                    validator: validator_address(&VALIDATOR_KEY).to_vec(),
                    org_id: "datacorp".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn validator(pub_key: [u8; 32], operators: &[[u8; 32]]) -> pb::Validator {
        pb::Validator {
            pub_key: pub_key.to_vec(),
            org_id: "datacorp".into(),
            operators: operators.iter().map(|o| o.to_vec()).collect(),
            ..Default::default()
        }
    }

    /// The verdict on [`ARTIFACT`], listed by no dataset, for a member [`CALLER`] of
    /// `member_org` at medlab's gateway.
    fn artifact_verdict(
        member_org: &str,
        jobs: &[pb::Job],
        validators: &[pb::Validator],
    ) -> Result<(), (tonic::Code, String)> {
        let member = Member::for_tests(CALLER, member_org, Role::Validator);
        decide(&Facts {
            own_org: Some("medlab"),
            deliver_validation_keys: false,
            member: &member,
            cid: ARTIFACT,
            dataset: None,
            purchase: None,
            model_listing: None,
            model_purchase: None,
            jobs,
            model_versions: &[],
            evaluations: &[],
            validators,
        })
        .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn an_artifact_of_this_orgs_worker_is_readable_by_the_jobs_submitter_org() {
        let jobs = [job("medlab", "healthtech")];
        assert!(artifact_verdict("healthtech", &jobs, &[]).is_ok());
    }

    #[test]
    fn an_artifact_of_this_orgs_worker_is_readable_by_an_operator_of_an_attesting_validator() {
        let jobs = [job("medlab", "healthtech")];
        let validators = [
            validator(OTHER_VALIDATOR_KEY, &[[4; 32]]),
            validator(VALIDATOR_KEY, &[[5; 32], CALLER]),
        ];
        assert!(artifact_verdict("datacorp", &jobs, &validators).is_ok());
    }

    #[test]
    fn an_artifact_is_refused_to_operators_of_other_validators_and_to_strangers() {
        let jobs = [job("medlab", "healthtech")];
        // CALLER operates a validator, but not one attesting the job.
        let not_attesting = [
            validator(OTHER_VALIDATOR_KEY, &[CALLER]),
            validator(VALIDATOR_KEY, &[[5; 32]]),
        ];
        for (who, validators) in [
            ("operator of a non-attestor", &not_attesting[..]),
            ("stranger", &[][..]),
        ] {
            let err = artifact_verdict("datacorp", &jobs, validators).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied, "{who}");
            assert!(
                err.1.contains("artifact of training job 12")
                    && err.1.contains("submitter org (healthtech)")
                    && err.1.contains("operators of the validators attesting"),
                "{who}: the refusal names what would open it: {}",
                err.1
            );
        }
    }

    #[test]
    fn an_artifact_of_another_orgs_worker_is_not_served_here() {
        // A worker of datacorp names a CID held at medlab's gateway in its result: medlab's
        // blob must not open to datacorp's submitter or attestors.
        let jobs = [job("datacorp", "healthtech")];
        let validators = [validator(VALIDATOR_KEY, &[CALLER])];
        for org in ["healthtech", "datacorp"] {
            let err = artifact_verdict(org, &jobs, &validators).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied, "{org}");
            assert!(
                err.1.contains("not a listed dataset, nor an artifact"),
                "{org}: {}",
                err.1
            );
        }
    }

    #[test]
    fn a_job_whose_result_does_not_name_the_blob_opens_nothing() {
        let mut other = job("medlab", "healthtech");
        if let Some(r) = other.result.as_mut() {
            r.checkpoint_cids.clear();
        }
        let err = artifact_verdict("healthtech", &[other], &[]).unwrap_err();
        assert!(
            err.1.contains("not a listed dataset, nor an artifact"),
            "{}",
            err.1
        );
    }

    #[test]
    fn a_listed_blob_keeps_the_dataset_rule_even_if_a_result_names_it() {
        let ours = dataset("medlab");
        let member = Member::for_tests(CALLER, "healthtech", Role::Buyer);
        let jobs = [job("medlab", "healthtech")];
        let err = decide(&Facts {
            own_org: Some("medlab"),
            deliver_validation_keys: false,
            member: &member,
            cid: ARTIFACT,
            dataset: Some(&ours),
            purchase: None,
            model_listing: None,
            model_purchase: None,
            jobs: &jobs,
            model_versions: &[],
            evaluations: &[],
            validators: &[],
        })
        .unwrap_err();
        assert!(err.message().contains("buy it first"), "{}", err.message());
    }

    #[test]
    fn an_evaluation_key_request_opens_a_hidden_split_only() {
        let split = pb::Dataset {
            status: pb::DatasetStatus::Hidden as i32,
            ..dataset("medlab")
        };
        let request = purchase(pb::PurchaseKind::Evaluation);
        // Whatever the validation policy: the chain opened it for a scorer of a model.
        assert!(verdict("datacorp", Some(&split), Some(&request), false).is_ok());
        // A public dataset is not opened by an evaluation request.
        let public = dataset("medlab");
        let err = verdict("datacorp", Some(&public), Some(&request), false).unwrap_err();
        assert!(err.1.contains("buy it first"), "{}", err.1);
    }

    fn model_listing(owner_org: &str) -> pb::ModelListing {
        pb::ModelListing {
            id: 2,
            model_version: 7,
            owner_org: owner_org.into(),
            model_cid: "bafymodelct".into(),
            onnx_cid: "bafyonnxct".into(),
            ..Default::default()
        }
    }

    fn model_sale(listing: u64) -> pb::Purchase {
        pb::Purchase {
            id: 11,
            dataset_id: 0,
            model_listing: listing,
            kind: pb::PurchaseKind::Sale as i32,
            ..Default::default()
        }
    }

    /// The verdict on a ciphertext of `listing` at medlab's gateway for a buyer of `member_org`.
    fn model_verdict(
        member_org: &str,
        listing: &pb::ModelListing,
        purchase: Option<&pb::Purchase>,
    ) -> Result<(), (tonic::Code, String)> {
        let member = Member::for_tests(CALLER, member_org, Role::Buyer);
        decide(&Facts {
            own_org: Some("medlab"),
            deliver_validation_keys: false,
            member: &member,
            cid: "bafyonnxct",
            dataset: None,
            purchase: None,
            model_listing: Some(listing),
            model_purchase: purchase,
            jobs: &[],
            model_versions: &[],
            evaluations: &[],
            validators: &[],
        })
        .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn buyers_of_the_orgs_model_listing_may_download_its_ciphertexts_and_others_may_not() {
        let ours = model_listing("medlab");
        assert!(model_verdict("datacorp", &ours, Some(&model_sale(2))).is_ok());
        for (who, p) in [
            ("no purchase", None),
            ("a purchase of another listing", Some(model_sale(3))),
            (
                "a purchase of another kind",
                Some(pb::Purchase {
                    kind: pb::PurchaseKind::Training as i32,
                    ..model_sale(2)
                }),
            ),
        ] {
            let err = model_verdict("datacorp", &ours, p.as_ref()).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied, "{who}");
            assert!(
                err.1.contains("model listing 2 (model version 7)")
                    && err.1.contains("buy it first (ndctl model buy 2)"),
                "{who}: {}",
                err.1
            );
        }
        // The owner's org reads its own ciphertexts.
        assert!(model_verdict("medlab", &ours, None).is_ok());
    }

    #[test]
    fn a_validators_key_request_of_the_orgs_model_listing_downloads_its_ciphertexts() {
        let ours = model_listing("medlab");
        let request = pb::Purchase {
            kind: pb::PurchaseKind::Validation as i32,
            ..model_sale(2)
        };
        // deliver_validation_keys is off in `model_verdict`: the dataset policy does not apply.
        assert!(model_verdict("datacorp", &ours, Some(&request)).is_ok());
        let other = pb::Purchase {
            model_listing: 3,
            ..request
        };
        assert!(model_verdict("datacorp", &ours, Some(&other)).is_err());
    }

    #[test]
    fn a_model_listing_of_another_org_opens_nothing_here() {
        let theirs = model_listing("datacorp");
        let err = model_verdict("healthtech", &theirs, Some(&model_sale(2))).unwrap_err();
        assert_eq!(err.0, tonic::Code::PermissionDenied);
        assert!(
            err.1.contains("model listing 2 of org datacorp"),
            "{}",
            err.1
        );
    }

    const MODEL_FILE: &str = "bafymodelfile";

    /// Job 12 of [`job`], final: model version 7, whose model file is [`MODEL_FILE`].
    fn final_job() -> (pb::Job, pb::ModelVersion) {
        let mut j = job("medlab", "healthtech");
        j.model_version = 7;
        if let Some(r) = j.result.as_mut() {
            r.model_cid = MODEL_FILE.into();
        }
        let v = pb::ModelVersion {
            id: 7,
            job_id: 12,
            model_cid: MODEL_FILE.into(),
            onnx_cid: "bafyonnxfile".into(),
            ..Default::default()
        };
        (j, v)
    }

    /// Evaluation 4 of model version 7, attested by the validator of `attestor`.
    fn evaluation(status: pb::EvaluationStatus, attestor: [u8; 32]) -> pb::Evaluation {
        pb::Evaluation {
            id: 4,
            model_version: 7,
            status: status as i32,
            attestation: Some(pb::ResultAttestation {
                attestors: vec![pb::Attestor {
                    validator: validator_address(&attestor).to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn evaluation_verdict(
        cid: &str,
        evaluations: &[pb::Evaluation],
        validators: &[pb::Validator],
    ) -> Result<(), (tonic::Code, String)> {
        let (job, version) = final_job();
        let member = Member::for_tests(CALLER, "datacorp", Role::Validator);
        decide(&Facts {
            own_org: Some("medlab"),
            deliver_validation_keys: false,
            member: &member,
            cid,
            dataset: None,
            purchase: None,
            model_listing: None,
            model_purchase: None,
            jobs: &[job],
            model_versions: &[version],
            evaluations,
            validators,
        })
        .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn the_model_of_a_final_job_is_readable_by_operators_of_an_attesting_evaluations_validators() {
        // CALLER operates a validator that attests evaluation 4, not job 12.
        let validators = [
            validator(OTHER_VALIDATOR_KEY, &[CALLER]),
            validator(VALIDATOR_KEY, &[[5; 32]]),
        ];
        let attesting = [evaluation(
            pb::EvaluationStatus::Attesting,
            OTHER_VALIDATOR_KEY,
        )];
        assert!(evaluation_verdict(MODEL_FILE, &attesting, &validators).is_ok());
        // Its checkpoints stay with the job's own readers.
        let err = evaluation_verdict(ARTIFACT, &attesting, &validators).unwrap_err();
        assert!(err.1.contains("artifact of training job 12"), "{}", err.1);
    }

    #[test]
    fn a_settled_evaluation_or_one_the_caller_does_not_attest_opens_nothing() {
        let validators = [
            validator(OTHER_VALIDATOR_KEY, &[CALLER]),
            validator(VALIDATOR_KEY, &[[5; 32]]),
        ];
        for (desc, e) in [
            (
                "scored",
                evaluation(pb::EvaluationStatus::Scored, OTHER_VALIDATOR_KEY),
            ),
            (
                "failed",
                evaluation(pb::EvaluationStatus::Failed, OTHER_VALIDATOR_KEY),
            ),
            (
                "attested by another validator",
                evaluation(pb::EvaluationStatus::Attesting, [6; 32]),
            ),
            (
                "of another model version",
                pb::Evaluation {
                    model_version: 8,
                    ..evaluation(pb::EvaluationStatus::Attesting, OTHER_VALIDATOR_KEY)
                },
            ),
        ] {
            let err = evaluation_verdict(MODEL_FILE, &[e], &validators).unwrap_err();
            assert_eq!(err.0, tonic::Code::PermissionDenied, "{desc}");
            assert!(
                err.1.contains("attesting an evaluation of its model"),
                "{desc}: {}",
                err.1
            );
        }
    }
}
