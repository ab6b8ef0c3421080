-- test_elementwise.lua: unary, scalar and broadcasting binary ops against PyTorch
-- (tests/ref/core_ref.lua) on contiguous and strided inputs, their f64 gradchecks, the
-- arithmetic metamethods, broadcasting of size-1, zero-size and 0-d tensors, and in-place ops
-- with the version counter.
local T = require "tocha"
local shape_is = T.testing.shape_is
local REF = dofile(T.testing.path("ref/core_ref.lua"))
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

local errors = T.testing.assert_raises

-- each fixture op as tocha computes it
local UNARY = {
  neg = function(x) return -x end, exp = function(x) return x:exp() end, log = function(x) return x:log() end,
  sqrt = function(x) return x:sqrt() end, rsqrt = function(x) return x:rsqrt() end,
  abs = function(x) return x:abs() end, sin = function(x) return x:sin() end, cos = function(x) return x:cos() end,
  tanh = function(x) return x:tanh() end, sigmoid = function(x) return x:sigmoid() end,
  relu = function(x) return x:relu() end, silu = function(x) return x:silu() end,
  gelu = function(x) return x:gelu() end, gelu_tanh = function(x) return x:gelu({ approximate = "tanh" }) end,
  softplus = function(x) return x:softplus() end, sign = function(x) return x:sign() end,
  reciprocal = function(x) return x:reciprocal() end, square = function(x) return x:square() end,
  leaky_relu = function(x) return x:leaky_relu(0.2) end, clamp = function(x) return x:clamp(-0.5, 1.5) end,
  clamp_lo = function(x) return x:clamp(0.25) end, pow2 = function(x) return x ^ 2 end,
  pow3 = function(x) return x:pow(3) end, pow_half = function(x) return x ^ 0.5 end,
  pow_neg = function(x) return x ^ -1.5 end, rpow = function(x) return 2 ^ x end,
  rsub = function(x) return 3 - x end, rdiv = function(x) return 3 / x end,
  add_scalar = function(x) return x + 2.5 end, mul_scalar = function(x) return x * -1.5 end,
}
local NOT_DIFFERENTIABLE = { sign = true }

local BINARY = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  maximum = function(a, b) return T.maximum(a, b) end, minimum = function(a, b) return a:minimum(b) end,
  eq = function(a, b) return a:eq(b) end, ne = function(a, b) return a:ne(b) end,
  lt = function(a, b) return a:lt(b) end, le = function(a, b) return a:le(b) end,
  gt = function(a, b) return a:gt(b) end, ge = function(a, b) return a:ge(b) end,
}

