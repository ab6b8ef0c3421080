-- tocha/models/denoiser.lua: a text-to-image model as a training or sampling loop sees it,
-- whatever its kind: latent (a VAE encodes images, as Stable Diffusion) or pixel-space (the
-- default experiment's), with the conditioning extras a tocha model may carry (pixel coordinates
-- as extra input channels, the pooled caption as the UNet's class embedding). models.load puts
-- those extras in parts.extras (a diffusers folder's tocha.json).
local T = require "tocha"
local D = require "tocha.diffusion"

local Denoiser = {}
Denoiser.__index = Denoiser

local EXTRAS = { coords = true, pooled_text = true, guidance_interval = true }

--- Denoiser.parts(m) -> the parts table of a models.TextToImage (what models.load gives for a
--- tocha training run): its UNet, text encoder and tokenizer, its default sampler on its noise
--- schedule as the scheduler, its coordinates, pooled caption and guidance interval as extras.
--- A parts table is returned as it is.
function Denoiser.parts(m)
  if type(m) ~= "table" then error("Denoiser.parts: expected a TextToImage or a parts table", 2) end
  if m.scheduler ~= nil or not (m.noise and m.sampling) then return m end
  return { unet = m.unet, text_encoder = m.text_encoder, tokenizer = m.tokenizer, scheduler = m:sampler(),
    extras = { coords = m.coords or nil, pooled_text = m.pooled_text or nil, guidance_interval = m.sampling.guidance_interval } }
end

--- models.Denoiser(parts) -> d, with parts {unet, text_encoder, tokenizer, scheduler, vae (nil
--- for a pixel-space model), extras = {coords, pooled_text, guidance_interval}}. d.latent tells
--- the kind; d.channels and d.factor are the space the UNet works in (channels, and pixels per
--- latent position: 1 in pixel space).
local function new(parts)
  if type(parts) ~= "table" then error("Denoiser: expected the parts table models.load returns", 2) end
  parts = Denoiser.parts(parts) -- (a TextToImage: its parts)
  for _, k in ipairs({ "unet", "text_encoder", "tokenizer" }) do
    if parts[k] == nil then error("Denoiser: missing part '" .. k .. "'", 2) end
  end
  local extras = parts.extras or {}
  for k in pairs(extras) do
    if not EXTRAS[k] then error("Denoiser: unknown extra '" .. tostring(k) .. "' (coords, pooled_text, guidance_interval)", 2) end
  end
  local self = setmetatable({ unet = parts.unet, text_encoder = parts.text_encoder, tokenizer = parts.tokenizer,
    vae = parts.vae, scheduler = parts.scheduler, extras = extras, latent = parts.vae ~= nil, grids = {} }, Denoiser)
  local cin = self.unet.config.in_channels
  self.channels = extras.coords and cin - 2 or cin
  self.factor = self.vae and 1 << (#self.vae.config.block_out_channels - 1) or 1
  if self.vae and self.vae.config.latent_channels ~= self.channels then
    error(string.format("Denoiser: the VAE gives %d latent channels, the UNet takes %d", self.vae.config.latent_channels,
      self.channels), 2)
  end
  if not self.vae and self.unet.config.out_channels ~= self.channels then
    error(string.format("Denoiser: a pixel-space UNet must give its %d input channels back, it gives %d", self.channels,
      self.unet.config.out_channels), 2)
  end
  local size = self.unet.config.sample_size
  self.size = (type(size) == "table" and size[1] or size or 64) * self.factor -- default image side in pixels
  return self
end

local function device_of(m)
  for _, p in ipairs(m:parameters()) do return p.device end
  return "cpu"
end

--- d:encode_text(ids) -> the token states [B, L, D] and the extra conditioning (a table, or nil)
function Denoiser:encode_text(ids)
  local states, pooled = self.text_encoder(ids:to(device_of(self.text_encoder)))
  return states, self.extras.pooled_text and { class_labels = pooled } or nil
end

--- d:encode_prompts(prompts) -> encode_text of the tokenized prompts
function Denoiser:encode_prompts(prompts)
  return self:encode_text(self.tokenizer:encode(prompts).input_ids)
end

-- x and y of every position in [-1, 1] as two channels, made once per size
function Denoiser:_grid(h, w, like)
  local key = h .. "x" .. w .. like.device .. like.dtype
  local g = self.grids[key]
  if not g then
    local o = { dtype = like.dtype, device = like.device }
    g = T.stack({ T.linspace(-1, 1, w, o):reshape(1, w):expand(h, w), T.linspace(-1, 1, h, o):reshape(h, 1):expand(h, w) }, 1)
    self.grids[key] = g
  end
  return g
end

--- d:denoise(x, t, states, added) -> the UNet's prediction for x [B, channels, h, w] at
--- timesteps t (a tensor [B], or a number), with the coordinate channels added when the model has them
function Denoiser:denoise(x, t, states, added)
  if self.extras.coords then
    local N, h, w = x.shape[1], x.shape[3], x.shape[4]
    x = T.cat({ x, self:_grid(h, w, x):unsqueeze(1):expand(N, 2, h, w) }, 2)
  end
  return self.unet(x, t, states, added)
end

--- d:encode_images(images [B, 3, H, W] in [-1, 1]) -> mean, std of what the UNet is trained
--- on: the VAE's posterior times its scaling factor (std nil in pixel space, where the
--- images are the data themselves). A training step draws mean + std * noise.
function Denoiser:encode_images(images)
  if not self.vae then return images, nil end
  local post = self.vae:encode(images:to(device_of(self.vae)))
  local s = self.vae.scaling_factor
  local mean = self.vae.shift_factor and (post.mean - self.vae.shift_factor) * s or post.mean * s
  return mean, post.std * s
end

--- d:decode(z) -> images in [-1, 1] (f32) from the UNet's space
function Denoiser:decode(z)
  if not self.vae then return z:to("f32") end
  local x = z / self.vae.scaling_factor
  if self.vae.shift_factor then x = x + self.vae.shift_factor end
  return self.vae:decode(x):to("f32")
end

--- d:sample{prompts, negative_prompts, steps = 50, guidance_scale = 7.5, guidance_interval (the
--- model's extras' by default), guidance_rescale, sampler (a sampler instance; default DDIM on
--- the model's schedule), seed, height, width (pixels; default the model's size), eta} ->
--- images [B, 3, H, W] in [-1, 1]
function Denoiser:sample(o)
  if type(o) ~= "table" then error("Denoiser:sample: expected an options table", 2) end
  local h, w = o.height or self.size, o.width or self.size
  if h % self.factor ~= 0 or w % self.factor ~= 0 then
    error(string.format("Denoiser:sample: height and width must be multiples of %d", self.factor), 2)
  end
  local sampler = o.sampler or D.samplers.by_name("ddim", self.scheduler)
  return T.no_grad(function()
    local z = D.sample { model = function(...) return self:denoise(...) end,
      text_encoder = function(ids) return self:encode_text(ids) end, tokenizer = self.tokenizer, scheduler = sampler,
      prompts = o.prompts, negative_prompts = o.negative_prompts, steps = o.steps or 50,
      guidance_scale = o.guidance_scale or 7.5, guidance_rescale = o.guidance_rescale,
      guidance_interval = o.guidance_interval or self.extras.guidance_interval, seed = o.seed, eta = o.eta,
      height = h // self.factor, width = w // self.factor, channels = self.channels }
    return self:decode(z):clamp(-1, 1)
  end)
end

--- d:train(on) / d:eval(): the three models' modes (the frozen ones stay in eval)
function Denoiser:modules()
  local out = { self.unet, self.text_encoder }
  if self.vae then out[#out + 1] = self.vae end
  return out
end

-- models.Denoiser(parts) builds one; models.Denoiser.parts converts a TextToImage
return setmetatable({ parts = Denoiser.parts }, { __call = function(_, parts) return new(parts) end })
