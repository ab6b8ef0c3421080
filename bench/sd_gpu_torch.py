"""sd_gpu_torch.py: the peer of bench/sd_gpu.lua in PyTorch eager + diffusers, random weights:
SD 1.5's UNet training step (bf16 autocast, 64x64 latents, batch 8, noise-prediction MSE, AdamW
with foreach, SDPA attention), the fine-tuning recipe's step (batch 16, clipping), the step's
peak memory with and without gradient checkpointing, DDIM
sampling (50 steps, guidance 7.5, batch 1, f16, then the VAE's decode to 512x512; sample_graph:
the same with the guided UNet pass captured once in a torch.cuda.CUDAGraph on static inputs and
replayed at each step, as diffusers users do), the bf16 GEMM rate, and attention fwd+bwd in bf16 at
SD's shapes (scaled_dot_product_attention, its best backend). Timed as tocha's side (synchronize around each round, the median of the rounds).
Prints "RESULT <name> <seconds per iteration> <model FLOPs per iteration>" (FLOPs from
torch.utils.flop_counter for the training step, else 0) and "MEM <name> <peak bytes>".
  python3 bench/sd_gpu_torch.py [--small] [--channels_last] [gemm attention train recipe memory sample sample_graph ...]
(--small: the tiny UNet and VAE at 16x16 latents, 3 sampling steps; runs on the CPU without a GPU)"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

small = "--small" in sys.argv
channels_last = "--channels_last" in sys.argv
which = [a for a in sys.argv[1:] if a not in ("--small", "--channels_last")] or [
    "gemm", "attention", "train", "recipe", "memory", "sample", "sample_graph"]
gpu = torch.cuda.is_available()
if not gpu and not small:
    print("SKIP no CUDA GPU (torch.cuda.is_available() is false)")
    sys.exit(0)
dev = "cuda" if gpu else "cpu"
ROUNDS = 2 if small else 5
BATCH, SIZE, STEPS = (2, 16, 3) if small else (8, 64, 50)
# tocha's presets: sd15_unet / sd15_vae, or tiny_unet / tiny_vae with 4 latent channels
if small:
    UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 64),
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=8,
                cross_attention_dim=64, norm_num_groups=8)
    VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
               norm_num_groups=8, sample_size=64)
else:
    UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8,
                cross_attention_dim=768, norm_num_groups=32)
    VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, norm_num_groups=32, sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
CTX = UNET["cross_attention_dim"]
print(f"INFO device {torch.cuda.get_device_name(0) if gpu else 'cpu'} torch {torch.__version__}"
      + (" (--small sizes)" if small else ""), flush=True)


def sync():
    if gpu:
        torch.cuda.synchronize()


def bench(name, iters, warm, fn, flops=0):
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(ROUNDS):
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / iters)
    print(f"RESULT {name} {statistics.median_low(times):.9g} {flops:.6g}", flush=True)


def gemm():
    n = 256 if small else 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    bench(f"sd_gemm_bf16_{n}", 2 if small else 20, 3, lambda: a @ b)


ATTN_SHAPES = ((4096, 4096, 40), (1024, 1024, 80), (256, 256, 160), (4096, 77, 40))


def attention():
    """fwd+bwd of scaled_dot_product_attention in bf16 (its own choice of backend), tocha's shapes"""
    b, h = (1, 2) if small else (8, 8)
    for L, S, E in ATTN_SHAPES:
        if small:
            L, S = L // 16, S if S == 77 else S // 16
        torch.manual_seed(0)
        dt = torch.bfloat16 if gpu else torch.float32
        q, k, v = (torch.randn(b, h, n, E, device=dev, dtype=dt, requires_grad=True) for n in (L, S, S))
        gy = torch.randn(b, h, L, E, device=dev, dtype=dt)

        def step():
            F.scaled_dot_product_attention(q, k, v).backward(gy)
            q.grad = k.grad = v.grad = None
        bench(f"sd_attn_b{b}h{h}_L{L}_S{S}_d{E}", 2 if small else 20, 3, step)


