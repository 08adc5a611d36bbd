//! A validator's check of a model listing's ciphertexts for `AttestModelListing`. A buyer's
//! `install` refuses files that do not decrypt to the card, but the escrow's dispute proves only
//! a wrong key: an owner listing junk under the committed key would be paid once the confirm
//! window passed. So before anyone buys, each validator's verifier asks for the listing's key
//! (`RequestValidation` naming the listing; the owner's gateway delivers it), downloads both
//! ciphertexts from the owner's gateway and checks, in order: each ciphertext against the
//! listing's CID, the key against the listing's commitment, the model file's plaintext against
//! the card's SHA-256 and the ONNX export's plaintext against the card's CID ([`model_findings`]).
//! The plaintext is only hashed as it decrypts, never written. A mismatch is a finding, never an
//! error; only this machine's own failures (its disk) are errors.
//!
//! The steps (Request → Attest → Confirm) and their journal are the datasets' own
//! ([`crate::validation::validation_step`], [`model_listing_step`]).

use std::path::Path;

use neurodata_crypto::DataKey;
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::validation::{
    CheckError, KeyFinding, Standing, Subject, ValidationJournal, ValidationStep, file_cid, io,
    validation_step,
};

/// A verifier's journal of one model listing.
pub type ModelJournal = ValidationJournal<ModelFindings>;

/// What checking a model listing's ciphertexts found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFindings {
    /// Both downloaded ciphertexts hash to the listing's CIDs.
    pub ciphertexts_match_cids: bool,
    /// The delivered key unwrapped and hashes to the listing's key commitment (not sent on
    /// chain: without it nothing below can match).
    pub key_matches: bool,
    /// The model file's ciphertext decrypted completely and its plaintext hashes to the card's
    /// `model_sha256`.
    pub model_matches: bool,
    /// The ONNX export's ciphertext decrypted completely and its plaintext's CID is the card's
    /// `onnx_plain_cid`.
    pub onnx_matches: bool,
    /// Why something did not match, for the logs.
    pub notes: Vec<String>,
}

impl KeyFinding for ModelFindings {
    fn key_matches(&self) -> bool {
        self.key_matches
    }
}

impl ModelFindings {
    /// The AttestModelListing message for listing `listing_id`.
    pub fn message(&self, listing_id: u64) -> pb::AttestModelListing {
        pb::AttestModelListing {
            listing_id,
            ciphertexts_match_cids: self.ciphertexts_match_cids,
            model_matches: self.model_matches,
            onnx_matches: self.onnx_matches,
        }
    }

    /// Whether the chain counts these findings as positive (the rule of `AttestModelListing`).
    pub fn positive(&self) -> bool {
        self.ciphertexts_match_cids && self.model_matches && self.onnx_matches
    }

    /// One line for the logs: `ciphertexts ok, model file ok, ONNX export ok`.
    pub fn summary(&self) -> String {
        let ok = |b: bool, bad: &str| if b { "ok".to_owned() } else { bad.to_owned() };
        let key = if self.key_matches {
            ""
        } else {
            ", the delivered key does not match its commitment"
        };
        format!(
            "ciphertexts {}, model file {}, ONNX export {}{key}",
            ok(self.ciphertexts_match_cids, "differ from their CIDs"),
            ok(self.model_matches, "differs from the card"),
            ok(self.onnx_matches, "differs from the card")
        )
    }
}

/// [`validation_step`] for model listing `id` (`listing`: as the chain has it, `None`: no such
/// listing) of validator operator `me` of org `org`: every listed model listing is wanted.
pub fn model_listing_step(
    id: u64,
    listing: Option<&pb::ModelListing>,
    me: &[u8],
    org: &str,
    purchases: &[pb::Purchase],
    journal: &ModelJournal,
) -> ValidationStep {
    validation_step(
        Subject::ModelListing(id),
        listing.map(|l| Standing::of_model_listing(l, org)),
        me,
        purchases,
        true,
        journal,
    )
}

