-- experiments/finetune_demo.lua: fine-tuning that measures forgetting (`make finetune-demo`).
-- The default experiment's trained model is the pre-trained base (trained here first when
-- missing); 600 captioned images of a color it never saw (pink) are written as a folder with
-- metadata.jsonl; experiments/finetune_sd.lua fine-tunes the base on them twice, the whole UNet
-- and LoRA adapters, with the seed's recipe scaled to the tiny model; then held-out prompts of
-- the new color and of the old ones are drawn by each model and graded by tocha.eval.shapes.
--   tocha experiments/finetune_demo.lua [--out runs/finetune-demo] [--lr_full 2e-5] ... (--help)
local T = require "tocha"
local models = require "tocha.models"
local lora = require "tocha.lora"
local shapes = require "tocha.data.shapes"
local eval = require "tocha.eval.shapes"
local image = require "tocha.image"
local run = require "tocha.run"
local finetune_data = require "tocha.data.finetune"
local R = require "tocha.run.resume"
local cache = require "tocha.data.cache"
local json = require "tocha.json"

local defaults = {
  out = { "runs/finetune-demo", help = "where the base, the data, both fine-tunes and the results go" },
  base = { "", help = "the pre-trained model (default: OUT/base/model, trained by experiments/t2i_shapes.lua when missing)" },
  concept = { "pink", help = "the new color (one the base never saw)", choices = { "pink", "cyan" } },
  images = { 600, help = "captioned images of the new color to fine-tune on" },
  epochs = { 10, help = "passes over them (the seed's recipe)" },
  batch = { 16, help = "images per step (the seed's recipe)" },
  lr_full = { 3e-4, help = "learning rate of the full fine-tune (chosen by the search in docs/finetune.md)" },
  lr_lora = { 2e-4, help = "learning rate of the LoRA fine-tune (chosen likewise)" },
  caption_dropout = { 0.1, help = "fraction of captions dropped, as the base was trained (keeps the unconditional half of guidance in step)" },
  timestep_power = { 0.5, help = "training timesteps t = T u^p, as the base was trained (the noisy steps decide the shapes)" },
  prior_images = { 300, help = "prior preservation: images of the base's own concepts it draws first and trains on alongside (0: none)" },
  lora_rank = { 4, help = "LoRA rank" },
  lora_targets = { { "to_q", "to_k", "to_v", "to_out.0", "class_embedding.linear_1", "class_embedding.linear_2" },
    help = "the layers that get adapters: the attention projections and the pooled caption's projection" },
  full_trainable = { { "attn2.to_k", "attn2.to_v", "class_embedding.linear_1", "class_embedding.linear_2" },
    help = "the UNet modules the full fine-tune trains (finetune_sd.lua's --trainable): the cross-attention's keys and values and the pooled caption's projection, as the search chose (\"\": the whole UNet)" },
  prior_loss_weight = { 2.0, help = "weight of the prior images' loss against the new images' (chosen by the search)" },
  ema = { false, help = "fine-tune an exponential moving average of the weights (decay 0.9999, diffusers' default, unless --extra sets --ema_decay)" },
  extra = { "", help = "more options for experiments/finetune_sd.lua, given to every fine-tune (for example \"--ema_decay 0.99\")" },
  eval_new = { 100, help = "held-out prompts of the new color drawn and graded per model" },
  eval_old = { 200, help = "held-out prompts of the base's colors drawn and graded per model" },
  methods = { { "full", "lora" }, help = "which fine-tunes to run" },
  grade_base = { true, help = "grade the base too (--no-grade_base: the fine-tunes only, as the lr search runs it); its grades are kept in OUT and reused while the base, the prompts and the sampler are unchanged" },
  sample_steps = { 20, help = "DDIM steps of every image the demo draws (grading, the prior images)" },
  side_by_side = { true, help = "run the fine-tunes at the same time, the threads shared among them (--no-side_by_side: one after the other, each with every thread)" },
  work = { "", help = "where the fine-tunes, the graded images and the results go (default: OUT; under `tocha sweep`, the trial's run directory)" },
  threads = { 2, help = "CPU threads" },
  seed = { 0, help = "seed of the data, the fine-tunes and the sampling" },
}

