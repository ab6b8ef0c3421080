-- tests/test_channels_last.lua: the channels-last memory format. contiguous{memory_format},
-- is_contiguous{memory_format}, model:to{memory_format}; elementwise ops, conv2d,
-- conv_transpose2d and group norm keep the layout, and give what the NCHW path gives, forward
-- and backward, in f64 on random inputs. Each case runs on the CPU and, where a GPU (or the
-- emulator) is there, on cuda (the names ending "(cuda)").
local T = require "tocha"
local F = require "tocha.nn.functional"
local nn = require "tocha.nn"
local optim = require "tocha.optim"
local models = require "tocha.models"
local raises = T.testing.raises

local tests = {}
local CL = { memory_format = "channels_last" }

local function is_cl(t) return t:is_contiguous(CL) and not t:is_contiguous() end
local function close(a, b, msg)
  T.testing.assert_close(a:to("cpu"), b:to("cpu"), { rtol = 1e-10, atol = 1e-10, msg = msg })
end

-- f64 leaves on dev: an NCHW one and its channels-last twin holding the same values
local function pair(dev, ...)
  local x = T.randn({ ... }, { dtype = "f64" }):to(dev)
  return x:clone():requires_grad_(true), (x:dim() == 4 and x:contiguous(CL) or x:clone()):requires_grad_(true)
end

