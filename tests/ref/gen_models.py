# tests/ref/gen_models.py: references for tests/test_models.lua from transformers' CLIPTextModel
# and diffusers' UNet2DConditionModel, built from tiny configs with random weights. For each case
#   tests/ref/models_<case>.safetensors     the state_dict (f32), under the checkpoint names
#   tests/ref/models_<case>_io.safetensors  inputs, outputs (f32 and f64) and some gradients (f64)
# Token ids are saved 1-based (tocha's convention). Run by hand:
#   python3 tests/ref/gen_models.py   (needs torch, safetensors, transformers, diffusers)
import json
import math
import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)


def randomize_norms(model):
    # norms start at ones / zeros; random values make the comparison see them
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
    return model


def save(case, weights, io, config):
    save_file({k: v.detach().contiguous() for k, v in weights.items()},
              os.path.join(HERE, "models_%s.safetensors" % case), metadata={"config": json.dumps(config)})
    save_file({k: v.detach().contiguous() for k, v in io.items()}, os.path.join(HERE, "models_%s_io.safetensors" % case))


# ---- CLIP text encoder ------------------------------------------------------------------------
def clip_case(case, cfg, ids, mask=None, grad_names=()):
    model = randomize_norms(CLIPTextModel(CLIPTextConfig(**cfg))).eval()
    # transformers >= 5 saves CLIPTextModel without the "text_model." prefix that checkpoints
    # (Stable Diffusion's text_encoder) have: save them as checkpoints do
    weights = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in model.state_dict().items()}
    io = {"ids": ids + 1}
    if mask is not None:
        io["attention_mask"] = mask
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    io["last_hidden_state"], io["pooled"] = out.last_hidden_state, out.pooler_output
    model = model.double()
    out = model(input_ids=ids, attention_mask=mask)
    r = torch.randn_like(out.last_hidden_state)
    ((out.last_hidden_state * r).sum() + out.pooler_output.sum()).backward()
    io["r"], io["last_hidden_state_f64"], io["pooled_f64"] = r, out.last_hidden_state, out.pooler_output
    params = dict(model.named_parameters())
    for name in grad_names:
        io["grad." + name] = params[name].grad
    save(case, weights, io, cfg)


text_cfg = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=12)
ids = torch.randint(0, 97, (3, 10))
ids[:, 0] = 97  # a start token, then an end token (the largest id) and padding, as CLIP's tokenizer
ids[0, 6:] = 98
ids[1, 9] = 98
ids[2, 3:] = 98
clip_case("text", dict(text_cfg, eos_token_id=2), ids,
          grad_names=["embeddings.token_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight",
                      "encoder.layers.1.mlp.fc1.bias", "final_layer_norm.weight"])
# an explicit end token that is not the largest id, gelu, and a padding mask
ids2 = ids.clone()
ids2[ids2 == 5] = 6
ids2[ids2 == 98] = 5
mask = (torch.arange(10)[None, :] <= torch.tensor([[6], [9], [3]])).long()
clip_case("text_mask", dict(text_cfg, eos_token_id=5, hidden_act="gelu", max_position_embeddings=10), ids2, mask)


# ---- UNet ----------------------------------------------------------------------------------------
def unet_case(case, cfg, sample, t, ctx, ctx_mask=None, grad_names=()):
    model = randomize_norms(UNet2DConditionModel(**cfg)).eval()
    weights = model.state_dict()
    io = {"sample": sample, "timestep": t, "context": ctx}
    if ctx_mask is not None:
        io["encoder_attention_mask"] = ctx_mask
    with torch.no_grad():
        io["out"] = model(sample, t, ctx, encoder_attention_mask=ctx_mask).sample
    model = model.double()
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
    x = sample.double().requires_grad_()
    c = ctx.double().requires_grad_()
    y = model(x, t, c, encoder_attention_mask=ctx_mask).sample
    r = torch.randn_like(y)
    (y * r).sum().backward()
    io.update({"r": r, "out_f64": y, "grad.sample": x.grad, "grad.context": c.grad})
    params = dict(model.named_parameters())
    for name in grad_names:
        io["grad." + name] = params[name].grad
    save(case, weights, io, cfg)


# SD's layout at a small size: cross-attention at the top level, a plain block below
unet_cfg = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[16, 32], layers_per_block=1,
                down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                attention_head_dim=[2, 4], cross_attention_dim=24, norm_num_groups=4)
unet_case("unet", unet_cfg, torch.randn(2, 4, 16, 16), torch.tensor([999.0, 17.0]), torch.randn(2, 7, 24),
          grad_names=["conv_in.weight", "time_embedding.linear_1.weight",
                      "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                      "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
                      "mid_block.attentions.0.norm.weight", "up_blocks.0.resnets.1.conv_shortcut.weight",
                      "up_blocks.0.upsamplers.0.conv.bias", "conv_out.weight"])

# the odd corners: three levels, odd spatial sizes (upsampling to the skip's size), linear
# projections, two transformer layers, per-block lists, padding 0 downsampling, other kernels,
# a mid-block scale, sin-first embedding with a shift, centred input, and a text mask
odd_cfg = dict(in_channels=3, out_channels=2, block_out_channels=[8, 16, 16], layers_per_block=[1, 2, 1],
               down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
               up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
               attention_head_dim=[1, 2, 4], cross_attention_dim=12, norm_num_groups=4,
               use_linear_projection=True, transformer_layers_per_block=[1, 2, 1], downsample_padding=0,
               conv_in_kernel=5, conv_out_kernel=1, mid_block_scale_factor=2.0, flip_sin_to_cos=False,
               freq_shift=1, center_input_sample=True, time_embedding_dim=24, norm_eps=1e-6)
unet_case("unet_odd", odd_cfg, torch.rand(2, 3, 11, 9), torch.tensor([500.0]), torch.randn(2, 5, 12),
          ctx_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
          grad_names=["down_blocks.1.attentions.1.transformer_blocks.1.attn1.to_v.weight",
                      "up_blocks.1.resnets.2.norm1.bias"])

# the time embedding as a scale and shift after norm2 (resnet_time_scale_shift "scale_shift")
ss_cfg = dict(unet_cfg, resnet_time_scale_shift="scale_shift")
unet_case("unet_ss", ss_cfg, torch.randn(2, 4, 16, 16), torch.tensor([640.0, 3.0]), torch.randn(2, 7, 24),
          grad_names=["down_blocks.0.resnets.0.time_emb_proj.weight", "mid_block.resnets.1.time_emb_proj.bias"])

total = 0
for f in sorted(os.listdir(HERE)):
    if f.startswith("models_"):
        total += os.path.getsize(os.path.join(HERE, f))
        print("%-40s %8d bytes" % (f, os.path.getsize(os.path.join(HERE, f))))
print("total %d bytes" % total)
