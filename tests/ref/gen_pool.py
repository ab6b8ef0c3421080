"""gen_pool.py: PyTorch references for tests/test_pool.lua (avg_pool2d, max_pool2d,
interpolate, nn.Upsample, pad).

Run by hand from the repository root: python3 tests/ref/gen_pool.py
Writes tests/ref/pool_ref.lua: per case, the input (multiples of 1/256, exact in f32 and
f64), the options, the output, an upstream gradient gy and PyTorch's input gradient for it,
computed in f64 and flattened in row-major order.
"""
import os
import torch
import torch.nn.functional as F

torch.manual_seed(0)


def values(shape):
    return (torch.randn(*shape, dtype=torch.float64) * 256).round() / 256


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, (tuple, list)):
        return "{" + ",".join(lua_value(e) for e in v) + "}"
    if isinstance(v, float) and v != int(v):
        return repr(v)
    return str(int(v))


def flat(t, exact):
    vals = t.detach().reshape(-1).tolist()
    if exact:
        return "{" + ",".join(lua_value(float(v)) for v in vals) + "}"
    return "{" + ",".join("%.12g" % v for v in vals) + "}"


def case(op, shape, fn, **opts):
    x = values(shape).requires_grad_()
    y = fn(x)
    gy = values(y.shape)
    y.backward(gy)
    d = {"op": lua_value(op), "xshape": lua_value(shape), "x": flat(x, True), "yshape": lua_value(tuple(y.shape)),
         "y": flat(y, False), "gy": flat(gy, True), "gx": flat(x.grad, False)}
    for k, v in opts.items():
        d[k] = lua_value(v)
    return d


def avg(shape, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    fn = lambda x: F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    return case("avg_pool2d", shape, fn, kernel=kernel, stride=stride or kernel, padding=padding,
                ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def maxp(shape, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    fn = lambda x: F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    return case("max_pool2d", shape, fn, kernel=kernel, stride=stride or kernel, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode)


def interp(shape, size, mode, align_corners=None):
    fn = lambda x: F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
    return case("interpolate", shape, fn, size=size, mode=mode, align_corners=bool(align_corners))


def upsample(shape, mode, size=None, scale_factor=None, align_corners=None, recompute=None):
    m = torch.nn.Upsample(size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                          recompute_scale_factor=recompute)
    opts = {k: v for k, v in dict(size=size, scale_factor=scale_factor, align_corners=align_corners,
                                   recompute_scale_factor=recompute).items() if v is not None}
    return case("upsample", shape, m, mode=mode, **opts)


def pad(shape, pads, mode="constant", value=0.0):
    if mode == "constant":
        fn = lambda x: F.pad(x, pads, mode, value)
    else:
        fn = lambda x: F.pad(x, pads, mode)
    return case("pad", shape, fn, pads=pads, mode=mode, value=value)


CASES = {
    "avg_k2": avg((2, 3, 6, 7), (2, 2)),
    "avg_k3s2p1": avg((2, 2, 7, 6), (3, 3), (2, 2), (1, 1)),
    "avg_k3s2p1_exclude_pad_ceil": avg((2, 2, 7, 6), (3, 3), (2, 2), (1, 1), True, False),
    "avg_nonsquare_ceil": avg((1, 3, 7, 8), (3, 2), (2, 1), (1, 0), True),
    "max_k2": maxp((2, 3, 6, 7), (2, 2)),
    "max_k3s2p1_ceil": maxp((2, 2, 8, 7), (3, 3), (2, 2), (1, 1), 1, True),
    "max_dilation": maxp((1, 2, 7, 8), (2, 3), (1, 2), (1, 1), (2, 1)),
    "nearest_x2": interp((2, 2, 3, 4), (6, 8), "nearest"),
    "nearest_odd": interp((1, 3, 5, 7), (8, 3), "nearest"),
    "nearest_down": interp((1, 2, 9, 10), (4, 3), "nearest"),
    "bilinear_up": interp((2, 2, 5, 7), (9, 12), "bilinear", False),
    "bilinear_up_align": interp((1, 3, 5, 7), (9, 4), "bilinear", True),
    "bilinear_down": interp((1, 2, 8, 8), (3, 5), "bilinear", False),
    "bilinear_to_one_align": interp((1, 2, 4, 5), (1, 3), "bilinear", True),
    "pad_constant": pad((2, 3, 4, 5), (1, 2), "constant", 0.5),
    "pad_constant_crop": pad((2, 3, 4, 5), (1, -1, -1, 2, 0, 1), "constant", -1.25),
    "pad_reflect2": pad((2, 3, 5, 6), (2, 1, 1, 3), "reflect"),
    "pad_reflect1": pad((2, 3, 6), (3, 2), "reflect"),
    "pad_replicate2": pad((1, 2, 4, 5), (2, 3, 1, 0), "replicate"),
    "pad_replicate1": pad((2, 3, 4), (0, 4), "replicate"),
    "upsample_x2_nearest": upsample((1, 2, 3, 4), "nearest", scale_factor=2),
    "upsample_x2_bilinear": upsample((2, 2, 3, 5), "bilinear", scale_factor=2),
    "upsample_x3x2_bilinear_align": upsample((1, 2, 3, 4), "bilinear", scale_factor=(3, 2), align_corners=True),
    "upsample_size_nearest": upsample((1, 3, 4, 4), "nearest", size=(5, 7)),
    "upsample_x1p5_bilinear_recompute": upsample((1, 1, 5, 5), "bilinear", scale_factor=1.5, recompute=True),
    "upsample_x1p5_nearest_exact": upsample((1, 2, 4, 6), "nearest", scale_factor=1.5),
}

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "pool_ref.lua"), "w") as f:
    f.write("-- generated by tests/ref/gen_pool.py (PyTorch %s); do not edit\nreturn {\n" % torch.__version__)
    for name, d in CASES.items():
        f.write("  %s = {\n" % name)
        for k, v in d.items():
            f.write("    %s = %s,\n" % (k, v))
        f.write("  },\n")
    f.write("}\n")
