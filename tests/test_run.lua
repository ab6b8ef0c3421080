-- tests/test_run.lua: tocha.run: the command line against a defaults table (types, --no-x,
-- lists, nested names, --config files, did-you-mean, --help), the run directory and what it
-- records, seeding, and that the same config and seed give the same metrics.
local T = require "tocha"
local read_file, write_file = T.testing.read_file, T.testing.write_file
local run = require "tocha.run"
local log = require "tocha.log"
local json = require "tocha.json"

local tocha_bin = arg and arg[-1] or "./build/tocha"

local tmpdir = T.testing.tmpdir

local function usage_error(spec, args, pattern)
  local ok, err = pcall(run.parse, spec, args)
  assert(not ok and type(err) == "table" and err.usage, "expected a usage error for " .. table.concat(args, " "))
  assert(err.usage:find(pattern), "'" .. err.usage .. "' does not match '" .. pattern .. "'")
end

local function defaults()
  return {
    name = "t2i",
    description = "a tiny text-to-image model",
    config = {
      lr = { 1e-4, help = "peak learning rate" },
      steps = 1000,
      batch_size = 16,
      sampler = { "ddim", help = "sampler for previews", choices = { "ddim", "euler", "heun" } },
      ema = true,
      compile = false,
      prompts = { "a red circle", "a blue square" },
      sizes = { 32, 64 },
      model = { channels = 64, dropout = 0.1, attn = { heads = 4 } },
    },
  }
end

