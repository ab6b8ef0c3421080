-- tocha/diffusion/euler_ancestral.lua: Euler ancestral sampling (k-diffusion), as diffusers'
-- EulerAncestralDiscreteScheduler: Euler's schedule, a step down to a lower sigma and fresh
-- noise back up (opts.noise, or drawn from the tocha RNG).
local T = require "tocha"
local S = require "tocha.diffusion.schedule"
local Euler = require "tocha.diffusion.euler"

local Ancestral = S.class({ timestep_spacing = "linspace" }, Euler)

--- step(model_output, t, x, {noise = tensor}) -> prev_sample, pred_x0
function Ancestral:step(model_output, t, x, opts)
  local i = self:index_for(t)
  local from, to = self.sigmas[i], self.sigmas[i + 1]
  if self.config.prediction_type == "sample" then error("EulerAncestral: prediction_type sample is not supported", 2) end
  local x0 = self:predict_sigma(model_output, x, from)
  local up = math.sqrt(to * to * (from * from - to * to) / (from * from))
  local down = math.sqrt(to * to - up * up)
  local prev = x + (x - x0) / from * (down - from)
  prev = prev + ((opts and opts.noise) or T.randn_like(x)) * up
  self.step_index = i + 1
  return prev, x0
end

return Ancestral
