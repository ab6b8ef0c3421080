-- bench/finetune.lua: fine-tuning's costs, tocha's side. The step: the default experiment's UNet
-- trained on cached text embeddings (the text encoder frozen, as finetune_sd.lua runs it), batch
-- 16 at 32x32, v-prediction MSE, backward, gradient clipping, AdamW; in f32 and under bf16
-- autocast. bench/finetune_torch.py is the same step in PyTorch + diffusers (torch.autocast for
-- bf16); bench/finetune.sh runs both, alternating, and prints the ratios. With --data: how fast
-- the training set comes, images/s read from the latent cache against encoded at every step
-- (decode, resize, crop, VAE and text encoder), for a latent model and PNG files.
-- Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the bests of the timed repetitions).
--   ./build/tocha bench/finetune.lua [--data]     (THREADS=2 STEPS=5)
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local D = require "tocha.diffusion"

local THREADS = tonumber(os.getenv("THREADS") or "2")
local STEPS = tonumber(os.getenv("STEPS") or "5")
local N, LEN, WIDTH = 16, 32, 64
T.set_num_threads(THREADS)
T.manual_seed(0)

local timing = require "timing"
local result, best_of = timing.result, timing.best_of

local function train_step_bench()
  -- the default experiment's UNet (experiments/t2i_shapes.lua's overrides)
  local unet = models.UNet2DConditionModel(models.presets.tiny_unet, { in_channels = 5, time_embedding_dim = 512,
    resnet_time_scale_shift = "scale_shift", class_embed_type = "projection", projection_class_embeddings_input_dim = WIDTH })
  unet:train()
  local params = unet:parameters()
  local opt = optim.AdamW(params, { lr = 1e-4, weight_decay = 1e-2 })
  local sched = D.DDPM { beta_schedule = "squaredcos_cap_v2", prediction_type = "v_prediction" }
  local x0 = T.rand({ N, 3, 32, 32 }) * 2 - 1
  local xy = T.rand({ N, 2, 32, 32 }) * 2 - 1
  local states, pooled = T.randn({ N, LEN, WIDTH }), T.randn({ N, WIDTH }) -- cached embeddings
  for _, dtype in ipairs({ "f32", "bf16" }) do
    local function step()
      local noise = T.randn_like(x0)
      local ts = T.randint(0, 1000, { N })
      local xt = sched:add_noise(x0, noise, ts)
      local target = sched:get_velocity(x0, noise, ts)
      local function fwd() return unet(T.cat({ xt, xy }, 2), ts, states, { class_labels = pooled }) end
      local pred = dtype == "f32" and fwd() or T.autocast(dtype, fwd)
      F.mse_loss(pred:to("f32"), target):backward()
      optim.clip_grad_norm(params, 1.0)
      opt:step()
      opt:zero_grad()
    end
    result("finetune_step_" .. dtype, best_of(step, STEPS))
  end
end

-- images/s of the training set: cached latents against encoding every batch
local function data_bench()
  local shapes = require "tocha.data.shapes"
  local image = require "tocha.image"
  local json = require "tocha.json"
  local text = require "tocha.text"
  local finetune = require "tocha.data.finetune"
  local dir = T._sys.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/tocha_bench_ft.XXXXXX")
  local n, size = 256, 64
  local ds = shapes { size = size, seed = 1, objects = 1, format = "u8" }
  local f = assert(io.open(dir .. "/metadata.jsonl", "w"))
  for i = 1, n do
    local s = ds[i]
    image.write(string.format("%s/%04d.png", dir, i), s.image)
    f:write(json.encode { file_name = string.format("%04d.png", i), text = s.caption }, "\n")
  end
  f:close()
  -- a latent model: SD's layout at the tiny sizes (a 4-channel VAE, 8x downsampling)
  local tok = text.train_bpe(shapes.prompts { split = "all", objects = { 1 } }, 600, { max_length = LEN })
  local parts = { tokenizer = tok,
    text_encoder = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = tok.vocab_size }),
    vae = models.AutoencoderKL(models.presets.tiny_vae, { block_out_channels = { 32, 64, 64, 64 },
      down_block_types = { "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D" },
      up_block_types = { "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D" } }),
    unet = models.UNet2DConditionModel(models.presets.tiny_unet, { in_channels = 4, out_channels = 4, sample_size = 8 }),
    scheduler = D.DDIM {} }
  for _, m in ipairs({ parts.vae, parts.text_encoder, parts.unet }) do m:eval() end
  local d = models.Denoiser(parts)
  local set = finetune.new { data = dir, resolution = size, random_flip = true, seed = 0 }
  local batches = set:batches(N, 0)
  local function epoch() for _, idx in ipairs(batches) do set:batch(idx, d) end end
  local wall, cpu = best_of(epoch, 2, { warm = 1 })
  result("encode_images_per_s", n / wall, n / cpu)
  set:build_cache(d, { dir = dir .. "/cache" })
  wall, cpu = best_of(epoch, 3, { warm = 1 })
  result("cached_images_per_s", n / wall, n / cpu)
  os.execute("rm -rf '" .. dir .. "'")
end

if arg[1] == "--data" then data_bench() else train_step_bench() end
