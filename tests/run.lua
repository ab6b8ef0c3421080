-- tests/run.lua: the test runner. Runs the C unit tests (the binary given as arg[1]),
-- then every tests/test_*.lua, and ends with one line: N passed, N failed[, N skipped].
-- A test file returns a table of name -> function; a test skips by calling skip(reason).
-- TEST=pattern runs only the tests whose "file: name" contains the pattern. A test taking more
-- than 2 s of wall time is named with a "slow" line.
local T = require "tocha"
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local filter = os.getenv("TEST")
local passed, failed, skipped = 0, 0, 0

-- C unit tests print their own "N passed, N failed" line last
if arg[1] and not filter then
  local p = io.popen(arg[1] .. " 2>&1")
  local out = p:read("a")
  p:close()
  local cp, cf = out:match("(%d+) passed, (%d+) failed%s*$")
  io.write((out:gsub("%d+ passed, %d+ failed%s*$", "")))
  if not cp then
    print("FAIL  C tests: no summary line (crashed?)")
    failed = failed + 1
  else
    passed, failed = passed + tonumber(cp), failed + tonumber(cf)
  end
end

local SKIP = {}
function skip(reason) error(setmetatable({ reason = reason }, SKIP), 0) end -- luacheck: ignore

local files = {}
local p = io.popen('ls "' .. here .. '"/test_*.lua 2>/dev/null')
for f in p:lines() do files[#files + 1] = f end
p:close()
table.sort(files)

for _, file in ipairs(files) do
  local short = file:match("([^/]*)%.lua$")
  local ok, suite = pcall(dofile, file)
  if not ok then
    print("FAIL  " .. short .. ": could not load: " .. tostring(suite))
    failed = failed + 1
  else
    local names = {}
    for name in pairs(suite) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local full = short .. ": " .. name
      if not filter or full:find(filter, 1, true) then
        T.manual_seed(0)
        local t0 = T.clock() -- wall time: os.clock sums the CPU time of every thread
        local ok2, err = xpcall(suite[name], function(e)
          if getmetatable(e) == SKIP then return e end
          return debug.traceback(tostring(e), 2)
        end)
        local dt = T.clock() - t0
        if ok2 then
          passed = passed + 1
          if dt > 2 then print(string.format("slow  %s (%.1fs)", full, dt)) end
        elseif getmetatable(err) == SKIP then
          skipped = skipped + 1
          print("skip  " .. full .. ": " .. err.reason)
        else
          failed = failed + 1
          print("FAIL  " .. full .. "\n" .. tostring(err))
        end
      end
    end
  end
  collectgarbage()
end

local line = string.format("%d passed, %d failed", passed, failed)
if skipped > 0 then line = line .. string.format(", %d skipped", skipped) end
print(line)
os.exit(failed == 0 and 0 or 1)
