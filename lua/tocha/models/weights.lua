-- tocha/models/weights.lua: putting checkpoint tensors into a model built without weights.
-- A model is built under nn.init.skip (its parameters never written, so they take no
-- memory), then each parameter takes the checkpoint's tensor itself (`p.data = t`): a tensor
-- T.load returns is a view of the memory-mapped file, so weights in the model's dtype stay in
-- the page cache, read when first used; others are converted one tensor at a time.
local T = require "tocha"
local init = require "tocha.nn.init_weights"

local W = {}

local FLOAT = { f32 = true, f64 = true, f16 = true, bf16 = true }
local MAX_LISTED = 12

local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

local function same_shape(a, b)
  if #a.shape ~= #b.shape then return false end
  for i = 1, #a.shape do if a.shape[i] ~= b.shape[i] then return false end end
  return true
end

--- W.build(ctor, cfg, opts) -> ctor(cfg, {dtype, device}) with no weight written (nn.init.skip)
function W.build(ctor, cfg, opts)
  return init.skip(ctor, cfg, { dtype = opts.dtype or "f32", device = opts.device })
end

-- lists problems, at most MAX_LISTED of them, and how many more there were
local function report(what, problems)
  table.sort(problems)
  local shown = {}
  for i = 1, math.min(#problems, MAX_LISTED) do shown[i] = problems[i] end
  if #problems > MAX_LISTED then shown[#shown + 1] = string.format("... and %d more", #problems - MAX_LISTED) end
  error(string.format("%s:\n  %s", what, table.concat(shown, "\n  ")), 0)
end

--- W.assign(model, sd, origin, what): model's parameters and persistent buffers take sd's
--- tensors (name -> tensor), converted to each parameter's dtype and device where they differ.
--- origin(name) -> the file a tensor came from, for errors. Every missing key, unknown key, shape
--- or dtype mismatch is found before anything changes and reported in one error naming the
--- file and the key; what names the model in it.
function W.assign(model, sd, origin, what)
  local own = model:state_dict({ keep_vars = true })
  local problems = {}
  for k, p in pairs(own) do
    local v = sd[k]
    if v == nil then
      problems[#problems + 1] = string.format("%s: missing key %s (a %s parameter of %s)", origin(k), k, shape_str(p), what)
    elseif not T.is_tensor(v) then
      problems[#problems + 1] = string.format("%s: %s is not a tensor", origin(k), k)
    elseif not same_shape(v, p) then
      problems[#problems + 1] = string.format("%s: %s has shape %s, %s expects %s", origin(k), k, shape_str(v), what,
        shape_str(p))
    elseif FLOAT[p.dtype] ~= FLOAT[v.dtype] then
      problems[#problems + 1] = string.format("%s: %s is %s, %s expects a %s tensor", origin(k), k, v.dtype, what,
        FLOAT[p.dtype] and "floating" or p.dtype)
    end
  end
  for k in pairs(sd) do
    if own[k] == nil then problems[#problems + 1] = string.format("%s: unknown key %s (not in %s)", origin(k), k, what) end
  end
  if #problems > 0 then report(string.format("models.load: the weights do not fit %s", what), problems) end
  T.no_grad(function()
    for k, p in pairs(own) do
      local v = sd[k]
      if v.device ~= p.device then v = v:to(p.device) end -- then convert there (on a GPU, quickly)
      if v.dtype ~= p.dtype then v = v:to(p.dtype) end
      p.data = v
    end
  end)
  return model
end

return W
