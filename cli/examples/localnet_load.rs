//! Load generator for the local network: workers send transactions through CometBFT's
//! `broadcast_tx_sync` as fast as the mempool takes them, and a watcher reads every block to
//! count committed txs and their commit latency (send → first seen in a committed block, polled
//! every 50 ms). Modes: `nrc` (signed NRC transfers by the dev consortium's members) and
//! `kvstore` (`key=value` txs for CometBFT's built-in kvstore, the baseline).
//!
//! For the soak (`scripts/soak.sh`): `--rate R` paces the whole load at R tx/s instead of as fast
//! as possible, `--roles` picks which members sign (so other clients can use the rest without
//! nonce races), `--windows FILE` appends one CSV line per 5 s window (unix time, committed, p50,
//! p99 ms), and every run ends with the exactly-once check: after the load stops it waits (up to
//! `--drain` seconds) until every (signer, nonce) CheckTx accepted has a tx that succeeded in a
//! block, then checks that each has exactly one, looks each successful tx up by hash on another
//! node's tx index, and compares every signer's final nonce and balance with what the successful
//! transfers imply. The watcher reads each block's results beside it: a tx included in a block
//! that failed there (code ≠ 0, e.g. a nonce gap) is not committed; it is counted as "failed in a
//! block", and when its nonce is then filled by a re-signed tx it is "replaced", as is an accepted
//! tx a mempool evicted. A broadcast whose RPC call errored may still have reached a mempool: its
//! hash is kept, and it counts if it succeeds in a block. Balances are exact only when nobody else
//! pays the signers: the validator members earn block rewards, so the soak signs with `--roles
//! trainer` (the benchmark's default of every role reports their balances as off, and does not
//! enforce it).
//!
//! Prints one JSON object on its last line. Run by `scripts/bench/localnet-load.sh` and
//! `scripts/soak.sh`.
use std::collections::BTreeMap;
use std::io::Write as _;
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
    rate: f64,
    roles: Vec<String>,
    windows: Option<PathBuf>,
    drain: u64,
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
        rate: get("--rate", "0").parse().context("--rate")?,
        roles: get("--roles", "admin,provider,buyer,trainer,validator")
            .split(',')
            .map(str::to_owned)
            .collect(),
        windows: Some(get("--windows", ""))
            .filter(|w| !w.is_empty())
            .map(PathBuf::from),
        drain: get("--drain", "60").parse().context("--drain")?,
    })
}

type Sent = Arc<Mutex<BTreeMap<[u8; 32], Instant>>>;
/// Every tx CheckTx accepted: its hash, the worker (signer) that sent it and its nonce. The same
/// type holds the "maybe" txs: broadcasts whose RPC call errored, which may have been accepted.
type Accepted = Arc<Mutex<BTreeMap<[u8; 32], (usize, u64)>>>;

