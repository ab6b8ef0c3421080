-- test_amp.lua: mixed precision. T.autocast: every op it lowers (matmul, bmm, linear, conv2d,
-- conv_transpose2d, attention) and every op it raises to f32 (norms, softmax, losses,
-- reductions), forward and backward, against f32 to the precision's tolerance, on the CPU and
-- on cuda; a UNet training step; scopes. optim.GradScaler (dynamic loss scaling: unscaling,
-- skipped non-finite steps, backoff and growth as torch.amp.GradScaler, state in checkpoints).
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local ckpt = require "tocha.checkpoint"

local tests = {}

local function same_values(a, b, msg)
  local da, db = a:detach():reshape(-1):tolist(), b:detach():reshape(-1):tolist()
  assert(#da == #db, msg .. ": sizes differ")
  for i = 1, #da do assert(da[i] == db[i], string.format("%s: element %d: %.9g vs %.9g", msg, i, da[i], db[i])) end
end

-- a small regression model and its data, the same for every call
local function problem()
  T.manual_seed(3)
  local model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))
  local x, y = T.randn({ 16, 4 }), T.randn({ 16, 2 })
  return model, function() return F.mse_loss(model(x), y) end
end

tests["GradScaler: scaled then unscaled gradients give the unscaled run's step"] = function()
  local m1, loss1 = problem()
  local m2, loss2 = problem()
  local o1, o2 = optim.AdamW(m1, { lr = 1e-2 }), optim.AdamW(m2, { lr = 1e-2 })
  local scaler = optim.GradScaler { init_scale = 1024 } -- a power of two: exact in f32
  for _ = 1, 3 do
    loss1():backward(); o1:step(); o1:zero_grad()
    local scaled = scaler:scale(loss2())
    T.testing.assert_close(scaled, loss2() * 1024)
    scaled:backward()
    local norm = scaler:unscale_(o2)
    assert(norm > 0 and norm < math.huge, "unscale_ returns the total norm")
    assert(scaler:step(o2), "a finite step is taken")
    assert(scaler:update() == false, "update reports no skip")
    o2:zero_grad()
  end
  for i, p in ipairs(m1:parameters()) do same_values(p, m2:parameters()[i], "parameter " .. i) end
  assert(scaler.skipped_steps == 0 and scaler.steps == 3)
end

tests["GradScaler: clipping after unscale_ sees the true gradients"] = function()
  local m1, loss1 = problem()
  local m2, loss2 = problem()
  loss1():backward()
  local n1 = optim.clip_grad_norm(m1:parameters(), 0.1)
  local scaler = optim.GradScaler { init_scale = 2 ^ 12 }
  scaler:scale(loss2()):backward()
  local opt = optim.SGD(m2, { lr = 0.1 })
  local un = scaler:unscale_(opt)
  local n2 = optim.clip_grad_norm(m2:parameters(), 0.1)
  assert(math.abs(n1 - n2) < 1e-6 * n1 and math.abs(un - n1) < 1e-6 * n1,
    string.format("norms %g, %g, %g", n1, n2, un))
  T.testing.raises("already called", scaler.unscale_, scaler, opt)
end

tests["GradScaler: a non-finite gradient skips the step and backs the scale off"] = function()
  local model, loss = problem()
  local opt = optim.Adam(model, { lr = 0.1 })
  local scaler = optim.GradScaler { init_scale = 256, backoff_factor = 0.25 }
  local before = {}
  for i, p in ipairs(model:parameters()) do before[i] = p:clone() end
  for _, bad in ipairs({ math.huge, 0 / 0 }) do
    scaler:scale(loss()):backward()
    local g = model:parameters()[1].grad
    g:view(-1)[1]:fill_(bad)
    assert(scaler:step(opt) == false, "the step is skipped")
    assert(scaler:update() == true, "update reports the skip")
    opt:zero_grad()
  end
  for i, p in ipairs(model:parameters()) do same_values(p, before[i], "parameter " .. i .. " unchanged") end
  assert(next(opt.state) == nil, "the optimizer kept no state from skipped steps")
  assert(scaler:get_scale() == 256 * 0.25 * 0.25, "scale " .. scaler:get_scale())
  assert(scaler.skipped_steps == 2 and scaler.steps == 2)
  -- a finite step afterwards goes through
  scaler:scale(loss()):backward()
  assert(scaler:step(opt))
  scaler:update()
  assert(scaler.skipped_steps == 2)
end

