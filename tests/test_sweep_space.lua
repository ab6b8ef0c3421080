-- tests/test_sweep_space.lua: tocha.sweep's sweep files without running them: every
-- distribution (draws and bounds), conditional parameters, grids, the errors a bad sweep file
-- gives (each naming the line and what was wrong), seeded proposals, user strategies.
local T = require "tocha"
local sweep = require "tocha.sweep"
local space = require "tocha.sweep.space"
local strategies = require "tocha.sweep.strategies"
local rng = require "tocha.sweep.rng"

local tmpdir = T.testing.tmpdir

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- a sweep file's text run as a chunk named demo.lua: its error, or nil
local function load_error(text)
  local chunk = assert(load("local sweep = require 'tocha.sweep'\n" .. text, "=demo.lua"))
  local ok, err = pcall(chunk)
  return not ok and tostring(err) or nil
end

local function expect_error(text, ...)
  local err = load_error(text)
  assert(err, "no error for: " .. text)
  for _, want in ipairs({ ... }) do
    assert(err:find(want, 1, true), string.format("error %q lacks %q", err, want))
  end
end

local function draws(p, n, seed)
  local r, out = rng.new(seed or 1), {}
  for i = 1, n do out[i] = space.sample(p, r) end
  return out
end

local function compile1(dist) return space.compile({ x = dist })[1] end

