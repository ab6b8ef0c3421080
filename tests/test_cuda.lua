-- test_cuda.lua: the GPU suite's op cases. Every op of the engine runs on cuda, forward and
-- backward, against the CPU computing in f64 on the same inputs (rounded to the dtype under test
-- first): unary and binary ops with broadcast, transposed and 0-d inputs, reductions, matmul,
-- indexing and views, convolutions, pools, resampling, padding, softmax, losses, norms and
-- attention. test_cuda_system.lua has the rest; tests/cuda_harness.lua the harness and its
-- environment variables. Without a GPU every test skips.
local T = require "tocha"
local F = require "tocha.nn.functional"
local H = dofile(T.testing.path("cuda_harness.lua"))
local case, suite = H.case, H.suite

-- input makers: f64 data (the float inputs), integer indices (1-based) and bool masks
local function N(...) return T.randn({ ... }, { dtype = "f64" }) end
local function P(...) return T.rand({ ... }, { dtype = "f64" }) * 1.5 + 0.25 end -- positive, away from 0
local function I(hi, ...) return T.randint(1, hi + 1, { ... }) end
local function M(...) return T.rand({ ... }):lt(0.5) end

---------------------------------------------------------------------------------------------
-- the cases
---------------------------------------------------------------------------------------------
local UNARY = { -- name, f, input maker (default N), differentiable
  { "neg", function(x) return -x end }, { "exp", function(x) return x:exp() end },
  { "log", function(x) return x:log() end, P }, { "sqrt", function(x) return x:sqrt() end, P },
  { "rsqrt", function(x) return x:rsqrt() end, P }, { "abs", function(x) return x:abs() end },
  { "sin", function(x) return x:sin() end }, { "cos", function(x) return x:cos() end },
  { "tanh", function(x) return x:tanh() end }, { "sigmoid", function(x) return x:sigmoid() end },
  { "relu", function(x) return x:relu() end }, { "silu", function(x) return x:silu() end },
  { "gelu", function(x) return x:gelu() end }, { "gelu_tanh", function(x) return x:gelu({ approximate = "tanh" }) end },
  { "softplus", function(x) return x:softplus() end }, { "quick_gelu", function(x) return F.quick_gelu(x) end },
  { "reciprocal", function(x) return x:reciprocal() end, P }, { "square", function(x) return x:square() end },
  { "leaky_relu", function(x) return x:leaky_relu(0.2) end }, { "clamp", function(x) return x:clamp(-0.5, 1.5) end },
  { "clamp_lo", function(x) return x:clamp(0.25) end }, { "pow2", function(x) return x ^ 2 end },
  { "pow3", function(x) return x:pow(3) end }, { "pow_half", function(x) return x ^ 0.5 end, P },
  { "pow_neg", function(x) return x ^ -1.5 end, P }, { "rpow", function(x) return 2 ^ x end },
  { "rsub", function(x) return 3 - x end }, { "rdiv", function(x) return 3 / x end, P },
  { "add_scalar", function(x) return x + 2.5 end }, { "mul_scalar", function(x) return x * -1.5 end },
  { "sign", function(x) return x:sign() end, nil, false },
}
local unary_cases = {}
for _, u in ipairs(UNARY) do
  local name, f, gen, o = u[1], u[2], u[3] or N, { grad = u[4] }
  case(unary_cases, name, function() return { gen(37, 29) } end, f, o)
  case(unary_cases, name .. " (transposed)", function() return { gen(7, 5) } end,
    function(x) return f(x:t()) end, { grad = u[4] })
  case(unary_cases, name .. " (narrowed, expanded)", function() return { gen(3, 9) } end,
    function(x) return f(x:narrow(2, 2, 5):unsqueeze(2):expand({ 3, 4, 5 })) end, { grad = u[4] })
end
case(unary_cases, "isfinite, logical_not, relu, clamp of inf and nan",
  function() return { T.tensor({ 1, -math.huge, 0 / 0, math.huge, -2, 0 }, { dtype = "f64" }) } end,
  function(x) return x:isfinite(), x:isfinite():logical_not(), x:relu(), x:clamp(-1, 1) end, { grad = false })

