-- tests/test_act.lua: the fused activations F.bias_act and F.geglu against their unfused
-- compositions (f64, f32, f16, bf16, strided inputs), their gradients against the composition's
-- and by finite differences in f64, under autocast, in the models' call sites, and their errors.
local T = require "tocha"
local F = require "tocha.nn.functional"
local nn = require "tocha.nn"
local close, raises = T.testing.assert_close, T.testing.raises

local tests = {}

local ACTS = { "relu", "silu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid", "tanh" }
local function act_of(name)
  if name == "gelu_tanh" then return function(x) return x:gelu({ approximate = "tanh" }) end end
  return function(x) return x[name](x) end
end

-- the unfused compositions
local function bias_act_ref(x, b, act)
  local z = b and x + b or x
  return act_of(act)(z)
end
local function geglu_ref(x, b, act)
  local z = b and x + b or x
  local C = x.shape[#x.shape] // 2
  return z:narrow(-1, 1, C) * act_of(act or "gelu")(z:narrow(-1, C + 1, C))
end

tests["bias_act: act(x + b) as one op, every activation, f64 and f32"] = function()
  local x = T.randn({ 3, 5, 40 }, { dtype = "f64" }) * 3
  local b = T.randn({ 40 }, { dtype = "f64" })
  for _, act in ipairs(ACTS) do
    local y = F.bias_act(x, b, act)
    assert(y.grad_fn == nil and y.dtype == "f64")
    close(y, bias_act_ref(x, b, act), { rtol = 1e-14, atol = 1e-15 })
    close(F.bias_act(x, nil, act), act_of(act)(x), { rtol = 1e-14, atol = 1e-15 })
    -- f32: the vectorised rows, against the f64 composition
    close(F.bias_act(x:float(), b:float(), act), bias_act_ref(x, b, act), { rtol = 1e-5, atol = 1e-6 })
  end
end

tests["geglu: first half times gelu of the second, one op, f64, f32, tanh form"] = function()
  local x = T.randn({ 2, 7, 66 }, { dtype = "f64" }) * 2
  local b = T.randn({ 66 }, { dtype = "f64" })
  local y = F.geglu(x, b)
  assert(y.shape[3] == 33)
  close(y, geglu_ref(x, b), { rtol = 1e-14, atol = 1e-15 })
  close(F.geglu(x), geglu_ref(x), { rtol = 1e-14, atol = 1e-15 })
  close(F.geglu(x, b, { approximate = "tanh" }), geglu_ref(x, b, "gelu_tanh"), { rtol = 1e-14, atol = 1e-15 })
  close(F.geglu(x:float(), b:float()), geglu_ref(x, b), { rtol = 1e-5, atol = 1e-6 })
  -- a 1-d input, and rows of one pair
  close(F.geglu(x[1][1]), geglu_ref(x[1][1]), { rtol = 1e-14 })
  close(F.geglu(x:narrow(3, 1, 2)), geglu_ref(x:narrow(3, 1, 2)), { rtol = 1e-14 })
end

tests["bias_act, geglu: strided inputs equal their contiguous copies; half dtypes"] = function()
  local base = T.randn({ 12, 5, 3 }, { dtype = "f64" })
  local v = base:permute(2, 3, 1) -- [5, 3, 12], strided
  local b = T.randn({ 12 }, { dtype = "f64" })
  close(F.bias_act(v, b, "silu"), F.bias_act(v:contiguous(), b, "silu"), { rtol = 1e-15 })
  close(F.geglu(v, b), F.geglu(v:contiguous(), b), { rtol = 1e-15 })
  close(F.bias_act(v:float(), b:float(), "gelu"), F.bias_act(v:float():contiguous(), b:float(), "gelu"), { rtol = 0 })
  for _, dt in ipairs({ "f16", "bf16" }) do
    local xh, bh = v:to(dt), b:to(dt)
    local y = F.bias_act(xh, bh, "gelu")
    assert(y.dtype == dt)
    close(y, bias_act_ref(xh:double(), bh:double(), "gelu"), { rtol = 2e-2, atol = 2e-2 })
    close(F.geglu(xh, bh), geglu_ref(xh:double(), bh:double()), { rtol = 2e-2, atol = 3e-2 })
  end
end

-- the gradients of x and b: the composition's (f64 and f32), then finite differences in f64
local function grads(f, x, b, gy, dt)
  local a, bb = x:to(dt):clone():requires_grad_(), b:to(dt):clone():requires_grad_()
  local y = f(a, bb)
  y:backward(gy:to(dt))
  return { a.grad, bb.grad }, y.grad_fn
end

tests["bias_act, geglu backward: the composition's gradients, and f64 finite differences"] = function()
  local x = T.randn({ 4, 3, 18 }, { dtype = "f64" }) * 2
  local b = T.randn({ 18 }, { dtype = "f64" })
  for _, act in ipairs(ACTS) do
    local gy = T.randn(x.shape, { dtype = "f64" })
    local fused = function(a, bb) return F.bias_act(a, bb, act) end
    local want = grads(function(a, bb) return bias_act_ref(a, bb, act) end, x, b, gy, "f64")
    local got, fn = grads(fused, x, b, gy, "f64")
    assert(fn == "BiasActBackward", tostring(fn))
    for i = 1, 2 do close(got[i], want[i], { rtol = 1e-12, atol = 1e-13 }) end
    local got32 = grads(fused, x, b, gy, "f32")
    for i = 1, 2 do close(got32[i], want[i], { rtol = 1e-4, atol = 1e-4 }) end
  end
  local gy = T.randn({ 4, 3, 9 }, { dtype = "f64" })
  for _, act in ipairs({ "gelu", "gelu_tanh" }) do
    local opts = { approximate = act == "gelu" and "none" or "tanh" }
    local fused = function(a, bb) return F.geglu(a, bb, opts) end
    local want = grads(function(a, bb) return geglu_ref(a, bb, act) end, x, b, gy, "f64")
    local got, fn = grads(fused, x, b, gy, "f64")
    assert(fn == "GegluBackward", tostring(fn))
    for i = 1, 2 do close(got[i], want[i], { rtol = 1e-12, atol = 1e-13 }) end
    local got32 = grads(fused, x, b, gy, "f32")
    for i = 1, 2 do close(got32[i], want[i], { rtol = 1e-4, atol = 1e-4 }) end
  end
  -- rows enough for the threads and for several blocks of bias sums, f32 against f64
  local xl, bl = T.randn({ 300, 128 }, { dtype = "f64" }), T.randn({ 128 }, { dtype = "f64" })
  local gl = T.randn({ 300, 64 }, { dtype = "f64" })
  local want = grads(function(a, bb) return geglu_ref(a, bb) end, xl, bl, gl, "f64")
  local got32 = grads(function(a, bb) return F.geglu(a, bb) end, xl, bl, gl, "f32")
  for i = 1, 2 do close(got32[i], want[i], { rtol = 1e-4, atol = 1e-4 }) end
  want = grads(function(a, bb) return bias_act_ref(a, bb, "silu") end, xl, bl, xl, "f64")
  got32 = grads(function(a, bb) return F.bias_act(a, bb, "silu") end, xl, bl, xl, "f32")
  for i = 1, 2 do close(got32[i], want[i], { rtol = 1e-4, atol = 1e-4 }) end
  local xg = T.randn({ 3, 2, 6 }, { dtype = "f64", requires_grad = true })
  local bg = T.randn({ 6 }, { dtype = "f64", requires_grad = true })
  for _, act in ipairs(ACTS) do
    if act ~= "relu" then -- relu's kink: finite differences across it are wrong by design
      T.testing.gradcheck(function(a, bb) return F.bias_act(a, bb, act) end, { xg, bg })
    end
  end
  T.testing.gradcheck(function(a, bb) return F.geglu(a, bb) end, { xg, bg })
  T.testing.gradcheck(function(a, bb) return F.geglu(a, bb, { approximate = "tanh" }) end, { xg, bg })
  T.testing.gradcheck(function(a) return F.geglu(a:transpose(1, 2)) end, { xg })
  T.testing.gradcheck(function(a) return F.bias_act(a:transpose(1, 3), nil, "silu") end, { xg })
  -- only the bias wants a gradient, then only the input
  T.testing.gradcheck(function(bb) return F.geglu(xg:detach(), bb) end, { bg })
  T.testing.gradcheck(function(a) return F.bias_act(a, bg:detach(), "gelu") end, { xg })
  -- relu away from its kink
  local xr = (T.rand({ 3, 6 }, { dtype = "f64" }) + 0.1) * T.randn({ 3, 6 }, { dtype = "f64" }):sign()
  T.testing.gradcheck(function(a) return F.bias_act(a, nil, "relu") end, { xr:requires_grad_() })
end

tests["bias_act, geglu under autocast: the bias follows the input's dtype, as linear's"] = function()
  local x = T.randn({ 6, 16 })
  local w = T.randn({ 32, 16 }, { requires_grad = true })
  local b = T.randn({ 32 }, { requires_grad = true })
  local y, g
  T.autocast("bf16", function()
    local h = F.linear(x, w)
    assert(h.dtype == "bf16")
    y = F.bias_act(h, b, "silu")
    g = F.geglu(h, b)
  end)
  assert(y.dtype == "bf16" and g.dtype == "bf16", y.dtype .. " " .. g.dtype)
  local ref = T.autocast("bf16", function() return F.linear(x, w, b) end):float()
  close(y:float(), ref:silu(), { rtol = 2e-2, atol = 2e-2 })
  ;(y:float():sum() + g:float():sum()):backward()
  assert(b.grad.dtype == "f32" and w.grad.dtype == "f32")
  -- an f32 input stays f32 under the scope
  T.autocast("bf16", function() assert(F.bias_act(x, b:narrow(1, 1, 16), "gelu").dtype == "f32") end)
end

tests["nn.Linear:forward_act and the models' GEGLU run the fused ops, and equal the unfused"] = function()
  T.manual_seed(3)
  local lin = nn.Linear(8, 12):double()
  local x = T.randn({ 2, 5, 8 }, { dtype = "f64" })
  local y = lin:forward_act(x, "silu")
  assert(y.grad_fn == "BiasActBackward", tostring(y.grad_fn))
  close(y, lin(x):silu(), { rtol = 1e-14 })
  local blocks = require "tocha.models.unet_blocks"
  local ge = blocks.GEGLU(8, 6, { dtype = "f64" })
  local out = ge(x:requires_grad_())
  assert(out.grad_fn == "GegluBackward", tostring(out.grad_fn))
  local h = F.linear(x, ge.proj.weight, ge.proj.bias)
  close(out, h:narrow(3, 1, 6) * h:narrow(3, 7, 6):gelu(), { rtol = 1e-13 })
end

tests["bias_act, geglu: errors name what was wrong"] = function()
  local x = T.randn({ 3, 4 })
  raises("bias of shape %[3%] does not match the input's last dim", F.bias_act, x, T.randn({ 3 }), "gelu")
  raises("bias dtype f64 differs from the input's f32", F.bias_act, x, T.randn({ 4 }, { dtype = "f64" }), "gelu")
  raises("bad argument #3", F.bias_act, x, nil, "swish")
  raises("floating point", F.bias_act, T.ones({ 2, 4 }, { dtype = "i64" }), nil, "relu")
  raises("the last dim must split in two halves, got %[3 x 5%]", F.geglu, T.randn({ 3, 5 }))
  raises("approximate must be", F.geglu, x, nil, { approximate = "fast" })
  raises("at least 1 dimension", F.geglu, T.tensor(1.5))
  raises("bias of shape %[2%]", F.geglu, x, T.randn({ 2 }))
end

return tests
