-- tests/test_sweep_pg.lua: sweeps on PostgreSQL storage. Needs a server: TOCHA_TEST_PG holds
-- its URL (postgresql://user@host:port/db; .ci/run starts one and sets it); without one the
-- tests skip, saying so.
local T = require "tocha"
local storage = require "tocha.sweep.storage"

local S = T._sys
local tmpdir = T.testing.tmpdir
local URL = os.getenv("TOCHA_TEST_PG")

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("a")
  p:close()
  return s
end

local bin = capture("realpath " .. (arg and arg[-1] or "build/tocha")):gsub("%s+$", "")

local function server()
  if not URL or URL == "" then skip("TOCHA_TEST_PG is not set: no PostgreSQL server to test against (.ci/run starts one)") end
  local db, err = T._db.open(URL, { timeout = 5 })
  if not db then skip("no PostgreSQL server at TOCHA_TEST_PG: " .. err:gsub("\n.*", "")) end
  return db
end

return {
  ["postgresql: the binding's types, parameters and errors"] = function()
    local db = server()
    assert(db:kind() == "postgresql")
    local rows = db:query("SELECT CAST(? AS BIGINT) AS a, CAST(? AS DOUBLE PRECISION) AS b, CAST(? AS TEXT) AS c, " ..
      "CAST(? AS DOUBLE PRECISION) AS d, CAST(? AS TEXT) AS e, 1 = 1 AS f", { n = 5, 7, 0.1, "it's ?", 1 / 0, nil })
    local r = rows[1]
    assert(r.a == 7 and math.type(r.a) == "integer" and r.b == 0.1 and r.c == "it's ?" and r.d == math.huge and r.e == nil and r.f == true)
    T.testing.assert_raises("syntax error", db.query, db, "SELEC 1")
    db:close()
  end,

  ["postgresql: two tocha sweep run processes on one database run every trial once"] = function()
    server():close()
    local dir = tmpdir()
    local name = string.format("pg_%d_%d", os.time(), S.getpid())
    local f = assert(io.open(dir .. "/pg.lua", "w"))
    f:write(string.format([[
local sweep = require "tocha.sweep"
local T = require "tocha"
return sweep {
  name = %q, root = "runs", trials = 12, strategy = "tpe", seed = 1, metric = "loss",
  objective = function(trial)
    local loss
    for step = 1, 5 do
      loss = (trial.params.x - 0.3) ^ 2 + 1 / step
      T._sys.sleep(0.01)
      if trial:report(step, loss) then break end
    end
    local f = io.open("ends.txt", "a")
    f:write(trial.number, "\n")
    f:close()
    return loss
  end,
  space = { x = sweep.uniform(-1, 1) },
  prune = sweep.median { startup = 3 },
}]], name))
    f:close()
    local cmd = "cd " .. dir .. " && exec " .. bin .. " sweep run pg.lua --quiet --storage " .. URL
    local a = assert(S.spawn({ "sh", "-c", cmd }, { log = dir .. "/a.txt" }))
    local b = assert(S.spawn({ "sh", "-c", cmd }, { log = dir .. "/b.txt" }))
    local ha, ca = S.wait(a, true)
    local hb, cb = S.wait(b, true)
    local function log(p) return capture("cat " .. dir .. "/" .. p) end
    assert(ha == "exited" and ca == 0, log("a.txt"))
    assert(hb == "exited" and cb == 0, log("b.txt"))
    local counts = {}
    for line in log("ends.txt"):gmatch("[^\n]+") do counts[line] = (counts[line] or 0) + 1 end
    for n = 1, 12 do assert(counts[tostring(n)] == 1, "trial " .. n .. " ran " .. tostring(counts[tostring(n)]) .. " times") end
    local st = assert(storage.open(URL, name))
    local workers = {}
    for _, r in ipairs(st:trials()) do
      assert(r.state == "done" or r.state == "pruned", r.state .. " " .. tostring(r.reason))
      assert(r.attempts == 1)
      workers[r.worker] = true
    end
    local nw = 0
    for _ in pairs(workers) do nw = nw + 1 end
    assert(nw == 2, "one process ran every trial")
    local reports = st:reports()
    assert(#reports[1] == 5 and reports[1][5].step == 5)
    st:query("DELETE FROM tocha_reports WHERE sweep = ?", { name })
    st:query("DELETE FROM tocha_trials WHERE sweep = ?", { name })
    st:query("DELETE FROM tocha_sweeps WHERE name = ?", { name })
    st:close()
    os.execute("rm -rf " .. dir)
  end,
}
