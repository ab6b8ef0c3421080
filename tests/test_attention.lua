-- tests/test_attention.lua: scaled_dot_product_attention against PyTorch (forward and
-- gradients, tests/ref/gen_norm.py) and against a naive matmul + softmax composite in tocha;
-- f64 gradient checks (masks, causal, broadcast batch dims, dropout), strided and
-- half-precision inputs, fully masked rows, and the error messages.
local T = require "tocha"
local raises = T.testing.raises
local F = require "tocha.nn.functional"
local ref = dofile(T.testing.path("ref/attention_ref.lua"))

local tests = {}
local sdpa = F.scaled_dot_product_attention

local function tensor(vals, shape, dtype)
  return T.tensor(vals, { dtype = dtype or "f64" }):view(shape)
end

-- a bool [L, S] mask, true where s <= l (PyTorch's top-left aligned causal mask)
local function tril(L, S)
  local rows = {}
  for l = 1, L do
    rows[l] = {}
    for s = 1, S do rows[l][s] = s <= l end
  end
  return T.tensor(rows)
end

-- the same attention from primitive ops (rows with nothing to attend are NaN here)
local function naive(q, k, v, opts)
  opts = opts or {}
  local scale = opts.scale or 1 / math.sqrt(q.shape[#q.shape])
  local s = q:matmul(k:transpose(-2, -1)) * scale
  local m = opts.attn_mask
  if opts.is_causal then m = tril(q.shape[#q.shape - 1], k.shape[#k.shape - 1]) end
  if m and m.dtype == "bool" then s = T.where(m, s, -math.huge)
  elseif m then s = s + m end
  return F.softmax(s, -1):matmul(v)
end

-- ---- against PyTorch ------------------------------------------------------------------------------
local function inputs(c, dtype)
  local q = tensor(c.q, c.qshape, dtype):requires_grad_(true)
  local k = tensor(c.k, c.kshape, dtype):requires_grad_(true)
  local v = tensor(c.v, c.vshape, dtype):requires_grad_(true)
  local mask
  if c.mask_kind == "bool" then mask = T.tensor(c.mask):view(c.mask_shape)
  elseif c.mask_kind == "float" then mask = tensor(c.mask, c.mask_shape, dtype):requires_grad_(true) end
  local opts = { attn_mask = mask, is_causal = c.causal, scale = c.scale > 0 and c.scale or nil }
  return q, k, v, mask, opts
end

for name, c in pairs(ref) do
  for _, dtype in ipairs({ "f64", "f32" }) do
    tests["matches PyTorch: " .. name .. " (" .. dtype .. ", forward and gradients)"] = function()
      local q, k, v, mask, opts = inputs(c, dtype)
      local out = sdpa(q, k, v, opts)
      assert(out.dtype == dtype)
      for i, s in ipairs(c.out_shape) do assert(out.shape[i] == s, "output shape") end
      local tol = dtype == "f64" and { rtol = 1e-10, atol = 1e-12 } or { rtol = 1e-4, atol = 1e-5 }
      T.testing.assert_close(out, tensor(c.out, c.out_shape), { rtol = tol.rtol, atol = tol.atol, msg = name })
      out:backward(tensor(c.g, c.out_shape, dtype))
      for _, p in ipairs({ { q, c.gq, "gq" }, { k, c.gk, "gk" }, { v, c.gv, "gv" } }) do
        T.testing.assert_close(p[1].grad, tensor(p[2], p[1].shape), { rtol = tol.rtol, atol = tol.atol, msg = name .. " " .. p[3] })
      end
      if c.gmask then
        T.testing.assert_close(mask.grad, tensor(c.gmask, c.mask_shape), { rtol = tol.rtol, atol = tol.atol, msg = name .. " gmask" })
      end
    end
  end
end

tests["a fully masked row gives 0 and passes no gradient"] = function()
  local q = T.randn({ 4, 3 }, { dtype = "f64", requires_grad = true })
  local k = T.randn({ 5, 3 }, { dtype = "f64", requires_grad = true })
  local v = T.randn({ 5, 2 }, { dtype = "f64", requires_grad = true })
  local m = T.ones({ 4, 5 }, { dtype = "bool" })
  m[3]:fill_(0)
  local out = sdpa(q, k, v, { attn_mask = m })
  assert(out[3]:abs():sum():item() == 0 and out:isfinite():logical_not():sum():item() == 0)
  out:sum():backward()
  assert(q.grad[3]:abs():sum():item() == 0)
  local fm = T.zeros({ 4, 5 }, { dtype = "f64" })
  fm[2]:fill_(-math.huge)
  assert(sdpa(q, k, v, { attn_mask = fm })[2]:abs():sum():item() == 0)
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { attn_mask = m }) end, { q, k, v })
end

-- a and b close, and so the gradients of xs and ys (leaves) after a backward of one random gradient
local function same_with_grads(a, b, xs, ys, tol)
  T.testing.assert_close(a, b, tol)
  local g = T.randn(a.shape, { dtype = a.dtype })
  a:backward(g)
  b:backward(g)
  for i = 1, #xs do T.testing.assert_close(xs[i].grad, ys[i].grad, tol) end
end

-- ---- against the composite ---------------------------------------------------------------------------
local function compare_with_naive(q, k, v, opts, tol)
  local qa, ka, va = q:detach():requires_grad_(true), k:detach():requires_grad_(true), v:detach():requires_grad_(true)
  local qb, kb, vb = q:detach():requires_grad_(true), k:detach():requires_grad_(true), v:detach():requires_grad_(true)
  same_with_grads(sdpa(qa, ka, va, opts), naive(qb, kb, vb, opts), { qa, ka, va }, { qb, kb, vb }, tol)
end

tests["matches the matmul + softmax composite (masks, causal, L ~= S, Ev ~= E, broadcast)"] = function()
  local tol = { rtol = 1e-10, atol = 1e-12 }
  local q = T.randn({ 2, 3, 17, 8 }, { dtype = "f64" })
  local k = T.randn({ 2, 3, 23, 8 }, { dtype = "f64" })
  local v = T.randn({ 2, 3, 23, 5 }, { dtype = "f64" })
  compare_with_naive(q, k, v, {}, tol)
  compare_with_naive(q, k, v, { scale = 0.7 }, tol)
  compare_with_naive(q, k, v, { attn_mask = T.randn({ 3, 17, 23 }, { dtype = "f64" }) }, tol)
  local bm = T.rand({ 17, 23 }):gt(0.5)
  bm:narrow(2, 1, 1):fill_(1)
  compare_with_naive(q, k, v, { attn_mask = bm }, tol)
  compare_with_naive(q, k, v, { is_causal = true }, tol)
  compare_with_naive(k, q, q:narrow(4, 1, 5), { is_causal = true }, tol) -- L > S
  compare_with_naive(q, k[1], v[2][3], {}, tol) -- k, v broadcast over batch dims
  compare_with_naive(q[1][1], k[2][2], v[1][3], {}, tol) -- no batch dims at all
end

tests["matches the composite on large slices (threaded rows), f32"] = function()
  local q = T.randn({ 2, 200, 16 })
  local k = T.randn({ 2, 300, 16 })
  local v = T.randn({ 2, 300, 24 })
  local a = sdpa(q, k, v, { is_causal = true })
  T.testing.assert_close(a, naive(q:double(), k:double(), v:double(), { is_causal = true }), { rtol = 1e-4, atol = 1e-5 })
  compare_with_naive(q, k, v, { attn_mask = T.randn({ 200, 300 }) }, { rtol = 1e-3, atol = 1e-4 })
end

-- ---- tiles: blocks of 64 queries against tiles of 512 keys (core/cpu/attention.c) ---------------------
-- sizes that span several blocks and tiles with ragged last ones
local function against_f64(q, k, v, opts, tol)
  opts = opts or {}
  local o64 = {}
  for key, val in pairs(opts) do o64[key] = val end
  if opts.attn_mask and opts.attn_mask.dtype ~= "bool" then o64.attn_mask = opts.attn_mask:double() end
  local a = { q:detach():requires_grad_(true), k:detach():requires_grad_(true), v:detach():requires_grad_(true) }
  local b = { q:double():detach():requires_grad_(true), k:double():detach():requires_grad_(true),
    v:double():detach():requires_grad_(true) }
  local out, want = sdpa(a[1], a[2], a[3], opts), naive(b[1], b[2], b[3], o64)
  T.testing.assert_close(out, want:to(out.dtype), tol)
  local g = T.randn(out.shape, { dtype = "f64" })
  out:backward(g:to(out.dtype))
  want:backward(g)
  for i, name in ipairs({ "gq", "gk", "gv" }) do
    T.testing.assert_close(a[i].grad, b[i].grad:to(out.dtype), { rtol = tol.rtol, atol = tol.atol, msg = name })
  end
end

tests["tiles: forward and gradients against f64 across blocks and ragged edges (masks, causal L ~= S)"] = function()
  local f64 = { rtol = 1e-10, atol = 1e-12 }
  local q, k, v = T.randn({ 2, 150, 8 }, { dtype = "f64" }), T.randn({ 2, 1100, 8 }, { dtype = "f64" }),
    T.randn({ 2, 1100, 5 }, { dtype = "f64" })
  against_f64(q, k, v, {}, f64)
  against_f64(q, k, v, { is_causal = true }, f64) -- L < S: the later keys are never attended
  against_f64(k:narrow(2, 1, 700), q, q:narrow(3, 1, 5), { is_causal = true }, f64) -- L > S
  against_f64(k:narrow(2, 1, 600), k, v, {}, f64) -- 600 queries: blocks of 256 and a ragged one
  local bm = T.rand({ 150, 1100 }):gt(0.7)
  bm:narrow(2, 1, 1):fill_(1)
  bm:narrow(1, 40, 1):fill_(0) -- a row with nothing to attend
  local a = sdpa(q, k, v, { attn_mask = bm })
  assert(a[1][40]:abs():sum():item() == 0 and a:isfinite():logical_not():sum():item() == 0)
  bm:narrow(1, 40, 1):fill_(1)
  against_f64(q, k, v, { attn_mask = bm }, f64)
  -- a float mask, and its gradient
  local fm = T.randn({ 150, 1100 }, { dtype = "f64", requires_grad = true })
  local fm2 = fm:detach():requires_grad_(true)
  local out, want = sdpa(q, k, v, { attn_mask = fm }), naive(q, k, v, { attn_mask = fm2 })
  T.testing.assert_close(out, want, f64)
  local g = T.randn(out.shape, { dtype = "f64" })
  out:backward(g)
  want:backward(g)
  T.testing.assert_close(fm.grad, fm2.grad, f64)
  -- f32 against f64, a mask broadcast over the batch
  against_f64(q:float(), k:float(), v:float(), { attn_mask = bm }, { rtol = 1e-4, atol = 2e-5 })
  against_f64(q:float(), k:float(), v:float(), { is_causal = true }, { rtol = 1e-4, atol = 2e-5 })
end

tests["tiles: one slice shared out to the threads sums gk, gv the same on every run"] = function()
  local n = T.get_num_threads()
  T.set_num_threads(2)
  local q, k, v = T.randn({ 1, 300, 16 }), T.randn({ 1, 700, 16 }), T.randn({ 1, 700, 12 })
  local ok, err = pcall(function()
    against_f64(q, k, v, { is_causal = true }, { rtol = 1e-4, atol = 2e-5 })
    local function grads()
      local a, b, c = q:detach():requires_grad_(true), k:detach():requires_grad_(true), v:detach():requires_grad_(true)
      sdpa(a, b, c):sum():backward()
      return { a.grad, b.grad, c.grad }
    end
    local x, y = grads(), grads()
    for i = 1, 3 do assert(x[i]:ne(y[i]):sum():item() == 0, "gradients differ between runs") end
  end)
  T.set_num_threads(n)
  assert(ok, err)
end

tests["tiles: dropout draws the mask F.dropout draws on the probabilities, across tiles"] = function()
  for _, dtype in ipairs({ "f64", "f32" }) do
    local q = T.randn({ 2, 70, 8 }, { dtype = dtype, requires_grad = true })
    local k = T.randn({ 2, 600, 8 }, { dtype = dtype, requires_grad = true })
    local v = T.randn({ 2, 600, 4 }, { dtype = dtype, requires_grad = true })
    local q2, k2, v2 = q:detach():requires_grad_(true), k:detach():requires_grad_(true), v:detach():requires_grad_(true)
    local st = T.get_rng_state()
    local a = sdpa(q, k, v, { dropout_p = 0.3, scale = 0.5 })
    T.set_rng_state(st)
    local b = F.dropout(F.softmax(q2:matmul(k2:transpose(2, 3)) * 0.5, -1), 0.3):matmul(v2)
    local tol = dtype == "f64" and { rtol = 1e-10, atol = 1e-12 } or { rtol = 1e-4, atol = 1e-5 }
    same_with_grads(a, b, { q, k, v }, { q2, k2, v2 }, tol)
  end
end

-- the peak resident memory (VmHWM) since it was last reset, in bytes, or nil without /proc
local function peak_rss()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local kb = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return kb and tonumber(kb) * 1024
end

local function reset_peak_rss()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  f:close()
  return ok ~= nil
end

tests["tiles: attention over 4096 x 4096 never holds a 4096 x 4096 buffer"] = function()
  local q, k, v = T.randn({ 1, 4096, 8 }, { requires_grad = true }), T.randn({ 1, 4096, 8 }, { requires_grad = true }),
    T.randn({ 1, 4096, 8 }, { requires_grad = true })
  local g = T.randn({ 1, 4096, 8 })
  collectgarbage()
  if not reset_peak_rss() or not peak_rss() then skip("no /proc/self/clear_refs and VmHWM") end
  local before = peak_rss()
  local out = sdpa(q, k, v, { is_causal = true })
  out:backward(g)
  local grown = peak_rss() - before
  local scores = 4096 * 4096 * 4
  assert(grown < scores / 4, string.format("peak memory grew by %.1f MB (the scores: %.0f MB)", grown / 2 ^ 20, scores / 2 ^ 20))
  assert(q.grad:isfinite():logical_not():sum():item() == 0 and out[1][1]:sub(v[1][1]):abs():max():item() < 1e-6) -- row 1 sees key 1 only
end

-- ---- gradient checks -----------------------------------------------------------------------------------
tests["f64 gradient checks: plain, masks (float mask too), causal, broadcast, scale"] = function()
  local function r(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end
  local q, k, v = r(2, 3, 4), r(2, 5, 4), r(2, 5, 3)
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c) end, { q, k, v })
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { scale = 0.4 }) end, { q, k, v })
  local fm = r(3, 5)
  T.testing.gradcheck(function(a, b, c, m) return sdpa(a, b, c, { attn_mask = m }) end, { q, k, v, fm })
  local bm = T.tensor({ { true, false, true, true, false }, { false, false, true, false, false },
    { true, true, true, true, true } })
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { attn_mask = bm }) end, { q, k, v })
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { is_causal = true }) end, { q, k, v })
  local ql = r(1, 6, 4)
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { is_causal = true }) end, { ql, k:narrow(1, 1, 1), v })
  local qb, kb, vb = r(2, 2, 3, 4), r(2, 1, 5, 4), r(5, 2)
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c) end, { qb, kb, vb })
  local mb = r(2, 1, 1, 5) -- a mask broadcast over heads and rows
  T.testing.gradcheck(function(a, b, c, m) return sdpa(a, b, c, { attn_mask = m }) end, { qb, kb, vb, mb })
  assert(sdpa(q, k, v).grad_fn == "ScaledDotProductAttentionBackward")
