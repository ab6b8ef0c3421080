#!/usr/bin/env bash
# Interop: TensorBoard's own readers load a sweep of two runs tocha wrote: every scalar, image,
# histogram, text and hparams entry comes back with the right tag, step and value, and the
# HParams tab lists both runs sorted by their metric. Run by .ci/run after `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${TOCHA_TB_VENV:-/tmp/tocha-tb-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q tensorboard numpy pillow
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
TOCHA_TB_INTEROP=$out TEST="test_log: interop" ./build/tocha tests/run.lua
"$venv/bin/python" tests/interop/check_tensorboard.py "$out"
