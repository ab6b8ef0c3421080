#!/usr/bin/env bash
# Interop: a tiny Stable Diffusion that tocha trained and wrote with models.save_pretrained loads
# in diffusers' StableDiffusionPipeline.from_pretrained and gives tocha's images from the same
# latents; PNGs from `tocha sample` carry their settings where PIL reads them. Run by .ci/run
# after `make test`; uses the system Python when it has torch, diffusers and transformers,
# else installs them (CPU torch) into a virtual environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=python3
if ! "$py" -c "import torch, diffusers, transformers, safetensors, PIL" 2>/dev/null; then
    venv=${TOCHA_SD_VENV:-/tmp/tocha-sd-venv}
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
    "$venv/bin/pip" install -q diffusers transformers safetensors pillow
    py="$venv/bin/python"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
./build/tocha tests/interop/sd_train.lua "$out"
./build/tocha sample "$out/model" --prompt "a small red circle on the left" --steps 3 --size 16x16 --n 2 \
    --seed 5 --out "$out/png"
OMP_NUM_THREADS=2 "$py" tests/interop/check_sd.py "$out"
