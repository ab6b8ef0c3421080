-- tocha/diffusion/heun.lua: Heun's second-order sampler (Karras et al. 2022, Alg. 1), as
-- diffusers' HeunDiscreteScheduler: every timestep after the first appears twice, the
-- first visit takes an Euler step, the second corrects it with the averaged slope.
local S = require "tocha.diffusion.schedule"
local K = require "tocha.diffusion.sigmas"

local Heun = S.class({ use_karras_sigmas = false, clip_sample = false, timestep_spacing = "linspace" }, K)
Heun.order = 2

function Heun:set_timesteps(n)
  local ts, sigmas = self:sigma_schedule(n)
  self.timesteps, self.sigmas = { ts[1] }, { sigmas[1] }
  for i = 2, #ts do
    self.timesteps[#self.timesteps + 1] = ts[i]
    self.timesteps[#self.timesteps + 1] = ts[i]
  end
  for i = 2, #sigmas - 1 do
    self.sigmas[#self.sigmas + 1] = sigmas[i]
    self.sigmas[#self.sigmas + 1] = sigmas[i]
  end
  self.sigmas[#self.sigmas + 1] = sigmas[#sigmas]
  self.init_noise_sigma = self:init_noise_sigma_for()
  self.step_index, self.prev_derivative, self.dt, self.sample = nil, nil, nil, nil
end

--- step(model_output, t, x) -> prev_sample, pred_x0
function Heun:step(model_output, t, x)
  local i = self:index_for(t)
  local first = self.dt == nil
  local sigma = first and self.sigmas[i] or self.sigmas[i - 1]
  local nxt = first and self.sigmas[i + 1] or self.sigmas[i]
  local x0 = self:predict_sigma(model_output, x, first and sigma or nxt)
  if self.config.clip_sample then
    local r = self.config.clip_sample_range
    x0 = x0:clamp(-r, r)
  end
  local prev
  if first then
    local d = (x - x0) / sigma
    self.prev_derivative, self.dt, self.sample = d, nxt - sigma, x
    prev = x + d * (nxt - sigma)
  else
    local d = ((x - x0) / nxt + self.prev_derivative) * 0.5
    prev = self.sample + d * self.dt
    self.prev_derivative, self.dt, self.sample = nil, nil, nil
  end
  self.step_index = i + 1
  return prev, x0
end

return Heun
