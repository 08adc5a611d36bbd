//! Checking a preview: the rows a provider's gateway shows a member before purchase.
//!
//! The member's `RequestPreview` is on chain at some height; the rows must be exactly those
//! [`neurodata_tabular::merkle::draw_rows`] draws with the hash of the block after it (which the
//! caller takes from a light-client-verified header), as many as the request allows, each with a
//! Merkle proof against the listing's `rows_root` at its index. Anything else is refused: rows
//! not in the dataset, rows the provider chose, or more rows than the listing offers.

use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use neurodata_tabular::merkle;

use crate::ClientError;

/// A row of a checked preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewRow {
    /// 0-based row index (header excluded).
    pub index: u64,
    /// Cells in header order.
    pub cells: Vec<String>,
}

fn refused(reason: String) -> ClientError {
    ClientError::Proof(format!("preview refused: {reason}"))
}

/// Checks `r` against the listing, the on-chain request and the verified hash of block
/// `request.height + 1`; the rows if every check passes.
pub fn check_preview(
    dataset: &pb::Dataset,
    request: &pb::PreviewRequest,
    block_hash: &[u8],
    r: &gw::PreviewResponse,
) -> Result<Vec<PreviewRow>, ClientError> {
    if r.dataset_id != dataset.id || request.dataset_id != dataset.id {
        return Err(refused(format!(
            "it is for dataset {}, asked {}",
            r.dataset_id, dataset.id
        )));
    }
    if r.request_height != request.height || r.block_hash != block_hash {
        return Err(refused(
            "its rows are not drawn with the hash of the block after the request".into(),
        ));
    }
    let root = <[u8; 32]>::try_from(dataset.rows_root.as_slice())
        .map_err(|_| refused(format!("dataset {} has no rows root", dataset.id)))?;
    let allowed = request.rows.min(dataset.preview_rows);
    if r.rows.len() > allowed as usize {
        return Err(refused(format!(
            "it shows {} rows; the listing offers {allowed}",
            r.rows.len()
        )));
    }
    let seed = merkle::preview_seed(block_hash, dataset.id, &request.requester);
    let drawn = merkle::draw_rows(&seed, dataset.rows, allowed);
    let shown: Vec<u64> = r.rows.iter().map(|row| row.index).collect();
    if shown != drawn {
        return Err(refused(format!(
            "it shows rows {shown:?}, the block hash draws {drawn:?}"
        )));
    }
    let names: Vec<&str> = dataset
        .schema
        .iter()
        .flat_map(|s| s.columns.iter())
        .map(|c| c.name.as_str())
        .collect();
    let columns = names.len();
    if r.header
        .iter()
        .map(String::as_str)
        .ne(names.iter().copied())
    {
        return Err(refused(format!(
            "its header {:?} is not the listing's columns {names:?}",
            r.header
        )));
    }
    r.rows
        .iter()
        .map(|row| {
            if row.cells.len() != columns {
                return Err(refused(format!(
                    "row {} has {} cells",
                    row.index,
                    row.cells.len()
                )));
            }
            let path = row
                .proof
                .iter()
                .map(|p| <[u8; 32]>::try_from(p.as_slice()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| refused(format!("row {}: a proof node is not 32 bytes", row.index)))?;
            let leaf = merkle::leaf(row.index, &row.cells);
            if !merkle::verify(&root, dataset.rows, row.index, &leaf, &path) {
                return Err(refused(format!(
                    "row {} is not that row of the dataset (its proof does not reach the \
                     listing's rows root)",
                    row.index
                )));
            }
            Ok(PreviewRow {
                index: row.index,
                cells: row.cells.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: u64 = 20;

    fn table() -> Vec<Vec<String>> {
        (0..ROWS)
            .map(|i| vec![format!("{}", 30 + i), format!("{}", i % 2)])
            .collect()
    }

    fn leaves(t: &[Vec<String>]) -> Vec<merkle::Hash> {
        t.iter()
            .enumerate()
            .map(|(i, cells)| merkle::leaf(i as u64, cells))
            .collect()
    }

    fn listing(t: &[Vec<String>], cap: u32) -> pb::Dataset {
        pb::Dataset {
            id: 1,
            rows: ROWS,
            rows_root: merkle::root(&leaves(t)).to_vec(),
            preview_rows: cap,
            schema: Some(pb::Schema {
                columns: ["age", "y"]
                    .map(|n| pb::Column {
                        name: n.into(),
                        ..Default::default()
                    })
                    .to_vec(),
            }),
            ..Default::default()
        }
    }

    /// What an honest gateway answers for `indices`.
    fn answer(t: &[Vec<String>], hash: &[u8], indices: &[u64]) -> gw::PreviewResponse {
        let l = leaves(t);
        gw::PreviewResponse {
            dataset_id: 1,
            request_height: 9,
            block_hash: hash.to_vec(),
            header: vec!["age".into(), "y".into()],
            rows: indices
                .iter()
                .map(|&i| gw::PreviewRow {
                    index: i,
                    cells: t[i as usize].clone(),
                    proof: merkle::proof(&l, i as usize)
                        .unwrap()
                        .into_iter()
                        .map(|h| h.to_vec())
                        .collect(),
                })
                .collect(),
        }
    }

    fn request(rows: u32) -> pb::PreviewRequest {
        pb::PreviewRequest {
            dataset_id: 1,
            height: 9,
            rows,
            ..Default::default()
        }
    }

    #[test]
    fn the_drawn_rows_with_their_proofs_pass() {
        let t = table();
        let hash = [5u8; 32];
        let drawn = merkle::draw_rows(&merkle::preview_seed(&hash, 1, &[]), ROWS, 3);
        let rows = check_preview(
            &listing(&t, 3),
            &request(3),
            &hash,
            &answer(&t, &hash, &drawn),
        );
        assert_eq!(rows.unwrap().len(), 3);
    }

    #[test]
    fn rows_not_in_the_dataset_fail() {
        let t = table();
        let hash = [5u8; 32];
        let drawn = merkle::draw_rows(&merkle::preview_seed(&hash, 1, &[]), ROWS, 3);
        let mut a = answer(&t, &hash, &drawn);
        a.rows[1].cells[0] = "99".into();
        let e = check_preview(&listing(&t, 3), &request(3), &hash, &a).unwrap_err();
        assert!(e.to_string().contains("is not that row"), "{e}");
    }

    #[test]
    fn rows_other_than_the_drawn_ones_fail() {
        let t = table();
        let hash = [5u8; 32];
        let drawn = merkle::draw_rows(&merkle::preview_seed(&hash, 1, &[]), ROWS, 3);
        // The provider's favourite rows, each with a valid proof.
        let chosen: Vec<u64> = (0..ROWS).filter(|i| !drawn.contains(i)).take(3).collect();
        let e = check_preview(
            &listing(&t, 3),
            &request(3),
            &hash,
            &answer(&t, &hash, &chosen),
        )
        .unwrap_err();
        assert!(e.to_string().contains("the block hash draws"), "{e}");
        // Or drawn with another block's hash.
        let other = [6u8; 32];
        let e = check_preview(
            &listing(&t, 3),
            &request(3),
            &hash,
            &answer(
                &t,
                &other,
                &merkle::draw_rows(&merkle::preview_seed(&other, 1, &[]), ROWS, 3),
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("block after the request"), "{e}");
    }

    #[test]
    fn a_preview_larger_than_the_cap_is_refused() {
        let t = table();
        let hash = [5u8; 32];
        let more = merkle::draw_rows(&merkle::preview_seed(&hash, 1, &[]), ROWS, 5);
        let e = check_preview(
            &listing(&t, 3),
            &request(5),
            &hash,
            &answer(&t, &hash, &more),
        )
        .unwrap_err();
        assert!(e.to_string().contains("the listing offers 3"), "{e}");
    }
}
