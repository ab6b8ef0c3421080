-- test_optim.lua: tocha.optim against PyTorch (tests/ref/optim_ref.lua, made by gen_optim.py):
-- SGD / Adam / AdamW trajectories over 100 steps, clipping, diffusers' EMA; plus state dicts,
-- parameter groups, gradient accumulation, autograd interplay and bad input.
local T = require "tocha"
local optim = require "tocha.optim"
local ref = dofile(T.testing.path("ref/optim_ref.lua"))

-- the gradient formula of gen_optim.py (evaluated in double, rounded to the dtype by T.tensor)
local function grad_value(t, k, i)
  return 10 ^ (2 * math.sin(0.3 * t + k)) * math.sin(0.37 * i + 1.1 * t + 0.5 * k) + 0.1 * math.cos(0.05 * t * i)
end

local function ema_value(t, k, i)
  return math.cos(0.7 * i + 1.3 * k) * (1 + 0.5 * k) + math.sin(0.1 * t + 0.3 * i + k) * (1 + 0.01 * t)
end

local function filled(shape, dtype, f)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = f(i) end
  return T.tensor(v, { dtype = dtype }):reshape(shape)
end

local function fresh_params(dtype)
  local ps = {}
  for k, shape in ipairs(ref.shapes) do
    ps[k] = T.tensor(ref.init[k], { dtype = dtype }):reshape(shape):requires_grad_(true)
  end
  return ps
end

local function set_grads(ps, t, dtype)
  for k, p in ipairs(ps) do
    if k == 3 and t % 3 == 0 then p.grad = nil
    else p.grad = filled(p.shape, dtype, function(i) return grad_value(t, k, i) end) end
  end
end

-- the optimizer of a fixture case over ps (groups refer to parameters by number)
local function make_optimizer(c, ps)
  local params = ps
  if c.groups[1].params then
    params = {}
    for gi, g in ipairs(c.groups) do
      local ng = {}
      for key, v in pairs(g) do ng[key] = v end
      ng.params = {}
      for j, idx in ipairs(g.params) do ng.params[j] = ps[idx] end
      params[gi] = ng
    end
  end
  return optim[c.kind](params, c.opts)
end

local function flat(t) return t:detach():reshape(-1) end

-- bitwise equality (same values, same number of elements)
local function assert_same(a, b, msg)
  assert(a:numel() == b:numel(), msg or "sizes differ")
  local bad = a:reshape(-1):ne(b:reshape(-1)):sum():item()
  assert(bad == 0, string.format("%s: %d elements differ", msg or "tensors differ", bad))
end

local tests = {}

---------------------------------------------------------------------------------------------
-- PyTorch parity
---------------------------------------------------------------------------------------------
tests["100 steps match torch.optim (every case, f32 and f64)"] = function()
  for _, c in ipairs(ref.cases) do
    local ps = fresh_params(c.dtype)
    local opt = make_optimizer(c, ps)
    for t = 1, ref.steps do
      set_grads(ps, t, c.dtype)
      opt:step()
      if c.params[t] then
        for k, p in ipairs(ps) do
          local e = T.tensor(c.params[t][k], { dtype = "f64" })
          -- 1e-6 relative; elements that cross zero are held to 1e-6 of the tensor's scale
          local atol = 1e-6 * e:abs():max():item()
          T.testing.assert_close(flat(p), e, { rtol = 1e-6, atol = c.dtype == "f64" and 1e-12 or atol,
            msg = string.format("%s %s step %d parameter %d", c.name, c.dtype, t, k) })
        end
      end
    end
  end
end

tests["SGD f32 steps are bit-identical to PyTorch's (same fused multiply-adds)"] = function()
  for _, c in ipairs(ref.cases) do
    if c.kind == "SGD" then
      local ps = fresh_params(c.dtype)
      local opt = make_optimizer(c, ps)
      for t = 1, ref.steps do set_grads(ps, t, c.dtype); opt:step() end
      for k, p in ipairs(ps) do
        assert_same(flat(p):double(), T.tensor(c.params[ref.steps][k], { dtype = "f64" }), c.name)
      end
    end
  end
