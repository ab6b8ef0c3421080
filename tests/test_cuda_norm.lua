-- test_cuda_norm.lua: the cuda kernels of softmax.cu, norm.cu, act.cu and attention.cu against the CPU,
-- beyond test_cuda.lua's cases: strided and broadcast inputs, sizes past one block or tile
-- (rows of 5000, groups split over blocks, L and S past 32, head dims past a pass), inputs far
-- from 0, mixed dtypes, every mask kind, causal with L < S and L > S, dropout equal to the
-- CPU's mask, and the same errors as the CPU. Each case runs on the device in every float dtype
-- and on the CPU in f64 on the same (rounded) inputs, forward and backward. Without a GPU every
-- test skips.
--   TOCHA_CUDA_DEVICE=cpu  runs it all with the CPU standing in for the GPU (checks the harness)
--   TOCHA_CUDA_VERBOSE=1   prints every check's largest error
local T = require "tocha"
local F = require "tocha.nn.functional"

local H = dofile(T.testing.path("cuda_harness.lua")) -- run_case, suite, rel_err: the GPU suite's harness
local DEV, need_gpu, rel_err, suite = H.DEV, H.need_gpu, H.rel_err, H.suite
local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

-- input makers: f64 data, 1-based classes, bool masks
local function N(...) return T.randn({ ... }, { dtype = "f64" }) end
local function P(...) return T.rand({ ... }, { dtype = "f64" }) * 1.5 + 0.25 end
local function I(hi, ...) return T.randint(1, hi + 1, { ... }) end
local function M(p, ...) return T.rand({ ... }):lt(p) end

local function cases()
  local list = {}
  local function C(name, make, f, o) H.case(list, name, make, f, o) end
  return list, C
end

-- ---- softmax, cross entropy ------------------------------------------------------------------------
local softmax_cases, S = cases()
for _, name in ipairs({ "softmax", "log_softmax" }) do
  local f = F[name]
  S(name .. " along every dim of a permuted [5, 3, 40]", function() return { N(40, 3, 5) * 3 } end,
    function(x) local v = x:transpose(1, 3); return f(v, 1), f(v, 2), f(v, 3) end)
  S(name .. " (rows of 5000, a row of 1)", function() return { N(2, 5000) * 10, N(7, 1) } end,
    function(x, y) return f(x, 2), f(y, 2) end, { tol = 10 })
  S(name .. " (columns of 300, strided rows)", function() return { N(300, 9) } end,
    function(x) return f(x:narrow(2, 2, 6), 1) end, { tol = 3 })
end
S("softmax of a row all -inf (NaN, as the CPU)", function() return { N(3, 4) } end,
  function(x) return F.softmax(x:masked_fill(T.tensor({ false, true, false }):unsqueeze(2):to(x.device), -math.huge), 2) end,
  { grad = false })

local ce = function(o) return function(x, t, w) return F.cross_entropy(x, t, { weight = w, ignore_index = o.ignore,
  label_smoothing = o.smooth, reduction = o.red }) end end
S("cross_entropy (i32 targets, transposed logits)", function() return { N(6, 9), I(6, 9):to("i32") } end,
  function(x, t) return F.cross_entropy(x:t(), t), F.cross_entropy(x:t(), t, { reduction = "none" }) end)
S("cross_entropy (weight, ignore_index 2, smoothing 0.2)", function() return { N(11, 6), I(6, 11), P(6) } end,
  ce({ ignore = 2, smooth = 0.2 }), { nograd = { [3] = true } })
S("cross_entropy (every sample ignored: nan)", function() return { N(3, 4), T.full({ 3 }, 2, { dtype = "i64" }) } end,
  ce({ ignore = 2 }))
S("cross_entropy (probability targets, weight, smoothing; the targets' gradient)",
  function() return { N(5, 4, 3), F.softmax(N(5, 4, 3), 2), P(4) } end, ce({ smooth = 0.15, red = "sum" }),
  { nograd = { [3] = true } })
S("cross_entropy (4000 classes, [N, C, d] sum)", function() return { N(2, 4000, 3) * 3, I(4000, 2, 3) } end,
  ce({ red = "sum" }), { tol = 10 })
S("cross_entropy (f32 weight, half logits)", function() return { N(7, 5), I(5, 7), P(5) } end, ce({ smooth = 0.1 }),
  { dtypes = { "f16", "bf16" }, fixed = { [3] = "f32" }, nograd = { [3] = true } })

