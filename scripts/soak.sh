#!/usr/bin/env bash
# Soak: mixed traffic on the 4-validator devnet with its 3 org gateways for MINUTES (default 30)
# at about 70% of the capacity measured first, watching that nothing drifts.
#  1. capacity probe: 20 s of signed NRC transfers as fast as the mempool takes them
#     (cli/examples/localnet_load.rs, by the trainer members of the 3 orgs: the validator members
#     earn block rewards, which would blur the balance check);
#  2. the soak: the same transfers paced at 70% of the probe's committed tx/s, and beside them a
#     dataset sale every ~30 s (medlab's provider lists a dataset, healthtech's and then
#     datacorp's buyer buy it, medlab's gateway delivers the key, the buyer downloads, decrypts,
#     checks and confirms; then a new listing, as a buyer buys a dataset once) and a governance proposal every ~2 minutes
#     (medlab's admin proposes minting 1 NRC into the treasury, healthtech's and datacorp's admins
#     approve); the sales and governance use the buyers, providers and admins, the transfers the
#     trainers, so no two clients race for a nonce;
#  3. a sampler every 5 s: resident memory (VmRSS) of each process in the devnet's pids.json
#     (cometbft and neurodata-abci x4, gateways x3), disk use of each node's directory, height,
#     each app's store caches (its "store memory" log line: RocksDB's block cache, which the
#     memtables and index and filter blocks are charged to, and the tree node cache; both
#     bounded), and node0's CometBFT metrics (block interval, FinalizeBlock and Commit timings,
#     mempool size); the load generator writes each 5 s window's committed txs and p50/p99
#     commit latency;
#  4. at the end the exactly-once check (every tx CheckTx accepted is in exactly one block and in
#     another node's tx index, every signer's nonce and balance are what the accepted transfers
#     imply; see the example) and the flatness verdict, last third against first third of the
#     run after a warm-up (the first 10%, at least 20 s):
#       RSS: each process's mean grows by at most 25% (ratio <= 1.25); for an app, its RSS
#       outside the store's caches (which fill up to their bound by design);
#       p99: the median of the windows' p99 grows by at most 50% plus 100 ms;
#       disk: the growth rate (MB/min) grows by at most 50% plus 1 MB/min (the chain's data grows
#       with its blocks; flat means the rate does not climb).
# Writes samples.csv, windows.csv, ops.log (each sale and proposal: ok, or FAILED and why) and, with matplotlib (installed into a venv in the cache when pip
# can reach PyPI, unless NEURODATA_SOAK_INSTALL=0; skipped with a message otherwise), rss.png, abci-memory.png, p99.png, blocks.png and disk.png into
# NEURODATA_SOAK_OUT (default docs/soak). Last line: one JSON object.
# Exits non-zero when the exactly-once check fails; the flatness verdict fails the run only with
# NEURODATA_SOAK_STRICT=1 (a 2-minute run is too short to judge drift: CI reports it only).
# Release builds unless NEURODATA_SOAK_PROFILE=dev (debug builds, as CI's test.sh has built).
# Usage: scripts/soak.sh [MINUTES] [BASE_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
base=${2:-29500}
profile=${NEURODATA_SOAK_PROFILE:-release}
out_dir=${NEURODATA_SOAK_OUT:-$PWD/docs/soak}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
if [ -n "${NEURODATA_SOAK_BIN:-}" ]; then
  built=$NEURODATA_SOAK_BIN # prebuilt: ndctl, neurodata-abci, neurodata-gateway, examples/localnet_load
elif [ "$profile" = dev ]; then
  cargo build -q -p ndctl -p neurodata-abci -p neurodata-gateway --bins --example localnet_load
  built=$CARGO_TARGET_DIR/debug
else
  cargo build -q --release -p ndctl -p neurodata-abci -p neurodata-gateway --bins --example localnet_load
  built=$CARGO_TARGET_DIR/release
fi
NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
export NEURODATA_COMETBFT

