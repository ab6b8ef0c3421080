-- tocha/models/unet.lua: the conditional UNet of Stable Diffusion, built as diffusers'
-- UNet2DConditionModel from the same config (block_out_channels, layers_per_block,
-- attention_head_dim, cross_attention_dim, block types, ...), with diffusers' module and
-- parameter names, so an SD checkpoint's UNet loads by name. The blocks are in unet_blocks.lua.
local T = require "tocha"
local nn = require "tocha.nn"
local config = require "tocha.models.config"
local B = require "tocha.models.unet_blocks"

local WHAT = "UNet2DConditionModel"
local NONE = config.NONE

-- diffusers' UNet2DConditionModel arguments and defaults; `fixed` ones are the features this
-- UNet does not build (class / addition embeddings, other block kinds), accepted only at
-- diffusers' defaults so that SD 1.x / 2.x config.json files load as they are
local SPEC = {
  defaults = {
    in_channels = 4, out_channels = 4, center_input_sample = false, flip_sin_to_cos = true, freq_shift = 0,
    down_block_types = { "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D" },
    mid_block_type = "UNetMidBlock2DCrossAttn",
    up_block_types = { "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D" },
    block_out_channels = { 320, 640, 1280, 1280 }, layers_per_block = 2, downsample_padding = 1,
    mid_block_scale_factor = 1, dropout = 0, norm_num_groups = 32, norm_eps = 1e-5,
    cross_attention_dim = 1280, transformer_layers_per_block = 1, attention_head_dim = 8,
    use_linear_projection = false, upcast_attention = false, conv_in_kernel = 3, conv_out_kernel = 3,
    resnet_time_scale_shift = "default",
  },
  -- class embeddings added to the time embedding (diffusers' names): num_class_embeds (an
  -- Embedding of class ids), class_embed_type "timestep" (a second timestep embedding),
  -- "identity", "projection" (a vector per sample through a TimestepEmbedding, e.g. the pooled
  -- text embedding) or "simple_projection" (through one Linear)
  optional = { sample_size = true, time_embedding_dim = true, class_embed_type = true,
               projection_class_embeddings_input_dim = true, num_class_embeds = true },
  fixed = {
    act_fn = "silu", only_cross_attention = false, dual_cross_attention = false, num_attention_heads = NONE,
    addition_embed_type = NONE, addition_time_embed_dim = NONE,
    resnet_skip_time_act = false,
    resnet_out_scale_factor = 1, time_embedding_type = "positional", time_embedding_act_fn = NONE,
    timestep_post_act = NONE, time_cond_proj_dim = NONE,
    attention_type = "default", class_embeddings_concat = false, mid_block_only_cross_attention = false,
    cross_attention_norm = NONE, encoder_hid_dim = NONE, encoder_hid_dim_type = NONE,
    reverse_transformer_layers_per_block = NONE, addition_embed_type_num_heads = 64,
  },
}

local DOWN = { CrossAttnDownBlock2D = true, DownBlock2D = true }
local UP = { CrossAttnUpBlock2D = true, UpBlock2D = true }

local function reversed(list)
  local out = {}
  for i = #list, 1, -1 do out[#out + 1] = list[i] end
  return out
end

---------------------------------------------------------------------------
-- class embeddings
---------------------------------------------------------------------------
local CLASS_TYPES = { timestep = true, identity = true, projection = true, simple_projection = true }

-- checks the class embedding keys of a resolved config
local function check_class(c)
  local kind, d = c.class_embed_type, c.projection_class_embeddings_input_dim
  if kind ~= nil and not CLASS_TYPES[kind] then
    error(string.format('%s: class_embed_type = %s is not supported ("timestep", "identity", "projection" or '
      .. '"simple_projection", or num_class_embeds for an Embedding)', WHAT, config.show(kind)), 4)
  end
  if (kind == "projection" or kind == "simple_projection") and (math.type(d) ~= "integer" or d < 1) then
    error(string.format('%s: class_embed_type "%s" needs a positive integer projection_class_embeddings_input_dim',
      WHAT, kind), 4)
  end
  local n = c.num_class_embeds
  if kind == nil and n ~= nil and (math.type(n) ~= "integer" or n < 1) then
    error(WHAT .. ": num_class_embeds must be a positive integer, got " .. config.show(n), 4)
  end
