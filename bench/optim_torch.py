"""optim_torch.py: the peer of bench/optim.lua: one AdamW step over K tensors of N f32 parameters
in PyTorch, fused (one kernel per tensor, like tocha's) and foreach, on THREADS threads.
Prints "RESULT <name> <seconds per step>" lines (best and median of the timed steps)."""
import os
import statistics
import time

import torch

THREADS = int(os.environ.get("THREADS", "2"))
N = int(float(os.environ.get("NUMEL", "1e7")))
K = int(os.environ.get("TENSORS", "10"))
STEPS = int(os.environ.get("STEPS", "10"))

torch.set_num_threads(THREADS)
torch.manual_seed(0)
params = [torch.randn(N) for _ in range(K)]
for p in params:
    p.grad = torch.randn(N)

for name, kw in [("fused", dict(fused=True)), ("foreach", dict(foreach=True))]:
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, **kw)
    opt.step()  # allocates the state
    opt.step()
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    print("RESULT adamw_%s_best %.9g" % (name, min(times)))
    print("RESULT adamw_%s_median %.9g" % (name, statistics.median(times)))
    del opt
