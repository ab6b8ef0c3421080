-- bench/core.lua: the engine-core benchmarks, tocha's side. bench/core_torch.py runs the
-- same work in PyTorch; bench/run.sh runs both on the same threads and prints the ratios.
-- Prints "RESULT <name> <seconds per iteration>" lines.
local T = require "tocha"
local F = require "tocha.nn.functional"
T.set_num_threads(tonumber(os.getenv("THREADS") or "2"))
T.manual_seed(0)

local function bench(name, iters, fn, warm)
  for _ = 1, warm or 3 do fn() end
  collectgarbage()
  local best = math.huge
  for _ = 1, 3 do -- best of three rounds
    local t0 = T.clock()
    for _ = 1, iters do fn() end
    best = math.min(best, (T.clock() - t0) / iters)
  end
  print(string.format("RESULT %s %.9g", name, best))
end

-- per-op overhead: a chain of 100,000 adds on 16-element tensors
do
  local one = T.ones({ 16 })
  bench("add_chain_per_op", 1, function()
    local x = T.zeros({ 16 })
    for _ = 1, 100000 do x = x + one end
  end, 1)
  -- reported per op
end

-- f32 GEMM 1024^3
do
  local a, b = T.randn({ 1024, 1024 }), T.randn({ 1024, 1024 })
  bench("gemm_1024", 10, function() return a:matmul(b) end)
end

-- MLP training step: 784-1024-1024-10, batch 256, cross-entropy, AdamW (tocha.optim's fused step)
do
  local optim = require "tocha.optim"
  local sizes = { 784, 1024, 1024, 10 }
  local params = {}
  for i = 1, 3 do
    local bound = 1 / math.sqrt(sizes[i])
    params[#params + 1] = (T.rand({ sizes[i + 1], sizes[i] }) * 2 - 1):mul(bound):requires_grad_()
    params[#params + 1] = (T.rand({ sizes[i + 1] }) * 2 - 1):mul(bound):requires_grad_()
  end
  local opt = optim.AdamW(params, { lr = 1e-3, weight_decay = 1e-2 })
  local x = T.randn({ 256, 784 })
  local y = T.randint(1, 11, { 256 })
  bench("mlp_train_step", 20, function()
    local h = x
    for i = 1, 3 do
      h = F.linear(h, params[2 * i - 1], params[2 * i])
      if i < 3 then h = h:relu() end
    end
    F.cross_entropy(h, y):backward()
    opt:step()
    opt:zero_grad()
  end)
end

-- conv2d forward + backward: 16x64x32x32, 3x3, 64 out, padding 1
do
  local x = T.randn({ 16, 64, 32, 32 }, { requires_grad = true })
  local w = (T.randn({ 64, 64, 3, 3 }) * 0.05):requires_grad_()
  local b = T.zeros({ 64 }, { requires_grad = true })
  bench("conv2d_fwd_bwd", 5, function()
    local y = F.conv2d(x, w, b, { padding = 1 })
    y:sum():backward()
    x.grad, w.grad, b.grad = nil, nil, nil
  end, 2)
end