work=$(mktemp -d /tmp/ndsoak.XXXX)
bg=()
cleanup() {
  local rc=$?
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  "$work/bin/ndctl" devnet down --dir "$work/net" >/dev/null 2>&1 || true
  if [ "$rc" = 0 ]; then
    rm -rf "$work"
  else
    echo "soak failed (exit $rc): its devnet, logs and samples are kept in $work" >&2
  fi
}
trap cleanup EXIT
# The shared build cache may be rebuilt by another checkout while this runs: run private copies.
mkdir -p "$work/bin" "$out_dir"
cp "$built/ndctl" "$built/neurodata-abci" "$built/neurodata-gateway" "$work/bin/"
cp "$built/examples/localnet_load" "$work/bin/" 2>/dev/null || cp "$built/localnet_load" "$work/bin/"
ndctl=$work/bin/ndctl
export NEURODATA_ABCI_BIN=$work/bin/neurodata-abci NEURODATA_GATEWAY_BIN=$work/bin/neurodata-gateway
net=$work/net
C=$net/consortium
rpcs="http://127.0.0.1:$((base + 7)),http://127.0.0.1:$((base + 17)),http://127.0.0.1:$((base + 27)),http://127.0.0.1:$((base + 37))"
export NEURODATA_DEVNET=$net NEURODATA_TRUST_DIR=$net/trusted
# The apps log their store's memory every 5 s (the sampler's pace), so that the report can tell
# the store's bounded caches filling from growth outside them.
export NEURODATA_MEMORY_LOG_SECS=5

echo "== devnet: 4 validators, gateways of medlab, healthtech, datacorp (base port $base, $profile build)" >&2
"$ndctl" devnet up --dir "$net" --base-port "$base" --gateways >&2

load() { "$work/bin/localnet_load" --mode nrc --devnet "$net" --rpc "$rpcs" --roles trainer "$@"; }

echo "== capacity probe: 20 s of transfers as fast as the mempool takes them" >&2
probe=$(load --seconds 20 --warmup 3 --drain 30)
echo "$probe" | head -n -1 >&2
probe=$(echo "$probe" | tail -n 1)
capacity=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tx_per_s"])' "$probe")
rate=$(python3 -c 'import sys; print(max(1.0, round(0.7 * float(sys.argv[1]), 1)))' "$capacity")
echo "capacity $capacity tx/s: the soak sends $rate tx/s" >&2

# Sampler: one CSV line every 5 s.
export SOAK_RPC0="http://127.0.0.1:$((base + 7))" SOAK_METRICS0="http://127.0.0.1:$((base + 4))/metrics"
python3 - "$net" "$work/samples.csv" <<'PY' &
import json, os, subprocess, sys, time, urllib.request
net, out = sys.argv[1], sys.argv[2]
pids = json.load(open(os.path.join(net, "pids.json")))
procs = []
for i, comet, app in pids["nodes"]:
    procs += [(f"cometbft{i}", comet), (f"abci{i}", app)]
