#!/usr/bin/env bash
# Interop: a file tocha writes loads in the Python safetensors package with the expected
# names, dtypes, shapes, values and metadata. Run by .ci/run after `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${TOCHA_VENV:-/tmp/tocha-interop-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q safetensors numpy
out=$(mktemp -d)/tocha.safetensors
TOCHA_SAFETENSORS_INTEROP=$out TEST="test_safetensors: interop" ./build/tocha tests/run.lua
"$venv/bin/python" tests/interop/check_safetensors.py "$out"
