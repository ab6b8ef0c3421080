-- tocha/models/unet_blocks.lua: the pieces of the Stable Diffusion UNet, each built and named
-- as its diffusers namesake (ResnetBlock2D, Transformer2DModel with BasicTransformerBlock and a
-- GEGLU feed-forward, Downsample2D, Upsample2D, the down / mid / up blocks), so state_dict keys
-- match diffusers'. unet.lua assembles them into UNet2DConditionModel.
local T = require "tocha"
local nn = require "tocha.nn"
local F = nn.functional

local B = {}

--- B.with(lo, extra): the layer options lo ({dtype, device}) plus extra ones
local function with(lo, extra)
  local o = { dtype = lo.dtype, device = lo.device }
  for k, v in pairs(extra) do o[k] = v end
  return o
end
B.with = with

-- fn(...) under gradient checkpointing when the block asks for it and a graph is being built
local function run(block, fn, ...)
  if block.gradient_checkpointing and T.is_grad_enabled() then return T.checkpoint(fn, ...) end
  return fn(...)
end

---------------------------------------------------------------------------
-- timestep embedding
---------------------------------------------------------------------------
-- the nearest f32 to x: what a float32 tensor times a Python float multiplies by in PyTorch
local function f32(x) return (string.unpack("f", string.pack("f", x))) end

--- B.timestep_embedding(t [N], dim, flip_sin_to_cos, freq_shift, dtype = "f32") -> [N, dim]:
--- diffusers' get_timestep_embedding (max_period 10000), computed in f32 with diffusers' order
--- of operations; dtype "f64" computes it in f64 instead (for f64 models and their tests)
-- the frequencies by device, dtype, size and shift: made once (arange is made on the CPU), so
-- that a CUDA graph's capture of the model copies nothing from the host
local freq_cache = {}

function B.timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, dtype)
  dtype = dtype or "f32"
  local half = dim // 2
  local key = table.concat({ t.device, dtype, half, freq_shift }, " ")
  local freqs = freq_cache[key]
  if not freqs then
    local c = -math.log(10000)
    if dtype == "f32" then c = f32(c) end
    freqs = T.no_grad(function()
      return (T.arange(0, half, { dtype = dtype, device = t.device }) * c / (half - freq_shift)):exp()
    end)
    freq_cache[key] = freqs
  end
  local args = t:to(dtype):view(t.shape[1], 1) * freqs:view(1, half)
  local sin, cos = args:sin(), args:cos()
  local emb = flip_sin_to_cos and T.cat({ cos, sin }, 2) or T.cat({ sin, cos }, 2)
  if dim % 2 == 1 then emb = F.pad(emb, { 0, 1 }) end
  return emb
end

--- TimestepEmbedding(in, dim): linear_1, SiLU, linear_2
B.TimestepEmbedding = nn.Module:extend("TimestepEmbedding")

function B.TimestepEmbedding:init(in_dim, dim, lo)
  self.linear_1 = nn.Linear(in_dim, dim, lo)
  self.linear_2 = nn.Linear(dim, dim, lo)
end

function B.TimestepEmbedding:forward(x) return self.linear_2(self.linear_1:forward_act(x, "silu")) end

