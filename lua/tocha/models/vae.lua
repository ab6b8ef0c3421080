-- tocha/models/vae.lua: Stable Diffusion's autoencoder, built as diffusers' AutoencoderKL
-- (Encoder and Decoder of ResNet blocks with a self-attention mid block, quant_conv and
-- post_quant_conv) with diffusers' parameter names, so an SD checkpoint's vae/ loads by name.
-- encode gives a diagonal Gaussian over the latents; tiled and sliced decoding bound memory.
local T = require "tocha"
local nn = require "tocha.nn"
local config = require "tocha.models.config"
local B = require "tocha.models.unet_blocks"
local F = nn.functional

local WHAT = "AutoencoderKL"

-- diffusers' AutoencoderKL arguments and defaults
local SPEC = {
  defaults = {
    in_channels = 3, out_channels = 3, down_block_types = { "DownEncoderBlock2D" },
    up_block_types = { "UpDecoderBlock2D" }, block_out_channels = { 64 }, layers_per_block = 1,
    latent_channels = 4, norm_num_groups = 32, sample_size = 32, scaling_factor = 0.18215,
    force_upcast = true, use_quant_conv = true, use_post_quant_conv = true, mid_block_add_attention = true,
  },
  optional = { shift_factor = true, latents_mean = true, latents_std = true },
  fixed = { act_fn = "silu" },
}

--- resolve(cfg, overrides): the complete, checked config
local function resolve(cfg, overrides)
  local c = config.resolve(WHAT, SPEC, cfg, overrides)
  config.positive(WHAT, c, { "in_channels", "out_channels", "latent_channels", "norm_num_groups", "layers_per_block" })
  local n = type(c.block_out_channels) == "table" and #c.block_out_channels or 0
  if n == 0 then error(WHAT .. ": block_out_channels must be a non-empty list", 3) end
  c.block_out_channels = config.per_block(WHAT, "block_out_channels", c.block_out_channels, n)
  for key, kind in pairs({ down_block_types = "DownEncoderBlock2D", up_block_types = "UpDecoderBlock2D" }) do
    local list = c[key]
    if type(list) ~= "table" or #list ~= n then
      error(string.format("%s: %s must list %d block types, one per block_out_channels entry", WHAT, key, n), 3)
    end
    for i, k in ipairs(list) do
      if k ~= kind then error(string.format("%s: %s[%d] = %s is not supported (only %q)", WHAT, key, i, config.show(k), kind), 3) end
    end
  end
  config.check_groups(WHAT, c)
  local size = type(c.sample_size) == "table" and c.sample_size[1] or c.sample_size
  if math.type(size) ~= "integer" or size < 1 then
    error(WHAT .. ": sample_size must be a positive integer (or a list of them), got " .. config.show(c.sample_size), 3)
  end
  if type(c.scaling_factor) ~= "number" then error(WHAT .. ": scaling_factor must be a number", 3) end
  if c.shift_factor ~= nil and type(c.shift_factor) ~= "number" then error(WHAT .. ": shift_factor must be a number", 3) end
  return c
end

---------------------------------------------------------------------------
-- the diagonal Gaussian encode returns
---------------------------------------------------------------------------
local Gaussian = {}
Gaussian.__index = Gaussian

-- moments [N, 2 * latent, h, w]: the mean, then the log-variance (clamped to [-30, 20])
local function gaussian(moments)
  local mean, logvar = table.unpack(moments:chunk(2, 2))
  logvar = logvar:clamp(-30, 20)
  local std = (logvar * 0.5):exp()
  return setmetatable({ mean = mean, logvar = logvar, std = std, var = std * std }, Gaussian)
end

--- posterior:sample({noise}) -> mean + std * noise (noise drawn from the tocha RNG when not given)
function Gaussian:sample(opts)
  local noise = opts and opts.noise or T.randn(self.mean.shape, { dtype = self.mean.dtype, device = self.mean.device })
  return self.mean + self.std * noise
end

--- posterior:mode() -> the mean
function Gaussian:mode() return self.mean end

