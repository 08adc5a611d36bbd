//! Listing a dataset, changing its price, delisting it; and the browse filter.

use crate::events::{EventKind, attr};
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;

use super::{MarketError, MarketRead, MarketWrite};
use crate::TxError;
use crate::amount::Amount;
use crate::membership::{Role, Signer};
use crate::state::{Event, StateWrite};
use crate::tx::{ExecCtx, invalid};

const MAX_COLUMNS: usize = 256;

fn digest(field: &'static str, b: &[u8]) -> Result<[u8; 32], TxError> {
    <[u8; 32]>::try_from(b).map_err(|_| invalid(field, format!("{} bytes, expected 32", b.len())))
}

/// Checks a schema: 1..=256 columns, names of 1..=64 `[A-Za-z0-9_.-]` bytes, unique, every type
/// known.
pub fn check_schema(schema: Option<&pb::Schema>) -> Result<pb::Schema, MarketError> {
    let schema = schema.ok_or(MarketError::NoSchema)?;
    if schema.columns.is_empty() || schema.columns.len() > MAX_COLUMNS {
        return Err(MarketError::ColumnCount {
            count: schema.columns.len(),
            max: MAX_COLUMNS,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, c) in schema.columns.iter().enumerate() {
        let ok_name = (1..=64).contains(&c.name.len())
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok_name {
            return Err(MarketError::BadColumnName {
                index,
                name: c.name.clone(),
            });
        }
        if !seen.insert(c.name.as_str()) {
            return Err(MarketError::DuplicateColumn {
                name: c.name.clone(),
            });
        }
        match pb::ColumnType::try_from(c.r#type) {
            Ok(pb::ColumnType::Unspecified) | Err(_) => {
                return Err(MarketError::UnknownColumnType {
                    name: c.name.clone(),
                    type_code: c.r#type,
                });
            }
            Ok(_) => {}
        }
    }
    Ok(schema.clone())
}

/// List an encrypted dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterDataset {
    /// Ciphertext CID.
    pub cid: Cid,
    /// Plaintext SHA-256.
    pub plaintext_sha256: [u8; 32],
    /// SHA-256 of the data key.
    pub key_commitment: [u8; 32],
    /// Plaintext bytes.
    pub size: u64,
    /// Ciphertext bytes.
    pub ciphertext_size: u64,
    /// Rows.
    pub rows: u64,
    /// Checked schema: (name, type) per column.
    pub columns: Vec<(String, i32)>,
    /// Price.
    pub price: Amount,
    /// License.
    pub license: String,
    /// Title.
    pub title: String,
    /// Download location.
    pub location: String,
    /// How the plaintext is written.
    pub format: pb::DataFormat,
    /// Merkle root over the plaintext rows (None: a listing without previews or row checks).
    pub rows_root: Option<[u8; 32]>,
    /// Most rows a preview shows (0: none).
    pub preview_rows: u32,
}

/// Most rows a listing may offer in a preview.
pub const MAX_PREVIEW_ROWS: u32 = 100;

impl TryFrom<pb::RegisterDataset> for RegisterDataset {
    type Error = TxError;
    fn try_from(m: pb::RegisterDataset) -> Result<Self, TxError> {
        let cid: Cid = m
            .cid
            .parse()
            .map_err(|e: neurodata_crypto::cid::CidError| invalid("register_dataset.cid", e))?;
        let schema = check_schema(m.schema.as_ref())?;
        if !(1..=128).contains(&m.title.len()) {
            return Err(invalid("register_dataset.title", "1..=128 bytes"));
        }
        if m.license.is_empty() || m.license.len() > 256 {
            return Err(invalid("register_dataset.license", "1..=256 bytes"));
        }
        if m.location.len() > 256 {
            return Err(invalid("register_dataset.location", "at most 256 bytes"));
        }
        let format = pb::DataFormat::try_from(m.format)
            .map_err(|_| invalid("register_dataset.format", "not a known data format"))?;
        let rows_root = match m.rows_root.as_slice() {
            [] => None,
            r => Some(digest("register_dataset.rows_root", r)?),
        };
        if m.preview_rows > 0 && rows_root.is_none() {
            return Err(invalid(
                "register_dataset.preview_rows",
                "previews need the rows root they are checked against",
            ));
        }
        if m.preview_rows > MAX_PREVIEW_ROWS || u64::from(m.preview_rows) > m.rows {
            return Err(invalid(
                "register_dataset.preview_rows",
                format!("at most {MAX_PREVIEW_ROWS} and at most the dataset's rows"),
            ));
        }
        if m.ciphertext_size <= m.size {
            return Err(invalid(
                "register_dataset.ciphertext_size",
                "must exceed the plaintext size (header and tags)",
            ));
        }
        Ok(RegisterDataset {
            cid,
            plaintext_sha256: digest("register_dataset.plaintext_sha256", &m.plaintext_sha256)?,
            key_commitment: digest("register_dataset.key_commitment", &m.key_commitment)?,
            size: m.size,
            ciphertext_size: m.ciphertext_size,
            rows: m.rows,
            columns: schema
                .columns
                .into_iter()
                .map(|c| (c.name, c.r#type))
                .collect(),
            price: crate::tx::amount_field("register_dataset.price", &m.price)?,
            license: m.license,
            title: m.title,
            location: m.location,
            format,
            rows_root,
            preview_rows: m.preview_rows,
        })
    }
}

impl RegisterDataset {
    /// Lists the dataset under the next id.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let cid = self.cid.to_string();
        let org = &signer.identity.org_id;
        super::require_unused_ciphertexts(
            state,
            org,
            std::slice::from_ref(&cid),
            &self.key_commitment,
        )?;
        let id = state.next_dataset_id()?;
        let dataset = pb::Dataset {
            id,
            provider: signer.identity.fingerprint.clone(),
            provider_org: signer.identity.org_id.clone(),
            cid: cid.clone(),
            plaintext_sha256: self.plaintext_sha256.to_vec(),
            key_commitment: self.key_commitment.to_vec(),
            size: self.size,
            ciphertext_size: self.ciphertext_size,
            rows: self.rows,
            schema: Some(pb::Schema {
                columns: self
                    .columns
                    .iter()
                    .map(|(name, t)| pb::Column {
                        name: name.clone(),
                        r#type: *t,
                    })
                    .collect(),
            }),
            price: self.price.to_string(),
            license: self.license.clone(),
            title: self.title.clone(),
            location: self.location.clone(),
            status: pb::DatasetStatus::Listed as i32,
            registered_height: ctx.height,
            format: self.format as i32,
            rows_root: self.rows_root.map(|r| r.to_vec()).unwrap_or_default(),
            preview_rows: self.preview_rows,
            ..Default::default()
        };
        state.put_dataset(&dataset);
        state.put_cid_index(org, &cid, id);
        state.put_key_commitment_index(org, &self.key_commitment, id);
        state.put_next_dataset_id(id + 1);
        state.emit(
            Event::new(EventKind::DatasetRegistered)
                .attr(attr::DATASET, id)
                .attr(attr::PROVIDER, hex::encode(&dataset.provider))
                .attr(attr::ORG, &dataset.provider_org)
                .attr(attr::CID, &cid)
                .attr(attr::PRICE, self.price),
        );
        Ok(())
    }
}

/// Listed dataset `id` if `signer` may change it: its provider, or an admin of its org.
fn owned_listing<S: MarketRead>(
    state: &S,
    id: u64,
    signer: &Signer,
) -> Result<pb::Dataset, TxError> {
    let dataset = super::existing_dataset(state, id)?;
    let own = dataset.provider == signer.identity.fingerprint
        || (signer.role == Role::Admin && dataset.provider_org == signer.identity.org_id);
    if !own {
        return Err(MarketError::NotProvider {
            dataset: id,
            provider_org: dataset.provider_org,
        }
        .into());
    }
    super::require_listed(&dataset)?;
    Ok(dataset)
}

/// Change a listed dataset's price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateDatasetPrice {
    /// The dataset.
    pub dataset_id: u64,
    /// New price.
    pub price: Amount,
}

impl TryFrom<pb::UpdateDatasetPrice> for UpdateDatasetPrice {
    type Error = TxError;
    fn try_from(m: pb::UpdateDatasetPrice) -> Result<Self, TxError> {
        Ok(UpdateDatasetPrice {
            dataset_id: m.dataset_id,
            price: crate::tx::amount_field("update_dataset_price.price", &m.price)?,
        })
    }
}

impl UpdateDatasetPrice {
    /// Sets the price; purchases already open keep the price they escrowed.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        _ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut dataset = owned_listing(state, self.dataset_id, signer)?;
        dataset.price = self.price.to_string();
        state.put_dataset(&dataset);
        state.emit(
            Event::new(EventKind::DatasetPriceChanged)
                .attr(attr::DATASET, self.dataset_id)
                .attr(attr::PRICE, self.price),
        );
        Ok(())
    }
}

