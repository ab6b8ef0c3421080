-- test_cuda_elementwise.lua: kernels/elementwise.cu and kernels/reduce.cu against the CPU's
-- kernels on the same inputs and dtypes: every unary op and its derivative, binary op, where,
-- fill and copy, on f64 f32 f16 bf16 i32 i64 u8 bool, over contiguous, transposed, narrowed and
-- broadcast operands, sizes 1, 7, zero and 0-d; reductions over one, two and all dims with
-- keepdim, max/min with indices (ties, NaN), split reductions over many elements, and
-- total_norm. Without a GPU every test skips.
local T = require "tocha"

local FLOATS = { "f64", "f32", "f16", "bf16" }
local INTS = { "i32", "i64", "u8", "bool" }
local ALL = { "f64", "f32", "f16", "bf16", "i32", "i64", "u8", "bool" }
-- rtol, atol by dtype: the GPU computes f32/f16/bf16 in float where the CPU sometimes uses
-- double, so f16 and bf16 may differ by one unit in the last place
local TOL = { f64 = { 1e-12, 1e-12 }, f32 = { 1e-5, 1e-6 }, f16 = { 2e-3, 1e-3 }, bf16 = { 1.6e-2, 1e-2 } }

local function need_gpu()
  if not (T.cuda and T.cuda.is_available()) then skip("no CUDA GPU (T.cuda.is_available() is false)") end
end

local function is_float(dt) return TOL[dt] ~= nil end
local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

--- g (cuda) against c (cpu): same dtype and shape; floats close (NaN and infinities where the
--- CPU has them), anything else equal
local function check(g, c, msg, scale)
  assert(g.device:sub(1, 4) == "cuda", msg .. ": result not on cuda")
  if g.dtype ~= c.dtype then error(msg .. ": dtype " .. g.dtype .. " vs " .. c.dtype .. " on the cpu", 2) end
  if shape_str(g) ~= shape_str(c) then error(msg .. ": shape " .. shape_str(g) .. " vs " .. shape_str(c), 2) end
  local a, e = g:to("cpu"):double():reshape(-1), c:double():reshape(-1)
  if e:numel() == 0 then return end
  local ok
  if is_float(c.dtype) then
    local tol = TOL[c.dtype]
    local rtol, atol = tol[1] * (scale or 1), tol[2] * (scale or 1)
    ok = (a - e):abs():le(e:abs() * rtol + atol):logical_or(a:eq(e)):logical_or(a:ne(a):logical_and(e:ne(e)))
  else
    ok = a:eq(e)
  end
  local bad = ok:logical_not():to("i64"):sum():item()
  if bad > 0 then
    local i = ok:logical_not():to("i64"):argmax():item()
    error(string.format("%s: %d of %d differ; first at %d: cuda %.9g vs cpu %.9g", msg, bad, e:numel(), i,
      a[i]:item(), e[i]:item()), 2)
  end
end

-- values of a dtype, on the cpu: floats random with NaN, +-inf, 0 and -0 among them (special
-- = true), integers small with repeats (and zeros), bool both
local function values(dt, shape, special, lo, hi)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do
    if is_float(dt) then v[i] = (math.random() * 2 - 1) * 3
    elseif dt == "bool" then v[i] = math.random(0, 1)
    elseif dt == "u8" then v[i] = math.random(lo or 0, hi or 12)
    else v[i] = math.random(lo or -6, hi or 6) end
  end
  if special and is_float(dt) and n >= 8 then
    v[2], v[3], v[5], v[6], v[8] = 0 / 0, math.huge, -math.huge, 0, -0.0
  end
  local t = T.tensor(v, { dtype = dt == "bool" and "i64" or (is_float(dt) and "f64" or dt) }):view(shape)
  return t:to(dt)
end