--- posterior:kl(other) -> [N]: KL(self || other), or KL(self || N(0, I)) without other
function Gaussian:kl(other)
  local dims = { 2, 3, 4 }
  if other == nil then
    return ((self.mean * self.mean + self.var - 1 - self.logvar):sum(dims)) * 0.5
  end
  local d = self.mean - other.mean
  return ((d * d / other.var + self.var / other.var - 1 - self.logvar + other.logvar):sum(dims)) * 0.5
end

--- posterior:nll(x) -> [N]: the negative log-likelihood of x
function Gaussian:nll(x)
  local d = x - self.mean
  return ((d * d / self.var + self.logvar + math.log(2 * math.pi)):sum({ 2, 3, 4 })) * 0.5
end

---------------------------------------------------------------------------
-- blocks
---------------------------------------------------------------------------
local with = B.with

--- SpatialAttention(channels, groups): one head over the H * W positions, with a GroupNorm
--- before it and the input added after (diffusers' Attention as the VAE's mid block builds it:
--- group_norm, to_q, to_k, to_v with biases, to_out.0)
local Attention = nn.Module:extend("VAEAttention")

function Attention:init(channels, groups, lo)
  self.group_norm = nn.GroupNorm(groups, channels, with(lo, { eps = 1e-6 }))
  self.to_q = nn.Linear(channels, channels, lo)
  self.to_k = nn.Linear(channels, channels, lo)
  self.to_v = nn.Linear(channels, channels, lo)
  self.to_out = nn.ModuleList({ nn.Linear(channels, channels, lo), nn.Dropout(0) })
end

-- x [N, C, H, W] -> [N, C, H, W]
function Attention:forward(x)
  local N, C, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
  local h = self.group_norm(x):view(N, C, H * W):transpose(2, 3) -- [N, HW, C]
  local function head(t) return t:view(N, 1, H * W, C) end
  local o = F.scaled_dot_product_attention(head(self.to_q(h)), head(self.to_k(h)), head(self.to_v(h)))
  o = self.to_out[1](o:reshape(N, H * W, C))
  return o:transpose(2, 3):reshape(N, C, H, W) + x
end

-- block options shared by the encoder's and decoder's resnets (no time embedding, eps 1e-6)
local function resnet(cin, cout, groups, lo) return B.ResnetBlock2D(cin, cout, nil, { groups = groups, eps = 1e-6 }, lo) end

--- MidBlock(channels, groups, attention): resnets.0, attentions.0, resnets.1 (UNetMidBlock2D)
local MidBlock = nn.Module:extend("UNetMidBlock2D")

function MidBlock:init(channels, groups, attention, lo)
  if attention then self.attentions = nn.ModuleList({ Attention(channels, groups, lo) }) end
  self.resnets = nn.ModuleList({ resnet(channels, channels, groups, lo), resnet(channels, channels, groups, lo) })
end

function MidBlock:forward(h)
  h = self.resnets[1](h)
  if self.attentions then h = self.attentions[1](h) end
  return self.resnets[2](h)
end

--- DownEncoderBlock2D and UpDecoderBlock2D: resnets, then a resampler unless last
--- (downsamplers.0: pad right and bottom, 3x3 stride 2; upsamplers.0: nearest 2x, 3x3)
local function level_block(name, field, resampler)
  local C = nn.Module:extend(name)
  function C:init(cin, cout, layers, groups, resample, lo)
    local resnets = {}
    for i = 1, layers do resnets[i] = resnet(i == 1 and cin or cout, cout, groups, lo) end
    self.resnets = nn.ModuleList(resnets)
    if resample then self[field] = nn.ModuleList({ resampler(cout, lo) }) end
  end
  function C:forward(h)
    for _, r in ipairs(self.resnets) do h = r(h) end
    local s = self[field]
    if s then h = s[1](h) end
    return h
  end
  return C
end
local DownBlock = level_block("DownEncoderBlock2D", "downsamplers", function(c, lo) return B.Downsample2D(c, 0, lo) end)
local UpBlock = level_block("UpDecoderBlock2D", "upsamplers", function(c, lo) return B.Upsample2D(c, lo) end)