local BINARY = {
  { "add", function(a, b) return a + b end }, { "sub", function(a, b) return a - b end },
  { "mul", function(a, b) return a * b end }, { "div", function(a, b) return a / b end, P },
  { "maximum", function(a, b) return T.maximum(a, b) end }, { "minimum", function(a, b) return a:minimum(b) end },
  { "add with alpha", function(a, b) return a:add(b, -0.75) end },
}
local binary_cases = {}
for _, op in ipairs(BINARY) do
  local name, f, den = op[1], op[2], op[3] or N
  case(binary_cases, name, function() return { N(33, 31), den(33, 31) } end, f)
  case(binary_cases, name .. " (broadcast [4, 1, 6] with [5, 1])", function() return { N(4, 1, 6), den(5, 1) } end, f)
  case(binary_cases, name .. " (transposed with contiguous)", function() return { N(7, 5), den(5, 7) } end,
    function(a, b) return f(a:t(), b) end)
  case(binary_cases, name .. " (0-d with expanded)", function() return { N(), den(1, 6) } end,
    function(a, b) return f(a, b:expand({ 5, 6 })) end)
end
case(binary_cases, "pow (tensor exponent, broadcast)", function() return { P(4, 6), N(6) } end,
  function(a, b) return a:pow(b) end)
case(binary_cases, "comparisons (with equal elements)",
  function()
    local a = N(9, 11)
    return { a, T.where(M(9, 11), a, N(9, 11)) }
  end,
  function(a, b) return a:eq(b), a:ne(b), a:lt(b), a:le(b:t():t()), a:gt(b), a:ge(b:narrow(1, 1, 1)) end,
  { grad = false })
case(binary_cases, "logical_and, logical_or (bool)", function() return { M(9, 11), M(11) } end,
  function(a, b) return a:logical_and(b), a:t():logical_or(b:narrow(1, 1, 9)) end, { once = true })
case(binary_cases, "where (broadcast condition, tensor and scalar branches)",
  function() return { M(5, 1), N(5, 7), N(7) } end,
  function(c, a, b) return T.where(c, a, b), T.where(c:t(), 0.5, a:t()) end)
case(binary_cases, "mixed dtypes (promotion to f32)", function() return { N(6, 7), N(6, 7) } end,
  function(a, b) return a * b + a end, { dtypes = { "f16", "bf16" }, fixed = { [2] = "f32" } })

local reduce_cases = {}
do
  local function R(...) case(reduce_cases, ...) end
  local x3 = function() return { N(6, 35, 9) } end
  local rows = function(scale, shift) return function() return { N(3, 2051) * scale + shift } end end
  R("sum (all)", x3, function(x) return x:sum() end, { tol = 10 })
  R("sum (dim 2)", x3, function(x) return x:sum(2) end)
  R("sum ({1, 3}, keepdim)", x3, function(x) return x:sum({ 1, 3 }, true) end)
  R("sum (dim -1 of a transposed input)", x3, function(x) return x:transpose(1, 3):sum(-1) end)
  R("sum (dim 1 of 2051 rows)", function() return { N(2051, 3) } end, function(x) return x:sum(1) end, { tol = 10 })
  R("sum (65537 elements)", function() return { N(65537) } end, function(x) return x:sum() end, { tol = 30 })
  R("mean (all, and dims {2, 3})", x3, function(x) return x:mean(), x:mean({ 2, 3 }) end, { tol = 10 })
  R("mean (dims 1 and 2: reduced dims before kept ones)", x3, function(x) return x:mean(1), x:mean(2, true) end)
  R("mean (rows of 2051)", rows(1, 0), function(x) return x:mean(2) end, { tol = 10 })
  R("prod (dim 2)", function() return { P(6, 9) * 0.5 + 0.5 } end, function(x) return x:prod(2) end)
  R("amax, amin", x3, function(x) return x:amax(2), x:amin({ 1, 3 }), x:amax() end)
  -- the gradient exp(x - lse) takes lse's rounding to the dtype: 2^-9 relative of |lse| in bf16
  R("logsumexp", x3, function(x) return x:logsumexp(2), x:logsumexp({ 1, 3 }, true) end, { gtol = 4 })
  R("logsumexp (rows of 2051)", rows(4, 0), function(x) return x:logsumexp(2) end, { gtol = 4 })
  R("var, std", x3, function(x) return x:var(2), x:std(3, true, { correction = 0 }), x:var() end, { tol = 10 })
  R("var (rows of 2051)", rows(1, 3), function(x) return x:var(2) end, { tol = 10 })
  R("norm p = 2, 1, 3, inf", x3,
    function(x) return x:norm(), x:norm(1, 2), x:norm(3, { 1, 3 }), x:norm("inf", 2) end, { tol = 10 })
  R("max(dim) with indices", x3, function(x) return x:max(2) end)
  R("min(dim, keepdim) with indices", x3, function(x) return x:min(3, true) end)
  R("argmax, argmin (transposed input, flat)", x3,
    function(x) return x:transpose(2, 3):argmax(2), x:argmin(1, true), x:argmax(), x:max() end)
  R("argmax, max (rows of 2051)", rows(1, 0), function(x) return x:argmax(2), x:max(2) end)
