-- tocha.models: the text-to-image models, each configured by a Lua table: CLIPTextModel (CLIP's
-- text encoder, transformers' names), UNet2DConditionModel (Stable Diffusion's UNet, diffusers'
-- names) and AutoencoderKL (its VAE), with presets from a tiny CPU model up to Stable Diffusion
-- 1.5's sizes; TextToImage, the two as one pixel-space model (t2i.lua); and the networks the
-- metrics use (InceptionV3FID, torchvision's names; CLIPVisionModel and CLIPModel, transformers').
local clip_text = require "tocha.models.clip_text"
local unet = require "tocha.models.unet"
local vae = require "tocha.models.vae"

local models = {
  CLIPTextModel = clip_text.CLIPTextModel,
  UNet2DConditionModel = unet.UNet2DConditionModel,
  AutoencoderKL = vae.AutoencoderKL,
  TextToImage = require("tocha.models.t2i").TextToImage,
  InceptionV3FID = require("tocha.models.inception").InceptionV3FID,
  CLIPVisionModel = require("tocha.models.clip_vision").CLIPVisionModel,
  CLIPModel = require("tocha.models.clip_vision").CLIPModel,
  Denoiser = require "tocha.models.denoiser",
  blocks = require "tocha.models.unet_blocks",
}

-- kind -> the module that builds it (resolve, num_parameters_for)
local KINDS = { CLIPTextModel = clip_text, UNet2DConditionModel = unet, AutoencoderKL = vae }
local KIND_NAMES = '"CLIPTextModel", "UNet2DConditionModel" or "AutoencoderKL"'

--- models.presets: config tables for the constructors (never modified by them). tiny_* are the
--- default CPU experiment's: 32x32 RGB pixels, channels 16 / 32 / 64 at 32x32 / 16x16 / 8x8,
--- self- and cross-attention (8 heads of 8) at 8x8 only, where it is cheap; a 3-layer, 64-wide
--- text encoder over 32 tokens. Give the vocabulary as an override, and tokenize to 32:
--- CLIPTextModel(presets.tiny_text, {vocab_size = tok.vocab_size}), text.Tokenizer(..., {max_length
--- = 32}). sd15_* are Stable Diffusion 1.5's (its text_encoder and unet config.json).
models.presets = {
  tiny_text = {
    vocab_size = 1024, hidden_size = 64, intermediate_size = 256, num_hidden_layers = 3,
    num_attention_heads = 4, max_position_embeddings = 32,
  },
  tiny_unet = {
    sample_size = 32, in_channels = 3, out_channels = 3,
    block_out_channels = { 16, 32, 64 }, layers_per_block = 1,
    down_block_types = { "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D" },
    up_block_types = { "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D" },
    attention_head_dim = 8, cross_attention_dim = 64, norm_num_groups = 8,
  },
  sd15_text = {
    vocab_size = 49408, hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12,
    num_attention_heads = 12, max_position_embeddings = 77, hidden_act = "quick_gelu", eos_token_id = 2,
  },
  sd15_unet = {
    sample_size = 64, in_channels = 4, out_channels = 4,
    block_out_channels = { 320, 640, 1280, 1280 }, layers_per_block = 2,
    down_block_types = { "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D" },
    up_block_types = { "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D" },
    attention_head_dim = 8, cross_attention_dim = 768, norm_num_groups = 32,
  },
  tiny_vae = {
    in_channels = 3, out_channels = 3, latent_channels = 4, block_out_channels = { 16, 32 }, layers_per_block = 1,
    down_block_types = { "DownEncoderBlock2D", "DownEncoderBlock2D" },
    up_block_types = { "UpDecoderBlock2D", "UpDecoderBlock2D" }, norm_num_groups = 8, sample_size = 64,
  },
  sd15_vae = {
    in_channels = 3, out_channels = 3, latent_channels = 4, block_out_channels = { 128, 256, 512, 512 },
    layers_per_block = 2, norm_num_groups = 32, sample_size = 512, scaling_factor = 0.18215,
    down_block_types = { "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D" },
    up_block_types = { "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D" },
  },
}

--- models.num_parameters(kind, cfg, overrides): the parameter count of
--- models[kind](cfg, overrides) ("CLIPTextModel", "UNet2DConditionModel" or "AutoencoderKL"),
--- from the config alone, without allocating the model
function models.num_parameters(kind, cfg, overrides)
  local m = KINDS[kind]
  if not m then error("num_parameters: kind must be " .. KIND_NAMES .. ", got " .. tostring(kind), 2) end
  return m.num_parameters_for(cfg, overrides)
