-- tests/test_sweep_run.lua: `tocha sweep` end to end, with processes: two workers run every
-- trial once; a sweep killed with kill -9 continues without repeating or losing a trial; script
-- trials report through metrics.jsonl, are pruned with SIGTERM and end cleanly; crashes and
-- missing metrics fail the trial with the reason; bad sweep files fail before any trial; the
-- status, best, export and plot commands; the storage's claims, heartbeats and re-queues.
local T = require "tocha"
local json = require "tocha.json"
local storage = require "tocha.sweep.storage"
local sweep = require "tocha.sweep"

local S = T._sys
local tmpdir = T.testing.tmpdir

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("a")
  p:close()
  return s
end

local bin = capture("realpath " .. (arg and arg[-1] or "build/tocha")):gsub("%s+$", "")

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- `tocha <args>` run in dir; returns its output (stdout and stderr) and exit status
local function tocha(dir, args)
  local out = capture("cd " .. dir .. " && " .. bin .. " " .. args .. " 2>&1; echo \"rc=$?\"")
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out:gsub("rc=%d+%s*$", ""), rc
end

local function open(dir, name)
  return assert(storage.open(dir .. "/runs/" .. name .. "/sweep.db", name))
end

local function lines_of(path)
  local count, n = {}, 0
  for line in (read_file(path) or ""):gmatch("[^\n]+") do
    count[line] = (count[line] or 0) + 1
    n = n + 1
  end
  return count, n
end

-- a sweep of a Lua objective that sleeps, then notes its trial number in ends.txt
local function slow_sweep(dir, seconds)
  write_file(dir .. "/slow.lua", string.format([[
local sweep = require "tocha.sweep"
local T = require "tocha"
return sweep {
  name = "slow", root = "runs", trials = 12, strategy = "random", seed = 5,
  objective = function(trial)
    T._sys.sleep(%g)
    local f = io.open("ends.txt", "a")
    f:write(trial.number, "\n")
    f:close()
    return (trial.params.x - 0.25) ^ 2
  end,
  space = { x = sweep.uniform(-1, 1) },
}]], seconds))
end

-- a tocha.run script whose loss falls toward `floor`; it stops cleanly when asked
local CURVE = [[
local T = require "tocha"
local r = require("tocha.run") { name = "curve", config = { rate = 0.1, steps = 30, floor = 0.0, crash = false } }
local c = r.config
if c.crash and c.floor > 0.5 then error("boom: floor too high") end
local w = r:writer { flush_secs = 0.02 }
local loss
for step = 1, c.steps do
  loss = c.floor + math.exp(-c.rate * step)
  w:add_scalar("train/loss", loss, step)
  T._sys.sleep(0.01)
  if r:should_stop() then print("stopped cleanly at step " .. step); break end
end
r:finish({ ["final/loss"] = loss })
]]

