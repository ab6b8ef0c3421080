-- bench/data.lua: images/s of tocha's data pipeline against PyTorch's (PIL + DataLoader) on the
-- same work: ~200 512x512 JPEGs with captions (made in /tmp at start, never committed), resized
-- (shorter side 288, bilinear, antialiased as PIL), randomly cropped to 256, randomly flipped,
-- made float CHW in [-1, 1], in shuffled batches of 32, with the same number of workers.
-- The two alternate for a few rounds and each keeps its best, so load from other processes
-- on a shared machine falls on both alike.
-- usage: build/tocha bench/data.lua [--workers 2] [--images 200] [--epochs 2] [--batch 32] [--rounds 3]
local T = require "tocha"
local timing = require "timing"
local image = require "tocha.image"
local data = require "tocha.data"

local cfg = { workers = 2, images = 200, epochs = 2, batch = 32, rounds = 3 }
local i = 1
while arg[i] do
  local k = arg[i]:match("^%-%-(.+)$")
  if not k or cfg[k] == nil then io.stderr:write("usage: tocha bench/data.lua [--workers N] [--images N] [--epochs N] [--batch N] [--rounds N]\n"); os.exit(2) end
  cfg[k] = math.tointeger(tonumber(arg[i + 1])) or error("--" .. k .. " needs an integer")
  i = i + 2
end

-- photo-like test images: smooth colour fields, edges and sensor noise
local dir = string.format("/tmp/tocha_bench_data_%d", cfg.images)
local marker = io.open(dir .. "/done", "r")
if marker then marker:close() else
  os.execute("rm -rf " .. dir .. " && mkdir -p " .. dir)
  T.manual_seed(0)
  local y = T.arange(0, 512):view(512, 1, 1):expand(512, 512, 3)
  local x = T.arange(0, 512):view(1, 512, 1):expand(512, 512, 3)
  local c = T.arange(0, 3):view(1, 1, 3):expand(512, 512, 3)
  for n = 1, cfg.images do
    local f1, f2 = 0.01 + 0.002 * (n % 7), 0.013 + 0.003 * (n % 5)
    local field = ((x * f1 + c * 2.1 + n):sin() * (y * f2 - c):cos() * 90 + 128)
    local edges = ((x + y * (n % 3)):gt(300 + n % 100)):float() * 40
    local img = (field + edges + T.randn(512, 512, 3) * 6):clamp(0, 255):to("u8")
    image.write(string.format("%s/img%04d.jpg", dir, n), img, { quality = 90 })
    local f = assert(io.open(string.format("%s/img%04d.txt", dir, n), "w"))
    f:write("a test image number " .. n .. "\n")
    f:close()
  end
  io.open(dir .. "/done", "w"):close()
end

local tf = image.Compose { image.Resize(288), image.RandomCrop(256), image.RandomHorizontalFlip(), image.ToFloat() }
local ds = data.ImageFolder(dir, { transform = tf })
local loader = data.DataLoader(ds, { batch_size = cfg.batch, shuffle = true, seed = 1, workers = cfg.workers })
local function now() local f = io.popen("date +%s.%N"); local t = tonumber(f:read("a")); f:close(); return t end
for _ in loader:iter() do end -- warm-up epoch, as the PyTorch side
local function run_tocha()
  local n, t0 = 0, now()
  for _ = 1, cfg.epochs do
    for b in loader:iter() do n = n + b.image:size(1) end
  end
  return n / (now() - t0)
end

local cmd = string.format("python3 %s/data_torch.py %s %d %d %d 2>&1", arg[0]:match("^(.*)/[^/]*$") or "bench",
  dir, cfg.workers, cfg.epochs, cfg.batch)
local out = ""
local function run_torch()
  local ips
  ips, out = timing.command(cmd, "images/s: ([%d%.]+)")
  return ips
end

local tocha_ips, torch_ips = 0, nil
for _ = 1, cfg.rounds do
  tocha_ips = math.max(tocha_ips, run_tocha())
  local t = run_torch()
  if not t then break end
  torch_ips = math.max(torch_ips or 0, t)
end
loader:close()

print(string.format("data pipeline: %d JPEGs 512x512 -> resize 288, random crop 256, flip, float; batch %d, %d workers",
  cfg.images, cfg.batch, cfg.workers))
print(string.format("  %-28s %10s   (best of %d rounds of %d epochs)", "", "images/s", cfg.rounds, cfg.epochs))
print(string.format("  %-28s %10.1f", "tocha", tocha_ips))
if torch_ips then
  print(string.format("  %-28s %10.1f", "PyTorch (PIL + DataLoader)", torch_ips))
  print(string.format("  ratio tocha / PyTorch: %.2fx (goal >= 1.5x)", tocha_ips / torch_ips))
else
  print("  PyTorch: not run (" .. (out:gsub("%s+$", ""):sub(-200)) .. ")")
end
