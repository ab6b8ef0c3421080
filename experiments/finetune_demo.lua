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

local defaults = {
  out = { "runs/finetune-demo", help = "where the base, the data, both fine-tunes and the results go" },
  base = { "", help = "the pre-trained model (default: OUT/base/model, trained by experiments/t2i_shapes.lua when missing)" },
  concept = { "pink", help = "the new color (one the base never saw)", choices = { "pink", "cyan" } },
  images = { 600, help = "captioned images of the new color to fine-tune on" },
  epochs = { 10, help = "passes over them (the seed's recipe)" },
  batch = { 16, help = "images per step (the seed's recipe)" },
  lr_full = { 2e-5, help = "learning rate of the full fine-tune (chosen by the search in docs/finetune.md)" },
  lr_lora = { 3e-4, help = "learning rate of the LoRA fine-tune (chosen likewise)" },
  caption_dropout = { 0.1, help = "fraction of captions dropped, as the base was trained (keeps the unconditional half of guidance in step)" },
  timestep_power = { 0.5, help = "training timesteps t = T u^p, as the base was trained (the noisy steps decide the shapes)" },
  prior_images = { 300, help = "prior preservation: images of the base's own concepts it draws first and trains on alongside (0: none)" },
  lora_rank = { 4, help = "LoRA rank" },
  lora_targets = { { "to_q", "to_k", "to_v", "to_out.0", "class_embedding.linear_1", "class_embedding.linear_2" },
    help = "the layers that get adapters: the attention projections and the pooled caption's projection" },
  eval_new = { 100, help = "held-out prompts of the new color drawn and graded per model" },
  eval_old = { 200, help = "held-out prompts of the base's colors drawn and graded per model" },
  methods = { { "full", "lora" }, help = "which fine-tunes to run" },
  grade_base = { true, help = "grade the base too (--no-grade_base: the fine-tunes only, as the lr search runs it)" },
  threads = { 2, help = "CPU threads" },
  seed = { 0, help = "seed of the data, the fine-tunes and the sampling" },
}

local r = run { name = "finetune_demo", config = defaults }
local cfg = r.config
T.set_num_threads(cfg.threads)
local out = run.mkdirs(cfg.out)
local tocha_bin = arg[-1] or "./build/tocha"

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
  sh(string.format("OMP_NUM_THREADS=%d TOCHA_RUNS=%s/runs %s experiments/t2i_shapes.lua --out %s/base --threads %d%s",
    cfg.threads, out, tocha_bin, out, cfg.threads, resume and " --resume" or ""))
end
local t_start = T.clock()

---------------------------------------------------------------------------------------------
-- the new concept's images: single objects of the new color, captioned, prompts of the
-- training split (the held-out ones are graded afterwards)
---------------------------------------------------------------------------------------------
local data = string.format("%s/data/%s-%d", out, cfg.concept, cfg.images)
if not exists(data .. "/metadata.jsonl") then
  local ds = shapes { size = 32, seed = 1000 + cfg.seed, objects = 1, colors = { cfg.concept }, format = "u8" }
  finetune_data.write_folder(data, cfg.images, function(i) local s = ds[i]; return s.image, s.caption end)
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
    chunks[#chunks + 1] = d:sample { prompts = table.move(prompts, i, math.min(i + 49, #prompts), 1, {}), steps = 50,
      guidance_scale = 7.5, seed = seed + i }
  end
  return T.cat(chunks, 1)
end

local function grade(name, parts)
  local d = models.Denoiser(parts)
  local res, t0 = { name = name }, T.clock()
  for _, which in ipairs({ "new", "old" }) do
    local images = draw(d, PROMPTS[which], cfg.seed + (which == "new" and 5000 or 9000))
    res[which] = eval.evaluate(images, PROMPTS[which], { colors = palette })
    image.write(string.format("%s/graded-%s-%s.png", out, name, which), image.grid(images, 20), { range = { -1, 1 } })
  end
  res.grid = draw(d, GRID, cfg.seed + 77)
  print(string.format("%-6s new %s: color %5.1f%%, all %5.1f%% | old colors: color %5.1f%%, shape %5.1f%%, "
    .. "position %5.1f%%, all %5.1f%%  (%.0f s)", name, cfg.concept, 100 * res.new.color, 100 * res.new.all,
    100 * res.old.color, 100 * res.old.shape, 100 * res.old.position, 100 * res.old.all, T.clock() - t0))
  return res
