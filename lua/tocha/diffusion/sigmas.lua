-- tocha/diffusion/sigmas.lua: the base of the samplers that work in sigma space (Euler,
-- Euler ancestral, Heun, DPM-Solver, as diffusers' *Discrete schedulers): sigma at a
-- float timestep by linear interpolation, optional Karras sigmas (Karras et al. 2022),
-- and the step index those samplers keep from one step to the next.
local S = require "tocha.diffusion.schedule"

local K = S.class {} -- the samplers' classes are S.class(defaults, K)
local f32 = S.f32

--- the training sigmas; a sampler's own init calls K.init(self) first. With
--- rescale_betas_zero_snr the last alpha_bar is 0 and its sigma infinite: as diffusers, it
--- becomes 2^-24 (sigma_max 4096). init_noise_sigma is left for set_timesteps to set, from the
--- sigmas (the data-space default of 1 is wrong here)
function K:init()
  if self.config.rescale_betas_zero_snr then self.alphas_cumprod[#self.alphas_cumprod] = 2.0 ^ -24 end
  self.init_noise_sigma = nil
  self.train_sigmas = {}
  for i, ab in ipairs(self.alphas_cumprod) do self.train_sigmas[i] = math.sqrt((1 - ab) / ab) end
end

-- float timesteps for n steps (not rounded, unlike DDIM's)
local function float_timesteps(self, n)
  local c = self.config
  local N = c.num_train_timesteps
  self:check_steps(n, 4)
  if c.timestep_spacing == "linspace" then
    local ts = {}
    local step = n > 1 and (N - 1) / (n - 1) or 0
    for i = n - 1, 0, -1 do ts[#ts + 1] = f32(i == n - 1 and N - 1 or i * step) end -- as numpy.linspace
    return ts
  end
  return self:spaced_timesteps(n)
end

local function interp(self, t)
  local lo = math.floor(t)
  local sig = self.train_sigmas
  if lo >= #sig - 1 then return sig[#sig] end
  local w = t - lo
  return sig[lo + 1] * (1 - w) + sig[lo + 2] * w
end

-- the float timestep whose interpolated log-sigma is sigma (diffusers' _sigma_to_t)
function K:sigma_to_t(sigma)
  local ls = math.log(math.max(sigma, 1e-10))
  local logs = {}
  for i, s in ipairs(self.train_sigmas) do logs[i] = math.log(s) end
  local low = 0
  for i = 1, #logs do if ls - logs[i] >= 0 then low = i - 1 end end
  low = math.min(low, #logs - 2)
  local lo, hi = logs[low + 1], logs[low + 2]
  local w = math.max(0, math.min(1, (lo - ls) / (lo - hi)))
  return (1 - w) * low + w * (low + 1)
end

--- timesteps and sigmas (with the final sigma appended) for n inference steps
function K:sigma_schedule(n)
  local ts = float_timesteps(self, n)
  local sigmas = {}
  for i, t in ipairs(ts) do sigmas[i] = interp(self, t) end
  if self.config.use_karras_sigmas then
    local rho = 7.0
    local smin, smax = sigmas[#sigmas], sigmas[1]
    local a, b = smax ^ (1 / rho), smin ^ (1 / rho)
    for i = 1, n do
      local ramp = n > 1 and (i - 1) / (n - 1) or 0
      sigmas[i] = (a + ramp * (b - a)) ^ rho
      ts[i] = self:sigma_to_t(sigmas[i])
    end
  end
  for i, s in ipairs(sigmas) do sigmas[i] = f32(s) end
  for i, t in ipairs(ts) do ts[i] = f32(t) end
  sigmas[#sigmas + 1] = self.final_sigma or 0.0
  return ts, sigmas
end

--- the standard deviation of the starting noise: the largest sigma (sqrt(sigma^2 + 1) with
--- leading spacing, as diffusers)
function K:init_noise_sigma_for()
  local m = 0
  for _, s in ipairs(self.sigmas) do if s > m then m = s end end
  local sp = self.config.timestep_spacing
  if sp == "linspace" or sp == "trailing" then return m end
  return math.sqrt(m * m + 1)
end

--- set_timesteps(n), the default of the sigma-space samplers: timesteps and sigmas per
--- timestep_spacing (and use_karras_sigmas when the class has that option), the starting noise
--- scale, and the step index reset
function K:set_timesteps(n)
  self.timesteps, self.sigmas = self:sigma_schedule(n)
  self.num_inference_steps = #self.timesteps
  self.init_noise_sigma = self:init_noise_sigma_for()
  self.step_index = nil
end

--- the step index for timestep t: kept between calls, found on the first one
function K:index_for(t)
  if self.step_index then return self.step_index end
  local first
  for i, v in ipairs(self.timesteps) do
    if v == t then
      if first then self.step_index = i; return i end -- a repeated timestep: its second position
      first = i
    end
  end
  if not first then error("timestep " .. tostring(t) .. " is not in the schedule (call set_timesteps)", 3) end
  self.step_index = first
  return first
end

--- x scaled by 1 / sqrt(sigma^2 + 1), the input these models expect
function K:scale_model_input(x, t)
  local sigma = self.sigmas[self:index_for(t)]
  return x / math.sqrt(sigma * sigma + 1)
end

--- x0 predicted at sigma from the model output
function K:predict_sigma(model_output, x, sigma)
  local p = self.config.prediction_type
  if p == "epsilon" then return x - model_output * sigma end
  if p == "v_prediction" then return model_output * (-sigma / math.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1) end
  return model_output
end

return K
