-- experiments/finetune_sweep.lua: the learning-rate search of the fine-tuning demo
-- (experiments/finetune_demo.lua), run by `tocha sweep`. Each trial is one fine-tune of the
-- demo's base on its 600 pink images (10 epochs, batch 16, prior preservation), graded on 40
-- held-out prompts of the new color and 40 of the old ones at 20 sampler steps; a trial
-- reports eval/<method>_score: the old prompts' accuracy when the new color is drawn right at
-- least 80% of the time, else how far short of 80% it is (negative), so that the best trial
-- is the one that forgets least among those that learn. One thread per trial, two at a time.
-- The demo's data, prior images and base must exist first (run `make finetune-demo` once).
--   build/tocha sweep run experiments/finetune_sweep.lua                 (LoRA)
--   FINETUNE_SWEEP=full build/tocha sweep run experiments/finetune_sweep.lua
--   build/tocha sweep best experiments/finetune_sweep.lua                (then: export, plot)
local sweep = require "tocha.sweep"

local method = os.getenv("FINETUNE_SWEEP") or "lora"
local SPACES = {
  lora = { lr_lora = sweep.grid { 1.5e-4, 3e-4 }, prior_loss_weight = sweep.grid { 1, 2 } },
  full = { lr_full = sweep.grid { 1e-5, 2e-5 }, prior_loss_weight = sweep.grid { 1, 2 } },
}
local space = SPACES[method]
if not space then error("finetune_sweep: FINETUNE_SWEEP must be lora or full, not " .. method, 0) end

return sweep {
  name = "finetune_sweep_" .. method,
  script = "experiments/finetune_demo.lua",
  args = { "--out", "runs/finetune-demo", "--methods", method, "--no-grade_base", "--eval_new", "40", "--eval_old", "40",
    "--sample_steps", "20", "--threads", "1" },
  space = space,
  metric = "eval/" .. method .. "_score", goal = "max",
  strategy = "grid", trials = 4,
  seed = 0, seed_per_trial = false, -- the same data, noise and prompts in every trial: only the parameters differ
  workers = 2,
}
