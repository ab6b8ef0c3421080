-- tocha/nn/init_weights.lua: nn.init, weight initialisation as torch.nn.init: each function
-- fills a tensor in place under no_grad and returns it. Fans and gains follow PyTorch's
-- _calculate_fan_in_and_fan_out and calculate_gain, so the layers' defaults match PyTorch's.
local T = require "tocha"

local init = {}

-- set while init.skip runs: every fill below leaves its tensor as it is
local skipping = false

--- init.skip(fn, ...) -> fn's results: builds modules without filling their weights (every
--- init function is a no-op while fn runs), as PyTorch's skip_init: for a model whose weights
--- are loaded next. Its parameters hold whatever memory T.empty gave them until then.
function init.skip(fn, ...)
  local was = skipping
  skipping = true
  local res = table.pack(pcall(fn, ...))
  skipping = was
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- init.calculate_gain(nonlinearity, param): the recommended gain for a nonlinearity
function init.calculate_gain(nonlinearity, param)
  local linear = { linear = true, identity = true, sigmoid = true, conv1d = true, conv2d = true, conv3d = true,
    conv_transpose1d = true, conv_transpose2d = true, conv_transpose3d = true }
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then
    local slope = param == nil and 0.01 or param
    if type(slope) ~= "number" then error("calculate_gain: negative_slope " .. tostring(slope) .. " is not a number", 2) end
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == "selu" then return 3 / 4 end
  error("calculate_gain: unsupported nonlinearity " .. tostring(nonlinearity), 2)
end

--- init.calculate_fan_in_and_fan_out(t): fan_in = size(2) * receptive field, fan_out =
--- size(1) * receptive field (a weight [out, in, kh, kw]); needs at least 2 dims
function init.calculate_fan_in_and_fan_out(t)
  local shape = t.shape
  if #shape < 2 then
    error("fan in and fan out can not be computed for a tensor with fewer than 2 dimensions", 3)
  end
  local receptive = 1
  for i = 3, #shape do receptive = receptive * shape[i] end
  return shape[2] * receptive, shape[1] * receptive
end

local function fan(t, mode)
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  if mode == nil or mode == "fan_in" then return fan_in end
  if mode == "fan_out" then return fan_out end
  error("mode " .. tostring(mode) .. " is not supported, use \"fan_in\" or \"fan_out\"", 3)
end

local function check(t, name)
  if not T.is_tensor(t) then error("init." .. name .. ": expected a tensor, got " .. type(t), 3) end
end

-- arguments given positionally (as PyTorch) or as one options table
local function args(a, names)
  if type(a[1]) == "table" then
    local o = a[1]
    local out = {}
    for i, n in ipairs(names) do out[i] = o[n] end
    return table.unpack(out, 1, #names)
  end
  return table.unpack(a, 1, #names)
end

--- init.uniform_(t, a = 0, b = 1)
function init.uniform_(t, ...)
  check(t, "uniform_")
  if skipping then return t end
  local a, b = args({ ... }, { "a", "b" })
  return T.no_grad(function() return t:uniform_(a or 0, b or 1) end)
end

--- init.normal_(t, mean = 0, std = 1)
function init.normal_(t, ...)
  check(t, "normal_")
  if skipping then return t end
  local mean, std = args({ ... }, { "mean", "std" })
  return T.no_grad(function() return t:normal_(mean or 0, std or 1) end)
end

--- init.constant_(t, value)
function init.constant_(t, value)
  check(t, "constant_")
  if type(value) ~= "number" then error("init.constant_: value must be a number", 2) end
  if skipping then return t end
  return T.no_grad(function() return t:fill_(value) end)
end

function init.zeros_(t)
  check(t, "zeros_")
  return skipping and t or T.no_grad(function() return t:fill_(0) end)
end
function init.ones_(t)
  check(t, "ones_")
  return skipping and t or T.no_grad(function() return t:fill_(1) end)
end

--- init.xavier_uniform_(t, gain = 1): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))
function init.xavier_uniform_(t, ...)
  check(t, "xavier_uniform_")
  local gain = args({ ... }, { "gain" }) or 1
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  local a = math.sqrt(3) * gain * math.sqrt(2 / (fan_in + fan_out))
  return init.uniform_(t, -a, a)
end

--- init.xavier_normal_(t, gain = 1): N(0, std), std = gain * sqrt(2 / (fan_in + fan_out))
function init.xavier_normal_(t, ...)
  check(t, "xavier_normal_")
  local gain = args({ ... }, { "gain" }) or 1
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  return init.normal_(t, 0, gain * math.sqrt(2 / (fan_in + fan_out)))
end

--- init.kaiming_uniform_(t, a = 0, mode = "fan_in", nonlinearity = "leaky_relu"), or
--- (t, {a =, mode =, nonlinearity =}): U(-b, b), b = gain * sqrt(3 / fan)
function init.kaiming_uniform_(t, ...)
  check(t, "kaiming_uniform_")
  local a, mode, nl = args({ ... }, { "a", "mode", "nonlinearity" })
  local std = init.calculate_gain(nl or "leaky_relu", a or 0) / math.sqrt(fan(t, mode))
  local bound = math.sqrt(3) * std
  return init.uniform_(t, -bound, bound)
end

--- init.kaiming_normal_(t, a = 0, mode = "fan_in", nonlinearity = "leaky_relu"): N(0, gain / sqrt(fan))
function init.kaiming_normal_(t, ...)
  check(t, "kaiming_normal_")
  local a, mode, nl = args({ ... }, { "a", "mode", "nonlinearity" })
  return init.normal_(t, 0, init.calculate_gain(nl or "leaky_relu", a or 0) / math.sqrt(fan(t, mode)))
end

--- init.trunc_normal_(t, mean = 0, std = 1, a = -2, b = 2): N(mean, std) conditioned on [a, b]
--- (bounds are absolute values, as in PyTorch). Draws outside are redrawn; an interval so
--- narrow that some are still outside after 100 rounds has those clamped.
function init.trunc_normal_(t, ...)
  check(t, "trunc_normal_")
  local mean, std, a, b = args({ ... }, { "mean", "std", "a", "b" })
  mean, std, a, b = mean or 0, std or 1, a or -2, b or 2
  if not (a < b) then error("init.trunc_normal_: needs a < b", 2) end
  if skipping then return t end
  if (b - mean) / std < -2 or (a - mean) / std > 2 then
    -- PyTorch warns here: the interval lies in a tail, and redrawing would take long
    error("init.trunc_normal_: [a, b] lies more than 2 std from the mean", 2)
  end
  return T.no_grad(function()
    local x = T.empty(t.shape, { dtype = "f64" }):normal_(mean, std)
    for _ = 1, 100 do
      local out = x:lt(a):logical_or(x:gt(b))
      if out:sum():item() == 0 then break end
      x = T.where(out, T.empty(t.shape, { dtype = "f64" }):normal_(mean, std), x)
    end
    return t:copy_(x:clamp(a, b):to(t.dtype):to(t.device))
  end)
end

return init
