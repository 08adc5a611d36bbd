#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every unit, integration and end-to-end test.
# Build output is cached outside the clone so repeat runs are fast.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
export CARGO_TERM_COLOR=never
# End-to-end tests run the real CometBFT, built once from tools/go.mod into the cache.
NEURODATA_COMETBFT=$(scripts/build-cometbft.sh)
export NEURODATA_COMETBFT
# The gateway's IPFS blob-store tests run real kubo nodes, built once from tools/kubo/go.mod into
# the cache (cold: about 6 minutes on 2 cores, module downloads included).
NEURODATA_KUBO=$(scripts/build-kubo.sh)
export NEURODATA_KUBO
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
