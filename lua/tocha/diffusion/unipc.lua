-- tocha/diffusion/unipc.lua: UniPC (Zhao et al. 2023), a multistep predictor-corrector
-- with the B(h) = e^h - 1 ("bh2") or B(h) = h ("bh1") variant, predicting x0, as diffusers'
-- UniPCMultistepScheduler. Orders 1 to 3.
local S = require "tocha.diffusion.schedule"
local K = require "tocha.diffusion.sigmas"
local DPM = require "tocha.diffusion.dpmsolver"

local UniPC = S.class({
  solver_order = 2, solver_type = "bh2", lower_order_final = true, disable_corrector = {},
  use_karras_sigmas = false, final_sigmas_type = "zero", timestep_spacing = "linspace", predict_x0 = true,
}, K)
UniPC.multistep_schedule = DPM.multistep_schedule

function UniPC:init()
  K.init(self)
  local c = self.config
  if c.solver_order < 1 or c.solver_order > 3 then error("UniPC: solver_order must be 1, 2 or 3", 3) end
  if c.solver_type ~= "bh1" and c.solver_type ~= "bh2" then error("UniPC: solver_type must be bh1 or bh2", 3) end
  if not c.predict_x0 then error("UniPC: only predict_x0 = true is supported", 3) end
  self.init_noise_sigma = 1.0 -- its steps work on x itself: unit noise to start
end

function UniPC:set_timesteps(n)
  self.timesteps, self.sigmas = self:multistep_schedule(n)
  self.num_inference_steps = #self.timesteps
  self.model_outputs, self.lower_order_nums, self.last_sample, self.step_index = {}, 0, nil, nil
end

UniPC.scale_model_input = S.scale_model_input

local function lambda_of(sigma)
  local a = 1 / math.sqrt(sigma * sigma + 1)
  return math.log(a) - math.log(sigma * a), a, sigma * a
end

-- solves the small dense system A r = b (Gaussian elimination with partial pivoting)
local function solve(A, b)
  local n = #b
  local M = {}
  for i = 1, n do M[i] = { table.unpack(A[i], 1, n) }; M[i][n + 1] = b[i] end
  for c = 1, n do
    local p = c
    for r = c + 1, n do if math.abs(M[r][c]) > math.abs(M[p][c]) then p = r end end
    M[c], M[p] = M[p], M[c]
    for r = c + 1, n do
      local f = M[r][c] / M[c][c]
      for k = c, n + 1 do M[r][k] = M[r][k] - f * M[c][k] end
    end
  end
  local x = {}
  for r = n, 1, -1 do
    local acc = M[r][n + 1]
    for k = r + 1, n do acc = acc - M[r][k] * x[k] end
    x[r] = acc / M[r][r]
  end
  return x
end

-- the shared part of predictor and corrector: rks, D1s, R, b, h_phi_1, B_h
-- from the step between sigmas[s0] and sigmas[t], with earlier outputs at s0 - 1, s0 - 2, ...
local function coefficients(self, order, t_idx, s0_idx)
  local lt, alpha_t, sigma_t = lambda_of(self.sigmas[t_idx])
  local ls0, _, sigma_s0 = lambda_of(self.sigmas[s0_idx])
  local h = lt - ls0
  local outs = self.model_outputs
  local m0 = outs[#outs]
  local rks, D1s = {}, {}
  for k = 1, order - 1 do
    local lk = lambda_of(self.sigmas[s0_idx - k])
    local rk = (lk - ls0) / h
    rks[k] = rk
    D1s[k] = (outs[#outs - k] - m0) / rk
  end
  rks[#rks + 1] = 1
  local hh = -h
  local h_phi_1 = math.exp(hh) - 1
  local h_phi_k = h_phi_1 / hh - 1
  local B_h = self.config.solver_type == "bh2" and h_phi_1 or hh
  local R, b, fact = {}, {}, 1
  for k = 1, order do
    R[k] = {}
    for j, r in ipairs(rks) do R[k][j] = r ^ (k - 1) end
    b[k] = h_phi_k * fact / B_h
    fact = fact * (k + 1)
    h_phi_k = h_phi_k / hh - 1 / fact
  end
  return { m0 = m0, D1s = D1s, R = R, b = b, h_phi_1 = h_phi_1, B_h = B_h, alpha_t = alpha_t,
           ratio = sigma_t / sigma_s0 }
end

local function predictor(self, x, order, i)
  local c = coefficients(self, order, i + 1, i)
  local x_t = x * c.ratio - c.m0 * (c.alpha_t * c.h_phi_1)
  if #c.D1s > 0 then
    local rhos
    if order == 2 then rhos = { 0.5 }
    else
      local Rs, bs = {}, {}
      for k = 1, order - 1 do Rs[k] = { table.unpack(c.R[k], 1, order - 1) }; bs[k] = c.b[k] end
      rhos = solve(Rs, bs)
    end
    local res = c.D1s[1] * rhos[1]
    for k = 2, #c.D1s do res = res + c.D1s[k] * rhos[k] end
    x_t = x_t - res * (c.alpha_t * c.B_h)
  end
  return x_t
end

local function corrector(self, model_t, last, order, i)
  local c = coefficients(self, order, i, i - 1)
  local rhos = order == 1 and { 0.5 } or solve(c.R, c.b)
  local x_t = last * c.ratio - c.m0 * (c.alpha_t * c.h_phi_1)
  local res = (model_t - c.m0) * rhos[#rhos]
  for k = 1, #c.D1s do res = res + c.D1s[k] * rhos[k] end
  return x_t - res * (c.alpha_t * c.B_h)
end

--- step(model_output, t, x) -> prev_sample, pred_x0
function UniPC:step(model_output, t, x)
  if not self.num_inference_steps then error("UniPC: call set_timesteps before step", 2) end
  local i = self:index_for(t)
  local c = self.config
  local disabled = false
  for _, d in ipairs(c.disable_corrector) do if d == i - 2 then disabled = true end end
  local _, a, s = lambda_of(self.sigmas[i])
  local x0
  if c.prediction_type == "epsilon" then x0 = (x - model_output * s) / a
  elseif c.prediction_type == "v_prediction" then x0 = x * a - model_output * s
  else x0 = model_output end
  if i > 1 and not disabled and self.last_sample then x = corrector(self, x0, self.last_sample, self.this_order, i) end
  local outs = self.model_outputs
  outs[#outs + 1] = x0
  if #outs > c.solver_order then table.remove(outs, 1) end
  local order = c.lower_order_final and math.min(c.solver_order, #self.timesteps - i + 1) or c.solver_order
  self.this_order = math.min(order, self.lower_order_nums + 1)
  self.last_sample = x
  local prev = predictor(self, x, self.this_order, i)
  if self.lower_order_nums < c.solver_order then self.lower_order_nums = self.lower_order_nums + 1 end
  self.step_index = i + 1
  return prev, x0
end

return UniPC
