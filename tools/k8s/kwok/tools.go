//go:build tools

// Package tools pins kwok, which plays the kubelet: fake nodes whose pods go through their phases.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