-- torch.amp.GradScaler's rule (_amp_update_scale_): a non-finite step multiplies the scale by
-- backoff_factor and resets the count; growth_interval finite steps in a row multiply it by
-- growth_factor. The sequence below is worked out by that rule.
tests["GradScaler: the scale follows PyTorch's update rule"] = function()
  local model, loss = problem()
  local opt = optim.SGD(model, { lr = 1e-3 })
  local scaler = optim.GradScaler { init_scale = 8, growth_factor = 2, backoff_factor = 0.5, growth_interval = 3 }
  local inf = { false, false, false, true, false, false, false, false, true, true, false }
  local want = { 8, 8, 16, 8, 8, 8, 16, 16, 8, 4, 4 }
  for k, bad in ipairs(inf) do
    scaler:scale(loss()):backward()
    if bad then model:parameters()[3].grad:view(-1)[2]:fill_(-math.huge) end
    scaler:step(opt)
    scaler:update()
    opt:zero_grad()
    assert(scaler:get_scale() == want[k], string.format("after step %d: scale %g, want %g", k, scaler:get_scale(), want[k]))
  end
  assert(scaler.skipped_steps == 3)
end

tests["GradScaler: disabled, every method passes through"] = function()
  local m1, loss1 = problem()
  local m2, loss2 = problem()
  local o1, o2 = optim.SGD(m1, { lr = 0.1 }), optim.SGD(m2, { lr = 0.1 })
  local scaler = optim.GradScaler { enabled = false }
  loss1():backward(); o1:step()
  local l = loss2()
  assert(rawequal(scaler:scale(l), l))
  l:backward()
  assert(scaler:unscale_(o2) == nil)
  assert(scaler:step(o2) == true and scaler:update() == false and scaler:get_scale() == 1)
  for i, p in ipairs(m1:parameters()) do same_values(p, m2:parameters()[i], "parameter " .. i) end
end

tests["GradScaler: its state goes through a checkpoint"] = function()
  local model, loss = problem()
  local opt = optim.SGD(model, { lr = 1e-3 })
  local scaler = optim.GradScaler { init_scale = 64, growth_interval = 5 }
  for k = 1, 4 do
    scaler:scale(loss()):backward()
    if k == 2 then model:parameters()[1].grad:view(-1)[1]:fill_(0 / 0) end
    scaler:step(opt); scaler:update(); opt:zero_grad()
  end
  local dir = T.testing.tmpdir()
  ckpt.save(dir, { model = model, optimizer = opt, scaler = scaler, step = 4 })
  local other = optim.GradScaler { growth_interval = 5 }
  ckpt.load(dir, { scaler = other })
  assert(other:get_scale() == 32 and other.growth_tracker == 2 and other.skipped_steps == 1 and other.steps == 4,
    string.format("scale %g tracker %d skipped %d", other:get_scale(), other.growth_tracker, other.skipped_steps))
  -- the restored scaler grows when the original would
  for _, s in ipairs({ scaler, other }) do
    for _ = 1, 3 do
      s:scale(loss()):backward(); s:step(opt); s:update(); opt:zero_grad()
    end
  end
  assert(scaler:get_scale() == 64 and other:get_scale() == 64)
  T.testing.raises("holds no GradScaler", ckpt.load, (ckpt.save(T.testing.tmpdir(), { model = model, step = 1 })),
    { scaler = optim.GradScaler {} })
end

tests["GradScaler: bad options and arguments"] = function()
  T.testing.raises("unknown option \"scale\"", optim.GradScaler, { scale = 2 })
  T.testing.raises("init_scale", optim.GradScaler, { init_scale = -1 })
  T.testing.raises("growth_factor", optim.GradScaler, { growth_factor = 0.5 })
  T.testing.raises("backoff_factor", optim.GradScaler, { backoff_factor = 1.5 })
  T.testing.raises("growth_interval", optim.GradScaler, { growth_interval = 0 })
  local s = optim.GradScaler {}
  T.testing.raises("expected the loss tensor", s.scale, s, 1.5)
  T.testing.raises("expected an optimizer", s.step, s, {})
end

---------------------------------------------------------------------------------------------
-- autocast
---------------------------------------------------------------------------------------------
local TOL = { bf16 = 2e-2, f16 = 3e-3 } -- relative to the largest reference value

-- the largest difference between a and b, over the largest magnitude of b
local function rel_err(a, b)
  local bb = b:detach():to("cpu"):to("f64")
  return (a:detach():to("cpu"):to("f64") - bb):abs():max():item() / math.max(bb:abs():max():item(), 1e-30)
end

