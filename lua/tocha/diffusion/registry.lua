-- tocha/diffusion/registry.lua: the samplers by name and by diffusers class, so that a
-- scheduler_config.json becomes a tocha sampler and back, and a command line can swap the
-- sampler of a loaded model (`--sampler dpmpp2m`) keeping its noise schedule, as diffusers'
-- SomeScheduler.from_config(pipe.scheduler.config) does.
local json = require "tocha.json"

local R = {}

-- the options every sampler shares with its diffusers class
local COMMON = { "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
  "timestep_spacing", "steps_offset", "rescale_betas_zero_snr" }

-- name, diffusers class, the file of its class (tocha.diffusion.<file>), the class's own
-- options that tocha has
local KINDS = {
  { name = "ddim", class = "DDIMScheduler", file = "ddim", keys = { "clip_sample", "clip_sample_range", "set_alpha_to_one" } },
  { name = "ddpm", class = "DDPMScheduler", file = "ddpm", keys = { "clip_sample", "clip_sample_range", "variance_type" } },
  { name = "pndm", class = "PNDMScheduler", file = "pndm", keys = { "set_alpha_to_one", "skip_prk_steps" } },
  { name = "euler", class = "EulerDiscreteScheduler", file = "euler", keys = { "use_karras_sigmas" } },
  { name = "euler_a", class = "EulerAncestralDiscreteScheduler", file = "euler_ancestral", keys = {} },
  { name = "heun", class = "HeunDiscreteScheduler", file = "heun", keys = { "use_karras_sigmas", "clip_sample", "clip_sample_range" } },
  { name = "dpmpp2m", class = "DPMSolverMultistepScheduler", file = "dpmsolver",
    keys = { "solver_order", "algorithm_type", "solver_type", "lower_order_final", "use_karras_sigmas", "final_sigmas_type",
             "euler_at_final" } },
  { name = "unipc", class = "UniPCMultistepScheduler", file = "unipc",
    keys = { "solver_order", "solver_type", "lower_order_final", "disable_corrector", "use_karras_sigmas",
             "final_sigmas_type", "predict_x0" } },
}
-- names that are a kind plus options
local ALIASES = { plms = { "pndm", {} }, dpmpp2m_karras = { "dpmpp2m", { use_karras_sigmas = true } },
  euler_karras = { "euler", { use_karras_sigmas = true } }, ["euler-a"] = { "euler_a", {} },
  euler_ancestral = { "euler_a", {} },
  ["dpm++2m"] = { "dpmpp2m", {} } }

-- diffusers options tocha's samplers do not take, accepted when they hold a value that
-- changes nothing here (a function of the value), so that published configs load
local function any() return true end
local function is(v) return function(x) return x == v end end
local NEUTRAL = {
  skip_prk_steps = any, thresholding = is(false), dynamic_thresholding_ratio = any, sample_max_value = any,
  interpolation_type = is("linear"), use_exponential_sigmas = is(false), use_beta_sigmas = is(false),
  use_flow_sigmas = is(false), flow_shift = any, shift = any, timestep_type = is("discrete"),
  lambda_min_clipped = is(-math.huge), variance_type = any, use_lu_lambdas = is(false),
  clip_sample = any, clip_sample_range = any, set_alpha_to_one = any, final_sigmas_type = is("zero"),
  solver_p = any, predict_x0 = is(true), use_dynamic_shifting = is(false), sigma_min = any, sigma_max = any,
  sigma_data = any, rho = any,
}

local by_name, by_class = {}, {}
for _, k in ipairs(KINDS) do by_name[k.name], by_class[k.class] = k, k end

local function class_of(k) return require("tocha.diffusion." .. k.file) end

local function accepted(k)
  local set = {}
  for _, key in ipairs(COMMON) do set[key] = true end
  for _, key in ipairs(k.keys) do set[key] = true end
  return set
end

