-- bench/sweep.lua: tocha's sweeps against Optuna (bench/sweep_optuna.py, run by this script).
--   search quality: median best of TPE (default options) over SEEDS seeds at TRIALS trials on
--     Branin and Hartmann-6, against Optuna's default TPESampler; ratio = Optuna's distance to
--     the minimum / tocha's (> 1: tocha gets closer)
--   overhead: N no-op trials on 4 workers with SQLite storage (tocha: worker processes, a
--     process per trial; Optuna: 4 threads), in alternating rounds; seconds per trial
--   status: `tocha sweep status --once` on a 10,000-trial database, against the 0.5 s goal
--     ./build/tocha bench/sweep.lua        (SEEDS=20 TRIALS=40 N=500 ROUNDS=3 STATUS=10000)
local T = require "tocha"
local strategies = require "tocha.sweep.strategies"
local storage = require "tocha.sweep.storage"
local rng = require "tocha.sweep.rng"
local functions = require "tocha.sweep.functions"
local json = require "tocha.json"

local SEEDS = tonumber(os.getenv("SEEDS") or "20")
local TRIALS = tonumber(os.getenv("TRIALS") or "40")
local N = tonumber(os.getenv("N") or "500")
local ROUNDS = tonumber(os.getenv("ROUNDS") or "3")
local STATUS = tonumber(os.getenv("STATUS") or "10000")
local bin = arg[-1]

local function capture(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("a")
  p:close()
  return s
end

local function median(t)
  local s = table.move(t, 1, #t, 1, {})
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local dir = T.testing.tmpdir()
local rows = {}
local function row(name, tocha, peer, unit, ratio, note)
  rows[#rows + 1] = string.format("%-44s %12s %12s %8s   %s", name, tocha .. unit, peer .. unit, ratio, note)
end

-- search quality: the same loop a sweep runs, in one process (as Optuna's study does)
local quality = {}
for _, name in ipairs({ "branin", "hartmann6" }) do
  local fn = functions[name]
  local tpe, random = {}, {}
  for seed = 0, SEEDS - 1 do
    tpe[#tpe + 1] = functions.minimize(fn, strategies.resolve("tpe"), seed, TRIALS)
    random[#random + 1] = functions.minimize(fn, strategies.resolve("random"), seed, TRIALS)
  end
  quality[name] = { tpe = median(tpe), random = median(random), minimum = fn.minimum }
end
local peer = json.decode(capture(string.format("python3 bench/sweep_optuna.py search %d %d", SEEDS, TRIALS)))
for _, name in ipairs({ "branin", "hartmann6" }) do
  local q, o = quality[name], peer[name].median
  row(string.format("%s: median best, %d seeds x %d trials", name, SEEDS, TRIALS), string.format("%.4f", q.tpe),
    string.format("%.4f", o), "", string.format("%.2fx", (o - q.minimum) / (q.tpe - q.minimum)),
    string.format("minimum %.4f; tocha random search %.4f", q.minimum, q.random))
end

-- overhead: no-op trials, tocha and Optuna in alternating rounds
local f = assert(io.open(dir .. "/noop.lua", "w"))
f:write(string.format([[
local sweep = require "tocha.sweep"
return sweep { name = "noop", objective = function(trial) return trial.params.x end,
  space = { x = sweep.uniform(0, 1) }, trials = %d, strategy = "random", root = %q }]], N, dir .. "/runs"))
f:close()
local ours, theirs = {}, {}
for round = 1, ROUNDS do
  os.execute("rm -rf " .. dir .. "/runs " .. dir .. "/optuna.db")
  local t0 = T.clock()
  local out = capture(bin .. " sweep run " .. dir .. "/noop.lua --workers 4 --quiet 2>&1")
  ours[round] = (T.clock() - t0) / N
  assert(out:find(N .. " of " .. N .. " trials"), out)
  theirs[round] = tonumber(capture(string.format("python3 bench/sweep_optuna.py overhead %d 4 %s/optuna.db", N, dir))) / N
end
local function ms_list(t)
  local out = {}
  for i, v in ipairs(t) do out[i] = string.format("%.1f", v * 1000) end
  return table.concat(out, "/")
end
local mo, mt = median(ours), median(theirs)
row(string.format("%d no-op trials, 4 workers, SQLite: per trial", N), string.format("%.1f", mo * 1000),
  string.format("%.1f", mt * 1000), " ms", string.format("%.2fx", mt / mo),
  string.format("goal < 20 ms; Optuna on 4 threads; rounds: tocha %s, Optuna %s", ms_list(ours), ms_list(theirs)))

-- status on a large sweep: trials written straight into a storage
f = assert(io.open(dir .. "/big.lua", "w"))
f:write(string.format([[
local sweep = require "tocha.sweep"
return sweep { name = "big", objective = function(trial) return trial.params.lr end, trials = %d, root = %q,
  space = { lr = sweep.loguniform(1e-5, 1e-1), batch = sweep.choice { 16, 32, 64 }, warmup = sweep.int(0, 500) } }]],
  STATUS, dir .. "/runs"))
f:close()
local sw = assert(require("tocha.sweep").load(dir .. "/big.lua"))
local st = assert(storage.open(dir .. "/runs/big/sweep.db", "big"))
st:register(sw:definition())
st:transaction(function()
  local r = rng.new(0)
  for n = 1, STATUS do
    local p = strategies.resolve("random"):suggest(sw.space, {}, r)
    st:query("INSERT INTO tocha_trials (sweep, number, state, params, seed, value, attempts, seconds, steps, started, finished) " ..
      "VALUES ('big', ?, 'done', ?, ?, ?, 1, ?, 100, 0, 1)", { n, json.encode(p), n, r:random(), 10 * r:random() })
  end
end)
st:close()
local times = {}
for round = 1, ROUNDS do
  local t0 = T.clock()
  local out = capture(bin .. " sweep status " .. dir .. "/big.lua --once 2>&1")
  times[round] = T.clock() - t0
  assert(out:find(STATUS .. " of " .. STATUS .. " trials"), out)
end
local ms = median(times)
row(string.format("tocha sweep status --once, %d trials", STATUS), string.format("%.3f", ms), "0.5", " s",
  string.format("%.2fx", 0.5 / ms), "the goal (no peer); the whole command, process start included")

print(string.format("%-44s %12s %12s %8s   %s", "benchmark", "tocha", "peer", "ratio", "notes (ratio > 1: tocha is better)"))
for _, r in ipairs(rows) do print(r) end
os.execute("rm -rf " .. dir)