end

--- models.resolve(kind, cfg, overrides): the complete config the constructor would use
function models.resolve(kind, cfg, overrides)
  local m = KINDS[kind]
  if not m then error("resolve: kind must be " .. KIND_NAMES .. ", got " .. tostring(kind), 2) end
  return m.resolve(cfg, overrides)
end

---------------------------------------------------------------------------
-- checkpoints in and out
---------------------------------------------------------------------------
local diffusers = require "tocha.models.diffusers"
local single_file = require "tocha.models.single_file"

local function isdir(path) return require("tocha")._sys.isdir(path) end

--- models.loaders: how models.load reads a path, tried in order: each {name, detect(path) ->
--- boolean, load(path, opts) -> parts}. models.register_loader(l) puts l first, so another
--- format (a training run's checkpoint) is one more entry.
models.loaders = {
  { name = "tocha run or checkpoint (a TextToImage)", -- before config.json: a run directory has one
    detect = function(path) return require("tocha.models.t2i").detect(path) end,
    load = function(path, opts) return require("tocha.models.t2i").load(path, opts) end },
  { name = "diffusers folder",
    detect = function(path) return isdir(path) and diffusers.exists(path .. "/model_index.json") end,
    load = function(path, opts) return diffusers.load(path, opts, models) end },
  { name = "diffusers model folder",
    detect = function(path) return isdir(path) and diffusers.exists(path .. "/config.json") end,
    load = function(path, opts) return diffusers.load_part(path, opts, models) end },
  { name = "single-file checkpoint (.safetensors)",
    detect = function(path) return not isdir(path) and path:match("%.safetensors$") ~= nil and diffusers.exists(path) end,
    load = function(path, opts) return single_file.load(path, opts, models) end },
  { name = "pickle file",
    detect = function(path) return not isdir(path) and diffusers.is_pickle(path) end,
    load = function(path) error(diffusers.pickle_message(path), 0) end },
}

function models.register_loader(loader)
  if type(loader) ~= "table" or type(loader.detect) ~= "function" or type(loader.load) ~= "function" then
    error("register_loader: expected {name =, detect = function(path), load = function(path, opts)}", 2)
  end
  table.insert(models.loaders, 1, loader)
end

--- models.load(path, {dtype = "f32", device = "cpu", variant, parts, config, tokenizer}) -> for a
--- Stable Diffusion checkpoint (a diffusers folder, or one original .safetensors file), the
--- table {unet, vae, text_encoder, tokenizer, scheduler} (plus path, format, and extras when the
--- folder has a tocha.json: a tocha model's conditioning, see models.Denoiser); for a single
--- model's folder (config.json + weights), that model; for a tocha training run or one of its
--- checkpoints, the TextToImage it holds (with its averaged weights, in eval mode). Weights stay memory-mapped where their
--- dtype is the one asked for. config and tokenizer are for single files (single_file.lua).
function models.load(path, opts)
  if type(path) ~= "string" then error("models.load: path must be a string, got " .. type(path), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("models.load: options must be a table", 2) end
  for _, loader in ipairs(models.loaders) do
    if loader.detect(path) then return loader.load(path, opts or {}) end
  end
  if not isdir(path) and not diffusers.exists(path) then error("models.load: " .. path .. " does not exist", 2) end
  local names = {}
  for i, l in ipairs(models.loaders) do names[i] = l.name end
  error("models.load: " .. path .. " is none of: " .. table.concat(names, ", "), 2)
end

--- models.save_pretrained(dir, parts, {dtype, variant}): a diffusers folder (model_index.json,
--- configs, safetensors weights) that diffusers' StableDiffusionPipeline.from_pretrained loads.
--- parts: {unet, vae, text_encoder, tokenizer, scheduler, extras}, any of them (extras, a tocha
--- model's conditioning, go to tocha.json, which diffusers ignores).
function models.save_pretrained(dir, parts, opts)
  if type(dir) ~= "string" then error("save_pretrained: dir must be a string", 2) end
  if type(parts) ~= "table" then error("save_pretrained: parts must be a table {unet, vae, ...}", 2) end
  diffusers.save(dir, parts, opts)
end

return models
