-- tocha/nn/layers.lua: the standard layers (Linear, convolutions, norms, pooling, Embedding,
-- Dropout, activations, Upsample). Each mirrors its PyTorch namesake: the same parameter names and
-- shapes (so PyTorch state_dicts load), the same default initialisation, and a forward that
-- calls tocha.nn.functional. Constructor options come in one table after the sizes.
local T = require "tocha"
local F = require "tocha.nn.functional"
local M = require "tocha.nn.module"
local init = require "tocha.nn.init_weights"

local Module, Parameter = M.Module, M.Parameter
local L = {}

local function check_size(v, what, level)
  if math.type(v) ~= "integer" or v < 0 then
    error(string.format("%s must be a non-negative integer, got %s", what, tostring(v)), level or 3)
  end
end

local function options(o, what)
  if o == nil then return {} end
  if type(o) ~= "table" then error(what .. ": options must be a table, got " .. type(o), 3) end
  return o
end

-- a number or a pair {h, w} as two numbers
local function pair(v, what, level)
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(string.format("%s must be a number or a pair {h, w}, got %s", what, tostring(v)), level or 3)
end

local function tensor_opts(o) return { dtype = o.dtype, device = o.device } end

-- PyTorch's default for Linear and convolutions: kaiming_uniform(a = sqrt(5)) on the weight,
-- which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias
local function reset_affine(self)
  init.kaiming_uniform_(self.weight, { a = math.sqrt(5) })
  if self.bias then
    local fan_in = init.calculate_fan_in_and_fan_out(self.weight)
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(self.bias, -bound, bound)
  end
end

local function tuple(a, b) return string.format("(%d, %d)", a, b) end

---------------------------------------------------------------------------
-- Linear
---------------------------------------------------------------------------
--- nn.Linear(in_features, out_features, {bias = true, dtype, device}) (or a boolean bias as
--- the third argument): y = x W^T + b, weight [out, in], bias [out]
L.Linear = Module:extend("Linear")

function L.Linear:init(in_features, out_features, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  opts = options(opts, "Linear")
  check_size(in_features, "Linear: in_features")
  check_size(out_features, "Linear: out_features")
  self.in_features, self.out_features = in_features, out_features
  local to = tensor_opts(opts)
  self.weight = Parameter(T.empty({ out_features, in_features }, to))
  self:register_parameter("bias", opts.bias ~= false and T.empty({ out_features }, to) or nil)
  self:reset_parameters()
end

L.Linear.reset_parameters = reset_affine

function L.Linear:forward(x) return F.linear(x, self.weight, self.bias) end

--- m:forward_act(x, act): act(m(x)) with the bias added in the activation's pass (F.bias_act;
--- act as its). A subclass whose forward differs (a LoRA layer) runs that, then the activation.
function L.Linear:forward_act(x, act)
  if self.forward ~= L.Linear.forward then return F.bias_act(self:forward(x), nil, act) end
  return F.bias_act(F.linear(x, self.weight), self.bias, act)
end

function L.Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features,
    tostring(self.bias ~= nil))
end

---------------------------------------------------------------------------
-- convolutions
---------------------------------------------------------------------------
local PAD_MODES = { zeros = true, reflect = true, replicate = true }

-- the fields Conv2d and ConvTranspose2d share
local function conv_setup(self, what, in_ch, out_ch, kernel, opts)
  check_size(in_ch, what .. ": in_channels", 4)
  check_size(out_ch, what .. ": out_channels", 4)
  local groups = opts.groups or 1
  if math.type(groups) ~= "integer" or groups < 1 then error(what .. ": groups must be a positive integer", 4) end
  if in_ch % groups ~= 0 then error(string.format("%s: in_channels (%d) must be divisible by groups (%d)", what, in_ch, groups), 4) end
  if out_ch % groups ~= 0 then error(string.format("%s: out_channels (%d) must be divisible by groups (%d)", what, out_ch, groups), 4) end
  self.in_channels, self.out_channels, self.groups = in_ch, out_ch, groups
  self.kernel_size = { pair(kernel, what .. ": kernel_size", 4) }
  for _, k in ipairs(self.kernel_size) do
    if math.type(k) ~= "integer" or k < 1 then error(what .. ": kernel_size must be positive integers, got " .. tostring(k), 3) end
  end
  self.stride = { pair(opts.stride or 1, what .. ": stride", 4) }
  self.dilation = { pair(opts.dilation or 1, what .. ": dilation", 4) }
