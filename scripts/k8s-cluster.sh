#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (playing the kubelet of one fake node), the
# binaries scripts/build-k8s.sh builds, with certificates of their own.
#
#   scripts/k8s-cluster.sh start DIR [--owner PID]   start one in DIR (created; must not hold one)
#   scripts/k8s-cluster.sh stop DIR                  stop exactly what `start DIR` started
#
# `start` returns once the API server is ready and the node is Ready, leaving DIR/kubeconfig
# (cluster-admin) and DIR/env (KUBECONFIG, NEURODATA_K8S_BIN, the server URL). With --owner, a
# watchdog stops the cluster and deletes DIR as soon as process PID is gone, so a test binary that
# starts one cluster for all its tests never leaves it behind, even when it crashes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

usage() { echo "usage: $0 start DIR [--owner PID] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2

# Whether process PID is still the one started for DIR (its command line names DIR: a reused
# pid is some other process and is left alone).
ours() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$2"; }

# Stops the processes recorded in DIR/pids, in reverse start order: kwok, the scheduler and the
# controller-manager before the API server (it otherwise waits ~75 s for its clients), etcd last.
stop() {
  local dir=$1
  [ -f "$dir/pids" ] || return 0
  local pid name
  tac "$dir/pids" | while read -r pid name; do
    if ours "$pid" "$dir"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if ours "$pid" "$dir"; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
  done
  rm -f "$dir/pids"
}

if [ "$cmd" = stop ]; then
  dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
  # An explicit stop also ends the watchdog, so it cannot later delete a cluster started anew in
  # the same directory (the watchdog itself passes --watchdog).
  if [ "${1:-}" != --watchdog ] && [ -f "$dir/watchdog" ]; then
    wd=$(cat "$dir/watchdog")
    if ours "$wd" "$dir"; then kill "$wd" 2>/dev/null || true; fi
    rm -f "$dir/watchdog"
  fi
  stop "$dir"
  exit 0
fi
[ "$cmd" = start ] || usage
owner=""
if [ "${1:-}" = --owner ]; then owner=${2:?--owner needs a pid}; fi

bin=${NEURODATA_K8S_BIN:-$("$here/scripts/build-k8s.sh")}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ ! -f "$dir/pids" ] || { echo "$dir already holds a cluster (stop it first)" >&2; exit 1; }
pki=$dir/pki
mkdir -p "$pki" "$dir/logs"
# Whatever goes wrong before the cluster is up, nothing started is left running.
started=""
trap '[ -n "$started" ] || stop "$dir"' EXIT

# Free loopback ports, chosen by the kernel.
read -r etcd_port etcd_peer api_port <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')"

# The cluster CA, the API server's serving certificate, a client certificate per component (the
# API server maps CN to the user and O to its groups), and the service-account signing key.
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=neurodata-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
}
cert() { # NAME SUBJECT [SAN]
  local name=$1 subject=$2 san=${3:-}
  openssl req -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  local ext=$pki/$name.ext
  if [ -n "$san" ]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}
ca
cert apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1"
cert admin "/O=system:masters/CN=neurodata-test-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kwok "/O=system:masters/CN=kwok"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

server=https://127.0.0.1:$api_port
kubeconfig() { # NAME -> DIR/NAME.kubeconfig
  cat >"$dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $pki/$1.crt
    client-key: $pki/$1.key
contexts:
- name: test
  context: {cluster: test, user: $1, namespace: default}
current-context: test
EOF
}
for who in admin controller-manager scheduler kwok; do kubeconfig "$who"; done
cp "$dir/admin.kubeconfig" "$dir/kubeconfig"

launch() { # NAME ARGS...: starts a component in the background and records its pid
  local name=$1
  shift
  "$bin/$name" "$@" >"$dir/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$dir/pids"
}
fail() {
  echo "k8s-cluster: $1 (logs in $dir/logs)" >&2
  tail -n 20 "$dir/logs/"*.log >&2 || true
  stop "$dir"
  exit 1
}

launch etcd --name test --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "test=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn

launch kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --endpoint-reconciler-type none --service-cluster-ip-range 10.96.0.0/16 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --enable-admission-plugins NamespaceLifecycle,ServiceAccount,LimitRanger,DefaultStorageClass,ResourceQuota

ready=""
for _ in $(seq 300); do
  if curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz" >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || fail "the API server did not become ready in 60 s"

launch kube-controller-manager --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --leader-elect=false --secure-port 0 --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*'
launch kube-scheduler --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --leader-elect=false --secure-port 0
launch kwok --kubeconfig "$dir/kwok.kubeconfig" --config "$here/scripts/k8s/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.244.0.0/16 --node-ip 10.0.0.1 --server-address ""

# One fake node, big enough for every test pod; kwok manages it because of its annotation.
api() { # METHOD PATH [JSON]
  curl -sS --fail-with-body --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    -X "$1" -H 'Content-Type: application/json' "$server$2" ${3:+-d "$3"}
}
api POST /api/v1/nodes '{"apiVersion":"v1","kind":"Node","metadata":{"name":"kwok-node-0",
  "annotations":{"kwok.x-k8s.io/node":"fake","node.alpha.kubernetes.io/ttl":"0"},
  "labels":{"kubernetes.io/hostname":"kwok-node-0","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","type":"kwok"}},
  "status":{"capacity":{"cpu":"32","memory":"256Gi","pods":"110"},"allocatable":{"cpu":"32","memory":"256Gi","pods":"110"}}}' \
  >/dev/null || fail "creating the fake node"
node_ready=""
for _ in $(seq 150); do
  if api GET /api/v1/nodes/kwok-node-0 2>/dev/null | grep -q '"type": "Ready",' &&
    api GET /api/v1/nodes/kwok-node-0 | python3 -c '
import json, sys
n = json.load(sys.stdin)
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])) else 1)'; then
    node_ready=yes
    break
  fi
  sleep 0.2
done
[ -n "$node_ready" ] || fail "kwok did not make the node Ready in 30 s"

cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
NEURODATA_K8S_BIN=$bin
NEURODATA_K8S_SERVER=$server
EOF

if [ -n "$owner" ]; then
  # The watchdog: detached from the caller's stdout so the caller does not wait for it.
  nohup bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    "$2" stop "$3" --watchdog
    rm -rf "$3"' watchdog "$owner" "$here/scripts/k8s-cluster.sh" "$dir" >/dev/null 2>&1 &
  echo $! >"$dir/watchdog"
fi
started=yes
echo "$dir/kubeconfig"
