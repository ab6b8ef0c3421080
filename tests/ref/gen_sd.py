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
import copy
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


# ---- UNet config variants of SD 1.x / 2.x ---------------------------------------------------------
def f64_time_proj(model):
    # diffusers computes the timestep embedding in float32 for any model dtype; tocha computes
    # it in f64 for an f64 model, so the f64 reference does too (the same formula)
    proj = model.time_proj

    def time_proj_f64(ts):
        half = proj.num_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - proj.downscale_freq_shift))
        a = ts.double()[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(a), torch.sin(a)] if proj.flip_sin_to_cos else [torch.sin(a), torch.cos(a)], dim=-1)
        return torch.nn.functional.pad(emb, (0, proj.num_channels % 2))

    proj.forward = time_proj_f64


def unet_case(case, cfg, sample, t, ctx, class_labels=None, labels_1based=None):
    from diffusers import UNet2DConditionModel
    model = randomize_norms(UNet2DConditionModel(**cfg)).eval()
    weights = model.state_dict()
    io = {"sample": sample, "timestep": t, "context": ctx}
    if class_labels is not None:
        io["class_labels"] = labels_1based if labels_1based is not None else class_labels
    with torch.no_grad():
        io["out"] = model(sample, t, ctx, class_labels=class_labels).sample
    model = model.double()
    f64_time_proj(model)
    cl = class_labels.double() if class_labels is not None and class_labels.is_floating_point() else class_labels
    x = sample.double().requires_grad_()
    y = model(x, t, ctx.double(), class_labels=cl).sample
    r = torch.randn_like(y)
    (y * r).sum().backward()
    io.update({"r": r, "out_f64": y, "grad.sample": x.grad})
    save(case, weights, io, cfg)


small = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[8, 16], layers_per_block=1,
             down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
             norm_num_groups=4)
# SD 2.x: heads per block as a list, linear projections, upcast attention, a 1024-wide text
# (32 here), and class ids through an Embedding (as the x4 upscaler's noise level)
sd2_cfg = dict(small, attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True,
               cross_attention_dim=32, num_class_embeds=5)
labels = torch.tensor([4, 0])
unet_case("unet_sd2", sd2_cfg, torch.randn(2, 4, 8, 8), torch.tensor([981.0, 1.0]), torch.randn(2, 5, 32),
          class_labels=labels, labels_1based=labels + 1)
# a second timestep embedding of class labels (class_embed_type "timestep"), SD 1.x's 768 as 24
ts_cfg = dict(small, attention_head_dim=2, cross_attention_dim=24, class_embed_type="timestep")
unet_case("unet_classts", ts_cfg, torch.randn(2, 4, 8, 8), torch.tensor([500.0, 20.0]), torch.randn(2, 4, 24),
          class_labels=torch.tensor([250.0, 7.0]))
# a vector per sample through one Linear (class_embed_type "simple_projection")
sp_cfg = dict(small, attention_head_dim=4, cross_attention_dim=24, class_embed_type="simple_projection",
              projection_class_embeddings_input_dim=6)
unet_case("unet_classproj", sp_cfg, torch.randn(2, 4, 8, 8), torch.tensor([999.0]), torch.randn(2, 4, 24),
          class_labels=torch.randn(2, 6))


# ---- CLIPTextModel as SD 2.x's OpenCLIP text encoder ----------------------------------------------
def text_case(case, cfg, ids):
    from transformers import CLIPTextConfig, CLIPTextModel
    model = randomize_norms(CLIPTextModel(CLIPTextConfig(**cfg))).eval()
    # saved under the checkpoint names (transformers >= 5 drops the "text_model." prefix)
    weights = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in model.state_dict().items()}
    model = model.double()
    out = model(input_ids=ids, output_hidden_states=True)
    final_norm = model.text_model.final_layer_norm if hasattr(model, "text_model") else model.final_layer_norm
    io = {"ids": ids + 1, "last_hidden_state_f64": out.last_hidden_state, "pooled_f64": out.pooler_output}
    for i, h in enumerate(out.hidden_states):
        io["hidden.%d" % (i + 1)] = h
    # clip skip 2, as diffusers' encode_prompt does it: the final norm on the second-to-last state
    io["clip_skip2"] = final_norm(out.hidden_states[-2])
    save(case, weights, io, cfg)


