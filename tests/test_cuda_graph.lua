-- test_cuda_graph.lua: CUDA graphs (T.cuda.graph). A capture records, replays recompute from
-- refilled inputs into the same outputs; a small model's training step (forward, backward,
-- AdamW or SGD with momentum, the learning rate changing) replayed equals the eager steps bit
-- for bit, as does a sampler's denoising step; captures that cannot hold (reading a value,
-- copies between the CPU and the GPU, random draws, a synchronization, page-locked
-- allocation) fail naming the cause and leave the device usable; the graph's private memory
-- pool goes back with the graph. Without a GPU every test skips.
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local optim = require "tocha.optim"
local H = dofile(T.testing.path("cuda_harness.lua"))
local DEV, need_gpu, n_diff = H.DEV, H.need_gpu, H.n_diff

local function need_graphs()
  need_gpu()
  if DEV ~= "cuda" then skip("CUDA graphs need the cuda device (TOCHA_CUDA_DEVICE=" .. DEV .. ")") end
end

local function same(a, b, what)
  local d = n_diff(a, b)
  if d > 0 then error(string.format("%s: %d elements differ", what, d), 2) end
end

-- a small MLP on the GPU, its weights a copy of src's when given
local function mlp(src)
  local m = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3))
  if src then m:load_state_dict(src:state_dict()) end
  return m:to(DEV)
end

-- steps of opt on model over batches xs, ys from step `from` to `to` (lr from sched); the losses
local function eager_steps(model, opt, xs, ys, sched, from, to, losses)
  for s = from, to do
    opt:zero_grad()
    local loss = F.mse_loss(model(xs[s]), ys[s])
    loss:backward()
    opt:set_lr(sched(s))
    opt:step()
    losses[s] = loss:detach()
  end
end

-- the training step of `make_opt` eager and replayed from a graph, `n` steps (2 of warm-up)
local function train_both(make_opt)
  T.manual_seed(7)
  local n = 7
  local xs, ys = {}, {}
  for s = 1, n do
    xs[s] = T.randn({ 5, 6 }):to(DEV)
    ys[s] = T.randn({ 5, 3 }):to(DEV)
  end
  local sched = function(s) return 0.02 * (1 + 0.3 * s) * (s % 2 == 0 and 0.5 or 1) end

  local ref = mlp()
  local eager, graphed = mlp(ref), mlp(ref)
  local eo, go = make_opt(eager), make_opt(graphed)
  local el, gl = {}, {}
  eager_steps(eager, eo, xs, ys, sched, 1, n, el)

  -- static inputs, the warm-up on them, then the capture of one step
  local sx, sy = xs[1]:clone(), ys[1]:clone()
  local function step()
    go:zero_grad()
    local loss = F.mse_loss(graphed(sx), sy)
    loss:backward()
    go:step()
    return loss
  end
  for s = 1, 2 do
    sx:copy_(xs[s]); sy:copy_(ys[s])
    go:set_lr(sched(s))
    gl[s] = step():detach()
  end
  local g, loss = T.cuda.graph(step)
  for s = 3, n do
    sx:copy_(xs[s]); sy:copy_(ys[s])
    go:set_lr(sched(s))
    g:replay()
    gl[s] = loss:clone()
  end
  for s = 1, n do same(gl[s], el[s], "loss of step " .. s) end
  local ep, gp = eager:parameters(), graphed:parameters()
  for i = 1, #ep do same(gp[i], ep[i], "parameter " .. i .. " after " .. n .. " steps") end
  local st = go.state[gp[1]]
  if st and st.step and st.step ~= n then error("the optimizer's step count is " .. st.step .. ", expected " .. n) end
  g:release()
end

-- runs fn under a capture, expecting an error containing each of `want`; then checks the
-- device works
local function capture_fails(fn, want)
  local ok, err = pcall(T.cuda.graph, fn)
  if ok then error("the capture succeeded; expected an error mentioning " .. want[1], 2) end
  for _, w in ipairs(want) do
    if not tostring(err):find(w, 1, true) then
      error(string.format("error %q does not mention %q", tostring(err), w), 2)
    end
  end
  if T.cuda.is_current_stream_capturing() then error("still capturing after the error", 2) end
  local x = T.arange(0, 4, { dtype = "f32" }):to(DEV)
  local v = (x * 2):sum():item()
  if v ~= 12 then error("the device after the failed capture: sum " .. tostring(v), 2) end
end

