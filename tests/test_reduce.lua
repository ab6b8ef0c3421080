-- test_reduce.lua: reductions over any set of dims, with and without keepdim (sum, mean,
-- var, std, amax, amin, logsumexp, norm, prod), max/min with 1-based indices, argmax and
-- argmin, against PyTorch (tests/ref/core_ref.lua), with f64 gradchecks.
local T = require "tocha"
local shape_is = T.testing.shape_is
local REF = dofile(T.testing.path("ref/core_ref.lua")).reduce
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

local errors = T.testing.assert_raises

-- each fixture reduction as tocha computes it, over dims d (nil: all) with keepdim k
local OPS = {
  sum = function(x, d, k) return x:sum(d, k) end,
  mean = function(x, d, k) return x:mean(d, k) end,
  var = function(x, d, k) return x:var(d, k) end,
  var0 = function(x, d, k) return x:var(d, k, { correction = 0 }) end,
  std = function(x, d, k) return x:std(d, k) end,
  amax = function(x, d, k) return x:amax(d, k) end,
  amin = function(x, d, k) return x:amin(d, k) end,
  logsumexp = function(x, d, k) return x:logsumexp(d, k) end,
  norm2 = function(x, d, k) return x:norm(2, d, k) end,
  norm1 = function(x, d, k) return x:norm(1, d, k) end,
  norm3 = function(x, d, k) return x:norm(3, d, k) end,
  norminf = function(x, d, k) return x:norm("inf", d, k) end,
  prod = function(x, d, k) return x:prod(d, k) end,
}

local function input(name)
  return T.tensor(name == "prod" and REF.xq or REF.x, { dtype = "f64" }):view(REF.shape)
end