end

-- the module diffusers puts under class_embedding for this config, or nil
local function class_embedding(c, c0, temb, lo)
  local kind = c.class_embed_type
  if kind == "timestep" then return B.TimestepEmbedding(c0, temb, lo) end
  if kind == "identity" then return nn.Identity() end
  if kind == "projection" then return B.TimestepEmbedding(c.projection_class_embeddings_input_dim, temb, lo) end
  if kind == "simple_projection" then return nn.Linear(c.projection_class_embeddings_input_dim, temb, lo) end
  if c.num_class_embeds ~= nil then return nn.Embedding(c.num_class_embeds, temb, lo) end
end

-- the parameter count of class_embedding(c, ...)
local function class_embedding_size(c, c0, temb)
  local kind, d = c.class_embed_type, c.projection_class_embeddings_input_dim
  if kind == "timestep" then return c0 * temb + temb + temb * temb + temb end
  if kind == "projection" then return d * temb + temb + temb * temb + temb end
  if kind == "simple_projection" then return d * temb + temb end
  if kind == nil and c.num_class_embeds ~= nil then return c.num_class_embeds * temb end
  return 0
end

--- resolve(cfg, overrides): the complete, checked config
local function resolve(cfg, overrides)
  local c = config.resolve(WHAT, SPEC, cfg, overrides)
  config.positive(WHAT, c, { "in_channels", "out_channels", "norm_num_groups" })
  local n = type(c.block_out_channels) == "table" and #c.block_out_channels or 0
  if n == 0 then error(WHAT .. ": block_out_channels must be a non-empty list", 3) end
  c.block_out_channels = config.per_block(WHAT, "block_out_channels", c.block_out_channels, n)
  for _, key in ipairs({ "down_block_types", "up_block_types" }) do
    local kinds, list = key == "down_block_types" and DOWN or UP, c[key]
    if type(list) ~= "table" or #list ~= n then
      error(string.format("%s: %s must list %d block types, one per block_out_channels entry", WHAT, key, n), 3)
    end
    for i, kind in ipairs(list) do
      if not kinds[kind] then
        error(string.format("%s: %s[%d] = %s is not supported", WHAT, key, i, config.show(kind)), 3)
      end
    end
  end
  if c.mid_block_type ~= "UNetMidBlock2DCrossAttn" then
    error(WHAT .. ": mid_block_type must be \"UNetMidBlock2DCrossAttn\", got " .. config.show(c.mid_block_type), 3)
  end
  for _, key in ipairs({ "layers_per_block", "transformer_layers_per_block", "attention_head_dim", "cross_attention_dim" }) do
    c[key] = config.per_block(WHAT, key, c[key], n)
  end
  config.check_groups(WHAT, c)
  for i, ch in ipairs(c.block_out_channels) do
    if ch < c.attention_head_dim[i] then
      error(string.format("%s: block_out_channels[%d] = %d is smaller than its number of heads (attention_head_dim = %d)",
        WHAT, i, ch, c.attention_head_dim[i]), 3)
    end
  end
  for _, key in ipairs({ "conv_in_kernel", "conv_out_kernel" }) do
    if math.type(c[key]) ~= "integer" or c[key] < 1 or c[key] % 2 == 0 then
      error(string.format("%s: %s must be a positive odd integer, got %s", WHAT, key, config.show(c[key])), 3)
    end
  end
  if c.resnet_time_scale_shift ~= "default" and c.resnet_time_scale_shift ~= "scale_shift" then
    error(WHAT .. ": resnet_time_scale_shift must be \"default\" or \"scale_shift\", got "
      .. config.show(c.resnet_time_scale_shift), 3)
  end
  if c.downsample_padding ~= 0 and c.downsample_padding ~= 1 then
    error(WHAT .. ": downsample_padding must be 0 or 1, got " .. config.show(c.downsample_padding), 3)
  end
  check_class(c)
  return c
