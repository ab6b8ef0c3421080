-- tests/test_batchnorm.lua: nn.BatchNorm1d / BatchNorm2d against PyTorch (forward, input and
-- parameter gradients, running statistics over several train and eval steps;
-- tests/ref/gen_batchnorm.py), f64 gradient checks of F.batch_norm in both modes, state-dict
-- names and old checkpoints, the pooling modules, and the errors.
local T = require "tocha"
local nn = require "tocha.nn"
local F = nn.functional
local ref = dofile(T.testing.path("ref/batchnorm_ref.lua"))

local tests = {}

local function vec(v, shape) return T.tensor(v, { dtype = "f64" }):view(shape) end

for name, c in pairs(ref) do
  tests["matches PyTorch: " .. name] = function()
    local C = c.shape[2]
    local cls = c.kind == "1d" and nn.BatchNorm1d or nn.BatchNorm2d
    local opts = { dtype = "f64" }
    for k, v in pairs(c.opts) do opts[k] = v end
    local m = cls(C, opts)
    T.no_grad(function()
      if c.weight then m.weight:copy_(vec(c.weight, { C })) end
      if c.bias then m.bias:copy_(vec(c.bias, { C })) end
      if c.running_mean0 then
        m.running_mean:copy_(vec(c.running_mean0, { C }))
        m.running_var:copy_(vec(c.running_var0, { C }))
      end
    end)
    local keys = {}
    for k in pairs(m:state_dict()) do keys[#keys + 1] = k end
    table.sort(keys)
    assert(table.concat(keys, ",") == table.concat(c.keys, ","), "state_dict keys: " .. table.concat(keys, ","))
    for k, mode in ipairs(c.modes) do
      m:train(mode == "train")
      m:zero_grad()
      local x = vec(c["x" .. k], c.shape):requires_grad_(true)
      local y = m(x)
      local msg = string.format("%s step %d (%s)", name, k, mode)
      T.testing.assert_close(y, vec(c["y" .. k], c.shape), { rtol = 1e-12, atol = 1e-12, msg = msg .. " y" })
      y:backward(vec(c["gy" .. k], c.shape))
      T.testing.assert_close(x.grad, vec(c["gx" .. k], c.shape), { rtol = 1e-10, atol = 1e-11, msg = msg .. " gx" })
      if c["gw" .. k] then
        T.testing.assert_close(m.weight.grad, vec(c["gw" .. k], { C }), { rtol = 1e-10, atol = 1e-11, msg = msg .. " gw" })
      end
      if c["gb" .. k] then
        T.testing.assert_close(m.bias.grad, vec(c["gb" .. k], { C }), { rtol = 1e-10, atol = 1e-11, msg = msg .. " gb" })
      end
    end
    if c.running_mean then
      T.testing.assert_close(m.running_mean, vec(c.running_mean, { C }), { rtol = 1e-12, atol = 1e-12 })
      T.testing.assert_close(m.running_var, vec(c.running_var, { C }), { rtol = 1e-12, atol = 1e-12 })
      assert(m.num_batches_tracked:item() == c.num_batches_tracked, "num_batches_tracked")
      assert(m.num_batches_tracked.dtype == "i64" and m.num_batches_tracked:dim() == 0)
    end
  end
end

tests["f32 forward matches f64 in training and eval"] = function()
  local c = ref.bn2d_train_eval
  for _, training in ipairs({ true, false }) do
    local m64 = nn.BatchNorm2d(4, { dtype = "f64" })
    local m32 = nn.BatchNorm2d(4)
    m64:train(training); m32:train(training)
    local x = vec(c.x1, c.shape)
    T.testing.assert_close(m32(x:float()), m64(x), { rtol = 1e-5, atol = 1e-5 })
    T.testing.assert_close(m32.running_var, m64.running_var, { rtol = 1e-6, atol = 1e-6 })
  end
end

local function mk(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end

tests["gradcheck batch_norm in training (input, weight, bias)"] = function()
  T.testing.gradcheck(function(x, w, b) return F.batch_norm(x, nil, nil, w, b, { training = true }) end,
    { mk(3, 2, 3, 2), mk(2), mk(2) })
  T.testing.gradcheck(function(x) return F.batch_norm(x, nil, nil, nil, nil, { training = true, eps = 1e-3 }) end,
    { mk(5, 3) })
  -- with running statistics being updated (they take no gradient)
  local rm, rv = T.zeros({ 2 }, { dtype = "f64" }), T.ones({ 2 }, { dtype = "f64" })
  T.testing.gradcheck(function(x, w) return F.batch_norm(x, rm, rv, w, nil, { training = true }) end,
    { mk(4, 2, 3), mk(2) })
end

tests["gradcheck batch_norm in eval mode (input, weight, bias)"] = function()
  local rm = T.randn({ 3 }, { dtype = "f64" })
  local rv = T.rand({ 3 }, { dtype = "f64" }) + 0.5
  T.testing.gradcheck(function(x, w, b) return F.batch_norm(x, rm, rv, w, b) end, { mk(2, 3, 2, 2), mk(3), mk(3) })
end

tests["eval mode uses the running statistics and leaves them alone"] = function()
  local m = nn.BatchNorm2d(2, { dtype = "f64" }):eval()
  T.no_grad(function()
    m.running_mean:copy_(T.tensor({ 1, -2 }, { dtype = "f64" }))
    m.running_var:copy_(T.tensor({ 4, 0.25 }, { dtype = "f64" }))
  end)
  local x = T.randn({ 2, 2, 3, 3 }, { dtype = "f64" })
  local y = m(x)
  local want = T.stack({ (x:select(2, 1) - 1) / math.sqrt(4 + 1e-5), (x:select(2, 2) + 2) / math.sqrt(0.25 + 1e-5) }, 2)
  T.testing.assert_close(y, want, { rtol = 1e-12, atol = 1e-12 })
  assert(m.num_batches_tracked:item() == 0)
  assert(m.running_mean[1]:item() == 1)
end

tests["state_dict round trip and checkpoints without num_batches_tracked"] = function()
  local a = nn.Sequential(nn.Conv2d(3, 4, 3, { bias = false }), nn.BatchNorm2d(4))
  a:train()
  a(T.randn({ 2, 3, 5, 5 }))
  local sd = a:state_dict()
  assert(sd["1.num_batches_tracked"]:item() == 1)
  local b = nn.Sequential(nn.Conv2d(3, 4, 3, { bias = false }), nn.BatchNorm2d(4))
  b:load_state_dict(sd)
  T.testing.assert_close(b[2].running_var, a[2].running_var)
  assert(b[2].num_batches_tracked:item() == 1)
  local old = {}
  for k, v in pairs(sd) do if not k:find("num_batches_tracked", 1, true) then old[k] = v end end
  local c = nn.Sequential(nn.Conv2d(3, 4, 3, { bias = false }), nn.BatchNorm2d(4))
  c[2].num_batches_tracked:fill_(5)
  c:load_state_dict(old)           -- strict, yet the count may be absent (as PyTorch allows)
  assert(c[2].num_batches_tracked:item() == 0)
  T.testing.assert_close(c[2].running_mean, a[2].running_mean)
  -- to() converts the floating state only
  c:to("f64")
  assert(c[2].running_mean.dtype == "f64" and c[2].num_batches_tracked.dtype == "i64")
end

tests["pooling modules apply F's pools with their options"] = function()
  local x = T.randn({ 2, 3, 7, 6 }, { dtype = "f64" })
  local mp = nn.MaxPool2d(3, { stride = 2, padding = 1, ceil_mode = true })
  T.testing.assert_close(mp(x), F.max_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }))
  assert(mp(x).shape[3] == 4)
  local ap = nn.AvgPool2d({ 3, 2 }, { stride = 1, padding = { 1, 1 }, count_include_pad = false })
  T.testing.assert_close(ap(x), F.avg_pool2d(x, { 3, 2 }, { stride = 1, padding = { 1, 1 }, count_include_pad = false }))
  local p2 = nn.AvgPool2d(2)
  assert(p2(x).shape[3] == 3 and p2(x).shape[4] == 3)
  assert(tostring(mp):find("MaxPool2d%(kernel_size=%(3, 3%), stride=%(2, 2%)"))
  assert(tostring(nn.BatchNorm2d(8)):find("BatchNorm2d%(8, eps=1e%-05, momentum=0.1"))
  assert(#nn.MaxPool2d(2):parameters() == 0)
end

tests["errors name what is wrong"] = function()
  local m = nn.BatchNorm2d(3)
  T.testing.assert_raises("expected a 4-d [N, C, H, W] input, got [2 x 3]", function() m(T.randn({ 2, 3 })) end)
  T.testing.assert_raises("the input has 4 channels, the layer 3", function() m(T.randn({ 2, 4, 2, 2 })) end)
  T.testing.assert_raises("expected more than 1 value per channel when training",
    function() nn.BatchNorm1d(3)(T.randn({ 1, 3 })) end)
  nn.BatchNorm1d(3):eval()(T.randn({ 1, 3 }))   -- one sample is fine in eval mode
  T.testing.assert_raises("num_features must be a positive integer", function() nn.BatchNorm2d(0) end)
  T.testing.assert_raises("momentum must be a number in [0, 1]", function() nn.BatchNorm2d(2, { momentum = 2 }) end)
  T.testing.assert_raises("running_mean has shape [4], expected [3]",
    function() F.batch_norm(T.randn({ 2, 3 }), T.zeros(4), T.ones(3)) end)
  T.testing.assert_raises("return_indices is not supported", function() nn.MaxPool2d(2, { return_indices = true }) end)
  T.testing.assert_raises("size mismatch for running_mean",
    function() m:load_state_dict(nn.BatchNorm2d(4):state_dict()) end)
end

return tests
