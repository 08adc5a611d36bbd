//go:build tools

// Package tools pins the IPFS node NeuroData's gateway tests run against: kubo's `ipfs` binary.
// scripts/build-kubo.sh builds it into a cache outside the clone with `go build` in this module, so
// the version comes from go.mod / go.sum here and nowhere else. It is a module of its own (not
// ../go.mod) because kubo's dependency graph would otherwise move CometBFT's.
package tools

import (
	_ "github.com/ipfs/kubo/cmd/ipfs"
)
