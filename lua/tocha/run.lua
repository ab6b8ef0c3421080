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

-- a defaults entry is a plain value, a list, a nested table of more entries, or
-- {default, help = "...", choices = {...}} (a table with a help, choices or default field)
local function collect(tbl, prefix, opts, level)
  local keys = {}
  for k in pairs(tbl) do
    if type(k) ~= "string" then error(string.format("tocha.run: config keys must be strings (got %s)", tostring(k)), level) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v, name = tbl[k], prefix .. k
    local o = { name = name, path = {}, help = nil }
    for part in name:gmatch("[^.]+") do o.path[#o.path + 1] = part end
    if type(v) == "table" and (v.help ~= nil or v.choices ~= nil or v.default ~= nil) then
      o.help, o.choices = v.help, v.choices
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

local function options(spec, level)
  local opts = collect(spec.config or {}, "", {}, level + 1)
  if not find(opts, "seed") then
    opts[#opts + 1] = { name = "seed", path = { "seed" }, type = "integer", default = 0, help = "random seed" }
  end
  return opts
end

local function get(config, o)
  local t = config
  for _, p in ipairs(o.path) do t = t[p] end
  return t
end

--- run.parse(spec, args) -> config, changed (list of {name, value} that differ from the
--- defaults), or raises {usage = message}; args.help is true when --help was asked for
function run.parse(spec, args)
  local opts = options(spec, 2)
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
  for _, c in ipairs(cli) do assign(c[1], config, c[2]) end -- the command line wins
  local changed = {}
  for _, o in ipairs(opts) do
    local v = get(config, o)
    if not same(v, o.default) then changed[#changed + 1] = { o.name, v } end
  end
  return config, changed, help
end

--- run.help(spec) -> the --help text
function run.help(spec)
  local opts = options(spec, 2)
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

-- "lr=0.001,ema=no,prompts=a+b": what differs from the defaults, safe as a file name
local function describe(changed)
  local parts = {}
  for _, c in ipairs(changed) do
    local name, v = c[1], c[2]
    local text
    if type(v) == "boolean" then text = v and name or "no-" .. name
    elseif type(v) == "table" then
      local items = {}
      for i, x in ipairs(v) do items[i] = show(x) end
      text = name .. "=" .. table.concat(items, "+")
    else text = name .. "=" .. show(v) end
    parts[#parts + 1] = text
  end
  local s = table.concat(parts, ","):gsub("[^%w%.%-_=+,]", "_")
  if #s > 80 then s = s:sub(1, 77) .. "..." end
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

--- r:finish(metrics): the run's hyperparameters (its config) and final metrics go to the
--- HParams tab, meta.json gets the end time and the metrics, and the writer is closed
function Run:finish(metrics)
  metrics = metrics or {}
  local w = self:writer()
  w:add_hparams(self.config, metrics)
  w:close()
  self._writer = nil
  self.meta.end_time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  self.meta.metrics = metrics
  write_file(self.dir .. "/meta.json", json.encode(self.meta) .. "\n")
end

local function make_dir(root, name, stamp, desc)
  local base = root .. "/" .. name .. "/" .. stamp .. (desc ~= "" and "-" .. desc or "")
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

local function start(spec, level)
  if type(spec) ~= "table" then error("tocha.run: expected {name = ..., config = {...}}", level) end
  local name = spec.name or (arg and arg[0] and arg[0]:match("([^/]+)%.lua$")) or "run"
  if type(name) ~= "string" or name == "" or name:find("[/%c]") or name:find("^%.") then
    error("tocha.run: name must be a non-empty string without '/' (got " .. tostring(name) .. ")", level)
  end
  if spec.config ~= nil and type(spec.config) ~= "table" then error("tocha.run: config must be a table", level) end
  options(spec, level) -- raises on a malformed defaults table, at the caller
  local args = spec.args or arg or {}
  local exit = spec.exit ~= false
  local ok, config, changed, help = pcall(run.parse, spec, args)
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
  local root = spec.root or os.getenv("TOCHA_RUNS") or "runs"
  local stamp = os.date("%Y%m%d-%H%M%S")
  local dir = os.getenv("TOCHA_RUN_DIR") -- given by a sweep's worker: runs/<sweep>/<trial>
  if dir and dir ~= "" then
    local ok, err = sys.mkdirs(dir)
    if not ok then error("tocha.run: " .. err, 0) end
  else
    dir = make_dir(root, name, stamp, describe(changed))
  end

  local argv = {}
  if arg then
    for i = -1, #arg do if arg[i] then argv[#argv + 1] = arg[i] end end
  end
  local non_default = {}
  for _, c in ipairs(changed) do non_default[c[1]] = c[2] end
  local commit, dirty = git_info(".")
  local troot = tocha_root()
  local tcommit = troot and git_info(troot)
  local meta = {
    name = name, dir = dir, start_time = os.date("!%Y-%m-%dT%H:%M:%SZ"), seed = seed,
    command = argv, args = table.move(args, 1, #args, 1, {}), non_default = non_default,
    tocha_version = T.version, tocha_commit = tcommit, git_commit = commit, git_dirty = dirty,
    host = sys.hostname(),
  }
  write_file(dir .. "/config.lua", "return " .. serialize(config, "") .. "\n")
  write_file(dir .. "/config.json", json.encode(config) .. "\n")
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  write_file(dir .. "/command.txt", table.concat(quoted, " ") .. "\n")
  write_file(dir .. "/meta.json", json.encode(meta) .. "\n")
  if not spec.quiet then print("run: " .. dir) end
  local r = setmetatable({ name = name, dir = dir, config = config, seed = seed, changed = changed, meta = meta }, Run)
  if os.getenv("TOCHA_SWEEP_TRIAL") then r:should_stop() end
  return r
end

--- run{name = "t2i", config = defaults, description =, root = "runs" (or $TOCHA_RUNS),
---     args = arg, exit = true, quiet = false} -> r with r.dir, r.config, r.seed, r:path(...).
--- exit = false raises on a bad command line (and returns nil, help_text for --help) instead
--- of printing and exiting.
return setmetatable(run, { __call = function(_, spec) return start(spec, 3) end })
