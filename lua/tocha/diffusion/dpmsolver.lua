-- tocha/diffusion/dpmsolver.lua: DPM-Solver++ multistep (Lu et al. 2022), first or second
-- order ("2M"), midpoint or heun corrector, optional Karras sigmas, euler_at_final, as
-- diffusers' DPMSolverMultistepScheduler with algorithm_type "dpmsolver++".
local S = require "tocha.diffusion.schedule"
local K = require "tocha.diffusion.sigmas"

local DPM = S.class({
  solver_order = 2, algorithm_type = "dpmsolver++", solver_type = "midpoint", lower_order_final = true,
  euler_at_final = false, use_karras_sigmas = false, final_sigmas_type = "zero", timestep_spacing = "linspace",
}, K)

local f32, round_half_even = S.f32, S.round_half_even

function DPM:init()
  K.init(self)
  local c = self.config
  if c.algorithm_type ~= "dpmsolver++" then error("DPMSolverMultistep: only algorithm_type dpmsolver++ is supported", 3) end
  if c.solver_order ~= 1 and c.solver_order ~= 2 then error("DPMSolverMultistep: solver_order must be 1 or 2", 3) end
  if c.solver_type ~= "midpoint" and c.solver_type ~= "heun" then error("DPMSolverMultistep: solver_type must be midpoint or heun", 3) end
  if c.final_sigmas_type ~= "zero" and c.final_sigmas_type ~= "sigma_min" then
    error("DPMSolverMultistep: final_sigmas_type must be zero or sigma_min", 3)
  end
  self.init_noise_sigma = 1.0 -- its steps work on x itself: unit noise to start
end

-- integer timesteps over n + 1 points with the last dropped (diffusers' DPM spacing)
local function dpm_timesteps(self, n)
  local c = self.config
  local N = c.num_train_timesteps
  self:check_steps(n, 4)
  local ts = {}
  if c.timestep_spacing == "linspace" then
    local step = (N - 1) / n
    for i = n, 1, -1 do ts[#ts + 1] = round_half_even(i == n and N - 1 or i * step) end
  elseif c.timestep_spacing == "leading" then
    local ratio = N // (n + 1)
    for i = n, 1, -1 do ts[#ts + 1] = i * ratio + c.steps_offset end
  elseif c.timestep_spacing == "trailing" then
    ts = self:spaced_timesteps(n)
  else
    error("timestep_spacing must be leading, trailing or linspace", 3)
  end
  return ts
end

--- timesteps and sigmas of the multistep solvers (DPM-Solver, UniPC), shared with unipc.lua
function DPM.multistep_schedule(self, n)
  local ts = dpm_timesteps(self, n)
  local sig = self.train_sigmas
  local sigmas = {}
  if self.config.use_karras_sigmas then
    local rho = 7.0
    local a, b = sig[#sig] ^ (1 / rho), sig[1] ^ (1 / rho)
    for i = 1, n do
      local ramp = n > 1 and (i - 1) / (n - 1) or 0
      sigmas[i] = (a + ramp * (b - a)) ^ rho
      local t = self:sigma_to_t(sigmas[i])
      ts[i] = self.config.beta_schedule == "squaredcos_cap_v2" and t or round_half_even(t)
    end
  else
    for i, t in ipairs(ts) do sigmas[i] = sig[t + 1] end
  end
  local last = self.config.final_sigmas_type == "zero" and 0 or sig[1]
  for i, v in ipairs(sigmas) do sigmas[i] = f32(v) end
  sigmas[#sigmas + 1] = f32(last)
  return ts, sigmas
end

function DPM:set_timesteps(n)
  self.timesteps, self.sigmas = self:multistep_schedule(n)
  self.num_inference_steps = #self.timesteps
  self.model_outputs, self.lower_order_nums, self.step_index = {}, 0, nil
end

DPM.scale_model_input = S.scale_model_input -- data-space steps: the model sees x as it is

local function alpha_sigma(sigma)
  local a = 1 / math.sqrt(sigma * sigma + 1)
  return a, sigma * a
end

--- step(model_output, t, x) -> prev_sample, pred_x0
function DPM:step(model_output, t, x)
  if not self.num_inference_steps then error("DPMSolverMultistep: call set_timesteps before step", 2) end
  local i = self:index_for(t)
  local c, n = self.config, #self.timesteps
  -- the last step is first order (an Euler step in lambda) when asked, for short schedules, or
  -- when it lands on sigma 0
  local lower_final = i == n and (c.euler_at_final or c.lower_order_final and n < 15 or c.final_sigmas_type == "zero")
  -- convert to a data (x0) prediction
  local a_s0, s_s0 = alpha_sigma(self.sigmas[i])
  local x0
  if c.prediction_type == "epsilon" then x0 = (x - model_output * s_s0) / a_s0
  elseif c.prediction_type == "v_prediction" then x0 = x * a_s0 - model_output * s_s0
  else x0 = model_output end
  local outs = self.model_outputs
  outs[1], outs[2] = outs[2], x0
  local a_t, s_t = alpha_sigma(self.sigmas[i + 1])
  local lambda_t, lambda_s0 = math.log(a_t) - math.log(s_t), math.log(a_s0) - math.log(s_s0)
  local h = lambda_t - lambda_s0
  local prev
  if c.solver_order == 1 or self.lower_order_nums < 1 or lower_final then
    prev = x * (s_t / s_s0) - x0 * (a_t * (math.exp(-h) - 1))
  else
    local a_s1, s_s1 = alpha_sigma(self.sigmas[i - 1])
    local lambda_s1 = math.log(a_s1) - math.log(s_s1)
    local r0 = (lambda_s0 - lambda_s1) / h
    local d1 = (outs[2] - outs[1]) * (1 / r0)
    local e = math.exp(-h) - 1
    if c.solver_type == "midpoint" then
      prev = x * (s_t / s_s0) - outs[2] * (a_t * e) - d1 * (0.5 * a_t * e)
    else
      prev = x * (s_t / s_s0) - outs[2] * (a_t * e) + d1 * (a_t * (e / h + 1))
    end
  end
  if self.lower_order_nums < c.solver_order then self.lower_order_nums = self.lower_order_nums + 1 end
  self.step_index = i + 1
  return prev, x0
end

return DPM
