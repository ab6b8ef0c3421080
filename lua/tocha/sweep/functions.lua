-- tocha.sweep.functions: standard test functions for search strategies, each with its space
-- and known minimum: Branin (2-d) and Hartmann-6 (6-d). The sweep tests and bench/sweep.lua
-- compare strategies on them.
local space = require "tocha.sweep.space"
local rng = require "tocha.sweep.rng"

local functions = {}

--- functions.branin(x1, x2): three global minima of 0.397887, on x1 in [-5, 10], x2 in [0, 15]
functions.branin = {
  minimum = 0.39788735772973816,
  space = { x1 = space.uniform(-5, 10), x2 = space.uniform(0, 15) },
  f = function(p)
    local a, b, c = 1, 5.1 / (4 * math.pi ^ 2), 5 / math.pi
    local r, s, t = 6, 10, 1 / (8 * math.pi)
    return a * (p.x2 - b * p.x1 ^ 2 + c * p.x1 - r) ^ 2 + s * (1 - t) * math.cos(p.x1) + s
  end,
}

local ALPHA = { 1.0, 1.2, 3.0, 3.2 }
local A = {
  { 10, 3, 17, 3.5, 1.7, 8 }, { 0.05, 10, 17, 0.1, 8, 14 },
  { 3, 3.5, 1.7, 10, 17, 8 }, { 17, 8, 0.05, 10, 0.1, 14 },
}
local P = {
  { 0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886 }, { 0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991 },
  { 0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650 }, { 0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381 },
}

--- functions.hartmann6(x1..x6): a minimum of -3.32237 on [0, 1]^6
functions.hartmann6 = {
  minimum = -3.3223680114155147,
  space = {},
  f = function(p)
    local total = 0
    for i = 1, 4 do
      local s = 0
      for j = 1, 6 do s = s + A[i][j] * (p["x" .. j] - P[i][j]) ^ 2 end
      total = total - ALPHA[i] * math.exp(-s)
    end
    return total
  end,
}
for j = 1, 6 do functions.hartmann6.space["x" .. j] = space.uniform(0, 1) end

--- functions.minimize(fn, strategy, seed, trials) -> the best value the strategy finds for
--- fn in that many trials, proposing as a sweep does (one generator per trial number)
function functions.minimize(fn, strategy, seed, trials)
  local list = space.compile(fn.space)
  local history, best = {}, math.huge
  for number = 1, trials do
    local p = strategy:suggest(list, history, rng.new(seed, number), { goal = "min" })
    local v = fn.f(p)
    history[number] = { number = number, params = p, value = v, state = "done" }
    best = math.min(best, v)
  end
  return best
end

return functions
