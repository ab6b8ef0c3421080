-- test_index.lua: the indexing ops (index_select, gather, scatter_add, masked_fill, cat,
-- stack, embedding): forward and backward against PyTorch (tests/ref/index_ref.lua, made by
-- gen_index.py), f64 gradchecks, strided inputs, dtypes, zero sizes, in-place and errors.
local T = require "tocha"
local raises = T.testing.raises
local R = dofile(T.testing.path("ref/index_ref.lua"))
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

-- a fixture tensor {shape, v}: booleans become bool, others the given dtype (f64)
local function tens(c, dtype)
  local dt = dtype or (type(c.v[1]) == "boolean" and "bool") or "f64"
  if #c.v == 0 then return T.zeros(c.shape, { dtype = dt }) end
  return T.tensor(c.v, { dtype = dt }):reshape(c.shape)
end
local function ids(c) return tens(c, "i64") end
local function leaf(c) return tens(c):requires_grad_() end
local function long(t) return T.tensor(t, { dtype = "i64" }) end

local function same_shape(t, shape)
  assert(#t.shape == #shape, "rank " .. #t.shape .. " vs " .. #shape)
  for i, s in ipairs(shape) do assert(t.shape[i] == s, "shape mismatch at dim " .. i) end
end

-- pcall f and check that the error message contains each of the plain-text fragments
local function f64(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end

local tests = {}

---------------------------------------------------------------------------
-- forward and backward against PyTorch
---------------------------------------------------------------------------
tests["index_select matches PyTorch"] = function()
  for _, name in ipairs({ "index_select_rows", "index_select_mid", "index_select_last" }) do
    local c = R[name]
    local x = leaf(c.x)
    local y = x:index_select(c.dim, ids(c.idx))
    same_shape(y, c.out.shape)
    close(y, tens(c.out), { msg = name })
    y:backward(tens(c.gy))
    close(x.grad, tens(c.gx), { msg = name .. " grad" })
    close(T.index_select(x, c.dim, ids(c.idx):to("i32")), tens(c.out), { msg = name .. " i32" })
  end
end

tests["gather matches PyTorch"] = function()
  for _, name in ipairs({ "gather_last", "gather_first", "gather_3d" }) do
    local c = R[name]
    local x = leaf(c.x)
    local y = x:gather(c.dim, ids(c.idx))
    same_shape(y, c.out.shape)
    close(y, tens(c.out), { msg = name })
    y:backward(tens(c.gy))
    close(x.grad, tens(c.gx), { msg = name .. " grad" })
    close(T.gather(x, c.dim, ids(c.idx):to("i32")), tens(c.out), { msg = name .. " i32" })
  end
end

tests["scatter_add matches PyTorch"] = function()
  for _, name in ipairs({ "scatter_add_rows", "scatter_add_cols", "scatter_add_bigsrc" }) do
    local c = R[name]
    local x, src = leaf(c.x), leaf(c.src)
    local y = x:scatter_add(c.dim, ids(c.idx), src)
    close(y, tens(c.out), { msg = name })
    y:backward(tens(c.gy))
    close(x.grad, tens(c.gx), { msg = name .. " grad x" })
    if c.gsrc then close(src.grad, tens(c.gsrc), { msg = name .. " grad src" }) end
  end
  -- src larger than the index: the uncovered part gets a zero gradient
  local c = R.scatter_add_bigsrc
  local src = leaf(c.src)
  tens(c.x):scatter_add(c.dim, ids(c.idx), src):backward(tens(c.gy))
  local ish = c.idx.shape
  close(src.grad:narrow(1, 1, ish[1]):narrow(2, 1, ish[2]), tens(c.gy):gather(c.dim, ids(c.idx)))
  assert(src.grad:narrow(2, ish[2] + 1, c.src.shape[2] - ish[2]):abs():sum():item() == 0)
end

tests["masked_fill matches PyTorch"] = function()
  for _, name in ipairs({ "masked_fill_row", "masked_fill_col", "masked_fill_up" }) do
    local c = R[name]
    local x = leaf(c.x)
    local y = x:masked_fill(tens(c.mask), c.value)
    same_shape(y, c.out.shape)
    close(y, tens(c.out), { msg = name })
    y:backward(tens(c.gy))
    close(x.grad, tens(c.gx), { msg = name .. " grad" })
  end
end

tests["cat matches PyTorch and hands each input its slice"] = function()
  local c = R.cat_cols
  local xs = { leaf(c.xs[1]), leaf(c.xs[2]), leaf(c.xs[3]) }
  local y = T.cat(xs, c.dim)
  close(y, tens(c.out))
  y:backward(tens(c.gy))
  for k = 1, 3 do close(xs[k].grad, tens(c.gxs[k]), { msg = "grad " .. k }) end
  -- an i64 tensor promotes to f64; an empty 1-d tensor is skipped, as in PyTorch
  local p = R.cat_promote
  local z = T.cat({ tens(p.a), T.zeros({ 0 }), ids(p.n) }, 1)
  assert(z.dtype == p.dtype)
  close(z, tens(p.out))
  -- negative dims, and the default dim 1
  close(T.cat(xs, -1), tens(c.out))
  same_shape(T.cat({ xs[1], xs[1] }), { 4, 3 })
end

tests["stack matches PyTorch"] = function()
  for _, name in ipairs({ "stack_mid", "stack_last" }) do
    local c = R[name]
    local xs = { leaf(c.xs[1]), leaf(c.xs[2]), leaf(c.xs[3]) }
    local y = T.stack(xs, c.dim)
    same_shape(y, c.out.shape)
    close(y, tens(c.out), { msg = name })
    y:backward(tens(c.gy))
    for k = 1, 3 do close(xs[k].grad, tens(c.gxs[k]), { msg = name .. " grad " .. k }) end
  end
  same_shape(T.stack({ T.zeros(2, 3), T.ones(2, 3) }), { 2, 2, 3 })
end

tests["embedding matches PyTorch, padding row gets no gradient"] = function()
  local c = R.embedding
  local w = leaf(c.w)
  local y = T.embedding(ids(c.ids), w, c.padding_idx)
  same_shape(y, c.out.shape)
  close(y, tens(c.out))
  y:backward(tens(c.gy))
  close(w.grad, tens(c.gw))
  assert(w.grad[c.padding_idx]:abs():sum():item() == 0)
  -- the functional wrapper and a negative padding_idx (the last row)
  local F = require "tocha.nn.functional"
  close(F.embedding(ids(c.ids), w, { padding_idx = c.padding_idx }), tens(c.out))
  local w2 = leaf(c.w)
  T.embedding(ids(c.ids), w2, -1):sum():backward()
  assert(w2.grad[6]:abs():sum():item() == 0 and w2.grad[1]:sum():item() ~= 0)
end

tests["max along a dim backward (through scatter_add) matches PyTorch"] = function()
  local c = R.max_dim
  local x = leaf(c.x)
  local v, i = x:max(2)
  close(v, tens(c.values))
  close(i, ids(c.indices))
  v:backward(tens(c.gy))
  close(x.grad, tens(c.gx))
  local x2 = leaf(c.x)
  local v2 = x2:max(2, true) -- keepdim
  v2:backward(tens(c.gy):view(-1, 1))
  close(x2.grad, tens(c.gx))
end

---------------------------------------------------------------------------
-- gradient checks (f64)
---------------------------------------------------------------------------
tests["gradcheck index_select and gather"] = function()
  local idx = long({ 3, 1, 3, 2 })
  gradcheck(function(x) return x:index_select(1, idx) end, { f64(3, 4) })
  gradcheck(function(x) return x:index_select(-1, idx) end, { f64(2, 3, 3) })
  local g = long({ { 1, 1, 3 }, { 2, 3, 3 } })
  gradcheck(function(x) return x:gather(2, g) end, { f64(2, 3) })
  gradcheck(function(x) return x:gather(1, g) end, { f64(3, 4) })
end

tests["gradcheck scatter_add"] = function()
  local idx = long({ { 1, 3, 1 }, { 3, 3, 2 } })
  gradcheck(function(x, s) return x:scatter_add(1, idx, s) end, { f64(3, 3), f64(2, 3) })
  gradcheck(function(x, s) return x:scatter_add(2, idx, s) end, { f64(2, 4), f64(3, 4) }) -- src larger
end

tests["gradcheck masked_fill"] = function()
  local m = long({ { 1, 0, 1 } }):gt(0)
  gradcheck(function(x) return x:masked_fill(m, 3) end, { f64(2, 3) })
  gradcheck(function(x) return x:masked_fill(m:view(3, 1), -1) end, { f64(3) }) -- x broadcasts up
end

tests["gradcheck cat, stack and embedding"] = function()
  gradcheck(function(a, b, c) return T.cat({ a, b, c }, 2) end, { f64(2, 1), f64(2, 3), f64(2, 2) })
  gradcheck(function(a, b) return T.cat({ a, b }, 1) end, { f64(1, 3), f64(2, 3) })
  gradcheck(function(a, b) return T.stack({ a, b }, 2) end, { f64(2, 3), f64(2, 3) })
  local tok = long({ { 1, 4, 4 }, { 2, 1, 3 } })
  gradcheck(function(w) return T.embedding(tok, w, 0) end, { f64(4, 3) })
  -- (with a padding_idx the padding row's gradient is zero by design, not the derivative)
end

---------------------------------------------------------------------------
-- strided inputs, dtypes, sizes that take the threaded paths
---------------------------------------------------------------------------
tests["non-contiguous inputs and indices"] = function()
  local base = T.randn({ 5, 6 }, { dtype = "f64" })
  local xt = base:t() -- [6 x 5], strided
  local idx = long({ { 4, 1 }, { 2, 6 }, { 1, 1 } }):t()[1] -- {4, 2, 1}, stride 2
  close(xt:index_select(1, idx), xt:contiguous():index_select(1, idx:contiguous()))
  close(xt:index_select(2, idx), xt:contiguous():index_select(2, idx:contiguous()))
  local nx = base:narrow(2, 2, 4) -- [5 x 4] with row stride 6
  local g = T.randint(1, 5, { 5, 3 }):t():t() -- a view
  close(nx:gather(2, g), nx:contiguous():gather(2, g))
  local gt = T.randint(1, 5, { 3, 5 }):t() -- [5 x 3] index, transposed
  close(nx:gather(2, gt), nx:contiguous():gather(2, gt:contiguous()))
  local src = T.randn({ 3, 5 }, { dtype = "f64" }):t()
  close(nx:scatter_add(2, gt, src), nx:contiguous():scatter_add(2, gt:contiguous(), src:contiguous()))
  local m = T.rand({ 4, 5 }):gt(0.5):t()
  close(nx:masked_fill(m, 9), nx:contiguous():masked_fill(m:contiguous(), 9))
  close(T.cat({ xt, nx:t() }, 1), T.cat({ xt:contiguous(), nx:t():contiguous() }, 1))
  local tok = long({ { 1, 2, 5 }, { 3, 3, 4 } }):t()
  close(T.embedding(tok, base, 0), T.embedding(tok:contiguous(), base, 0))
  -- a broadcast (stride-0) upstream gradient: sum's backward
  local w = f64(5, 3)
  T.embedding(tok, w, 0):sum():backward()
  close(w.grad:sum(2), long({ 3, 3, 6, 3, 3 }):double())
end

tests["value dtypes: f32, f16, i64, i32, bool"] = function()
  local idx = long({ 2, 2, 1 })
  for _, dt in ipairs({ "f32", "f16", "bf16", "i64", "i32", "u8", "bool" }) do
    local x = T.tensor({ { 1, 0, 3 }, { 0, 5, 6 } }, { dtype = dt })
    local y = x:index_select(1, idx)
    assert(y.dtype == dt, dt)
    close(y, T.tensor({ { 0, 5, 6 }, { 0, 5, 6 }, { 1, 0, 3 } }):to(dt), { msg = dt })
    close(x:gather(2, long({ { 3 }, { 1 } })), T.tensor({ { 3 }, { 0 } }):to(dt), { msg = dt })
    close(T.cat({ x, x }, 1):sum(), x:sum() * 2, { msg = dt })
    local s = T.zeros({ 2, 3 }, { dtype = dt }):scatter_add(2, long({ { 1, 1 }, { 3, 2 } }), x:narrow(2, 1, 2))
    close(s, T.tensor({ { 1, 0, 0 }, { 0, 5, 0 } }):to(dt), { msg = dt })
    close(x:masked_fill(x:gt(2), 1), T.tensor({ { 1, 0, 1 }, { 0, 1, 1 } }):to(dt), { msg = dt })
  end
  -- f32 and i64 meet in cat: f32
  assert(T.cat({ T.ones(2), long({ 3 }) }).dtype == "f32")
end

tests["large sizes agree with one-hot matmul references"] = function()
  local V, D, N = 300, 40, 5000
  local w = T.randn({ V, D }, { dtype = "f64", requires_grad = true })
  local tok = T.randint(1, V + 1, { N })
  local onehot = tok:view(N, 1):eq(T.arange(1, V + 1, { dtype = "i64" })):double() -- [N x V]
  local e = T.embedding(tok, w, 0)
  close(e, onehot:matmul(w:detach()))
  local gy = T.randn({ N, D }, { dtype = "f64" })
  e:backward(gy)
  close(w.grad, onehot:t():matmul(gy), { atol = 1e-9 })
  -- gather / scatter_add along the last dim over many rows
  local x = T.randn({ N, V }, { dtype = "f64", requires_grad = true })
  local picked = x:gather(2, tok:view(N, 1))
  close(picked, (x:detach() * onehot):sum(2, true))
  picked:backward(gy:narrow(2, 1, 1))
  close(x.grad, onehot * gy:narrow(2, 1, 1))
  -- index_select of many columns
  local cols = T.randint(1, V + 1, { 400 })
  local sel = x:detach():index_select(2, cols)
  local oh = cols:view(400, 1):eq(T.arange(1, V + 1, { dtype = "i64" })):double() -- [400 x V]
  close(sel, x:detach():matmul(oh:t()))
end

---------------------------------------------------------------------------
-- zero sizes
---------------------------------------------------------------------------
tests["zero-size edge cases"] = function()
  local x = f64(3, 4)
  local none = T.zeros({ 0 }, { dtype = "i64" })
  local y = x:index_select(1, none)
  same_shape(y, { 0, 4 })
  y:sum():backward()
  assert(x.grad:abs():sum():item() == 0)
  same_shape(x:gather(2, T.zeros({ 3, 0 }, { dtype = "i64" })), { 3, 0 })
  close(x:scatter_add(1, T.zeros({ 0, 4 }, { dtype = "i64" }), T.zeros({ 0, 4 }, { dtype = "f64" })), x)
  same_shape(T.zeros(0, 3):masked_fill(T.zeros({ 0, 3 }, { dtype = "bool" }), 1), { 0, 3 })
  same_shape(T.cat({ T.zeros(2, 0), T.ones(2, 3), T.zeros(2, 0) }, 2), { 2, 3 })
  same_shape(T.cat({ T.zeros({ 0 }), T.zeros({ 0 }) }), { 0 })
  same_shape(T.embedding(none, T.ones(5, 2), 0), { 0, 2 })
  same_shape(T.embedding(T.zeros({ 2, 0 }, { dtype = "i64" }), T.ones(5, 2), 0), { 2, 0, 2 })
  same_shape(T.zeros(0, 3):index_select(2, long({ 1, 3 })), { 0, 2 })
  -- a skipped empty tensor that requires grad still gets a (empty) gradient
  local e = T.zeros({ 0 }, { dtype = "f64", requires_grad = true })
  local a = f64(2, 2)
  T.cat({ e, a }):sum():backward()
  same_shape(e.grad, { 0 })
  close(a.grad, T.ones(2, 2))
end

---------------------------------------------------------------------------
-- split / chunk round trips
---------------------------------------------------------------------------
tests["split and chunk round-trip through cat"] = function()
  local x = T.randn({ 7, 5 }, { dtype = "f64" })
  close(T.cat(x:split(3, 1), 1), x)
  close(T.cat(x:split({ 1, 4 }, 2), 2), x)
  close(T.cat(x:chunk(3, 2), -1), x)
  close(T.cat(T.chunk(x, 4, 1)), x)
  -- and the gradient comes back whole through the pieces
  local w = f64(6, 4)
  local parts = w:chunk(3, 1)
  local scaled = {}
  for k, p in ipairs(parts) do scaled[k] = p * k end
  T.cat(scaled, 1):sum():backward()
  close(w.grad, T.tensor({ 1, 1, 2, 2, 3, 3 }, { dtype = "f64" }):view(6, 1):expand(6, 4))
  -- stack of split pieces
  local pieces = x:narrow(1, 1, 6):split(2, 1)
  close(T.stack(pieces, 1):reshape(6, 5), x:narrow(1, 1, 6))
end

---------------------------------------------------------------------------
-- in place
---------------------------------------------------------------------------
tests["masked_fill_ and scatter_add_ in place"] = function()
  local x = T.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  local r = x:masked_fill_(x:gt(4), 0)
  assert(r == x or r:storage_id() == x:storage_id())
  close(x, { { 1, 2, 3 }, { 4, 0, 0 } })
  x:scatter_add_(2, long({ { 1, 1 }, { 3, 3 } }), T.ones(2, 2))
  close(x, { { 3, 2, 3 }, { 4, 0, 2 } })
  -- a transposed (non-contiguous) destination
  local b = T.zeros(3, 2)
  local bt = b:t()
  bt:masked_fill_(T.tensor({ true, false, true }), 7)
  close(b, { { 7, 7 }, { 0, 0 }, { 7, 7 } })
  bt:scatter_add_(2, long({ { 2 }, { 2 } }), T.ones(2, 1))
  close(b, { { 7, 7 }, { 1, 1 }, { 7, 7 } })
  -- a leaf that requires grad is refused
  local leafx = f64(2, 3)
  raises({ "masked_fill_", "leaf" }, function() leafx:masked_fill_(T.ones(2, 3):gt(0), 1) end)
  raises({ "scatter_add_", "leaf" }, function() leafx:scatter_add_(1, long({ { 1, 1, 1 } }), T.ones({ 1, 3 }, { dtype = "f64" })) end)
  -- a non-leaf takes the new history
  local a = f64(2, 3)
  local y = a * 2
  y:masked_fill_(T.tensor({ true, false, false }), 0)
  local s = f64(1, 3)
  y:scatter_add_(1, long({ { 2, 2, 1 } }), s)
  y:sum():backward()
  close(a.grad, T.tensor({ { 0, 2, 2 }, { 0, 2, 2 } }))
  close(s.grad, T.ones(1, 3))
  -- a tensor saved for backward and then modified in place is caught
  local b2 = f64(2, 3)
  local h = b2 * 1
  local z = h:sin() -- saves h
  h:masked_fill_(T.ones(3):gt(0), 0)
  raises("modified by an in-place operation", function() z:sum():backward() end)
  local h2 = b2 * 1
  local z2 = h2:sin()
  h2:scatter_add_(1, long({ { 1, 1, 1 } }), T.ones({ 1, 3 }, { dtype = "f64" }))
  raises("modified by an in-place operation", function() z2:sum():backward() end)
  -- the mask must broadcast to x itself
  raises({ "masked_fill_", "[2 x 3]", "[3]" }, function() T.zeros(3):masked_fill_(T.ones(2, 3):gt(0), 1) end)
end

---------------------------------------------------------------------------
-- errors
---------------------------------------------------------------------------
tests["errors name the op, the index and the size"] = function()
  local x = T.randn(3, 4)
  raises({ "index_select", "index 4", "size 3" }, function() x:index_select(1, long({ 1, 4 })) end)
  raises({ "index_select", "index 0", "1-based" }, function() x:index_select(2, long({ 0 })) end)
  raises({ "index -1", "size 4" }, function() x:index_select(2, long({ -1 })) end)
  raises({ "gather", "index 5", "size 4" }, function() x:gather(2, long({ { 5 } })) end)
  raises({ "scatter_add", "index 9", "size 3" }, function() x:scatter_add(1, long({ { 9 } }), T.ones(1, 1)) end)
  raises({ "embedding", "index 11", "size 10" }, function() T.embedding(long({ 1, 11 }), T.ones(10, 2), 0) end)
  raises({ "embedding", "padding_idx 11" }, function() T.embedding(long({ 1 }), T.ones(10, 2), 11) end)
  raises({ "embedding", "2-d" }, function() T.embedding(long({ 1 }), T.ones(10), 0) end)
  -- index dtype and rank
  raises({ "index_select", "i64 or i32", "f32" }, function() x:index_select(1, T.tensor({ 1 })) end)
  raises({ "index_select", "1-d" }, function() x:index_select(1, long({ { 1 } })) end)
  raises({ "gather", "dimensions" }, function() x:gather(1, long({ 1 })) end)
  raises({ "gather", "larger", "dimension 2" }, function() x:gather(1, long({ { 1, 1, 1, 1, 1 } })) end)
  -- value dtypes
  raises({ "scatter_add", "f64", "f32" }, function() x:scatter_add(1, long({ { 1 } }), T.ones({ 1, 1 }, { dtype = "f64" })) end)
  raises({ "masked_fill", "bool", "f32" }, function() x:masked_fill(T.ones(3, 4), 1) end)
  raises({ "masked_fill", "broadcast" }, function() x:masked_fill(T.ones(2, 4):gt(0), 1) end)
  raises({ "masked_fill", "i64" }, function() T.zeros({ 2 }, { dtype = "i64" }):masked_fill(T.ones(2):gt(0), math.huge) end)
  -- dims
  raises({ "index_select", "dimension 3", "2-d" }, function() x:index_select(3, long({ 1 })) end)
  raises({ "gather", "out of range" }, function() x:gather(-3, long({ { 1 } })) end)
  raises({ "cat", "dimension 3" }, function() T.cat({ x, x }, 3) end)
  raises({ "stack", "dimension 4" }, function() T.stack({ x, x }, 4) end)
  raises("1-based", function() x:index_select(0, long({ 1 })) end)
  -- cat and stack shapes
  raises({ "cat", "except in dimension 1", "[3 x 4]", "[3 x 5]" }, function() T.cat({ x, T.ones(3, 5) }, 1) end)
  raises({ "cat", "same number of dimensions" }, function() T.cat({ x, T.ones(4) }, 1) end)
  raises({ "cat", "zero-dimensional" }, function() T.cat({ T.ones(2), T.tensor(1) }) end)
  raises({ "cat", "non-empty" }, function() T.cat({}) end)
  raises({ "cat", "entry 2", "not a tensor" }, function() T.cat({ x, 3 }) end)
  raises({ "stack", "entry 2", "[3 x 5]" }, function() T.stack({ x, T.ones(3, 5) }) end)
end

return tests
