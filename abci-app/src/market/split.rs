//! `RegisterEvalSplit`: a dataset's hidden evaluation split, the test rows leaderboards score
//! models on.
//!
//! The split is a dataset record of its own (the next dataset id) with status HIDDEN, so it
//! reuses everything a listing has — the ciphertext in the provider org's blob store, the key
//! commitment, the CID and key-commitment indexes, key delivery through escrow — while never
//! being browsed, bought, previewed, validated or repriced ([`super::require_listed`] refuses it
//! by name). Its key goes only to the operators of validators scoring a model on it (an
//! evaluation key request, see [`crate::models::evaluation`]), so no trainer sees the test rows.
//!
//! One split per dataset, never replaced: a leaderboard compares scores on the same rows, and a
//! provider swapping the split under it would make old and new scores incomparable (and could
//! favour a model after seeing the scores). The split's schema must equal the dataset's column
//! for column, because models trained on the dataset are scored on it.

use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;

use super::dataset::check_schema;
use super::{MarketError, MarketRead, MarketWrite, existing_dataset, require_public};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::membership::{Role, Signer};
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

/// Register a dataset's hidden evaluation split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterEvalSplit {
    /// The public dataset the split evaluates.
    pub dataset_id: u64,
    /// Ciphertext CID.
    pub cid: Cid,
    /// Plaintext SHA-256.
    pub plaintext_sha256: [u8; 32],
    /// SHA-256 of the split's data key.
    pub key_commitment: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    /// Ciphertext bytes.
    pub ciphertext_size: u64,
    /// Rows.
    pub rows: u64,
    /// Checked schema: (name, type) per column.
    pub columns: Vec<(String, i32)>,
    /// How the plaintext is written.
    pub format: pb::DataFormat,
    /// The provider org's gateway URL.
    pub location: String,
}

fn digest(field: &'static str, b: &[u8]) -> Result<[u8; 32], TxError> {
    <[u8; 32]>::try_from(b).map_err(|_| invalid(field, format!("{} bytes, expected 32", b.len())))
}

