-- tocha.models: the text-to-image models, each configured by a Lua table: CLIPTextModel (CLIP's
-- text encoder, transformers' names) and UNet2DConditionModel (Stable Diffusion's UNet,
-- diffusers' names), with presets from a tiny CPU model up to Stable Diffusion 1.5's sizes; and
-- the networks the metrics use (InceptionV3FID, torchvision's names; CLIPVisionModel and
-- CLIPModel, transformers').
local clip_text = require "tocha.models.clip_text"
local unet = require "tocha.models.unet"

local models = {
  CLIPTextModel = clip_text.CLIPTextModel,
  UNet2DConditionModel = unet.UNet2DConditionModel,
  InceptionV3FID = require("tocha.models.inception").InceptionV3FID,
  CLIPVisionModel = require("tocha.models.clip_vision").CLIPVisionModel,
  CLIPModel = require("tocha.models.clip_vision").CLIPModel,
  blocks = require "tocha.models.unet_blocks",
}

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
}

--- models.num_parameters(kind, cfg, overrides): the parameter count of
--- models[kind](cfg, overrides) ("CLIPTextModel" or "UNet2DConditionModel"), from the config
--- alone, without allocating the model
function models.num_parameters(kind, cfg, overrides)
  if kind == "CLIPTextModel" then return clip_text.num_parameters_for(cfg, overrides) end
  if kind == "UNet2DConditionModel" then return unet.num_parameters_for(cfg, overrides) end
  error("num_parameters: kind must be \"CLIPTextModel\" or \"UNet2DConditionModel\", got " .. tostring(kind), 2)
end

--- models.resolve(kind, cfg, overrides): the complete config the constructor would use
function models.resolve(kind, cfg, overrides)
  if kind == "CLIPTextModel" then return clip_text.resolve(cfg, overrides) end
  if kind == "UNet2DConditionModel" then return unet.resolve(cfg, overrides) end
  error("resolve: kind must be \"CLIPTextModel\" or \"UNet2DConditionModel\", got " .. tostring(kind), 2)
end

return models
