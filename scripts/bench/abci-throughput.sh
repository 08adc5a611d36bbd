#!/usr/bin/env bash
# FinalizeBlock throughput for blocks of 1,000 signed P-256 transfers (single-threaded), as a ratio
# to `openssl speed ecdsap256` verify/s measured in the same run; the same with the CheckTx
# signature cache warm; and Commit latency with 10^5 and 10^6 accounts.
# Last line: one JSON object. Usage: scripts/bench/abci-throughput.sh [--accounts N] [--blocks N]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --release -p neurodata-abci --example abci_throughput

echo "== signature-check limit: openssl speed -seconds 3 ecdsap256 (one core)" >&2
speed=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E 'nistp256' | tail -n 1)
limit=$(echo "$speed" | awk '{print $NF}')
echo "$speed" >&2

echo "== app: taskset to one core, blocks of 1000 transfers" >&2
pin=""
command -v taskset >/dev/null 2>&1 && pin="taskset -c 0"
out=$($pin "$CARGO_TARGET_DIR/release/examples/abci_throughput" --block 1000 "$@")
echo "$out" | head -n -1 >&2
json=$(echo "$out" | tail -n 1)
python3 - "$json" "$limit" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); limit = float(sys.argv[2])
r["limit_verify_per_s"] = round(limit)
r["ratio"] = round(r["tx_per_s"] / limit, 3)
r["cached_ratio"] = round(r["cached_tx_per_s"] / limit, 3)
print(json.dumps(r))
PY
