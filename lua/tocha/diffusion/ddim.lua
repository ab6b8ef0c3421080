-- tocha/diffusion/ddim.lua: DDIM (Song et al. 2021), as diffusers' DDIMScheduler: eta = 0
-- is deterministic; eta > 0 adds noise (opts.noise, or drawn from the tocha RNG).
local T = require "tocha"
local S = require "tocha.diffusion.schedule"

local DDIM = S.class {}

function DDIM:init()
  self.final_alpha_cumprod = self.config.set_alpha_to_one and 1.0 or self.alphas_cumprod[1]
end

--- step(model_output, t, x, {eta = 0, noise = tensor}) -> prev_sample, pred_x0
function DDIM:step(model_output, t, x, opts)
  opts = opts or {}
  if not self.num_inference_steps then error("DDIM: call set_timesteps before step", 2) end
  local eta = opts.eta or 0
  local prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
  local ab = self.alphas_cumprod[t + 1]
  local ab_prev = prev_t >= 0 and self.alphas_cumprod[prev_t + 1] or self.final_alpha_cumprod
  local x0, eps = self:predict(model_output, x, ab)
  if self.config.clip_sample then
    local r = self.config.clip_sample_range
    x0 = x0:clamp(-r, r)
  end
  local variance = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
  local std = eta * math.sqrt(variance)
  if opts.use_clipped_model_output then eps = (x - x0 * math.sqrt(ab)) / math.sqrt(1 - ab) end
  local prev = x0 * math.sqrt(ab_prev) + eps * math.sqrt(math.max(1 - ab_prev - std * std, 0))
  if eta > 0 then prev = prev + (opts.noise or T.randn_like(x)) * std end
  return prev, x0
end

return DDIM
