#!/usr/bin/env bash
# Interop: `tocha eval fid` on two folders gives pytorch-fid's FID (legacy mode) and clean-fid's
# (clean mode) for the same images and the same Inception weights (tocha's stand-in weights,
# tests/ref/eval_weights.lua; the real ones cannot be downloaded here). 70 images a folder and
# the 64-d features keep it to a minute or two. Run by .ci/run after `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${TOCHA_PYTHON:-python3}
if ! "$python" -c "import pytorch_fid, cleanfid, safetensors" 2>/dev/null; then
    venv=${TOCHA_VENV:-/tmp/tocha-interop-venv}
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch torchvision pytorch-fid clean-fid safetensors numpy scipy
    python=$venv/bin/python
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./build/tocha tests/ref/eval_weights.lua "$dir/inception.safetensors" >/dev/null
# shapes scenes washed with a random color and noise of a random strength per image, so that
# the features spread in every direction (plain scenes are mostly background)
DIR=$dir ./build/tocha -e '
local T, image, shapes, dir = require "tocha", require "tocha.image", require "tocha.data.shapes", os.getenv("DIR")
T.manual_seed(0)
for _, spec in ipairs({ { "a", 40, 1, 0.3 }, { "b", 48, 2, 0.6 } }) do
  local size = spec[2]
  local ds = shapes { size = size, seed = spec[3], objects = { 1, 2 }, format = "u8" }
  os.execute("mkdir -p " .. dir .. "/" .. spec[1])
  local b = ds:batch(1, 70)
  for i = 1, 70 do
    local wash = T.rand({ 1, 1, 3 }) * 255 * spec[4]
    local x = b.image[i]:to("f32") * (1 - spec[4]) + wash + T.randn({ size, size, 3 }) * (T.rand({ 1 }):item() * 40)
    image.write(string.format("%s/%s/%03d.png", dir, spec[1], i), x:clamp(0, 255):to("u8"))
  end
end'
ref=$("$python" tests/interop/check_eval.py "$dir/inception.safetensors" "$dir/a" "$dir/b" 64)
echo "$ref"
fail=0
for mode in legacy clean; do
    want=$(echo "$ref" | sed -n "s/^$mode: //p")
    got=$(./build/tocha eval fid "$dir/a" "$dir/b" --weights "$dir/inception.safetensors" --dims 64 --mode $mode \
          --no-cache | sed -n 's/^FID: //p')
    echo "tocha $mode: $got"
    if ! awk -v a="$got" -v b="$want" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d < 1e-4) }'; then
        echo "FAIL: $mode FID $got, the reference $want"
        fail=1
    fi
done
exit $fail
