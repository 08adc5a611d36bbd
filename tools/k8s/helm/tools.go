//go:build tools

// Package tools pins helm, which the chart is linted, rendered and installed with.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
