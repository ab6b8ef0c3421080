-- tocha.sweep.pruners: early stopping from the intermediate values trials report (a script's
-- metrics.jsonl, or trial:report). asha: asynchronous successive halving; hyperband: several
-- asha brackets with different first rungs; median: Optuna's MedianPruner rule. A pruner
-- looks at one trial's reports and everyone else's, and says whether to stop it now.
local pruners = {}

local Pruner = {}
Pruner.__index = Pruner

local function check_options(fn, opts, known, level)
  if type(opts) ~= "table" then error("sweep." .. fn .. ": expected a table of options", level + 1) end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("sweep.%s: unknown option '%s' (%s)", fn, tostring(k), table.concat(names, ", ")), level + 1)
    end
  end
end

local function positive_int(fn, opts, k, default, level)
  local v = opts[k]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 1 then
    error(string.format("sweep.%s: %s must be a positive integer (got %s)", fn, k, tostring(v)), level + 1)
  end
  return v
end

local function common(fn, opts, level)
  if opts.metric ~= nil and (type(opts.metric) ~= "string" or opts.metric == "") then
    error("sweep." .. fn .. ": metric must be a non-empty string", level + 1)
  end
  if opts.goal ~= nil and opts.goal ~= "min" and opts.goal ~= "max" then
    error("sweep." .. fn .. ": goal must be \"min\" or \"max\" (got " .. tostring(opts.goal) .. ")", level + 1)
  end
  return { metric = opts.metric, goal = opts.goal, window = positive_int(fn, opts, "window", 1, level + 1) }
end

---------------------------------------------------------------------------------------------
-- reading reports: lists of {step, value} in step order
---------------------------------------------------------------------------------------------
-- the mean of the window of values ending at reports[i] (smooths a noisy per-batch loss)
local function windowed(reports, i, window)
  local s, n = 0, 0
  for j = math.max(1, i - window + 1), i do
    s, n = s + reports[j].value, n + 1
  end
  return s / n
end

-- the index of the last report at or before step, or nil
local function last_at(reports, step)
  local found
  for i, r in ipairs(reports) do
    if r.step <= step then found = i else break end
  end
  return found
end

-- the index of the first report at or after step, or nil
local function first_from(reports, step)
  for i, r in ipairs(reports) do if r.step >= step then return i end end
end

local function better(goal, a, b) return goal == "max" and a > b or goal ~= "max" and a < b end