end

local results = cfg.grade_base and { grade("base", models.load(base)) } or {}

---------------------------------------------------------------------------------------------
-- the fine-tunes: experiments/finetune_sd.lua with the seed's recipe (batch 16, 10 epochs,
-- clipping 1.0, validation by DDIM 50 steps at guidance 7.5), at each method's measured lr
---------------------------------------------------------------------------------------------
-- prior preservation: the base draws its own concepts (prompts of the training split) once
local prior_args = ""
if cfg.prior_images > 0 then
  local file = out .. "/data/prior-prompts.txt"
  local f = assert(io.open(file, "w"))
  f:write(table.concat(shapes.prompts { split = "train", objects = { 1 }, n = cfg.prior_images, seed = cfg.seed + 3 }, "\n"), "\n")
  f:close()
  prior_args = string.format(" --prior_data %s/data/prior-%d --prior_prompts %s --prior_images %d", out, cfg.prior_images,
    file, cfg.prior_images)
end

local seconds = {}
for _, method in ipairs(cfg.methods) do
  local dir = out .. "/" .. method
  local args = string.format("--model %s --data %s --recipe seed --batch %d --epochs %d --seed %d --threads %d "
    .. "--caption_dropout %g --timestep_power %g --validation_prompts '%s' --validation_every 0 --log_attention "
    .. "--checkpoint_every 0 --out %s%s", base, data, cfg.batch, cfg.epochs, cfg.seed, cfg.threads, cfg.caption_dropout,
    cfg.timestep_power, table.concat({ PROMPTS.new[1], PROMPTS.old[1] }, ","), dir, prior_args)
  if method == "lora" then
    args = args .. string.format(" --lora %d --lr %g --lora_targets %s", cfg.lora_rank, cfg.lr_lora,
      table.concat(cfg.lora_targets, ","))
  else
    args = args .. string.format(" --lr %g", cfg.lr_full)
  end
  local t0 = T.clock()
  sh(string.format("OMP_NUM_THREADS=%d TOCHA_RUNS=%s/runs %s experiments/finetune_sd.lua %s", cfg.threads, out, tocha_bin, args))
  seconds[method] = T.clock() - t0
  local parts
  if method == "lora" then
    parts = models.load(base)
    lora.load(dir, { unet = parts.unet, text_encoder = parts.text_encoder }, { merge = true })
  else
    parts = models.load(dir)
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
local f = assert(io.open(out .. "/results.md", "w"))
f:write(string.format("held-out prompts: %d of the new color, %d of the old ones; %d images, %d epochs, batch %d\n\n",
  #PROMPTS.new, #PROMPTS.old, cfg.images, cfg.epochs, cfg.batch), tbl, "\n")
f:close()
-- the grid: a row per model, a column per prompt
local rows = {}
for _, res in ipairs(results) do for i = 1, #GRID do rows[#rows + 1] = res.grid[i] end end
image.write(out .. "/grid.png", image.grid(T.stack(rows, 1), #GRID), { range = { -1, 1 } })
local g = assert(io.open(out .. "/grid.txt", "w"))
g:write("rows: ", table.concat((function() local n = {} for i, x in ipairs(results) do n[i] = x.name end return n end)(), ", "),
  "\ncolumns:\n", table.concat(GRID, "\n"), "\n")
g:close()
print("\n" .. tbl)
print(string.format("\nfine-tuning and grading took %.0f s; results in %s/results.md, the grid in %s/grid.png", T.clock() - t_start, out, out))
local metrics = {}
for _, res in ipairs(results) do
  metrics["eval/" .. res.name .. "_new"] = res.new.color
  metrics["eval/" .. res.name .. "_old"] = res.old.all
end
r:finish(metrics)