return {
  ["defaults come back when nothing is given"] = function()
    local config, changed, help = run.parse(defaults(), {})
    assert(not help and #changed == 0)
    assert(config.lr == 1e-4 and config.steps == 1000 and config.sampler == "ddim" and config.ema == true)
    assert(config.prompts[2] == "a blue square" and config.model.attn.heads == 4 and config.seed == 0)
    -- the defaults table is not changed by parsing
    local spec = defaults()
    local c2 = run.parse(spec, { "--prompts", "x" })
    assert(c2.prompts[1] == "x" and spec.config.prompts[1] == "a red circle")
  end,

  ["options of every type, in every spelling"] = function()
    local config, changed = run.parse(defaults(), {
      "--lr", "3e-4", "--steps=2000", "--no-ema", "--compile", "--sampler", "euler",
      "--prompts", "a cat,a dog", "--sizes=16,32,48", "--model.channels", "32", "--model.attn.heads=8",
      "--batch-size", "8", "--seed", "7",
    })
    assert(config.lr == 3e-4 and math.type(config.lr) == "float")
    assert(config.steps == 2000 and math.type(config.steps) == "integer")
    assert(config.ema == false and config.compile == true and config.sampler == "euler")
    assert(#config.prompts == 2 and config.prompts[2] == "a dog")
    assert(#config.sizes == 3 and config.sizes[3] == 48 and math.type(config.sizes[1]) == "integer")
    assert(config.model.channels == 32 and config.model.attn.heads == 8 and config.model.dropout == 0.1)
    assert(config.batch_size == 8 and config.seed == 7)
    assert(#changed == 11)
    local c2 = run.parse(defaults(), { "--ema=false", "--compile=yes", "--steps", "1e3", "--prompts=" })
    assert(c2.ema == false and c2.compile == true and c2.steps == 1000 and #c2.prompts == 0)
    local c3 = run.parse(defaults(), { "--lr", "1", "--lr", "2" }) -- the last one wins
    assert(c3.lr == 2.0)
  end,

  ["bad command lines are rejected with a reason"] = function()
    local spec = defaults()
    usage_error(spec, { "--lrr", "1" }, "unknown option %-%-lrr %(did you mean %-%-lr%?%)")
    usage_error(spec, { "--sampeler", "x" }, "did you mean %-%-sampler%?")
    usage_error(spec, { "--no-emma" }, "did you mean %-%-no%-ema%?")
    usage_error(spec, { "--zzzzzzzz" }, "^unknown option %-%-zzzzzzzz$")
    usage_error(spec, { "--steps", "1.5" }, "%-%-steps expects an integer %(default 1000%), got \"1%.5\"")
    usage_error(spec, { "--lr", "fast" }, "%-%-lr expects a number")
    usage_error(spec, { "--ema=maybe" }, "%-%-ema expects true or false")
    usage_error(spec, { "--sizes", "1,x" }, "%-%-sizes expects an integer list")
    usage_error(spec, { "--sampler", "eulr" }, "must be one of ddim, euler, heun %(got eulr%); did you mean euler%?")
    usage_error(spec, { "--no-lr" }, "%-%-lr is not a boolean")
    usage_error(spec, { "--no-ema=1" }, "takes no value")
    usage_error(spec, { "--steps" }, "%-%-steps needs a value")
    usage_error(spec, { "data.txt" }, "unexpected argument \"data%.txt\"")
    usage_error(spec, { "--config" }, "%-%-config needs a file name")
    usage_error(spec, { "--config", "/nonexistent.lua" }, "%-%-config: cannot open")
  end,

  ["--config files: Lua or JSON, the command line wins"] = function()
    local dir = tmpdir()
    write_file(dir .. "/c.lua", "return { lr = 0.5, sampler = 'heun', model = { channels = 16 }, prompts = { 'p' } }")
    local config = run.parse(defaults(), { "--lr", "0.25", "--config", dir .. "/c.lua" })
    assert(config.lr == 0.25 and config.sampler == "heun" and config.model.channels == 16 and config.prompts[1] == "p")
    write_file(dir .. "/c.json", '{"steps": 5, "model": {"attn": {"heads": 2}}}')
    local c2 = run.parse(defaults(), { "--config=" .. dir .. "/c.json" })
    assert(c2.steps == 5 and c2.model.attn.heads == 2)
    write_file(dir .. "/bad.lua", "return { stepz = 5 }")
    usage_error(defaults(), { "--config", dir .. "/bad.lua" }, "unknown option %-%-stepz in .*bad%.lua %(did you mean %-%-steps%?%)")
    write_file(dir .. "/bad2.lua", "return { steps = 'many' }")
    usage_error(defaults(), { "--config", dir .. "/bad2.lua" }, "%-%-steps expects an integer .* in .*bad2%.lua")
    write_file(dir .. "/bad3.lua", "return 5")
    usage_error(defaults(), { "--config", dir .. "/bad3.lua" }, "must return a table")
  end,

  ["--help lists every option with its help and default"] = function()
    local _, _, help = run.parse(defaults(), { "--help" })
    assert(help)
    local text = run.help(defaults())
    for _, want in ipairs({ "a tiny text%-to%-image model", "%-%-lr NUMBER +peak learning rate %[0%.0001%]",
      "%-%-ema, %-%-no%-ema +%[true%]", "%-%-sampler STRING +sampler for previews %(ddim, euler, heun%) %[ddim%]",
      "%-%-prompts LIST +%[a red circle,a blue square%]", "%-%-model%.attn%.heads INT +%[4%]", "%-%-seed INT",
      "%-%-config FILE", "%-h, %-%-help" }) do
      assert(text:find(want), "help lacks " .. want .. ":\n" .. text)
    end
    local spec = defaults()
    spec.args, spec.exit, spec.root = { "-h" }, false, tmpdir()
    local r, text2 = run(spec)
    assert(r == nil and text2 == text)
  end,

  ["the run directory records config, command line, versions and seed"] = function()
    local root = tmpdir()
    local spec = defaults()
    spec.root, spec.quiet, spec.exit = root, true, false
    spec.args = { "--lr", "0.001", "--no-ema", "--prompts", "a b,c/d", "--seed", "3" }
    local r = run(spec)
    local name = r.dir:match("^" .. root:gsub("%p", "%%%0") .. "/t2i/(.*)$")
    assert(name and name:match("^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-no%-ema,lr=0%.001,prompts=a_b%+c_d,seed=3$"), r.dir)
    assert(r.config.lr == 0.001 and r.config.ema == false and r.seed == 3 and tostring(r) == r.dir)
    -- config.lua loads back to the same table, and is a valid --config file
    local back = dofile(r.dir .. "/config.lua")
    assert(back.lr == 0.001 and back.prompts[2] == "c/d" and back.model.attn.heads == 4 and back.seed == 3)
    assert(math.type(back.model.dropout) == "float" and math.type(back.steps) == "integer")
    local again = run.parse(defaults(), { "--config", r.dir .. "/config.lua" })
    assert(json.encode(again) == json.encode(r.config))
    assert(json.encode(json.read_file(r.dir .. "/config.json")) == json.encode(r.config))
    local meta = json.read_file(r.dir .. "/meta.json")
    assert(meta.seed == 3 and meta.name == "t2i" and meta.dir == r.dir and meta.non_default.lr == 0.001)
    assert(meta.args[1] == "--lr" and #meta.args == 7 and meta.start_time:match("^%d+%-%d+%-%d+T"))
    local has_git = os.execute("git rev-parse HEAD >/dev/null 2>&1")
    if has_git then assert(meta.git_commit and #meta.git_commit == 40 and meta.git_dirty ~= nil) end
    assert(read_file(r.dir .. "/command.txt"):find(tocha_bin:gsub("%p", "%%%0"), 1))
    -- run:path makes the directories leading to a file
    local p = r:path("samples", "step_100.png")
    assert(p == r.dir .. "/samples/step_100.png")
    write_file(p, "x")
    -- a second run in the same second with the same options gets its own directory
    local r2 = run(spec)
    local r3 = run(spec)
    assert(r2.dir ~= r.dir and r3.dir ~= r2.dir)
  end,

  ["the run seeds the generators"] = function()
    local spec = defaults()
    spec.root, spec.quiet, spec.exit, spec.args = tmpdir(), true, false, { "--seed", "11" }
    run(spec)
    local a = T.rand({ 4 }):tolist()
    T.manual_seed(11)
    local b = T.rand({ 4 }):tolist()
    for i = 1, 4 do assert(a[i] == b[i]) end
  end,

  ["the same config and seed give the same metrics"] = function()
    local root = tmpdir()
    local function train(args)
      local r = run { name = "fit", root = root, quiet = true, exit = false, args = args,
        config = { steps = 30, lr = 0.1, hidden = 8 } }
      local c = r.config
      local x = T.randn({ 64, 3 }, { dtype = "f64" })
      local y = (x:sum(2) * 0.5 + T.randn({ 64 }, { dtype = "f64" }) * 0.1)
      local w1 = (T.randn({ c.hidden, 3 }, { dtype = "f64" }) * 0.5):requires_grad_()
      local w2 = (T.randn({ 1, c.hidden }, { dtype = "f64" }) * 0.5):requires_grad_()
      local w, last = r:writer(), nil
      for step = 1, c.steps do
        local pred = x:matmul(w1:t()):tanh():matmul(w2:t()):reshape(-1)
        local loss = ((pred - y) ^ 2):mean()
        loss:backward()
        T.no_grad(function()
          for _, p in ipairs({ w1, w2 }) do p:sub_(p.grad * c.lr); p.grad = nil end
        end)
        w:add_scalar("loss", loss, step)
        last = loss:item()
      end
      r:finish({ ["final/loss"] = last })
      local _, losses = log.series(r.dir, "loss")
      return losses, r
    end
    local a = train({ "--seed", "5" })
    local b = train({ "--seed", "5" })
    local c, rc = train({ "--seed", "6" })
    assert(#a == 30 and a[30] < a[1])
    for i = 1, 30 do assert(a[i] == b[i], "step " .. i) end
    assert(a[1] ~= c[1])
    -- finish wrote the hyperparameters for TensorBoard's HParams tab and the end to meta.json
    local hp = log.read_events(rc.dir).hparams
    assert(hp.values.seed == 6 and hp.values.lr == 0.1 and hp.metrics[1] == "final/loss" and hp.status == 1)
    assert(json.read_file(rc.dir .. "/meta.json").end_time)
  end,

  ["a malformed defaults table raises at the call"] = function()
    local function bad(config, pattern)
      local ok, err = pcall(run, { name = "x", config = config, root = tmpdir(), quiet = true, exit = false, args = {} })
      assert(not ok and tostring(err):find(pattern), tostring(err))
    end
    bad({ f = print }, "option 'f' has a function default")
    bad({ x = { help = "no default" } }, "option 'x' needs a default value")
    bad({ [1] = 5 }, "config keys must be strings")
    local ok, err = pcall(run, { name = "a/b", config = {}, quiet = true, exit = false, args = {} })
    assert(not ok and err:find("name must be a non%-empty string without '/'"))
    ok, err = pcall(run, { name = "x", config = { lr = 0.5 }, quiet = true, exit = false, args = { "--lr", "x" } })
    assert(not ok and err:find("tocha%.run: %-%-lr expects a number"))
    ok, err = pcall(run, { name = "x", root = "/proc/tocha-no", config = {}, quiet = true, exit = false, args = {} })
    assert(not ok and err:find("cannot create directory /proc/tocha%-no"), err)
  end,

  ["the example in docs/logging.md runs"] = function()
    local doc = read_file(T.testing.path("../docs/logging.md"))
    local code = doc:match("```lua\n(.-)```")
    assert(code and code:find("tocha.run"), "no example found")
    local dir = tmpdir()
    write_file(dir .. "/fit.lua", code)
    local out, rc = T.testing.tocha(dir .. "/fit.lua --steps 150 --lr 0.02", "TOCHA_RUNS=" .. dir .. "/runs ")
    assert(rc == 0, out)
    local rundir = out:match("run: (%S+)")
    assert(rundir and rundir:find("/runs/fit/%d+%-%d+%-lr=0%.02,steps=150$"), out)
    assert(out:find("step 150/150 %(100%%%)"), out)
    local rows = assert(log.read(rundir))
    assert(#rows == 150 and rows[150]["train/loss"] < rows[1]["train/loss"])
    local ev = log.read_events(rundir)
    assert(#ev.histograms["weights/0.weight"] == 1 and ev.texts.notes[1].step == 150)
    assert(ev.hparams.values.activation == "silu" and ev.hparams.metrics[1] == "final/loss")
  end,

  ["a script's --help exits 0 and a typo exits 2 with a suggestion"] = function()
    local dir = tmpdir()
    write_file(dir .. "/s.lua", string.format([[
      local r = require("tocha.run"){ name = "s", root = %q, config = { lr = { 0.1, help = "step size" } } }
      print("dir " .. r.dir)
    ]], dir .. "/runs"))
    local function sh(args) return T.testing.tocha(dir .. "/s.lua " .. args) end
    local out, rc = sh("--help")
    assert(rc == 0 and out:find("%-%-lr NUMBER +step size %[0%.1%]"), out)
    out, rc = sh("--lt 1")
    assert(rc == 2 and out:find("unknown option %-%-lt %(did you mean %-%-lr%?%)"), out)
    out, rc = sh("--lr 0.5")
    assert(rc == 0 and out:find("run: .*/runs/s/%d+%-%d+%-lr=0%.5"), out)
  end,
}
