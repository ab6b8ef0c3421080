"""sd_load_torch.py DIR PARTS DTYPE: the peer of bench/sd_load.lua: diffusers' and transformers'
from_pretrained on the folder bench/sd_load.lua made (PARTS "unet" or "all", torch_dtype from
DTYPE), then every weight read once. Prints the same "RESULT <name> <value>" lines: seconds,
and the peak resident memory (VmHWM, MB) before loading, after loading and after reading."""
import os
import sys
import time

import torch

root, which, dtype = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "unet", sys.argv[3] if len(sys.argv) > 3 else "f16"
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402  (imported before the first reading)
from transformers import CLIPTextModel  # noqa: E402


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def result(name, v):
    print("RESULT %s %.6g" % (name, v), flush=True)


td = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}[dtype]
before = peak_mb()
t0 = time.perf_counter()
models = [UNet2DConditionModel.from_pretrained(os.path.join(root, "unet"), torch_dtype=td)]
if which == "all":
    models.append(AutoencoderKL.from_pretrained(os.path.join(root, "vae"), torch_dtype=td))
    models.append(CLIPTextModel.from_pretrained(os.path.join(root, "text_encoder"), torch_dtype=td))
t_load = time.perf_counter() - t0
after = peak_mb()
total = 0.0
with torch.no_grad():
    for m in models:
        for p in m.parameters():
            total += p.sum().item()
t_read = time.perf_counter() - t0
result("load_s", t_load)
result("load_read_s", t_read)
result("rss_before_mb", before)
result("rss_loaded_mb", after)
result("rss_read_mb", peak_mb())
assert total == total