-- runs fn on the NCHW inputs and on their channels-last twins: equal outputs, the channels-last
-- output in channels-last, equal gradients (each in its input's layout)
local function same_both_ways(dev, shapes, fn, want_cl)
  local a, b = {}, {}
  for i, s in ipairs(shapes) do a[i], b[i] = pair(dev, table.unpack(s)) end
  local ya, yb = fn(table.unpack(a)), fn(table.unpack(b))
  close(yb, ya, "output")
  if want_cl ~= false then assert(is_cl(yb), "the output is not channels-last: strides " .. table.concat(yb:stride(), ",")) end
  assert(ya:is_contiguous(), "the NCHW path's output is not contiguous")
  local gy = T.randn(ya.shape, { dtype = "f64" }):to(dev)
  ya:backward(gy)
  yb:backward(want_cl ~= false and gy:contiguous(CL) or gy) -- what a channels-last model passes back
  for i = 1, #a do
    close(b[i].grad, a[i].grad, "gradient of input " .. i)
    if b[i]:dim() == 4 then assert(b[i].grad:is_contiguous(CL), "gradient " .. i .. " is not channels-last") end
    assert(a[i].grad:is_contiguous(), "the NCHW gradient " .. i .. " is not contiguous")
  end
end

local function on_devices(name, fn)
  tests[name] = function() fn("cpu") end
  tests[name .. " (cuda)"] = function()
    if not (T.cuda and T.cuda.is_available()) then skip("no CUDA GPU (T.cuda.is_available() is false)") end
    fn("cuda")
  end
end

---------------------------------------------------------------------------------------------
-- the format itself
---------------------------------------------------------------------------------------------
on_devices("contiguous{memory_format = channels_last}: NHWC strides, same values, round trip", function(dev)
  local x = T.randn({ 2, 3, 4, 5 }, { dtype = "f64" }):to(dev)
  local c = x:contiguous(CL)
  assert(table.concat(c:stride(), ",") == "60,1,15,3", table.concat(c:stride(), ","))
  assert(c:is_contiguous(CL) and not c:is_contiguous() and x:is_contiguous() and not x:is_contiguous(CL))
  assert(c:contiguous(CL):storage_id() == c:storage_id(), "an already channels-last tensor is not copied")
  close(c, x, "values")
  local back = c:contiguous()
  assert(back:is_contiguous())
  close(back, x, "back")
  -- a permuted NHWC tensor is channels-last; shapes where both layouts agree count as both
  local nhwc = T.randn({ 2, 4, 5, 3 }):permute(1, 4, 2, 3)
  assert(nhwc:is_contiguous(CL))
  local one = T.randn({ 2, 1, 4, 4 })
  assert(one:is_contiguous() and one:is_contiguous(CL))
  -- copies keep the layout (clone, to)
  assert(is_cl(c:clone()) and is_cl(c:to("f32")))
  assert(is_cl(T.zeros_like(c)) and is_cl(T.ones_like(c)))
end)

tests["contiguous{memory_format}: bad arguments are clear errors"] = function()
  raises("channels_last needs a 4-d tensor", function() T.randn({ 2, 3 }):contiguous(CL) end)
  raises("memory_format must be", function() T.randn({ 2, 3, 4, 4 }):contiguous{ memory_format = "nhwc" } end)
  raises("memory_format must be", function() T.randn({ 2, 3, 4, 4 }):is_contiguous{ memory_format = 3 } end)
  raises("memory_format must be", function() nn.Conv2d(2, 2, 3):to{ memory_format = "nhwc" } end)
end

on_devices("contiguous{channels_last}: the gradient passes through", function(dev)
  local x = T.randn({ 2, 3, 4, 5 }, { dtype = "f64", requires_grad = true })
  local xd = x:to(dev)
  local y = (xd:contiguous(CL) * xd:contiguous(CL)):sum()
  y:backward()
  close(x.grad, x:detach() * 2, "grad")
  assert(x.grad:is_contiguous(), "an NCHW leaf's gradient is NCHW")
end)

---------------------------------------------------------------------------------------------
-- elementwise ops keep the layout
---------------------------------------------------------------------------------------------
on_devices("elementwise: unary, binary and where keep channels-last, forward and backward", function(dev)
  local s = { 2, 5, 3, 4 }
  same_both_ways(dev, { s }, function(x) return x:silu() end)
  same_both_ways(dev, { s }, function(x) return (x * 3 + 1):tanh() end)
  same_both_ways(dev, { s, s }, function(x, y) return x * y + x:exp() end)
  same_both_ways(dev, { s, s }, function(x, y) return T.where(x:gt(0), x, y) end)
  -- a broadcast operand (a bias [1, C, 1, 1]) does not decide the layout
  local bias = T.randn({ 1, 5, 1, 1 }, { dtype = "f64" }):to(dev)
  same_both_ways(dev, { s }, function(x) return x + bias end)
  same_both_ways(dev, { s }, function(x) return bias * x end)
end)

---------------------------------------------------------------------------------------------
-- convolutions
---------------------------------------------------------------------------------------------
on_devices("conv2d channels-last: equal to NCHW, forward and the three gradients", function(dev)
  same_both_ways(dev, { { 2, 4, 7, 6 }, { 6, 4, 3, 3 }, { 6 } }, function(x, w, b)
    return F.conv2d(x, w, b, { padding = 1 })
  end)
  same_both_ways(dev, { { 2, 4, 9, 8 }, { 6, 2, 3, 2 }, { 6 } }, function(x, w, b)
    return F.conv2d(x, w, b, { stride = 2, padding = { 1, 0 }, dilation = { 1, 2 }, groups = 2 })
  end)
  -- a 1x1 weight is NCHW-contiguous too: the CPU, which follows the weight, computes in NCHW
  same_both_ways(dev, { { 3, 5, 4, 4 }, { 7, 5, 1, 1 } }, function(x, w) return F.conv2d(x, w) end, dev ~= "cpu")
end)

on_devices("conv2d: a channels-last input with an NCHW weight: channels-last on cuda, NCHW on the cpu", function(dev)
  local x, xc = pair(dev, 2, 3, 5, 5)
  local w = T.randn({ 4, 3, 3, 3 }, { dtype = "f64", requires_grad = true })
  local wd = w:to(dev)
  local y = F.conv2d(xc, wd, nil, { padding = 1 })
  if dev == "cpu" then assert(y:is_contiguous(), "the cpu computes in NCHW unless the weight is channels-last")
  else assert(is_cl(y)) end
  close(y, F.conv2d(x, wd, nil, { padding = 1 }), "output")
  y:sum():backward()
  assert(is_cl(xc.grad) and w.grad:is_contiguous(), "each leaf's gradient in its own layout")
end)

on_devices("conv_transpose2d channels-last: equal to NCHW, with output_padding", function(dev)
  same_both_ways(dev, { { 2, 4, 4, 3 }, { 4, 3, 3, 3 }, { 6 } }, function(x, w, b)
    return F.conv_transpose2d(x, w, b, { stride = 2, padding = 1, output_padding = 1, groups = 2 })
  end)
end)

tests["conv2d channels-last in f32, f16 and bf16, cuDNN's heuristics and timed algorithms (cuda)"] = function()
  if not (T.cuda and T.cuda.is_available()) then skip("no CUDA GPU (T.cuda.is_available() is false)") end
  local tol = { f32 = 1e-5, f16 = 1e-2, bf16 = 2e-2 }
  for _, timed in ipairs({ false, true }) do
    local prev = T.backends.cudnn_benchmark(timed)
    for _, dt in ipairs({ "f32", "f16", "bf16" }) do
      local o = { device = "cuda", dtype = dt }
      local x, w, b = T.randn({ 2, 8, 6, 5 }, o), T.randn({ 16, 4, 3, 3 }, o) * 0.2, T.randn({ 16 }, o)
      local gy = T.randn({ 2, 16, 3, 3 }, o)
      local function run(fmt)
        local xs = x:clone():contiguous(fmt):requires_grad_(true)
        local ws = w:clone():contiguous(fmt):requires_grad_(true)
        local bs = b:clone():requires_grad_(true)
        local y = F.conv2d(xs, ws, bs, { stride = 2, padding = 1, groups = 2 })
        y:backward(gy:contiguous(fmt))
        return y, xs.grad, ws.grad, bs.grad
      end
      local a = { run({ memory_format = "contiguous_format" }) }
      local c = { run(CL) }
      assert(is_cl(c[1]) and is_cl(c[2]) and is_cl(c[3]), "channels-last output and gradients")
      for i = 1, 4 do
        T.testing.assert_close(c[i]:double():to("cpu"), a[i]:double():to("cpu"),
          { rtol = tol[dt], atol = tol[dt], msg = dt .. " result " .. i })
      end
    end
    T.backends.cudnn_benchmark(prev)
  end
end

tests["gradcheck conv2d and conv_transpose2d with channels-last inputs (f64)"] = function()
  local function mk(...) return T.randn({ ... }, { dtype = "f64" }):contiguous(CL):requires_grad_(true) end
  T.testing.gradcheck(function(a, k, c) return F.conv2d(a, k, c, { stride = { 2, 1 }, padding = 1 }) end,
    { mk(1, 3, 5, 4), mk(2, 3, 3, 2), T.randn({ 2 }, { dtype = "f64", requires_grad = true }) })
  T.testing.gradcheck(function(a, k) return F.conv_transpose2d(a, k, nil, { stride = 2, output_padding = 1 }) end,
    { mk(1, 2, 3, 3), mk(2, 3, 2, 2) })
end

---------------------------------------------------------------------------------------------
-- group norm
---------------------------------------------------------------------------------------------
on_devices("group_norm (and with silu) channels-last: equal to NCHW, forward and backward", function(dev)
  local function run(silu)
    same_both_ways(dev, { { 2, 6, 5, 3 } }, function(x)
      local w = T.linspace(0.5, 1.5, 6, { dtype = "f64" }):to(dev)
      local b = T.linspace(-0.2, 0.3, 6, { dtype = "f64" }):to(dev)
      return F.group_norm(x, 3, w, b, { eps = 1e-5, silu = silu })
    end)
  end
  run(false)
  run(true)
end)

tests["group_norm channels-last in f32 and bf16, 70 channels in 35 or 7 groups, gradient in either layout (cuda)"] = function()
  if not (T.cuda and T.cuda.is_available()) then skip("no CUDA GPU (T.cuda.is_available() is false)") end
  for _, dt in ipairs({ "f32", "bf16" }) do
    for _, groups in ipairs({ 35, 7 }) do
      for _, silu in ipairs({ false, true }) do
        local o = { device = "cuda", dtype = dt }
        local x, w, b = T.randn({ 3, 70, 5, 7 }, o) + 0.5, T.randn({ 70 }, o), T.randn({ 70 }, o)
        local gy = T.randn({ 3, 70, 5, 7 }, o)
        local function run(fmt, gfmt)
          local xs = x:clone():contiguous(fmt):requires_grad_(true)
          local ws, bs = w:clone():requires_grad_(true), b:clone():requires_grad_(true)
          local y = F.group_norm(xs, groups, ws, bs, { silu = silu })
          y:backward(gy:contiguous(gfmt))
          return y, xs.grad, ws.grad, bs.grad
        end
        local nchw = { memory_format = "contiguous_format" }
        local a = { run(nchw, nchw) }
        for _, gfmt in ipairs({ CL, nchw }) do
          local c = { run(CL, gfmt) }
          assert(is_cl(c[1]) and is_cl(c[2]), "channels-last output and input gradient")
          local tol = dt == "f32" and 1e-4 or 3e-2
          for i = 1, 4 do
            T.testing.assert_close(c[i]:double():to("cpu"), a[i]:double():to("cpu"),
              { rtol = tol, atol = tol, msg = string.format("%s groups %d silu %s result %d", dt, groups, silu, i) })
          end
        end
      end
    end
  end
end

tests["gradcheck group_norm with a channels-last input (f64)"] = function()
  local x = T.randn({ 2, 4, 3, 3 }, { dtype = "f64" }):contiguous(CL):requires_grad_(true)
  local w = T.randn({ 4 }, { dtype = "f64", requires_grad = true })
  local b = T.randn({ 4 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a, c, d) return F.group_norm(a, 2, c, d) end, { x, w, b })
  T.testing.gradcheck(function(a, c, d) return F.group_norm(a, 2, c, d, { silu = true }) end, { x, w, b })
end

---------------------------------------------------------------------------------------------
-- pooling and upsampling keep the layout
---------------------------------------------------------------------------------------------
on_devices("avg_pool2d, max_pool2d, interpolate channels-last: equal to NCHW, forward and backward", function(dev)
  for _, dt in ipairs({ "f64", "f32" }) do
    local s = { { 2, 3, 6, 8 } }
    local function as(f) return function(x) return f(x:to(dt)) end end
    same_both_ways(dev, s, as(function(x) return F.avg_pool2d(x, 2) end))
    same_both_ways(dev, s, as(function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }) end))
    same_both_ways(dev, s, as(function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1 }) end))
    same_both_ways(dev, s, as(function(x) return F.max_pool2d(x, 2, { dilation = 2 }) end))
    same_both_ways(dev, s, as(function(x) return F.interpolate(x, { scale_factor = 2, mode = "nearest" }) end))
    same_both_ways(dev, s, as(function(x) return F.interpolate(x, { size = { 9, 5 }, mode = "nearest" }) end))
    same_both_ways(dev, s, as(function(x)
      return F.interpolate(x, { size = { 9, 5 }, mode = "bilinear", align_corners = false })
    end))
    same_both_ways(dev, s, as(function(x)
      return F.interpolate(x, { size = { 4, 11 }, mode = "bilinear", align_corners = true })
    end))
  end