---------------------------------------------------------------------------------------------
-- successive halving (asha, and each bracket of hyperband)
---------------------------------------------------------------------------------------------
-- rung k's step: first * reduction^k, below max_steps (or 10^12: no run is longer)
local function rung_steps(first, reduction, max_steps)
  local rungs, s = {}, first
  while s < (max_steps or 1e12) do
    rungs[#rungs + 1] = s
    s = s * reduction
  end
  return rungs
end

-- a trial's value at a rung: at its first report at or past the rung's step
local function rung_value(reports, step, window)
  local i = first_from(reports, step)
  return i and windowed(reports, i, window)
end

-- Optuna's promotion rule: in the best n // reduction of the values at this rung, or the
-- best of all while fewer than reduction trials have reached it
local function promotable(goal, mine, values, reduction)
  table.sort(values, function(a, b) return better(goal, a, b) end)
  local k = math.max(1, #values // reduction)
  return not better(goal, values[k], mine)
end

local function halving_decide(self, rungs, tracker, reports, others, same_bracket)
  if #reports == 0 then return false end
  local step = reports[#reports].step
  for k, rstep in ipairs(rungs) do
    if step >= rstep and not tracker.decided[k] then
      tracker.decided[k] = true
      local mine = rung_value(reports, rstep, self.window)
      local values = { mine }
      for _, o in ipairs(others) do
        if o.number ~= tracker.number and (not same_bracket or same_bracket(o.number)) then
          local v = rung_value(o.reports, rstep, self.window)
          if v then values[#values + 1] = v end
        end
      end
      if not promotable(self.goal, mine, values, self.reduction) then
        return true, string.format("%s %.6g at step %d is not in the best 1/%d of %d trials at that rung",
          self.metric, mine, rstep, self.reduction, #values)
      end
    end
  end
  return false
end

---------------------------------------------------------------------------------------------
-- the pruners
---------------------------------------------------------------------------------------------
--- pruners.asha{metric, goal, min_steps, reduction = 3, max_steps, window = 1}: at steps
--- min_steps * reduction^k a trial continues only if its value is in the best 1/reduction of
--- the trials that reached that step
-- the options asha and hyperband share: min_steps, reduction, max_steps
local function halving(fn, opts, level)
  check_options(fn, opts, { metric = 1, goal = 1, min_steps = 1, reduction = 1, max_steps = 1, window = 1 }, level + 1)
  local p = common(fn, opts, level + 1)
  p.kind = fn
  p.min_steps = positive_int(fn, opts, "min_steps", 1, level + 1)
  p.reduction = positive_int(fn, opts, "reduction", 3, level + 1)
  if p.reduction < 2 then error("sweep." .. fn .. ": reduction must be at least 2", level + 1) end
  p.max_steps = opts.max_steps and positive_int(fn, opts, "max_steps", nil, level + 1)
  return p
end

function pruners.asha(opts, level)
  level = (level or 1) + 1
  local p = halving("asha", opts, level)
  p.rungs = rung_steps(p.min_steps, p.reduction, p.max_steps)
  return setmetatable(p, Pruner)
end

--- pruners.hyperband{metric, goal, min_steps, max_steps, reduction = 3, window = 1}: brackets
--- of asha whose first rungs are min_steps * reduction^b; trial n goes to a bracket in
--- proportion to the trials Hyperband gives it
function pruners.hyperband(opts, level)
  level = (level or 1) + 1
  local p = halving("hyperband", opts, level)
  if not p.max_steps then error("sweep.hyperband: max_steps is needed (the steps of a full trial)", level) end
  if p.max_steps <= p.min_steps then error("sweep.hyperband: max_steps must be above min_steps", level) end
  local s_max = 0
  while p.min_steps * p.reduction ^ (s_max + 1) <= p.max_steps do s_max = s_max + 1 end
  -- bracket b starts at min_steps * reduction^b and gets Hyperband's share of trials
  p.brackets, p.schedule = {}, {}
  local slots = {} -- bracket b's i-th trial at (i - 0.5) / n_b of the cycle: the brackets interleave
  for b = 0, s_max do
    local s = s_max - b
    local n = math.ceil((s_max + 1) / (s + 1) * p.reduction ^ s)
    p.brackets[b + 1] = rung_steps(p.min_steps * p.reduction ^ b // 1 | 0, p.reduction, p.max_steps)
    for i = 1, n do slots[#slots + 1] = { (i - 0.5) / n, b + 1 } end
  end
  table.sort(slots, function(x, y) return x[1] < y[1] or x[1] == y[1] and x[2] < y[2] end)
  for i, slot in ipairs(slots) do p.schedule[i] = slot[2] end
  return setmetatable(p, Pruner)
end

--- pruners.median{metric, goal, startup = 5, warmup = 0, min_trials = 1, window = 1}: stop a
--- trial whose best value so far is worse than the median of the finished trials' values at
--- the same step (once startup trials have finished and past warmup steps)
function pruners.median(opts, level)
  level = (level or 1) + 1
  check_options("median", opts, { metric = 1, goal = 1, startup = 1, warmup = 1, min_trials = 1, window = 1 }, level)
  local p = common("median", opts, level)
  p.kind = "median"
  p.startup = opts.startup == 0 and 0 or positive_int("median", opts, "startup", 5, level)
  p.warmup = opts.warmup == 0 and 0 or positive_int("median", opts, "warmup", 0, level)
  p.min_trials = positive_int("median", opts, "min_trials", 1, level)
  return setmetatable(p, Pruner)
end

function pruners.is_pruner(v) return getmetatable(v) == Pruner end

--- p:bracket(number) -> the hyperband bracket of trial number (1 for the others)
function Pruner:bracket(number)
  if self.kind ~= "hyperband" then return 1 end
  return self.schedule[(number - 1) % #self.schedule + 1]
end

--- p:tracker(number) -> the state one trial's follower keeps (rungs already decided)
function Pruner:tracker(number) return { number = number, decided = {} } end

--- p:decide(tracker, reports, others) -> true, why when the trial should stop now. reports:
--- its own {step, value} in step order; others: {number, state, reports} of the other trials
function Pruner:decide(tracker, reports, others)
  if self.kind == "asha" then return halving_decide(self, self.rungs, tracker, reports, others) end
  if self.kind == "hyperband" then
    local b = self:bracket(tracker.number)
    return halving_decide(self, self.brackets[b], tracker, reports, others,
      function(n) return self:bracket(n) == b end)
  end
  -- median
  if #reports == 0 then return false end
  local step = reports[#reports].step
  if step < self.warmup then return false end
  local finished = 0
  for _, o in ipairs(others) do if o.state == "done" then finished = finished + 1 end end
  if finished < self.startup then return false end
  local best
  for i = 1, #reports do
    local v = windowed(reports, i, self.window)
    if not best or better(self.goal, v, best) then best = v end
  end
  local values = {}
  for _, o in ipairs(others) do
    if o.state == "done" and o.number ~= tracker.number then
      local i = last_at(o.reports, step)
      if i then values[#values + 1] = windowed(o.reports, i, self.window) end
    end
  end
  if #values < self.min_trials then return false end
  table.sort(values)
  local n = #values
  local median = n % 2 == 1 and values[(n + 1) // 2] or (values[n // 2] + values[n // 2 + 1]) / 2
  if better(self.goal, median, best) then
    return true, string.format("best %s %.6g by step %d is worse than the median %.6g of %d finished trials",
      self.metric, best, step, median, n)
  end
  return false
end

return pruners
