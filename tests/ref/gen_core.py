"""gen_core.py: PyTorch reference values for the engine core tests (tests/test_tensor.lua,
test_elementwise.lua, test_reduce.lua, test_matmul.lua, test_random.lua): dtype conversions, elementwise ops, reductions, matmul, linspace and
arange, and the Philox stream. Writes tests/ref/core_ref.lua; run by hand:

    python3 tests/ref/gen_core.py            # writes core_ref.lua
    python3 tests/ref/gen_core.py --philox   # prints the C table used by tests/c/test_core.c

Inputs are generated here (torch.manual_seed) and written into the fixture, so tocha reads
the very same values. Index values are written 1-based, as tocha's Lua API uses them.
"""
import math
import os
import struct
import sys

import torch

torch.manual_seed(0)
F64, F32 = torch.float64, torch.float32


# ---- Lua serialisation ------------------------------------------------------------------
def lua(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "0/0"
        if math.isinf(v):
            return "math.huge" if v > 0 else "-math.huge"
        return repr(v)  # shortest round-trip form: Lua's strtod reads back the same double
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("[%s] = %s" % (lua(k), lua(x)) for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def flat(t):
    t = t.detach().reshape(-1)
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
        t = t.double()
    return t.tolist()


def bits16(t):
    return [v & 0xFFFF for v in t.reshape(-1).view(torch.int16).tolist()]


# ---- the Philox 4x32-10 reference (Salmon et al.; checked against Random123's vectors) ----
MASK = 0xFFFFFFFF


def philox(ctr, key, rounds=10):
    c, k = list(ctr), list(key)
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & MASK, p1 & MASK, ((p0 >> 32) ^ c[3] ^ k[1]) & MASK, p0 & MASK]
        k = [(k[0] + 0x9E3779B9) & MASK, (k[1] + 0xBB67AE85) & MASK]
    return c


RANDOM123_KAT = [  # Random123's kat_vectors for philox4x32_10: counter, key, expected
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([MASK] * 4, [MASK] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]
for ctr_, key_, want in RANDOM123_KAT:
    assert philox(ctr_, key_) == want


def tc_philox(seed, counter):
    """tocha's packing: the 64-bit counter in words 0-1 (2-3 zero), the 64-bit seed as the key"""
    return philox([counter & MASK, counter >> 32, 0, 0], [seed & MASK, seed >> 32])


PHILOX_CASES = [(0, 0), (0, 1), (42, 0), (42, 7), (2**32 + 5, 2**32 + 3), (2**64 - 1, 2**64 - 1),
                (67280421310721, 123456789)]

if "--philox" in sys.argv:
    for seed, counter in PHILOX_CASES:
        w = tc_philox(seed, counter)
        print("    {%#xull, %#xull, {%s}}," % (seed, counter, ", ".join("%#010x" % x for x in w)))
    sys.exit(0)


def tocha_rand_f32(seed, n):
    """T.rand on f32: element i takes lane i % 4 of counter i / 4, its top 24 bits / 2^24"""
    return [(tc_philox(seed, i // 4)[i % 4] >> 8) * 2.0**-24 for i in range(n)]


def tocha_randn_f64(seed, n):
    """T.randn: Box-Muller over lanes (0, 1) and (2, 3), uniforms (w + 1/2) / 2^32"""
    out = []
    for blk in range((n + 3) // 4):
        w = tc_philox(seed, blk)
        for h in range(2):
            u1, u2 = (w[2 * h] + 0.5) / 2**32, (w[2 * h + 1] + 0.5) / 2**32
            r = math.sqrt(-2.0 * math.log(u1))
            out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return out[:n]


ref = {}

# ---- dtype conversions ------------------------------------------------------------------
f16_edge = [1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-40, 65504.0, 65519.99, 65520.0, 65536.0, 1e5,
            2**-24, 2**-25, 2**-25 + 2**-40, 3 * 2**-26, 2**-14, 2**-14 - 2**-24, 2**-14 - 2**-25, 1e-8,
            0.1, 1 / 3, -2.5e-6, -0.0, 0.0, 1e300, -1e300, 1e-300]
bf16_edge = [1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-30, 3.3895313892515355e38, 3.4e38, 1e-40, 1e-45, -7.25]
special = [math.inf, -math.inf, math.nan]
rnd = (torch.randn(40, dtype=F64) * torch.logspace(-6, 6, 40, dtype=F64)).tolist()
xs = f16_edge + bf16_edge + special + rnd
x64 = torch.tensor(xs, dtype=F64)
x32 = x64.float()
ref["convert"] = {
    "x": xs,
    "f32": flat(x32),
    "f16_bits": bits16(x64.half()),          # f64 -> f16
    "f16_from_f32_bits": bits16(x32.half()),  # f32 -> f16
    "bf16_bits": bits16(x64.bfloat16()),
    "bf16_from_f32_bits": bits16(x32.bfloat16()),
    "f16_back": flat(x64.half()),            # f16 -> f32 -> f64, exact
    "bf16_back": flat(x64.bfloat16()),
}
ints = [-3.7, -0.5, 0.5, 2.9, -2.9, 127.9, 255.5, 256.7, -128.2, 1e6 + 0.7, -1e9 - 0.2, 0.0, 1.0, 2147483647.0]
ti = torch.tensor(ints, dtype=F64)
ref["to_int"] = {
    "x": ints,
    "i32": ti.to(torch.int32).tolist(),
    "i64": ti.to(torch.int64).tolist(),
    "u8": ti.to(torch.int64).to(torch.uint8).tolist(),  # torch's float -> u8 goes through int64 too
    "bool": ti.to(torch.bool).tolist(),
}
big = [16777217, -16777217, 2**31 - 1, 65519, 65520, 2**53 + 1, -(2**40) - 3]
tb = torch.tensor(big, dtype=torch.int64)
ref["from_int"] = {
    "x": big,
    "f32": flat(tb.float()),
    "f16_bits": bits16(tb.half()),
    "bf16_bits": bits16(tb.bfloat16()),
    "i32_from_u8": torch.tensor([0, 1, 200, 255], dtype=torch.uint8).to(torch.int32).tolist(),
}

# ---- unary ops ----------------------------------------------------------------------------
xu = (torch.randn(3, 4, dtype=F64) * 2).clamp(-4, 4)
xu[0, 0], xu[0, 1] = 0.0, 25.0  # relu/abs at 0; softplus's threshold
xp = torch.rand(3, 4, dtype=F64) * 3 + 0.1
unary = {
    "neg": (xu, torch.neg), "exp": (xu, torch.exp), "log": (xp, torch.log), "sqrt": (xp, torch.sqrt),
    "rsqrt": (xp, torch.rsqrt), "abs": (xu, torch.abs), "sin": (xu, torch.sin), "cos": (xu, torch.cos),
    "tanh": (xu, torch.tanh), "sigmoid": (xu, torch.sigmoid), "relu": (xu, torch.relu),
    "silu": (xu, torch.nn.functional.silu), "gelu": (xu, torch.nn.functional.gelu),
    "gelu_tanh": (xu, lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
    "softplus": (xu, torch.nn.functional.softplus), "sign": (xu, torch.sign),
    "reciprocal": (xp, torch.reciprocal), "square": (xu, torch.square),
    "leaky_relu": (xu, lambda t: torch.nn.functional.leaky_relu(t, 0.2)),
    "clamp": (xu, lambda t: t.clamp(-0.5, 1.5)), "clamp_lo": (xu, lambda t: t.clamp(min=0.25)),
    "pow2": (xu, lambda t: t**2), "pow3": (xu, lambda t: t**3), "pow_half": (xp, lambda t: t**0.5),
    "pow_neg": (xp, lambda t: t**-1.5), "rpow": (xu, lambda t: 2.0**t), "rsub": (xu, lambda t: 3.0 - t),
    "rdiv": (xp, lambda t: 3.0 / t), "add_scalar": (xu, lambda t: t + 2.5), "mul_scalar": (xu, lambda t: t * -1.5),
}
ref["unary"] = {"shape": [3, 4], "x": flat(xu), "xp": flat(xp), "ops": {
    name: {"positive": x is xp, "f64": flat(f(x)), "f32": flat(f(x.float()))} for name, (x, f) in unary.items()}}

# ---- binary ops (broadcasting [3, 1, 4] with [2, 4]) ----------------------------------------
a = torch.randn(3, 1, 4, dtype=F64)
b = torch.randn(2, 4, dtype=F64)
b[0, :] = a[0, 0, :]  # ties for maximum/minimum and the comparisons
ap = a.abs() + 0.2
binary = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
          "minimum": torch.minimum, "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le,
          "gt": torch.gt, "ge": torch.ge}
ref["binary"] = {
    "a_shape": [3, 1, 4], "b_shape": [2, 4], "out_shape": [3, 2, 4], "a": flat(a), "b": flat(b), "ap": flat(ap),
    "ops": {name: flat(f(a, b).double()) for name, f in binary.items()},
    "pow": flat(torch.pow(ap, b)),
    "where": flat(torch.where(a > b, a, b * 2)),
}

# ---- reductions over a [3, 4, 5] tensor ------------------------------------------------------
xr = torch.randn(3, 4, 5, dtype=F64)
xq = torch.rand(3, 4, 5, dtype=F64) + 0.5  # prod stays moderate
DIMS = {"all": None, "d1": [0], "d2": [1], "d3": [2], "d13": [0, 2], "dm1": [-1], "d12": [0, 1]}


def lua_dims(d):
    return None if d is None else [i + 1 if i >= 0 else i for i in d]


def over(f, d, keepdim, x=xr):
    return f(x) if d is None else f(x, d, keepdim=keepdim)


def prod_over(x, d, keep):  # torch.prod takes one dim at a time
    if d is None:
        return x.prod()
    dims = sorted(i % x.dim() for i in d)
    for i in dims:
        x = x.prod(i, keepdim=True)
    return x if keep else x.squeeze(tuple(dims))


red = {}
for key, d in DIMS.items():
    for keep in (False, True):
        if d is None and keep:
            continue
        k = key + ("_keep" if keep else "")
        dd = d
        red[k] = {
            "dims": lua_dims(d), "keepdim": keep,
            "shape": list(over(torch.sum, dd, keep).shape),
            "sum": flat(over(torch.sum, dd, keep)),
            "mean": flat(over(torch.mean, dd, keep)),
            "var": flat(over(torch.var, dd, keep)),
            "var0": flat(xr.var(dd, correction=0, keepdim=keep)),
            "std": flat(over(torch.std, dd, keep)),
            "amax": flat(xr.amax(dd if dd is not None else [0, 1, 2], keep)),
            "amin": flat(xr.amin(dd if dd is not None else [0, 1, 2], keep)),
            "logsumexp": flat(torch.logsumexp(xr, dd if dd is not None else [0, 1, 2], keep)),
            "norm2": flat(torch.linalg.vector_norm(xr, 2, dd, keep)),
            "norm1": flat(torch.linalg.vector_norm(xr, 1, dd, keep)),
            "norm3": flat(torch.linalg.vector_norm(xr, 3, dd, keep)),
            "norminf": flat(torch.linalg.vector_norm(xr, math.inf, dd, keep)),
            "prod": flat(prod_over(xq, dd, keep)),
        }
alongs = {}
for dim in (0, 1, 2):
    for keep in (False, True):
        mx, mi = xr.max(dim, keep), xr.min(dim, keep)
        alongs["d%d%s" % (dim + 1, "_keep" if keep else "")] = {
            "dim": dim + 1, "keepdim": keep, "shape": list(mx.values.shape),
            "max": flat(mx.values), "max_idx": [i + 1 for i in flat(mx.indices)],
            "min": flat(mi.values), "min_idx": [i + 1 for i in flat(mi.indices)],
            "argmax": [i + 1 for i in flat(xr.argmax(dim, keep))],
            "argmin": [i + 1 for i in flat(xr.argmin(dim, keep))],
        }
ref["reduce"] = {"shape": [3, 4, 5], "x": flat(xr), "xq": flat(xq), "cases": red, "along": alongs,
                 "argmax": int(xr.argmax()) + 1, "argmin": int(xr.argmin()) + 1}

# ---- matmul ----------------------------------------------------------------------------------
mm = {}


def mm_case(name, sa, sb, f=torch.matmul):
    ta, tb = torch.randn(*sa, dtype=F64), torch.randn(*sb, dtype=F64)
    out = f(ta, tb)
    mm[name] = {"a_shape": list(sa), "b_shape": list(sb), "a": flat(ta), "b": flat(tb),
                "shape": list(out.shape), "out": flat(out)}


mm_case("dot", (4,), (4,))
mm_case("mv", (3, 4), (4,))
mm_case("vm", (4,), (4, 5))
mm_case("mm", (3, 4), (4, 5))
mm_case("batched_2d", (2, 3, 4), (4, 5))
mm_case("2d_batched", (3, 4), (2, 4, 5))
mm_case("broadcast", (2, 1, 3, 4), (5, 4, 2))
mm_case("batched_vec", (2, 3, 4), (4,))
mm_case("vec_batched", (4,), (2, 4, 5))
mm_case("bmm", (2, 3, 4), (2, 4, 5), torch.bmm)
mm_case("outer", (3,), (4,), torch.outer)
mm_case("odd", (1, 7, 1), (1, 13))
xl, wl, bl = torch.randn(2, 3, 4, dtype=F64), torch.randn(5, 4, dtype=F64), torch.randn(5, dtype=F64)
mm["linear"] = {"x": flat(xl), "w": flat(wl), "b": flat(bl), "out": flat(torch.nn.functional.linear(xl, wl, bl)),
                "out_nobias": flat(torch.nn.functional.linear(xl, wl))}
ref["matmul"] = mm

# ---- ranges ------------------------------------------------------------------------------------
ref["linspace"] = [{"args": [s, e, n], "f32": flat(torch.linspace(s, e, n)),
                    "f64": flat(torch.linspace(s, e, n, dtype=F64))}
                   for s, e, n in [(0, 1, 7), (-3, 5.5, 10), (2, -1, 5), (0, 1, 1), (3, -2, 2), (0, 1, 0), (-1, 1, 100)]]
ref["arange"] = [{"args": [s, e, st], "f32": flat(torch.arange(s, e, st, dtype=F32)),
                  "f64": flat(torch.arange(s, e, st, dtype=F64))}
                 for s, e, st in [(0, 1, 0.1), (-2.5, 3, 0.7), (0, 10, 3), (5, 0, -1.5), (0, 24, 1)]]

# ---- the random stream (tocha's rule, from the reference Philox) ------------------------------------
ref["rand_seed42_f32"] = tocha_rand_f32(42, 10)
ref["randn_seed7_f64"] = tocha_randn_f64(7, 10)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "core_ref.lua")
with open(out, "w") as fh:
    fh.write("-- generated by tests/ref/gen_core.py (PyTorch %s); do not edit\nreturn %s\n" % (torch.__version__, lua(ref)))
print("wrote", out, os.path.getsize(out), "bytes")
