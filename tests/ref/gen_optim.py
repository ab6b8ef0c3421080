"""gen_optim.py: references for tests/test_optim.lua: trajectories of torch.optim SGD / Adam /
AdamW, torch.nn.utils.clip_grad_norm_ / clip_grad_value_, and diffusers' EMAModel.

Each case starts from the same three parameters (values written into the fixture) and feeds
100 steps of gradients given by a formula both sides evaluate in double and round to the
parameters' dtype (grad(t, k, i) below), so the only thing compared is the optimizer. The
third parameter gets no gradient on steps divisible by 3, so per-parameter step counts are
exercised. Clipping uses the step-1 gradients; the EMA follows parameters set to ema_value(t, k, i)
before each of its updates. Run by hand (needs torch and diffusers):
    python3 tests/ref/gen_optim.py        # writes tests/ref/optim_ref.lua
"""
import math
import os

import torch

SHAPES = [[7, 5], [5], [3, 4, 2]]
STEPS = 100
RECORD = [1, 10, 100]


def init(k, i):
    return math.cos(0.7 * i + 1.3 * k) * (1 + 0.5 * k)


def grad(t, k, i):
    # t: step 1..100, k: parameter 1..3, i: element 1..n (1-based, as in Lua)
    scale = 10 ** (2 * math.sin(0.3 * t + k))  # from 1e-2 to 1e2: exercises eps and bias correction
    return scale * math.sin(0.37 * i + 1.1 * t + 0.5 * k) + 0.1 * math.cos(0.05 * t * i)


