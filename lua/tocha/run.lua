-- tocha.run: turns a script into an experiment. run{name =, config = defaults} reads the command
-- line against the defaults (types checked, --no-x booleans, a,b lists, --config file.lua,
-- did-you-mean, --help from the table), seeds the RNGs, and makes runs/<name>/<time>-<what
-- differs from the defaults> holding the resolved config (Lua and JSON), the command line,
-- the tocha version, the git commit and the seed.
local T = require "tocha"
local json = require "tocha.json"
local sys = T._sys

local run = {}

---------------------------------------------------------------------------------------------
-- the options a defaults table declares
---------------------------------------------------------------------------------------------
local function is_list(t)
  if next(t) == nil then return true end
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function type_of(v)
  if math.type(v) == "integer" then return "integer" end
  return type(v) -- number, string, boolean
end

local TYPE_WORD = { integer = "INT", number = "NUMBER", string = "STRING", boolean = "", list = "LIST" }

-- the limits an option can declare beside its default
local LIMITS = { "min", "max", "above", "below", "length", "check" }

-- a table declaring one option: {default, help =, choices =, limits...}; a group of options
-- has string keys only, so a table with a default at [1] and any named field is one option
local function is_option_spec(v)
  if v.help ~= nil or v.choices ~= nil or v.default ~= nil then return true end
  if v[1] == nil then return false end
  for k in pairs(v) do if type(k) == "string" then return true end end
  return false
end

-- why value v breaks option o's limits, or nil
local function broken_limit(o, v)
  if o.length and #v ~= o.length then return string.format("must hold %d values", o.length) end
  local items = o.type == "list" and v or { v }
  for _, x in ipairs(items) do
    local why
    if type(x) == "number" then
      if o.min and x < o.min then why = "must be at least " .. o.min
      elseif o.max and x > o.max then why = "must be at most " .. o.max
      elseif o.above and x <= o.above then why = "must be above " .. o.above
      elseif o.below and x >= o.below then why = "must be below " .. o.below end
    end
    if why then return why, o.type == "list" and x or nil end
  end
  if o.check then return o.check(v) end
end

