-- bench/log_overhead.lua: what logging costs a training run. A small conv net (steps of the
-- size experiments/t2i_shapes.lua takes on two CPU cores) trains for a fixed number of steps,
-- with logging off and on in alternating order (off, on, on, off, ...); logging means 10,000
-- scalars, 100 PNG sample grids and metrics.jsonl through log.tensorboard. Prints the wall
-- times and their on/off ratio (only meaningful on a quiet machine: on a shared one, rounds
-- differ by more than logging costs), and the time spent inside the logging calls as a share
-- of the run (steady anywhere; PNG encoding and writes happen on the writer's thread).
--   tocha bench/log_overhead.lua [--steps 600] [--rounds 2] [--batch 32] [--scalars 10000] [--images 100]
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local log = require "tocha.log"

local config = { steps = 600, rounds = 2, batch = 32, scalars = 10000, images = 100 }
do
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(.+)$")
    if not name or config[name] == nil then
      error("unknown option " .. arg[i] .. " (options: --steps --rounds --batch --scalars --images)")
    end
    config[name] = math.tointeger(tonumber(arg[i + 1])) or error("--" .. name .. " needs an integer")
    i = i + 2
  end
end

-- data: 32x32 RGB images, a fixed smooth pattern per class under noise
local CLASSES, N = 10, 2048
T.manual_seed(0)
local patterns = F.interpolate(T.randn({ CLASSES, 3, 4, 4 }), { size = { 32, 32 }, mode = "bilinear" })
local labels = T.randint(1, CLASSES + 1, { N })
local images = patterns:index_select(1, labels) + T.randn({ N, 3, 32, 32 }) * 0.5

local function model()
  return nn.Sequential(
    nn.Conv2d(3, 32, 3, { padding = 1 }), nn.SiLU(),
    nn.Conv2d(32, 64, 3, { stride = 2, padding = 1 }), nn.SiLU(),
    nn.Conv2d(64, 64, 3, { stride = 2, padding = 1 }), nn.SiLU())
end

local per_step = math.max(1, math.ceil(config.scalars / config.steps))
local image_every = math.max(1, config.steps // config.images)
local tmp = io.popen("mktemp -d"):read("l")

-- one training run; returns its wall time and the time spent in logging calls
local function train(logging, round, steps)
  steps = steps or config.steps
  T.manual_seed(1)
  local net, head = model(), nn.Linear(64, CLASSES)
  local params = net:parameters()
  for _, p in ipairs(head:parameters()) do params[#params + 1] = p end
  local opt = optim.AdamW(params, { lr = 1e-3 })
  local t0 = T.clock()
  local in_log, nscalars, nimages = 0, 0, 0
  local w
  if logging then
    local t = T.clock()
    w = log.tensorboard(tmp .. "/round" .. round)
    in_log = in_log + T.clock() - t
  end
  for step = 1, steps do
    local idx = T.randint(1, N + 1, { config.batch })
    local x, y = images:index_select(1, idx), labels:index_select(1, idx)
    local logits = head(net(x):mean({ 3, 4 }))
    local loss = F.cross_entropy(logits, y)
    opt:zero_grad()
    loss:backward()
    local norm = optim.clip_grad_norm(params, 1.0)
    opt:step()
    local l = loss:item()
    if logging then
      local t = T.clock()
      w:add_scalar("train/loss", l, step)
      w:add_scalar("train/grad_norm", norm, step)
      for k = 3, per_step do w:add_scalar("extra/" .. k, l * k, step) end
      nscalars = nscalars + per_step
      if step % image_every == 0 and nimages < config.images then
        w:add_images("samples", x:narrow(1, 1, 16), step, { nrow = 4, range = { -2, 2 } })
        nimages = nimages + 1
      end
      in_log = in_log + T.clock() - t
    end
  end
  if logging then
    local t = T.clock()
    w:close()
    in_log = in_log + T.clock() - t
  end
  return T.clock() - t0, in_log, nscalars, nimages
end

print(string.format("log_overhead: %d steps x %d rounds, batch %d, conv net 3-32-64-64 on 32x32, %d threads",
  config.steps, config.rounds, config.batch, T.get_num_threads()))
train(false, 0, 20) -- warm-up: allocator, thread pools
local off, on, inside = 0, 0, 0
local nscalars, nimages
print(string.format("%-8s %10s %10s", "round", "off (s)", "on (s)"))
for r = 1, config.rounds do
  local a, b, l
  if r % 2 == 1 then
    a = train(false, r)
    b, l, nscalars, nimages = train(true, r)
  else
    b, l, nscalars, nimages = train(true, r)
    a = train(false, r)
  end
  off, on, inside = off + a, on + b, inside + l
  print(string.format("%-8d %10.2f %10.2f", r, a, b))
end
os.execute("rm -rf " .. tmp)
print(string.format("logged per run: %d scalars, %d image grids (3 x 138 x 138 PNG), metrics.jsonl", nscalars, nimages))
print(string.format("total    %10.2f %10.2f   wall time on/off %.4f (%+.2f%%)", off, on, on / off, 100 * (on / off - 1)))
print(string.format("inside the logging calls: %.3f s = %.2f%% of the logged runs' wall time", inside, 100 * inside / on))
print(string.format("RESULT log_overhead_wall_ratio %.4f", on / off))
print(string.format("RESULT log_inside_share %.5f", inside / on))
