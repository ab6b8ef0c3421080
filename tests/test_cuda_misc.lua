-- test_cuda_misc.lua: the cuda kernels of random.cu, index.cu and optim.cu against the CPU's,
-- beyond test_cuda.lua's cases: Philox fills of odd sizes at odd offsets and large seeds, the
-- scaled fills, dropout of strided inputs, every dtype through the index kernels (both of the
-- GPU's accumulation paths), the same out-of-range message as the CPU, and optimizer steps
-- equal to the CPU's bit for bit in f32 and f64. Without a GPU every test skips.
--   TOCHA_CUDA_DEVICE=cpu  runs it all with the CPU standing in for the GPU (checks the harness)
local T = require "tocha"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"

local H = dofile(T.testing.path("cuda_harness.lua")) -- the device under test and the comparisons
local DEV, need_gpu, count, assert_same, shape_str = H.DEV, H.need_gpu, H.count, H.assert_same, H.shape_str
local FLOATS = { "f64", "f32", "f16", "bf16" }

--- the largest |a - e| / (|e| + 1), in f64
local function max_err(a, e)
  a, e = a:detach():to("cpu"):double(), e:detach():to("cpu"):double()
  if e:numel() == 0 then return 0 end
  return ((a - e):abs() / (e:abs() + 1)):max():item()
end

--- data every dtype holds exactly: small integers (and halves for the floats)
local function sample(dt, shape)
  if dt == "bool" then return T.rand(shape):lt(0.5) end
  local x = T.randint(0, 16, shape, { dtype = "f64" })
  if dt == "f64" or dt == "f32" or dt == "f16" or dt == "bf16" then x = x * 0.5 end
  return x:to(dt)
end

local function ids(hi, shape, dt) return T.randint(1, hi + 1, shape, { dtype = dt or "i64" }) end

--- the error message f raises, without the position in front (nil when it does not raise)
local function message(f)
  local ok, err = pcall(f)
  if ok then return nil end
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

local tests = {}

---------------------------------------------------------------------------------------------
-- random numbers
---------------------------------------------------------------------------------------------
tests["rand and randn equal the CPU's at odd sizes, offsets and seeds"] = function()
  need_gpu()
  local seeds = { 0, 1, 0x123456789ab } -- the last one uses Philox's upper key word
  for _, seed in ipairs(seeds) do
    for _, dt in ipairs(FLOATS) do
      for _, n in ipairs({ 1, 2, 3, 5, 6, 7, 13, 1003 }) do
        for _, skip_n in ipairs({ 0, 3 }) do -- a draw before, so the offset is not 0
          T.manual_seed(seed); if skip_n > 0 then T.rand(skip_n) end
          local a = T.rand({ n }, { dtype = dt, device = DEV })
          T.manual_seed(seed); if skip_n > 0 then T.rand(skip_n) end
          assert_same(a, T.rand({ n }, { dtype = dt }), string.format("rand %s n=%d seed=%d", dt, n, seed))
          T.manual_seed(seed); if skip_n > 0 then T.rand(skip_n) end
          a = T.randn({ n }, { dtype = dt, device = DEV })
          T.manual_seed(seed); if skip_n > 0 then T.rand(skip_n) end
          local e = T.randn({ n }, { dtype = dt })
          -- f64 normals pass through log, cos and sin, whose last bit the GPU's math library
          -- and glibc may round differently; rounded to a smaller dtype they agree
          if dt == "f64" then assert(max_err(a, e) <= 1e-14, "randn f64 n=" .. n)
          else assert_same(a, e, string.format("randn %s n=%d seed=%d", dt, n, seed)) end
        end
      end
    end
  end
end

tests["uniform_ and normal_ with scaled ranges, and into strided views"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    T.manual_seed(31)
    local a = T.empty({ 9, 7 }, { dtype = dt, device = DEV }):uniform_(-3.7, 11.3)
    local b = T.empty({ 9, 7 }, { dtype = dt, device = DEV }):normal_(0.3, 2.9)
    local c = T.zeros({ 7, 9 }, { dtype = dt, device = DEV })
    c:t():uniform_(1e-3, 7)
    local d = T.zeros({ 6, 10 }, { dtype = dt, device = DEV })
    d:narrow(2, 2, 5):normal_(-1, 0.1)
    T.manual_seed(31)
    local ea = T.empty({ 9, 7 }, { dtype = dt }):uniform_(-3.7, 11.3)
    local eb = T.empty({ 9, 7 }, { dtype = dt }):normal_(0.3, 2.9)
    local ec = T.zeros({ 7, 9 }, { dtype = dt })
    ec:t():uniform_(1e-3, 7)
    local ed = T.zeros({ 6, 10 }, { dtype = dt })
    ed:narrow(2, 2, 5):normal_(-1, 0.1)
    assert_same(a, ea, "uniform_ " .. dt)
    assert_same(c, ec, "uniform_ into a transposed view " .. dt)
    if dt == "f64" then
      assert(max_err(b, eb) <= 1e-14 and max_err(d, ed) <= 1e-14, "normal_ f64")
    else
      assert_same(b, eb, "normal_ " .. dt)
      assert_same(d, ed, "normal_ into a narrowed view " .. dt)
    end
    local st = T.get_rng_state()
    assert(st.offset > 0)
  end
  -- zero elements draw nothing and launch nothing
  T.manual_seed(2)
  local z = T.randn({ 0, 3 }, { device = DEV })
  assert(z:numel() == 0 and T.get_rng_state().offset == 0)
end

tests["dropout equals the CPU's: odd sizes, strided inputs, p from 0.1 to 1"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, p in ipairs({ 0.1, 0.5, 1 }) do
      for _, shape in ipairs({ { 1 }, { 7 }, { 5, 13 }, { 3, 4, 5 } }) do
        local x = T.randn(shape, { dtype = dt })
        local xd = x:to(DEV)
        T.manual_seed(8); local yd = F.dropout(xd, p)
        T.manual_seed(8); local yc = F.dropout(x, p)
        assert_same(yd, yc, string.format("dropout %s p=%g %s", dt, p, shape_str(x)))
        if p == 1 then assert(count(yc:ne(0)) == 0, "p = 1 drops everything") end
      end
      -- strided: a transposed and a narrowed view, forward and backward
      local x = T.randn({ 11, 9 }, { dtype = dt })
      local xd, xc = x:clone():to(DEV):requires_grad_(), x:clone():requires_grad_()
      T.manual_seed(4); local yd = F.dropout(xd:t():narrow(1, 2, 6), p)
      T.manual_seed(4); local yc = F.dropout(xc:t():narrow(1, 2, 6), p)
      assert_same(yd, yc, string.format("dropout (strided) %s p=%g", dt, p))
      local gy = T.randn(yc.shape, { dtype = dt })
      yd:backward(gy:to(DEV)); yc:backward(gy)
      assert_same(xd.grad, xc.grad, string.format("dropout backward %s p=%g", dt, p))
    end
  end
end

---------------------------------------------------------------------------------------------
-- indexing
---------------------------------------------------------------------------------------------
local ALL = { "f64", "f32", "f16", "bf16", "i32", "i64", "u8", "bool" }

tests["index_select, gather and embedding move every dtype as the CPU does"] = function()
  need_gpu()
  for _, dt in ipairs(ALL) do
    for _, it in ipairs({ "i64", "i32" }) do
      local x = sample(dt, { 6, 9 })
      local xd = x:to(DEV)
      local i1, i2 = ids(6, { 11 }, it), ids(9, { 4 }, it)
      local what = dt .. " " .. it
      assert_same(xd:index_select(1, i1:to(DEV)), x:index_select(1, i1), "index_select dim 1 " .. what)
      assert_same(xd:t():index_select(1, i2:to(DEV)), x:t():index_select(1, i2), "index_select (transposed) " .. what)
      local i3 = ids(5, { 7 }, it)
      assert_same(xd:narrow(2, 3, 5):index_select(2, i3:to(DEV)), x:narrow(2, 3, 5):index_select(2, i3),
        "index_select (narrowed) " .. what)
      local g = ids(6, { 4, 9 }, it)
      assert_same(xd:gather(1, g:to(DEV)), x:gather(1, g), "gather dim 1 " .. what)
      g = ids(9, { 5, 3 }, it)
      assert_same(xd:gather(2, g:to(DEV)), x:gather(2, g), "gather dim 2 (smaller index) " .. what)
      assert_same(xd:gather(2, g:to(DEV):t():contiguous():t()), x:gather(2, g), "gather (strided index) " .. what)
      -- empty index
      local e = T.zeros({ 0 }, { dtype = it })
      assert_same(xd:index_select(1, e:to(DEV)), x:index_select(1, e), "index_select (empty) " .. what)
    end
  end
  for _, dt in ipairs(FLOATS) do
    local w = T.randn({ 10, 6 }, { dtype = dt })
    local id = ids(10, { 3, 5 })
    assert_same(F.embedding(id:to(DEV), w:to(DEV)), F.embedding(id, w), "embedding " .. dt)
  end
end

tests["scatter_add and index_add equal the CPU's (in-order and atomic paths)"] = function()
  need_gpu()
  for _, dt in ipairs(ALL) do
    for _, it in ipairs({ "i64", "i32" }) do
      local what = dt .. " " .. it
      local x, src = sample(dt, { 5, 8 }), sample(dt, { 7, 9 })
      local idx = ids(5, { 7, 8 }, it) -- many repeats along dim 1
      local ad = x:to(DEV):scatter_add(1, idx:to(DEV), src:to(DEV))
      local ac = x:scatter_add(1, idx, src)
      -- small data: every float sum is exact, so the atomic path matches too
      assert_same(ad, ac, "scatter_add dim 1 " .. what)
      idx = ids(8, { 4, 6 }, it)
      assert_same(x:to(DEV):scatter_add(2, idx:to(DEV), src:to(DEV)), x:scatter_add(2, idx, src),
        "scatter_add dim 2 " .. what)
      local xd = x:clone():to(DEV)
      xd:scatter_add_(2, idx:to(DEV), src:to(DEV))
      local xc = x:clone()
      xc:scatter_add_(2, idx, src)
      assert_same(xd, xc, "scatter_add_ " .. what)
    end
  end
  -- the in-order path (at least 65536 positions besides the indexed dim) for f32 and f64,
  -- where the sums are the CPU's bit for bit whatever the data
  for _, dt in ipairs({ "f32", "f64", "f16" }) do
    local x = T.randn({ 3, 70000 }, { dtype = dt })
    local src = T.randn({ 5, 70000 }, { dtype = dt })
    local idx = ids(3, { 5, 70000 })
    assert_same(x:to(DEV):scatter_add(1, idx:to(DEV), src:to(DEV)), x:scatter_add(1, idx, src),
      "scatter_add (in order) " .. dt)
  end
  -- index_add through the backward of index_select and embedding: random data, atomic path
  for _, dt in ipairs(FLOATS) do
    local x = T.randn({ 6, 33 }, { dtype = dt })
    local idx = ids(6, { 40 })
    local xd, xc = x:clone():to(DEV):requires_grad_(), x:clone():requires_grad_()
    local gy = T.randn({ 40, 33 }, { dtype = dt })
    xd:index_select(1, idx:to(DEV)):backward(gy:to(DEV))
    xc:index_select(1, idx):backward(gy)
    if dt == "f32" or dt == "f64" then -- atomics: the order of the adds is not fixed
      assert(max_err(xd.grad, xc.grad) <= (dt == "f32" and 1e-5 or 1e-13), "index_add " .. dt)
    else
      assert_same(xd.grad, xc.grad, "index_add " .. dt)
    end
    local w = T.randn({ 9, 5 }, { dtype = dt })
    local wd, wc = w:clone():to(DEV):requires_grad_(), w:clone():requires_grad_()
    local id = ids(9, { 4, 6 })
    local g2 = T.randn({ 4, 6, 5 }, { dtype = dt })
    F.embedding(id:to(DEV), wd, { padding_idx = 2 }):backward(g2:to(DEV))
    F.embedding(id, wc, { padding_idx = 2 }):backward(g2)
    if dt == "f32" or dt == "f64" then
      assert(max_err(wd.grad, wc.grad) <= (dt == "f32" and 1e-5 or 1e-13), "embedding backward " .. dt)
    else
      assert_same(wd.grad, wc.grad, "embedding backward " .. dt)
    end
  end
end

tests["an index out of range raises the CPU's message and writes nothing"] = function()
  need_gpu()
  local x = T.randn({ 5, 7 })
  local xd = x:clone():to(DEV)
  for _, it in ipairs({ "i64", "i32" }) do
    for _, vals in ipairs({ { 1, 9, 0, 12 }, { 0, 2 }, { 3, -4, 1 }, { 8 } }) do
      local idx = T.tensor(vals, { dtype = it })
      local md = message(function() return xd:index_select(2, idx:to(DEV)) end)
      local mc = message(function() return x:index_select(2, idx) end)
      assert(md and md == mc, string.format("index_select: %q vs the CPU's %q", tostring(md), tostring(mc)))
      md = message(function() return xd:gather(2, idx:to(DEV):view(1, -1)) end)
      mc = message(function() return x:gather(2, idx:view(1, -1)) end)
      assert(md and md == mc, string.format("gather: %q vs the CPU's %q", tostring(md), tostring(mc)))
      local src = T.ones({ 1, #vals })
      local before = xd:clone()
      md = message(function() xd:scatter_add_(2, idx:to(DEV):view(1, -1), src:to(DEV)) end)
      mc = message(function() x:clone():scatter_add_(2, idx:view(1, -1), src) end)
      assert(md and md == mc, string.format("scatter_add_: %q vs the CPU's %q", tostring(md), tostring(mc)))
      assert_same(xd, before, "nothing written by a failed scatter_add_")
    end
  end
  -- the device works after
  local i = T.tensor({ 7, 1 }, { dtype = "i64" })
  assert_same(xd:index_select(2, i:to(DEV)), x:index_select(2, i), "after the errors")
end

---------------------------------------------------------------------------------------------
-- optimizers
---------------------------------------------------------------------------------------------
tests["SGD, Adam, AdamW and EMA steps equal the CPU's bit for bit"] = function()
  need_gpu()
  local configs = {
    { "SGD", { lr = 0.1 } }, { "SGD", { lr = 0.1, weight_decay = 0.03 } },
    { "SGD", { lr = 0.1, momentum = 0.9, weight_decay = 0.01 } },
    { "SGD", { lr = 0.1, momentum = 0.9, nesterov = true } },
    { "SGD", { lr = 0.05, momentum = 0.5, dampening = 0.3 } },
    { "Adam", { lr = 1e-2 } }, { "Adam", { lr = 1e-2, weight_decay = 0.1, amsgrad = true } },
    { "AdamW", { lr = 1e-2, weight_decay = 0.1 } },
    { "AdamW", { lr = 3e-3, betas = { 0.8, 0.99 }, eps = 1e-6, amsgrad = true } },
    { "Adam", { lr = 1e-3, betas = { 0.3, 0.5 } } }, -- 1 - beta1 > 0.5: lerp from the other end
  }
  for _, cfg in ipairs(configs) do
    for _, dt in ipairs({ "f32", "f64" }) do
      T.manual_seed(1)
      local p0 = { T.randn({ 37, 29 }, { dtype = dt }), T.randn({ 1001 }, { dtype = dt }) }
      local pc, pd = {}, {}
      for i, p in ipairs(p0) do pc[i] = p:clone(); pd[i] = p:clone():to(DEV) end
      local oc, od = optim[cfg[1]](pc, cfg[2]), optim[cfg[1]](pd, cfg[2])
      for step = 1, 4 do
        for i, p in ipairs(p0) do
          local g = T.randn(p.shape, { dtype = dt })
          if step == 4 then g = g * 1e-3 end
          pc[i].grad = g; pd[i].grad = g:to(DEV)
        end
        oc:step(); od:step()
      end
      for i = 1, #p0 do
        assert_same(pd[i], pc[i], string.format("%s %s param %d", cfg[1], dt, i))
      end
    end
  end
  for _, dt in ipairs({ "f32", "f64" }) do
    local w = T.randn({ 37, 29 }, { dtype = dt })
    local wc, wd = w:clone(), w:clone():to(DEV)
    local ec, ed = optim.EMA({ wc }, { decay = 0.9 }), optim.EMA({ wd }, { decay = 0.9 })
    for _ = 1, 3 do
      local d = T.randn(w.shape, { dtype = dt })
      T.no_grad(function() wc:add_(d); wd:add_(d:to(DEV)) end)
      ec:update(); ed:update()
    end
    assert_same(ed.shadow_params[1], ec.shadow_params[1], "EMA " .. dt)
  end
end

tests["diffusion's snr and min-SNR weights stay on the timesteps' device"] = function()
  need_gpu()
  local D = require "tocha.diffusion"
  local ts = T.tensor({ 0, 499, 999 }, { dtype = "i64" })
  for _, p in ipairs({ "epsilon", "v_prediction", "sample" }) do
    local s = D.DDPM { beta_schedule = "squaredcos_cap_v2", prediction_type = p }
    local snr, w = s:snr(ts:to(DEV)), s:min_snr_weights(ts:to(DEV), 5)
    assert(snr.device:sub(1, #DEV) == DEV and w.device:sub(1, #DEV) == DEV, snr.device .. " " .. w.device)
    assert_same(snr, s:snr(ts), "snr " .. p)
    assert_same(w, s:min_snr_weights(ts, 5), "min_snr_weights " .. p)
  end
end

return tests