end

tests["dropout: gradient check, and the mask F.dropout draws on the probabilities"] = function()
  local q = T.randn({ 2, 3, 4 }, { dtype = "f64", requires_grad = true })
  local k = T.randn({ 2, 5, 4 }, { dtype = "f64", requires_grad = true })
  local v = T.randn({ 2, 5, 3 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { dropout_p = 0.3 }) end, { q, k, v })
  T.testing.gradcheck(function(a, b, c) return sdpa(a, b, c, { dropout_p = 0.5, is_causal = true }) end, { q, k, v })
  local st = T.get_rng_state()
  local a = sdpa(q, k, v, { dropout_p = 0.4 })
  T.set_rng_state(st)
  local p = F.softmax(q:matmul(k:transpose(2, 3)) * (1 / 2), -1)
  T.testing.assert_close(a, F.dropout(p, 0.4):matmul(v), { rtol = 1e-12, atol = 1e-14 })
  local b = sdpa(q, k, v, { dropout_p = 0.4 })
  assert(a:ne(b):sum():item() > 0, "a new draw gives a new mask")
  assert(sdpa(q, k, v, { dropout_p = 1 }):abs():sum():item() == 0)
end

-- ---- layouts and dtypes ----------------------------------------------------------------------------------
tests["strided q, k, v (transposed heads, transposed inner matrices, no unit stride)"] = function()
  local B, L, S, H, E = 2, 5, 7, 3, 4
  local q = T.randn({ B, L, H, E }, { dtype = "f64" }):transpose(2, 3)  -- [B, H, L, E], rows strided
  local k = T.randn({ B, H, E, S }, { dtype = "f64" }):transpose(3, 4)  -- inner matrix stored transposed
  local v = T.randn({ S, 6, B, H }, { dtype = "f64" }):permute(3, 4, 1, 2) -- no unit stride at all
  assert(not q:is_contiguous() and not k:is_contiguous() and not v:is_contiguous())
  local m = T.randn({ S, L }, { dtype = "f64" }):t()
  local a = sdpa(q, k, v, { attn_mask = m })
  T.testing.assert_close(a, sdpa(q:contiguous(), k:contiguous(), v:contiguous(), { attn_mask = m:contiguous() }),
    { rtol = 1e-13, atol = 1e-14 })
  compare_with_naive(q, k, v, { is_causal = true }, { rtol = 1e-10, atol = 1e-12 })
  local x = T.randn({ 2, 4, 4 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(t) return sdpa(t:transpose(2, 3), t:transpose(2, 3), t) end, { x })
end

tests["f16 and bf16 run close to f32"] = function()
  local q, k, v = T.randn({ 2, 6, 8 }), T.randn({ 2, 9, 8 }), T.randn({ 2, 9, 4 })
  local want = sdpa(q, k, v, { is_causal = true })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local qh, kh, vh = q:to(dt):requires_grad_(true), k:to(dt):requires_grad_(true), v:to(dt):requires_grad_(true)
    local out = sdpa(qh, kh, vh, { is_causal = true })
    assert(out.dtype == dt)
    T.testing.assert_close(out, want, { rtol = 3e-2, atol = 3e-2 })
    out:sum():backward()
    assert(qh.grad.dtype == dt and kh.grad:isfinite():logical_not():sum():item() == 0)
  end
end

tests["errors name what was wrong"] = function()
  local q, k, v = T.randn({ 2, 3, 4 }), T.randn({ 2, 5, 4 }), T.randn({ 2, 5, 6 })
  raises("do not fit q [..., L, E]", sdpa, q, T.randn({ 2, 5, 3 }), v)
  raises("do not fit q [..., L, E]", sdpa, q, k, T.randn({ 2, 4, 6 }))
  raises("at least 2 dims", sdpa, T.randn({ 4 }), k, v)
  raises("one dtype", sdpa, q:double(), k, v)
  raises("cannot be broadcast", sdpa, q, T.randn({ 3, 5, 4 }), v)
  raises("attn_mask [3 x 4] does not broadcast to the scores [..., 3, 5]", sdpa, q, k, v, { attn_mask = T.randn({ 3, 4 }) })
  raises("attn_mask must be bool", sdpa, q, k, v, { attn_mask = T.ones({ 3, 5 }, { dtype = "i64" }) })
  raises("either attn_mask or is_causal", sdpa, q, k, v, { attn_mask = T.randn({ 3, 5 }), is_causal = true })
  raises("dropout_p must be between 0 and 1", sdpa, q, k, v, { dropout_p = 2 })
  raises("option 'attn_mask' must be a tensor", sdpa, q, k, v, { attn_mask = { 1, 2 } })
  raises("option 'scale' must be a number", sdpa, q, k, v, { scale = "big" })
end

return tests
