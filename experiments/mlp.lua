-- experiments/mlp.lua: a small MLP learns to tell apart three interleaved spirals.
-- The smallest complete training job: data from the tocha RNG, a model, AdamW, a falling
-- loss printed as it goes, and the accuracy on held-out points at the end.
--   tocha experiments/mlp.lua [--steps 2000] [--lr 0.01] [--hidden 64] [--seed 0] [--quiet]
local T = require "tocha"
local F = require "tocha.nn.functional"

local config = { steps = 2000, lr = 1e-2, hidden = 64, batch = 256, seed = 0, quiet = false, rss = false }
do -- --name value options; booleans as flags
  local i = 1
  while i <= #arg do
    local name = arg[i]:match("^%-%-(.+)$")
    if not name or config[name] == nil then error("unknown option " .. arg[i] .. " (options: --steps --lr --hidden --batch --seed --quiet --rss)") end
    if type(config[name]) == "boolean" then config[name] = true
    else
      i = i + 1
      config[name] = tonumber(arg[i]) or error("option --" .. name .. " needs a number")
    end
    i = i + 1
  end
end
T.manual_seed(config.seed)

-- three spirals in the plane, 1-based class labels
local function spirals(n)
  local xs, labels = {}, {}
  for c = 1, 3 do
    local r = T.rand({ n })
    local theta = r * 4 + (c - 1) * (2 * math.pi / 3) + T.randn({ n }) * 0.15
    xs[c] = T.stack({ r * theta:sin(), r * theta:cos() }, 2)
    labels[c] = T.full({ n }, c, { dtype = "i64" })
  end
  return T.cat(xs, 1), T.cat(labels, 1)
end

local train_x, train_y = spirals(2000)
local test_x, test_y = spirals(500)

-- the model: 2 -> hidden -> hidden -> 3, PyTorch's default initialisation
local function linear(fan_in, fan_out)
  local bound = 1 / math.sqrt(fan_in)
  return {
    w = (T.rand({ fan_out, fan_in }) * 2 - 1):mul(bound):requires_grad_(),
    b = (T.rand({ fan_out }) * 2 - 1):mul(bound):requires_grad_(),
  }
end
local layers = { linear(2, config.hidden), linear(config.hidden, config.hidden), linear(config.hidden, 3) }
local params = {}
for _, l in ipairs(layers) do params[#params + 1] = l.w; params[#params + 1] = l.b end

local function forward(x)
  for i, l in ipairs(layers) do
    x = F.linear(x, l.w, l.b)
    if i < #layers then x = x:relu() end
  end
  return x
end

-- AdamW written out in Lua (tocha.optim has the fused version)
local m, v = {}, {}
for i, p in ipairs(params) do m[i] = T.zeros_like(p); v[i] = T.zeros_like(p) end
local function adamw_step(t, lr)
  local b1, b2, eps, wd = 0.9, 0.999, 1e-8, 1e-4
  T.no_grad(function()
    for i, p in ipairs(params) do
      local g = p.grad
      p:mul_(1 - lr * wd)
      m[i]:mul_(b1):add_(g, 1 - b1)
      v[i]:mul_(b2):add_(g * g, 1 - b2)
      local mhat = m[i] / (1 - b1 ^ t)
      local vhat = v[i] / (1 - b2 ^ t)
      p:sub_(mhat / (vhat:sqrt() + eps) * lr)
      p.grad = nil
    end
  end)
end

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local kb = f:read("a"):match("VmRSS:%s*(%d+)")
  f:close()
  return tonumber(kb)
end

local n = train_x.shape[1]
local smoothed
local t0 = os.time()
for step = 1, config.steps do
  local idx = T.randint(1, n + 1, { config.batch })
  local x, y = train_x:index_select(1, idx), train_y:index_select(1, idx)
  local loss = F.cross_entropy(forward(x), y)
  loss:backward()
  local lr = config.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / config.steps)) -- cosine decay
  adamw_step(step, lr)
  local l = loss:item()
  smoothed = smoothed and 0.95 * smoothed + 0.05 * l or l
  if not config.quiet and (step % (config.steps // 10) == 0 or step == 1) then
    print(string.format("step %5d/%d  loss %.4f  lr %.2e", step, config.steps, smoothed, lr))
  end
  if config.rss and step == 200 then print("rss_at_200_kb " .. rss_kb()) end
end

if config.rss then print("rss_at_end_kb " .. rss_kb()) end -- the training loop's, before evaluation
local correct = T.no_grad(function()
  return forward(test_x):argmax(2):eq(test_y):sum():item()
end)
print(string.format("test accuracy: %.1f%% (%d/%d) after %d steps in %ds", 100 * correct / test_x.shape[1],
  correct, test_x.shape[1], config.steps, os.time() - t0))