-- ---- layer norm, group norm ------------------------------------------------------------------------------
local norm_cases, Nc = cases()
Nc("layer_norm (rows of 5000; 10000 rows of 3)", function() return { N(3, 5000), N(5000), N(5000), N(10000, 3), N(3), N(3) } end,
  function(x, w, b, y, v, c) return F.layer_norm(x, 5000, w, b), F.layer_norm(y, 3, v, c) end, { tol = 10, gtol = 100 })
-- far from 0, f32's gradients lose bits to the mean kept in a float, on the CPU as on the GPU
Nc("layer_norm of rows far from 0 (1000 + noise)", function() return { N(6, 40) * 0.05 + 1000 } end,
  function(x) return F.layer_norm(x, 40) end, { dtypes = { "f64", "f32" }, tol = 30, gtol = 100 })
Nc("layer_norm (weight and bias only want gradients)", function() return { N(70, 9), N(9), N(9) } end,
  function(x, w, b) return F.layer_norm(x, 9, w, b) end, { nograd = { [1] = true }, tol = 3 })
Nc("layer_norm (rows of 1; strided rows)", function() return { N(5, 1), N(8, 12) } end,
  function(x, y) return F.layer_norm(x, 1), F.layer_norm(y:narrow(2, 3, 7), 7) end, { tol = 3 })
Nc("group_norm groups split over blocks [2, 64, 32, 32] / 4", function() return { N(2, 64, 32, 32), N(64), N(64) } end,
  function(x, w, b) return F.group_norm(x, 4, w, b) end, { tol = 30, gtol = 300 })
Nc("group_norm [3, 6] (HW 1); one channel per group", function() return { N(3, 6), N(6), N(6), N(2, 5, 4) } end,
  function(x, w, b, y) return F.group_norm(x, 1, w, b), F.group_norm(y, 5) end, { tol = 3 })
Nc("group_norm of a permuted input", function() return { N(2, 7, 5, 6), N(6), N(6) } end,
  function(x, w, b) return F.group_norm(x:transpose(2, 4), 2, w, b) end, { tol = 3 })
Nc("group_norm far from 0 (1000 + noise)", function() return { N(2, 8, 9, 9) * 0.05 + 1000 } end,
  function(x) return F.group_norm(x, 4) end, { dtypes = { "f64", "f32" }, tol = 30, gtol = 100 })
Nc("group_norm (weight and bias only want gradients)", function() return { N(3, 6, 10), N(6), N(6) } end,
  function(x, w, b) return F.group_norm(x, 3, w, b) end, { nograd = { [1] = true }, tol = 3 })
-- the fused silu: the activation in the normalize pass, its derivative recomputed in the backward
Nc("group_norm {silu = true} groups split over blocks [2, 64, 16, 16] / 8",
  function() return { N(2, 64, 16, 16), N(64), N(64) } end,
  function(x, w, b) return F.group_norm(x, 8, w, b, { eps = 1e-6, silu = true }) end, { tol = 30, gtol = 300 })
Nc("group_norm {silu = true} of a permuted input, no weight or bias", function() return { N(2, 7, 5, 6) * 2 + 1 } end,
  function(x) return F.group_norm(x:transpose(2, 4), 3, nil, nil, { silu = true }) end, { tol = 3 })
Nc("group_norm {silu = true}: half inputs, f32 weight and bias", function() return { N(3, 8, 7), N(8), N(8) } end,
  function(x, w, b) return F.group_norm(x, 4, w, b, { silu = true }) end,
  { dtypes = { "f16", "bf16" }, fixed = { [2] = "f32", [3] = "f32" }, tol = 3 })

-- ---- attention ------------------------------------------------------------------------------------------
local attn_cases, A = cases()
local attn = function(o) return function(q, k, v, m) return F.scaled_dot_product_attention(q, k, v,
  { attn_mask = m, is_causal = o.causal, scale = o.scale, dropout_p = o.p }) end end
A("sdpa L 70, S 45, E 100, Ev 130 (several tiles and passes)", function() return { N(2, 70, 100), N(2, 45, 100), N(2, 45, 130) } end,
  attn({ scale = 0.2 }), { tol = 10, gtol = 30 })
A("sdpa causal L 70 > S 45", function() return { N(2, 70, 16), N(2, 45, 16), N(2, 45, 8) } end, attn({ causal = true }), { tol = 3 })
A("sdpa causal L 40 < S 90", function() return { N(1, 2, 40, 16), N(1, 2, 90, 16), N(1, 2, 90, 24) } end,
  attn({ causal = true }), { tol = 3 })
