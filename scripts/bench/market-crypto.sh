#!/usr/bin/env bash
# Market crypto benchmark: upload (encrypt, hash, store in the gateway's blob store) and download
# (fetch with the CID check, decrypt, verify) MB/s of a synthetic CSV (1 GiB by default), each as
# a ratio to the single-core limit measured in the same run: the slower of
# `openssl speed -evp aes-256-gcm` and `openssl speed -evp sha256` at 16 KiB blocks.
# Last line: one JSON object with ratio_upload, ratio_download, peak_rss_mib.
# Usage: scripts/bench/market-crypto.sh [FILE_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-1024}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --release -p neurodata-gateway --example market_crypto
work=$(mktemp -d /tmp/ndmc.XXXX)
trap 'rm -rf "$work"' EXIT

echo "== ${mib} MiB synthetic heart-patient CSV" >&2
rows=$(( (mib << 20) / 40 ))
scripts/heart-csv.py --rows "$rows" --seed 1 | head -c "$((mib << 20))" > "$work/data.csv"
cat "$work/data.csv" > /dev/null

echo "== single-core limit: openssl speed, 16 KiB blocks" >&2
speed() { # bytes/s of `openssl speed -evp $1` at 16384-byte blocks (its figures are in 1000s of bytes/s)
  openssl speed -seconds 3 -bytes 16384 -evp "$1" 2>/dev/null | awk -v alg="$1" 'tolower($0) ~ tolower(alg) && NF >= 2 {v=$NF} END {sub(/k$/, "", v); print v * 1000}'
}
aes=$(speed aes-256-gcm)
sha=$(speed sha256)
echo "aes-256-gcm $(python3 -c "print(round($aes/1e6))") MB/s, sha256 $(python3 -c "print(round($sha/1e6))") MB/s" >&2

out=$("$CARGO_TARGET_DIR/release/examples/market_crypto" "$work/data.csv" "$work")
python3 - "$out" "$aes" "$sha" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); aes = float(sys.argv[2]) / 1e6; sha = float(sys.argv[3]) / 1e6
limit = min(aes, sha)
r["aes_256_gcm_mb_s"] = round(aes); r["sha256_mb_s"] = round(sha); r["limit_mb_s"] = round(limit)
r["ratio_upload"] = round(r["upload_mb_s"] / limit, 3)
r["ratio_download"] = round(r["download_mb_s"] / limit, 3)
print(json.dumps(r))
PY