-- each case: the op over f32 leaves made by inputs(dev); lower ops get f32 inputs, upper ops
-- inputs that are already half (cast from the leaves) and must come out f32
local function ops_cases()
  local function leaf(shape, dev, scale) return (T.randn(shape) * (scale or 1)):to(dev):requires_grad_(true) end
  return {
    { "linear", "lower", function(dev) return { leaf({ 6, 16 }, dev), leaf({ 8, 16 }, dev, 0.3), leaf({ 8 }, dev) } end,
      function(x, w, b) return F.linear(x, w, b) end },
    { "matmul (batched)", "lower", function(dev) return { leaf({ 2, 5, 16 }, dev), leaf({ 16, 7 }, dev) } end,
      function(a, b) return a:matmul(b) end },
    { "bmm", "lower", function(dev) return { leaf({ 3, 4, 9 }, dev), leaf({ 3, 9, 5 }, dev) } end,
      function(a, b) return T.bmm(a, b) end },
    { "conv2d", "lower", function(dev) return { leaf({ 2, 3, 8, 8 }, dev), leaf({ 4, 3, 3, 3 }, dev, 0.3), leaf({ 4 }, dev) } end,
      function(x, w, b) return F.conv2d(x, w, b, { padding = 1, stride = 2 }) end },
    { "conv_transpose2d", "lower", function(dev) return { leaf({ 2, 4, 5, 5 }, dev), leaf({ 4, 3, 3, 3 }, dev, 0.3), leaf({ 3 }, dev) } end,
      function(x, w, b) return F.conv_transpose2d(x, w, b, { stride = 2, padding = 1 }) end },
    { "scaled_dot_product_attention", "lower", function(dev) return { leaf({ 2, 2, 6, 8 }, dev), leaf({ 2, 2, 5, 8 }, dev),
      leaf({ 2, 2, 5, 8 }, dev) } end,
      function(q, k, v) return F.scaled_dot_product_attention(q, k, v) end },
    { "layer_norm", "upper", function(dev) return { leaf({ 4, 12 }, dev, 3), leaf({ 12 }, dev), leaf({ 12 }, dev) } end,
      function(x, w, b) return F.layer_norm(x, { 12 }, w, b) end },
    { "group_norm", "upper", function(dev) return { leaf({ 2, 6, 4, 4 }, dev, 3), leaf({ 6 }, dev), leaf({ 6 }, dev) } end,
      function(x, w, b) return F.group_norm(x, 3, w, b) end },
    { "softmax", "upper", function(dev) return { leaf({ 4, 10 }, dev, 4) } end, function(x) return F.softmax(x, -1) end },
    { "log_softmax", "upper", function(dev) return { leaf({ 4, 10 }, dev, 4) } end, function(x) return F.log_softmax(x, 2) end },
    { "cross_entropy", "upper", function(dev) return { leaf({ 6, 5 }, dev, 3) } end,
      function(x) return F.cross_entropy(x, T.tensor({ 1, 2, 3, 4, 5, 1 }, { dtype = "i64" }):to(x.device)) end },
    { "mse_loss", "upper", function(dev) return { leaf({ 3, 7 }, dev), leaf({ 3, 7 }, dev) } end,
      function(a, b) return F.mse_loss(a, b) end },
    { "l1_loss", "upper", function(dev) return { leaf({ 3, 7 }, dev), leaf({ 3, 7 }, dev) } end,
      function(a, b) return F.l1_loss(a, b, { reduction = "sum" }) end },
    { "sum", "upper", function(dev) return { leaf({ 5, 40 }, dev) } end, function(x) return x:sum(2) end },
    { "mean", "upper", function(dev) return { leaf({ 5, 40 }, dev) } end, function(x) return x:mean() end },
    { "logsumexp", "upper", function(dev) return { leaf({ 5, 40 }, dev) } end, function(x) return x:logsumexp(2) end },
  }
end