/// A signer's account (balance, next nonce) as the latest state has it.
async fn account(rpc: &HttpClient, s: &Signer) -> anyhow::Result<(u128, u64)> {
    let q = neurodata_client::query::account(s.address()).query;
    let r = rpc
        .abci_query(Some(q.path().to_owned()), q.data(), None, false)
        .await?;
    let value = Some(r.value.as_slice()).filter(|v| !v.is_empty());
    let a = neurodata_client::decode_account(s.address(), value)?;
    Ok((a.balance.parse().context("balance")?, a.nonce))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        0.0
    } else {
        sorted[((sorted.len() - 1) as f64 * p) as usize]
    }
}

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
            for role in &args.roles {
                v.push(Signer::load(&c.join(org), role)?);
            }
        }
        v
    } else {
        vec![]
    };
    // Register every signer's certificate first (one committed tx each), so the measured txs
    // are plain transfers without certificates attached. A signer with a nonce already (an
    // earlier run on the same network) is registered: it starts from its next nonce.
    let mut first_nonce = vec![0u64; signers.len()];
    if args.mode == "nrc" {
        let rpc = HttpClient::new(rpc0)?;
        let mut pending = Vec::new();
        for (i, s) in signers.iter().enumerate() {
            let (_, nonce) = account(&rpc, s).await?;
            if nonce > 0 {
                first_nonce[i] = nonce;
                continue;
            }
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
    // The starting balances, read after registration, for the balance check at the end.
    let mut initial = Vec::new();
    if args.mode == "nrc" {
        let rpc = HttpClient::new(rpc0)?;
        for s in &signers {
            initial.push(account(&rpc, s).await?);
        }
    }
    let accepted: Accepted = Arc::new(Mutex::new(BTreeMap::new()));
    let maybe: Accepted = Arc::new(Mutex::new(BTreeMap::new()));
    let first_nonce = Arc::new(first_nonce);
    let n_workers = if args.mode == "nrc" {
        signers.len()
    } else {
        16
    };
    let signers = Arc::new(signers);
    // Pacing: each worker sends its share of --rate on a steady clock, catching up after a slow
    // send so the rate holds on average.
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(n_workers as f64 / args.rate));
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
        let (accepted, maybe) = (accepted.clone(), maybe.clone());
        workers.push(tokio::spawn(async move {
            let mut seq: u64 = first_nonce.get(w).copied().unwrap_or(0);
            let mut tick = period.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
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
                        accepted.lock().await.insert(hash, (w, seq));
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
                        if other.is_err() {
                            // No answer: the tx may still have reached a mempool and commit.
                            maybe.lock().await.insert(hash, (w, seq));
                        }
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
    // How many times each tx succeeded in a block (code 0), and how many times it was included in
    // a block but failed there, over the whole run (every tx, ours or not).
    let mut seen: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    let mut failed: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    // Failed tries to read the next block with its results (they lag the block by a moment).
    let mut retries = 0u32;
    let mut windows = match &args.windows {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}", p.display()))?,
        ),
        None => None,
    };
    let (mut win_start, mut win_lat) = (Instant::now(), Vec::new());
    let mut drain_until: Option<Instant> = None;
    // The height at which the drain last counted the accepted nonces still without a success.
    let mut drained_at: Option<u64> = None;
    loop {
        if drain_until.is_none() && start.elapsed() >= window.1 {
            stop.store(true, Ordering::Relaxed);
            permits.add_permits(n_workers);
            drain_until = Some(Instant::now() + Duration::from_secs(args.drain));
        }
        if let Some(until) = drain_until {
            // Done when every worker has stopped and every accepted (signer, nonce) has a tx that
            // succeeded in a block, or the drain time is up. (Counted again only after a new
            // block: once the workers have stopped, nothing else changes the count.)
            let mut done = Instant::now() >= until;
            if !done && drained_at != Some(height) && workers.iter().all(|w| w.is_finished()) {
                drained_at = Some(height);
                done = unfilled(&*accepted.lock().await, &*maybe.lock().await, &seen) == 0;
            }
            if done {
                break;
            }
        }
        let latest = client.status().await?.sync_info.latest_block_height.value();
        while height < latest {
            let h = tendermint::block::Height::try_from(height + 1)?;
            let (block, results) = match tokio::try_join!(client.block(h), client.block_results(h))
            {
                Ok((b, r)) if r.txs_results.as_ref().map_or(0, Vec::len) == b.block.data.len() => {
                    (b, r.txs_results.unwrap_or_default())
                }
                // The node stores a block before it executes it: its results may not be there
                // yet. Try again at the next poll, for a while.
                other => {
                    retries += 1;
                    if retries > 200 {
                        match other {
                            Err(e) => bail!("block {h} and its results: {e}"),
                            Ok(_) => bail!("block {h}: not one result per tx"),
                        }
                    }
                    break;
                }
            };
            retries = 0;
            height += 1;
            let now = Instant::now();
            let in_window = start.elapsed() >= window.0 && drain_until.is_none();
            let mut sent = sent.lock().await;
            for (tx, result) in block.block.data.iter().zip(&results) {
                let hash = openssl::sha::sha256(tx);
                let ok = result.code.is_ok();
                let tally = if ok { &mut seen } else { &mut failed };
                *tally.entry(hash).or_default() += 1;
                // Out of the mempool either way: its permit comes back.
                if let Some(t) = sent.remove(&hash) {
                    permits.add_permits(1);
                    if ok {
                        let ms = now.duration_since(t).as_secs_f64() * 1000.0;
                        win_lat.push(ms);
                        if in_window {
                            committed += 1;
                            latencies.push(ms);
                        }
                    }
                }
            }
        }
        if win_start.elapsed() >= Duration::from_secs(5) {
            if let Some(f) = windows.as_mut() {
                win_lat.sort_by(|a, b| a.total_cmp(b));
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs_f64();
                writeln!(
                    f,
                    "{unix:.1},{},{:.0},{:.0}",
                    win_lat.len(),
                    percentile(&win_lat, 0.5),
                    percentile(&win_lat, 0.99)
                )?;
            }
            (win_start, win_lat) = (Instant::now(), Vec::new());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in workers {
        w.await??;
    }
    let check = exactly_once(
        &args,
        &signers,
        &first_nonce,
        &initial,
        &Outcome {
            accepted: &accepted.lock().await.clone(),
            maybe: &maybe.lock().await.clone(),
            seen: &seen,
            failed: &failed,
        },
    )
    .await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| percentile(&latencies, p);
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
            "target_tx_per_s": args.rate,
            "exactly_once": check,
        })
    );
    Ok(())
}

