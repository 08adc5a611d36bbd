#!/usr/bin/env bash
# Creates the dev consortium used by the tests and the local network: three orgs (medlab,
# healthtech, datacorp), each with its root CA and one member per role (admin, provider, buyer,
# trainer, validator), and checks every certificate with `openssl verify`.
# Usage: certs/dev-consortium.sh [DIR]   (default ./consortium)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-./consortium}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/neurodata/target}
cargo build -q -p ndctl --manifest-path "$here/Cargo.toml"
"$CARGO_TARGET_DIR/debug/ndctl" ca dev-consortium --dir "$dir"
for org in medlab healthtech datacorp; do
  for role in admin provider buyer trainer validator; do
    openssl verify -CAfile "$dir/$org/ca.pem" "$dir/$org/$role.pem" >/dev/null
  done
done
echo "dev consortium in $dir: 3 orgs x 5 roles, all certificates verified by openssl"
