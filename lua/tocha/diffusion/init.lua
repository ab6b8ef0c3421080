-- tocha.diffusion: noise schedules and samplers with one interface
-- (set_timesteps(n), timesteps, scale_model_input(x, t), step(model_output, t, x, opts)
-- -> prev, pred_x0) and the training-side helpers (add_noise, get_velocity, snr,
-- min_snr_weights). Configs take diffusers' option names and defaults.
local D = {}
D.Schedule = require "tocha.diffusion.schedule"
D.DDIM = require("tocha.diffusion.ddim").new
D.DDPM = require("tocha.diffusion.ddpm").new
D.Euler = require("tocha.diffusion.euler").Euler
D.EulerAncestral = require("tocha.diffusion.euler").EulerAncestral
D.Heun = require("tocha.diffusion.heun").Heun
D.DPMSolverMultistep = require("tocha.diffusion.dpmsolver").DPMSolverMultistep
D.UniPC = require("tocha.diffusion.unipc").UniPC
D.PNDM = require("tocha.diffusion.pndm").new
D.sample = require "tocha.diffusion.sample"
D.samplers = require "tocha.diffusion.registry"
D.StableDiffusion = require "tocha.diffusion.pipeline"
return D
