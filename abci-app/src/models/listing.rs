//! Publishing a model version, changing its price, delisting it; the model card the chain writes;
//! and the browse filter.

use neurodata_crypto::cid::Cid;
use neurodata_crypto::stream::{HEADER_LEN, TAG_LEN};
use neurodata_proto::chain::v1 as pb;

use super::{ModelsError, ModelsRead, ModelsWrite, existing_listing};
use crate::TxError;
use crate::amount::Amount;
use crate::events::{EventKind, attr};
use crate::market::MarketRead;
use crate::membership::{MembershipRead, Role, Signer};
use crate::state::{Event, StateError, StateRead, StateWrite};
use crate::training::TrainingRead;
use crate::tx::{ExecCtx, amount_field, invalid};

/// Longest `intended_use`.
pub const MAX_INTENDED_USE_BYTES: usize = 1024;

/// The smallest ciphertext: the stream header and one tag (a model is never empty, so a real one
/// is larger).
const MIN_CIPHERTEXT: u64 = (HEADER_LEN + TAG_LEN) as u64;

/// List a final model version for sale.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishModel {
    /// The model version.
    pub model_version: u64,
    /// Price.
    pub price: Amount,
    /// Licence (1..=256 bytes).
    pub license: String,
    /// The publisher's own words on what the model is for (at most 1024 bytes).
    pub intended_use: String,
    /// CID of the model file's ciphertext.
    pub model_cid: Cid,
    /// CID of the ONNX export's ciphertext.
    pub onnx_cid: Cid,
    /// SHA-256 of the data key both are encrypted with.
    pub key_commitment: [u8; 32],
    /// Bytes of the model file's ciphertext.
    pub model_ciphertext_size: u64,
    /// Bytes of the ONNX export's ciphertext.
    pub onnx_ciphertext_size: u64,
    /// The owner org's gateway URL.
    pub location: String,
    /// The card as the publisher states it, checked against the chain's.
    pub card: Option<pb::ModelCard>,
}

// prost derives no `Eq`; the card holds no floats, so its `PartialEq` is an equivalence.
impl Eq for PublishModel {}

impl TryFrom<pb::PublishModel> for PublishModel {
    type Error = TxError;
    fn try_from(m: pb::PublishModel) -> Result<Self, TxError> {
        let cid = |field: &'static str, s: &str| -> Result<Cid, TxError> {
            s.parse()
                .map_err(|e: neurodata_crypto::cid::CidError| invalid(field, e))
        };
        let model_cid = cid("publish_model.model_cid", &m.model_cid)?;
        let onnx_cid = cid("publish_model.onnx_cid", &m.onnx_cid)?;
        if model_cid == onnx_cid {
            return Err(invalid(
                "publish_model.onnx_cid",
                "is the model file's CID; the ONNX export is another ciphertext",
            ));
        }
        if m.license.is_empty() || m.license.len() > 256 {
            return Err(invalid("publish_model.license", "1..=256 bytes"));
        }
        if m.intended_use.len() > MAX_INTENDED_USE_BYTES {
            return Err(invalid(
                "publish_model.intended_use",
                format!("at most {MAX_INTENDED_USE_BYTES} bytes"),
            ));
        }
        if m.location.len() > 256 {
            return Err(invalid("publish_model.location", "at most 256 bytes"));
        }
        for (field, size) in [
            (
                "publish_model.model_ciphertext_size",
                m.model_ciphertext_size,
            ),
            ("publish_model.onnx_ciphertext_size", m.onnx_ciphertext_size),
        ] {
            if size <= MIN_CIPHERTEXT {
                return Err(invalid(
                    field,
                    format!("must exceed {MIN_CIPHERTEXT} bytes (the stream header and a tag)"),
                ));
            }
        }
        let key_commitment = <[u8; 32]>::try_from(m.key_commitment.as_slice()).map_err(|_| {
            invalid(
                "publish_model.key_commitment",
                format!("{} bytes, expected 32", m.key_commitment.len()),
            )
        })?;
        Ok(PublishModel {
            model_version: m.model_version,
            price: amount_field("publish_model.price", &m.price)?,
            license: m.license,
            intended_use: m.intended_use,
            model_cid,
            onnx_cid,
            key_commitment,
            model_ciphertext_size: m.model_ciphertext_size,
            onnx_ciphertext_size: m.onnx_ciphertext_size,
            location: m.location,
            card: m.card.map(|c| *c),
        })
    }
}

