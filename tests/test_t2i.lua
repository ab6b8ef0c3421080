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
    -- evaluations during training: caption accuracy and the shapes FID (more samples than its
    -- 64 features), printed and logged
    ok, out = sh(string.format("--batch 4 --size 16 --steps 2 --eval_every 1 --eval_samples 66 --sample_steps 2 "
      .. "--checkpoint_every 0 --out %s/out2 --threads 1", dir), env)
    assert(ok, out)
    assert(out:find("step 1: shapes FID [%d.]+, shape"), out)
    assert(out:find("shapes FID %(66 samples against 2000 real scenes%): [%d.]+"), out)
    ok, out = sh("--stepz 3")
    assert(not ok and out:find("steps"), "a mistyped option is refused with a suggestion:\n" .. out)
    os.execute("rm -rf '" .. dir .. "'")
  end,
}
