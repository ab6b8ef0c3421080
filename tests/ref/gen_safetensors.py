"""gen_safetensors.py: writes the safetensors fixtures that tests/test_safetensors.lua loads,
made by the Python `safetensors` package (the reference implementation), and the expected
contents as a Lua table in safetensors_ref.lua (values, shapes and the exact bytes in hex).

    pip install safetensors numpy torch
    python3 tests/ref/gen_safetensors.py
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def tensors_all_dtypes():
    g = torch.Generator().manual_seed(0)
    f32 = torch.randn(3, 4, generator=g)
    f32[0, 0], f32[0, 1], f32[0, 2] = float("inf"), -0.0, 1e-40  # inf, negative zero, subnormal
    f64 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    f64[1, 2] = 5e-324
    # bit patterns that a float round trip could lose: -0, subnormals, max, inf, NaNs with payloads
    f16_bits = [0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x7D01, 0x3555]
    bf16_bits = [0x0000, 0x8000, 0x3F80, 0xC000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x7FA1, 0x4049, 0xBEAB]
    return {
        "f32": f32,
        "f64": f64,
        "f16": torch.tensor(np.array(f16_bits, dtype=np.uint16).view(np.int16)).view(torch.float16).reshape(3, 4),
        "bf16": torch.tensor(np.array(bf16_bits, dtype=np.uint16).view(np.int16)).view(torch.bfloat16).reshape(2, 6),
        "i32": torch.tensor([-2**31, -1, 0, 1, 2**31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-2**63, -2**53 - 1, -1, 0, 2**53 + 1, 2**63 - 1], dtype=torch.int64),
        "u8": torch.tensor([[0, 1, 127], [128, 254, 255]], dtype=torch.uint8),
        "bool": torch.tensor([True, False, False, True, True], dtype=torch.bool),
        "layer.0.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8,
    }


def tensors_shapes():
    return {
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "empty_i64": torch.zeros(2, 0, dtype=torch.int64),
        "four_d": torch.arange(2 * 1 * 3 * 2, dtype=torch.int32).reshape(2, 1, 3, 2) - 5,
        "one": torch.tensor([7], dtype=torch.uint8),
    }


def lua_number(x, dtype):
    if dtype == "bool":
        return "true" if x else "false"
    if dtype in ("i32", "i64", "u8"):
        return "math.mininteger" if x == -2**63 else str(int(x))
    x = float(x)
    if x != x:
        return "0/0"
    if x in (float("inf"), float("-inf")):
        return "1/0" if x > 0 else "-1/0"
    return x.hex()  # Lua 5.4 reads hex floats exactly


DTYPE = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
         torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", torch.bool: "bool"}


def describe(tensors):
    out = []
    for name in sorted(tensors):
        t = tensors[name]
        dt = DTYPE[t.dtype]
        flat = t.reshape(-1)
        vals = flat.float().tolist() if dt in ("f16", "bf16") else flat.tolist()
        raw = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out.append('    ["%s"] = {dtype = "%s", shape = {%s}, values = {%s},\n      hex = "%s"},' % (
            name, dt, ", ".join(str(s) for s in t.shape), ", ".join(lua_number(v, dt) for v in vals), raw.hex()))
    return "\n".join(out)


def main():
    files = {
        "safetensors_all_dtypes": (tensors_all_dtypes(), {"format": "pt", "source": "gen_safetensors.py",
                                                         "note": "caf\u00e9 \"quoted\"\n\u2603"}),
        "safetensors_shapes": (tensors_shapes(), None),
    }
    lines = ["-- made by tests/ref/gen_safetensors.py with safetensors %s, torch %s: the expected contents"
             % (__import__("safetensors").__version__, torch.__version__),
             "-- of the fixture files beside it (values flat in row-major order, hex: the raw bytes)",
             "return {"]
    for fname, (tensors, meta) in files.items():
        save_file(tensors, os.path.join(HERE, fname + ".safetensors"), metadata=meta)
        lines.append('  ["%s"] = {' % fname)
        if meta:
            lines.append("    __metadata__ = {%s}," % ", ".join(
                '["%s"] = "%s"' % (k, "".join(c if c.isalnum() or c in " .-_" else "\\u{%x}" % ord(c) for c in v))
                for k, v in sorted(meta.items())))
        lines.append(describe(tensors))
        lines.append("  },")
    lines.append("}")
    with open(os.path.join(HERE, "safetensors_ref.lua"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
