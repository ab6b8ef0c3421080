-- test_cuda_system.lua: the GPU suite beyond single ops: creation and random numbers equal to the
-- CPU's for the same seed, dropout bit for bit, copies between every pair of dtypes, integer ops,
-- optimizer steps, nn modules moved to cuda, index errors, training the demo MLP to the CPU's
-- accuracy, and the memory API. Helpers in tests/cuda_harness.lua. Without a GPU every test skips.
local T = require "tocha"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local H = dofile(T.testing.path("cuda_harness.lua"))
local DEV, DTYPES, TOL, ALL_FLOAT = H.DEV, H.DTYPES, H.TOL, H.ALL_FLOAT
local need_gpu, sync, on_dev, is_float, count = H.need_gpu, H.sync, H.on_dev, H.is_float, H.count
local rel_err, assert_same, same_shape = H.rel_err, H.assert_same, H.same_shape

local ALL_DTYPES = { "f32", "f64", "f16", "bf16", "i32", "i64", "u8", "bool" }

--- data of dtype dt that every dtype holds (0 to 99, with fractions for the float ones)
local function sample(dt, shape)
  if dt == "bool" then return T.rand(shape):lt(0.5) end
  if is_float(dt) then return (T.rand(shape, { dtype = "f64" }) * 100):to(dt) end
  return T.randint(0, 100, shape, { dtype = dt })
end

--- experiments/mlp.lua trained on dev for steps; returns its test accuracy
local function train_mlp(dev, steps)
  local out, rc = T.testing.tocha(string.format("%s --device %s --steps %d --quiet", T.testing.path("../experiments/mlp.lua"),
    dev, steps), "TOCHA_RUNS=" .. T.testing.tmpdir() .. " ")
  local acc = tonumber(out:match("test accuracy: ([%d.]+)%%"))
  if rc ~= 0 or not acc then error("the MLP demo on " .. dev .. " failed:\n" .. out, 2) end
  return acc / 100
end

local function mem() sync(); return T.cuda.memory_allocated(), T.cuda.memory_reserved() end

