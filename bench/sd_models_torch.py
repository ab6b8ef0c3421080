"""sd_models_torch.py [unet|vae|text|attn|convs ...]: the peer of bench/sd_models.lua: Stable Diffusion 1.5's
UNet (64x64 latents, batch 1), VAE decoder (512x512) and text encoder (77 tokens) with random
weights in diffusers / transformers, forward only under inference_mode, f32, THREADS threads,
torch.nn.functional.scaled_dot_product_attention at the UNet's largest attention (forward,
forward + backward), and (convs, not run by default) the UNet's 3x3 convolutions at 32x32 and 64x64.
Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the best of the timed calls)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from t2i_torch import best_of, result  # noqa: E402  (the same timing as the other benchmarks)

THREADS = int(os.environ.get("THREADS", "2"))
REPS = int(os.environ.get("REPS", "1"))
SIZE = int(os.environ.get("SIZE", "64"))
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def text():
    from transformers import CLIPTextConfig, CLIPTextModel
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")).eval()
    ids = torch.randint(0, 49408, (1, 77))
    with torch.inference_mode():
        result("text_encoder_77", best_of(lambda: te(ids), 5 * REPS, warm=1))


def unet():
    from diffusers import UNet2DConditionModel
    m = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, block_out_channels=[320, 640, 1280, 1280],
                             layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
                             down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                             up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3).eval()
    x, ctx = torch.randn(1, 4, SIZE, SIZE), torch.randn(1, 77, 768)
    with torch.inference_mode():
        result("unet_64x64", best_of(lambda: m(x, 500, ctx), 2 * REPS, warm=1))


def vae():
    from diffusers import AutoencoderKL
    m = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                      down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                      norm_num_groups=32, sample_size=512).eval()
    z = torch.randn(1, 4, SIZE, SIZE)
    with torch.inference_mode():
        result("vae_decode_512", best_of(lambda: m.decode(z), 2 * REPS, warm=1))


def attn():
    import torch.nn.functional as F
    n = SIZE * SIZE
    for kind, s in (("self", n), ("cross", 77)):
        name = "sdpa_%s_%dx%d" % (kind, n, s)
        q = torch.randn(2, 8, n, 40, requires_grad=True)
        k, v = torch.randn(2, 8, s, 40, requires_grad=True), torch.randn(2, 8, s, 40, requires_grad=True)
        gy = torch.randn(2, 8, n, 40)
        with torch.no_grad():
            result(name + "_fwd", best_of(lambda: F.scaled_dot_product_attention(q, k, v), 3 * REPS, warm=1))

        def fwdbwd():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v).backward(gy)
        result(name + "_fwdbwd", best_of(fwdbwd, 2 * REPS, warm=1))


CONVS = [(320, 320, 64), (640, 320, 64), (960, 320, 64), (640, 640, 64), (320, 640, 32), (640, 640, 32),
         (960, 640, 32), (1280, 640, 32), (1920, 640, 32), (1280, 1280, 32)]  # C, O, side (at SIZE = 64)


def convs():
    import torch.nn.functional as F
    for c, o, side in CONVS:
        side = side * SIZE // 64
        x, w, b = torch.randn(1, c, side, side), torch.randn(o, c, 3, 3), torch.randn(o)
        with torch.inference_mode():
            result("conv3x3_%dto%d_%dx%d" % (c, o, side, side),
                   best_of(lambda: F.conv2d(x, w, b, padding=1), 3 * REPS, warm=1))


for name in sys.argv[1:] or ["text", "unet", "vae", "attn"]:
    {"text": text, "unet": unet, "vae": vae, "attn": attn, "convs": convs}[name]()
