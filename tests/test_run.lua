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

  ["values an option cannot take are refused at parsing, by the option's name"] = function()
    local spec = { config = {
      steps = { 1000, min = 1 }, batch = { 16, min = 1, help = "images per step" },
      betas = { { 0.9, 0.999 }, length = 2, min = 0, below = 1 },
      power = { 0.5, above = 0 }, dropout = { 0.1, min = 0, max = 1 },
      size = { 32, check = function(v) if v % 8 ~= 0 then return "must be a multiple of 8" end end },
    } }
    local config = run.parse(spec, { "--steps", "1", "--betas", "0,0.5", "--power", "1e-9", "--dropout", "1" })
    assert(config.steps == 1 and config.betas[2] == 0.5 and config.dropout == 1.0)
    usage_error(spec, { "--steps", "-5" }, "^%-%-steps must be at least 1 %(got %-5%)$")
    usage_error(spec, { "--batch", "0" }, "^%-%-batch must be at least 1 %(got 0%)$")
    usage_error(spec, { "--betas", "0.9" }, "^%-%-betas must hold 2 values %(got 0%.9%)$")
    usage_error(spec, { "--betas", "0.9,1" }, "^%-%-betas must be below 1 %(got 1 in 0%.9,1%)$")
    usage_error(spec, { "--betas", "-0.1,0.9" }, "^%-%-betas must be at least 0 %(got %-0%.1 in %-0%.1,0%.9%)$")
    usage_error(spec, { "--power", "0" }, "^%-%-power must be above 0 %(got 0%)$")
    usage_error(spec, { "--dropout", "1.5" }, "^%-%-dropout must be at most 1 %(got 1%.5%)$")
    usage_error(spec, { "--size", "30" }, "^%-%-size must be a multiple of 8 %(got 30%)$")
    local dir = tmpdir()
    write_file(dir .. "/c.lua", "return { batch = 0 }")
    usage_error(spec, { "--config", dir .. "/c.lua" }, "^%-%-batch must be at least 1 %(got 0 in .*c%.lua%)$")
    -- a default outside its own limits is the script's mistake, raised where run{} is called
    local ok, err = pcall(function()
      local r = run { name = "x", config = { n = { 0, min = 1 } }, root = dir, quiet = true, exit = false, args = {} }
      return r
    end)
    assert(not ok and err:find("test_run%.lua:%d+: tocha%.run: option 'n': its default 0 must be at least 1"), err)
    -- the project's experiment refuses them before it makes its run directory
    local script = T.testing.path("../experiments/t2i_shapes.lua")
    for _, case in ipairs({ { "--betas 0.9", "--betas must hold 2 values" }, { "--batch 0", "--batch must be at least 1" },
                            { "--steps -5", "--steps must be at least 1" } }) do
      local out, rc = T.testing.tocha(script .. " " .. case[1], "TOCHA_RUNS=" .. dir .. "/runs ")
      assert(rc == 2 and out:find(case[2], 1, true), out)
    end
    assert(not T._sys.isdir(dir .. "/runs"), "no run directory for a refused command line")
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
    assert(meta.tocha_version == T.version and T.version ~= nil)
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

  ["the runner finds modules beside the script from any working directory"] = function()
    local dir = tmpdir()
    T._sys.mkdirs(dir .. "/exp/lib")
    write_file(dir .. "/exp/my_sampler.lua", "return { name = 'mine' }")
    write_file(dir .. "/exp/lib/init.lua", "return { name = 'lib' }")
    write_file(dir .. "/exp/s.lua", "print(require('my_sampler').name, require('lib').name, require('tocha').version)")
    local bin = tocha_bin:sub(1, 1) == "/" and tocha_bin or os.getenv("PWD") .. "/" .. tocha_bin
    local p = assert(io.popen("cd / && " .. bin .. " " .. dir .. "/exp/s.lua 2>&1; echo rc=$?"))
    local out = p:read("a")
    p:close()
    local rc = tonumber(out:match("rc=(%d+)"))
    assert(rc == 0 and out:find("^mine\tlib\t" .. T.version:gsub("%p", "%%%0") .. "\n"), out)
    assert(type(T.version) == "string" and T.version:match("^%d+%.%d+%.%d+$"), "T.version")
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

  ["run names: what differs, the command line's options first and never cut; --name"] = function()
    local root = tmpdir()
    local config = { steps = 100, lr = 0.1, warmup = 10, out = { "", training = false }, log_every = { 5, training = false } }
    for i = 1, 12 do config["option_with_a_long_name_" .. i] = i end
    local function dir_of(args)
      local r = run { name = "n", config = config, root = root, quiet = true, exit = false, args = args }
      return r.dir:match("[^/]+$")
    end
    -- the command line's options that change training, then its others; paths stay out
    assert(dir_of({ "--log_every", "1", "--steps", "5", "--out", "/tmp/x" }):match("^%d+%-%d+%-steps=5,log_every=1$"))
    -- options from a --config file fill up to 80 characters; a count says how many were left out
    local lines = {}
    for i = 1, 12 do lines[i] = string.format("option_with_a_long_name_%d = %d", i, i + 100) end
    write_file(root .. "/c.lua", "return { " .. table.concat(lines, ", ") .. " }")
    local name = dir_of({ "--config", root .. "/c.lua", "--lr", "0.5", "--warmup", "0" })
    assert(name:match("^%d+%-%d+%-lr=0%.5,warmup=0,option_with_a_long_name_1=101,option_with_a_long_name_10=110,%+10$"), name)
    -- the command line's own are never cut, however many
    local args = {}
    for i = 1, 6 do args[#args + 1] = "--option_with_a_long_name_" .. i; args[#args + 1] = tostring(i + 200) end
    name = dir_of(args)
    for i = 1, 6 do assert(name:find("option_with_a_long_name_" .. i .. "=" .. (i + 200), 1, true), name) end
    -- --name gives the directory its name (a second run of that name gets -2)
    assert(dir_of({ "--name", "baseline", "--lr", "0.3" }) == "baseline")
    assert(dir_of({ "--name", "baseline" }) == "baseline-2")
    local ok, err = pcall(run, { name = "n", config = config, root = root, quiet = true, exit = false, args = { "--name", "a/b" } })
    assert(not ok and err:find("%-%-name must be a file name"), err)
    assert(json.read_file(root .. "/n/baseline/config.json").name == nil, "the run's own options stay out of its config")
  end,

  ["a run that fails before its first step leaves no directory; one that fails later is marked"] = function()
    local dir = tmpdir()
    write_file(dir .. "/s.lua", [[
      local r = require("tocha.run") { name = "s", config = { fail = "", extra = false } }
      if r.config.extra then require("tocha.testing").write_file(r.dir .. "/notes.txt", "mine") end
      local w = r:writer()
      if r.config.fail == "early" then error("no data here") end
      w:add_scalar("loss", 1, 1)
      if r.config.fail == "late" then error("lost it at step 1") end
      r:finish({})
    ]])
    local function sh(args) return T.testing.tocha(dir .. "/s.lua " .. args, "TOCHA_RUNS=" .. dir .. "/runs ") end
    local out, rc = sh("--fail early")
    assert(rc == 1 and out:find("no data here"), out)
    assert(#(T._sys.listdir(dir .. "/runs/s") or {}) == 0, "no run directory left")
    -- a file of the script's own: the directory stays, marked failed, and tocha plot skips it
    out, rc = sh("--fail early --extra")
    assert(rc == 1, out)
    local failed = out:match("run: (%S+)")
    local meta = json.read_file(failed .. "/meta.json")
    assert(meta.status == "failed" and meta.error:find("no data here"), json.encode(meta))
    out, rc = sh("--fail late")
    local crashed = out:match("run: (%S+)")
    meta = json.read_file(crashed .. "/meta.json")
    assert(rc == 1 and meta.status == "crashed" and meta.error:find("lost it at step 1") and meta.end_time, out)
    assert(#log.read(crashed) == 1, "what it logged is kept")
    out, rc = sh("")
    assert(rc == 0 and json.read_file(out:match("run: (%S+)") .. "/meta.json").status == "finished")
    local plot = require "tocha.cli.plot"
    local sink = { write = function(self) return self end }
    local text = {}
    local outs = { write = function(self, ...) for _, x in ipairs({ ... }) do text[#text + 1] = x end return self end }
    assert(plot.main({ dir .. "/runs/s", "-o", dir .. "/p.png" }, outs, sink) == 0)
    assert(table.concat(text):find("%(2 curves%)"), "the crashed and the finished run, not the failed one")
  end,

  ["--resume continues a run in its directory: no step logged twice, the same result"] = function()
    local dir = tmpdir()
    write_file(dir .. "/s.lua", [[
      local T = require "tocha"
      local r = require("tocha.run") { name = "s", resume = true,
        config = { steps = 6, lr = 0.25, crash_at = { 0, training = false }, note = { "x", training = false } } }
      local w = r:writer()
      local x = T.zeros(1)
      local state = r:load_checkpoint { model = { x } }
      for step = (state and state.step or 0) + 1, r.config.steps do
        if step == r.config.crash_at then error("crash at " .. step) end
        x:add_(r.config.lr * T.rand({ 1 }):item())
        w:add_scalar("x", x, step)
        if step % 3 == 0 then r:save_checkpoint { model = { x }, step = step } end
      end
      r:finish({ final = x:item() })
      print(string.format("final %.17g", x:item()))
    ]])
    local function sh(args) return T.testing.tocha(dir .. "/s.lua " .. args, "TOCHA_RUNS=" .. dir .. "/runs ") end
    local out, rc = sh("--note straight")
    assert(rc == 0, out)
    local want = out:match("final (%S+)")
    out, rc = sh("--crash_at 5")
    assert(rc == 1, out)
    local crashed = out:match("run: (%S+)")
    assert(#log.read(crashed) == 4, "steps 1 to 4 were logged before the crash")
    -- options that change training differ: refused; one that does not: fine
    out, rc = sh("--resume --lr 0.5")
    assert(rc == 2 and out:find("newest one, " .. crashed:gsub("%p", "%%%0") .. ", differs in options that change "
      .. "training:\n  %-%-lr 0%.5 %(the checkpoint: 0%.25%)\n%-%-resume_force"), out)
    out, rc = sh("--resume --note again")
    assert(rc == 0 and out:find("run: " .. crashed:gsub("%p", "%%%0") .. "\n") and out:match("final (%S+)") == want, out)
    local rows = log.read(crashed)
    assert(#rows == 7, "steps 1 to 6 once each, and the final row")
    for i = 1, 6 do assert(rows[i].step == i, "row " .. i .. " is step " .. tostring(rows[i].step)) end
    local ev = log.read_events(crashed)
    assert(#ev.scalars.x == 6, "the event files hold each step once, got " .. #ev.scalars.x)
    for i, e in ipairs(ev.scalars.x) do assert(e.step == i) end
    -- --resume DIR: a checkpoint of the run (or the run) goes on in that run's directory
    out, rc = sh("--resume " .. crashed .. "/checkpoints/step-3")
    assert(rc == 0 and out:find("run: " .. crashed:gsub("%p", "%%%0") .. "\n") and out:match("final (%S+)") == want, out)
    assert(#log.read(crashed) == 7)
    out, rc = sh("--resume " .. dir .. "/nowhere")
    assert(rc == 2 and out:find("%-%-resume: .*nowhere does not exist"), out)
    local info = require("tocha.checkpoint").info(crashed .. "/checkpoints")
    assert(info.step == 6 and info.config.lr == 0.25 and info.config.note == "x", "a checkpoint records the config")
  end,

  ["a run killed with SIGKILL keeps the metrics it logged up to its last checkpoint"] = function()
    local dir = tmpdir()
    write_file(dir .. "/k.lua", [[
      local T = require "tocha"
      local r = require("tocha.run") { name = "k", config = { steps = 4 }, resume = true }
      local w = r:writer()
      local state = r:load_checkpoint { model = { T.zeros(1) } }
      for step = (state and state.step or 0) + 1, r.config.steps do
        w:add_scalar("loss", 1 / step, step)
        if step == 3 then r:save_checkpoint { model = { T.zeros(1) }, step = step } end
        if step == 4 and not state then T._sys.kill(T._sys.getpid(), "KILL") end
      end
      r:finish({})
    ]])
    local out = T.testing.tocha(dir .. "/k.lua", "TOCHA_RUNS=" .. dir .. "/runs ")
    local run_dir = out:match("run: (%S+)")
    local rows = log.read(run_dir)
    assert(#rows == 3 and rows[3].step == 3, "steps 1 to 3, flushed with the checkpoint; got " .. #rows)
    local _, rc = T.testing.tocha(dir .. "/k.lua --resume", "TOCHA_RUNS=" .. dir .. "/runs ")
    rows = log.read(run_dir)
    assert(rc == 0 and #rows == 4 and rows[4].step == 4, "step 4 logged once by the resumed run")
  end,
}
