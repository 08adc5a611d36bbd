#!/usr/bin/env bash
# Creates (once) the Python environment the interop tests use: grpcio + grpcio-tools (stubs
# generated from proto/ at test time), cryptography (the client signs its own txs) and
# moto (an S3-compatible server for the blob store tests) and scikit-learn (the trainer's
# reference), from PyPI, in a virtualenv cached outside the
# clone. Prints the interpreter's path.
set -euo pipefail
venv=${NEURODATA_PYENV:-$HOME/.cache/neurodata/pyenv}
stamp="$venv/.neurodata-requirements"
want="grpcio==1.76.0 grpcio-tools==1.76.0 cryptography==46.0.3 moto[server]==5.1.18 scikit-learn==1.9.1"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian splits venv out of python3.
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $want >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