-- forward and backward of every case under autocast(dtype) against f32
local function check_ops(dev, dtype)
  for _, c in ipairs(ops_cases()) do
    local name, kind, make, op = c[1], c[2], c[3], c[4]
    T.manual_seed(7)
    local leaves = make(dev)
    -- the f32 reference; an upper op's reference sees the half-rounded inputs its autocast run sees
    local ref_in = {}
    for i, l in ipairs(leaves) do
      ref_in[i] = kind == "upper" and l:to(dtype):to("f32") or l
    end
    local ref = op(table.unpack(ref_in))
    local proj = T.randn(ref.shape):to(dev)
    local ref_grads = T.autograd.grad({ (ref * proj):sum() }, leaves)
    local out = T.autocast(dtype, function()
      local ins = {}
      for i, l in ipairs(leaves) do ins[i] = kind == "upper" and l:to(dtype) or l end
      return op(table.unpack(ins))
    end)
    local want_dt = kind == "lower" and dtype or "f32"
    assert(out.dtype == want_dt, string.format("%s %s: output %s, want %s", dev, name, out.dtype, want_dt))
    local tol = kind == "lower" and TOL[dtype] or 1e-5
    local e = rel_err(out, ref)
    assert(e < tol, string.format("%s %s (%s): forward error %.3g > %.3g", dev, name, dtype, e, tol))
    local grads = T.autograd.grad({ (out:to("f32") * proj):sum() }, leaves)
    for i, g in ipairs(grads) do
      assert(g.dtype == "f32", string.format("%s %s: gradient %d is %s", dev, name, i, g.dtype))
      -- upper ops' gradients pass back through the cast to half
      local ge = rel_err(g, ref_grads[i])
      local gtol = kind == "lower" and 2 * TOL[dtype] or TOL[dtype]
      assert(ge < gtol, string.format("%s %s (%s): gradient %d error %.3g > %.3g", dev, name, dtype, i, ge, gtol))
    end
  end
end

tests["autocast: every lowered and raised op, forward and backward, bf16 and f16, against f32"] = function()
  check_ops("cpu", "bf16")
  check_ops("cpu", "f16")
end

tests["autocast on cuda: every lowered and raised op against f32"] = function()
  if not T.cuda.is_available() then skip("no GPU") end
  check_ops("cuda", "bf16")
  check_ops("cuda", "f16")
end

tests["f16 / bf16 elementwise ops compute in f32 and round once, strided and broadcast too"] = function()
  T.manual_seed(4)
  for _, dt in ipairs({ "bf16", "f16" }) do
    local a = (T.randn({ 6, 40 }) * 3):to(dt)
    local b = (T.randn({ 40, 6 }) * 3):to(dt):t() -- strided
    local c = T.randn({ 1, 40 }):to(dt)           -- broadcast
    local function same(got, want, what)
      assert(got.dtype == dt, what .. ": " .. got.dtype)
      T.testing.assert_close(got:to("f32"), want:to(dt):to("f32"), { rtol = 0, atol = 0, msg = dt .. " " .. what })
    end
    local af, bf, cf = a:to("f32"), b:to("f32"), c:to("f32")
    same(a + b, af + bf, "add"); same(a * c, af * cf, "mul, broadcast"); same(a - c, af - cf, "sub")
    same(a / b, af / bf, "div")
    same(a:silu(), af:silu(), "silu"); same(b:gelu(), bf:gelu(), "gelu"); same(a:exp(), af:exp(), "exp")
    same(a * 0.5, af * 0.5, "scalar")
    -- a backward in the half dtype: the derivative in f32, rounded once
    local x = a:clone():requires_grad_(true)
    local gy = T.randn({ 6, 40 }):to(dt)
    x:gelu():backward(gy)
    local xf = af:clone():requires_grad_(true)
    xf:gelu():backward(gy:to("f32"))
    same(x.grad, xf.grad, "gelu backward")
  end
end

tests["autocast: f64 stays f64, integer and bool inputs are left alone, off outside the scope"] = function()
  local a, b = T.randn({ 3, 4 }, { dtype = "f64" }), T.randn({ 4, 2 }, { dtype = "f64" })
  T.autocast("bf16", function()
    assert(a:matmul(b).dtype == "f64")
    assert(T.tensor({ 1, 2, 3 }, { dtype = "i64" }):sum().dtype == "i64")
    assert(T.ones({ 4 }):to("bf16"):amax().dtype == "bf16", "max and min keep their dtype")
  end)
  assert(T.randn({ 2, 2 }):matmul(T.randn({ 2, 2 })).dtype == "f32")
  assert(T.ones({ 4 }):to("bf16"):sum().dtype == "bf16", "outside the scope a bf16 sum stays bf16")
end

tests["autocast: scopes nest, restore on error and on close, enabled = false turns it off"] = function()
  local x = T.randn({ 2, 3 })
  local w = T.randn({ 4, 3 })
  T.autocast("f16", function()
    assert(F.linear(x, w).dtype == "f16")
    T.autocast("bf16", function() assert(F.linear(x, w).dtype == "bf16") end)
    assert(F.linear(x, w).dtype == "f16")
    T.autocast({ dtype = "bf16", enabled = false }, function() assert(F.linear(x, w).dtype == "f32") end)
    local ok = pcall(T.autocast, "bf16", function() error("boom") end)
    assert(not ok and F.linear(x, w).dtype == "f16", "an error inside restores the outer scope")
  end)
  do
    local s <close> = T.autocast { dtype = "bf16" }
    assert(F.linear(x, w).dtype == "bf16")
  end
  assert(F.linear(x, w).dtype == "f32" and not T.is_autocast_enabled())
  assert(select(2, T.autocast("bf16", function() return 1, 2 end)) == 2, "the function's results come back")
  T.testing.raises("dtype must be \"f16\" or \"bf16\" %(got f32%)", T.autocast, "f32", function() end)
  T.testing.raises("give the function", T.autocast, "bf16")
  assert(not T.is_autocast_enabled())
