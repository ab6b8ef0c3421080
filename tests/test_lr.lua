-- test_lr.lua: tocha.lr schedules against diffusers' get_scheduler (tests/ref/lr_ref.lua, made by
-- gen_lr.py) at every step, the composition helpers, hand-written schedules, and bad input.
local T = require "tocha"
local lr = require "tocha.lr"
local optim = require "tocha.optim"
local ref = dofile(T.testing.path("ref/lr_ref.lua"))

local LR = ref.lr

-- f(s) == expected[s + 1] for every recorded step (the same floating-point operations: exact)
local function matches(name, f, expected)
  for i, e in ipairs(expected) do
    local v = f(i - 1)
    if v ~= e then error(string.format("%s: step %d gives %.17g, diffusers %.17g", name, i - 1, v, e), 2) end
  end
end

local tests = {}

tests["every diffusers get_scheduler kind, at every step (exact)"] = function()
  local c = ref.cases
  matches("constant", lr.constant{ lr = LR }, c.constant)
  matches("constant_with_warmup", lr.constant{ lr = LR, warmup = 30 }, c.constant_with_warmup)
  matches("linear", lr.linear{ lr = LR, steps = 250, warmup = 30 }, c.linear)
  matches("linear_no_warmup", lr.linear{ lr = LR, steps = 250 }, c.linear_no_warmup)
  matches("cosine", lr.cosine{ lr = LR, steps = 250, warmup = 30 }, c.cosine)
  matches("cosine_no_warmup", lr.cosine{ lr = LR, steps = 250 }, c.cosine_no_warmup)
  matches("cosine_with_restarts", lr.cosine_restarts{ lr = LR, steps = 250, cycles = 3, warmup = 30 },
    c.cosine_with_restarts)
  matches("polynomial", lr.polynomial{ lr = LR, steps = 250, power = 2, warmup = 30 }, c.polynomial)
  matches("polynomial_linear", lr.polynomial{ lr = LR, steps = 250, warmup = 10 }, c.polynomial_linear)
  matches("piecewise_constant", lr.piecewise{ boundaries = { 40, 100, 200 },
    values = { LR * 1, LR * 0.5, LR * 0.1, LR * 0.01 } }, c.piecewise_constant)
end

tests["positional options equal named ones"] = function()
  local a, b = lr.linear{ 1e-4, 1000, 1e-5 }, lr.linear{ lr = 1e-4, steps = 1000, end_lr = 1e-5 }
  for s = 0, 1100, 7 do assert(a(s) == b(s)) end
  assert(lr.constant(0.5)(10) == 0.5)
  -- end_lr: the linear schedule lands on it and stays there
  assert(math.abs(b(1000) - 1e-5) < 1e-20 and b(5000) == b(1000))
end

tests["lr.warmup of any schedule equals the built-in warmup"] = function()
  local built = lr.cosine{ lr = LR, steps = 250, warmup = 30 }
  local composed = lr.warmup(lr.cosine{ lr = LR, steps = 220 }, 30)
  for s = 0, 300 do assert(built(s) == composed(s), "step " .. s) end
  matches("warmup(cosine)", composed, ref.cases.cosine)
  -- a hand-written schedule composes the same way
  local mine = function(s) return 1e-3 / math.sqrt(1 + s) end
  local w = lr.warmup(mine, 10)
  assert(w(0) == 0 and w(5) == 1e-3 * 0.5 and w(10) == 1e-3 and w(13) == mine(3))
end

tests["lr.chain runs each schedule from 0 at its boundary"] = function()
  local up = lr.linear{ lr = 1, steps = 1, end_lr = 1 }              -- constant 1
  local f = lr.chain{ function(s) return s / 10 end, up, lr.exponential{ lr = 1, gamma = 0.5 }, boundaries = { 10, 20 } }
  assert(f(0) == 0 and f(9) == 0.9)
  assert(f(10) == 1 and f(19) == 1)
  assert(f(20) == 1 and f(21) == 0.5 and f(23) == 0.125)
end

tests["exponential and piecewise"] = function()
  local e = lr.exponential{ lr = 0.1, gamma = 0.9 }
  assert(e(0) == 0.1 and math.abs(e(2) - 0.1 * 0.81) < 1e-17)
  local st = lr.exponential{ lr = 1, gamma = 0.5, every = 10, staircase = true }
  assert(st(9) == 1 and st(10) == 0.5 and st(25) == 0.25)
  local smooth = lr.exponential{ lr = 1, gamma = 0.5, every = 10 }
  assert(math.abs(smooth(5) - 0.5 ^ 0.5) < 1e-15)
  local p = lr.piecewise{ boundaries = { 5, 10 }, values = { 3, 2, 1 } }
  assert(p(0) == 3 and p(4) == 3 and p(5) == 2 and p(9) == 2 and p(10) == 1 and p(1e6) == 1)
end

tests["a schedule drives the optimizer: set_lr(f(step)) before each step"] = function()
  local w = T.zeros({ 3 }, { requires_grad = true })
  local opt = optim.SGD({ w }, { lr = 123 })
  local f = lr.cosine{ lr = 0.1, steps = 5, warmup = 2 }
  local used = {}
  for step = 0, 5 do
    opt:set_lr(f(step))
    used[#used + 1] = opt.lr
    w.grad = T.ones({ 3 })
    opt:step()
  end
  local total = 0
  for s, v in ipairs(used) do assert(v == f(s - 1)); total = total + v end
  assert(math.abs(w[1]:item() + total) < 1e-6)
end

tests["bad options give clear errors"] = function()
  local fails = T.testing.raises
  fails("lr.cosine: steps is required", lr.cosine, { lr = 1 })
  fails('lr.linear: unknown option "warmup_steps"', lr.linear, { lr = 1, steps = 10, warmup_steps = 3 })
  fails("lr.linear: steps must be an integer", lr.linear, { lr = 1, steps = 10.5 })
  fails("lr.constant: lr must be a number", lr.constant, { lr = "big" })
  fails("lr.cosine: warmup must be a non-negative integer", lr.cosine, { lr = 1, steps = 10, warmup = -1 })
  fails("end_lr (1) must be smaller than lr (1)", lr.polynomial, { lr = 1, steps = 10, end_lr = 1 })
  fails("n + 1 values", lr.piecewise, { boundaries = { 1, 2 }, values = { 1, 2 } })
  fails("n schedules need n - 1 boundaries", lr.chain, { lr.constant(1), lr.constant(2) })
  fails("lr.warmup: expected a schedule", lr.warmup, 3, 10)
  fails("the step must be a number", lr.constant(1), "x")
end

return tests
