-- test_random.lua: the Philox stream: manual_seed reproducibility, get/set_rng_state resuming
-- the exact stream, the values against the reference Philox (tests/ref/core_ref.lua), sane
-- statistics, and rand/randn/randint/randperm/multinomial and the in-place fills.
local T = require "tocha"
local REF = dofile(T.testing.path("ref/core_ref.lua"))
local close = T.testing.assert_close

local errors = T.testing.assert_raises

local function same(a, b) return a:storage_id() ~= b:storage_id() and a:eq(b):logical_not():sum():item() == 0 end

return {
  ["manual_seed reproduces, and the stream is the reference Philox's"] = function()
    T.manual_seed(42)
    local a = T.rand(10)
    close(a, REF.rand_seed42_f32, { rtol = 0, atol = 0 })
    T.manual_seed(7)
    close(T.randn(10, { dtype = "f64" }), REF.randn_seed7_f64, { rtol = 1e-14, atol = 1e-14 })
    T.manual_seed(42)
    assert(same(T.rand(10), a))
    T.manual_seed(43)
    assert(not same(T.rand(10), a))
    -- the same seed gives the same numbers whatever the shape they are drawn in
    T.manual_seed(42)
    close(T.rand(2, 5):view(10), a, { rtol = 0, atol = 0 })
    -- successive draws continue the stream: 10 numbers use 3 counters
    T.manual_seed(42)
    T.rand(10)
    assert(T.get_rng_state().offset == 3 and T.get_rng_state().seed == 42)
  end,

  ["get_rng_state / set_rng_state resume the exact stream"] = function()
    T.manual_seed(1234)
    T.randn(7)
    local state = T.get_rng_state()
    local x1, x2, x3 = T.randn(5, 3), T.rand(4, { dtype = "f64" }), T.randint(0, 100, { 6 })
    T.randn(1000) -- wander off
    T.set_rng_state(state)
    assert(same(T.randn(5, 3), x1) and same(T.rand(4, { dtype = "f64" }), x2) and same(T.randint(0, 100, { 6 }), x3))
    -- a resumed run draws what an uninterrupted one draws
    T.manual_seed(99)
    local whole = T.rand(8)
    T.manual_seed(99)
    local first = T.rand(4)
    local saved = T.get_rng_state()
    T.manual_seed(5)
    T.set_rng_state(saved)
    local second = T.rand(4)
    close(first, whole:narrow(1, 1, 4), { rtol = 0, atol = 0 })
    close(second, whole:narrow(1, 5, 4), { rtol = 0, atol = 0 })
    -- the state is plain integers, for checkpoints
    assert(math.type(saved.seed) == "integer" and math.type(saved.offset) == "integer")
    T.manual_seed(-1) -- any 64-bit seed
    local s = T.get_rng_state()
    T.rand(3)
    T.set_rng_state(s)
    assert(T.get_rng_state().seed == -1)
  end,

  ["values are statistically sane"] = function()
    T.manual_seed(3)
    local n = 100000
    local z = T.randn(n, { dtype = "f64" })
    assert(math.abs(z:mean():item()) < 0.02, "randn mean " .. z:mean():item())
    assert(math.abs(z:std():item() - 1) < 0.02, "randn std " .. z:std():item())
    assert(math.abs((z * z * z):mean():item()) < 0.05) -- skewness
    assert(math.abs((z ^ 4):mean():item() - 3) < 0.1)   -- kurtosis
    local u = T.rand(n)
    assert(u:amin():item() >= 0 and u:amax():item() < 1)
    assert(math.abs(u:mean():item() - 0.5) < 0.01 and math.abs(u:var():item() - 1 / 12) < 0.005)
    for _, dt in ipairs({ "f16", "bf16", "f64" }) do
      local v = T.rand(n, { dtype = dt })
      assert(v:amin():item() >= 0 and v:amax():item() < 1, dt .. " rand reaches 1")
      assert(math.abs(v:float():mean():item() - 0.5) < 0.01, dt)
    end
    local m = T.randn(n) * 3 + 2
    assert(math.abs(m:mean():item() - 2) < 0.05 and math.abs(m:std():item() - 3) < 0.05)
    -- neighbours are uncorrelated
    local a, b = z:narrow(1, 1, n - 1), z:narrow(1, 2, n - 1)
    assert(math.abs((a * b):mean():item()) < 0.02)
  end,

  ["in-place fills: uniform_, normal_, also on strided tensors"] = function()
    T.manual_seed(5)
    local x = T.zeros(1000):uniform_(-2, 3)
    assert(x:amin():item() >= -2 and x:amax():item() < 3 and math.abs(x:mean():item() - 0.5) < 0.2)
    local y = T.zeros(2000):normal_(10, 0.5)
    assert(math.abs(y:mean():item() - 10) < 0.05 and math.abs(y:std():item() - 0.5) < 0.05)
    -- a strided tensor is filled in its logical (row-major) order
    T.manual_seed(8)
    local plain = T.zeros(3, 4):uniform_()
    T.manual_seed(8)
    local t = T.zeros(4, 3):t()
    t:uniform_()
    close(t, plain, { rtol = 0, atol = 0 })
    local base = T.zeros(4, 6)
    base:narrow(2, 2, 3):normal_()
    assert(base:select(2, 1):abs():sum():item() == 0 and base:select(2, 2):abs():sum():item() > 0)
    errors("uniform_: a leaf tensor that requires grad", function() T.zeros(3, { requires_grad = true }):uniform_() end)
    T.no_grad(function() T.zeros(3, { requires_grad = true }):normal_() end)
    assert(T.rand_like(T.zeros(2, 3, { dtype = "f64" })).dtype == "f64" and T.randn_like(T.zeros(4)):numel() == 4)
  end,

  ["randint and randperm"] = function()
    T.manual_seed(11)
    local r = T.randint(-3, 4, { 10000 })
    assert(r.dtype == "i64" and r:amin():item() == -3 and r:amax():item() == 3)
    for v = -3, 3 do
      local frac = r:eq(v):sum():item() / 10000
      assert(math.abs(frac - 1 / 7) < 0.02, "randint value " .. v .. ": " .. frac)
    end
    assert(T.randint(5, { 2, 3 }):amax():item() < 5 and T.randint(5, { 2, 3 }).shape[2] == 3)
    assert(T.randint(0, 10, { 4 }, { dtype = "f32" }).dtype == "f32")
    local p = T.randperm(50)
    assert(p.dtype == "i64" and p:numel() == 50)
    local sorted = p:tolist()
    table.sort(sorted)
    for i = 1, 50 do assert(sorted[i] == i, "randperm is a permutation of 1..n") end
    assert(T.randperm(0):numel() == 0 and T.randperm(1):item() == 1)
    T.manual_seed(2)
    local q = T.randperm(20)
    T.manual_seed(2)
    assert(same(T.randperm(20), q))
    -- every position is uniform: position 1 over many permutations
    local counts = {}
    for _ = 1, 2000 do
      local v = T.randperm(4)[1]:item()
      counts[v] = (counts[v] or 0) + 1
    end
    for v = 1, 4 do assert(math.abs(counts[v] / 2000 - 0.25) < 0.04, "randperm bias") end
    errors("randperm: n must be non-negative", T.randperm, -1)
  end,

  ["multinomial"] = function()
    T.manual_seed(21)
    local probs = T.tensor({ 0.1, 0, 0.6, 0.3 })
    local s = T.multinomial(probs, 20000, true)
    assert(s.dtype == "i64" and s:numel() == 20000 and s:eq(2):sum():item() == 0)
    for c, p in pairs({ [1] = 0.1, [3] = 0.6, [4] = 0.3 }) do
      assert(math.abs(s:eq(c):sum():item() / 20000 - p) < 0.015, "category " .. c)
    end
    -- without replacement: distinct, never a zero-weight category
    for _ = 1, 50 do
      local d = T.multinomial(probs, 3, false):tolist()
      table.sort(d)
      assert(d[1] == 1 and d[2] == 3 and d[3] == 4)
    end
    -- rows of a 2-d tensor, unnormalised weights
    local rows = T.multinomial(T.tensor({ { 0, 5 }, { 7, 0 } }), 4, true)
    close(rows, { { 2, 2, 2, 2 }, { 1, 1, 1, 1 } })
    T.manual_seed(4)
    local m1 = T.multinomial(probs, 5, true)
    T.manual_seed(4)
    assert(same(T.multinomial(probs, 5, true), m1))
    errors("multinomial: cannot draw 4 samples without replacement from 3 categories of non-zero probability",
      T.multinomial, probs, 4, false)
    errors("multinomial: probabilities must be finite and non-negative", T.multinomial, T.tensor({ 1, -1 }), 1)
    errors("multinomial: probabilities must be finite and non-negative", T.multinomial, T.tensor({ 1, 0 / 0 }), 1)
    errors("multinomial: a row of probabilities sums to zero", T.multinomial, T.zeros(3), 1)
    errors("multinomial: probabilities must be 1-d or 2-d", T.multinomial, T.ones(2, 2, 2), 1)
    errors("multinomial: need a non-negative number of samples and at least one category", T.multinomial, T.ones(0), 1)
  end,
}
