-- tests/test_diffusion.lua: noise schedules and samplers against diffusers' reference
-- trajectories (tests/ref/gen_schedulers.py), and the training-side helpers.
local T = require "tocha"
local D = require "tocha.diffusion"
local ref = dofile(T.testing.path("ref/schedulers_ref.lua"))

local function tensor(vals) return T.tensor(vals, { dtype = "f64" }):view(ref.shape) end

local tests = {}

for name, case in pairs(ref.cases) do
  tests["matches diffusers: " .. name] = function()
    local s = D[case.sampler](case.config)
    s:set_timesteps(case.steps)
    -- rescaled betas go through torch's f32 sqrt, which its vector code rounds within an ulp
    -- rather than exactly, and 1 - alpha cancels at low noise: those cases agree to 5e-5
    local rtol = case.config.rescale_betas_zero_snr and 5e-5 or 1e-6
    assert(#s.timesteps == #case.timesteps, "number of timesteps")
    for i, t in ipairs(case.timesteps) do
      assert(math.abs(s.timesteps[i] - t) <= 1e-6 * math.abs(t), string.format("timestep %d: %.9g vs %.9g", i, s.timesteps[i], t))
    end
    for i, v in ipairs(case.sigmas or {}) do
      assert(math.abs(s.sigmas[i] - v) <= rtol * v, string.format("sigma %d: %.9g vs %.9g", i, s.sigmas[i], v))
    end
    if case.init_noise_sigma then
      assert(math.abs(s.init_noise_sigma - case.init_noise_sigma) <= 1e-6 * case.init_noise_sigma, "init_noise_sigma")
    end
    local ab = s.alphas_cumprod[#s.alphas_cumprod]
    assert(math.abs(ab - case.alphas_cumprod_last) <= 1e-6 * math.abs(case.alphas_cumprod_last) + 1e-12)
    local x = tensor(ref.x_init)
    local eps0 = tensor(ref.noises[1])
    for i, st in ipairs(case.trajectory) do
      local t = s.timesteps[i] -- the fixture prints f32 values to 9 digits: use our exact ones
      local out = s:scale_model_input(x, t) * 0.5 + eps0 * math.cos(t * 0.01)
      local opts = { noise = tensor(ref.noises[st.noise + 1]) }
      for k, v in pairs(case.opts) do opts[k] = v end
      local prev, x0 = s:step(out, t, x, opts)
      local tol = { rtol = math.max(rtol, 1e-5), atol = 1e-6 }
      T.testing.assert_close(x0, tensor(st.x0), { rtol = tol.rtol, atol = tol.atol, msg = name .. " x0 at step " .. i })
      T.testing.assert_close(prev, tensor(st.prev), { rtol = tol.rtol, atol = tol.atol, msg = name .. " prev at step " .. i })
      x = tensor(st.prev) -- follow the reference so errors do not compound
    end
  end
end

tests["add_noise, get_velocity and snr agree with their definitions"] = function()
  local s = D.DDPM { beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012 }
  local x0, noise = T.randn({ 3, 2, 4, 4 }, { dtype = "f64" }), T.randn({ 3, 2, 4, 4 }, { dtype = "f64" })
  local ts = T.tensor({ 0, 499, 999 }, { dtype = "i64" })
  local xt = s:add_noise(x0, noise, ts)
  local v = s:get_velocity(x0, noise, ts)
  for i, t in ipairs({ 0, 499, 999 }) do
    local ab = s.alphas_cumprod[t + 1]
    T.testing.assert_close(xt[i], x0[i] * math.sqrt(ab) + noise[i] * math.sqrt(1 - ab))
    T.testing.assert_close(v[i], noise[i] * math.sqrt(ab) - x0[i] * math.sqrt(1 - ab))
  end
  local snr = s:snr(ts)
  assert(snr.dtype == "f32" and snr.device == ts.device)
  T.testing.assert_close(snr[1], T.tensor(s.alphas_cumprod[1] / (1 - s.alphas_cumprod[1])), { rtol = 1e-6 })
  local w = s:min_snr_weights(ts, 5)
  assert(math.abs(w[1]:item() - 5 / snr[1]:item()) < 1e-5, "min-snr clips high-SNR weights")
  assert(math.abs(w[3]:item() - 1) < 1e-6, "min-snr keeps low-SNR weights at 1")
  local sv = D.DDPM { beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012, prediction_type = "v_prediction" }
  T.testing.assert_close(sv:min_snr_weights(ts, 5), snr:minimum(T.full({ 3 }, 5)) / (snr + 1), { rtol = 1e-6 })
  local sx = D.DDPM { beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012, prediction_type = "sample" }
  T.testing.assert_close(sx:min_snr_weights(ts, 5), snr:minimum(T.full({ 3 }, 5)), { rtol = 1e-6 })
end

tests["sample_timesteps: uniform, or biased to the noisy end by a power"] = function()
  local s = D.DDPM { beta_schedule = "squaredcos_cap_v2" }
  T.manual_seed(3)
  for _, power in ipairs({ 1, 0.5, 0.25 }) do
    local ts = s:sample_timesteps(20000, { power = power })
    assert(ts.dtype == "i64" and ts.shape[1] == 20000)
    assert(ts:min():item() >= 0 and ts:max():item() <= 999, "in range")
    -- E[t] = N / (power + 1) - 1/2 (integer part of N u^power); the mean of 20000 draws is
    -- within 1% of N of it
    local mean = ts:to("f64"):mean():item()
    local want = 1000 / (power + 1) - 0.5
    assert(math.abs(mean - want) < 10, string.format("power %g: mean %.1f, expected %.1f", power, mean, want))
    -- the fraction below N / 4: (1/4)^(1/power)
    local low = (ts:lt(250)):to("f64"):mean():item()
    assert(math.abs(low - 0.25 ^ (1 / power)) < 0.015, string.format("power %g: %.3f below 250", power, low))
  end
  assert(s:sample_timesteps(0).shape[1] == 0)
  T.testing.assert_raises("power must be a number > 0", function() s:sample_timesteps(4, { power = 0 }) end)
  T.testing.assert_raises("power must be a number > 0", function() s:sample_timesteps(4, { power = "x" }) end)
end

tests["the worked example in docs/schedulers.md reproduces DDIM"] = function()
  local f = assert(io.open(T.testing.path("../docs/schedulers.md")))
  local text = f:read("a")
  f:close()
  local code = text:match("```lua\n(%-%- my_ddim%.lua.-)```")
  assert(code, "example not found in docs/schedulers.md")
  local MyDDIM = assert(load(code, "=my_ddim.lua"))()
  local cfg = { beta_schedule = "scaled_linear", beta_start = 0.00085, beta_end = 0.012, clip_sample = false,
                set_alpha_to_one = true, prediction_type = "v_prediction" }
  local mine, ref = MyDDIM.new(cfg), D.DDIM(cfg)
  mine:set_timesteps(20)
  ref:set_timesteps(20)
  local x = T.randn({ 2, 3, 4, 4 }, { dtype = "f64" })
  local y = x
  for i, t in ipairs(ref.timesteps) do
    assert(mine.timesteps[i] == t)
    local out = x * 0.3 + math.sin(t)
    x = ref:step(out, t, x)
    y = mine:step(y * 0.3 + math.sin(t), t, y)
    T.testing.assert_close(y, x, { rtol = 1e-12, atol = 1e-12 })
  end
end

tests["the sigma-space example in docs/schedulers.md reproduces Euler, starting noise included"] = function()
  local code = T.testing.read_file(T.testing.path("../docs/schedulers.md")):match("```lua\n(%-%- my_euler%.lua.-)```")
  assert(code, "example not found in docs/schedulers.md")
  local MyEuler = assert(load(code, "=my_euler.lua"))()
  for _, cfg in ipairs({ { prediction_type = "v_prediction" }, { beta_schedule = "scaled_linear", beta_start = 0.00085,
      beta_end = 0.012, use_karras_sigmas = true }, { timestep_spacing = "leading", steps_offset = 1 } }) do
    local mine, ref = MyEuler.new(cfg), D.Euler(cfg)
    mine:set_timesteps(12)
    ref:set_timesteps(12)
    assert(mine.init_noise_sigma == ref.init_noise_sigma and mine.order == 1, "init_noise_sigma")
    local x = T.randn({ 2, 3, 4, 4 }, { dtype = "f64" })
    local y = x
    for i, t in ipairs(ref.timesteps) do
      assert(mine.timesteps[i] == t)
      T.testing.assert_close(mine:scale_model_input(y, t), ref:scale_model_input(x, t), { rtol = 0, atol = 0 })
      x = ref:step(x * 0.3 + math.sin(t), t, x)
      y = mine:step(y * 0.3 + math.sin(t), t, y)
      T.testing.assert_close(y, x, { rtol = 1e-12, atol = 1e-12 })
    end
  end
  assert(D.Heun {}.order == 2 and D.DDIM {}.order == 1 and D.DPMSolverMultistep {}.order == 1, "order, as diffusers")
end

tests["a sampler file is a sampler name: the registry builds it on a model's noise schedule"] = function()
  local R = D.samplers
  local dir = T.testing.tmpdir()
  local code = T.testing.read_file(T.testing.path("../docs/schedulers.md")):match("```lua\n(%-%- my_euler%.lua.-)```")
  T.testing.write_file(dir .. "/my_euler.lua", code)
  local base = { beta_schedule = "squaredcos_cap_v2", prediction_type = "v_prediction", clip_sample = false }
  local mine, ref = R.by_name(dir .. "/my_euler.lua", base), R.by_name("euler", base)
  assert(mine.config.beta_schedule == "squaredcos_cap_v2" and mine.config.prediction_type == "v_prediction")
  mine:set_timesteps(8)
  ref:set_timesteps(8)
  assert(mine.init_noise_sigma == ref.init_noise_sigma and mine.timesteps[2] == ref.timesteps[2])
  assert(R.check("euler_ancestral") == nil and R.check(dir .. "/my_euler.lua") == nil)
  assert(R.check("eulr"):find("must be a sampler %(ddim"), R.check("eulr"))
  assert(R.check(dir .. "/none.lua"):find("does not exist"))
  T.testing.write_file(dir .. "/bad.lua", "return 5")
  T.testing.raises("the file must return a sampler class", function() return R.by_name(dir .. "/bad.lua", base) end)
  assert(getmetatable(R.by_name("euler_ancestral", base)) == require("tocha.diffusion.euler_ancestral"))
  -- DPM-Solver++'s euler_at_final passes through a scheduler_config.json
  local s = R.from_diffusers({ _class_name = "DPMSolverMultistepScheduler", euler_at_final = true })
  assert(s.config.euler_at_final == true and R.to_diffusers(s).euler_at_final == true)
end

-- a stand-in text stack: the "encoder" maps each prompt's ids to one number per row
local fake_tok = { encode = function(_, prompts)
  local rows = {}
  for i, p in ipairs(prompts) do rows[i] = { #p } end
  return { input_ids = T.tensor(rows, { dtype = "i64" }) }
end }
local function fake_encoder(ids) return ids:double():view(ids.shape[1], 1, 1) end

tests["sample: guidance batches cond and uncond, is deterministic, keeps the RNG stream"] = function()
  local calls = {}
  local function model(x, ts, ctx)
    calls[#calls + 1] = { batch = x.shape[1], t = ts[1]:item() }
    assert(ts.dtype == "f32" and ts.shape[1] == x.shape[1])
    return x * 0.1 + ctx:view(ctx.shape[1], 1, 1, 1) * 0.01
  end
  local function run(seed)
    return D.sample { model = model, text_encoder = fake_encoder, tokenizer = fake_tok, prompts = { "ab", "abcd" },
      scheduler = D.DDIM { clip_sample = false }, steps = 5, height = 4, width = 4, channels = 3, seed = seed,
      guidance_scale = 3 }
  end
  T.manual_seed(7)
  local before = T.get_rng_state()
  local a = run(11)
  local after = T.get_rng_state()
  assert(after.seed == before.seed and after.offset == before.offset, "the caller's RNG stream is untouched")
  assert(#calls == 5 and calls[1].batch == 4, "one batched model call per step")
  T.testing.assert_close(run(11), a, { rtol = 0, atol = 0 })
  assert(not run(12):allclose(a), "another seed, another sample")
  -- the same loop written out: uncond rows first, guidance 3
  local s = D.DDIM { clip_sample = false }
  s:set_timesteps(5)
  T.manual_seed(11)
  local x = T.randn({ 2, 3, 4, 4 }, { dtype = "f64" })
  local ctx = T.tensor({ 0, 0, 2, 4 }, { dtype = "f64" })
  for _, t in ipairs(s.timesteps) do
    local out = T.cat({ x, x }, 1) * 0.1 + ctx:view(4, 1, 1, 1) * 0.01
    local u, c = out:narrow(1, 1, 2), out:narrow(1, 3, 2)
    x = s:step(u + (c - u) * 3, t, x)
  end
  T.testing.assert_close(a, x, { rtol = 1e-12, atol = 1e-12 })
end

tests["sample: the model gets the sampler's fractional timesteps, as diffusers passes them"] = function()
  -- Euler's 50 linspace steps are 999, 978.6122..., 958.2245...: the model sees those, not
  -- 978 and 958; DDIM's integers reach it unchanged
  for _, case in ipairs({ { D.Euler {}, 978.6122 }, { D.DDIM {}, 960 }, { D.Heun {}, 978.6122 } }) do
    local seen = {}
    local function model(x, ts) seen[#seen + 1] = ts[1]:item(); return x * 0.1 end
    D.sample { model = model, text_encoder = fake_encoder, tokenizer = fake_tok, prompts = { "a" }, steps = 50,
      scheduler = case[1], height = 2, width = 2, channels = 1, seed = 1, guidance_scale = 1 }
    for i, t in ipairs(case[1].timesteps) do
      assert(seen[i] == t, string.format("step %d: the model saw %.9g, the sampler's timestep is %.9g", i, seen[i], t))
    end
    assert(math.abs(seen[2] - case[2]) < 1e-4, string.format("second timestep %.9g", seen[2]))
  end
  -- integer timesteps as f32 give the UNet's output bit for bit as i64 ones (DDIM's samples stay)
  local models = require "tocha.models"
  local unet = models.UNet2DConditionModel(models.presets.tiny_unet, { sample_size = 8 })
  local x, ctx = T.randn({ 2, 3, 8, 8 }), T.randn({ 2, 4, 64 })
  local a = unet(x, T.tensor({ 961, 21 }, { dtype = "i64" }), ctx)
  T.testing.assert_close(unet(x, T.tensor({ 961, 21 }, { dtype = "f32" }), ctx), a, { rtol = 0, atol = 0 })
end

tests["sample: the noise starts at init_noise_sigma; a sampler without one is an error"] = function()
  local S = require "tocha.diffusion.schedule"
  local K = require "tocha.diffusion.sigmas"
  local o = { model = function(x) return x end, text_encoder = fake_encoder, tokenizer = fake_tok, prompts = { "a" },
    steps = 10, height = 4, width = 4, channels = 1, seed = 1, guidance_scale = 1 }
  -- a sigma-space sampler whose set_timesteps forgets the starting scale is refused, not run from unit noise
  local Forgetful = S.class({ timestep_spacing = "linspace" }, K)
  function Forgetful:set_timesteps(n) self.timesteps, self.sigmas = self:sigma_schedule(n) end
  function Forgetful:step(_, _, x) return x end
  o.scheduler = Forgetful.new {}
  T.testing.raises("init_noise_sigma", D.sample, o)
  -- one on the base's set_timesteps starts at the largest sigma, as diffusers' Euler
  local Plain = S.class({ timestep_spacing = "linspace" }, K)
  function Plain:step(_, _, x) return x end
  local first
  o.model = function(x) first = first or x:clone(); return x end
  o.scheduler = Plain.new {}
  local out = D.sample(o)
  local euler = D.Euler {}
  euler:set_timesteps(10)
  assert(o.scheduler.init_noise_sigma == euler.init_noise_sigma and euler.init_noise_sigma > 14, "sigma_max")
  T.manual_seed(1)
  local noise = T.randn({ 1, 1, 4, 4 })
  T.testing.assert_close(out, noise * euler.init_noise_sigma, { rtol = 1e-6, atol = 0 })
  T.testing.assert_close(first, euler:scale_model_input(noise * euler.init_noise_sigma, euler.timesteps[1]), { rtol = 1e-6 })
  -- data-space samplers start from unit noise
  for _, s in ipairs({ D.DDIM {}, D.DDPM {}, D.DPMSolverMultistep {}, D.UniPC {} }) do
    s:set_timesteps(4)
    assert(s.init_noise_sigma == 1.0)
  end
end

tests["zero terminal SNR: the sigma-space samplers start at sigma 4096, not infinity"] = function()
  for _, name in ipairs({ "Euler", "EulerAncestral", "Heun", "DPMSolverMultistep", "UniPC" }) do
    local s = D[name] { rescale_betas_zero_snr = true, timestep_spacing = "trailing", prediction_type = "v_prediction" }
    s:set_timesteps(10)
    assert(s.alphas_cumprod[1000] == 2 ^ -24, name)
    assert(math.abs(s.sigmas[1] - 4096) < 1e-3, name .. ": sigma_max " .. s.sigmas[1])
    local x = D.sample { model = function(x) return x * 0.1 end, text_encoder = fake_encoder, tokenizer = fake_tok,
      prompts = { "a" }, steps = 10, scheduler = s, height = 2, width = 2, channels = 1, seed = 1, guidance_scale = 1 }
    assert(x:isfinite():logical_not():sum():item() == 0, name .. ": finite samples")
  end
end

tests["sample: guidance_rescale mixes toward the conditional std"] = function()
  local function model(x, _, ctx) return x * (ctx:view(ctx.shape[1], 1, 1, 1) * 0.1 + 0.2) end
  local o = { model = model, text_encoder = fake_encoder, tokenizer = fake_tok, prompts = { "abc" }, steps = 3,
    height = 2, width = 2, channels = 1, seed = 1, guidance_scale = 5 }
  o.scheduler = D.Euler {}
  local plain = D.sample(o)
  o.scheduler, o.guidance_rescale = D.Euler {}, 0.7
  local rescaled = D.sample(o)
  assert(not plain:allclose(rescaled), "rescale changes the result")
  assert(rescaled:isfinite():logical_not():sum():item() == 0)
end

tests["sample: guidance_interval guides only the steps inside it"] = function()
  local batches = {}
  local function model(x, ts, ctx)
    batches[#batches + 1] = { x.shape[1], ts[1]:item() }
    return x * 0.1 + ctx:view(ctx.shape[1], 1, 1, 1) * 0.01
  end
  local o = { model = model, text_encoder = fake_encoder, tokenizer = fake_tok, prompts = { "ab", "abcd" }, steps = 5,
    scheduler = D.DDIM { clip_sample = false }, height = 2, width = 2, channels = 1, seed = 3, guidance_scale = 4,
    guidance_interval = { 300, 700 } }
  local a = D.sample(o)
  -- the same loop written out: two rows (conditional only) outside [300, 700], four inside
  local s = D.DDIM { clip_sample = false }
  s:set_timesteps(5)
  T.manual_seed(3)
  local x = T.randn({ 2, 1, 2, 2 }, { dtype = "f64" })
  local cond = T.tensor({ 2, 4 }, { dtype = "f64" }):view(2, 1, 1, 1) * 0.01
  for i, t in ipairs(s.timesteps) do
    local inside = t >= 300 and t <= 700
    assert(batches[i][2] == t and batches[i][1] == (inside and 4 or 2), "step " .. i .. ": batch " .. batches[i][1])
    local c, u = x * 0.1 + cond, x * 0.1
    x = s:step(inside and u + (c - u) * 4 or c, t, x)
  end
  assert(#batches == 5)
  T.testing.assert_close(a, x, { rtol = 1e-12, atol = 1e-12 })
  -- an interval covering every step is plain guidance
  o.scheduler, o.guidance_interval = D.DDIM { clip_sample = false }, { 0, 1000 }
  local all = D.sample(o)
  o.scheduler, o.guidance_interval = D.DDIM { clip_sample = false }, nil
  T.testing.assert_close(all, D.sample(o), { rtol = 0, atol = 0 })
  o.guidance_interval = { 700, 300 }
  local ok, err = pcall(D.sample, o)
  assert(not ok and err:find("guidance_interval"), err)
end

tests["sample: extra conditioning from the text encoder is batched like the context"] = function()
  -- the encoder's second result: a table of extra tensors (a pooled embedding), as diffusers'
  -- added_cond_kwargs; a tensor there (CLIPTextModel's pooled output) is no such table
  local function encoder(ids) return fake_encoder(ids), { class_labels = ids:double() * 10, note = "kept" } end
  local seen = {}
  local function model(x, ts, ctx, added)
    seen[#seen + 1] = added
    return x * 0.1 + ctx:view(ctx.shape[1], 1, 1, 1) * 0.01 + added.class_labels:view(-1, 1, 1, 1) * 0.001
  end
  local o = { model = model, text_encoder = encoder, tokenizer = fake_tok, prompts = { "ab", "abcd" }, steps = 4,
    scheduler = D.DDIM { clip_sample = false }, height = 2, width = 2, channels = 1, seed = 5, guidance_scale = 3,
    guidance_interval = { 0, 500 } }
  local a = D.sample(o)
  local s = D.DDIM { clip_sample = false }
  s:set_timesteps(4)
  T.manual_seed(5)
  local x = T.randn({ 2, 1, 2, 2 }, { dtype = "f64" })
  for i, t in ipairs(s.timesteps) do
    local guided = t <= 500
    local labels = {}
    for k, v in ipairs(seen[i].class_labels:view(-1):tolist()) do labels[k] = string.format("%g", v) end
    assert(seen[i].note == "kept")
    assert(table.concat(labels, ",") == (guided and "0,0,20,40" or "20,40"), "step " .. i .. ": " .. table.concat(labels, ","))
    local c = x * 0.1 + T.tensor({ 2, 4 }, { dtype = "f64" }):view(2, 1, 1, 1) * (0.01 + 0.01)
    local u = x * 0.1
    x = s:step(guided and u + (c - u) * 3 or c, t, x)
  end
  T.testing.assert_close(a, x, { rtol = 1e-12, atol = 1e-12 })
  -- without a table, the model gets nil
  local got = false
  D.sample { model = function(xx, _, _, added) got = got or added ~= nil; return xx end, tokenizer = fake_tok,
    text_encoder = function(ids) return fake_encoder(ids), T.zeros({ 1 }) end, prompts = { "a" }, steps = 2,
    scheduler = D.DDIM {}, height = 2, width = 2, channels = 1, seed = 1 }
  assert(not got, "a tensor as the encoder's second result is not extra conditioning")
end

tests["bad configs and calls give clear errors"] = function()
  local ok, err = pcall(D.DDIM, { beta_schedule = "nope" })
  assert(not ok and err:find("unknown beta_schedule"), err)
  ok, err = pcall(D.DDIM, { prediction_type = "noise" })
  assert(not ok and err:find("prediction_type"), err)
  ok, err = pcall(D.DDIM, { betas = 3 })
  assert(not ok and err:find("unknown scheduler option 'betas'"), err)
  local s = D.DDIM {}
  ok, err = pcall(s.set_timesteps, s, 5000)
  assert(not ok and err:find("1..1000"), err)
  ok, err = pcall(s.step, s, T.zeros({ 1 }), 10, T.zeros({ 1 }))
  assert(not ok and err:find("set_timesteps"), err)
  ok, err = pcall(D.sample, { model = function() end })
  assert(not ok and err:find("missing option"), err)
end

return tests
