//! `ndctl dataset preview`: a few rows of a listing before buying, each checked against the
//! listing's rows root. The request goes on chain first (once per member and dataset); the rows
//! are those the hash of the block after it draws, which the provider could not know when the
//! request was made. The block hash comes from a light-client-verified header.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use neurodata_abci::query::{self, BuyerDataset};
use neurodata_client::preview::check_preview;
use neurodata_client::{ChainAccess as _, msg};
use neurodata_proto::chain::v1 as pb;

use crate::dataset::{gateway, provider_gateway, record, submit};
use crate::{SignerArgs, load_signer};

/// Requests (if needed), fetches, checks and prints the preview of `dataset`.
pub async fn run(a: &SignerArgs, dataset: u64) -> anyhow::Result<()> {
    let me = load_signer(a)?.address();
    let g = gateway(a).await?;
    let d: pb::Dataset = record(&g, query::dataset(dataset), &format!("dataset {dataset}")).await?;
    if d.preview_rows == 0 || d.rows_root.is_empty() {
        bail!("dataset {dataset} offers no previews (its provider listed it with none)");
    }
    let mine = query::preview_request(BuyerDataset { buyer: me, dataset });
    // An unproved look first: a request made a moment ago may not be provable yet, and a second
    // one would be refused.
    let pending = g.conn.link.record(mine.clone()).await?.is_some();
    let found = if pending {
        wait_provable(&g, &mine).await?
    } else {
        g.conn.record(mine.clone()).await?
    };
    let request = match found {
        Some(r) => r,
        None => {
            let c = submit(a, &g, msg::request_preview(dataset)).await?;
            eprintln!(
                "requested a preview of dataset {dataset} at height {} (tx {}); its rows are drawn \
                 by block {}'s hash",
                c.height,
                c.hash,
                c.height + 1
            );
            wait_provable(&g, &mine)
                .await?
                .context("the preview request committed but cannot be read back yet; run again")?
        }
    };
    let header = g
        .conn
        .verified_header(request.height + 1)
        .await
        .context("verifying the block whose hash draws the rows")?;
    let block_hash = header.hash();
    let source = provider_gateway(a, &g, &d.location).await?;
    let answer = source.preview(dataset).await?;
    let rows = check_preview(&d, &request, block_hash.as_bytes(), &answer)?;
    println!(
        "preview of dataset {dataset} {:?}: {} of {} rows, drawn by block {}'s hash, each proven \
         against the listing's rows root",
        d.title,
        rows.len(),
        d.rows,
        request.height + 1
    );
    println!("  row  {}", answer.header.join(","));
    for r in rows {
        println!("  {:>3}  {}", r.index, r.cells.join(","));
    }
    Ok(())
}

/// The request, read verified, waiting up to 30 s for it to be provable (verified reads trail
/// the tip by a block).
async fn wait_provable(
    g: &crate::dataset::Gateway,
    mine: &neurodata_abci::query::Typed<pb::PreviewRequest>,
) -> anyhow::Result<Option<pb::PreviewRequest>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = g.conn.record(mine.clone()).await? {
            return Ok(Some(r));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
