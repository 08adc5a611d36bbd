#!/usr/bin/env bash
# Starts the local consortium network (4 CometBFT validators + 4 NeuroData apps on loopback, and
# the gRPC gateway of each founding org) and runs the demo through the gateways, each member
# calling its own org's gateway over mTLS: admit a new org by governance, issue and revoke a
# certificate, NRC transfers, a query whose Merkle proof is verified against a block header, the
# data marketplace, and a training job the validators re-run and attest on chain.
# Usage: scripts/demo.sh [--keep]   (--keep leaves the network running; stop: ndctl devnet down)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${1:-}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
echo "== building (first run: several minutes; cached afterwards)"
cargo build -q -p ndctl -p neurodata-abci -p neurodata-gateway -p neurodata-trainer -p neurodata-worker
scripts/build-cometbft.sh >/dev/null
ndctl="$CARGO_TARGET_DIR/debug/ndctl"
export NEURODATA_DEVNET=${NEURODATA_DEVNET:-$PWD/devnet}
# The light client's verified blocks are kept with the network it verified.
export NEURODATA_TRUST_DIR=$NEURODATA_DEVNET/trusted
C=$NEURODATA_DEVNET/consortium
# Queries go through medlab's gateway as medlab's admin.
export NEURODATA_GATEWAY=https://127.0.0.1:26608 NEURODATA_GATEWAY_CA=$C/medlab/ca.pem
export NEURODATA_CERT=$C/medlab/admin.pem NEURODATA_KEY=$C/medlab/admin.key

if [ -f "$NEURODATA_DEVNET/devnet.json" ]; then
  "$ndctl" devnet down >/dev/null 2>&1 || true
  rm -rf "$NEURODATA_DEVNET"
fi
cleanup() { [ "$keep" = "--keep" ] || "$ndctl" devnet down; }
trap cleanup EXIT

echo "== 1. local consortium network"
"$ndctl" devnet up --validators 4 --gateways --training

as() { # as ORG ROLE: signer flags, and the gateway of the member's org (genomics has none: medlab's)
  local gw=26608 ca=medlab
  case $1 in healthtech) gw=26618 ca=healthtech ;; datacorp) gw=26628 ca=datacorp ;; esac
  echo "--cert $C/$1/$2.pem --key $C/$1/$2.key --gateway https://127.0.0.1:$gw --gateway-ca $C/$ca/ca.pem"
}
balance() { "$ndctl" query account "$1" | sed -n "s/  balance \([0-9]*\).*/\1/p"; }

echo
echo "== 2. admit a new org (genomics) by governance: medlab proposes, healthtech and datacorp approve"
"$ndctl" ca init --org genomics --name "Genomics Institute" --dir "$C/genomics"
"$ndctl" ca issue --ca-dir "$C/genomics" --name admin --role admin
"$ndctl" ca issue --ca-dir "$C/genomics" --name buyer --role buyer
"$ndctl" tx $(as medlab admin) propose admit-org --org genomics --name "Genomics Institute" --ca "$C/genomics/ca.pem"
"$ndctl" tx $(as healthtech admin) vote --proposal 1
"$ndctl" tx $(as datacorp admin) vote --proposal 1
"$ndctl" query proposal 1
"$ndctl" query orgs

echo
echo "== 3. NRC transfers"
echo "before: medlab/buyer $(balance "$C/medlab/buyer.pem") NRC, genomics/buyer $(balance "$C/genomics/buyer.pem") NRC"
"$ndctl" tx $(as medlab buyer) transfer --to "$C/genomics/buyer.pem" --amount 500
"$ndctl" tx $(as genomics buyer) transfer --to "$C/healthtech/provider.pem" --amount 120
echo "after:  medlab/buyer $(balance "$C/medlab/buyer.pem") NRC, genomics/buyer $(balance "$C/genomics/buyer.pem") NRC (fees: 1 NRC per tx to the reward pool)"

echo
echo "== 4. issue a certificate, use it, revoke it"
"$ndctl" ca issue --ca-dir "$C/medlab" --name intern --role buyer --days 30
"$ndctl" tx $(as medlab buyer) transfer --to "$C/medlab/intern.pem" --amount 50
"$ndctl" tx $(as medlab intern) transfer --to "$C/medlab/provider.pem" --amount 5
"$ndctl" ca revoke $(as medlab admin) "$C/medlab/intern.pem" --reason "internship over"
if out=$("$ndctl" tx $(as medlab intern) transfer --to "$C/medlab/provider.pem" --amount 5 2>&1); then
  echo "ERROR: a revoked certificate could still sign: $out"; exit 1
fi
echo "revoked certificate refused: ${out#error: }"

echo
echo "== 5. a query verified with its Merkle proof against the next block header, whose commit the light client checks from the genesis validators"
"$ndctl" query account "$C/genomics/buyer.pem"
"$ndctl" query supply