local r = run { name = "finetune_demo", config = defaults }
local cfg = r.config
T.set_num_threads(cfg.threads)
local out = run.mkdirs(cfg.out)
local work = cfg.work ~= "" and run.mkdirs(cfg.work) or (os.getenv("TOCHA_SWEEP_TRIAL") and r.dir) or out
local tocha_bin = arg[-1] or "./build/tocha"
-- the scripts started here make their own runs, even when this one is a sweep's trial
local CHILD = "env -u TOCHA_RUN_DIR -u TOCHA_SWEEP -u TOCHA_SWEEP_TRIAL OMP_NUM_THREADS=%d TOCHA_RUNS=" .. out .. "/runs "

local function sh(cmd)
  print("$ " .. cmd)
  local ok = os.execute(cmd)
  if not ok then error("finetune_demo: this command failed: " .. cmd, 0) end
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- a captioned image folder, written whole under another name and renamed: runs of the demo side
-- by side (a sweep's trials) never read one half written
local function write_once(dir, n, sample)
  local tmp = string.format("%s.tmp-%d", dir, T._sys.getpid())
  finetune_data.write_folder(tmp, n, sample)
  if not os.rename(tmp, dir) then os.execute("rm -rf '" .. tmp .. "'") end -- another run wrote it first
end

---------------------------------------------------------------------------------------------
-- the base: the default experiment's model (trained once, then reused)
---------------------------------------------------------------------------------------------
local base = cfg.base ~= "" and cfg.base or out .. "/base/model"
if not exists(base .. "/model_index.json") then
  if cfg.base ~= "" then error("finetune_demo: --base " .. cfg.base .. " is not a model folder", 0) end
  -- an interrupted training (a run of it with a checkpoint) continues where it stopped
  local resume = false
  for _, dir in ipairs(R.runs(out .. "/runs/t2i_shapes")) do
    if require("tocha.checkpoint").latest(R.checkpoints(dir)) then resume = true end
  end
  print("no base model yet: training the default experiment (about 10 minutes on two idle cores)")
  sh(string.format(CHILD .. "%s experiments/t2i_shapes.lua --out %s/base --threads %d%s",
    cfg.threads, tocha_bin, out, cfg.threads, resume and " --resume" or ""))
end
local t_start = T.clock()

---------------------------------------------------------------------------------------------
-- the new concept's images: single objects of the new color, captioned, prompts of the
-- training split (the held-out ones are graded afterwards)
---------------------------------------------------------------------------------------------
local data = string.format("%s/data/%s-%d", out, cfg.concept, cfg.images)
if not exists(data .. "/metadata.jsonl") then
  local ds = shapes { size = 32, seed = 1000 + cfg.seed, objects = 1, colors = { cfg.concept }, format = "u8" }
  write_once(data, cfg.images, function(i) local s = ds[i]; return s.image, s.caption end)
  print(string.format("wrote %d images of %s shapes to %s", cfg.images, cfg.concept, data))
end

---------------------------------------------------------------------------------------------
-- grading: held-out single-object prompts, the new color's and the base's colors', each read
-- against a palette holding both (a model that paints everything pink is read as such)
---------------------------------------------------------------------------------------------
local palette = {}
for _, c in ipairs(shapes.DEFAULT_COLORS) do palette[#palette + 1] = c end
palette[#palette + 1] = cfg.concept
local PROMPTS = {
  new = shapes.prompts { split = "test", objects = { 1 }, colors = { cfg.concept }, n = cfg.eval_new, seed = cfg.seed + 7 },
  old = shapes.prompts { split = "test", objects = { 1 }, n = cfg.eval_old, seed = cfg.seed + 1 },
}
local GRID = { PROMPTS.new[1], PROMPTS.new[2], PROMPTS.new[3], PROMPTS.old[1], PROMPTS.old[2], PROMPTS.old[3] }

local function draw(d, prompts, seed)
  local chunks = {}
  for i = 1, #prompts, 50 do
    chunks[#chunks + 1] = d:sample { prompts = table.move(prompts, i, math.min(i + 49, #prompts), 1, {}), steps = cfg.sample_steps,
      guidance_scale = 7.5, seed = seed + i }
  end
  return T.cat(chunks, 1)
end

local function report(res, seconds)
  print(string.format("%-6s new %s: color %5.1f%%, all %5.1f%% | old colors: color %5.1f%%, shape %5.1f%%, "
    .. "position %5.1f%%, all %5.1f%%  (%.0f s)", res.name, cfg.concept, 100 * res.new.color, 100 * res.new.all,
    100 * res.old.color, 100 * res.old.shape, 100 * res.old.position, 100 * res.old.all, seconds))
end

-- a model's grades; with keep (a path without extension), kept there and reused while the
-- model's weights, the prompts and the sampler are those they were made with
local function grade(name, parts, keep)
  local key, t0 = nil, T.clock()
  if keep then
    key = cache.key { unet = cache.fingerprint(parts.unet), text_encoder = cache.fingerprint(parts.text_encoder),
      prompts = PROMPTS, grid = GRID, palette = palette, steps = cfg.sample_steps, seed = cfg.seed }
    local ok, kept = pcall(json.read_file, keep .. ".json")
    if ok and type(kept) == "table" and kept.key == key and exists(keep .. "-grid.safetensors") then
      local res = { name = name, new = kept.new, old = kept.old, grid = T.load(keep .. "-grid.safetensors").grid }
      report(res, T.clock() - t0)
      return res
    end
  end
  local d = models.Denoiser(parts)
  local res = { name = name }
  for _, which in ipairs({ "new", "old" }) do
    local images = draw(d, PROMPTS[which], cfg.seed + (which == "new" and 5000 or 9000))
    res[which] = eval.evaluate(images, PROMPTS[which], { colors = palette })
    res[which].results, res[which].confusion = nil, nil -- the rates are what is reported
    image.write(string.format("%s/graded-%s-%s.png", work, name, which), image.grid(images, 20), { range = { -1, 1 } })
  end
  res.grid = draw(d, GRID, cfg.seed + 77)
  report(res, T.clock() - t0)
  if keep then
    local f = assert(io.open(keep .. ".json", "w"))
    f:write(json.encode { key = key, new = res.new, old = res.old }, "\n")
    f:close()
    T.save(keep .. "-grid.safetensors", { grid = res.grid:contiguous() })
  end
  return res
end
local results = cfg.grade_base and { grade("base", models.load(base), out .. "/base-graded") } or {}

---------------------------------------------------------------------------------------------
-- the fine-tunes: experiments/finetune_sd.lua with the seed's recipe (batch 16, 10 epochs,
-- clipping 1.0, validation by DDIM 50 steps at guidance 7.5), at each method's measured lr
---------------------------------------------------------------------------------------------
-- prior preservation: the base draws its own concepts (prompts of the training split) once,
-- here, before fine-tunes that may run side by side would each draw them
local prior_args = ""
if cfg.prior_images > 0 then
  local dir = string.format("%s/data/prior-%d-%d", out, cfg.prior_images, cfg.sample_steps)
  if not exists(dir .. "/metadata.jsonl") then
    local prompts = shapes.prompts { split = "train", objects = { 1 }, n = cfg.prior_images, seed = cfg.seed + 3 }
    local images = draw(models.Denoiser(models.load(base)), prompts, cfg.seed + 100000)
    write_once(dir, #prompts, function(i) return images[i], prompts[i] end)
    print(string.format("the base drew %d prior images into %s", #prompts, dir))
  end
  prior_args = string.format(" --prior_data %s --prior_loss_weight %g", dir, cfg.prior_loss_weight)
end

local function finetune_command(method, threads)
  local dir = work .. "/" .. method
  local args = string.format("--model %s --data %s --recipe seed --batch %d --epochs %d --seed %d --threads %d "
    .. "--caption_dropout %g --timestep_power %g --validation_prompts '%s' --validation_every 0 --log_attention "
    .. "--checkpoint_every 0 --cache_dir %s/cache --out %s%s%s %s", base, data, cfg.batch, cfg.epochs, cfg.seed, threads,
    cfg.caption_dropout, cfg.timestep_power, table.concat({ PROMPTS.new[1], PROMPTS.old[1] }, ","), dir, dir, prior_args,
    cfg.ema and " --ema" or "", cfg.extra)
  if method == "lora" then
    args = args .. string.format(" --lora %d --lr %g --lora_targets %s", cfg.lora_rank, cfg.lr_lora,
      table.concat(cfg.lora_targets, ","))
  else
    args = args .. string.format(" --lr %g", cfg.lr_full)
    if #cfg.full_trainable > 0 then args = args .. " --trainable " .. table.concat(cfg.full_trainable, ",") end
  end
  return string.format(CHILD .. "%s experiments/finetune_sd.lua %s", threads, tocha_bin, args)
end

-- side by side, each fine-tune gets its share of the threads, its log in WORK/<method>.log and
-- its time in WORK/<method>.seconds
local seconds = {}
local together = cfg.side_by_side and #cfg.methods > 1
local threads = together and math.max(1, cfg.threads // #cfg.methods) or cfg.threads
if together then
  local jobs, waits = {}, {}
  for i, method in ipairs(cfg.methods) do
    jobs[i] = string.format("(s=$(date +%%s); %s > %s/%s.log 2>&1; rc=$?; echo $(( $(date +%%s) - s )) > %s/%s.seconds; exit $rc) & p%d=$!",
      finetune_command(method, threads), work, method, work, method, i)
    waits[i] = string.format("wait $p%d || rc=1", i)
  end
  print(string.format("fine-tuning %s side by side, %d thread(s) each; logs in %s/<method>.log", table.concat(cfg.methods, " and "),
    threads, work))
  local ok = os.execute("rc=0; " .. table.concat(jobs, "; ") .. "; " .. table.concat(waits, "; ") .. "; exit $rc")
  if not ok then
    for _, method in ipairs(cfg.methods) do os.execute(string.format("tail -n 20 %s/%s.log", work, method)) end
    error("finetune_demo: a fine-tune failed (its log is above)", 0)
  end
  for _, method in ipairs(cfg.methods) do
    local f = assert(io.open(string.format("%s/%s.seconds", work, method)))
    seconds[method] = tonumber(f:read("l"))
    f:close()
  end
else
  for _, method in ipairs(cfg.methods) do
    local t0 = T.clock()
    sh(finetune_command(method, threads))
    seconds[method] = T.clock() - t0
  end
end
for _, method in ipairs(cfg.methods) do
  local parts
  if method == "lora" then
    parts = models.load(base)
    lora.load(work .. "/lora", { unet = parts.unet, text_encoder = parts.text_encoder }, { merge = true })
  else
    parts = models.load(work .. "/full")
  end
  results[#results + 1] = grade(method, parts)
end

---------------------------------------------------------------------------------------------
-- the results: a table (results.md) and a grid of the same prompts and seeds before and after
---------------------------------------------------------------------------------------------
local lines = {
  string.format("| model | new: %s (color) | new: all | old: color | old: shape | old: position | old: all | fine-tune time |", cfg.concept),
  "|---|---|---|---|---|---|---|---|",
}
local function pct(v) return string.format("%.1f%%", 100 * v) end
for _, res in ipairs(results) do
  lines[#lines + 1] = string.format("| %s | %s | %s | %s | %s | %s | %s | %s |", res.name, pct(res.new.color),
    pct(res.new.all), pct(res.old.color), pct(res.old.shape), pct(res.old.position), pct(res.old.all),
    seconds[res.name] and string.format("%.0f s", seconds[res.name]) or "-")
end
local tbl = table.concat(lines, "\n")
local f = assert(io.open(work .. "/results.md", "w"))
f:write(string.format("held-out prompts: %d of the new color, %d of the old ones; %d images, %d epochs, batch %d\n\n",
  #PROMPTS.new, #PROMPTS.old, cfg.images, cfg.epochs, cfg.batch), tbl, "\n")
f:close()
-- the grid: a row per model, a column per prompt
local rows = {}
for _, res in ipairs(results) do for i = 1, #GRID do rows[#rows + 1] = res.grid[i] end end
image.write(work .. "/grid.png", image.grid(T.stack(rows, 1), #GRID), { range = { -1, 1 } })
local g = assert(io.open(work .. "/grid.txt", "w"))
g:write("rows: ", table.concat((function() local n = {} for i, x in ipairs(results) do n[i] = x.name end return n end)(), ", "),
  "\ncolumns:\n", table.concat(GRID, "\n"), "\n")
g:close()
print("\n" .. tbl)
print(string.format("\nfine-tuning and grading took %.0f s; results in %s/results.md, the grid in %s/grid.png", T.clock() - t_start, work, work))
-- the run's metrics: eval/base_new, eval/full_new, eval/lora_new (the new color's accuracy),
-- eval/base_old, eval/full_old, eval/lora_old (the old prompts'), eval/full_score, eval/lora_score
local metrics = {}
for _, res in ipairs(results) do
  metrics["eval/" .. res.name .. "_new"] = res.new.color
  metrics["eval/" .. res.name .. "_old"] = res.old.all
  -- what the lr search maximises: the old prompts' accuracy among fine-tunes that learn the new
  -- color (>= 80%), and below every one of those, how far short of 80% the new color is
  metrics["eval/" .. res.name .. "_score"] = res.new.color >= 0.8 and res.old.all or res.new.color - 0.8
end
r:finish(metrics)
