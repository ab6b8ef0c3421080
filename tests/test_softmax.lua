-- tests/test_softmax.lua: softmax, log_softmax, cross_entropy, mse_loss and l1_loss against
-- PyTorch (forward and gradients, tests/ref/gen_norm.py), f64 gradient checks, strided and
-- half-precision inputs, and the error messages.
local T = require "tocha"
local raises = T.testing.raises
local F = require "tocha.nn.functional"
local ref = dofile(T.testing.path("ref/softmax_ref.lua"))

local tests = {}

local function tensor(vals, shape, dtype)
  return T.tensor(vals, { dtype = dtype or "f64" }):view(shape)
end

local function leaf(vals, shape, dtype)
  return tensor(vals, shape, dtype):requires_grad_(true)
end

-- ---- softmax, log_softmax ------------------------------------------------------------------------
for name, c in pairs(ref) do
  if c.fn == "softmax" or c.fn == "log_softmax" then
    tests["matches PyTorch: " .. name .. " (f64, forward and gradient)"] = function()
      local x = leaf(c.x, c.shape)
      local y = F[c.fn](x, c.dim)
      T.testing.assert_close(y, tensor(c.y, c.shape), { rtol = 1e-12, atol = 1e-12, msg = name })
      y:backward(tensor(c.g, c.shape))
      T.testing.assert_close(x.grad, tensor(c.gx, c.shape), { rtol = 1e-10, atol = 1e-12, msg = name .. " gx" })
    end
    tests["matches PyTorch: " .. name .. " (f32)"] = function()
      local x = leaf(c.x, c.shape, "f32")
      local y = F[c.fn](x, c.dim)
      assert(y.dtype == "f32")
      T.testing.assert_close(y, tensor(c.y, c.shape), { rtol = 1e-5, atol = 1e-6, msg = name })
      y:backward(tensor(c.g, c.shape, "f32"))
      T.testing.assert_close(x.grad, tensor(c.gx, c.shape), { rtol = 1e-4, atol = 1e-5, msg = name .. " gx" })
    end
  end
end

tests["softmax: negative dims, rows sum to one, grad_fn names"] = function()
  local x = T.randn({ 3, 4, 5 }, { dtype = "f64" })
  T.testing.assert_close(F.softmax(x, -1), F.softmax(x, 3))
  T.testing.assert_close(F.softmax(x, -3), F.softmax(x, 1))
  T.testing.assert_close(F.softmax(x, 2):sum(2), T.ones({ 3, 5 }, { dtype = "f64" }), { rtol = 1e-12 })
  T.testing.assert_close(F.log_softmax(x, 2):exp(), F.softmax(x, 2), { rtol = 1e-12 })
  x:requires_grad_(true)
  assert(F.softmax(x, 1).grad_fn == "SoftmaxBackward")
  assert(F.log_softmax(x, 1).grad_fn == "LogSoftmaxBackward")
end

tests["softmax: f64 gradient checks over every dim"] = function()
  local x = T.randn({ 2, 3, 4 }, { dtype = "f64", requires_grad = true })
  for dim = 1, 3 do
    T.testing.gradcheck(function(a) return F.softmax(a, dim) end, { x })
    T.testing.gradcheck(function(a) return F.log_softmax(a, dim) end, { x })
  end
end

tests["softmax: strided inputs equal their contiguous copies"] = function()
  local base = T.randn({ 4, 5, 6 }, { dtype = "f64" })
  local views = { base:transpose(1, 3), base:narrow(2, 2, 3), base:permute(2, 3, 1), base:transpose(2, 3) }
  for _, v in ipairs(views) do
    for dim = 1, 3 do
      T.testing.assert_close(F.softmax(v, dim), F.softmax(v:contiguous(), dim), { rtol = 1e-14 })
      T.testing.assert_close(F.log_softmax(v, dim), F.log_softmax(v:contiguous(), dim), { rtol = 1e-14 })
    end
  end
  local x = T.randn({ 5, 3 }, { dtype = "f64", requires_grad = true })
  T.testing.gradcheck(function(a) return F.log_softmax(a:t(), 2) end, { x })
  T.testing.gradcheck(function(a) return F.softmax(a:t(), 1) end, { x })
