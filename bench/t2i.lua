-- bench/t2i.lua: the default experiment's training step, tocha's side: tiny CLIP text encoder +
-- tiny UNet with the demo's overrides, batch 24 at 32x32, per-pixel weighted epsilon MSE,
-- backward, AdamW. bench/t2i_torch.py is the identical model in PyTorch (transformers +
-- diffusers); bench/t2i.sh runs both and prints the ratios. `--ops` times the model's main
-- ops at its shapes instead, to find the gaps.
-- Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the bests of the timed repetitions).
--   ./build/tocha bench/t2i.lua [--ops]      (THREADS=2 STEPS=5 by default; DEVICE=cuda runs the
--                                            training step on the GPU, synchronized after each step;
--                                            OPS=silu,exp REPS=40: some cases, more repetitions;
--                                            PERF_CTL=fifo: perf's control fifo, enabled around
--                                            the timed steps only: bench/t2i_profile.sh)
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local D = require "tocha.diffusion"

local THREADS = tonumber(os.getenv("THREADS") or "2")
local STEPS = tonumber(os.getenv("STEPS") or "5")
local DEVICE = os.getenv("DEVICE") or "cpu"
local N, VOCAB, LEN = 24, 1024, 32
T.set_num_threads(THREADS)
T.manual_seed(0)

local timing = require "timing"
local result, best_of = timing.result, timing.best_of