procs += [(f"gateway{i}", p) for i, p in pids.get("gateways", [])]
nodes = sorted(d for d in os.listdir(net) if d.startswith("node"))
def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
def du_kb(path):
    r = subprocess.run(["du", "-sk", path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.stdout else 0
def store_kb(node):
    """The app's last "store memory" log line: block cache (with memtables, index and filter
    blocks) plus tree node cache, in KiB; 0 before the first."""
    try:
        with open(os.path.join(net, node, "abci.log"), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return 0
    for line in reversed(tail.splitlines()):
        if "store memory" in line:
            kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
            return int(kv.get("cache_kib", 0)) + int(kv.get("tree_kib", 0))
    return 0
METRICS = ["mempool_txs", "block_interval_s_sum", "block_interval_s_count", "finalize_block_s_sum",
           "finalize_block_s_count", "commit_s_sum", "commit_s_count"]
def metrics():
    """node0's CometBFT metrics: mempool size, and the running sums and counts of the block
    interval and of FinalizeBlock and Commit as CometBFT times them (the report takes deltas)."""
    m = dict.fromkeys(METRICS, "")
    try:
        with urllib.request.urlopen(os.environ["SOAK_METRICS0"], timeout=3) as r:
            text = r.read().decode()
    except Exception:
        return [m[k] for k in METRICS]
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        base, _, labels = name.partition("{")
        if base == "cometbft_mempool_size":
            m["mempool_txs"] = value
        elif base.startswith("cometbft_consensus_block_interval_seconds_"):
            m["block_interval_s_" + base.rsplit("_", 1)[1]] = value
        elif base.startswith("cometbft_abci_connection_method_timing_seconds_") and base.rsplit("_", 1)[1] in ("sum", "count"):
            for method in ("finalize_block", "commit"):
                if f'method="{method}"' in labels:
                    m[f"{method}_s_" + base.rsplit("_", 1)[1]] = value
    return [m[k] for k in METRICS]
def height():
    try:
        with urllib.request.urlopen(rpc + "/status", timeout=3) as r:
            return int(json.load(r)["result"]["sync_info"]["latest_block_height"])
    except Exception:
        return -1
rpc = os.environ["SOAK_RPC0"]
with open(out, "w") as f:
    f.write(",".join(["unix", "height"] + [f"rss_kb_{n}" for n, _ in procs] + [f"disk_kb_{n}" for n in nodes] + [f"store_kb_abci{n[4:]}" for n in nodes] + METRICS) + "\n")
    while True:
        row = [f"{time.time():.1f}", str(height())] + [str(rss_kb(p)) for _, p in procs] + [str(du_kb(os.path.join(net, n))) for n in nodes] + [str(store_kb(n)) for n in nodes] + metrics()
        f.write(",".join(row) + "\n")
        f.flush()
        time.sleep(5)
PY
bg+=($!)

# Sales and governance, in the background, each outcome one line of $work/ops.log.
as() { # as ORG ROLE: signer flags and that org's gateway
  local gw=$((base + 8))
  case $1 in healthtech) gw=$((base + 18)) ;; datacorp) gw=$((base + 28)) ;; esac
  echo "--cert $C/$1/$2.pem --key $C/$1/$2.key --gateway https://127.0.0.1:$gw --gateway-ca $C/$1/ca.pem"
}
ops() {
  local log=$work/ops.log data=$work/data
  mkdir -p "$data"
  # A buyer buys a dataset once: each round lists a fresh dataset (a new key, so a new ciphertext)
  # that healthtech's and datacorp's buyers then both buy.
  local n=0 proposal=0 dataset="" buyer purchase out
  local next_gov=$((SECONDS + 20))
  while true; do
    n=$((n + 1))
    buyer=datacorp
    if [ $((n % 2)) = 1 ]; then
      buyer=healthtech
      scripts/heart-csv.py --rows 200 --seed "$n" >"$data/heart.csv"
      if out=$("$ndctl" dataset upload $(as medlab provider) --file "$data/heart.csv" --title "Soak heart $n" --price 100 2>&1) &&
        dataset=$(echo "$out" | sed -n 's/^listed dataset \([0-9]*\) .*/\1/p') && [ -n "$dataset" ]; then
        echo "upload ok" >>"$log"
      else
        echo "upload FAILED $(echo "$out" | tail -n 1)" >>"$log"
      fi
    fi
    # The buyer's gateway's node may be a block behind the provider's: a few tries.
    for _ in 1 2 3; do
      out=$("$ndctl" dataset buy $(as "$buyer" buyer) --dataset "$dataset" 2>&1) && break
      sleep 2
    done
    if [ -n "$dataset" ] &&
      purchase=$(echo "$out" | sed -n 's/^purchase \([0-9]*\) of dataset.*/\1/p') && [ -n "$purchase" ] &&
      out=$("$ndctl" dataset download $(as "$buyer" buyer) --purchase "$purchase" --out "$data/bought.csv" --confirm 2>&1) &&
      cmp -s "$data/heart.csv" "$data/bought.csv"; then
      echo "sale ok" >>"$log"
    else
      echo "sale FAILED $(echo "$out" | tail -n 1)" >>"$log"
    fi
    rm -f "$data/bought.csv"
    if [ "$SECONDS" -ge "$next_gov" ]; then
      proposal=$((proposal + 1))
      if out=$("$ndctl" tx $(as medlab admin) propose mint --amount 1 2>&1) &&
        out=$("$ndctl" tx $(as healthtech admin) vote --proposal "$proposal" 2>&1) &&
        out=$("$ndctl" tx $(as datacorp admin) vote --proposal "$proposal" 2>&1); then
        echo "governance ok" >>"$log"
      else
        echo "governance FAILED $(echo "$out" | tail -n 1)" >>"$log"
      fi
      next_gov=$((SECONDS + 120))
    fi
    sleep 30
  done
}
ops &
bg+=($!)

echo "== soak: $minutes min of transfers at $rate tx/s, a sale every ~30 s, governance every ~2 min" >&2
soak=$(load --seconds $((minutes * 60)) --warmup 0 --drain 60 --rate "$rate" --windows "$work/windows.csv")
echo "$soak" | head -n -1 >&2
soak=$(echo "$soak" | tail -n 1)
for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
bg=()
touch "$work/ops.log"
cp "$work/samples.csv" "$work/windows.csv" "$work/ops.log" "$out_dir/"
grep FAILED "$work/ops.log" >&2 || true

# Plots with matplotlib, from a venv in the cache (installed once when pip can reach PyPI).
py=python3
venv=$HOME/.cache/neurodata/soak-venv
if [ "${NEURODATA_SOAK_INSTALL:-1}" = 1 ] && ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  { python3 -m venv "$venv" && timeout 180 "$venv/bin/pip" install -q --timeout 15 --retries 1 matplotlib; } >/dev/null 2>&1 ||
    echo "matplotlib could not be installed (no PyPI?)" >&2
fi
"$venv/bin/python" -c 'import matplotlib' 2>/dev/null && py=$venv/bin/python

cat >"$work/report.py" <<'PY'
import csv, json, os, statistics, sys
out, probe, soak, ops_log, minutes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], float(sys.argv[5])
rows = list(csv.DictReader(open(os.path.join(out, "samples.csv"))))
wins = [r for r in csv.reader(open(os.path.join(out, "windows.csv"))) if r]
t0 = float(rows[0]["unix"]) if rows else 0.0
span = (float(rows[-1]["unix"]) - t0) if rows else 0.0
warm = max(20.0, 0.1 * span)
def thirds(points):
    """First and last third of (t, v) points after the warm-up."""
    pts = [(t, v) for t, v in points if t - t0 >= warm]
    k = len(pts) // 3
    return (pts[:k], pts[-k:]) if k else ([], [])
