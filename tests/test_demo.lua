-- tests/test_demo.lua: the MLP demo (experiments/mlp.lua) trains to a useful accuracy, and a
-- long training loop's resident memory stays flat without the script calling collectgarbage.
local T = require "tocha"

local function run(args) -- its run directory goes to a scratch directory
  local out, rc = T.testing.tocha(T.testing.path("../experiments/mlp.lua") .. " " .. args,
    "TOCHA_RUNS=" .. T.testing.tmpdir() .. " ")
  assert(rc == 0, "demo failed:\n" .. out)
  return out
end

return {
  ["mlp demo learns the spirals"] = function()
    local out = run("--steps 600 --quiet")
    local acc = tonumber(out:match("test accuracy: ([%d.]+)%%"))
    assert(acc and acc > 90 and acc <= 100, "accuracy out of range:\n" .. out)
  end,

  ["memory stays flat over 5000 steps"] = function()
    if os.getenv("ASAN_OPTIONS") then skip("resident memory means nothing under AddressSanitizer's quarantine") end
    local out = run("--steps 5000 --quiet --rss --batch 64 --hidden 32")
    local early = tonumber(out:match("rss_at_200_kb (%d+)"))
    local late = tonumber(out:match("rss_at_end_kb (%d+)"))
    assert(early and late, out)
    assert(late <= early * 1.10, string.format("RSS grew from %d kB at step 200 to %d kB at the end", early, late))
  end,
}
