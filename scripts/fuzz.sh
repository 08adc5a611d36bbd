#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): the targets in fuzz/fuzz_targets/, each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   run (default 15 s each, every target)
#   scripts/fuzz.sh --seeds [TARGET...]                 rewrite the seed corpora (and missing fixtures)
#   scripts/fuzz.sh --list                              the targets
#
# CI runs the short form; longer campaigns are the same command with more seconds
# (`scripts/fuzz.sh 3600 onnx_roundtrip`). Each target first replays its regression inputs
# (fuzz/regressions/<target>/: every crash found so far, kept as an input that must pass), then
# fuzzes a COPY of its committed corpus (fuzz/corpus/<target>/), so the checkout is never changed;
# NEURODATA_FUZZ_KEEP=<dir> keeps the grown corpora there.
# Per target it prints the executions, executions per second, coverage (libFuzzer's `cov:` edges
# and `ft:` features, from its final status line) and the corpus (inputs / bytes). A crash, leak,
# timeout or out-of-memory fails the run: the input is written to fuzz/artifacts/<target>/ (path
# printed) and the script exits 1 after the remaining targets ran. Reproduce one with
#   $NEURODATA_FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release/<target> <input>
# then fix it, and commit the input under fuzz/regressions/<target>/ (and a #[test] beside the
# code it broke).
#
# Needs the nightly toolchain (cargo-fuzz builds with nightly-only flags): exits 2 with a message
# when `cargo +nightly` is not there. Installs cargo-fuzz (pinned) into the cache when missing.
# Exit status: 0 no crash, 1 a crash (or a regression input failing again), 2 no nightly,
# 3 the build ran out of NEURODATA_FUZZ_BUILD_TIMEOUT (nothing fuzzed).
# Environment: NEURODATA_FUZZ_TARGET_DIR (default ~/.cache/neurodata/fuzz-target),
# NEURODATA_FUZZ_BUILD_TIMEOUT (seconds; default none),
# NEURODATA_FUZZ_SANITIZER (none; `address` for ASan, slower), CARGO_BUILD_JOBS (cargo's own).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/neurodata"
TARGET_DIR="${NEURODATA_FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
SANITIZER="${NEURODATA_FUZZ_SANITIZER:-none}"
TRIPLE=x86_64-unknown-linux-gnu
BIN="$TARGET_DIR/$TRIPLE/release"
ALL_TARGETS=(tx_decode certificate gateway_request tabular safetensors stream_decrypt onnx_roundtrip)

mode=run
seconds=15
case "${1:-}" in
  --seeds) mode=seeds; shift ;;
  --list) printf '%s\n' "${ALL_TARGETS[@]}"; exit 0 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  ''|*[!0-9]*) ;;
  *) seconds=$1; shift ;;
esac
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (see --list)" >&2; exit 2; }
done

# 1. Nightly.
if ! nightly=$(cargo +nightly --version 2>/dev/null); then
  cat >&2 <<EOF
fuzz: the nightly toolchain is not installed (\`cargo +nightly --version\` failed).
cargo-fuzz needs it for libFuzzer's instrumentation (-Zsanitizer, -Cpasses=sancov-module).
Install it with:  rustup toolchain install nightly --profile minimal
EOF
  exit 2
fi
echo "fuzz: $nightly"

# 2. cargo-fuzz, pinned, in the cache.
FUZZ_ROOT="$CACHE/cargo-fuzz"
if [[ "$("$FUZZ_ROOT/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_ROOT"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$FUZZ_ROOT"
fi
export PATH="$FUZZ_ROOT/bin:$PATH"

# 3. Build every target (release, debug assertions and overflow checks on), with fuzz/Cargo.lock.
# NEURODATA_FUZZ_BUILD_TIMEOUT=<seconds> bounds the build (CI gives it what its time budget has
# left): past it, cargo stops, what it finished stays in the target directory, and the script exits
# 3 saying so; the next run continues the build where it stopped.
build_start=$(date +%s)
build_timeout=${NEURODATA_FUZZ_BUILD_TIMEOUT:-0}
set +e
(cd fuzz && timeout "$build_timeout" cargo +nightly fuzz build -O --debug-assertions \
  --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR")
rc=$?
set -e
if [[ $rc -eq 124 ]]; then
  echo "fuzz: the build did not finish within ${build_timeout} s; what it built is cached in $TARGET_DIR and the next run goes on from there" >&2
  exit 3
elif [[ $rc -ne 0 ]]; then
  echo "fuzz: building the targets failed (exit $rc)" >&2
  exit "$rc"
fi
echo "fuzz: built in $(( $(date +%s) - build_start )) s ($BIN)"

if [[ $mode == seeds ]]; then
  for t in "${targets[@]}"; do
    rm -rf "fuzz/corpus/$t"
    NEURODATA_FUZZ_SEEDS="fuzz/corpus/$t" "$BIN/$t" -runs=0
  done
  du -sh fuzz/corpus fuzz/fixtures
  exit 0
fi

# 4. Run each target on a copy of its corpus.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
rows=()
for t in "${targets[@]}"; do
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$artifacts"
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    echo "fuzz: $t: replaying fuzz/regressions/$t/"
    if ! "$BIN/$t" -artifact_prefix="$artifacts/" fuzz/regressions/"$t"/* >"$work/$t.replay.log" 2>&1; then
      tail -n 40 "$work/$t.replay.log"
      echo "fuzz: $t: a regression input fails again (log above)" >&2
      failed+=("$t")
      continue
    fi
  fi
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  if [[ -d fuzz/corpus/$t ]]; then cp -R "fuzz/corpus/$t/." "$corpus/"; fi
  log="$work/$t.log"
  echo "fuzz: $t: ${seconds} s on a copy of fuzz/corpus/$t ($(ls "$corpus" | wc -l) inputs)"
  set +e
  "$BIN/$t" "$corpus" -max_total_time="$seconds" -print_final_stats=1 -timeout=60 \
    -rss_limit_mb=4096 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  # The last status line: "#N DONE cov: C ft: F corp: U/Sb ... exec/s: E rss: R".
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$status")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$status")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$status")
  rows+=("$(printf '%-16s %10s %8s %7s %7s %14s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
  if [[ $rc -ne 0 ]]; then
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 || true
    tail -n 30 "$log"
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "fuzz: $t FAILED (exit $rc); input: ${artifact:-see the log above}" >&2
    failed+=("$t")
  fi
  if [[ -n ${NEURODATA_FUZZ_KEEP:-} ]]; then
    mkdir -p "$NEURODATA_FUZZ_KEEP/$t" && cp -R "$corpus/." "$NEURODATA_FUZZ_KEEP/$t/"
  fi
done

echo
echo "fuzz: ${seconds} s per target, sanitizer $SANITIZER"
printf '%-16s %10s %8s %7s %7s %14s\n' target execs exec/s cov ft corpus
printf '%s\n' "${rows[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no crash"