def mean(xs):
    return statistics.fmean(xs) if xs else 0.0
def growth(points):
    a, b = thirds(points)
    return round(mean([v for _, v in b]) / mean([v for _, v in a]), 3) if a and mean([v for _, v in a]) else None
reasons, rss_ratio, outside_ratio, store_mib = [], {}, {}, {}
for col in [c for c in rows[0] if c.startswith("rss_kb_")] if rows else []:
    name = col[7:]
    ratio = growth([(float(r["unix"]), float(r[col])) for r in rows])
    rss_ratio[name] = ratio
    # An app's RSS includes its store's caches, which fill up to their bound (block cache and
    # tree node cache, logged by the app): growth is judged on what lies outside them.
    store = f"store_kb_{name}"
    if store in rows[0]:
        outside_ratio[name] = growth([(float(r["unix"]), float(r[col]) - float(r[store])) for r in rows if float(r[store]) > 0])
        store_mib[name] = round(max(float(r[store]) for r in rows) / 1024, 1)
        judged_ratio = outside_ratio[name]
    else:
        judged_ratio = ratio
    if judged_ratio is not None and judged_ratio > 1.25:
        what = "RSS outside the store's caches" if store in rows[0] else "RSS"
        reasons.append(f"{what} of {name} grew x{judged_ratio}")
