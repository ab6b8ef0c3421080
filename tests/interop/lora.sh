#!/usr/bin/env bash
# Interop: a LoRA that tocha trained on a tiny Stable Diffusion (UNet attention and text-encoder
# adapters, alpha ~= rank) loads with diffusers' load_lora_weights and changes the model's output
# exactly as tocha's merged model does (1e-4). Run by .ci/run after `make test`; uses the system
# Python when it has torch, diffusers, transformers and peft, else installs them (CPU torch)
# into a virtual environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=python3
if ! "$py" -c "import torch, diffusers, transformers, peft, safetensors" 2>/dev/null; then
    venv=${TOCHA_SD_VENV:-/tmp/tocha-sd-venv}
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
    "$venv/bin/pip" install -q diffusers transformers peft safetensors pillow
    py="$venv/bin/python"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./build/tocha tests/interop/lora_train.lua "$out"
OMP_NUM_THREADS=2 "$py" tests/interop/check_lora.py "$out"
