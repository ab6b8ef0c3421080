-- bench/eval.lua: Inception feature extraction, images/s of tocha's InceptionV3FID against
-- pytorch-fid's InceptionV3 in PyTorch on the same work: batches of 299x299 images in [0, 1]
-- to 2048-d features (scaled to [-1, 1] and run through the network, eval mode, no gradient;
-- tocha's BatchNorms folded into the convolutions, as tocha.eval loads the network), on the
-- same number of threads. The two alternate for a few rounds and each keeps its best, so load
-- from other processes on a shared machine falls on both alike.
-- usage: build/tocha bench/eval.lua [--batch 50] [--batches 2] [--threads 2] [--rounds 3] [--device cpu]
local T = require "tocha"
local timing = require "timing"
local models = require "tocha.models"

local cfg = { batch = 50, batches = 2, threads = 2, rounds = 3, device = "cpu" }
local i = 1
while arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  if not k or cfg[k] == nil then
    io.stderr:write("usage: tocha bench/eval.lua [--batch N] [--batches N] [--threads N] [--rounds N] [--device cpu|cuda]\n")
    os.exit(2)
  end
  cfg[k] = k == "device" and arg[i + 1] or math.tointeger(tonumber(arg[i + 1])) or error("--" .. k .. " needs an integer")
  i = i + 2
end
T.set_num_threads(cfg.threads)

-- weights do not change the time: a deterministic stand-in, folded as eval.inception loads it
T.manual_seed(0)
local net = models.InceptionV3FID()
T.no_grad(function()
  for name, t in pairs(net:state_dict()) do
    if name:match("running_var$") then t:uniform_(0.5, 1.5)
    elseif t.dtype ~= "i64" then t:normal_(0, 0.05) end
  end
end)
net:to(cfg.device):eval():fold()
local x = T.rand({ cfg.batch, 3, 299, 299 }):to(cfg.device)

local function run_tocha()
  local ips
  T.no_grad(function()
    net(x * 2 - 1)[ "2048" ]:to("cpu") -- warm-up
    if cfg.device ~= "cpu" then T.cuda.synchronize() end
    local t0 = T.clock()
    for _ = 1, cfg.batches do net(x * 2 - 1)["2048"]:to("cpu") end
    if cfg.device ~= "cpu" then T.cuda.synchronize() end
    ips = cfg.batch * cfg.batches / (T.clock() - t0)
  end)
  return ips
end

local here = arg[0]:match("^(.*)/[^/]*$") or "bench"
local cmd = string.format("OMP_NUM_THREADS=%d python3 %s/eval_torch.py %d %d %d %s 2>&1", cfg.threads, here, cfg.batch,
  cfg.batches, cfg.threads, cfg.device)
local out = ""
local function run_torch()
  local ips
  ips, out = timing.command(cmd, "images/s: ([%d%.]+)")
  return ips
end

local tocha_ips, torch_ips = 0, nil
for r = 1, cfg.rounds do
  local a = run_tocha()
  local b = run_torch()
  print(string.format("round %d: tocha %.2f images/s, PyTorch %s", r, a, b and string.format("%.2f images/s", b) or "failed"))
  tocha_ips = math.max(tocha_ips, a)
  if not b then break end
  torch_ips = math.max(torch_ips or 0, b)
end

print(string.format("Inception-v3 (FID) features, %d x 3 x 299 x 299 per batch, %d batches a round, %d threads, %s",
  cfg.batch, cfg.batches, cfg.threads, cfg.device))
print(string.format("  %-34s %10s   (best of %d alternating rounds)", "", "images/s", cfg.rounds))
print(string.format("  %-34s %10.2f", "tocha", tocha_ips))
if torch_ips then
  print(string.format("  %-34s %10.2f", "PyTorch (pytorch-fid's InceptionV3)", torch_ips))
  print(string.format("  ratio tocha / PyTorch: %.2fx (goal >= 1.0x)", tocha_ips / torch_ips))
else
  print("  PyTorch: not run (" .. (out:gsub("%s+$", ""):sub(-300)) .. ")")
end