type Slots = BTreeMap<[u8; 32], (usize, u64)>;

/// What the run saw: the txs CheckTx accepted and the "maybe" txs (hash → (signer, nonce)), and
/// how often each tx succeeded in a block and failed in one.
struct Outcome<'a> {
    accepted: &'a Slots,
    maybe: &'a Slots,
    seen: &'a BTreeMap<[u8; 32], u32>,
    failed: &'a BTreeMap<[u8; 32], u32>,
}

/// Our txs, accepted or maybe, by hash (a hash in both is accepted).
fn ours(accepted: &Slots, maybe: &Slots) -> Slots {
    maybe
        .iter()
        .chain(accepted)
        .map(|(h, s)| (*h, *s))
        .collect()
}

/// How many accepted (signer, nonce) have no tx of ours that succeeded in a block yet.
fn unfilled(accepted: &Slots, maybe: &Slots, seen: &BTreeMap<[u8; 32], u32>) -> usize {
    let filled: std::collections::BTreeSet<(usize, u64)> = ours(accepted, maybe)
        .into_iter()
        .filter(|(h, _)| seen.contains_key(h))
        .map(|(_, s)| s)
        .collect();
    let wanted: std::collections::BTreeSet<&(usize, u64)> = accepted.values().collect();
    wanted.into_iter().filter(|s| !filled.contains(s)).count()
}