impl TryFrom<pb::RegisterEvalSplit> for RegisterEvalSplit {
    type Error = TxError;
    fn try_from(m: pb::RegisterEvalSplit) -> Result<Self, TxError> {
        let cid: Cid = m
            .cid
            .parse()
            .map_err(|e: neurodata_crypto::cid::CidError| invalid("register_eval_split.cid", e))?;
        let schema = check_schema(m.schema.as_ref())?;
        if m.location.len() > 256 {
            return Err(invalid("register_eval_split.location", "at most 256 bytes"));
        }
        let format = pb::DataFormat::try_from(m.format)
            .map_err(|_| invalid("register_eval_split.format", "not a known data format"))?;
        if m.rows == 0 {
            return Err(invalid(
                "register_eval_split.rows",
                "a split without rows scores nothing",
            ));
        }
        if m.ciphertext_size <= m.size {
            return Err(invalid(
                "register_eval_split.ciphertext_size",
                "must exceed the plaintext size (header and tags)",
            ));
        }
        Ok(RegisterEvalSplit {
            dataset_id: m.dataset_id,
            cid,
            plaintext_sha256: digest("register_eval_split.plaintext_sha256", &m.plaintext_sha256)?,
            key_commitment: digest("register_eval_split.key_commitment", &m.key_commitment)?,
            size: m.size,
            ciphertext_size: m.ciphertext_size,
            rows: m.rows,
            columns: schema
                .columns
                .into_iter()
                .map(|c| (c.name, c.r#type))
                .collect(),
            format,
            location: m.location,
        })
    }
}

/// A column type as users write it (`int`, `float`, ...).
fn type_name(t: i32) -> String {
    pb::ColumnType::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("COLUMN_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("type {t}"))
}

/// The first difference between the dataset's columns and the split's, if any.
pub fn first_schema_difference(
    dataset: &[(String, i32)],
    split: &[(String, i32)],
) -> Option<String> {
    let n = dataset.len().max(split.len());
    (0..n).find_map(|i| match (dataset.get(i), split.get(i)) {
        (Some(d), Some(s)) if d == s => None,
        (Some((dn, dt)), Some((sn, st))) => Some(format!(
            "column {i} is {dn:?} ({}) in the dataset but {sn:?} ({}) in the split",
            type_name(*dt),
            type_name(*st)
        )),
        (Some((dn, dt)), None) => Some(format!(
            "the split lacks column {i} {dn:?} ({}); it has {} columns, the dataset {}",
            type_name(*dt),
            split.len(),
            dataset.len()
        )),
        (None, Some((sn, st))) => Some(format!(
            "the split has an extra column {i} {sn:?} ({}); the dataset has {} columns",
            type_name(*st),
            dataset.len()
        )),
        (None, None) => None,
    })
}

impl RegisterEvalSplit {
    /// Records the split under the next dataset id and links the dataset to it.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut dataset = existing_dataset(state, self.dataset_id)?;
        // A split of a split would be a second hidden copy of the same test rows.
        require_public(&dataset)?;
        let own = dataset.provider == signer.identity.fingerprint
            || (signer.role == Role::Admin && dataset.provider_org == signer.identity.org_id);
        if !own {
            return Err(MarketError::NotProvider {
                dataset: dataset.id,
                provider_org: dataset.provider_org,
            }
            .into());
        }
        if dataset.evaluation_split != 0 {
            return Err(MarketError::SplitExists {
                dataset: dataset.id,
                split: dataset.evaluation_split,
            }
            .into());
        }
        let columns: Vec<(String, i32)> = dataset
            .schema
            .iter()
            .flat_map(|s| s.columns.iter().map(|c| (c.name.clone(), c.r#type)))
            .collect();
        if let Some(difference) = first_schema_difference(&columns, &self.columns) {
            return Err(MarketError::SplitSchemaMismatch {
                dataset: dataset.id,
                difference,
            }
            .into());
        }
        let org = &signer.identity.org_id;
        let cid = self.cid.to_string();
        super::require_unused_ciphertexts(
            state,
            org,
            std::slice::from_ref(&cid),
            &self.key_commitment,
        )?;
        let id = state.next_dataset_id()?;
        let split = pb::Dataset {
            id,
            provider: signer.identity.fingerprint.clone(),
            provider_org: org.clone(),
            cid: cid.clone(),
            plaintext_sha256: self.plaintext_sha256.to_vec(),
            key_commitment: self.key_commitment.to_vec(),
            size: self.size,
            ciphertext_size: self.ciphertext_size,
            rows: self.rows,
            schema: dataset.schema.clone(),
            price: "0".into(),
            license: dataset.license.clone(),
            title: format!("evaluation split of dataset {}", dataset.id),
            location: self.location.clone(),
            status: pb::DatasetStatus::Hidden as i32,
            registered_height: ctx.height,
            format: self.format as i32,
            evaluation_split_of: dataset.id,
            ..Default::default()
        };
        state.put_dataset(&split);
        state.put_cid_index(org, &cid, id);
        state.put_key_commitment_index(org, &self.key_commitment, id);
        state.put_next_dataset_id(id + 1);
        dataset.evaluation_split = id;
        state.put_dataset(&dataset);
        state.emit(
            Event::new(EventKind::EvalSplitRegistered)
                .attr(attr::DATASET, dataset.id)
                .attr(attr::SPLIT, id)
                .attr(attr::ORG, org)
                .attr(attr::CID, &cid),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::amount::Amount;
    use crate::models::ModelsError;
    use crate::state::{MemoryState, StateDelta};

    const PROVIDER: [u8; 32] = [0xa1; 32];

    fn col(name: &str, t: pb::ColumnType) -> pb::Column {
        pb::Column {
            name: name.into(),
            r#type: t as i32,
        }
    }

    fn schema() -> pb::Schema {
        pb::Schema {
            columns: vec![
                col("age", pb::ColumnType::Int),
                col("chol", pb::ColumnType::Float),
                col("target", pb::ColumnType::Bool),
            ],
        }
    }

    fn signer(fingerprint: [u8; 32], org: &str, role: Role) -> Signer {
        Signer {
            identity: pb::Identity {
                fingerprint: fingerprint.to_vec(),
                org_id: org.into(),
                ..Default::default()
            },
            role,
            is_new: false,
        }
    }

    fn ctx() -> ExecCtx {
        ExecCtx {
            height: 5,
            time: 1_000,
            params: crate::governance::Params::default(),
        }
    }

    /// Dataset 1 of medlab, listed.
    fn world() -> MemoryState {
        let mut state = MemoryState::default();
        let mut d = StateDelta::new(&state);
        d.put_dataset(&pb::Dataset {
            id: 1,
            provider: PROVIDER.to_vec(),
            provider_org: "medlab".into(),
            cid: "bafk-listing".into(),
            key_commitment: vec![1; 32],
            schema: Some(schema()),
            price: Amount(100).to_string(),
            license: "CC-BY-4.0".into(),
            title: "heart".into(),
            status: pb::DatasetStatus::Listed as i32,
            ..Default::default()
        });
        d.put_key_commitment_index("medlab", &[1; 32], 1);
        d.put_next_dataset_id(2);
        state.apply(d.into_changes());
        state
    }

    fn message(salt: u8) -> pb::RegisterEvalSplit {
        pb::RegisterEvalSplit {
            dataset_id: 1,
            cid: Cid::of(&[salt]).to_string(),
            plaintext_sha256: vec![salt; 32],
            key_commitment: vec![0x40 + salt; 32],
            size: 100,
            ciphertext_size: 140,
            rows: 20,
            schema: Some(schema()),
            format: pb::DataFormat::Csv as i32,
            location: "https://gw.medlab.example".into(),
        }
    }

    /// Runs `m` signed by `s`; on success applies it.
    fn run(state: &mut MemoryState, m: pb::RegisterEvalSplit, s: &Signer) -> Result<(), TxError> {
        let split = RegisterEvalSplit::try_from(m)?;
        let mut d = StateDelta::new(&*state);
        let r = split.check_and_execute(&mut d, s, &ctx());
        let changes = d.into_changes();
        if r.is_err() {
            assert!(
                changes.writes.is_empty() && changes.events.is_empty(),
                "a refused split wrote {:?}",
                changes.writes.keys().collect::<Vec<_>>()
            );
        } else {
            state.apply(changes);
        }
        r
    }

    #[test]
    fn a_split_is_a_hidden_record_linked_both_ways() {
        let mut state = world();
        run(
            &mut state,
            message(7),
            &signer(PROVIDER, "medlab", Role::Provider),
        )
        .unwrap();
        let dataset = state.dataset(1).unwrap().unwrap();
        assert_eq!(dataset.evaluation_split, 2);
        let split = state.dataset(2).unwrap().unwrap();
        assert_eq!(split.status, pb::DatasetStatus::Hidden as i32);
        assert_eq!(split.evaluation_split_of, 1);
        assert_eq!(split.price, "0");
        assert_eq!(split.title, "evaluation split of dataset 1");
        assert_eq!(split.provider, PROVIDER.to_vec());
        assert_eq!(split.schema, dataset.schema);
        assert_eq!(
            state
                .dataset_by_key_commitment("medlab", &[0x47; 32])
                .unwrap(),
            Some(2)
        );
        assert_eq!(state.next_dataset_id().unwrap(), 3);
        assert!(
            !super::super::matches_filter(
                &split,
                &pb::DatasetFilter {
                    include_delisted: true,
                    ..Default::default()
                }
            ),
            "a hidden split is never browsed"
        );
    }

    #[test]
    fn an_admin_of_the_provider_org_may_register_the_split() {
        let mut state = world();
        run(
            &mut state,
            message(7),
            &signer([0xad; 32], "medlab", Role::Admin),
        )
        .unwrap();
        assert_eq!(state.dataset(1).unwrap().unwrap().evaluation_split, 2);
    }

    #[test]
    fn a_split_whose_schema_differs_is_refused_naming_the_first_difference() {
        let mut state = world();
        let p = signer(PROVIDER, "medlab", Role::Provider);
        let cases: Vec<(Vec<pb::Column>, &str)> = vec![
            (
                vec![
                    col("age", pb::ColumnType::Int),
                    col("chol", pb::ColumnType::Int),
                    col("target", pb::ColumnType::Bool),
                ],
                "column 1 is \"chol\" (float) in the dataset but \"chol\" (int) in the split",
            ),
            (
                vec![
                    col("age", pb::ColumnType::Int),
                    col("target", pb::ColumnType::Bool),
                    col("chol", pb::ColumnType::Float),
                ],
                "column 1 is \"chol\" (float) in the dataset but \"target\" (bool) in the split",
            ),
            (
                vec![
                    col("age", pb::ColumnType::Int),
                    col("chol", pb::ColumnType::Float),
                ],
                "the split lacks column 2 \"target\" (bool)",
            ),
            (
                vec![
                    col("age", pb::ColumnType::Int),
                    col("chol", pb::ColumnType::Float),
                    col("target", pb::ColumnType::Bool),
                    col("sex", pb::ColumnType::Category),
                ],
                "the split has an extra column 3 \"sex\" (category)",
            ),
        ];
        for (columns, difference) in cases {
            let mut m = message(7);
            m.schema = Some(pb::Schema { columns });
            let e = run(&mut state, m, &p).unwrap_err();
            assert!(
                matches!(&e, TxError::Market(MarketError::SplitSchemaMismatch { dataset: 1, difference: d }) if d.starts_with(difference)),
                "{e}"
            );
        }
        assert_eq!(state.dataset(1).unwrap().unwrap().evaluation_split, 0);
        assert_eq!(state.dataset(2).unwrap(), None);
    }

    #[test]
    fn only_the_provider_or_an_admin_of_its_org_registers_a_split() {
        let mut state = world();
        for s in [
            signer([0xb0; 32], "medlab", Role::Provider),
            signer([0xb1; 32], "datacorp", Role::Admin),
        ] {
            assert_eq!(
                run(&mut state, message(7), &s),
                Err(MarketError::NotProvider {
                    dataset: 1,
                    provider_org: "medlab".into()
                }
                .into())
            );
        }
        assert_eq!(state.dataset(2).unwrap(), None);
    }

    #[test]
    fn a_second_split_a_split_of_a_split_and_reused_keys_are_refused() {
        let mut state = world();
        let p = signer(PROVIDER, "medlab", Role::Provider);
        run(&mut state, message(7), &p).unwrap();
        assert_eq!(
            run(&mut state, message(8), &p),
            Err(MarketError::SplitExists {
                dataset: 1,
                split: 2
            }
            .into())
        );
        let mut of_split = message(8);
        of_split.dataset_id = 2;
        assert_eq!(
            run(&mut state, of_split, &p),
            Err(MarketError::HiddenSplit(2).into())
        );
        // A fresh dataset whose split reuses the listing's key commitment.
        let mut d = StateDelta::new(&state);
        let mut other = state.dataset(1).unwrap().unwrap();
        other.id = 3;
        other.evaluation_split = 0;
        d.put_dataset(&other);
        d.put_next_dataset_id(4);
        state.apply(d.into_changes());
        let mut reused = message(9);
        reused.dataset_id = 3;
        reused.key_commitment = vec![1; 32];
        assert_eq!(
            run(&mut state, reused, &p),
            Err(MarketError::DuplicateKeyCommitment { dataset: 1 }.into())
        );
        let mut same_cid = message(7);
        same_cid.dataset_id = 3;
        same_cid.key_commitment = vec![0x66; 32];
        assert!(matches!(
            run(&mut state, same_cid, &p),
            Err(TxError::Market(MarketError::DuplicateCid {
                dataset: 2,
                ..
            }))
        ));
        // A model listing's key or ciphertext of the org.
        let mut d = StateDelta::new(&state);
        crate::models::ModelsWrite::put_listing_key_commitment(&mut d, "medlab", &[0x77; 32], 5);
        crate::models::ModelsWrite::put_listing_cid(
            &mut d,
            "medlab",
            &Cid::of(&[9]).to_string(),
            5,
        );
        state.apply(d.into_changes());
        let mut model_key = message(8);
        model_key.dataset_id = 3;
        model_key.key_commitment = vec![0x77; 32];
        assert_eq!(
            run(&mut state, model_key, &p),
            Err(ModelsError::DuplicateKeyCommitment {
                holder: "model listing 5".into()
            }
            .into())
        );
        let mut model_cid = message(9);
        model_cid.dataset_id = 3;
        assert!(matches!(
            run(&mut state, model_cid, &p),
            Err(TxError::Models(ModelsError::DuplicateCid { .. }))
        ));
    }

    #[test]
    fn malformed_splits_are_refused_before_any_state_is_read() {
        let bad = |f: fn(&mut pb::RegisterEvalSplit)| {
            let mut m = message(7);
            f(&mut m);
            RegisterEvalSplit::try_from(m).is_err()
        };
        assert!(bad(|m| m.cid = "nope".into()));
        assert!(bad(|m| m.schema = None));
        assert!(bad(|m| m.plaintext_sha256 = vec![1; 31]));
        assert!(bad(|m| m.key_commitment.clear()));
        assert!(bad(|m| m.rows = 0));
        assert!(bad(|m| m.ciphertext_size = m.size));
        assert!(bad(|m| m.format = 99));
        assert!(bad(|m| m.location = "x".repeat(257)));
        assert!(!bad(|_| {}));
    }

    #[test]
    fn a_hidden_split_is_not_sold_previewed_validated_repriced_or_delisted() {
        let mut state = world();
        let p = signer(PROVIDER, "medlab", Role::Provider);
        run(&mut state, message(7), &p).unwrap();
        let hidden = || Err(MarketError::HiddenSplit(2).into());
        let buyer = signer([0xc0; 32], "datacorp", Role::Buyer);
        let mut d = StateDelta::new(&state);
        assert_eq!(
            crate::escrow::BuyDataset::try_from(pb::BuyDataset {
                dataset_id: 2,
                max_price: "0".into(),
            })
            .unwrap()
            .check_and_execute(&mut d, &buyer, &ctx()),
            hidden()
        );
        assert_eq!(
            super::super::RequestPreview { dataset_id: 2 }.check_and_execute(
                &mut d,
                &buyer,
                &ctx()
            ),
            hidden()
        );
        assert_eq!(
            super::super::UpdateDatasetPrice {
                dataset_id: 2,
                price: Amount(1),
            }
            .check_and_execute(&mut d, &p, &ctx()),
            hidden()
        );
        assert_eq!(
            super::super::DelistDataset { dataset_id: 2 }.check_and_execute(&mut d, &p, &ctx()),
            hidden()
        );
        let changes = d.into_changes();
        assert!(changes.writes.is_empty() && changes.events.is_empty());
    }
}
