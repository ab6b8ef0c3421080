-- tocha/diffusion/sample.lua: text-to-image sampling with classifier-free guidance. The
-- conditional and unconditional passes run as one batch; the result is deterministic for
-- a seed and leaves the caller's random stream as it was.
local T = require "tocha"

-- the context for prompts, and the extra conditioning (a table of tensors) when the text
-- encoder gives one as its second result
local function encode(text_encoder, tokenizer, prompts)
  local ids = tokenizer:encode(prompts).input_ids
  local out, added = text_encoder(ids)
  if type(out) == "table" and not T.is_tensor(out) then out = out.last_hidden_state or out[1] end
  if type(added) ~= "table" or T.is_tensor(added) then added = nil end
  return out, added
end

-- the unconditional rows first, then the conditional ones, for each extra conditioning tensor
local function batch_added(uncond, cond)
  if not cond then return nil end
  local out = {}
  for k, v in pairs(cond) do out[k] = T.is_tensor(v) and T.cat({ uncond[k], v }, 1) or v end
  return out
end

-- Lin et al. 2023, section 3.4: rescale the guided prediction to the conditional one's
-- standard deviation, then mix by phi
local function rescale(guided, cond, phi)
  local dims = {}
  for d = 2, #guided.shape do dims[#dims + 1] = d end
  local std_cond = cond:std(dims, true)
  local std_guided = guided:std(dims, true)
  local rescaled = guided * (std_cond / std_guided)
  return rescaled * phi + guided * (1 - phi)
end

--- sample{model, text_encoder, tokenizer, scheduler, prompts, negative_prompts, guidance_scale = 7.5,
---   guidance_rescale = 0, guidance_interval, steps = 50, seed, height, width, channels = 4, eta, progress}
--- model(x, timesteps, context, added) predicts what the scheduler's prediction_type says;
--- timesteps is an f32 tensor [B] holding the sampler's timestep as it is (978.6122 for Euler,
--- as diffusers passes it; integers for DDIM).
--- text_encoder(ids) returns the context and, optionally, a table of extra conditioning
--- tensors (batch first, e.g. {class_labels = pooled}: diffusers' added_cond_kwargs), which
--- is batched like the context and reaches the model as added (nil without one).
--- guidance_interval = {lo, hi}: guide only the steps whose timestep t has lo <= t <= hi; the
--- others run the conditional pass alone (Kynkaanniemi et al. 2024: guidance at the noisiest
--- steps costs variety and, in small models, the object's shape).
--- Returns the final samples [B, channels, height, width] in the model's space.
local function sample(o)
  for _, k in ipairs({ "model", "text_encoder", "tokenizer", "scheduler", "prompts", "height", "width" }) do
    if o[k] == nil then error("sample: missing option '" .. k .. "'", 2) end
  end
  local prompts = type(o.prompts) == "string" and { o.prompts } or o.prompts
  local B = #prompts
  local negatives = o.negative_prompts or {}
  if type(negatives) == "string" then negatives = { negatives } end
  local neg = {}
  for i = 1, B do neg[i] = negatives[i] or negatives[1] or "" end
  local scale = o.guidance_scale or 7.5
  local cfg = scale > 1
  local interval = o.guidance_interval
  if interval ~= nil and (type(interval) ~= "table" or type(interval[1]) ~= "number" or type(interval[2]) ~= "number"
                          or interval[1] > interval[2]) then
    error("sample: guidance_interval must be {lo, hi} timesteps with lo <= hi", 2)
  end
  local function guided(t) return cfg and (not interval or (t >= interval[1] and t <= interval[2])) end
  local s = o.scheduler
  s:set_timesteps(o.steps or 50)
  if type(s.init_noise_sigma) ~= "number" then
    error("sample: the scheduler has no init_noise_sigma after set_timesteps (the scale of the starting noise: "
      .. "a sigma-space sampler sets it from its sigmas, self:init_noise_sigma_for())", 2)
  end
  local saved_rng = T.get_rng_state()
  if o.seed then T.manual_seed(o.seed) end
  local ok, result = pcall(T.no_grad, function()
    local cond_context, cond_added = encode(o.text_encoder, o.tokenizer, prompts)
    local context, added = cond_context, cond_added
    if cfg then
      local uncond_context, uncond_added = encode(o.text_encoder, o.tokenizer, neg)
      context, added = T.cat({ uncond_context, cond_context }, 1), batch_added(uncond_added, cond_added)
    end
    local x = T.randn({ B, o.channels or 4, o.height, o.width }, { dtype = context.dtype, device = context.device })
    x = x * s.init_noise_sigma
    for i, t in ipairs(s.timesteps) do
      local inp = s:scale_model_input(x, t)
      local guide = guided(t)
      if guide then inp = T.cat({ inp, inp }, 1) end
      local ts = T.full({ inp.shape[1] }, t, { dtype = "f32", device = inp.device }) -- fractional for sigma-space samplers
      local out = o.model(inp, ts, guide and context or cond_context, guide and added or cond_added)
      if guide then
        local uncond, cond = out:narrow(1, 1, B), out:narrow(1, B + 1, B)
        out = uncond + (cond - uncond) * scale
        if (o.guidance_rescale or 0) > 0 then out = rescale(out, cond, o.guidance_rescale) end
      end
      x = s:step(out, t, x, { eta = o.eta })
      if o.progress then o.progress(i, #s.timesteps) end
    end
    return x
  end)
  if o.seed then T.set_rng_state(saved_rng) end
  if not ok then error(result, 0) end
  return result
end

return sample
