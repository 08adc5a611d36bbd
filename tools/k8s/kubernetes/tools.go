//go:build tools

// Package tools pins the Kubernetes control plane (kube-apiserver, kube-controller-manager,
// kube-scheduler) that the chart and the worker's Kubernetes runner are tested against.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
