-- test_cuda_runtime.lua: the cuda device's runtime: T.cuda.*, T.backends.*, copies between the
-- host and the GPU (every dtype, strided and broadcast sources, dtype changes, in-place writes
-- through views), pinned memory and the data loader's pin_memory, the caching allocator's
-- stats, empty_cache, the summary, and out of memory. Without a GPU (or without CUDA) the
-- checks of how everything degrades run instead; with one (or under `make EMU=1`) the rest.
local T = require "tocha"
local errors = T.testing.assert_raises

local DTYPES = { "f32", "f64", "f16", "bf16", "i32", "i64", "u8", "bool" }
local FLOATS = { f32 = true, f64 = true, f16 = true, bf16 = true }

local function need_gpu()
  if not T.cuda.is_available() then skip("cuda is not available") end
end

-- TOCHA_CUDA_NO_CACHE=1 (set for compute-sanitizer): the allocator caches nothing
local function need_cache()
  if os.getenv("TOCHA_CUDA_NO_CACHE") == "1" then skip("TOCHA_CUDA_NO_CACHE=1: the allocator caches nothing") end
end

-- equal as IEEE values (NaN matches NaN), over nested lists
local function same(a, b, where)
  where = where or ""
  if type(a) == "table" then
    assert(type(b) == "table" and #a == #b, "length differs at " .. where)
    for i = 1, #a do same(a[i], b[i], where .. "[" .. i .. "]") end
    return
  end
  if a ~= a and b ~= b then return end
  if a ~= b then error(string.format("%s: %s vs %s", where, tostring(a), tostring(b)), 2) end
end

-- values every dtype holds exactly, with specials where the dtype has them
local function sample(dt, shape)
  local x = T.arange(0, 24):reshape(2, 3, 4) - 11
  if shape then x = T.arange(0, shape[1] * shape[2]):reshape(shape[1], shape[2]) - 7 end
  if dt == "u8" then x = x:abs() end
  x = x:to(dt)
  if FLOATS[dt] then
    local flat = x:view(-1)
    flat[2] = 0 / 0; flat[3] = math.huge; flat[4] = -math.huge; flat[5] = 0.5
  end
  return x
end

local tests = {}

---------------------------------------------------------------------------------------------
-- any build
---------------------------------------------------------------------------------------------
function tests.backends_flags_set_and_get()
  local tf32, bench = T.backends.allow_tf32(), T.backends.cudnn_benchmark()
  assert(type(tf32) == "boolean" and type(bench) == "boolean")
  assert(T.backends.allow_tf32(true) == tf32, "the setter returns the previous value")
  assert(T.backends.allow_tf32() == true)
  assert(T.backends.allow_tf32(false) == true)
  assert(T.backends.allow_tf32() == false)
  assert(T.backends.cudnn_benchmark(true) == bench)
  assert(T.backends.cudnn_benchmark() == true)
  errors("boolean expected", T.backends.allow_tf32, 1)
  T.backends.allow_tf32(tf32)
  T.backends.cudnn_benchmark(bench)
end

function tests.memory_api_returns_numbers()
  for _, f in ipairs { "memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved" } do
    assert(math.type(T.cuda[f]()) == "integer", f)
  end
  local s = T.cuda.memory_stats()
  for _, k in ipairs { "allocated", "reserved", "max_allocated", "max_reserved", "cached", "pinned_allocated",
                       "pinned_reserved", "allocs", "frees", "cache_hits", "driver_allocs", "driver_frees", "ooms" } do
    assert(math.type(s[k]) == "integer", k)
  end
  assert(type(T.cuda.memory_summary()) == "string")
  T.cuda.empty_cache()
  T.cuda.reset_peak_memory_stats()
  assert(math.type(T.cuda.device_count()) == "integer")
end

function tests.without_gpu_everything_degrades()
  if T.cuda.is_available() then skip("cuda is available") end
  assert(T.cuda.is_available() == false and T.cuda.device_count() == 0)
  local x = T.randn(3)
  errors("not available", function() return x:to("cuda") end)
  errors("not available", T.zeros, { 2 }, { device = "cuda" })
  errors("not available", T.cuda.synchronize)
  errors("not available", T.cuda.get_device_name)
  errors("pin_memory", function() return x:pin_memory() end)
  assert(x:is_pinned() == false)
  assert(T.cuda.memory_allocated() == 0 and T.cuda.memory_reserved() == 0)
  assert(T.cuda.max_memory_allocated() == 0 and T.cuda.memory_stats().allocs == 0)
  assert(T.cuda.memory_summary():find("not available", 1, true))
  T.cuda.empty_cache() -- nothing to do, no error
  -- and the CPU keeps working after the failed calls: they left no error behind
  assert(math.abs((x + 1):sum():item() - (x:sum():item() + 3)) < 1e-5)
end

function tests.data_loader_pin_memory()
  local data = require "tocha.data"
  local items = {}
  for i = 1, 5 do items[i] = { x = T.full({ 2, 3 }, i), y = i } end
  local loader = data.DataLoader(data.wrap(items), { batch_size = 2, pin_memory = true })
  local n = 0
  for batch in loader() do
    n = n + 1
    assert(T.is_tensor(batch.x) and batch.x.device == "cpu")
    assert(batch.x:is_pinned() == T.cuda.is_available(), "pinned exactly when cuda is available")
    assert(batch.x[1][1][1]:item() == 2 * n - 1)
    if T.cuda.is_available() then same(batch.x:to("cuda"):tolist(), batch.x:tolist()) end
  end
  assert(n == 3)
  errors("pin_memory must be a boolean", data.DataLoader, data.wrap(items), { pin_memory = 1 })
end

---------------------------------------------------------------------------------------------
-- with a GPU (or the emulator)
---------------------------------------------------------------------------------------------
function tests.device_queries()
  need_gpu()
  assert(T.cuda.device_count() >= 1)
  local name = T.cuda.get_device_name()
  assert(type(name) == "string" and #name > 0)
  assert(T.cuda.get_device_name(0) == name and T.cuda.get_device_name("cuda:0") == name)
  errors("no device", T.cuda.get_device_name, T.cuda.device_count())
  T.cuda.synchronize()
end

function tests.copies_round_trip_every_dtype()
  need_gpu()
  for _, dt in ipairs(DTYPES) do
    local x = sample(dt)
    local g = x:to("cuda")
    assert(g.device == "cuda:0" and g.dtype == dt, dt)
    same(g:to("cpu"):tolist(), x:tolist(), dt)
    same(g:tolist(), x:tolist(), dt .. " tolist")
    -- strided sources on both sides: a transpose, a narrowed view with an offset, a broadcast
    same(x:transpose(1, 3):to("cuda"):tolist(), x:transpose(1, 3):tolist(), dt .. " transposed up")
    same(g:transpose(1, 3):to("cpu"):tolist(), x:transpose(1, 3):tolist(), dt .. " transposed down")
    same(x:narrow(3, 2, 2):to("cuda"):tolist(), x:narrow(3, 2, 2):tolist(), dt .. " narrowed up")
    same(g:narrow(2, 2, 2):to("cpu"):tolist(), x:narrow(2, 2, 2):tolist(), dt .. " narrowed down")
    local row = x[1][1]:unsqueeze(1)
    same(row:expand(3, 4):to("cuda"):tolist(), row:expand(3, 4):tolist(), dt .. " broadcast up")
    same(g[1][1]:unsqueeze(1):expand(3, 4):to("cpu"):tolist(), row:expand(3, 4):tolist(), dt .. " broadcast down")
  end
end

function tests.copies_change_dtype_as_the_cpu_does()
  need_gpu()
  for _, from in ipairs(DTYPES) do
    local x = sample(from)
    local g = x:to("cuda")
    for _, to in ipairs(DTYPES) do
      local want = x:to(to):tolist()
      local what = from .. " -> " .. to
      same(x:to("cuda", to):to("cpu"):tolist(), want, what .. " (up)")
      same(g:to("cpu", to):tolist(), want, what .. " (down)")
      same(x:transpose(1, 2):to("cuda", to):to("cpu"):tolist(), x:transpose(1, 2):to(to):tolist(), what .. " strided up")
      same(g:transpose(1, 2):to("cpu", to):tolist(), x:transpose(1, 2):to(to):tolist(), what .. " strided down")
    end
  end
end

function tests.copies_of_large_and_empty_tensors()
  need_gpu()
  local x = T.randn(600, 700) -- past a 1 MiB size class
  same(x:to("cuda"):to("cpu"):tolist(), x:tolist())
  local e = T.zeros({ 0, 3 }):to("cuda")
  assert(e.device == "cuda:0" and e:numel() == 0 and #e:to("cpu"):tolist() == 0)
  local big = T.tensor({ 2 ^ 53 + 1, -(2 ^ 62) }, { dtype = "i64" })
  assert(big:to("cuda"):tolist()[1] == 2 ^ 53 + 1 and big:to("cuda"):tolist()[2] == -(2 ^ 62))
end

function tests.in_place_writes_across_devices()
  need_gpu()
  -- a strided cuda destination from a CPU source of another dtype
  local g = T.zeros({ 3, 4 }, { device = "cuda", dtype = "f64" })
  local src = T.arange(0, 12, { dtype = "i32" }):reshape(4, 3)
  g:t():copy_(src)
  same(g:to("cpu"):tolist(), src:t():to("f64"):tolist(), "copy_ into a transposed cuda view")
  g[2] = T.tensor({ 9, 8, 7, 6 })
  assert(g[2][3]:item() == 7 and g[1][2]:item() == 3)
  -- a strided CPU destination from a cuda source
  local h = T.zeros({ 4, 3 }, { dtype = "f16" })
  h:t():copy_(T.arange(0, 12):reshape(3, 4):to("cuda"))
  same(h:tolist(), T.arange(0, 12):reshape(3, 4):t():to("f16"):tolist(), "copy_ into a transposed CPU view")
  -- broadcasting copy_ from the other device
  local b = T.zeros({ 2, 3 }, { device = "cuda" })
  b:copy_(T.tensor({ 1, 2, 3 }))
  same(b:tolist(), { { 1, 2, 3 }, { 1, 2, 3 } })
end

function tests.item_tolist_and_printing_read_the_gpu()
  need_gpu()
  local g = T.tensor({ { 1.5, -2 }, { 3, 4 } }):to("cuda")
  assert(g[1][1]:item() == 1.5 and g[2][2]:item() == 4)
  same(g:tolist(), { { 1.5, -2 }, { 3, 4 } })
  local s = tostring(g)
  assert(s:find("1.5000", 1, true) and s:find("device=cuda:0", 1, true), s)
  assert(T.tensor({ true, false }):to("cuda"):tolist()[1] == true)
  assert(T.tensor({ 7 }, { dtype = "i64" }):to("cuda"):item() == 7)
end

function tests.pin_memory()
  need_gpu()
  local x = T.randn(4, 5)
  local p = x:pin_memory()
  assert(p:is_pinned() and not x:is_pinned() and p.device == "cpu")
  same(p:tolist(), x:tolist())
  assert(p:pin_memory():storage_id() == p:storage_id(), "pinning a pinned tensor returns it")
  local v = x:t():pin_memory() -- a strided source pins contiguous
  assert(v:is_pinned() and v:is_contiguous())
  same(v:tolist(), x:t():tolist())
  errors("only CPU tensors", function() return x:to("cuda"):pin_memory() end)
  -- an asynchronous copy from pinned memory keeps its source alive until it is done (first the
  -- pinned garbage and staging buffers of earlier tests go back, so that before holds only p and v)
  T.cuda.synchronize()
  collectgarbage()
  local before = T.cuda.memory_stats().pinned_allocated
  local q = T.arange(0, 1000, { dtype = "f64" }):pin_memory()
  local g = q:to("cuda")
  local gi = q:to("cuda", "i32") -- converted on the GPU
  local gh = q:to("cuda", "f16") -- converted on the host, into pinned staging
  assert(T.cuda.memory_stats().pinned_allocated > before)
  q = nil -- luacheck: ignore
  collectgarbage()
  same(g:to("cpu"):tolist(), T.arange(0, 1000, { dtype = "f64" }):tolist())
  same(gi:to("cpu"):tolist(), T.arange(0, 1000, { dtype = "i32" }):tolist())
  same(gh:to("cpu"):tolist(), T.arange(0, 1000, { dtype = "f16" }):tolist())
  T.cuda.synchronize()
  collectgarbage()
  assert(T.cuda.memory_stats().pinned_allocated == before, "pinned blocks go back once their copies are done")
  -- pinned memory is cached and reused
  local r0 = T.cuda.memory_stats().pinned_reserved
  for _ = 1, 3 do
    local t = T.randn(64, 64):pin_memory()
    t = nil -- luacheck: ignore
    collectgarbage()
  end
  assert(T.cuda.memory_stats().pinned_reserved <= r0 + 64 * 64 * 4)
end

function tests.memory_stats_follow_tensors()
  need_gpu()
  need_cache()
  collectgarbage()
  T.cuda.synchronize()
  local s0 = T.cuda.memory_stats()
  local x = T.empty({ 1024, 1024 }, { device = "cuda" }) -- 4 MiB: a size class of its own
  local s1 = T.cuda.memory_stats()
  assert(s1.allocated == s0.allocated + 4 * 1024 * 1024, "allocated grows by the block")
  assert(s1.reserved >= s1.allocated and s1.max_allocated >= s1.allocated)
  assert(T.cuda.memory_allocated() == s1.allocated and T.cuda.memory_reserved() == s1.reserved)
  x = nil -- luacheck: ignore
  collectgarbage()
  local s2 = T.cuda.memory_stats()
  assert(s2.allocated == s0.allocated, "freed")
  assert(s2.reserved == s1.reserved, "the block stays cached")
  assert(s2.cached == s2.reserved - s2.allocated and s2.cached >= 4 * 1024 * 1024)
  local summary = T.cuda.memory_summary()
  for _, w in ipairs { "allocated", "reserved", "cached", "4.00 MiB x" } do
    assert(summary:find(w, 1, true), "summary lacks '" .. w .. "':\n" .. summary)
  end
  -- the same size comes from the cache, without a driver call
  local y = T.empty({ 1024, 1024 }, { device = "cuda" })
  local s3 = T.cuda.memory_stats()
  assert(s3.cache_hits == s2.cache_hits + 1 and s3.driver_allocs == s2.driver_allocs)
  y = nil -- luacheck: ignore
  collectgarbage()
  T.cuda.empty_cache()
  local s4 = T.cuda.memory_stats()
  assert(s4.reserved == s4.allocated and s4.cached == 0, "empty_cache gives every cached block back")
  assert(s4.driver_frees > s3.driver_frees)
  T.cuda.reset_peak_memory_stats()
  assert(T.cuda.max_memory_allocated() == T.cuda.memory_allocated())
  assert(T.cuda.max_memory_reserved() == T.cuda.memory_reserved())
end

-- (without the cache there is none to empty, and compute-sanitizer would count the deliberately
-- failed cudaMalloc as an error)
function tests.out_of_memory_collects_then_raises()
  need_gpu()
  need_cache()
  collectgarbage()
  collectgarbage("stop") -- the garbage below must still be there when the allocation fails
  local function make_garbage() -- 3 MiB that nothing references
    local g = {}
    for i = 1, 3 do g[i] = T.empty({ 256, 1024 }, { device = "cuda" }) end
  end
  local ok, err = pcall(function()
    make_garbage()
    local before = T.cuda.memory_stats()
    local ok2, e = pcall(T.empty, { 2 ^ 40 }, { device = "cuda" })
    assert(not ok2, "a 4 TiB tensor was allocated")
    local after = T.cuda.memory_stats()
    return { e = tostring(e), before = before, after = after }
  end)
  collectgarbage("restart")
  assert(ok, err)
  local e, before, after = err.e, err.before, err.after
  for _, w in ipairs { "out of memory", "4.00 TiB", "in use", "cached" } do
    assert(e:find(w, 1, true), "message lacks '" .. w .. "': " .. e)
  end
  assert(after.ooms == before.ooms + 1)
  -- (a dead register may still hold the last of the three)
  assert(after.allocated <= before.allocated - 2 * 1024 * 1024, "the hook's collection freed the garbage")
  assert(after.reserved == after.allocated, "the cache was emptied")
  -- and the device works on
  same(T.ones(3, { device = "cuda" }):tolist(), { 1, 1, 1 })
end

function tests.debug_mode_synchronizes_and_runs()
  need_gpu()
  local exe = arg and arg[-1]
  if not exe or not io.popen then skip("no interpreter path to start TOCHA_DEBUG=1 with") end
  local p = io.popen("TOCHA_DEBUG=1 " .. exe .. [[ -e 'local T = require "tocha"
    local x = T.arange(0, 6):to("cuda"):reshape(2, 3)
    io.write("result=", (x * 2 + 1):to("cpu"):sum():item(), "\n")' 2>&1]])
  local out = p:read("a")
  p:close()
  assert(out:match("result=36"), "TOCHA_DEBUG=1 run printed: " .. out)
end

return tests