A("sdpa broadcast batch dims (k [3, S, E], v [1, 3, S, Ev])", function() return { N(2, 3, 33, 8), N(3, 37, 8), N(1, 3, 37, 5) } end,
  attn({}), { tol = 3 })
A("sdpa bool mask [2, 1, L, S] with fully masked rows", function()
    local rows = {}
    for i = 1, 35 do rows[i] = i % 7 ~= 0 end
    local m = M(0.6, 2, 1, 35, 34):logical_and(T.tensor(rows):view(1, 1, 35, 1))
    return { N(2, 3, 35, 8), N(2, 3, 34, 8), N(2, 3, 34, 8), m }
  end, attn({}), { tol = 3 })
A("sdpa float mask (its gradient), transposed mask", function() return { N(2, 40, 8), N(2, 37, 8), N(2, 37, 8), N(37, 40) } end,
  function(q, k, v, m) return attn({})(q, k, v, m:t()) end, { tol = 3 })
A("sdpa f32 float mask with half q, k, v", function() return { N(2, 9, 8), N(2, 11, 8), N(2, 11, 8), N(9, 11) } end,
  attn({}), { dtypes = { "f16", "bf16" }, fixed = { [4] = "f32" }, tol = 3 })
A("sdpa dropout 0.3 (the CPU's mask), over tiles", function() return { N(2, 40, 20), N(2, 37, 20), N(2, 37, 12) } end,
  attn({ p = 0.3 }), { tol = 3 })
A("sdpa dropout 0.2 with a bool mask", function() return { N(3, 9, 8), N(3, 10, 8), N(3, 10, 8), M(0.7, 9, 10) } end,
  attn({ p = 0.2 }), { tol = 3 })
A("sdpa dropout 1 (all dropped)", function() return { N(2, 5, 8), N(2, 6, 8), N(2, 6, 8) } end, attn({ p = 1 }))

-- ---- bias + activation and GEGLU (act.cu) ------------------------------------------------------------
local act_cases, Ac = cases()
for _, act in ipairs({ "relu", "silu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid", "tanh" }) do
  Ac("bias_act " .. act .. " [3, 70, 40] (columns past a tile, rows over chunks)",
    function() return { N(3, 70, 40) * 2, N(40) } end, function(x, b) return F.bias_act(x, b, act) end, { tol = 3, gtol = 10 })
end
Ac("geglu [2, 300, 2 x 33] with a bias", function() return { N(2, 300, 66) * 2, N(66) } end,
  function(x, b) return F.geglu(x, b) end, { tol = 3, gtol = 10 })
Ac("geglu tanh form of a strided input, no bias", function() return { N(8, 5, 3) } end,
  function(x) return F.geglu(x:transpose(1, 3), nil, { approximate = "tanh" }) end, { tol = 3 })
Ac("bias_act of a 1-d input, no bias; geglu of rows of one pair", function() return { N(37), N(9, 2) } end,
  function(x, y) return F.bias_act(x, nil, "silu"), F.geglu(y) end, { tol = 3 })
Ac("geglu, bias_act (only the bias wants a gradient)", function() return { N(40, 24), N(24) } end,
  function(x, b) return F.geglu(x, b), F.bias_act(x, b, "gelu") end, { nograd = { [1] = true }, tol = 3, gtol = 10 })