---------------------------------------------------------------------------------------------
-- the training step
---------------------------------------------------------------------------------------------
local function train_step_bench()
  -- the demo's model (experiments/t2i_shapes.lua's defaults): two pixel-coordinate input
  -- channels, a 512-wide time embedding, the pooled caption added to it (and appended to the
  -- context) and applied as scale and shift; the loss weighted per pixel
  local text_encoder = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = VOCAB })
  local unet = models.UNet2DConditionModel(models.presets.tiny_unet, { in_channels = 5, time_embedding_dim = 512,
    resnet_time_scale_shift = "scale_shift", class_embed_type = "projection", projection_class_embeddings_input_dim = 64 })
  text_encoder:to(DEVICE)
  unet:to(DEVICE)
  local params = {}
  for _, p in ipairs(text_encoder:parameters()) do params[#params + 1] = p end
  for _, p in ipairs(unet:parameters()) do params[#params + 1] = p end
  local opt = optim.AdamW(params, { lr = 1e-4, weight_decay = 1e-2 })
  local sched = D.DDPM { beta_schedule = "squaredcos_cap_v2" }
  local x0 = (T.rand({ N, 3, 32, 32 }) * 2 - 1):to(DEVICE)
  local xy = (T.rand({ N, 2, 32, 32 }) * 2 - 1):to(DEVICE)
  local weights = (T.rand({ N, 1, 32, 32 }) + 0.5):to(DEVICE)
  local ids = T.randint(1, VOCAB + 1, { N, LEN }):to(DEVICE)
  local function step()
    local noise = T.randn_like(x0)
    local ts = T.randint(0, 1000, { N }) -- on the CPU: add_noise reads it there
    local xt = sched:add_noise(x0, noise, ts)
    local states, pooled = text_encoder(ids)
    local context = T.cat({ states, pooled:unsqueeze(2) }, 2)
    local pred = unet(T.cat({ xt, xy }, 2), ts:to(DEVICE), context, { class_labels = pooled })
    local loss = (F.mse_loss(pred, noise, { reduction = "none" }) * weights):mean()
    loss:backward()
    opt:step()
    opt:zero_grad()
    if DEVICE ~= "cpu" then T.cuda.synchronize() end
  end
  for _ = 1, 2 do step() end -- warm-up, outside a profile
  local ctl = os.getenv("PERF_CTL")
  local function perf(cmd)
    if not ctl then return end
    local f = assert(io.open(ctl, "w"))
    f:write(cmd, "\n")
    f:close()
  end
  perf("enable")
  local wall, cpu = best_of(step, STEPS, { warm = 0 })
  perf("disable")
  result("train_step", wall, cpu)
end

---------------------------------------------------------------------------------------------
-- the main ops at the model's shapes (batch 24): forward, and forward + backward
---------------------------------------------------------------------------------------------
-- leaves(shape, ...): random inputs that require grad
local function leaves(...)
  local out = {}
  for i, shape in ipairs({ ... }) do out[i] = T.randn(shape, { requires_grad = true }) end
  return out
end
local function conv3(x, w, b) return F.conv2d(x, w, b, { padding = 1 }) end
local function gn(x, w, b) return F.group_norm(x, 8, w, b) end
local function sdpa(q, k, v) return F.scaled_dot_product_attention(q, k, v) end

-- each case: name, a function making its inputs, the op
local CASES = {
  { "conv3x3_16x32x32", function() return leaves({ N, 16, 32, 32 }, { 16, 16, 3, 3 }, { 16 }) end, conv3 },
  { "conv3x3_64x8x8", function() return leaves({ N, 64, 8, 8 }, { 64, 64, 3, 3 }, { 64 }) end, conv3 },
  { "group_norm_16x32x32", function() return leaves({ N, 16, 32, 32 }, { 16 }, { 16 }) end, gn },
  { "group_norm_64x8x8", function() return leaves({ N, 64, 8, 8 }, { 64 }, { 64 }) end, gn },
  { "silu_16x32x32", function() return leaves({ N, 16, 32, 32 }) end, function(x) return x:silu() end },
  { "exp_16x32x32", function() return leaves({ N, 16, 32, 32 }) end, function(x) return x:exp() end },
  { "sdpa_self_8x64x8", function() return leaves({ N, 8, 64, 8 }, { N, 8, 64, 8 }, { N, 8, 64, 8 }) end, sdpa },
  { "sdpa_cross_8x64x32", function() return leaves({ N, 8, 64, 8 }, { N, 8, 32, 8 }, { N, 8, 32, 8 }) end, sdpa },
  { "sdpa_causal_4x32x16", function() return leaves({ N, 4, 32, 16 }, { N, 4, 32, 16 }, { N, 4, 32, 16 }) end,
    function(q, k, v) return F.scaled_dot_product_attention(q, k, v, { is_causal = true }) end },
  { "linear_64to256", function() return leaves({ N, 64, 64 }, { 256, 64 }, { 256 }) end, F.linear },
  { "layer_norm_64x64", function() return leaves({ N, 64, 64 }, { 64 }, { 64 }) end,
    function(x, w, b) return F.layer_norm(x, { 64 }, w, b) end },
  { "add_bcast_16x32x32", function() return leaves({ N, 16, 32, 32 }, { N, 16, 1, 1 }) end,
    function(a, b) return a + b end },
  { "mul_64x256", function() return leaves({ N, 64, 256 }, { N, 64, 256 }) end, function(a, b) return a * b end },
  { "gelu_64x256", function() return leaves({ N, 64, 256 }) end, function(x) return x:gelu() end },
  { "quick_gelu_32x256", function() return leaves({ N, 32, 256 }) end, F.quick_gelu },
  -- the fused ops against the unfused expressions diffusers runs: GEGLU after its projection (the
  -- bias inside PyTorch's addmm: none here) at the demo's shape and at SD 1.5's first transformer
  -- (64x64 latents: 4096 tokens, 2 x 1280), and a bias + gelu
  { "geglu_64x512", function() return leaves({ N, 64, 512 }) end, F.geglu },
  { "geglu_sd_4096x2560", function() return leaves({ 1, 4096, 2560 }) end, F.geglu },
  { "bias_gelu_64x256", function() return leaves({ N, 64, 256 }, { 256 }) end,
    function(x, b) return F.bias_act(x, b, "gelu") end },
  { "cat_32x16x16", function() return leaves({ N, 32, 16, 16 }, { N, 32, 16, 16 }) end,
    function(a, b) return T.cat({ a, b }, 2) end },
  { "upsample_64x8x8", function() return leaves({ N, 64, 8, 8 }) end,
    function(x) return F.interpolate(x, { scale_factor = 2, mode = "nearest" }) end },
  { "tokens_64x8x8", function() return leaves({ N, 64, 8, 8 }) end,
    function(x) return x:permute(1, 3, 4, 2):reshape(N, 64, 64) end },
  { "mse_3x32x32", function() return { leaves({ N, 3, 32, 32 })[1], T.randn({ N, 3, 32, 32 }) } end, F.mse_loss },
  { "sum_16x32x32", function() return leaves({ N, 16, 32, 32 }) end, function(x) return x:sum() end },
}

-- OPS=silu,exp: only the cases whose names start so; REPS: timed calls per case (default 7)
local function selected(name)
  local want = os.getenv("OPS")
  if not want or want == "" then return true end
  for prefix in want:gmatch("[^,]+") do
    if name:sub(1, #prefix) == prefix then return true end
  end
  return false
end

local function ops_bench()
  for _, case in ipairs(CASES) do
    local name, make, op = case[1], case[2], case[3]
    if not selected(name) then goto continue end
    local inputs = make()
    local y = op(table.unpack(inputs))
    local gy = T.randn(y.shape)
    local reps = tonumber(os.getenv("REPS") or "7")
    result(name .. "_fwd", best_of(function() T.no_grad(function() return op(table.unpack(inputs)) end) end, reps))
    result(name .. "_fwdbwd", best_of(function()
      for _, x in ipairs(inputs) do x.grad = nil end
      op(table.unpack(inputs)):backward(gy)
    end, reps))
    collectgarbage()
    ::continue::
  end
end

if arg[1] == "--ops" then ops_bench() else train_step_bench() end
