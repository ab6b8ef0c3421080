-- cuda_harness.lua: what the GPU suite's files (test_cuda*.lua) share: the
-- device under test, tolerances, comparisons against the CPU, and the table-driven harness that
-- runs an op on the device and on the CPU in f64, forward and backward. Environment:
--   TOCHA_CUDA_DTYPES="f32 bf16"  the float cases in these dtypes only (default: f64 f32 f16 bf16)
--   TOCHA_CUDA_VERBOSE=1          print every check's largest error, not only the failures
--   TOCHA_CUDA_QUICK=1            no training run (for compute-sanitizer, where launches are slow)
--   TOCHA_CUDA_DEVICE=cpu         the CPU stands in for the GPU (checks the harness itself)
local T = require "tocha"

local DEV = os.getenv("TOCHA_CUDA_DEVICE") or "cuda"
local VERBOSE = os.getenv("TOCHA_CUDA_VERBOSE") == "1"
local QUICK = os.getenv("TOCHA_CUDA_QUICK") == "1"
local DTYPES = {}
for d in (os.getenv("TOCHA_CUDA_DTYPES") or "f64 f32 f16 bf16"):gmatch("%S+") do DTYPES[d] = true end
local ALL_FLOAT = { "f64", "f32", "f16", "bf16" }
-- relative tolerances by dtype (f64 tight enough to catch a wrong formula, the half types at
-- their rounding), before a case's own factor; the error is taken
-- against |reference| + rms(reference), so elements near zero are judged at the tensor's scale
local TOL = { f64 = 1e-9, f32 = 1e-5, f16 = 1e-2, bf16 = 2e-2 }

---------------------------------------------------------------------------------------------
-- the device
---------------------------------------------------------------------------------------------
local function need_gpu()
  if DEV == "cpu" then return end
  if not T.cuda then skip("this tocha has no T.cuda (built without CUDA)") end
  if not T.cuda.is_available() then skip("no CUDA GPU (T.cuda.is_available() is false)") end
  -- f32 matmuls are held to f32's tolerance, so TF32 (off by default) must stay off
  T.backends.allow_tf32(false)
end

