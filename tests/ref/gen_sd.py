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


# ---- single-file CompVis checkpoints ------------------------------------------------------------------
# The names of the original (CompVis / ldm) checkpoints, written from a diffusers pipeline by the
# mapping below, for any number of levels and layers (diffusers' own converter in that direction,
# scripts/convert_diffusers_to_original_stable_diffusion.py in its repository, is written for SD's
# exact layout and older VAE names). Each file is then converted back by diffusers' own
# single-file functions, which must give every diffusers tensor back exactly.
RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(sd, cfg):
    L = cfg["layers_per_block"]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}
    has_attn = {k.split(".")[1] for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for k, v in sd.items():
        head, _, leaf = k.rpartition(".")
        parts = head.split(".")
        if head in fixed:
            new = fixed[head]
        elif parts[0] == "down_blocks":
            b, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = "input_blocks.%d.0.op" % ((b + 1) * (L + 1))
            else:
                i = 1 + b * (L + 1) + int(parts[3])
                new = "input_blocks.%d.%d.%s" % (i, 0 if kind == "resnets" else 1, ".".join(parts[4:]))
        elif parts[0] == "mid_block":
            j = int(parts[2])
            new = "middle_block.%d.%s" % (2 * j if parts[1] == "resnets" else 1, ".".join(parts[3:]))
        elif parts[0] == "up_blocks":
            b, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                new = "output_blocks.%d.%d.conv" % (b * (L + 1) + L, 2 if parts[1] in has_attn else 1)
            else:
                i = b * (L + 1) + int(parts[3])
                new = "output_blocks.%d.%d.%s" % (i, 0 if kind == "resnets" else 1, ".".join(parts[4:]))
        else:
            raise ValueError("unmapped unet key " + k)
        if ".resnets." in k or "mid_block.resnets" in k:
            pre, _, last = new.rpartition(".")
            new = pre + "." + dict(RESNET)[last] if last in dict(RESNET) else new
        out["model.diffusion_model." + new + "." + leaf] = v
    return out


def vae_to_ldm(sd, levels):
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        new = k
        for side in ("encoder", "decoder"):
            new = new.replace(side + ".mid_block.resnets.0.", side + ".mid.block_1.")
            new = new.replace(side + ".mid_block.resnets.1.", side + ".mid.block_2.")
            new = new.replace(side + ".conv_norm_out.", side + ".norm_out.")
            if side + ".mid_block.attentions.0." in new:
                rest = new.split(side + ".mid_block.attentions.0.")[1]
                name, _, leaf = rest.rpartition(".")
                new = "%s.mid.attn_1.%s.%s" % (side, attn[name], leaf)
                if leaf == "weight" and name != "group_norm":
                    v = v.reshape(*v.shape, 1, 1)
        parts = new.split(".")
        if parts[0] == "encoder" and parts[1] == "down_blocks":
            if parts[3] == "resnets":
                new = "encoder.down.%s.block.%s.%s" % (parts[2], parts[4], ".".join(parts[5:]))
            else:
                new = "encoder.down.%s.downsample.conv.%s" % (parts[2], parts[-1])
        elif parts[0] == "decoder" and parts[1] == "up_blocks":
            i = levels - 1 - int(parts[2])
            if parts[3] == "resnets":
                new = "decoder.up.%d.block.%s.%s" % (i, parts[4], ".".join(parts[5:]))
            else:
                new = "decoder.up.%d.upsample.conv.%s" % (i, parts[-1])
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        out["first_stage_model." + new] = v
    return out


def clip_to_ldm(sd):
    return {"cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: v
            for k, v in sd.items()}


def openclip_to_ldm(sd, layers, extra_layer, projection):
    p = "cond_stage_model.model."
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    out = {p + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           p + "positional_embedding": sd["embeddings.position_embedding.weight"],
           p + "ln_final.weight": sd["final_layer_norm.weight"], p + "ln_final.bias": sd["final_layer_norm.bias"],
           p + "text_projection": projection, p + "logit_scale": torch.tensor(4.6052)}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(layers):
        src = "encoder.layers.%d." % i
        dst = p + "transformer.resblocks.%d." % i
        for leaf in ("weight", "bias"):
            out[dst + "attn.in_proj_" + leaf] = torch.cat([sd[src + "self_attn.%s_proj.%s" % (x, leaf)] for x in "qkv"])
            for a, b in names.items():
                out[dst + b + "." + leaf] = sd[src + a + "." + leaf]
    # the last OpenCLIP layer, which Stable Diffusion 2.x skips (it uses the penultimate one)
    for k, v in extra_layer.items():
        out[p + "transformer.resblocks.%d.%s" % (layers, k)] = v
    return out


def check_with_diffusers(single, pipe, sd2):
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)

    def same(name, got, want, allow_extra=False):
        want = {k: v for k, v in want.items()}
        for k, v in want.items():
            assert k in got, "%s: diffusers' conversion lacks %s" % (name, k)
            assert torch.equal(got[k].reshape(v.shape), v), "%s: %s differs" % (name, k)
        extra = set(got) - set(want)
        assert allow_extra or not extra, "%s: unexpected %s" % (name, sorted(extra)[:5])
        return extra

    same("unet", convert_ldm_unet_checkpoint(single, pipe.unet.config), pipe.unet.state_dict())
    same("vae", convert_ldm_vae_checkpoint(single, pipe.vae.config), pipe.vae.state_dict())
    te = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in pipe.text_encoder.state_dict().items()}
    if sd2:
        extra = same("text_encoder", convert_open_clip_checkpoint(pipe.text_encoder, single), te, allow_extra=True)
        assert all(".layers.%d." % pipe.text_encoder.config.num_hidden_layers in k or "text_projection" in k
                   for k in extra), sorted(extra)
    else:
        got = convert_ldm_clip_checkpoint(single)
        same("text_encoder", {k: v for k, v in got.items() if k != "text_model.embeddings.position_ids"}, te)


