#!/usr/bin/env bash
# Builds the CometBFT node binary pinned in tools/go.mod (once) into a cache outside the clone and
# prints its path. Reuses the cached binary when it exists.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$here/tools" && go list -m -f '{{.Version}}' github.com/cometbft/cometbft)
cache=${NEURODATA_CACHE:-$HOME/.cache/neurodata}/bin
bin="$cache/cometbft-$version"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  echo "building cometbft $version into $cache (once)" >&2
  (cd "$here/tools" && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" github.com/cometbft/cometbft/cmd/cometbft)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
