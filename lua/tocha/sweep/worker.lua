-- tocha.sweep.worker: running a sweep. Checks a sweep file against its script before anything
-- starts; a worker claims trials from the storage and runs each as its own process (a script
-- through the runner, or a fork calling the Lua objective) in runs/<sweep>/<trial>, follows
-- what it reports, stops it when the pruner says so (SIGTERM, then SIGKILL after a grace
-- period), keeps its heartbeat and records how it ended. worker.run starts N workers.
local T = require "tocha"
local json = require "tocha.json"
local space = require "tocha.sweep.space"
local storage = require "tocha.sweep.storage"
local rng = require "tocha.sweep.rng"
local tables = require "tocha.sweep.tables"

local S = T._sys
local worker = {}

local function shell_quote(s)
  if s:match("^[%w%._/=:,+@%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
worker.shell_quote = shell_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path) return read_file(path) ~= nil or T._sys.isdir(path) end

---------------------------------------------------------------------------------------------
-- where things go
---------------------------------------------------------------------------------------------
--- worker.root(sw) -> where run directories go: the file's root, $TOCHA_RUNS, or runs
function worker.root(sw) return sw.root or os.getenv("TOCHA_RUNS") or "runs" end

--- worker.target(sw, storage_override) -> the storage: --storage, the file's storage, or
--- runs/<name>/sweep.db
function worker.target(sw, override)
  return override or sw.storage or (worker.root(sw) .. "/" .. sw.name .. "/sweep.db")
end

function worker.trial_dir(sw, number) return string.format("%s/%s/%04d", worker.root(sw), sw.name, number) end

-- a file the sweep names: from the working directory, or else beside the sweep file
local function resolve(sw, file)
  if exists(file) or file:match("^/") or not sw.base_dir then return file end
  local beside = sw.base_dir .. "/" .. file
  return exists(beside) and beside or file
end

--- worker.bin() -> the runner that runs script trials (this one)
function worker.bin() return arg and arg[-1] or "tocha" end

---------------------------------------------------------------------------------------------
-- checks before any trial starts
---------------------------------------------------------------------------------------------
-- the options a tocha.run script declares, from its --help: {name = "INT" | "NUMBER" |
-- "STRING" | "LIST" | "BOOL"}
local function script_options(bin, path)
  local p = io.popen(shell_quote(bin) .. " " .. shell_quote(path) .. " --help 2>&1")
  local out = p:read("a")
  p:close()
  local opts, n = {}, 0
  for line in out:gmatch("[^\n]+") do
    local name, ty = line:match("^%s+%-%-([%w_%.%-]+)%s+(%u+)%s")
    if not name then
      name = line:match("^%s+%-%-([%w_%.%-]+), %-%-no%-")
      ty = name and "BOOL"
    end
    if name and name ~= "config" then opts[name], n = ty, n + 1 end
  end
  return n > 0 and opts or nil, out
end

local function option_fits(p, ty)
  local function all(pred)
    local vs = p.kind == "fixed" and { p.value } or p.values
    if not vs then return false end
    for _, v in ipairs(vs) do if not pred(v) then return false end end
    return true
  end
  if ty == "STRING" then return p.kind ~= "fixed" or type(p.value) ~= "table" end
  if ty == "LIST" then return true end
  if ty == "BOOL" then return all(function(v) return type(v) == "boolean" end), "true or false" end
  if ty == "INT" then
    if p.kind == "int" then return true end
    return all(function(v) return math.type(v) == "integer" end), "integers (sweep.int or integer choices)"
  end
  if ty == "NUMBER" then
    if p.kind == "uniform" or p.kind == "loguniform" or p.kind == "normal" or p.kind == "int" then return true end
    return all(function(v) return type(v) == "number" end), "numbers"
  end
  return true
end