-- a defaults entry is a plain value, a list, a nested table of more entries, or
-- {default, help = "...", choices = {...}, min =, max =, above =, below =, length =, check =,
-- training = false, bare =} (limits: numbers, or each number of a list, in [min, max], above /
-- below a bound; a list's length; check(v) returns why v cannot work, or nil. training = false:
-- the option does not change what training computes, so a resumed run may change it. bare: the
-- value of the option given without one, --resume alone)
local function collect(tbl, prefix, opts, level)
  local keys = {}
  for k in pairs(tbl) do
    if type(k) ~= "string" then error(string.format("tocha.run: config keys must be strings (got %s)", tostring(k)), level) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v, name = tbl[k], prefix .. k
    local o = { name = name, path = {}, help = nil, training = true }
    for part in name:gmatch("[^.]+") do o.path[#o.path + 1] = part end
    if type(v) == "table" and is_option_spec(v) then
      o.help, o.choices, o.training, o.bare = v.help, v.choices, v.training ~= false, v.bare
      for _, l in ipairs(LIMITS) do o[l] = v[l] end
      if o.check ~= nil and type(o.check) ~= "function" then
        error("tocha.run: option '" .. name .. "': check must be a function", level)
      end
      if v.default ~= nil then v = v.default else v = v[1] end
      if v == nil then error("tocha.run: option '" .. name .. "' needs a default value", level) end
    end
    if type(v) == "table" and is_list(v) then
      o.type, o.default = "list", v
      o.elem = v[1] ~= nil and type_of(v[1]) or "string"
      if o.elem == "integer" then
        for _, x in ipairs(v) do if math.type(x) ~= "integer" then o.elem = "number" end end
      end
      opts[#opts + 1] = o
    elseif type(v) == "table" then
      if o.help then error("tocha.run: option '" .. name .. "': a group of options cannot have a help string", level) end
      collect(v, name .. ".", opts, level)
    elseif type(v) == "number" or type(v) == "string" or type(v) == "boolean" then
      o.type, o.default = type_of(v), v
      opts[#opts + 1] = o
    else
      error(string.format("tocha.run: option '%s' has a %s default (numbers, strings, booleans, lists, tables)", name,
        type(v)), level)
    end
  end
  return opts
end

---------------------------------------------------------------------------------------------
-- values
---------------------------------------------------------------------------------------------
local function num_repr(v) -- the shortest %g that reads back as the same number
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "0/0" elseif v == math.huge then return "math.huge" elseif v == -math.huge then return "-math.huge" end
  for p = 6, 17 do
    local s = string.format("%." .. p .. "g", v)
    if tonumber(s) == v then
      if not s:find("[%.eEn]") then s = s .. ".0" end -- stays a float when read back
      return s
    end
  end
end

local function show(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = show(x) end
    return table.concat(parts, ",")
  end
  if type(v) == "number" then return (num_repr(v):gsub("%.0$", "")) end
  return tostring(v)
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local BOOLS = { ["true"] = true, yes = true, on = true, ["1"] = true, ["false"] = false, no = false, off = false, ["0"] = false }

-- a command-line string (or a value from a config file) as option o's type; nil, why on failure
local function convert(o, s, elem)
  local ty = elem or o.type
  if ty == "list" then
    local items = {}
    if type(s) == "table" then
      for i, x in ipairs(s) do
        local v, err = convert(o, x, o.elem)
        if v == nil then return nil, err end
        items[i] = v
      end
      return items
    end
    if s == "" then return items end
    for part in (s .. ","):gmatch("(.-),") do
      local v, err = convert(o, part, o.elem)
      if v == nil then return nil, err end
      items[#items + 1] = v
    end
    return items
  end
  if ty == "integer" then
    local v = math.tointeger(tonumber(s))
    if v == nil then return nil, "an integer" end
    return v
  elseif ty == "number" then
    local v = tonumber(s)
    if v == nil then return nil, "a number" end
    return v + 0.0
  elseif ty == "boolean" then
    if type(s) == "boolean" then return s end
    local v = BOOLS[tostring(s):lower()]
    if v == nil then return nil, "true or false" end
    return v
  else
    if type(s) ~= "string" and type(s) ~= "number" then return nil, "a string" end
    return tostring(s)
  end
end

-- the option names closest to an unknown one (edit distance), for "did you mean"
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function suggest(word, names)
  local best, bestd
  for _, n in ipairs(names) do
    local d = distance(word, n)
    if not bestd or d < bestd then best, bestd = n, d end
  end
  if best and bestd <= math.max(2, #word // 3) then return best end
end

---------------------------------------------------------------------------------------------
-- parsing
---------------------------------------------------------------------------------------------
local function usage_error(msg) error({ usage = msg }, 0) end

local function find(opts, name)
  name = name:gsub("%-", "_")
  for _, o in ipairs(opts) do
    if o.name:gsub("%-", "_") == name then return o end
  end
end

local function option_names(opts)
  local names = { "help", "config" }
  for _, o in ipairs(opts) do
    names[#names + 1] = o.name
    if o.type == "boolean" then names[#names + 1] = "no-" .. o.name end
  end
  return names
end

local function unknown(opts, word, where)
  local guess = suggest(word, option_names(opts))
  usage_error(string.format("unknown option --%s%s%s", word, where or "", guess and " (did you mean --" .. guess .. "?)" or ""))
end

local function set(o, config, v, source)
  if o.choices then
    local ok = false
    for _, c in ipairs(o.choices) do if c == v then ok = true end end
    if not ok then
      local names = {}
      for i, c in ipairs(o.choices) do names[i] = tostring(c) end
      local guess = type(v) == "string" and suggest(v, names)
      usage_error(string.format("--%s must be one of %s (got %s%s)%s", o.name, table.concat(names, ", "), show(v),
        source or "", guess and "; did you mean " .. guess .. "?" or ""))
    end
  end
  local why, item = broken_limit(o, v)
  if why then
    usage_error(string.format("--%s %s (got %s%s%s)", o.name, why, item and show(item) .. " in " or "", show(v), source or ""))
  end
  local t = config
  for i = 1, #o.path - 1 do t = t[o.path[i]] end
  t[o.path[#o.path]] = v
end

local function assign(o, config, raw, source)
  local v, want = convert(o, raw)
  if v == nil then
    usage_error(string.format("--%s expects %s%s (default %s), got %q%s", o.name, want,
      o.type == "list" and " list (a,b,c)" or "", show(o.default), tostring(raw), source or ""))
  end
  set(o, config, v, source)
end

-- a --config file: a Lua file returning a table (or JSON), shaped like the defaults
local function load_config_file(path, opts, config)
  local values
  if path:match("%.json$") then
    local v, err = json.read_file(path)
    if not v then usage_error("--config: " .. err) end
    values = v
  else
    local chunk, err = loadfile(path, "t", { math = math, string = string, table = table })
    if not chunk then usage_error("--config: " .. err) end
    local ok, v = pcall(chunk)
    if not ok then usage_error("--config " .. path .. ": " .. tostring(v)) end
    if type(v) ~= "table" then usage_error("--config " .. path .. ": the file must return a table") end
    values = v
  end
  local function walk(t, prefix)
    for k, v in pairs(t) do
      local name = prefix .. tostring(k)
      local o = find(opts, name)
      if o then
        assign(o, config, v, " in " .. path)
      elseif type(v) == "table" and not is_list(v) then
        walk(v, name .. ".")
      else
        unknown(opts, name, " in " .. path)
      end
    end
  end
  walk(values, "")
end

local function defaults_of(opts)
  local config = {}
  for _, o in ipairs(opts) do
    local t = config
    for i = 1, #o.path - 1 do
      t[o.path[i]] = t[o.path[i]] or {}
      t = t[o.path[i]]
    end
    local d = o.default
    if type(d) == "table" then d = table.move(d, 1, #d, 1, {}) end
    t[o.path[#o.path]] = d
  end
  return config
end

-- the options of spec; a malformed defaults table raises at level (options' caller's caller: 3)
local function options(spec, level)
  local opts = collect(spec.config or {}, "", {}, level + 1)
  for _, o in ipairs(opts) do
    local why = broken_limit(o, o.default)
    if why then error(string.format("tocha.run: option '%s': its default %s %s", o.name, show(o.default), why), level) end
  end
  if not find(opts, "seed") then
    opts[#opts + 1] = { name = "seed", path = { "seed" }, type = "integer", default = 0, help = "random seed",
      training = true }
  end
  -- the run's own options (unless the script declares options of these names): they steer
  -- tocha.run and stay out of the config
  local function control(name, default, help, extra)
    if find(opts, name) then return end
    local o = { name = name, path = { name }, type = type_of(default), default = default, help = help, training = false,
      control = true }
    for k, v in pairs(extra or {}) do o[k] = v end
    opts[#opts + 1] = o
  end
  control("name", "", "the run directory's name (default: the time and the options that differ from the defaults)")
  if spec.resume then
    control("resume", "", "continue a run from its newest checkpoint, in its own directory: alone, the newest run of "
      .. "this experiment with these options; or a run directory or a checkpoint", { bare = "newest" })
    control("resume_force", false, "resume even where options that change training differ from the checkpoint's")
  end
  return opts
end

local function get(config, o)
  local t = config
  for _, p in ipairs(o.path) do t = t[p] end
  return t
end

--- run.parse(spec, args) -> config, changed, help, control: changed lists {name, value} for the
--- options that differ from the defaults (with .cli, the position on the command line of those
--- given there, and .training); help is true when --help was asked for; control holds the run's
--- own options (name, and with spec.resume, resume and resume_force), which the config does
--- not. Raises {usage = message} on a bad command line.
function run.parse(spec, args)
  local opts = options(spec, 3)
  local config = defaults_of(opts)
  local cli, files, help = {}, {}, false
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then help = true
    elseif a:sub(1, 2) ~= "--" or #a == 2 then
      usage_error(string.format("unexpected argument %q (options start with --; see --help)", a))
    else
      local name, value = a:sub(3):match("^([^=]+)=(.*)$")
      name = name or a:sub(3)
      if name == "config" then
        if not value then i = i + 1; value = args[i] end
        if not value then usage_error("--config needs a file name") end
        files[#files + 1] = value
      else
        local o = find(opts, name)
        local negated = false
        if not o and name:sub(1, 3) == "no-" then
          o = find(opts, name:sub(4))
          if o and o.type ~= "boolean" then usage_error(string.format("--%s: --%s is not a boolean", a:sub(3), o.name)) end
          negated = o ~= nil
        end
        if not o then unknown(opts, name) end
        if negated then
          if value then usage_error(string.format("--%s takes no value", name)) end
          cli[#cli + 1] = { o, false }
        elseif o.type == "boolean" and not value then
          cli[#cli + 1] = { o, true }
        elseif o.bare ~= nil and not value and (args[i + 1] == nil or args[i + 1]:sub(1, 2) == "--") then
          cli[#cli + 1] = { o, o.bare }
        else
          if not value then
            i = i + 1
            value = args[i]
            if value == nil then usage_error(string.format("--%s needs a value (default %s)", o.name, show(o.default))) end
          end
          cli[#cli + 1] = { o, value }
        end
      end
    end
    i = i + 1
  end
  for _, f in ipairs(files) do load_config_file(f, opts, config) end
  local position = {}
  for k, c in ipairs(cli) do -- the command line wins
    assign(c[1], config, c[2])
    position[c[1]] = position[c[1]] or k
  end
  local changed, control = {}, {}
  for _, o in ipairs(opts) do
    local v = get(config, o)
    if o.control then control[o.name], config[o.name] = v, nil
    elseif not same(v, o.default) then changed[#changed + 1] = { o.name, v, cli = position[o], training = o.training } end
  end
  if spec.check and not help then -- what no single option can tell: options that conflict
    local why = spec.check(config, control)
    if why then usage_error(why) end
  end
  return config, changed, help, control
end

--- run.help(spec) -> the --help text
function run.help(spec)
  local opts = options(spec, 3)
  local lines = { string.format("usage: %s [options]", spec.usage or (arg and arg[0] and "tocha " .. arg[0] or "tocha script.lua")) }
  if spec.description then lines[#lines + 1] = "\n" .. spec.description end
  lines[#lines + 1] = "\noptions [default]:"
  local rows = {}
  for _, o in ipairs(opts) do
    local left = o.type == "boolean" and string.format("--%s, --no-%s", o.name, o.name)
      or string.format("--%s %s", o.name, TYPE_WORD[o.type])
    local right = o.help or ""
    if o.choices then
      local names = {}
      for i, c in ipairs(o.choices) do names[i] = tostring(c) end
      right = right .. (right ~= "" and " " or "") .. "(" .. table.concat(names, ", ") .. ")"
    end
    rows[#rows + 1] = { left, right .. (right ~= "" and " " or "") .. "[" .. show(o.default) .. "]" }
  end
  rows[#rows + 1] = { "--config FILE", "options from a Lua file returning a table (or a .json file); the command line wins" }
  rows[#rows + 1] = { "-h, --help", "this help" }
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  for _, r in ipairs(rows) do lines[#lines + 1] = "  " .. r[1] .. string.rep(" ", width - #r[1] + 2) .. r[2] end
  return table.concat(lines, "\n") .. "\n"
end

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