echo
echo "== 6. the data marketplace: medlab sells an encrypted heart-patient dataset to healthtech"
work=$NEURODATA_DEVNET/demo-data
mkdir -p "$work"
scripts/heart-csv.py --rows 300 --seed 7 > "$work/heart.csv"
echo "generated $work/heart.csv: $(($(wc -l < "$work/heart.csv") - 1)) synthetic, anonymised patients, sha256 $(sha256sum "$work/heart.csv" | cut -c1-16)..."
echo "before: medlab/provider $(balance "$C/medlab/provider.pem") NRC, healthtech/buyer $(balance "$C/healthtech/buyer.pem") NRC"
# medlab's provider encrypts locally with a fresh key, uploads the ciphertext to medlab's gateway,
# deposits the key in that gateway's keystore and lists the dataset on chain.
"$ndctl" dataset upload $(as medlab provider) --file "$work/heart.csv" --title "Heart patients (synthetic)" --price 2000
"$ndctl" dataset list $(as healthtech buyer) --column chol
# healthtech's buyer pays into escrow; medlab's gateway sees the purchase and delivers the key,
# wrapped to the buyer's certificate key, without anyone at medlab doing anything.
"$ndctl" dataset buy $(as healthtech buyer) --dataset 1
# The buyer waits for the key, unwraps it, checks it against the on-chain commitment, downloads
# the ciphertext from medlab's gateway, decrypts, checks the plaintext hash, and confirms.
"$ndctl" dataset download $(as healthtech buyer) --purchase 1 --out "$work/heart.bought.csv" --confirm
cmp "$work/heart.csv" "$work/heart.bought.csv" && echo "the bought file is byte-identical to the provider's"
echo "after:  medlab/provider $(balance "$C/medlab/provider.pem") NRC (+2000 minus the 2% market fee and its tx fees), healthtech/buyer $(balance "$C/healthtech/buyer.pem") NRC"
"$ndctl" dataset stats $(as medlab provider) --dataset 1
"$ndctl" dataset purchases $(as medlab provider) --org medlab

echo
echo "== 7. healthtech trains a model on the bought data, twice (1 and 2 threads), and checks it"
trainer="$CARGO_TARGET_DIR/debug/trainer"
for t in 1 2; do
  "$trainer" --threads "$t" run --quiet --spec trainer/jobs/heart-mlp.json --data "$work/heart.bought.csv" --out "$work/model-$t" > "$work/result-$t.json"
done
python3 - "$work/result-1.json" "$work/result-2.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
m = a["metrics"]
print(f"model {a['model_sha256'][:16]}... (1 thread) / {b['model_sha256'][:16]}... (2 threads): "
      + ("identical" if a["model_sha256"] == b["model_sha256"] else "DIFFERENT"))
print(f"trace: {a['segments']} segments, Merkle root {a['trace_root'][:16]}...; test accuracy {m['accuracy']:.3f}, ROC AUC {m['roc_auc']:.3f}")
PY
# A validator re-runs every segment from its checkpoint and checks the next checkpoint's digest.
"$trainer" verify --out "$work/model-1" --data "$work/heart.bought.csv" --all | python3 -c "import json,sys; v=json.load(sys.stdin); print(f'verified {len(v[\"verified\"])}/{v[\"segments\"]} segments against root {v[\"trace_root\"][:16]}...')"
"$trainer" eval --out "$work/model-1" --data "$work/heart.bought.csv" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f'ONNX export under tract: {r[\"labels_agree\"]}/{r[\"rows\"]} test rows agree, max difference {r[\"max_scaled_diff\"]:.1e}')"
echo "first predictions (row,label,p_0,p_1):"
head -4 "$work/heart.bought.csv" | "$trainer" predict --model "$work/model-1/model.safetensors" --data /dev/stdin 2>/dev/null | head -4 || true

echo
echo "== 8. Proof-of-Validation: healthtech has the chain train a logistic regression on the data it bought"
# datacorp's worker is drawn, accepts (locking its stake), gets the data key through medlab's
# gateway, trains, uploads its artifacts and posts the result; each validator's verifier re-runs
# the segments the next block's hash gave it and its app commits, then reveals, its verdict in
# vote extensions; more than 2/3 of the power agreeing makes the model version final.
worker_before=$(balance "$C/datacorp/trainer.pem")
"$ndctl" job submit $(as healthtech buyer) --dataset 1 --spec trainer/jobs/heart-logreg.json --bounty 500 --stake 100 --sample 0.25 --wait
echo "datacorp/trainer (the worker): $worker_before -> $(balance "$C/datacorp/trainer.pem") NRC (the bounty minus the validators' 10%, its stake back, its tx fees)"
"$ndctl" query model-version 1
"$ndctl" dataset stats $(as medlab provider) --dataset 1
"$ndctl" devnet status
echo
echo "demo complete"
