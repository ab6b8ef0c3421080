-- tocha.diffusion: noise schedules and samplers with one interface
-- (set_timesteps(n), timesteps, scale_model_input(x, t), step(model_output, t, x, opts)
-- -> prev, pred_x0) and the training-side helpers (add_noise, get_velocity, snr,
-- min_snr_weights). Configs take diffusers' option names and defaults. Each sampler is
-- one file returning its class (S.class in schedule.lua); D.<Name>(cfg) is its new.
local D = {}
D.Schedule = require "tocha.diffusion.schedule"
D.sample = require "tocha.diffusion.sample"

local SAMPLERS = {
  DDIM = "ddim", DDPM = "ddpm", Euler = "euler", EulerAncestral = "euler_ancestral", Heun = "heun",
  DPMSolverMultistep = "dpmsolver", UniPC = "unipc", PNDM = "pndm",
}
for name, file in pairs(SAMPLERS) do D[name] = require("tocha.diffusion." .. file).new end
D.samplers = require "tocha.diffusion.registry"
D.StableDiffusion = require "tocha.diffusion.pipeline"

return D
