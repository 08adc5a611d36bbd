#!/usr/bin/env bash
# Inference and leaderboard scoring (issue 14), release builds.
# 1. In process (`trainer/examples/predict_bench.rs`), on a bare `trainer run` of the heart MLP
#    (trainer/jobs/heart-mlp.json on a synthetic heart CSV): the trainer's Predictor on CSV batches
#    of 1,000 rows (read, schema checks, encoding, tract), tract alone on the same rows already
#    encoded (the Predictor's plan, symbolic batch dimension; a concrete plan and a plan per batch
#    for comparison), and the CPU of a leaderboard score (`score::score`: the ONNX export under
#    tract) over the trainer's own eval (`score::native`) of the same hidden split.
# 2. Through a gateway over mTLS (`gateway/examples/predict_client.rs`): on the 4-validator devnet
#    with gateways, worker and verifiers, the same job is submitted on chain and made final,
#    healthtech publishes the model, datacorp buys and installs it (`ndctl model ...`), and
#    datacorp's buyer streams the same batches of 1,000 rows through datacorp's gateway.
# Figures (goal): ratio_vs_tract = gateway rows/s over tract running the same ONNX in process on
# the same rows, read from the same CSV batches (the trainer's Predictor: read, check, encode,
# tract) (>= 0.5); ratio_vs_tract_encoded = gateway rows/s over tract alone on those rows already
# encoded as its input tensor; score_cpu_ratio = scoring CPU over the trainer's eval CPU;
# predictions_agree: the gateway's labels are the in-process ones (the on-chain model is the bare
# run's, bit for bit). The in-process figures are measured before the devnet starts.
# Last line: one JSON object with those figures.
# Usage: scripts/bench/predict.sh [PREDICT_ROWS] [SPLIT_ROWS] [BASE_PORT]
# (NEURODATA_BENCH_PROFILE=dev runs debug builds: only to try the script quickly.)
set -euo pipefail
cd "$(dirname "$0")/../.."
predict_rows=${1:-100000}
split_rows=${2:-50000}
base=${3:-28700}
train_rows=2000
spec=trainer/jobs/heart-mlp.json
profile=${NEURODATA_BENCH_PROFILE:-release}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --profile "$profile" -p ndctl -p neurodata-abci -p neurodata-gateway -p neurodata-trainer \
  -p neurodata-worker --bins
cargo build -q --profile "$profile" -p neurodata-trainer --example predict_bench
cargo build -q --profile "$profile" -p neurodata-gateway --example predict_client
export NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
bin=$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")
ndctl=$bin/ndctl
work=$(mktemp -d /tmp/ndpredict.XXXX)
net=$work/net
trap '"$ndctl" devnet down --dir "$net" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
log() { echo "== $*" >&2; }

log "data: $train_rows training rows, $predict_rows rows to predict, a $split_rows-row hidden split"
scripts/heart-csv.py --rows "$train_rows" --seed 7 > "$work/heart.csv"
scripts/heart-csv.py --rows "$predict_rows" --seed 99 > "$work/rows.csv"
scripts/heart-csv.py --rows "$split_rows" --seed 2027 > "$work/split.csv"

log "bare run: trainer run $spec"
"$bin/trainer" run --quiet --spec "$spec" --data "$work/heart.csv" --out "$work/bare" > "$work/bare.json"

log "in process: Predictor, tract alone, score vs the trainer's eval"
"$bin/examples/predict_bench" --model "$work/bare/model.safetensors" --onnx "$work/bare/model.onnx" \
  --rows "$work/rows.csv" --split "$work/split.csv" --batch 1000 --seconds 5 > "$work/inproc.json"

log "devnet: 4 validators, gateways, worker and verifiers (base port $base)"
export NEURODATA_DEVNET=$net NEURODATA_TRUST_DIR=$net/trusted
C=$net/consortium
"$ndctl" devnet up --dir "$net" --base-port "$base" --validators 4 --gateways --training >&2
as() {
  local gw=$((base + 8)) ca=medlab
  case $1 in healthtech) gw=$((base + 18)) ca=healthtech ;; datacorp) gw=$((base + 28)) ca=datacorp ;; esac
  echo "--cert $C/$1/$2.pem --key $C/$1/$2.key --gateway https://127.0.0.1:$gw --gateway-ca $C/$ca/ca.pem"
}
# shellcheck disable=SC2046
{
  log "the heart data sold to healthtech, the job made final on chain"
  "$ndctl" dataset upload $(as medlab provider) --file "$work/heart.csv" --title "Heart (bench)" --price 2000
  "$ndctl" dataset buy $(as healthtech buyer) --dataset 1
  "$ndctl" dataset download $(as healthtech buyer) --purchase 1 --out "$work/heart.bought.csv" --confirm
  "$ndctl" job submit $(as healthtech buyer) --dataset 1 --spec "$spec" --bounty 500 --stake 100 --wait
  log "healthtech publishes model version 1; the validators verify it; datacorp buys and installs it on its gateway"
  "$ndctl" model publish $(as healthtech buyer) --model-version 1 --price 3000 --license CC-BY-4.0 \
    --intended-use "benchmark"
  # datacorp's node may be a block behind healthtech's: the listing is read there first.
  for _ in $(seq 1 30); do "$ndctl" model show $(as datacorp buyer) 1 >/dev/null 2>&1 && break; sleep 1; done
  # The validators verify the listing's ciphertexts first; the buy waits for that.
  "$ndctl" model buy $(as datacorp buyer) 1 --wait-verified 300
  "$ndctl" model install $(as datacorp buyer) 1
} >&2

log "through datacorp's gateway over mTLS: batches of 1,000 rows"
"$bin/examples/predict_client" --devnet "$net" --gateway "https://127.0.0.1:$((base + 28))" \
  --org datacorp --role buyer --listing 1 --rows "$work/rows.csv" --batch 1000 --seconds 10 \
  > "$work/gateway.json"

python3 - "$work/inproc.json" "$work/gateway.json" <<'PY'
import json, sys
a = json.loads(open(sys.argv[1]).read().splitlines()[-1])
g = json.loads(open(sys.argv[2]).read().splitlines()[-1])
r = {**a, **g}
r["predictions_agree"] = a["predictions_sha256"] == g["predictions_sha256"]
r["ratio_vs_tract"] = round(g["gateway_rows_per_s"] / a["predictor_rows_per_s"], 3)
r["ratio_vs_tract_encoded"] = round(g["gateway_rows_per_s"] / a["tract_rows_per_s"], 3)
print(f"gateway {g['gateway_rows_per_s']:.0f} rows/s; in process from the same rows "
      f"{a['predictor_rows_per_s']:.0f} rows/s, tract alone on encoded rows {a['tract_rows_per_s']:.0f} rows/s")
print(f"ratio_vs_tract = {r['ratio_vs_tract']} (goal >= 0.5: {'met' if r['ratio_vs_tract'] >= 0.5 else 'NOT met'}); "
      f"ratio_vs_tract_encoded = {r['ratio_vs_tract_encoded']}; score_cpu_ratio = {r.get('score_cpu_ratio')}; "
      f"predictions agree: {r['predictions_agree']}")
print(json.dumps(r))
PY
