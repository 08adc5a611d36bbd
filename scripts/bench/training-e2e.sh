#!/usr/bin/env bash
# Training end to end (Proof-of-Validation) on the 4-validator devnet with gateways, datacorp's
# worker and a verifier beside every validator (`ndctl devnet up --gateways --training`), release
# builds. One MLP job (trainer/jobs/bench-mlp.json on a synthetic heart CSV) is
# 1. run bare (`trainer run`, before the network starts): wall time and CPU time (user+sys);
# 2. submitted on chain (medlab's provider uploads the data, healthtech's buyer buys, downloads,
#    confirms and submits with --wait at the default 10% sample) after an idle stretch as long as
#    the bare run, whose block intervals are the baseline;
# 3. verified again offline, once per validator of the real job (its beacon and attestor set),
#    over the bare run's output (same spec and data, so bit-identical): CPU time of
#    `trainer verify --job-id ...` plus `trainer eval` (what each verifier runs: the verify
#    child and the ONNX/metrics evaluation) over the bare run's CPU time.
# Figures (goals): latency_ratio = e2e_seconds / bare_seconds (<= 1.5); overhead_blocks =
# blocks from submission to final minus the training blocks accepted->result (<= 8);
# verify_cpu_ratio, the max over validators (<= 0.15); block_time_ratio = median block interval
# while the job is in flight / median of the idle stretch (<= 1.2); extension_bytes = the most
# bytes of distinct non-empty vote extensions one validator signed for the job (<= 256).
# Last line: one JSON object with those figures.
# Usage: scripts/bench/training-e2e.sh [ROWS] [BASE_PORT] [SPEC]
# (NEURODATA_BENCH_PROFILE=dev runs debug builds: only to try the script quickly.)
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-200000}
base=${2:-28600}
spec=${3:-trainer/jobs/bench-mlp.json}
profile=${NEURODATA_BENCH_PROFILE:-release}
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q --profile "$profile" -p ndctl -p neurodata-abci -p neurodata-gateway -p neurodata-trainer \
  -p neurodata-worker --bins
export NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
bin=$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")
ndctl=$bin/ndctl
work=$(mktemp -d /tmp/ndtraine2e.XXXX)
net=$work/net
trap '"$ndctl" devnet down --dir "$net" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
log() { echo "== $*" >&2; }

log "data: $rows synthetic heart rows"
scripts/heart-csv.py --rows "$rows" --seed 7 > "$work/heart.csv"
ls -l "$work/heart.csv" >&2

log "bare run: trainer run $spec (before the network starts)"
cat "$work/heart.csv" > /dev/null
/usr/bin/time -f '%e %U %S' -o "$work/bare.time" \
  "$bin/trainer" run --quiet --spec "$spec" --data "$work/heart.csv" --out "$work/bare" > "$work/bare.json"
read -r bare_wall bare_user bare_sys < "$work/bare.time"
log "bare run: ${bare_wall}s wall, ${bare_user}s user, ${bare_sys}s sys"

