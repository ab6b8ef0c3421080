-- experiments/t2i_shapes.lua: the default experiment. A text encoder and a UNet learn
-- together, from nothing, to draw captioned shapes ("a small red circle on the left") on
-- two CPU cores, then draw held-out prompts, which tocha.eval.shapes grades.
--   tocha experiments/t2i_shapes.lua [--steps 1950] [--lr 1.5e-3] [--sampler ddim] ... (--help)
--   ... --resume [RUN]: continue a run; --resume --sample_only --sampler euler: draw again from it
-- A checkpoint holds the whole model (models.TextToImage): `tocha sample RUN --prompt "..."`.
local T = require "tocha"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local lr_sched = require "tocha.lr"
local D = require "tocha.diffusion"
local text = require "tocha.text"
local models = require "tocha.models"
local shapes = require "tocha.data.shapes"
local eval = require "tocha.eval.shapes"
local shapes_fid = require "tocha.eval.shapes_fid"
local image = require "tocha.image"
local log = require "tocha.log"
local run = require "tocha.run"

local defaults = {
  steps = { 1950, min = 1, help = "optimizer steps (under 10 minutes on two idle cores)" },
  batch = { 24, min = 1, help = "images per step (24 x 1950 steps trains as long as 32 x 1500, and more steps pay)" },
  lr = { 1.5e-3, min = 0, help = "peak learning rate (AdamW)" },
  text_lr = { 0.02, min = 0, help = "the text encoder's learning rate, as a fraction of --lr (at 1 it forgets the words the UNet cannot use yet, positions first)" },
  betas = { { 0.9, 0.99 }, length = 2, min = 0, below = 1, help = "AdamW's betas (gradient and squared-gradient averaging; 0.99 adapts faster than 0.999 in a short run)" },
  warmup = { 100, min = 0, help = "linear warmup steps before the cosine decay" },
  weight_decay = { 1e-2, min = 0, help = "AdamW decoupled weight decay" },
  clip = { 1.0, min = 0, help = "gradient clipping: max global norm (0: off)" },
  ema = { true, help = "keep an exponential moving average of the weights for sampling" },
  ema_decay = { 0.995, min = 0, max = 1, help = "EMA decay (with diffusers' warmup of the decay)" },
  caption_dropout = { 0.1, min = 0, max = 1, help = "fraction of captions replaced by \"\" (for classifier-free guidance)" },
  prediction = { "v_prediction", help = "what the UNet predicts", choices = { "epsilon", "v_prediction", "sample" } },
  min_snr = { 0.0, min = 0, help = "Min-SNR-gamma loss weighting (0: off; it weighs down the noisiest steps, where the caption matters most)" },
  t_power = { 0.5, above = 0, help = "training timesteps t = T * u^t_power, u uniform: 1 is uniform, below 1 favours the noisy steps (where the shape is decided)" },
  object_weight = { 4.0, above = 0, help = "loss weight of the pixels in each object's box (grown by a pixel) against the background's, each image's weights averaging 1 (1: plain MSE)" },
  pairs = { 0.15, min = 0, max = 1, help = "fraction of training images with two objects (the rest: single objects, which the final grading draws)" },
  pooled_text = { true, help = "also add the pooled caption embedding to the UNet's time embedding" },
  coords = { true, help = "give the UNet two more input channels holding each pixel's x and y" },
  attn16 = { false, help = "also attend to the caption at 16x16 (default: 8x8 and the middle only)" },
  temb = { 512, min = 1, help = "width of the UNet's time embedding, which also carries the pooled caption to every ResNet (the preset's 64 is too narrow for both)" },
  scale_shift = { true, help = "the time (and pooled caption) embedding scales and shifts each ResNet's features" },
  size = { 32, min = 8, help = "image size in pixels" },
  seed = { 0, help = "seed for the weights, the data order and the sampling noise" },
  sampler = { "ddim", training = false, check = D.samplers.check,
              help = "sampler for the final samples: " .. table.concat(D.samplers.names(), ", ") .. ", or a Lua file returning a sampler class" },
  sample_steps = { 50, min = 1, max = 1000, training = false, help = "sampler steps" },
  guidance = { 7.5, min = 0, training = false, help = "classifier-free guidance scale" },
  guidance_interval = { { 200, 800 }, length = 2, min = 0, training = false, help = "guide only the sampler steps with lo <= t <= hi (timesteps of 1000; the rest run the conditional pass alone: 7.5 at every step draws stray objects and costs shape)" },
  guidance_rescale = { 0.0, min = 0, max = 1, training = false, help = "rescale the guided prediction toward the conditional one's spread (0: off, 0.7 in diffusers' advice)" },
  eval_samples = { 200, min = 0, training = false, help = "held-out single-object prompts drawn and graded at the end and every --eval_every steps (0: none); over 64, also measured by the shapes FID" },
  eval_split = { "test", training = false, help = "which prompts the grading draws: held out of training (test) or seen in it (train)", choices = { "test", "train" } },
  eval_every = { 0, min = 0, training = false, help = "steps between evaluations during training: the --eval_samples prompts drawn with the EMA weights, graded and measured, logged to TensorBoard as eval/* (0: only at the end)" },
  inception_weights = { "", training = false, help = "also measure Inception FID (pytorch-fid's preprocessing) against real scenes with these converted weights (docs/eval.md)" },
  checkpoint_every = { 500, min = 0, training = false, help = "steps between checkpoints in the run's checkpoints/ (0: none)" },
  sample_only = { false, training = false, help = "with --resume: no training, only draw and grade (with --sampler, --sample_steps, ...)" },
  grid = { 4, min = 1, training = false, help = "samples.png shows grid x grid held-out prompts" },
  grid_scale = { 1, min = 1, training = false, help = "samples.png's pixels per image pixel" },
  log_every = { 25, min = 1, training = false, help = "steps between logged scalars" },
  threads = { 2, min = 1, training = false, help = "CPU threads" },
  device = { "cpu", training = false, help = "where the model trains and samples", choices = { "cpu", "cuda" } },
  out = { "", training = false, help = "where samples.png goes (default: the run directory; with --sample_only its samples/<sampler>-<steps>)" },
}

