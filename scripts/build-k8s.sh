#!/usr/bin/env bash
# Builds the Kubernetes control plane the chart and the worker's Kubernetes runner are tested
# against (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok as the kubelet, and
# helm), each pinned by its own module under tools/k8s, once into a cache outside the clone, and
# prints the directory that holds them. Cold: about a quarter of an hour on 2 cores; warm: instant.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mods="$here/tools/k8s"
version() { (cd "$mods/$1" && go list -m -f '{{.Version}}' "$2"); }
k8s=$(version kubernetes k8s.io/kubernetes)
etcd=$(version etcd go.etcd.io/etcd/server/v3)
kwok=$(version kwok sigs.k8s.io/kwok)
helm=$(version helm helm.sh/helm/v3)
# The recipe's revision (-r2: helm's default Kubernetes version stamped in) is in the name, so a
# cache built by an older recipe is not reused.
dir=${NEURODATA_CACHE:-$HOME/.cache/neurodata}/bin/k8s-$k8s-etcd-$etcd-kwok-$kwok-helm-$helm-r2
mkdir -p "$dir"

# build MODULE NAME PACKAGE [LDFLAGS]: one binary, written under a temporary name and moved into
# place last, so an interrupted build is never mistaken for a finished one.
build() {
  local module=$1 name=$2 package=$3 ldflags=${4:-}
  [ -x "$dir/$name" ] && return 0
  echo "building $name into $dir (once)" >&2
  (cd "$mods/$module" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$name.tmp" "$package")
  mv "$dir/$name.tmp" "$dir/$name"
}

# Without the version stamped in, /version says v0.0.0-master and charts that state a kubeVersion
# refuse to install.
minor=${k8s#v1.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done

build etcd etcd go.etcd.io/etcd/server/v3
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  build kubernetes "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$stamp"
done
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
# As helm's Makefile does: its version, and the Kubernetes version `helm template` and `helm lint`
# assume (that of its client-go; unstamped it is 1.20, and charts needing newer refuse to render).
client_go=$(version helm k8s.io/client-go)
client_minor=${client_go#v0.}; client_minor=${client_minor%%.*}
helm_stamp="-X helm.sh/helm/v3/internal/version.version=$helm"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_stamp+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_minor"
done
build helm helm helm.sh/helm/v3/cmd/helm "$helm_stamp"
echo "$dir"
