-- tocha/diffusion/pndm.lua: PLMS, the pseudo linear multistep sampler of PNDM (Liu et al. 2022),
-- as diffusers' PNDMScheduler with skip_prk_steps (the configuration Stable Diffusion 1.x and
-- 2.x ship): a fourth-order Adams-Bashforth combination of the last model outputs, started
-- with a two-evaluation step on the first timestep (which therefore appears twice).
local S = require "tocha.diffusion.schedule"

local PNDM = S.class { skip_prk_steps = true, set_alpha_to_one = false }

function PNDM:init()
  if self.config.skip_prk_steps ~= true then
    error("PNDM: only skip_prk_steps = true (PLMS, Stable Diffusion's setting) is supported", 3)
  end
  if self.config.prediction_type == "sample" then error("PNDM: prediction_type must be epsilon or v_prediction", 3) end
  self.final_alpha_cumprod = self.config.set_alpha_to_one and 1.0 or self.alphas_cumprod[1]
  self.init_noise_sigma = 1.0
end

--- set_timesteps(n): n + 1 timesteps, descending, the second one repeated (its second visit
--- completes the first step)
function PNDM:set_timesteps(n)
  local ts = self:spaced_timesteps(n) -- descending
  local out = { ts[1] }
  if n > 1 then out[2] = ts[2] end
  for i = 2, n do out[#out + 1] = ts[i] end
  self.timesteps = out
  self.num_inference_steps = n
  self.ets, self.counter, self.cur_sample = {}, 0, nil
end

-- x at prev_t from x at t and the (combined) noise prediction eps (formula (9) of the paper)
function PNDM:prev_sample(x, t, prev_t, eps)
  local ab = self.alphas_cumprod[t + 1]
  local ab_prev = prev_t >= 0 and self.alphas_cumprod[prev_t + 1] or self.final_alpha_cumprod
  if self.config.prediction_type == "v_prediction" then eps = eps * math.sqrt(ab) + x * math.sqrt(1 - ab) end
  local denom = ab * math.sqrt(1 - ab_prev) + math.sqrt(ab * (1 - ab) * ab_prev)
  return x * math.sqrt(ab_prev / ab) - eps * ((ab_prev - ab) / denom)
end

--- step(model_output, t, x) -> prev_sample
function PNDM:step(model_output, t, x)
  if not self.num_inference_steps then error("PNDM: call set_timesteps before step", 2) end
  local ratio = self.config.num_train_timesteps // self.num_inference_steps
  local prev_t = t - ratio
  local ets = self.ets
  if self.counter ~= 1 then
    while #ets > 3 do table.remove(ets, 1) end
    ets[#ets + 1] = model_output
  else -- the second visit of the first step: back to where it started
    prev_t, t = t, t + ratio
  end
  local eps
  if #ets == 1 and self.counter == 0 then
    eps = model_output
    self.cur_sample = x
  elseif #ets == 1 and self.counter == 1 then
    eps = (model_output + ets[1]) / 2
    x = self.cur_sample
    self.cur_sample = nil
  elseif #ets == 2 then
    eps = (ets[2] * 3 - ets[1]) / 2
  elseif #ets == 3 then
    eps = (ets[3] * 23 - ets[2] * 16 + ets[1] * 5) / 12
  else
    eps = (ets[4] * 55 - ets[3] * 59 + ets[2] * 37 - ets[1] * 9) / 24
  end
  self.counter = self.counter + 1
  return self:prev_sample(x, t, prev_t, eps)
end

return PNDM
