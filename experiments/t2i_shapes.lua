-- experiments/t2i_shapes.lua: the default experiment. A text encoder and a UNet learn
-- together, from nothing, to draw captioned shapes ("a small red circle on the left") on
-- two CPU cores, then draw held-out prompts, which tocha.eval.shapes grades.
--   tocha experiments/t2i_shapes.lua [--steps 1950] [--lr 1.5e-3] [--sampler ddim] ... (--help)
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local lr_sched = require "tocha.lr"
local ckpt = require "tocha.checkpoint"
local D = require "tocha.diffusion"
local text = require "tocha.text"
local models = require "tocha.models"
local shapes = require "tocha.data.shapes"
local eval = require "tocha.eval.shapes"
local image = require "tocha.image"
local log = require "tocha.log"
local run = require "tocha.run"

local defaults = {
  steps = { 1950, help = "optimizer steps (under 10 minutes on two idle cores)" },
  batch = { 24, help = "images per step (24 x 1950 steps trains as long as 32 x 1500, and more steps pay)" },
  lr = { 1.5e-3, help = "peak learning rate (AdamW)" },
  text_lr = { 0.02, help = "the text encoder's learning rate, as a fraction of --lr (at 1 it forgets the words the UNet cannot use yet, positions first)" },
  betas = { { 0.9, 0.99 }, help = "AdamW's betas (gradient and squared-gradient averaging; 0.99 adapts faster than 0.999 in a short run)" },
  warmup = { 100, help = "linear warmup steps before the cosine decay" },
  weight_decay = { 1e-2, help = "AdamW decoupled weight decay" },
  clip = { 1.0, help = "gradient clipping: max global norm (0: off)" },
  ema = { true, help = "keep an exponential moving average of the weights for sampling" },
  ema_decay = { 0.995, help = "EMA decay (with diffusers' warmup of the decay)" },
  caption_dropout = { 0.1, help = "fraction of captions replaced by \"\" (for classifier-free guidance)" },
  prediction = { "v_prediction", help = "what the UNet predicts", choices = { "epsilon", "v_prediction", "sample" } },
  min_snr = { 0.0, help = "Min-SNR-gamma loss weighting (0: off; it weighs down the noisiest steps, where the caption matters most)" },
  t_power = { 0.5, help = "training timesteps t = T * u^t_power, u uniform: 1 is uniform, below 1 favours the noisy steps (where the shape is decided)" },
  object_weight = { 4.0, help = "loss weight of the pixels in each object's box (grown by a pixel) against the background's, each image's weights averaging 1 (1: plain MSE)" },
  pairs = { 0.15, help = "fraction of training images with two objects (the rest: single objects, which the final grading draws)" },
  pooled_text = { true, help = "also add the pooled caption embedding to the UNet's time embedding" },
  coords = { true, help = "give the UNet two more input channels holding each pixel's x and y" },
  attn16 = { false, help = "also attend to the caption at 16x16 (default: 8x8 and the middle only)" },
  temb = { 512, help = "width of the UNet's time embedding, which also carries the pooled caption to every ResNet (the preset's 64 is too narrow for both)" },
  scale_shift = { true, help = "the time (and pooled caption) embedding scales and shifts each ResNet's features" },
  size = { 32, help = "image size in pixels" },
  seed = { 0, help = "seed for the weights, the data order and the sampling noise" },
  sampler = { "ddim", help = "sampler for the final samples",
              choices = { "ddim", "ddpm", "euler", "euler_ancestral", "heun", "dpmpp2m", "unipc" } },
  sample_steps = { 50, help = "sampler steps" },
  guidance = { 7.5, help = "classifier-free guidance scale" },
  guidance_interval = { { 200, 800 }, help = "guide only the sampler steps with lo <= t <= hi (timesteps of 1000; the rest run the conditional pass alone: 7.5 at every step draws stray objects and costs shape)" },
  guidance_rescale = { 0.0, help = "rescale the guided prediction toward the conditional one's spread (0: off, 0.7 in diffusers' advice)" },
  eval_samples = { 200, help = "held-out single-object prompts drawn and graded at the end" },
  eval_split = { "test", help = "which prompts the final grading draws: held out of training (test) or seen in it (train)", choices = { "test", "train" } },
  checkpoint_every = { 500, help = "steps between checkpoints (0: none)" },
  resume = { false, help = "continue from the newest checkpoint in --checkpoint_dir" },
  checkpoint_dir = { "", help = "where checkpoints go (default: the run directory)" },
  log_every = { 25, help = "steps between logged scalars" },
  threads = { 2, help = "CPU threads" },
  device = { "cpu", help = "where the model trains and samples", choices = { "cpu", "cuda" } },
  out = { "", help = "where samples.png goes (default: the run directory)" },
}

