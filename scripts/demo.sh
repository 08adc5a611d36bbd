#!/usr/bin/env bash
# Starts the local consortium network (4 CometBFT validators + 4 NeuroData apps on loopback, and
# the gRPC gateway of each founding org) and runs the demo through the gateways, each member
# calling its own org's gateway over mTLS: admit a new org by governance, issue and revoke a
# certificate, NRC transfers, a query whose Merkle proof is verified against a block header, the
# data marketplace, a training job the validators re-run and attest on chain, and the models
# marketplace (a model sold with a royalty to its data's provider, run through the buyer's
# gateway, and scored by the validators on a hidden test split for the leaderboard).
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

echo
echo "== 9. the models marketplace: a hidden test split, healthtech sells its model once validators verified it, medlab earns a royalty, datacorp runs it, validators score it"
# medlab registers a hidden evaluation split of the heart dataset: rows no trainer ever sees,
# encrypted like a listing, never for sale; only the validators scoring a model get its key.
scripts/heart-csv.py --rows 120 --seed 2027 > "$work/heart-split.csv"
"$ndctl" dataset split $(as medlab provider) --dataset 1 --file "$work/heart-split.csv"
# healthtech, which owns model version 1 (its job from step 8), lists it: ndctl fetches the model
# file and ONNX export from datacorp's worker gateway, encrypts both with one fresh key, uploads
# them to healthtech's gateway and deposits the key there. The card's facts come from the chain.
"$ndctl" model publish $(as healthtech buyer) --model-version 1 --price 3000 --license CC-BY-4.0 \
  --intended-use "Heart-disease risk research on synthetic patients; not for clinical decisions"
"$ndctl" model show $(as datacorp buyer) 1
medlab_before=$(balance "$C/medlab/provider.pem"); owner_before=$(balance "$C/healthtech/buyer.pem")
# Before anyone buys, each validator's verifier asks healthtech's gateway for the listing's key,
# decrypts both ciphertexts and attests that they are the card's model and ONNX export: the
# escrow's dispute proves only a wrong key, so junk under the right key must be caught here.
# datacorp waits until validators holding more than 2/3 of the power have (ndctl refuses an
# unverified listing without --unverified), then buys it in the market's escrow; healthtech's
# gateway delivers the key to datacorp.
"$ndctl" model buy $(as datacorp buyer) 1 --wait-verified 300
"$ndctl" model show $(as datacorp buyer) 1 | grep -E "verified|attested"
# datacorp unwraps the key, checks both files against the card, puts them and the key on its own
# gateway, and confirms: the escrow pays healthtech, the reward pool and medlab's royalty.
"$ndctl" model install $(as datacorp buyer) 1
echo "royalty: medlab/provider $medlab_before -> $(balance "$C/medlab/provider.pem") NRC (10% of the 3000 NRC sale: the heart dataset is the model's only data)"
echo "owner:   healthtech/buyer $owner_before -> $(balance "$C/healthtech/buyer.pem") NRC (3000 minus the 2% market fee and the royalty)"
"$ndctl" dataset stats $(as medlab provider) --dataset 1
scripts/heart-csv.py --rows 5 --seed 99 > "$work/new-patients.csv"
"$ndctl" model predict $(as datacorp buyer) 1 --file "$work/new-patients.csv" --out "$work/predictions.csv"
echo "first predictions through datacorp's gateway (row,prediction,p_0,p_1):"
head -4 "$work/predictions.csv"
# healthtech, the model's owner, asks the validators for a score: each verifier gets the split's
# key from medlab's gateway, runs the ONNX export on the hidden rows and commits, then reveals,
# its score in vote extensions; more than 2/3 of the power on one score puts it on the
# leaderboard.
"$ndctl" model evaluate $(as healthtech buyer) --model-version 1 --dataset 1 --wait
"$ndctl" leaderboard $(as datacorp buyer) 1
"$ndctl" devnet status
echo
echo "demo complete"