end

-- the constructor options of every block, in order: { down = {...}, mid = {...}, up = {...} },
-- following UNet2DConditionModel.__init__ (attention_head_dim is the number of heads there)
local function plan(c)
  local ch, n = c.block_out_channels, #c.block_out_channels
  local temb = c.time_embedding_dim or 4 * ch[1]
  local function common(o, i, heads)
    o.temb_channels, o.groups, o.eps, o.dropout = temb, c.norm_num_groups, c.norm_eps, c.dropout
    o.time_embedding_norm = c.resnet_time_scale_shift
    o.heads, o.cross_attention_dim = heads, c.cross_attention_dim[i]
    o.transformer_layers, o.use_linear_projection = c.transformer_layers_per_block[i], c.use_linear_projection
    return o
  end
  local p = { temb = temb, down = {}, up = {} }
  for i, kind in ipairs(c.down_block_types) do
    p.down[i] = common({ kind = kind, layers = c.layers_per_block[i], in_channels = ch[math.max(i - 1, 1)],
      out_channels = ch[i], add_downsample = i < n, downsample_padding = c.downsample_padding },
      i, kind == "CrossAttnDownBlock2D" and c.attention_head_dim[i] or nil)
  end
  p.mid = common({ layers = 1, in_channels = ch[n], output_scale_factor = c.mid_block_scale_factor },
    n, c.attention_head_dim[n])
  local rch = reversed(ch)
  for i, kind in ipairs(c.up_block_types) do
    local j = n - i + 1 -- the matching down block's index
    local o = common({ kind = kind, layers = c.layers_per_block[j] + 1, prev_output_channel = rch[math.max(i - 1, 1)],
      out_channels = rch[i], in_channels = rch[math.min(i + 1, n)], add_upsample = i < n },
      j, kind == "CrossAttnUpBlock2D" and c.attention_head_dim[j] or nil)
    p.up[i] = o
  end
  return p
end

---------------------------------------------------------------------------
-- the model
---------------------------------------------------------------------------
local UNet = nn.Module:extend(WHAT)

