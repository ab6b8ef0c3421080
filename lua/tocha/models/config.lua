-- tocha/models/config.lua: turns a model's config table (a tocha preset, a hand-written table,
-- or a decoded transformers / diffusers config.json) into a complete, checked copy: defaults,
-- then the config, then overrides. Unknown keys are errors, so a typo never goes unnoticed.
local json = require "tocha.json"

local config = {}

-- a value for `fixed` keys that must be absent (nil or JSON null)
config.NONE = setmetatable({}, { __tostring = function() return "nil" end })

local function copy(v)
  if type(v) ~= "table" or v == json.null then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for i, x in ipairs(v) do parts[i] = show(x) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
config.show = show

--- config.resolve(what, spec, cfg, overrides) -> a new table. spec = {defaults = {...},
--- fixed = {key = only accepted value (config.NONE: must be absent)}, ignored = {key = true},
--- optional = {key = true} (accepted, no default)}.
--- Keys starting with "_" (JSON metadata) and `ignored` keys are dropped; JSON null is nil;
--- `dtype` and `device` pass through for the layers.
function config.resolve(what, spec, cfg, overrides)
  if cfg ~= nil and type(cfg) ~= "table" then error(what .. ": config must be a table, got " .. type(cfg), 3) end
  if overrides ~= nil and type(overrides) ~= "table" then
    error(what .. ": overrides must be a table, got " .. type(overrides), 3)
  end
  local fixed, ignored, optional = spec.fixed or {}, spec.ignored or {}, spec.optional or {}
  local out = copy(spec.defaults)
  local unknown = {}
  for _, src in ipairs({ cfg or {}, overrides or {} }) do
    for k, v in pairs(src) do
      if v == json.null then v = nil end
      if type(k) ~= "string" then
        unknown[#unknown + 1] = tostring(k)
      elseif k:sub(1, 1) == "_" or ignored[k] then -- metadata: nothing to build from it
      elseif fixed[k] ~= nil then
        local want = fixed[k]
        if v ~= nil and not (want ~= config.NONE and v == want) then
          error(string.format("%s: %s = %s is not supported (only %s)", what, k, show(v), show(want)), 3)
        end
      elseif spec.defaults[k] ~= nil or k == "dtype" or k == "device" or optional[k] then
        out[k] = copy(v)
      else
        unknown[#unknown + 1] = k
      end
    end
  end
  if #unknown > 0 then
    table.sort(unknown)
    error(what .. ": unknown config key(s): " .. table.concat(unknown, ", "), 3)
  end
  return out
end

--- config.per_block(what, key, v, n): an integer or a list of n integers -> a list of n
function config.per_block(what, key, v, n)
  if math.type(v) == "integer" then
    local out = {}
    for i = 1, n do out[i] = v end
    return out
  end
  if type(v) ~= "table" or #v ~= n then
    error(string.format("%s: %s must be an integer or a list of %d (one per block), got %s", what, key, n, show(v)), 3)
  end
  for i = 1, n do
    if math.type(v[i]) ~= "integer" or v[i] < 1 then
      error(string.format("%s: %s[%d] must be a positive integer, got %s", what, key, i, show(v[i])), 3)
    end
  end
  return copy(v)
end

--- config.positive(what, cfg, keys): each cfg[key] must be a positive integer
function config.positive(what, cfg, keys)
  for _, k in ipairs(keys) do
    local v = cfg[k]
    if math.type(v) ~= "integer" or v < 1 then
      error(string.format("%s: %s must be a positive integer, got %s", what, k, show(v)), 3)
    end
  end
end

--- config.check_groups(what, cfg): every block_out_channels entry divisible by norm_num_groups
function config.check_groups(what, c)
  for i, ch in ipairs(c.block_out_channels) do
    if ch % c.norm_num_groups ~= 0 then
      error(string.format("%s: block_out_channels[%d] = %d is not divisible by norm_num_groups (%d)", what, i, ch,
        c.norm_num_groups), 4)
    end
  end
end

--- config.layer_opts(cfg): the dtype / device options the nn layers take
function config.layer_opts(cfg) return { dtype = cfg.dtype, device = cfg.device } end

return config
