-- experiments/finetune_sd.lua: fine-tunes a pre-trained text-to-image model on a few hundred
-- captioned images, as diffusers' train_text_to_image.py does (and its LoRA variant): a
-- Stable Diffusion model (latent, with a VAE) or a tocha model (pixel-space, as the default
-- experiment's), the whole UNet or LoRA adapters, latents and text embeddings cached, mixed
-- precision, EMA, validation images and cross-attention maps in TensorBoard.
--   tocha experiments/finetune_sd.lua --model DIR --data DIR [--recipe seed] [--lora 4] ... (--help)
local T = require "tocha"
local F = require "tocha.nn.functional"
local nn = require "tocha.nn"
local optim = require "tocha.optim"
local lr_sched = require "tocha.lr"
local ckpt = require "tocha.checkpoint"
local D = require "tocha.diffusion"
local models = require "tocha.models"
local lora = require "tocha.lora"
local image = require "tocha.image"
local log = require "tocha.log"
local run = require "tocha.run"
local finetune_data = require "tocha.data.finetune"
local attention_maps = require "tocha.models.attention_maps"

local SCHEDULES = { "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial" }
local defaults = {
  model = { "", help = "the pre-trained model: a diffusers folder, a single .safetensors file, or a tocha run (or checkpoint) of a TextToImage" },
  data = { "", help = "the images: a folder with captions (metadata.jsonl or .txt files) or shards from tocha pack" },
  recipe = { "", help = "preset the recipe's numbers where not given: seed = lr 5e-6, batch 16, 10 epochs, clipping 1.0, "
    .. "validation by DDIM 50 steps at guidance 7.5, fp16 on a GPU", choices = { "", "seed" } },
  resolution = { 0, help = "image side in pixels (0: the model's)" },
  center_crop = { false, help = "crop the middle of each image (default: a random crop)" },
  random_flip = { false, help = "flip images left-right at random (cached: both flips)" },
  buckets = { false, help = "aspect-ratio buckets: images go to a few shapes of about resolution^2 pixels instead of square crops; each batch from one" },
  bucket_step = { 0, help = "bucket sides are multiples of this (0: 8 latent positions, 64 pixels for SD)" },
  batch = { 16, help = "images per micro-batch" },
  accumulation = { 1, help = "micro-batches per optimizer step (gradient accumulation)" },
  epochs = { 10, help = "passes over the data" },
  max_steps = { 0, help = "optimizer steps (0: from --epochs)" },
  lr = { 1e-4, help = "learning rate (AdamW)" },
  scale_lr = { false, help = "multiply the lr by batch x accumulation" },
  lr_scheduler = { "constant", help = "learning-rate schedule", choices = SCHEDULES },
  warmup = { 0, help = "warmup steps (all schedules but constant)" },
  lr_cycles = { 1, help = "cosine_with_restarts: the number of cycles" },
  lr_power = { 1.0, help = "polynomial: the power" },
  adam_beta1 = { 0.9, help = "AdamW beta1" },
  adam_beta2 = { 0.999, help = "AdamW beta2" },
  adam_eps = { 1e-8, help = "AdamW epsilon" },
  weight_decay = { 1e-2, help = "AdamW decoupled weight decay" },
  max_grad_norm = { 1.0, help = "clip the gradients' global norm to this (0: no clipping)" },
  ema = { false, help = "keep an exponential moving average of the trained weights (saved, and used for validation)" },
  ema_decay = { 0.9999, help = "EMA decay" },
  ema_offload = { false, help = "keep the EMA weights on the CPU (when training on a GPU)" },
  snr_gamma = { 0.0, help = "Min-SNR-gamma loss weighting (0: off; 5 is the paper's)" },
  timestep_power = { 1.0, help = "training timesteps t = T u^p, u uniform: 1 is diffusers' uniform draw, below 1 favours the noisy steps (as the default experiment trains)" },
  noise_offset = { 0.0, help = "add this much per-channel offset noise" },
  input_perturbation = { 0.0, help = "perturb the noise the input is made with (0.1 in the paper)" },
  prediction_type = { "", help = "train the UNet to predict this (default: the model's scheduler's)", choices = { "", "epsilon", "v_prediction", "sample" } },
  mixed_precision = { "no", help = "matmuls, convolutions and attention in f16 (with loss scaling) or bf16; weights stay f32", choices = { "no", "fp16", "bf16" } },
  gradient_checkpointing = { false, help = "recompute the UNet's blocks in the backward pass (less memory, more time)" },
  train_text_encoder = { false, help = "train the text encoder too (needs --no_cache)" },
  no_cache = { false, help = "encode images and captions at every step instead of caching latents and text embeddings" },
  cache_dir = { "", help = "where the cache goes (default: DATA/.tocha-cache)" },
  caption_dropout = { 0.0, help = "fraction of captions replaced by \"\" (classifier-free guidance)" },
  prior_data = { "", help = "prior preservation (DreamBooth): captioned images of what the model already draws, trained alongside --data so that it keeps drawing them" },
  prior_prompts = { "", help = "a file of prompts, one a line: when --prior_data holds no images, the model draws --prior_images of them there first" },
  prior_images = { 0, help = "how many prior images to draw (0: as many as --data has)" },
  prior_loss_weight = { 1.0, help = "weight of the prior images' loss against the new images'" },
  lora = { 0, help = "train LoRA adapters of this rank instead of the whole UNet (0: full fine-tune)" },
  lora_alpha = { 0.0, help = "LoRA alpha (0: the rank)" },
  lora_targets = { { "to_q", "to_k", "to_v", "to_out.0" }, help = "the layers that get adapters" },
  lora_dropout = { 0.0, help = "dropout on the adapters' input" },
  trainable = { {}, help = "full fine-tune of these UNet modules only (module paths or their last components, as --lora_targets; default: the whole UNet)" },
  checkpoint_every = { 500, help = "optimizer steps between checkpoints (0: none)" },
  checkpoints_total_limit = { 0, help = "keep only the newest N checkpoints (0: all)" },
  checkpoint_dir = { "", help = "where checkpoints go (default: the run directory's checkpoints/)" },
  resume = { "", help = "continue from a checkpoint: a directory, or latest (the newest in --checkpoint_dir, or in this experiment's newest run)" },
  validation_prompts = { {}, help = "prompts drawn during training (a,b,c)" },
  validation_every = { 100, help = "optimizer steps between validations (0: only at the start and the end)" },
  validation_steps = { 50, help = "sampler steps for validation images" },
  guidance = { 7.5, help = "classifier-free guidance scale for validation images" },
  guidance_interval = { {}, help = "guide only timesteps lo,hi (default: the model's own, if it has one)" },
  eval_prompts = { "", help = "the seed's evaluation: a file of prompts (one a line; 10 in its protocol) whose images, drawn before and after fine-tuning, are measured by FID against --eval_real" },
  eval_images = { 100, help = "images the evaluation draws, spread evenly over --eval_prompts (the seed's: 100 from 10 prompts)" },
  eval_real = { "", help = "the held-out real images the evaluation's FID is measured against: a folder, or statistics saved by tocha eval" },
  eval_model = { "inception", help = "the FID's features: inception (pytorch-fid's network, needs --inception_weights) or shapes (tocha.data.shapes images, no download)", choices = { "inception", "shapes" } },
  inception_weights = { "", help = "pytorch-fid's Inception weights converted to safetensors (docs/eval.md)" },
  log_attention = { false, help = "also log each validation prompt's cross-attention map per token" },
  log_every = { 10, help = "optimizer steps between logged scalars" },
  out = { "", help = "where the fine-tuned model goes (default: the run directory's model/)" },
  device = { "cpu", help = "where to train", choices = { "cpu", "cuda" } },
  threads = { 2, help = "CPU threads" },
  seed = { 0, help = "seed for the data order, the noise and the validation images" },
}

local r = run { name = "finetune_sd", config = defaults }
local cfg = r.config
-- the recipe's numbers, where the command line kept the defaults
if cfg.recipe == "seed" then
  local preset = { lr = 5e-6, batch = 16, epochs = 10, max_grad_norm = 1.0, validation_steps = 50, guidance = 7.5,
    mixed_precision = cfg.device == "cuda" and "fp16" or "no" }
  for k, v in pairs(preset) do
    if cfg[k] == defaults[k][1] then cfg[k] = v end
  end
end
local function usage(msg) io.stderr:write("finetune_sd: ", msg, "\n"); os.exit(2) end
if cfg.model == "" then usage("give the model to fine-tune: --model DIR_OR_FILE") end
if cfg.data == "" then usage("give the training images: --data DIR") end
if #cfg.trainable > 0 and cfg.lora > 0 then usage("--trainable chooses what a full fine-tune trains; with --lora, --lora_targets does") end
if cfg.train_text_encoder and not cfg.no_cache then usage("--train_text_encoder needs --no_cache (cached text embeddings would not change)") end
if cfg.device == "cuda" and not T.cuda.is_available() then usage("--device cuda: no GPU is available here") end
if #cfg.guidance_interval ~= 0 and #cfg.guidance_interval ~= 2 then usage("--guidance_interval takes lo,hi") end
for _, k in ipairs({ "batch", "accumulation", "epochs" }) do
  if cfg[k] < 1 then usage("--" .. k .. " must be at least 1") end
end
local eval_prompts = {}
if cfg.eval_prompts ~= "" then
  local f = io.open(cfg.eval_prompts) or usage("--eval_prompts: cannot read " .. cfg.eval_prompts)
  for line in f:lines() do
    if line:find("%S") then eval_prompts[#eval_prompts + 1] = line end
  end
  f:close()
  if #eval_prompts == 0 then usage("--eval_prompts: " .. cfg.eval_prompts .. " holds no prompt") end
  if cfg.eval_real == "" then usage("--eval_prompts measures FID against held-out images: give --eval_real DIR") end
  if cfg.eval_images < #eval_prompts then usage("--eval_images must be at least one image a prompt") end
  if cfg.eval_model == "inception" and cfg.inception_weights == "" then
    usage("--eval_model inception needs --inception_weights FILE (or --eval_model shapes for shapes images)")
  end
end
local dev = cfg.device
T.set_num_threads(cfg.threads)

---------------------------------------------------------------------------------------------
-- the model: f32 weights whatever the file holds (mixed precision computes in half, the
-- weights the optimizer updates stay f32)
---------------------------------------------------------------------------------------------
local parts = models.Denoiser.parts(models.load(cfg.model, { dtype = "f32", device = dev })) -- (a tocha run: its TextToImage)
if not parts.scheduler then usage(cfg.model .. " has no scheduler config, so no noise schedule to train with") end
local d = models.Denoiser(parts)
local noise_cfg = D.samplers.to_diffusers(parts.scheduler)
if cfg.prediction_type ~= "" then noise_cfg.prediction_type = cfg.prediction_type end
local prediction = noise_cfg.prediction_type or "epsilon"
noise_cfg._class_name = "DDPMScheduler"
local noise_sched = D.samplers.from_diffusers(noise_cfg)
local function validation_sampler()
  local c = {}
  for k, v in pairs(noise_cfg) do c[k] = v end
  c._class_name, c.clip_sample = "DDIMScheduler", false
  return D.samplers.from_diffusers(c)
end
local resolution = cfg.resolution > 0 and cfg.resolution or d.size
if resolution % d.factor ~= 0 then usage(string.format("--resolution must be a multiple of %d (the VAE's factor)", d.factor)) end

-- what trains: the UNet (or its LoRA adapters), and the text encoder with --train_text_encoder
if d.vae then d.vae:requires_grad_(false):eval() end
if not cfg.train_text_encoder then d.text_encoder:requires_grad_(false):eval() end
local trained = { unet = d.unet, text_encoder = cfg.train_text_encoder and d.text_encoder or nil }
local params
if cfg.lora > 0 then
  local o = { rank = cfg.lora, alpha = cfg.lora_alpha > 0 and cfg.lora_alpha or cfg.lora, targets = cfg.lora_targets,
    dropout = cfg.lora_dropout }
  lora.inject(d.unet, o)
  params = lora.parameters(d.unet)
  if trained.text_encoder then
    o.targets = { "q_proj", "k_proj", "v_proj", "out_proj" }
    lora.inject(d.text_encoder, o)
    for _, p in ipairs(lora.parameters(d.text_encoder)) do params[#params + 1] = p end
  end
else
  if #cfg.trainable > 0 then -- the matching modules' parameters train, the rest of the UNet stays
    d.unet:requires_grad_(false)
    local found = 0
    for name, m in d.unet:named_modules() do
      for _, t in ipairs(cfg.trainable) do
        if name == t or name:sub(-(#t + 1)) == "." .. t then m:requires_grad_(true); found = found + 1; break end
      end
    end
    if found == 0 then usage("--trainable: no UNet module matches " .. table.concat(cfg.trainable, ",")) end
  end
  params = {}
  for _, p in ipairs(d.unet:parameters()) do if p.requires_grad then params[#params + 1] = p end end
  if trained.text_encoder then for _, p in ipairs(d.text_encoder:parameters()) do params[#params + 1] = p end end
end
for _, p in ipairs(params) do assert(p.dtype == "f32", "trained weights must be f32") end
if cfg.gradient_checkpointing then d.unet:enable_gradient_checkpointing() end
local n_trained = 0
for _, p in ipairs(params) do n_trained = n_trained + p:numel() end
print(string.format("%s model, %d parameters trained (%s), predicting %s", d.latent and "latent" or "pixel-space",
  n_trained, cfg.lora > 0 and ("LoRA rank " .. cfg.lora) or #cfg.trainable > 0 and ("UNet: " .. table.concat(cfg.trainable, ","))
  or "full UNet", prediction))

-- mixed precision: one setting; fp16 scales the loss, bf16 has f32's range and needs no scaling
local amp = ({ fp16 = "f16", bf16 = "bf16" })[cfg.mixed_precision]
local function autocast(fn) if amp then return T.autocast(amp, fn) end return fn() end
local scaler = optim.GradScaler { enabled = amp == "f16" }

---------------------------------------------------------------------------------------------
-- the data
---------------------------------------------------------------------------------------------
local set = finetune_data.new { data = cfg.data, resolution = resolution, center_crop = cfg.center_crop,
  random_flip = cfg.random_flip, buckets = cfg.buckets, seed = cfg.seed,
  bucket_step = cfg.bucket_step > 0 and cfg.bucket_step or 8 * d.factor }
if not cfg.no_cache then
  autocast(function() set:build_cache(d, { dir = cfg.cache_dir ~= "" and cfg.cache_dir or nil, log = print }) end)
end
-- prior preservation: the model's own images of what it knew, drawn once when missing
local prior
if cfg.prior_data ~= "" then
  local f = io.open(cfg.prior_data .. "/metadata.jsonl")
  if f then f:close()
  else
    if cfg.prior_prompts == "" then usage("--prior_data " .. cfg.prior_data .. " holds no images; give --prior_prompts FILE to draw them") end
    local prompts = {}
    for line in assert(io.open(cfg.prior_prompts)):lines() do
      if line:find("%S") then prompts[#prompts + 1] = line end
    end
    local n, chunk = cfg.prior_images > 0 and cfg.prior_images or #set, 50
    print(string.format("drawing %d prior images into %s", n, cfg.prior_data))
    d.unet:eval()
    local images = {}
    autocast(function()
      for i = 1, n, chunk do
        local list = {}
        for k = i, math.min(i + chunk - 1, n) do list[#list + 1] = prompts[(k - 1) % #prompts + 1] end
        images[#images + 1] = d:sample { prompts = list, steps = cfg.validation_steps, guidance_scale = cfg.guidance,
          sampler = validation_sampler(), seed = cfg.seed + 100000 + i, height = resolution, width = resolution }
      end
    end)
    images = T.cat(images, 1)
    finetune_data.write_folder(cfg.prior_data, n, function(i) return images[i], prompts[(i - 1) % #prompts + 1] end)
  end
  prior = finetune_data.new { data = cfg.prior_data, resolution = resolution, center_crop = cfg.center_crop,
    random_flip = cfg.random_flip, buckets = cfg.buckets, seed = cfg.seed + 1,
    bucket_step = cfg.bucket_step > 0 and cfg.bucket_step or 8 * d.factor }
  if not cfg.no_cache then
    autocast(function() prior:build_cache(d, { dir = cfg.cache_dir ~= "" and cfg.cache_dir or nil, log = print }) end)
  end
end
local batches_per_epoch = #set:batches(cfg.batch, 0)
local steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulation)
local total = cfg.max_steps > 0 and cfg.max_steps or cfg.epochs * steps_per_epoch
local lr = cfg.scale_lr and cfg.lr * cfg.batch * cfg.accumulation or cfg.lr
print(string.format("%d images, %d batches of %d per epoch, %d optimizer steps", #set, batches_per_epoch, cfg.batch, total))

---------------------------------------------------------------------------------------------
-- optimizer, schedule, EMA
---------------------------------------------------------------------------------------------
local opt = optim.AdamW(params, { lr = lr, betas = { cfg.adam_beta1, cfg.adam_beta2 }, eps = cfg.adam_eps,
  weight_decay = cfg.weight_decay })
local SCHEDULE = {
  constant = function() return lr_sched.constant { lr = lr } end,
  constant_with_warmup = function() return lr_sched.constant { lr = lr, warmup = cfg.warmup } end,
  linear = function() return lr_sched.linear { lr = lr, steps = total, warmup = cfg.warmup } end,
  cosine = function() return lr_sched.cosine { lr = lr, steps = total, warmup = cfg.warmup } end,
  cosine_with_restarts = function() return lr_sched.cosine_restarts { lr = lr, steps = total, warmup = cfg.warmup,
    cycles = cfg.lr_cycles } end,
  polynomial = function() return lr_sched.polynomial { lr = lr, steps = total, warmup = cfg.warmup, power = cfg.lr_power } end,
}
local schedule = SCHEDULE[cfg.lr_scheduler]()
local ema = cfg.ema and optim.EMA(params, { decay = cfg.ema_decay, device = cfg.ema_offload and "cpu" or nil }) or nil

-- what a checkpoint holds of the model: the trained tensors only (LoRA: the adapters)
local state = {}
for _, part in ipairs({ "unet", "text_encoder" }) do
  if trained[part] then
    for name, p in trained[part]:named_parameters() do
      if p.requires_grad then state[part .. "." .. name] = p end
    end
  end
end
local ckdir = cfg.checkpoint_dir ~= "" and cfg.checkpoint_dir or r:path("checkpoints")
local start = 0
if cfg.resume ~= "" then
  local dir = cfg.resume
  if dir == "latest" then
    dir = cfg.checkpoint_dir ~= "" and ckpt.latest(cfg.checkpoint_dir) or nil
    if not dir then -- this experiment's newest run that has one
      local root = r.dir:match("^(.*)/[^/]+$")
      local names = T._sys.listdir(root) or {}
      table.sort(names, function(a, b) return a > b end)
      for _, name in ipairs(names) do
        dir = dir or ckpt.latest(root .. "/" .. name:gsub("/$", "") .. "/checkpoints")
      end
    end
    if not dir then usage("--resume latest: no checkpoint found") end
  end
  local saved = ckpt.load(dir, { model = state, optimizer = opt, ema = ema, scaler = scaler })
  start = saved.step
  print(string.format("resumed from %s at step %d", dir, start))
end

---------------------------------------------------------------------------------------------
-- one optimizer step: accumulation micro-batches, each loss scaled (fp16), then unscale,
-- clip, step (skipped when a gradient is not finite), update the scale
---------------------------------------------------------------------------------------------
-- the loss of one batch of a set
local function batch_loss(from, idx)
  local b = from:batch(idx, d, { caption_dropout = cfg.caption_dropout, device = dev,
    encode_text = not cfg.train_text_encoder })
  local x0 = b.x0
  local noise = T.randn_like(x0)
  if cfg.noise_offset > 0 then
    noise = noise + T.randn({ x0.shape[1], x0.shape[2], 1, 1 }, { device = dev }) * cfg.noise_offset
  end
  local ts = noise_sched:sample_timesteps(x0.shape[1], { power = cfg.timestep_power }):to(dev)
  local noisy_with = cfg.input_perturbation > 0 and noise + T.randn_like(noise) * cfg.input_perturbation or noise
  local xt = noise_sched:add_noise(x0, noisy_with, ts)
  local target = prediction == "epsilon" and noise or prediction == "sample" and x0 or noise_sched:get_velocity(x0, noise, ts)
  local pred = autocast(function()
    local states, added = b.states, b.added
    if cfg.train_text_encoder then states, added = d:encode_prompts(b.captions) end
    return d:denoise(xt, ts, states, added)
  end)
  local err = F.mse_loss(pred:to("f32"), target, { reduction = "none" }):mean({ 2, 3, 4 })
  local loss = cfg.snr_gamma > 0 and (err * noise_sched:min_snr_weights(ts, cfg.snr_gamma):to(dev)):mean() or err:mean()
  return loss, x0.shape[1]
end

-- micro-batch k (0, 1, ...) of the run takes the prior set's k-th batch: its epochs run on
-- their own, and a resumed run knows where it was from the step alone
local prior_per_epoch = prior and #prior:batches(cfg.batch, 0)
local function prior_batch(k)
  return prior:batches(cfg.batch, k // prior_per_epoch)[k % prior_per_epoch + 1]
end

local function micro_step(idx, k)
  local loss, n = batch_loss(set, idx)
  if prior then
    local prior_loss, m = batch_loss(prior, prior_batch(k))
    loss, n = loss + prior_loss * cfg.prior_loss_weight, n + m
  end
  scaler:scale(loss / cfg.accumulation):backward()
  return loss:item(), n
end

local function train_step(step, micro_batches)
  local loss, images = 0, 0
  for j, idx in ipairs(micro_batches) do
    local l, n = micro_step(idx, step * cfg.accumulation + j - 1)
    loss, images = loss + l / #micro_batches, images + n
  end
  local norm = scaler:unscale_(opt)
  if cfg.max_grad_norm > 0 then norm = optim.clip_grad_norm(params, cfg.max_grad_norm)
  elseif not norm then norm = optim.clip_grad_norm(params, math.huge) end
  opt:set_lr(schedule(step))
  local stepped = scaler:step(opt)
  local skipped = scaler:update()
  opt:zero_grad()
  if ema and stepped then ema:update() end
  return { loss = loss, grad_norm = norm, images = images, skipped = skipped }
end

---------------------------------------------------------------------------------------------
-- validation: images of the validation prompts (EMA weights when kept), to TensorBoard and a
-- PNG grid; with --log_attention, each prompt's cross-attention per token
---------------------------------------------------------------------------------------------
local writer = r:writer()
local function validate(step)
  local prompts = cfg.validation_prompts
  if #prompts == 0 then return end
  if ema then ema:store(params); ema:copy_to(params) end
  for _, m in ipairs(d:modules()) do m:eval() end
  local rec = cfg.log_attention and attention_maps.record(d.unet, { batch = #prompts, height = resolution, width = resolution })
  local images = autocast(function()
    return d:sample { prompts = prompts, steps = cfg.validation_steps, guidance_scale = cfg.guidance,
      guidance_interval = #cfg.guidance_interval == 2 and cfg.guidance_interval or nil, sampler = validation_sampler(),
      seed = cfg.seed, height = resolution, width = resolution }
  end)
  d.unet:train()
  if cfg.train_text_encoder then d.text_encoder:train() end
  if ema then ema:restore() end
  writer:add_images("validation", (images + 1) * 0.5, step)
  image.write(r:path("validation", string.format("step-%06d.png", step)), image.grid(images, math.min(#prompts, 8)),
    { range = { -1, 1 } })
  if rec then
    local tokens = {}
    for i, p in ipairs(prompts) do tokens[i] = attention_maps.tokens(d.tokenizer, p) end
    local fig = attention_maps.figure(images, rec:result(), tokens, { scale = math.max(1, 128 // resolution) })
    rec:close()
    writer:add_image("attention", fig, step)
    image.write(r:path("validation", string.format("attention-%06d.png", step)), fig)
  end
end

-- the seed's evaluation: eval_images images of the eval prompts (EMA weights when kept), saved
-- as PNGs under eval/<when>/ and measured by FID against the held-out real images
local fids = {}
local function evaluate(when, step)
  if #eval_prompts == 0 then return end
  if ema then ema:store(params); ema:copy_to(params) end
  for _, m in ipairs(d:modules()) do m:eval() end
  local prompts, chunks = {}, {}
  for i = 1, cfg.eval_images do prompts[i] = eval_prompts[(i - 1) % #eval_prompts + 1] end
  autocast(function()
    for i = 1, #prompts, 50 do
      chunks[#chunks + 1] = d:sample { prompts = table.move(prompts, i, math.min(i + 49, #prompts), 1, {}),
        steps = cfg.validation_steps, guidance_scale = cfg.guidance, sampler = validation_sampler(),
        seed = cfg.seed + 200000 + i, height = resolution, width = resolution }
    end
  end)
  d.unet:train()
  if cfg.train_text_encoder then d.text_encoder:train() end
  if ema then ema:restore() end
  local images = T.cat(chunks, 1)
  for i = 1, images.shape[1] do
    image.write(r:path("eval", when, string.format("%04d.png", i)), images[i], { range = { -1, 1 } })
  end
  fids[when] = require("tocha.eval").fid(cfg.eval_real, images, { model = cfg.eval_model,
    weights = cfg.inception_weights ~= "" and cfg.inception_weights or nil,
    range = { -1, 1 }, device = dev, allow_singular = true })
  writer:add_scalar("eval/fid", fids[when], step)
  print(string.format("FID %s fine-tuning: %.3f (%d images of %d prompts against %s)", when, fids[when], #prompts,
    #eval_prompts, cfg.eval_real))
end

---------------------------------------------------------------------------------------------
-- the loop
---------------------------------------------------------------------------------------------
for _, m in ipairs(d:modules()) do m:eval() end
d.unet:train()
if cfg.train_text_encoder then d.text_encoder:train() end
if start == 0 then validate(0); evaluate("before", 0) end
local progress = log.progress { total = total, smooth = { "loss" } }
local every_log = log.every(cfg.log_every)
local every_val = cfg.validation_every > 0 and log.every(cfg.validation_every) or function() return false end
local t0, images_since, t_since = T.clock(), 0, T.clock()
local step = start
local epoch = start // steps_per_epoch
while step < total do
  local list = set:batches(cfg.batch, epoch)
  local first = (step - epoch * steps_per_epoch) * cfg.accumulation + 1 -- a resumed epoch skips its done batches
  for k = first, #list, cfg.accumulation do
    if step >= total then break end
    local s = train_step(step, table.move(list, k, math.min(k + cfg.accumulation - 1, #list), 1, {}))
    step = step + 1
    images_since = images_since + s.images
    progress:update(step, { loss = s.loss, lr = schedule(step - 1) })
    if every_log(step) or step == total then
      local now = T.clock()
      writer:add_scalar("train/loss", s.loss, step)
      writer:add_scalar("train/lr", schedule(step - 1), step)
      writer:add_scalar("train/grad_norm", s.grad_norm, step)
      writer:add_scalar("train/images_per_second", images_since / math.max(now - t_since, 1e-9), step)
      writer:add_scalar("train/loss_scale", scaler:get_scale(), step)
      writer:add_scalar("train/skipped_steps", scaler.skipped_steps, step)
      images_since, t_since = 0, now
    end
    if s.skipped then progress:print(string.format("step %d skipped: non-finite gradients (loss scale now %g)", step, scaler:get_scale())) end
    if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 then
      ckpt.save(ckdir, { model = state, optimizer = opt, ema = ema, scaler = scaler, step = step,
        keep = cfg.checkpoints_total_limit > 0 and cfg.checkpoints_total_limit or nil })
    end
    if every_val(step) and step < total then validate(step) end
  end
  epoch = epoch + 1
end
progress:close()
local train_secs = T.clock() - t0
validate(total)
evaluate("after", total)

---------------------------------------------------------------------------------------------
-- the result: a diffusers folder (full fine-tune), or the LoRA weights diffusers'
-- load_lora_weights reads
---------------------------------------------------------------------------------------------
if ema then ema:copy_to(params) end
local out = cfg.out ~= "" and run.mkdirs(cfg.out) or r:path("model")
if cfg.lora > 0 then
  print("LoRA weights: " .. lora.save(out, { unet = d.unet, text_encoder = trained.text_encoder }))
else
  models.save_pretrained(out, { unet = d.unet, vae = d.vae, text_encoder = d.text_encoder, tokenizer = d.tokenizer,
    scheduler = parts.scheduler, extras = parts.extras })
  print("model: " .. out)
end
print(string.format("training: %d steps in %.0f s (%d skipped for non-finite gradients)", total - start, train_secs,
  scaler.skipped_steps))
r:finish { ["train/seconds"] = train_secs, ["train/skipped_steps"] = scaler.skipped_steps, ["eval/fid_before"] = fids.before,
  ["eval/fid_after"] = fids.after }