local r = run { name = "t2i_shapes", config = defaults }
local cfg = r.config
if cfg.device == "cuda" and not T.cuda.is_available() then error("--device cuda: no GPU is available here") end
local dev = cfg.device
T.set_num_threads(cfg.threads) -- (run{} has seeded the RNG with --seed)

-- the tokenizer learns its vocabulary from every caption the data can produce
-- the training images: single objects, and pairs for a `pairs` fraction of each batch
local single_ds = shapes { size = cfg.size, seed = cfg.seed + 1, objects = 1 }
local pair_ds = shapes { size = cfg.size, seed = cfg.seed, objects = 2 }
local corpus = shapes.prompts { split = "all", objects = { 1, 2 } }
local tok = text.train_bpe(corpus, 700, { max_length = 32 })
local text_encoder = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = tok.vocab_size + 1 })
local width = models.presets.tiny_text.hidden_size
local unet = models.UNet2DConditionModel(models.presets.tiny_unet, { sample_size = cfg.size,
  in_channels = cfg.coords and 5 or 3, time_embedding_dim = cfg.temb,
  resnet_time_scale_shift = cfg.scale_shift and "scale_shift" or "default",
  down_block_types = cfg.attn16 and { "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D" } or nil,
  up_block_types = cfg.attn16 and { "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D" } or nil,
  class_embed_type = cfg.pooled_text and "projection" or nil,
  projection_class_embeddings_input_dim = cfg.pooled_text and width or nil })

