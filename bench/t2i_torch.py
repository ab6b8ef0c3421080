"""t2i_torch.py: the peer of bench/t2i.lua in PyTorch: the same tiny text encoder (transformers'
CLIPTextModel) and tiny UNet (diffusers' UNet2DConditionModel) with the configs of tocha's presets
and the demo's overrides, batch 24 at 32x32, per-pixel weighted epsilon MSE, backward, AdamW; or
with --ops the same op cases.
Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the bests of the timed repetitions), on
THREADS threads; DEVICE=cuda runs the training step on the GPU, synchronized after each step."""
import os
import sys
import time

import torch
import torch.nn.functional as F

THREADS = int(os.environ.get("THREADS", "2"))
STEPS = int(os.environ.get("STEPS", "5"))
DEVICE = os.environ.get("DEVICE", "cpu")
N, VOCAB, LEN = 24, 1024, 32
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def result(name, times):
    print("RESULT %s %.9g %.9g" % ((name,) + times), flush=True)


def best_of(fn, reps, warm=2):
    """the best wall time and the best CPU time (all threads) per call, as bench/t2i.lua's"""
    for _ in range(warm):
        fn()
    wall = cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def train_step_bench():
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # tocha's models.presets.tiny_text and tiny_unet
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=32, bos_token_id=0, eos_token_id=2,
        pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=32, out_channels=3, block_out_channels=(16, 32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=8,
        cross_attention_dim=64, norm_num_groups=8,
        # the demo's overrides, as bench/t2i.lua
        in_channels=5, time_embedding_dim=512, resnet_time_scale_shift="scale_shift",
        class_embed_type="projection", projection_class_embeddings_input_dim=64)
    text_encoder.to(DEVICE).train()
    unet.to(DEVICE).train()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x0 = (torch.rand(N, 3, 32, 32) * 2 - 1).to(DEVICE)
    xy = (torch.rand(N, 2, 32, 32) * 2 - 1).to(DEVICE)
    weights = (torch.rand(N, 1, 32, 32) + 0.5).to(DEVICE)
    ids = torch.randint(0, VOCAB, (N, LEN)).to(DEVICE)

    def step():
        noise = torch.randn_like(x0)
        ts = torch.randint(0, 1000, (N,)).to(DEVICE)
        xt = sched.add_noise(x0, noise, ts)
        out = text_encoder(ids)
        context = torch.cat([out.last_hidden_state, out.pooler_output[:, None]], 1)
        pred = unet(torch.cat([xt, xy], 1), ts, context, class_labels=out.pooler_output).sample
        (F.mse_loss(pred, noise, reduction="none") * weights).mean().backward()
        opt.step()
        opt.zero_grad()
        if DEVICE != "cpu":
            torch.cuda.synchronize()

    result("train_step", best_of(step, STEPS))


def leaves(*shapes):
    """random inputs that require grad"""
    return [torch.randn(*s, requires_grad=True) for s in shapes]


def quick_gelu(x):
    return x * torch.sigmoid(x * 1.702)


def geglu(x):
    """diffusers' GEGLU after its projection"""
    h, gate = x.chunk(2, dim=-1)
    return h * F.gelu(gate)


def conv3(x, w, b):
    return F.conv2d(x, w, b, padding=1)


def gn(x, w, b):
    return F.group_norm(x, 8, w, b)


# the same cases as bench/t2i.lua's
CASES = [
    ("conv3x3_16x32x32", lambda: leaves((N, 16, 32, 32), (16, 16, 3, 3), (16,)), conv3),
    ("conv3x3_64x8x8", lambda: leaves((N, 64, 8, 8), (64, 64, 3, 3), (64,)), conv3),
    ("group_norm_16x32x32", lambda: leaves((N, 16, 32, 32), (16,), (16,)), gn),
    ("group_norm_64x8x8", lambda: leaves((N, 64, 8, 8), (64,), (64,)), gn),
    ("silu_16x32x32", lambda: leaves((N, 16, 32, 32)), F.silu),
    ("exp_16x32x32", lambda: leaves((N, 16, 32, 32)), torch.exp),
    ("sdpa_self_8x64x8", lambda: leaves((N, 8, 64, 8), (N, 8, 64, 8), (N, 8, 64, 8)), F.scaled_dot_product_attention),
    ("sdpa_cross_8x64x32", lambda: leaves((N, 8, 64, 8), (N, 8, 32, 8), (N, 8, 32, 8)), F.scaled_dot_product_attention),
    ("sdpa_causal_4x32x16", lambda: leaves((N, 4, 32, 16), (N, 4, 32, 16), (N, 4, 32, 16)),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
    ("linear_64to256", lambda: leaves((N, 64, 64), (256, 64), (256,)), F.linear),
    ("layer_norm_64x64", lambda: leaves((N, 64, 64), (64,), (64,)), lambda x, w, b: F.layer_norm(x, (64,), w, b)),
    ("add_bcast_16x32x32", lambda: leaves((N, 16, 32, 32), (N, 16, 1, 1)), lambda a, b: a + b),
    ("mul_64x256", lambda: leaves((N, 64, 256), (N, 64, 256)), lambda a, b: a * b),
    ("gelu_64x256", lambda: leaves((N, 64, 256)), F.gelu),
    ("quick_gelu_32x256", lambda: leaves((N, 32, 256)), quick_gelu),
    ("geglu_64x512", lambda: leaves((N, 64, 512)), geglu),
    ("geglu_sd_4096x2560", lambda: leaves((1, 4096, 2560)), geglu),
    ("bias_gelu_64x256", lambda: leaves((N, 64, 256), (256,)), lambda x, b: F.gelu(x + b)),
    ("cat_32x16x16", lambda: leaves((N, 32, 16, 16), (N, 32, 16, 16)), lambda a, b: torch.cat([a, b], 1)),
    ("upsample_64x8x8", lambda: leaves((N, 64, 8, 8)), lambda x: F.interpolate(x, scale_factor=2, mode="nearest")),
    ("tokens_64x8x8", lambda: leaves((N, 64, 8, 8)), lambda x: x.permute(0, 2, 3, 1).reshape(N, 64, 64)),
    ("mse_3x32x32", lambda: [torch.randn(N, 3, 32, 32, requires_grad=True), torch.randn(N, 3, 32, 32)], F.mse_loss),
    ("sum_16x32x32", lambda: leaves((N, 16, 32, 32)), lambda x: x.sum()),
]


def ops_bench():
    """OPS=silu,exp: only the cases whose names start so; REPS: timed calls per case (default 7)"""
    prefixes = [p for p in os.environ.get("OPS", "").split(",") if p]
    reps = int(os.environ.get("REPS", "7"))
    for name, make, op in CASES:
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        inputs = make()
        gy = torch.randn(op(*inputs).shape)

        def fwd():
            with torch.no_grad():
                op(*inputs)

        def fwdbwd():
            for x in inputs:
                x.grad = None
            op(*inputs).backward(gy)

        result(name + "_fwd", best_of(fwd, reps))
        result(name + "_fwdbwd", best_of(fwdbwd, reps))


if __name__ == "__main__":
    if "--ops" in sys.argv[1:]:
        ops_bench()
    else:
        train_step_bench()
