-- tocha/nn/batchnorm.lua: nn.BatchNorm1d and nn.BatchNorm2d, PyTorch's: per-channel
-- normalisation by the batch's statistics in training and by running statistics in eval mode,
-- with PyTorch's state-dict names (weight, bias, running_mean, running_var,
-- num_batches_tracked), options and update rule, over F.batch_norm.
local T = require "tocha"
local F = require "tocha.nn.functional"
local M = require "tocha.nn.module"

local B = {}

local function check_options(what, num_features, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error(what .. ": options must be a table, got " .. type(opts), 4) end
  if math.type(num_features) ~= "integer" or num_features < 1 then
    error(string.format("%s: num_features must be a positive integer, got %s", what, tostring(num_features)), 4)
  end
  local eps = opts.eps or 1e-5
  if type(eps) ~= "number" or eps < 0 then error(what .. ": eps must be a non-negative number", 4) end
  local momentum = opts.momentum
  if momentum == nil then momentum = 0.1 elseif momentum == false then momentum = nil end
  if momentum ~= nil and (type(momentum) ~= "number" or momentum < 0 or momentum > 1) then
    error(what .. ": momentum must be a number in [0, 1], or false for a cumulative average", 4)
  end
  return opts, eps, momentum
end

-- the base of both: `dims` lists the input ranks the subclass accepts
local BatchNorm = M.Module:extend("_BatchNorm")

--- (num_features, {eps = 1e-5, momentum = 0.1 (false: a cumulative average, PyTorch's
--- momentum=None), affine = true, bias = true (with affine), track_running_stats = true,
--- dtype, device})
function BatchNorm:init(num_features, opts)
  local eps, momentum
  opts, eps, momentum = check_options(self.__name, num_features, opts)
  self.num_features, self.eps, self.momentum = num_features, eps, momentum
  self.affine = opts.affine ~= false
  self.track_running_stats = opts.track_running_stats ~= false
  local to = { dtype = opts.dtype, device = opts.device }
  self:register_parameter("weight", self.affine and T.ones({ num_features }, to) or nil)
  self:register_parameter("bias", self.affine and opts.bias ~= false and T.zeros({ num_features }, to) or nil)
  if self.track_running_stats then
    self:register_buffer("running_mean", T.zeros({ num_features }, to))
    self:register_buffer("running_var", T.ones({ num_features }, to))
    self:register_buffer("num_batches_tracked", T.zeros({}, { dtype = "i64", device = opts.device }))
  end
end

function BatchNorm:reset_running_stats()
  if not self.track_running_stats then return end
  T.no_grad(function()
    self.running_mean:zero_()
    self.running_var:fill_(1)
    self.num_batches_tracked:zero_()
  end)
end

function BatchNorm:reset_parameters()
  self:reset_running_stats()
  T.no_grad(function()
    if self.weight then self.weight:fill_(1) end
    if self.bias then self.bias:zero_() end
  end)
end

-- checkpoints written before PyTorch counted batches have no num_batches_tracked; PyTorch
-- loads them with a count of 0, and so does tocha
function BatchNorm:state_defaults()
  if not self.track_running_stats then return {} end
  return { num_batches_tracked = T.zeros({}, { dtype = "i64" }) }
end

function BatchNorm:forward(x)
  if not T.is_tensor(x) then error(self.__name .. ": expected a tensor, got " .. type(x), 2) end
  if not self.dims[x:dim()] then
    error(string.format("%s: expected a %s input, got [%s]", self.__name, self.dims_text, table.concat(x.shape, " x ")), 2)
  end
  if x.shape[2] ~= self.num_features then
    error(string.format("%s: the input has %d channels, the layer %d (input [%s])", self.__name, x.shape[2],
      self.num_features, table.concat(x.shape, " x ")), 2)
  end
  local factor = self.momentum or 0
  if self.training and self.track_running_stats then
    T.no_grad(function() self.num_batches_tracked:add_(1) end)
    if self.momentum == nil then factor = 1 / self.num_batches_tracked:item() end
  end
  local use_batch = self.training or not self.track_running_stats
  local stats = not self.training or self.track_running_stats
  return F.batch_norm(x, stats and self.running_mean or nil, stats and self.running_var or nil, self.weight, self.bias,
    { training = use_batch, momentum = factor, eps = self.eps })
end

function BatchNorm:extra_repr()
  return string.format("%d, eps=%g, momentum=%s, affine=%s, bias=%s, track_running_stats=%s", self.num_features,
    self.eps, self.momentum and string.format("%g", self.momentum) or "false", tostring(self.affine),
    tostring(self.bias ~= nil), tostring(self.track_running_stats))
end

--- nn.BatchNorm1d(num_features, opts): inputs [N, C] or [N, C, L]
B.BatchNorm1d = BatchNorm:extend("BatchNorm1d")
B.BatchNorm1d.dims, B.BatchNorm1d.dims_text = { [2] = true, [3] = true }, "2-d [N, C] or 3-d [N, C, L]"

--- nn.BatchNorm2d(num_features, opts): inputs [N, C, H, W]
B.BatchNorm2d = BatchNorm:extend("BatchNorm2d")
B.BatchNorm2d.dims, B.BatchNorm2d.dims_text = { [4] = true }, "4-d [N, C, H, W]"

return B
