-- tocha/models/t2i.lua: a text-to-image model in pixel space, as experiments/t2i_shapes.lua
-- trains it, in one module: a CLIP-style text encoder and a UNet (children text_encoder and
-- unet, so state dicts name them so), the tokenizer, the noise schedule, the conditioning the
-- UNet reads besides the caption's tokens (each pixel's coordinates as two more input channels,
-- the pooled caption as class labels) and how to sample by default. save_config writes what it
-- takes to rebuild it (t2i.json, tokenizer/) beside its weights; M.load reads a checkpoint
-- or a run back, so a model is usable without the script that trained it.
local T = require "tocha"
local nn = require "tocha.nn"
local json = require "tocha.json"

local M = {}

local T2I = nn.Module:extend("TextToImage")
M.TextToImage = T2I

local FORMAT = "tocha.t2i"

--- models.TextToImage{text_encoder =, unet =, tokenizer =, noise = {scheduler options},
---   coords = false, pooled_text = false, sampling = {sampler = "ddim", options = {ddim =
---   {...}}, steps = 50, guidance_scale = 7.5, guidance_interval, guidance_rescale = 0}}.
--- noise: the training schedule's options (diffusers' names); sampling: the defaults of
--- m:sample (options: each sampler's own options by name)
function T2I:init(o)
  if type(o) ~= "table" or not nn.is_module(o.text_encoder) or not nn.is_module(o.unet) or o.tokenizer == nil then
    error("TextToImage: expected {text_encoder = module, unet = module, tokenizer = tokenizer, ...}", 2)
  end
  self.text_encoder = o.text_encoder
  self.unet = o.unet
  self.tokenizer = o.tokenizer
  self.noise = o.noise or {}
  self.coords, self.pooled_text = o.coords == true, o.pooled_text == true
  self.sampling = o.sampling or {}
  self.size, self.channels = o.unet.config.sample_size, o.unet.config.out_channels
  self._xy = {}
end

local function device_of(m)
  for _, p in ipairs(m:parameters()) do return p.device end
  return "cpu"
end

--- m:encode_text(ids) -> the token states for cross-attention and, with pooled_text, the
--- extra conditioning {class_labels = pooled} (D.sample batches it with the states)
function T2I:encode_text(ids)
  local states, pooled = self.text_encoder(ids:to(device_of(self.text_encoder)))
  return states, self.pooled_text and { class_labels = pooled } or nil
end

-- each pixel's x and y in [-1, 1] as [2, h, w], made once per size and device
local function coordinates(self, h, w, device)
  local key = h .. "x" .. w .. "@" .. device
  if not self._xy[key] then
    self._xy[key] = T.stack({ T.linspace(-1, 1, w):reshape(1, w):expand(h, w),
                              T.linspace(-1, 1, h):reshape(h, 1):expand(h, w) }, 1):to(device)
  end
  return self._xy[key]
end

--- m(x [B, C, H, W], timesteps, states, added) -> the UNet's prediction; with coords the
--- UNet sees two more channels holding each pixel's x and y (convolutions alone barely know
--- where in the image they are, and captions say where things go)
function T2I:forward(x, ts, states, added)
  if self.coords then
    local n, h, w = x.shape[1], x.shape[3], x.shape[4]
    x = T.cat({ x, coordinates(self, h, w, x.device):unsqueeze(1):expand(n, 2, h, w) }, 2)
  end
  return self.unet(x, ts, states, added)
end

--- m:sampler(choice) -> a sampler on the model's noise schedule: choice is a name
--- (D.samplers.names(): ddim, euler, dpmpp2m, ...), the path of a Lua file returning a sampler
--- class, or nil for the model's default; the model's options for that sampler apply
function T2I:sampler(choice)
  local registry = require "tocha.diffusion.registry"
  local name = choice or self.sampling.sampler or "ddim"
  local base = {}
  for k, v in pairs(self.noise) do base[k] = v end
  for k, v in pairs((self.sampling.options or {})[name] or {}) do base[k] = v end
  return registry.by_name(name, base)
end

