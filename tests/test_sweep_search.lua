-- tests/test_sweep_search.lua: how well a sweep searches. TPE against random search on Branin
-- and Hartmann-6 (median best of 10 seeds, 40 trials each), and the pruners (ASHA, Hyperband,
-- median) on synthetic learning curves, run as real sweeps whose Lua objectives report each step.
local T = require "tocha"
local sweep = require "tocha.sweep"
local strategies = require "tocha.sweep.strategies"
local storage = require "tocha.sweep.storage"
local functions = require "tocha.sweep.functions"
local space = require "tocha.sweep.space"
local rng = require "tocha.sweep.rng"
local cli = require "tocha.cli.sweep"

local tmpdir = T.testing.tmpdir

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local function compare(name)
  local fn = functions[name]
  local rand, tpe = {}, {}
  for seed = 1, 10 do
    rand[seed] = functions.minimize(fn, strategies.resolve("random"), seed, 40)
    tpe[seed] = functions.minimize(fn, strategies.resolve("tpe"), seed, 40)
  end
  local r, t = median(rand), median(tpe)
  print(string.format("  %s, median best of 10 seeds at 40 trials: tpe %.4f, random %.4f (minimum %.4f)", name, t, r, fn.minimum))
  assert(t < r, string.format("%s: TPE %.4f is not better than random search %.4f", name, t, r))
  assert(t >= fn.minimum - 1e-9)
end

-- a synthetic learning curve: the loss falls at `rate` toward `floor`
local function curve(p, step) return p.floor + math.exp(-p.rate * step / 5) end
local STEPS = 20

