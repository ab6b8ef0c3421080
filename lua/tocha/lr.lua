-- tocha.lr: learning-rate schedules. A schedule is a plain Lua function step -> lr, where step
-- counts the optimizer steps already taken (0, 1, ...): opt:set_lr(f(step)) before opt:step().
-- The builders give diffusers' get_scheduler values at every step (same formulas, same order of
-- floating-point operations); lr.warmup and lr.chain compose any schedules, built-in or a
-- function written by hand, which works everywhere a built-in one does.
local M = {}

-- options come named ({lr = 1e-4, steps = 1000}) or in the order of `fields` ({1e-4, 1000});
-- required fields have no default
local function options(who, t, fields, defaults)
  if type(t) == "number" and fields[1] == "lr" then t = { t } end
  if type(t) ~= "table" then error(who .. ": expected an options table", 3) end
  local known, out = {}, {}
  for i, f in ipairs(fields) do
    known[f] = true
    local v = t[f]
    if v == nil then v = t[i] end
    if v == nil then v = defaults[f] end
    if v == nil then error(string.format("%s: %s is required", who, f), 3) end
    out[f] = v
  end
  for k in pairs(t) do
    if not known[k] and not (math.type(k) == "integer" and k >= 1 and k <= #fields) then
      error(string.format("%s: unknown option %q", who, tostring(k)), 3)
    end
  end
  return out
end

local function check_number(who, name, v, lo)
  if type(v) ~= "number" or v ~= v or v < lo then
    error(string.format("%s: %s must be a number >= %g (got %s)", who, name, lo, tostring(v)), 3)
  end
end

local function check_steps(who, o)
  if math.type(o.steps) ~= "integer" and not (type(o.steps) == "number" and o.steps == math.floor(o.steps)) then
    error(who .. ": steps must be an integer (got " .. tostring(o.steps) .. ")", 3)
  end
  if o.steps < 1 then error(who .. ": steps must be at least 1", 3) end
end

local function check_warmup(who, w)
  if type(w) ~= "number" or w < 0 or w ~= math.floor(w) then
    error(who .. ": warmup must be a non-negative integer (got " .. tostring(w) .. ")", 3)
  end
end

local function check_step(s)
  if type(s) ~= "number" or s ~= s then error("lr schedule: the step must be a number (got " .. tostring(s) .. ")", 3) end
end

-- the linear ramp from 0 of diffusers' warmups: step / max(1, warmup)
local function ramp(s, warmup) return s / math.max(1, warmup) end

--- lr.constant{lr, warmup = 0}: diffusers' "constant" (or "constant_with_warmup")
function M.constant(t)
  local o = options("lr.constant", t, { "lr", "warmup" }, { warmup = 0 })
  check_number("lr.constant", "lr", o.lr, 0)
  check_warmup("lr.constant", o.warmup)
  local lr, warmup = o.lr, o.warmup
  return function(s)
    check_step(s)
    if s < warmup then return lr * (s / math.max(1.0, warmup)) end
    return lr * 1.0
  end
end

--- lr.linear{lr, steps, end_lr = 0, warmup = 0}: warmup, then a straight line from lr at
--- `warmup` to end_lr at `steps`, end_lr after (diffusers' "linear")
function M.linear(t)
  local o = options("lr.linear", t, { "lr", "steps", "end_lr", "warmup" }, { end_lr = 0, warmup = 0 })
  check_number("lr.linear", "lr", o.lr, 0)
  check_number("lr.linear", "end_lr", o.end_lr, 0)
  check_steps("lr.linear", o)
  check_warmup("lr.linear", o.warmup)
  local lr, steps, end_lr, warmup = o.lr, o.steps, o.end_lr, o.warmup
  return function(s)
    check_step(s)
    if s < warmup then return lr * ramp(s, warmup) end
    local left = (steps - s) / math.max(1, steps - warmup)
    return end_lr + (lr - end_lr) * math.max(0.0, left)
  end
end

--- lr.cosine{lr, steps, warmup = 0, cycles = 0.5, end_lr = 0}: warmup, then a cosine from lr
--- to end_lr over steps - warmup (half a period by default; diffusers' "cosine")
function M.cosine(t)
  local o = options("lr.cosine", t, { "lr", "steps", "warmup", "cycles", "end_lr" },
    { warmup = 0, cycles = 0.5, end_lr = 0 })
  check_number("lr.cosine", "lr", o.lr, 0)
  check_number("lr.cosine", "cycles", o.cycles, 0)
  check_number("lr.cosine", "end_lr", o.end_lr, 0)
  check_steps("lr.cosine", o)
  check_warmup("lr.cosine", o.warmup)
  local lr, steps, warmup, cycles, end_lr = o.lr, o.steps, o.warmup, o.cycles, o.end_lr
  return function(s)
    check_step(s)
    if s < warmup then return lr * ramp(s, warmup) end
    local progress = (s - warmup) / math.max(1, steps - warmup)
    local f = math.max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))
    return end_lr + (lr - end_lr) * f
  end
end

--- lr.cosine_restarts{lr, steps, cycles = 1, warmup = 0}: warmup, then `cycles` cosine decays
--- from lr to 0, each restarting at lr; 0 from `steps` on (diffusers' "cosine_with_restarts")
function M.cosine_restarts(t)
  local o = options("lr.cosine_restarts", t, { "lr", "steps", "cycles", "warmup" }, { cycles = 1, warmup = 0 })
  check_number("lr.cosine_restarts", "lr", o.lr, 0)
  check_number("lr.cosine_restarts", "cycles", o.cycles, 0)
  check_steps("lr.cosine_restarts", o)
  check_warmup("lr.cosine_restarts", o.warmup)
  local lr, steps, cycles, warmup = o.lr, o.steps, o.cycles, o.warmup
  return function(s)
    check_step(s)
    if s < warmup then return lr * ramp(s, warmup) end
    local progress = (s - warmup) / math.max(1, steps - warmup)
    if progress >= 1.0 then return lr * 0.0 end
    return lr * math.max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
  end
end

--- lr.polynomial{lr, steps, end_lr = 1e-7, power = 1, warmup = 0}: warmup, then
--- (lr - end_lr) * (1 - progress)^power + end_lr; end_lr after `steps` (diffusers' "polynomial")
function M.polynomial(t)
  local o = options("lr.polynomial", t, { "lr", "steps", "end_lr", "power", "warmup" },
    { end_lr = 1e-7, power = 1.0, warmup = 0 })
  check_number("lr.polynomial", "lr", o.lr, 0)
  check_number("lr.polynomial", "end_lr", o.end_lr, 0)
  check_number("lr.polynomial", "power", o.power, 0)
  check_steps("lr.polynomial", o)
  check_warmup("lr.polynomial", o.warmup)
  if o.steps <= o.warmup then error("lr.polynomial: steps must exceed warmup", 2) end
  if not (o.lr > o.end_lr) then
    error(string.format("lr.polynomial: end_lr (%g) must be smaller than lr (%g)", o.end_lr, o.lr), 2)
  end
  local lr, steps, end_lr, power, warmup = o.lr, o.steps, o.end_lr, o.power, o.warmup
  -- diffusers returns a factor of lr, then multiplies; the same two roundings here
  return function(s)
    check_step(s)
    if s < warmup then return lr * ramp(s, warmup) end
    if s > steps then return lr * (end_lr / lr) end
    local remaining = 1 - (s - warmup) / (steps - warmup)
    return lr * (((lr - end_lr) * remaining ^ power + end_lr) / lr)
  end
end

--- lr.piecewise{boundaries = {b1, b2, ...}, values = {v1, v2, v3, ...}}: v1 before step b1,
--- v2 from b1 until b2, ..., the last value from the last boundary on
function M.piecewise(t)
  local o = options("lr.piecewise", t, { "boundaries", "values" }, {})
  local b, v = o.boundaries, o.values
  if type(b) ~= "table" or type(v) ~= "table" or #v ~= #b + 1 then
    error("lr.piecewise: expected boundaries {b1, ..., bn} and n + 1 values", 2)
  end
  for i = 2, #b do
    if not (b[i] > b[i - 1]) then error("lr.piecewise: boundaries must increase", 2) end
  end
  b, v = { table.unpack(b) }, { table.unpack(v) }
  return function(s)
    check_step(s)
    for i, bound in ipairs(b) do
      if s < bound then return v[i] end
    end
    return v[#v]
  end
end

--- lr.exponential{lr, gamma, every = 1, staircase = false}: lr * gamma^(step / every)
--- (the exponent rounded down when staircase), as PyTorch's ExponentialLR for every = 1
function M.exponential(t)
  local o = options("lr.exponential", t, { "lr", "gamma", "every", "staircase" }, { every = 1, staircase = false })
  check_number("lr.exponential", "lr", o.lr, 0)
  check_number("lr.exponential", "gamma", o.gamma, 0)
  if type(o.every) ~= "number" or not (o.every > 0) then error("lr.exponential: every must be positive", 2) end
  local lr, gamma, every, staircase = o.lr, o.gamma, o.every, o.staircase
  return function(s)
    check_step(s)
    local e = s / every
    if staircase then e = math.floor(e) end
    return lr * gamma ^ e
  end
end

--- lr.warmup(f, n): any schedule f behind a linear warmup: f(0) * step / n for step < n,
--- then f(step - n)
function M.warmup(f, n)
  if type(f) ~= "function" then error("lr.warmup: expected a schedule (a function step -> lr)", 2) end
  check_warmup("lr.warmup", n)
  return function(s)
    check_step(s)
    if s < n then return f(0) * ramp(s, n) end
    return f(s - n)
  end
end

--- lr.chain{f1, f2, ..., fn, boundaries = {b1, ..., bn-1}}: f1 until step b1, then f2 counting
--- from 0 at b1, ..., fn from the last boundary on
function M.chain(t)
  if type(t) ~= "table" then error("lr.chain: expected {f1, f2, ..., boundaries = {...}}", 2) end
  local fs, b = {}, t.boundaries or {}
  for i, f in ipairs(t) do
    if type(f) ~= "function" then error(string.format("lr.chain: element %d is not a schedule", i), 2) end
    fs[i] = f
  end
  for k in pairs(t) do
    if k ~= "boundaries" and not (math.type(k) == "integer" and k >= 1 and k <= #fs) then
      error(string.format("lr.chain: unknown option %q", tostring(k)), 2)
    end
  end
  if #fs == 0 or #b ~= #fs - 1 then error("lr.chain: n schedules need n - 1 boundaries", 2) end
  for i = 2, #b do
    if not (b[i] > b[i - 1]) then error("lr.chain: boundaries must increase", 2) end
  end
  b = { table.unpack(b) }
  return function(s)
    check_step(s)
    local start = 0
    for i, bound in ipairs(b) do
      if s < bound then return fs[i](s - start) end
      start = bound
    end
    return fs[#fs](s - start)
  end
end

return M
