-- bench/optim.lua: one AdamW step over 100M f32 parameters (10 tensors of 10M): tocha's fused
-- kernel against PyTorch's fused and foreach AdamW (bench/optim_torch.py, run by this script on
-- the same number of threads, after tocha's memory is released). Prints ms per step, best and
-- median of the timed steps, and the ratio of the bests (> 1: tocha is faster).
--   ./build/tocha bench/optim.lua        (THREADS=2 NUMEL=1e7 TENSORS=10 STEPS=10 by default)
local T = require "tocha"
local optim = require "tocha.optim"

local THREADS = tonumber(os.getenv("THREADS") or "2")
local N = math.tointeger(tonumber(os.getenv("NUMEL") or "1e7") // 1)
local K = tonumber(os.getenv("TENSORS") or "10")
local STEPS = tonumber(os.getenv("STEPS") or "10")
T.set_num_threads(THREADS)

local function median(t)
  local s = { table.unpack(t) }
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local results = {}
do
  T.manual_seed(0)
  local params = {}
  for i = 1, K do
    params[i] = T.randn({ N })
    params[i].grad = T.randn({ N })
  end
  local opt = optim.AdamW(params, { lr = 1e-3, weight_decay = 1e-2 })
  opt:step() -- allocates the state
  opt:step()
  local times = {}
  for i = 1, STEPS do
    local t0 = T.clock()
    opt:step()
    times[i] = T.clock() - t0
  end
  results.tocha_best, results.tocha_median = math.min(table.unpack(times)), median(times)
end
collectgarbage()
collectgarbage()

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local cmd = string.format("THREADS=%d NUMEL=%d TENSORS=%d STEPS=%d OMP_NUM_THREADS=%d python3 %s/optim_torch.py 2>&1",
  THREADS, N, K, STEPS, THREADS, here)
local p = io.popen(cmd)
local out = p:read("a")
p:close()
for name, v in out:gmatch("RESULT (%S+) (%S+)") do results[name] = tonumber(v) end

print(string.format("AdamW step, %d tensors x %d f32 parameters (%.0fM), %d threads; ms per step",
  K, N, K * N / 1e6, THREADS))
print(string.format("%-26s %10s %10s %10s", "", "best", "median", "ratio"))
print(string.format("%-26s %10.1f %10.1f", "tocha (fused kernel)", results.tocha_best * 1e3, results.tocha_median * 1e3))
for _, peer in ipairs({ "fused", "foreach" }) do
  local b, m = results["adamw_" .. peer .. "_best"], results["adamw_" .. peer .. "_median"]
  if b then
    print(string.format("%-26s %10.1f %10.1f %9.2fx", "PyTorch " .. peer, b * 1e3, m * 1e3, b / results.tocha_best))
  end
end
if not results.adamw_fused_best then print("PyTorch peer did not run:\n" .. out) end
print("(ratio = PyTorch best / tocha best; > 1 means tocha is faster)")