/// Take a dataset off the market.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelistDataset {
    /// The dataset.
    pub dataset_id: u64,
}

impl From<pb::DelistDataset> for DelistDataset {
    fn from(m: pb::DelistDataset) -> Self {
        DelistDataset {
            dataset_id: m.dataset_id,
        }
    }
}

impl DelistDataset {
    /// Marks the dataset delisted; open purchases still run to completion.
    pub fn check_and_execute<S: StateWrite>(
        &self,
        state: &mut S,
        signer: &Signer,
        _ctx: &ExecCtx,
    ) -> Result<(), TxError> {
        let mut dataset = owned_listing(state, self.dataset_id, signer)?;
        dataset.status = pb::DatasetStatus::Delisted as i32;
        state.put_dataset(&dataset);
        state.emit(Event::new(EventKind::DatasetDelisted).attr(attr::DATASET, self.dataset_id));
        Ok(())
    }
}

/// Whether `dataset` passes the browse `filter`. A malformed `max_price` filters nothing out
/// rather than failing the whole listing.
pub fn matches_filter(dataset: &pb::Dataset, filter: &pb::DatasetFilter) -> bool {
    // Hidden evaluation splits are not for browsing, whatever the filter.
    if dataset.status == pb::DatasetStatus::Hidden as i32 {
        return false;
    }
    let listed = dataset.status == pb::DatasetStatus::Listed as i32;
    if !filter.include_delisted && !listed {
        return false;
    }
    if !filter.provider.is_empty() && filter.provider != dataset.provider {
        return false;
    }
    if !filter.provider_org.is_empty() && filter.provider_org != dataset.provider_org {
        return false;
    }
    if filter.verified_only && !dataset.verified {
        return false;
    }
    if let (Ok(max), Ok(p)) = (
        filter.max_price.parse::<Amount>(),
        dataset.price.parse::<Amount>(),
    ) && !filter.max_price.is_empty()
        && p > max
    {
        return false;
    }
    if !filter.column.is_empty()
        && !dataset
            .schema
            .as_ref()
            .is_some_and(|s| s.columns.iter().any(|c| c.name == filter.column))
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: pb::ColumnType) -> pb::Column {
        pb::Column {
            name: name.into(),
            r#type: t as i32,
        }
    }

    #[test]
    fn schemas_need_known_types_and_unique_well_formed_names() {
        use pb::ColumnType as T;
        let ok = pb::Schema {
            columns: vec![col("age", T::Int), col("chol.mg_dl", T::Float)],
        };
        assert!(check_schema(Some(&ok)).is_ok());
        let bad = |columns| check_schema(Some(&pb::Schema { columns }));
        assert_eq!(
            bad(vec![]),
            Err(MarketError::ColumnCount {
                count: 0,
                max: MAX_COLUMNS
            })
        );
        assert_eq!(
            bad(vec![col("age", T::Int), col("age", T::Float)]),
            Err(MarketError::DuplicateColumn { name: "age".into() })
        );
        for name in ["a b", ""] {
            assert_eq!(
                bad(vec![col("ok", T::Int), col(name, T::Int)]),
                Err(MarketError::BadColumnName {
                    index: 1,
                    name: name.into()
                })
            );
        }
        for type_code in [T::Unspecified as i32, 99] {
            assert_eq!(
                bad(vec![pb::Column {
                    name: "x".into(),
                    r#type: type_code,
                }]),
                Err(MarketError::UnknownColumnType {
                    name: "x".into(),
                    type_code
                })
            );
        }
        assert_eq!(check_schema(None), Err(MarketError::NoSchema));
    }

    #[test]
    fn the_browse_filter_combines_its_fields() {
        let d = pb::Dataset {
            provider_org: "medlab".into(),
            price: "100".into(),
            status: pb::DatasetStatus::Listed as i32,
            schema: Some(pb::Schema {
                columns: vec![col("age", pb::ColumnType::Int)],
            }),
            ..Default::default()
        };
        let f = |f: pb::DatasetFilter| matches_filter(&d, &f);
        assert!(f(pb::DatasetFilter::default()));
        assert!(f(pb::DatasetFilter {
            max_price: "100".into(),
            column: "age".into(),
            provider_org: "medlab".into(),
            ..Default::default()
        }));
        assert!(!f(pb::DatasetFilter {
            max_price: "99".into(),
            ..Default::default()
        }));
        assert!(!f(pb::DatasetFilter {
            verified_only: true,
            ..Default::default()
        }));
        assert!(!f(pb::DatasetFilter {
            column: "sex".into(),
            ..Default::default()
        }));
    }
}