-- runs a sweep of 16 curves with the pruner through `tocha sweep run`, and returns its trials
local function pruned_sweep(prune)
  local dir = tmpdir()
  package.loaded["test_sweep_pruner"] = prune
  local f = assert(io.open(dir .. "/curves.lua", "w"))
  f:write([[
local sweep = require "tocha.sweep"
return sweep {
  name = "curves",
  objective = function(trial)
    local p, loss = trial.params, nil
    for step = 1, ]] .. STEPS .. [[ do
      loss = p.floor + math.exp(-p.rate * step / 5)
      if trial:report(step, loss) then break end
    end
    return loss
  end,
  space = { floor = sweep.uniform(0, 1), rate = sweep.uniform(0.5, 1.5) },
  metric = "loss", goal = "min", trials = 16, strategy = "random", seed = 3, root = "]] .. dir .. [[/runs",
  prune = require "test_sweep_pruner",
}]])
  f:close()
  local out = { write = function() end, flush = function() end }
  local errs = {}
  local err = { write = function(_, ...) for _, s in ipairs({ ... }) do errs[#errs + 1] = s end end }
  local code = cli.main({ "run", dir .. "/curves.lua", "--quiet" }, out, err)
  assert(code == 0, table.concat(errs))
  local st = assert(storage.open(dir .. "/runs/curves/sweep.db", "curves"))
  local rows = st:trials()
  local reports = st:reports()
  st:close()
  os.execute("rm -rf " .. dir)
  return rows, reports
end

local function check_pruning(rows, reports, min_pruned)
  assert(#rows == 16)
  local best, pruned = nil, 0
  for _, r in ipairs(rows) do
    r.final = curve(r.params, STEPS)
    if not best or r.final < best.final then best = r end
  end
  for _, r in ipairs(rows) do
    assert(r.state == "done" or r.state == "pruned", r.state .. ": " .. tostring(r.reason))
    local reps = reports[r.number]
    if r.state == "pruned" then
      pruned = pruned + 1
      assert(r.steps < STEPS and #reps == r.steps, "a pruned trial ran to the end")
      assert(r.final > best.final)
    else
      assert(r.steps == STEPS and math.abs(r.value - r.final) < 1e-12)
    end
    for i, rep in ipairs(reps) do assert(rep.step == i and math.abs(rep.value - curve(r.params, i)) < 1e-12) end
  end
  assert(best.state == "done", "the best trial was pruned: " .. tostring(best.reason))
  assert(pruned >= min_pruned, "only " .. pruned .. " trials were pruned")
  return pruned
end

return {
  ["tpe finds a better Branin value than random search (median of 10 seeds, 40 trials)"] = function() compare("branin") end,
  ["tpe finds a better Hartmann-6 value than random search (median of 10 seeds, 40 trials)"] = function() compare("hartmann6") end,

  ["tpe: pruned trials end its start-up and rank below finished ones, by how far they got"] = function()
    local list = space.compile({ x = sweep.uniform(0, 1) })
    local tpe = strategies.resolve(sweep.tpe { startup = 4, candidates = 64 })
    -- one finished trial near 0.9, pruned ones spread below: the model must already be in use
    -- (not random) and center on the finished trial and the pruned one that got furthest
    local history = { { number = 1, state = "done", value = 1, params = { x = 0.9 } } }
    for i, x in ipairs({ 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85 }) do
      history[#history + 1] = { number = i + 1, state = "pruned", steps = x == 0.85 and 200 or 100, params = { x = x } }
    end
    local near = 0
    for n = 1, 40 do
      local p = tpe:suggest(list, history, rng.new(7, n), { goal = "min" })
      if p.x > 0.75 then near = near + 1 end
    end
    assert(near >= 30, near .. " of 40 proposals near the best trials")
  end,

  ["the test functions have their known minima"] = function()
    local b = functions.branin.f
    for _, x in ipairs({ { -math.pi, 12.275 }, { math.pi, 2.275 }, { 9.42478, 2.475 } }) do
      assert(math.abs(b({ x1 = x[1], x2 = x[2] }) - 0.397887) < 1e-5)
    end
    local h = functions.hartmann6.f({ x1 = 0.20169, x2 = 0.150011, x3 = 0.476874, x4 = 0.275332, x5 = 0.311652, x6 = 0.6573 })
    assert(math.abs(h - functions.hartmann6.minimum) < 1e-4, h)
  end,

  ["asha stops poor trials early and keeps the best to the end"] = function()
    local rows, reports = pruned_sweep(sweep.asha { metric = "loss", min_steps = 2, reduction = 3 })
    local n = check_pruning(rows, reports, 6)
    print(string.format("  asha pruned %d of 16 trials", n))
  end,

  ["hyperband stops poor trials early and keeps the best to the end"] = function()
    local rows, reports = pruned_sweep(sweep.hyperband { metric = "loss", min_steps = 2, max_steps = STEPS, reduction = 3 })
    check_pruning(rows, reports, 3)
  end,

  ["median stopping (Optuna's rule) stops poor trials early and keeps the best to the end"] = function()
    local rows, reports = pruned_sweep(sweep.median { metric = "loss", startup = 3 })
    local n = check_pruning(rows, reports, 5)
    -- nothing is pruned before three trials have finished
    for i = 1, 3 do assert(rows[i].state == "done") end
    print(string.format("  median pruned %d of 16 trials", n))
  end,

  ["asha's rule: the best 1/reduction at each rung continue"] = function()
    local p = sweep.asha { metric = "loss", goal = "min", min_steps = 1, reduction = 2 }
    assert(table.concat(p.rungs, ",", 1, 7) == "1,2,4,8,16,32,64" and p.rungs[#p.rungs] < 1e12)
    assert(table.concat(sweep.asha { min_steps = 100, reduction = 3, max_steps = 3000 }.rungs, ",") == "100,300,900,2700")
    local function others(values)
      local out = {}
      for i, v in ipairs(values) do out[i] = { number = i + 10, state = "done", reports = { { step = 1, value = v } } } end
      return out
    end
    -- alone at the rung, or among fewer than `reduction`, a trial continues only as the best
    assert(not p:decide(p:tracker(1), { { step = 1, value = 5 } }, {}))
    assert(p:decide(p:tracker(1), { { step = 1, value = 5 } }, others({ 4 })))
    assert(not p:decide(p:tracker(1), { { step = 1, value = 3 } }, others({ 4 })))
    -- 4 at the rung: the best 2 continue
    assert(not p:decide(p:tracker(1), { { step = 1, value = 2 } }, others({ 1, 3, 4 })))
    assert(p:decide(p:tracker(1), { { step = 1, value = 3.5 } }, others({ 1, 3, 4 })))
    -- a rung is decided once per trial
    local tr = p:tracker(1)
    assert(not p:decide(tr, { { step = 1, value = 2 } }, others({ 1, 3, 4 })))
    assert(not p:decide(tr, { { step = 1, value = 2 } }, others({ 1, 1.5, 1.7, 1.8 })))
    -- goal max
    local q = sweep.asha { metric = "acc", goal = "max", min_steps = 1, reduction = 2 }
    assert(not q:decide(q:tracker(1), { { step = 1, value = 5 } }, others({ 4, 1, 2 })))
    -- window: the mean of the last values at the rung
    local w = sweep.asha { metric = "loss", goal = "min", min_steps = 3, reduction = 2, window = 3 }
    local mine = { { step = 1, value = 9 }, { step = 2, value = 0 }, { step = 3, value = 0 } }
    local other = { { number = 7, state = "done", reports = { { step = 1, value = 2 }, { step = 2, value = 2 }, { step = 3, value = 2 } } } }
    assert(w:decide(w:tracker(1), mine, other), "mean 3 against 2 at the rung")
  end,
}
