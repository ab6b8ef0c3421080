"""check_sd.py DIR: diffusers reads what tocha wrote (tests/interop/sd_train.lua): a diffusers
folder in DIR/model that StableDiffusionPipeline.from_pretrained loads and samples from; its
images from the same latents must equal tocha's (DIR/tocha_io.safetensors) to 1e-4, and a PNG
that `tocha sample` wrote (DIR/png/*.png, when present) must carry its settings in a
"parameters" text chunk that PIL reads. Exits non-zero on any mismatch."""
import glob
import os
import sys

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

root = sys.argv[1]
pipe = StableDiffusionPipeline.from_pretrained(os.path.join(root, "model"), safety_checker=None)
pipe.set_progress_bar_config(disable=True)
print("loaded", type(pipe.unet).__name__, type(pipe.vae).__name__, type(pipe.text_encoder).__name__,
      type(pipe.tokenizer).__name__, type(pipe.scheduler).__name__)
io = load_file(os.path.join(root, "tocha_io.safetensors"))
with torch.no_grad():
    images = pipe(prompt=["a small red circle on the left", "a green triangle above a star"],
                  negative_prompt=["a blue star", ""], num_inference_steps=10, guidance_scale=7.5,
                  latents=io["latents"], height=16, width=16, output_type="pt").images
err = ((images - io["images"]).abs().max() / io["images"].abs().max()).item()
print("images: largest difference %.3g (relative to the largest value)" % err)
ok = err < 1e-4
for png in sorted(glob.glob(os.path.join(root, "png", "*.png"))):
    from PIL import Image
    im = Image.open(png)
    params = im.info.get("parameters", "")
    print("%s: %dx%d, parameters: %r" % (os.path.basename(png), im.width, im.height, params))
    ok = ok and "Steps: " in params and "Seed: " in params and "Sampler: " in params
print("interop sd:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
