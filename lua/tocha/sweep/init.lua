-- tocha.sweep: hyperparameter sweeps. A sweep file returns sweep{...}: a script (or a Lua
-- objective), a space of distributions, the metric and its goal, a budget, a strategy and a
-- pruner. `tocha sweep run FILE` runs its trials as processes on workers that share a
-- database (tocha.sweep.storage); the other commands read that database.
local space = require "tocha.sweep.space"
local strategies = require "tocha.sweep.strategies"
local pruners = require "tocha.sweep.pruners"
local tpe = require "tocha.sweep.tpe"

local sweep = {}

sweep.choice, sweep.grid, sweep.uniform, sweep.loguniform = space.choice, space.grid, space.uniform, space.loguniform
sweep.int, sweep.normal, sweep.when = space.int, space.normal, space.when

--- sweep.tpe{startup, candidates, multivariate, gamma, prior_weight, liar}: TPE with options
function sweep.tpe(opts) return tpe.new(opts, 2) end
function sweep.asha(opts) return pruners.asha(opts, 2) end
function sweep.hyperband(opts) return pruners.hyperband(opts, 2) end
function sweep.median(opts) return pruners.median(opts, 2) end

local Sweep = {}
Sweep.__index = Sweep

local FIELDS = {
  name = "a name for the sweep's directory and storage (letters, digits, _ - .)",
  script = "the experiment script a trial runs", args = "fixed arguments for the script",
  objective = "a Lua function(trial) returning the metric", space = "the parameters and their distributions",
  metric = "the metric to optimize", goal = "\"min\" or \"max\"", trials = "how many trials",
  strategy = "grid, random, tpe or a strategy file", seed = "the sweep's seed", prune = "a pruner",
  stale_after = "seconds without a heartbeat before a running trial is re-queued",
  retries = "how many times a trial whose worker died is run again", grace = "seconds between SIGTERM and SIGKILL",
  storage = "where the sweep's state lives (a SQLite file or a postgresql:// URL)",
  seed_per_trial = "give trial n the seed seed + n - 1 (false: every trial gets seed)",
  workers = "worker processes started by tocha sweep run (default 1)",
  root = "where run directories go (default $TOCHA_RUNS, or runs)",
}

local function fail(msg, level) error("sweep: " .. msg, level + 1) end

local function nonneg_number(spec, k, default, level)
  local v = spec[k]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < 0 then fail(string.format("%s must be a number >= 0 (got %s)", k, tostring(v)), level + 1) end
  return v
end

