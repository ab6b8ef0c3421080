# tests/ref/gen_sd.py: references for tests/test_sd.lua (Stable Diffusion in tocha) from diffusers and
# transformers, with tiny configs and random weights:
#   sd_vae*.safetensors          AutoencoderKL weights; *_io: inputs, encode / decode outputs, gradients
#   sd_unet_*.safetensors        UNet2DConditionModel config variants of SD 1.x / 2.x; *_io: outputs
#   sd_text_*.safetensors        CLIPTextModel as SD 2.x's OpenCLIP (gelu, hidden states); *_io
#   sd_pndm_io.safetensors       PNDMScheduler (PLMS) on a fixed model
#   sd_pipe/                     a diffusers folder (StableDiffusionPipeline.save_pretrained)
#   sd_pipe_io.safetensors       its outputs from fixed initial latents (DDIM 10 steps, guidance 7.5)
#   sd_single_v1.safetensors,    the same pipeline as one CompVis checkpoint (SD 1.x keys), and an
#   sd_single_v2.safetensors     SD 2.x one, each checked key for key by diffusers' own single-file
#                                conversion before it is written; *_io: their outputs
# Token ids are saved 1-based (tocha's convention). Run by hand:
#   python3 tests/ref/gen_sd.py   (needs torch, safetensors, transformers, diffusers)
import json
import math
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)


def randomize_norms(model, scale=0.3):
    # norms start at ones / zeros; random values make the comparison see them
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + scale * torch.randn_like(p))
    return model


def save(case, weights, io, config):
    if weights is not None:
        save_file({k: v.detach().contiguous() for k, v in weights.items()},
                  os.path.join(HERE, "sd_%s.safetensors" % case), metadata={"config": json.dumps(config)})
    save_file({k: v.detach().contiguous() for k, v in io.items()}, os.path.join(HERE, "sd_%s_io.safetensors" % case))


# ---- AutoencoderKL ---------------------------------------------------------------------------------
def vae_case(case, cfg, x, z, grad_names=(), tiling=False):
    model = randomize_norms(AutoencoderKL(**cfg)).eval()
    weights = model.state_dict()
    if tiling:
        model.enable_tiling()
    io = {"x": x, "z": z}
    with torch.no_grad():
        post = model.encode(x).latent_dist
        io["mean"], io["logvar"] = post.mean, post.logvar
        io["decoded"] = model.decode(z).sample
    model = model.double()
    xd = x.double().requires_grad_()
    post = model.encode(xd).latent_dist
    r1, r2 = torch.randn_like(post.mean), torch.randn_like(post.logvar)
    ((post.mean * r1).sum() + (post.logvar * r2).sum() + post.kl().sum()).backward()
    io.update({"r1": r1, "r2": r2, "mean_f64": post.mean, "logvar_f64": post.logvar, "kl_f64": post.kl(),
               "grad.x": xd.grad})
    params = dict(model.named_parameters())
    for name in grad_names:
        if params[name].grad is not None:
            io["grad.encode." + name] = params[name].grad
    model.zero_grad()
    zd = z.double().requires_grad_()
    y = model.decode(zd).sample
    r3 = torch.randn_like(y)
    (y * r3).sum().backward()
    io.update({"r3": r3, "decoded_f64": y, "grad.z": zd.grad})
    for name in grad_names:
        if params[name].grad is not None:
            io["grad.decode." + name] = params[name].grad
    save(case, weights, io, cfg)


vae_cfg = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16, 16], layers_per_block=2,
               down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
               norm_num_groups=4, sample_size=32, scaling_factor=0.5)
vae_case("vae", vae_cfg, torch.rand(2, 3, 12, 20) * 2 - 1, torch.randn(2, 4, 3, 5),
         grad_names=["encoder.conv_in.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                     "encoder.mid_block.attentions.0.to_q.weight", "encoder.mid_block.attentions.0.group_norm.bias",
                     "quant_conv.weight", "post_quant_conv.bias", "decoder.up_blocks.0.upsamplers.0.conv.weight",
                     "decoder.mid_block.attentions.0.to_out.0.weight", "decoder.conv_out.bias"])
# tiles of 16 pixels (8 latents at two levels): a 28 x 40 image and 14 x 20 latents go through
# overlapping tiles blended together; no mid-block attention, no quant convs
tile_cfg = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                norm_num_groups=4, sample_size=16, mid_block_add_attention=False, use_quant_conv=False,
                use_post_quant_conv=False)
vae_case("vae_tiled", tile_cfg, torch.rand(1, 3, 28, 40) * 2 - 1, torch.randn(1, 4, 14, 20), tiling=True)

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "vae":
    sys.exit(0)
