-- tests/test_conv.lua: conv2d and conv_transpose2d against PyTorch (forward and the three
-- gradients, tests/ref/gen_conv.py), f64 gradient checks, strided inputs, half precision
-- through f32, and the error messages.
local T = require "tocha"
local raises = T.testing.raises
local F = require "tocha.nn.functional"
local ref = dofile(T.testing.path("ref/conv_ref.lua"))

local tests = {}

local function tensor(vals, shape, dtype, grad)
  return T.tensor(vals, { dtype = dtype or "f64" }):view(shape):requires_grad_(grad or false)
end

local function opts_of(c)
  return { stride = c.stride, padding = c.padding, dilation = c.dilation, groups = c.groups,
    output_padding = c.output_padding }
end

local function run(c, dtype, grad)
  local x, w = tensor(c.x, c.xshape, dtype, grad), tensor(c.w, c.wshape, dtype, grad)
  local b = c.b and tensor(c.b, { #c.b }, dtype, grad)
  local op = c.op == "conv2d" and F.conv2d or F.conv_transpose2d
  local o = opts_of(c)
  if c.op == "conv2d" then o.output_padding = nil end
  return op(x, w, b, o), x, w, b
end

for name, c in pairs(ref) do
  tests["matches PyTorch: " .. name .. " (f64, forward and gradients)"] = function()
    local y, x, w, b = run(c, "f64", true)
    for i, s in ipairs(c.yshape) do assert(y.shape[i] == s, "output shape") end
    T.testing.assert_close(y, tensor(c.y, c.yshape), { rtol = 1e-10, atol = 1e-9, msg = name .. " y" })
    y:backward(tensor(c.gy, c.yshape))
    T.testing.assert_close(x.grad, c.gx and tensor(c.gx, c.xshape), { rtol = 1e-10, atol = 1e-9, msg = name .. " gx" })
    T.testing.assert_close(w.grad, tensor(c.gw, c.wshape), { rtol = 1e-10, atol = 1e-9, msg = name .. " gw" })
    if b then T.testing.assert_close(b.grad, tensor(c.gb, { #c.gb }), { rtol = 1e-10, atol = 1e-9, msg = name .. " gb" }) end
  end
  tests["matches PyTorch: " .. name .. " (f32 forward)"] = function()
    local y = run(c, "f32", false)
    assert(y.dtype == "f32")
    T.testing.assert_close(y, tensor(c.y, c.yshape), { rtol = 1e-5, atol = 1e-4, msg = name })
  end
end

tests["gradcheck conv2d: stride, padding, dilation, groups, bias"] = function()
  local function mk(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end
  local x, w, b = mk(1, 4, 5, 4), mk(4, 2, 3, 2), mk(4)
  T.testing.gradcheck(function(a, k, c)
    return F.conv2d(a, k, c, { stride = { 2, 1 }, padding = { 1, 2 }, dilation = { 1, 2 }, groups = 2 })
  end, { x, w, b })
  local x1, w1 = mk(1, 3, 4, 4), mk(2, 3, 1, 1)
  T.testing.gradcheck(function(a, k) return F.conv2d(a, k) end, { x1, w1 })
end

tests["gradcheck conv_transpose2d: stride, output_padding, dilation, groups, bias"] = function()
  local function mk(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end
  local x, w, b = mk(1, 4, 3, 3), mk(4, 1, 3, 2), mk(2)
  T.testing.gradcheck(function(a, k, c)
    return F.conv_transpose2d(a, k, c, { stride = 2, padding = { 1, 0 }, output_padding = { 1, 0 },
      dilation = { 1, 2 }, groups = 2 })
  end, { x, w, b })
end

tests["only the inputs that require grad get one"] = function()
  local x = T.randn({ 2, 3, 5, 5 }, { dtype = "f64" })
  local w = T.randn({ 4, 3, 3, 3 }, { dtype = "f64", requires_grad = true })
  F.conv2d(x, w, nil, { padding = 1 }):sum():backward()
  assert(x.grad == nil and w.grad ~= nil)
  local x2 = T.randn({ 2, 3, 5, 5 }, { dtype = "f64", requires_grad = true })
  local w2 = T.randn({ 4, 3, 3, 3 }, { dtype = "f64" })
  local b2 = T.randn({ 4 }, { dtype = "f64", requires_grad = true })
  F.conv2d(x2, w2, b2):sum():backward()
  assert(x2.grad ~= nil and w2.grad == nil)
  T.testing.assert_close(b2.grad, T.full({ 4 }, 2 * 3 * 3, { dtype = "f64" }))
  assert(not T.no_grad(function() return F.conv2d(x2, w2, b2) end).requires_grad)
end

tests["non-contiguous input and weight give the contiguous result"] = function()
  local xs = T.randn({ 3, 6, 7, 4 }, { dtype = "f64" })   -- N, H, W, C
  local x = xs:permute(1, 4, 2, 3)                          -- N, C, H, W view
  assert(not x:is_contiguous())
  local wbig = T.randn({ 5, 4, 3, 5 }, { dtype = "f64" })
  local w = wbig:narrow(4, 2, 3)                            -- [5, 4, 3, 3] view
  local o = { stride = 2, padding = 1 }
  T.testing.assert_close(F.conv2d(x, w, nil, o), F.conv2d(x:contiguous(), w:contiguous(), nil, o), { rtol = 1e-12, atol = 1e-12 })
  local wt = T.randn({ 4, 2, 3, 3 }, { dtype = "f64" })
  T.testing.assert_close(F.conv_transpose2d(x, wt, nil, o), F.conv_transpose2d(x:contiguous(), wt, nil, o),
    { rtol = 1e-12, atol = 1e-12 })
  -- a gradient that reaches the conv as a broadcast (stride-0) tensor
  local xg = x:detach():requires_grad_(true)
  F.conv2d(xg, w, nil, o):sum():backward()
  local xc = x:contiguous():requires_grad_(true)
  F.conv2d(xc, w:contiguous(), nil, o):sum():backward()
  T.testing.assert_close(xg.grad, xc.grad, { rtol = 1e-12, atol = 1e-12 })
end

tests["batch larger than the thread count, and a batch of one"] = function()
  local x = T.randn({ 5, 3, 6, 6 }, { dtype = "f64", requires_grad = true })
  local w = T.randn({ 4, 3, 3, 3 }, { dtype = "f64", requires_grad = true })
  local y = F.conv2d(x, w, nil, { padding = 1 })
  local gy = T.randn(y.shape, { dtype = "f64" })
  y:backward(gy)
  local gw = w.grad:clone()
  local sum = nil
  for i = 1, 5 do
    local xi = x:detach():narrow(1, i, 1)
    local wi = w:detach():requires_grad_(true)
    local yi = F.conv2d(xi, wi, nil, { padding = 1 })
    T.testing.assert_close(yi, y:detach():narrow(1, i, 1), { rtol = 1e-12, atol = 1e-12 })
    yi:backward(gy:narrow(1, i, 1))
    sum = sum and sum + wi.grad or wi.grad
  end
  T.testing.assert_close(gw, sum, { rtol = 1e-10, atol = 1e-10 })
end

-- conv2d as a sum over kernel taps of [O, C] @ shifted input: an independent reference
-- (pad, narrow, matmul), differentiable through their own rules
local function conv_by_taps(x, w, pad, stride)
  local N, C, H, W = table.unpack(x.shape)
  local O, _, kh, kw = table.unpack(w.shape)
  local OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
  local xp = F.pad(x, { pad, pad + stride, pad, pad + stride }) -- room to take OH * stride rows
  local y = nil
  for i = 1, kh do
    for j = 1, kw do
      local rows = xp:narrow(3, i, OH * stride):narrow(4, j, OW * stride)
      rows = rows:reshape(N, C, OH, stride, OW, stride):narrow(4, 1, 1):narrow(6, 1, 1)
      local term = w:narrow(3, i, 1):narrow(4, j, 1):reshape(O, C):matmul(rows:reshape(N, C, OH * OW))
      y = y and y + term or term
    end
  end
  return y:reshape(N, O, OH, OW)
end

tests["images cut into several bands match a tap-by-tap reference (forward and gradients)"] = function()
  -- a 1 MiB column buffer holds 14 output rows of 16 channels x 3 x 3 x 64 columns of f64
  -- (28 rows of 32 columns), so these images take 3 and 2 bands
  for _, case in ipairs({ { 2, 40, 1 }, { 1, 72, 2 } }) do
    local n, h, stride = table.unpack(case)
    local x = T.randn({ n, 16, h, 64 }, { dtype = "f64", requires_grad = true })
    local w = T.randn({ 3, 16, 3, 3 }, { dtype = "f64", requires_grad = true })
    local y = F.conv2d(x, w, nil, { padding = 1, stride = stride })
    local x2, w2 = x:detach():requires_grad_(true), w:detach():requires_grad_(true)
    local y2 = conv_by_taps(x2, w2, 1, stride)
    T.testing.assert_close(y, y2, { rtol = 1e-10, atol = 1e-10 })
    local gy = T.randn(y.shape, { dtype = "f64" })
    y:backward(gy)
    y2:backward(gy)
    T.testing.assert_close(x.grad, x2.grad, { rtol = 1e-10, atol = 1e-10 })
    T.testing.assert_close(w.grad, w2.grad, { rtol = 1e-10, atol = 1e-9 })
  end
end

tests["stride 1 at the input's width (one run per tap) matches padding done by F.pad"] = function()
  -- padding the input first gives a narrower output, which takes the row-by-row path: an
  -- independent reference for every column clipped at an edge, dilated rows and odd sizes
  local cases = { -- x shape, w shape, padding, dilation, groups
    { { 2, 3, 7, 5 }, { 4, 3, 3, 3 }, { 1, 1 }, { 1, 1 }, 1 },
    { { 1, 2, 6, 4 }, { 3, 2, 3, 5 }, { 1, 2 }, { 1, 1 }, 1 },
    { { 2, 2, 9, 6 }, { 2, 2, 3, 3 }, { 2, 1 }, { 2, 1 }, 1 },
    { { 1, 4, 5, 3 }, { 4, 2, 5, 5 }, { 2, 2 }, { 1, 1 }, 2 },
    { { 2, 3, 1, 8 }, { 2, 3, 3, 3 }, { 1, 1 }, { 1, 1 }, 1 },
    { { 1, 2, 4, 6 }, { 3, 2, 1, 3 }, { 0, 1 }, { 1, 1 }, 1 },
    -- rows of 16 x 5 x 5 x 128 f64 columns (400 KiB) overflow a band: bands of one row, whose
    -- top and bottom taps read only padding
    { { 1, 16, 5, 128 }, { 4, 16, 5, 5 }, { 2, 2 }, { 1, 1 }, 1 },
  }
  for _, dtype in ipairs({ "f64", "f32" }) do
    local tol = dtype == "f64" and 1e-10 or 1e-4
    for k, c in ipairs(cases) do
      local x = T.randn(c[1], { dtype = dtype, requires_grad = true })
      local w = T.randn(c[2], { dtype = dtype, requires_grad = true })
      local b = T.randn({ c[2][1] }, { dtype = dtype, requires_grad = true })
      local y = F.conv2d(x, w, b, { padding = c[3], dilation = c[4], groups = c[5] })
      assert(y.shape[4] == c[1][4], "case " .. k .. ": the output is as wide as the input")
      local x2, w2, b2 = x:detach():requires_grad_(true), w:detach():requires_grad_(true), b:detach():requires_grad_(true)
      local y2 = F.conv2d(F.pad(x2, { c[3][2], c[3][2], c[3][1], c[3][1] }), w2, b2, { dilation = c[4], groups = c[5] })
      T.testing.assert_close(y, y2, { rtol = tol, atol = tol, msg = dtype .. " case " .. k .. " y" })
      local gy = T.randn(y.shape, { dtype = dtype })
      y:backward(gy)
      y2:backward(gy)
      T.testing.assert_close(x.grad, x2.grad, { rtol = tol, atol = tol, msg = dtype .. " case " .. k .. " gx" })
      T.testing.assert_close(w.grad, w2.grad, { rtol = tol, atol = tol, msg = dtype .. " case " .. k .. " gw" })
      T.testing.assert_close(b.grad, b2.grad, { rtol = tol, atol = tol, msg = dtype .. " case " .. k .. " gb" })
    end
  end
end

-- f32 convolutions (forward, and gradients of a fixed gy) against the same in f64, which runs
-- im2col + GEMM; cases: { x shape, w shape, padding, bias }
local function f32_against_f64(cases)
  for k, c in ipairs(cases) do
    local x = T.randn(c[1], { dtype = "f64" })
    local w = T.randn(c[2], { dtype = "f64" })
    local b = c[4] and T.randn({ c[2][1] }, { dtype = "f64" }) or nil
    local function grads(dtype)
      local xs, ws = x:to(dtype):detach():requires_grad_(true), w:to(dtype):detach():requires_grad_(true)
      local bs = b and b:to(dtype):detach():requires_grad_(true)
      local y = F.conv2d(xs, ws, bs, { padding = c[3] })
      y:backward(T.linspace(-1, 1, y:numel(), { dtype = dtype }):view(y.shape))
      return y, xs.grad, ws.grad, bs and bs.grad
    end
    local ref_out = { grads("f64") }
    local got = { grads("f32") }
    for i, what in ipairs({ "y", "gx", "gw", "gb" }) do
      if ref_out[i] then
        assert(got[i].dtype == "f32")
        T.testing.assert_close(got[i]:to("f64"), ref_out[i], { rtol = 1e-4, atol = 1e-4, msg = "case " .. k .. " " .. what })
      end
    end
  end
end

tests["f32 stride 1, one group: the direct kernel against f64 (forward and gradients)"] = function()
  -- f32 convolutions with stride 1, no dilation, one group and at least 64 products per output
  -- run the direct kernel (the input gradient too: a convolution with the flipped weight);
  -- f64 runs im2col + GEMM, the reference here. Odd sizes: rows of 16-pixel tiles with a
  -- remainder, images at most 8 wide (two-row tiles, an odd row count), output channels
  -- not a multiple of 8, padding 0 and uneven, 5x5 and 1x7 kernels, no bias
  local cases = { -- x shape, w shape, padding, bias
    { { 3, 16, 9, 21 }, { 11, 16, 3, 3 }, { 1, 1 }, true },
    { { 2, 64, 7, 7 }, { 8, 64, 3, 3 }, { 1, 1 }, true },
    { { 1, 8, 5, 8 }, { 17, 8, 3, 3 }, { 0, 2 }, false },
    { { 2, 4, 6, 35 }, { 5, 4, 5, 5 }, { 2, 1 }, true },
    { { 5, 10, 4, 12 }, { 3, 10, 1, 7 }, { 0, 3 }, true },
    { { 1, 9, 3, 3 }, { 2, 9, 3, 3 }, { 2, 2 }, true },
  }
  f32_against_f64(cases)
  -- a non-contiguous input, and conv_transpose2d with stride 1 (whose forward is the input
  -- gradient's kernel)
  local xs = T.randn({ 2, 9, 10, 16 }, { dtype = "f64" })
  local x = xs:permute(1, 4, 2, 3)
  local w = T.randn({ 6, 16, 3, 3 }, { dtype = "f64" })
  T.testing.assert_close(F.conv2d(x:to("f32"), w:to("f32"), nil, { padding = 1 }):to("f64"),
    F.conv2d(x, w, nil, { padding = 1 }), { rtol = 1e-4, atol = 1e-4, msg = "non-contiguous" })
  local xt, wt = T.randn({ 3, 16, 6, 10 }, { dtype = "f64" }), T.randn({ 16, 5, 3, 3 }, { dtype = "f64" })
  T.testing.assert_close(F.conv_transpose2d(xt:to("f32"), wt:to("f32"), nil, { padding = 1 }):to("f64"),
    F.conv_transpose2d(xt, wt, nil, { padding = 1 }), { rtol = 1e-4, atol = 1e-4, msg = "conv_transpose2d" })
end

tests["many input channels: bands of at least 256 pixels, small images on im2col (f32 against f64)"] = function()
  -- C * kh * kw of 2048 and more: the column matrix's bands hold at least 256 output pixels
  -- (here two bands, of 7 and 6 rows of 29, in f32 and f64 alike), and images
  -- under 32x32 stay on im2col + GEMM in f32; odd sizes, uneven padding, no bias
  f32_against_f64({
    { { 2, 230, 13, 29 }, { 20, 230, 3, 3 }, { 1, 1 }, true },
    { { 1, 100, 11, 31 }, { 9, 100, 5, 5 }, { 2, 1 }, false },
  })
end

tests["the tiled kernel (3x3, 32x32 and larger, 128 channels or more): f32 against f64, 1 and 2 threads"] = function()
  -- f32 3x3 convolutions with stride 1, one group, outputs of at least 1,024 pixels and 128 or
  -- more input channels run the tiled kernel, and so does the input gradient when the output
  -- has 128 channels or more (a convolution of gy with the flipped weight). Rows a multiple of
  -- 32 wide are computed in place (32 and 64 wide here), others on the padded grid through a
  -- scratch (35 and 38 wide); output channels not a multiple of 12 (13, 131, 14, 140, and 128
  -- and 130 for the input gradients), input channels not a multiple of its 32-channel chunks,
  -- padding 0 and uneven, a batch of two, no bias
  local cases = {
    { { 1, 130, 33, 35 }, { 13, 130, 3, 3 }, { 1, 1 }, true },
    { { 1, 128, 32, 32 }, { 131, 128, 3, 3 }, { 1, 1 }, false },
    { { 2, 129, 34, 36 }, { 14, 129, 3, 3 }, { 0, 2 }, true },
    { { 2, 130, 33, 64 }, { 140, 130, 3, 3 }, { 1, 1 }, true },
  }
  local threads = T.get_num_threads()
  for _, nt in ipairs({ 1, 2 }) do
    T.set_num_threads(nt)
    local ok, err = pcall(f32_against_f64, cases)
    T.set_num_threads(threads)
    if not ok then error(nt .. " threads: " .. tostring(err), 0) end
  end
end

tests["f32 weight gradient of the direct kernel against f64, random inputs, 1 and 2 threads"] = function()
  -- the direct kernel's weight gradient sums 16-pixel vectors of the flat output plane over
  -- groups of images (8 images of 8x8) split between threads: batches that leave a short
  -- group and an uneven split, planes that end in a partial vector (7x7, 5x9), output channels
  -- not a multiple of 8, tap counts not a multiple of 3 (1x7, 5x5), padding 0 and uneven
  local cases = { -- x shape, w shape, padding
    { { 11, 64, 8, 8 }, { 13, 64, 3, 3 }, { 1, 1 } },
    { { 3, 16, 7, 7 }, { 8, 16, 3, 3 }, { 1, 1 } },
    { { 5, 10, 5, 9 }, { 6, 10, 1, 7 }, { 0, 3 } },
    { { 2, 4, 9, 6 }, { 3, 4, 5, 5 }, { 2, 1 } },
    { { 1, 8, 6, 20 }, { 9, 8, 3, 3 }, { 0, 0 } },
  }
  local threads = T.get_num_threads()
  for k, c in ipairs(cases) do
    local x = T.randn(c[1], { dtype = "f64" })
    local w = T.randn(c[2], { dtype = "f64" })
    local y = F.conv2d(x, w, nil, { padding = c[3] })
    local gy = T.randn(y.shape, { dtype = "f64" })
    local function grad_w(dtype)
      local ws = w:to(dtype):detach():requires_grad_(true)
      F.conv2d(x:to(dtype), ws, nil, { padding = c[3] }):backward(gy:to(dtype))
      return ws.grad:to("f64")
    end
    local ref = grad_w("f64")
    for _, nt in ipairs({ 1, 2 }) do
      T.set_num_threads(nt)
      local ok, err = pcall(T.testing.assert_close, grad_w("f32"), ref,
        { rtol = 1e-4, atol = 1e-3, msg = "case " .. k .. ", " .. nt .. " threads" })
      T.set_num_threads(threads)
      if not ok then error(err, 0) end
    end
  end
end

tests["f32 3x3 with many channels: Winograd F(2x2, 3x3) against f64, 1 and 2 threads"] = function()
  -- 3x3 kernels with 32 or more input and output channels (and C * O >= 1536) run Winograd's
  -- F(2x2, 3x3): blocks of 32 tiles gathered across images, masks for padding and for the last
  -- tiles of odd sizes. The input gradient runs it too, and the weight gradient (vectors of 16
  -- input channels, tiles of 6 output channels; on small images from 32 input channels) when
  -- the batch has an image per thread. Cases: odd images whose tiles cross images (7x9), output channels not a multiple of
  -- 8 or 6, input channels not a multiple of 16 or 64, batch 1 (one block, its channels split
  -- between threads), padding 0, 2 and uneven, 1-pixel rows, more blocks than threads.
  local cases = { -- x shape, w shape, padding, bias
    { { 3, 32, 7, 9 }, { 50, 32, 3, 3 }, { 1, 1 }, true },
    { { 1, 40, 8, 8 }, { 64, 40, 3, 3 }, { 1, 1 }, true },
    { { 2, 33, 5, 6 }, { 49, 33, 3, 3 }, { 0, 2 }, false },
    { { 5, 48, 1, 3 }, { 40, 48, 3, 3 }, { 1, 1 }, true },
    { { 1, 32, 3, 3 }, { 56, 32, 3, 3 }, { 2, 2 }, true },
    { { 7, 64, 8, 8 }, { 64, 64, 3, 3 }, { 1, 1 }, true },
    { { 2, 80, 6, 5 }, { 9, 80, 3, 3 }, { 1, 1 }, false }, -- the weight gradient only
  }
  local threads = T.get_num_threads()
  for _, nt in ipairs({ 1, 2 }) do
    T.set_num_threads(nt)
    local ok, err = pcall(f32_against_f64, cases)
    T.set_num_threads(threads)
    if not ok then error(nt .. " threads: " .. tostring(err), 0) end
  end
end

tests["f32 Winograd convolution: finite differences of its forward against its gradients"] = function()
  -- a convolution is linear in x and in w, so with L = <gy, conv(x, w)> the central difference
  -- (L(x + v) - L(x - v)) / 2 equals <gx, v> up to rounding, for any step v: an f64-summed
  -- finite-difference check of the f32 kernels (forward, input and weight gradients) on their own
  for k, c in ipairs({ { { 3, 32, 7, 9 }, { 50, 32, 3, 3 }, { 1, 1 } }, { { 1, 48, 5, 4 }, { 33, 48, 3, 3 }, { 0, 2 } } }) do
    local x, w = T.randn(c[1]), T.randn(c[2]) * 0.2
    local y = F.conv2d(x, w, nil, { padding = c[3] })
    local gy = T.randn(y.shape)
    local xs, ws = x:detach():requires_grad_(true), w:detach():requires_grad_(true)
    F.conv2d(xs, ws, nil, { padding = c[3] }):backward(gy)
    local function L(a, b) return (F.conv2d(a, b, nil, { padding = c[3] }):to("f64") * gy:to("f64")):sum():item() end
    local vx, vw = T.randn(c[1]), T.randn(c[2]) * 0.2
    local dx = (L(x + vx, w) - L(x - vx, w)) / 2
    local dw = (L(x, w + vw) - L(x, w - vw)) / 2
    local gx = (xs.grad:to("f64") * vx:to("f64")):sum():item()
    local gw = (ws.grad:to("f64") * vw:to("f64")):sum():item()
    assert(math.abs(dx - gx) <= 1e-4 * (1 + math.abs(gx)), ("case %d: gx %.8g, differences %.8g"):format(k, gx, dx))
    assert(math.abs(dw - gw) <= 1e-4 * (1 + math.abs(gw)), ("case %d: gw %.8g, differences %.8g"):format(k, gw, dw))
  end
end

tests["f16 and bf16 go through f32"] = function()
  local x = T.randn({ 2, 3, 6, 6 })
  local w = T.randn({ 4, 3, 3, 3 }) * 0.2
  local b = T.randn({ 4 })
  local y32 = F.conv2d(x, w, b, { padding = 1 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local y = F.conv2d(x:to(dt), w:to(dt), b:to(dt), { padding = 1 })
    assert(y.dtype == dt)
    T.testing.assert_close(y, y32, { rtol = 0.05, atol = 0.05, msg = dt })
    local xt = x:to(dt):requires_grad_(true)
    F.conv_transpose2d(xt, w:permute(2, 1, 3, 4):to(dt), nil, { padding = 1 }):sum():backward()
    assert(xt.grad.dtype == dt)
  end
end

tests["zero-size batch"] = function()
  local x = T.zeros({ 0, 3, 5, 5 }, { requires_grad = true })
  local w = T.randn({ 2, 3, 3, 3 }, { requires_grad = true })
  local y = F.conv2d(x, w, nil, { padding = 1 })
  assert(y.shape[1] == 0 and y.shape[2] == 2)
  y:sum():backward()
  T.testing.assert_close(w.grad, T.zeros({ 2, 3, 3, 3 }))
end

tests["errors name the op and the shapes"] = function()
  local x = T.randn({ 2, 3, 8, 8 })
  raises("conv2d: input [2 x 3 x 8 x 8] has 3 channels but weight [4 x 5 x 3 x 3] expects 5",
    F.conv2d, x, T.randn({ 4, 5, 3, 3 }))
  raises("conv2d: input [2 x 3 x 8 x 8] has 3 channels, not divisible by groups = 2",
    F.conv2d, x, T.randn({ 4, 1, 3, 3 }), nil, { groups = 2 })
  raises("conv2d: weight [3 x 2 x 3 x 3] has 3 output channels, not divisible by groups = 2",
    F.conv2d, T.randn({ 2, 4, 8, 8 }), T.randn({ 3, 2, 3, 3 }), nil, { groups = 2 })
  raises("conv2d: output size [2 x 4 x 0 x 0] is not positive (input [2 x 3 x 2 x 2], weight [4 x 3 x 3 x 3])",
    F.conv2d, T.randn({ 2, 3, 2, 2 }), T.randn({ 4, 3, 3, 3 }))
  raises("conv2d: bias [3] does not match the 4 output channels",
    F.conv2d, x, T.randn({ 4, 3, 3, 3 }), T.randn({ 3 }))
  raises("conv2d: expected a 4-d input [N, C, H, W], got [3 x 8 x 8]", F.conv2d, T.randn({ 3, 8, 8 }), T.randn({ 4, 3, 3, 3 }))
  raises("conv2d: expected floating point input, weight and bias of one dtype, got f32, f64 and none",
    F.conv2d, x, T.randn({ 4, 3, 3, 3 }, { dtype = "f64" }))
  raises("conv2d: stride and dilation must be positive", F.conv2d, x, T.randn({ 4, 3, 3, 3 }), nil, { stride = 0 })
  raises("conv_transpose2d: input [2 x 3 x 8 x 8] has 3 channels but weight [4 x 2 x 3 x 3] expects 4",
    F.conv_transpose2d, x, T.randn({ 4, 2, 3, 3 }))
  raises("conv_transpose2d: output_padding (2 x 2) must be smaller than stride (2 x 2) or dilation (1 x 1)",
    F.conv_transpose2d, x, T.randn({ 3, 2, 3, 3 }), nil, { stride = 2, output_padding = 2 })
end

return tests
