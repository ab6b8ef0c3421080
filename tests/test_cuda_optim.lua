-- test_cuda_optim.lua: the multi-tensor optimizer updates (many parameters per launch) against
-- the per-tensor kernels on the device (the same bits), against the CPU in the same dtype (the
-- same bits) and in f64 (to the dtype's tolerance): SGD's variants, Adam and AdamW with amsgrad,
-- a learning rate changing between steps, parameters that miss a step's gradient, tensors that
-- span chunks and lists longer than one launch holds, and the EMA. Without a GPU every test skips.
local T = require "tocha"
local optim = require "tocha.optim"
local H = dofile(T.testing.path("cuda_harness.lua"))
local DEV, TOL, need_gpu, rel_err, n_diff = H.DEV, H.TOL, H.need_gpu, H.rel_err, H.n_diff

local CONFIGS = {
  { "SGD", { lr = 0.1 } }, { "SGD", { lr = 0.1, momentum = 0.9, weight_decay = 0.01 } },
  { "SGD", { lr = 0.1, momentum = 0.9, nesterov = true } },
  { "SGD", { lr = 0.1, momentum = 0.5, dampening = 0.3 } },
  { "Adam", { lr = 1e-2 } }, { "Adam", { lr = 1e-2, weight_decay = 0.1, amsgrad = true } },
  { "AdamW", { lr = 1e-2, weight_decay = 0.1 } },
  { "AdamW", { lr = 1e-2, betas = { 0.8, 0.99 }, eps = 1e-6, amsgrad = true } },
}

-- sizes of assorted kinds: empty, one element, odd, one past a 65536-element chunk, and 36
-- tensors in all (more than one launch's 32)
local function sizes()
  local s = { { 0 }, { 1 }, { 7 }, { 37, 29 }, { 65536 + 3 } }
  for i = 1, 31 do s[#s + 1] = { i * 13 } end
  return s
end

-- steps of an optimizer over copies of p0 (f64 values) as dtype dt on device dev; parameter 3
-- has no gradient on step 1 and parameter 5 none on step 2 (their state starts late); the
-- learning rate changes every step. Returns the parameters.
local function run(kind, opts, p0, g0, dt, dev, foreach)
  local ps = {}
  for i, p in ipairs(p0) do ps[i] = p:to(dt):to(dev):clone() end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.foreach = foreach
  local opt = optim[kind](ps, o)
  for step, gs in ipairs(g0) do
    for i, p in ipairs(ps) do
      local skip = (i == 3 and step == 1) or (i == 5 and step == 2)
      p.grad = not skip and gs[i]:to(dt):to(dev) or nil
    end
    opt.lr = opts.lr * (1 + 0.5 * step)
    opt:step()
  end
  return ps
end

local function data(shapes, steps)
  local p0, g0 = {}, {}
  for i, s in ipairs(shapes) do p0[i] = T.randn(s, { dtype = "f64" }) end
  for step = 1, steps do
    g0[step] = {}
    for i, s in ipairs(shapes) do g0[step][i] = T.randn(s, { dtype = "f64" }) end
  end
  return p0, g0
end

return {
  ["multi-tensor SGD, Adam, AdamW: the per-tensor kernel's bits, the CPU's bits, the CPU in f64"] = function()
    need_gpu()
    T.manual_seed(3)
    local p0, g0 = data(sizes(), 3)
    local fails = {}
    for c, cfg in ipairs(CONFIGS) do
      for _, dt in ipairs({ "f32", "f64" }) do
        local multi = run(cfg[1], cfg[2], p0, g0, dt, DEV)           -- the default on CUDA
        local single = run(cfg[1], cfg[2], p0, g0, dt, DEV, false)
        local cpu = run(cfg[1], cfg[2], p0, g0, dt, "cpu")
        local cpu_multi = run(cfg[1], cfg[2], p0, g0, dt, "cpu", true)
        local ref = run(cfg[1], cfg[2], p0, g0, "f64", "cpu")
        for i = 1, #p0 do
          local what = string.format("%s config %d [%s] param %d", cfg[1], c, dt, i)
          local d1, d2, d3 = n_diff(multi[i], single[i]), n_diff(multi[i], cpu[i]), n_diff(cpu_multi[i], cpu[i])
          if d1 + d2 + d3 > 0 then
            fails[#fails + 1] = string.format("%s: %d elements differ from the per-tensor kernel's, %d from the " ..
              "CPU's, %d between the CPU's two paths", what, d1, d2, d3)
          end
          local e = rel_err(multi[i], ref[i])
          if not (e <= TOL[dt] * 10) then
            fails[#fails + 1] = string.format("%s: largest relative error %.3g against f64", what, e)
          end
        end
      end
    end
    if #fails > 0 then error(table.concat(fails, "\n"), 0) end
  end,

  ["multi-tensor SGD: a tensor longer than one launch's 320 chunks"] = function()
    need_gpu()
    T.manual_seed(4)
    local n = 320 * 65536 + 5
    local p0, g0 = data({ { n }, { 9 } }, 1)
    local multi = run("SGD", { lr = 0.5 }, p0, g0, "f32", DEV)
    local single = run("SGD", { lr = 0.5 }, p0, g0, "f32", DEV, false)
    for i = 1, 2 do
      local d = n_diff(multi[i], single[i])
      if d > 0 then error(string.format("param %d: %d elements differ from the per-tensor kernel's", i, d), 0) end
    end
  end,

  ["multi-tensor EMA: the per-tensor blend's bits; frozen weights copied"] = function()
    need_gpu()
    T.manual_seed(5)
    local w0 = data(sizes(), 0)
    local function ema_run(foreach)
      local ws = {}
      for i, w in ipairs(w0) do
        ws[i] = w:to("f32"):to(DEV)
        ws[i].requires_grad = i ~= 4
      end
      local e = optim.EMA(ws, { decay = 0.9, foreach = foreach })
      for step = 1, 3 do
        T.no_grad(function()
          for i, w in ipairs(ws) do w:add_(T.full(w.shape, 0.25 * step + i, { device = DEV })) end
        end)
        e:update()
      end
      return e.shadow_params, ws
    end
    local multi, ws = ema_run(nil)
    local single = ema_run(false)
    for i = 1, #w0 do
      local d = n_diff(multi[i], single[i])
      if d > 0 then error(string.format("shadow %d: %d elements differ from the per-tensor blend's", i, d), 0) end
    end
    if n_diff(multi[4], ws[4]) > 0 then error("the frozen weight's average is not its copy", 0) end
  end,

  ["multi-tensor SGD with momentum and AdamW on channels-last parameters: the per-tensor bits"] = function()
    need_gpu()
    T.manual_seed(6)
    local p0, g0 = data({ { 6, 5, 3, 3 }, { 4, 7, 1, 1 }, { 9 } }, 2)
    for _, cfg in ipairs({ { "SGD", { lr = 0.1, momentum = 0.9 } }, { "AdamW", { lr = 1e-2 } } }) do
      local function go(foreach)
        local ps = {}
        for i, p in ipairs(p0) do
          ps[i] = p:to("f32"):to(DEV)
          if #p.shape == 4 then ps[i] = ps[i]:contiguous{ memory_format = "channels_last" } end
        end
        local opt = optim[cfg[1]](ps, { lr = cfg[2].lr, momentum = cfg[2].momentum, foreach = foreach })
        for _, gs in ipairs(g0) do
          for i, p in ipairs(ps) do p.grad = gs[i]:to("f32"):to(DEV) end
          opt:step()
        end
        return ps
      end
      local multi, single = go(nil), go(false)
      for i = 1, #p0 do
        local d = n_diff(multi[i], single[i])
        if d > 0 then error(string.format("%s param %d: %d elements differ", cfg[1], i, d), 0) end
        if i == 1 and not multi[i]:is_contiguous{ memory_format = "channels_last" } then
          error(cfg[1] .. ": the parameter lost its channels-last layout", 0)
        end
      end
    end
  end,

  ["multi-tensor updates: bad lists name what is wrong"] = function()
    need_gpu()
    local C = T._optim
    local p = T.zeros({ 3 }, { device = DEV })
    local group = { lr = 0.1, momentum = 0, dampening = 0, weight_decay = 0 }
    T.testing.raises("gradient of shape [4] does not match the parameter's [3]", function()
      C.sgd_multi({ p }, { T.zeros({ 4 }, { device = DEV }) }, group)
    end)
    T.testing.raises("parameter 2 is f64, parameter 1 f32", function()
      C.sgd_multi({ p, T.zeros({ 2 }, { dtype = "f64", device = DEV }) },
        { T.zeros({ 3 }, { device = DEV }), T.zeros({ 2 }, { device = DEV }) }, group)
    end)
    T.testing.raises("holds 0 entries, expected 1", function() C.sgd_multi({ p }, {}, group) end)
    local adam = { lr = 0.1, eps = 1e-8, weight_decay = 0, betas = { 0.9, 0.999 } }
    T.testing.raises("has no tensor exp_avg_sq", function()
      C.adam_multi({ p }, { p }, { { step = 1, exp_avg = p } }, adam, true)
    end)
    T.testing.raises("step must be at least 1", function()
      C.adam_multi({ p }, { p }, { { step = 0, exp_avg = T.zeros_like(p), exp_avg_sq = T.zeros_like(p) } }, adam, true)
    end)
    T.testing.raises("foreach must be true, false or nil", function() optim.AdamW({ p }, { foreach = "yes" }) end)
  end,
}