end

tests["softmax: large logits stay finite; a 0-d tensor; odd sizes"] = function()
  local c = ref.softmax_large
  local y = F.softmax(tensor(c.x, c.shape), c.dim)
  T.testing.assert_close(y, tensor(c.y, c.shape), { rtol = 1e-12, atol = 1e-300 })
  assert(F.log_softmax(tensor(c.x, c.shape), c.dim):isfinite():logical_not():sum():item() == 0)
  local s = T.tensor(3.5, { dtype = "f64" })
  assert(F.softmax(s, 1):item() == 1 and #F.softmax(s, 1).shape == 0)
  assert(F.log_softmax(s, -1):item() == 0)
  T.testing.gradcheck(function(a) return F.softmax(a, 1) * a end, { s:requires_grad_(true) })
  local long = T.randn({ 3, 1037 })
  T.testing.assert_close(F.softmax(long, 2):sum(2), T.ones({ 3 }), { rtol = 1e-5 })
  local many = T.randn({ 4099, 7 }) -- enough rows for the threaded path
  T.testing.assert_close(F.softmax(many, 2):sum(2), T.ones({ 4099 }), { rtol = 1e-5 })
  T.testing.assert_close(F.softmax(many, 1), F.softmax(many:double(), 1), { rtol = 1e-5, atol = 1e-7 })
end

tests["softmax, cross_entropy: f16 and bf16 run close to f32"] = function()
  local x = T.randn({ 4, 9 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local y = F.softmax(x:to(dt), 2)
    assert(y.dtype == dt)
    T.testing.assert_close(y, F.softmax(x, 2), { rtol = 1e-2, atol = 1e-3 })
    T.testing.assert_close(F.log_softmax(x:to(dt), 1), F.log_softmax(x, 1), { rtol = 2e-2, atol = 2e-2 })
    local t = T.tensor({ 1, 9, 3, 4 }, { dtype = "i64" })
    local xh = x:to(dt):requires_grad_(true)
    local l = F.cross_entropy(xh, t, { label_smoothing = 0.1 })
    assert(l.dtype == dt)
    T.testing.assert_close(l, F.cross_entropy(x, t, { label_smoothing = 0.1 }), { rtol = 2e-2, atol = 2e-2 })
    l:backward()
    assert(xh.grad.dtype == dt and xh.grad:isfinite():logical_not():sum():item() == 0)
  end
end

tests["softmax: errors name what was wrong"] = function()
  local x = T.randn({ 2, 3 })
  raises("out of range", F.softmax, x, 3)
  raises("out of range", F.log_softmax, x, -3)
  raises("dimension 0 is invalid", F.softmax, x, 0)
  raises("floating point", F.softmax, T.ones({ 2, 3 }, { dtype = "i64" }), 1)
end

-- ---- cross entropy -----------------------------------------------------------------------------------
local function ce_inputs(c, dtype)
  local logits = leaf(c.logits, c.shape, dtype)
  local target
  if c.target_kind == "index" then target = tensor(c.target, c.target_shape, "i64")
  else target = tensor(c.target, c.target_shape, dtype) end
  local weight = c.weight and tensor(c.weight, { #c.weight }, dtype)
  return logits, target, weight
end

local function ce_opts(c, weight)
  return { weight = weight, ignore_index = c.ignore_index, label_smoothing = c.label_smoothing,
    reduction = c.reduction }
end

for name, c in pairs(ref) do
  if name:sub(1, 3) == "ce_" then
    for _, dtype in ipairs({ "f64", "f32" }) do
      tests["matches PyTorch: cross_entropy " .. name:sub(4) .. " (" .. dtype .. ")"] = function()
        local logits, target, weight = ce_inputs(c, dtype)
        local out = F.cross_entropy(logits, target, ce_opts(c, weight))
        assert(#out.shape == #c.out_shape, "output rank")
        for i, s in ipairs(c.out_shape) do assert(out.shape[i] == s, "output shape") end
        local tol = dtype == "f64" and { rtol = 1e-11, atol = 1e-12 } or { rtol = 1e-5, atol = 1e-6 }
        T.testing.assert_close(out, tensor(c.out, c.out_shape), { rtol = tol.rtol, atol = tol.atol, msg = name })
        if c.g then out:backward(tensor(c.g, c.out_shape, dtype)) else out:backward() end
        T.testing.assert_close(logits.grad, tensor(c.glogits, c.shape),
          { rtol = tol.rtol * 10, atol = tol.atol * 10, msg = name .. " glogits" })
      end
    end
  end
end

tests["cross_entropy: f64 gradient checks (weights, ignore_index, smoothing, [N, C, d...])"] = function()
  local x = T.randn({ 5, 4 }, { dtype = "f64", requires_grad = true })
  local t = T.tensor({ 1, 4, 2, 3, 2 }, { dtype = "i64" })
  local w = T.tensor({ 0.5, 1.5, 1, 2 }, { dtype = "f64" })
  for _, red in ipairs({ "mean", "sum", "none" }) do
    T.testing.gradcheck(function(a) return F.cross_entropy(a, t, { reduction = red }) end, { x })
    T.testing.gradcheck(function(a)
      return F.cross_entropy(a, t, { weight = w, ignore_index = 2, label_smoothing = 0.2, reduction = red })
    end, { x })
  end
  local xs = T.randn({ 2, 3, 2, 2 }, { dtype = "f64", requires_grad = true })
  local ts = T.tensor({ { { 1, 2 }, { 3, 3 } }, { { 2, 1 }, { 1, -100 } } }, { dtype = "i64" })
  T.testing.gradcheck(function(a) return F.cross_entropy(a, ts, { label_smoothing = 0.1 }) end, { xs })
  T.testing.gradcheck(function(a) return F.cross_entropy(a, ts, { reduction = "none" }) end, { xs })
end

tests["cross_entropy: probability targets take gradients too"] = function()
  local x = T.randn({ 3, 4, 2 }, { dtype = "f64", requires_grad = true })
  local p = F.softmax(T.randn({ 3, 4, 2 }, { dtype = "f64" }), 2):detach():requires_grad_(true)
  local w = T.tensor({ 0.5, 1.5, 1, 2 }, { dtype = "f64" })
  for _, red in ipairs({ "mean", "sum", "none" }) do
    T.testing.gradcheck(function(a, b)
      return F.cross_entropy(a, b, { weight = w, label_smoothing = 0.1, reduction = red })
    end, { x, p })
  end
end

tests["cross_entropy: strided logits, i32 targets, [C] logits"] = function()
  local base = T.randn({ 4, 6 }, { dtype = "f64" }) -- classes along dim 1 after :t()
  local t = T.tensor({ 1, 4, 2, 2, 3, 1 }, { dtype = "i64" })
  local a = F.cross_entropy(base:t(), t, { reduction = "none" })
  T.testing.assert_close(a, F.cross_entropy(base:t():contiguous(), t, { reduction = "none" }), { rtol = 1e-14 })
  T.testing.assert_close(F.cross_entropy(base:t(), t:to("i32")), F.cross_entropy(base:t(), t), { rtol = 1e-14 })
  local x = base:t()
  T.testing.gradcheck(function(l) return F.cross_entropy(l:t(), t, { label_smoothing = 0.3 }) end,
    { base:clone():requires_grad_(true) })
  -- a single sample: logits [C], target a 0-d class
  local one = F.cross_entropy(x[2], T.tensor(4, { dtype = "i64" }), { reduction = "none" })
  assert(#one.shape == 0)
  T.testing.assert_close(one, -F.log_softmax(x[2], 1)[4], { rtol = 1e-14 })
  -- every sample ignored: the mean is 0 / 0, as PyTorch
  local all = F.cross_entropy(x, T.full({ 6 }, -100, { dtype = "i64" }))
  assert(all:item() ~= all:item())
  assert(F.cross_entropy(x, T.full({ 6 }, -100, { dtype = "i64" }), { reduction = "sum" }):item() == 0)
end

tests["cross_entropy: errors name what was wrong"] = function()
  local x = T.randn({ 3, 5 })
  raises("target 6 is out of range for 5 classes", F.cross_entropy, x, T.tensor({ 1, 6, 2 }, { dtype = "i64" }))
  raises("target 0 is out of range", F.cross_entropy, x, T.tensor({ 1, 0, 2 }, { dtype = "i64" }))
  raises("do not match logits", F.cross_entropy, x, T.tensor({ 1, 2 }, { dtype = "i64" }))
  raises("must have the logits' shape", F.cross_entropy, x, T.rand({ 3, 4 }))
  raises("weight must be 1-d with one entry per class (5)", F.cross_entropy, x,
    T.tensor({ 1, 2, 3 }, { dtype = "i64" }), { weight = T.ones({ 4 }) })
  raises("label_smoothing must be between 0 and 1", F.cross_entropy, x,
    T.tensor({ 1, 2, 3 }, { dtype = "i64" }), { label_smoothing = 1.5 })
  raises("class indices", F.cross_entropy, x, T.tensor({ true, false, true }))
  raises("reduction", F.cross_entropy, x, T.tensor({ 1, 2, 3 }, { dtype = "i64" }), { reduction = "avg" })
  raises("logits must be a floating point", F.cross_entropy, T.ones({ 3, 5 }, { dtype = "i64" }),
    T.tensor({ 1, 2, 3 }, { dtype = "i64" }))
  -- the raw binding checks the reduction name itself
  raises("invalid option", T._nn.cross_entropy, x, T.tensor({ 1, 2, 3 }, { dtype = "i64" }), nil, -100, 0, "avg")
end

-- ---- mse, l1 -------------------------------------------------------------------------------------------
for name, c in pairs(ref) do
  if c.fn == "mse" or c.fn == "l1" then
    tests["matches PyTorch: " .. name] = function()
      local a, b = leaf(c.a, c.shape), leaf(c.b, c.shape)
      local out = F[c.fn .. "_loss"](a, b, { reduction = c.reduction })
      T.testing.assert_close(out, tensor(c.out, c.reduction == "none" and c.shape or {}), { rtol = 1e-12 })
      if c.g then out:backward(tensor(c.g, c.shape)) else out:backward() end
      T.testing.assert_close(a.grad, tensor(c.ga, c.shape), { rtol = 1e-12, atol = 1e-14 })
      T.testing.assert_close(b.grad, tensor(c.gb, c.shape), { rtol = 1e-12, atol = 1e-14 })
      local o32 = F[c.fn .. "_loss"](a:float(), b:float(), { reduction = c.reduction })
      assert(o32.dtype == "f32")
      T.testing.assert_close(o32, out, { rtol = 1e-5, atol = 1e-6 })
    end
  end
end

tests["mse_loss, l1_loss: gradient checks, strided inputs, errors"] = function()
  local a = T.randn({ 3, 4 }, { dtype = "f64", requires_grad = true })
  local b = T.randn({ 4, 3 }, { dtype = "f64", requires_grad = true })
  for _, red in ipairs({ "mean", "sum", "none" }) do
    T.testing.gradcheck(function(x, y) return F.mse_loss(x, y:t(), { reduction = red }) end, { a, b })
    T.testing.gradcheck(function(x, y) return F.l1_loss(x, y:t(), { reduction = red }) end, { a, b })
  end
  assert(F.mse_loss(a, b:t()).grad_fn == "MseLossBackward")
  assert(F.l1_loss(a, b:t()).grad_fn == "L1LossBackward")
  raises("must have the same shape", F.mse_loss, a, b)
  raises("must have the same shape", F.l1_loss, a, T.randn({ 4 }, { dtype = "f64" }))
  raises("floating point", F.mse_loss, T.ones({ 2 }, { dtype = "i64" }), T.ones({ 2 }, { dtype = "i64" }))
end

return tests