-- fn(...) under gradient checkpointing when asked and a graph is being built
local function run(owner, fn, ...)
  if owner.gradient_checkpointing and T.is_grad_enabled() then return T.checkpoint(fn, ...) end
  return fn(...)
end

--- Encoder: conv_in, down_blocks, mid_block, conv_norm_out, SiLU, conv_out to 2 * latent channels
local Encoder = nn.Module:extend("Encoder")

function Encoder:init(c, lo)
  local ch, g, n = c.block_out_channels, c.norm_num_groups, #c.block_out_channels
  self.conv_in = nn.Conv2d(c.in_channels, ch[1], 3, with(lo, { padding = 1 }))
  local down = {}
  for i = 1, n do down[i] = DownBlock(ch[math.max(i - 1, 1)], ch[i], c.layers_per_block, g, i < n, lo) end
  self.down_blocks = nn.ModuleList(down)
  self.mid_block = MidBlock(ch[n], g, c.mid_block_add_attention, lo)
  self.conv_norm_out = nn.GroupNorm(g, ch[n], with(lo, { eps = 1e-6 }))
  self.conv_act = nn.SiLU()
  self.conv_out = nn.Conv2d(ch[n], 2 * c.latent_channels, 3, with(lo, { padding = 1 }))
end

function Encoder:forward(x)
  local h = self.conv_in(x)
  for _, b in ipairs(self.down_blocks) do h = run(self, b, h) end
  h = run(self, self.mid_block, h)
  return self.conv_out(self.conv_act(self.conv_norm_out(h)))
end

--- Decoder: conv_in, mid_block, up_blocks (layers_per_block + 1 resnets each), conv_norm_out,
--- SiLU, conv_out
local Decoder = nn.Module:extend("Decoder")

function Decoder:init(c, lo)
  local ch, g, n = c.block_out_channels, c.norm_num_groups, #c.block_out_channels
  self.conv_in = nn.Conv2d(c.latent_channels, ch[n], 3, with(lo, { padding = 1 }))
  self.mid_block = MidBlock(ch[n], g, c.mid_block_add_attention, lo)
  local up = {}
  for i = 1, n do
    local j = n - i + 1 -- reversed channels
    up[i] = UpBlock(ch[math.min(j + 1, n)], ch[j], c.layers_per_block + 1, g, i < n, lo)
  end
  self.up_blocks = nn.ModuleList(up)
  self.conv_norm_out = nn.GroupNorm(g, ch[1], with(lo, { eps = 1e-6 }))
  self.conv_act = nn.SiLU()
  self.conv_out = nn.Conv2d(ch[1], c.out_channels, 3, with(lo, { padding = 1 }))
end

function Decoder:forward(z)
  local h = self.conv_in(z)
  h = run(self, self.mid_block, h)
  for _, b in ipairs(self.up_blocks) do h = run(self, b, h) end
  return self.conv_out(self.conv_act(self.conv_norm_out(h)))
end

