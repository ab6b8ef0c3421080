-- tests/test_norm.lua: layer_norm and group_norm against PyTorch (forward and the three
-- gradients, tests/ref/gen_norm.py), f64 gradient checks, strided and half-precision
-- inputs, errors; and dropout: its Philox mask, scaling, reproducibility and gradient.
local T = require "tocha"
local raises = T.testing.raises
local F = require "tocha.nn.functional"
local ref = dofile(T.testing.path("ref/norm_ref.lua"))

local tests = {}

local function tensor(vals, shape, dtype)
  return T.tensor(vals, { dtype = dtype or "f64" }):view(shape)
end

local function leaf(vals, shape, dtype)
  return vals and tensor(vals, shape, dtype):requires_grad_(true)
end

-- ---- layer norm, group norm against PyTorch -------------------------------------------------------
local function run(c, dtype)
  local x = leaf(c.x, c.shape, dtype)
  local wshape = c.wshape or { c.shape[2] }
  local w, b = leaf(c.w, wshape, dtype), leaf(c.b, wshape, dtype)
  local y
  if c.nnorm then y = F.layer_norm(x, wshape, w, b, { eps = c.eps })
  else y = F.group_norm(x, c.groups, w, b, { eps = c.eps }) end
  return y, x, w, b
end

for name, c in pairs(ref) do
  if not c.nnorm then c.wshape = nil end
  tests["matches PyTorch: " .. name .. " (f64, forward and gradients)"] = function()
    local y, x, w, b = run(c, "f64")
    T.testing.assert_close(y, tensor(c.y, c.shape), { rtol = 1e-10, atol = 1e-11, msg = name .. " y" })
    y:backward(tensor(c.g, c.shape))
    T.testing.assert_close(x.grad, tensor(c.gx, c.shape), { rtol = 1e-8, atol = 1e-10, msg = name .. " gx" })
    if w then
      T.testing.assert_close(w.grad, tensor(c.gw, w.shape), { rtol = 1e-10, atol = 1e-11, msg = name .. " gw" })
      T.testing.assert_close(b.grad, tensor(c.gb, b.shape), { rtol = 1e-10, atol = 1e-11, msg = name .. " gb" })
    end
  end
  tests["matches PyTorch: " .. name .. " (f32)"] = function()
    local y, x, w = run(c, "f32")
    assert(y.dtype == "f32")
    T.testing.assert_close(y, tensor(c.y, c.shape), { rtol = 1e-5, atol = 1e-5, msg = name .. " y" })
    y:backward(tensor(c.g, c.shape, "f32"))
    T.testing.assert_close(x.grad, tensor(c.gx, c.shape), { rtol = 1e-4, atol = 1e-4, msg = name .. " gx" })
    if w then T.testing.assert_close(w.grad, tensor(c.gw, w.shape), { rtol = 1e-4, atol = 1e-4, msg = name .. " gw" }) end
  end
end

-- ---- gradient checks ----------------------------------------------------------------------------------
tests["layer_norm: f64 gradient checks (1 and 2 dims, with and without affine)"] = function()
  local x = T.randn({ 2, 3, 4 }, { dtype = "f64", requires_grad = true })
  local w1 = T.randn({ 4 }, { dtype = "f64", requires_grad = true })
  local b1 = T.randn({ 4 }, { dtype = "f64", requires_grad = true })
  local w2 = T.randn({ 3, 4 }, { dtype = "f64", requires_grad = true })
  local b2 = T.randn({ 3, 4 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a, w, b) return F.layer_norm(a, { 4 }, w, b) end, { x, w1, b1 })
  T.testing.gradcheck(function(a, w, b) return F.layer_norm(a, { 3, 4 }, w, b, { eps = 1e-3 }) end, { x, w2, b2 })
  T.testing.gradcheck(function(a) return F.layer_norm(a, 4) end, { x })
  T.testing.gradcheck(function(a, w) return F.layer_norm(a, { 4 }, w, nil) end, { x, w1 })
  assert(F.layer_norm(x, 4).grad_fn == "LayerNormBackward")
end

tests["group_norm: f64 gradient checks (several group counts, 2-d to 4-d inputs)"] = function()
  local x = T.randn({ 2, 6, 2, 3 }, { dtype = "f64", requires_grad = true })
  local w = T.randn({ 6 }, { dtype = "f64", requires_grad = true })
  local b = T.randn({ 6 }, { dtype = "f64", requires_grad = true })
  for _, g in ipairs({ 1, 2, 3, 6 }) do
    T.testing.gradcheck(function(a, ww, bb) return F.group_norm(a, g, ww, bb) end, { x, w, b })
  end
  local x3 = T.randn({ 3, 4, 5 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a) return F.group_norm(a, 2) end, { x3 })
  local x2 = T.randn({ 4, 6 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a, bb) return F.group_norm(a, 3, nil, bb) end, { x2, b })
  assert(F.group_norm(x3, 2).grad_fn == "GroupNormBackward")
