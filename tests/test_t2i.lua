-- tests/test_t2i.lua: a short run of the default experiment, end to end: train a few
-- steps, checkpoint, resume, sample a grid and grade it (the accuracy of so short a run
-- means nothing; that every piece runs does).
local T = require "tocha"
local script = T.testing.path("../experiments/t2i_shapes.lua")

local function sh(args, prefix)
  local out, rc = T.testing.tocha(script .. " " .. args, prefix)
  return rc == 0, out
end

return {
  ["t2i_shapes trains, checkpoints, resumes and grades its samples"] = function()
    local dir = T.testing.tmpdir()
    local env = "TOCHA_RUNS=" .. dir .. "/runs "
    local base = string.format("--batch 4 --size 16 --eval_samples 4 --sample_steps 3 --checkpoint_every 2 "
      .. "--checkpoint_dir %s/ck --out %s/out --threads 1 ", dir, dir)
    local ok, out = sh(base .. "--steps 2", env)
    assert(ok, out)
    assert(out:find("held%-out single%-object prompts") and out:find("samples: "), out)
    ok, out = sh(base .. "--steps 4 --resume", env)
    assert(ok, out)
    assert(out:find("resumed from .*step%-2 at step 2"), out)
    local f = io.open(dir .. "/out/samples.png", "rb")
    assert(f and f:read(8) == "\137PNG\r\n\26\n", "samples.png written")
    f:close()
    f = assert(io.open(dir .. "/out/samples.txt"))
    local n = 0
    for line in f:lines() do if line:match("^%s*%d+  a") then n = n + 1 end end
    f:close()
    assert(n == 16, "16 captions beside the grid, got " .. n)
    f = io.open(dir .. "/out/graded.png", "rb")
    assert(f and f:read(8) == "\137PNG\r\n\26\n", "graded.png written")
    f:close()
    assert(out:find("shape, small objects: [%d.]+%% of %d+") or out:find("shape, big objects: [%d.]+%% of %d+"), out)
    ok, out = sh("--stepz 3")
    assert(not ok and out:find("steps"), "a mistyped option is refused with a suggestion:\n" .. out)
    os.execute("rm -rf '" .. dir .. "'")
  end,

  ["t2i_shapes --eval_samples 0 finishes the run without grading"] = function()
    local dir = T.testing.tmpdir()
    local ok, out = sh("--steps 1 --batch 2 --size 16 --sample_steps 2 --eval_samples 0 --checkpoint_every 0 --threads 1 "
      .. "--out " .. dir .. "/out", "TOCHA_RUNS=" .. dir .. "/runs ")
    assert(ok, out)
    assert(not out:find("single%-object prompts"), "nothing graded:\n" .. out)
    local run_dir = out:match("run: (%S+)")
    local meta = require("tocha.json").decode(T.testing.read_file(run_dir .. "/meta.json"))
    assert(meta.end_time and meta.metrics["train/seconds"] and meta.metrics["eval/shape"] == nil, "finished, no eval metrics")
    assert(T.testing.read_file(dir .. "/out/samples.png"):sub(1, 4) == "\137PNG", "the grid is still drawn")
    os.execute("rm -rf '" .. dir .. "'")
  end,
}
