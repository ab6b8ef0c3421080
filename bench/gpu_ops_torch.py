# bench/gpu_ops_torch.py: the same work as bench/gpu_ops.lua, in PyTorch eager on the GPU, timed
# the same way (synchronize around each batch, median of the batches; no CUDA events, as tocha
# has none). Prints "RESULT <name> <seconds per iteration> <flops per iteration>" lines, the conv
# rows once more with torch.backends.cudnn.benchmark on (*_timed, as tocha's cudnn_benchmark rows),
# and once more in channels-last (input, weight and output gradient; tocha's *_cl rows alike) as *_cl.
#   python3 bench/gpu_ops_torch.py [--small]
import math, statistics, sys, time
import torch
import torch.nn.functional as F

small = "--small" in sys.argv
if not torch.cuda.is_available():
    print("SKIP no CUDA GPU (torch.cuda.is_available() is false)")
    sys.exit(0)
ROUNDS = 3 if small else 7
print(f"INFO device {torch.cuda.get_device_name(0)} torch {torch.__version__} cudnn {torch.backends.cudnn.version()}"
      + (" (--small sizes)" if small else ""))
torch.manual_seed(0)
dev = "cuda"


def bench(name, iters, fn, flops, per=1):
    for _ in range(1 if small else 3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(ROUNDS):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / (iters * per))
    print(f"RESULT {name} {statistics.median_low(times):.9g} {flops / per:.6g}", flush=True)


# GEMM: bf16 in and out (cuBLAS)
n = 256 if small else 8192
a, b = torch.randn(n, n, device=dev, dtype=torch.bfloat16), torch.randn(n, n, device=dev, dtype=torch.bfloat16)
bench(f"gemm_bf16_{n}", 2 if small else 20, lambda: a @ b, 2 * n ** 3)
del a, b

# conv2d 3x3, padding 1, with bias: forward and the backward of x, w and b (cuDNN)
for c, hw in [(320, 64), (640, 32), (1280, 16)]:
    batch = 8
    if small:
        batch, c, hw = 1, c // 40, hw // 4
    for cl, timed in ((False, False), (False, True), (True, False)):
        torch.backends.cudnn.benchmark = timed
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = torch.randn(batch, c, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=fmt).requires_grad_()
        w = torch.randn(c, c, 3, 3, device=dev, dtype=torch.bfloat16) / math.sqrt(9 * c)
        w = w.to(memory_format=fmt).requires_grad_()
        bias = (torch.randn(c, device=dev, dtype=torch.bfloat16) * 0.1).requires_grad_()
        gy = torch.randn(batch, c, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=fmt)

        def step(x=x, w=w, bias=bias, gy=gy):
            F.conv2d(x, w, bias, padding=1).backward(gy)
            x.grad = w.grad = bias.grad = None

        name = f"conv3x3_fwd_bwd_bf16_b{batch}_c{c}_{hw}x{hw}" + ("_cl" if cl else "") + ("_timed" if timed else "")
        bench(name, 2 if small else 20, step, 3 * 2 * batch * hw * hw * c * c * 9)
torch.backends.cudnn.benchmark = False

# per-op overhead: chains of ops on 16-element f32 tensors, reported per op
n = 200 if small else 20000
one = torch.ones(16, device=dev)


def add_chain():
    x = torch.zeros(16, device=dev)
    for _ in range(n):
        x = x + one


bench("add_small_per_op", 1, add_chain, 0, n)
m = torch.randn(16, 16, device=dev)


def mixed_chain():  # 5 ops: mul, add, relu, sum over a dim, add
    x = m
    for _ in range(n // 4):
        x = (x * 0.5 + m).relu().sum(1, keepdim=True) + m


bench("mixed_small_per_op", 1, mixed_chain, 0, (n // 4) * 5)

# attention forward + backward at Stable Diffusion's shapes, batch 8, 8 heads (tocha's goal: at
# least 1.0x this): self-attention at the UNet's three resolutions and cross-attention to 77 text
# tokens (flops: 4 B H L S E forward, 2.5 times that backward); and for reference GroupNorm(32) +
# SiLU forward
for L, S, E in [(4096, 4096, 40), (1024, 1024, 80), (256, 256, 160), (4096, 77, 40)]:
    nb, nh, self_attn = 8, 8, L == S
    if small:
        nb, nh, L, S = 1, 2, L // 32, L // 32 if self_attn else S
    q = torch.randn(nb, nh, L, E, device=dev, dtype=torch.bfloat16).requires_grad_()
    k, v = (torch.randn(nb, nh, S, E, device=dev, dtype=torch.bfloat16).requires_grad_() for _ in range(2))
    go = torch.randn(nb, nh, L, E, device=dev, dtype=torch.bfloat16)

    def attn(q=q, k=k, v=v, go=go):
        F.scaled_dot_product_attention(q, k, v).backward(go)
        q.grad = k.grad = v.grad = None

    name = f"sdpa_fwd_bwd_bf16_b{nb}_h{nh}_L{L}_E{E}" if self_attn else f"sdpa_fwd_bwd_bf16_b{nb}_h{nh}_L{L}x{S}_E{E}"
    bench(name, 2 if small else 3, attn, 3.5 * 4 * nb * nh * L * S * E)
nb, c, hw = (1, 64, 16) if small else (8, 320, 64)
x = torch.randn(nb, c, hw, hw, device=dev, dtype=torch.bfloat16)
gw, gb = torch.randn(c, device=dev, dtype=torch.bfloat16), torch.randn(c, device=dev, dtype=torch.bfloat16)
bench(f"groupnorm32_silu_fwd_bf16_b{nb}_c{c}_{hw}x{hw}", 2 if small else 20,
      lambda: F.silu(F.group_norm(x, 32, gw, gb)), 0)
x = x.contiguous(memory_format=torch.channels_last)  # the same in channels-last
bench(f"groupnorm32_silu_fwd_bf16_b{nb}_c{c}_{hw}x{hw}_cl", 2 if small else 20,
      lambda: F.silu(F.group_norm(x, 32, gw, gb)), 0)