-- layouts: a base tensor's shape and the view of it an op reads (applied on both devices)
local LAYOUTS = {
  { "contiguous", { 7, 13 }, function(b) return b end },
  { "transposed", { 13, 7 }, function(b) return b:t() end },
  { "narrowed", { 7, 20 }, function(b) return b:narrow(2, 4, 13) end },
  { "broadcast", { 1, 13 }, function(b) return b:expand(7, 13) end },
  { "one", { 1 }, function(b) return b end },
  { "zero", { 0, 5 }, function(b) return b end },
  { "0-d", { 1 }, function(b) return b:view({}) end },
  { "3-d permuted", { 3, 4, 5 }, function(b) return b:permute(3, 1, 2) end },
}

--- calls fn(name, cpu view, cuda view) for each layout of dtype dt
local function each_layout(dt, special, fn, lo, hi)
  for _, l in ipairs(LAYOUTS) do
    local base = values(dt, l[2], special, lo, hi)
    fn(l[1], l[3](base), l[3](base:to("cuda")))
  end
end

-- unary ops: name -> f(x), and whether integers take it (else only floats)
local UNARY = {
  { "neg", function(x) return -x end, true }, { "exp", function(x) return x:exp() end },
  { "log", function(x) return x:log() end }, { "sqrt", function(x) return x:sqrt() end },
  { "rsqrt", function(x) return x:rsqrt() end }, { "abs", function(x) return x:abs() end, true },
  { "sin", function(x) return x:sin() end }, { "cos", function(x) return x:cos() end },
  { "tanh", function(x) return x:tanh() end }, { "sigmoid", function(x) return x:sigmoid() end },
  { "relu", function(x) return x:relu() end, true }, { "silu", function(x) return x:silu() end },
  { "gelu", function(x) return x:gelu() end },
  { "gelu_tanh", function(x) return x:gelu({ approximate = "tanh" }) end },
  { "softplus", function(x) return x:softplus() end }, { "sign", function(x) return x:sign() end, true },
  { "reciprocal", function(x) return x:reciprocal() end }, { "square", function(x) return x:square() end, true },
  { "logical_not", function(x) return x:logical_not() end, true },
  { "isfinite", function(x) return x:isfinite() end, true },
  { "clamp", function(x) return x:clamp(-1.5, 2) end, true }, { "clamp_lo", function(x) return x:clamp(0.25) end, true },
  { "leaky_relu", function(x) return x:leaky_relu(0.2) end },
  { "pow2", function(x) return x ^ 2 end }, { "pow3", function(x) return x:pow(3) end },
  { "pow_half", function(x) return x ^ 0.5 end }, { "pow_neg", function(x) return x ^ -1.5 end },
  { "rpow", function(x) return 2 ^ x end }, { "rsub", function(x) return 3 - x end, true },
  { "rdiv", function(x) return 3 / x end }, { "add_scalar", function(x) return x + 2.5 end, true },
  { "add_int", function(x) return x + 2 end, true }, { "mul_scalar", function(x) return x * -1.5 end, true },
  { "mul_int", function(x) return x * 3 end, true },
}

local BINARY = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  pow = function(a, b) return a ^ b end,
  maximum = function(a, b) return T.maximum(a, b) end, minimum = function(a, b) return a:minimum(b) end,
  eq = function(a, b) return a:eq(b) end, ne = function(a, b) return a:ne(b) end,
  lt = function(a, b) return a:lt(b) end, le = function(a, b) return a:le(b) end,
  gt = function(a, b) return a:gt(b) end, ge = function(a, b) return a:ge(b) end,
  logical_and = function(a, b) return a:logical_and(b) end, logical_or = function(a, b) return a:logical_or(b) end,
}

-- pairs of operand layouts for binary ops: base shapes and views, a then b
local PAIRS = {
  { "contiguous", { 7, 13 }, function(t) return t end, { 7, 13 }, function(t) return t end },
  { "transposed, narrowed", { 13, 7 }, function(t) return t:t() end, { 7, 20 }, function(t) return t:narrow(2, 3, 13) end },
  { "column x row", { 7, 1 }, function(t) return t end, { 1, 13 }, function(t) return t end },
  { "0-d second", { 7, 13 }, function(t) return t end, { 1 }, function(t) return t:view({}) end },
  { "0-d first", { 1 }, function(t) return t:view({}) end, { 3, 5 }, function(t) return t end },
  { "zero-size", { 0, 4 }, function(t) return t end, { 1, 4 }, function(t) return t end },
  { "3-d bias", { 2, 3, 5 }, function(t) return t end, { 5 }, function(t) return t end },
}

