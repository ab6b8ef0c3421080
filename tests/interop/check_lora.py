"""check_lora.py DIR: diffusers reads the LoRA tocha trained (tests/interop/lora_train.lua):
StableDiffusionPipeline.load_lora_weights(DIR/lora) on the base model in DIR/model, at scale
0.7, must give tocha's merged model's UNet output for the same inputs and the pipeline's images
from the same latents (DIR/tocha_io.safetensors) to 1e-4. Exits non-zero on any mismatch."""
import os
import sys

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

root = sys.argv[1]
pipe = StableDiffusionPipeline.from_pretrained(os.path.join(root, "model"), safety_checker=None)
pipe.set_progress_bar_config(disable=True)
io = load_file(os.path.join(root, "tocha_io.safetensors"))
with torch.no_grad():
    before = pipe.unet(io["x"], io["t"], pipe.text_encoder(io["ids"])[0]).sample
pipe.load_lora_weights(os.path.join(root, "lora"), weight_name="pytorch_lora_weights.safetensors")
pipe.fuse_lora(lora_scale=0.7)
ok = True
with torch.no_grad():
    out = pipe.unet(io["x"], io["t"], pipe.text_encoder(io["ids"])[0]).sample
    images = pipe(prompt=["a small red circle on the left", "a green triangle above a star"],
                  negative_prompt=["a blue star", ""], num_inference_steps=10, guidance_scale=7.5,
                  latents=io["latents"], height=16, width=16, output_type="pt").images
for name, got, want in (("unet output", out, io["unet_out"]), ("images", images, io["images"])):
    err = ((got - want).abs().max() / want.abs().max()).item()
    print("%s: largest difference %.3g (relative to the largest value)" % (name, err))
    ok = ok and err < 1e-4
change = ((before - io["unet_out"]).abs().max() / io["unet_out"].abs().max()).item()
print("the LoRA changes the UNet output by %.3g" % change)
ok = ok and change > 1e-2
print("interop lora:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
