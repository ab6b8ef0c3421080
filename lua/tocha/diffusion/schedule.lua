-- tocha/diffusion/schedule.lua: the noise schedule every sampler shares: betas (linear,
-- scaled_linear, squaredcos_cap_v2, optional zero terminal SNR), cumulative alphas,
-- timestep spacing, and the training-side helpers (add_noise, get_velocity, snr); and
-- S.class, which makes each sampler's class. Constants are plain Lua numbers computed in
-- f64; samplers apply them to tensors.
local T = require "tocha"

local S = {}
S.__index = S
S.order = 1 -- model evaluations per step, as diffusers' scheduler.order (Heun: 2)

--- S.f32(x): x rounded to f32. torch computes the schedules in f32; rounding through f32
--- keeps us within 1e-7 of diffusers
local function f32(x) return (string.unpack("f", string.pack("f", x))) end
S.f32 = f32

--- S.round_half_even(x): x rounded to an integer as numpy rounds (half to even)
function S.round_half_even(x)
  local r = math.floor(x + 0.5)
  if x - math.floor(x) == 0.5 and r % 2 == 1 then r = r - 1 end
  return r
end

local function linspace(a, b, n)
  local out, step = {}, n > 1 and (b - a) / (n - 1) or 0
  for i = 0, n - 1 do out[i + 1] = f32(i < n / 2 and a + step * i or b - step * (n - 1 - i)) end
  return out
end

local function betas_for(cfg)
  local n = cfg.num_train_timesteps
  if cfg.trained_betas then return cfg.trained_betas end
  if cfg.beta_schedule == "linear" then return linspace(cfg.beta_start, cfg.beta_end, n) end
  if cfg.beta_schedule == "scaled_linear" then
    local r = linspace(math.sqrt(cfg.beta_start), math.sqrt(cfg.beta_end), n)
    for i, v in ipairs(r) do r[i] = f32(v * v) end
    return r
  end
  if cfg.beta_schedule == "squaredcos_cap_v2" then
    local function alpha_bar(t) return math.cos((t + 0.008) / 1.008 * math.pi / 2) ^ 2 end
    local r = {}
    for i = 0, n - 1 do r[i + 1] = f32(math.min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999)) end
    return r
  end
  -- betas_for <- S.new <- a class's new <- its caller
  error("unknown beta_schedule '" .. tostring(cfg.beta_schedule) .. "' (linear, scaled_linear, squaredcos_cap_v2)", 4)
end

-- Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", Alg. 1
local function rescale_zero_terminal_snr(betas)
  local n, acc, sq = #betas, 1, {}
  for i = 1, n do acc = acc * (1 - betas[i]); sq[i] = math.sqrt(acc) end
  local s0, sT = sq[1], sq[n]
  for i = 1, n do sq[i] = (sq[i] - sT) * s0 / (s0 - sT) end
  local out, prev = {}, nil
  for i = 1, n do
    local ab = sq[i] * sq[i]
    out[i] = f32(1 - (prev and ab / prev or ab))
    prev = ab
  end
  return out
end

local DEFAULTS = {
  num_train_timesteps = 1000, beta_start = 0.0001, beta_end = 0.02, beta_schedule = "linear",
  prediction_type = "epsilon", timestep_spacing = "leading", steps_offset = 0,
  rescale_betas_zero_snr = false, clip_sample = true, clip_sample_range = 1.0, set_alpha_to_one = true,
}

--- S.new(cfg, defaults): a schedule with cfg's options over DEFAULTS (and a sampler's own)
function S.new(cfg, own_defaults)
  local c = {}
  for k, v in pairs(DEFAULTS) do c[k] = v end
  for k, v in pairs(own_defaults or {}) do c[k] = v end
  for k, v in pairs(cfg or {}) do
    if c[k] == nil and k ~= "trained_betas" then error("unknown scheduler option '" .. k .. "'", 3) end
    c[k] = v
  end
  local p = c.prediction_type
  if p ~= "epsilon" and p ~= "v_prediction" and p ~= "sample" then
    error("prediction_type must be epsilon, v_prediction or sample (got " .. tostring(p) .. ")", 3)
  end
  local betas = betas_for(c)
  if c.rescale_betas_zero_snr then betas = rescale_zero_terminal_snr(betas) end
  local ac, acc = {}, 1
  for i, b in ipairs(betas) do acc = acc * f32(1 - b); ac[i] = f32(acc) end
  -- init_noise_sigma: samplers stepping in data space start from unit noise (sigma-space ones
  -- set it from their sigmas)
  local s = setmetatable({ config = c, betas = betas, alphas_cumprod = ac, init_noise_sigma = 1.0 }, S)
  return s
end

--- S.class(defaults, base): a sampler class over base (S unless given), with its own option
--- defaults. C.new(cfg) makes an instance: the schedule for cfg, then C's init(self) if it has
--- one (which may raise with level 3, at the caller of new).
function S.class(defaults, base)
  local C = setmetatable({ defaults = defaults }, { __index = base or S })
  C.__index = C
  function C.new(cfg)
    local s = setmetatable(S.new(cfg, C.defaults), C)
    if s.init then s:init() end
    return s
  end
  return C
end

--- alpha_bar at timestep t (0-based diffusers timestep)
function S:alpha_bar(t) return self.alphas_cumprod[t + 1] end

