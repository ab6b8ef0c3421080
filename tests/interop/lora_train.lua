-- tests/interop/lora_train.lua DIR: a tiny Stable Diffusion (random weights, written to DIR/model
-- by models.save_pretrained) gets LoRA adapters on its UNet's attention and its text encoder's
-- q / v projections, trained a few steps on the noise-prediction loss; they go to DIR/lora as
-- pytorch_lora_weights.safetensors. With the adapters merged at scale 0.7, tocha's UNet output
-- for fixed inputs and its pipeline's images from fixed latents go to DIR/tocha_io.safetensors,
-- for check_lora.py to compare with diffusers' load_lora_weights.
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local D = require "tocha.diffusion"
local lora = require "tocha.lora"

local dir = assert(arg[1], "usage: tocha tests/interop/lora_train.lua DIR")
T.manual_seed(0)
local captions = { "a small red circle on the left", "a big blue square on the right", "a green triangle above a star" }
local sd = require("tiny_sd")(captions)
local tok, te, unet, vae, sched = sd.tokenizer, sd.text_encoder, sd.unet, sd.vae, sd.scheduler
for _, m in ipairs({ unet, te, vae }) do m:eval() end
models.save_pretrained(dir .. "/model", { unet = unet, vae = vae, text_encoder = te, tokenizer = tok, scheduler = sched })

-- alpha ~= rank on purpose: the file must carry the scale diffusers does not read
lora.inject(unet, { rank = 4, alpha = 8 })
lora.inject(te, { rank = 2, alpha = 2, targets = { "q_proj", "v_proj" } })
local params = lora.parameters(unet)
for _, p in ipairs(lora.parameters(te)) do params[#params + 1] = p end
local opt = optim.AdamW(params, { lr = 2e-2 })
for step = 1, 6 do
  local latents = T.randn({ #captions, 4, 8, 8 })
  local noise = T.randn(latents.shape)
  local ts = T.randint(0, 1000, { #captions })
  local loss = F.mse_loss(unet(sched:add_noise(latents, noise, ts), ts, te(tok:encode(captions).input_ids)), noise)
  loss:backward()
  opt:step()
  opt:zero_grad()
  print(string.format("step %d loss %.4f", step, loss:item()))
end
lora.save(dir .. "/lora", { unet = unet, text_encoder = te })

lora.set_scale(unet, 0.7)
lora.set_scale(te, 0.7)
lora.merge(unet)
lora.merge(te)
local x, t = T.randn({ 2, 4, 8, 8 }), T.tensor({ 3, 801 }, { dtype = "i64" })
local ids = tok:encode({ captions[1], captions[3] }).input_ids
local out = T.no_grad(function() return unet(x, t, te(ids)) end)
local latents = T.randn({ 2, 4, 8, 8 })
local images = D.StableDiffusion { unet = unet, vae = vae, text_encoder = te, tokenizer = tok, scheduler = sched }:sample {
  prompts = { captions[1], captions[3] }, negative_prompts = { "a blue star", "" }, steps = 10, guidance_scale = 7.5,
  latents = latents, height = 16, width = 16 }
T.save(dir .. "/tocha_io.safetensors", { x = x, t = t, ids = (ids - 1):to("i64"), unet_out = out, latents = latents,
  images = images })
print("saved " .. dir .. "/lora")
