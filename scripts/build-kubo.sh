#!/usr/bin/env bash
# Builds kubo's `ipfs` binary pinned in tools/kubo/go.mod (once) into a cache outside the clone and
# prints its path. Reuses the cached binary when it exists. The gateway's IPFS blob-store tests run
# real kubo nodes on loopback with it (gateway/tests/ipfs.rs reads NEURODATA_KUBO).
#
# kubo is a module of its own (tools/kubo) because its go.mod replaces go-libp2p with a fork the
# module proxy does not serve; tools/kubo/go.mod pins the QUIC stack upstream go-libp2p needs
# instead. Cold, this takes a few minutes on 2 cores; afterwards it is a file test.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$here/tools/kubo" && go list -m -f '{{.Version}}' github.com/ipfs/kubo)
cache=${NEURODATA_CACHE:-$HOME/.cache/neurodata}/bin
bin="$cache/ipfs-$version"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  echo "building kubo (ipfs) $version into $cache (once, a few minutes)" >&2
  (cd "$here/tools/kubo" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$bin.tmp.$$" github.com/ipfs/kubo/cmd/ipfs)
  mv "$bin.tmp.$$" "$bin"
fi
echo "$bin"
