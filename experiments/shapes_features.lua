-- experiments/shapes_features.lua: trains the small network whose features tocha.eval.shapes_fid
-- measures FID in (scenes of tocha.data.shapes -> which colors, shapes and color-shape pairs,
-- where, how big), reports how well it reads held-out scenes, and saves its weights where
-- shapes_fid finds them (lua/tocha/eval/shapes_features.safetensors).
--   tocha experiments/shapes_features.lua [--steps 2000] [--batch 64] [--out FILE] ... (--help)
local T = require "tocha"
local log = require "tocha.log"
local run = require "tocha.run"
local sf = require "tocha.eval.shapes_fid"

local defaults = {
  steps = { 2000, help = "optimizer steps (about 7 minutes on two idle cores)" },
  batch = { 64, help = "scenes per step, one and two objects" },
  lr = { 2e-3, help = "peak learning rate (AdamW, warmup then cosine)" },
  seed = { 0, help = "seed for the weights and the scenes" },
  threads = { 2, help = "CPU threads" },
  log_every = { 50, help = "steps between logged losses" },
  out = { sf.SHIPPED, help = "where the weights go (shapes_fid reads them from the default place)" },
}

local r = run { name = "shapes_features", config = defaults }
local cfg = r.config
T.set_num_threads(cfg.threads)

local writer = r:writer()
local progress = log.progress { total = cfg.steps, smooth = { "loss" } }
local every = log.every(cfg.log_every)
local t0 = T.clock()
local net, acc = sf.train { steps = cfg.steps, batch = cfg.batch, lr = cfg.lr, seed = cfg.seed,
  log = function(step, loss)
    progress:update(step, { loss = loss })
    if every(step) then writer:add_scalar("train/loss", loss, step) end
  end }
progress:close()
local secs = T.clock() - t0

print(string.format("%d parameters, %d steps in %.0f s; read right on 1000 fresh scenes:", net:num_parameters(),
  cfg.steps, secs))
local metrics = { ["train/seconds"] = secs }
for _, k in ipairs({ "color_at", "shape_at", "pairs", "size" }) do
  print(string.format("  %-9s %5.1f%%", k, 100 * acc[k]))
  metrics["eval/" .. k] = acc[k]
end
local meta = { steps = tostring(cfg.steps), seed = tostring(cfg.seed) }
for k, v in pairs(acc) do meta["accuracy_" .. k] = string.format("%.4f", v) end
sf.save(net, cfg.out, meta)
print("weights: " .. cfg.out)
r:finish(metrics)
