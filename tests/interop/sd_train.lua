-- tests/interop/sd_train.lua DIR: trains a tiny Stable Diffusion from nothing for a few steps
-- (a tokenizer learnt from captions, a CLIP text encoder, a UNet and a VAE, AdamW on the
-- noise-prediction loss in the VAE's latent space), writes it with models.save_pretrained to
-- DIR/model, then samples it from fixed latents and keeps those latents and tocha's images
-- in DIR/tocha_io.safetensors for check_sd.py to compare with diffusers' StableDiffusionPipeline.
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local D = require "tocha.diffusion"

local dir = assert(arg[1], "usage: tocha tests/interop/sd_train.lua DIR")
T.manual_seed(0)
local captions = { "a small red circle on the left", "a big blue square on the right", "a green triangle above a star",
  "two yellow stars", "a purple hexagon below a red square" }
local sd = require("tiny_sd")(captions)
local tok, te, unet, vae, sched = sd.tokenizer, sd.text_encoder, sd.unet, sd.vae, sd.scheduler

local params = unet:parameters()
for _, p in ipairs(te:parameters()) do params[#params + 1] = p end
local opt = optim.AdamW(params, { lr = 1e-3 })
vae:eval()
for step = 1, 4 do
  local images = T.rand({ #captions, 3, 16, 16 }) * 2 - 1
  local latents = T.no_grad(function() return vae:encode(images):sample() * vae.scaling_factor end)
  local noise = T.randn(latents.shape)
  local ts = T.randint(0, 1000, { #captions })
  local noisy = sched:add_noise(latents, noise, ts)
  local context = te(tok:encode(captions).input_ids)
  local loss = F.mse_loss(unet(noisy, ts, context), noise)
  opt:zero_grad()
  loss:backward()
  opt:step()
  print(string.format("step %d loss %.4f", step, loss:item()))
end
unet:eval(); te:eval()
local parts = { unet = unet, vae = vae, text_encoder = te, tokenizer = tok, scheduler = sched }
models.save_pretrained(dir .. "/model", parts)
local latents = T.randn({ 2, 4, 8, 8 })
local images = D.StableDiffusion(models.load(dir .. "/model")):sample { prompts = { captions[1], captions[3] },
  negative_prompts = { "a blue star", "" }, steps = 10, guidance_scale = 7.5, latents = latents, height = 16, width = 16 }
T.save(dir .. "/tocha_io.safetensors", { latents = latents, images = images })
print("saved " .. dir .. "/model")
