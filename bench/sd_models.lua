-- bench/sd_models.lua: Stable Diffusion 1.5's three models at their real sizes with random
-- weights, forward only, f32 on the CPU, tocha's side: the UNet on 64x64 latents (batch 1, 77
-- text tokens), the VAE decoding 64x64 latents to a 512x512 image, the text encoder on 77
-- tokens, and the UNet's attention alone at its largest level (batch 2 as under classifier-free
-- guidance, 8 heads of 40 over 4,096 tokens; self and cross with 77 text tokens), forward and
-- forward + backward. bench/sd_models_torch.py is the same in diffusers / transformers; bench/sd.sh runs
-- both, alternating, and prints the ratios.
-- Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the best of the timed calls).
-- "convs" times the UNet's 3x3 convolutions at 32x32 and 64x64 one by one.
--   ./build/tocha bench/sd_models.lua [unet|vae|text|attn|convs ...]   (THREADS=2; REPS scales the repetitions)
local T = require "tocha"
local models = require "tocha.models"

local THREADS = tonumber(os.getenv("THREADS") or "2")
local REPS = tonumber(os.getenv("REPS") or "1")
local SIZE = tonumber(os.getenv("SIZE") or "64") -- latent side (64: 512x512 images); small for a quick check
T.set_num_threads(THREADS)
T.manual_seed(0)
local P = models.presets

local timing = require "timing"
local result, best_of = timing.result, timing.best_of

local BENCH = {}

function BENCH.text()
  local te = models.CLIPTextModel(P.sd15_text):eval()
  local ids = T.randint(1, 49409, { 1, 77 })
  result("text_encoder_77", best_of(function() T.no_grad(function() return te(ids) end) end, 5 * REPS,
    { warm = 1, collect = true }))
end

function BENCH.unet()
  local unet = models.UNet2DConditionModel(P.sd15_unet):eval()
  local x, ctx = T.randn({ 1, 4, SIZE, SIZE }), T.randn({ 1, 77, 768 })
  result("unet_64x64", best_of(function() T.no_grad(function() return unet(x, 500, ctx) end) end, 2 * REPS,
    { warm = 1, collect = true }))
end

function BENCH.vae()
  local vae = models.AutoencoderKL(P.sd15_vae):eval()
  local z = T.randn({ 1, 4, SIZE, SIZE })
  result("vae_decode_512", best_of(function() T.no_grad(function() return vae:decode(z) end) end, 2 * REPS,
    { warm = 1, collect = true }))
end

function BENCH.attn()
  local F = require "tocha.nn.functional"
  local n = SIZE * SIZE
  for _, case in ipairs({ { "self", n }, { "cross", 77 } }) do
    local name = string.format("sdpa_%s_%dx%d", case[1], n, case[2])
    local q = T.randn({ 2, 8, n, 40 }, { requires_grad = true })
    local k, v = T.randn({ 2, 8, case[2], 40 }, { requires_grad = true }), T.randn({ 2, 8, case[2], 40 }, { requires_grad = true })
    local gy = T.randn({ 2, 8, n, 40 })
    result(name .. "_fwd", best_of(function()
      T.no_grad(function() return F.scaled_dot_product_attention(q, k, v) end)
    end, 3 * REPS, { warm = 1, collect = true }))
    result(name .. "_fwdbwd", best_of(function()
      q.grad, k.grad, v.grad = nil, nil, nil
      F.scaled_dot_product_attention(q, k, v):backward(gy)
    end, 2 * REPS, { warm = 1, collect = true }))
  end
end

-- every 3x3 convolution of the UNet at its 32x32 and 64x64 levels (the largest share of its
-- time), forward, batch 1; "convs" is not in the default list
local CONVS = { -- C, O, side (at SIZE = 64)
  { 320, 320, 64 }, { 640, 320, 64 }, { 960, 320, 64 }, { 640, 640, 64 },
  { 320, 640, 32 }, { 640, 640, 32 }, { 960, 640, 32 }, { 1280, 640, 32 }, { 1920, 640, 32 }, { 1280, 1280, 32 },
}

function BENCH.convs()
  local F = require "tocha.nn.functional"
  for _, c in ipairs(CONVS) do
    local side = c[3] * SIZE // 64
    local x, w, b = T.randn({ 1, c[1], side, side }), T.randn({ c[2], c[1], 3, 3 }), T.randn({ c[2] })
    result(string.format("conv3x3_%dto%d_%dx%d", c[1], c[2], side, side), best_of(function()
      T.no_grad(function() return F.conv2d(x, w, b, { padding = 1 }) end)
    end, 3 * REPS, { warm = 1 }))
  end
end

local which = #arg > 0 and arg or { "text", "unet", "vae", "attn" }
for _, name in ipairs(which) do
  assert(BENCH[name], "unknown benchmark " .. name .. " (text, unet, vae, attn, convs)")
  BENCH[name]()
  collectgarbage()
end
