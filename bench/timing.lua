-- bench/timing.lua: what the Lua benchmarks share: the best time of a call, and the RESULT
-- line their shell drivers (bench/*.sh) collect. A benchmark script finds it beside itself
-- (the runner puts the script's directory on package.path).
local T = require "tocha"

local timing = {}

--- best_of(fn, reps, {warm = 2, collect = false}) -> the best wall time and the best CPU time
--- (all threads; steadier than the wall clock on a loaded machine) per call of fn over `reps`
--- timed calls, after `warm` untimed ones; collect = true runs the garbage collector between
--- calls, outside the timing
function timing.best_of(fn, reps, opts)
  opts = opts or {}
  for _ = 1, opts.warm or 2 do fn() end
  local wall, cpu = math.huge, math.huge
  for _ = 1, reps do
    local t0, c0 = T.clock(), os.clock()
    fn()
    wall, cpu = math.min(wall, T.clock() - t0), math.min(cpu, os.clock() - c0)
    if opts.collect then collectgarbage() end
  end
  return wall, cpu
end

--- result(name, wall, cpu): prints "RESULT name wall cpu" and flushes
function timing.result(name, wall, cpu)
  print(string.format("RESULT %s %.9g %.9g", name, wall, cpu))
  io.stdout:flush()
end

--- command(cmd, pattern) -> the number pattern captures in cmd's output (nil when missing: the
--- peer failed or is not installed), and the whole output
function timing.command(cmd, pattern)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return tonumber(out:match(pattern)), out
end

return timing