---------------------------------------------------------------------------
-- tiles: overlapping tiles blended linearly into their neighbours (diffusers' scheme)
---------------------------------------------------------------------------
-- b's first e rows (dim 3) or columns (dim 4) faded in from a's last ones, e = min(sizes, extent)
local function blend(a, b, extent, dim)
  local e = math.min(a.shape[dim], b.shape[dim], extent)
  if e == 0 then return b end
  local shape = { 1, 1, 1, 1 }
  shape[dim] = e
  local w = (T.arange(0, e, { dtype = b.dtype, device = b.device }) / e):view(shape)
  local head = a:narrow(dim, a.shape[dim] - e + 1, e) * (w * -1 + 1) + b:narrow(dim, 1, e) * w
  if e == b.shape[dim] then return head end
  return T.cat({ head, b:narrow(dim, e + 1, b.shape[dim] - e) }, dim)
end

-- fn over tiles of x of `tile` pixels every `stride`, blended over `extent` output pixels and
-- cropped to `keep`
local function tiled(x, fn, tile, stride, extent, keep)
  local H, W = x.shape[3], x.shape[4]
  stride = math.max(stride, 1)
  local rows = {}
  for i = 1, H, stride do
    local row = {}
    for j = 1, W, stride do
      row[#row + 1] = fn(x:narrow(3, i, math.min(tile, H - i + 1)):narrow(4, j, math.min(tile, W - j + 1)))
    end
    rows[#rows + 1] = row
  end
  local out = {}
  for i, row in ipairs(rows) do
    local parts = {}
    for j, t in ipairs(row) do
      if i > 1 then t = blend(rows[i - 1][j], t, extent, 3) end
      if j > 1 then t = blend(row[j - 1], t, extent, 4) end
      row[j] = t -- the blended tile is what its right and lower neighbours blend from
      parts[j] = t:narrow(3, 1, math.min(keep, t.shape[3])):narrow(4, 1, math.min(keep, t.shape[4]))
    end
    out[i] = T.cat(parts, 4)
  end
  return T.cat(out, 3)
end

---------------------------------------------------------------------------
-- the model
---------------------------------------------------------------------------
local VAE = nn.Module:extend(WHAT)

--- AutoencoderKL(cfg, overrides): cfg takes diffusers' AutoencoderKL names and defaults (a
--- decoded vae/config.json works as it is), plus dtype and device.
function VAE:init(cfg, overrides)
  local c = resolve(cfg, overrides)
  local lo = config.layer_opts(c)
  self.config = c
  self.scaling_factor, self.shift_factor = c.scaling_factor, c.shift_factor
  self.encoder = Encoder(c, lo)
  self.decoder = Decoder(c, lo)
  local z = c.latent_channels
  if c.use_quant_conv then self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1, lo) end
  if c.use_post_quant_conv then self.post_quant_conv = nn.Conv2d(z, z, 1, lo) end
  self.use_tiling, self.use_slicing = false, false
  local size = type(c.sample_size) == "table" and c.sample_size[1] or c.sample_size
  self.tile_sample_min_size = size
  self.tile_latent_min_size = size // (1 << (#c.block_out_channels - 1))
  self.tile_overlap_factor = 0.25
end

--- enable_tiling(on = true, {tile_sample_min_size, tile_overlap_factor = 0.25}): images wider or
--- taller than a tile (sample_size pixels; sample_size / 2^(levels - 1) latents) are encoded
--- and decoded in overlapping tiles blended together, so memory stays that of one tile
function VAE:enable_tiling(on, opts)
  rawset(self, "use_tiling", on ~= false)
  opts = opts or {}
  if opts.tile_sample_min_size then
    rawset(self, "tile_sample_min_size", opts.tile_sample_min_size)
    rawset(self, "tile_latent_min_size", opts.tile_sample_min_size // (1 << (#self.config.block_out_channels - 1)))
  end
  if opts.tile_overlap_factor then rawset(self, "tile_overlap_factor", opts.tile_overlap_factor) end
  return self
end

function VAE:disable_tiling() return self:enable_tiling(false) end

--- enable_slicing(on = true): encode and decode a batch one sample at a time
function VAE:enable_slicing(on)
  rawset(self, "use_slicing", on ~= false)
  return self
end

function VAE:disable_slicing() return self:enable_slicing(false) end

--- enable_gradient_checkpointing(on = true): recompute each encoder and decoder block in backward
function VAE:enable_gradient_checkpointing(on)
  rawset(self.encoder, "gradient_checkpointing", on ~= false)
  rawset(self.decoder, "gradient_checkpointing", on ~= false)
  return self
end

-- a batch through fn one sample at a time when slicing
local function sliced(self, x, fn)
  if not self.use_slicing or x.shape[1] == 1 then return fn(x) end
  local parts = {}
  for i = 1, x.shape[1] do parts[i] = fn(x:narrow(1, i, 1)) end
  return T.cat(parts, 1)
end

local function check_input(self, x, channels, what)
  if not T.is_tensor(x) or x:dim() ~= 4 or x.shape[2] ~= channels then
    error(string.format("%s: %s must be [batch, %d, height, width]%s", WHAT, what, channels,
      T.is_tensor(x) and (", got [" .. table.concat(x.shape, " x ") .. "]") or ""), 3)
  end
end

-- fn over x: one sample at a time when slicing, and in overlapping tiles of `tile` pixels
-- (giving tiles of `out_tile`) when tiling and x is larger than one
local function through_tiles(self, x, fn, tile, out_tile)
  return sliced(self, x, function(t)
    if not (self.use_tiling and (t.shape[3] > tile or t.shape[4] > tile)) then return fn(t) end
    local extent = math.floor(out_tile * self.tile_overlap_factor)
    return tiled(t, fn, tile, math.floor(tile * (1 - self.tile_overlap_factor)), extent, out_tile - extent)
  end)
end

-- x -> the moments [N, 2 * latent, h, w]
function VAE:encode_moments(x)
  return through_tiles(self, x, function(t)
    local h = self.encoder(t)
    return self.quant_conv and self.quant_conv(h) or h
  end, self.tile_sample_min_size, self.tile_latent_min_size)
end

--- vae:encode(x [N, in_channels, H, W] in [-1, 1]) -> the posterior over the latents: a
--- diagonal Gaussian with fields mean, logvar, std, var [N, latent, H / f, W / f] and methods
--- sample(), mode(), kl(), nll(x)
function VAE:encode(x)
  check_input(self, x, self.config.in_channels, "x")
  return gaussian(self:encode_moments(x))
end

--- vae:decode(z [N, latent_channels, h, w]) -> [N, out_channels, h * f, w * f], in [-1, 1] for a
--- trained model. z is the latent as the model sees it: divide a diffusion model's latents by
--- scaling_factor (and add shift_factor) first, as pipe:decode_latents does.
function VAE:decode(z)
  check_input(self, z, self.config.latent_channels, "z")
  return through_tiles(self, z, function(t)
    if self.post_quant_conv then t = self.post_quant_conv(t) end
    return self.decoder(t)
  end, self.tile_latent_min_size, self.tile_sample_min_size)
end

--- vae(x, {sample_posterior = false}) -> decode(encode(x) sampled or its mode), and the posterior
function VAE:forward(x, opts)
  local posterior = self:encode(x)
  local z = opts and opts.sample_posterior and posterior:sample() or posterior:mode()
  return self:decode(z), posterior
end

---------------------------------------------------------------------------
-- parameter count from the config alone
---------------------------------------------------------------------------
local function conv(cin, cout, k) return cin * cout * k * k + cout end
local function res(cin, cout) return 2 * cin + conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + (cin ~= cout and conv(cin, cout, 1) or 0) end
local function mid(ch, attn) return 2 * res(ch, ch) + (attn and (2 * ch + 4 * (ch * ch + ch)) or 0) end

--- num_parameters_for(cfg, overrides): the parameter count of AutoencoderKL(cfg)
local function num_parameters_for(cfg, overrides)
  local c = resolve(cfg, overrides)
  local ch, n, L, z = c.block_out_channels, #c.block_out_channels, c.layers_per_block, c.latent_channels
  local total = conv(c.in_channels, ch[1], 3) + mid(ch[n], c.mid_block_add_attention) + 2 * ch[n] + conv(ch[n], 2 * z, 3)
  for i = 1, n do
    local cin = ch[math.max(i - 1, 1)]
    for k = 1, L do total = total + res(k == 1 and cin or ch[i], ch[i]) end
    if i < n then total = total + conv(ch[i], ch[i], 3) end
  end
  total = total + conv(z, ch[n], 3) + mid(ch[n], c.mid_block_add_attention) + 2 * ch[1] + conv(ch[1], c.out_channels, 3)
  for i = 1, n do
    local j = n - i + 1
    local cin = ch[math.min(j + 1, n)]
    for k = 1, L + 1 do total = total + res(k == 1 and cin or ch[j], ch[j]) end
    if i < n then total = total + conv(ch[j], ch[j], 3) end
  end
  if c.use_quant_conv then total = total + conv(2 * z, 2 * z, 1) end
  if c.use_post_quant_conv then total = total + conv(z, z, 1) end
  return total
end

return { AutoencoderKL = VAE, resolve = resolve, num_parameters_for = num_parameters_for, gaussian = gaussian }