local function sync() if DEV ~= "cpu" then T.cuda.synchronize() end end
local function on_dev(t) return t.device:sub(1, #DEV) == DEV end
local function is_float(dt) return dt == "f64" or dt == "f32" or dt == "f16" or dt == "bf16" end
local function count(b) return b:to("i64"):sum():item() end
local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end
local function same_shape(a, b) return shape_str(a) == shape_str(b) end
local function fail(...) error(string.format(...), 0) end

---------------------------------------------------------------------------------------------
-- comparing
---------------------------------------------------------------------------------------------
--- the largest |a - e| / (|e| + rms(e)) over the elements; NaNs and infinities of e must be
--- matched exactly, and a may have none elsewhere (else math.huge)
local function rel_err(a, e)
  a, e = a:detach():to("cpu"):double():reshape(-1), e:detach():to("cpu"):double():reshape(-1)
  if e:numel() == 0 then return 0 end
  local fin = e:isfinite()
  local same = a:eq(e):logical_or(a:ne(a):logical_and(e:ne(e)))
  if count(fin:logical_not():logical_and(same:logical_not())) > 0 then return math.huge end
  local e0, a0 = T.where(fin, e, 0), T.where(fin, a, 0)
  if count(a0:isfinite():logical_not()) > 0 then return math.huge end
  local rms = math.sqrt((e0 * e0):mean():item())
  if rms == 0 then rms = 1 end
  return ((a0 - e0):abs() / (e0:abs() + rms)):max():item()
end

--- how many elements differ (values; NaN equals NaN); a and e on any device, one dtype
local function n_diff(a, e)
  a, e = a:detach():to("cpu"), e:detach():to("cpu")
  local ne = a:ne(e)
  if is_float(e.dtype) then ne = ne:logical_and(a:eq(a):logical_or(e:eq(e))) end
  return count(ne)
end

--- a equals e element for element, with e's shape and dtype
local function assert_same(a, e, what)
  if not same_shape(a, e) then fail("%s: shape %s, expected %s", what, shape_str(a), shape_str(e)) end
  if a.dtype ~= e.dtype then fail("%s: dtype %s, expected %s", what, a.dtype, e.dtype) end
  local nd = n_diff(a, e)
  if nd > 0 then fail("%s: %d of %d elements differ from the CPU's", what, nd, e:numel()) end
end

---------------------------------------------------------------------------------------------
-- the table-driven harness
---------------------------------------------------------------------------------------------
-- A case: { name, make = function() return {inputs} end, f = function(inputs...) return outputs end,
--   dtypes = {...} (default: all floats), tol = factor, gtol = factor for gradients (default tol),
--   nograd = {[i] = true}: input i gets no gradient; grad = false: no backward at all;
--   fixed = {[i] = dtype}: input i keeps this dtype on the device (mixed-dtype ops);
--   once = true: no float inputs, run once }.
-- f64 tensors from make are the float data: rounded to the dtype under test, then given to f on
-- the device and, in f64, on the CPU (the reference); other tensors go to both as they are.
-- f runs after T.manual_seed(SEED_F) on both sides, so random ops inside it draw alike.
local SEED_MAKE, SEED_F, SEED_GRAD = 11, 23, 37
local function pack(...) return { n = select("#", ...), ... } end

local function check_like(a, e, what, dtype)
  if not T.is_tensor(a) then fail("%s is not a tensor", what) end
  if not same_shape(a, e) then fail("%s: shape %s, expected %s", what, shape_str(a), shape_str(e)) end
  if not on_dev(a) then fail("%s is on %s", what, a.device) end
  if dtype and a.dtype ~= dtype then fail("%s: dtype %s, expected %s", what, a.dtype, dtype) end
end

local function run_case(c, dt, check)
  T.manual_seed(SEED_MAKE)
  local raw = c.make()
  local n = #raw
  local rin, din, wants = {}, {}, {}
  for i = 1, n do
    local x = raw[i]
    if T.is_tensor(x) and x.dtype == "f64" then
      local q = x:to(c.fixed and c.fixed[i] or dt)
      rin[i], din[i] = q:double():clone(), q:clone():to(DEV)
      if c.grad ~= false and not (c.nograd and c.nograd[i]) then
        rin[i]:requires_grad_(); din[i]:requires_grad_(); wants[#wants + 1] = i
      end
    elseif T.is_tensor(x) then rin[i], din[i] = x, x:to(DEV)
    else rin[i], din[i] = x, x end
  end
  T.manual_seed(SEED_F)
  local ro = pack(c.f(table.unpack(rin, 1, n)))
  T.manual_seed(SEED_F)
  local dout = pack(c.f(table.unpack(din, 1, n)))
  local tol, gtol = TOL[dt] * (c.tol or 1), TOL[dt] * (c.gtol or c.tol or 1)
  local graded = {}
  for k = 1, ro.n do
    local e, a, what = ro[k], dout[k], "output " .. k
    if is_float(e.dtype) then
      check_like(a, e, what, e.dtype == "f64" and not c.fixed and dt or nil)
      check(what, rel_err(a, e), tol)
      if e.requires_grad then graded[#graded + 1] = k end
    else
      check_like(a, e, what, e.dtype)
      check(what .. " (exact)", n_diff(a, e) > 0 and math.huge or 0, 0)
    end
  end
  if #wants == 0 or #graded == 0 then return end
  -- one backward through every output: the sum of (output k * a random gy_k), whose gradient
  -- with respect to output k is gy_k exactly, in any dtype
  T.manual_seed(SEED_GRAD)
  local lr, ld
  for _, k in ipairs(graded) do
    local gy = T.randn(ro[k].shape, { dtype = "f64" }):to(dout[k].dtype)
    local tr, td = (ro[k] * gy:double()):sum(), (dout[k] * gy:to(DEV)):sum()
    lr, ld = lr and lr + tr or tr, ld and ld + td or td
  end
  lr:backward()
  ld:backward()
  for _, i in ipairs(wants) do
    local ge, ga, what = rin[i].grad, din[i].grad, "grad of input " .. i
    if (ge == nil) ~= (ga == nil) then fail("%s %s", what, ga and "exists on the device only" or "is missing") end
    if ge then
      check_like(ga, ge, what, din[i].dtype)
      check(what, rel_err(ga, ge), gtol)
    end
  end
end

local function dtypes_of(c)
  if c.once then return { "f32" } end
  local out = {}
  for _, d in ipairs(c.dtypes or ALL_FLOAT) do if DTYPES[d] then out[#out + 1] = d end end
  return out
end

--- a test running every case in every dtype; on failure, one line per failed check with its
--- largest relative error
local function suite(cases)
  return function()
    need_gpu()
    local fails, checks = {}, 0
    for _, c in ipairs(cases) do
      for _, dt in ipairs(dtypes_of(c)) do
        local label = c.name .. (c.once and "" or " [" .. dt .. "]")
        local ok, err = pcall(run_case, c, dt, function(what, e, tol)
          checks = checks + 1
          local bad = not (e <= tol)
          if bad then
            fails[#fails + 1] = string.format("%s %s: largest relative error %.3g (tolerance %.3g)", label, what, e,
              tol)
          end
          if VERBOSE then
            print(string.format("  %-4s %-58s %-16s %.3g / %.3g", bad and "BAD" or "ok", label, what, e, tol))
          end
        end)
        if not ok then
          checks = checks + 1
          fails[#fails + 1] = label .. ": " .. tostring(err)
          if VERBOSE then print("  ERR  " .. label .. ": " .. tostring(err)) end
        end
      end
    end
    sync()
    if #fails > 0 then fail("%d of %d checks failed:\n  %s", #fails, checks, table.concat(fails, "\n  ")) end
  end
end

--- adds a case to list: make returns the inputs, f the outputs; o holds the optional fields
local function case(list, name, make, f, o)
  o = o or {}
  o.name, o.make, o.f = name, make, f
  list[#list + 1] = o
end

--- a key padding mask [B, 1, 1, S] (bool): batch b attends to its first keep[b] keys
local function key_padding(S, keep)
  local rows = {}
  for b, n in ipairs(keep) do
    rows[b] = {}
    for s = 1, S do rows[b][s] = s <= n end
  end
  return T.tensor(rows):view(#keep, 1, 1, S)
end

return {
  DEV = DEV, VERBOSE = VERBOSE, QUICK = QUICK, DTYPES = DTYPES, ALL_FLOAT = ALL_FLOAT, TOL = TOL,
  need_gpu = need_gpu, sync = sync, on_dev = on_dev, is_float = is_float, count = count, same_shape = same_shape,
  shape_str = shape_str,
  fail = fail, rel_err = rel_err, n_diff = n_diff, assert_same = assert_same, suite = suite, case = case,
  key_padding = key_padding,
}
