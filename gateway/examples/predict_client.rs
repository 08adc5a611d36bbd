//! `Models.Predict` through a gateway over mTLS, timed: the gateway figure of
//! `scripts/bench/predict.sh`. Prints one JSON object on its last line.
//!
//! ```text
//! predict_client --devnet DIR --gateway URL --org ORG --role ROLE --listing ID --rows CSV
//!                [--batch 1000] [--seconds 10]
//! ```
//!
//! The rows are cut into batches of `--batch` rows, each with the header line; one `Predict`
//! call streams them round-robin for `--seconds` (a bounded queue keeps a few in flight) and
//! counts the rows answered. `predictions_sha256` is the SHA-256 of the labels of one pass over
//! every batch, one per line, which `trainer/examples/predict_bench.rs` prints too for the
//! in-process run on the same rows: equal digests mean the gateway ran the same model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let devnet = PathBuf::from(arg("--devnet").context("--devnet DIR")?);
    let url = arg("--gateway").context("--gateway URL")?;
    let org = arg("--org").context("--org ORG")?;
    let role = arg("--role").unwrap_or("buyer".into());
    let listing: u64 = arg("--listing").context("--listing ID")?.parse()?;
    let rows_path = PathBuf::from(arg("--rows").context("--rows CSV")?);
    let batch: usize = arg("--batch").unwrap_or("1000".into()).parse()?;
    let seconds: u64 = arg("--seconds").unwrap_or("10".into()).parse()?;
    let dir = devnet.join("consortium").join(&org);
    let tls = GatewayTls::from_files(
        &dir.join("ca.pem"),
        &dir.join(format!("{role}.pem")),
        &dir.join(format!("{role}.key")),
    )?;
    let client = GatewayClient::connect(&url, Some(tls)).await?;

    let text = std::fs::read_to_string(&rows_path)?;
    let mut lines = text.lines();
    let header = lines.next().context("empty rows file")?;
    let body: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let batches: Vec<Vec<u8>> = body
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|c| format!("{header}\n{}\n", c.join("\n")).into_bytes())
        .collect();
    if batches.is_empty() {
        bail!("{} holds fewer than {batch} rows", rows_path.display());
    }
    let count = batches.len();
    let batches = std::sync::Arc::new(batches);
    let request = move |i: usize| gw::PredictRequest {
        listing_id: listing,
        format: pb::DataFormat::Csv as i32,
        rows: batches[i % batches.len()].clone(),
    };

    // One pass over every batch: the labels' digest, and a warm connection and model.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = client.predict(rx).await?;
    let first = count;
    let make = request.clone();
    let feed = tokio::spawn(async move {
        for i in 0..first {
            if tx.send(make(i)).await.is_err() {
                break;
            }
        }
    });
    let mut labels = String::new();
    let mut classes = Vec::new();
    while let Some(a) = answers.next().await? {
        if a.first_row == 0 {
            classes = a.classes.clone();
        }
        for l in &a.predictions {
            labels.push_str(l);
            labels.push('\n');
        }
    }
    feed.await?;
    let digest = hex::encode(openssl::sha::sha256(labels.as_bytes()));

    // Timed: one call, batches round-robin until the deadline.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut answers = client.predict(rx).await?;
    let feed = tokio::spawn(async move {
        let mut i = 0;
        while Instant::now() < deadline {
            if tx.send(request(i)).await.is_err() {
                break;
            }
            i += 1;
        }
    });
    let mut rows = 0usize;
    while let Some(a) = answers.next().await? {
        rows += a.predictions.len();
    }
    let elapsed = start.elapsed().as_secs_f64();
    feed.await?;
    let rows_per_s = rows as f64 / elapsed;
    eprintln!(
        "{rows} rows in {elapsed:.1} s through {url} (batches of {batch}, mTLS): {rows_per_s:.0} \
         rows/s; classes {classes:?}"
    );
    println!(
        "{}",
        serde_json::json!({
            "gateway_rows_per_s": rows_per_s.round(),
            "gateway_rows": rows,
            "batch_rows": batch,
            "predictions_sha256": digest,
        })
    );
    Ok(())
}
