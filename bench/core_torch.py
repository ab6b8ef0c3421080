# bench/core_torch.py: the same work as bench/core.lua, in PyTorch eager on the CPU.
# Prints "RESULT <name> <seconds per iteration>" lines.
import math, os, time
import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)


def bench(name, iters, fn, warm=3):
    for _ in range(warm):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - t0) / iters)
    print(f"RESULT {name} {best:.9g}", flush=True)


one = torch.ones(16)
def chain():
    x = torch.zeros(16)
    for _ in range(100000):
        x = x + one
bench("add_chain_per_op", 1, chain, 1)

a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
bench("gemm_1024", 10, lambda: a @ b)

sizes = [784, 1024, 1024, 10]
params = []
for i in range(3):
    bound = 1 / math.sqrt(sizes[i])
    params.append(((torch.rand(sizes[i + 1], sizes[i]) * 2 - 1) * bound).requires_grad_())
    params.append(((torch.rand(sizes[i + 1]) * 2 - 1) * bound).requires_grad_())
opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)  # PyTorch's default on CPU
x = torch.randn(256, 784)
y = torch.randint(0, 10, (256,))
def mlp_step():
    h = x
    for i in range(3):
        h = F.linear(h, params[2 * i], params[2 * i + 1])
        if i < 2:
            h = h.relu()
    loss = F.cross_entropy(h, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
bench("mlp_train_step", 20, mlp_step)

xc = torch.randn(16, 64, 32, 32, requires_grad=True)
w = (torch.randn(64, 64, 3, 3) * 0.05).requires_grad_()
bc = torch.zeros(64, requires_grad=True)
def conv():
    y = F.conv2d(xc, w, bc, padding=1)
    y.sum().backward()
    xc.grad = w.grad = bc.grad = None
bench("conv2d_fwd_bwd", 5, conv, 2)
