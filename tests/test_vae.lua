-- tests/test_vae.lua: models.AutoencoderKL against diffusers' AutoencoderKL (weights, inputs and
-- outputs from tests/ref/gen_sd.py, loaded by name with a strict load_state_dict): encode's
-- mean and log-variance, decode, tiled encode / decode, their gradients in f64, the posterior,
-- slicing, gradient checkpointing, parameter counts and errors.
local T = require "tocha"
local raises = T.testing.raises
local json = require "tocha.json"
local models = require "tocha.models"

local tests = {}

local function load_case(name)
  local sd, meta = T.load(T.testing.path("ref/sd_" .. name .. ".safetensors"))
  local io = T.load(T.testing.path("ref/sd_" .. name .. "_io.safetensors"))
  return sd, io, json.decode(meta.config)
end

local F32 = { rtol = 1e-4, atol = 1e-5 }
local F64 = { rtol = 1e-9, atol = 1e-10 }

local function close(a, b, tol, msg)
  T.testing.assert_close(a, b, { rtol = tol.rtol, atol = tol.atol, msg = msg })
end

local function named(m)
  local out = {}
  for k, p in m:named_parameters() do out[k] = p end
  return out
end

-- forward in f32 and f64, and the gradients of encode (mean, logvar, kl) and decode in f64
local function check(name, tiled)
  local sd, io, cfg = load_case(name)
  local m = models.AutoencoderKL(cfg):eval()
  m:load_state_dict(sd, true)
  if tiled then m:enable_tiling() end
  local post = m:encode(io.x)
  close(post.mean, io.mean, F32, name .. " f32 mean")
  close(post.logvar, io.logvar, F32, name .. " f32 logvar")
  close(m:decode(io.z), io.decoded, F32, name .. " f32 decode")

  m:to("f64")
  local x = io.x:double():requires_grad_()
  post = m:encode(x)
  close(post.mean, io.mean_f64, F64, name .. " f64 mean")
  close(post.logvar, io.logvar_f64, F64, name .. " f64 logvar")
  close(post:kl(), io.kl_f64, F64, name .. " f64 kl")
  ;((post.mean * io.r1):sum() + (post.logvar * io.r2):sum() + post:kl():sum()):backward()
  local tol = { rtol = 1e-8, atol = 1e-10 }
  close(x.grad, io["grad.x"], tol, name .. " grad x")
  local params = named(m)
  local seen = 0
  for k, g in pairs(io) do
    local p = k:match("^grad%.encode%.(.*)$")
    if p then close(params[p].grad, g, tol, "encode grad " .. p); seen = seen + 1 end
  end
  m:zero_grad()
  local z = io.z:double():requires_grad_()
  local y = m:decode(z)
  close(y, io.decoded_f64, F64, name .. " f64 decode")
  ;(y * io.r3):sum():backward()
  close(z.grad, io["grad.z"], tol, name .. " grad z")
  for k, g in pairs(io) do
    local p = k:match("^grad%.decode%.(.*)$")
    if p then close(params[p].grad, g, tol, "decode grad " .. p); seen = seen + 1 end
  end
  return seen
end

tests["AutoencoderKL encode (mean, logvar, kl) and decode give diffusers' outputs and gradients"] = function()
  local seen = check("vae")
  assert(seen == 9, seen)
end

tests["AutoencoderKL tiled encode and decode blend tiles as diffusers does"] = function()
  check("vae_tiled", true)
  -- tiles change the result: the plain path differs from the tiled one on the same weights
  local sd, io, cfg = load_case("vae_tiled")
  local m = models.AutoencoderKL(cfg):eval()
  m:load_state_dict(sd)
  assert(not m:decode(io.z):allclose(io.decoded, 1e-3, 1e-3), "tiling must be what makes the reference")
  m:enable_tiling()
  T.testing.assert_close(m:decode(io.z), io.decoded, F32)
  m:disable_tiling()
  assert(not m.use_tiling)
end