/// The exactly-once check: every accepted (signer, nonce) has exactly one tx that succeeded in a
/// block, each successful tx is found by hash in another node's tx index, and each signer's nonce
/// and balance are where its successful transfers put them.
async fn exactly_once(
    args: &Args,
    signers: &[Signer],
    first_nonce: &[u64],
    initial: &[(u128, u64)],
    o: &Outcome<'_>,
) -> anyhow::Result<serde_json::Value> {
    // Successful txs per signer: what its nonce and balance moved by.
    let mut per_signer = vec![0u64; signers.len().max(1)];
    let (mut committed, mut maybe_committed, mut failed_in_block) = (0u64, 0u64, 0u64);
    // Successful txs per (signer, nonce): two would be a double spend (the nonce rule forbids it).
    let mut slots: BTreeMap<(usize, u64), u32> = BTreeMap::new();
    let mut committed_hashes = Vec::new();
    for (h, (w, nonce)) in ours(o.accepted, o.maybe) {
        failed_in_block += u64::from(o.failed.get(&h).copied().unwrap_or(0));
        let n = o.seen.get(&h).copied().unwrap_or(0);
        if n == 0 {
            continue;
        }
        committed += 1;
        if !o.accepted.contains_key(&h) {
            maybe_committed += 1;
        }
        committed_hashes.push(h);
        *slots.entry((w, nonce)).or_default() += n;
        if let Some(c) = per_signer.get_mut(w) {
            *c += u64::from(n);
        }
    }
    let duplicates: u64 = slots.values().map(|n| u64::from(n - 1)).sum();
    // An accepted tx that never succeeded in a block (evicted from the mempools, or failed in a
    // block) is lost, unless its signer re-sent another tx with the same nonce that did succeed
    // (the client filled the gap, as any client does): that one is "replaced", not lost.
    let (mut lost, mut replaced) = (0u64, 0u64);
    for (h, slot) in o.accepted {
        if !o.seen.contains_key(h) {
            if slots.contains_key(slot) {
                replaced += 1;
            } else {
                lost += 1;
            }
        }
    }
    // The tx index of the last node given (another node than the watcher's when several).
    let index = HttpClient::new(args.rpcs.last().map_or("", String::as_str))?;
    // That node indexes a block after committing it and may be a block behind the watcher's:
    // the txs not found are asked again, for up to 20 s.
    let mut missing = committed_hashes;
    for attempt in 0..20 {
        if missing.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut still = Vec::new();
        for chunk in missing.chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for h in chunk {
                let (index, h) = (index.clone(), *h);
                let hash = tendermint::Hash::from_bytes(tendermint::hash::Algorithm::Sha256, &h)?;
                set.spawn(async move { (h, index.tx(hash, false).await) });
            }
            while let Some(r) = set.join_next().await {
                let (h, r) = r?;
                if !r.is_ok_and(|r| r.tx_result.code.is_ok()) {
                    still.push(h);
                }
            }
        }
        missing = still;
    }
    let indexed = committed - missing.len() as u64;
    let (mut nonce_ok, mut balance_ok) = (true, true);
    if args.mode == "nrc" {
        let rpc = HttpClient::new(args.rpcs[0].as_str())?;
        let n = signers.len();
        for (i, s) in signers.iter().enumerate() {
            let (balance, nonce) = account(&rpc, s).await?;
            if nonce != first_nonce[i] + per_signer[i] {
                nonce_ok = false;
                eprintln!(
                    "nonce of signer {i}: {nonce}, expected {} + {}",
                    first_nonce[i], per_signer[i]
                );
            }
            // Each transfer moves 1 NRC to the next signer in the ring and pays a 1 NRC fee.
            let expected = (initial[i].0 + u128::from(per_signer[(i + n - 1) % n]))
                .checked_sub(2 * u128::from(per_signer[i]));
            if expected != Some(balance) {
                balance_ok = false;
                eprintln!("balance of signer {i}: {balance}, expected {expected:?}");
            }
        }
    }
    let ok = lost == 0 && duplicates == 0 && indexed == committed && nonce_ok && balance_ok;
    eprintln!(
        "exactly-once: accepted {}, committed {committed}, duplicates {duplicates}, lost {lost}, \
         replaced {replaced}, failed in a block {failed_in_block}, committed after a failed \
         broadcast {maybe_committed}, found in the tx index {indexed}, nonces {}, balances {}: {}",
        o.accepted.len(),
        if nonce_ok { "ok" } else { "WRONG" },
        if balance_ok { "ok" } else { "WRONG" },
        if ok { "ok" } else { "FAILED" }
    );
    Ok(serde_json::json!({
        "ok": ok,
        "accepted": o.accepted.len(),
        "committed": committed,
        "duplicates": duplicates,
        "lost": lost,
        "replaced": replaced,
        "failed_in_block": failed_in_block,
        "maybe_committed": maybe_committed,
        "indexed": indexed,
        "nonces_ok": nonce_ok,
        "balances_ok": balance_ok,
    }))
}