end)

tests["gradcheck pooling and interpolate with channels-last inputs (f64)"] = function()
  local x = T.randn({ 1, 3, 5, 4 }, { dtype = "f64" }):contiguous(CL):requires_grad_(true)
  T.testing.gradcheck(function(a) return F.avg_pool2d(a, 2, { stride = 1 }) end, { x })
  T.testing.gradcheck(function(a) return F.max_pool2d(a, 2, { stride = 1 }) end, { x })
  T.testing.gradcheck(function(a) return F.interpolate(a, { size = { 7, 6 }, mode = "bilinear" }) end, { x })
end

---------------------------------------------------------------------------------------------
-- modules
---------------------------------------------------------------------------------------------
on_devices("model:to{memory_format = channels_last}: conv weights channels-last, same outputs and AdamW steps", function(dev)
  local function model()
    T.manual_seed(7)
    return nn.Sequential(nn.Conv2d(3, 8, 3, { padding = 1 }), nn.GroupNorm(4, 8), nn.SiLU(),
      nn.Conv2d(8, 4, 3, { stride = 2, padding = 1 })):to("f64"):to(dev)
  end
  local a, b = model(), model()
  b:to(CL)
  assert(is_cl(b[1].weight) and is_cl(b[4].weight), "conv weights channels-last")
  assert(b[1].bias:is_contiguous() and b[2].weight:is_contiguous(), "1-d parameters untouched")
  local x = T.randn({ 2, 3, 8, 8 }, { dtype = "f64" }):to(dev)
  local oa, ob = optim.AdamW(a:parameters(), { lr = 1e-2 }), optim.AdamW(b:parameters(), { lr = 1e-2 })
  for _ = 1, 2 do
    local ya, yb = a(x), b(x:contiguous(CL))
    assert(is_cl(yb), "the channels-last model's output is channels-last")
    close(yb, ya, "output")
    ya:square():mean():backward()
    yb:square():mean():backward()
    assert(is_cl(b[1].weight.grad), "a channels-last weight's gradient is channels-last")
    oa:step(); ob:step(); oa:zero_grad(); ob:zero_grad()
  end
  close(b[1].weight, a[1].weight, "weights after two AdamW steps")
  assert(is_cl(b[1].weight), "the step keeps the layout")
  b:to{ memory_format = "contiguous_format" }
  assert(b[1].weight:is_contiguous())
end)