return {
  ["creation: zeros, ones, full, arange, linspace, fill_, every dtype"] = function()
    need_gpu()
    for _, dt in ipairs(ALL_DTYPES) do
      local o = { dtype = dt, device = DEV }
      assert_same(T.zeros({ 5, 7 }, o), T.zeros({ 5, 7 }, { dtype = dt }), "zeros " .. dt)
      assert_same(T.ones({ 1001 }, o), T.ones({ 1001 }, { dtype = dt }), "ones " .. dt)
      local v = dt == "bool" and 1 or 3
      assert_same(T.full({ 3, 333 }, v, o), T.full({ 3, 333 }, v, { dtype = dt }), "full " .. dt)
      if dt ~= "bool" then
        assert_same(T.arange(0, 77, 1, o), T.arange(0, 77, 1, { dtype = dt }), "arange " .. dt)
        assert_same(T.zeros({ 4, 9 }, o):fill_(5):narrow(2, 2, 3):t(),
          T.full({ 4, 9 }, 5, { dtype = dt }):narrow(2, 2, 3):t(), "fill_ " .. dt)
      end
      if is_float(dt) then
        local a, e = T.linspace(-3, 5, 1001, o), T.linspace(-3, 5, 1001, { dtype = dt })
        assert(rel_err(a, e) <= 1e-12, "linspace " .. dt)
        a, e = T.arange(-2.5, 7, 0.37, o), T.arange(-2.5, 7, 0.37, { dtype = dt })
        assert(same_shape(a, e) and rel_err(a, e) <= 1e-12, "arange (fractional step) " .. dt)
      end
    end
    local z = T.randn({ 5, 7 }, { device = DEV })
    assert_same(T.zeros_like(z):to("cpu"), T.zeros({ 5, 7 }), "zeros_like")
    assert(on_dev(T.ones_like(z)) and on_dev(T.empty({ 3 }, { device = DEV })), "*_like and empty keep the device")
  end,

  ["random numbers equal the CPU's for the same seed (rand, randn, randint, in place)"] = function()
    need_gpu()
    for _, dt in ipairs(ALL_FLOAT) do
      for _, shape in ipairs({ { 1001 }, { 3, 5, 7 }, { 4 }, { 1 } }) do
        T.manual_seed(123); local a = T.rand(shape, { dtype = dt, device = DEV })
        T.manual_seed(123); local e = T.rand(shape, { dtype = dt })
        assert_same(a, e, "rand " .. dt)
        T.manual_seed(77)
        a = T.randn(shape, { dtype = dt, device = DEV })
        local after = T.get_rng_state()
        T.manual_seed(77); e = T.randn(shape, { dtype = dt })
        -- f64 normals go through log, cos and sin, whose last bit may differ between the GPU's
        -- math library and glibc's; rounded to f32, f16 or bf16 they are the same
        if dt == "f64" then assert(rel_err(a, e) <= 1e-14, "randn f64")
        else assert_same(a, e, "randn " .. dt) end
        local st = T.get_rng_state()
        assert(st.seed == after.seed and st.offset == after.offset, "the RNG advances alike on both devices")
      end
      T.manual_seed(5)
      local a = T.empty({ 7, 9 }, { dtype = dt, device = DEV }):uniform_(-2, 3)
      local b = T.empty({ 7, 9 }, { dtype = dt, device = DEV }):normal_(1, 0.5)
      T.manual_seed(5)
      assert_same(a, T.empty({ 7, 9 }, { dtype = dt }):uniform_(-2, 3), "uniform_ " .. dt)
      local e = T.empty({ 7, 9 }, { dtype = dt }):normal_(1, 0.5)
      if dt == "f64" then assert(rel_err(b, e) <= 1e-14, "normal_ f64") else assert_same(b, e, "normal_ " .. dt) end
    end
    for _, dt in ipairs({ "i64", "i32", "u8" }) do
      T.manual_seed(9); local a = T.randint(0, 50, { 3, 333 }, { dtype = dt, device = DEV })
      T.manual_seed(9); assert_same(a, T.randint(0, 50, { 3, 333 }, { dtype = dt }), "randint " .. dt)
    end
    T.manual_seed(3); local a = T.randperm(1001, { device = DEV })
    T.manual_seed(3); assert_same(a, T.randperm(1001), "randperm")
  end,

  ["dropout equals the CPU's bit for bit (forward and backward, strided input)"] = function()
    need_gpu()
    for _, dt in ipairs(ALL_FLOAT) do
      for _, p in ipairs({ 0.3, 0.9 }) do
        local x = T.randn({ 37, 27 }, { dtype = dt })
        local gy = T.randn({ 27, 37 }, { dtype = dt })
        local xc = x:clone():requires_grad_()
        local xd = x:to(DEV):requires_grad_()
        T.manual_seed(42); local yd = F.dropout(xd:t(), p)
        T.manual_seed(42); local yc = F.dropout(xc:t(), p)
        assert_same(yd, yc, string.format("dropout %s p = %g", dt, p))
        assert(count(yc:eq(0)) > 0 and count(yc:ne(0)) > 0, "some dropped, some kept")
        yd:backward(gy:to(DEV)); yc:backward(gy)
        assert_same(xd.grad, xc.grad, string.format("dropout backward %s p = %g", dt, p))
      end
    end
  end,

  ["copies: every dtype to every dtype, both ways, strided, copy_ across devices"] = function()
    need_gpu()
    for _, s in ipairs(ALL_DTYPES) do
      local x = sample(s, { 37, 27 })
      local xd = x:to(DEV)
      assert(on_dev(xd) and xd.dtype == s, "to device keeps the dtype")
      assert_same(xd:to("cpu"), x, "round trip " .. s)
      assert_same(xd:t():to("cpu"), x:t():contiguous(), "transposed device -> host " .. s)
      assert_same(x:t():to(DEV), x:t():contiguous(), "transposed host -> device " .. s)
      for _, d in ipairs(ALL_DTYPES) do
        local what = s .. " -> " .. d
        assert_same(xd:to(d), x:to(d), what)
        assert_same(xd:t():to(d), x:t():to(d), what .. " (transposed)")
        assert_same(xd:narrow(2, 3, 11):to(d):to("cpu"), x:narrow(2, 3, 11):to(d), what .. " (narrowed)")
      end
    end
    -- copy_: into a strided view on the device, from the host (broadcast) and from the device
    local dst = T.zeros({ 6, 8 }, { device = DEV })
    local ref = T.zeros({ 6, 8 })
    local row = T.randn({ 8 })
    dst:narrow(1, 2, 3):copy_(row); ref:narrow(1, 2, 3):copy_(row)
    local src = T.randn({ 8, 6 }, { dtype = "f64" })
    dst:t():narrow(1, 5, 2):copy_(src:narrow(1, 1, 2):to(DEV))
    ref:t():narrow(1, 5, 2):copy_(src:narrow(1, 1, 2))
    local host = T.zeros({ 8, 6 }); host:copy_(dst:t())
    assert_same(dst, ref, "copy_ into device views")
    assert_same(host, ref:t():contiguous(), "copy_ device -> host")
    -- a tensor of another device is an error, not a crash
    assert(not pcall(function() return T.randn({ 3 }) + T.randn({ 3 }, { device = DEV }) end) or DEV == "cpu",
      "mixing devices in one op must raise")
  end,

  ["integer and bool ops equal the CPU exactly"] = function()
    need_gpu()
    for _, dt in ipairs({ "i32", "i64", "u8" }) do
      local a, b = sample(dt, { 9, 11 }), sample(dt, { 11 })
      local c = T.rand({ 9, 11 }):lt(0.5)
      local ops = {
        function(x, y) return x + y end, function(x, y) return x * y end,
        function(x, y) return T.maximum(x, y) end, function(x, y) return x:minimum(y) end,
        function(x, y) return x:lt(y) end, function(x, y) return x:eq(y) end,
        function(x) return x:sum(2) end, function(x) return x:sum() end, function(x) return x:amax(1) end,
        function(x) return x:argmax(2) end, function(x) return x:t():contiguous() end,
        function(x, y, m) return T.where(m, x, y) end, function(x, y) return T.cat({ x, y:view(1, 11) }, 1) end,
        function(x) return x:index_select(1, T.tensor({ 3, 1, 3 }, { dtype = "i64" }):to(x.device)) end,
        function(x) return x:to("f32") * 0.5 end, function(x, _, m) return x:masked_fill(m, 7) end,
      }
      if dt ~= "u8" then
        ops[#ops + 1] = function(x, y) return x - y end
        ops[#ops + 1] = function(x) return -x:abs() end
      end
      for k, f in ipairs(ops) do
        assert_same(f(a:to(DEV), b:to(DEV), c:to(DEV)), f(a, b, c), string.format("%s op %d", dt, k))
      end
    end
  end,

  ["optimizers: SGD, Adam, AdamW steps equal the CPU's; EMA; clip_grad_norm"] = function()
    need_gpu()
    local configs = {
      { "SGD", { lr = 0.1 } }, { "SGD", { lr = 0.1, momentum = 0.9, weight_decay = 0.01 } },
      { "SGD", { lr = 0.1, momentum = 0.9, nesterov = true } },
      { "SGD", { lr = 0.1, momentum = 0.5, dampening = 0.3 } },
      { "Adam", { lr = 1e-2 } }, { "Adam", { lr = 1e-2, weight_decay = 0.1, amsgrad = true } },
      { "AdamW", { lr = 1e-2, weight_decay = 0.1 } },
      { "AdamW", { lr = 1e-2, betas = { 0.8, 0.99 }, eps = 1e-6, amsgrad = true } },
    }
    local fails = {}
    for c, cfg in ipairs(configs) do
      for _, dt in ipairs({ "f32", "f64" }) do
        if DTYPES[dt] then
          T.manual_seed(1)
          local p0 = { T.randn({ 37, 29 }, { dtype = "f64" }), T.randn({ 101 }, { dtype = "f64" }) }
          local pc, pd = {}, {}
          for i, p in ipairs(p0) do pc[i] = p:to(dt):double(); pd[i] = p:to(dt):to(DEV) end
          local oc, od = optim[cfg[1]](pc, cfg[2]), optim[cfg[1]](pd, cfg[2])
          for step = 1, 3 do
            for i, p in ipairs(p0) do
              -- the device's gradient: bf16 on the third step, a transposed view for the matrix
              local g = T.randn(p.shape, { dtype = "f64" }):to(step == 3 and "bf16" or dt)
              pc[i].grad = g:double()
              pd[i].grad = i == 1 and g:t():contiguous():to(DEV):t() or g:to(DEV)
            end
            oc:step(); od:step()
          end
          for i = 1, #p0 do
            local e = rel_err(pd[i], pc[i])
            if not (e <= TOL[dt] * 10) then
              fails[#fails + 1] = string.format("%s config %d [%s] param %d: largest relative error %.3g",
                cfg[1], c, dt, i, e)
            end
          end
        end
      end
    end
    -- EMA and clip_grad_norm
    local w = T.randn({ 37, 29 }, { dtype = "f64" })
    local wc, wd = w:to("f32"):double(), w:to("f32"):to(DEV)
    local ec, ed = optim.EMA({ wc }, { decay = 0.9 }), optim.EMA({ wd }, { decay = 0.9 })
    for _ = 1, 3 do
      local d = T.randn(w.shape, { dtype = "f64" }):to("f32")
      T.no_grad(function() wc:add_(d:double()); wd:add_(d:to(DEV)) end)
      ec:update(); ed:update()
    end
    local e = rel_err(ed.shadow_params[1], ec.shadow_params[1])
    if not (e <= 1e-5) then fails[#fails + 1] = string.format("EMA: largest relative error %.3g", e) end
    for _, norm_type in ipairs({ 2, 1, math.huge }) do
      local gs = { T.randn({ 37, 29 }, { dtype = "f64" }), T.randn({ 1001 }, { dtype = "f64" }) }
      local pc, pd = {}, {}
      for i, g in ipairs(gs) do
        pc[i] = T.zeros(g.shape, { dtype = "f64" }); pc[i].grad = g:to("f32"):double()
        pd[i] = T.zeros(g.shape, { device = DEV }); pd[i].grad = g:to("f32"):to(DEV)
      end
      local tc, td = optim.clip_grad_norm(pc, 1.5, norm_type), optim.clip_grad_norm(pd, 1.5, norm_type)
      if not (math.abs(td - tc) <= 1e-5 * tc) then
        fails[#fails + 1] = string.format("clip_grad_norm p = %g: total %.9g, the CPU's %.9g", norm_type, td, tc)
      end
      for i = 1, #gs do
        e = rel_err(pd[i].grad, pc[i].grad)
        if not (e <= 1e-5) then
          fails[#fails + 1] = string.format("clip_grad_norm p = %g, grad %d: largest relative error %.3g",
            norm_type, i, e)
        end
      end
    end
    if #fails > 0 then error(table.concat(fails, "\n  "), 0) end
  end,

  ["an optimizer state saved on the CPU loads onto the device's parameters (resuming on cuda)"] = function()
    need_gpu()
    T.manual_seed(2)
    local w = T.randn({ 7, 5 })
    local pc, pd = w:clone(), w:to(DEV)
    local oc = optim.AdamW({ pc }, { lr = 1e-2 })
    for _ = 1, 2 do pc.grad = T.randn(w.shape); oc:step() end
    T.no_grad(function() pd:copy_(pc) end)
    local od = optim.AdamW({ pd }, { lr = 1e-2 })
    od:load_state_dict(oc:state_dict())
    local st = od.state[pd]
    assert(st.exp_avg.device == pd.device and st.exp_avg_sq.device == pd.device, "the moments moved to the device")
    local g = T.randn(w.shape)
    pc.grad, pd.grad = g, g:to(DEV)
    oc:step(); od:step()
    local e = rel_err(pd, pc)
    assert(e <= 1e-5, string.format("the third step differs: largest relative error %.3g", e))
  end,

  ["nn modules moved with :to(cuda) compute what the CPU computes, forward and backward"] = function()
    need_gpu()
    local nn = require "tocha.nn"
    local function model()
      T.manual_seed(3)
      return nn.Sequential(nn.Conv2d(3, 8, 3, { padding = 1 }), nn.GroupNorm(4, 8), nn.SiLU(),
        nn.ConvTranspose2d(8, 4, 4, { stride = 2, padding = 1 }), nn.Flatten(), nn.Linear(4 * 12 * 12, 16),
        nn.LayerNorm(16), nn.GELU())
    end
    local ref, dev = model():to("f64"), model():to(DEV)
    local x = T.randn({ 2, 3, 6, 6 })
    local yr, yd = ref(x:double()), dev(x:to(DEV))
    local e = rel_err(yd, yr)
    assert(e <= 1e-4, string.format("forward: largest relative error %.3g", e))
    local gy = T.randn(yr.shape)
    yr:backward(gy:double()); yd:backward(gy:to(DEV))
    local grads = {}
    for name, p in dev:named_parameters() do grads[name] = p.grad end
    local n = 0
    for name, p in ref:named_parameters() do
      assert(grads[name] and on_dev(grads[name]), name .. ": no gradient on the device")
      e = rel_err(grads[name], p.grad)
      assert(e <= 1e-4, string.format("%s: gradient's largest relative error %.3g", name, e))
      n = n + 1
    end
    assert(n == 10, n .. " parameters")
    T.manual_seed(4)
    local mha_r = nn.MultiheadAttention(16, 4):to("f64")
    T.manual_seed(4)
    local mha_d = nn.MultiheadAttention(16, 4):to(DEV)
    local s = T.randn({ 2, 9, 16 })
    e = rel_err(mha_d(s:to(DEV)), mha_r(s:double()))
    assert(e <= 1e-4, string.format("MultiheadAttention: largest relative error %.3g", e))
  end,

  ["index values out of range raise on the device, and the device still works after"] = function()
    need_gpu()
    local x = T.randn({ 5, 7 }, { device = DEV })
    for _, bad in ipairs({ 0, 6, -1 }) do
      local idx = T.tensor({ 1, bad, 2 }, { dtype = "i64" }):to(DEV)
      local what = " with index " .. bad .. " must raise"
      assert(not pcall(function() return x:index_select(1, idx) end), "index_select" .. what)
      assert(not pcall(function() return F.embedding(idx, x) end), "embedding" .. what)
      assert(not pcall(function() return x:gather(1, idx:view(3, 1)) end), "gather" .. what)
    end
    local target = T.tensor({ 1, 2, 9, 1, 1 }, { dtype = "i64" }):to(DEV)
    local ok, err = pcall(function() return F.cross_entropy(x, target):item() end)
    assert(not ok, "cross_entropy with class 9 of 7 must raise")
    assert(type(err) == "string" and #err > 0)
    sync()
    local y = x:index_select(1, T.tensor({ 5, 1 }, { dtype = "i64" }):to(DEV))
    assert_same(y, x:to("cpu"):index_select(1, T.tensor({ 5, 1 }, { dtype = "i64" })), "after the errors")
  end,

  ["the demo MLP trained on cuda reaches the CPU's accuracy"] = function()
    need_gpu()
    if H.QUICK then skip("TOCHA_CUDA_QUICK=1") end
    local steps = 300
    local acc_cpu = train_mlp("cpu", steps)
    local acc_dev = train_mlp(DEV, steps)
    if H.VERBOSE then
      print(string.format("  MLP accuracy after %d steps: cpu %.3f, %s %.3f", steps, acc_cpu, DEV, acc_dev))
    end
    assert(acc_cpu > 0.85, string.format("the CPU run reached only %.3f", acc_cpu))
    assert(acc_dev >= acc_cpu - 0.02, string.format("%s reached %.3f, the CPU %.3f", DEV, acc_dev, acc_cpu))
  end,

  ["memory: allocated goes up and down, empty_cache, the cache is reused in a loop"] = function()
    need_gpu()
    if DEV == "cpu" then skip("the memory API is the GPU's") end
    if os.getenv("TOCHA_CUDA_NO_CACHE") == "1" then skip("TOCHA_CUDA_NO_CACHE=1: the allocator caches nothing") end
    collectgarbage(); collectgarbage()
    T.cuda.empty_cache()
    local a0, r0 = mem()
    local n = 4 * 1024 * 1024 -- 16 MiB of f32
    do
      local x <close> = T.empty({ n }, { device = "cuda" }):fill_(1)
      local a1, r1 = mem()
      assert(a1 >= a0 + 4 * n, string.format("allocated %d -> %d after a 16 MiB tensor", a0, a1))
      assert(r1 >= a1, "reserved covers allocated")
      assert(T.cuda.max_memory_allocated() >= a1, "the peak covers the current")
    end
    local a2, r2 = mem()
    assert(a2 <= a0, string.format("allocated %d -> %d after the tensor was freed", a0, a2))
    assert(r2 >= r0 + 4 * n, "the freed block stays cached (reserved)")
    T.cuda.empty_cache()
    local _, r3 = mem()
    assert(r3 < r2, string.format("empty_cache gave nothing back (reserved %d -> %d)", r2, r3))
    -- a loop that allocates and frees the same sizes reuses the cache: reserved stays flat
    local w = T.randn({ 256, 256 }, { device = "cuda" })
    local function step() return (w:matmul(w):relu() + 1):sum():item() end
    for _ = 1, 50 do step() end -- past the first collections of the garbage the steps leave
    collectgarbage(); collectgarbage()
    local _, before = mem()
    local drivers = T.cuda.memory_stats().driver_allocs
    for _ = 1, 300 do step() end
    collectgarbage(); collectgarbage()
    local a4, after = mem()
    assert(after <= before, string.format("reserved grew from %d to %d over 300 identical steps", before, after))
    assert(T.cuda.memory_stats().driver_allocs == drivers, "300 identical steps went to the driver for memory")
    assert(a4 < before, "allocated stays under reserved")
    assert(T.cuda.device_count() >= 1 and #T.cuda.get_device_name(0) > 0, "device count and name")
  end,
}
