-- tocha.sweep.space: the distributions a sweep's parameters are drawn from (choice, grid,
-- uniform, loguniform, int, normal, fixed values, and conditional blocks made with when), and
-- the space they form: a list of parameters in a fixed order, each knowing when it is active,
-- how to draw a value, whether a value is valid, and how it reads on a command line.
local space = {}

local Dist = {}
Dist.__index = Dist
local When = {}
When.__index = When

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function show(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = show(x) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then
    for p = 6, 17 do
      local s = string.format("%." .. p .. "g", v)
      if tonumber(s) == v then return s end
    end
  end
  return tostring(v)
end
space.show = show

local function is_list(t)
  if type(t) ~= "table" or getmetatable(t) then return false end
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

-- a value a parameter can take: a number, string or boolean, or a list of them
local function plain_value(v)
  local ty = type(v)
  if ty == "number" then return finite(v) end
  if ty == "string" or ty == "boolean" then return true end
  if is_list(v) then
    for _, x in ipairs(v) do
      if not (finite(x) or type(x) == "string" or type(x) == "boolean") then return false end
    end
    return true
  end
  return false
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    if type(a) == "number" and type(b) == "number" then return a == b end
    return a == b
  end
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
space.same = same

---------------------------------------------------------------------------------------------
-- distributions (errors point at the sweep file's line)
---------------------------------------------------------------------------------------------
local function need_number(fn, what, v)
  if not finite(v) then error(string.format("sweep.%s: %s must be a finite number (got %s)", fn, what, show(v)), 3) end
end

local function need_order(fn, low, high)
  if low >= high then
    error(string.format("sweep.%s: low must be below high (got %s and %s)", fn, show(low), show(high)), 3)
  end
end

local function values_of(fn, values)
  if not is_list(values) or #values == 0 then
    error(string.format("sweep.%s: needs a list of at least one value, e.g. sweep.%s { 16, 32 }", fn, fn), 3)
  end
  for i, v in ipairs(values) do
    if not plain_value(v) then
      error(string.format("sweep.%s: value %d is %s (numbers, strings, booleans, or lists of them)", fn, i, show(v)), 3)
    end
    for j = 1, i - 1 do
      if same(values[j], v) then error(string.format("sweep.%s: the value %s is given twice", fn, show(v)), 3) end
    end
  end
  return table.move(values, 1, #values, 1, {})
end

--- space.choice{values}: one of the values, each equally likely
function space.choice(values) return setmetatable({ kind = "choice", values = values_of("choice", values) }, Dist) end

--- space.grid{values}: one of the values; the grid strategy tries every combination
function space.grid(values) return setmetatable({ kind = "grid", values = values_of("grid", values) }, Dist) end

--- space.uniform(low, high): a float in [low, high]
function space.uniform(low, high)
  need_number("uniform", "low", low)
  need_number("uniform", "high", high)
  need_order("uniform", low, high)
  return setmetatable({ kind = "uniform", low = low + 0.0, high = high + 0.0 }, Dist)
end

--- space.loguniform(low, high): a float in [low, high] whose logarithm is uniform
function space.loguniform(low, high)
  need_number("loguniform", "low", low)
  need_number("loguniform", "high", high)
  if low <= 0 then error(string.format("sweep.loguniform: low must be above 0 (got %s)", show(low)), 2) end
  need_order("loguniform", low, high)
  return setmetatable({ kind = "loguniform", low = low + 0.0, high = high + 0.0, log = true }, Dist)
end

--- space.int(low, high, {step = 1, log = false}): an integer in [low, high], low + k * step
function space.int(low, high, opts)
  if math.type(low) ~= "integer" then error("sweep.int: low must be an integer (got " .. show(low) .. ")", 2) end
  if math.type(high) ~= "integer" then error("sweep.int: high must be an integer (got " .. show(high) .. ")", 2) end
  need_order("int", low, high)
  if opts ~= nil and type(opts) ~= "table" then error("sweep.int: options must be a table {step =, log =}", 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "step" and k ~= "log" then error("sweep.int: unknown option '" .. tostring(k) .. "' (step, log)", 2) end
  end
  local step = opts.step or 1
  if math.type(step) ~= "integer" or step < 1 then error("sweep.int: step must be a positive integer (got " .. show(step) .. ")", 2) end
  local log = opts.log == true
  if log and step ~= 1 then error("sweep.int: log = true takes no step", 2) end
  if log and low < 1 then error("sweep.int: log = true needs low >= 1 (got " .. low .. ")", 2) end
  return setmetatable({ kind = "int", low = low, high = low + (high - low) // step * step, step = step, log = log }, Dist)
end

--- space.normal(mean, std): a float drawn from a normal distribution
function space.normal(mean, std)
  need_number("normal", "mean", mean)
  need_number("normal", "std", std)
  if std <= 0 then error(string.format("sweep.normal: std must be above 0 (got %s)", show(std)), 2) end
  return setmetatable({ kind = "normal", mean = mean + 0.0, std = std + 0.0 }, Dist)
end

--- space.when(name, value or {values}, {params}): params that exist only while the parameter
--- `name` has the value (or one of the values)
function space.when(name, values, block)
  if type(name) ~= "string" or name == "" then error("sweep.when: the first argument names a parameter (a string)", 2) end
  if not is_list(values) then values = { values } end
  if #values == 0 then error("sweep.when: no value to compare '" .. name .. "' with", 2) end
  for _, v in ipairs(values) do
    if not plain_value(v) then error("sweep.when: '" .. name .. "' cannot take the value " .. show(v), 2) end
  end
  if type(block) ~= "table" or getmetatable(block) then
    error("sweep.when: the third argument is a table of the parameters that exist when " .. name .. " = " .. show(values[1]), 2)
  end
  return setmetatable({ name = name, values = values, block = block }, When)
end

function space.is_distribution(v) return getmetatable(v) == Dist end

---------------------------------------------------------------------------------------------
-- the space: parameters in order, parents before the parameters that depend on them
---------------------------------------------------------------------------------------------
-- the values a parameter can take, for a condition to be checked against
local function can_take(p, v)
  if p.kind == "fixed" then return same(p.value, v) end
  if p.kind == "choice" or p.kind == "grid" then
    for _, x in ipairs(p.values) do if same(x, v) then return true end end
    return false
  end
  if not finite(v) then return false end
  if p.kind == "int" then return math.type(v) == "integer" and v >= p.low and v <= p.high and (v - p.low) % p.step == 0 end
  if p.kind == "normal" then return true end
  return v >= p.low and v <= p.high
end
space.can_take = can_take

local function compile(tbl, where, cond, out, by_name)
  local names, blocks = {}, {}
  for k, v in pairs(tbl) do
    if type(k) == "string" then names[#names + 1] = k
    elseif math.type(k) == "integer" then blocks[#blocks + 1] = k
    else error(string.format("sweep: %s has a key %s (parameter names are strings)", where, show(k)), 0) end
  end
  table.sort(names)
  table.sort(blocks)
  for _, name in ipairs(names) do
    local v, full = tbl[name], where .. "." .. name
    if not name:match("^[%a_][%w_%.%-]*$") then
      error(string.format("sweep: %s: a parameter name is letters, digits, '_', '-' and '.'", full), 0)
    end
    if by_name[name] then error(string.format("sweep: %s: the parameter '%s' is defined twice", full, name), 0) end
    local p
    if getmetatable(v) == Dist then
      p = {}
      for key, x in pairs(v) do p[key] = x end
    elseif getmetatable(v) == When then
      error(string.format("sweep: %s: sweep.when(...) goes in the list part of the space, not under a name", full), 0)
    elseif plain_value(v) then
      p = { kind = "fixed", value = v }
    elseif type(v) == "table" then
      error(string.format("sweep: %s is a table but not a distribution (sweep.choice, grid, uniform, loguniform, int, normal)", full), 0)
    else
      error(string.format("sweep: %s is a %s (a distribution or a fixed value)", full, type(v)), 0)
    end
    p.name, p.condition = name, cond
    out[#out + 1] = p
    by_name[name] = p
  end
  for _, i in ipairs(blocks) do
    local w = tbl[i]
    if getmetatable(w) ~= When then
      error(string.format("sweep: %s[%d] is %s; the list part of the space holds sweep.when(...) blocks", where, i,
        type(w) == "table" and "a table" or show(w)), 0)
    end
    local parent = by_name[w.name]
    if not parent then
      error(string.format("sweep: %s: sweep.when(%q, ...) names no parameter defined before it", where, w.name), 0)
    end
    for _, v in ipairs(w.values) do
      if not can_take(parent, v) then
        error(string.format("sweep: %s: sweep.when(%q, %s, ...): %s never takes that value", where, w.name, show(v), w.name), 0)
      end
    end
    compile(w.block, where .. "[when " .. w.name .. "=" .. show(w.values[1]) .. "]", { name = w.name, values = w.values }, out, by_name)
  end
  return out
end

--- space.compile(tbl) -> list of parameters {name, kind, low, high, step, log, values, mean,
--- std, value, condition = {name, values} or nil}; raises "sweep: space.x: why"
function space.compile(tbl)
  if type(tbl) ~= "table" then error("sweep: space must be a table of name = distribution", 0) end
  local params = compile(tbl, "space", nil, {}, {})
  if #params == 0 then error("sweep: space is empty", 0) end
  return params
end

--- space.active(p, params): whether p exists given the values of the parameters before it
function space.active(p, params)
  local c = p.condition
  if not c then return true end
  local v = params[c.name]
  if v == nil then return false end
  for _, x in ipairs(c.values) do if same(x, v) then return true end end
  return false
end

--- space.sample(p, rng) -> a value of p
function space.sample(p, r)
  local k = p.kind
  if k == "fixed" then return p.value end
  if k == "choice" or k == "grid" then return p.values[r:int(1, #p.values)] end
  if k == "uniform" then return r:uniform(p.low, p.high) end
  if k == "loguniform" then return math.exp(r:uniform(math.log(p.low), math.log(p.high))) end
  if k == "normal" then return r:normal(p.mean, p.std) end
  if p.log then
    local v = math.floor(math.exp(r:uniform(math.log(p.low - 0.5), math.log(p.high + 0.5))) + 0.5)
    return math.max(p.low, math.min(p.high, v))
  end
  return p.low + r:int(0, (p.high - p.low) // p.step) * p.step
end

--- space.check(params, list) -> nil, or why the table of values does not fit the space
function space.check(list, params)
  for _, p in ipairs(list) do
    local v = params[p.name]
    if space.active(p, params) then
      if v == nil then return string.format("no value for %s", p.name) end
      if not can_take(p, v) then return string.format("%s = %s is not a value of its distribution", p.name, show(v)) end
    elseif v ~= nil then
      return string.format("%s = %s is given, but it exists only when %s is %s", p.name, show(v), p.condition.name,
        show(p.condition.values[1]))
    end
  end
  local known = {}
  for _, p in ipairs(list) do known[p.name] = true end
  for k in pairs(params) do
    if not known[k] then return string.format("%s is not a parameter of the space", tostring(k)) end
  end
end

--- space.grid_points(list) -> every combination of the parameters' values, in a fixed order;
--- raises when a parameter has no finite set of values
function space.grid_points(list)
  local values = {}
  for _, p in ipairs(list) do
    if p.kind == "fixed" then values[p] = { p.value }
    elseif p.kind == "choice" or p.kind == "grid" then values[p] = p.values
    elseif p.kind == "int" and (p.high - p.low) // p.step < 10000 and not p.log then
      local vs = {}
      for v = p.low, p.high, p.step do vs[#vs + 1] = v end
      values[p] = vs
    else
      error(string.format("sweep: strategy grid: %s is %s, which has no grid of values (use sweep.grid { ... })",
        p.name, p.kind), 0)
    end
  end
  local points, cur = {}, {}
  local function walk(i)
    if i > #list then
      local copy = {}
      for k, v in pairs(cur) do copy[k] = v end
      points[#points + 1] = copy
      if #points > 1000000 then error("sweep: strategy grid: more than a million combinations", 0) end
      return
    end
    local p = list[i]
    if not space.active(p, cur) then return walk(i + 1) end
    for _, v in ipairs(values[p]) do
      cur[p.name] = v
      walk(i + 1)
    end
    cur[p.name] = nil
  end
  walk(1)
  return points
end

--- space.arg(v) -> v as a command-line value: numbers exactly, booleans true/false, lists a,b
function space.arg(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = space.arg(x) end
    return table.concat(parts, ",")
  end
  if type(v) == "number" then return (show(v)) end
  return tostring(v)
end

--- space.describe(p) -> "loguniform(0.0003, 0.003)" and the like
function space.describe(p)
  local k = p.kind
  if k == "fixed" then return show(p.value) end
  if k == "choice" or k == "grid" then
    local parts = {}
    for i, v in ipairs(p.values) do parts[i] = show(v) end
    return k .. " {" .. table.concat(parts, ", ") .. "}"
  end
  if k == "normal" then return string.format("normal(%s, %s)", show(p.mean), show(p.std)) end
  if k == "int" then
    local extra = p.log and ", log" or p.step ~= 1 and ", step " .. p.step or ""
    return string.format("int(%d, %d%s)", p.low, p.high, extra)
  end
  return string.format("%s(%s, %s)", k, show(p.low), show(p.high))
end

return space