sd2_text = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=12, hidden_act="gelu", eos_token_id=2, bos_token_id=0, pad_token_id=1,
                projection_dim=16)
ids = torch.randint(1, 97, (2, 12))
ids[:, 0] = 97
ids[0, 5], ids[0, 6:] = 98, 0   # SD 2.x pads with "!" (id 0), not the end token
ids[1, 11] = 98
text_case("text_sd2", sd2_text, ids)


# ---- PNDMScheduler (PLMS) on a fixed model -----------------------------------------------------------
def pndm_case():
    from diffusers import PNDMScheduler
    io = {}
    x0 = torch.randn(1, 4, 4, 4)
    io["x0"] = x0
    for pred in ("epsilon", "v_prediction"):
        for n in (1, 2, 7):
            s = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False, prediction_type=pred)
            s.set_timesteps(n)
            x = x0.clone()
            for t in s.timesteps:
                eps = x * 0.3 + 0.001 * float(t)   # the model: tocha's test computes the same
                x = s.step(eps, t, x).prev_sample
            io["%s_%d" % (pred, n)] = x
            io["%s_%d_timesteps" % (pred, n)] = s.timesteps.clone()
    save("pndm", None, io, None)


pndm_case()

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "models":
    sys.exit(0)


# ---- the pipeline: a diffusers folder and StableDiffusionPipeline's images ---------------------------
def tiny_pipeline():
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    vocab = os.path.join(HERE, "text_vocab")
    tok = CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), model_max_length=16)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=16, eos_token_id=2,
                                      bos_token_id=len(tok) - 2, pad_token_id=len(tok) - 1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[16, 32],
                                layers_per_block=1, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                                attention_head_dim=[2, 4], norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4, sample_size=16)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    for m in (te, unet, vae):
        randomize_norms(m, 0.1).eval()
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


PROMPTS = ["a small red circle on the left", "a big blue square above a green triangle"]
NEGATIVES = ["a yellow star", ""]


def pipe_images(pipe, latents, **kw):
    final = {}

    def grab(p, i, t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    with torch.no_grad():
        out = pipe(prompt=PROMPTS, negative_prompt=NEGATIVES, num_inference_steps=10, guidance_scale=7.5,
                   latents=latents.clone(), output_type="pt", callback_on_step_end=grab, **kw)
    return out.images, final["latents"]


def pipeline_case():
    pipe = tiny_pipeline()
    folder = os.path.join(HERE, "sd_pipe")
    shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # the unet in shards, and an fp16 variant of the vae beside its f32 weights
    os.remove(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    pipe.unet.save_pretrained(os.path.join(folder, "unet"), max_shard_size="150KB")
    copy.deepcopy(pipe.vae).half().save_pretrained(os.path.join(folder, "vae"), variant="fp16")
    latents = torch.randn(2, 4, 8, 8)
    images, final = pipe_images(pipe, latents)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPTS, "cpu", 1, True, NEGATIVES)
        ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
        # clip skip 1 as encode_prompt computes it (its own code path needs transformers < 5)
        te = pipe.text_encoder
        hidden = te(ids, output_hidden_states=True).hidden_states[-2]
        skip = (te.text_model if hasattr(te, "text_model") else te).final_layer_norm(hidden)
    io = {"latents": latents, "images": images, "final_latents": final, "prompt_embeds": cond,
          "negative_prompt_embeds": uncond, "prompt_embeds_clip_skip1": skip, "ids": ids + 1}
    # the same folder loads back in diffusers and gives the same images
    from diffusers import StableDiffusionPipeline
    again = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert torch.allclose(pipe_images(again, latents)[0], images, atol=1e-6)
    save("pipe", None, io, None)
    return pipe, latents


pipe, pipe_latents = pipeline_case()

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "pipe":
    sys.exit(0)