---------------------------------------------------------------------------
-- ResnetBlock2D
---------------------------------------------------------------------------
--- ResnetBlock2D(in, out, temb_channels, {groups, eps, dropout, output_scale_factor,
--- time_embedding_norm}): norm1, SiLU, conv1, + time_emb_proj(SiLU(temb)), norm2, SiLU, dropout,
--- conv2, plus the input (through a 1x1 conv_shortcut when in ~= out), divided by
--- output_scale_factor. time_embedding_norm "scale_shift" (diffusers' resnet_time_scale_shift):
--- time_emb_proj gives a scale and a shift per channel, applied after norm2 as
--- norm2(h) * (1 + scale) + shift, a stronger conditioning than the default's added bias.
--- temb_channels nil (the VAE's blocks): no time_emb_proj, and forward takes no temb.
B.ResnetBlock2D = nn.Module:extend("ResnetBlock2D")

function B.ResnetBlock2D:init(in_ch, out_ch, temb_ch, o, lo)
  self.output_scale_factor = o.output_scale_factor or 1
  self.scale_shift = o.time_embedding_norm == "scale_shift"
  self.norm1 = nn.GroupNorm(o.groups, in_ch, with(lo, { eps = o.eps }))
  self.conv1 = nn.Conv2d(in_ch, out_ch, 3, with(lo, { padding = 1 }))
  if temb_ch then self.time_emb_proj = nn.Linear(temb_ch, self.scale_shift and 2 * out_ch or out_ch, lo) end
  self.norm2 = nn.GroupNorm(o.groups, out_ch, with(lo, { eps = o.eps }))
  self.dropout = nn.Dropout(o.dropout or 0)
  self.conv2 = nn.Conv2d(out_ch, out_ch, 3, with(lo, { padding = 1 }))
  if in_ch ~= out_ch then self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1, lo) end
end

-- x [N, in, H, W], temb [N, temb_channels] (nil without time_emb_proj) -> [N, out, H, W]
function B.ResnetBlock2D:forward(x, temb)
  local h = self.conv1(self.norm1(x):silu())
  local t
  if self.time_emb_proj then t = self.time_emb_proj(temb:silu()) end
  if t then t = t:view(t.shape[1], t.shape[2], 1, 1) end
  if not t then
    h = self.norm2(h)
  elseif self.scale_shift then
    local scale, shift = table.unpack(t:chunk(2, 2))
    h = self.norm2(h) * (scale + 1) + shift
  else
    h = self.norm2(h + t)
  end
  h = self.conv2(self.dropout(h:silu()))
  local skip = self.conv_shortcut and self.conv_shortcut(x) or x
  local out = skip + h
  if self.output_scale_factor ~= 1 then out = out / self.output_scale_factor end
  return out
end

---------------------------------------------------------------------------
-- transformer: BasicTransformerBlock inside Transformer2DModel
---------------------------------------------------------------------------
--- GEGLU(dim, inner): proj to 2 * inner, the first half times GELU of the second
B.GEGLU = nn.Module:extend("GEGLU")

function B.GEGLU:init(dim, inner, lo) self.proj = nn.Linear(dim, 2 * inner, lo) end

-- one GEMM, then the bias and both halves in one pass (F.geglu); a LoRA-adapted proj runs as a
-- whole, adapter included, before it
function B.GEGLU:forward(x)
  if self.proj.lora_A then return F.geglu(self.proj(x)) end
  return F.geglu(F.linear(x, self.proj.weight), self.proj.bias)
end

--- FeedForward(dim): net.0 = GEGLU(dim, 4 dim), net.1 = Dropout, net.2 = Linear(4 dim, dim)
B.FeedForward = nn.Module:extend("FeedForward")

function B.FeedForward:init(dim, lo)
  self.net = nn.ModuleList({ B.GEGLU(dim, 4 * dim, lo), nn.Dropout(0), nn.Linear(4 * dim, dim, lo) })
end

function B.FeedForward:forward(x) return self.net[3](self.net[2](self.net[1](x))) end

--- BasicTransformerBlock(dim, heads, dim_head, cross_attention_dim): self-attention (attn1),
--- cross-attention to the text (attn2) and a GEGLU feed-forward (ff), each after a LayerNorm
--- (norm1, norm2, norm3) and added to its input
B.BasicTransformerBlock = nn.Module:extend("BasicTransformerBlock")

function B.BasicTransformerBlock:init(dim, heads, dim_head, cross_dim, lo)
  self.norm1 = nn.LayerNorm(dim, lo)
  self.attn1 = nn.MultiheadAttention(dim, heads, with(lo, { dim_head = dim_head }))
  self.norm2 = nn.LayerNorm(dim, lo)
  self.attn2 = nn.MultiheadAttention(dim, heads, with(lo, { dim_head = dim_head, context_dim = cross_dim }))
  self.norm3 = nn.LayerNorm(dim, lo)
  self.ff = B.FeedForward(dim, lo)
end

-- x [N, HW, dim], context [N, S, cross_dim], context_mask nil or bool [N, 1, 1, S]
function B.BasicTransformerBlock:forward(x, context, context_mask)
  x = x + self.attn1(self.norm1(x))
  x = x + self.attn2(self.norm2(x), context, { attn_mask = context_mask })
  return x + self.ff(self.norm3(x))
end

--- Transformer2DModel(heads, dim_head, channels, {groups, layers, cross_attention_dim,
--- use_linear_projection}): GroupNorm (eps 1e-6), proj_in (1x1 conv or Linear) to heads *
--- dim_head, the transformer_blocks over the H * W positions, proj_out back, plus the input
B.Transformer2DModel = nn.Module:extend("Transformer2DModel")

function B.Transformer2DModel:init(heads, dim_head, channels, o, lo)
  local inner = heads * dim_head
  self.use_linear_projection = o.use_linear_projection
  self.norm = nn.GroupNorm(o.groups, channels, with(lo, { eps = 1e-6 }))
  self.proj_in = o.use_linear_projection and nn.Linear(channels, inner, lo) or nn.Conv2d(channels, inner, 1, lo)
  local blocks = {}
  for i = 1, o.layers do blocks[i] = B.BasicTransformerBlock(inner, heads, dim_head, o.cross_attention_dim, lo) end
  self.transformer_blocks = nn.ModuleList(blocks)
  self.proj_out = o.use_linear_projection and nn.Linear(inner, channels, lo) or nn.Conv2d(inner, channels, 1, lo)
end

-- x [N, C, H, W], context [N, S, cross_dim] -> [N, C, H, W]
function B.Transformer2DModel:forward(x, context, context_mask)
  local N, C, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
  local h = self.norm(x)
  local function tokens(t) return t:permute(1, 3, 4, 2):reshape(N, H * W, t.shape[2]) end
  if self.use_linear_projection then h = self.proj_in(tokens(h)) else h = tokens(self.proj_in(h)) end
  for _, blk in ipairs(self.transformer_blocks) do h = blk(h, context, context_mask) end
  if self.use_linear_projection then
    h = self.proj_out(h):view(N, H, W, C):permute(1, 4, 2, 3)
  else
    h = self.proj_out(h:view(N, H, W, h.shape[3]):permute(1, 4, 2, 3):contiguous())
  end
  return h + x
end

---------------------------------------------------------------------------
-- resampling
---------------------------------------------------------------------------
--- Downsample2D(channels, padding): conv 3x3 stride 2 (padding 0 pads right and bottom by 1 first)
B.Downsample2D = nn.Module:extend("Downsample2D")

function B.Downsample2D:init(channels, padding, lo)
  self.padding = padding
  self.conv = nn.Conv2d(channels, channels, 3, with(lo, { stride = 2, padding = padding }))
end

function B.Downsample2D:forward(x)
  if self.padding == 0 then x = F.pad(x, { 0, 1, 0, 1 }) end
  return self.conv(x)
end

--- Upsample2D(channels): nearest 2x (or to size {h, w}), then conv 3x3
B.Upsample2D = nn.Module:extend("Upsample2D")

function B.Upsample2D:init(channels, lo) self.conv = nn.Conv2d(channels, channels, 3, with(lo, { padding = 1 })) end

function B.Upsample2D:forward(x, size)
  if size then x = F.interpolate(x, { size = size, mode = "nearest" })
  else x = F.interpolate(x, { scale_factor = 2, mode = "nearest" }) end
  return self.conv(x)
end

---------------------------------------------------------------------------
-- down, mid and up blocks
---------------------------------------------------------------------------
-- o: {layers, in_channels, out_channels, prev_output_channel (up), temb_channels, groups, eps,
-- dropout, heads (nil: no attention), transformer_layers, cross_attention_dim,
-- use_linear_projection, add_downsample / add_upsample, downsample_padding, output_scale_factor}
local function resnet_opts(o)
  return { groups = o.groups, eps = o.eps, dropout = o.dropout, output_scale_factor = o.output_scale_factor,
           time_embedding_norm = o.time_embedding_norm }
end

local function transformer(o, channels, lo)
  return B.Transformer2DModel(o.heads, channels // o.heads, channels, { groups = o.groups,
    layers = o.transformer_layers, cross_attention_dim = o.cross_attention_dim,
    use_linear_projection = o.use_linear_projection }, lo)