on_devices("a UNet2DConditionModel in channels-last: output and every gradient equal to NCHW's (f64)", function(dev)
  local json = require "tocha.json"
  local sd, meta = T.load(T.testing.path("ref/models_unet.safetensors"))
  local io = T.load(T.testing.path("ref/models_unet_io.safetensors"))
  local cfg = json.decode(meta.config)
  local x = io.sample:narrow(1, 1, 1):narrow(3, 1, 8):narrow(4, 1, 8):double():to(dev)
  local ctx = io.context:narrow(1, 1, 1):double():to(dev)
  local function run(cl)
    local m = models.UNet2DConditionModel(cfg, { dtype = "f64" })
    m:load_state_dict(sd)
    m:to(dev)
    if cl then m:to(CL) end
    local y = m(cl and x:contiguous(CL) or x, 500, ctx)
    y:square():sum():backward()
    local g = {}
    for k, p in m:named_parameters() do g[k] = p.grad end
    return y, g, m
  end
  local ya, ga = run(false)
  local yb, gb, mb = run(true)
  assert(is_cl(yb), "the channels-last UNet's output is channels-last")
  assert(is_cl(mb.conv_in.weight.grad), "conv weights' gradients channels-last")
  T.testing.assert_close(yb:to("cpu"), ya:to("cpu"), { rtol = 1e-9, atol = 1e-10, msg = "output" })
  for k, g in pairs(ga) do
    T.testing.assert_close(gb[k]:to("cpu"), g:to("cpu"), { rtol = 1e-9, atol = 1e-10, msg = k })
  end
end)

return tests