end

local matmul_cases = {}
do
  local function Mm(...) case(matmul_cases, ...) end
  local mm = function(a, b) return a:matmul(b) end
  Mm("matmul [33 x 17] @ [17 x 29]", function() return { N(33, 17), N(17, 29) } end, mm)
  Mm("matmul (a transposed)", function() return { N(17, 33), N(17, 29) } end,
    function(a, b) return a:t():matmul(b) end)
  Mm("matmul (b transposed)", function() return { N(33, 17), N(29, 17) } end,
    function(a, b) return a:matmul(b:t()) end)
  Mm("matmul (both transposed)", function() return { N(17, 33), N(29, 17) } end,
    function(a, b) return a:t():matmul(b:t()) end)
  Mm("matmul (batched, broadcast [2, 1, 5, 6] @ [3, 6, 4])", function() return { N(2, 1, 5, 6), N(3, 6, 4) } end, mm)
  Mm("matmul (vector @ matrix, matrix @ vector, dot)", function() return { N(17), N(17, 29), N(29) } end,
    function(v, m, w) return v:matmul(m), m:matmul(w), v:matmul(v) end)
  Mm("matmul (long K = 513)", function() return { N(9, 513), N(513, 11) } end, mm, { tol = 10 })
  Mm("matmul [130 x 70] @ [70 x 150]", function() return { N(130, 70), N(70, 150) } end, mm, { tol = 3 })
  Mm("bmm", function() return { N(4, 5, 6), N(4, 6, 7) } end, function(a, b) return a:bmm(b) end)
  Mm("bmm (second transposed)", function() return { N(4, 5, 6), N(4, 7, 6) } end,
    function(a, b) return a:bmm(b:transpose(2, 3)) end)
  Mm("linear (bias, 3-d input)", function() return { N(2, 3, 16), N(8, 16), N(8) } end,
    function(x, w, b) return F.linear(x, w, b) end)
  Mm("linear (no bias)", function() return { N(5, 16), N(8, 16) } end, function(x, w) return F.linear(x, w) end)
  Mm("outer", function() return { N(5), N(7) } end, function(a, b) return a:outer(b) end)
end