return {
  ["capture records without running; replays recompute from refilled inputs into the same outputs"] = function()
    need_graphs()
    T.manual_seed(1)
    local x = T.randn({ 8, 5 }):to(DEV)
    local w = T.randn({ 5, 3 }):to(DEV)
    local function f() return ((x:matmul(w) * 2 + 1):relu():sum(2) + x:mean()):sqrt() end
    local g, y = T.cuda.graph(f)
    if T.cuda.is_current_stream_capturing() then error("capturing after the capture") end
    for round = 1, 3 do
      x:copy_(T.randn({ 8, 5 }):to(DEV))
      g:replay()
      same(y, f(), "round " .. round)
    end
    g:release()
    local ok, err = pcall(g.replay, g)
    if ok or not err:find("released", 1, true) then error("replay after release: " .. tostring(err)) end
  end,

  ["a training step (MLP, AdamW) replayed equals the eager steps bit for bit, lr changing"] = function()
    need_graphs()
    train_both(function(m) return optim.AdamW(m:parameters(), { lr = 0.01, weight_decay = 0.1 }) end)
  end,

  ["a training step (MLP, SGD with momentum, Adam with amsgrad) replayed equals eager bit for bit"] = function()
    need_graphs()
    train_both(function(m) return optim.SGD(m:parameters(), { lr = 0.05, momentum = 0.9, nesterov = true }) end)
    train_both(function(m) return optim.Adam(m:parameters(), { lr = 0.01, amsgrad = true, weight_decay = 0.01 }) end)
  end,

  ["a sampler's denoising step replayed in a DDIM loop equals the eager loop"] = function()
    need_graphs()
    local D = require "tocha.diffusion"
    T.manual_seed(2)
    local net = mlp():eval()
    local proj, out = nn.Linear(1, 6):to(DEV), T.randn({ 3, 6 }):to(DEV)
    local function denoise(x, t) -- eps(x, t) for x [5, 6], t [1, 1]
      return T.no_grad(function() return net(x + proj(t / 1000)):matmul(out) end)
    end
    local function sched()
      local s = D.DDIM{ num_train_timesteps = 1000, beta_schedule = "scaled_linear", beta_start = 0.00085,
                        beta_end = 0.012, steps_offset = 1 }
      s:set_timesteps(6)
      return s
    end
    local x0 = T.randn({ 5, 6 }):to(DEV)
    local s1, x = sched(), x0:clone()
    for _, t in ipairs(s1.timesteps) do
      x = s1:step(denoise(x, T.full({ 1, 1 }, t):to(DEV)), t, x)
    end
    local s2, sx, st = sched(), x0:clone(), T.zeros({ 1, 1 }):to(DEV)
    denoise(sx, st) -- warm-up
    local g, eps = T.cuda.graph(denoise, sx, st)
    local y = x0:clone()
    for _, t in ipairs(s2.timesteps) do
      sx:copy_(y)
      st:fill_(t)
      g:replay()
      y = s2:step(eps, t, y)
    end
    same(y, x, "the sample")
  end,

  ["captures that cannot hold fail naming the cause; the device stays usable"] = function()
    need_graphs()
    local x = T.randn({ 4 }):to(DEV)
    capture_fails(function() return (x * 2):sum():item() end, { "copy from the GPU to the CPU", "graph capture" })
    capture_fails(function() return x:to("cpu") end, { "copy from the GPU to the CPU" })
    capture_fails(function() return x + T.ones({ 4 }):to(DEV) end, { "copy from the CPU to the GPU" })
    capture_fails(function() return T.randn({ 4 }, { device = DEV }) end, { "random numbers", "repeat at every replay" })
    capture_fails(function() return F.dropout(x, 0.5, { training = true }) end, { "dropout", "random numbers" })
    capture_fails(function() T.cuda.synchronize() end, { "synchronize during CUDA graph capture" })
    local logits, target = T.randn({ 3, 4 }):to(DEV), T.tensor({ 1, 4, 2 }, { dtype = "i64" }):to(DEV)
    capture_fails(function() return F.cross_entropy(logits, target) end, { "cross_entropy", "graph capture" })
    capture_fails(function() return logits:index_select(1, target) end, { "index tensor", "graph capture" })
    local p = T.randn({ 4 }):to(DEV)
    p.grad = T.randn({ 4 }):to(DEV)
    capture_fails(function() return optim.clip_grad_norm({ p }, 1.0) end, { "total_norm", "graph capture" })
    capture_fails(function() T.cuda.empty_cache() end, { "empty_cache", "capturing" })
    capture_fails(function() T.cuda.graph(function() end) end, { "already capturing" })
    T.cuda.empty_cache() -- no page-locked block cached: pinning must call cudaMallocHost
    capture_fails(function() return T.ones({ 64 }):pin_memory() end, { "cudaMallocHost", "capturing" })
    local ok, err = pcall(T.cuda.graph, function() error("boom in the step") end)
    if ok or not err:find("boom in the step", 1, true) then error("the function's own error: " .. tostring(err)) end
    local m, input = mlp(), T.randn({ 2, 6 }):to(DEV)
    local opt = optim.AdamW(m:parameters())
    local function step()
      opt:zero_grad()
      m(input):sum():backward()
      opt:step()
    end
    capture_fails(step, { "no state yet", "warm-up" })
    step()
    local g = T.cuda.graph(step) -- after the warm-up it holds
    g:replay()
    g:release()
  end,

  ["the private pool: allocations of a capture stay the graph's; released with it"] = function()
    need_graphs()
    collectgarbage(); collectgarbage()
    T.cuda.empty_cache()
    local before = T.cuda.memory_stats()
    local x = T.randn({ 256, 64 }):to(DEV)
    local g, y = T.cuda.graph(function()
      local h = (x * 3):exp() -- temporaries freed inside the capture stay in the pool
      return (h + x):sum(1)
    end)
    local mid = T.cuda.memory_stats()
    if not (g:pool_bytes() > 0 and mid.graph_reserved == g:pool_bytes()) then
      error(string.format("pool bytes %d, stats %d", g:pool_bytes(), mid.graph_reserved))
    end
    -- eager work now must not land in the graph's pool
    local z = (x * 5):exp()
    g:replay()
    same(y, ((x * 3):exp() + x):sum(1), "replay while eager tensors live")
    local kept = y:clone()
    g:release()
    same(y, kept, "an output kept after the release") -- its block joined the device pool
    y, z, g = nil, nil, nil
    collectgarbage(); collectgarbage()
    T.cuda.empty_cache()
    local after = T.cuda.memory_stats()
    if after.graph_reserved ~= 0 then error("graph_reserved " .. after.graph_reserved .. " after the release") end
    local extra = after.reserved - before.reserved
    local own = 2 * 256 * 64 * 4 -- x and kept, still alive (rounded up by the allocator)
    if extra > own + 4096 then
      error(string.format("reserved grew by %d bytes after the release (live tensors hold %d)", extra, own))
    end
  end,
}
