"""check_safetensors.py: checks, with the Python `safetensors` package, a file that tocha wrote
in tests/test_safetensors.lua ("interop file"): every tensor's dtype, shape and exact bytes,
the metadata, and the header's layout (sorted names, aligned data). Exits non-zero on any
mismatch and prints each check.

    pip install safetensors numpy
    TOCHA_SAFETENSORS_INTEROP=/tmp/tocha.safetensors TEST="test_safetensors: interop" \\
        ./build/tocha tests/run.lua
    python3 tests/interop/check_safetensors.py /tmp/tocha.safetensors
"""
import json
import struct
import sys

import numpy as np
import safetensors
from safetensors import safe_open

F16_BITS = [0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x7D01, 0x3555]
BF16_BITS = [0x0000, 0x8000, 0x3F80, 0xC000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x7FA1, 0x4049, 0xBEAB]

# name -> (safetensors dtype, shape, the expected array: its bytes are compared exactly)
EXPECTED = {
    "f32": ("F32", [2, 3], np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1),
    "f32_transposed": ("F32", [3, 2], np.arange(6, dtype=np.float32).reshape(2, 3).T),
    "f32_narrow": ("F32", [4, 3], np.arange(20, dtype=np.float32).reshape(4, 5)[:, 1:4]),
    "f64": ("F64", [6], np.array([1 / 3, -2.5e300, 5e-324, -0.0, np.inf, -np.inf], dtype=np.float64)),
    "f16": ("F16", [3, 4], np.array(F16_BITS, dtype=np.uint16).view(np.float16).reshape(3, 4)),
    "bf16": ("BF16", [2, 6], np.array(BF16_BITS, dtype=np.uint16).reshape(2, 6)),  # numpy has no bf16
    "i32": ("I32", [5], np.array([-2**31, -1, 0, 1, 2**31 - 1], dtype=np.int32)),
    "i64": ("I64", [6], np.array([-2**63, -2**53 - 1, -1, 0, 2**53 + 1, 2**63 - 1], dtype=np.int64)),
    "u8": ("U8", [5], np.array([0, 1, 127, 128, 255], dtype=np.uint8)),
    "bool": ("BOOL", [5], np.array([True, False, True, True, False])),
    "scalar": ("F32", [], np.array(3.25, dtype=np.float32)),
    "empty": ("F32", [0, 3], np.zeros((0, 3), dtype=np.float32)),
    "empty_i32": ("I32", [2, 0, 4], np.zeros((2, 0, 4), dtype=np.int32)),
    "grad": ("F64", [2, 2], np.arange(4, dtype=np.float64).reshape(2, 2) * 2),
}
METADATA = {"format": "pt", "step": "1234", "lr": "0.5", "note": 'caf\u00e9 "q"\n\u2603', "empty": ""}
ITEMSIZE = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1}


def main(path):
    failures = []

    def check(ok, what):
        print("%s  %s" % ("ok  " if ok else "FAIL", what))
        if not ok:
            failures.append(what)

    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    check(n % 8 == 0, "header length %d is a multiple of 8" % n)
    names = [k for k in header if k != "__metadata__"]
    check(names == sorted(names), "tensor names are sorted in the header")
    for name in names:
        info = header[name]
        check(info["data_offsets"][0] % ITEMSIZE[info["dtype"]] == 0, "%s: data aligned to its element size" % name)

    # the package's own parser: raw bytes of every tensor (all dtypes, bf16 included)
    raw = {name: info for name, info in safetensors.deserialize(blob)}
    check(sorted(raw) == sorted(EXPECTED), "tensor names: %s" % ", ".join(sorted(raw)))
    with safe_open(path, framework="numpy") as f:
        check(f.metadata() == METADATA, "metadata %r" % (f.metadata(),))
        for name, (dtype, shape, want) in sorted(EXPECTED.items()):
            info = raw.get(name)
            if info is None:
                check(False, "%s: present" % name)
                continue
            check(info["dtype"] == dtype and list(info["shape"]) == shape,
                  "%s: dtype %s, shape %s" % (name, info["dtype"], list(info["shape"])))
            check(bytes(info["data"]) == np.ascontiguousarray(want).tobytes(), "%s: bytes exact" % name)
            if dtype != "BF16":  # numpy cannot hold bf16; its bytes were checked above
                got = f.get_tensor(name)
                check(got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(),
                      "%s: safe_open(framework='numpy') gives the same array" % name)

    print("%d checks failed" % len(failures) if failures else "all checks passed: %s" % path)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_safetensors.py FILE")
    sys.exit(main(sys.argv[1]))