local index_cases = {}
do
  local function X(...) case(index_cases, ...) end
  X("index_select (dim 1, repeated indices)", function() return { N(7, 5), I(7, 9) } end,
    function(x, i) return x:index_select(1, i) end)
  X("index_select (dim 2, i32 indices, transposed input)",
    function() return { N(5, 7), T.randint(1, 6, { 8 }, { dtype = "i32" }) } end,
    function(x, i) return x:t():index_select(2, i) end)
  X("gather (dims 2 and 1)", function() return { N(5, 7), I(7, 5, 4), I(5, 3, 7) } end,
    function(x, i, j) return x:gather(2, i), x:gather(1, j) end)
  X("scatter_add (dim 2)", function() return { N(5, 7), I(7, 5, 4), N(5, 4) } end,
    function(x, i, s) return x:scatter_add(2, i, s) end)
  X("masked_fill (broadcast mask)", function() return { N(5, 7), M(1, 7) } end,
    function(x, m) return x:masked_fill(m, -2.5) end)
  X("cat (dim 2; dim -1 with a permuted input)",
    function() return { N(2, 3, 4), N(2, 5, 4), N(2, 1, 4), N(4, 2, 3) } end,
    function(a, b, c, d) return T.cat({ a, b, c }, 2), T.cat({ a, d:permute(2, 3, 1) }, -1) end)
  X("stack (dims 1 and 3)", function() return { N(4, 5), N(4, 5) } end,
    function(a, b) return T.stack({ a, b }, 1), T.stack({ a, b:t():t() }, 3) end)
  X("embedding", function() return { I(10, 3, 5), N(10, 6) } end, function(i, w) return F.embedding(i, w) end)
  X("embedding (padding_idx 2)", function() return { T.where(M(3, 5), I(10, 3, 5), 2), N(10, 6) } end,
    function(i, w) return F.embedding(i, w, { padding_idx = 2 }) end)
  X("views: view, reshape, permute, narrow, select, squeeze, flatten, x[i], expand",
    function() return { N(4, 1, 6, 5) } end,
    function(x)
      return x:view(4, 30), x:permute(4, 1, 3, 2):reshape(5, -1), x:narrow(3, 2, 3):contiguous(), x:select(4, 2),
        x:squeeze(2):transpose(1, 2):contiguous(), x:flatten(2, 3), x[3],
        x:unsqueeze(1):expand({ 2, 4, 1, 6, 5 }):contiguous()
    end)
  X("in place on views: add_, mul_, sub_, div_, clamp_, masked_fill_, scatter_add_, fill_, zero_, copy_",
    function() return { N(6, 7), N(7), N(7, 3), M(6, 7), I(6, 2, 7) } end,
    function(x, r, s, m, i)
      local z = x:clone()
      z:narrow(1, 2, 3):add_(r):mul_(1.5)
      z:t():narrow(2, 1, 3):sub_(s, 0.5):clamp_(-1, 1)
      z:narrow(2, 3, 4):div_(2):add_(0.25)
      local w = x:clone():masked_fill_(m, 3)
      w:scatter_add_(1, i, x:narrow(1, 1, 2))
      w:narrow(2, 1, 1):fill_(-7)
      w:select(1, 6):zero_()
      w:narrow(1, 1, 3):copy_(x:narrow(1, 4, 3):t():t())
      return z, w
    end, { grad = false })
  X("clone, to(dtype) and back", function() return { N(6, 7) } end,
    function(x) return x:clone(), x:t():to("f64"):to(x.dtype), x:to("f32") end)
end