end

-- the default experiment's UNet, small: one training step's loss and gradients
local function unet_step(dtype, checkpointing)
  local models = require "tocha.models"
  T.manual_seed(1)
  local unet = models.UNet2DConditionModel(models.presets.tiny_unet, { sample_size = 16 })
  if checkpointing then unet:enable_gradient_checkpointing() end
  local x, t, ctx = T.randn({ 2, 3, 16, 16 }), T.tensor({ 10, 500 }, { dtype = "i64" }), T.randn({ 2, 7, 64 })
  local target = T.randn({ 2, 3, 16, 16 })
  local function step()
    return F.mse_loss(unet(x, t, ctx), target)
  end
  local loss = dtype and T.autocast(dtype, step) or step()
  loss:backward()
  local grads = {}
  for name, p in unet:named_parameters() do grads[name] = p.grad end
  return loss, grads, unet
end

tests["autocast: a UNet training step in bf16 and f16 gives f32's loss and f32 gradients"] = function()
  local loss32, g32 = unet_step(nil)
  for _, dt in ipairs({ "bf16", "f16" }) do
    local loss, g, unet = unet_step(dt)
    assert(loss.dtype == "f32")
    assert(math.abs(loss:item() - loss32:item()) < 5 * TOL[dt] * loss32:item(),
      string.format("%s loss %g vs %g", dt, loss:item(), loss32:item()))
    local worst = 0
    for name, p in unet:named_parameters() do
      assert(p.dtype == "f32" and g[name].dtype == "f32", name)
      local a, b = g[name]:to("f64"):reshape(-1), g32[name]:to("f64"):reshape(-1)
      local cos = (a * b):sum():item() / math.max(a:norm():item() * b:norm():item(), 1e-30)
      worst = math.max(worst, 1 - cos)
    end
    assert(worst < (dt == "bf16" and 2e-2 or 2e-3), string.format("%s: a gradient's cosine to f32's is 1 - %.3g", dt, worst))
  end
end

tests["autocast: gradient checkpointing replays the forward in its precision"] = function()
  local w = T.randn({ 4, 3 }, { requires_grad = true })
  local seen = {}
  local y = T.autocast("bf16", function()
    return T.checkpoint(function(x)
      local h = F.linear(x, w)
      seen[#seen + 1] = h.dtype
      return h
    end, T.randn({ 2, 3 }, { requires_grad = true }))
  end)
  y:to("f32"):sum():backward() -- outside the scope
  assert(#seen == 2 and seen[1] == "bf16" and seen[2] == "bf16", table.concat(seen, " "))
  assert(w.grad.dtype == "f32")
  -- a whole UNet: the same loss; gradients that differ only by where bf16 sums round (the
  -- gradients reach a parameter in another order when the forward is replayed: up to 2.6 bf16
  -- ulps of the largest value seen, so 4 allowed)
  local l1, g1 = unet_step("bf16", false)
  local l2, g2 = unet_step("bf16", true)
  assert(l1:item() == l2:item())
  for name, g in pairs(g1) do
    local e = rel_err(g2[name], g)
    assert(e < 4 * 2^-7, string.format("%s: %.3g", name, e))
  end
end

tests["autocast + GradScaler: f16 training with loss scaling learns and skips nothing"] = function()
  local model, loss = problem()
  local opt = optim.AdamW(model, { lr = 1e-2 })
  local scaler = optim.GradScaler { init_scale = 2 ^ 10, growth_interval = 5 }
  local first, last
  for step = 1, 20 do
    local l = T.autocast("f16", loss)
    if step == 1 then first = l:item() end
    last = l:item()
    scaler:scale(l):backward()
    scaler:unscale_(opt)
    optim.clip_grad_norm(model:parameters(), 1.0)
    scaler:step(opt)
    scaler:update()
    opt:zero_grad()
  end
  assert(last < first, string.format("loss %g -> %g", first, last))
  assert(scaler.skipped_steps == 0 and scaler:get_scale() == 2 ^ 14, "scale " .. scaler:get_scale())
  for _, p in ipairs(model:parameters()) do assert(p.dtype == "f32") end
end

return tests