/// The SHA-256 of `ciphertext` decrypted with `key`, hashed as it decrypts (the plaintext is
/// never written); `Ok(Err(why))` when it does not decrypt.
fn plaintext_sha256(
    ciphertext: &Path,
    key: &DataKey,
) -> Result<Result<[u8; 32], String>, CheckError> {
    let input = std::fs::File::open(ciphertext).map_err(io(ciphertext))?;
    match neurodata_crypto::stream::decrypt(input, std::io::sink(), key) {
        Ok(d) => Ok(Ok(d.plaintext_sha256)),
        Err(neurodata_crypto::CryptoError::Io(e)) => Err(io(ciphertext)(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Checks the downloaded ciphertexts of `listing` (`model` its model file's, `onnx` its ONNX
/// export's) with the delivered key (`None`: it did not unwrap).
pub fn model_findings(
    listing: &pb::ModelListing,
    model: &Path,
    onnx: &Path,
    key: Option<&DataKey>,
) -> Result<ModelFindings, CheckError> {
    let mut notes = Vec::new();
    let mut cids_ok = true;
    for (what, path, listed) in [
        ("model file", model, &listing.model_cid),
        ("ONNX export", onnx, &listing.onnx_cid),
    ] {
        let cid = file_cid(path).map_err(io(path))?;
        if listed.parse::<Cid>().ok() != Some(cid) {
            cids_ok = false;
            notes.push(format!(
                "the {what}'s ciphertext has CID {cid}, the listing says {listed}"
            ));
        }
    }
    let mut found = ModelFindings {
        ciphertexts_match_cids: cids_ok,
        key_matches: false,
        model_matches: false,
        onnx_matches: false,
        notes,
    };
    let Some(key) = key.filter(|k| k.commitment().as_slice() == listing.key_commitment) else {
        found
            .notes
            .push("the delivered key does not match the listing's key commitment".into());
        return Ok(found);
    };
    found.key_matches = true;
    let card = listing.card.clone().unwrap_or_default();
    match plaintext_sha256(model, key)? {
        Ok(sha) => {
            found.model_matches = sha.as_slice() == card.model_sha256;
            if !found.model_matches {
                found.notes.push(format!(
                    "the model file decrypts to SHA-256 {}, the card says {}",
                    hex::encode(sha),
                    hex::encode(&card.model_sha256)
                ));
            }
        }
        Err(why) => found.notes.push(format!(
            "the model file does not decrypt with the key: {why}"
        )),
    }
    match plaintext_sha256(onnx, key)? {
        Ok(sha) => {
            let cid = Cid::from_digest(sha);
            found.onnx_matches = card.onnx_plain_cid.parse::<Cid>().ok() == Some(cid);
            if !found.onnx_matches {
                found.notes.push(format!(
                    "the ONNX export decrypts to CID {cid}, the card says {}",
                    card.onnx_plain_cid
                ));
            }
        }
        Err(why) => found.notes.push(format!(
            "the ONNX export does not decrypt with the key: {why}"
        )),
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Attested, Requested, ValidationDir};
    use neurodata_crypto::stream::{DEFAULT_CHUNK_SIZE, encrypt};

    const ME: [u8; 32] = [5; 32];
    const ORG: &str = "validators";

    fn seal(plain: &[u8], key: &DataKey) -> Vec<u8> {
        let mut sealed = Vec::new();
        encrypt(plain, &mut sealed, key, DEFAULT_CHUNK_SIZE).unwrap();
        sealed
    }

    /// A listing of `model` and `onnx` as `ndctl model publish` makes it: both encrypted under
    /// one key, the card naming the plaintexts' hash and CID.
    fn listed(model: &[u8], onnx: &[u8]) -> (pb::ModelListing, Vec<u8>, Vec<u8>, DataKey) {
        let key = DataKey::generate().unwrap();
        let (m, o) = (seal(model, &key), seal(onnx, &key));
        let listing = pb::ModelListing {
            id: 2,
            model_cid: Cid::of(&m).to_string(),
            onnx_cid: Cid::of(&o).to_string(),
            key_commitment: key.commitment().to_vec(),
            status: pb::ModelListingStatus::Listed as i32,
            card: Some(pb::ModelCard {
                model_sha256: openssl::sha::sha256(model).to_vec(),
                onnx_plain_cid: Cid::of(onnx).to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        (listing, m, o, key)
    }

    fn check(
        listing: &pb::ModelListing,
        model: &[u8],
        onnx: &[u8],
        key: Option<&DataKey>,
    ) -> ModelFindings {
        let dir = tempfile::tempdir().unwrap();
        let (m, o) = (
            dir.path().join("model.ndenc"),
            dir.path().join("onnx.ndenc"),
        );
        std::fs::write(&m, model).unwrap();
        std::fs::write(&o, onnx).unwrap();
        let found = model_findings(listing, &m, &o, key).unwrap();
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 2, "nothing but the ciphertexts is written");
        found
    }

    #[test]
    fn ciphertexts_of_the_cards_model_are_found_as_listed() {
        let (l, m, o, key) = listed(b"safetensors bytes", b"onnx bytes");
        let f = check(&l, &m, &o, Some(&key));
        assert!(f.positive() && f.key_matches, "{:?}", f.notes);
        assert!(f.notes.is_empty(), "{:?}", f.notes);
        assert_eq!(f.summary(), "ciphertexts ok, model file ok, ONNX export ok");
        assert_eq!(
            f.message(2),
            pb::AttestModelListing {
                listing_id: 2,
                ciphertexts_match_cids: true,
                model_matches: true,
                onnx_matches: true,
            }
        );
    }

    #[test]
    fn junk_encrypted_under_the_committed_key_is_found_out() {
        // The owner lists another ONNX export, encrypted under the right key, under the card of
        // the real one: the ciphertexts match their CIDs and the key its commitment.
        let (mut l, m, _, key) = listed(b"safetensors bytes", b"onnx bytes");
        let junk = seal(b"not the model's export", &key);
        l.onnx_cid = Cid::of(&junk).to_string();
        let f = check(&l, &m, &junk, Some(&key));
        assert!(f.ciphertexts_match_cids && f.key_matches && f.model_matches);
        assert!(!f.onnx_matches && !f.positive());
        assert!(
            f.notes.iter().any(|n| n.contains("the card says")),
            "{:?}",
            f.notes
        );
        assert_eq!(
            f.summary(),
            "ciphertexts ok, model file ok, ONNX export differs from the card"
        );
    }

    #[test]
    fn a_tampered_ciphertext_matches_neither_its_cid_nor_decrypts() {
        let (l, mut m, o, key) = listed(b"safetensors bytes", b"onnx bytes");
        let last = m.len() - 1;
        m[last] ^= 1;
        let f = check(&l, &m, &o, Some(&key));
        assert!(!f.ciphertexts_match_cids && !f.model_matches);
        assert!(f.onnx_matches);
        assert!(
            f.notes.iter().any(|n| n.contains("does not decrypt")),
            "{:?}",
            f.notes
        );
    }

    #[test]
    fn a_key_other_than_the_commitment_opens_nothing() {
        let (l, m, o, _) = listed(b"safetensors bytes", b"onnx bytes");
        let other = DataKey::generate().unwrap();
        for key in [Some(&other), None] {
            let f = check(&l, &m, &o, key);
            assert!(
                f.ciphertexts_match_cids,
                "the ciphertexts are checked regardless"
            );
            assert!(!f.key_matches && !f.model_matches && !f.onnx_matches);
        }
    }

    fn listing() -> pb::ModelListing {
        pb::ModelListing {
            id: 2,
            status: pb::ModelListingStatus::Listed as i32,
            ..Default::default()
        }
    }

    fn purchase(id: u64, status: pb::PurchaseStatus) -> pb::Purchase {
        pb::Purchase {
            id,
            dataset_id: 0,
            model_listing: 2,
            kind: pb::PurchaseKind::Validation as i32,
            buyer: ME.to_vec(),
            provider_org: "owner".into(),
            status: status as i32,
            key_recipient: if status == pb::PurchaseStatus::AwaitingKey {
                Vec::new()
            } else {
                ME.to_vec()
            },
            ..Default::default()
        }
    }

    fn attested(key_matches: bool) -> ModelJournal {
        ValidationJournal {
            requested: Some(Requested::default()),
            attested: Some(Attested {
                purchase_id: 7,
                height: 40,
                findings: ModelFindings {
                    ciphertexts_match_cids: true,
                    key_matches,
                    model_matches: key_matches,
                    onnx_matches: key_matches,
                    notes: Vec::new(),
                },
            }),
            confirmed: None,
        }
    }

    fn step(l: &pb::ModelListing, ps: &[pb::Purchase], j: &ModelJournal) -> ValidationStep {
        model_listing_step(l.id, Some(l), &ME, ORG, ps, j)
    }

    #[test]
    fn every_listed_model_listing_is_requested_once() {
        let l = listing();
        let none = ModelJournal::default();
        assert_eq!(step(&l, &[], &none), ValidationStep::Request);
        let requested = ModelJournal {
            requested: Some(Requested {
                height: 12,
                refused: None,
            }),
            ..Default::default()
        };
        assert!(matches!(step(&l, &[], &requested), ValidationStep::Skip(_)));
        let refused = ModelJournal {
            requested: Some(Requested {
                height: 0,
                refused: Some("model listing 2 is delisted".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            step(&l, &[], &refused),
            ValidationStep::Skip("validation request refused: model listing 2 is delisted".into())
        );
        let awaiting = [purchase(7, pb::PurchaseStatus::AwaitingKey)];
        assert!(matches!(
            step(&l, &awaiting, &requested),
            ValidationStep::Skip(why) if why.contains("waiting for owner's gateway")
        ));
    }

    #[test]
    fn verified_delisted_missing_or_attested_listings_are_not_requested() {
        let none = ModelJournal::default();
        let verified = pb::ModelListing {
            verified: true,
            ..listing()
        };
        assert_eq!(
            step(&verified, &[], &none),
            ValidationStep::Skip("verified already: nothing to request".into())
        );
        let delisted = pb::ModelListing {
            status: pb::ModelListingStatus::Delisted as i32,
            ..listing()
        };
        assert_eq!(
            step(&delisted, &[], &none),
            ValidationStep::Skip("not listed".into())
        );
        let ours = pb::ModelListing {
            attestations: vec![pb::ModelAttestation {
                org_id: ORG.into(),
                ..Default::default()
            }],
            ..listing()
        };
        assert_eq!(step(&ours, &[], &none), ValidationStep::Done);
        assert_eq!(
            model_listing_step(2, None, &ME, ORG, &[], &none),
            ValidationStep::Skip("no such model listing".into())
        );
    }

    #[test]
    fn a_delivered_key_is_attested_then_confirmed_then_done() {
        let l = listing();
        let delivered = [purchase(7, pb::PurchaseStatus::KeyDelivered)];
        assert_eq!(
            step(&l, &delivered, &ModelJournal::default()),
            ValidationStep::Attest(7)
        );
        let mut j = attested(true);
        assert_eq!(step(&l, &delivered, &j), ValidationStep::Confirm(7));
        j.confirmed = Some(7);
        assert_eq!(step(&l, &delivered, &j), ValidationStep::Done);
        // Confirmed on chain before the journal said so: done.
        let confirmed = [purchase(7, pb::PurchaseStatus::Confirmed)];
        assert_eq!(step(&l, &confirmed, &attested(true)), ValidationStep::Done);
        // A key that did not open the ciphertexts is not confirmed as received.
        assert_eq!(step(&l, &delivered, &attested(false)), ValidationStep::Done);
        // Another operator of the org attested: only the purchase is closed.
        let ours = pb::ModelListing {
            attestations: vec![pb::ModelAttestation {
                org_id: ORG.into(),
                ..Default::default()
            }],
            ..listing()
        };
        assert_eq!(
            step(&ours, &delivered, &ModelJournal::default()),
            ValidationStep::Confirm(7)
        );
    }

    #[test]
    fn a_dataset_purchase_of_the_same_id_is_not_the_listings() {
        let mut of_dataset = purchase(7, pb::PurchaseStatus::KeyDelivered);
        of_dataset.model_listing = 0;
        of_dataset.dataset_id = 2;
        let mut sale = purchase(8, pb::PurchaseStatus::KeyDelivered);
        sale.kind = pb::PurchaseKind::Sale as i32;
        assert_eq!(
            step(&listing(), &[of_dataset, sale], &ModelJournal::default()),
            ValidationStep::Request
        );
    }

    #[test]
    fn a_model_journal_round_trips_under_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let md = ValidationDir::new(dir.path(), Subject::ModelListing(2));
        let dd = ValidationDir::new(dir.path(), Subject::Dataset(2));
        assert_ne!(
            md.path, dd.path,
            "a listing and a dataset of one id keep apart"
        );
        assert!(md.path.ends_with("model-listings/2"));
        assert_eq!(md.load::<ModelFindings>().unwrap(), ModelJournal::default());
        let j = attested(true);
        md.save(&j).unwrap();
        assert_eq!(md.load::<ModelFindings>().unwrap(), j);
        assert!(crate::journal::JobDir::list(dir.path()).is_empty());
    }
}