CASES = {
    "sgd": ("SGD", [{}], {"lr": 0.1}),
    "sgd_momentum": ("SGD", [{}], {"lr": 0.01, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    "sgd_nesterov": ("SGD", [{}], {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 0.001}),
    "adam": ("Adam", [{}], {"lr": 0.01}),
    "adam_l2_amsgrad": ("Adam", [{}], {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1,
                                       "amsgrad": True}),
    "adam_small_beta1": ("Adam", [{}], {"lr": 0.01, "betas": (0.3, 0.9)}),
    "adamw": ("AdamW", [{}], {"lr": 0.01, "weight_decay": 0.05}),
    "adamw_amsgrad": ("AdamW", [{}], {"lr": 0.005, "weight_decay": 0.1, "amsgrad": True}),
    # group 1: parameters 1 and 2 without weight decay; group 2: parameter 3, its own lr
    "adamw_groups": ("AdamW", [{"params": [0, 1], "weight_decay": 0.0}, {"params": [2], "lr": 0.003}],
                     {"lr": 0.01, "betas": (0.9, 0.95), "weight_decay": 0.1}),
    "sgd_groups": ("SGD", [{"params": [0], "momentum": 0.5}, {"params": [1, 2], "lr": 0.02}],
                   {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
}
F64_CASES = ["adamw", "sgd_nesterov", "adam_l2_amsgrad"]


def ema_value(t, k, i):
    return init(k, i) + math.sin(0.1 * t + 0.3 * i + k) * (1 + 0.01 * t)


CLIP_CASES = [(1.0, 2.0), (0.5, 1.0), (2.0, float("inf")), (3.0, 3.0), (1e6, 2.0)]

EMA_CASES = {
    "default": {},
    "capped": {"decay": 0.9},
    "warmup": {"decay": 0.999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 2 / 3},
    "warmup_after": {"decay": 0.99, "use_ema_warmup": True, "inv_gamma": 2.0, "power": 0.75,
                     "update_after_step": 5, "min_decay": 0.5},
}
EMA_RECORD = [1, 5, 6, 7, 50]


def params_from(values, dtype=torch.float32):
    return [torch.tensor(v, dtype=dtype).reshape(s) for v, s in zip(values, SHAPES)]


def run_clip():
    out = []
    for max_norm, norm_type in CLIP_CASES:
        ps = params_from([[0.0] * math.prod(s) for s in SHAPES])
        for k, p in enumerate(ps, 1):
            p.grad = torch.tensor([grad(1, k, i) for i in range(1, p.numel() + 1)]).reshape(p.shape)
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type)
        out.append({"max_norm": max_norm, "norm_type": norm_type, "total": total.item(),
                    "grads": [p.grad.reshape(-1).tolist() for p in ps]})
    ps = params_from([[0.0] * math.prod(s) for s in SHAPES])
    for k, p in enumerate(ps, 1):
        p.grad = torch.tensor([grad(1, k, i) for i in range(1, p.numel() + 1)]).reshape(p.shape)
    torch.nn.utils.clip_grad_value_(ps, 0.75)
    return out, [p.grad.reshape(-1).tolist() for p in ps]


def run_ema(opts):
    from diffusers.training_utils import EMAModel
    ps = [p.requires_grad_() for p in params_from([[init(k, i) for i in range(1, math.prod(s) + 1)]
                                                    for k, s in enumerate(SHAPES, 1)])]
    ps[2].requires_grad_(False)  # copied, not averaged
    ema = EMAModel(ps, **opts)
    out = {}
    for t in range(1, max(EMA_RECORD) + 1):
        with torch.no_grad():
            for k, p in enumerate(ps, 1):
                p.copy_(torch.tensor([ema_value(t, k, i) for i in range(1, p.numel() + 1)]).reshape(p.shape))
        ema.step(ps)
        if t in EMA_RECORD:
            out[t] = {"decay": ema.cur_decay_value, "shadow": [s.reshape(-1).tolist() for s in ema.shadow_params]}
    return out


def run(kind, groups, opts, dtype):
    params = []
    for k, shape in enumerate(SHAPES, 1):
        n = math.prod(shape)
        params.append(torch.tensor([init(k, i) for i in range(1, n + 1)], dtype=dtype).reshape(shape)
                      .requires_grad_())
    if len(groups) == 1 and "params" not in groups[0]:
        pg = params
    else:
        pg = [dict(g, params=[params[j] for j in g["params"]]) for g in groups]
    opt = getattr(torch.optim, kind)(pg, foreach=False, **opts)  # the single-tensor implementation
    out = {}
    for t in range(1, STEPS + 1):
        for k, p in enumerate(params, 1):
            if k == 3 and t % 3 == 0:
                p.grad = None
            else:
                g = [grad(t, k, i) for i in range(1, p.numel() + 1)]
                p.grad = torch.tensor(g, dtype=dtype).reshape(p.shape)
        opt.step()
        if t in RECORD:
            out[t] = [p.detach().reshape(-1).tolist() for p in params]
    return out


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("%s = %s" % (k, lua_value(x)) for k, x in v.items()) + "}"
    raise TypeError(v)


def main():
    lines = ["-- generated by tests/ref/gen_optim.py (torch %s): do not edit" % torch.__version__, "return {"]
    init_vals = [[init(k, i) for i in range(1, math.prod(s) + 1)] for k, s in enumerate(SHAPES, 1)]
    lines.append("  shapes = %s," % lua_value(SHAPES))
    lines.append("  steps = %d," % STEPS)
    lines.append("  init = %s," % lua_value(init_vals))
    lines.append("  cases = {")
    for name, (kind, groups, opts) in CASES.items():
        for dtype in [torch.float32] + ([torch.float64] if name in F64_CASES else []):
            dt = "f32" if dtype == torch.float32 else "f64"
            res = run(kind, groups, opts, dtype)
            lua_groups = [dict((k, [j + 1 for j in v] if k == "params" else v) for k, v in g.items())
                          for g in groups]
            lines.append("    {name = %s, dtype = %s, kind = %s, groups = %s, opts = %s," %
                         (lua_value(name), lua_value(dt), lua_value(kind), lua_value(lua_groups),
                          lua_value(opts)))
            lines.append("     params = {")
            for t in RECORD:
                lines.append("       [%d] = %s," % (t, lua_value(res[t])))
            lines.append("     }},")
    lines.append("  },")
    clips, clip_value = run_clip()
    lines.append("  clip = %s," % lua_value([dict(c, norm_type=c["norm_type"]) for c in clips])
                 .replace("inf", "math.huge"))
    lines.append("  clip_value = {value = 0.75, grads = %s}," % lua_value(clip_value))
    lines.append("  ema = {")
    for name, opts in EMA_CASES.items():
        res = run_ema(opts)
        lines.append("    {name = %s, opts = %s, steps = {" % (lua_value(name), lua_value(opts)))
        for t in EMA_RECORD:
            lines.append("      [%d] = %s," % (t, lua_value(res[t])))
        lines.append("    }},")
    lines.append("  },")
    lines.append("}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_ref.lua")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