--- UNet2DConditionModel(cfg, overrides): cfg takes diffusers' UNet2DConditionModel names and
--- defaults (a decoded config.json works as it is), plus dtype and device; overrides are
--- merged over cfg. As in diffusers, attention_head_dim is the number of heads of each block.
function UNet:init(cfg, overrides)
  local c = resolve(cfg, overrides)
  local p = plan(c)
  local lo = config.layer_opts(c)
  local ch = c.block_out_channels
  self.config = c
  self.conv_in = nn.Conv2d(c.in_channels, ch[1], c.conv_in_kernel,
    { padding = (c.conv_in_kernel - 1) // 2, dtype = lo.dtype, device = lo.device })
  self.time_embedding = B.TimestepEmbedding(ch[1], p.temb, lo)
  self.class_embedding = class_embedding(c, ch[1], p.temb, lo)
  local down, up = {}, {}
  for i, o in ipairs(p.down) do down[i] = B[o.kind](o, lo) end
  for i, o in ipairs(p.up) do up[i] = B[o.kind](o, lo) end
  self.down_blocks = nn.ModuleList(down)
  self.up_blocks = nn.ModuleList(up)
  self.mid_block = B.UNetMidBlock2DCrossAttn(p.mid, lo)
  self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, ch[1], { eps = c.norm_eps, dtype = lo.dtype, device = lo.device })
  self.conv_act = nn.SiLU()
  self.conv_out = nn.Conv2d(ch[1], c.out_channels, c.conv_out_kernel,
    { padding = (c.conv_out_kernel - 1) // 2, dtype = lo.dtype, device = lo.device })
end

--- enable_gradient_checkpointing(on = true): recompute each resnet and transformer in
--- backward instead of keeping their activations (less memory, about a third more compute)
function UNet:enable_gradient_checkpointing(on)
  on = on ~= false
  for _, blocks in ipairs({ self.down_blocks:children(), { self.mid_block }, self.up_blocks:children() }) do
    for _, b in ipairs(blocks) do rawset(b, "gradient_checkpointing", on) end
  end
  return self
end

-- timesteps: a number, a list, or a tensor (0-d, [1] or [N]) -> [N] on device
local function timesteps(t, N, device)
  if type(t) == "number" then return T.full({ N }, t, { dtype = "f64", device = device }) end
  if type(t) == "table" and not T.is_tensor(t) then t = T.tensor(t, { dtype = "f64" }) end
  if not T.is_tensor(t) then error(WHAT .. ": timestep must be a number, a list or a tensor", 3) end
  t = t:to(device)
  if t:numel() == 1 then return t:reshape(1):expand(N) end
  if t:dim() ~= 1 or t.shape[1] ~= N then
    error(string.format("%s: timestep must hold 1 or %d (the batch size) values, got shape [%s]", WHAT, N,
      table.concat(t.shape, " x ")), 3)
  end
  return t
end

-- the class embedding of class_labels for a batch of N, in sample's dtype
function UNet:class_embed(labels, N, sample)
  local c = self.config
  local kind = c.class_embed_type
  if kind == "timestep" then
    if labels == nil then error(WHAT .. ": class_labels (timesteps, as timestep) are needed with class_embed_type timestep", 3) end
    local t = B.timestep_embedding(timesteps(labels, N, sample.device), c.block_out_channels[1], c.flip_sin_to_cos,
      c.freq_shift, sample.dtype == "f64" and "f64" or "f32")
    return self.class_embedding(t:to(sample.dtype))
  end
  if kind == nil then -- num_class_embeds: an Embedding of 1-based class ids
    if not T.is_tensor(labels) or labels:dim() ~= 1 or labels.shape[1] ~= N or (labels.dtype ~= "i64" and labels.dtype ~= "i32") then
      error(string.format("%s: class_labels must be an integer tensor [%d (batch)] of 1-based class ids (num_class_embeds = %d)",
        WHAT, N, c.num_class_embeds), 3)
    end
    return self.class_embedding(labels:to(sample.device)):to(sample.dtype)
  end
  local width = kind == "identity" and nil or c.projection_class_embeddings_input_dim
  if not T.is_tensor(labels) or labels:dim() ~= 2 or labels.shape[1] ~= N or (width and labels.shape[2] ~= width) then
    error(string.format("%s: class_labels must be [%d (batch), %s] with class_embed_type %s", WHAT, N,
      width or "time embedding width", kind), 3)
  end
  return self.class_embedding(labels:to(sample.dtype))
end

--- unet(sample [N, in_channels, H, W], timestep (number, list or tensor of N), encoder_hidden_states
--- [N, S, cross_attention_dim], {encoder_attention_mask [N, S]: 1 / true keeps a text token,
--- class_labels}) -> the prediction [N, out_channels, H, W]. Any H and W work (odd sizes as
--- diffusers does). class_labels, with a class embedding: 1-based class ids [N] (num_class_embeds),
--- timesteps (class_embed_type "timestep") or vectors [N, d] (the others).
function UNet:forward(sample, timestep, context, opts)
  opts = opts or {}
  local c = self.config
  if not T.is_tensor(sample) or sample:dim() ~= 4 or sample.shape[2] ~= c.in_channels then
    error(string.format("%s: sample must be [batch, %d, height, width]%s", WHAT, c.in_channels,
      T.is_tensor(sample) and (", got [" .. table.concat(sample.shape, " x ") .. "]") or ""), 2)
  end
  local N = sample.shape[1]
  local width = c.cross_attention_dim[1]
  for _, d in ipairs(c.cross_attention_dim) do if d ~= width then width = nil; break end end
  if not T.is_tensor(context) or context:dim() ~= 3 or context.shape[1] ~= N
      or (width and context.shape[3] ~= width) then
    error(string.format("%s: encoder_hidden_states must be [%d (batch), length, %s]%s", WHAT, N,
      width or "cross_attention_dim", T.is_tensor(context) and (", got [" .. table.concat(context.shape, " x ") .. "]") or ""), 2)
  end
  local mask
  if opts.encoder_attention_mask ~= nil then
    local m = opts.encoder_attention_mask
    if not T.is_tensor(m) or m:dim() ~= 2 or m.shape[1] ~= N or m.shape[2] ~= context.shape[2] then
      error(string.format("%s: encoder_attention_mask must be [%d x %d] like the text", WHAT, N, context.shape[2]), 2)
    end
    mask = m:ne(0):view(N, 1, 1, m.shape[2])
  end
  if c.center_input_sample then sample = sample * 2 - 1 end

  -- in f32 as diffusers (whatever the model's dtype), except for an f64 model
  local t = B.timestep_embedding(timesteps(timestep, N, sample.device), c.block_out_channels[1], c.flip_sin_to_cos,
    c.freq_shift, sample.dtype == "f64" and "f64" or "f32")
  local temb = self.time_embedding(t:to(sample.dtype))
  if self.class_embedding then temb = temb + self:class_embed(opts.class_labels, N, sample) end

  local h = self.conv_in(sample)
  local skips = { h }
  for _, block in ipairs(self.down_blocks) do
    local states
    h, states = block(h, temb, context, mask)
    table.move(states, 1, #states, #skips + 1, skips)
  end
  h = self.mid_block(h, temb, context, mask)
  for _, block in ipairs(self.up_blocks) do h = block(h, skips, temb, context, mask) end
  return self.conv_out(self.conv_act(self.conv_norm_out(h)))
end

---------------------------------------------------------------------------
-- parameter count from the config alone (SD sizes without allocating them)
---------------------------------------------------------------------------
local function conv(cin, cout, k) return cin * cout * k * k + cout end

local function resnet(cin, cout, temb, scale_shift)
  local proj = scale_shift and 2 * cout or cout
  return 2 * cin + conv(cin, cout, 3) + temb * proj + proj + 2 * cout + conv(cout, cout, 3)
    + (cin ~= cout and conv(cin, cout, 1) or 0)
end

local function transformer(o, ch)
  local d = o.heads * (ch // o.heads)
  local block = 6 * d + (4 * d * d + d) + (2 * d * d + 2 * o.cross_attention_dim * d + d) + (d * 8 * d + 8 * d)
    + (4 * d * d + d)
  return 2 * ch + (ch * d + d) + o.transformer_layers * block + (d * ch + ch)
end

--- num_parameters_for(cfg, overrides): the parameter count of UNet2DConditionModel(cfg)
local function num_parameters_for(cfg, overrides)
  local c = resolve(cfg, overrides)
  local p = plan(c)
  local c0 = c.block_out_channels[1]
  local ss = c.resnet_time_scale_shift == "scale_shift"
  local n = conv(c.in_channels, c0, c.conv_in_kernel) + (c0 * p.temb + p.temb) + (p.temb * p.temb + p.temb)
    + 2 * c0 + conv(c0, c.out_channels, c.conv_out_kernel)
  n = n + class_embedding_size(c, c0, p.temb)
  for _, o in ipairs(p.down) do
    for i = 1, o.layers do
      n = n + resnet(i == 1 and o.in_channels or o.out_channels, o.out_channels, p.temb, ss)
      if o.heads then n = n + transformer(o, o.out_channels) end
    end
    if o.add_downsample then n = n + conv(o.out_channels, o.out_channels, 3) end
  end
  n = n + 2 * resnet(p.mid.in_channels, p.mid.in_channels, p.temb, ss) + transformer(p.mid, p.mid.in_channels)
  for _, o in ipairs(p.up) do
    for i = 1, o.layers do
      local skip = i == o.layers and o.in_channels or o.out_channels
      n = n + resnet((i == 1 and o.prev_output_channel or o.out_channels) + skip, o.out_channels, p.temb, ss)
      if o.heads then n = n + transformer(o, o.out_channels) end
    end
    if o.add_upsample then n = n + conv(o.out_channels, o.out_channels, 3) end
  end
  return n
end

return { UNet2DConditionModel = UNet, resolve = resolve, num_parameters_for = num_parameters_for }