local function positive(...) return (T.rand({ ... }, { dtype = "f64" }) * 2 + 0.2):requires_grad_() end
local function normal(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end

return {
  ["unary ops match PyTorch (f64 and f32, contiguous and transposed)"] = function()
    local u = REF.unary
    for name, c in pairs(u.ops) do
      local f = assert(UNARY[name], name)
      local vals = c.positive and u.xp or u.x
      local x64 = T.tensor(vals, { dtype = "f64" }):view(u.shape)
      local x32 = x64:float()
      close(f(x64), c.f64, { rtol = 1e-12, atol = 1e-14, msg = name .. " f64" })
      close(f(x32), c.f32, { rtol = 2e-6, atol = 1e-6, msg = name .. " f32" })
      -- a strided input: the transpose of a transposed copy is x again, with other strides
      local xt = x64:t():contiguous():t()
      assert(not xt:is_contiguous())
      close(f(xt), c.f64, { rtol = 1e-12, atol = 1e-14, msg = name .. " strided" })
      close(f(x64:t()), T.tensor(c.f64, { dtype = "f64" }):view(u.shape):t(), { rtol = 1e-12, atol = 1e-14 })
      assert(f(x32).dtype == "f32" and f(x64).dtype == "f64")
    end
  end,

  ["unary ops: f64 gradcheck, contiguous and strided"] = function()
    for name, f in pairs(UNARY) do
      if not NOT_DIFFERENTIABLE[name] then
        local positive_domain = REF.unary.ops[name].positive
        local x = positive_domain and positive(3, 4) or normal(3, 4)
        local ok, msg = gradcheck(f, { x }, { raise = false })
        assert(ok, name .. ": " .. tostring(msg))
        ok, msg = gradcheck(function(a) return f(a:t()) end, { x }, { raise = false })
        assert(ok, name .. " (transposed): " .. tostring(msg))
        ok, msg = gradcheck(function(a) return f(a:narrow(2, 2, 2)) end, { x }, { raise = false })
        assert(ok, name .. " (narrowed): " .. tostring(msg))
      end
    end
    -- derivatives at the edges, where PyTorch picks a value
    local z = T.zeros(3, { dtype = "f64", requires_grad = true })
    z:relu():sum():backward()
    close(z.grad, { 0, 0, 0 })
    z.grad = nil
    z:abs():sum():backward()
    close(z.grad, { 0, 0, 0 })
    z.grad = nil
    local c = T.tensor({ -1, 2, 5 }, { dtype = "f64", requires_grad = true })
    c:clamp(-1, 5):sum():backward() -- the endpoints are inside
    close(c.grad, { 1, 1, 1 })
    local r = T.tensor({ 2.0 }, { dtype = "f64", requires_grad = true })
    local q = 0 / r
    q:sum():backward() -- d(0 / x) = 0, not NaN
    close(r.grad, { 0 })
    assert(not T.ones(2, { requires_grad = true }):sign().requires_grad)
  end,

  ["quick_gelu: one fused op equal to x * sigmoid(1.702 x), forward and backward"] = function()
    local F = require "tocha.nn.functional"
    local function composite(x) return x * (x * 1.702):sigmoid() end
    local x = T.randn({ 5, 7 }, { dtype = "f64" }) * 4
    assert(x:quick_gelu().grad_fn == nil and F.quick_gelu(x:requires_grad_()).grad_fn ~= nil)
    close(F.quick_gelu(x), composite(x), { rtol = 1e-14, atol = 1e-15 })
    close(F.quick_gelu(x:t()), composite(x:t()), { rtol = 1e-14, atol = 1e-15 })
    local x32 = x:detach():float()
    close(F.quick_gelu(x32), composite(x32), { rtol = 2e-6, atol = 1e-6 })
    close(F.quick_gelu(x32:t()), composite(x32):t(), { rtol = 2e-6, atol = 1e-6 })
    -- the fused derivative against the composite's, then against finite differences
    local a = x:detach():requires_grad_()
    F.quick_gelu(a):sum():backward()
    local b = x:detach():requires_grad_()
    composite(b):sum():backward()
    close(a.grad, b.grad, { rtol = 1e-12, atol = 1e-14 })
    local a32 = x32:requires_grad_()
    F.quick_gelu(a32):sum():backward()
    close(a32.grad, b.grad:float(), { rtol = 1e-5, atol = 1e-6 })
    assert(gradcheck(F.quick_gelu, { normal(3, 4) }))
    assert(gradcheck(function(t) return F.quick_gelu(t:t()) end, { normal(3, 4) }))
  end,

  ["i64 add, sub and mul wrap around on overflow, as PyTorch's (contiguous and strided)"] = function()
    local big = 1 << 62
    local function same(x, y) return x:ne(y):sum():item() == 0 end
    local a = T.tensor({ { big, -big }, { 3, big } }, { dtype = "i64" })
    local b = T.tensor({ { big, big }, { -5, big } }, { dtype = "i64" })
    local min = math.mininteger
    -- PyTorch: 2^62 + 2^62 = -2^63; -2^62 - 2^62 = -2^63; 2^62 * 2^62 = 0 (mod 2^64)
    assert(same(a + b, T.tensor({ { min, 0 }, { -2, min } }, { dtype = "i64" })))
    assert(same(a - b, T.tensor({ { 0, min }, { 8, 0 } }, { dtype = "i64" })))
    assert(same(a * b, T.tensor({ { 0, 0 }, { -15, 0 } }, { dtype = "i64" })))
    -- T.tensor keeps i64 values past 2^53 exact (they are not staged as doubles)
    assert(T.tensor({ big + 3 }, { dtype = "i64" }):tolist()[1] == big + 3)
    local at, bt = a:t(), b:t() -- the strided loops wrap too
    assert(same((at + bt):t(), a + b))
    assert(same((at * bt):t(), a * b))
  end,

  ["binary ops broadcast and match PyTorch"] = function()
    local b = REF.binary
    local a64 = T.tensor(b.a, { dtype = "f64" }):view(b.a_shape)
    local b64 = T.tensor(b.b, { dtype = "f64" }):view(b.b_shape)
    for name, want in pairs(b.ops) do
      local y = BINARY[name](a64, b64)
      assert(shape_is(y, b.out_shape), name)
      close(y, want, { rtol = 1e-14, atol = 0, msg = name })
      local y32 = BINARY[name](a64:float(), b64:float())
      close(y32, want, { rtol = 1e-6, atol = 1e-6, msg = name .. " f32" })
      -- strided operands give the same
      local at, bt = a64:permute(3, 2, 1):contiguous():permute(3, 2, 1), b64:t():contiguous():t()
      close(BINARY[name](at, bt), want, { rtol = 1e-14, atol = 0, msg = name .. " strided" })
      if name == "eq" or name == "lt" then assert(y.dtype == "bool") end
    end
    local ap = T.tensor(b.ap, { dtype = "f64" }):view(b.a_shape)
    close(ap ^ b64, b.pow, { rtol = 1e-13 })
    close(ap:pow(b64), b.pow, { rtol = 1e-13 })
    close(T.where(a64:gt(b64), a64, b64 * 2), b.where, { rtol = 1e-15 })
  end,

  ["binary ops: f64 gradcheck with broadcasting"] = function()
    local cases = {
      add = { normal(3, 1, 4), normal(2, 4) }, sub = { normal(3, 1, 4), normal(4) },
      mul = { normal(3, 1, 4), normal(2, 1) }, div = { normal(3, 1, 4), positive(2, 4) },
      pow = { positive(3, 1, 4), normal(2, 4) }, maximum = { normal(3, 1, 4), normal(2, 4) },
      minimum = { normal(1, 4), normal(3, 1) },
    }
    local ops = {
      add = BINARY.add, sub = BINARY.sub, mul = BINARY.mul, div = BINARY.div, maximum = BINARY.maximum,
      minimum = BINARY.minimum, pow = function(a, b) return a ^ b end,
    }
    for name, inputs in pairs(cases) do
      local ok, msg = gradcheck(ops[name], inputs, { raise = false })
      assert(ok, name .. ": " .. tostring(msg))
      -- strided operands: a transposed [4, 3] with a slice (at an offset) of a [7]
      local p = (name == "pow" and positive or normal)(4, 3)
      local q = (name == "div" and positive or normal)(7)
      ok, msg = gradcheck(function(a, b) return ops[name](a:t(), b:narrow(1, 2, 4)) end, { p, q }, { raise = false })
      assert(ok, name .. " (strided): " .. tostring(msg))
    end
    -- where: gradients flow to the chosen side only; the condition broadcasts
    local x, y = normal(2, 3), normal(3)
    assert(gradcheck(function(a, c) return T.where(a:gt(0), a * 2, c) end, { x, y }))
    assert(gradcheck(function(a) return T.where(a:gt(0), a, 0.5) end, { x }))
    -- one side only needs grad
    local k = T.randn(2, 3, { dtype = "f64" })
    assert(gradcheck(function(a) return a * k + k / (a * a + 1) end, { x }))
    -- ties split the gradient in half, as in PyTorch
    local p = T.tensor({ 1, 2, 3 }, { dtype = "f64", requires_grad = true })
    local q = T.tensor({ 1, 0, 5 }, { dtype = "f64", requires_grad = true })
    T.maximum(p, q):sum():backward()
    close(p.grad, { 0.5, 1, 0 })
    close(q.grad, { 0.5, 0, 1 })
    -- pow at a zero base: PyTorch's conventions, no NaN
    local base = T.tensor({ 0, 0, 2 }, { dtype = "f64", requires_grad = true })
    local ex = T.tensor({ 0, 2, 3 }, { dtype = "f64", requires_grad = true })
    local pw = base ^ ex
    pw:sum():backward()
    close(base.grad, { 0, 0, 12 })
    close(ex.grad, { 0, 0, 8 * math.log(2) })
  end,

  ["metamethods take numbers on either side"] = function()
    local x = T.tensor({ 1, 2, 4 })
    close(x + 1, { 2, 3, 5 }); close(1 + x, { 2, 3, 5 })
    close(x - 1, { 0, 1, 3 }); close(1 - x, { 0, -1, -3 })
    close(x * 3, { 3, 6, 12 }); close(3 * x, { 3, 6, 12 })
    close(x / 2, { 0.5, 1, 2 }); close(2 / x, { 2, 1, 0.5 })
    close(x ^ 2, { 1, 4, 16 }); close(2 ^ x, { 2, 4, 16 })
    close(-x, { -1, -2, -4 })
    close(x ^ T.tensor({ 2, 1, 0.5 }), { 1, 2, 2 })
    close(x:add(x, 2), { 3, 6, 12 }); close(x:sub(1), { 0, 1, 3 }); close(x:mul(x), { 1, 4, 16 })
    close(x:div(x), { 1, 1, 1 }); close(x:add(1), { 2, 3, 5 })
    local i = T.tensor({ 1, 2, 3 }, { dtype = "i64" })
    assert((i + 1).dtype == "i64" and (i * 2):tolist()[3] == 6 and (i - 1):tolist()[1] == 0)
    assert((1 - i):tolist()[3] == -2 and (i + 0.5).dtype == "f32" and (i / 2).dtype == "f32")
    assert((i + i).dtype == "i64" and (i * T.ones(3)).dtype == "f32")
    errors("tensor or number expected, got table", function() return x + {} end)
    errors("tensor or number expected, got string", function() return x * "abc" end)
  end,

  ["comparisons and logical ops"] = function()
    local a, b = T.tensor({ 1, 2, 3 }), T.tensor({ { 3 }, { 2 } })
    assert(shape_is(a:lt(b), { 2, 3 }) and a:lt(b).dtype == "bool")
    close(a:lt(b):double(), { { 1, 1, 0 }, { 1, 0, 0 } })
    close(a:ge(2):double(), { 0, 1, 1 }); close(a:eq(2):double(), { 0, 1, 0 }); close(a:ne(2):double(), { 1, 0, 1 })
    close(a:le(2):double(), { 1, 1, 0 }); close(a:gt(2.5):double(), { 0, 0, 1 })
    local p, q = T.tensor({ true, true, false }), T.tensor({ true, false, false })
    close(p:logical_and(q):double(), { 1, 0, 0 }); close(p:logical_or(q):double(), { 1, 1, 0 })
    close(p:logical_not():double(), { 0, 0, 1 })
    close(T.tensor({ 1, 0 / 0, math.huge }):isfinite():double(), { 1, 0, 0 })
    assert(not T.ones(2, { requires_grad = true }):gt(0).requires_grad)
    close(T.tensor({ 0 / 0, 1 }):eq(T.tensor({ 0 / 0, 1 })):double(), { 0, 1 }) -- NaN is unequal to itself
  end,

  ["broadcasting: size-1, zero-size and 0-d tensors"] = function()
    assert(shape_is(T.ones(3, 1) + T.ones(1, 4), { 3, 4 }))
    assert(shape_is(T.ones(2, 1, 3) * T.ones(5, 1), { 2, 5, 3 }))
    local e = T.zeros(0, 3) + T.ones(3)
    assert(shape_is(e, { 0, 3 }) and e:sum():item() == 0 and e:numel() == 0)
    assert(shape_is(T.zeros(2, 0) * T.ones(2, 1), { 2, 0 }))
    assert(shape_is(T.zeros(0) + T.zeros(1), { 0 }) and shape_is(T.zeros(0):exp(), { 0 }))
    errors("add: shapes [2] and [0] cannot be broadcast together (dimension 1: 2 vs 0)", function()
      return T.zeros(2) + T.zeros(0)
    end)
    local s = T.tensor(2.0)
    assert(shape_is(s * T.ones(3), { 3 }) and shape_is(s + s, {}) and (s + s):item() == 4)
    assert(shape_is(T.ones(2, 3) - s, { 2, 3 }))
    -- gradients sum back over broadcast dims, to 0-d too
    local a = T.tensor(3.0, { dtype = "f64", requires_grad = true })
    local v = T.ones(2, 1, { dtype = "f64", requires_grad = true })
    local w = T.ones(4, { dtype = "f64", requires_grad = true })
    local prod = (a * v) * w
    prod:sum():backward()
    assert(shape_is(a.grad, {}) and a.grad:item() == 8)
    close(v.grad, { { 12 }, { 12 } })
    close(w.grad, { 6, 6, 6, 6 })
    assert(gradcheck(function(p, q) return p * q + p end, { normal(), normal(0, 3) }))
    assert(gradcheck(function(p, q) return p / (q * q + 1) end, { normal(), normal(2, 3) }))
  end,

  ["f16 and bf16 ops go through f32"] = function()
    local x = T.randn(5)
    for _, dt in ipairs({ "f16", "bf16" }) do
      local h = x:to(dt)
      local y = (h:exp() * 2 + h):tanh()
      assert(y.dtype == dt)
      close(y, ((h:float():exp() * 2 + h:float()):tanh()):to(dt), { rtol = dt == "f16" and 2e-3 or 1.6e-2 })
      assert((h + h:float()).dtype == "f32")
    end
  end,

  ["large tensors take the threaded paths with the same results"] = function()
    local x = T.randn(300, 400)
    local y = x * 2 + x:sigmoid() -- one long contiguous run, split across threads
    local xt = x:t():contiguous():t() -- the same values, walked as 400 strided rows
    close(xt * 2 + xt:sigmoid(), y, { rtol = 0, atol = 0 })
    close(y, x:double() * 2 + x:double():sigmoid(), { rtol = 1e-6, atol = 1e-6 })
    local big = T.ones(3, 40000)
    close(big:sum(2), { 40000, 40000, 40000 })
    close(big:t():sum(1), { 40000, 40000, 40000 })
    close(big:sum(1), T.full({ 40000 }, 3))
    close(big:mean(1), T.ones(40000))
    close(x:mean(1), x:double():mean(1), { rtol = 1e-6, atol = 1e-6 })
    close(x:sum(2), x:double():sum(2), { rtol = 1e-5, atol = 1e-5 })
    local c = T.zeros(400, 300)
    c:copy_(x:t())
    close(c, x:t(), { rtol = 0, atol = 0 })
  end,

  ["f16 and bf16 gradients"] = function()
    for _, dt in ipairs({ "f16", "bf16" }) do
      local x = T.tensor({ 0.5, -1, 2 }, { dtype = dt, requires_grad = true })
      local w = T.tensor({ 1, 2, 3 }, { dtype = dt })
      local y = (x:exp() * w + x * x):sum()
      y:backward()
      assert(x.grad.dtype == dt)
      local xf = x:detach():double()
      close(x.grad, xf:exp() * w:double() + xf * 2, { rtol = dt == "f16" and 2e-3 or 1.6e-2, atol = 1e-3 })
    end
  end,

  ["in-place ops compute the right values"] = function()
    local x = T.tensor({ 1, 2, 3, 4 })
    x:add_(1); close(x, { 2, 3, 4, 5 })
    x:add_(T.tensor({ 1, 1, 1, 1 }), 2); close(x, { 4, 5, 6, 7 })
    x:sub_(1); close(x, { 3, 4, 5, 6 })
    x:sub_(T.ones(4)); close(x, { 2, 3, 4, 5 })
    x:mul_(2); close(x, { 4, 6, 8, 10 })
    x:mul_(T.tensor({ 1, 0.5, 0.25, 0.1 })); close(x, { 4, 3, 2, 1 })
    x:div_(2); close(x, { 2, 1.5, 1, 0.5 })
    x:div_(T.tensor({ 2, 1.5, 1, 0.5 })); close(x, { 1, 1, 1, 1 })
    x:copy_(T.tensor({ -3, 0, 3, 9 })); x:clamp_(-1, 4); close(x, { -1, 0, 3, 4 })
    x:clamp_(0); close(x, { 0, 0, 3, 4 })
    x:fill_(7); close(x, { 7, 7, 7, 7 })
    x:zero_(); close(x, { 0, 0, 0, 0 })
    local m = T.zeros(2, 3)
    m:add_(T.tensor({ 1, 2, 3 })) -- broadcast source
    m:copy_(T.tensor({ { 5 }, { 6 } }):expand(2, 3):t():contiguous():t())
    close(m, { { 5, 5, 5 }, { 6, 6, 6 } })
    local d = T.zeros(3, { dtype = "f64" }); d:copy_(T.tensor({ 1.5, 2.5, 3.5 })) -- across dtypes
    close(d, { 1.5, 2.5, 3.5 })
    local i = T.zeros(3, { dtype = "i32" }); i:copy_(T.tensor({ 1.7, -1.7, 2 })); close(i, { 1, -1, 2 })
    -- overlapping source and destination read the old values
    local o = T.arange(0, 4):view(2, 2)
    o:add_(o:t()); close(o, { { 0, 3 }, { 3, 6 } })
    local c = T.arange(0, 4):view(2, 2)
    c:copy_(c:t()); close(c, { { 0, 2 }, { 1, 3 } })
    local s = T.arange(0, 5)
    s:narrow(1, 2, 4):copy_(s:narrow(1, 1, 4)); close(s, { 0, 0, 1, 2, 3 })
    local self = T.tensor({ 1, 2, 3 }); self:mul_(self); close(self, { 1, 4, 9 })
    errors("copy_: shapes [2] and [3] cannot be broadcast together (dimension 1: 2 vs 3)", function()
      T.zeros(2):copy_(T.zeros(3))
    end)
    errors("add_: an operand of shape [2 x 3] does not broadcast to the destination's shape [3]", function()
      T.zeros(3):add_(T.zeros(2, 3))
    end)
    errors("the destination is an expanded tensor", function() T.zeros(1, 3):expand(2, 3):add_(1) end)
    errors("the destination is an expanded tensor", function() T.zeros(3):expand(2, 3):fill_(1) end)
  end,

  ["in-place on a leaf that requires grad raises; under no_grad it is allowed"] = function()
    local w = T.ones(3, { requires_grad = true })
    for _, f in ipairs({
      function() w:add_(1) end, function() w:mul_(T.ones(3)) end, function() w:zero_() end,
      function() w:fill_(2) end, function() w:copy_(T.zeros(3)) end, function() w:clamp_(0, 1) end,
      function() w:div_(2) end, function() w:sub_(1) end,
    }) do
      errors("a leaf tensor that requires grad is used in an in-place operation", f)
    end
    errors("fill_: in-place operation on a view of a tensor under autograd", function() w[1] = 5 end)
    T.no_grad(function() w:mul_(3):sub_(1) end)
    close(w, { 2, 2, 2 })
    assert(w.requires_grad and w.is_leaf)
    T.no_grad(function() w:copy_(T.zeros(3)) end)
    close(w, { 0, 0, 0 })
  end,

  ["modifying a saved tensor raises at backward time"] = function()
    local x = T.randn(3, { requires_grad = true })
    local y = x:exp() -- saves its output
    y:add_(1) -- allowed now ...
    errors("backward: a tensor saved by exp was modified by an in-place operation after it was used (version 1, expected 0)",
      function() y:sum():backward() end) -- ... refused here
    -- through a view, and through detach: they share the version counter
    local a = T.randn(3)
    local w = T.randn(3, { requires_grad = true })
    local z = a * w -- saves a
    a:view(3, 1):mul_(2)
    errors("a tensor saved by mul was modified", function() z:sum():backward() end)
    local b = T.randn(3)
    local z2 = w * b
    b:detach():zero_()
    errors("a tensor saved by mul was modified", function() z2:sum():backward() end)
    -- ops that save nothing the write touches are fine
    local s = x * 2 + 1
    s:mul_(3)
    s:sum():backward()
    close(x.grad, { 6, 6, 6 })
  end,

  ["in-place ops on non-leaf tensors record their gradients"] = function()
    local function run(inplace)
      local x = T.tensor({ 0.5, -1.5, 2.0, 0.25 }, { dtype = "f64", requires_grad = true })
      local w = T.tensor({ 2.0, 3.0, -1.0, 4.0 }, { dtype = "f64", requires_grad = true })
      local h
      if inplace then
        h = x * 1
        h:mul_(w); h:add_(3); h:clamp_(-1, 3.5); h:div_(w); h:sub_(x); h:mul_(h * 1)
      else
        h = x * 1
        h = h * w; h = h + 3; h = h:clamp(-1, 3.5); h = h / w; h = h - x; h = h * h
      end
      h:sum():backward()
      return x.grad, w.grad
    end
    local gx, gw = run(true)
    local ex, ew = run(false)
    close(gx, ex, { rtol = 1e-14 })
    close(gw, ew, { rtol = 1e-14 })
    -- copy_ into a non-leaf is differentiable, and broadcasts
    local src = T.tensor({ 1, 2 }, { dtype = "f64", requires_grad = true })
    local dst = T.zeros(3, 2, { dtype = "f64" })
    dst:copy_(src * 2)
    assert(dst.requires_grad and dst.grad_fn)
    local weighted = dst * T.arange(1, 7, { dtype = "f64" }):view(3, 2)
    weighted:sum():backward()
    close(src.grad, { 2 * (1 + 3 + 5), 2 * (2 + 4 + 6) })
    -- fill_ and zero_ replace the values: no gradient flows to the old ones
    local x = T.tensor({ 2.0 }, { requires_grad = true })
    local y = x * 3
    y:fill_(1)
    local out = y * x
    out:sum():backward()
    close(x.grad, { 1 })
    -- a view of a tensor under autograd cannot be rebased
    local base = T.ones(2, 2, { requires_grad = true }) * 1
    errors("in-place operation on a view of a tensor under autograd is not supported", function()
      base[1]:add_(1)
    end)
  end,

  ["sin, cos in f32: vectorised below 8192, libm above, contiguous or strided, and derivatives"] = function()
    local x = T.tensor({ 0.5, -3, 100.25, 8191.5, 8192, -9000.75, 1e6, 3e38, math.huge, -math.huge, 0 / 0, 1e-30 })
    local x64 = x:double()
    local strided = T.stack({ x, x }, 2):select(2, 1) -- stride 2: the chunked path
    for _, f in ipairs({ "sin", "cos" }) do
      local want = x64[f](x64)
      close(x[f](x):double(), want, { rtol = 3e-7, atol = 1e-7, equal_nan = true })
      close(strided[f](strided):double(), want, { rtol = 3e-7, atol = 1e-7, equal_nan = true })
      local a = T.tensor({ 0.5, -3, 100.25, 9000.75, 1e6 }):requires_grad_()
      a[f](a):sum():backward()
      local d = f == "sin" and a:detach():double():cos() or -a:detach():double():sin()
      close(a.grad:double(), d, { rtol = 3e-7, atol = 1e-7 })
    end
  end,

  ["pow in f32 (vectorised) matches libm's f64 pow: negative bases, 0, inf, NaN; scalar or tensor exponents, any layout"] = function()
    local inf, nan = math.huge, 0 / 0
    local x = T.tensor({ 0, -0.0, 1, -1, 2, -2, 0.5, -0.5, 3, -3, 7.25, -7.25, 1e-30, 3e38, -1e30, 1.5e-40, 1e-20,
                         inf, -inf, nan })
    local y = T.tensor({ 0, -0.0, 1, -1, 2, 3, -3, 0.5, -0.5, 2.5, -1.25, 7, 1e10, -1e10, 8388609, 33554432, 0.3,
                         inf, -inf, nan })
    local x64, y64 = x:double(), y:double()
    local strided = T.stack({ x, x }, 2):select(2, 1) -- stride 2: the chunked path
    local opts = { rtol = 3e-7, atol = 1e-44, equal_nan = true }
    for _, a in ipairs(y:tolist()) do
      local want = (x64 ^ a):float():double() -- rounded to f32: overflows to inf there
      close((x ^ a):double(), want, opts)
      close((strided ^ a):double(), want, opts)
      if a == a and math.abs(a) < 1e9 then close((a ^ x):double(), (a ^ x64):float():double(), opts) end
    end
    -- every base to every exponent: broadcast (the vector loop) and transposed (the strided one)
    local xx, yy = x:reshape(20, 1), y:reshape(1, 20)
    local want = (x64:reshape(20, 1) ^ y64:reshape(1, 20)):float():double()
    close((xx ^ yy):double(), want, opts)
    close((xx:expand(20, 20):t():contiguous():t() ^ yy):double(), want, opts)
    -- the derivatives through the vectorised pow, against f64
    local b = T.tensor({ 0.5, 1.5, 3, 10 }):requires_grad_()
    local e = T.tensor({ 2.5, -1.5, 0.5, 3.25 }):requires_grad_()
    local loss = (b ^ 1.75):sum() + (b ^ e):sum() + (T.tensor(1.5) ^ e):sum()
    loss:backward()
    local b64, e64 = b:detach():double(), e:detach():double()
    close(b.grad:double(), 1.75 * b64 ^ 0.75 + e64 * b64 ^ (e64 - 1), { rtol = 1e-6 })
    close(e.grad:double(), b64 ^ e64 * b64:log() + 1.5 ^ e64 * math.log(1.5), { rtol = 1e-6 })
  end,
}
