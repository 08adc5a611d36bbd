//! Gateway benchmark client: `Broadcast` (SYNC) requests/s and latency percentiles with signed NRC
//! transfers from every dev member (one mTLS connection each), then a blob upload and download of
//! a file through the gateway, timed. Prints one JSON object on its last line. Run by
//! `scripts/bench/gateway.sh`, which also measures `sha256sum` on the same file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Amount, ClientError, Signer, Submitter, msg};
use neurodata_proto::gateway::v1 as gw;
use tokio::sync::Mutex;

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
    let seconds: u64 = arg("--seconds").unwrap_or("10".into()).parse()?;
    let file = arg("--file").map(PathBuf::from);
    let c = devnet.join("consortium");
    let ca = c.join("medlab/ca.pem");

    let mut members = Vec::new();
    for org in ["medlab", "healthtech", "datacorp"] {
        for role in ["admin", "provider", "buyer", "trainer", "validator"] {
            let dir = c.join(org);
            let tls = GatewayTls::from_files(
                &ca,
                &dir.join(format!("{role}.pem")),
                &dir.join(format!("{role}.key")),
            )?;
            let client = GatewayClient::connect(&url, Some(tls)).await?;
            members.push((Signer::load(&dir, role)?, client));
        }
    }
    // Register every member's certificate first so the measured txs are plain transfers.
    for (s, client) in &members {
        Submitter::new(client, s, Amount(1))
            .submit(vec![msg::transfer(s.address(), Amount(1))])
            .await?;
    }
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let n = members.len();
    let addresses: Vec<_> = members.iter().map(|(s, _)| s.address()).collect();
    for (i, (signer, client)) in members.into_iter().enumerate() {
        let (latencies, refused) = (latencies.clone(), refused.clone());
        let to = addresses[(i + 1) % n];
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            // The submitter counts nonces locally: txs go out back to back, before any is in a
            // block.
            let submitter = Submitter::new(&client, &signer, Amount(1));
            while Instant::now() < deadline {
                let tx = submitter
                    .sign(vec![msg::transfer(to, Amount(1))], "")
                    .await?;
                let t = Instant::now();
                match client.broadcast_mode(tx, gw::BroadcastMode::Sync, 0).await {
                    Ok(_) => mine.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(ClientError::Rejected { log, .. }) => {
                        if refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                            eprintln!("refused: {log}");
                        }
                        submitter.resync().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(anyhow::anyhow!(e)),
                }
            }
            latencies.lock().await.extend(mine);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().await.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() - 1) as f64 * p) as usize]
        }
    };
    let broadcast_per_s = l.len() as f64 / elapsed;
    eprintln!(
        "broadcast (sync): {} accepted in {elapsed:.1} s = {broadcast_per_s:.0}/s, p50 {:.1} ms, p99 {:.1} ms, refused {}",
        l.len(),
        pct(0.5),
        pct(0.99),
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );

    let (mut up_mb_s, mut down_mb_s) = (0.0, 0.0);
    if let Some(file) = file {
        let dir = c.join("medlab");
        let client = GatewayClient::connect(
            &url,
            Some(GatewayTls::from_files(
                &ca,
                &dir.join("provider.pem"),
                &dir.join("provider.key"),
            )?),
        )
        .await?;
        let size = std::fs::metadata(&file)?.len() as f64 / 1e6;
        let t = Instant::now();
        let (cid, _) = client.upload(tokio::fs::File::open(&file).await?).await?;
        up_mb_s = size / t.elapsed().as_secs_f64();
        let t = Instant::now();
        client.download(&cid, &mut tokio::io::sink()).await?;
        down_mb_s = size / t.elapsed().as_secs_f64();
        eprintln!("blob {cid}: upload {up_mb_s:.0} MB/s, download {down_mb_s:.0} MB/s");
    }
    println!(
        "{}",
        serde_json::json!({
            "broadcast_per_s": broadcast_per_s.round(),
            "p50_ms": (pct(0.5) * 10.0).round() / 10.0,
            "p99_ms": (pct(0.99) * 10.0).round() / 10.0,
            "upload_mb_s": up_mb_s.round(),
            "download_mb_s": down_mb_s.round(),
        })
    );
    Ok(())
}