local function check(c, control)
  if c.sample_only and control.resume == "" then return "--sample_only draws from a trained model: give --resume (or --resume RUN)" end
  if c.eval_every > 0 and c.eval_samples == 0 then return "--eval_every evaluates --eval_samples prompts: give more than 0" end
end
local r = run { name = "t2i_shapes", config = defaults, resume = true, check = check }
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

-- the noise schedule: one config for training (DDPM's forward process) and every sampler
local NOISE = { beta_schedule = "squaredcos_cap_v2", prediction_type = cfg.prediction }
local noise_sched = D.DDPM(NOISE)

-- the whole model, as checkpoints keep it: with pooled_text the UNet also reads the pooled
-- caption (its class_labels), with coords each pixel's x and y as two more channels
-- (convolutions alone barely know where in the image they are, and captions say where things
-- go); and how it samples unless told otherwise (DDIM with x0 unclipped)
local model = models.TextToImage { text_encoder = text_encoder, unet = unet, tokenizer = tok, noise = NOISE,
  coords = cfg.coords, pooled_text = cfg.pooled_text,
  sampling = { sampler = cfg.sampler, options = { ddim = { clip_sample = false } }, steps = cfg.sample_steps,
    guidance_scale = cfg.guidance, guidance_interval = cfg.guidance_interval, guidance_rescale = cfg.guidance_rescale } }
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

print(string.format("text encoder %d parameters, unet %d, vocabulary %d", text_encoder:num_parameters(),
  unet:num_parameters(), tok.vocab_size))

-- resume: model, optimizer, EMA, RNG and the step all come back as they were saved
local state = r:load_checkpoint { model = model, optimizer = opt, ema = ema }
local start = state and state.step or 0
if state then print(string.format("resumed from %s at step %d", state.dir, start)) end

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
  local pred = model(xt, ts:to(dev), model:encode_text(ids))
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

-- (the first 50 prompts draw with seed + 1, the next with seed + 51, ...: the demo's seeds)
local function draw(prompts, seed) return model:sample { prompts = prompts, seed = seed + 1 } end

-- the grading, at the end and every --eval_every steps: held-out prompts drawn with the
-- weights in the model, their caption accuracy (tocha.eval.shapes), the shapes FID against
-- real scenes when there are more samples than its features, and Inception FID when given weights
local eval_prompts = cfg.eval_samples > 0 and
  shapes.prompts { split = cfg.eval_split, objects = { 1 }, n = cfg.eval_samples, seed = cfg.seed + 1 }
local fid_real = cfg.inception_weights ~= "" and cfg.eval_samples > 0 and shapes { size = cfg.size, seed = cfg.seed + 7,
  objects = 1, split = cfg.eval_split, format = "u8" }:batch(1, cfg.eval_samples).image or nil
local function grade()
  local images = draw(eval_prompts, cfg.seed + 1000)
  local result = eval.evaluate(images, eval_prompts)
  if #eval_prompts > shapes_fid.DIMS then result.shapes_fid = shapes_fid.fid(images, { range = { -1, 1 }, size = cfg.size }) end
  if fid_real then
    result.fid = require("tocha.eval").fid(fid_real, images, { weights = cfg.inception_weights, range = { -1, 1 },
      allow_singular = true })
  end
  return result, images
end
local EVAL_KEYS = { "shapes_fid", "fid", "color", "shape", "position", "all" }

local writer = r:writer()
local progress = log.progress { total = cfg.steps, smooth = { "loss" } }
local every_log = log.every(cfg.log_every)
local t0 = T.clock()
local stopped -- the step at which the run was asked to stop (SIGTERM: a sweep pruning it)
for step = start, cfg.sample_only and start - 1 or cfg.steps - 1 do
  local loss = train_step(step)
  local done = step + 1
  progress:update(done, { loss = loss, lr = schedule(step) })
  if every_log(done) then
    writer:add_scalar("train/loss", loss, done)
    writer:add_scalar("train/lr", schedule(step), done)
  end
  if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < cfg.steps then -- the last step's: below
    if ema then ema:store(); ema:copy_to(params) end
    local res = grade()
    if ema then ema:restore() end
    for _, k in ipairs(EVAL_KEYS) do if res[k] then writer:add_scalar("eval/" .. k, res[k], done) end end
    progress:print(string.format("step %d: shapes FID %s, shape %.1f%%, color %.1f%%, position %.1f%%", done,
      res.shapes_fid and string.format("%.3f", res.shapes_fid) or "-", 100 * res.shape, 100 * res.color,
      100 * res.position))
  end
  stopped = r:should_stop() and done or nil
  if cfg.checkpoint_every > 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps or stopped) then
    r:save_checkpoint { model = model, optimizer = opt, ema = ema, step = done, keep = 2,
      files = function(dir) model:save_config(dir) end } -- the configs and tokenizer: usable on its own
  end
  if stopped then break end
end
progress:close()
local train_secs = T.clock() - t0
if stopped then -- no sampling; the checkpoint (if any) resumes it with --resume
  print(string.format("stopped at step %d when asked (SIGTERM)%s", stopped,
    cfg.checkpoint_every > 0 and "; checkpoint in " .. r.checkpoint_dir or ""))
  r:finish({ ["train/seconds"] = train_secs })
  return
end

-- sampling with the EMA weights, and the sampling options of the command line
if ema then ema:store(); ema:copy_to(params) end

local grid_prompts = shapes.prompts { split = "test", objects = { 1, 2 }, n = cfg.grid * cfg.grid, seed = cfg.seed }
local grid = draw(grid_prompts, cfg.seed)
local again = cfg.sample_only and string.format("samples/%s-%dsteps", cfg.sampler:match("([^/]-)%.lua$") or cfg.sampler,
  cfg.sample_steps) -- drawing again from a trained run: beside its first samples
local out_dir = run.mkdirs(cfg.out ~= "" and cfg.out or again and r.dir .. "/" .. again or r.dir)
local shown = cfg.grid_scale > 1 and F.interpolate(grid, { scale_factor = cfg.grid_scale }) or grid
image.save(out_dir .. "/samples.png", image.grid(shown, cfg.grid))
-- the trained model as a diffusers folder too, its conditioning in tocha.json: diffusers-style
-- tools (models.load on the folder, models.Denoiser, experiments/finetune_sd.lua) take it
if not cfg.sample_only then
  local ddim = { clip_sample = false }
  for k, v in pairs(NOISE) do ddim[k] = v end
  models.save_pretrained(out_dir .. "/model", { unet = unet, text_encoder = text_encoder, tokenizer = tok,
    scheduler = D.DDIM(ddim), extras = { coords = cfg.coords, pooled_text = cfg.pooled_text,
    guidance_interval = cfg.guidance_interval } })
end
local f = assert(io.open(out_dir .. "/samples.txt", "w"))
for i, p in ipairs(grid_prompts) do f:write(string.format("%2d  %s\n", i, p)) end
f:close()
writer:add_images("samples", (grid + 1) * 0.5, cfg.steps)

local metrics = { ["train/seconds"] = train_secs }
if cfg.eval_samples > 0 then
  local result, graded = grade() -- its metrics are logged at the last step by r:finish
  image.save(out_dir .. "/graded.png", image.grid(graded, 20))
  print(string.format("\n%s single-object prompts (%d samples, %s %d steps, guidance %.1f):",
    cfg.eval_split == "test" and "held-out" or "training", cfg.eval_samples, cfg.sampler, cfg.sample_steps, cfg.guidance))
  print(eval.format(result))
  print("\nshapes asked for (rows) and read (columns):\n" .. eval.format_confusion(result))
  if result.shapes_fid then
    print(string.format("shapes FID (%d samples against 2000 real scenes): %.3f", cfg.eval_samples, result.shapes_fid))
  end
  if result.fid then print(string.format("Inception FID (%d samples against as many real scenes): %.3f", cfg.eval_samples, result.fid)) end
  for _, k in ipairs(EVAL_KEYS) do metrics["eval/" .. k] = result[k] end
  -- shape read right, by the size the prompt asked for (small objects, 8 pixels across at 32, are the hard ones)
  for _, size in ipairs(shapes.SIZE_NAMES) do
    local t = result.by_size[size]
    if t then
      print(string.format("shape, %s objects: %.1f%% of %d", size, 100 * t.shape, t.n))
      metrics["eval/shape_" .. size] = t.shape
    end
  end
end
print(string.format("training: %d steps in %.0f s; samples: %s/samples.png%s", cfg.steps - start, train_secs, out_dir,
  cfg.eval_samples > 0 and " (the graded ones: graded.png)" or ""))
r:finish(metrics)