--- worker.check(sw) -> nil, or raises "sweep: ..." naming what cannot work: a script that
--- does not exist, a parameter or argument the script does not declare or that has the wrong
--- type, a metric the script never names
function worker.check(sw)
  if not sw.script then return end
  local path = resolve(sw, sw.script)
  local source = read_file(path)
  if not source then error(string.format("sweep: the script %s does not exist", sw.script), 0) end
  local opts, help = script_options(worker.bin(), path)
  if not opts then
    error(string.format("sweep: %s --help lists no options; a trial passes its parameters as --name=value, which tocha.run reads\n%s",
      path, help), 0)
  end
  local names = {}
  for k in pairs(opts) do names[#names + 1] = k end
  table.sort(names)
  local function declared(name, what)
    if not opts[name] then
      error(string.format("sweep: %s: %s has no option --%s (its options: %s)", what, path, name, table.concat(names, ", ")), 0)
    end
  end
  for _, p in ipairs(sw.space) do
    declared(p.name, "space." .. p.name)
    local ok, want = option_fits(p, opts[p.name])
    if not ok then
      error(string.format("sweep: space.%s: --%s takes %s, but %s gives other values", p.name, p.name, want, space.describe(p)), 0)
    end
  end
  for _, a in ipairs(sw.args) do
    local name = a:match("^%-%-([^=]+)")
    if name then
      if not opts[name] and name:match("^no%-") and opts[name:sub(4)] == "BOOL" then name = name:sub(4) end
      declared(name, "args " .. a)
    end
  end
  for _, m in ipairs({ sw.metric, sw.prune and sw.prune.metric }) do
    if m and not source:find(m, 1, true) then
      error(string.format("sweep: metric %q: %s never names it, so no trial would report it (a script reports metrics " ..
        "with writer:add_scalar or r:finish; if it builds the name at run time, write the name in a comment)", m, path), 0)
    end
  end
end

---------------------------------------------------------------------------------------------
-- following a trial's metrics.jsonl
---------------------------------------------------------------------------------------------
local NONFINITE = { NaN = 0 / 0, Infinity = math.huge, ["-Infinity"] = -math.huge }

local Follower = {}
Follower.__index = Follower

local function follower(path) return setmetatable({ path = path, offset = 0, tail = "" }, Follower) end

-- the rows written since the last call (a line not yet ended waits for the next)
function Follower:read()
  local f = io.open(self.path, "rb")
  if not f then return {} end
  f:seek("set", self.offset)
  local chunk = f:read("a") or ""
  f:close()
  self.offset = self.offset + #chunk
  local text = self.tail .. chunk
  local rows, last = {}, 0
  for line, stop in text:gmatch("([^\n]*)\n()") do
    last = stop - 1
    local ok, row = pcall(json.decode, line)
    if ok and type(row) == "table" then
      for k, v in pairs(row) do if NONFINITE[v] then row[k] = NONFINITE[v] end end
      rows[#rows + 1] = row
    end
  end
  self.tail = text:sub(last + 1)
  return rows
end

---------------------------------------------------------------------------------------------
-- a Lua objective's trial, in the forked child
---------------------------------------------------------------------------------------------
local Trial = {}
Trial.__index = Trial

--- trial:report(step, value) -> true when the trial should stop (pruned, or the sweep is
--- stopping); value is the pruner's metric
function Trial:report(step, value)
  if math.type(step) ~= "integer" or step < 0 then error("trial:report: step must be an integer >= 0", 2) end
  if type(value) ~= "number" then error("trial:report: value must be a number", 2) end
  local tag = self._pruner and self._pruner.metric or self._metric
  self._metrics_file:write(json.encode({ step = step, [tag] = value }), "\n")
  self._metrics_file:flush()
  local reps = self._reports
  if reps[#reps] and reps[#reps].step >= step then
    if reps[#reps].step == step then reps[#reps].value = value end
  else reps[#reps + 1] = { step = step, value = value } end
  if self._pruner and not self.pruned then
    self._st:report(self.number, { { step = step, value = value } })
    local stop, why = self._pruner:decide(self._tracker, reps, self._st:pruning_view())
    if stop then self.pruned = why end
  end
  return self:should_stop()
end

--- trial:should_stop() -> true once the pruner or the sweep asked the trial to stop
function Trial:should_stop() return self.pruned ~= nil or S.caught("TERM") end

local function run_objective(sw, t, dir, target)
  S.catch("TERM")
  T.manual_seed(t.seed)
  math.randomseed(t.seed)
  local result = { state = "failed" }
  local st, err = true, nil -- a connection of its own, for the pruner to see the others' reports
  if sw.prune then st, err = storage.open(target, sw.name, { schema = false }) end
  if not st then
    result.reason = "cannot open the storage: " .. tostring(err)
  else
    local trial = setmetatable({ number = t.number, params = t.params, seed = t.seed, dir = dir, _st = st,
      _pruner = sw.prune, _metric = sw.metric, _reports = {},
      _tracker = sw.prune and sw.prune:tracker(t.number),
      _metrics_file = assert(io.open(dir .. "/metrics.jsonl", "ab")) }, Trial)
    local ok, v = xpcall(sw.objective, debug.traceback, trial)
    if not ok then
      io.stderr:write(tostring(v), "\n")
      result.reason = "the objective raised: " .. tostring(v):sub(1, 2000)
    else
      local metrics = type(v) == "table" and v or { [sw.metric] = v }
      local value = metrics[sw.metric]
      if trial.pruned then result.state, result.reason = "pruned", trial.pruned
      elseif type(value) ~= "number" then
        result.reason = string.format("the trial never reported %s (the objective returned %s)", sw.metric,
          type(v) == "table" and "a table without it" or tostring(v))
      else result.state = "done" end
      if type(value) == "number" then result.value = value end
      local clean = {}
      for k, x in pairs(metrics) do if type(x) == "number" and type(k) == "string" then clean[k] = x end end
      result.metrics = clean
    end
    trial._metrics_file:close()
    if sw.prune then st:close() end
  end
  local f = assert(io.open(dir .. "/result.json", "wb"))
  f:write(json.encode(result), "\n")
  f:close()
end

---------------------------------------------------------------------------------------------
-- one trial
---------------------------------------------------------------------------------------------
local function tail_of(path, lines)
  local text = read_file(path) or ""
  local all = {}
  for line in text:gmatch("[^\n]*") do all[#all + 1] = line end
  while #all > 0 and all[#all] == "" do all[#all] = nil end
  local out = table.concat(all, "\n", math.max(1, #all - lines + 1))
  if #out > 2000 then out = "..." .. out:sub(-2000) end
  return out
end

local function crash_reason(how, code, log_path)
  return (how == "exited" and "exited with status " .. code or "killed by signal " .. tostring(code)) ..
    "; the end of its log:\n" .. tail_of(log_path, 20)
end

-- the script's command line for a trial's parameters (the seed last, unless swept or fixed)
local function script_argv(sw, t)
  local argv = { worker.bin(), resolve(sw, sw.script) }
  for _, a in ipairs(sw.args) do argv[#argv + 1] = a end
  local has_seed = t.params.seed ~= nil
  for _, a in ipairs(sw.args) do if a == "--seed" or a:match("^%-%-seed=") then has_seed = true end end
  for _, p in ipairs(sw.space) do
    local v = t.params[p.name]
    if v ~= nil then argv[#argv + 1] = "--" .. p.name .. "=" .. space.arg(v) end
  end
  if not has_seed then argv[#argv + 1] = "--seed=" .. t.seed end
  return argv
end

-- an empty run directory: what an earlier attempt left there moves to <dir>.attempt<k>
local function fresh_dir(dir)
  if exists(dir) then
    local k = 1
    while exists(string.format("%s.attempt%d", dir, k)) do k = k + 1 end
    local ok, err = os.rename(dir, string.format("%s.attempt%d", dir, k))
    if not ok then error("sweep: " .. tostring(err), 0) end
  end
  local ok, err = T._sys.mkdirs(dir)
  if not ok then error("sweep: " .. tostring(err), 0) end
end

-- "lr=0.00123 batch=16": the swept parameters, numbers to four digits
local function params_text(sw, params)
  local parts = {}
  for _, p in ipairs(sw.space) do
    local v = params[p.name]
    if v ~= nil and p.kind ~= "fixed" then
      parts[#parts + 1] = p.name .. "=" .. (math.type(v) == "float" and string.format("%.4g", v) or space.arg(v))
    end
  end
  return table.concat(parts, " ")
end

-- where trial t runs, and the command line that reproduces it (argv too, for a script)
local function plan(sw, t)
  local dir = worker.trial_dir(sw, t.number)
  if sw.script then
    local argv = script_argv(sw, t)
    local quoted = {}
    for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
    return dir, table.concat(quoted, " "), argv
  end
  local parts = {}
  for _, p in ipairs(sw.space) do
    if t.params[p.name] ~= nil then parts[#parts + 1] = p.name .. " = " .. space.show(t.params[p.name]) end
  end
  return dir, string.format("the objective in %s with trial.params = { %s }, seed %d", tostring(sw.file),
    table.concat(parts, ", "), t.seed)
end

-- runs trial t to its end; returns "done" | "pruned" | "failed" | "released" | "lost"
local function run_trial(ctx, t)
  local sw, st, w = ctx.sw, ctx.st, ctx.w
  local dir, _, argv = plan(sw, t)
  fresh_dir(dir)
  local log_path = dir .. "/log.txt"
  local t0 = T.clock()
  local pid, err
  if sw.script then
    pid, err = S.spawn(argv, { log = log_path, env = { TOCHA_RUN_DIR = dir, TOCHA_SWEEP = sw.name,
      TOCHA_SWEEP_TRIAL = tostring(t.number) } })
  else
    io.stdout:flush()
    pid, err = S.fork({ log = log_path })
    if pid == 0 then -- the child never returns into the worker's loop
      local ok, e = pcall(run_objective, sw, t, dir, ctx.target)
      if not ok then io.stderr:write("tocha sweep: ", tostring(e), "\n") end
      S.exit(ok and 0 or 1)
    end
  end
  if not pid then error("sweep: " .. err, 0) end

  -- every trial's metrics.jsonl is followed for its reports; a script's are judged here (an
  -- objective's child records and judges its own when there is a pruner)
  local follow = follower(dir .. "/metrics.jsonl")
  local tag = sw.prune and sw.prune.metric or sw.metric
  local record = sw.script or not sw.prune
  local pruner = sw.script and sw.prune
  local tracker = pruner and pruner:tracker(t.number)
  local reports, metric_value, metrics = {}, nil, {}
  local hb_every = math.max(0.05, math.min(5, sw.stale_after / 4))
  local last_hb = T.clock()
  local stop_sent, kill_sent, pruned, lost, released
  local how, code
  while true do
    how, code = S.wait(pid, 0.05) -- returns the moment the trial ends
    local fresh, last_step = {}, nil
    for _, row in ipairs(follow:read()) do
      for k, v in pairs(row) do if type(v) == "number" and k ~= "step" and k ~= "time" then metrics[k] = v end end
      if type(row[sw.metric]) == "number" then metric_value = row[sw.metric] end
      if math.type(row.step) == "integer" then last_step = math.max(last_step or 0, row.step) end
      local v = row[tag]
      if type(v) == "number" and math.type(row.step) == "integer" then
        if reports[#reports] and reports[#reports].step >= row.step then
          if reports[#reports].step == row.step then reports[#reports].value = v end
        else reports[#reports + 1] = { step = row.step, value = v } end
        fresh[#fresh + 1] = { step = row.step, value = v }
      end
    end
    if record and last_step then st:report(t.number, fresh, last_step) end
    if pruner and #fresh > 0 and not stop_sent and not how then
      local stop, why = pruner:decide(tracker, reports, st:pruning_view())
      if stop then
        pruned = why
        S.kill(-pid, "TERM")
        stop_sent = T.clock()
      end
    end
    if how then break end
    local now = T.clock()
    if (S.caught("TERM") or S.caught("INT")) and not stop_sent then
      released = true
      S.kill(-pid, "TERM")
      stop_sent = now
    end
    if stop_sent and not kill_sent and now - stop_sent > sw.grace then
      S.kill(-pid, "KILL")
      kill_sent = true
    end
    if now - last_hb >= hb_every then
      last_hb = now
      if not st:heartbeat(t, w) then
        lost = true
        S.kill(-pid, "KILL")
        kill_sent = true
      end
    end
  end
  S.kill(-pid, "KILL") -- whatever the trial left running in its process group
  local seconds = T.clock() - t0
  if lost then return "lost" end
  if released then
    st:release(t, w)
    return "released"
  end

  local r = { seconds = seconds }
  local state
  if sw.script then
    r.value, r.metrics = metric_value, metrics
    if pruned then state, r.reason = "pruned", pruned
    elseif how == "exited" and code == 0 and metric_value then state = "done"
    elseif how == "exited" and code == 0 then
      local seen = {}
      for k in pairs(metrics) do seen[#seen + 1] = k end
      table.sort(seen)
      state, r.reason = "failed", string.format("the trial never reported %s (it reported: %s)", sw.metric,
        #seen > 0 and table.concat(seen, ", ") or "nothing")
    else state, r.reason = "failed", crash_reason(how, code, log_path) end
  else
    local res = json.read_file(dir .. "/result.json")
    if res then state, r.value, r.reason, r.metrics = res.state, res.value, res.reason, res.metrics
    else state, r.reason = "failed", crash_reason(how, code, log_path) end
  end
  if not st:finish(t, w, state, r) then return "lost" end
  if not ctx.quiet then
    local value = r.value and string.format("  %s %.6g", sw.metric, r.value) or ""
    local line = string.format("trial %d %s%s  %s  (%.1f s)", t.number, state, value, params_text(sw, t.params), seconds)
    if state == "failed" then line = line .. "\n  " .. (r.reason or ""):gsub("\n", "\n  ") end
    ctx.out:write(line, "\n")
    ctx.out:flush()
  end
  return state
end

---------------------------------------------------------------------------------------------
-- the worker loop and the command
---------------------------------------------------------------------------------------------
--- worker.loop(sw, {target, quiet}) -> the number of trials this worker ran. Claims and runs
--- trials until none is left, or until SIGTERM/SIGINT (the running trial is queued again).
function worker.loop(sw, opts)
  S.catch("TERM")
  S.catch("INT")
  local st, err = storage.open(opts.target, sw.name, { schema = false })
  if not st then error("sweep: " .. err, 0) end
  local w = { host = S.hostname(), pid = S.getpid() }
  w.id = string.format("%s:%d", w.host, w.pid)
  local ctx = { sw = sw, st = st, w = w, target = opts.target, quiet = opts.quiet, out = opts.out or io.stdout }
  local function propose(history, number)
    return sw.strategy:suggest(sw.space, history, rng.new(sw.seed, number), { goal = sw.goal, number = number, metric = sw.metric })
  end
  local ran, wait = 0, 0.01
  while not (S.caught("TERM") or S.caught("INT")) do
    local t, why = st:claim(w, sw, propose, function(trial) return plan(sw, trial) end)
    if t then
      wait = 0.01
      local how = run_trial(ctx, t)
      if how ~= "lost" and how ~= "released" then ran = ran + 1 end
    elseif why == "finished" then
      break
    else
      S.sleep(wait) -- others are running the last trials; one may come back to the queue
      wait = math.min(wait * 2, 1)
    end
  end
  st:close()
  return ran
end

--- worker.run(sw, {storage, workers, stale, quiet, out}) -> exit status. Checks the sweep,
--- records it in the storage, runs `workers` worker processes to the end and prints the best.
function worker.run(sw, opts)
  local out = opts.out or io.stdout
  if opts.stale then sw.stale_after = opts.stale end
  worker.check(sw)
  local target = worker.target(sw, opts.storage)
  local st, err = storage.open(target, sw.name)
  if not st then error("sweep: " .. err, 0) end
  st:register(sw:definition())
  st:close()
  local n = opts.workers or sw.workers
  out:write(string.format("sweep %s: %d trials, %d worker%s, storage %s\n", sw.name, sw.trials, n, n == 1 and "" or "s",
    storage.display(target)))
  out:flush()
  S.catch("TERM")
  S.catch("INT")
  local pids = {}
  for i = 1, n do
    local pid, ferr = S.fork({ pgroup = false })
    if not pid then error("sweep: " .. ferr, 0) end
    if pid == 0 then
      local ok, e = pcall(worker.loop, sw, { target = target, quiet = opts.quiet, out = out })
      if not ok then io.stderr:write("tocha sweep: worker ", i, ": ", tostring(e), "\n") end
      S.exit(ok and 0 or 1)
    end
    pids[#pids + 1] = pid
  end
  local status, forwarded = 0, false
  local alive = #pids
  while alive > 0 do
    if (S.caught("TERM") or S.caught("INT")) and not forwarded then
      forwarded = true
      for _, pid in ipairs(pids) do S.kill(pid, "TERM") end
    end
    alive = 0
    for i, pid in ipairs(pids) do
      if pid then
        local how, code = S.wait(pid, false)
        if how then
          pids[i] = false
          if how ~= "exited" or code ~= 0 then status = 1 end
        else alive = alive + 1 end
      end
    end
    if alive > 0 then S.sleep(0.05) end
  end
  S.catch("TERM", false)
  S.catch("INT", false)
  st = assert(storage.open(target, sw.name, { schema = false }))
  local rows = st:trials({ params = false })
  st:close()
  out:write(tables.header(sw, rows), "\n")
  local best = tables.best(sw, rows)
  if best then out:write(string.format("best: trial %d, %s %.6g (tocha sweep best %s)\n", best.number, sw.metric, best.value, sw.file)) end
  return forwarded and 130 or status
end

return worker
