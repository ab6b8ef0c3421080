-- tocha.sweep.strategies: how a sweep proposes the next trial's parameters. Every strategy has
-- suggest(space, history, rng, info) -> params: grid (every combination, in order), random,
-- tpe (tocha.sweep.tpe), or a user's Lua file returning {suggest = function ... end}.
-- The sweep calls it with a generator seeded by the sweep's seed and the trial's number.
local space = require "tocha.sweep.space"
local tpe = require "tocha.sweep.tpe"

local strategies = {}

local function fixed_and_active(list, params)
  for _, p in ipairs(list) do
    if p.kind == "fixed" and space.active(p, params) and params[p.name] == nil then params[p.name] = p.value end
  end
  return params
end

--- random: each active parameter drawn from its distribution
local Random = { name = "random" }
Random.__index = Random
function Random:suggest(list, _, r)
  local params = {}
  for _, p in ipairs(list) do
    if space.active(p, params) then params[p.name] = space.sample(p, r) end
  end
  return params
end

--- grid: the n-th combination for the n-th trial; nil when every one has been proposed
local Grid = { name = "grid" }
Grid.__index = Grid
function Grid:suggest(list, history)
  self.points = self.points or space.grid_points(list)
  local point = self.points[#history + 1]
  if not point then return nil end
  local copy = {}
  for k, v in pairs(point) do copy[k] = v end
  return copy
end
function Grid:size(list)
  self.points = self.points or space.grid_points(list)
  return #self.points
end

--- a user's strategy: a Lua file returning a table with suggest(space, history, rng, info), or
--- that function; what it returns is checked against the space
local User = {}
User.__index = User
function User:suggest(list, history, r, info)
  local ok, params = pcall(self.fn, list, history, r, info)
  if not ok then error(string.format("strategy %s: %s", self.name, tostring(params)), 0) end
  if params == nil then return nil end
  if type(params) ~= "table" then
    error(string.format("strategy %s: suggest returned a %s (a table of name = value)", self.name, type(params)), 0)
  end
  fixed_and_active(list, params)
  local why = space.check(list, params)
  if why then error(string.format("strategy %s: suggest returned a bad proposal: %s", self.name, why), 0) end
  return params
end

local function user_strategy(value, name)
  local fn = type(value) == "function" and value or type(value) == "table" and value.suggest
  if type(fn) ~= "function" then return nil end
  return setmetatable({ name = name, fn = fn, source = value }, User)
end

--- strategies.resolve(value, base_dir) -> a strategy, or nil, why. value: "grid", "random",
--- "tpe", a strategy object (sweep.tpe{...}), a table with suggest, or the path of a Lua file
function strategies.resolve(value, base_dir)
  if value == "random" then return setmetatable({}, Random) end
  if value == "grid" then return setmetatable({}, Grid) end
  if value == "tpe" then return tpe.new() end
  if type(value) == "table" and (getmetatable(value) == Random or getmetatable(value) == Grid) then return value end
  if type(value) == "table" and value.name == "tpe" and value.suggest then return value end
  if type(value) == "string" and value:match("%.lua$") then
    local path = value
    local f = io.open(path, "rb")
    if not f and base_dir and not path:match("^/") then
      path = base_dir .. "/" .. value
      f = io.open(path, "rb")
    end
    if not f then return nil, "strategy file " .. value .. " does not exist" end
    f:close()
    local chunk, err = loadfile(path)
    if not chunk then return nil, "strategy file " .. err end
    local ok, v = pcall(chunk)
    if not ok then return nil, "strategy file " .. path .. ": " .. tostring(v) end
    local s = user_strategy(v, path)
    if not s then return nil, "strategy file " .. path .. " must return a table with suggest(space, history, rng) or that function" end
    return s
  end
  local s = user_strategy(value, "given in the sweep file")
  if s then return s end
  return nil, string.format("unknown strategy %s (grid, random, tpe, sweep.tpe { ... }, a .lua file, or a table with suggest)",
    type(value) == "string" and string.format("%q", value) or type(value))
end

return strategies
