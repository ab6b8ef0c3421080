-- tests/interop/tiny_sd.lua: the tiny Stable Diffusion the interop scripts build with random
-- weights: tiny_sd(captions) -> {tokenizer (BPE learnt from the captions), text_encoder, unet,
-- vae, scheduler (SD 1.5's DDIM)}, in the layout models.save_pretrained writes.
local models = require "tocha.models"
local text = require "tocha.text"
local D = require "tocha.diffusion"

return function(captions)
  local tok = text.train_bpe(captions, 600, { max_length = 16 })
  local te = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = tok.vocab_size, max_position_embeddings = 16,
    hidden_size = 32, intermediate_size = 64, num_hidden_layers = 2 })
  local unet = models.UNet2DConditionModel({ sample_size = 8, in_channels = 4, out_channels = 4,
    block_out_channels = { 16, 32 }, layers_per_block = 1, down_block_types = { "CrossAttnDownBlock2D", "DownBlock2D" },
    up_block_types = { "UpBlock2D", "CrossAttnUpBlock2D" }, cross_attention_dim = 32, attention_head_dim = { 2, 4 },
    norm_num_groups = 8 })
  local vae = models.AutoencoderKL(models.presets.tiny_vae, { sample_size = 16 })
  local sched = D.DDIM { beta_start = 0.00085, beta_end = 0.012, beta_schedule = "scaled_linear", clip_sample = false,
    set_alpha_to_one = false, steps_offset = 1 }
  return { tokenizer = tok, text_encoder = te, unet = unet, vae = vae, scheduler = sched }
end