local nn_cases = {}
do
  local function C(...) case(nn_cases, ...) end
  local function conv(o) return function(x, w, b) return F.conv2d(x, w, b, o) end end
  local function convt(o) return function(x, w, b) return F.conv_transpose2d(x, w, b, o) end end
  local x4 = function() return { N(2, 3, 9, 11) } end
  C("conv2d 3x3 padding 1", function() return { N(2, 4, 9, 11), N(6, 4, 3, 3), N(6) } end,
    conv({ padding = 1 }), { tol = 3 })
  C("conv2d stride 2, padding {1, 2}, dilation {2, 1}", function() return { N(2, 4, 9, 11), N(6, 4, 3, 3), N(6) } end,
    conv({ stride = 2, padding = { 1, 2 }, dilation = { 2, 1 } }), { tol = 3 })
  C("conv2d groups 2", function() return { N(2, 4, 8, 8), N(6, 2, 3, 3), N(6) } end,
    conv({ padding = 1, groups = 2 }), { tol = 3 })
  C("conv2d depthwise (groups = channels)", function() return { N(2, 4, 8, 7), N(4, 1, 3, 3), N(4) } end,
    conv({ padding = 1, groups = 4 }), { tol = 3 })
  C("conv2d 1x1, no bias", function() return { N(3, 5, 4, 6), N(7, 5, 1, 1) } end,
    function(x, w) return F.conv2d(x, w) end)
  C("conv2d 5x3 kernel, stride {1, 2}", function() return { N(2, 3, 11, 10), N(4, 3, 5, 3), N(4) } end,
    conv({ stride = { 1, 2 } }), { tol = 3 })
  C("conv2d 16 -> 8 channels, transposed input", function() return { N(2, 16, 15, 17), N(8, 16, 3, 3), N(8) } end,
    function(x, w, b) return F.conv2d(x:transpose(3, 4), w, b, { padding = 1 }) end, { tol = 10, gtol = 30 })
  C("conv_transpose2d stride 2, padding 1, output_padding 1",
    function() return { N(2, 4, 5, 6), N(4, 3, 3, 3), N(3) } end,
    convt({ stride = 2, padding = 1, output_padding = 1 }), { tol = 3 })
  C("conv_transpose2d groups 2", function() return { N(2, 4, 5, 5), N(4, 2, 3, 3), N(4) } end,
    convt({ groups = 2, padding = 1 }), { tol = 3 })
  C("conv_transpose2d dilation 2, no bias", function() return { N(1, 3, 4, 5), N(3, 2, 3, 2) } end,
    function(x, w) return F.conv_transpose2d(x, w, nil, { dilation = 2 }) end, { tol = 3 })
  C("avg_pool2d 3, stride 2, padding 1", x4, function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1 }) end)
  C("avg_pool2d ceil_mode, count_include_pad false", x4,
    function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true, count_include_pad = false }) end)
  C("avg_pool2d {2, 3}, stride {2, 1}", function() return { N(2, 3, 8, 7) } end,
    function(x) return F.avg_pool2d(x, { 2, 3 }, { stride = { 2, 1 } }) end)
  C("max_pool2d 3, stride 2, padding 1", x4, function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1 }) end)
  C("max_pool2d 2; 3 with dilation 2, ceil_mode", x4,
    function(x) return F.max_pool2d(x, 2), F.max_pool2d(x, 3, { stride = 2, dilation = 2, ceil_mode = true }) end)
  C("interpolate nearest x2, nearest down to {5, 7}", x4,
    function(x) return F.interpolate(x, { scale_factor = 2 }), F.interpolate(x, { size = { 5, 7 } }) end)
  C("interpolate bilinear x2", x4, function(x) return F.interpolate(x, { scale_factor = 2, mode = "bilinear" }) end)
  C("interpolate bilinear align_corners {13, 6}", x4,
    function(x) return F.interpolate(x, { size = { 13, 6 }, mode = "bilinear", align_corners = true }) end)
  C("interpolate bilinear down {4, 5}", x4,
    function(x) return F.interpolate(x, { size = { 4, 5 }, mode = "bilinear" }) end)
  C("pad constant 0.5", function() return { N(2, 3, 5, 6) } end,
    function(x) return F.pad(x, { 1, 2, 3, 0 }, { value = 0.5 }) end)
  C("pad constant (3 dims, transposed input)", function() return { N(2, 6, 5) } end,
    function(x) return F.pad(x:transpose(2, 3), { 1, 0, 2, 1, 0, 1 }) end)
  C("pad reflect", function() return { N(2, 3, 5, 6) } end,
    function(x) return F.pad(x, { 2, 1, 1, 3 }, { mode = "reflect" }) end)
  C("pad replicate", function() return { N(2, 3, 5, 6) } end,
    function(x) return F.pad(x, { 3, 1, 0, 2 }, { mode = "replicate" }) end)
  for _, sm in ipairs({ "softmax", "log_softmax" }) do
    local f = F[sm]
    C(sm .. " (dims -1, 1, 2)", function() return { N(4, 6, 7) * 3 } end,
      function(x) return f(x, -1), f(x, 1), f(x, 2) end)
    C(sm .. " (rows of 2051)", function() return { N(3, 2051) * 3 } end, function(x) return f(x, 2) end, { tol = 3 })
    C(sm .. " (-inf entries, transposed input)", function() return { N(6, 5), M(6, 5) } end,
      function(x, m) -- column 1 is never masked, so every row keeps a finite entry
        local keep1 = T.arange(1, 6, 1, { device = m.device }):gt(1)
        return f(x:masked_fill(m:logical_and(keep1), -math.huge):t(), 1)
      end)
  end
  local function ce(o)
    return function(x, t, w)
      return F.cross_entropy(x, t,
        { weight = w, ignore_index = o.ignore, label_smoothing = o.smooth, reduction = o.red })
    end
  end
  local no_w = { nograd = { [3] = true } }
  C("cross_entropy", function() return { N(7, 5), I(5, 7) } end, ce({}))
  C("cross_entropy (weight, sum)", function() return { N(7, 5), I(5, 7), P(5) } end, ce({ red = "sum" }), no_w)
  C("cross_entropy (ignore_index 3)", function() return { N(9, 5), I(5, 9) } end, ce({ ignore = 3 }))
  C("cross_entropy (label smoothing, weight)", function() return { N(7, 5), I(5, 7), P(5) } end, ce({ smooth = 0.1 }),
    { nograd = { [3] = true } })
  C("cross_entropy ([N, C, d1, d2], reduction none)", function() return { N(3, 5, 4, 2), I(5, 3, 4, 2) } end,
    ce({ red = "none" }))
  C("cross_entropy (probability targets)", function() return { N(7, 5), F.softmax(N(7, 5), 2) } end, ce({}))
  C("cross_entropy (1001 classes)", function() return { N(4, 1001) * 2, I(1001, 4) } end, ce({}), { tol = 3 })
  C("mse_loss, l1_loss (mean, sum, none)", function() return { N(6, 7), N(7, 6) } end,
    function(a, b)
      b = b:t()
      return F.mse_loss(a, b) + F.l1_loss(a, b, { reduction = "sum" }) * 0.1,
        F.mse_loss(a, b, { reduction = "none" }), F.l1_loss(a, b, { reduction = "none" })
    end)
  local f32_wb = { dtypes = { "f16", "bf16" }, fixed = { [2] = "f32", [3] = "f32" } }
  C("layer_norm [3, 5, 33] over {33}", function() return { N(3, 5, 33), N(33), N(33) } end,
    function(x, w, b) return F.layer_norm(x, { 33 }, w, b) end, { tol = 3 })
  C("layer_norm over {5, 33}, no affine", function() return { N(3, 5, 33) * 2 + 1 } end,
    function(x) return F.layer_norm(x, { 5, 33 }) end, { tol = 3 })
  C("layer_norm (rows of 2051, transposed input)", function() return { N(2051, 4), N(2051), N(2051) } end,
    function(x, w, b) return F.layer_norm(x:t(), 2051, w, b, { eps = 1e-6 }) end, { tol = 10, gtol = 30 })
  C("layer_norm (f32 weight and bias)", function() return { N(4, 33), N(33), N(33) } end,
    function(x, w, b) return F.layer_norm(x, 33, w, b) end, f32_wb)
  C("group_norm 3 groups of [2, 6, 5, 7]", function() return { N(2, 6, 5, 7), N(6), N(6) } end,
    function(x, w, b) return F.group_norm(x, 3, w, b) end, { tol = 3 })
  C("group_norm 1 group, no affine; 6 groups", function() return { N(2, 6, 5, 7) * 2 + 1 } end,
    function(x) return F.group_norm(x, 1), F.group_norm(x, 6, nil, nil, { eps = 1e-6 }) end, { tol = 3 })
  C("group_norm 8 groups of [1, 64, 33, 17]", function() return { N(1, 64, 33, 17), N(64), N(64) } end,
    function(x, w, b) return F.group_norm(x, 8, w, b) end, { tol = 10, gtol = 30 })
  C("group_norm (f32 weight and bias)", function() return { N(2, 6, 5, 7), N(6), N(6) } end,
    function(x, w, b) return F.group_norm(x, 2, w, b) end, f32_wb)
  C("dropout (eval, p = 0)", function() return { N(5, 7) } end,
    function(x) return F.dropout(x, 0.5, { training = false }), F.dropout(x, 0) end)
  local function attn(o)
    return function(q, k, v, m)
      return F.scaled_dot_product_attention(q, k, v,
        { attn_mask = m, is_causal = o.causal, scale = o.scale, dropout_p = o.p })
    end
  end
  local qkv = function() return { N(2, 3, 5, 8), N(2, 3, 7, 8), N(2, 3, 7, 6) } end
  local t3 = { tol = 3 }
  C("sdpa [2, 3, L 5, S 7]", qkv, attn({}), t3)
  C("sdpa causal (L = S)", function() return { N(2, 3, 6, 8), N(2, 3, 6, 8), N(2, 3, 6, 8) } end,
    attn({ causal = true }), t3)
  C("sdpa causal (L 4, S 7)", function() return { N(2, 4, 8), N(2, 7, 8), N(2, 7, 8) } end, attn({ causal = true }), t3)
  C("sdpa bool mask (broadcast)", function()
      local q = qkv()
      q[4] = T.rand({ 5, 7 }):lt(0.7)
      return q
    end, attn({}), t3)
  C("sdpa float mask [2, 1, 5, 7] (its gradient too), scale 0.3", function()
      local q = qkv()
      q[4] = N(2, 1, 5, 7)
      return q
    end, attn({ scale = 0.3 }), t3)
  C("sdpa transposed q, k, v", function() return { N(2, 5, 3, 8), N(2, 3, 8, 7), N(2, 7, 3, 6) } end,
    function(q, k, v)
      return F.scaled_dot_product_attention(q:transpose(2, 3), k:transpose(3, 4), v:transpose(2, 3))
    end, t3)
  C("sdpa long (S 300, E 64)", function() return { N(1, 2, 37, 64), N(1, 2, 300, 64), N(1, 2, 300, 40) } end,
    attn({}), { tol = 10, gtol = 30 })
  C("sdpa a fully masked row", function()
      local m = T.rand({ 5, 7 }):lt(0.7):masked_fill(T.arange(1, 6):eq(3):unsqueeze(2), 0)
      return { N(1, 5, 8), N(1, 7, 8), N(1, 7, 8), m }
    end, attn({}), t3)
  C("sdpa dropout 0.25 (same seed)", qkv, attn({ p = 0.25 }), t3)
  C("a conv block: conv, group_norm, silu, pool, linear, cross_entropy",
    function() return { N(2, 4, 8, 8), N(8, 4, 3, 3) * 0.3, N(8), N(8), N(8), N(3, 8 * 16) * 0.1, I(3, 2) } end,
    function(x, w, b, gw, gb, lw, t)
      local h = F.group_norm(F.conv2d(x, w, b, { padding = 1 }), 4, gw, gb):silu()
      return F.cross_entropy(F.linear(F.avg_pool2d(h, 2):flatten(2), lw), t)
    end, { tol = 10, gtol = 30 })
end

local empty_cases = {}
-- [5, 0] as the transpose of [0, 5]: T.randn({5, 0}) fails on the CPU
case(empty_cases, "zero-size tensors", function() return { N(0, 5), N(0, 5):t(), N(3, 5) } end,
  function(a, b, c)
    return a:sum(1), a + 1, a:matmul(c:t()), b:matmul(a), F.softmax(a, 2), T.cat({ a, c }, 1), a:exp(),
      a:t():contiguous()
  end, { grad = false })

return {
  ["unary ops"] = suite(unary_cases),
  ["binary ops, where, comparisons (broadcast, transposed, 0-d)"] = suite(binary_cases),
  ["reductions and arg reductions"] = suite(reduce_cases),
  ["matmul, bmm, linear, outer"] = suite(matmul_cases),
  ["indexing, cat, stack, embedding, views"] = suite(index_cases),
  ["conv, pools, interpolate, pad, softmax, losses, norms, attention"] = suite(nn_cases),
  ["zero-size tensors"] = suite(empty_cases),
}
