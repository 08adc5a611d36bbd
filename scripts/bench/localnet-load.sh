#!/usr/bin/env bash
# Committed tx/s and p50/p99 commit latency of signed NRC transfers on the 4-validator local
# network, and in the same run the same figures for CometBFT's built-in kvstore app on the same
# network shape (same binary, same config, same machine). The load generator is our own
# (cli/examples/localnet_load.rs).
# Last line: one JSON object with ratio, tx_per_s, kvstore_tx_per_s, p99_ms.
# Usage: scripts/bench/localnet-load.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --release -p ndctl -p neurodata-abci --bins --example localnet_load
export NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
ndctl="$CARGO_TARGET_DIR/release/ndctl"
load="$CARGO_TARGET_DIR/release/examples/localnet_load"
work=$(mktemp -d /tmp/ndload.XXXX)
trap '"$ndctl" devnet down --dir "$work/ours" >/dev/null 2>&1 || true; "$ndctl" devnet down --dir "$work/kv" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

rpcs() { echo "http://127.0.0.1:$(( $1 + 7 )),http://127.0.0.1:$(( $1 + 17 )),http://127.0.0.1:$(( $1 + 27 )),http://127.0.0.1:$(( $1 + 37 ))"; }

echo "== NeuroData app, 4 validators" >&2
"$ndctl" devnet up --dir "$work/ours" --base-port 28000 --abci "$CARGO_TARGET_DIR/release/neurodata-abci" >&2
ours=$("$load" --mode nrc --devnet "$work/ours" --rpc "$(rpcs 28000)" --seconds "$seconds")
"$ndctl" devnet down --dir "$work/ours" >&2
echo "$ours" | head -n -1 >&2

echo "== CometBFT kvstore, 4 validators, same network shape" >&2
"$ndctl" devnet up --dir "$work/kv" --base-port 28100 --builtin-app kvstore >&2
kv=$("$load" --mode kvstore --rpc "$(rpcs 28100)" --seconds "$seconds")
"$ndctl" devnet down --dir "$work/kv" >&2
echo "$kv" | head -n -1 >&2

python3 - "$(echo "$ours" | tail -n 1)" "$(echo "$kv" | tail -n 1)" <<'PY'
import json, sys
o = json.loads(sys.argv[1]); k = json.loads(sys.argv[2])
print(json.dumps({
    "ratio": round(o["tx_per_s"] / k["tx_per_s"], 3) if k["tx_per_s"] else None,
    "tx_per_s": o["tx_per_s"], "p50_ms": o["p50_ms"], "p99_ms": o["p99_ms"],
    "kvstore_tx_per_s": k["tx_per_s"], "kvstore_p50_ms": k["p50_ms"], "kvstore_p99_ms": k["p99_ms"],
}))
PY
