-- tests/test_pool.lua: avg_pool2d, max_pool2d, interpolate, nn.Upsample and pad against PyTorch (forward
-- and input gradient, tests/ref/gen_pool.py), f64 gradient checks, strided inputs, half
-- precision, and the error messages.
local T = require "tocha"
local raises = T.testing.raises
local F = require "tocha.nn.functional"
local ref = dofile(T.testing.path("ref/pool_ref.lua"))

local tests = {}

local function tensor(vals, shape, dtype)
  return T.tensor(vals, { dtype = dtype or "f64" }):view(shape)
end

-- the op of a fixture case, as a function of x
local function op_of(c)
  if c.op == "avg_pool2d" then
    return function(x)
      return F.avg_pool2d(x, c.kernel, { stride = c.stride, padding = c.padding, ceil_mode = c.ceil_mode,
        count_include_pad = c.count_include_pad })
    end
  elseif c.op == "max_pool2d" then
    return function(x)
      return F.max_pool2d(x, c.kernel, { stride = c.stride, padding = c.padding, dilation = c.dilation,
        ceil_mode = c.ceil_mode })
    end
  elseif c.op == "interpolate" then
    return function(x) return F.interpolate(x, { size = c.size, mode = c.mode, align_corners = c.align_corners }) end
  elseif c.op == "upsample" then
    return require("tocha.nn").Upsample { size = c.size, scale_factor = c.scale_factor, mode = c.mode,
      align_corners = c.align_corners, recompute_scale_factor = c.recompute_scale_factor }
  end
  return function(x) return F.pad(x, c.pads, { mode = c.mode, value = c.value }) end
end

for name, c in pairs(ref) do
  tests["matches PyTorch: " .. name .. " (f64, forward and gradient)"] = function()
    local x = tensor(c.x, c.xshape):requires_grad_(true)
    local y = op_of(c)(x)
    assert(#y.shape == #c.yshape, "output rank")
    for i, s in ipairs(c.yshape) do assert(y.shape[i] == s, "output shape") end
    T.testing.assert_close(y, tensor(c.y, c.yshape), { rtol = 1e-10, atol = 1e-9, msg = name .. " y" })
    y:backward(tensor(c.gy, c.yshape))
    T.testing.assert_close(x.grad, tensor(c.gx, c.xshape), { rtol = 1e-10, atol = 1e-9, msg = name .. " gx" })
  end
  tests["matches PyTorch: " .. name .. " (f32 forward)"] = function()
    local y = op_of(c)(tensor(c.x, c.xshape, "f32"))
    assert(y.dtype == "f32")
    T.testing.assert_close(y, tensor(c.y, c.yshape), { rtol = 1e-5, atol = 1e-5, msg = name })
  end
end

local function mk(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end

tests["gradcheck avg_pool2d"] = function()
  T.testing.gradcheck(function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1 }) end, { mk(1, 2, 5, 4) })
  T.testing.gradcheck(function(x)
    return F.avg_pool2d(x, { 2, 3 }, { stride = { 2, 1 }, padding = { 1, 1 }, ceil_mode = true, count_include_pad = false })
  end, { mk(1, 2, 5, 4) })
end

tests["gradcheck max_pool2d"] = function()
  T.testing.gradcheck(function(x) return F.max_pool2d(x, 2) end, { mk(1, 2, 4, 5) })
  T.testing.gradcheck(function(x)
    return F.max_pool2d(x, 3, { stride = 2, padding = 1, dilation = { 1, 2 }, ceil_mode = true })
  end, { mk(1, 2, 5, 6) })
end

tests["gradcheck interpolate"] = function()
  T.testing.gradcheck(function(x) return F.interpolate(x, { size = { 5, 3 } }) end, { mk(1, 2, 3, 4) })
  T.testing.gradcheck(function(x) return F.interpolate(x, { size = { 5, 7 }, mode = "bilinear" }) end, { mk(1, 2, 3, 4) })
  T.testing.gradcheck(function(x)
    return F.interpolate(x, { size = { 2, 6 }, mode = "bilinear", align_corners = true })
  end, { mk(1, 2, 3, 4) })
end

