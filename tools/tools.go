//go:build tools

// Package tools pins the Go tools NeuroData builds from source: the CometBFT v0.38 node binary.
// scripts/build-cometbft.sh builds it into a cache outside the clone with `go build` in this module,
// so the version comes from go.mod / go.sum here and nowhere else.
package tools

import (
	_ "github.com/cometbft/cometbft/cmd/cometbft"
)