a, b = thirds([(float(w[0]), float(w[3])) for w in wins if int(w[1]) > 0])
p99_first, p99_last = (round(statistics.median([v for _, v in x])) if x else None for x in (a, b))
if p99_first is not None and p99_last > 1.5 * p99_first + 100:
    reasons.append(f"p99 grew from {p99_first} to {p99_last} ms")
disk = [(float(r["unix"]), sum(float(r[c]) for c in r if c.startswith("disk_kb_")) / 1024) for r in rows]
a, b = thirds(disk)
def rate(x):
    return (x[-1][1] - x[0][1]) / ((x[-1][0] - x[0][0]) / 60) if len(x) > 1 and x[-1][0] > x[0][0] else None
disk_first, disk_last = rate(a), rate(b)
if disk_first is not None and disk_last > 1.5 * max(disk_first, 0) + 1:
    reasons.append(f"disk growth rose from {disk_first:.2f} to {disk_last:.2f} MB/min")
total_rate = rate(disk)
# node0's block timing per sampling interval, from CometBFT's cumulative metrics: where the
# latency goes when it moves (the block interval, FinalizeBlock, Commit, the mempool's backlog).
def per_interval(kind):
    pts = []
    for r0, r1 in zip(rows, rows[1:]):
        try:
            ds = float(r1[kind + "_sum"]) - float(r0[kind + "_sum"])
            dc = float(r1[kind + "_count"]) - float(r0[kind + "_count"])
        except (KeyError, ValueError):
            continue
        if dc > 0:
            pts.append((float(r1["unix"]), 1000 * ds / dc))
    return pts
timing = {k: per_interval(k) for k in ("block_interval_s", "finalize_block_s", "commit_s")}
timing["mempool_txs"] = [(float(r["unix"]), float(r["mempool_txs"])) for r in rows if r.get("mempool_txs")]
def first_last(pts):
    a, b = thirds(pts)
    return [round(statistics.median([v for _, v in x]), 1) if x else None for x in (a, b)]