end

-- ---- group_norm with silu fused in ------------------------------------------------------------------------
tests["group_norm {silu = true}: silu(group_norm(x)) as one op, forward and backward"] = function()
  local close = T.testing.assert_close
  local function ref(x, g, w, b) return F.silu(F.group_norm(x, g, w, b, { eps = 1e-6 })) end
  local x = T.randn({ 2, 6, 5, 4 }, { dtype = "f64" }) * 3 + 1
  local w, b = T.randn({ 6 }, { dtype = "f64" }), T.randn({ 6 }, { dtype = "f64" })
  local y = F.group_norm(x, 3, w, b, { eps = 1e-6, silu = true })
  close(y, ref(x, 3, w, b), { rtol = 1e-14, atol = 1e-15 })
  close(F.group_norm(x, 2, nil, nil, { silu = true }), F.silu(F.group_norm(x, 2)), { rtol = 1e-14, atol = 1e-15 })
  local v = x:permute(1, 3, 2, 4) -- [2, 5, 6, 4], strided: channels 5
  close(F.group_norm(v, 5, nil, nil, { silu = true }), F.silu(F.group_norm(v:contiguous(), 5)), { rtol = 1e-13 })
  -- f32 (the vectorised path), and f16 / bf16 (through double) against the f64 reference
  close(F.group_norm(x:float(), 3, w:float(), b:float(), { eps = 1e-6, silu = true }), ref(x, 3, w, b),
    { rtol = 1e-5, atol = 1e-5 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local yh = F.group_norm(x:to(dt), 3, w, b, { eps = 1e-6, silu = true })
    assert(yh.dtype == dt)
    close(yh, ref(x:to(dt):double(), 3, w, b), { rtol = 2e-2, atol = 3e-2 })
  end
  -- the gradients: the composite's, in f64 and f32, then finite differences in f64
  local gy = T.randn(x.shape, { dtype = "f64" })
  local function grads(dt, fused)
    local function leaf_of(t) return t:to(dt):clone():requires_grad_() end
    local a, ww, bb = leaf_of(x), leaf_of(w), leaf_of(b)
    local out = fused and F.group_norm(a, 3, ww, bb, { eps = 1e-6, silu = true }) or ref(a, 3, ww, bb)
    out:backward(gy:to(dt))
    return { a.grad, ww.grad, bb.grad }, out.grad_fn
  end
  local want = grads("f64", false)
  local got, fn = grads("f64", true)
  assert(fn == "GroupNormSiluBackward", tostring(fn))
  for i = 1, 3 do close(got[i], want[i], { rtol = 1e-12, atol = 1e-13 }) end
  local got32 = grads("f32", true)
  for i = 1, 3 do close(got32[i], want[i], { rtol = 1e-4, atol = 1e-4 }) end
  local xg = T.randn({ 2, 6, 2, 3 }, { dtype = "f64", requires_grad = true })
  local wg = T.randn({ 6 }, { dtype = "f64", requires_grad = true })
  local bg = T.randn({ 6 }, { dtype = "f64", requires_grad = true })
  for _, g in ipairs({ 1, 3, 6 }) do
    T.testing.gradcheck(function(a, ww, bb) return F.group_norm(a, g, ww, bb, { silu = true }) end, { xg, wg, bg })
  end
  T.testing.gradcheck(function(a) return F.group_norm(a:transpose(1, 2), 2, nil, nil, { silu = true }) end,
    { T.randn({ 4, 2, 5 }, { dtype = "f64", requires_grad = true }) })
  T.testing.gradcheck(function(ww, bb) return F.group_norm(xg:detach(), 2, ww, bb, { silu = true }) end, { wg, bg })
end

-- ---- strided, half precision, odd sizes ---------------------------------------------------------------
tests["norms: strided inputs equal their contiguous copies"] = function()
  local base = T.randn({ 5, 4, 6 }, { dtype = "f64" })
  local w, b = T.randn({ 5 }, { dtype = "f64" }), T.randn({ 5 }, { dtype = "f64" })
  local v = base:transpose(1, 3) -- [6, 4, 5]
  T.testing.assert_close(F.layer_norm(v, 5, w, b), F.layer_norm(v:contiguous(), 5, w, b), { rtol = 1e-13 })
  T.testing.assert_close(F.layer_norm(v, { 4, 5 }), F.layer_norm(v:contiguous(), { 4, 5 }), { rtol = 1e-13 })
  local gx = base:permute(3, 1, 2) -- [6, 5, 4]: channels 5
  T.testing.assert_close(F.group_norm(gx, 5, w, b), F.group_norm(gx:contiguous(), 5, w, b), { rtol = 1e-13 })
  local nar = base:narrow(3, 2, 4) -- [5, 4, 4]
  T.testing.assert_close(F.group_norm(nar, 1), F.group_norm(nar:contiguous(), 1), { rtol = 1e-13 })
  local x = T.randn({ 4, 3, 2 }, { dtype = "f64", requires_grad = true })
  local wl = T.randn({ 3 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a, ww) return F.layer_norm(a:transpose(2, 3), 3, ww, nil) end, { x, wl })
  T.testing.gradcheck(function(a, ww) return F.group_norm(a:permute(3, 2, 1), 3, ww, nil) end, { x, wl })
end

tests["norms: f16 and bf16 inputs (with f32 weights) run close to f32"] = function()
  local x = T.randn({ 4, 8, 3, 3 })
  local w, b = T.randn({ 8 }), T.randn({ 8 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local y = F.group_norm(x:to(dt), 4, w, b)
    assert(y.dtype == dt)
    T.testing.assert_close(y, F.group_norm(x, 4, w, b), { rtol = 2e-2, atol = 3e-2 })
    local l = F.layer_norm(x:to(dt), { 3, 3 })
    assert(l.dtype == dt)
    T.testing.assert_close(l, F.layer_norm(x, { 3, 3 }), { rtol = 2e-2, atol = 3e-2 })
  end
end

tests["norms: large inputs match an f64 reference (threaded path, big offsets)"] = function()
  local x = T.randn({ 64, 1000 }) * 3 + 500
  T.testing.assert_close(F.layer_norm(x, 1000), F.layer_norm(x:double(), 1000), { rtol = 1e-4, atol = 1e-4 })
  local g = T.randn({ 4, 32, 16, 16 })
  T.testing.assert_close(F.group_norm(g, 8), F.group_norm(g:double(), 8), { rtol = 1e-5, atol = 1e-5 })
  -- mean 0, variance 1 per group (biased, as PyTorch)
  local y = F.group_norm(g:double(), 8):reshape(4, 8, -1)
  T.testing.assert_close(y:mean(3), T.zeros({ 4, 8 }, { dtype = "f64" }), { atol = 1e-12 })
  T.testing.assert_close(y:var(3, false, { correction = 0 }), T.ones({ 4, 8 }, { dtype = "f64" }), { rtol = 1e-4 })
end

tests["group_norm f32: whole-group and per-channel sums, silu, 1 and 2 threads, forward and gradients match f64"] = function()
  local threads = T.get_num_threads()
  local w, b = T.randn({ 12 }), T.randn({ 12 })
  local cases = {
    T.randn({ 24, 12, 7, 9 }) * 2 + 40,             -- contiguous: each group one run, threaded at 2
    T.randn({ 5, 12, 11 }):narrow(3, 2, 9),         -- rows of 9, 11 apart: the per-channel sums
    T.randn({ 3, 12, 1 }),                          -- one element per channel
  }
  for nt = 1, 2 do
    T.set_num_threads(nt)
    for i, x in ipairs(cases) do
      for _, silu in ipairs({ false, true }) do
        local msg = string.format("case %d, silu %s, %d threads", i, silu, nt)
        local xs = { x:detach():requires_grad_(true), x:double():requires_grad_(true) }
        local ws = { w:clone():requires_grad_(true), w:double():requires_grad_(true) }
        local bs = { b:clone():requires_grad_(true), b:double():requires_grad_(true) }
        local ys, gy = {}, T.randn(x.shape)
        for k = 1, 2 do
          ys[k] = F.group_norm(xs[k], 4, ws[k], bs[k], { silu = silu })
          ys[k]:backward(gy:to(ys[k].dtype))
        end
        T.testing.assert_close(ys[1], ys[2], { rtol = 1e-5, atol = 1e-5, msg = msg })
        T.testing.assert_close(xs[1].grad, xs[2].grad, { rtol = 1e-4, atol = 1e-4, msg = msg .. " gx" })
        T.testing.assert_close(ws[1].grad, ws[2].grad, { rtol = 1e-4, atol = 1e-3, msg = msg .. " gw" })
        T.testing.assert_close(bs[1].grad, bs[2].grad, { rtol = 1e-4, atol = 1e-3, msg = msg .. " gb" })
      end
    end
  end
  T.set_num_threads(threads)
end

tests["norms: errors name what was wrong"] = function()
  local x = T.randn({ 2, 6, 4 })
  raises("does not match the input's trailing dims", F.layer_norm, x, { 5 })
  raises("weight has shape [5], expected [4]", F.layer_norm, x, { 4 }, T.ones({ 5 }))
  raises("bias has shape [2 x 2], expected [4]", F.layer_norm, x, { 4 }, nil, T.ones({ 2, 2 }))
  raises("cannot normalise over the last 4 dims", T._nn.layer_norm, x, 4)
  raises("floating point", F.layer_norm, T.ones({ 2, 3 }, { dtype = "i64" }), 3)
  raises("6 channels cannot be split into 4 groups", F.group_norm, x, 4)
  raises("expected an input [N, C, *]", F.group_norm, T.randn({ 6 }), 3)
  raises("weight has shape [3], expected [6]", F.group_norm, x, 3, T.ones({ 3 }))
  raises("number of groups must be positive", F.group_norm, x, 0)
end

-- ---- dropout -----------------------------------------------------------------------------------------
tests["dropout: p = 0 and eval mode return the input itself; p = 1 gives zeros"] = function()
  local x = T.randn({ 3, 4 })
  assert(F.dropout(x, 0):storage_id() == x:storage_id())
  assert(F.dropout(x, 0.5, { training = false }):storage_id() == x:storage_id())
  local z = F.dropout(x, 1)
  assert(z:abs():sum():item() == 0)
  local xr = x:double():requires_grad_(true)
  F.dropout(xr, 1):sum():backward()
  assert(xr.grad:abs():sum():item() == 0)
end

tests["dropout: keeps about 1 - p of the elements, scaled by 1 / (1 - p)"] = function()
  local x = T.ones({ 200, 500 })
  for _, p in ipairs({ 0.1, 0.5, 0.9 }) do
    local y = F.dropout(x, p)
    local kept = y:gt(0):sum():item() / x:numel()
    assert(math.abs(kept - (1 - p)) < 0.01, string.format("p = %g kept %g", p, kept))
    local scaled = y:gt(0):to("f32") * (1 / (1 - p))
    T.testing.assert_close(y, scaled, { rtol = 1e-6 })
  end
end

tests["dropout: the same RNG state gives the same mask; the gradient uses it"] = function()
  local x = T.randn({ 7, 9 }, { dtype = "f64", requires_grad = true })
  local st = T.get_rng_state()
  local a = F.dropout(x, 0.3)
  local b = F.dropout(x, 0.3)
  T.set_rng_state(st)
  local c = F.dropout(x, 0.3)
  T.testing.assert_close(c, a, { rtol = 0, atol = 0 })
  assert(a:ne(b):sum():item() > 0, "two draws differ")
  a:backward(T.ones({ 7, 9 }, { dtype = "f64" }))
  -- gx = mask / (1 - p): nonzero exactly where the output kept x
  T.testing.assert_close(x.grad, a:ne(0):double() / 0.7, { rtol = 1e-14 })
  assert(a.grad_fn == "DropoutBackward")
  T.testing.gradcheck(function(t) return F.dropout(t, 0.4) end, { x })
end

tests["dropout: strided and f16 inputs draw the row-major mask of their shape"] = function()
  local base = T.randn({ 6, 5 }, { dtype = "f64" })
  local st = T.get_rng_state()
  local a = F.dropout(base:t(), 0.5)
  T.set_rng_state(st)
  local b = F.dropout(base:t():contiguous(), 0.5)
  T.testing.assert_close(a, b, { rtol = 0, atol = 0 })
  T.set_rng_state(st)
  local h = F.dropout(base:t():to("f16"), 0.5)
  assert(h.dtype == "f16")
  T.testing.assert_close(h, b, { rtol = 1e-3, atol = 1e-3 })
  local x = T.randn({ 4, 3 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(t) return F.dropout(t:t(), 0.5) end, { x })
end

tests["dropout: errors name what was wrong"] = function()
  raises("probability must be between 0 and 1 (got 1.5)", F.dropout, T.ones({ 2 }), 1.5)
  raises("probability must be between 0 and 1", F.dropout, T.ones({ 2 }), -0.1)
  raises("floating point", F.dropout, T.ones({ 2 }, { dtype = "i64" }), 0.5)
end

return tests