end

local function conv_repr(self, extra)
  local s = string.format("%d, %d, kernel_size=%s, stride=%s", self.in_channels, self.out_channels,
    tuple(self.kernel_size[1], self.kernel_size[2]), tuple(self.stride[1], self.stride[2]))
  if type(self.padding) == "string" then s = s .. ", padding=" .. self.padding
  elseif self.padding[1] ~= 0 or self.padding[2] ~= 0 then s = s .. ", padding=" .. tuple(self.padding[1], self.padding[2]) end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ", dilation=" .. tuple(self.dilation[1], self.dilation[2]) end
  s = s .. (extra or "")
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=false" end
  return s
end

--- nn.Conv2d(in_channels, out_channels, kernel_size, {stride = 1, padding = 0 (a number, a pair,
--- "same" or "valid"), dilation = 1, groups = 1, bias = true, padding_mode = "zeros" |
--- "reflect" | "replicate", dtype, device}): weight [out, in / groups, kh, kw], bias [out]
L.Conv2d = Module:extend("Conv2d")

function L.Conv2d:init(in_channels, out_channels, kernel_size, opts)
  opts = options(opts, "Conv2d")
  conv_setup(self, "Conv2d", in_channels, out_channels, kernel_size, opts)
  local padding = opts.padding or 0
  if padding == "same" or padding == "valid" then self.padding = padding
  else self.padding = { pair(padding, "Conv2d: padding") } end
  self.padding_mode = opts.padding_mode or "zeros"
  if not PAD_MODES[self.padding_mode] then
    error("Conv2d: padding_mode must be \"zeros\", \"reflect\" or \"replicate\", got " .. tostring(self.padding_mode), 2)
  end
  local to = tensor_opts(opts)
  local kh, kw = self.kernel_size[1], self.kernel_size[2]
  self.weight = Parameter(T.empty({ out_channels, in_channels // self.groups, kh, kw }, to))
  self:register_parameter("bias", opts.bias ~= false and T.empty({ out_channels }, to) or nil)
  self:reset_parameters()
end

L.Conv2d.reset_parameters = reset_affine

function L.Conv2d:forward(x)
  local o = { stride = self.stride, dilation = self.dilation, groups = self.groups, padding = self.padding }
  if self.padding_mode ~= "zeros" and self.padding ~= "valid" then
    local ph, pw
    if self.padding == "same" then
      ph = self.dilation[1] * (self.kernel_size[1] - 1) // 2
      pw = self.dilation[2] * (self.kernel_size[2] - 1) // 2
    else ph, pw = self.padding[1], self.padding[2] end
    x = F.pad(x, { pw, pw, ph, ph }, { mode = self.padding_mode })
    o.padding = 0
  end
  return F.conv2d(x, self.weight, self.bias, o)
end

function L.Conv2d:extra_repr()
  return conv_repr(self, self.padding_mode ~= "zeros" and (", padding_mode=" .. self.padding_mode) or "")
end

--- nn.ConvTranspose2d(in_channels, out_channels, kernel_size, {stride = 1, padding = 0,
--- output_padding = 0, dilation = 1, groups = 1, bias = true, dtype, device}):
--- weight [in, out / groups, kh, kw] as PyTorch. forward(x, output_size) may give the
--- output's {h, w} to pick output_padding.
L.ConvTranspose2d = Module:extend("ConvTranspose2d")

function L.ConvTranspose2d:init(in_channels, out_channels, kernel_size, opts)
  opts = options(opts, "ConvTranspose2d")
  conv_setup(self, "ConvTranspose2d", in_channels, out_channels, kernel_size, opts)
  self.padding = { pair(opts.padding or 0, "ConvTranspose2d: padding") }
  self.output_padding = { pair(opts.output_padding or 0, "ConvTranspose2d: output_padding") }
  local to = tensor_opts(opts)
  local kh, kw = self.kernel_size[1], self.kernel_size[2]
  self.weight = Parameter(T.empty({ in_channels, out_channels // self.groups, kh, kw }, to))
  self:register_parameter("bias", opts.bias ~= false and T.empty({ out_channels }, to) or nil)
  self:reset_parameters()
end

L.ConvTranspose2d.reset_parameters = reset_affine

function L.ConvTranspose2d:forward(x, output_size)
  local op = self.output_padding
  if output_size then
    local n = #output_size
    if n < 2 then error("ConvTranspose2d: output_size must end with {h, w}", 2) end
    op = {}
    for d = 1, 2 do
      local size_in = x.shape[#x.shape - 2 + d]
      local min = (size_in - 1) * self.stride[d] - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1) + 1
      local want = output_size[n - 2 + d]
      if want < min or want > min + self.stride[d] - 1 then
        error(string.format("ConvTranspose2d: requested output size %d is outside [%d, %d] for input size %d",
          want, min, min + self.stride[d] - 1, size_in), 2)
      end
      op[d] = want - min
    end
  end
  return F.conv_transpose2d(x, self.weight, self.bias, { stride = self.stride, padding = self.padding,
    output_padding = op, dilation = self.dilation, groups = self.groups })
end

function L.ConvTranspose2d:extra_repr()
  local op = self.output_padding
  return conv_repr(self, (op[1] ~= 0 or op[2] ~= 0) and (", output_padding=" .. tuple(op[1], op[2])) or "")
end

---------------------------------------------------------------------------
-- normalisation
---------------------------------------------------------------------------
--- nn.GroupNorm(num_groups, num_channels, {eps = 1e-5, affine = true, dtype, device}):
--- weight (ones) and bias (zeros) of [num_channels]
L.GroupNorm = Module:extend("GroupNorm")

function L.GroupNorm:init(num_groups, num_channels, opts)
  opts = options(opts, "GroupNorm")
  check_size(num_groups, "GroupNorm: num_groups")
  check_size(num_channels, "GroupNorm: num_channels")
  if num_groups == 0 or num_channels % num_groups ~= 0 then
    error(string.format("GroupNorm: num_channels (%d) must be divisible by num_groups (%d)", num_channels, num_groups), 2)
  end
  self.num_groups, self.num_channels = num_groups, num_channels
  self.eps = opts.eps or 1e-5
  self.affine = opts.affine ~= false
  local to = tensor_opts(opts)
  self:register_parameter("weight", self.affine and T.ones({ num_channels }, to) or nil)
  self:register_parameter("bias", self.affine and T.zeros({ num_channels }, to) or nil)
end

function L.GroupNorm:reset_parameters()
  if self.weight then init.ones_(self.weight) end
  if self.bias then init.zeros_(self.bias) end
end

function L.GroupNorm:forward(x)
  return F.group_norm(x, self.num_groups, self.weight, self.bias, { eps = self.eps })
end

function L.GroupNorm:extra_repr()
  return string.format("%d, %d, eps=%g, affine=%s", self.num_groups, self.num_channels, self.eps, tostring(self.affine))
end

--- nn.LayerNorm(normalized_shape (a number or a table), {eps = 1e-5, elementwise_affine = true,
--- bias = true, dtype, device}): normalises over the trailing dims; weight ones, bias zeros
L.LayerNorm = Module:extend("LayerNorm")

function L.LayerNorm:init(normalized_shape, opts)
  opts = options(opts, "LayerNorm")
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  if type(normalized_shape) ~= "table" or #normalized_shape == 0 then
    error("LayerNorm: normalized_shape must be a number or a table of sizes", 2)
  end
  for i, s in ipairs(normalized_shape) do check_size(s, "LayerNorm: normalized_shape[" .. i .. "]") end
  self.normalized_shape = normalized_shape
  self.eps = opts.eps or 1e-5
  self.elementwise_affine = opts.elementwise_affine ~= false
  local to = tensor_opts(opts)
  self:register_parameter("weight", self.elementwise_affine and T.ones(normalized_shape, to) or nil)
  self:register_parameter("bias", self.elementwise_affine and opts.bias ~= false and T.zeros(normalized_shape, to) or nil)
end

L.LayerNorm.reset_parameters = L.GroupNorm.reset_parameters

function L.LayerNorm:forward(x)
  return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, { eps = self.eps })
end

function L.LayerNorm:extra_repr()
  return string.format("{%s}, eps=%g, elementwise_affine=%s", table.concat(self.normalized_shape, ", "), self.eps,
    tostring(self.elementwise_affine))
end

---------------------------------------------------------------------------
-- pooling
---------------------------------------------------------------------------
local function pool_setup(self, what, kernel_size, opts)
  opts = options(opts, what)
  self.kernel_size = { pair(kernel_size, what .. ": kernel_size") }
  self.stride = { pair(opts.stride or self.kernel_size, what .. ": stride") }
  self.padding = { pair(opts.padding or 0, what .. ": padding") }
  self.ceil_mode = opts.ceil_mode == true
  return opts
end

--- nn.MaxPool2d(kernel_size, {stride = kernel_size, padding = 0, dilation = 1, ceil_mode = false})
L.MaxPool2d = Module:extend("MaxPool2d")

function L.MaxPool2d:init(kernel_size, opts)
  opts = pool_setup(self, "MaxPool2d", kernel_size, opts)
  self.dilation = { pair(opts.dilation or 1, "MaxPool2d: dilation") }
  if opts.return_indices then error("MaxPool2d: return_indices is not supported", 2) end
end

function L.MaxPool2d:forward(x)
  return F.max_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding, dilation = self.dilation,
    ceil_mode = self.ceil_mode })
end

function L.MaxPool2d:extra_repr()
  return string.format("kernel_size=%s, stride=%s, padding=%s, dilation=%s, ceil_mode=%s",
    tuple(self.kernel_size[1], self.kernel_size[2]), tuple(self.stride[1], self.stride[2]),
    tuple(self.padding[1], self.padding[2]), tuple(self.dilation[1], self.dilation[2]), tostring(self.ceil_mode))
end

--- nn.AvgPool2d(kernel_size, {stride = kernel_size, padding = 0, ceil_mode = false,
--- count_include_pad = true})
L.AvgPool2d = Module:extend("AvgPool2d")

function L.AvgPool2d:init(kernel_size, opts)
  opts = pool_setup(self, "AvgPool2d", kernel_size, opts)
  self.count_include_pad = opts.count_include_pad ~= false
  if opts.divisor_override ~= nil then error("AvgPool2d: divisor_override is not supported", 2) end
end

function L.AvgPool2d:forward(x)
  return F.avg_pool2d(x, self.kernel_size, { stride = self.stride, padding = self.padding, ceil_mode = self.ceil_mode,
    count_include_pad = self.count_include_pad })
end

function L.AvgPool2d:extra_repr()
  return string.format("kernel_size=%s, stride=%s, padding=%s, ceil_mode=%s, count_include_pad=%s",
    tuple(self.kernel_size[1], self.kernel_size[2]), tuple(self.stride[1], self.stride[2]),
    tuple(self.padding[1], self.padding[2]), tostring(self.ceil_mode), tostring(self.count_include_pad))
end

---------------------------------------------------------------------------
-- Embedding
---------------------------------------------------------------------------
--- nn.Embedding(num_embeddings, embedding_dim, {padding_idx, dtype, device}): weight
--- [num, dim] ~ N(0, 1). Ids are 1-based; padding_idx (1-based, or negative from the end)
--- names a row that starts at zero and gets no gradient.
L.Embedding = Module:extend("Embedding")

function L.Embedding:init(num_embeddings, embedding_dim, opts)
  opts = options(opts, "Embedding")
  check_size(num_embeddings, "Embedding: num_embeddings")
  check_size(embedding_dim, "Embedding: embedding_dim")
  self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
  local p = opts.padding_idx
  if p ~= nil then
    if math.type(p) ~= "integer" or p == 0 or p > num_embeddings or p < -num_embeddings then
      error(string.format("Embedding: padding_idx must be in 1..%d or -%d..-1 (ids are 1-based), got %s",
        num_embeddings, num_embeddings, tostring(p)), 2)
    end
    if p < 0 then p = num_embeddings + p + 1 end
  end
  self.padding_idx = p
  self.weight = Parameter(opts._weight or T.empty({ num_embeddings, embedding_dim }, tensor_opts(opts)))
  if not opts._weight then self:reset_parameters() end
end

function L.Embedding:reset_parameters()
  init.normal_(self.weight)
  if self.padding_idx then T.no_grad(function() self.weight[self.padding_idx]:fill_(0) end) end
end

--- nn.Embedding.from_pretrained(weight [num, dim], {freeze = true, padding_idx})
function L.Embedding.from_pretrained(weight, opts)
  opts = options(opts, "Embedding.from_pretrained")
  if not T.is_tensor(weight) or weight:dim() ~= 2 then error("Embedding.from_pretrained: weight must be a 2-d tensor", 2) end
  local e = L.Embedding(weight.shape[1], weight.shape[2], { padding_idx = opts.padding_idx, _weight = weight:detach():clone() })
  e.weight.requires_grad = opts.freeze == false
  return e
end

function L.Embedding:forward(ids) return F.embedding(ids, self.weight, { padding_idx = self.padding_idx }) end

function L.Embedding:extra_repr()
  local s = string.format("%d, %d", self.num_embeddings, self.embedding_dim)
  if self.padding_idx then s = s .. ", padding_idx=" .. self.padding_idx end
  return s
end

---------------------------------------------------------------------------
-- Dropout, Identity, Flatten, activations, Upsample
---------------------------------------------------------------------------
--- nn.Dropout(p = 0.5): zeroes elements with probability p in training mode (scaling the
--- rest by 1 / (1 - p)); the identity in eval mode
L.Dropout = Module:extend("Dropout")

function L.Dropout:init(p)
  if type(p) == "table" then p = p.p end
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then error("Dropout: p must be in [0, 1], got " .. tostring(p), 2) end
  self.p = p
end

function L.Dropout:forward(x) return F.dropout(x, self.p, { training = self.training }) end
function L.Dropout:extra_repr() return string.format("p=%g", self.p) end

L.Identity = Module:extend("Identity")
function L.Identity:init() end
function L.Identity:forward(x) return x end

--- nn.Flatten(start_dim = 2, end_dim = -1): keeps the batch dim, as PyTorch's
L.Flatten = Module:extend("Flatten")
function L.Flatten:init(start_dim, end_dim) self.start_dim, self.end_dim = start_dim or 2, end_dim or -1 end
function L.Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end
function L.Flatten:extra_repr() return string.format("start_dim=%d, end_dim=%d", self.start_dim, self.end_dim) end

L.ReLU = Module:extend("ReLU")
function L.ReLU:forward(x) return x:relu() end

L.SiLU = Module:extend("SiLU")
function L.SiLU:forward(x) return x:silu() end

L.Sigmoid = Module:extend("Sigmoid")
function L.Sigmoid:forward(x) return x:sigmoid() end

L.Tanh = Module:extend("Tanh")
function L.Tanh:forward(x) return x:tanh() end

--- nn.GELU(approximate = "none" | "tanh") (or {approximate = ...})
L.GELU = Module:extend("GELU")

function L.GELU:init(approximate)
  if type(approximate) == "table" then approximate = approximate.approximate end
  approximate = approximate or "none"
  if approximate ~= "none" and approximate ~= "tanh" then
    error("GELU: approximate must be \"none\" or \"tanh\", got " .. tostring(approximate), 2)
  end
  self.approximate = approximate
end

function L.GELU:forward(x) return x:gelu({ approximate = self.approximate }) end
function L.GELU:extra_repr() return self.approximate == "tanh" and "approximate=tanh" or "" end

--- nn.Upsample({size = {h, w} | scale_factor = 2 (or {2, 3}), mode = "nearest" | "bilinear",
--- align_corners, recompute_scale_factor}): F.interpolate as a layer (no parameters)
L.Upsample = Module:extend("Upsample")

function L.Upsample:init(opts)
  opts = options(opts, "Upsample")
  if (opts.size == nil) == (opts.scale_factor == nil) then error("Upsample: give size or scale_factor (one of them)", 2) end
  local mode = opts.mode or "nearest"
  if mode ~= "nearest" and mode ~= "bilinear" then
    error("Upsample: mode must be \"nearest\" or \"bilinear\" (got " .. tostring(mode) .. ")", 2)
  end
  if opts.align_corners and mode ~= "bilinear" then error("Upsample: align_corners needs mode \"bilinear\"", 2) end
  self.size, self.scale_factor, self.mode = opts.size, opts.scale_factor, mode
  self.align_corners, self.recompute_scale_factor = opts.align_corners, opts.recompute_scale_factor
end

function L.Upsample:forward(x)
  return F.interpolate(x, { size = self.size, scale_factor = self.scale_factor, mode = self.mode,
    align_corners = self.align_corners, recompute_scale_factor = self.recompute_scale_factor })
end

function L.Upsample:extra_repr()
  local what
  if self.size then
    what = "size=" .. (type(self.size) == "table" and tuple(self.size[1], self.size[2]) or tostring(self.size))
  else
    local s = self.scale_factor
    what = "scale_factor=" .. (type(s) == "table" and string.format("(%g, %g)", s[1], s[2]) or string.format("%g", s))
  end
  return what .. ", mode=" .. self.mode
end

return L
