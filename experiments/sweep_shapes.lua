-- experiments/sweep_shapes.lua: a sweep of the default experiment (t2i_shapes.lua) over its
-- learning rate, batch size and the text encoder's learning-rate ratio, on a short budget
-- sized for two CPU cores: 12 trials of 400 steps, one thread each, two at a time; TPE after
-- four trials have ended; ASHA stops the trials whose training loss lags at steps 100 and 200.
-- It ranks trials by color accuracy: 400 steps draw colors (55-73% right) but not yet shapes
-- (15-18%, below chance), which the full 1,950-step recipe learns.
--   build/tocha sweep run experiments/sweep_shapes.lua      (then: status, best, plot)
local sweep = require "tocha.sweep"

return sweep {
  name = "sweep_shapes",
  script = "experiments/t2i_shapes.lua",
  args = { "--steps", "400", "--warmup", "40", "--eval_samples", "40", "--log_every", "20", "--threads", "1",
    "--checkpoint_every", "0" },
  space = {
    lr = sweep.loguniform(5e-4, 5e-3),
    batch = sweep.choice { 12, 16, 24 },
    text_lr = sweep.loguniform(0.005, 0.2),
  },
  metric = "eval/color", goal = "max",
  trials = 12, strategy = sweep.tpe { startup = 4 },
  seed = 0, seed_per_trial = false, -- every trial draws the same data and noise: only the parameters differ
  -- the loss is noisy from batch to batch: judge the mean of the last 4 logged values (80 steps)
  prune = sweep.asha { metric = "train/loss", goal = "min", min_steps = 100, max_steps = 400, reduction = 2, window = 4 },
  workers = 2,
}
