# tests/ref/gen_schedulers.py: reference trajectories from diffusers' schedulers for
# tests/test_diffusion.lua. Run by hand (pip install torch diffusers):
#   python3 tests/ref/gen_schedulers.py   -> tests/ref/schedulers_ref.lua
# For each config: timesteps for n steps, then a short trajectory where the "model" is a
# fixed function of (x, t) and every noise draw is taken from a recorded list, so the
# Lua side can replay it exactly.
import math, os
import torch
import importlib
from diffusers import (DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
                       HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler)

torch.manual_seed(0)
SHAPE = (1, 2, 3, 3)
x_init = torch.randn(SHAPE, dtype=torch.float64)
NOISES = [torch.randn(SHAPE, dtype=torch.float64) for _ in range(60)]


def model(x, t):
    return 0.5 * x + math.cos(t * 0.01) * NOISES[0]


SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
CASES = [
    ("ddim_sd", DDIMScheduler, dict(SD, steps_offset=1, set_alpha_to_one=False, clip_sample=False), 10, dict(eta=0.0)),
    ("ddim_eta", DDIMScheduler, dict(SD, steps_offset=1, set_alpha_to_one=False, clip_sample=False), 8, dict(eta=0.7)),
    ("ddim_v_trailing_zsnr", DDIMScheduler, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing",
                                                  rescale_betas_zero_snr=True, clip_sample=False), 7, dict(eta=0.0)),
    ("ddim_linspace_clip", DDIMScheduler, dict(beta_schedule="linear", timestep_spacing="linspace"), 9, dict(eta=0.0)),
    ("ddim_cos_sample", DDIMScheduler, dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                                             clip_sample=False), 6, dict(eta=0.0)),
    ("ddpm_sd", DDPMScheduler, dict(SD, clip_sample=False), 10, dict()),
    ("euler_sd", EulerDiscreteScheduler, dict(SD, steps_offset=1), 10, dict()),
    ("euler_karras_v", EulerDiscreteScheduler, dict(SD, use_karras_sigmas=True, prediction_type="v_prediction"), 8, dict()),
    ("euler_linspace", EulerDiscreteScheduler, dict(SD, timestep_spacing="linspace"), 7, dict()),
    ("euler_trailing", EulerDiscreteScheduler, dict(SD, timestep_spacing="trailing"), 7, dict()),
    ("euler_ancestral_sd", EulerAncestralDiscreteScheduler, dict(SD, steps_offset=1), 8, dict()),
    ("euler_ancestral_v_linspace", EulerAncestralDiscreteScheduler, dict(SD, prediction_type="v_prediction",
                                                                         timestep_spacing="linspace"), 6, dict()),
    ("heun_sd", HeunDiscreteScheduler, dict(SD), 6, dict()),
    ("heun_karras_v", HeunDiscreteScheduler, dict(SD, use_karras_sigmas=True, prediction_type="v_prediction"), 5, dict()),
    ("dpmpp2m_sd", DPMSolverMultistepScheduler, dict(SD), 10, dict()),
    ("dpmpp2m_karras", DPMSolverMultistepScheduler, dict(SD, use_karras_sigmas=True), 12, dict()),
    ("dpmpp2m_v_heun_leading", DPMSolverMultistepScheduler, dict(SD, prediction_type="v_prediction", solver_type="heun",
                                                                  timestep_spacing="leading", steps_offset=1), 8, dict()),
    ("dpmpp2m_long_trailing", DPMSolverMultistepScheduler, dict(SD, timestep_spacing="trailing"), 20, dict()),
    ("dpmpp1_sample", DPMSolverMultistepScheduler, dict(SD, solver_order=1, prediction_type="sample"), 6, dict()),
    ("unipc_sd", UniPCMultistepScheduler, dict(SD), 10, dict()),
    ("unipc_order3_karras", UniPCMultistepScheduler, dict(SD, solver_order=3, use_karras_sigmas=True), 12, dict()),
    ("unipc_bh1_v_trailing", UniPCMultistepScheduler, dict(SD, solver_type="bh1", prediction_type="v_prediction", final_sigmas_type="sigma_min",
                                                            timestep_spacing="trailing"), 8, dict()),
    ("unipc_long", UniPCMultistepScheduler, dict(SD, disable_corrector=[0, 3]), 20, dict()),
    # zero terminal SNR: the sigma-space samplers clamp the last alpha_bar to 2^-24 (sigma_max 4096)
    ("euler_zsnr_v_trailing", EulerDiscreteScheduler, dict(SD, rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                                           timestep_spacing="trailing"), 8, dict()),
    ("euler_ancestral_zsnr_leading", EulerAncestralDiscreteScheduler, dict(SD, rescale_betas_zero_snr=True,
        prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1), 6, dict()),
    ("dpmpp2m_zsnr_euler_final", DPMSolverMultistepScheduler, dict(SD, rescale_betas_zero_snr=True,
        prediction_type="v_prediction", timestep_spacing="trailing", final_sigmas_type="sigma_min", euler_at_final=True), 20, dict()),
    ("unipc_zsnr_v_trailing", UniPCMultistepScheduler, dict(SD, rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                                            timestep_spacing="trailing"), 8, dict()),
    ("ddpm_large_v", DDPMScheduler, dict(SD, variance_type="fixed_large", prediction_type="v_prediction",
                                         timestep_spacing="trailing", clip_sample=False), 6, dict()),
]