return {
  ["reductions over any dims match PyTorch"] = function()
    for key, c in pairs(REF.cases) do
      for name, f in pairs(OPS) do
        local x = input(name)
        local y = f(x, c.dims, c.keepdim)
        assert(shape_is(y, c.shape), key .. " " .. name .. ": shape [" .. table.concat(y.shape, ", ") .. "]")
        close(y, c[name], { rtol = 1e-12, atol = 1e-14, msg = key .. " " .. name })
        -- a permuted copy of the input, reduced over the matching dims, gives the same
        local xp = x:permute(3, 1, 2):contiguous():permute(2, 3, 1)
        close(f(xp, c.dims, c.keepdim), c[name], { rtol = 1e-12, atol = 1e-14, msg = key .. " " .. name .. " strided" })
        close(f(x:float(), c.dims, c.keepdim), c[name], { rtol = 2e-5, atol = 1e-5, msg = key .. " " .. name .. " f32" })
      end
    end
  end,

  ["max and min along a dim give values and 1-based indices"] = function()
    local x = input("max")
    for key, c in pairs(REF.along) do
      local v, i = x:max(c.dim, c.keepdim)
      assert(shape_is(v, c.shape) and shape_is(i, c.shape) and i.dtype == "i64", key)
      close(v, c.max, { rtol = 0, atol = 0 })
      close(i, c.max_idx, { rtol = 0, atol = 0 })
      v, i = x:min(c.dim, c.keepdim)
      close(v, c.min, { rtol = 0, atol = 0 })
      close(i, c.min_idx, { rtol = 0, atol = 0 })
      close(x:argmax(c.dim, c.keepdim), c.argmax, { rtol = 0, atol = 0 })
      close(x:argmin(c.dim, c.keepdim), c.argmin, { rtol = 0, atol = 0 })
      assert(shape_is(x:argmax(c.dim, c.keepdim), c.shape))
    end
    assert(x:argmax():item() == REF.argmax and x:argmin():item() == REF.argmin)
    assert(x:argmax():dim() == 0 and x:max():dim() == 0)
    close(x:max(), { REF.cases.all.amax[1] })
    -- the negative dim, and ties: the first index, as PyTorch
    local v, i = x:max(-1)
    close(i, REF.along.d3.max_idx)
    local t = T.tensor({ { 1, 3, 3 }, { 2, 2, 0 } })
    v, i = t:max(2)
    close(v, { 3, 2 }); close(i, { 2, 1 })
    assert(T.tensor({ 1, 0 / 0, 5 }):max():item() ~= T.tensor({ 1, 0 / 0, 5 }):max():item()) -- NaN propagates
    local s = T.tensor(4.0, { requires_grad = true })
    local sv, si = s:max(1)
    assert(sv:item() == 4 and si:item() == 1 and sv.requires_grad)
  end,

  ["reduction gradients (f64 gradcheck)"] = function()
    local x = T.randn(3, 4, 5, { dtype = "f64", requires_grad = true })
    local xq = (T.rand(3, 4, 5, { dtype = "f64" }) + 0.5):requires_grad_()
    for _, dims in ipairs({ false, 1, { 2 }, -1, { 1, 3 }, { 1, 2, 3 } }) do
      for _, keep in ipairs({ false, true }) do
        local d = dims or nil
        for name, f in pairs(OPS) do
          local inp = name == "prod" and xq or x
          local ok, msg = gradcheck(function(a) return f(a, d, keep) end, { inp }, { raise = false })
          assert(ok, name .. " dims " .. tostring(dims) .. " keep " .. tostring(keep) .. ": " .. tostring(msg))
        end
      end
    end
    -- strided inputs
    assert(gradcheck(function(a) return a:transpose(1, 3):sum({ 1, 2 }) end, { x }))
    assert(gradcheck(function(a) return a:narrow(2, 2, 2):var(3, true) end, { x }))
    -- max/min along a dim route the gradient to the chosen element
    assert(gradcheck(function(a) return (a:max(2)) end, { x }))
    assert(gradcheck(function(a) return (a:min(-1, true)) end, { x }))
    assert(gradcheck(function(a) return (a:t():max(1)) end, { T.randn(4, 3, { dtype = "f64", requires_grad = true }) }))
  end,

  ["gradients at ties and zeros follow PyTorch"] = function()
    local x = T.tensor({ { 1, 5, 5 }, { 2, 0, 7 } }, { dtype = "f64", requires_grad = true })
    x:amax(2):sum():backward() -- ties share the gradient
    close(x.grad, { { 0, 0.5, 0.5 }, { 0, 0, 1 } })
    x.grad = nil
    local v = x:max(2) -- max(dim) gives it all to the chosen index
    v:sum():backward()
    close(x.grad, { { 0, 1, 0 }, { 0, 0, 1 } })
    -- prod with zeros: the product of the others
    local p = T.tensor({ { 2, 0, 3 }, { 0, 0, 4 }, { 1, 2, 3 } }, { dtype = "f64", requires_grad = true })
    p:prod(2):sum():backward()
    close(p.grad, { { 0, 6, 0 }, { 0, 0, 0 }, { 6, 3, 2 } })
    assert(gradcheck(function(a) return a:prod(1) end, { T.tensor({ { 2, 0, 3 }, { 0.5, 1.5, -2 } },
      { dtype = "f64", requires_grad = true }) }))
    local all = T.tensor({ 2, 0, 3 }, { dtype = "f64", requires_grad = true })
    all:prod():backward()
    close(all.grad, { 0, 6, 0 })
  end,

  ["reductions of empty, 0-d and integer tensors"] = function()
    local e = T.zeros(0, 3)
    assert(e:sum():item() == 0 and shape_is(e:sum(1), { 3 }) and e:prod():item() == 1)
    assert(e:mean():item() ~= e:mean():item()) -- NaN, as PyTorch
    assert(e:logsumexp():item() == -math.huge and shape_is(e:amax(2), { 0 }))
    errors("max: cannot reduce over an empty dimension", function() return e:amax() end)
    errors("max: cannot reduce over an empty dimension", function() return e:max(1) end)
    local s = T.tensor(3.0)
    assert(s:sum():item() == 3 and s:sum(1):item() == 3 and s:mean(-1, true):dim() == 0)
    assert(s:argmax():item() == 1 and s:amax():item() == 3)
    local i = T.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "i32" })
    assert(i:sum().dtype == "i64" and i:sum():item() == 10 and i:sum(1):tolist()[2] == 6)
    assert(i:prod():item() == 24 and i:mean().dtype == "f32" and i:mean():item() == 2.5)
    assert(i:amax().dtype == "i32" and i:amax():item() == 4 and i:argmax():item() == 4)
    local b = T.tensor({ true, true, false })
    assert(b:sum():item() == 2 and b:sum().dtype == "i64")
    -- a long f32 sum stays accurate (accumulated in double)
    local n = 1000003
    close(T.full({ n }, 0.1):sum(), { n * 0.1 }, { rtol = 1e-6 })
    close(T.ones(3, 40000):sum(1), T.full({ 40000 }, 3))
  end,

  ["f32 sums of contiguous runs of every length match f64, whole and per row"] = function()
    -- lengths around the 64-element vectors and the 2,048-element blocks of the f32 sum
    for _, n in ipairs({ 1, 5, 63, 64, 65, 127, 2047, 2048, 2049, 6150, 100003 }) do
      local x = T.randn({ n }) + 0.25
      local ref = x:double():sum():item()
      local tol = 1e-6 * (x:double():abs():sum():item() + 1)
      local s = x:sum():item()
      assert(math.abs(s - ref) <= tol, string.format("n %d: %.9g against %.9g", n, s, ref))
      close(x:mean(), { ref / n }, { rtol = 1e-5, atol = 1e-6, msg = "mean " .. n })
    end
    -- rows of 131 (a run each), a strided view of them, and values far from 0
    local x = T.randn({ 7, 3, 131 }) * 10 + 1000
    close(x:sum(3), x:double():sum(3), { rtol = 1e-6 })
    close(x:transpose(1, 2):sum({ 1, 3 }), x:double():transpose(1, 2):sum({ 1, 3 }), { rtol = 1e-6 })
    close(x:narrow(3, 2, 100):sum(3), x:double():narrow(3, 2, 100):sum(3), { rtol = 1e-6 })
  end,

  ["omitted optional arguments take their defaults"] = function()
    local x = T.randn(3, 4)
    assert(shape_is(x:argmax(2), { 3 }) and shape_is(x:argmin(1), { 4 }) and shape_is(x:argmax(), {}))
    assert(shape_is(x:norm(2, 1), { 4 }) and shape_is(x:norm(), {}) and shape_is(x:norm(1), {}))
    assert(shape_is(x:sum(2), { 3 }) and shape_is(x:mean(1), { 4 }) and shape_is(x:amax(2), { 3 }))
    assert(shape_is(x:var(2), { 3 }) and shape_is(x:std(), {}) and shape_is(x:logsumexp(1), { 4 }))
    assert(shape_is(x:prod(2), { 3 }) and shape_is((x:max(2)), { 3 }) and shape_is(x:max(), {}))
    close(x:var(2, { unbiased = false }), x:var(2, false, { correction = 0 }))
    close(x:std(1, true), x:std(1, true, { correction = 1 }))
    assert(shape_is(x:std(1, true), { 1, 4 }) and shape_is(x:argmax(2, true), { 3, 1 }))
  end,

  ["reduction argument errors"] = function()
    local x = T.zeros(2, 3)
    errors("sum: dimension 3 out of range for a 2-d tensor", x.sum, x, 3)
    errors("sum: dimension 1 repeated", x.sum, x, { 1, -2 })
    errors("dimension 0 is invalid", x.sum, x, 0)
    errors("mean: dimension -3 out of range", x.mean, x, -3)
    errors("max: dimension 5 out of range", x.max, x, 5)
    errors("argmin: dimension 3 out of range", x.argmin, x, 3)
    errors("norm: p must be positive or inf", x.norm, x, -1)
    errors("p must be a number, \"fro\" or \"inf\"", x.norm, x, "nuc")
  end,
}
