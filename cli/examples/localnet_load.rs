//! Load generator for the local network: workers send transactions through CometBFT's
//! `broadcast_tx_sync` as fast as the mempool takes them, and a watcher reads every block to
//! count committed txs and their commit latency (send → first seen in a committed block, polled
//! every 50 ms). Modes: `nrc` (signed NRC transfers by the dev consortium's members) and
//! `kvstore` (`key=value` txs for CometBFT's built-in kvstore, the baseline).
//!
//! Prints one JSON object on its last line. Run by `scripts/bench/localnet-load.sh`.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use neurodata_client::{Amount, Signer, TxParams, msg};
use tendermint_rpc::{Client, HttpClient};
use tokio::sync::{Mutex, Semaphore};

struct Args {
    rpcs: Vec<String>,
    mode: String,
    devnet: PathBuf,
    seconds: u64,
    warmup: u64,
    in_flight: usize,
}

fn args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: &str| {
        a.iter()
            .position(|x| x == name)
            .and_then(|i| a.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    Ok(Args {
        rpcs: get("--rpc", "http://127.0.0.1:26607")
            .split(',')
            .map(str::to_owned)
            .collect(),
        mode: get("--mode", "nrc"),
        devnet: PathBuf::from(get("--devnet", "./devnet")),
        seconds: get("--seconds", "30").parse().context("--seconds")?,
        warmup: get("--warmup", "5").parse().context("--warmup")?,
        in_flight: get("--in-flight", "3000").parse().context("--in-flight")?,
    })
}

type Sent = Arc<Mutex<BTreeMap<[u8; 32], Instant>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let rpc0 = args.rpcs.first().context("--rpc: no endpoint")?.as_str();
    let chain_id = HttpClient::new(rpc0)?
        .status()
        .await?
        .node_info
        .network
        .to_string();
    let sent: Sent = Arc::new(Mutex::new(BTreeMap::new()));
    let permits = Arc::new(Semaphore::new(args.in_flight));
    let stop = Arc::new(AtomicBool::new(false));
    let rejected = Arc::new(AtomicU64::new(0));
    let total_sent = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    let signers: Vec<Signer> = if args.mode == "nrc" {
        let c = args.devnet.join("consortium");
        let mut v = Vec::new();
        for org in ["medlab", "healthtech", "datacorp"] {
            for role in ["admin", "provider", "buyer", "trainer", "validator"] {
                v.push(Signer::load(&c.join(org), role)?);
            }
        }
        v
    } else {
        vec![]
    };
    // Register every signer's certificate first (one committed tx each), so the measured txs
    // are plain transfers without certificates attached.
    let mut first_nonce = vec![0u64; signers.len()];
    if args.mode == "nrc" {
        let rpc = HttpClient::new(rpc0)?;
        let mut pending = Vec::new();
        for (i, s) in signers.iter().enumerate() {
            let tx = s.sign(
                TxParams {
                    chain_id: chain_id.clone(),
                    nonce: 0,
                    fee: Amount(1),
                    attach_certificate: true,
                    memo: String::new(),
                },
                vec![msg::transfer(s.address(), Amount(1))],
            )?;
            first_nonce[i] = 1;
            pending.push(rpc.broadcast_tx_commit(tx));
        }
        for p in pending {
            let r = p.await?;
            if !r.tx_result.code.is_ok() {
                bail!("registration failed: {}", r.tx_result.log);
            }
        }
    }
    let first_nonce = Arc::new(first_nonce);
    let n_workers = if args.mode == "nrc" {
        signers.len()
    } else {
        16
    };
    let signers = Arc::new(signers);
    for w in 0..n_workers {
        let rpc = HttpClient::new(args.rpcs[w % args.rpcs.len()].as_str())?;
        let (sent, permits, stop, rejected, total_sent, signers) = (
            sent.clone(),
            permits.clone(),
            stop.clone(),
            rejected.clone(),
            total_sent.clone(),
            signers.clone(),
        );
        let (mode, chain_id) = (args.mode.clone(), chain_id.clone());
        let first_nonce = first_nonce.clone();
        workers.push(tokio::spawn(async move {
            let mut seq: u64 = first_nonce.get(w).copied().unwrap_or(0);
            while !stop.load(Ordering::Relaxed) {
                let permit = permits.clone().acquire_owned().await?;
                let tx = if mode == "nrc" {
                    let s = &signers[w];
                    let to = signers[(w + 1) % signers.len()].address();
                    s.sign(
                        TxParams {
                            chain_id: chain_id.clone(),
                            nonce: seq,
                            fee: Amount(1),
                            attach_certificate: false,
                            memo: String::new(),
                        },
                        vec![msg::transfer(to, Amount(1))],
                    )?
                } else {
                    format!("w{w}-{seq}=v{seq}").into_bytes()
                };
                let hash = openssl::sha::sha256(&tx);
                sent.lock().await.insert(hash, Instant::now());
                match rpc.broadcast_tx_sync(tx).await {
                    Ok(r) if r.code.is_ok() => {
                        permit.forget(); // returned by the watcher when the tx commits
                        seq += 1;
                        total_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // Nonce already taken in the mempool (an earlier send went through although
                    // its answer was lost): move on to the next nonce.
                    Ok(r) if r.codespace == "tx" && r.code.value() == 8 => {
                        sent.lock().await.remove(&hash);
                        seq += 1;
                    }
                    // A gap: txs this worker sent earlier were dropped by a mempool (peers can
                    // receive one signer's txs out of order over different connections and refuse
                    // the later ones). Resend from the nonce the chain expects, as a client would.
                    Ok(r) if r.codespace == "tx" && r.code.value() == 9 => {
                        sent.lock().await.remove(&hash);
                        if let Some(n) = r
                            .log
                            .rsplit("next nonce is ")
                            .next()
                            .and_then(|n| n.trim().parse::<u64>().ok())
                        {
                            seq = n;
                        }
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        sent.lock().await.remove(&hash);
                        if rejected.fetch_add(1, Ordering::Relaxed) < 5 {
                            match other {
                                Ok(r) => eprintln!(
                                    "refused: {} code {}: {}",
                                    r.codespace,
                                    r.code.value(),
                                    r.log
                                ),
                                Err(e) => eprintln!("broadcast failed: {e}"),
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }

    // Watcher: every committed block, in order.
    let client = HttpClient::new(rpc0)?;
    let start = Instant::now();
    let window = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.warmup + args.seconds),
    );
    let mut height = client.status().await?.sync_info.latest_block_height.value();
    let mut latencies = Vec::new();
    let mut committed = 0u64;
    while start.elapsed() < window.1 {
        let latest = client.status().await?.sync_info.latest_block_height.value();
        while height < latest {
            height += 1;
            let block = client
                .block(tendermint::block::Height::try_from(height)?)
                .await?;
            let now = Instant::now();
            let in_window = start.elapsed() >= window.0;
            let mut sent = sent.lock().await;
            for tx in block.block.data.iter() {
                if let Some(t) = sent.remove(&openssl::sha::sha256(tx)) {
                    permits.add_permits(1);
                    if in_window {
                        committed += 1;
                        latencies.push(now.duration_since(t).as_secs_f64() * 1000.0);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    permits.add_permits(n_workers);
    for w in workers {
        w.await??;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * p) as usize]
        }
    };
    let tx_per_s = committed as f64 / args.seconds as f64;
    println!(
        "{}: {committed} txs committed in {} s = {tx_per_s:.1} tx/s; latency p50 {:.0} ms p99 {:.0} ms; sent {}, refused by CheckTx {}",
        args.mode,
        args.seconds,
        pct(0.5),
        pct(0.99),
        total_sent.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed)
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": args.mode,
            "tx_per_s": (tx_per_s * 10.0).round() / 10.0,
            "p50_ms": pct(0.5).round(),
            "p99_ms": pct(0.99).round(),
            "committed": committed,
            "refused": rejected.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
