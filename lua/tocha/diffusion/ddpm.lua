-- tocha/diffusion/ddpm.lua: DDPM ancestral sampling (Ho et al. 2020), as diffusers'
-- DDPMScheduler with variance_type fixed_small (default) or fixed_large.
local T = require "tocha"
local S = require "tocha.diffusion.schedule"

local DDPM = S.class { variance_type = "fixed_small" }

function DDPM:init()
  local v = self.config.variance_type
  if v ~= "fixed_small" and v ~= "fixed_large" then
    error("DDPM: variance_type must be fixed_small or fixed_large (got " .. tostring(v) .. ")", 3)
  end
  self.timesteps = {}
  for t = self.config.num_train_timesteps - 1, 0, -1 do self.timesteps[#self.timesteps + 1] = t end
end

function DDPM:previous_timestep(t)
  if not self.num_inference_steps then return t - 1 end
  for i, v in ipairs(self.timesteps) do
    if v == t then return self.timesteps[i + 1] or -1 end
  end
  error("DDPM: timestep " .. t .. " is not in the schedule", 3)
end

--- step(model_output, t, x, {noise = tensor}) -> prev_sample, pred_x0
function DDPM:step(model_output, t, x, opts)
  opts = opts or {}
  local prev_t = self:previous_timestep(t)
  local ab = self.alphas_cumprod[t + 1]
  local ab_prev = prev_t >= 0 and self.alphas_cumprod[prev_t + 1] or 1.0
  local alpha_t, beta_t = ab / ab_prev, 1 - ab / ab_prev
  local x0 = self:predict(model_output, x, ab)
  if self.config.clip_sample then
    local r = self.config.clip_sample_range
    x0 = x0:clamp(-r, r)
  end
  local c0 = math.sqrt(ab_prev) * beta_t / (1 - ab)
  local cx = math.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab)
  local prev = x0 * c0 + x * cx
  if t > 0 then
    local var = self.config.variance_type == "fixed_large" and beta_t
      or math.max((1 - ab_prev) / (1 - ab) * beta_t, 1e-20)
    prev = prev + (opts.noise or T.randn_like(x)) * math.sqrt(var)
  end
  return prev, x0
end

return DDPM