local REDUCE = {
  sum = function(x, d, k) return x:sum(d, k) end, mean = function(x, d, k) return x:mean(d, k) end,
  prod = function(x, d, k) return x:prod(d, k) end, amax = function(x, d, k) return x:amax(d, k) end,
  amin = function(x, d, k) return x:amin(d, k) end, logsumexp = function(x, d, k) return x:logsumexp(d, k) end,
  var = function(x, d, k) return x:var(d, k) end, std = function(x, d, k) return x:std(d, k) end,
  norm1 = function(x, d, k) return x:norm(1, d, k) end, norm2 = function(x, d, k) return x:norm(2, d, k) end,
  norm3 = function(x, d, k) return x:norm(3, d, k) end, norminf = function(x, d, k) return x:norm("inf", d, k) end,
}
local FLOAT_ONLY = { logsumexp = true, var = true, std = true, norm1 = true, norm2 = true, norm3 = true, norminf = true }

return {
  ["unary ops match the cpu on every dtype and layout"] = function()
    need_gpu()
    for _, u in ipairs(UNARY) do
      local name, f, ints = u[1], u[2], u[3]
      for _, dt in ipairs(ints and ALL or FLOATS) do
        each_layout(dt, true, function(lname, xc, xg)
          local ok, c = pcall(f, xc)
          if not ok then return end -- an op the cpu refuses for this dtype
          check(f(xg), c, name .. " " .. dt .. " " .. lname)
        end)
      end
    end
  end,

  ["float unary ops of integer inputs convert on the gpu as on the cpu"] = function()
    need_gpu()
    for _, u in ipairs(UNARY) do
      if not u[3] then
        for _, dt in ipairs(INTS) do
          local xc = values(dt, { 5, 6 }, false, 0, 9)
          check(u[2](xc:to("cuda")), u[2](xc), u[1] .. " of " .. dt)
        end
      end
    end
  end,

  ["unary derivatives match the cpu"] = function()
    need_gpu()
    for _, u in ipairs(UNARY) do
      local name, f = u[1], u[2]
      if name ~= "sign" and name ~= "logical_not" and name ~= "isfinite" then
        for _, dt in ipairs(FLOATS) do
          for _, l in ipairs({ LAYOUTS[1], LAYOUTS[2], LAYOUTS[3] }) do
            local base = values(dt, l[2], false)
            local gy = values(dt, { 7, 13 }, false)
            local function grad(dev)
              local b = (dev == "cpu" and base:clone() or base:to(dev)):requires_grad_()
              local y = f(l[3](b))
              y:backward(gy:to(dev))
              return b.grad
            end
            check(grad("cuda"), grad("cpu"), name .. "' " .. dt .. " " .. l[1], 4)
          end
        end
      end
    end
  end,

  ["binary ops match the cpu on every dtype and broadcast"] = function()
    need_gpu()
    for name, f in pairs(BINARY) do
      for _, dt in ipairs(ALL) do
        for _, p in ipairs(PAIRS) do
          local a, b = values(dt, p[2], true, -4, 4), values(dt, p[4], true, -4, 4)
          local ok, c = pcall(f, p[3](a), p[5](b))
          if ok then
            check(f(p[3](a:to("cuda")), p[5](b:to("cuda"))), c, name .. " " .. dt .. " " .. p[1], name == "pow" and 4 or 1)
          end
        end
      end
    end
  end,

  ["binary ops on mixed dtypes and in place"] = function()
    need_gpu()
    local MIX = { { "f32", "f16" }, { "bf16", "f32" }, { "i32", "f32" }, { "i64", "i32" }, { "bool", "i64" },
                  { "u8", "i32" }, { "f64", "f32" }, { "bool", "bool" }, { "u8", "bool" }, { "f16", "i64" } }
    for name, f in pairs(BINARY) do
      for _, m in ipairs(MIX) do
        local a, b = values(m[1], { 6, 5 }, false, 0, 5), values(m[2], { 6, 5 }, false, 0, 5)
        local ok, c = pcall(f, a, b)
        if ok then check(f(a:to("cuda"), b:to("cuda")), c, name .. " " .. m[1] .. " " .. m[2], 4) end
      end
    end
    -- in place: a f32 takes a f16 or an i64 operand directly (mixed dtypes in the kernel)
    for _, bdt in ipairs({ "f16", "i64", "f32" }) do
      for _, op in ipairs({ "add_", "sub_", "mul_", "div_" }) do
        local a, b = values("f32", { 4, 9 }, false), values(bdt, { 9 }, false, 1, 5)
        local ag = a:to("cuda")
        ag[op](ag, b:to("cuda"))
        a[op](a, b)
        check(ag, a, op .. " f32 by " .. bdt)
      end
    end
    -- i32 saturates through double as on the cpu; i64 adds exactly past 2^53 (not past 2^63:
    -- the cpu's loop overflows a signed integer there)
    local big = T.tensor({ 2147483647, -2147483647, 5 }, { dtype = "i32" })
    check(big:to("cuda") + big:to("cuda"), big + big, "i32 overflow")
    local huge = T.tensor({ 4611686018427387904, 3 }, { dtype = "i64" })
    check(huge:to("cuda") * 4, huge * 4, "i64 times a scalar saturates through double")
    local odd = T.tensor({ 9007199254740993, -9007199254740993 }, { dtype = "i64" })
    check(odd:to("cuda") + odd:to("cuda"), odd + odd, "i64 add exact")
    check(odd:to("cuda"):eq(odd:to("cuda") + 0), odd:eq(odd + 0), "i64 compare exact")
  end,

  ["where, fill and copy on every dtype"] = function()
    need_gpu()
    for _, dt in ipairs(ALL) do
      -- where: a bool condition broadcast against two operands
      local c = values("f32", { 7, 1 }, false):gt(0)
      local a, b = values(dt, { 7, 13 }, true), values(dt, { 13 }, true)
      check(T.where(c:to("cuda"), a:to("cuda"), b:to("cuda")), T.where(c, a, b), "where " .. dt)
      local cc = values("f32", { 13, 7 }, false):gt(0)
      local ok, wc = pcall(T.where, cc:t(), a, 2)
      if ok then check(T.where(cc:to("cuda"):t(), a:to("cuda"), 2), wc, "where strided " .. dt) end
      -- fill: values that round, wrap, saturate or are NaN, contiguous and strided
      for _, v in ipairs({ 0, 1, -1.5, 300, 1e10, -1e10, 0 / 0, math.huge, 65504.5 }) do
        local fc, fg = T.zeros({ 7, 9 }, { dtype = dt }), T.zeros({ 7, 9 }, { dtype = dt, device = "cuda" })
        fc:fill_(v)
        fg:fill_(v)
        check(fg, fc, "fill " .. dt .. " " .. tostring(v))
        fc:t():narrow(1, 2, 4):fill_(v + 1)
        fg:t():narrow(1, 2, 4):fill_(v + 1)
        check(fg, fc, "strided fill " .. dt .. " " .. tostring(v))
      end
      check(T.full({ 0, 3 }, 2, { dtype = dt, device = "cuda" }), T.full({ 0, 3 }, 2, { dtype = dt }), "empty fill")
      -- copy: to every other dtype, from every layout
      for _, dt2 in ipairs(ALL) do
        each_layout(dt, true, function(lname, xc, xg)
          check(xg:to(dt2), xc:to(dt2), "copy " .. dt .. " -> " .. dt2 .. " " .. lname)
        end)
      end
      each_layout(dt, true, function(lname, xc, xg)
        check(xg:contiguous(), xc:contiguous(), "contiguous " .. dt .. " " .. lname)
        check(xg:to("cpu"):to("cuda"), xc, "to cpu and back " .. dt .. " " .. lname)
      end)
      -- copy_ with a broadcast source into a strided destination
      local dc = values(dt, { 13, 7 }, false)
      local dg = dc:to("cuda")
      local src = values(dt, { 7, 1 }, false)
      dc:t():copy_(src)
      dg:t():copy_(src:to("cuda"))
      check(dg, dc, "copy_ broadcast " .. dt)
    end
  end,

  ["elementwise ops over a million elements"] = function()
    need_gpu()
    local x = values("f32", { 1000003 }, true)
    local xg = x:to("cuda")
    check(xg:exp(), x:exp(), "exp 1000003")
    check(xg * 2, x * 2, "mul_scalar 1000003")
    check(xg + xg, x + x, "add 1000003")
    local h = x:to("f16")
    check(h:to("cuda"):sigmoid(), h:sigmoid(), "sigmoid f16 1000003")
    local m = values("f32", { 1001, 999 }, false)
    check(m:to("cuda"):t() + m:to("cuda"):t(), m:t() + m:t(), "transposed add")
  end,

  ["reductions match the cpu over any dims, dtypes and layouts"] = function()
    need_gpu()
    local XS = {
      { "contiguous", { 5, 6, 7 }, function(t) return t end },
      { "permuted", { 7, 5, 6 }, function(t) return t:permute(2, 3, 1) end },
      { "narrowed", { 5, 9, 7 }, function(t) return t:narrow(2, 2, 6) end },
      { "expanded", { 5, 1, 7 }, function(t) return t:expand(5, 6, 7) end },
    }
    local DIMS = { { nil, false }, { 1, false }, { 2, true }, { 3, false }, { { 1, 3 }, false }, { { 2, 3 }, true },
                   { { 1, 2, 3 }, true } }
    for name, f in pairs(REDUCE) do
      for _, dt in ipairs(FLOAT_ONLY[name] and FLOATS or ALL) do
        for _, l in ipairs(XS) do
          for _, special in ipairs({ false, true }) do
            local base = values(dt, l[2], special, name == "prod" and -2 or nil, name == "prod" and 2 or nil)
            if name == "prod" and is_float(dt) then base = (base * 0.3 + 1):to(dt) end
            local xc, xg = l[3](base), l[3](base:to("cuda"))
            for _, d in ipairs(DIMS) do
              local ok, c = pcall(f, xc, d[1], d[2])
              if ok then
                local msg = string.format("%s %s %s %s dims %s keep %s", name, dt, l[1], special and "special" or "",
                  type(d[1]) == "table" and table.concat(d[1], ",") or tostring(d[1]), tostring(d[2]))
                check(f(xg, d[1], d[2]), c, msg, 8)
              end
            end
          end
        end
      end
    end
  end,

  ["reductions of zero-size, one-element and long rows"] = function()
    need_gpu()
    for _, dt in ipairs(FLOATS) do
      local z = T.zeros({ 0, 4 }, { dtype = dt })
      for _, name in ipairs({ "sum", "mean", "prod", "logsumexp" }) do
        check(REDUCE[name](z:to("cuda"), 1), REDUCE[name](z, 1), name .. " over an empty dim " .. dt)
        check(REDUCE[name](z:to("cuda"), 2), REDUCE[name](z, 2), name .. " of no rows " .. dt)
        check(REDUCE[name](z:to("cuda")), REDUCE[name](z), name .. " of nothing " .. dt)
      end
      local one = values(dt, { 1 }, false)
      for name, f in pairs(REDUCE) do check(f(one:to("cuda")), f(one), name .. " of one " .. dt) end
    end
    -- many elements: split into segments and reduced again, in a fixed order
    local big = values("f32", { 1000003 }, false)
    local bg = big:to("cuda")
    for _, name in ipairs({ "sum", "mean", "amax", "amin", "logsumexp", "norm2", "norminf" }) do
      check(REDUCE[name](bg), REDUCE[name](big), name .. " of 1000003", 10)
    end
    check(bg:argmax(), big:argmax(), "argmax of 1000003")
    check(bg:argmin(), big:argmin(), "argmin of 1000003")
    local s1, s2 = bg:sum():item(), bg:sum():item()
    assert(s1 == s2, "sum not deterministic")
    -- columns (reduced dim strided, kept dim unit-stride) and rows, long and short
    for _, shape in ipairs({ { 20000, 5 }, { 5, 20000 }, { 3, 40000, 2 }, { 70, 3 } }) do
      local x = values("f32", shape, false)
      local xg = x:to("cuda")
      for d = 1, #shape do
        check(xg:sum(d), x:sum(d), "sum dim " .. d .. " of " .. shape_str(x), 10)
        check(xg:amax(d), x:amax(d), "amax dim " .. d .. " of " .. shape_str(x))
        local vg, ig = xg:max(d)
        local vc, ic = x:max(d)
        check(vg, vc, "max values dim " .. d .. " of " .. shape_str(x))
        check(ig, ic, "max indices dim " .. d .. " of " .. shape_str(x))
      end
    end
  end,

  ["max and min with indices: ties, NaN, every dtype"] = function()
    need_gpu()
    for _, dt in ipairs(ALL) do
      for _, special in ipairs({ false, true }) do
        local x = values(dt, { 6, 11 }, special, 0, 3)
        for _, v in ipairs({ x, x:t(), x:narrow(2, 3, 5) }) do
          local vg = v:to("cuda")
          for d = 1, 2 do
            for _, op in ipairs({ "max", "min" }) do
              local a, ai = vg[op](vg, d)
              local b, bi = v[op](v, d)
              check(a, b, op .. " values " .. dt .. " dim " .. d)
              check(ai, bi, op .. " indices " .. dt .. " dim " .. d)
              local ka, kai = vg[op](vg, d, true)
              local kb, kbi = v[op](v, d, true)
              check(ka, kb, op .. " keepdim " .. dt)
              check(kai, kbi, op .. " keepdim indices " .. dt)
            end
            check(vg:argmax(d), v:argmax(d), "argmax " .. dt .. " dim " .. d)
            check(vg:argmin(d, true), v:argmin(d, true), "argmin " .. dt .. " dim " .. d)
          end
          check(vg:argmax(), v:argmax(), "argmax all " .. dt)
        end
      end
    end
    -- long rows, split across threads and segments: ties everywhere, and NaNs far apart
    local ties = values("i32", { 2, 100003 }, false, 0, 3)
    local nan = values("f32", { 3, 70001 }, false)
    nan[1][50001] = 0 / 0
    nan[1][60001] = 0 / 0
    nan[2][70001] = 0 / 0
    nan[3][1] = 0 / 0
    for _, x in ipairs({ ties, nan, ties:t(), nan:t():contiguous():t() }) do
      local xg = x:to("cuda")
      for _, op in ipairs({ "max", "min" }) do
        local a, ai = xg[op](xg, 2)
        local b, bi = x[op](x, 2)
        check(a, b, op .. " long rows " .. x.dtype)
        check(ai, bi, op .. " long rows indices " .. x.dtype)
        check(xg:argmax(), x:argmax(), "argmax all long " .. x.dtype)
        check(xg:argmin(), x:argmin(), "argmin all long " .. x.dtype)
      end
    end
  end,

  ["total_norm matches the cpu"] = function()
    need_gpu()
    for _, dt in ipairs(FLOATS) do
      local xs = { values(dt, { 7, 13 }, false), values(dt, { 1000 }, false), values(dt, { 3, 0 }, false) }
      local gs = {}
      for i, x in ipairs(xs) do gs[i] = x:to("cuda") end
      for _, p in ipairs({ 1, 2, 3, math.huge }) do
        local a, b = T._optim.total_norm(gs, p), T._optim.total_norm(xs, p)
        assert(math.abs(a - b) <= 1e-9 * math.abs(b), string.format("total_norm %s p=%g: %.17g vs %.17g", dt, p, a, b))
      end
      local n = { values(dt, { 9 }, true) }
      local a, b = T._optim.total_norm({ n[1]:to("cuda") }, math.huge), T._optim.total_norm(n, math.huge)
      assert(a ~= a and b ~= b, "total_norm inf with NaN: " .. a .. " vs " .. b)
    end
  end,
}