/// The model card of model version `model_version_id` as the chain's records give it: lineage
/// from its datasets, algorithm, spec and target from its job, metrics and hashes from the model
/// version; only `intended_use` and `license` are the publisher's.
pub fn model_card<S: StateRead>(
    state: &S,
    model_version_id: u64,
    intended_use: &str,
    license: &str,
) -> Result<pb::ModelCard, TxError> {
    let mv = state
        .model_version(model_version_id)?
        .ok_or(ModelsError::UnknownModelVersion(model_version_id))?;
    let job = state.job(mv.job_id)?.ok_or_else(|| StateError::Corrupt {
        key: crate::training::state_key::model(mv.id),
        reason: format!("its job {} does not exist", mv.job_id),
    })?;
    let datasets = mv
        .dataset_ids
        .iter()
        .map(|&id| {
            let d = state.dataset(id)?.ok_or_else(|| StateError::Corrupt {
                key: crate::training::state_key::model(mv.id),
                reason: format!("its dataset {id} does not exist"),
            })?;
            Ok(pb::DatasetLineage {
                dataset_id: d.id,
                title: d.title,
                provider_org: d.provider_org,
                rows: d.rows,
                plaintext_sha256: d.plaintext_sha256,
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    // The stored spec is the trainer's canonical form, checked when the job was submitted.
    let target = serde_json::from_str::<serde_json::Value>(&job.spec_json)
        .ok()
        .and_then(|v| v["schema"]["target"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(pb::ModelCard {
        model_version: mv.id,
        job_id: mv.job_id,
        datasets,
        algorithm: mv.algorithm,
        spec_json: job.spec_json,
        metrics_json: mv.metrics_json,
        model_sha256: mv.model_sha256,
        onnx_plain_cid: mv.onnx_cid,
        owner_org: mv.owner_org,
        trainer_org: job.worker_org,
        intended_use: intended_use.to_owned(),
        license: license.to_owned(),
        target,
    })
}

/// A value as an error shows it: long ones (a spec, metrics) cut to their start.
fn shown(value: String) -> String {
    const MAX: usize = 120;
    if value.len() <= MAX {
        return value;
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// The first fact in which `claimed` differs from the chain's card, as
/// [`ModelsError::CardMismatch`]. `intended_use` and `license` may be left empty in a claim
/// (the message's own fields set them).
pub fn check_claimed_card(
    claimed: &pb::ModelCard,
    chain: &pb::ModelCard,
) -> Result<(), ModelsError> {
    let mismatch = |field: String, claimed: String, chain: String| {
        Err(ModelsError::CardMismatch {
            field,
            claimed: shown(claimed),
            chain: shown(chain),
        })
    };
    let quoted = |s: &str| format!("{s:?}");
    let scalars: [(&str, String, String); 2] = [
        (
            "model_version",
            claimed.model_version.to_string(),
            chain.model_version.to_string(),
        ),
        (
            "job_id",
            claimed.job_id.to_string(),
            chain.job_id.to_string(),
        ),
    ];
    for (field, c, ch) in scalars {
        if c != ch {
            return mismatch(field.into(), c, ch);
        }
    }
    if claimed.datasets.len() != chain.datasets.len() {
        let ids = |l: &[pb::DatasetLineage]| {
            format!("{:?}", l.iter().map(|d| d.dataset_id).collect::<Vec<_>>())
        };
        return mismatch(
            "datasets".into(),
            ids(&claimed.datasets),
            ids(&chain.datasets),
        );
    }
    for (i, (c, ch)) in claimed.datasets.iter().zip(&chain.datasets).enumerate() {
        let facts: [(&str, String, String); 5] = [
            (
                "dataset_id",
                c.dataset_id.to_string(),
                ch.dataset_id.to_string(),
            ),
            ("title", quoted(&c.title), quoted(&ch.title)),
            (
                "provider_org",
                quoted(&c.provider_org),
                quoted(&ch.provider_org),
            ),
            ("rows", c.rows.to_string(), ch.rows.to_string()),
            (
                "plaintext_sha256",
                hex::encode(&c.plaintext_sha256),
                hex::encode(&ch.plaintext_sha256),
            ),
        ];
        for (field, c, ch) in facts {
            if c != ch {
                return mismatch(format!("datasets[{i}].{field}"), c, ch);
            }
        }
    }
    let facts: [(&str, String, String); 8] = [
        (
            "algorithm",
            quoted(&claimed.algorithm),
            quoted(&chain.algorithm),
        ),
        (
            "spec_json",
            claimed.spec_json.clone(),
            chain.spec_json.clone(),
        ),
        (
            "metrics_json",
            claimed.metrics_json.clone(),
            chain.metrics_json.clone(),
        ),
        (
            "model_sha256",
            hex::encode(&claimed.model_sha256),
            hex::encode(&chain.model_sha256),
        ),
        (
            "onnx_plain_cid",
            quoted(&claimed.onnx_plain_cid),
            quoted(&chain.onnx_plain_cid),
        ),
        (
            "owner_org",
            quoted(&claimed.owner_org),
            quoted(&chain.owner_org),
        ),
        (
            "trainer_org",
            quoted(&claimed.trainer_org),
            quoted(&chain.trainer_org),
        ),
        ("target", quoted(&claimed.target), quoted(&chain.target)),
    ];
    for (field, c, ch) in facts {
        if c != ch {
            return mismatch(field.into(), c, ch);
        }
    }
    for (field, c, ch) in [
        ("intended_use", &claimed.intended_use, &chain.intended_use),
        ("license", &claimed.license, &chain.license),
    ] {
        if !c.is_empty() && c != ch {
            return mismatch(field.into(), quoted(c), quoted(ch));
        }
    }
    Ok(())
}

/// The identity that holds `owner` now: `owner`, or the successor it was moved to (and so on),
/// so a listing published after a move pays the identity that can still sign.
fn current_identity<S: StateRead>(state: &S, owner: &[u8]) -> Result<Vec<u8>, TxError> {
    let mut current = owner.to_vec();
    // Each identity moves at most once and never back; the bound only guards a corrupt state.
    for _ in 0..64 {
        let Ok(fingerprint) = <[u8; 32]>::try_from(current.as_slice()) else {
            break;
        };
        match state.identity(&fingerprint)? {
            Some(identity) if !identity.successor.is_empty() => current = identity.successor,
            _ => break,
        }
    }
    Ok(current)
}

/// Who a listing (or model version) belongs to: its owner, or an admin of its org acting for it.
fn owns(signer: &Signer, owner: &[u8], owner_org: &str) -> bool {
    signer.identity.fingerprint == owner
        || (signer.role == Role::Admin && signer.identity.org_id == owner_org)
}

impl PublishModel {
    /// Lists the model version under the next listing id, with the chain's card.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mv = state
            .model_version(self.model_version)?
            .ok_or(ModelsError::UnknownModelVersion(self.model_version))?;
        if !owns(signer, &mv.owner, &mv.owner_org) {
            return Err(ModelsError::NotModelOwner {
                model_version: mv.id,
                owner_org: mv.owner_org,
            }
            .into());
        }
        if let Some(listing) = state.open_listing_of(mv.id)? {
            return Err(ModelsError::AlreadyListed {
                model_version: mv.id,
                listing,
            }
            .into());
        }
        let card = model_card(state, mv.id, &self.intended_use, &self.license)?;
        if let Some(claimed) = &self.card {
            check_claimed_card(claimed, &card)?;
        }
        let org = &mv.owner_org;
        let cids = [self.model_cid.to_string(), self.onnx_cid.to_string()];
        // A listing naming the plaintext would be sold in the clear, and the gateway's listing
        // rule would shadow the artifact rule that lets scoring validators fetch the model.
        if let Some(cid) = cids
            .iter()
            .find(|c| **c == mv.model_cid || **c == mv.onnx_cid)
        {
            return Err(ModelsError::PlaintextArtifact {
                cid: cid.clone(),
                model_version: mv.id,
            }
            .into());
        }
        crate::market::require_unused_ciphertexts(state, org, &cids, &self.key_commitment)?;
        let id = state.next_listing_id()?;
        let listing = pb::ModelListing {
            id,
            model_version: mv.id,
            owner: current_identity(state, &mv.owner)?,
            owner_org: org.clone(),
            price: self.price.to_string(),
            model_cid: cids[0].clone(),
            onnx_cid: cids[1].clone(),
            key_commitment: self.key_commitment.to_vec(),
            model_ciphertext_size: self.model_ciphertext_size,
            onnx_ciphertext_size: self.onnx_ciphertext_size,
            location: self.location.clone(),
            status: pb::ModelListingStatus::Listed as i32,
            listed_height: ctx.height,
            card: Some(card),
            // Validators attest its ciphertexts afterwards (`AttestModelListing`).
            attestations: Vec::new(),
            verified: false,
            verified_height: 0,
        };
        state.put_model_listing(&listing);
        for cid in &cids {
            state.put_listing_cid(org, cid, id);
        }
        state.put_listing_key_commitment(org, &self.key_commitment, id);
        state.put_open_listing_of(mv.id, id);
        state.put_next_listing_id(id + 1);
        state.emit(
            Event::new(EventKind::ModelPublished)
                .attr(attr::LISTING, id)
                .attr(attr::MODEL, mv.id)
                .attr(attr::ORG, org)
                .attr(attr::CID, &cids[1])
                .attr(attr::PRICE, self.price),
        );
        Ok(())
    }
}

/// Listed model listing `id` if `signer` may change it: its owner, or an admin of its org.
fn owned_listing<S: ModelsRead>(
    state: &S,
    id: u64,
    signer: &Signer,
) -> Result<pb::ModelListing, TxError> {
    let listing = existing_listing(state, id)?;
    if !owns(signer, &listing.owner, &listing.owner_org) {
        return Err(ModelsError::NotListingOwner {
            listing: id,
            owner_org: listing.owner_org,
        }
        .into());
    }
    require_listed(&listing)?;
    Ok(listing)
}

/// Refuses a delisted listing with [`ModelsError::Delisted`].
pub fn require_listed(listing: &pb::ModelListing) -> Result<(), TxError> {
    if listing.status != pb::ModelListingStatus::Listed as i32 {
        return Err(ModelsError::Delisted(listing.id).into());
    }
    Ok(())
}

/// Change a model listing's price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateModelPrice {
    /// The listing.
    pub listing_id: u64,
    /// New price.
    pub price: Amount,
}

impl TryFrom<pb::UpdateModelPrice> for UpdateModelPrice {
    type Error = TxError;
    fn try_from(m: pb::UpdateModelPrice) -> Result<Self, TxError> {
        Ok(UpdateModelPrice {
            listing_id: m.listing_id,
            price: amount_field("update_model_price.price", &m.price)?,
        })
    }
}

impl UpdateModelPrice {
    /// Sets the price; purchases already open keep the price (and royalties) they escrowed.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        _ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut listing = owned_listing(state, self.listing_id, signer)?;
        listing.price = self.price.to_string();
        state.put_model_listing(&listing);
        state.emit(
            Event::new(EventKind::ModelPriceChanged)
                .attr(attr::LISTING, self.listing_id)
                .attr(attr::PRICE, self.price),
        );
        Ok(())
    }
}

/// Take a model listing off the market.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelistModel {
    /// The listing.
    pub listing_id: u64,
}

impl From<pb::DelistModel> for DelistModel {
    fn from(m: pb::DelistModel) -> Self {
        DelistModel {
            listing_id: m.listing_id,
        }
    }
}

impl DelistModel {
    /// Marks the listing delisted (the model version may be listed again, with new ciphertexts
    /// and key); open purchases still run to completion.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        _ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut listing = owned_listing(state, self.listing_id, signer)?;
        listing.status = pb::ModelListingStatus::Delisted as i32;
        state.put_model_listing(&listing);
        state.drop_open_listing_of(listing.model_version);
        state.emit(Event::new(EventKind::ModelDelisted).attr(attr::LISTING, self.listing_id));
        Ok(())
    }
}

/// Whether `listing` passes the browse `filter`. A malformed `max_price` filters nothing out
/// rather than failing the whole list.
pub fn matches_filter(listing: &pb::ModelListing, filter: &pb::ModelListingFilter) -> bool {
    let listed = listing.status == pb::ModelListingStatus::Listed as i32;
    if !filter.include_delisted && !listed {
        return false;
    }
    if filter.verified_only && !listing.verified {
        return false;
    }
    if !filter.owner_org.is_empty() && filter.owner_org != listing.owner_org {
        return false;
    }
    let trained_on = |d: u64| {
        listing
            .card
            .as_ref()
            .is_some_and(|c| c.datasets.iter().any(|l| l.dataset_id == d))
    };
    if filter.dataset_id != 0 && !trained_on(filter.dataset_id) {
        return false;
    }
    if let (Ok(max), Ok(price)) = (
        filter.max_price.parse::<Amount>(),
        listing.price.parse::<Amount>(),
    ) && price > max
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> pb::ModelCard {
        pb::ModelCard {
            model_version: 1,
            job_id: 1,
            datasets: vec![pb::DatasetLineage {
                dataset_id: 3,
                title: "heart".into(),
                provider_org: "medlab".into(),
                rows: 303,
                plaintext_sha256: vec![7; 32],
            }],
            algorithm: "mlp".into(),
            spec_json: "{}".into(),
            metrics_json: r#"{"accuracy":0.8}"#.into(),
            model_sha256: vec![1; 32],
            onnx_plain_cid: "bafk".into(),
            owner_org: "healthtech".into(),
            trainer_org: "gpu".into(),
            intended_use: "research".into(),
            license: "MIT".into(),
            target: "target".into(),
        }
    }

    #[test]
    fn a_claimed_card_may_leave_out_the_publishers_words_but_no_fact() {
        let chain = card();
        assert_eq!(check_claimed_card(&chain, &chain), Ok(()));
        let words_left_out = pb::ModelCard {
            intended_use: String::new(),
            license: String::new(),
            ..card()
        };
        assert_eq!(check_claimed_card(&words_left_out, &chain), Ok(()));
        let no_facts = pb::ModelCard {
            intended_use: chain.intended_use.clone(),
            license: chain.license.clone(),
            ..Default::default()
        };
        assert_eq!(
            check_claimed_card(&no_facts, &chain),
            Err(ModelsError::CardMismatch {
                field: "model_version".into(),
                claimed: "0".into(),
                chain: "1".into(),
            }),
            "an empty fact is a claim too"
        );
        let mut inflated = card();
        inflated.datasets[0].rows = 1_000_000;
        assert_eq!(
            check_claimed_card(&inflated, &chain),
            Err(ModelsError::CardMismatch {
                field: "datasets[0].rows".into(),
                claimed: "1000000".into(),
                chain: "303".into(),
            })
        );
    }

    #[test]
    fn long_values_in_a_mismatch_are_cut_to_their_start() {
        let chain = pb::ModelCard {
            spec_json: "x".repeat(500),
            ..card()
        };
        let Err(ModelsError::CardMismatch { claimed, chain, .. }) =
            check_claimed_card(&card(), &chain)
        else {
            panic!("the spec differs");
        };
        assert_eq!(claimed, "{}");
        assert!(
            chain.starts_with("xxx") && chain.ends_with("… (500 bytes)"),
            "{chain}"
        );
    }

    #[test]
    fn publications_with_malformed_fields_are_refused_before_any_state() {
        let good = pb::PublishModel {
            model_version: 1,
            price: "100".into(),
            license: "MIT".into(),
            intended_use: String::new(),
            model_cid: Cid::of(b"model").to_string(),
            onnx_cid: Cid::of(b"onnx").to_string(),
            key_commitment: vec![9; 32],
            model_ciphertext_size: 1_000,
            onnx_ciphertext_size: 1_000,
            location: String::new(),
            card: None,
        };
        assert!(PublishModel::try_from(good.clone()).is_ok());
        let cases: [(&str, pb::PublishModel); 8] = [
            (
                "model_cid",
                pb::PublishModel {
                    model_cid: "Qm".into(),
                    ..good.clone()
                },
            ),
            (
                "onnx_cid",
                pb::PublishModel {
                    onnx_cid: good.model_cid.clone(),
                    ..good.clone()
                },
            ),
            (
                "license",
                pb::PublishModel {
                    license: String::new(),
                    ..good.clone()
                },
            ),
            (
                "intended_use",
                pb::PublishModel {
                    intended_use: "x".repeat(1025),
                    ..good.clone()
                },
            ),
            (
                "location",
                pb::PublishModel {
                    location: "x".repeat(257),
                    ..good.clone()
                },
            ),
            (
                "model_ciphertext_size",
                pb::PublishModel {
                    model_ciphertext_size: MIN_CIPHERTEXT,
                    ..good.clone()
                },
            ),
            (
                "key_commitment",
                pb::PublishModel {
                    key_commitment: vec![9; 31],
                    ..good.clone()
                },
            ),
            (
                "price",
                pb::PublishModel {
                    price: "-1".into(),
                    ..good.clone()
                },
            ),
        ];
        for (field, m) in cases {
            match PublishModel::try_from(m) {
                Err(TxError::Envelope(crate::tx::EnvelopeError::InvalidField {
                    field: f, ..
                })) => {
                    assert_eq!(f, format!("publish_model.{field}"))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_browse_filter_combines_owner_lineage_price_and_status() {
        let listing = pb::ModelListing {
            owner_org: "healthtech".into(),
            price: "100".into(),
            status: pb::ModelListingStatus::Listed as i32,
            card: Some(card()),
            ..Default::default()
        };
        let f = |f: pb::ModelListingFilter| matches_filter(&listing, &f);
        assert!(f(Default::default()));
        assert!(f(pb::ModelListingFilter {
            owner_org: "healthtech".into(),
            dataset_id: 3,
            max_price: "100".into(),
            include_delisted: false,
            verified_only: false,
        }));
        let verified_only = pb::ModelListingFilter {
            verified_only: true,
            ..Default::default()
        };
        assert!(!f(verified_only.clone()), "not verified yet");
        let verified = pb::ModelListing {
            verified: true,
            ..listing.clone()
        };
        assert!(matches_filter(&verified, &verified_only));
        assert!(!f(pb::ModelListingFilter {
            owner_org: "medlab".into(),
            ..Default::default()
        }));
        assert!(!f(pb::ModelListingFilter {
            dataset_id: 4,
            ..Default::default()
        }));
        assert!(!f(pb::ModelListingFilter {
            max_price: "99".into(),
            ..Default::default()
        }));
        let delisted = pb::ModelListing {
            status: pb::ModelListingStatus::Delisted as i32,
            ..listing.clone()
        };
        assert!(!matches_filter(&delisted, &Default::default()));
        assert!(matches_filter(
            &delisted,
            &pb::ModelListingFilter {
                include_delisted: true,
                ..Default::default()
            }
        ));
    }
}