--- check_steps(n, level): raises at level unless n is a number of inference steps (1..N)
function S:check_steps(n, level)
  local N = self.config.num_train_timesteps
  if math.type(n) ~= "integer" or n < 1 or n > N then
    error(string.format("set_timesteps: number of steps must be an integer in 1..%d (got %s)", N, tostring(n)), level + 1)
  end
end

--- timesteps for n inference steps, descending Lua integers, per timestep_spacing
function S:spaced_timesteps(n)
  local c = self.config
  local N = c.num_train_timesteps
  self:check_steps(n, 3)
  local ts = {}
  if c.timestep_spacing == "linspace" then
    local step = (N - 1) / math.max(n - 1, 1)
    for i = n - 1, 0, -1 do ts[#ts + 1] = math.floor(i * step + 0.5) end
    if n == 1 then ts = { 0 } end
  elseif c.timestep_spacing == "leading" then
    local ratio = N // n
    for i = n - 1, 0, -1 do ts[#ts + 1] = i * ratio + c.steps_offset end
  elseif c.timestep_spacing == "trailing" then
    local ratio, i = N / n, 0
    while N - i * ratio > 0 do
      ts[#ts + 1] = S.round_half_even(N - i * ratio) - 1
      i = i + 1
    end
  else
    error("timestep_spacing must be leading, trailing or linspace (got " .. tostring(c.timestep_spacing) .. ")", 3)
  end
  return ts
end

--- the samplers' defaults on integer timesteps (DDIM, DDPM): set_timesteps(n) spaces n of them
--- per timestep_spacing; the model's input needs no scaling
function S:set_timesteps(n)
  self.timesteps = self:spaced_timesteps(n)
  self.num_inference_steps = n
end

function S:scale_model_input(x) return x end

-- coefficients per sample as a tensor shaped [B, 1, 1, ...] for broadcasting over x
local function per_sample(self, ts, x, fn)
  local list = ts:tolist()
  if type(list) ~= "table" then list = { list } end
  local vals = {}
  for i, t in ipairs(list) do
    if t < 0 or t >= self.config.num_train_timesteps then
      error(string.format("timestep %d out of range 0..%d", t, self.config.num_train_timesteps - 1), 3)
    end
    vals[i] = fn(self.alphas_cumprod[t + 1])
  end
  local shape = { #vals }
  for _ = 2, #x.shape do shape[#shape + 1] = 1 end
  return T.tensor(vals, { dtype = x.dtype, device = x.device }):view(shape)
end

--- add_noise(x0, noise, ts): sqrt(ab) x0 + sqrt(1 - ab) noise; ts an i64 tensor of timesteps
function S:add_noise(x0, noise, ts)
  local a = per_sample(self, ts, x0, math.sqrt)
  local b = per_sample(self, ts, x0, function(ab) return math.sqrt(1 - ab) end)
  return a * x0 + b * noise
end

--- get_velocity(x0, noise, ts): the v-prediction target sqrt(ab) noise - sqrt(1 - ab) x0
function S:get_velocity(x0, noise, ts)
  local a = per_sample(self, ts, x0, math.sqrt)
  local b = per_sample(self, ts, x0, function(ab) return math.sqrt(1 - ab) end)
  return a * noise - b * x0
end

--- sample_timesteps(n, {power = 1}): n training timesteps as an i64 tensor: uniform over
--- 0..N-1 (power 1), or N * u^power for u uniform in [0, 1), which for power < 1 draws the
--- noisy end more often (density (t/N)^(1/power - 1) / power: at 0.5, twice as often as
--- uniform at t = N, never near t = 0)
function S:sample_timesteps(n, opts)
  local power = opts and opts.power or 1
  if type(power) ~= "number" or power <= 0 or power ~= power then
    error("sample_timesteps: power must be a number > 0 (got " .. tostring(power) .. ")", 2)
  end
  local N = self.config.num_train_timesteps
  if power == 1 then return T.randint(0, N, { n }) end
  return (T.rand({ n }):pow(power) * N):to("i64"):clamp(0, N - 1)
end

--- snr(ts): alpha_bar / (1 - alpha_bar) per timestep, an f32 tensor on ts's device
function S:snr(ts)
  local list = ts:tolist()
  local out = {}
  for i, t in ipairs(list) do local ab = self.alphas_cumprod[t + 1]; out[i] = ab / (1 - ab) end
  return T.tensor(out, { device = ts.device })
end

--- min_snr_weights(ts, gamma): Min-SNR-gamma loss weights (Hang et al. 2023) as diffusers'
--- train_text_to_image computes them: min(snr, gamma) / snr for epsilon, / (snr + 1) for v;
--- for sample (x0) prediction, whose plain loss is already snr times epsilon's, min(snr, gamma)
function S:min_snr_weights(ts, gamma)
  local snr = self:snr(ts)
  local clipped = snr:minimum(T.full(snr.shape, gamma, { device = snr.device }))
  local p = self.config.prediction_type
  if p == "v_prediction" then return clipped / (snr + 1) end
  if p == "sample" then return clipped end
  return clipped / snr
end

--- x0 and epsilon predicted from the model output at alpha_bar ab, per prediction_type
function S:predict(model_output, x, ab)
  local p = self.config.prediction_type
  local sa, sb = math.sqrt(ab), math.sqrt(1 - ab)
  if p == "epsilon" then return (x - model_output * sb) / sa, model_output end
  if p == "sample" then return model_output, (x - model_output * sa) / sb end
  return x * sa - model_output * sb, model_output * sa + x * sb -- v_prediction
end

return S