log "devnet: 4 validators, gateways, worker and verifiers (base port $base)"
export NEURODATA_DEVNET=$net NEURODATA_TRUST_DIR=$net/trusted
C=$net/consortium
"$ndctl" devnet up --dir "$net" --base-port "$base" --validators 4 --gateways --training >&2
rpc=http://127.0.0.1:$((base + 7))
as() {
  local gw=$((base + 8)) ca=medlab
  case $1 in healthtech) gw=$((base + 18)) ca=healthtech ;; datacorp) gw=$((base + 28)) ca=datacorp ;; esac
  echo "--cert $C/$1/$2.pem --key $C/$1/$2.key --gateway https://127.0.0.1:$gw --gateway-ca $C/$ca/ca.pem"
}
# shellcheck disable=SC2046
{
  "$ndctl" dataset upload $(as medlab provider) --file "$work/heart.csv" --title "Heart (bench)" --price 2000
  "$ndctl" dataset buy $(as healthtech buyer) --dataset 1
  "$ndctl" dataset download $(as healthtech buyer) --purchase 1 --out "$work/heart.bought.csv" --confirm
} >&2
cmp "$work/heart.csv" "$work/heart.bought.csv"
height() { curl -fsS "$rpc/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["sync_info"]["latest_block_height"])'; }

idle=$(python3 -c "print(max(20, round($bare_wall)))")
log "idle stretch: ${idle}s"
idle_from=$(height); sleep "$idle"; idle_to=$(height)

log "submit --wait (sample 0.1, the default)"
t0=$EPOCHREALTIME
# shellcheck disable=SC2046
"$ndctl" job submit $(as healthtech buyer) --dataset 1 --spec "$spec" --bounty 500 --stake 100 \
  --wait | tee "$work/submit.out" >&2
t1=$EPOCHREALTIME
id=$(sed -n 's/^job \([0-9]*\) submitted.*/\1/p' "$work/submit.out" | head -n 1)
# A fresh ndctl trusts the newest block its trust dir holds and verifies reads from a block
# below it, so a read at that very height fails: let a block pass and retry.
for try in 1 2 3 4 5; do
  # shellcheck disable=SC2046
  "$ndctl" job show $(as healthtech buyer) "$id" > "$work/show.out" && break
  [ "$try" -lt 5 ] || exit 1
  sleep 1.5
done
cat "$work/show.out" >&2
grep -q "^job $id (final)" "$work/show.out" || { echo "job $id did not end final" >&2; exit 1; }

log "blocks: header times and injected vote extensions"
python3 - "$rpc" "$idle_from" "$idle_to" "$work/show.out" "$work/chain.json" <<'PY'
import base64, json, re, sys, urllib.request
rpc, idle_from, idle_to, show, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
steps = {}
for line in open(show):
    m = re.match(r"\s+height\s+(\d+)\s+(\S+)\s*(.*)", line)
    if m:
        steps.setdefault(m.group(2), (int(m.group(1)), m.group(3)))
submitted, final = steps["submitted"][0], steps["final"][0]
def get(path):
    with urllib.request.urlopen(rpc + path) as r:
        return json.load(r)["result"]
times = {}
lo, hi = idle_from, final
while lo <= hi:
    top = min(hi, lo + 19)
    for m in get(f"/blockchain?minHeight={lo}&maxHeight={top}")["block_metas"]:
        times[int(m["header"]["height"])] = m["header"]["time"]
    lo = top + 1
def varint(b, i):
    x = s = 0
    while True:
        c = b[i]; i += 1; x |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return x, i
def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i); v = b[i:i + n]; i += n
        elif wt == 1:
            v = b[i:i + 8]; i += 8
        elif wt == 5:
            v = b[i:i + 4]; i += 4
        else:
            raise ValueError(f"wire type {wt}")
        yield f, v
ext = {}  # validator hex -> list of (height, extension bytes)
for h in range(submitted, final + 3):
    txs = get(f"/block?height={h}")["block"]["data"]["txs"] or []
    if not txs:
        continue
    tx = base64.b64decode(txs[0])
    if not tx.startswith(b"\0NDV"):
        continue
    for f, v in fields(tx[4:]):
        if f != 3:
            continue
        d = dict(fields(v))
        val, e = d.get(1, b"").hex(), d.get(2, b"")
        if e:
            ext.setdefault(val, []).append((h, e))
json.dump({"steps": steps, "times": times,
           "ext": {k: [(h, e.hex()) for h, e in v] for k, v in ext.items()}}, open(out, "w"))
PY
log "devnet down"
"$ndctl" devnet down --dir "$net" >&2

log "verification CPU, offline, per validator of job $id over the bare run's output"
beacon=$(sed -En 's/.* beacon +beacon ([0-9a-f]+);.*/\1/p' "$work/show.out" | head -n 1)
vals=$(sed -n 's/^    \([0-9a-f]\{40\}\) (.*/\1/p' "$work/show.out" | paste -sd, -)
[ -n "$beacon" ] && [ -n "$vals" ] || { echo "no beacon or attestors in job show" >&2; exit 1; }
for v in ${vals//,/ }; do
  /usr/bin/time -f '%e %U %S' -o "$work/verify-$v.time" "$bin/trainer" verify --out "$work/bare" \
    --data "$work/heart.csv" --job-id "$id" --validator "$v" --validators "$vals" \
    --sample-bps 1000 --beacon "$beacon" --json > "$work/verify-$v.json"
  /usr/bin/time -f '%e %U %S' -o "$work/eval-$v.time" "$bin/trainer" eval --out "$work/bare" \
    --data "$work/heart.csv" > "$work/eval-$v.out" 2>&1
  echo "$v: verify $(cat "$work/verify-$v.time"), eval $(cat "$work/eval-$v.time"): $(cat "$work/verify-$v.json")" >&2
done

python3 - "$work" "$t0" "$t1" "$bare_wall" "$bare_user" "$bare_sys" "$idle_from" "$idle_to" "$vals" "$rows" <<'PY'
import json, re, statistics, sys
from datetime import datetime, timezone
work, t0, t1, bare_wall, bare_user, bare_sys = sys.argv[1], *map(float, sys.argv[2:7])
idle_from, idle_to, vals, rows = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9].split(","), int(sys.argv[10])
chain = json.load(open(f"{work}/chain.json"))
steps = {k: v[0] for k, v in chain["steps"].items()}
times = {int(h): t for h, t in chain["times"].items()}
def ts(s):  # RFC 3339 with nanoseconds
    date, frac = s.rstrip("Z").split(".") if "." in s else (s.rstrip("Z"), "0")
    return datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() + float("0." + frac)
