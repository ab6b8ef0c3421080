-- tocha/diffusion/euler.lua: the Euler sampler (Karras et al. 2022, k-diffusion), as
-- diffusers' EulerDiscreteScheduler. euler_ancestral.lua builds on it.
local S = require "tocha.diffusion.schedule"
local K = require "tocha.diffusion.sigmas"

local Euler = S.class({ use_karras_sigmas = false, timestep_spacing = "linspace" }, K)

--- step(model_output, t, x) -> prev_sample, pred_x0
function Euler:step(model_output, t, x)
  local i = self:index_for(t)
  local sigma, nxt = self.sigmas[i], self.sigmas[i + 1]
  local x0 = self:predict_sigma(model_output, x, sigma)
  local prev = x + (x - x0) / sigma * (nxt - sigma)
  self.step_index = i + 1
  return prev, x0
end

return Euler