end

tests["clip_grad_norm matches torch (norm types 2, 1, inf, 3; no clip when under)"] = function()
  for _, c in ipairs(ref.clip) do
    local ps = fresh_params("f32")
    set_grads(ps, 1, "f32")
    local total = optim.clip_grad_norm(ps, c.max_norm, c.norm_type)
    assert(type(total) == "number")
    assert(math.abs(total - c.total) <= 1e-6 * c.total, string.format("total %.9g vs %.9g", total, c.total))
    for k, p in ipairs(ps) do
      T.testing.assert_close(flat(p.grad), c.grads[k], { rtol = 1e-6, atol = 1e-9 })
    end
  end
  -- a list without gradients: norm 0, nothing to do
  assert(optim.clip_grad_norm({ T.zeros({ 3 }, { requires_grad = true }) }, 1) == 0)
end

tests["clip_grad_norm accumulates in double over large f32 gradients"] = function()
  local p = T.zeros({ 1000003 }, { requires_grad = true })
  p.grad = T.full({ 1000003 }, 0.1)
  local total = optim.clip_grad_norm({ p }, 1e9)
  local exact = math.sqrt(1000003 * (0.1 * 0.1)) -- 0.1 as f32 is 0.100000001490116
  assert(math.abs(total - exact) / exact < 1e-7, string.format("%.12g vs %.12g", total, exact))
end

tests["clip_grad_value clamps like torch"] = function()
  local ps = fresh_params("f32")
  set_grads(ps, 1, "f32")
  optim.clip_grad_value(ps, ref.clip_value.value)
  for k, p in ipairs(ps) do assert_same(flat(p.grad), T.tensor(ref.clip_value.grads[k])) end
end

tests["EMA matches diffusers' EMAModel (decay cap, warmup, update_after_step, min_decay)"] = function()
  for _, c in ipairs(ref.ema) do
    local ps = fresh_params("f32")
    ps[3]:requires_grad_(false) -- copied, not averaged
    local ema = optim.EMA(ps, c.opts)
    for t = 1, 50 do
      T.no_grad(function()
        for k, p in ipairs(ps) do p:copy_(filled(p.shape, "f32", function(i) return ema_value(t, k, i) end)) end
      end)
      ema:update()
      local r = c.steps[t]
      if r then
        assert(math.abs(ema.cur_decay_value - r.decay) <= 1e-15, string.format("%s step %d: decay %.17g vs %.17g",
          c.name, t, ema.cur_decay_value, r.decay))
        for k, s in ipairs(ema.shadow_params) do
          T.testing.assert_close(flat(s), r.shadow[k], { rtol = 1e-6, atol = 1e-7,
            msg = string.format("%s step %d shadow %d", c.name, t, k) })
        end
      end
    end
  end
end

---------------------------------------------------------------------------------------------
-- state, groups and the optimizer's interface
---------------------------------------------------------------------------------------------
tests["state_dict / load_state_dict resume is bit-identical (steps, moments, amsgrad)"] = function()
  for _, c in ipairs(ref.cases) do
    local a = fresh_params(c.dtype)
    local opt_a = make_optimizer(c, a)
    for t = 1, 40 do set_grads(a, t, c.dtype); opt_a:step() end
    -- a copy of the parameters and a fresh optimizer that loads the state
    local b = {}
    for k, p in ipairs(a) do b[k] = p:detach():clone():requires_grad_(true) end
    local opt_b = make_optimizer(c, b)
    local sd = opt_a:state_dict()
    opt_b:load_state_dict(sd)
    for t = 41, 60 do
      set_grads(a, t, c.dtype); opt_a:step()
      set_grads(b, t, c.dtype); opt_b:step()
    end
    for k = 1, #a do assert_same(a[k]:detach(), b[k]:detach(), c.name .. " parameter " .. k) end
  end
end