-- the text as the UNet reads it: the token states for cross-attention and, with
-- pooled_text, the pooled state as extra conditioning (the UNet's class_labels)
local function encode_text(ids)
  local states, pooled = text_encoder(ids:to(dev))
  return states, cfg.pooled_text and { class_labels = pooled } or nil
end

-- with coords, each pixel's x and y in [-1, 1] as two more channels: convolutions alone
-- barely know where in the image they are, and captions say where things go
local xy = T.stack({ T.linspace(-1, 1, cfg.size):reshape(1, cfg.size):expand(cfg.size, cfg.size),
                     T.linspace(-1, 1, cfg.size):reshape(cfg.size, 1):expand(cfg.size, cfg.size) }, 1):to(dev)

local function denoise(x, ts, states, added)
  if cfg.coords then x = T.cat({ x, xy:unsqueeze(1):expand(x.shape[1], 2, cfg.size, cfg.size) }, 2) end
  return unet(x, ts, states, added)
end
local model = nn.ModuleDict { text_encoder = text_encoder, unet = unet } -- one state dict for both
model:to(dev)
local params = model:parameters()

-- four parameter groups: the UNet's and the text encoder's (whose learning rate is text_lr
-- times the UNet's), each split into weights that decay and biases, norms and embeddings that do not
local function no_decay(name) return name:find("bias") or name:find("norm") or name:find("embedding") end
local groups = {}
for _, part in ipairs({ { "unet", 1 }, { "text_encoder", cfg.text_lr } }) do
  local decay, plain = {}, {}
  for name, p in model[part[1]]:named_parameters() do
    if no_decay(name) then plain[#plain + 1] = p else decay[#decay + 1] = p end
  end
  groups[#groups + 1] = { params = decay, lr_scale = part[2] }
  groups[#groups + 1] = { params = plain, weight_decay = 0, lr_scale = part[2] }
end
local opt = optim.AdamW(groups, { lr = cfg.lr, betas = cfg.betas, weight_decay = cfg.weight_decay })
local schedule = lr_sched.cosine { lr = cfg.lr, steps = cfg.steps, warmup = cfg.warmup }
local ema = cfg.ema and optim.EMA(params, { decay = cfg.ema_decay }) or nil
-- the noise schedule: one config for training (DDPM's forward process) and every sampler
local NOISE = { beta_schedule = "squaredcos_cap_v2", prediction_type = cfg.prediction }
local noise_sched = D.DDPM(NOISE)

print(string.format("text encoder %d parameters, unet %d, vocabulary %d", text_encoder:num_parameters(),
  unet:num_parameters(), tok.vocab_size))

-- resume: model, optimizer, EMA, RNG and the step all come back as they were saved
local ckdir = cfg.checkpoint_dir ~= "" and cfg.checkpoint_dir or r:path("checkpoints")
local start = 0
if cfg.resume then
  local dir = ckpt.latest(ckdir)
  if not dir then error("--resume: no checkpoint in " .. ckdir) end
  local state = ckpt.load(dir, { model = model, optimizer = opt, ema = ema })
  start = state.step
  print(string.format("resumed from %s at step %d", dir, start))
end

-- one training step on a batch of fresh scenes; returns the loss
local function train_step(step)
  local n_pairs = math.floor(cfg.batch * cfg.pairs + 0.5)
  local first = step * cfg.batch + 1 -- the data position is the step: resuming needs nothing else
  local images, captions, objects = {}, {}, {}
  for _, part in ipairs({ { single_ds, cfg.batch - n_pairs }, { pair_ds, n_pairs } }) do
    if part[2] > 0 then
      local b = part[1]:batch(first, part[2])
      images[#images + 1] = b.image
      table.move(b.caption, 1, #b.caption, #captions + 1, captions)
      table.move(b.objects, 1, #b.objects, #objects + 1, objects)
    end
  end
  local x0 = (#images == 1 and images[1] or T.cat(images, 1)):to(dev)
  local drop = T.rand({ cfg.batch }):tolist()
  for i = 1, cfg.batch do if drop[i] < cfg.caption_dropout then captions[i] = "" end end
  local ids = tok:encode(captions).input_ids
  local noise = T.randn_like(x0)
  local ts = noise_sched:sample_timesteps(cfg.batch, { power = cfg.t_power })
  local xt = noise_sched:add_noise(x0, noise, ts)
  local target = cfg.prediction == "epsilon" and noise or cfg.prediction == "sample" and x0
    or noise_sched:get_velocity(x0, noise, ts)
  local pred = denoise(xt, ts:to(dev), encode_text(ids))
  local err = F.mse_loss(pred, target, { reduction = "none" })
  if cfg.object_weight ~= 1 then
    err = err * shapes.object_weights(objects, { size = cfg.size, weight = cfg.object_weight }):to(dev)
  end
  local per_sample = err:mean({ 2, 3, 4 })
  local loss
  if cfg.min_snr > 0 then loss = (per_sample * noise_sched:min_snr_weights(ts, cfg.min_snr):to(dev)):mean()
  else loss = per_sample:mean() end
  loss:backward()
  if cfg.clip > 0 then optim.clip_grad_norm(params, cfg.clip) end
  opt:set_lr(schedule(step)) -- times each group's lr_scale
  opt:step()
  opt:zero_grad()
  if ema then ema:update() end
  return loss
end

local writer = r:writer()
local progress = log.progress { total = cfg.steps, smooth = { "loss" } }
local every_log = log.every(cfg.log_every)
local t0 = T.clock()
local stopped -- the step at which the run was asked to stop (SIGTERM: a sweep pruning it)
for step = start, cfg.steps - 1 do
  local loss = train_step(step)
  local done = step + 1
  progress:update(done, { loss = loss, lr = schedule(step) })
  if every_log(done) then
    writer:add_scalar("train/loss", loss, done)
    writer:add_scalar("train/lr", schedule(step), done)
  end
  stopped = r:should_stop() and done or nil
  if cfg.checkpoint_every > 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps or stopped) then
    ckpt.save(ckdir, { model = model, optimizer = opt, ema = ema, step = done, keep = 2 })
  end
  if stopped then break end
end
progress:close()
local train_secs = T.clock() - t0
if stopped then -- no sampling; the checkpoint (if any) resumes it with --resume
  print(string.format("stopped at step %d when asked (SIGTERM)%s", stopped,
    cfg.checkpoint_every > 0 and "; checkpoint in " .. ckdir or ""))
  r:finish({ ["train/seconds"] = train_secs })
  return
end

-- sampling with the EMA weights
if ema then ema:store(); ema:copy_to(params) end
-- the samplers on the training schedule, each with its own options (DDIM: x0 unclipped)
local SAMPLERS = { ddim = { D.DDIM, clip_sample = false }, ddpm = { D.DDPM }, euler = { D.Euler },
  euler_ancestral = { D.EulerAncestral }, heun = { D.Heun }, dpmpp2m = { D.DPMSolverMultistep }, unipc = { D.UniPC } }
local function new_sampler()
  local kind, c = SAMPLERS[cfg.sampler], {}
  for k, v in pairs(NOISE) do c[k] = v end
  for k, v in pairs(kind) do if k ~= 1 then c[k] = v end end
  return kind[1](c)
end
local function draw(prompts, seed)
  local out = {}
  for i = 1, #prompts, 50 do
    local chunk = table.move(prompts, i, math.min(i + 49, #prompts), 1, {})
    out[#out + 1] = D.sample { model = denoise, text_encoder = encode_text, tokenizer = tok,
      scheduler = new_sampler(), prompts = chunk, guidance_scale = cfg.guidance,
      guidance_rescale = cfg.guidance_rescale, guidance_interval = cfg.guidance_interval,
      steps = cfg.sample_steps, seed = seed + i, height = cfg.size, width = cfg.size, channels = 3 }
  end
  return T.cat(out, 1):clamp(-1, 1):to("cpu")
end

model:eval()
local out_dir = run.mkdirs(cfg.out ~= "" and cfg.out or r.dir)
-- the trained model as a diffusers folder, its conditioning in tocha.json: models.load,
-- models.Denoiser and experiments/finetune_sd.lua take it (or this run's directory)
local ddim = { clip_sample = false }
for k, v in pairs(NOISE) do ddim[k] = v end
models.save_pretrained(out_dir .. "/model", { unet = unet, text_encoder = text_encoder, tokenizer = tok,
  scheduler = D.DDIM(ddim), extras = { coords = cfg.coords, pooled_text = cfg.pooled_text,
  guidance_interval = cfg.guidance_interval } })
local grid_prompts = shapes.prompts { split = "test", objects = { 1, 2 }, n = 16, seed = cfg.seed }
local grid = draw(grid_prompts, cfg.seed)
image.save(out_dir .. "/samples.png", image.grid(grid, 4))
local f = assert(io.open(out_dir .. "/samples.txt", "w"))
for i, p in ipairs(grid_prompts) do f:write(string.format("%2d  %s\n", i, p)) end
f:close()
writer:add_images("samples", (grid + 1) * 0.5, cfg.steps)

local eval_prompts = shapes.prompts { split = cfg.eval_split, objects = { 1 }, n = cfg.eval_samples, seed = cfg.seed + 1 }
local graded = draw(eval_prompts, cfg.seed + 1000)
local result = eval.evaluate(graded, eval_prompts)
image.save(out_dir .. "/graded.png", image.grid(graded, 20))
print(string.format("\n%s single-object prompts (%d samples, %s %d steps, guidance %.1f):",
  cfg.eval_split == "test" and "held-out" or "training", cfg.eval_samples, cfg.sampler, cfg.sample_steps, cfg.guidance))
print(eval.format(result))
print("\nshapes asked for (rows) and read (columns):\n" .. eval.format_confusion(result))
local metrics = { ["eval/color"] = result.color, ["eval/shape"] = result.shape, ["eval/position"] = result.position,
                  ["eval/all"] = result.all, ["train/seconds"] = train_secs }
-- shape read right, by the size the prompt asked for (small objects, 8 pixels across at 32, are the hard ones)
for _, size in ipairs(shapes.SIZE_NAMES) do
  local t = result.by_size[size]
  if t then
    print(string.format("shape, %s objects: %.1f%% of %d", size, 100 * t.shape, t.n))
    metrics["eval/shape_" .. size] = t.shape
  end
end
print(string.format("training: %d steps in %.0f s; samples: %s/samples.png (the graded ones: graded.png)",
  cfg.steps - start, train_secs, out_dir))
r:finish(metrics)