--- sweep{...} -> a sweep, checked; raises "sweep: <what was wrong>" at the caller's line
local function new(spec, level)
  level = level + 1
  if type(spec) ~= "table" then fail("expected sweep { name = ..., space = { ... }, ... }", level) end
  for k in pairs(spec) do
    if not FIELDS[k] then
      local names = {}
      for n in pairs(FIELDS) do names[#names + 1] = n end
      table.sort(names)
      fail(string.format("unknown field '%s' (fields: %s)", tostring(k), table.concat(names, ", ")), level)
    end
  end
  local s = setmetatable({}, Sweep)
  -- files the sweep names (script, strategy) are found from the working directory, or else
  -- beside the sweep file
  local info = debug.getinfo(level, "S")
  s.base_dir = info and info.source:match("^@(.*)/[^/]*$") or nil
  if type(spec.name) ~= "string" or not spec.name:match("^[%w_][%w_%.%-]*$") then
    fail("name must be a non-empty string of letters, digits, '_', '-' and '.' (got " .. tostring(spec.name) .. ")", level)
  end
  s.name = spec.name
  if (spec.script == nil) == (spec.objective == nil) then fail("give either script = \"file.lua\" or objective = function(trial) ... end", level) end
  if spec.script ~= nil and (type(spec.script) ~= "string" or spec.script == "") then fail("script must be a file name", level) end
  if spec.objective ~= nil and type(spec.objective) ~= "function" then fail("objective must be a function(trial)", level) end
  s.script, s.objective = spec.script, spec.objective
  s.args = {}
  if spec.args ~= nil then
    if type(spec.args) ~= "table" then fail("args must be a list of strings", level) end
    if s.objective then fail("args go with script (an objective gets trial.params)", level) end
    for i, a in ipairs(spec.args) do
      if type(a) ~= "string" and type(a) ~= "number" then fail(string.format("args[%d] must be a string", i), level) end
      s.args[i] = tostring(a)
    end
  end
  local ok, params = pcall(space.compile, spec.space)
  if not ok then error(params, level) end
  s.space, s.space_table = params, spec.space
  if spec.metric == nil and s.script then fail("metric is needed: the name of a metric the script reports (e.g. \"eval/accuracy\")", level) end
  if spec.metric ~= nil and (type(spec.metric) ~= "string" or spec.metric == "") then fail("metric must be a non-empty string", level) end
  s.metric = spec.metric or "value"
  if spec.goal ~= nil and spec.goal ~= "min" and spec.goal ~= "max" then
    fail("goal must be \"min\" or \"max\" (got " .. tostring(spec.goal) .. ")", level)
  end
  s.goal = spec.goal or "min"
  local strategy, why = strategies.resolve(spec.strategy or "tpe", s.base_dir)
  if not strategy then fail(why, level) end
  s.strategy = strategy
  if spec.trials ~= nil and (math.type(spec.trials) ~= "integer" or spec.trials < 1) then
    fail("trials must be a positive integer (got " .. tostring(spec.trials) .. ")", level)
  end
  if strategy.size then
    local ok2, n = pcall(strategy.size, strategy, params)
    if not ok2 then error(n, level) end
    s.trials = math.min(spec.trials or n, n)
  else
    if spec.trials == nil then fail("trials is needed: how many trials to run", level) end
    s.trials = spec.trials
  end
  if spec.seed ~= nil and math.type(spec.seed) ~= "integer" then fail("seed must be an integer", level) end
  s.seed = spec.seed or 0
  s.seed_per_trial = spec.seed_per_trial ~= false
  if spec.prune ~= nil then
    if not pruners.is_pruner(spec.prune) then fail("prune must be sweep.asha { ... }, sweep.hyperband { ... } or sweep.median { ... }", level) end
    s.prune = spec.prune
    s.prune.metric = s.prune.metric or s.metric
    s.prune.goal = s.prune.goal or s.goal
  end
  s.stale_after = nonneg_number(spec, "stale_after", 60, level)
  s.grace = nonneg_number(spec, "grace", 20, level)
  if spec.retries ~= nil and (math.type(spec.retries) ~= "integer" or spec.retries < 0) then fail("retries must be an integer >= 0", level) end
  s.retries = spec.retries or 1
  if spec.workers ~= nil and (math.type(spec.workers) ~= "integer" or spec.workers < 1) then fail("workers must be a positive integer", level) end
  s.workers = spec.workers or 1
  if spec.storage ~= nil and type(spec.storage) ~= "string" then fail("storage must be a file name or a postgresql:// URL", level) end
  s.storage = spec.storage
  if spec.root ~= nil and (type(spec.root) ~= "string" or spec.root == "") then fail("root must be a directory name", level) end
  s.root = spec.root
  return s
end

-- a misspelt distribution or pruner names itself instead of "attempt to call a nil value"
setmetatable(sweep, {
  __call = function(_, spec)
    local s = new(spec, 2) -- not a tail call: errors point at the sweep file's line
    return s
  end,
  __index = function(_, k)
    error(string.format("sweep.%s does not exist (distributions: choice, grid, uniform, loguniform, int, normal, when; " ..
      "strategies: tpe; pruners: asha, hyperband, median)", tostring(k)), 2)
  end,
})

--- sweep.load(path) -> the sweep a sweep file returns, or nil, message
function sweep.load(path)
  local chunk, err = loadfile(path)
  if not chunk then
    local f = io.open(path, "rb")
    if not f then return nil, "no sweep file " .. path end
    f:close()
    return nil, err
  end
  local ok, s = pcall(chunk)
  if not ok then return nil, tostring(s) end
  if getmetatable(s) ~= Sweep then return nil, path .. " must return sweep { ... }" end
  s.file = path
  return s
end

function sweep.is_sweep(v) return getmetatable(v) == Sweep end

--- s:definition() -> what must not change while a sweep runs, as a table (stored with it)
function Sweep:definition()
  local params = {}
  for i, p in ipairs(self.space) do
    params[i] = p.name .. " " .. space.describe(p) .. (p.condition and " when " .. p.condition.name .. "=" ..
      space.arg(p.condition.values[1]) or "")
  end
  return { space = params, metric = self.metric, goal = self.goal, script = self.script,
    args = self.args, objective = self.objective ~= nil }
end

--- s:trial_seed(number) -> the seed trial `number` runs with
function Sweep:trial_seed(number) return self.seed_per_trial and self.seed + number - 1 or self.seed end

return sweep