--- m:sample{prompts, negative_prompts, sampler, steps, guidance_scale, guidance_interval,
---   guidance_rescale, seed = 0, batch = 50, height, width} -> images [N, channels, H, W] in
--- [-1, 1] on the CPU (image.save writes them). Unset options take the model's sampling
--- defaults. Prompts are drawn `batch` at a time, the group starting at prompt i with seed
--- + i - 1 (one prompt: seed itself), so a result does not depend on what is drawn after it.
function T2I:sample(o)
  if type(o) ~= "table" then error("TextToImage:sample: expected an options table", 2) end
  local prompts = type(o.prompts or o.prompt) == "string" and { o.prompts or o.prompt } or o.prompts
  if type(prompts) ~= "table" or #prompts == 0 then error("TextToImage:sample: give prompts (a string or a list)", 2) end
  local s, D = self.sampling, require "tocha.diffusion"
  local batch, seed = o.batch or 50, o.seed or 0
  local function pick(k) if o[k] ~= nil then return o[k] end return s[k] end
  local was_training = self.training
  self:eval()
  local out = {}
  local ok, err = pcall(function()
    for i = 1, #prompts, batch do
      local chunk = table.move(prompts, i, math.min(i + batch - 1, #prompts), 1, {})
      out[#out + 1] = D.sample { model = function(...) return self(...) end,
        text_encoder = function(ids) return self:encode_text(ids) end, tokenizer = self.tokenizer,
        scheduler = self:sampler(o.sampler), prompts = chunk, negative_prompts = o.negative_prompts,
        guidance_scale = pick("guidance_scale"), guidance_rescale = pick("guidance_rescale"),
        guidance_interval = pick("guidance_interval"), steps = pick("steps"), seed = seed + i - 1,
        height = o.height or self.size, width = o.width or self.size, channels = self.channels, eta = o.eta }
    end
  end)
  self:train(was_training)
  if not ok then error(err, 2) end
  return T.cat(out, 1):clamp(-1, 1):to("cpu")
end

--- m:save_config(dir): t2i.json (both models' configs, the noise schedule, the conditioning,
--- the sampling defaults) and tokenizer/ (vocab.json, merges.txt), what M.load needs beside
--- the weights (model.safetensors, and ema.safetensors when there is an average)
function T2I:save_config(dir)
  local function plain(cfg) -- a model's config without what json cannot hold
    local out = {}
    for k, v in pairs(cfg) do if type(v) ~= "function" and type(v) ~= "userdata" then out[k] = v end end
    return out
  end
  local cfg = { format = FORMAT, version = 1, text_encoder = plain(self.text_encoder.config),
    unet = plain(self.unet.config), noise = self.noise, coords = self.coords, pooled_text = self.pooled_text,
    sampling = self.sampling, max_length = self.tokenizer.max_length }
  local f = assert(io.open(dir .. "/t2i.json", "wb"))
  f:write(json.encode(cfg), "\n")
  f:close()
  self.tokenizer:save(dir .. "/tokenizer")
end

---------------------------------------------------------------------------------------------
-- loading
---------------------------------------------------------------------------------------------
local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- M.detect(path) -> whether path is a tocha run directory, one of its checkpoints, or a
--- directory of checkpoints
function M.detect(path)
  if not T._sys.isdir(path) then return false end
  path = path:gsub("/+$", "")
  return exists(path .. "/meta.lua") or (exists(path .. "/meta.json") and T._sys.isdir(path .. "/checkpoints"))
    or require("tocha.checkpoint").latest(path) ~= nil
end

--- M.load(path, {device, dtype, ema = true}) -> the TextToImage in a run's newest checkpoint
--- (path: a run directory, a checkpoint, or a directory of checkpoints), with the averaged
--- weights when the checkpoint has them (unless ema = false), in eval mode
function M.load(path, opts)
  opts = opts or {}
  local ckpt, text, models = require "tocha.checkpoint", require "tocha.text", require "tocha.models"
  local found, why = require("tocha.run.resume").locate(path)
  if not found then error("models.load: " .. why, 0) end
  local dir = found.checkpoint
  local cfg = json.read_file(dir .. "/t2i.json")
  if not cfg or cfg.format ~= FORMAT then
    error("models.load: " .. dir .. " has no t2i.json: it is a checkpoint of a model tocha cannot rebuild on its own "
      .. "(load it into the model its script builds with checkpoint.load)", 0)
  end
  local tok = text.load(dir .. "/tokenizer", { max_length = cfg.max_length })
  local m = nn.init.skip(function()
    return T2I { text_encoder = models.CLIPTextModel(cfg.text_encoder), unet = models.UNet2DConditionModel(cfg.unet),
      tokenizer = tok, noise = cfg.noise, coords = cfg.coords, pooled_text = cfg.pooled_text, sampling = cfg.sampling }
  end)
  local targets = { model = m, rng = false }
  local optim = require "tocha.optim"
  local ema = opts.ema ~= false and exists(dir .. "/ema.safetensors") and optim.EMA(m) or nil
  targets.ema = ema
  ckpt.load(dir, targets)
  if ema then ema:copy_to(m:parameters()) end
  if opts.dtype and opts.dtype ~= "f32" then m:to(opts.dtype) end
  if opts.device then m:to(opts.device) end
  m.path = dir
  return m:eval()
end

return M