def lua_list(vals, fmt="%.17g"):
    return "{" + ", ".join(fmt % v for v in vals) + "}"


out = ["-- made by tests/ref/gen_schedulers.py from diffusers; do not edit", "return {"]
out.append("  shape = {%s}," % ", ".join(map(str, SHAPE)))
out.append("  x_init = %s," % lua_list(x_init.flatten().tolist()))
out.append("  noises = {")
for n in NOISES[:12]:
    out.append("    %s," % lua_list(n.flatten().tolist()))
out.append("  },")
out.append("  cases = {")
for name, cls, cfg, steps, kw in CASES:
    s = cls(**cfg)
    s.set_timesteps(steps)
    x = x_init.clone()
    states = []
    k = 1
    for t in s.timesteps.tolist():
        mi = s.scale_model_input(x.float(), t).double()
        mo = 0.5 * mi + math.cos(t * 0.01) * NOISES[0]
        noise = NOISES[k]
        mod = importlib.import_module(cls.__module__)
        orig = getattr(mod, "randn_tensor", None)
        mod.randn_tensor = lambda *a, **kk: noise.float()
        if cls is DDIMScheduler:
            r = s.step(mo.float(), t, x.float(), variance_noise=noise.float() if kw.get("eta", 0) > 0 else None, **kw)
        else:
            r = s.step(mo.float(), t, x.float())
        mod.randn_tensor = orig
        x = r.prev_sample.double()
        x0 = r.pred_original_sample if hasattr(r, "pred_original_sample") else s.model_outputs[-1]
        states.append((t, k, x.flatten().tolist(), x0.double().flatten().tolist()))
        k = k + 1 if k < 11 else 1
    cfg_lua = ", ".join("%s = %s" % (kk, ("%r" % vv).replace("'", '"').replace("True", "true").replace("False", "false")
                                     .replace("[", "{").replace("]", "}"))
                        for kk, vv in cfg.items())
    kw_lua = ", ".join("%s = %r" % kv for kv in kw.items())
    sampler = {DDIMScheduler: "DDIM", DDPMScheduler: "DDPM", EulerDiscreteScheduler: "Euler",
               EulerAncestralDiscreteScheduler: "EulerAncestral", HeunDiscreteScheduler: "Heun",
               DPMSolverMultistepScheduler: "DPMSolverMultistep", UniPCMultistepScheduler: "UniPC"}[cls]
    out.append("    %s = { sampler = %r, steps = %d, config = {%s}, opts = {%s}," % (name, sampler, steps, cfg_lua, kw_lua))
    if hasattr(s, "sigmas"):
        out.append("      sigmas = %s," % lua_list(s.sigmas.tolist(), "%.9g"))
        out.append("      init_noise_sigma = %.9g," % float(s.init_noise_sigma))
    out.append("      timesteps = %s," % lua_list(s.timesteps.tolist(), "%.9g"))
    out.append("      alphas_cumprod_last = %.17g," % s.alphas_cumprod[-1].item())
    out.append("      trajectory = {")
    for t, k2, xs, x0 in states:
        out.append("        { t = %.9g, noise = %d, prev = %s, x0 = %s }," % (t, k2, lua_list(xs, "%.9g"), lua_list(x0, "%.9g")))
    out.append("      },")
    out.append("    },")
out.append("  },")
out.append("}")
text = "\n".join(out) + "\n"
assert "nan" not in text and "inf" not in text.replace("info", ""), "a reference trajectory is not finite"
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedulers_ref.lua")
with open(path, "w") as f:
    f.write(text)
print("wrote", path)
