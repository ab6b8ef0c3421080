-- bench/gpu_ops.lua: the GPU benchmarks, tocha's side: bf16 GEMM 8192^3, conv2d 3x3 forward +
-- backward at Stable Diffusion UNet shapes in bf16 (NCHW and channels-last), the per-op overhead of small tensors,
-- attention forward + backward at SD shapes, and for reference GroupNorm + SiLU.
-- bench/gpu_ops_torch.py does the same work in PyTorch; scripts/gpu_check.sh runs both on the
-- GPU machine and prints the ratios. Prints "RESULT <name> <seconds per iteration> <flops per
-- iteration>" lines: the median of ROUNDS timed batches after warm-up, each batch synchronized
-- before and after (tocha has no CUDA events). Random inputs, never zeros.
--   tocha bench/gpu_ops.lua [--small]   (--small: tiny sizes, to check the script quickly)
local T = require "tocha"
local F = require "tocha.nn.functional"

local small = arg[1] == "--small"
if not (T.cuda and T.cuda.is_available()) then
  print("SKIP no CUDA GPU (T.cuda.is_available() is false)")
  return
end
local ROUNDS = small and 3 or 7
print("INFO device " .. T.cuda.get_device_name(0) .. (small and " (--small sizes)" or ""))
T.manual_seed(0)

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

--- times fn (which does `per` units of work) in ROUNDS batches of `iters` calls
local function bench(name, iters, fn, flops, per)
  per = per or 1
  for _ = 1, small and 1 or 3 do fn() end
  T.cuda.synchronize()
  local times = {}
  for r = 1, ROUNDS do
    if r % 2 == 0 then collectgarbage() end
    T.cuda.synchronize()
    local t0 = T.clock()
    for _ = 1, iters do fn() end
    T.cuda.synchronize()
    times[#times + 1] = (T.clock() - t0) / (iters * per)
  end
  print(string.format("RESULT %s %.9g %.6g", name, median(times), flops / per))
  io.stdout:flush()
end

local cuda = { device = "cuda", dtype = "bf16" }

-- GEMM: C = A @ B, bf16 in and out (f32 accumulation), all 8192
do
  local n = small and 256 or 8192
  local a, b = T.randn({ n, n }, cuda), T.randn({ n, n }, cuda)
  bench("gemm_bf16_" .. n, small and 2 or 20, function() local c <close> = a:matmul(b) end, 2 * n ^ 3)
end

-- conv2d 3x3, padding 1, with bias: forward and the backward of x, w and b, as a UNet trains;
-- in NCHW (with cuDNN's heuristics, then its algorithms timed) and in channels-last (*_cl:
-- input, weight and output gradient channels-last, cuDNN's NHWC kernels, heuristics)
for _, s in ipairs({ { 320, 64 }, { 640, 32 }, { 1280, 16 } }) do
  local batch, c, hw = 8, s[1], s[2]
  if small then batch, c, hw = 1, c // 40, hw // 4 end
  local flops = 3 * 2 * batch * hw * hw * c * c * 9
  for _, v in ipairs({ { false, false }, { false, true }, { true, false } }) do
    local cl, timed = v[1], v[2]
    local fmt = { memory_format = cl and "channels_last" or "contiguous_format" }
    local x = T.randn({ batch, c, hw, hw }, cuda):contiguous(fmt):requires_grad_()
    local w = (T.randn({ c, c, 3, 3 }, cuda) * (1 / math.sqrt(9 * c))):contiguous(fmt):requires_grad_()
    local b = (T.randn({ c }, cuda) * 0.1):requires_grad_()
    local gy = T.randn({ batch, c, hw, hw }, cuda):contiguous(fmt)
    local prev = T.backends.cudnn_benchmark(timed)
    bench(string.format("conv3x3_fwd_bwd_bf16_b%d_c%d_%dx%d%s%s", batch, c, hw, hw, cl and "_cl" or "",
        timed and "_timed" or ""),
      small and 2 or 20, function()
        local y <close> = F.conv2d(x, w, b, { padding = 1 })
        y:backward(gy)
        x.grad, w.grad, b.grad = nil, nil, nil
      end, flops)
    T.backends.cudnn_benchmark(prev)
  end
end

-- per-op overhead: chains of ops on 16-element f32 tensors, reported per op
do
  local n = small and 200 or 20000
  local one = T.ones({ 16 }, { device = "cuda" })
  bench("add_small_per_op", 1, function()
    local x = T.zeros({ 16 }, { device = "cuda" })
    for _ = 1, n do x = x + one end
  end, 0, n)
  local m = T.randn({ 16, 16 }, { device = "cuda" })
  bench("mixed_small_per_op", 1, function() -- 5 ops: mul, add, relu, sum over a dim, add
    local x = m
    for _ = 1, n // 4 do x = (x * 0.5 + m):relu():sum(2, true) + m end
  end, 0, (n // 4) * 5)
end

-- attention forward + backward at Stable Diffusion's shapes, batch 8, 8 heads (goal: at least
-- 1.0x PyTorch's SDPA): self-attention at the UNet's three resolutions and cross-attention to 77
-- text tokens (flops: 4 B H L S E forward, 2.5 times that backward); and for reference
-- GroupNorm(32) + SiLU forward
for _, s in ipairs({ { 4096, 4096, 40 }, { 1024, 1024, 80 }, { 256, 256, 160 }, { 4096, 77, 40 } }) do
  local nb, nh, L, S, E = 8, 8, s[1], s[2], s[3]
  local self_attn = L == S
  if small then nb, nh, L, S = 1, 2, L // 32, self_attn and L // 32 or S end
  local q = T.randn({ nb, nh, L, E }, cuda)
  local k, v = T.randn({ nb, nh, S, E }, cuda), T.randn({ nb, nh, S, E }, cuda)
  q:requires_grad_(); k:requires_grad_(); v:requires_grad_()
  local go = T.randn({ nb, nh, L, E }, cuda)
  local name = self_attn and string.format("sdpa_fwd_bwd_bf16_b%d_h%d_L%d_E%d", nb, nh, L, E)
    or string.format("sdpa_fwd_bwd_bf16_b%d_h%d_L%dx%d_E%d", nb, nh, L, S, E)
  bench(name, small and 2 or 3, function()
    local o <close> = F.scaled_dot_product_attention(q, k, v)
    o:backward(go)
    q.grad, k.grad, v.grad = nil, nil, nil
  end, 3.5 * 4 * nb * nh * L * S * E)
end
do
  local nb, c, hw = 8, 320, 64
  if small then nb, c, hw = 1, 64, 16 end
  local x = T.randn({ nb, c, hw, hw }, cuda)
  local w, b = T.randn({ c }, cuda), T.randn({ c }, cuda)
  bench(string.format("groupnorm32_silu_fwd_bf16_b%d_c%d_%dx%d", nb, c, hw, hw), small and 2 or 20, function()
    local y <close> = F.group_norm(x, 32, w, b):silu()
  end, 0)
end
do -- the same in channels-last (the layout a channels-last UNet hands its norms)
  local nb, c, hw = 8, 320, 64
  if small then nb, c, hw = 1, 64, 16 end
  local x = T.randn({ nb, c, hw, hw }, cuda):contiguous{ memory_format = "channels_last" }
  local w, b = T.randn({ c }, cuda), T.randn({ c }, cuda)
  bench(string.format("groupnorm32_silu_fwd_bf16_b%d_c%d_%dx%d_cl", nb, c, hw, hw), small and 2 or 20, function()
    local y <close> = F.group_norm(x, 32, w, b, { silu = true })
  end, 0)
end
