# gen_index.py: PyTorch references for the indexing ops (tests/test_index.lua).
# Writes tests/ref/index_ref.lua. Inputs are generated here and written into the fixture,
# so tocha runs on the same numbers. PyTorch's 0-based index values and dims become
# 1-based here, at this one boundary. Run by hand: python3 tests/ref/gen_index.py
import os

import torch

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)


def lua(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {lua(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua(x) for x in v) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v + '"'
    raise TypeError(type(v))


def t(x):
    """a tensor as {shape, flat values}; booleans and integers stay exact"""
    x = x.detach()
    if x.dtype == torch.bool:
        vals = [bool(v) for v in x.reshape(-1).tolist()]
    elif x.dtype in (torch.int64, torch.int32):
        vals = [int(v) for v in x.reshape(-1).tolist()]
    else:
        vals = [float(v) for v in x.reshape(-1).tolist()]
    return {"shape": list(x.shape), "v": vals}


def one_based(i):
    return t(i + 1)


def leaf(*shape):
    return torch.randn(*shape, requires_grad=True)


cases = {}

# index_select: x, dim (1-based), idx (1-based), out, and x's gradient for upstream gy
for name, shape, dim, idx in [("index_select_rows", (5, 3), 0, [2, 0, 2, 4]),
                              ("index_select_mid", (2, 4, 3), 1, [3, 3, 0]),
                              ("index_select_last", (3, 6), 1, [5, 1])]:
    x = leaf(*shape)
    i = torch.tensor(idx)
    y = x.index_select(dim, i)
    gy = torch.randn(y.shape)
    y.backward(gy)
    cases[name] = {"x": t(x), "dim": dim + 1, "idx": one_based(i), "out": t(y), "gy": t(gy), "gx": t(x.grad)}

# gather (index repeats on purpose, so the backward accumulates)
for name, shape, dim, ishape in [("gather_last", (3, 4), 1, (3, 2)),
                                 ("gather_first", (4, 3), 0, (2, 3)),
                                 ("gather_3d", (2, 3, 4), 1, (2, 5, 3))]:
    x = leaf(*shape)
    i = torch.randint(0, shape[dim], ishape)
    y = x.gather(dim, i)
    gy = torch.randn(y.shape)
    y.backward(gy)
    cases[name] = {"x": t(x), "dim": dim + 1, "idx": one_based(i), "out": t(y), "gy": t(gy), "gx": t(x.grad)}

# scatter_add, including a src larger than the index
for name, shape, dim, ishape, sshape in [("scatter_add_rows", (3, 5), 0, (4, 5), (4, 5)),
                                         ("scatter_add_cols", (4, 3), 1, (4, 5), (4, 5)),
                                         ("scatter_add_bigsrc", (3, 4), 0, (2, 3), (3, 4))]:
    x = leaf(*shape)
    big = sshape != ishape  # PyTorch's backward refuses a src larger than the index
    src = torch.randn(*sshape, requires_grad=not big)
    i = torch.randint(0, shape[dim], ishape)
    y = x.scatter_add(dim, i, src)
    gy = torch.randn(y.shape)
    y.backward(gy)
    cases[name] = {"x": t(x), "dim": dim + 1, "idx": one_based(i), "src": t(src), "out": t(y), "gy": t(gy),
                   "gx": t(x.grad)}
    if not big:
        cases[name]["gsrc"] = t(src.grad)

# masked_fill with a mask that broadcasts to x, and one that broadcasts x up
for name, shape, mshape, value in [("masked_fill_row", (3, 4), (4,), -2.5),
                                   ("masked_fill_col", (3, 4), (3, 1), 7.0),
                                   ("masked_fill_up", (4,), (2, 4), 0.5)]:
    x = leaf(*shape)
    m = torch.rand(mshape) > 0.5
    y = x.masked_fill(m, value)
    gy = torch.randn(y.shape)
    y.backward(gy)
    cases[name] = {"x": t(x), "mask": t(m), "value": value, "out": t(y), "gy": t(gy), "gx": t(x.grad)}

# cat along dims, with an i64 tensor promoted to f64 and a skipped empty 1-d tensor
a, b, c = leaf(2, 3), leaf(2, 1), leaf(2, 2)
y = torch.cat([a, b, c], 1)
gy = torch.randn(y.shape)
y.backward(gy)
cases["cat_cols"] = {"xs": [t(a), t(b), t(c)], "dim": 2, "out": t(y), "gy": t(gy), "gxs": [t(a.grad), t(b.grad), t(c.grad)]}
a = leaf(1, 3)
n = torch.tensor([[4, -1, 2], [0, 7, 3]])
y = torch.cat([a, torch.zeros(0), n], 0)
cases["cat_promote"] = {"a": t(a), "n": t(n), "out": t(y), "dtype": str(y.dtype).replace("torch.float64", "f64")}

# stack along a new middle and last dim
xs = [leaf(2, 3) for _ in range(3)]
for name, dim in [("stack_mid", 1), ("stack_last", -1)]:
    for x in xs:
        x.grad = None
    y = torch.stack(xs, dim)
    gy = torch.randn(y.shape)
    y.backward(gy)
    cases[name] = {"xs": [t(x) for x in xs], "dim": dim + 1 if dim >= 0 else dim, "out": t(y), "gy": t(gy),
                   "gxs": [t(x.grad) for x in xs]}

# embedding with repeated ids and a padding row
w = leaf(6, 3)
ids = torch.tensor([[0, 1, 3], [5, 5, 0]])
y = torch.nn.functional.embedding(ids, w, padding_idx=1)
gy = torch.randn(y.shape)
y.backward(gy)
cases["embedding"] = {"w": t(w), "ids": one_based(ids), "padding_idx": 2, "out": t(y), "gy": t(gy), "gw": t(w.grad)}

# max along a dim: its backward goes through scatter_add
x = leaf(3, 5)
v, i = x.max(1)
gy = torch.randn(v.shape)
v.backward(gy)
cases["max_dim"] = {"x": t(x), "values": t(v), "indices": one_based(i), "gy": t(gy), "gx": t(x.grad)}

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "index_ref.lua"), "w") as f:
    f.write("-- index_ref.lua: written by gen_index.py (PyTorch %s); do not edit\nreturn {\n" % torch.__version__)
    for k in sorted(cases):
        f.write(f"  {k} = {lua(cases[k])},\n")
    f.write("}\n")
