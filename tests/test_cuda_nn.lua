-- test_cuda_nn.lua: kernels/pool.cu and kernels/conv.cu against the CPU's kernels on the same
-- inputs in the same dtype, forward and input gradient, beyond test_cuda.lua's cases: odd
-- sizes, every window rule (ceil_mode, count_include_pad, dilation, overlapping windows), NaN
-- and ties in max pooling, resampling up and down by odd factors and to or from size 1, pads
-- of every dtype over strided inputs with negative (cropping) and edge-sized pads, and conv
-- through cuDNN with groups, dilation and conv_transpose2d's output_padding, timed algorithms
-- (cudnn_benchmark) and TF32. Without a GPU every test skips.
--   TOCHA_CUDA_DEVICE=cpu  runs it all with the CPU standing in for the GPU (checks the harness)
local T = require "tocha"
local F = require "tocha.nn.functional"

local H = dofile(T.testing.path("cuda_harness.lua")) -- the device under test
local DEV, need_gpu = H.DEV, H.need_gpu
local FLOATS = { "f64", "f32", "f16", "bf16" }
-- rtol, atol by dtype: the GPU sums in float where the CPU sometimes sums in double, and in
-- another order, so f16 and bf16 may differ by a unit in the last place
local TOL = { f64 = { 1e-12, 1e-12 }, f32 = { 1e-5, 1e-6 }, f16 = { 2e-3, 1e-3 }, bf16 = { 1.6e-2, 1e-2 } }

local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end
local function is_float(dt) return TOL[dt] ~= nil end

