-- test_checkpoint.lua: tocha.checkpoint. The exact-resume test trains a small MLP for 200 steps in
-- one process, and for 100 steps in another that saves, is killed with kill -9, and is resumed
-- for 100 more by a third: every parameter must be bitwise equal. Also: atomic saves (a failed
-- save leaves the last checkpoint alone), keep = N, latest, exact metadata, bad input.
local T = require "tocha"
local read_file, write_file = T.testing.read_file, T.testing.write_file
local optim = require "tocha.optim"
local ckpt = require "tocha.checkpoint"

local RUNNER = arg and arg[-1] or "./build/tocha"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local tmpdir = T.testing.tmpdir

local function rmrf(d) os.execute("rm -rf " .. sh_quote(d)) end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- the training run: mode "full" trains 200 steps; "kill" saves at step 100, signals, and keeps
-- training until it is killed; "resume" loads the latest checkpoint and trains to 200. "full" and
-- "resume" write every parameter, EMA shadow and the step counts (as hex floats) to `out`.
local WORKER = [=[
local T = require "tocha"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local lr = require "tocha.lr"
local ckpt = require "tocha.checkpoint"
local root, mode, out = arg[1], arg[2], arg[3]
local TOTAL, SAVE_AT = 200, 100

T.manual_seed(1234)
local model = {
  w1 = (T.randn({ 16, 32 }) * 0.3):requires_grad_(true), b1 = T.zeros({ 32 }, { requires_grad = true }),
  w2 = (T.randn({ 32, 1 }) * 0.2):requires_grad_(true), b2 = T.zeros({ 1 }, { requires_grad = true }),
}
local params = { model.w1, model.b1, model.w2, model.b2 }
local opt = optim.AdamW({ { params = { model.w1, model.w2 } }, { params = { model.b1, model.b2 }, weight_decay = 0 } },
  { lr = 1e-3, weight_decay = 1e-2 })
local ema = optim.EMA(params, { decay = 0.99, warmup = true })
local schedule = lr.cosine{ lr = 3e-3, steps = TOTAL, warmup = 20 }

local start = 0
if mode == "resume" then
  local saved = ckpt.load(root, { model = model, optimizer = opt, ema = ema })
  start = saved.step
  assert(saved.data.position == start * 32 and saved.extra.note == "mlp", "data position and extra come back")
end

for step = start + 1, TOTAL do
  opt:set_lr(schedule(step - 1))
  local x = T.randn({ 32, 16 })                           -- data drawn from the RNG each step
  local y = (x:narrow(2, 1, 1) * 2):sin() + T.randn({ 32, 1 }) * 0.1
  local h = F.dropout((x:matmul(model.w1) + model.b1):relu(), 0.1)
  local loss = ((h:matmul(model.w2) + model.b2 - y):pow(2)):mean()
  loss:backward()
  optim.clip_grad_norm(params, 1.0)
  opt:step()
  opt:zero_grad()
  ema:update()
  if mode == "kill" and step == SAVE_AT then
    ckpt.save(root, { model = model, optimizer = opt, ema = ema, step = step, data = { position = step * 32 },
      extra = { note = "mlp" }, keep = 2 })
    io.open(root .. "/saved", "w"):close()
    local deadline = T.clock() + 30                       -- keep working until killed (or give up)
    while T.clock() < deadline do T.randn({ 64 }):sum() end
    os.exit(3)
  end
end

local lines = {}
local function dump(t) for _, v in ipairs(t:detach():reshape(-1):tolist()) do lines[#lines + 1] = string.format("%a", v) end end
for _, p in ipairs(params) do dump(p) end
for _, s in ipairs(ema.shadow_params) do dump(s) end
for _, p in ipairs(params) do
  lines[#lines + 1] = tostring(opt.state[p].step)
  dump(opt.state[p].exp_avg); dump(opt.state[p].exp_avg_sq)
end
lines[#lines + 1] = tostring(ema.optimization_step)
local f = assert(io.open(out, "w"))
f:write(table.concat(lines, "\n"), "\n")
f:close()
]=]

local tests = {}

tests["exact resume: 200 steps == 100 steps, kill -9, resume for 100 (bitwise)"] = function()
  local dir = tmpdir()
  local script = dir .. "/worker.lua"
  write_file(script, WORKER)
  local root = dir .. "/ckpt"
  local function run(mode, out)
    local cmd = string.format("%s %s %s %s %s > %s 2>&1", sh_quote(RUNNER), sh_quote(script), sh_quote(root), mode,
      sh_quote(out or dir .. "/none"), sh_quote(dir .. "/" .. mode .. ".log"))
    local ok = os.execute(cmd)
    assert(ok, mode .. " run failed: " .. read_file(dir .. "/" .. mode .. ".log"))
  end
  run("full", dir .. "/full.txt")
  -- the interrupted run, in the background: wait for its signal, then kill -9 it
  os.execute(string.format("%s %s %s kill > %s 2>&1 & echo $! > %s", sh_quote(RUNNER), sh_quote(script),
    sh_quote(root), sh_quote(dir .. "/kill.log"), sh_quote(dir .. "/pid")))
  local pid = tonumber(read_file(dir .. "/pid"):match("%d+"))
  local waited = 0
  while not exists(root .. "/saved") do
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then -- (its log exists only once it has started)
      error("the run died before saving: " .. read_file(dir .. "/kill.log"))
    end
    assert(waited < 30, "no checkpoint after 30 s")
    os.execute("sleep 0.02")
    waited = waited + 0.02
  end
  os.execute("kill -9 " .. pid)
  os.execute("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.01; done")
  assert(ckpt.latest(root) == root .. "/step-100")
  run("resume", dir .. "/resumed.txt")
  local full, resumed = read_file(dir .. "/full.txt"), read_file(dir .. "/resumed.txt")
  assert(#full > 1000)
  if full ~= resumed then
    local i, fl, rl = 1, {}, {}
    for l in full:gmatch("[^\n]+") do fl[#fl + 1] = l end
    for l in resumed:gmatch("[^\n]+") do rl[#rl + 1] = l end
    while fl[i] == rl[i] do i = i + 1 end
    error(string.format("resumed run differs at value %d of %d: %s vs %s", i, #fl, tostring(rl[i]), tostring(fl[i])))
  end
  rmrf(dir)
end

-- a small model and optimizer in this process
local function setup()
  local ps = { T.randn({ 4, 3 }, { requires_grad = true }), T.randn({ 3 }, { requires_grad = true }) }
  local opt = optim.AdamW(ps, { lr = 0.01, amsgrad = true })
  local ema = optim.EMA(ps, { decay = 0.9 })
  for _ = 1, 3 do
    for _, p in ipairs(ps) do p.grad = T.randn(p.shape) end
    opt:step()
    ema:update()
  end
  return ps, opt, ema
end

local function same(a, b) return a:numel() == b:numel() and a:reshape(-1):ne(b:reshape(-1)):sum():item() == 0 end

tests["save / load round trip restores model, optimizer, EMA, RNG, extra and data"] = function()
  local root = tmpdir()
  local ps, opt, ema = setup()
  local extra = { name = "run \"7\"\n", lr = 0.1, tiny = 1e-300, third = 1 / 3, big = 2 ^ 60, neg = -0.0,
    inf = math.huge, flag = true, list = { 1, 2.0, { x = "y" } }, [5] = "five", ["not an id"] = 1 }
  local dir = ckpt.save(root, { model = ps, optimizer = opt, ema = ema, step = 7, extra = extra,
    data = { epoch = 2, index = 17 } })
  assert(dir == root .. "/step-7")
  for _, f in ipairs({ "model.safetensors", "optimizer.safetensors", "ema.safetensors", "meta.lua" }) do
    assert(exists(dir .. "/" .. f), f)
  end
  local after = T.randn({ 5 })                      -- what the RNG gives right after the save
  -- change everything, then load
  local ps2, opt2, ema2 = setup()
  local saved = ckpt.load(root, { model = ps2, optimizer = opt2, ema = ema2 })
  assert(saved.step == 7 and saved.dir == dir and saved.data.epoch == 2 and saved.data.index == 17)
  for k, v in pairs(extra) do
    if type(v) ~= "table" then assert(saved.extra[k] == v and math.type(saved.extra[k]) == math.type(v), k) end
  end
  assert(1 / saved.extra.neg == -math.huge and saved.extra.list[2] == 2.0 and math.type(saved.extra.list[2]) == "float")
  assert(saved.extra.list[3].x == "y")
  assert(same(T.randn({ 5 }), after), "the RNG continues where it was at the save")
  for k = 1, 2 do
    assert(same(ps2[k]:detach(), ps[k]:detach()))
    assert(same(ema2.shadow_params[k], ema.shadow_params[k]))
    local a, b = opt.state[ps[k]], opt2.state[ps2[k]]
    assert(a.step == b.step and same(a.exp_avg, b.exp_avg) and same(a.max_exp_avg_sq, b.max_exp_avg_sq))
  end
  assert(ema2.optimization_step == 3)
  -- the loaded optimizer state is its own memory, not the file's
  for _, p in ipairs(ps2) do p.grad = T.ones(p.shape) end
  opt2:step()
  rmrf(root)
end

tests["keep = N prunes the oldest; latest picks the newest complete one"] = function()
  local root = tmpdir() .. "/a/b" -- created as needed
  local ps, opt = setup()
  assert(ckpt.latest(root) == nil)
  for _, step in ipairs({ 5, 10, 100, 20 }) do
    ckpt.save(root, { model = ps, optimizer = opt, step = step, keep = 3 })
  end
  assert(not exists(root .. "/step-5/meta.lua"))
  assert(exists(root .. "/step-10/meta.lua") and exists(root .. "/step-20/meta.lua"))
  assert(ckpt.latest(root) == root .. "/step-100", "numeric order, not the order of saving")
  -- saving a step again replaces it
  ckpt.save(root, { model = ps, step = 100, extra = { again = true } })
  assert(ckpt.load(root).extra.again == true)
  rmrf(root:match("^(.*)/a/b$"))
end

tests["a failed save leaves the previous checkpoint intact; latest ignores .tmp"] = function()
  local root = tmpdir()
  local ps, opt, ema = setup()
  ckpt.save(root, { model = ps, optimizer = opt, step = 1 })
  local before = read_file(root .. "/step-1/model.safetensors")
  -- the save dies midway (after the model file, at the metadata: a function cannot be written)
  local ok, err = pcall(ckpt.save, root, { model = ps, optimizer = opt, ema = ema, step = 2, extra = { f = print } })
  assert(not ok and err:find("cannot write a function at meta.extra.f", 1, true), err)
  assert(exists(root .. "/step-2.tmp/model.safetensors"), "the half-written checkpoint stays in its .tmp")
  assert(ckpt.latest(root) == root .. "/step-1")
  assert(read_file(root .. "/step-1/model.safetensors") == before)
  -- a crash that left a directory without meta.lua is not complete either
  os.execute("mkdir " .. sh_quote(root .. "/step-9"))
  assert(ckpt.latest(root) == root .. "/step-1")
  -- the next save clears the leftover .tmp
  ckpt.save(root, { model = ps, step = 3 })
  assert(not exists(root .. "/step-2.tmp/model.safetensors"))
  assert(ckpt.latest(root) == root .. "/step-3")
  rmrf(root)
end

tests["tocha.nn modules: optimizer, EMA and checkpoint by parameter name"] = function()
  local ok, nn = pcall(require, "tocha.nn")
  if not ok then skip("tocha.nn is not available: " .. tostring(nn)) end
  local function net() return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)) end
  local root = tmpdir()
  local m = net()
  local opt, ema = optim.AdamW(m, { lr = 1e-2 }), optim.EMA(m, { decay = 0.9 })
  for _ = 1, 3 do
    m(T.randn({ 5, 4 })):pow(2):sum():backward()
    opt:step(); opt:zero_grad(); ema:update()
  end
  ckpt.save(root, { model = m, optimizer = opt, ema = ema, step = 3 })
  local m2 = net()
  local opt2, ema2 = optim.AdamW(m2, { lr = 1e-2 }), optim.EMA(m2)
  ckpt.load(root, { model = m2, optimizer = opt2, ema = ema2 })
  local sd, sd2 = m:state_dict(), m2:state_dict()
  for k, v in pairs(sd) do assert(same(v:detach(), sd2[k]:detach()), k) end
  -- one more step on both stays identical
  local x = T.randn({ 5, 4 })
  m(x):pow(2):sum():backward(); opt:step()
  m2(x):pow(2):sum():backward(); opt2:step()
  for k, v in pairs(m:state_dict()) do assert(same(v:detach(), m2:state_dict()[k]:detach()), k) end
  rmrf(root)
end

tests["bad input: clear errors"] = function()
  local root = tmpdir()
  local ps, opt = setup()
  local fails = T.testing.raises
  fails("step must be a non-negative integer", ckpt.save, root, { model = ps, step = 1.5 })
  fails('unknown field "optimiser"', ckpt.save, root, { optimiser = opt, step = 1 })
  fails("keep must be a positive integer", ckpt.save, root, { step = 1, keep = 0 })
  fails("no complete checkpoint in", ckpt.load, root)
  ckpt.save(root, { model = ps, step = 4 })
  fails("holds no optimizer state", ckpt.load, root, { optimizer = opt })
  fails("has no tensor 3", ckpt.load, root, { model = { ps[1], ps[2], T.zeros({ 2 }) } })
  fails("tensor 1 has 12 elements in", ckpt.load, root, { model = { ps[2], ps[1] } })
  write_file(root .. "/step-4/meta.lua", "return {")
  fails("is damaged", ckpt.load, root .. "/step-4")
  rmrf(root)
end

return tests
