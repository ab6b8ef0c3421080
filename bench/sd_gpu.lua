-- bench/sd_gpu.lua: Stable Diffusion 1.5 at its real size on the GPU, tocha's side, random
-- weights: the UNet's training step (bf16 autocast, 64x64 latents, batch 8, noise-prediction
-- MSE, AdamW), the fine-tuning recipe's step (batch 16, gradient clipping), the step's peak
-- memory with and without gradient checkpointing, and sampling (DDIM 50
-- steps, guidance 7.5, batch 1, the UNet in f16, then the VAE's decode to 512x512; sample_graph:
-- the same with the UNet's guided pass replayed from a CUDA graph), with the
-- bf16 GEMM rate that model FLOPs utilisation is taken against, and attention at SD's shapes (fwd+bwd,
-- bf16, batch 8, 8 heads: L 4096 / head dim 40, L 1024 / 80, L 256 / 160, cross-attention L 4096 x
-- S 77 / 40) once on each backend, cuDNN's fused attention and the flash kernel, with the backend
-- that ran and why ("INFO attention ..."). bench/sd_gpu_torch.py is the same
-- work in PyTorch + diffusers; scripts/gpu_check.sh runs both and prints the ratios.
-- Prints "RESULT <name> <seconds per iteration> 0" lines (the median of synchronized rounds; the
-- model's FLOPs come from PyTorch's counter on the other side) and "MEM <name> <peak bytes>".
--   tocha bench/sd_gpu.lua [--small] [--channels_last] [gemm attention train recipe memory sample sample_graph ...]
--   (--small: the tiny UNet and VAE at 16x16 latents, 3 sampling steps, attention at batch 1, 2 heads
--   and L / 16, to check the script;
--   --channels_last: the UNet's weights and the latents channels-last, for the training steps)
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local registry = require "tocha.diffusion.registry"

local small, channels_last, which = false, false, {}
for _, a in ipairs(arg) do
  if a == "--small" then small = true
  elseif a == "--channels_last" then channels_last = true
  else which[#which + 1] = a end
end
if #which == 0 then which = { "gemm", "attention", "train", "recipe", "memory", "sample", "sample_graph" } end
if not (T.cuda and T.cuda.is_available()) then
  print("SKIP no CUDA GPU (T.cuda.is_available() is false)")
  return
end
local ROUNDS = small and 2 or 5
local P = models.presets
local UNET = small and P.tiny_unet or P.sd15_unet
local VAE = small and P.tiny_vae or P.sd15_vae
local UNET_OVERRIDES = small and { in_channels = 4, out_channels = 4 } or nil -- the VAE's 4 latent channels
local CTX = small and UNET.cross_attention_dim or 768
local BATCH, SIZE, STEPS = small and 2 or 8, small and 16 or 64, small and 3 or 50
print("INFO device " .. T.cuda.get_device_name(0) .. (small and " (--small sizes)" or ""))

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

--- times fn over ROUNDS synchronized rounds of `iters` calls after `warm` untimed ones
local function bench(name, iters, warm, fn)
  for _ = 1, warm do fn() end
  T.cuda.synchronize()
  local times = {}
  for _ = 1, ROUNDS do
    collectgarbage()
    T.cuda.synchronize()
    local t0 = T.clock()
    for _ = 1, iters do fn() end
    T.cuda.synchronize()
    times[#times + 1] = (T.clock() - t0) / iters
  end
  print(string.format("RESULT %s %.9g 0", name, median(times)))
  io.stdout:flush()
end

local BENCH = {}

-- the card's bf16 GEMM rate (8192^3), the denominator of model FLOPs utilisation
function BENCH.gemm()
  local n = small and 256 or 8192
  local a, b = T.randn({ n, n }, { device = "cuda", dtype = "bf16" }), T.randn({ n, n }, { device = "cuda", dtype = "bf16" })
  bench("sd_gemm_bf16_" .. n, small and 2 or 20, 3, function() local c <close> = a:matmul(b) end)
end

-- attention fwd+bwd in bf16 at SD's shapes, on each backend of T.backends.sdpa_backend: a row per
-- backend that ran (a shape cuDNN declines runs flash both times: one row, and the reason)
local ATTN_SHAPES = { { L = 4096, S = 4096, E = 40 }, { L = 1024, S = 1024, E = 80 }, { L = 256, S = 256, E = 160 },
  { L = 4096, S = 77, E = 40 } }
function BENCH.attention()
  local B, Hd = small and 1 or 8, small and 2 or 8
  local prev = T.backends.sdpa_backend()
  for _, sh in ipairs(ATTN_SHAPES) do
    local L, S = small and sh.L // 16 or sh.L, sh.S == 77 and 77 or (small and sh.S // 16 or sh.S)
    local opt = { device = "cuda", dtype = "bf16" }
    T.manual_seed(0)
    local q, k, v = T.randn({ B, Hd, L, sh.E }, opt), T.randn({ B, Hd, S, sh.E }, opt), T.randn({ B, Hd, S, sh.E }, opt)
    q:requires_grad_(); k:requires_grad_(); v:requires_grad_()
    local gy = T.randn({ B, Hd, L, sh.E }, opt)
    local name = string.format("sd_attn_b%dh%d_L%d_S%d_d%d", B, Hd, L, S, sh.E)
    local seen = {}
    for _, backend in ipairs({ "cudnn", "flash" }) do
      T.backends.sdpa_backend(backend)
      local function step()
        F.scaled_dot_product_attention(q, k, v):backward(gy)
        q.grad, k.grad, v.grad = nil, nil, nil
      end
      step()
      local last = T.backends.sdpa_last()
      local ran = last.forward .. (last.backward ~= last.forward and "+" .. last.backward or "")
      print(string.format("INFO attention %s asked %s: forward %s (%s), backward %s (%s)", name, backend, last.forward,
        last.forward_reason, last.backward, last.backward_reason))
      if not seen[ran] then
        seen[ran] = true
        bench(name .. "_" .. ran, small and 2 or 20, 3, step)
      end
    end
  end
  T.backends.sdpa_backend(prev)
end

-- the UNet in f32 with AdamW (multi-tensor on CUDA) and one training step under bf16 autocast,
-- on `batch` latents (default BATCH); clip: gradient clipping to that global norm first
local function trainer(checkpointing, batch, clip)
  batch = batch or BATCH
  T.manual_seed(0)
  local unet = models.UNet2DConditionModel(UNET, UNET_OVERRIDES):to("cuda")
  if channels_last then unet:to{ memory_format = "channels_last" } end
  unet:train()
  if checkpointing then unet:enable_gradient_checkpointing(true) end
  local params = unet:parameters()
  local opt = optim.AdamW(params, { lr = 1e-5, weight_decay = 1e-2 })
  local x = T.randn({ batch, 4, SIZE, SIZE }, { device = "cuda" })
  if channels_last then x = x:contiguous{ memory_format = "channels_last" } end
  local noise = T.randn({ batch, 4, SIZE, SIZE }, { device = "cuda" })
  local ctx = T.randn({ batch, 77, CTX }, { device = "cuda" })
  local ts = T.randint(0, 1000, { batch }, { device = "cuda" })
  local function step()
    local pred = T.autocast("bf16", function() return unet(x, ts, ctx) end)
    F.mse_loss(pred:to("f32"), noise):backward()
    if clip then optim.clip_grad_norm(params, clip) end
    opt:step()
    opt:zero_grad()
  end
  return step, unet, opt
end

function BENCH.train()
  local step = trainer(false)
  bench(string.format("sd15_unet_train_bf16_b%d_%dx%d", BATCH, SIZE, SIZE), small and 1 or 5, 2, step)
end

-- the seed's fine-tuning recipe at real size: cached latents of 512x512 images (the VAE is not in
-- the step), batch 16, bf16 autocast, gradient clipping to norm 1, AdamW; images/s = 16 / time
function BENCH.recipe()
  local step = trainer(false, small and 2 or 16, 1.0)
  bench(string.format("sd15_recipe_bf16_clip_b%d_%dx%d", small and 2 or 16, SIZE, SIZE), small and 1 or 3, 2, step)
end

-- peak memory of one training step (the model, AdamW's state and the activations), without and
-- with gradient checkpointing (the UNet's blocks recompute their activations in the backward)
function BENCH.memory()
  for _, ckpt in ipairs({ false, true }) do
    collectgarbage(); collectgarbage()
    T.cuda.empty_cache()
    local step = trainer(ckpt)
    step() -- AdamW's state exists from here on
    T.cuda.synchronize()
    T.cuda.reset_peak_memory_stats()
    step()
    T.cuda.synchronize()
    local name = string.format("sd15_unet_train_bf16_b%d_%dx%d%s", BATCH, SIZE, SIZE, ckpt and "_ckpt" or "")
    print(string.format("MEM %s %d", name, T.cuda.max_memory_allocated()))
    if ckpt then bench(name, small and 1 or 3, 1, step) end
    step = nil
  end
end

-- DDIM sampling with classifier-free guidance (the two passes in one batch of 2) and the VAE's
-- decode, f16 weights and activations; graph: the guided UNet pass captured once as a CUDA graph
-- on static inputs (latents, timesteps, context) and replayed at each step, the scheduler's
-- step eager
local function sampling(graph)
  T.manual_seed(0)
  local unet = models.UNet2DConditionModel(UNET, UNET_OVERRIDES):to("cuda"):to("f16")
  local vae = models.AutoencoderKL(VAE):to("cuda"):to("f16")
  unet:eval(); vae:eval()
  local s = registry.by_name("ddim", { beta_start = 0.00085, beta_end = 0.012, beta_schedule = "scaled_linear",
    clip_sample = false, set_alpha_to_one = false, steps_offset = 1 })
  local ctx = T.randn({ 2, 77, CTX }, { device = "cuda", dtype = "f16" })
  local inp, ts = T.zeros({ 1, 4, SIZE, SIZE }, { device = "cuda", dtype = "f16" }), T.zeros({ 2 }, { device = "cuda" })
  local function guided()
    local out = unet(T.cat({ inp, inp }, 1), ts, ctx)
    local uncond, cond = out:narrow(1, 1, 1), out:narrow(1, 2, 1)
    return uncond + (cond - uncond) * 7.5
  end
  local g, eps
  if graph then
    T.no_grad(function()
      guided() -- the warm-up: what the first call makes (workspaces, plans) exists before the capture
      g, eps = T.cuda.graph(guided)
    end)
  end
  local function run()
    T.no_grad(function()
      s:set_timesteps(STEPS)
      local x = T.randn({ 1, 4, SIZE, SIZE }, { device = "cuda", dtype = "f16" }) * s.init_noise_sigma
      for _, t in ipairs(s.timesteps) do
        inp:copy_(s:scale_model_input(x, t))
        ts:fill_(t)
        local e
        if g then g:replay(); e = eps else e = guided() end
        x = s:step(e, t, x)
      end
      return vae:decode(x / (vae.scaling_factor or 0.18215))
    end)
  end
  bench(string.format("sd15_sample_ddim%d_f16_%dx%d%s", STEPS, SIZE * 8, SIZE * 8, graph and "_graph" or ""), 1, 1, run)
  if g then g:release() end
end

function BENCH.sample() sampling(false) end
function BENCH.sample_graph() sampling(true) end

for _, name in ipairs(which) do
  if not BENCH[name] then error("sd_gpu.lua: unknown benchmark " .. name .. " (gemm, attention, train, recipe, memory, sample, sample_graph)", 0) end
  BENCH[name]()
  collectgarbage()
end