--- g (on the device) against c (cpu): same dtype and shape; floats within the dtype's tolerance
--- times scale (NaN where the CPU has NaN), anything else equal
local function check(g, c, msg, scale)
  assert(g.device:sub(1, #DEV) == DEV, msg .. ": result not on " .. DEV)
  if g.dtype ~= c.dtype then error(msg .. ": dtype " .. g.dtype .. " vs " .. c.dtype .. " on the cpu", 2) end
  if shape_str(g) ~= shape_str(c) then error(msg .. ": shape " .. shape_str(g) .. " vs " .. shape_str(c), 2) end
  local a, e = g:detach():to("cpu"):double():reshape(-1), c:detach():double():reshape(-1)
  if e:numel() == 0 then return end
  local ok
  if is_float(c.dtype) then
    local rtol, atol = TOL[c.dtype][1] * (scale or 1), TOL[c.dtype][2] * (scale or 1)
    ok = (a - e):abs():le(e:abs() * rtol + atol):logical_or(a:eq(e)):logical_or(a:ne(a):logical_and(e:ne(e)))
  else
    ok = a:eq(e)
  end
  local bad = ok:logical_not():to("i64")
  local nbad = bad:sum():item()
  if nbad > 0 then
    local i = bad:argmax():item()
    error(string.format("%s: %d of %d differ; first at %d: %s %.9g vs cpu %.9g", msg, nbad, e:numel(), i, DEV,
      a[i]:item(), e[i]:item()), 2)
  end
end

--- random values in [-3, 3) of dtype dt on the cpu (integer-valued: ties in every dtype)
local function values(dt, shape, integers)
  for _, s in ipairs(shape) do
    if s == 0 then return T.zeros(shape, { dtype = dt }) end
  end
  local x = T.rand(shape, { dtype = "f64" }) * 6 - 3
  if integers then x = x:to("i64") end -- rounded toward zero
  return x:to(dt)
end

--- f on the cpu and the device from the same input x (cpu, dtype dt), compared; with grad,
--- also the input gradients from the same random output gradient
local function compare(x, f, msg, o)
  o = o or {}
  local xc, xg = x:clone(), x:to(DEV)
  if o.grad ~= false then
    xc:requires_grad_(true)
    xg:requires_grad_(true)
  end
  local yc, yg = f(xc), f(xg)
  check(yg, yc, msg .. " forward", o.tol)
  if o.grad == false then return end
  local gy = values(yc.dtype, yc.shape)
  yc:backward(gy)
  yg:backward(gy:to(DEV))
  check(xg.grad, xc.grad, msg .. " gradient", o.gtol or o.tol)
end

local tests = {}

---------------------------------------------------------------------------------------------
-- pooling
---------------------------------------------------------------------------------------------
local AVG = {
  { "3, stride 2, padding 1", { 2, 3, 9, 11 }, 3, { stride = 2, padding = 1 } },
  { "ceil_mode, count_include_pad false", { 2, 3, 9, 11 }, 3,
    { stride = 2, padding = 1, ceil_mode = true, count_include_pad = false } },
  { "{2, 3}, stride {1, 2}, padding {1, 1}, ceil_mode", { 1, 2, 7, 10 }, { 2, 3 },
    { stride = { 1, 2 }, padding = { 1, 1 }, ceil_mode = true } },
  { "{3, 2}, stride 1 (overlapping)", { 2, 2, 6, 5 }, { 3, 2 }, { stride = 1 } },
  { "the whole plane", { 2, 3, 7, 5 }, { 7, 5 }, {} },
  { "1 x 1", { 1, 2, 3, 4 }, 1, {} },
  { "4, stride 3, padding 2, ceil_mode, count_include_pad false (a clipped last window)", { 1, 3, 10, 12 }, 4,
    { stride = 3, padding = 2, ceil_mode = true, count_include_pad = false } },
}

tests["avg_pool2d matches the CPU (every dtype, forward and gradient)"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, c in ipairs(AVG) do
      compare(values(dt, c[2]), function(x) return F.avg_pool2d(x, c[3], c[4]) end,
        "avg_pool2d " .. c[1] .. " [" .. dt .. "]", { tol = 2 })
    end
  end
end

local MAX = {
  { "3, stride 2, padding 1", { 2, 3, 9, 11 }, 3, { stride = 2, padding = 1 } },
  { "3, stride 1, padding 1 (overlapping)", { 2, 2, 7, 6 }, 3, { stride = 1, padding = 1 } },
  { "{2, 3}, dilation {2, 3}, padding {1, 2}, ceil_mode", { 1, 3, 11, 13 }, { 2, 3 },
    { stride = { 2, 1 }, padding = { 1, 2 }, dilation = { 2, 3 }, ceil_mode = true } },
  { "2 (odd sizes)", { 3, 2, 5, 7 }, 2, {} },
  { "the whole plane", { 2, 3, 4, 5 }, { 4, 5 }, {} },
}

tests["max_pool2d matches the CPU (every dtype, ties, forward and gradient)"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, c in ipairs(MAX) do
      for _, ties in ipairs({ false, true }) do
        compare(values(dt, c[2], ties), function(x) return F.max_pool2d(x, c[3], c[4]) end,
          "max_pool2d " .. c[1] .. (ties and " (ties)" or "") .. " [" .. dt .. "]")
      end
    end
  end
end

tests["max_pool2d: NaN wins its windows and takes their gradient"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    local x = values(dt, { 1, 2, 6, 7 })
    x[1][1][2][3] = 0 / 0
    x[1][2][5][7] = 0 / 0
    x[1][2][5][6] = 0 / 0
    compare(x, function(t) return F.max_pool2d(t, 3, { stride = 2, padding = 1 }) end, "max_pool2d NaN [" .. dt .. "]")
  end
end

---------------------------------------------------------------------------------------------
-- interpolate
---------------------------------------------------------------------------------------------
local INTERP = {
  { "nearest x2", { 2, 3, 5, 7 }, { scale_factor = 2 } },
  { "nearest x3", { 1, 2, 4, 5 }, { scale_factor = 3 } },
  { "nearest to {13, 11}", { 2, 2, 5, 7 }, { size = { 13, 11 } } },
  { "nearest down to {4, 3}", { 2, 2, 13, 11 }, { size = { 4, 3 } } },
  { "nearest same size", { 1, 2, 6, 5 }, { size = { 6, 5 } } },
  { "nearest from 1 x 1", { 2, 3, 1, 1 }, { size = { 5, 4 } } },
  { "nearest to 1 x 1", { 2, 3, 7, 6 }, { size = { 1, 1 } } },
  { "bilinear x2", { 2, 3, 5, 7 }, { scale_factor = 2, mode = "bilinear" } },
  { "bilinear to {13, 4}", { 2, 2, 5, 7 }, { size = { 13, 4 }, mode = "bilinear" } },
  { "bilinear down to {4, 3}", { 2, 2, 13, 11 }, { size = { 4, 3 }, mode = "bilinear" } },
  { "bilinear down by 5 to {3, 2}", { 1, 2, 15, 10 }, { size = { 3, 2 }, mode = "bilinear" } },
  { "bilinear align_corners to {9, 13}", { 2, 2, 5, 7 }, { size = { 9, 13 }, mode = "bilinear", align_corners = true } },
  { "bilinear align_corners down to {4, 3}", { 2, 2, 13, 11 },
    { size = { 4, 3 }, mode = "bilinear", align_corners = true } },
  { "bilinear align_corners to 1 x 1", { 1, 2, 5, 4 }, { size = { 1, 1 }, mode = "bilinear", align_corners = true } },
  { "bilinear from 1 x 1", { 1, 2, 1, 1 }, { size = { 3, 4 }, mode = "bilinear" } },
  { "bilinear same size", { 1, 2, 6, 5 }, { size = { 6, 5 }, mode = "bilinear" } },
  { "bilinear from a single row", { 1, 2, 1, 6 }, { size = { 4, 9 }, mode = "bilinear" } },
}

tests["interpolate matches the CPU (every dtype, forward and gradient)"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, c in ipairs(INTERP) do
      compare(values(dt, c[2]), function(x) return F.interpolate(x, c[3]) end,
        "interpolate " .. c[1] .. " [" .. dt .. "]", { tol = 2, gtol = 4 })
    end
  end
end

---------------------------------------------------------------------------------------------
-- pad
---------------------------------------------------------------------------------------------
-- { name, base shape, view of the base, pads, opts }
local PADS = {
  { "constant {1, 2, 3, 0}", { 2, 3, 5, 6 }, nil, { 1, 2, 3, 0 }, { value = 0.5 } },
  { "constant, 3 pairs, transposed input", { 2, 6, 5 }, function(t) return t:transpose(2, 3) end,
    { 1, 0, 2, 1, 0, 1 }, {} },
  { "constant, negative pads (crop)", { 3, 7, 8 }, nil, { -2, 1, 1, -3 }, { value = -1 } },
  { "constant, crop everything", { 2, 4, 3 }, nil, { -2, -1 }, { value = 7 } },
  { "constant, narrowed 1-d", { 12 }, function(t) return t:narrow(1, 3, 7) end, { 3, 2 }, { value = 2 } },
  { "constant, -inf", { 2, 5, 4 }, nil, { 1, 1 }, { value = -math.huge } },
  { "reflect", { 2, 3, 5, 6 }, nil, { 2, 1, 1, 3 }, { mode = "reflect" } },
  { "reflect, the widest pads", { 1, 2, 4, 3 }, nil, { 2, 2, 3, 3 }, { mode = "reflect" } },
  { "reflect, 1 pair on 3-d", { 2, 3, 7 }, nil, { 3, 6 }, { mode = "reflect" } },
  { "reflect, 1-d", { 5 }, nil, { 4, 2 }, { mode = "reflect" } },
  { "replicate", { 2, 3, 5, 6 }, nil, { 3, 1, 0, 2 }, { mode = "replicate" } },
  { "replicate, pads larger than the input", { 1, 2, 2, 3 }, nil, { 5, 4, 6, 7 }, { mode = "replicate" } },
  { "replicate, single-pixel planes", { 2, 3, 1, 1 }, nil, { 2, 1, 1, 3 }, { mode = "replicate" } },
  { "replicate, 1 pair on 3-d", { 2, 3, 4 }, nil, { 0, 5 }, { mode = "replicate" } },
}

tests["pad matches the CPU (every float dtype, forward and gradient)"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, c in ipairs(PADS) do
      local view = c[3] or function(t) return t end
      compare(values(dt, c[2]), function(x) return F.pad(view(x), c[4], c[5]) end, "pad " .. c[1] .. " [" .. dt .. "]")
    end
  end
end

tests["constant pad keeps any dtype, bit for bit"] = function()
  need_gpu()
  local base = T.tensor({ { 1, -2, 3, 4 }, { 5, 6, -7, 8 }, { 9, 10, 11, -12 } }, { dtype = "i64" })
  for _, dt in ipairs({ "i32", "i64", "u8", "bool", "f16", "bf16" }) do
    local x = base:to(dt)
    for _, view in ipairs({ function(t) return t end, function(t) return t:t() end }) do
      local a, b = F.pad(view(x:to(DEV)), { 2, -1, 1, 1 }, { value = 3.7 }), F.pad(view(x), { 2, -1, 1, 1 }, { value = 3.7 })
      check(a, b, "pad constant [" .. dt .. "]")
    end
  end
  -- a large i64 keeps all its bits (no trip through double)
  local big = T.tensor({ 9007199254740993, -9007199254740995 }, { dtype = "i64" })
  check(F.pad(big:to(DEV), { 1, 1 }), F.pad(big, { 1, 1 }), "pad constant [i64 beyond 2^53]")
end

tests["zero-size inputs and outputs"] = function()
  need_gpu()
  check(F.pad(T.zeros({ 0, 3 }):to(DEV), { 1, 1 }), F.pad(T.zeros({ 0, 3 }), { 1, 1 }), "pad of an empty tensor")
  check(F.pad(T.ones({ 2, 3 }):to(DEV), { 0, 0, 2, 1 }, { value = 4 }), F.pad(T.ones({ 2, 3 }), { 0, 0, 2, 1 }, { value = 4 }),
    "pad rows")
  check(F.pad(T.ones({ 3, 0 }):to(DEV), { 1, 2 }, { value = 4 }), F.pad(T.ones({ 3, 0 }), { 1, 2 }, { value = 4 }),
    "pad an empty dim")
  local x = T.randn({ 0, 3, 6, 6 })
  check(F.avg_pool2d(x:to(DEV), 2), F.avg_pool2d(x, 2), "avg_pool2d of an empty batch")
  check(F.max_pool2d(x:to(DEV), 2), F.max_pool2d(x, 2), "max_pool2d of an empty batch")
  check(F.interpolate(x:to(DEV), { scale_factor = 2 }), F.interpolate(x, { scale_factor = 2 }), "interpolate of an empty batch")
end

---------------------------------------------------------------------------------------------
-- conv (cuDNN on a GPU; under the emulator the CPU's kernel behind the cuda table)
---------------------------------------------------------------------------------------------
-- { name, op, x shape, w shape, bias, opts }
local CONV = {
  { "3x3 padding 1", "conv2d", { 2, 4, 9, 11 }, { 6, 4, 3, 3 }, true, { padding = 1 } },
  { "stride {2, 1}, padding {1, 2}, dilation {2, 3}", "conv2d", { 2, 3, 10, 13 }, { 5, 3, 3, 2 }, true,
    { stride = { 2, 1 }, padding = { 1, 2 }, dilation = { 2, 3 } } },
  { "groups 3", "conv2d", { 1, 6, 7, 8 }, { 9, 2, 3, 3 }, true, { padding = 1, groups = 3 } },
  { "depthwise", "conv2d", { 2, 4, 7, 5 }, { 4, 1, 3, 3 }, false, { padding = 1, groups = 4 } },
  { "1x1", "conv2d", { 3, 5, 4, 6 }, { 7, 5, 1, 1 }, true, {} },
  { "kernel as large as the input", "conv2d", { 2, 3, 5, 4 }, { 2, 3, 5, 4 }, true, {} },
  { "transpose stride 2, output_padding 1", "conv_transpose2d", { 2, 4, 5, 6 }, { 4, 3, 3, 3 }, true,
    { stride = 2, padding = 1, output_padding = 1 } },
  { "transpose groups 2, stride {1, 3}", "conv_transpose2d", { 2, 4, 5, 5 }, { 4, 2, 3, 2 }, true,
    { groups = 2, stride = { 1, 3 }, padding = { 1, 0 } } },
  -- output_padding >= stride (allowed below dilation): the output has a row and column no
  -- input reaches, and cuDNN's own output size is larger than the one given
  { "transpose dilation 2, stride 1, output_padding 1", "conv_transpose2d", { 1, 3, 4, 5 }, { 3, 2, 3, 2 }, true,
    { dilation = 2, output_padding = 1 } },
}

local function conv_case(c, dt, tol)
  local x, w = values(dt, c[3]), values(dt, c[4])
  local b = c[5] and values(dt, { c[2] == "conv2d" and c[4][1] or c[4][2] * (c[6].groups or 1) }) or nil
  local name = c[2] .. " " .. c[1] .. " [" .. dt .. "]"
  local op = F[c[2]]
  -- the three gradients: w and b ride along with x as closure values on each device
  local wc, bc = w:clone():requires_grad_(true), b and b:clone():requires_grad_(true)
  local wg, bg = w:to(DEV):requires_grad_(true), b and b:to(DEV):requires_grad_(true)
  local calls = 0 -- compare runs f on the cpu first, then on the device
  compare(x, function(t)
    calls = calls + 1
    if calls == 1 then return op(t, wc, bc, c[6]) end
    return op(t, wg, bg, c[6])
  end, name, { tol = tol })
  check(wg.grad, wc.grad, name .. " weight gradient", tol * 3)
  if b then check(bg.grad, bc.grad, name .. " bias gradient", tol * 3) end
end

tests["conv2d and conv_transpose2d match the CPU (every dtype, three gradients)"] = function()
  need_gpu()
  for _, dt in ipairs(FLOATS) do
    for _, c in ipairs(CONV) do conv_case(c, dt, dt == "f32" and 10 or 3) end
  end
end

tests["conv with timed algorithms (cudnn_benchmark) and TF32"] = function()
  need_gpu()
  if DEV == "cpu" then skip("the CPU has no cuDNN flags") end
  local bench = T.backends.cudnn_benchmark(true)
  local ok, err = pcall(function()
    for _, dt in ipairs(FLOATS) do
      for _, c in ipairs(CONV) do conv_case(c, dt, dt == "f32" and 10 or 3) end
    end
  end)
  T.backends.cudnn_benchmark(bench)
  if not ok then error(err, 0) end
  local tf32 = T.backends.allow_tf32(true)
  ok, err = pcall(function()
    for _, c in ipairs(CONV) do conv_case(c, "f32", 1000) end -- TF32 keeps 10 bits of mantissa
  end)
  T.backends.allow_tf32(tf32)
  if not ok then error(err, 0) end
end

tests["conv of an empty batch gives empty outputs and zero weight gradients"] = function()
  need_gpu()
  for _, op in ipairs({ "conv2d", "conv_transpose2d" }) do
    local x, w, b = T.randn({ 0, 4, 5, 5 }), T.randn({ 4, 4, 3, 3 }), T.randn({ 4 })
    local wc, bc = w:clone():requires_grad_(true), b:clone():requires_grad_(true)
    local wg, bg = w:to(DEV):requires_grad_(true), b:to(DEV):requires_grad_(true)
    local yc, yg = F[op](x, wc, bc, { padding = 1 }), F[op](x:to(DEV), wg, bg, { padding = 1 })
    check(yg, yc, op .. " of an empty batch")
    yc:sum():backward()
    yg:sum():backward()
    check(wg.grad, wc.grad, op .. " weight gradient of an empty batch")
    check(bg.grad, bc.grad, op .. " bias gradient of an empty batch")
  end
end

return tests
