-- tests/test_memory.lua: the CPU's caching allocator seen from Lua: T.cpu's stats follow
-- tensors' lives, a repeated training step takes its memory from the cache (no new blocks
-- from the system, no page faults), the cache empties on request, TOCHA_CPU_CACHE=0 turns it
-- off, and T.memory_stats / T.empty_cache speak for either device.
local T = require "tocha"
local nn, F = T.nn, T.nn.functional
local errors = T.testing.assert_raises
local tocha_bin = arg and arg[-1] or "./build/tocha"

local function need_cache()
  if not T.cpu.memory_stats().caching then skip("the CPU allocator caches nothing here (TOCHA_CPU_CACHE=0 or a sanitizer build)") end
end

-- a small model's training step: two convolutions, a linear layer, SGD; and a 36 MiB
-- temporary, which glibc would map afresh (and the kernel zero page by page) at every step
local function training_step()
  T.manual_seed(0)
  local conv1, conv2 = nn.Conv2d(3, 16, 3, { padding = 1 }), nn.Conv2d(16, 16, 3, { padding = 1 })
  local lin = nn.Linear(16 * 16 * 16, 10)
  local params = {}
  for _, m in ipairs { conv1, conv2, lin } do
    for _, p in ipairs(m:parameters()) do params[#params + 1] = p end
  end
  local opt = T.optim.SGD(params, { lr = 1e-3 })
  local x, y = T.randn({ 8, 3, 16, 16 }), T.randn({ 8, 10 })
  return function()
    opt:zero_grad()
    local h = F.silu(conv2(F.silu(conv1(x))))
    local big = T.zeros({ 9 * 1024 * 1024 }) + 1
    local loss = F.mse_loss(lin(h:reshape(8, -1)), y) + big:sum() * 0
    loss:backward()
    opt:step()
    collectgarbage() -- the same collection points every step: the same blocks live at once
  end
end

return {
  ["cpu memory stats follow a tensor's life; the peak resets; the cache empties"] = function()
    need_cache()
    collectgarbage()
    local s0 = T.cpu.memory_stats()
    local x = T.empty({ 1000, 1000 })
    local s1 = T.cpu.memory_stats()
    assert(s1.allocated - s0.allocated >= 4e6 and s1.allocated - s0.allocated <= 4.5e6, s1.allocated - s0.allocated)
    assert(T.cpu.memory_allocated() == s1.allocated and T.cpu.max_memory_allocated() >= s1.allocated)
    assert(T.cpu.memory_reserved() >= T.cpu.memory_allocated() and T.cpu.max_memory_reserved() >= T.cpu.memory_reserved())
    assert(s1.allocs == s0.allocs + 1)
    x = nil
    collectgarbage()
    local s2 = T.cpu.memory_stats()
    assert(s2.allocated == s0.allocated and s2.frees == s0.frees + 1)
    assert(s2.cached >= 4e6 and s2.cached == s2.reserved - s2.allocated, "the freed block stays cached")
    local y = T.empty({ 999, 1001 }) -- the same size class
    local s3 = T.cpu.memory_stats()
    assert(s3.cache_hits == s2.cache_hits + 1 and s3.os_allocs == s2.os_allocs, "served from the cache")
    T.cpu.reset_peak_memory_stats()
    assert(T.cpu.max_memory_allocated() == T.cpu.memory_allocated())
    y = nil
    collectgarbage()
    T.empty_cache()
    local s4 = T.cpu.memory_stats()
    assert(s4.cached == 0 and s4.reserved == s4.allocated and s4.os_frees > s3.os_frees)
    assert(T.cpu.memory_summary():find("cached blocks: none", 1, true), T.cpu.memory_summary())
  end,

  ["a repeated training step takes no memory from the system and no page faults after warm-up"] = function()
    need_cache()
    local step = training_step()
    for _ = 1, 3 do step() end -- warm-up: the cache fills
    local s0, faults0 = T.cpu.memory_stats(), T._sys.page_faults()
    for _ = 1, 5 do step() end
    local s1, faults1 = T.cpu.memory_stats(), T._sys.page_faults()
    assert(s1.os_allocs == s0.os_allocs, string.format("%d blocks from the system after warm-up", s1.os_allocs - s0.os_allocs))
    assert(s1.cache_hits - s0.cache_hits >= 5 * 10, "every step's tensors come from the cache")
    -- without the cache the 36 MiB temporary alone faults 9,216 pages a step; Lua's own
    -- heap and the kernels' temporaries may still take a few
    assert(faults1 - faults0 < 5 * 64, string.format("%d page faults in 5 steps after warm-up", faults1 - faults0))
  end,

  -- the binding paces Lua's (generational) collector by tensor bytes: young collections free a
  -- loop's temporaries, a full one the tensors that lived long enough to be old
  ["a loop's memory stays flat without collectgarbage, temporaries and old tensors alike"] = function()
    collectgarbage()
    local x = T.randn({ 256, 256 }) -- 256 KiB
    local base = T.cpu.memory_allocated()
    local pace = math.max(2 * 2 ^ 20, base / 4) -- bytes allocated between collections (the binding's rule)
    local peak = 0
    for _ = 1, 200 do
      local y = x * 2 + 1 -- two temporaries of 256 KiB each
      peak = math.max(peak, T.cpu.memory_allocated() - base)
      assert(y.shape[1] == 256)
    end
    assert(peak <= 2 * pace + 4 * 2 ^ 20, string.format("temporaries: %.1f MiB above the inputs", peak / 2 ^ 20))
    -- tensors kept alive across many collections (a forward's activations) become old; once
    -- dropped, the next collections must still give their memory back
    for _ = 1, 10 do
      local kept = {}
      for i = 1, 40 do kept[i] = x + i end -- 10 MiB held, then dropped
      kept = nil
      for _ = 1, 20 do local _ = x * 3 end -- kept is old by now: young collections keep it
    end
    local held = T.cpu.memory_allocated() - base
    -- (without full collections: 100 MiB)
    assert(held <= 10 * 2 ^ 20 + pace + 2 * 2 ^ 20, string.format("%.0f MiB still held after the loops", held / 2 ^ 20))
  end,

  -- a forward's growth is held by the graph, not by Lua: a full collection there frees next to
  -- nothing, and the binding stops running one at every step (it ran four or more per step here)
  ["a graph's growth does not run full collections step after step"] = function()
    collectgarbage()
    local x = T.randn({ 256, 256 }, { requires_grad = true }) -- 256 KiB
    local fulls -- set by the finalizer of an old object, which only a full collection runs
    local function plant_old()
      local sentinel = setmetatable({}, { __gc = function() fulls = (fulls or 0) + 1 end })
      collectgarbage("step")
      collectgarbage("step") -- survived two young collections: old
      return sentinel
    end
    -- the graph grows the bytes in use by at least 1.5 times (a full collection waits for a
    -- quarter of them at first, up to 8 times a quarter once those free little)
    local n = math.min(400, math.max(48, math.ceil(1.5 * T.cpu.memory_allocated() / 2 ^ 18)))
    local steps_with_full = 0
    for step = 1, 15 do
      plant_old() -- dropped at once: old garbage
      fulls = nil
      local y = x
      for _ = 1, n do y = y * x end -- the graph holds n products of 256 KiB
      y:sum():backward()
      x.grad = nil
      if step > 5 and fulls then steps_with_full = steps_with_full + 1 end
    end
    assert(steps_with_full <= 3, string.format("%d of 10 steps ran a full collection", steps_with_full))
  end,

  ["TOCHA_CPU_CACHE=0 gives every block back at once"] = function()
    local code = "local T = require 'tocha'; local x = T.ones({ 1000, 1000 }); x = nil; collectgarbage(); "
      .. "local s = T.cpu.memory_stats(); io.write(tostring(s.caching), ' ', s.cached, ' ', s.os_frees)"
    local p = assert(io.popen("TOCHA_CPU_CACHE=0 " .. tocha_bin .. " -e \"" .. code .. "\""))
    local out = p:read("a")
    p:close()
    assert(out == "false 0 1", out)
  end,

  ["memory_stats and empty_cache take either device and refuse others"] = function()
    local s = T.memory_stats()
    for _, k in ipairs { "allocated", "max_allocated", "reserved", "max_reserved", "cached", "allocs", "frees",
                         "cache_hits", "os_allocs", "os_frees", "ooms" } do
      assert(math.type(s[k]) == "integer", k)
    end
    assert(type(T.memory_stats("cpu").caching) == "boolean")
    assert(math.type(T.memory_stats("cuda").allocated) == "integer")
    T.empty_cache()
    T.empty_cache("cpu")
    T.empty_cache("cuda")
    errors('memory_stats: unknown device tpu %(expected "cpu" or "cuda"%)', T.memory_stats, "tpu")
    errors("empty_cache: unknown device 3", T.empty_cache, 3)
  end,
}
