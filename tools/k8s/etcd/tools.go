//go:build tools

// Package tools pins etcd, the control plane's store.
package tools

import _ "go.etcd.io/etcd/server/v3"