def median_interval(a, b):
    return statistics.median(ts(times[h + 1]) - ts(times[h]) for h in range(a, b))
bare_cpu = bare_user + bare_sys
per_val = {}
for v in vals:
    vw, vu, vs = map(float, open(f"{work}/verify-{v}.time").read().split())
    ew, eu, es = map(float, open(f"{work}/eval-{v}.time").read().split())
    verdict = json.load(open(f"{work}/verify-{v}.json"))
    per_val[v] = {"cpu_s": round(vu + vs + eu + es, 3), "verify_cpu_s": round(vu + vs, 3),
                  "eval_cpu_s": round(eu + es, 3), "segments": verdict.get("segments"),
                  "matches": verdict.get("matches")}
ratios = [p["cpu_s"] / bare_cpu for p in per_val.values()]
ext = {v: {} for v in vals}
ext_all = {v: 0 for v in vals}
for v, seen in chain["ext"].items():
    for h, e in seen:
        ext.setdefault(v, {})[e] = len(e) // 2
        ext_all[v] = ext_all.get(v, 0) + len(e) // 2
ext_bytes = {v: sum(d.values()) for v, d in ext.items()}
ext_count = {v: len(d) for v, d in ext.items()}
submitted, final = steps["submitted"], steps["final"]
training = steps["result"] - steps["accepted"]
e2e = t1 - t0
bare_model = json.load(open(f"{work}/bare/result.json")).get("model_sha256")
chain_model = re.search(r"result at height \d+: model ([0-9a-f]+)", open(f"{work}/show.out").read()).group(1)
r = {
    "rows": rows,
    "segments": int(re.search(r"\((\d+) segments\)", open(f"{work}/show.out").read()).group(1)),
    "bare_seconds": round(bare_wall, 2), "bare_cpu_seconds": round(bare_cpu, 2),
    "e2e_seconds": round(e2e, 2), "latency_ratio": round(e2e / bare_wall, 3),
    "heights": steps,
    "blocks_total": final - submitted, "blocks_training": training,
    "overhead_blocks": final - submitted - training,
    "verify_cpu_s": per_val,
    "verify_cpu_ratio": round(max(ratios), 3), "verify_cpu_ratio_mean": round(sum(ratios) / len(ratios), 3),
    "block_interval_idle_s": round(median_interval(idle_from, idle_to), 3),
    "block_interval_job_s": round(median_interval(submitted, final), 3),
    "extension_count": ext_count, "extension_bytes_per_validator": ext_bytes,
    "extension_bytes_all_occurrences": ext_all,
    "extension_bytes": max(ext_bytes.values()),
    "extension_bytes_mean": round(sum(ext_bytes.values()) / len(ext_bytes), 1),
    "model_sha256": chain_model, "bare_run_identical": bare_model == chain_model,
}
r["block_time_ratio"] = round(r["block_interval_job_s"] / r["block_interval_idle_s"], 3)
goals = [("latency_ratio", "<=", 1.5), ("overhead_blocks", "<=", 8), ("verify_cpu_ratio", "<=", 0.15),
         ("block_time_ratio", "<=", 1.2), ("extension_bytes", "<=", 256)]
print(f"bare run {r['bare_seconds']} s wall, {r['bare_cpu_seconds']} s CPU; e2e {r['e2e_seconds']} s; "
      f"heights {steps}; block interval idle {r['block_interval_idle_s']} s, in flight {r['block_interval_job_s']} s")
for v, p in per_val.items():
    print(f"validator {v}: verify+eval CPU {p['cpu_s']} s ({p['cpu_s'] / bare_cpu:.3f}), "
          f"{ext_count.get(v, 0)} extensions, {ext_bytes.get(v, 0)} bytes")
for k, op, goal in goals:
    met = r[k] <= goal
    print(f"{k:>18} = {r[k]:<8} goal {op} {goal}: {'met' if met else 'NOT met'}")
print(json.dumps(r))
PY
