#!/usr/bin/env bash
# Installs the system packages the build needs, from Debian's packages, when they are missing:
# clang + libclang (rocksdb's bindgen), libssl-dev + pkg-config (openssl crate), the openssl CLI
# (tests and benchmarks compare against it), qemu-user (the trainer's bit-exactness test runs
# jobs on emulated CPU models), curl (scripts/k8s-cluster.sh), libfaketime (the clock-skew test). Idempotent; quiet when everything is present.
set -euo pipefail
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
# clang-sys needs the unversioned libclang.so (libclang-dev), not only libclang-NN.so.1
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || need+=(libclang-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v qemu-x86_64 >/dev/null 2>&1 || need+=(qemu-user)
# scripts/k8s-cluster.sh talks to the test API server with curl.
command -v curl >/dev/null 2>&1 || need+=(curl)
# The devnet's clock-skew test runs one node's app under libfaketime.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need+=(libfaketime)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