def sd2_pipeline():
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    vocab = os.path.join(HERE, "text_vocab")
    tok = CLIPTokenizer(os.path.join(vocab, "vocab.json"), os.path.join(vocab, "merges.txt"), model_max_length=16,
                        pad_token="!")
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=3, max_position_embeddings=16, hidden_act="gelu",
                                      eos_token_id=2, bos_token_id=len(tok) - 2, pad_token_id=0))
    # SD 2.x's layout at a tiny size: four levels of two layers, cross-attention in the first three
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[8, 16, 16, 16],
                                layers_per_block=2, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                                up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=24,
                                attention_head_dim=[1, 2, 2, 2], use_linear_projection=True, upcast_attention=True,
                                norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4, sample_size=16)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    for m in (te, unet, vae):
        randomize_norms(m, 0.1).eval()
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def single_file_case(case, pipe, latents, sd2):
    single = {}
    single.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    single.update(vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    te = pipe.text_encoder.state_dict()
    if sd2:
        d = pipe.text_encoder.config.hidden_size
        layer = {"attn.in_proj_weight": torch.randn(3 * d, d), "attn.in_proj_bias": torch.randn(3 * d),
                 "attn.out_proj.weight": torch.randn(d, d), "attn.out_proj.bias": torch.randn(d),
                 "ln_1.weight": torch.randn(d), "ln_1.bias": torch.randn(d), "ln_2.weight": torch.randn(d),
                 "ln_2.bias": torch.randn(d), "mlp.c_fc.weight": torch.randn(2 * d, d), "mlp.c_fc.bias": torch.randn(2 * d),
                 "mlp.c_proj.weight": torch.randn(d, 2 * d), "mlp.c_proj.bias": torch.randn(d)}
        single.update(openclip_to_ldm(te, pipe.text_encoder.config.num_hidden_layers, layer, torch.randn(d, 16)))
    else:
        single.update(clip_to_ldm(te))
        single["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(16)[None]
    # what original checkpoints also hold besides the weights: the noise schedule's buffers
    single["alphas_cumprod"] = torch.cumprod(1 - pipe.scheduler.betas, 0)
    check_with_diffusers(single, pipe, sd2)
    save_file({k: v.contiguous() for k, v in single.items()}, os.path.join(HERE, "sd_single_%s.safetensors" % case))
    images, final = pipe_images(pipe, latents)
    save("single_" + case, None, {"latents": latents, "images": images, "final_latents": final}, None)
    return images


def check_from_single_file(case, folder, latents, images):
    # diffusers' own loader reads the file (its configs from the folder) and draws the same images
    from diffusers import StableDiffusionPipeline
    again = StableDiffusionPipeline.from_single_file(os.path.join(HERE, "sd_single_%s.safetensors" % case),
                                                     config=folder, safety_checker=None, local_files_only=True)
    assert torch.equal(pipe_images(again, latents)[0], images), case


images_v1 = single_file_case("v1", pipe, pipe_latents, False)
check_from_single_file("v1", os.path.join(HERE, "sd_pipe"), pipe_latents, images_v1)
pipe2 = sd2_pipeline()
v2_folder = os.path.join(HERE, "sd_pipe_v2")
shutil.rmtree(v2_folder, ignore_errors=True)
pipe2.save_pretrained(v2_folder, safe_serialization=True)
for name in ("unet", "vae", "text_encoder"):  # the weights live in the single file; keep the configs
    for f in os.listdir(os.path.join(v2_folder, name)):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(v2_folder, name, f))
latents_v2 = torch.randn(2, 4, 8, 8)
images_v2 = single_file_case("v2", pipe2, latents_v2, True)
check_from_single_file("v2", v2_folder, latents_v2, images_v2)
print("tests/ref: %.1f MB" % (sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(HERE) for f in fs) / 1e6))
