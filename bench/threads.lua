-- bench/threads.lua: where a second thread starts to pay, per kind of CPU loop. Each case
-- runs at sizes from 4K to 2M elements on 1 and on 2 threads (alternating, best of REPS) with
-- every loop allowed to go parallel (bench/threads.sh sets TOCHA_PAR_MIN=0), and prints the
-- speed-up of 2 threads and, per case, the smallest work (core/cpu/cpu.h counts it) from which
-- 2 threads beat 1 by a quarter at every larger size. core/cpu/threads.c keeps, per kind, the
-- largest of its cases' minima.
--   sh bench/threads.sh            (REPS=30; CASES=add,sum: some cases)
local T = require "tocha"
local F = require "tocha.nn.functional"
local timing = require "timing"

local REPS = tonumber(os.getenv("REPS") or "30")
local GAIN = 1.25

-- each case: name, kind, work for n elements, a function of n returning the call to time
local CASES = {
  { "add", "memory", function(n) return 3 * n end, function(n)
    local a, b = T.randn({ n }), T.randn({ n })
    return function() return a + b end
  end },
  { "add_bcast", "memory", function(n) return 2 * n end, function(n)
    local a, b = T.randn({ n // 1024, 1024 }), T.randn({ n // 1024, 1 })
    return function() return a + b end
  end },
  { "copy_strided", "memory", function(n) return 2 * n end, function(n)
    local x = T.randn({ n // 64, 64 }):t()
    return function() return x:contiguous() end
  end },
  { "copy", "memory", function(n) return 2 * n end, function(n)
    local x = T.randn({ n // 1024, 1024 })
    return function() return x:clone() end
  end },
  { "cat", "memory", function(n) return n end, function(n)
    local a, b = T.randn({ 8, n // 16 }), T.randn({ 8, n // 16 })
    return function() return T.cat({ a, b }, 2) end
  end },
  { "exp", "compute", function(n) return n end, function(n)
    local x = T.randn({ n })
    return function() return x:exp() end
  end },
  { "quick_gelu", "compute", function(n) return n end, function(n)
    local x = T.randn({ n })
    return function() return F.quick_gelu(x) end
  end },
  { "sum", "memory", function(n) return n end, function(n)
    local x = T.randn({ n // 1024, 1024 })
    return function() return x:sum() end
  end },
  { "sum_dim0", "memory", function(n) return n end, function(n)
    local x = T.randn({ n // 256, 256 })
    return function() return x:sum(1) end
  end },
  { "upsample", "memory", function(n) return 5 * n end, function(n)
    local x = T.randn({ n // 4096, 64, 8, 8 })
    return function() return F.interpolate(x, { scale_factor = 2, mode = "nearest" }) end
  end },
  { "softmax", "compute", function(n) return n end, function(n)
    local x = T.randn({ n // 64, 64 })
    return function() return F.softmax(x, 2) end
  end },
  { "layer_norm", "compute", function(n) return n end, function(n)
    local x, w, b = T.randn({ n // 64, 64 }), T.randn({ 64 }), T.randn({ 64 })
    return function() return F.layer_norm(x, { 64 }, w, b) end
  end },
  { "randn", "compute", function(n) return n end, function(n)
    return function() return T.randn({ n }) end
  end },
}

local function selected(name)
  local want = os.getenv("CASES")
  if not want or want == "" then return true end
  for c in want:gmatch("[^,]+") do if name == c then return true end end
  return false
end

local SIZES = {}
for k = 12, 21 do SIZES[#SIZES + 1] = 1 << k end

local function fmt_work(w)
  if w >= 1 << 20 then return string.format("%gM", w / (1 << 20)) end
  return string.format("%gK", w / 1024)
end

print(string.format("speed-up of 2 threads over 1 (best of %d, every loop parallel: TOCHA_PAR_MIN=%s)", REPS,
  os.getenv("TOCHA_PAR_MIN") or "unset"))
local head = { string.format("%-13s %-8s", "case", "kind") }
for _, n in ipairs(SIZES) do head[#head + 1] = string.format("%6s", fmt_work(n)) end
print(table.concat(head, " ") .. "   min work")
T.no_grad(function()
  for _, case in ipairs(CASES) do
    local name, kind, work, make = case[1], case[2], case[3], case[4]
    if not selected(name) then goto continue end
    local row, gains = { string.format("%-13s %-8s", name, kind) }, {}
    for i, n in ipairs(SIZES) do
      local fn = make(n)
      local reps = math.max(5, REPS * 65536 // math.max(n, 65536))
      local best = { math.huge, math.huge }
      for _ = 1, 3 do -- alternate so both see the same load
        for threads = 1, 2 do
          T.set_num_threads(threads)
          best[threads] = math.min(best[threads], (timing.best_of(fn, reps)))
        end
      end
      gains[i] = best[1] / best[2]
      row[#row + 1] = string.format("%6.2f", gains[i])
      collectgarbage()
    end
    local from
    for i = #SIZES, 1, -1 do
      if gains[i] < GAIN then break end
      from = i
    end
    row[#row + 1] = "   " .. (from and fmt_work(work(SIZES[from])) or "never")
    print(table.concat(row, " "))
    io.stdout:flush()
    ::continue::
  end
end)
