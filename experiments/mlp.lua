-- experiments/mlp.lua: a small MLP learns to tell apart three interleaved spirals.
-- The smallest complete training job: data from the tocha RNG, a model, AdamW on a cosine
-- schedule, a falling loss printed as it goes, and the accuracy on held-out points at the end.
--   tocha experiments/mlp.lua [--steps 2000] [--lr 0.01] [--hidden 64] [--seed 0] [--quiet] (--help)
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local lr = require "tocha.lr"
local run = require "tocha.run"

local r = run { name = "mlp", config = {
  steps = { 2000, help = "optimizer steps" },
  lr = { 1e-2, help = "peak learning rate (AdamW, cosine decay to 0)" },
  weight_decay = { 1e-4, help = "AdamW decoupled weight decay" },
  hidden = { 64, help = "width of the two hidden layers" },
  batch = { 256, help = "points per step" },
  device = { "cpu", help = "where the model trains: cpu, cuda, cuda:1, ..." },
  quiet = { false, help = "print only the final accuracy" },
  rss = { false, help = "print the resident memory at step 200 and at the end (for the memory test)" },
} }
local cfg = r.config
local dev = cfg.device

-- three spirals in the plane, 1-based class labels
local function spirals(n)
  local xs, labels = {}, {}
  for c = 1, 3 do
    local radius = T.rand({ n })
    local theta = radius * 4 + (c - 1) * (2 * math.pi / 3) + T.randn({ n }) * 0.15
    xs[c] = T.stack({ radius * theta:sin(), radius * theta:cos() }, 2)
    labels[c] = T.full({ n }, c, { dtype = "i64" })
  end
  return T.cat(xs, 1), T.cat(labels, 1)
end

local train_x, train_y = spirals(2000)
local test_x, test_y = spirals(500)
train_x, train_y, test_x, test_y = train_x:to(dev), train_y:to(dev), test_x:to(dev), test_y:to(dev)

-- the weights are drawn on the CPU, so every device starts from the same ones
local model = nn.Sequential(nn.Linear(2, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
  nn.Linear(cfg.hidden, 3)):to(dev)
local opt = optim.AdamW(model, { lr = cfg.lr, weight_decay = cfg.weight_decay })
local schedule = lr.cosine { lr = cfg.lr, steps = cfg.steps }

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local kb = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

local n = train_x.shape[1]
local smoothed
local t0 = T.clock()
for step = 1, cfg.steps do
  local idx = T.randint(1, n + 1, { cfg.batch }):to(dev)
  local loss = F.cross_entropy(model(train_x:index_select(1, idx)), train_y:index_select(1, idx))
  loss:backward()
  opt:set_lr(schedule(step - 1))
  opt:step()
  opt:zero_grad()
  local l = loss:item()
  smoothed = smoothed and 0.95 * smoothed + 0.05 * l or l
  if not cfg.quiet and (step % math.max(1, cfg.steps // 10) == 0 or step == 1) then
    print(string.format("step %5d/%d  loss %.4f  lr %.2e", step, cfg.steps, smoothed, opt.lr))
  end
  if cfg.rss and step == 200 then print("rss_at_200_kb " .. rss_kb()) end
end

if cfg.rss then print("rss_at_end_kb " .. rss_kb()) end -- the training loop's, before evaluation
model:eval()
local correct = T.no_grad(function() return model(test_x):argmax(2):eq(test_y):sum():item() end)
print(string.format("test accuracy: %.1f%% (%d/%d) after %d steps in %.0fs", 100 * correct / test_x.shape[1],
  correct, test_x.shape[1], cfg.steps, T.clock() - t0))
r:finish({ ["test/accuracy"] = correct / test_x.shape[1] })
