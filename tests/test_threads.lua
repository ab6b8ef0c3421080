-- tests/test_threads.lua: the CPU's threading: loops forced parallel at every size
-- (TOCHA_PAR_MIN=0, two threads) give what the default minima give, and the runner makes
-- OpenMP's idle threads sleep unless the user chose otherwise.
local T = require "tocha"
local tocha_bin = arg and arg[-1] or "./build/tocha"

local function run(env, code)
  local p = assert(io.popen(env .. " " .. tocha_bin .. " -e '" .. code .. "'"))
  local out = p:read("a")
  p:close()
  return out
end

-- odd sizes, so every split leaves remainders; each result printed to 9 digits
local PROBE = [[
local T = require "tocha"
local F = T.nn.functional
T.set_num_threads(2)
T.manual_seed(7)
local out = {}
local function put(t) out[#out + 1] = string.format("%.9g", t:double():sum():item()) end
local x, b = T.randn({ 37, 1031 }), T.randn({ 37, 1 })
put(x + b); put(x:exp()); put(x:t():contiguous()); put(x:sum(1)); put(x:sum(2)); put(F.softmax(x, 2))
put(F.layer_norm(x, { 1031 })); put(T.randn({ 70001 }))
local img = T.randn({ 3, 5, 7, 9 })
put(F.interpolate(img, { scale_factor = 2, mode = "nearest" })); put(F.avg_pool2d(img, 2))
local act = T.randn({ 6, 12, 5, 7 })
put(F.quick_gelu(act)); put(F.group_norm(act, 4)); put(T.cat({ act, act * 2 }, 2))
put(act:permute(1, 3, 4, 2):contiguous() * T.arange(1, 12 * 5 * 7 * 6 + 1):view(6, 5, 7, 12))
put(x:sum()) -- 38K elements: the chunked sum
io.write(table.concat(out, " "))
]]

return {
  ["loops forced parallel at every size give the results of the measured minima"] = function()
    local default, forced = run("", PROBE), run("TOCHA_PAR_MIN=0", PROBE)
    assert(#default > 0 and select(2, default:gsub(" ", "")) == 14, default)
    -- sums and norms may round differently when split across threads; the rest is exact
    local a, b = {}, {}
    for v in default:gmatch("%S+") do a[#a + 1] = tonumber(v) end
    for v in forced:gmatch("%S+") do b[#b + 1] = tonumber(v) end
    assert(#a == #b, forced)
    for i = 1, #a do
      assert(math.abs(a[i] - b[i]) <= 1e-6 * math.max(1, math.abs(a[i])),
        string.format("result %d: %.9g by default, %.9g forced parallel", i, a[i], b[i]))
    end
  end,

  ["the runner bounds OpenMP's spinning unless the user chose"] = function()
    local code = [[io.write(os.getenv("OMP_WAIT_POLICY") or "unset", " ", os.getenv("GOMP_SPINCOUNT") or "unset")]]
    assert(run("env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT", code) == "unset 20000")
    assert(run("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=active", code) == "active unset")
    assert(run("env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=1000", code) == "unset 1000")
    assert(T.get_num_threads() >= 1)
  end,
}
