-- tocha.run: turns a script into an experiment. run{name =, config = defaults} reads the command
-- line against the defaults (run/options.lua: types, limits, --no-x booleans, a,b lists,
-- --config file.lua, did-you-mean, --help), seeds the RNGs, and makes runs/<name>/<time>-<what
-- differs from the defaults> holding the resolved config (Lua and JSON), the command line,
-- the tocha version, the git commit and the seed; or, with --resume, continues a run in its
-- directory (run/resume.lua). A run that fails before logging leaves no directory.
local T = require "tocha"
local json = require "tocha.json"
local sys = T._sys

local run = {}

local O = require "tocha.run.options"
local options, show, num_repr, is_list, usage_error = O.options, O.show, O.num_repr, O.is_list, O.usage_error

--- run.parse(spec, args) and run.help(spec): the command line on its own (tocha/run/options.lua)
run.parse, run.help = O.parse, O.help

---------------------------------------------------------------------------------------------
-- the run directory
---------------------------------------------------------------------------------------------
local function serialize(v, indent)
  if type(v) == "number" then return num_repr(v) end
  if type(v) ~= "table" then return string.format("%q", v) end
  if is_list(v) then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = serialize(x, indent) end
    return "{ " .. table.concat(parts, ", ") .. (#parts > 0 and " }" or "}")
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local inner = indent .. "  "
  local lines = {}
  for _, k in ipairs(keys) do
    local key = k:match("^[%a_][%w_]*$") and k or string.format("[%q]", k)
    lines[#lines + 1] = inner .. key .. " = " .. serialize(v[k], inner) .. ","
  end
  return "{\n" .. table.concat(lines, "\n") .. "\n" .. indent .. "}"
end
run.serialize = function(v) return serialize(v, "") end

local function shell_quote(s)
  if s:match("^[%w%._/=:,+@%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then error("tocha.run: " .. err, 0) end
  local ok, err2 = f:write(text)
  local ok2, err3 = f:close()
  if not ok or not ok2 then error("tocha.run: writing " .. path .. ": " .. tostring(err2 or err3), 0) end
end

local function capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local out = p:read("a")
  p:close()
  out = out and out:gsub("%s+$", "")
  return out ~= "" and out or nil
end

local function git_info(dir)
  local q = shell_quote(dir)
  local commit = capture("git -C " .. q .. " rev-parse HEAD")
  if not commit then return nil end
  local dirty = capture("git -C " .. q .. " status --porcelain --untracked-files=no") ~= nil
  return commit, dirty
end

local function tocha_root()
  local here = package.searchpath("tocha.run", package.path)
  return here and here:match("^(.*)/lua/tocha/run%.lua$")
end

-- "lr=0.001,no-ema,prompts=a+b": what differs from the defaults, safe as a file name, the most
-- telling first: options given on the command line that change training, then the others
-- given there (none of these is cut: a sweep's trial gets its parameters there), then those
-- from --config files, which stop at 80 characters with a count of what was left out ("+3").
-- Paths and the run's own options stay out.
local function describe(changed)
  local groups = { {}, {}, {}, {} }
  for _, c in ipairs(changed) do
    local name, v = c[1], c[2]
    if not (type(v) == "string" and v:find("/", 1, true)) then
      local text
      if type(v) == "boolean" then text = v and name or "no-" .. name
      elseif type(v) == "table" then
        local items = {}
        for i, x in ipairs(v) do items[i] = show(x) end
        text = name .. "=" .. table.concat(items, "+")
      else text = name .. "=" .. show(v) end
      local g = (c.cli and 1 or 3) + (c.training == false and 1 or 0)
      table.insert(groups[g], (text:gsub("[^%w%.%-_=+]", "_")))
    end
  end
  local parts, left = {}, 0
  for g = 1, 2 do for _, t in ipairs(groups[g]) do parts[#parts + 1] = t end end
  local len = #table.concat(parts, ",")
  for g = 3, 4 do
    for _, t in ipairs(groups[g]) do
      if len + #t + 1 <= 80 then parts[#parts + 1], len = t, len + #t + 1 else left = left + 1 end
    end
  end
  local s = table.concat(parts, ",") .. (left > 0 and ",+" .. left or "")
  if #s > 220 then s = s:sub(1, 216) .. ",..." end -- a file name holds 255 bytes, the time before it too
  return s
end

local Run = {}
Run.__index = Run
Run.__tostring = function(r) return r.dir end

--- r:path(...) -> r.dir/a/b/...; makes the directories leading to it
function Run:path(...)
  local parts = { self.dir, ... }
  for i = 2, #parts do
    if type(parts[i]) ~= "string" and type(parts[i]) ~= "number" then error("run:path: parts must be strings", 2) end
  end
  local p = table.concat(parts, "/")
  local parent = p:match("^(.*)/[^/]*$")
  if parent and parent ~= self.dir then
    local ok, err = sys.mkdirs(parent)
    if not ok then error("run:path: " .. err, 2) end
  end
  return p
end

--- run.mkdirs(path) -> path: makes the directory and its parents (mkdir -p); raises on failure
function run.mkdirs(path)
  local ok, err = sys.mkdirs(path)
  if not ok then error("run.mkdirs: " .. err, 2) end
  return path
end

--- r:writer(opts) -> the run's TensorBoard writer (log.tensorboard(r.dir, opts)), made once.
--- A sweep's trial flushes every second, so that its worker follows metrics.jsonl closely.
function Run:writer(opts)
  if not self._writer then
    if os.getenv("TOCHA_SWEEP_TRIAL") and not (opts and opts.flush_secs) then
      local o = { flush_secs = 1 }
      for k, v in pairs(opts or {}) do o[k] = v end
      opts = o
    end
    self._writer = require("tocha.log").tensorboard(self.dir, opts)
  end
  return self._writer
end

--- r:should_stop() -> true once the process was sent SIGTERM (a sweep stopping the trial
--- early, or a scheduler): the script can then save a checkpoint and finish. The handler is
--- installed by the first call (at the start for a sweep's trial), so a script that never
--- asks still ends on SIGTERM as usual.
function Run:should_stop()
  if not self._catching then
    T._sys.catch("TERM")
    self._catching = true
  end
  return T._sys.caught("TERM")
end

--- r:save_checkpoint{model =, optimizer =, ema =, step =, keep =, files =, ...} -> the
--- checkpoint written: checkpoint.save into r.checkpoint_dir with the run's config (what a
--- resume compares), after flushing the writer, so that a run killed later keeps the metrics it
--- logged up to its last checkpoint
function Run:save_checkpoint(state)
  if type(state) ~= "table" then error("run:save_checkpoint: expected a state table", 2) end
  if self._writer then self._writer:flush() end
  local s = { config = self.config }
  for k, v in pairs(state) do s[k] = v end
  local ok, dir = pcall(require("tocha.checkpoint").save, self.checkpoint_dir, s)
  if not ok then error(dir, 2) end
  return dir
end

--- r:load_checkpoint{model =, optimizer =, ema =, ...} -> when the run resumes (r.resume), what
--- checkpoint.load returns for its checkpoint, restored into these; nil for a fresh run
function Run:load_checkpoint(targets)
  if not self.resume then return nil end
  local ok, state = pcall(require("tocha.checkpoint").load, self.resume.checkpoint, targets)
  if not ok then error(state, 2) end
  return state
end

local function write_meta(r) write_file(r.dir .. "/meta.json", json.encode(r.meta) .. "\n") end

--- r:finish(metrics): the run's hyperparameters (its config) and final metrics go to the
--- HParams tab, meta.json gets the end time, the metrics and status "finished", and the
--- writer is closed
function Run:finish(metrics)
  metrics = metrics or {}
  local w = self:writer()
  w:add_hparams(self.config, metrics)
  w:close()
  self._writer = nil
  self.meta.end_time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local all = self.meta.metrics or {} -- a resumed run keeps what earlier parts measured, unless measured again
  for k, v in pairs(metrics) do all[k] = v end
  self.meta.metrics = all
  self.meta.status = "finished"
  self.finished = true
  write_meta(self)
end

---------------------------------------------------------------------------------------------
-- a run that fails
---------------------------------------------------------------------------------------------
-- The runner (lua/main.c) keeps the message of an error that ends the script in the registry.
-- When the state closes after one, a new run that logged nothing (no metrics, no checkpoint,
-- no file of its own) leaves no directory behind; any other is marked in meta.json: "failed"
-- when it logged nothing (tocha plot and --resume skip those), "crashed" otherwise.
local RUN_FILES = { ["config.lua"] = true, ["config.json"] = true, ["command.txt"] = true, ["meta.json"] = true,
  ["metrics.jsonl"] = true }

-- nothing logged: no metrics, no summary in the event files, no checkpoint; and whether the
-- directory holds only what run{} and the writer put there
local function logged_nothing(dir)
  local f = io.open(dir .. "/metrics.jsonl", "rb")
  if f then
    local size = f:seek("end")
    f:close()
    if size > 0 then return false end
  end
  local events = require "tocha.log.events"
  local only_ours = true
  for _, name in ipairs(sys.listdir(dir) or {}) do
    if name:find("tfevents", 1, true) then
      for _, e in ipairs(events.read_file(dir .. "/" .. name) or {}) do if e.summary then return false end end
    elseif name == "checkpoints/" then return false
    elseif not RUN_FILES[name] then only_ours = false end
  end
  return true, only_ours
end

local function on_close(r)
  local err = debug.getregistry()["tocha.error"]
  if r.finished or not err then return end
  local nothing, only_ours = logged_nothing(r.dir)
  if r.fresh and only_ours then
    for _, name in ipairs(sys.listdir(r.dir) or {}) do os.remove(r.dir .. "/" .. name) end
    if os.remove(r.dir) then return end
  end
  -- failed: before logging anything; crashed: after (its logs and checkpoints stand)
  r.meta.status, r.meta.error = nothing and "failed" or "crashed", tostring(err):match("^[^\n]*")
  r.meta.end_time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  pcall(write_meta, r)
end

local watched = {} -- held until the state closes, whose finalizers then run on_close
local function watch(r)
  watched[#watched + 1] = setmetatable({ run = r }, { __gc = function(g) on_close(g.run) end })
end

local function make_dir(root, name, leaf)
  local base = root .. "/" .. name .. "/" .. leaf
  local ok, err = sys.mkdirs(root .. "/" .. name)
  if not ok then error("tocha.run: " .. err, 0) end
  for k = 1, 1000 do
    local dir = k == 1 and base or base .. "-" .. k
    local made, why, exists = sys.mkdir(dir)
    if made then return dir end
    if not exists then error("tocha.run: " .. why, 0) end
  end
  error("tocha.run: cannot find a free directory name for " .. base, 0)
end

-- the checkpoint --resume names, checked against the options: {checkpoint, run, step, config,
-- differences}; a usage error when there is none, or when options that change training differ
-- and --resume_force is not given
local function find_resume(opts, config, control, exp_dir)
  local R = require "tocha.run.resume"
  local function differences(f) return R.differences(opts, config, f.config, show) end
  local found
  if control.resume == "newest" then
    local given = os.getenv("TOCHA_RUN_DIR")
    local candidates = (given and given ~= "") and { given }
      or control.name ~= "" and { exp_dir .. "/" .. control.name } or R.runs(exp_dir)
    local newest
    for _, dir in ipairs(candidates) do
      local c = require("tocha.checkpoint").latest(R.checkpoints(dir))
      if c then
        local f = R.info({ checkpoint = c, run = dir })
        newest = newest or f
        if #differences(f) == 0 then found = f; break end
      end
    end
    if not newest then usage_error("--resume: no run in " .. exp_dir .. " has a checkpoint") end
    if not found and not control.resume_force then
      usage_error(string.format("--resume: no run in %s with these options has a checkpoint; the newest one, %s, "
        .. "differs in options that change training:\n%s\n--resume_force continues it with these options, "
        .. "--resume DIR another run", exp_dir, newest.run, R.describe(differences(newest))))
    end
    found = found or newest
  else
    local f, why = R.locate(control.resume)
    if not f then usage_error("--resume: " .. why) end
    found = R.info(f)
    if #differences(found) > 0 and not control.resume_force then
      usage_error(string.format("--resume: options that change training differ from those of %s:\n%s\n"
        .. "--resume_force continues with these options anyway", found.checkpoint, R.describe(differences(found))))
    end
  end
  found.differences = differences(found)
  return found
end

local function now() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

local function start(spec, level)
  if type(spec) ~= "table" then error("tocha.run: expected {name = ..., config = {...}}", level) end
  local name = spec.name or (arg and arg[0] and arg[0]:match("([^/]+)%.lua$")) or "run"
  if type(name) ~= "string" or name == "" or name:find("[/%c]") or name:find("^%.") then
    error("tocha.run: name must be a non-empty string without '/' (got " .. tostring(name) .. ")", level)
  end
  if spec.config ~= nil and type(spec.config) ~= "table" then error("tocha.run: config must be a table", level) end
  local opts = options(spec, level + 1) -- raises on a malformed defaults table, at the caller
  local args = spec.args or arg or {}
  local exit = spec.exit ~= false
  local root = spec.root or os.getenv("TOCHA_RUNS") or "runs"
  local ok, config, changed, help, control = pcall(run.parse, spec, args)
  local resume
  if ok and not help and control.resume and control.resume ~= "" then
    ok, resume = pcall(find_resume, opts, config, control, root .. "/" .. name)
    if not ok then config = resume end
  end
  if ok and control.name ~= "" and (control.name:find("[/%c]") or control.name:find("^%.")) then
    ok, config = false, { usage = "--name must be a file name, without '/' (got " .. control.name .. ")" }
  end
  if not ok then
    local msg = type(config) == "table" and config.usage or tostring(config)
    if exit then
      io.stderr:write("tocha.run: ", msg, "\n(options: --help)\n")
      os.exit(2)
    end
    error("tocha.run: " .. msg, level)
  end
  if help then
    if exit then
      io.stdout:write(run.help(spec))
      os.exit(0)
    end
    return nil, run.help(spec)
  end

  local seed = config.seed
  T.manual_seed(seed)
  math.randomseed(seed)
  local given = os.getenv("TOCHA_RUN_DIR") -- given by a sweep's worker: runs/<sweep>/<trial>
  local dir
  if resume and resume.run then dir = resume.run
  elseif given and given ~= "" then
    dir = given
    local made, err = sys.mkdirs(dir)
    if not made then error("tocha.run: " .. err, 0) end
  else
    local desc = describe(changed)
    dir = make_dir(root, name, control.name ~= "" and control.name
      or os.date("%Y%m%d-%H%M%S") .. (desc ~= "" and "-" .. desc or ""))
  end

  local argv = {}
  if arg then
    for i = -1, #arg do if arg[i] then argv[#argv + 1] = arg[i] end end
  end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  local non_default = {}
  for _, c in ipairs(changed) do non_default[c[1]] = c[2] end
  local continuing = resume and resume.run == dir
  local meta = continuing and json.read_file(dir .. "/meta.json") or nil
  if meta then -- the run goes on in its directory: its logs back to the checkpoint's step
    require("tocha.run.resume").trim(dir, resume.step, resume.time)
    meta.resumed = meta.resumed or {}
    local forced = {}
    for _, d in ipairs(resume.differences) do forced[d[1]] = { d[3], d[2] } end
    table.insert(meta.resumed, { time = now(), step = resume.step, args = table.move(args, 1, #args, 1, {}),
      changed = next(forced) and forced or nil })
    meta.status, meta.end_time, meta.error = "running", nil, nil
    meta.non_default, meta.seed = non_default, seed
    local f = assert(io.open(dir .. "/command.txt", "ab"))
    f:write(table.concat(quoted, " "), "\n")
    f:close()
  else
    local commit, dirty = git_info(".")
    local troot = tocha_root()
    local tcommit = troot and git_info(troot)
    meta = {
      name = name, dir = dir, start_time = now(), started = sys.now(), seed = seed, status = "running",
      command = argv, args = table.move(args, 1, #args, 1, {}), non_default = non_default,
      tocha_version = T.version, tocha_commit = tcommit, git_commit = commit, git_dirty = dirty,
      host = sys.hostname(), resumed_from = resume and resume.checkpoint or nil,
    }
    write_file(dir .. "/command.txt", table.concat(quoted, " ") .. "\n")
  end
  write_file(dir .. "/config.lua", "return " .. serialize(config, "") .. "\n")
  write_file(dir .. "/config.json", json.encode(config) .. "\n")
  write_file(dir .. "/meta.json", json.encode(meta) .. "\n")
  if not spec.quiet then
    print("run: " .. dir)
    if resume then print(string.format("resuming from %s (step %d)", resume.checkpoint, resume.step)) end
  end
  local r = setmetatable({ name = name, dir = dir, config = config, seed = seed, changed = changed, meta = meta,
    resume = resume, checkpoint_dir = require("tocha.run.resume").checkpoints(dir),
    fresh = not continuing and not (given and given ~= "") }, Run)
  watch(r)
  if os.getenv("TOCHA_SWEEP_TRIAL") then r:should_stop() end
  return r
end

--- run{name = "t2i", config = defaults, description =, root = "runs" (or $TOCHA_RUNS),
---     args = arg, exit = true, quiet = false, resume = false, check = function(config, control)}
---     -> r with r.dir, r.config, r.seed, r:path(...). resume = true gives the script --resume and
---     --resume_force (r.resume, r:save_checkpoint, r:load_checkpoint); check returns why a
---     combination of options cannot work, or nil.
--- exit = false raises on a bad command line (and returns nil, help_text for --help) instead
--- of printing and exiting.
return setmetatable(run, { __call = function(_, spec) return start(spec, 2) end }) -- a tail call: level 2 is run{}'s caller
