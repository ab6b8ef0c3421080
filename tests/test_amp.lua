-- test_amp.lua: mixed precision. optim.GradScaler (dynamic loss scaling: unscaling, skipped
-- non-finite steps, backoff and growth as torch.amp.GradScaler, state in checkpoints).
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

return tests
