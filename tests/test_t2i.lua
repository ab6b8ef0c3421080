-- tests/test_t2i.lua: short runs of the default experiment, end to end: train a few steps,
-- checkpoint, resume in the run's own directory (and refuse to when options that change
-- training differ), sample and grade; the model a run leaves, drawn from by models.load and
-- `tocha sample` without the script; --sample_only with a sampler file, the grid options;
-- the evaluations during training (--eval_every).
-- (The accuracy of so short a run means nothing; that every piece runs does.)
local T = require "tocha"
local json = require "tocha.json"
local log = require "tocha.log"
local image = require "tocha.image"
local script = T.testing.path("../experiments/t2i_shapes.lua")

local function sh(args, prefix)
  local out, rc = T.testing.tocha(script .. " " .. args, prefix)
  return rc == 0, out, rc
end

local function runs_in(dir)
  local out = {}
  for _, n in ipairs(T._sys.listdir(dir) or {}) do if n:sub(-1) == "/" then out[#out + 1] = dir .. "/" .. n:sub(1, -2) end end
  return out
end

local function png(path)
  local f = io.open(path, "rb")
  local ok = f and f:read(8) == "\137PNG\r\n\26\n"
  if f then f:close() end
  return ok
end

local SMALL = "--batch 4 --size 16 --eval_samples 4 --sample_steps 3 --checkpoint_every 2 --threads 1 --log_every 1 "

local tests = {}

tests["t2i_shapes trains, checkpoints, resumes in its run directory and grades its samples"] = function()
  local dir = T.testing.tmpdir()
  local env = "TOCHA_RUNS=" .. dir .. "/runs "
  local ok, out = sh(SMALL .. "--steps 2", env)
  assert(ok, out)
  assert(out:find("held%-out single%-object prompts") and out:find("samples: "), out)
  local runs = runs_in(dir .. "/runs/t2i_shapes")
  assert(#runs == 1, "one run")
  local run_dir = runs[1]
  -- options that change training differ from the checkpoint's: refused, naming them, before
  -- any directory is made
  local rc
  ok, out, rc = sh(SMALL .. "--steps 4 --lr 0.003 --resume", env)
  assert(not ok and rc == 2, out)
  assert(out:find("the newest one, .* differs in options that change training:\n  %-%-lr 0%.003 %(the checkpoint: 0%.0015%)\n"
    .. "  %-%-steps 4 %(the checkpoint: 2%)\n%-%-resume_force continues it"), out)
  assert(#runs_in(dir .. "/runs/t2i_shapes") == 1, "no directory for a refused resume")
  -- --resume alone: the newest run with these options, in its own directory
  ok, out = sh(SMALL .. "--steps 4 --resume --resume_force", env)
  assert(ok, out)
  assert(out:find("resumed from " .. run_dir:gsub("%p", "%%%0") .. "/checkpoints/step%-2 at step 2"), out)
  assert(out:find("training: 2 steps"), out)
  assert(#runs_in(dir .. "/runs/t2i_shapes") == 1, "the resumed run is the same run")
  local steps = {}
  for _, row in ipairs(assert(log.read(run_dir))) do
    if row["train/loss"] then
      assert(not steps[row.step], "step " .. row.step .. " logged twice")
      steps[row.step] = true
    end
  end
  assert(steps[1] and steps[2] and steps[3] and steps[4], "steps 1 to 4 logged")
  local meta = json.read_file(run_dir .. "/meta.json")
  assert(meta.status == "finished" and #meta.resumed == 1 and meta.resumed[1].changed.steps[2] == "4", "meta.json")
  assert(json.read_file(run_dir .. "/config.json").steps == 4, "the config the run goes on with")
  assert(png(run_dir .. "/samples.png") and png(run_dir .. "/graded.png"))
  local n = 0
  for line in io.lines(run_dir .. "/samples.txt") do if line:match("^%s*%d+  a") then n = n + 1 end end
  assert(n == 16, "16 captions beside the grid, got " .. n)
  assert(out:find("shape, small objects: [%d.]+%% of %d+") or out:find("shape, big objects: [%d.]+%% of %d+"), out)

  -- the model it left is usable without the script: its samples.png again, from models.load
  local models = require "tocha.models"
  local m = models.load(run_dir)
  assert(m.path:find("step%-4$"), m.path)
  local prompts = {}
  for line in io.lines(run_dir .. "/samples.txt") do prompts[#prompts + 1] = line:match("^%s*%d+  (.*)$") end
  local again = m:sample { prompts = prompts, seed = 1 } -- the demo draws its grid with seed + 1
  assert(image.encode(image.grid(again, 4)) == T.testing.read_file(run_dir .. "/samples.png"),
    "models.load(run):sample draws the run's own samples.png")
  -- the five-line script of docs/models.md
  local code = T.testing.read_file(T.testing.path("../docs/models.md")):match("```lua\n(%-%- draw%.lua.-)```")
  assert(code, "the draw.lua example in docs/models.md")
  T.testing.write_file(dir .. "/draw.lua", code)
  local bin = arg[-1]:sub(1, 1) == "/" and arg[-1] or os.getenv("PWD") .. "/" .. arg[-1]
  local p = assert(io.popen(string.format("cd '%s' && %s draw.lua '%s' 2>&1; echo rc=$?", dir, bin, run_dir)))
  local dout = p:read("a")
  p:close()
  assert(dout:find("rc=0"), dout)
  assert(image.read(dir .. "/drawn.png").shape[2] == 2 * 16 + 3 * 2, "two images side by side")
  -- and with `tocha sample`
  local sout, src = T.testing.tocha(string.format("sample %s --prompt 'a big red circle on the left' --seed 3 --steps 2 "
    .. "--quiet --out %s/drawn", run_dir, dir))
  assert(src == 0 and sout:find("drawn/00000%-3%.png"), sout)
  local drawn = image.read(dir .. "/drawn/00000-3.png")
  assert(drawn.shape[1] == 16 and drawn.shape[2] == 16, "a 16 x 16 image")
  ok, out = sh("--stepz 3")
  assert(not ok and out:find("steps"), "a mistyped option is refused with a suggestion:\n" .. out)
  os.execute("rm -rf '" .. dir .. "'")
end

tests["t2i_shapes --sample_only draws again with a sampler file, at the grid's size and scale"] = function()
  local dir = T.testing.tmpdir()
  local env = "TOCHA_RUNS=" .. dir .. "/runs "
  local ok, out, rc = sh("--sample_only", env)
  assert(not ok and rc == 2 and out:find("%-%-sample_only draws from a trained model: give %-%-resume"), out)
  ok, out = sh(SMALL .. "--steps 2 --eval_samples 0", env)
  assert(ok, out)
  local run_dir = runs_in(dir .. "/runs/t2i_shapes")[1]
  -- the sigma-space example of docs/schedulers.md, as a file of its own
  local doc = T.testing.read_file(T.testing.path("../docs/schedulers.md"))
  T.testing.write_file(dir .. "/my_euler.lua", assert(doc:match("```lua\n(%-%- my_euler%.lua.-)```")))
  ok, out = sh("--batch 4 --size 16 --eval_samples 4 --checkpoint_every 2 --threads 1 --steps 2 --resume --sample_only "
    .. "--sampler " .. dir .. "/my_euler.lua --sample_steps 4 --grid 2 --grid_scale 3", env)
  assert(ok, out)
  assert(out:find("training: 0 steps") and out:find("my_euler%.lua 4 steps"), out)
  local grid = image.read(run_dir .. "/samples/my_euler-4steps/samples.png")
  assert(grid.shape[1] == 2 * (16 * 3 + 2) + 2 and grid.shape[2] == grid.shape[1], "2 x 2 images of 48 pixels")
  assert(#runs_in(dir .. "/runs/t2i_shapes") == 1)
  ok, out, rc = sh(SMALL .. "--steps 2 --sampler nope", env)
  assert(not ok and rc == 2 and out:find("%-%-sampler must be a sampler %(ddim"), out)
  os.execute("rm -rf '" .. dir .. "'")
end

tests["t2i_shapes --eval_samples 0 finishes the run without grading"] = function()
  local dir = T.testing.tmpdir()
  local ok, out = sh("--steps 1 --batch 2 --size 16 --sample_steps 2 --eval_samples 0 --checkpoint_every 0 --threads 1 "
    .. "--out " .. dir .. "/out", "TOCHA_RUNS=" .. dir .. "/runs ")
  assert(ok, out)
  assert(not out:find("single%-object prompts"), "nothing graded:\n" .. out)
  local run_dir = out:match("run: (%S+)")
  local meta = json.read_file(run_dir .. "/meta.json")
  assert(meta.end_time and meta.metrics["train/seconds"] and meta.metrics["eval/shape"] == nil, "finished, no eval metrics")
  assert(png(dir .. "/out/samples.png"), "the grid is still drawn")
  os.execute("rm -rf '" .. dir .. "'")
end

tests["t2i_shapes --eval_every logs caption accuracy and the shapes FID during training"] = function()
  local dir = T.testing.tmpdir()
  local env = "TOCHA_RUNS=" .. dir .. "/runs "
  -- 66 samples: more than the shapes FID's 64 features, so its covariance has full rank
  local ok, out = sh("--batch 4 --size 16 --steps 3 --eval_every 2 --eval_samples 66 --sample_steps 2 --log_every 1 "
    .. "--checkpoint_every 0 --threads 1 --out " .. dir .. "/out", env)
  assert(ok, out)
  assert(out:find("step 2: shapes FID [%d.]+, shape [%d.]+%%, color"), out)
  assert(not out:find("step 3: shapes FID"), "the last step is graded once, at the end:\n" .. out)
  assert(out:find("shapes FID %(66 samples against 2000 real scenes%): [%d.]+"), out)
  local logged = {}
  for _, row in ipairs(assert(log.read(out:match("run: (%S+)")))) do
    for _, k in ipairs({ "eval/shapes_fid", "eval/shape", "eval/color", "eval/position", "eval/all" }) do
      if row[k] then
        assert(not (logged[k] and logged[k][row.step]), k .. " logged twice at step " .. row.step)
        logged[k] = logged[k] or {}
        logged[k][row.step] = row[k]
      end
    end
  end
  for _, k in ipairs({ "eval/shapes_fid", "eval/shape", "eval/color", "eval/position", "eval/all" }) do
    assert(logged[k] and logged[k][2] and logged[k][3] and not logged[k][1], k .. " at steps 2 and 3 only")
  end
  assert(logged["eval/shapes_fid"][2] > 0, "a distance")
  local rc
  ok, out, rc = sh("--eval_every 5 --eval_samples 0", env)
  assert(not ok and rc == 2 and out:find("%-%-eval_every evaluates %-%-eval_samples prompts"), out)
  os.execute("rm -rf '" .. dir .. "'")
end

tests["t2i_shapes failing before its first step leaves no run directory"] = function()
  if T.cuda.is_available() then skip("needs a machine without a GPU") end
  local dir = T.testing.tmpdir()
  local ok, out = sh("--device cuda", "TOCHA_RUNS=" .. dir .. "/runs ")
  assert(not ok and out:find("no GPU is available"), out)
  assert(#runs_in(dir .. "/runs/t2i_shapes") == 0, "the run's directory was removed")
  os.execute("rm -rf '" .. dir .. "'")
end

return tests