def trainer(checkpointing, batch=BATCH, clip=None):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET).to(dev).train()
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2, foreach=True)
    x = torch.randn(batch, 4, SIZE, SIZE, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    noise = torch.randn(batch, 4, SIZE, SIZE, device=dev)
    ctx = torch.randn(batch, 77, CTX, device=dev)
    ts = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            pred = unet(x, ts, ctx).sample
        F.mse_loss(pred.float(), noise).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(unet.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def name_of(ckpt=False):
    return f"sd15_unet_train_bf16_b{BATCH}_{SIZE}x{SIZE}" + ("_ckpt" if ckpt else "")


def train():
    from torch.utils.flop_counter import FlopCounterMode
    step = trainer(False)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    bench(name_of(), 1 if small else 5, 2, step, counter.get_total_flops())


def recipe():
    """the fine-tuning recipe at real size (diffusers' train_text_to_image.py settings: cached
    latents, batch 16, bf16 autocast, clipping to 1, AdamW)"""
    b = 2 if small else 16
    bench(f"sd15_recipe_bf16_clip_b{b}_{SIZE}x{SIZE}", 1 if small else 3, 2, trainer(False, b, 1.0))


def memory():
    for ckpt in (False, True):
        step = trainer(ckpt)
        step()
        if gpu:
            sync()
            torch.cuda.reset_peak_memory_stats()
        step()
        if gpu:
            sync()
            print(f"MEM {name_of(ckpt)} {torch.cuda.max_memory_allocated()}", flush=True)
        if ckpt:
            bench(name_of(True), 1 if small else 3, 1, step)
        del step
        if gpu:
            torch.cuda.empty_cache()


def sample(graph=False):
    """graph: the guided UNet pass (both halves of classifier-free guidance in one batch) captured
    once in a CUDA graph on static latents, timesteps and context, replayed at each step; the
    scheduler's step stays eager (tocha's sample_graph does the same)"""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    if graph and not gpu:
        print("SKIP sample_graph: CUDA graphs need a GPU", flush=True)
        return
    torch.manual_seed(0)
    dt = torch.float16 if gpu else torch.float32  # f16 convolutions on the CPU are too slow to check with
    unet = UNet2DConditionModel(**UNET).to(dev, dt).eval()
    vae = AutoencoderKL(**VAE).to(dev, dt).eval()
    s = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)
    ctx = torch.randn(2, 77, CTX, device=dev, dtype=dt)
    inp = torch.zeros(1, 4, SIZE, SIZE, device=dev, dtype=dt)
    ts = torch.zeros(2, device=dev, dtype=torch.long)

    def guided():
        out = unet(torch.cat([inp, inp]), ts, ctx).sample
        uncond, cond = out.chunk(2)
        return uncond + (cond - uncond) * 7.5

    g, eps = None, None
    if graph:
        with torch.no_grad():
            side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graphs' docs ask
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    guided()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                eps = guided()

    @torch.no_grad()
    def run():
        s.set_timesteps(STEPS)
        x = torch.randn(1, 4, SIZE, SIZE, device=dev, dtype=dt) * s.init_noise_sigma
        for t in s.timesteps:
            inp.copy_(s.scale_model_input(x, t))
            ts.fill_(int(t))
            if g is not None:
                g.replay()
                e = eps
            else:
                e = guided()
            x = s.step(e, t, x).prev_sample
        return vae.decode(x / 0.18215).sample
    bench(f"sd15_sample_ddim{STEPS}_f16_{SIZE * 8}x{SIZE * 8}" + ("_graph" if graph else ""), 1, 1, run)


def sample_graph():
    sample(True)


for w in which:
    {"gemm": gemm, "attention": attention, "train": train, "recipe": recipe, "memory": memory, "sample": sample,
     "sample_graph": sample_graph}[w]()