--- R.names() -> the sampler names R.by_name takes, sorted
function R.names()
  local out = {}
  for name in pairs(by_name) do out[#out + 1] = name end
  for name in pairs(ALIASES) do out[#out + 1] = name end
  table.sort(out)
  return out
end

-- the options of `cfg` this kind takes; `strict`: other options must be NEUTRAL, or raise
local function options_for(k, cfg, strict, where)
  local take, out = accepted(k), {}
  for key, v in pairs(cfg or {}) do
    if type(key) == "string" and key:sub(1, 1) ~= "_" and v ~= nil and v ~= json.null then
      if take[key] then out[key] = v
      elseif strict and not (NEUTRAL[key] and NEUTRAL[key](v)) then
        error(string.format("%s: option %s = %s of %s is not supported by tocha's sampler", where, key, tostring(v),
          k.class), 3)
      end
    end
  end
  return out
end

--- R.from_diffusers(cfg, where) -> a sampler: cfg is a decoded scheduler_config.json (its
--- _class_name picks the sampler); where names the file in errors
function R.from_diffusers(cfg, where)
  where = where or "scheduler_config.json"
  local class = cfg._class_name
  local k = by_class[class]
  if not k then
    local known = {}
    for _, x in ipairs(KINDS) do known[#known + 1] = x.class end
    error(string.format("%s: scheduler %s is not one tocha has (%s); choose one by name with models.load's "
      .. "opts.scheduler (tocha sample --sampler)", where, tostring(class), table.concat(known, ", ")), 2)
  end
  return class_of(k).new(options_for(k, cfg, true, where))
end

--- R.choose(cfg, choice, where) -> the sampler a config names (from_diffusers), or with choice
--- (a name, or a sampler object) that sampler, keeping the config's noise schedule
function R.choose(cfg, choice, where)
  if choice == nil then return R.from_diffusers(cfg, where) end
  if type(choice) == "string" then return R.by_name(choice, cfg) end
  return choice
end

-- a sampler file's class: any Lua file returning a class with new(cfg) (S.class makes one)
local function class_from_file(path)
  local chunk, err = loadfile(path)
  if not chunk then error("sampler " .. path .. ": " .. tostring(err), 3) end
  local ok, C = pcall(chunk)
  if not ok then error("sampler " .. path .. ": " .. tostring(C), 3) end
  if type(C) ~= "table" or type(C.new) ~= "function" then
    error("sampler " .. path .. ": the file must return a sampler class (a table with new(cfg))", 3)
  end
  return C
end

--- R.is_file(name) -> whether a sampler name is a path to a sampler file (it ends in .lua)
function R.is_file(name) return type(name) == "string" and name:match("%.lua$") ~= nil end

--- R.check(name) -> nil when name is a sampler R.by_name makes (a name of R.names(), or an
--- existing .lua file), else why not (for a command-line option's check)
function R.check(name)
  if R.is_file(name) then
    local f = io.open(name)
    if f then f:close() return nil end
    return "names a sampler file that does not exist"
  end
  local known = {}
  for _, n in ipairs(R.names()) do known[n] = true end
  if not known[name] then return "must be a sampler (" .. table.concat(R.names(), ", ") .. ") or a .lua file" end
end

--- R.by_name(name, base) -> the sampler `name` (R.names(), or the path of a Lua file returning a
--- sampler class) with the noise schedule and the options of `base` (a sampler or a config
--- table) that it takes (for a file: the shared schedule's and those its class declares)
function R.by_name(name, base)
  if R.is_file(name) then
    local C = class_from_file(name)
    local cfg, take = base and (base.config or base) or {}, {}
    for _, key in ipairs(COMMON) do take[key] = true end
    for key in pairs(C.defaults or {}) do take[key] = true end
    local o = {}
    for key, v in pairs(cfg) do if take[key] and v ~= json.null then o[key] = v end end
    return C.new(o)
  end
  local extra = {}
  if ALIASES[name] then name, extra = ALIASES[name][1], ALIASES[name][2] end
  local k = by_name[name]
  if not k then error("unknown sampler '" .. tostring(name) .. "' (" .. table.concat(R.names(), ", ") .. ")", 2) end
  local cfg = base and (base.config or base) or {}
  local o = options_for(k, cfg, false)
  for key, v in pairs(extra) do o[key] = v end
  return class_of(k).new(o)
end

--- R.kind(s) -> the name and diffusers class of a sampler made by any tocha constructor
function R.kind(s)
  local mt = getmetatable(s)
  for _, k in ipairs(KINDS) do
    if class_of(k) == mt then return k.name, k.class end
  end
  error("not a tocha sampler", 2)
end

--- R.to_diffusers(s) -> a scheduler_config.json table for the sampler s
function R.to_diffusers(s)
  local _, class = R.kind(s)
  local out = options_for(by_class[class], s.config, false)
  out._class_name = class
  return out
end

return R
