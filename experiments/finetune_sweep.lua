-- experiments/finetune_sweep.lua: the settings' search of the fine-tuning demo
-- (experiments/finetune_demo.lua), run by `tocha sweep`. Each trial is one fine-tune of the
-- demo's base on its 600 pink images (10 epochs, batch 16, prior preservation), graded on 40
-- held-out prompts of the new color and 100 of the old ones at 20 sampler steps; a trial
-- reports eval/<method>_score: the old prompts' accuracy when the new color is drawn right at
-- least 80% of the time, else how far short of 80% it is (negative), so that the best trial
-- is the one that forgets least among those that learn. One thread per trial, two at a time.
-- The demo's data, prior images and base must exist first (run `make finetune-demo` once).
--   build/tocha sweep run experiments/finetune_sweep.lua                 (LoRA, first round)
--   FINETUNE_SWEEP=lora2 build/tocha sweep run experiments/finetune_sweep.lua   (second round)
--   FINETUNE_SWEEP=full build/tocha sweep run experiments/finetune_sweep.lua   (and full2-4)
--   build/tocha sweep best experiments/finetune_sweep.lua                (then: export, plot)
local sweep = require "tocha.sweep"

local method = os.getenv("FINETUNE_SWEEP") or "lora"
-- LoRA's targets: every attention projection, or the cross-attention's keys and values only
-- (what reads the caption); both with the pooled caption's projection, without which the new
-- word is never learned
local ALL = { "to_q", "to_k", "to_v", "to_out.0", "class_embedding.linear_1", "class_embedding.linear_2" }
local CROSS = { "attn2.to_k", "attn2.to_v", "class_embedding.linear_1", "class_embedding.linear_2" }
local SPACES = {
  lora = { lr_lora = sweep.grid { 2e-4, 3e-4 }, prior_loss_weight = sweep.grid { 1, 2 }, lora_targets = sweep.grid { ALL, CROSS } },
  -- the second round, where the first pointed: lower learning rates, heavier prior loss, and
  -- the cross-attention targets (as good as every projection, with fewer weights trained)
  lora2 = { lr_lora = sweep.grid { 1e-4, 1.5e-4 }, prior_loss_weight = sweep.grid { 2, 4 }, lora_targets = sweep.grid { CROSS } },
  full = { lr_full = sweep.grid { 1.5e-5, 2e-5 }, prior_loss_weight = sweep.grid { 2, 4 } },
  -- the whole UNet forgets at every setting of the first: train fewer of its parts, fully
  full2 = { lr_full = sweep.grid { 2e-5, 1e-4 }, prior_loss_weight = sweep.grid { 2 },
    full_trainable = sweep.grid { CROSS, { "attn1", "attn2", "class_embedding" } } },
  -- those parts learn nothing of the new color below 1e-4: higher learning rates
  full3 = { lr_full = sweep.grid { 3e-4, 1e-3 }, prior_loss_weight = sweep.grid { 2 }, full_trainable = sweep.grid { CROSS } },
  -- between 1e-4 (nothing learnt) and 3e-4 (learnt, and forgetting)
  full4 = { lr_full = sweep.grid { 1.5e-4, 2e-4 }, prior_loss_weight = sweep.grid { 2 }, full_trainable = sweep.grid { CROSS } },
}
local space = SPACES[method]
if not space then error("finetune_sweep: FINETUNE_SWEEP must be lora, lora2, full, full2, full3 or full4, not " .. method, 0) end
local kind = method:match("^%a+")

return sweep {
  name = "finetune_sweep_" .. method,
  script = "experiments/finetune_demo.lua",
  args = { "--out", "runs/finetune-demo", "--methods", kind, "--no-grade_base", "--eval_new", "40", "--eval_old", "100",
    "--sample_steps", "20", "--threads", "1" },
  space = space,
  metric = "eval/" .. kind .. "_score", goal = "max",
  strategy = "grid", trials = method == "lora" and 8 or 4,
  seed = 0, seed_per_trial = false, -- the same data, noise and prompts in every trial: only the parameters differ
  workers = 2,
}