return {
  ["softmax, log_softmax, cross_entropy"] = suite(softmax_cases),
  ["bias_act, geglu"] = suite(act_cases),
  ["layer_norm, group_norm"] = suite(norm_cases),
  ["scaled_dot_product_attention"] = suite(attn_cases),

  ["zero-size inputs and E = 0 give what the CPU gives"] = function()
    need_gpu()
    local function z(...) return T.zeros({ ... }, { dtype = "f64" }) end
    local function r(...) return T.randn({ ... }, { dtype = "f64" }) end
    local sdpa = F.scaled_dot_product_attention
    local list = {
      { "softmax [0, 5] along 1 and 2", function(x) return F.softmax(x, 1) + F.softmax(x, 2) end, z(0, 5) },
      { "log_softmax [3, 0]", function(x) return F.log_softmax(x, 2) end, z(3, 0) },
      { "layer_norm [0, 5]", function(x, w, b) return F.layer_norm(x, 5, w, b) end, z(0, 5), r(5), r(5) },
      { "group_norm [0, 6, 4]", function(x, w, b) return F.group_norm(x, 3, w, b) end, z(0, 6, 4), r(6), r(6) },
      { "group_norm [2, 6, 0]", function(x, w, b) return F.group_norm(x, 3, w, b) end, z(2, 6, 0), r(6), r(6) },
      -- no queries: the gradients of k and v are 0 (the CPU's GEMM with K = 0 scales its
      -- uninitialized output by 0, which can leave NaN there, so they are checked against 0;
      -- Ev = 0 likewise, and E = 0 below)
      { "sdpa L 0", sdpa, z(2, 0, 4), r(2, 3, 4), r(2, 3, 5), zero_grads = true },
      { "sdpa Ev 0", sdpa, r(2, 3, 4), r(2, 3, 4), z(2, 3, 0), zero_grads = true },
      { "sdpa batch 0", sdpa, z(0, 3, 4), z(0, 4, 4), z(0, 4, 5) },
      { "cross_entropy N 0", function(x, t) return F.cross_entropy(x, t, { reduction = "none" }) end, z(0, 5),
        T.zeros({ 0 }, { dtype = "i64" }) },
    }
    for _, c in ipairs(list) do
      local rin, din = {}, {}
      for i = 3, #c do
        local x = c[i]
        rin[#rin + 1] = x:clone():requires_grad_(x.dtype == "f64")
        din[#din + 1] = x:to(DEV):requires_grad_(x.dtype == "f64")
      end
      local e, a = c[2](table.unpack(rin)), c[2](table.unpack(din))
      assert(shape_str(a) == shape_str(e) and rel_err(a, e) <= 1e-12, c[1] .. ": outputs differ")
      e:sum():backward()
      a:sum():backward()
      for i = 1, #rin do
        local ge = rin[i].grad
        if ge and c.zero_grads then ge = T.zeros(ge.shape, { dtype = ge.dtype }) end
        if ge then assert(rel_err(din[i].grad, ge) <= 1e-12, c[1] .. ": gradient " .. i .. " differs") end
      end
    end
    -- E = 0: every score is 0, so each query gets the mean of the values
    local v = r(2, 4, 5)
    local a = sdpa(z(2, 3, 0):to(DEV), z(2, 4, 0):to(DEV), v:to(DEV))
    assert(rel_err(a, v:mean(2, true):expand(2, 3, 5)) <= 1e-12, "sdpa E 0: not the mean of v")
  end,

  ["cross_entropy: a target out of range fails as on the CPU"] = function()
    need_gpu()
    local x, t = T.randn({ 5, 7 }), T.tensor({ 1, 2, 9, 1, 0 }, { dtype = "i64" })
    local ok, ecpu = pcall(F.cross_entropy, x, t)
    assert(not ok)
    for _, dt in ipairs({ "i64", "i32" }) do
      local ok2, edev = pcall(F.cross_entropy, x:to(DEV), t:to(dt):to(DEV))
      assert(not ok2, "cross_entropy with a class out of range must raise on " .. DEV)
      local m = tostring(edev):match("cross_entropy: target %-?%d+ is out of range for 7 classes")
      assert(m, "unexpected error: " .. tostring(edev) .. " (the CPU's: " .. tostring(ecpu) .. ")")
    end
    -- and the backward
    local xd = x:to(DEV):requires_grad_()
    local l = F.cross_entropy(xd, T.tensor({ 1, 2, 3, 1, 2 }, { dtype = "i64" }):to(DEV))
    l:backward()
    assert(xd.grad and xd.grad.device:sub(1, #DEV) == DEV)
  end,

  ["sdpa: dropout on the device keeps exactly the CPU's elements"] = function()
    need_gpu()
    local q, k, v = T.randn({ 2, 3, 33, 8 }), T.randn({ 2, 3, 41, 8 }), T.ones({ 2, 3, 41, 1 })
    local opts = { dropout_p = 0.5 }
    -- with v all ones the output is the kept share of each row: compare which rows and how much
    T.manual_seed(5)
    local e = F.scaled_dot_product_attention(q, k, v, opts)
    T.manual_seed(5)
    local a = F.scaled_dot_product_attention(q:to(DEV), k:to(DEV), v:to(DEV), opts)
    assert(rel_err(a, e) <= 1e-5, "dropout masks differ: " .. rel_err(a, e))
  end,
}
