-- tocha/diffusion/euler.lua: Euler and Euler ancestral samplers (Karras et al. 2022,
-- k-diffusion), as diffusers' EulerDiscreteScheduler and EulerAncestralDiscreteScheduler.
local T = require "tocha"
local K = require "tocha.diffusion.sigmas"

local M = {}

local Euler = K.class { use_karras_sigmas = false, timestep_spacing = "linspace" }
function M.Euler(cfg) return K.init(Euler, cfg) end

function Euler:set_timesteps(n)
  self.timesteps, self.sigmas = self:sigma_schedule(n)
  self.init_noise_sigma = self:init_noise_sigma_for()
  self.step_index = nil
end

--- step(model_output, t, x) -> prev_sample, pred_x0
function Euler:step(model_output, t, x)
  local i = self:index_for(t)
  local sigma, nxt = self.sigmas[i], self.sigmas[i + 1]
  local x0 = self:predict_sigma(model_output, x, sigma)
  local prev = x + (x - x0) / sigma * (nxt - sigma)
  self.step_index = i + 1
  return prev, x0
end

local Ancestral = K.class { timestep_spacing = "linspace" }
function M.EulerAncestral(cfg) return K.init(Ancestral, cfg) end
Ancestral.set_timesteps = Euler.set_timesteps

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

return M