tests["state_dict layout: numbered parameters, groups with options, step counts"] = function()
  local ps = fresh_params("f32")
  local opt = optim.AdamW({ { params = { ps[1], ps[2] }, weight_decay = 0 }, { params = { ps[3] }, lr = 0.5 } },
    { lr = 0.1, betas = { 0.8, 0.9 } })
  for t = 1, 3 do set_grads(ps, t, "f32"); opt:step() end
  local sd = opt:state_dict()
  assert(#sd.param_groups == 2)
  assert(sd.param_groups[1].params[1] == 1 and sd.param_groups[1].params[2] == 2 and sd.param_groups[2].params[1] == 3)
  assert(sd.param_groups[1].weight_decay == 0 and sd.param_groups[2].weight_decay == 1e-2)
  assert(sd.param_groups[1].lr == 0.1 and sd.param_groups[2].lr == 0.5 and sd.param_groups[2].betas[1] == 0.8)
  assert(sd.state[1].step == 3 and sd.state[3].step == 2, "parameter 3 has no gradient on step 3")
  assert(T.is_tensor(sd.state[1].exp_avg) and T.is_tensor(sd.state[1].exp_avg_sq))
  assert(sd.state[1].max_exp_avg_sq == nil)
  -- loading restores the options as well, and rejects a mismatched layout
  local opt2 = optim.AdamW({ { params = { ps[1], ps[2] } }, { params = { ps[3] } } })
  opt2:load_state_dict(sd)
  assert(opt2.param_groups[2].lr == 0.5 and opt2.param_groups[1].weight_decay == 0)
  assert(opt2.state[ps[3]].step == 2)
  local opt3 = optim.AdamW({ ps[1], ps[2], ps[3] })
  local ok, err = pcall(opt3.load_state_dict, opt3, sd)
  assert(not ok and err:find("parameter groups"), err)
end

tests["SGD state: momentum buffer only with momentum"] = function()
  local ps = fresh_params("f32")
  local plain, mom = optim.SGD({ ps[1] }, { lr = 0.1 }), optim.SGD({ ps[2] }, { lr = 0.1, momentum = 0.9 })
  set_grads(ps, 1, "f32")
  plain:step(); mom:step()
  assert(next(plain:state_dict().state) == nil)
  assert(T.is_tensor(mom:state_dict().state[1].momentum_buffer))
end

tests["lr: opt.lr reads group 1, set_lr and assignment set every group"] = function()
  local ps = fresh_params("f32")
  local opt = optim.Adam({ { params = { ps[1] } }, { params = { ps[2] }, lr = 0.5 } }, { lr = 0.1 })
  assert(opt.lr == 0.1 and opt.param_groups[2].lr == 0.5)
  opt:set_lr(0.01)
  assert(opt.lr == 0.01 and opt.param_groups[2].lr == 0.01)
  opt.lr = 0.02
  assert(opt.param_groups[1].lr == 0.02 and opt.param_groups[2].lr == 0.02)
  assert(rawget(opt, "lr") == nil)
  -- lr = 0 leaves parameters unchanged (AdamW: no decay either)
  local w = optim.AdamW({ ps[3] }, { lr = 0 })
  local before = ps[3]:detach():clone()
  set_grads(ps, 1, "f32")
  w:step()
  assert_same(ps[3]:detach(), before)
end

tests["lr_scale: set_lr gives each group the rate times its scale"] = function()
  local ps = fresh_params("f32")
  local opt = optim.AdamW({ { params = { ps[1] } }, { params = { ps[2] }, lr_scale = 0.02 },
    { params = { ps[3] }, lr_scale = 0.5, lr = 0.3 } }, { lr = 0.1 })
  -- at first: a group without its own lr starts at the default times its scale
  assert(opt.param_groups[1].lr == 0.1 and opt.param_groups[2].lr == 0.1 * 0.02 and opt.param_groups[3].lr == 0.3)
  opt:set_lr(0.01)
  assert(opt.param_groups[1].lr == 0.01 and opt.param_groups[2].lr == 0.01 * 0.02 and opt.param_groups[3].lr == 0.01 * 0.5)
  opt.lr = 0.04
  assert(opt.lr == 0.04 and opt.param_groups[2].lr == 0.04 * 0.02)
  local p4 = T.zeros({ 2 }, { requires_grad = true })
  opt:add_param_group({ params = { p4 }, lr_scale = 3 })
  assert(opt.param_groups[4].lr == 0.1 * 3, "from the default lr, not the current one")
  -- the scaled rate is the rate the update uses: one step of group 2 equals a plain AdamW at lr * scale
  local a, b = T.ones({ 3 }, { requires_grad = true }), T.ones({ 3 }, { requires_grad = true })
  local scaled = optim.AdamW({ { params = { a }, lr_scale = 0.25 } }, { lr = 1 })
  local plain = optim.AdamW({ b }, { lr = 1 })
  scaled:set_lr(0.2)
  plain:set_lr(0.2 * 0.25)
  for _, x in ipairs({ a, b }) do x.grad = T.tensor({ 1, -2, 3 }) end
  scaled:step()
  plain:step()
  assert_same(a:detach(), b:detach())
  -- saved and loaded with the other options
  local sd = opt:state_dict()
  assert(sd.param_groups[2].lr_scale == 0.02)
  local again = optim.AdamW({ { params = { ps[1] } }, { params = { ps[2] } }, { params = { ps[3] } }, { params = { p4 } } })
  again:load_state_dict(sd)
  again:set_lr(1)
  assert(again.param_groups[2].lr == 0.02 and again.param_groups[4].lr == 3)
  T.testing.assert_raises("lr_scale must be a number in [0, inf]", optim.SGD, { { params = { ps[1] }, lr_scale = -1, lr = 0.1 } })
end

tests["zero_grad drops gradients; set_to_none = false zeroes them"] = function()
  local ps = fresh_params("f32")
  local opt = optim.SGD(ps, { lr = 0.1 })
  set_grads(ps, 1, "f32")
  opt:zero_grad()
  for _, p in ipairs(ps) do assert(p.grad == nil) end
  set_grads(ps, 1, "f32")
  opt:zero_grad({ set_to_none = false })
  assert(ps[1].grad:abs():sum():item() == 0)
end

tests["parameters without a gradient are skipped; step(closure) returns the loss"] = function()
  local a, b = T.ones({ 3 }, { requires_grad = true }), T.ones({ 3 }, { requires_grad = true })
  local opt = optim.SGD({ a, b }, { lr = 1 })
  local loss = opt:step(function()
    local l = (a * 2):sum()
    l:backward()
    return l
  end)
  assert(loss:item() == 6)
  assert_same(a:detach(), T.full({ 3 }, -1))
  assert_same(b:detach(), T.ones({ 3 }))
end

tests["a module (anything with parameters()) is accepted"] = function()
  local w, b = T.randn({ 4, 3 }, { requires_grad = true }), T.zeros({ 4 }, { requires_grad = true })
  local model = { parameters = function() return { w, b } end }
  local opt = optim.AdamW(model, { lr = 0.1 })
  assert(#opt.param_groups[1].params == 2)
  local ema = optim.EMA(model)
  assert(#ema.shadow_params == 2)
end

---------------------------------------------------------------------------------------------
-- kernels: threads, blocks, tails, layouts, dtypes
---------------------------------------------------------------------------------------------
tests["a large odd-sized tensor updates exactly like its pieces (threads and block tails)"] = function()
  for _, kind in ipairs({ "AdamW", "SGD" }) do
    local n = 3 * 16384 + 12345
    local big = T.randn({ n }, { requires_grad = true })
    local g = T.randn({ n })
    local pieces, opts = {}, { lr = 0.01, weight_decay = 0.1, momentum = kind == "SGD" and 0.9 or nil, amsgrad = kind == "AdamW" or nil }
    local sizes, at = { 7, 16384, 20000, n - 36391 }, 1
    for i, s in ipairs(sizes) do
      pieces[i] = big:detach():narrow(1, at, s):clone():requires_grad_(true)
      pieces[i].grad = g:narrow(1, at, s):contiguous()
      at = at + s
    end
    local o1, o2 = optim[kind]({ big }, opts), optim[kind](pieces, opts)
    for _ = 1, 3 do
      big.grad = g
      o1:step(); o2:step()
    end
    assert_same(big:detach(), T.cat(pieces, 1):detach(), kind)
  end
end

tests["non-contiguous and other-dtype gradients are accepted"] = function()
  local a = T.randn({ 5, 5 }, { requires_grad = true })
  local b = a:detach():clone():requires_grad_(true)
  local g = T.randn({ 5, 5 })
  a.grad = g:t()                        -- a transposed view
  b.grad = g:t():contiguous():double()  -- f64 for an f32 parameter
  local oa, ob = optim.Adam({ a }, { lr = 0.1 }), optim.Adam({ b }, { lr = 0.1 })
  oa:step(); ob:step()
  assert_same(a:detach(), b:detach())
end

tests["updates run in place under grad mode without tripping autograd, and bump versions"] = function()
  local p = T.randn({ 4 }, { requires_grad = true })
  local opt = optim.AdamW({ p }, { lr = 0.1 })
  local y = (p * p):sum()   -- saves p
  y:backward({ retain_graph = true })
  assert(T.is_grad_enabled())
  opt:step()                -- a leaf that requires grad, written in place: allowed here
  assert(p.requires_grad and p.grad_fn == nil)
  local ok, err = pcall(function() y:backward() end)
  assert(not ok and err:find("modified"), "backward through a graph that saw p before the step: " .. tostring(err))
  -- the state never requires grad
  assert(not opt.state[p].exp_avg.requires_grad)
end

tests["errors: bad options, non-contiguous or integer parameters, duplicates, mismatched state"] = function()
  local p = T.randn({ 3, 4 }, { requires_grad = true })
  local fails = T.testing.raises
  fails("lr must be", optim.AdamW, { p }, { lr = -1 })
  fails("betas[2] must be", optim.Adam, { p }, { betas = { 0.9, 1.0 } })
  fails("betas must be a pair", optim.Adam, { p }, { betas = 0.9 })
  fails('unknown option "momentum"', optim.AdamW, { p }, { momentum = 0.9 })
  fails("nesterov momentum requires", optim.SGD, { p }, { nesterov = true })
  fails("not contiguous", optim.SGD, { p:t() }, {})
  fails("parameter 1 is i64", optim.SGD, { T.zeros({ 3 }, { dtype = "i64" }) }, {})
  fails("also appears in group 1", optim.SGD, { { params = { p } }, { params = { p } } }, {})
  fails("parameter 2 is a string", optim.SGD, { p, "x" }, {})
  fails("has no parameters", optim.SGD, {}, {})
  -- the C layer reads the group and the state by name, and checks shapes and layouts itself
  local C, z = T._optim, T.zeros({ 3, 4 })
  local group = { lr = 0.1, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, momentum = 0, dampening = 0 }
  fails("adamw: exp_avg of shape [4] does not match the parameter's [3 x 4]", C.adamw_step, p, z,
    { step = 1, exp_avg = T.zeros({ 4 }), exp_avg_sq = z }, group)
  fails("must be contiguous", C.sgd_step, p:detach():t(), T.zeros({ 4, 3 }), group)
  fails("step must be at least 1", C.adam_step, p, z, { step = 0, exp_avg = z, exp_avg_sq = z }, group)
  fails("field 'lr' must be a number (got nil)", C.sgd_step, p, z, { momentum = 0 })
  fails("field 'exp_avg_sq' must be a tensor (got nil)", C.adam_step, p, z, { step = 1, exp_avg = z }, group)
  fails("field 'max_exp_avg_sq' must be a tensor (got nil)", C.adam_step, p, z, { step = 1, exp_avg = z, exp_avg_sq = z },
    { lr = 0.1, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, amsgrad = true })
  fails("field 'step' must be an integer (got number)", C.adam_step, p, z, { step = 1.5, exp_avg = z, exp_avg_sq = z }, group)
  fails("field 'betas' must be a pair of numbers", C.adam_step, p, z, { step = 1, exp_avg = z, exp_avg_sq = z },
    { lr = 0.1, betas = { 0.9 }, eps = 1e-8, weight_decay = 0 })
  fails("(table expected, got no value)", C.sgd_step, p, z)
  -- with momentum and no buffer, the first step makes one holding the gradient
  local q = T.zeros({ 2 }, { requires_grad = true })
  local buf = C.sgd_step(q, T.tensor({ 1, 2 }), { lr = 0.5, momentum = 0.9, dampening = 0, weight_decay = 0 })
  assert(T.is_tensor(buf) and buf:tolist()[2] == 2 and q:tolist()[2] == -1, "the first step's buffer")
  assert(C.sgd_step(q, T.tensor({ 1, 2 }), { lr = 0.5, momentum = 0.9, dampening = 0, weight_decay = 0 }, buf) == buf)
  assert(C.sgd_step(q, T.tensor({ 1, 2 }), group) == nil, "no buffer without momentum")
  fails("nothing stored", optim.EMA({ p }).restore, optim.EMA({ p }))
  fails("clip_grad_norm: norm_type", optim.clip_grad_norm, { p }, 1, -2)
end

---------------------------------------------------------------------------------------------
-- EMA, beyond parity
---------------------------------------------------------------------------------------------
tests["EMA copy_to, store/restore and state_dict"] = function()
  local ps = fresh_params("f32")
  local ema = optim.EMA(ps, { decay = 0.5 })
  for t = 1, 20 do
    T.no_grad(function() for _, p in ipairs(ps) do p:add_(0.1 * t) end end)
    ema:update()
  end
  local live = {}
  for k, p in ipairs(ps) do live[k] = p:detach():clone() end
  ema:store()
  ema:copy_to()
  for k, p in ipairs(ps) do assert_same(p:detach(), ema.shadow_params[k]) end
  ema:restore()
  for k, p in ipairs(ps) do assert_same(p:detach(), live[k]) end
  -- a new average loads the state: same shadows, step and options
  local other = optim.EMA(fresh_params("f32"))
  other:load_state_dict(ema:state_dict())
  assert(other.optimization_step == 20 and other.decay == 0.5)
  for k, s in ipairs(other.shadow_params) do assert_same(s, ema.shadow_params[k]) end
  -- the shadows are copies: updating the loaded one leaves the original alone
  local before = ema.shadow_params[1]:clone()
  other:update()
  assert(other.optimization_step == 21 and ema.optimization_step == 20)
  assert(other.shadow_params[1]:ne(before):sum():item() > 0)
  assert_same(ema.shadow_params[1], before)
end

---------------------------------------------------------------------------------------------
-- gradient accumulation (the recipe in docs/training.md)
---------------------------------------------------------------------------------------------
tests["gradient accumulation: N micro-batches of b with loss / N equal one batch of N * b"] = function()
  local N, b, din, dout = 4, 8, 6, 3
  local x, y = T.randn({ N * b, din }, { dtype = "f64" }), T.randn({ N * b, dout }, { dtype = "f64" })
  local function model_params()
    T.manual_seed(7)
    return { T.randn({ din, dout }, { dtype = "f64", requires_grad = true }),
             T.zeros({ dout }, { dtype = "f64", requires_grad = true }) }
  end
  local function loss_of(ps, xb, yb)
    local pred = xb:matmul(ps[1]) + ps[2]
    return ((pred - yb):pow(2)):mean()
  end
  -- one batch of N * b
  local full = model_params()
  local opt_full = optim.AdamW(full, { lr = 0.01 })
  loss_of(full, x, y):backward()
  local g_full = full[1].grad:clone()
  opt_full:step()
  -- N micro-batches, each loss divided by N; gradients add up in .grad
  local acc = model_params()
  local opt_acc = optim.AdamW(acc, { lr = 0.01 })
  for i = 1, N do
    local xb, yb = x:narrow(1, (i - 1) * b + 1, b), y:narrow(1, (i - 1) * b + 1, b)
    local micro = loss_of(acc, xb, yb) / N
    micro:backward()
  end
  T.testing.assert_close(acc[1].grad, g_full, { rtol = 1e-12, atol = 1e-14 })
  opt_acc:step()
  opt_acc:zero_grad()
  for k = 1, 2 do T.testing.assert_close(acc[k]:detach(), full[k]:detach(), { rtol = 1e-12, atol = 1e-14 }) end
  assert(acc[1].grad == nil)
end

return tests
