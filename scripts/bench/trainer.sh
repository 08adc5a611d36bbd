#!/usr/bin/env bash
# Trainer benchmark on 10^5 x 50 synthetic rows (release build):
# 1. training samples/s of logistic regression and an MLP (50-64-32-1, ReLU, Adam, batch 256),
#    deterministic kernels against candle's default multi-threaded path in the same process
#    (ratio_vs_candle: the lower of the two ratios; goal >= 0.5);
# 2. verification cost: `trainer verify --sample 0.1` (10% of the segments, data loading
#    included) as a ratio to the full `trainer run` of the same job (goal <= 0.15); medians of
#    three runs each.
# Last line: one JSON object with ratio_vs_candle, verify_cost_ratio, samples_per_s.
# Usage: scripts/bench/trainer.sh [ROWS] [EPOCHS_OF_THE_VERIFIED_JOB]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-100000}
epochs=${2:-10}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --release -p neurodata-trainer --example trainer_bench --bin trainer
bin=$CARGO_TARGET_DIR/release
work=$(mktemp -d /tmp/ndtrain.XXXX)
trap 'rm -rf "$work"' EXIT

echo "== training throughput: deterministic vs candle default ($rows rows, 50 features, 2 epochs)" >&2
speed=$("$bin/examples/trainer_bench" "$rows" 50 2)

echo "== verification: 10% of segments vs the full run ($epochs epochs, 50 segments)" >&2
"$bin/examples/trainer_bench" --write-csv "$work/data.csv" "$rows" 50
python3 - "$work" "$rows" "$epochs" <<'PY'
import json, math, sys
work, rows, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cols = [{"name": f"x{i}", "type": "numeric"} for i in range(50)] + [{"name": "y", "type": "categorical"}]
steps = epochs * math.ceil(round(rows * 0.8) / 256)
json.dump({"schema": {"columns": cols, "target": "y"},
           "model": {"algorithm": "mlp", "task": "classification", "hidden": [64, 32]},
           "seed": 7, "test_fraction": 0.2,
           "training": {"epochs": epochs, "batch_size": 256, "optimizer": {"kind": "adam", "lr": 0.01}},
           "checkpoint_every": math.ceil(steps / 50)}, open(f"{work}/job.json", "w"))
PY
cat "$work/data.csv" > /dev/null
# Each command runs three times (alternating, so drift on a shared machine hits all three
# alike) and its median counts; bash's own clock, so no helper start-up is timed.
timed() { local out=$1 t=$EPOCHREALTIME; shift; "$@" > "$out"; echo "$t:$EPOCHREALTIME"; }
full=() verify=() one=()
for rep in 1 2 3; do
  full+=("$(timed "$work/result.json" "$bin/trainer" run --quiet --spec "$work/job.json" --data "$work/data.csv" --out "$work/run")")
  verify+=("$(timed "$work/verify.json" "$bin/trainer" verify --out "$work/run" --data "$work/data.csv" --sample 0.1 --beacon 5eed)")
  one+=("$(timed /dev/null "$bin/trainer" verify --out "$work/run" --data "$work/data.csv" --segment 0)")
done
python3 - "$speed" "$work" "${full[*]}" "${verify[*]}" "${one[*]}" <<'PY'
import json, statistics, sys
r = json.loads(sys.argv[1]); work = sys.argv[2]
def median(spans):
    return statistics.median(float(b) - float(a) for a, b in (s.split(":") for s in spans.split()))
full, verify, one = (median(a) for a in sys.argv[3:6])
verified = json.load(open(f"{work}/verify.json"))
result = json.load(open(f"{work}/result.json"))
r["verify_job_epochs"] = json.load(open(f"{work}/job.json"))["training"]["epochs"]
r["verify_segments"] = f'{len(verified["verified"])}/{verified["segments"]}'
r["full_run_s"] = round(full, 3)
r["verify_10pct_s"] = round(verify, 3)
r["verify_one_segment_s"] = round(one, 3)
r["verify_cost_ratio"] = round(verify / full, 3)
r["test_accuracy"] = result["metrics"]["accuracy"]
print(json.dumps(r))
PY
