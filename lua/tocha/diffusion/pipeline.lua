-- tocha/diffusion/pipeline.lua: Stable Diffusion text-to-image, as diffusers'
-- StableDiffusionPipeline: tokenize and encode the prompts (and the negative ones), draw or
-- take the initial latents, run the sampler with classifier-free guidance (the conditional and
-- unconditional passes in one batch), decode the latents with the VAE into images in [0, 1].
local T = require "tocha"
local registry = require "tocha.diffusion.registry"

local SD = {}
SD.__index = SD

local function param(m)
  for _, p in ipairs(m:parameters()) do return p end
  error("StableDiffusion: a model without parameters", 3)
end

--- D.StableDiffusion{unet, vae, text_encoder, tokenizer, scheduler} (the table models.load
--- returns) -> pipe. The scheduler may be left out (DDIM with Stable Diffusion's schedule).
local function new(parts)
  if type(parts) ~= "table" then error("StableDiffusion: expected a table {unet, vae, text_encoder, tokenizer, scheduler}", 2) end
  for _, k in ipairs({ "unet", "vae", "text_encoder", "tokenizer" }) do
    if parts[k] == nil then error("StableDiffusion: missing part '" .. k .. "'", 2) end
  end
  local self = setmetatable({ unet = parts.unet, vae = parts.vae, text_encoder = parts.text_encoder,
    tokenizer = parts.tokenizer, scheduler = parts.scheduler }, SD)
  if self.scheduler == nil then
    self.scheduler = registry.by_name("ddim", { beta_start = 0.00085, beta_end = 0.012, beta_schedule = "scaled_linear",
      clip_sample = false, set_alpha_to_one = false, steps_offset = 1 })
  end
  self.vae_scale_factor = 1 << (#self.vae.config.block_out_channels - 1)
  local size = self.unet.config.sample_size
  if type(size) == "table" then size = size[1] end
  self.default_size = (size or 64) * self.vae_scale_factor
  if self.tokenizer.max_length > self.text_encoder.config.max_position_embeddings then
    error(string.format("StableDiffusion: the tokenizer's length (%d) is more than the text encoder's %d positions",
      self.tokenizer.max_length, self.text_encoder.config.max_position_embeddings), 2)
  end
  return self
end

--- pipe:to(device or dtype): moves or converts the three models; returns pipe
function SD:to(...)
  for _, m in ipairs({ self.unet, self.vae, self.text_encoder }) do m:to(...) end
  return self
end

local function list(v, what)
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" or #v == 0 then error("StableDiffusion: " .. what .. " must be a string or a list of strings", 3) end
  return v
end

--- pipe:encode_prompt(prompts, {clip_skip}) -> [B, L, hidden] text embeddings in the UNet's dtype.
--- clip_skip = k takes the output of the k-th layer from the end (then the final LayerNorm), as
--- diffusers' clip_skip and A1111's "clip skip k + 1"
function SD:encode_prompt(prompts, opts)
  prompts = list(prompts, "prompts")
  local skip = opts and opts.clip_skip
  local te = self.text_encoder
  local ids = self.tokenizer:encode(prompts, { max_length = self.tokenizer.max_length }).input_ids:to(param(te).device)
  local h
  if skip and skip > 0 then
    if math.type(skip) ~= "integer" or skip >= te.config.num_hidden_layers then
      error(string.format("StableDiffusion: clip_skip must be an integer below the %d layers", te.config.num_hidden_layers), 2)
    end
    local _, _, hidden = te(ids, { output_hidden_states = true })
    h = te.text_model.final_layer_norm(hidden[#hidden - skip])
  else
    h = te(ids)
  end
  local p = param(self.unet)
  return h:to(p.dtype):to(p.device)
end

--- pipe:decode_latents(latents) -> images [B, 3, H, W] in [0, 1] (f32): latents / scaling_factor
--- (+ shift_factor) through the VAE's decoder, mapped from [-1, 1]
function SD:decode_latents(latents)
  local vae = self.vae
  local z = latents / vae.scaling_factor
  if vae.shift_factor then z = z + vae.shift_factor end
  local p = param(vae)
  local images = vae:decode(z:to(p.dtype):to(p.device))
  return (images / 2 + 0.5):clamp(0, 1):to("f32")
end

-- Lin et al. 2023, section 3.4: the guided prediction rescaled to the conditional one's standard
-- deviation (per sample), mixed with the plain guided one by phi
local function rescale(guided, cond, phi)
  local dims = {}
  for d = 2, guided:dim() do dims[#dims + 1] = d end
  local rescaled = guided * (cond:std(dims, true) / guided:std(dims, true))
  return rescaled * phi + guided * (1 - phi)
end

-- rows of x repeated n times each, in order: [a, b] -> [a, a, b, b]
local function repeat_rows(x, n)
  if n == 1 then return x end
  local idx = {}
  for i = 1, x.shape[1] do for _ = 1, n do idx[#idx + 1] = i end end
  return x:index_select(1, T.tensor(idx, { dtype = "i64", device = x.device }))
end

--- pipe:sample{prompts, negative_prompts, guidance_scale = 7.5, guidance_rescale = 0, steps = 50,
--- seed, height, width (default the UNet's sample_size times the VAE's factor: 512 for SD 1.5),
--- batch = 1 (images per prompt), latents, eta, clip_skip, sampler (a name: "dpmpp2m", ...),
--- scheduler (a sampler), callback} -> images [B * batch, 3, height, width] in [0, 1], and the
--- final latents. callback{step, steps, timestep, latents, pipe} runs after each step; returning
--- false stops early. With a seed the latents (and any noise the sampler draws) are the same on
--- every run, and the caller's random stream is left as it was.
function SD:sample(o)
  if type(o) ~= "table" then error("StableDiffusion:sample: expected an options table", 2) end
  local prompts = list(o.prompts or o.prompt, "prompts")
  local n = o.batch or 1
  if math.type(n) ~= "integer" or n < 1 then error("StableDiffusion:sample: batch must be a positive integer", 2) end
  local B = #prompts
  local negatives = o.negative_prompts or o.negative_prompt or ""
  if type(negatives) == "string" then negatives = { negatives } end
  local neg = {}
  for i = 1, B do neg[i] = negatives[i] or negatives[#negatives] end
  local scale = o.guidance_scale or 7.5
  local cfg = scale > 1
  local height, width = o.height or self.default_size, o.width or self.default_size
  local f = self.vae_scale_factor
  if height % f ~= 0 or width % f ~= 0 then
    error(string.format("StableDiffusion:sample: height and width must be multiples of %d, got %dx%d", f, height, width), 2)
  end
  local s = o.scheduler or (o.sampler and registry.by_name(o.sampler, self.scheduler)) or self.scheduler
  local unet = self.unet
  local p = param(unet)
  local shape = { B * n, unet.config.in_channels, height // f, width // f }
  if o.latents ~= nil then
    local l = o.latents
    if not T.is_tensor(l) or l:dim() ~= 4 or l.shape[1] ~= shape[1] or l.shape[2] ~= shape[2] or l.shape[3] ~= shape[3]
        or l.shape[4] ~= shape[4] then
      error(string.format("StableDiffusion:sample: latents must be [%s]", table.concat(shape, " x ")), 2)
    end
  end
  local saved_rng = T.get_rng_state()
  if o.seed then T.manual_seed(o.seed) end
  local ok, images, latents = pcall(T.no_grad, function()
    local cond = repeat_rows(self:encode_prompt(prompts, o), n)
    local context = cond
    if cfg then context = T.cat({ repeat_rows(self:encode_prompt(neg, o), n), cond }, 1) end
    local x = o.latents and o.latents:to(p.dtype):to(p.device) or T.randn(shape, { dtype = p.dtype, device = p.device })
    s:set_timesteps(o.steps or 50)
    x = x * (s.init_noise_sigma or 1)
    local steps = #s.timesteps
    for i, t in ipairs(s.timesteps) do
      local inp = cfg and T.cat({ x, x }, 1) or x
      local out = unet(s:scale_model_input(inp, t), t, context)
      if cfg then
        local uncond, c = out:narrow(1, 1, B * n), out:narrow(1, B * n + 1, B * n)
        out = uncond + (c - uncond) * scale
        if (o.guidance_rescale or 0) > 0 then out = rescale(out, c, o.guidance_rescale) end
      end
      x = s:step(out, t, x, { eta = o.eta })
      if o.callback and o.callback({ step = i, steps = steps, timestep = t, latents = x, pipe = self }) == false then break end
    end
    return self:decode_latents(x), x
  end)
  if o.seed then T.set_rng_state(saved_rng) end
  if not ok then error(images, 0) end
  return images, latents
end

return new