end

--- DownBlock2D(o), and CrossAttnDownBlock2D(o) with o.heads set (a Transformer2DModel after
--- each resnet). forward returns the output and the list of states the up path takes as skips
--- (one per layer, then the downsampled output)
B.DownBlock2D = nn.Module:extend("DownBlock2D")
local DownBlock = B.DownBlock2D

function DownBlock:init(o, lo)
  local resnets, attentions = {}, {}
  for i = 1, o.layers do
    local cin = i == 1 and o.in_channels or o.out_channels
    resnets[i] = B.ResnetBlock2D(cin, o.out_channels, o.temb_channels, resnet_opts(o), lo)
    if o.heads then attentions[i] = transformer(o, o.out_channels, lo) end
  end
  if o.heads then self.attentions = nn.ModuleList(attentions) end
  self.resnets = nn.ModuleList(resnets)
  if o.add_downsample then self.downsamplers = nn.ModuleList({ B.Downsample2D(o.out_channels, o.downsample_padding, lo) }) end
end

function DownBlock:forward(h, temb, context, context_mask)
  local states = {}
  for i, resnet in ipairs(self.resnets) do
    h = run(self, resnet, h, temb)
    if self.attentions then h = run(self, self.attentions[i], h, context, context_mask) end
    states[#states + 1] = h
  end
  if self.downsamplers then
    h = self.downsamplers[1](h)
    states[#states + 1] = h
  end
  return h, states
end

--- UNetMidBlock2DCrossAttn(o): a resnet, then (attention, resnet) o.layers times
B.UNetMidBlock2DCrossAttn = nn.Module:extend("UNetMidBlock2DCrossAttn")
local MidBlock = B.UNetMidBlock2DCrossAttn

function MidBlock:init(o, lo)
  local c = o.in_channels
  local resnets, attentions = { B.ResnetBlock2D(c, c, o.temb_channels, resnet_opts(o), lo) }, {}
  for i = 1, o.layers do
    attentions[i] = transformer(o, c, lo)
    resnets[i + 1] = B.ResnetBlock2D(c, c, o.temb_channels, resnet_opts(o), lo)
  end
  self.attentions = nn.ModuleList(attentions)
  self.resnets = nn.ModuleList(resnets)
end

function MidBlock:forward(h, temb, context, context_mask)
  h = run(self, self.resnets[1], h, temb)
  for i, attn in ipairs(self.attentions) do
    h = run(self, attn, h, context, context_mask)
    h = run(self, self.resnets[i + 1], h, temb)
  end
  return h
end

--- UpBlock2D(o), and CrossAttnUpBlock2D(o) with o.heads set. Each resnet takes the running
--- state concatenated (on channels) with the next skip from the down path.
B.UpBlock2D = nn.Module:extend("UpBlock2D")
local UpBlock = B.UpBlock2D

function UpBlock:init(o, lo)
  local resnets, attentions = {}, {}
  for i = 1, o.layers do
    local skip = i == o.layers and o.in_channels or o.out_channels
    local cin = i == 1 and o.prev_output_channel or o.out_channels
    resnets[i] = B.ResnetBlock2D(cin + skip, o.out_channels, o.temb_channels, resnet_opts(o), lo)
    if o.heads then attentions[i] = transformer(o, o.out_channels, lo) end
  end
  if o.heads then self.attentions = nn.ModuleList(attentions) end
  self.resnets = nn.ModuleList(resnets)
  if o.add_upsample then self.upsamplers = nn.ModuleList({ B.Upsample2D(o.out_channels, lo) }) end
end

-- skips: the down path's states, a stack this block pops from the end. The upsampler goes to
-- the size of the next skip (what diffusers' upsample_size does; 2x misses it for odd sizes).
function UpBlock:forward(h, skips, temb, context, context_mask)
  for i, resnet in ipairs(self.resnets) do
    local skip = table.remove(skips)
    h = run(self, resnet, T.cat({ h, skip }, 2), temb)
    if self.attentions then h = run(self, self.attentions[i], h, context, context_mask) end
  end
  if self.upsamplers then
    local next_skip = skips[#skips]
    h = self.upsamplers[1](h, next_skip and { next_skip.shape[3], next_skip.shape[4] })
  end
  return h
end

B.CrossAttnDownBlock2D = DownBlock:extend("CrossAttnDownBlock2D")
B.CrossAttnUpBlock2D = UpBlock:extend("CrossAttnUpBlock2D")

return B