timing_first_last = {k.replace("_s", "_ms") if k != "mempool_txs" else k: first_last(v) for k, v in timing.items()}
judged = bool(a and b)
verdict = ("flat" if not reasons else "growing: " + "; ".join(reasons)) if judged else "too short to judge"
ops = [l.split()[:2] for l in open(ops_log)]
count = lambda kind, res: sum(1 for o in ops if o == [kind, res])
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ts = [(float(r["unix"]) - t0) / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for col in [c for c in rows[0] if c.startswith("rss_kb_")]:
        ax.plot(ts, [float(r[col]) / 1024 for r in rows], label=col[7:])
    ax.set(xlabel="minutes", ylabel="RSS (MiB)", title="resident memory per process")
    ax.legend(fontsize=7, ncol=4); fig.tight_layout(); fig.savefig(os.path.join(out, "rss.png"), dpi=90)
    stores = [c for c in rows[0] if c.startswith("store_kb_")]
    if stores:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for col in stores:
            name = col[9:]
            line, = ax.plot(ts, [float(r["rss_kb_" + name]) / 1024 for r in rows], label=f"{name} RSS")
            ax.plot(ts, [float(r[col]) / 1024 for r in rows], ls="--", color=line.get_color(), label=f"{name} store caches")
            ax.plot(ts, [(float(r["rss_kb_" + name]) - float(r[col])) / 1024 for r in rows], ls=":", color=line.get_color(), label=f"{name} outside them")
        ax.set(xlabel="minutes", ylabel="MiB", title="neurodata-abci: RSS, the store's bounded caches, and the rest")
        ax.legend(fontsize=7, ncol=4); fig.tight_layout(); fig.savefig(os.path.join(out, "abci-memory.png"), dpi=90)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([(float(w[0]) - t0) / 60 for w in wins], [float(w[3]) for w in wins], label="p99")
    ax.plot([(float(w[0]) - t0) / 60 for w in wins], [float(w[2]) for w in wins], label="p50")
    ax.set(xlabel="minutes", ylabel="commit latency (ms)", title="transfer commit latency per 5 s window")
    ax.legend(); fig.tight_layout(); fig.savefig(os.path.join(out, "p99.png"), dpi=90)
    if any(timing.values()):
        fig, ax = plt.subplots(figsize=(9, 4))
        for k, label in (("block_interval_s", "block interval"), ("finalize_block_s", "FinalizeBlock"), ("commit_s", "Commit")):
            ax.plot([(t - t0) / 60 for t, _ in timing[k]], [v for _, v in timing[k]], label=label, lw=0.8)
        ax.set(xlabel="minutes", ylabel="ms (mean per 5 s)", title="node0: block interval and ABCI timings (CometBFT metrics), mempool")
        ax2 = ax.twinx()
        ax2.plot([(t - t0) / 60 for t, _ in timing["mempool_txs"]], [v for _, v in timing["mempool_txs"]], color="grey", lw=0.6, label="mempool txs")
        ax2.set_ylabel("mempool txs")
        ax.legend(loc="upper left", fontsize=7); ax2.legend(loc="upper right", fontsize=7)
        fig.tight_layout(); fig.savefig(os.path.join(out, "blocks.png"), dpi=90)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for col in [c for c in rows[0] if c.startswith("disk_kb_")]:
        ax.plot(ts, [float(r[col]) / 1024 for r in rows], label=col[8:])
    ax.set(xlabel="minutes", ylabel="MB", title="disk use per node directory")
    ax.legend(); fig.tight_layout(); fig.savefig(os.path.join(out, "disk.png"), dpi=90)
    print(f"plots: {out}/rss.png, abci-memory.png, p99.png, blocks.png, disk.png", file=sys.stderr)
except ImportError:
    print("no matplotlib: no plots (figures are in samples.csv and windows.csv)", file=sys.stderr)
e = soak["exactly_once"]
print(json.dumps({
    "minutes": minutes, "capacity_tx_per_s": probe["tx_per_s"],
    "tx_per_s_target": soak["target_tx_per_s"], "tx_per_s": soak["tx_per_s"],
    "accepted": e["accepted"], "committed": e["committed"], "duplicates": e["duplicates"],
    "lost": e["lost"], "replaced": e["replaced"], "indexed": e["indexed"],
    "nonces_ok": e["nonces_ok"], "balances_ok": e["balances_ok"], "exactly_once": e["ok"],
    "probe_exactly_once": probe["exactly_once"]["ok"],
    "sales_ok": count("sale", "ok"), "sales_failed": count("sale", "FAILED"),
    "governance_ok": count("governance", "ok"), "governance_failed": count("governance", "FAILED"),
    "rss_growth": rss_ratio, "abci_rss_outside_store_growth": outside_ratio, "abci_store_caches_mib_max": store_mib,
    "p99_ms_first": p99_first, "p99_ms_last": p99_last,
    "node0_first_last_third": timing_first_last,
    "p50_ms": soak["p50_ms"], "p99_ms": soak["p99_ms"],
    "disk_mb_per_min": round(total_rate, 2) if total_rate is not None else None,
    "disk_mb_per_min_first": round(disk_first, 2) if disk_first is not None else None,
    "disk_mb_per_min_last": round(disk_last, 2) if disk_last is not None else None,
    "verdict": verdict,
}))
PY
summary=$("$py" "$work/report.py" "$out_dir" "$probe" "$soak" "$work/ops.log" "$minutes")
echo "$summary"
if ! python3 -c 'import json,sys; s = json.loads(sys.argv[1]); sys.exit(0 if s["exactly_once"] and s["probe_exactly_once"] else 1)' "$summary"; then
  echo "exactly-once check FAILED: see the load generator's lines above" >&2
  exit 1
fi
if [ "${NEURODATA_SOAK_STRICT:-0}" = 1 ] &&
  ! python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["verdict"] == "flat" else 1)' "$summary"; then
  echo "not flat (NEURODATA_SOAK_STRICT=1)" >&2
  exit 1
fi
