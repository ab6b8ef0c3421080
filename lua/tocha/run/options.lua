-- tocha/run/options.lua: the command line of a tocha.run script, read against its table of
-- defaults: the options it declares (types, choices, limits, help), values converted and
-- checked, --config files, did-you-mean for unknown names, the run's own options (--name,
-- --resume) kept apart, and the --help text. tocha.run builds on it.
local json = require "tocha.json"

local O = {}

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

--- O.parse(spec, args) -> config, changed, help, control: changed lists {name, value} for the
--- options that differ from the defaults (with .cli, the position on the command line of those
--- given there, and .training); help is true when --help was asked for; control holds the run's
--- own options (name, and with spec.resume, resume and resume_force), which the config does
--- not. Raises {usage = message} on a bad command line.
function O.parse(spec, args)
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

--- O.help(spec) -> the --help text
function O.help(spec)
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

O.options, O.show, O.num_repr, O.is_list, O.usage_error, O.same = options, show, num_repr, is_list, usage_error, same
return O