return {
  ["two workers over 12 trials: every trial runs exactly once"] = function()
    local dir = tmpdir()
    slow_sweep(dir, 0.15)
    local out, rc = tocha(dir, "sweep run slow.lua --workers 2")
    assert(rc == 0, out)
    assert(out:find("12 of 12 trials"), out)
    local ends, n = lines_of(dir .. "/ends.txt")
    assert(n == 12, out)
    for i = 1, 12 do assert(ends[tostring(i)] == 1, "trial " .. i .. " ran " .. tostring(ends[tostring(i)]) .. " times") end
    local st = open(dir, "slow")
    local workers = {}
    for _, r in ipairs(st:trials()) do
      assert(r.state == "done" and r.attempts == 1 and r.run_dir == string.format("runs/slow/%04d", r.number))
      workers[r.worker] = true
    end
    st:close()
    local nw = 0
    for _ in pairs(workers) do nw = nw + 1 end
    assert(nw == 2, "trials ran on " .. nw .. " workers")
    -- running it again does nothing: the sweep is finished
    out, rc = tocha(dir, "sweep run slow.lua --workers 2")
    assert(rc == 0 and not out:find("trial %d+ done"), out)
    assert(select(2, lines_of(dir .. "/ends.txt")) == 12)
    os.execute("rm -rf " .. dir)
  end,

  ["kill -9 mid-trial, then run again: all trials finish, none finished twice, no result lost"] = function()
    local dir = tmpdir()
    slow_sweep(dir, 0.25)
    local pid = assert(S.spawn({ "sh", "-c", "cd " .. dir .. " && exec " .. bin .. " sweep run slow.lua --workers 2" },
      { log = dir .. "/first.txt" }))
    -- wait until three trials are done and two are running, then kill the sweep without warning
    local t0, before = T.clock(), nil
    while T.clock() - t0 < 20 do
      S.sleep(0.02)
      local ok, st = pcall(storage.open, dir .. "/runs/slow/sweep.db", "slow", { schema = false })
      if ok and st then
        local ok2, rows = pcall(st.trials, st)
        st:close()
        local c = { done = 0, running = 0 }
        for _, r in ipairs(ok2 and rows or {}) do c[r.state] = (c[r.state] or 0) + 1 end
        if c.done >= 3 and c.running == 2 then before = rows; break end
      end
    end
    assert(before, "the sweep did not get going: " .. tostring(read_file(dir .. "/first.txt")))
    S.kill(pid, "KILL")
    S.wait(pid, true)
    -- what the kill left is read after it: a trial seen running above may have finished before it
    local st0 = open(dir, "slow")
    before = st0:trials()
    st0:close()
    local out, rc = tocha(dir, "sweep run slow.lua --workers 2 --stale 1")
    assert(rc == 0 and out:find("12 of 12 trials"), out)
    local st = open(dir, "slow")
    local after = {}
    for _, r in ipairs(st:trials()) do after[r.number] = r end
    st:close()
    local ends = lines_of(dir .. "/ends.txt")
    for n = 1, 12 do assert(after[n] and after[n].state == "done", "trial " .. n .. " did not finish") end
    local interrupted = 0
    for _, b in ipairs(before) do
      local a = after[b.number]
      if b.state == "done" then
        -- finished before the kill: kept as it was, never run again
        assert(a.attempts == 1 and a.value == b.value and a.finished == b.finished, "trial " .. b.number .. " was repeated")
        assert(ends[tostring(b.number)] == 1)
      elseif b.state == "running" then
        interrupted = interrupted + 1
        assert(a.attempts == 2, "an interrupted trial runs again once")
        assert(read_file(a.run_dir .. ".attempt1/log.txt") or true)
      end
    end
    assert(interrupted >= 1, "no trial was running when the sweep was killed")
    for n = 1, 12 do assert((ends[tostring(n)] or 0) >= 1 and ends[tostring(n)] <= 2) end
    os.execute("rm -rf " .. dir)
  end,

  ["SIGTERM stops a sweep cleanly: running trials go back to the queue"] = function()
    local dir = tmpdir()
    slow_sweep(dir, 0.3)
    local pid = assert(S.spawn({ "sh", "-c", "cd " .. dir .. " && exec " .. bin .. " sweep run slow.lua --workers 2" },
      { log = dir .. "/first.txt" }))
    S.sleep(0.6)
    S.kill(pid, "TERM")
    local how, code = S.wait(pid, true)
    assert(how == "exited" and code == 130, tostring(how) .. " " .. tostring(code) .. ": " .. tostring(read_file(dir .. "/first.txt")))
    local st = open(dir, "slow")
    for _, r in ipairs(st:trials()) do
      assert(r.state == "done" or (r.state == "queued" and r.attempts == 0), r.state .. " " .. r.attempts)
    end
    st:close()
    local out, rc = tocha(dir, "sweep run slow.lua --workers 2")
    assert(rc == 0 and out:find("12 of 12 trials"), out)
    os.execute("rm -rf " .. dir)
  end,

  ["script trials: followed through metrics.jsonl, pruned with SIGTERM, ended cleanly; best reproduces"] = function()
    local dir = tmpdir()
    write_file(dir .. "/curve.lua", CURVE)
    write_file(dir .. "/curves.lua", [[
local sweep = require "tocha.sweep"
return sweep {
  name = "curves", script = "curve.lua", args = { "--steps", "30" },
  space = { rate = sweep.loguniform(0.05, 1), floor = sweep.uniform(0, 1) },
  metric = "final/loss", goal = "min", trials = 8, strategy = "random", seed = 2,
  prune = sweep.asha { metric = "train/loss", min_steps = 5, reduction = 2 },
}]])
    local out, rc = tocha(dir, "sweep run curves.lua --workers 2")
    assert(rc == 0, out)
    local st = open(dir, "curves")
    local rows = st:trials()
    st:close()
    local pruned = 0
    for _, r in ipairs(rows) do
      local run = dir .. "/" .. r.run_dir
      local cfg = json.read_file(run .. "/config.json")
      assert(cfg and math.abs(cfg.rate - r.params.rate) < 1e-12 and cfg.seed == r.number - 1 + 2, "the trial's config")
      if r.state == "pruned" then
        pruned = pruned + 1
        assert(r.steps < 30 and r.reason:find("not in the best 1/2"), r.reason)
        assert(read_file(run .. "/log.txt"):find("stopped cleanly at step"), "a pruned script ends through r:should_stop")
        assert(json.read_file(run .. "/meta.json").end_time, "and calls r:finish")
      else
        assert(r.state == "done" and r.steps == 30, r.state .. " " .. tostring(r.reason))
      end
    end
    assert(pruned >= 2, "no trial was pruned:\n" .. out)
    out, rc = tocha(dir, "sweep best curves.lua")
    assert(rc == 0, out)
    local value = tonumber(out:match("final/loss = (%S+)"))
    local command = out:match("reproduce: ([^\n]+)")
    assert(value and command and command:find("--floor=") and command:find("--seed="), out)
    local again = capture("cd " .. dir .. " && TOCHA_RUNS=" .. dir .. "/again " .. command .. " 2>&1")
    assert(again:find("run: " .. dir .. "/again/curve/"), again)
    local rerun = io.popen("ls -d " .. dir .. "/again/curve/*"):read("l")
    local rows2 = require("tocha.log").read(rerun)
    local last
    for _, row in ipairs(rows2) do if row["final/loss"] then last = row["final/loss"] end end
    assert(last == value, string.format("the command reproduces %s, not %s", tostring(last), tostring(value)))
    os.execute("rm -rf " .. dir)
  end,

  ["a crashed trial fails with its exit status and log; one that never reports the metric fails with that reason"] = function()
    local dir = tmpdir()
    write_file(dir .. "/curve.lua", CURVE)
    write_file(dir .. "/crash.lua", [[
local sweep = require "tocha.sweep"
return sweep {
  name = "crash", script = "curve.lua", args = { "--steps", "3", "--crash" },
  space = { floor = sweep.grid { 0.2, 0.8 } }, strategy = "grid",
  metric = "final/loss", goal = "min",
}]])
    write_file(dir .. "/nometric.lua", [[
local sweep = require "tocha.sweep"
return sweep {
  name = "nometric", objective = function(trial) return { other = 1 } end,
  space = { x = sweep.uniform(0, 1) }, trials = 2, metric = "loss",
}]])
    local out, rc = tocha(dir, "sweep run crash.lua")
    assert(rc == 0, out)
    local st = open(dir, "crash")
    local rows = st:trials()
    st:close()
    assert(rows[1].state == "done" and rows[2].state == "failed", out)
    assert(rows[2].reason:find("exited with status 1") and rows[2].reason:find("boom: floor too high"), rows[2].reason)
    assert(out:find("trial 2 failed") and out:find("boom"), out)
    out, rc = tocha(dir, "sweep run nometric.lua")
    assert(rc == 0, out)
    st = open(dir, "nometric")
    for _, r in ipairs(st:trials()) do
      assert(r.state == "failed" and r.reason:find("never reported loss"), r.reason)
    end
    st:close()
    os.execute("rm -rf " .. dir)
  end,

  ["bad sweep files fail with a clear message before any trial starts"] = function()
    local dir = tmpdir()
    write_file(dir .. "/curve.lua", CURVE)
    local function bad(fields, want)
      write_file(dir .. "/bad.lua", "local sweep = require 'tocha.sweep'\nreturn sweep { name = 'bad', " .. fields .. " }")
      local out, rc = tocha(dir, "sweep run bad.lua")
      assert(rc == 2, "exit " .. tostring(rc) .. ": " .. out)
      assert(out:find(want, 1, true), string.format("%q lacks %q", out, want))
      assert(not io.open(dir .. "/runs/bad"), "something started: " .. out)
    end
    local ok = "metric = 'final/loss', trials = 2, "
    bad(ok .. "script = 'nowhere.lua', space = { rate = 1 }", "the script nowhere.lua does not exist")
    bad(ok .. "script = 'curve.lua', space = { lr = sweep.uniform(0, 1) }", "space.lr: curve.lua has no option --lr (its options: crash, floor, name, rate, seed, steps)")
    bad(ok .. "script = 'curve.lua', space = { steps = sweep.uniform(1, 9) }", "space.steps: --steps takes integers")
    bad(ok .. "script = 'curve.lua', space = { crash = sweep.choice { 1, 2 } }", "--crash takes true or false")
    bad(ok .. "script = 'curve.lua', args = { '--epochs', '3' }, space = { rate = 1 }", "args --epochs: curve.lua has no option --epochs")
    bad("metric = 'eval/accuracy', trials = 2, script = 'curve.lua', space = { rate = 1 }", "metric \"eval/accuracy\": curve.lua never names it")
    bad(ok .. "script = 'curve.lua', space = { rate = sweep.uniform(1, 1) }", "bad.lua:2: sweep.uniform: low must be below high")
    bad(ok .. "script = 'curve.lua', space = { rate = sweep.choice {} }", "sweep.choice: needs a list of at least one value")
    bad(ok .. "script = 'curve.lua', space = { rate = sweep.lognormal(1, 2) }", "sweep.lognormal does not exist")
    write_file(dir .. "/bad.lua", "local sweep = require 'tocha.sweep'\nreturn sweep { name = 'bad', objective = print, trials = 1, space = { x = 1 } }")
    local out, rc = tocha(dir, "sweep status bad.lua --once")
    assert(rc == 2 and out:find("no storage at runs/bad/sweep.db"), out)
    out, rc = tocha(dir, "sweep frobnicate bad.lua")
    assert(rc == 2 and out:find("unknown command 'frobnicate'"), out)
    -- the same name with another space is refused rather than mixed in
    write_file(dir .. "/a.lua", "local sweep = require 'tocha.sweep'\nreturn sweep { name = 'same', objective = function(t) return t.params.x end, trials = 1, space = { x = sweep.uniform(0, 1) } }")
    write_file(dir .. "/b.lua", "local sweep = require 'tocha.sweep'\nreturn sweep { name = 'same', objective = function(t) return t.params.x end, trials = 1, space = { x = sweep.uniform(0, 2) } }")
    assert(select(2, tocha(dir, "sweep run a.lua --quiet")) == 0)
    out, rc = tocha(dir, "sweep run b.lua --quiet")
    assert(rc == 2 and out:find("was started with a different space"), out)
    os.execute("rm -rf " .. dir)
  end,

  ["status, best, export and plot read the sweep"] = function()
    local dir = tmpdir()
    write_file(dir .. "/cond.lua", [[
local sweep = require "tocha.sweep"
return sweep {
  name = "cond", trials = 10, seed = 1, metric = "score", goal = "max",
  objective = function(trial)
    local p = trial.params
    return { score = -math.abs(math.log(p.lr, 10) + 3) + (p.opt == "sgd" and p.momentum or 0), other = 1 }
  end,
  space = { lr = sweep.loguniform(1e-5, 1e-1), opt = sweep.choice { "adam", "sgd" }, ema = true,
    sweep.when("opt", "sgd", { momentum = sweep.choice { 0, 0.9 } }) },
}]])
    assert(select(2, tocha(dir, "sweep run cond.lua --quiet")) == 0)
    local out, rc = tocha(dir, "sweep status cond.lua --once")
    assert(rc == 0, out)
    assert(out:find("sweep cond: 10 of 10 trials") and out:find("trial%s+lr%s+opt%s+momentum%s+state%s+score%s+best%s+steps%s+time"), out)
    local st = open(dir, "cond")
    local rows = st:trials()
    st:close()
    local best
    for _, r in ipairs(rows) do if not best or r.value > best.value then best = r end end
    out = tocha(dir, "sweep best cond.lua")
    assert(out:find("best trial " .. best.number .. " of 10") and out:find("run directory: runs/cond/" .. string.format("%04d", best.number)), out)
    assert(tocha(dir, "sweep export cond.lua --csv t.csv --json t.json"):find("wrote t.csv and t.json"))
    local csv = read_file(dir .. "/t.csv")
    local header = csv:match("^[^\n]+")
    assert(header == "trial,state,value,ema,lr,opt,momentum,seconds", header)
    local n = 0
    for line in csv:gmatch("\n([^\n]+)") do
      n = n + 1
      local fields = {}
      for x in (line .. ","):gmatch("([^,]*),") do fields[#fields + 1] = x end
      assert(#fields == 8 and fields[2] == "done" and tonumber(fields[3]) == rows[n].value and fields[4] == "true")
      assert((fields[6] == "sgd") == (fields[7] ~= ""), "momentum only with sgd")
    end
    assert(n == 10)
    local list = json.read_file(dir .. "/t.json")
    assert(#list == 10 and list[1].trial == 1 and list[1].params.lr == rows[1].params.lr and list[1].metrics.other == 1)
    out, rc = tocha(dir, "sweep plot cond.lua --out p.png")
    assert(rc == 0 and out:find("wrote p.png"), out)
    assert(read_file(dir .. "/p.png"):sub(1, 8) == "\137PNG\r\n\26\n")
    -- the same file and seed, run afresh elsewhere, propose the same trials
    local dir2 = tmpdir()
    write_file(dir2 .. "/cond.lua", read_file(dir .. "/cond.lua"))
    assert(select(2, tocha(dir2, "sweep run cond.lua --quiet")) == 0)
    local st2 = open(dir2, "cond")
    for i, r in ipairs(st2:trials()) do assert(json.encode(r.params) == json.encode(rows[i].params), "trial " .. i .. " differs") end
    st2:close()
    os.execute("rm -rf " .. dir2)
    os.execute("rm -rf " .. dir)
  end,

  ["storage: a trial whose worker stopped is queued again, up to retries, then failed"] = function()
    local dir = tmpdir()
    local s = sweep { name = "st", objective = function() return 0 end, trials = 3, strategy = "random", retries = 1,
      stale_after = 0.2, space = { x = sweep.uniform(0, 1) } }
    local st = assert(storage.open(dir .. "/s.db", "st"))
    st:register(s:definition())
    local function propose() return { x = 0.5 } end
    local remote = { id = "elsewhere:1", host = "elsewhere", pid = 1 }
    local here = { id = "here:2", host = "here", pid = 2 }
    local t = st:claim(remote, s, propose)
    assert(t.number == 1 and t.attempts == 1)
    -- fresh: the other worker's trial is left alone
    assert(st:claim(here, s, propose).number == 2)
    S.sleep(0.3) -- both heartbeats are stale now; `here` keeps its trial alive
    assert(st:heartbeat(st:trial(2), here))
    local again = st:claim(here, s, propose)
    assert(again.number == 1 and again.attempts == 2, "the stale trial comes back first")
    assert(not st:heartbeat(t, remote), "the first worker has lost it")
    assert(not st:finish(t, remote, "done", { value = 1 }), "and cannot record a result for it")
    S.sleep(0.3)
    assert(st:heartbeat(st:trial(2), here))
    local third = st:claim(here, s, propose)
    assert(third.number == 3)
    local r1 = st:trial(1)
    assert(r1.state == "failed" and r1.reason:find("no retries left"), r1.state .. " " .. tostring(r1.reason))
    assert(st:finish(st:trial(2), here, "done", { value = 0.5, seconds = 1 }))
    assert(st:release(third, here))
    local q = st:trial(3)
    assert(q.state == "queued" and q.attempts == 0)
    st:close()
    os.execute("rm -rf " .. dir)
  end,

  ["the database binding: parameters, types, NULLs and errors"] = function()
    local dir = tmpdir()
    local db = assert(T._db.open(dir .. "/t.db"))
    assert(db:kind() == "sqlite")
    db:exec("CREATE TABLE t (a BIGINT, b DOUBLE PRECISION, c TEXT)")
    local _, changed = db:query("INSERT INTO t VALUES (?, ?, ?), (?, ?, ?)", { n = 6, 1, 0.25, "x", 2, nil, "it's" })
    assert(changed == 2)
    local rows = db:query("SELECT a, b, c FROM t WHERE a >= ? ORDER BY a", { 1 })
    assert(#rows == 2 and rows[1].a == 1 and math.type(rows[1].a) == "integer" and rows[1].b == 0.25 and rows[2].b == nil and rows[2].c == "it's")
    T.testing.assert_raises("syntax error", db.query, db, "SELEC 1")
    T.testing.assert_raises("1 parameters given, the statement has 2", db.query, db, "SELECT ?, ?", { 1 })
    T.testing.assert_raises("parameter 1 is a table", db.query, db, "SELECT ?", { {} })
    db:close()
    T.testing.assert_raises("database is closed", db.query, db, "SELECT 1")
    local none, err = T._db.open(dir .. "/no/such/dir/x.db")
    assert(not none and err:find("cannot open"))
    local pg, perr = T._db.open("postgresql://nobody@127.0.0.1:1/none")
    assert(not pg and perr:find("cannot connect"))
    os.execute("rm -rf " .. dir)
  end,
}
