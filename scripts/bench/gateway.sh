#!/usr/bin/env bash
# Gateway benchmark on the 4-validator local network with the org gateways (mTLS):
# Broadcast (SYNC) requests/s and p99 with signed NRC transfers from the 15 dev members, and blob
# upload/download MB/s of a 1 GiB file through one gateway (client and gateway on this machine),
# each as a ratio to `sha256sum` of the same file measured in the same run.
# Last line: one JSON object with ratio_upload, ratio_download, broadcast_per_s, p99_ms.
# Usage: scripts/bench/gateway.sh [SECONDS] [FILE_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-15}
mib=${2:-1024}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --release -p ndctl -p neurodata-abci -p neurodata-gateway --bins --example gateway_bench
export NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
ndctl="$CARGO_TARGET_DIR/release/ndctl"
work=$(mktemp -d /tmp/ndgwb.XXXX)
trap '"$ndctl" devnet down --dir "$work/net" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== ${mib} MiB random file; sha256sum of it (page cache warm), the baseline" >&2
head -c "$((mib << 20))" /dev/urandom > "$work/blob.bin"
sha256sum "$work/blob.bin" >/dev/null
t0=$(date +%s.%N); sha256sum "$work/blob.bin" >/dev/null; t1=$(date +%s.%N)
sha_mb_s=$(python3 -c "print(round($mib * 1.048576 / ($t1 - $t0)))")
echo "sha256sum: $sha_mb_s MB/s" >&2

echo "== 4 validators + gateways" >&2
"$ndctl" devnet up --dir "$work/net" --base-port 28200 --gateways \
  --abci "$CARGO_TARGET_DIR/release/neurodata-abci" \
  --gateway-bin "$CARGO_TARGET_DIR/release/neurodata-gateway" >&2
out=$("$CARGO_TARGET_DIR/release/examples/gateway_bench" --devnet "$work/net" \
  --gateway https://127.0.0.1:28208 --seconds "$seconds" --file "$work/blob.bin")
echo "$out" | head -n -1 >&2
python3 - "$(echo "$out" | tail -n 1)" "$sha_mb_s" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); sha = float(sys.argv[2])
r["sha256sum_mb_s"] = sha
r["ratio_upload"] = round(r["upload_mb_s"] / sha, 3)
r["ratio_download"] = round(r["download_mb_s"] / sha, 3)
print(json.dumps(r))
PY