return {
  ["rng: the same seeds give the same numbers, nearby seeds other ones, floats fill [0, 1)"] = function()
    local a, b, c = rng.new(3, 7), rng.new(3, 7), rng.new(3, 8)
    local same, differ = true, false
    for _ = 1, 100 do
      local x, y, z = a:random(), b:random(), c:random()
      same = same and x == y
      differ = differ or x ~= z
      assert(x >= 0 and x < 1)
    end
    assert(same and differ)
    -- moments of 20,000 draws
    local r, s, s2 = rng.new(1), 0, 0
    for _ = 1, 20000 do
      local x = r:random()
      s, s2 = s + x, s2 + x * x
    end
    assert(math.abs(s / 20000 - 0.5) < 0.01 and math.abs(s2 / 20000 - 1 / 3) < 0.01)
    local n, m = rng.new(2), 0
    for _ = 1, 20000 do m = m + n:normal(1, 2) end
    assert(math.abs(m / 20000 - 1) < 0.05)
  end,

  ["distributions draw values inside their bounds, of their type"] = function()
    for _, v in ipairs(draws(compile1(sweep.uniform(-2, 3)), 500)) do assert(v >= -2 and v <= 3 and math.type(v) == "float") end
    local logs = draws(compile1(sweep.loguniform(1e-4, 1e-2)), 2000)
    local below = 0
    for _, v in ipairs(logs) do
      assert(v >= 1e-4 and v <= 1e-2)
      if v < 1e-3 then below = below + 1 end
    end
    assert(below > 900 and below < 1100, "a log-uniform draw is below the geometric middle half the time: " .. below)
    local seen = {}
    for _, v in ipairs(draws(compile1(sweep.int(0, 200, { step = 50 })), 500)) do
      assert(math.type(v) == "integer" and v % 50 == 0 and v >= 0 and v <= 200)
      seen[v] = true
    end
    assert(seen[0] and seen[50] and seen[100] and seen[150] and seen[200])
    for _, v in ipairs(draws(compile1(sweep.int(1, 1000, { log = true })), 500)) do
      assert(math.type(v) == "integer" and v >= 1 and v <= 1000)
    end
    local p = compile1(sweep.int(0, 10, { step = 4 }))
    assert(p.high == 8, "the top of a stepped int is the last step below high")
    local got = {}
    for _, v in ipairs(draws(compile1(sweep.choice { 16, 24, 32 }), 300)) do got[v] = (got[v] or 0) + 1 end
    assert(got[16] > 60 and got[24] > 60 and got[32] > 60)
    local sum = 0
    for _, v in ipairs(draws(compile1(sweep.normal(5, 0.1)), 1000)) do sum = sum + v end
    assert(math.abs(sum / 1000 - 5) < 0.02)
    assert(space.compile({ x = 3 })[1].kind == "fixed" and space.compile({ x = { 0.9, 0.99 } })[1].kind == "fixed")
  end,

  ["conditional parameters exist only when their parent has the value"] = function()
    local list = space.compile({
      optimizer = sweep.choice { "adamw", "sgd" },
      sweep.when("optimizer", "adamw", { beta2 = sweep.uniform(0.9, 0.999),
        sweep.when("beta2", 0.95, { never = 1 }) }),
      sweep.when("optimizer", "sgd", { momentum = sweep.choice { 0, 0.9 } }),
    })
    local names = {}
    for i, p in ipairs(list) do names[i] = p.name end
    assert(table.concat(names, " ") == "optimizer beta2 never momentum", table.concat(names, " "))
    local random = strategies.resolve("random")
    local kinds = {}
    for n = 1, 100 do
      local params = random:suggest(list, {}, rng.new(0, n))
      assert(space.check(list, params) == nil)
      if params.optimizer == "adamw" then assert(params.beta2 and params.momentum == nil)
      else assert(params.momentum ~= nil and params.beta2 == nil) end
      kinds[params.optimizer] = true
    end
    assert(kinds.adamw and kinds.sgd)
    assert(space.check(list, { optimizer = "sgd", momentum = 0, beta2 = 0.95 }):find("exists only when optimizer"))
    assert(space.check(list, { optimizer = "sgd" }):find("no value for momentum"))
    assert(space.check(list, { optimizer = "sgd", momentum = 0.5 }):find("not a value"))
  end,

  ["grid: every combination once, in order, conditionals included; trials default to the grid's size"] = function()
    local s = sweep { name = "g", objective = function() return 0 end, strategy = "grid",
      space = { a = sweep.grid { 1, 2, 3 }, b = sweep.choice { "x", "y" }, c = 7,
        sweep.when("b", "y", { d = sweep.int(0, 2) }) } }
    assert(s.trials == 3 * (1 + 3), "grid size " .. s.trials)
    local seen, history = {}, {}
    for n = 1, s.trials do
      local p = s.strategy:suggest(s.space, history, rng.new(0, n))
      assert(p.c == 7)
      local key = string.format("%d%s%s", p.a, p.b, tostring(p.d))
      assert(not seen[key], "proposed twice: " .. key)
      seen[key] = true
      history[#history + 1] = { number = n, params = p, state = "done", value = 0 }
    end
    assert(s.strategy:suggest(s.space, history, rng.new(0, 99)) == nil, "an exhausted grid proposes nothing")
    assert(sweep { name = "g", objective = function() return 0 end, strategy = "grid", trials = 2,
      space = { a = sweep.grid { 1, 2, 3 } } }.trials == 2)
    expect_error([[return sweep { name = "g", objective = function() return 0 end, strategy = "grid",
      space = { lr = sweep.loguniform(1e-4, 1e-2) } }]], "strategy grid: lr is loguniform, which has no grid")
  end,

  ["every bad sweep file says what is wrong, at its line"] = function()
    expect_error("local _ = sweep.lognormal(1, 2)", "demo.lua:2:", "sweep.lognormal does not exist", "loguniform")
    expect_error("local _ = sweep.choice {}", "demo.lua:2:", "sweep.choice: needs a list of at least one value")
    expect_error("local _ = sweep.choice { 1, 1 }", "the value 1 is given twice")
    expect_error("local _ = sweep.uniform(1, 1)", "demo.lua:2:", "sweep.uniform: low must be below high (got 1 and 1)")
    expect_error("local _ = sweep.loguniform(3e-3, 3e-4)", "sweep.loguniform: low must be below high (got 0.003 and 0.0003)")
    expect_error("local _ = sweep.loguniform(0, 1)", "sweep.loguniform: low must be above 0")
    expect_error("local _ = sweep.int(5, 2)", "sweep.int: low must be below high")
    expect_error("local _ = sweep.int(0.5, 2)", "sweep.int: low must be an integer")
    expect_error("local _ = sweep.int(0, 10, { step = 0 })", "step must be a positive integer")
    expect_error("local _ = sweep.int(0, 10, { stride = 2 })", "unknown option 'stride'")
    expect_error("local _ = sweep.int(0, 10, { log = true })", "log = true needs low >= 1")
    expect_error("local _ = sweep.normal(0, 0)", "sweep.normal: std must be above 0")
    expect_error("local _ = sweep.uniform(0, 0/0)", "high must be a finite number")
    local base = 'return sweep { name = "s", objective = function() return 1 end, trials = 3, '
    expect_error("local _ = " .. base:sub(8) .. "space = { lr = { 1, 2, nil, x = 3 } } }", "demo.lua:2:", "space.lr is a table but not a distribution")
    expect_error("local _ = " .. base:sub(8) .. "space = { lr = print } }", "space.lr is a function")
    expect_error("local _ = " .. base:sub(8) .. "space = {} }", "space is empty")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1, sweep.when('opt', 'x', { b = 2 }) } }", "sweep.when(\"opt\", ...) names no parameter")
    expect_error("local _ = " .. base:sub(8) .. "space = { opt = sweep.choice { 'x' }, sweep.when('opt', 'y', { b = 2 }) } }", "opt never takes that value")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1 }, metrik = 'x' }", "demo.lua:2:", "unknown field 'metrik'")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1 }, goal = 'maximize' }", "goal must be \"min\" or \"max\"")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1 }, strategy = 'bayes' }", "unknown strategy \"bayes\"")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1 }, strategy = 'nowhere.lua' }", "strategy file nowhere.lua does not exist")
    expect_error("local _ = " .. base:sub(8) .. "space = { a = 1 }, prune = 3 }", "prune must be sweep.asha")
    expect_error('local _ = sweep { name = "s", objective = function() end, space = { a = 1 } }', "trials is needed")
    expect_error('local _ = sweep { name = "s", script = "x.lua", trials = 2, space = { a = 1 } }', "metric is needed")
    expect_error('local _ = sweep { name = "s", script = "x.lua", objective = print, space = { a = 1 } }', "either script")
    expect_error('local _ = sweep { name = "a/b", objective = print, trials = 1, space = { a = 1 } }', "name must be")
    expect_error("local _ = sweep.asha { min_steps = 0 }", "sweep.asha: min_steps must be a positive integer")
    expect_error("local _ = sweep.hyperband { min_steps = 10 }", "max_steps is needed")
    expect_error("local _ = sweep.median { warmup = -1 }", "warmup must be a positive integer")
    expect_error("local _ = sweep.tpe { startup = 0 }", "sweep.tpe: startup must be a positive integer")
    expect_error("local _ = sweep.tpe { candidate = 3 }", "unknown option 'candidate'")
    -- a file that returns something else
    local dir = tmpdir()
    write_file(dir .. "/bad.lua", "return { name = 'x' }")
    local s, err = sweep.load(dir .. "/bad.lua")
    assert(not s and err:find("must return sweep { ... }"))
    assert(select(2, sweep.load(dir .. "/none.lua")):find("no sweep file"))
    os.execute("rm -rf " .. dir)
  end,

  ["the same seed proposes the same first trials; another seed other ones"] = function()
    local function first(seed, strategy, n)
      local s = sweep { name = "r", objective = function() return 0 end, trials = 10, seed = seed, strategy = strategy,
        space = { lr = sweep.loguniform(1e-4, 1e-2), batch = sweep.choice { 16, 32 }, warmup = sweep.int(0, 200, { step = 50 }) } }
      local out, history = {}, {}
      for number = 1, n do
        local p = s.strategy:suggest(s.space, history, rng.new(s.seed, number), { goal = "min" })
        out[number] = string.format("%.17g %d %d", p.lr, p.batch, p.warmup)
        history[number] = { number = number, params = p, state = "done", value = p.lr }
      end
      return table.concat(out, "|")
    end
    for _, strategy in ipairs({ "random", "tpe" }) do
      local a, b, c = first(0, strategy, 12), first(0, strategy, 12), first(1, strategy, 12)
      assert(a == b, strategy .. ": the same seed proposed different trials")
      assert(a ~= c, strategy .. ": seeds 0 and 1 proposed the same trials")
    end
  end,

  ["a user strategy file proposes trials, and a bad proposal is named"] = function()
    local dir = tmpdir()
    write_file(dir .. "/mine.lua", [[
return { suggest = function(space, history, rng)
  local p = {}
  for _, d in ipairs(space) do if d.kind == "uniform" then p[d.name] = d.low + #history * 0.1 end end
  return p
end }]])
    write_file(dir .. "/bad.lua", "return function(space, history) return { lr = 5 } end")
    local s = sweep { name = "u", objective = function() return 0 end, trials = 3, strategy = dir .. "/mine.lua",
      space = { lr = sweep.uniform(0, 1), fixed = "yes" } }
    local p = s.strategy:suggest(s.space, { {}, {} }, rng.new(0))
    assert(math.abs(p.lr - 0.2) < 1e-12 and p.fixed == "yes")
    local bad = sweep { name = "u", objective = function() return 0 end, trials = 3, strategy = dir .. "/bad.lua",
      space = { lr = sweep.uniform(0, 1) } }
    T.testing.assert_raises("bad proposal: lr = 5 is not a value of its distribution", bad.strategy.suggest, bad.strategy,
      bad.space, {}, rng.new(0))
    -- a strategy given as a table in the sweep file
    local inline = sweep { name = "u", objective = function() return 0 end, trials = 1,
      strategy = { suggest = function() return { lr = 0.5 } end }, space = { lr = sweep.uniform(0, 1) } }
    assert(inline.strategy:suggest(inline.space, {}, rng.new(0)).lr == 0.5)
    os.execute("rm -rf " .. dir)
  end,
}