tests["AutoencoderKL posterior: sample, mode, kl against another, nll; slicing changes nothing"] = function()
  local sd, io, cfg = load_case("vae")
  local m = models.AutoencoderKL(cfg, { dtype = "f64" }):eval()
  m:load_state_dict(sd)
  local x = io.x:double()
  local post = m:encode(x)
  T.testing.assert_close(post:mode(), post.mean)
  T.testing.assert_close(post.std, (post.logvar * 0.5):exp())
  T.testing.assert_close(post.var, post.logvar:exp())
  local noise = T.randn(post.mean.shape, { dtype = "f64" })
  T.testing.assert_close(post:sample({ noise = noise }), post.mean + post.std * noise)
  T.manual_seed(3)
  local a = post:sample()
  T.manual_seed(3)
  T.testing.assert_close(post:sample(), a)
  -- KL against itself is zero; against N(0, I) it is kl()
  T.testing.assert_close(post:kl(post), T.zeros({ 2 }, { dtype = "f64" }), { atol = 1e-9, rtol = 0 })
  local std_normal = { mean = post.mean * 0, var = post.var * 0 + 1, logvar = post.logvar * 0 }
  T.testing.assert_close(post:kl(std_normal), post:kl())
  local d = noise * post.std
  local want = ((d * d / post.var + post.logvar + math.log(2 * math.pi)):sum({ 2, 3, 4 })) * 0.5
  T.testing.assert_close(post:nll(post.mean + d), want)
  -- one sample at a time gives the same
  local dec = m:decode(io.z:double())
  m:enable_slicing()
  T.testing.assert_close(m:encode(x).mean, post.mean, { rtol = 1e-12, atol = 1e-12 })
  T.testing.assert_close(m:decode(io.z:double()), dec, { rtol = 1e-12, atol = 1e-12 })
  -- the whole autoencoder
  local y, p2 = m(x)
  T.testing.assert_close(y, m:decode(p2.mean))
  assert(m.scaling_factor == 0.5 and m.shift_factor == nil)
end

tests["AutoencoderKL gradient checkpointing gives the same gradients"] = function()
  local sd, io, cfg = load_case("vae")
  local function grads(ckpt)
    local m = models.AutoencoderKL(cfg, { dtype = "f64" })
    m:load_state_dict(sd)
    if ckpt then m:enable_gradient_checkpointing() end
    local y, post = m(io.x:double():narrow(1, 1, 1))
    ;(y:square():sum() + post:kl():sum()):backward()
    local g = {}
    for k, p in m:named_parameters() do g[k] = p.grad end
    return g
  end
  local a, b = grads(false), grads(true)
  local n = 0
  for k, g in pairs(a) do
    T.testing.assert_close(b[k], g, { rtol = 1e-12, atol = 1e-14, msg = k })
    n = n + 1
  end
  assert(n > 50, n)
end

tests["AutoencoderKL parameter counts: configs, presets and SD's VAE (83,653,863)"] = function()
  assert(models.num_parameters("AutoencoderKL", models.presets.sd15_vae) == 83653863)
  for _, name in ipairs({ "vae", "vae_tiled" }) do
    local sd, _, cfg = load_case(name)
    local n = 0
    for _, t in pairs(sd) do n = n + t:numel() end
    assert(models.num_parameters("AutoencoderKL", cfg) == n, name)
    assert(models.AutoencoderKL(cfg):num_parameters() == n, name)
  end
  local tiny = models.AutoencoderKL(models.presets.tiny_vae)
  assert(tiny:num_parameters() == models.num_parameters("AutoencoderKL", models.presets.tiny_vae))
  local y = tiny:decode(T.randn({ 1, 4, 5, 7 }))
  assert(y.shape[3] == 10 and y.shape[4] == 14)
end

tests["AutoencoderKL: clear errors for bad configs and inputs"] = function()
  local V, P = models.AutoencoderKL, models.presets.tiny_vae
  raises("unknown config key%(s%): latent_dim", V, P, { latent_dim = 4 })
  raises("down_block_types%[1%] = \"AttnDownEncoderBlock2D\" is not supported", V, P,
    { down_block_types = { "AttnDownEncoderBlock2D", "DownEncoderBlock2D" } })
  raises("up_block_types must list 2 block types", V, P, { up_block_types = { "UpDecoderBlock2D" } })
  raises("act_fn = \"relu\" is not supported", V, P, { act_fn = "relu" })
  raises("block_out_channels%[1%] = 12 is not divisible by norm_num_groups %(8%)", V, P, { block_out_channels = { 12, 32 } })
  local m = V(P)
  raises("x must be %[batch, 3, height, width%], got %[1 x 4 x 8 x 8%]", m.encode, m, T.randn({ 1, 4, 8, 8 }))
  raises("z must be %[batch, 4, height, width%], got %[1 x 3 x 8 x 8%]", m.decode, m, T.randn({ 1, 3, 8, 8 }))
end

return tests