tests["nn.Upsample: options checked when made, a scale PyTorch would map differently refused"] = function()
  local nn = require "tocha.nn"
  raises("Upsample: give size or scale_factor", function() return nn.Upsample {} end)
  raises("Upsample: give size or scale_factor", function() return nn.Upsample { size = 4, scale_factor = 2 } end)
  raises("Upsample: mode must be \"nearest\" or \"bilinear\" (got bicubic)", function()
    return nn.Upsample { scale_factor = 2, mode = "bicubic" }
  end)
  raises("align_corners needs mode \"bilinear\"", function() return nn.Upsample { scale_factor = 2, align_corners = true } end)
  local up = nn.Upsample { scale_factor = 1.5, mode = "bilinear" }
  raises("scale_factor 1.5 x 1.5 on 5 x 5 pixels is not a whole size", function() return up(T.zeros(1, 1, 5, 5)) end)
  assert(up(T.zeros(1, 1, 4, 6)).shape[4] == 9, "a whole size is fine")
  assert(tostring(up) == "Upsample(scale_factor=1.5, mode=bilinear)" and #up:parameters() == 0)
  assert(tostring(nn.Upsample { size = { 3, 4 } }) == "Upsample(size=(3, 4), mode=nearest)")
end

tests["gradcheck pad"] = function()
  T.testing.gradcheck(function(x) return F.pad(x, { 1, -1, 2, 0, 0, 1 }, { value = 3 }) end, { mk(2, 3, 4) })
  T.testing.gradcheck(function(x) return F.pad(x, { 2, 1, 1, 2 }, { mode = "reflect" }) end, { mk(1, 2, 3, 4) })
  T.testing.gradcheck(function(x) return F.pad(x, { 3, 1 }, { mode = "reflect" }) end, { mk(2, 5) })
  T.testing.gradcheck(function(x) return F.pad(x, { 2, 3, 0, 2 }, { mode = "replicate" }) end, { mk(1, 2, 3, 4) })
end

tests["scale_factor 2 nearest upsampling repeats each pixel"] = function()
  local x = T.arange(0, 6, { dtype = "f64" }):view(1, 1, 2, 3)
  local y = F.interpolate(x, { scale_factor = 2 })
  T.testing.assert_close(y:view(4, 6), { { 0, 0, 1, 1, 2, 2 }, { 0, 0, 1, 1, 2, 2 }, { 3, 3, 4, 4, 5, 5 }, { 3, 3, 4, 4, 5, 5 } })
  -- f32 (rows repeated by copying the row above) picks the pixels the f64 path picks, upsampling by
  -- 2, by 7 / 3 and downsampling
  local r = T.randn({ 2, 3, 3, 5 })
  for _, size in ipairs({ { 6, 10 }, { 7, 12 }, { 2, 3 } }) do
    T.testing.assert_close(F.interpolate(r, { size = size }):double(), F.interpolate(r:double(), { size = size }),
      { rtol = 0, atol = 0, msg = size[1] .. "x" .. size[2] })
  end
end

tests["max_pool2d propagates NaN and routes the gradient to the maximum"] = function()
  local x = T.tensor({ { { { 1, 5, 2, 0 }, { 3, 4, 0 / 0, 1 } } } }, { dtype = "f64" }):requires_grad_(true)
  local y = F.max_pool2d(x, 2)
  assert(y[1][1][1][1]:item() == 5)
  local v = y[1][1][1][2]:item()
  assert(v ~= v, "NaN propagates")
  y:sum():backward()
  T.testing.assert_close(x.grad:view(2, 4), { { 0, 1, 0, 0 }, { 0, 0, 1, 0 } })
end

tests["non-contiguous inputs give the contiguous result"] = function()
  local base = T.randn({ 2, 7, 6, 3 }, { dtype = "f64" })
  local x = base:permute(1, 4, 2, 3):narrow(3, 2, 5) -- [2, 3, 5, 6], strided
  assert(not x:is_contiguous())
  local xc = x:contiguous()
  local ops = {
    function(t) return F.avg_pool2d(t, 2, { stride = 1, padding = 1 }) end,
    function(t) return F.max_pool2d(t, 3, { stride = 2, padding = 1 }) end,
    function(t) return F.interpolate(t, { size = { 7, 4 }, mode = "bilinear" }) end,
    function(t) return F.interpolate(t, { size = { 3, 9 } }) end,
    function(t) return F.pad(t, { 1, 2, 3, 0 }, { value = 1 }) end,
    function(t) return F.pad(t, { 1, 2, 3, 0 }, { mode = "reflect" }) end,
    function(t) return F.pad(t, { 1, 2 }, { mode = "replicate" }) end,
  }
  for i, op in ipairs(ops) do
    local a = x:detach():requires_grad_(true)
    local b = xc:detach():requires_grad_(true)
    local ya, yb = op(a), op(b)
    T.testing.assert_close(ya, yb, { rtol = 1e-12, atol = 1e-12, msg = "op " .. i })
    -- an upstream gradient that is itself a strided view
    local g = T.randn({ ya.shape[1], ya.shape[2], ya.shape[4], ya.shape[3] }, { dtype = "f64" }):transpose(3, 4)
    ya:backward(g)
    yb:backward(g:contiguous())
    T.testing.assert_close(a.grad, b.grad, { rtol = 1e-12, atol = 1e-12, msg = "grad of op " .. i })
  end
end

tests["f16 and bf16 go through f32; constant pad keeps any dtype"] = function()
  local x = T.randn({ 1, 2, 6, 6 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local h = x:to(dt)
    local cases = {
      { F.avg_pool2d(h, 2), F.avg_pool2d(x, 2) },
      { F.max_pool2d(h, 2), F.max_pool2d(x, 2) },
      { F.interpolate(h, { size = { 9, 4 }, mode = "bilinear" }), F.interpolate(x, { size = { 9, 4 }, mode = "bilinear" }) },
      { F.pad(h, { 1, 1, 2, 2 }, { mode = "reflect" }), F.pad(x, { 1, 1, 2, 2 }, { mode = "reflect" }) },
    }
    for i, c in ipairs(cases) do
      assert(c[1].dtype == dt)
      T.testing.assert_close(c[1], c[2], { rtol = 0.02, atol = 0.02, msg = dt .. " case " .. i })
    end
  end
  local ints = T.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "i64" })
  local p = F.pad(ints, { 1, 0 }, { value = 7 })
  assert(p.dtype == "i64")
  T.testing.assert_close(p, { { 7, 1, 2 }, { 7, 3, 4 } })
end

tests["errors name the op and the shapes"] = function()
  local x = T.randn({ 2, 3, 4, 4 })
  raises("avg_pool2d: output size [2 x 3 x 0 x 0] is not positive (input [2 x 3 x 4 x 4], kernel 5 x 5",
    F.avg_pool2d, x, 5)
  raises("max_pool2d: padding 2 x 2 is more than half the kernel 3 x 3", F.max_pool2d, x, 3, { padding = 2 })
  raises("max_pool2d: expected a 4-d input [N, C, H, W], got [3 x 4 x 4]", F.max_pool2d, T.randn({ 3, 4, 4 }), 2)
  raises("avg_pool2d: kernel, stride and dilation must be positive", F.avg_pool2d, x, 2, { stride = 0 })
  raises("interpolate: mode must be \"nearest\" or \"bilinear\" (got \"bicubic\")",
    T._nn.interpolate, x, 8, 8, "bicubic", false)
  raises("interpolate: align_corners can only be set with mode \"bilinear\"",
    F.interpolate, x, { size = 8, align_corners = true })
  raises("interpolate: input [2 x 3 x 4 x 4] and output size 0 x 8 must be positive", F.interpolate, x, { size = { 0, 8 } })
  raises("pad: mode must be \"constant\", \"reflect\" or \"replicate\" (got \"circular\")",
    F.pad, x, { 1, 1 }, { mode = "circular" })
  raises("pad: reflect padding (4, 0) must be smaller than the dim's size 4 (input [2 x 3 x 4 x 4])",
    F.pad, x, { 4, 0 }, { mode = "reflect" })
  raises("pad: reflect mode pads the last 1 or 2 dims, got 3 pairs", F.pad, x, { 1, 1, 1, 1, 1, 1 }, { mode = "reflect" })
  raises("pad: padding (-3, -2) of dim 4 of [2 x 3 x 4 x 4] gives a negative size", F.pad, x, { -3, -2 })
  raises("pad: 5 (before, after) pairs for the 4-d input [2 x 3 x 4 x 4]", F.pad, x, { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1 })
  raises("pad: replicate padding must be non-negative, got (-1, 0)", F.pad, x, { -1, 0 }, { mode = "replicate" })
end

return tests
