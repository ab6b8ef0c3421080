-- test_matmul.lua: matmul in all its forms (1-d . 1-d, 2-d @ 1-d, 1-d @ 2-d, batched with
-- broadcasting, transposed and strided operands), bmm, linear and outer against PyTorch
-- (tests/ref/core_ref.lua), with f64 gradchecks and the size-mismatch errors.
local T = require "tocha"
local shape_is = T.testing.shape_is
local REF = dofile(T.testing.path("ref/core_ref.lua")).matmul
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

local errors = T.testing.assert_raises

local function operands(c, dtype)
  return T.tensor(c.a, { dtype = dtype or "f64" }):view(c.a_shape), T.tensor(c.b, { dtype = dtype or "f64" }):view(c.b_shape)
end

-- the same values with other strides: the last two dims stored transposed
local function transposed_copy(x)
  if x:dim() < 2 then return x end
  return x:transpose(-1, -2):contiguous():transpose(-1, -2)
end

local FN = { bmm = T.bmm, outer = T.outer }

return {
  ["matmul forms match PyTorch"] = function()
    for name, c in pairs(REF) do
      if c.a_shape then
        local f = FN[name] or T.matmul
        local a, b = operands(c)
        local y = f(a, b)
        assert(shape_is(y, c.shape), name .. ": shape [" .. table.concat(y.shape, ", ") .. "]")
        close(y, c.out, { rtol = 1e-12, atol = 1e-12, msg = name })
        close(f(transposed_copy(a), transposed_copy(b)), c.out, { rtol = 1e-12, atol = 1e-12, msg = name .. " transposed" })
        local a32, b32 = operands(c, "f32")
        close(f(a32, b32), c.out, { rtol = 1e-5, atol = 1e-5, msg = name .. " f32" })
        assert(f(a32, b32).dtype == "f32")
      end
    end
    local a, b = operands(REF.mm)
    close(a:matmul(b), REF.mm.out, { rtol = 1e-12 })
    local d = REF.dot
    assert(T.matmul(operands(d)):dim() == 0)
  end,

  ["strided operands BLAS cannot read directly are copied"] = function()
    local m = T.randn(6, 8, { dtype = "f64" })
    local w = T.randn(8, 5, { dtype = "f64" })
    local expect = function(a, b) return T.matmul(a:contiguous(), b:contiguous()) end
    local cases = {
      { m:narrow(2, 2, 4), w:narrow(1, 3, 4) },                  -- row strides larger than the rows
      { m:t():narrow(1, 1, 4), m:narrow(2, 1, 3) },              -- column-major a
      { m:select(2, 3), w:narrow(1, 1, 6) },                     -- a 1-d column: stride 8
      { m[2]:view(1, 8), w },                                    -- a single row
      { m:narrow(2, 1, 1), T.randn(1, 4, { dtype = "f64" }) },   -- K = 1 with stride 8
      { T.randn(3, 1, { dtype = "f64" }):expand(3, 4), w:narrow(1, 1, 4) }, -- stride-0 rows
      { m[1]:view(2, 4):t(), T.randn(2, 3, { dtype = "f64" }):t():t() },
      { m:view(2, 3, 8):transpose(1, 2), w },                    -- batched, batch stride 8
      { m:view(2, 3, 8), w:unsqueeze(1):expand(2, 8, 5) },       -- batch stride 0
    }
    for i, c in ipairs(cases) do
      close(T.matmul(c[1], c[2]), expect(c[1], c[2]), { rtol = 1e-12, atol = 1e-12, msg = "case " .. i })
    end
    -- half precision goes through f32
    local h = T.randn(3, 4):to("bf16")
    local g = T.randn(4, 2):to("bf16")
    close(T.matmul(h, g), T.matmul(h:float(), g:float()):to("bf16"), { rtol = 0, atol = 0 })
    assert(T.matmul(h, g).dtype == "bf16")
  end,

  ["empty inner and outer dimensions"] = function()
    local z = T.matmul(T.ones(2, 0), T.ones(0, 3))
    assert(shape_is(z, { 2, 3 }))
    close(z, T.zeros(2, 3)) -- not garbage: the sum over nothing is 0
    assert(shape_is(T.matmul(T.ones(0, 4), T.ones(4, 3)), { 0, 3 }))
    assert(shape_is(T.matmul(T.ones(2, 4), T.ones(4, 0)), { 2, 0 }))
    assert(shape_is(T.bmm(T.ones(0, 2, 3), T.ones(0, 3, 4)), { 0, 2, 4 }))
    assert(T.matmul(T.ones(0), T.ones(0)):item() == 0)
    local a = T.zeros(2, 0, { dtype = "f64", requires_grad = true })
    local b = T.zeros(0, 3, { dtype = "f64", requires_grad = true })
    T.matmul(a, b):sum():backward()
    assert(shape_is(a.grad, { 2, 0 }) and shape_is(b.grad, { 0, 3 }))
  end,

  ["linear and outer"] = function()
    local l = REF.linear
    local x = T.tensor(l.x, { dtype = "f64" }):view(2, 3, 4)
    local w = T.tensor(l.w, { dtype = "f64" }):view(5, 4)
    local b = T.tensor(l.b, { dtype = "f64" })
    close(T.linear(x, w, b), l.out, { rtol = 1e-12 })
    close(T.linear(x, w), l.out_nobias, { rtol = 1e-12 })
    assert(shape_is(T.linear(x, w, b), { 2, 3, 5 }))
    close(T.linear(x:transpose(1, 2):contiguous():transpose(1, 2), w:t():contiguous():t(), b), l.out, { rtol = 1e-12 })
    assert(shape_is(T.outer(T.ones(3), T.ones(4)), { 3, 4 }))
  end,

  ["matmul gradients (f64 gradcheck)"] = function()
    local function r(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end
    local cases = {
      dot = { T.matmul, r(4), r(4) }, mv = { T.matmul, r(3, 4), r(4) }, vm = { T.matmul, r(4), r(4, 5) },
      mm = { T.matmul, r(3, 4), r(4, 5) }, batched_2d = { T.matmul, r(2, 3, 4), r(4, 5) },
      ["2d_batched"] = { T.matmul, r(3, 4), r(2, 4, 5) }, broadcast = { T.matmul, r(2, 1, 3, 4), r(5, 4, 2) },
      batched_vec = { T.matmul, r(2, 3, 4), r(4) }, vec_batched = { T.matmul, r(4), r(2, 4, 5) },
      bmm = { T.bmm, r(2, 3, 4), r(2, 4, 5) }, outer = { T.outer, r(3), r(4) },
      transposed = { function(a, b) return T.matmul(a:t(), b:transpose(2, 3)) end, r(4, 3), r(2, 5, 4) },
      strided = { function(a, b) return T.matmul(a:narrow(2, 2, 4), b:select(2, 2)) end, r(3, 6), r(4, 3) },
      linear = { function(a, w, b) return T.linear(a, w, b) end, r(2, 3, 4), r(5, 4), r(5) },
      linear_nobias = { function(a, w) return T.linear(a, w) end, r(3, 4), r(2, 4) },
    }
    for name, c in pairs(cases) do
      local f = c[1]
      local ok, msg = gradcheck(f, { table.unpack(c, 2) }, { raise = false })
      assert(ok, name .. ": " .. tostring(msg))
    end
    -- only one side needs grad
    local a, b = r(3, 4), T.randn(4, 2, { dtype = "f64" })
    assert(gradcheck(function(p) return T.matmul(p, b) end, { a }))
    assert(gradcheck(function(p) return T.matmul(b:t(), p:t()) end, { a }))
  end,

  ["linear with a bias: one GEMM onto the bias rows, against matmul + add in f64"] = function()
    -- on the CPU, linear with a 1-d bias starts its output as the bias and lets the GEMM add
    -- onto it, with a backward of its own; the reference is the unfused composition in f64
    local function r(shape, dtype) return T.randn(shape, { dtype = dtype or "f64" }) end
    local big = r({ 7, 9 })
    local cases = { -- x, w, b (any strides), tolerance for f32
      { r({ 24, 64, 64 }), r({ 256, 64 }), r({ 256 }) },                  -- the demo's shape
      { r({ 5, 3 }):t(), r({ 7, 5 }), big:select(2, 4) },                  -- transposed x, strided b
      { r({ 6 }), r({ 4, 6 }):t():contiguous():t(), r({ 4 }) },           -- 1-d x, transposed w
      { r({ 2, 3, 5, 11 }):narrow(4, 2, 9), r({ 13, 9 }), r({ 13 }) },  -- strided rows
      { r({ 0, 4 }), r({ 3, 4 }), r({ 3 }) },                            -- no rows
    }
    for k, c in ipairs(cases) do
      local gy = nil
      local function run(dtype, fused)
        local x = c[1]:to(dtype):detach():requires_grad_(true)
        local w = c[2]:to(dtype):detach():requires_grad_(true)
        local b = c[3]:to(dtype):detach():requires_grad_(true)
        local y = fused and T.linear(x, w, b) or T.matmul(x, w:t()) + b
        gy = gy or T.linspace(-1, 1, y:numel(), { dtype = "f64" }):view(y.shape)
        y:backward(gy:to(dtype), { retain_graph = true })
        y:backward(gy:to(dtype)) -- the gradients accumulate
        return { y, x.grad, w.grad, b.grad }
      end
      local want = run("f64", false)
      for _, dtype in ipairs({ "f64", "f32" }) do
        local got = run(dtype, true)
        local tol = dtype == "f64" and 1e-12 or 1e-4
        for i, what in ipairs({ "y", "gx", "gw", "gb" }) do
          assert(got[i].dtype == dtype and shape_is(got[i], want[i].shape), k .. " " .. what .. " shape")
          close(got[i]:to("f64"), want[i], { rtol = tol, atol = tol, msg = dtype .. " case " .. k .. " " .. what })
        end
      end
    end
    local x, w, b = r({ 3, 4 }), r({ 2, 4 }), big:select(2, 1):narrow(1, 1, 2)
    for _, t in ipairs({ x, w, b }) do t:requires_grad_(true) end
    assert(gradcheck(T.linear, { x, w, b }))
    assert(T.linear(x, w, b).grad_fn == "LinearBackward")
    assert(not T.no_grad(function() return T.linear(x, w, b) end).requires_grad)
  end,

  ["short f32 products (the AVX-512 kernel) against f64: every layout, 1 and 2 threads"] = function()
    -- f32 products with op(B) at most 256 columns and 512 KiB and 2^21 or more multiply-adds run
    -- tocha's own kernel (6 x 64 tiles, threads over rows; see gemm.c for the rule): rows not a
    -- multiple of 6, columns not a multiple of 16 or 64, A and B in either layout, a batch, a
    -- transposed A as in a weight gradient
    local cases = { -- a shape, b shape
      { { 1100, 70 }, { 70, 250 } },
      { { 2, 700, 130 }, { 130, 200 } },
      { { 4100, 64 }, { 64, 65 } },
      { { 1030, 33 }, { 33, 70 } },
    }
    local threads = T.get_num_threads()
    for _, nt in ipairs({ 1, 2 }) do
      T.set_num_threads(nt)
      local ok, err = pcall(function()
        for k, c in ipairs(cases) do
          local a, b = T.randn(c[1], { dtype = "f64" }), T.randn(c[2], { dtype = "f64" })
          local want = T.matmul(a, b)
          for _, la in ipairs({ false, true }) do
            for _, lb in ipairs({ false, true }) do
              local a32, b32 = a:to("f32"), b:to("f32")
              if la then a32 = transposed_copy(a32) end
              if lb then b32 = transposed_copy(b32) end
              close(T.matmul(a32, b32):to("f64"), want, { rtol = 1e-4, atol = 1e-4,
                msg = ("case %d, a %s, b %s, %d threads"):format(k, la and "transposed" or "rows", lb and "transposed" or "rows", nt) })
            end
          end
        end
        local g, x = T.randn({ 1537, 257 }, { dtype = "f64" }), T.randn({ 1537, 61 }, { dtype = "f64" })
        close(T.matmul(g:to("f32"):t(), x:to("f32")):to("f64"), T.matmul(g:t(), x), { rtol = 1e-4, atol = 1e-3, msg = "a^T, " .. nt .. " threads" })
      end)
      T.set_num_threads(threads)
      if not ok then error(err, 0) end
    end
  end,

  ["linear 64 -> 256 at batch x tokens in f32 (the short-product kernel): against f64 and by finite differences"] = function()
    -- the forward onto the bias rows (C read: beta 1), the input gradient gy @ w and the weight
    -- gradient gy^T @ x all run the kernel; linear in x and in w, so central differences with
    -- any step equal the gradients' inner products up to rounding
    local x, w, b = T.randn({ 24, 64, 64 }, { dtype = "f64" }), T.randn({ 256, 64 }, { dtype = "f64" }) * 0.2,
      T.randn({ 256 }, { dtype = "f64" })
    local gy = T.randn({ 24, 64, 256 }, { dtype = "f64" })
    local function run(dt)
      local xs, ws, bs = x:to(dt):detach():requires_grad_(true), w:to(dt):detach():requires_grad_(true),
        b:to(dt):detach():requires_grad_(true)
      local y = T.linear(xs, ws, bs)
      y:backward(gy:to(dt))
      return y:to("f64"), xs.grad:to("f64"), ws.grad:to("f64"), bs.grad:to("f64")
    end
    local want, got = { run("f64") }, { run("f32") }
    for i, what in ipairs({ "y", "gx", "gw", "gb" }) do
      close(got[i], want[i], { rtol = 1e-4, atol = 1e-3, msg = what })
    end
    local x32, w32, b32, gy64 = x:to("f32"), w:to("f32"), b:to("f32"), gy
    local function L(xx, ww) return (T.linear(xx, ww, b32):to("f64") * gy64):sum():item() end
    local vx, vw = T.randn({ 24, 64, 64 }), T.randn({ 256, 64 }) * 0.2
    local dx, dw = (L(x32 + vx, w32) - L(x32 - vx, w32)) / 2, (L(x32, w32 + vw) - L(x32, w32 - vw)) / 2
    local gx, gw = (got[2] * vx:to("f64")):sum():item(), (got[3] * vw:to("f64")):sum():item()
    assert(math.abs(dx - gx) <= 1e-4 * (1 + math.abs(gx)), ("gx %.8g, differences %.8g"):format(gx, dx))
    assert(math.abs(dw - gw) <= 1e-4 * (1 + math.abs(gw)), ("gw %.8g, differences %.8g"):format(gw, dw))
  end,

  ["size and dtype mismatches are errors naming the op"] = function()
    local x = T.zeros(4, 3)
    errors("matmul: size mismatch [4 x 3] @ [4 x 3]", T.matmul, x, x)
    errors("matmul: size mismatch [3] @ [4 x 3]", T.matmul, T.zeros(3), x)
    errors("matmul: size mismatch [2 x 3 x 4] @ [5]", T.matmul, T.zeros(2, 3, 4), T.zeros(5))
    errors("matmul: shapes [2] and [3] cannot be broadcast", T.matmul, T.zeros(2, 4, 3), T.zeros(3, 3, 2))
    errors("matmul: both arguments need at least 1 dimension", T.matmul, T.tensor(1), x)
    errors("matmul: expected floating point tensors of one dtype, got f32 and f64", T.matmul, x, T.zeros(3, 2, { dtype = "f64" }))
    errors("matmul: expected floating point tensors of one dtype, got i64 and i64", T.matmul,
      T.zeros(2, 2, { dtype = "i64" }), T.zeros(2, 2, { dtype = "i64" }))
    errors("bmm: expected 3-d tensors, got 2-d and 2-d", T.bmm, x, x)
    errors("bmm: size mismatch [2 x 4 x 3] @ [3 x 3 x 2]", T.bmm, T.zeros(2, 4, 3), T.zeros(3, 3, 2))
    errors("linear: size mismatch [2 x 3] @ [4 x 5]", T.linear, T.zeros(2, 3), T.zeros(4, 5))
    errors("linear: weight must be 2-d", T.linear, T.zeros(2, 3), T.zeros(3))
    errors("linear: bias of shape [3] does not match weight of shape [4 x 3]", T.linear, x, x, T.zeros(3))
    errors("outer: expected 1-d tensors", T.outer, x, x)
    errors("(tocha.Tensor expected, got number)", T.matmul, x, 3)
  end,
}
