-- tocha/testing.lua: T.testing, what tocha's tests (and a user's) check with: gradients
-- against finite differences, tensors against references with the largest difference in
-- the message, expected errors, and scratch directories.
local T = require "tocha"

local testing = {}

--- element j (1-based, row-major) of x as a 0-d view, whatever x's strides
local function element(x, j)
  local shape, idx = x.shape, {}
  j = j - 1
  for d = #shape, 1, -1 do
    idx[d] = j % shape[d] + 1
    j = j // shape[d]
  end
  local e = x
  for d = 1, #shape do e = e:select(1, idx[d]) end
  return e
end

--- T.testing.gradcheck(fn, inputs, opts): compares autograd's gradients of fn at inputs
--- (f64 tensors; inputs that do not require grad are passed through) with central finite
--- differences. fn returns a tensor (or several); the check uses a fixed random
--- projection of the outputs. opts: eps (1e-6), atol (1e-5), rtol (1e-3), raise (true).
--- Returns true, or false and a message.
function testing.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  local raise = opts.raise ~= false
  if T.is_tensor(inputs) then inputs = { inputs } end
  local wrt = {} -- the inputs gradients are checked for
  for i, x in ipairs(inputs) do
    if T.is_tensor(x) and x.requires_grad then
      if x.dtype ~= "f64" then error("gradcheck: input " .. i .. " must be f64", 2) end
      wrt[#wrt + 1] = x
    end
  end
  if #wrt == 0 then error("gradcheck: no input requires grad", 2) end
  local rng = T.get_rng_state()
  local function project(outs, weights)
    local total = nil
    for k = 1, outs.n do
      local term = (outs[k]:double() * weights[k]):sum()
      total = total and total + term or term
    end
    return total
  end
  local function run()
    T.set_rng_state(rng) -- the same random numbers on every call (dropout)
    return table.pack(fn(table.unpack(inputs)))
  end
  local outs = run()
  local weights = {}
  T.manual_seed(1234)
  for k = 1, outs.n do weights[k] = T.randn(outs[k].shape, { dtype = "f64" }) end
  local s = project(outs, weights)
  local analytic = s.requires_grad and T.autograd.grad({ s }, wrt, { allow_unused = true }) or {}
  for i, x in ipairs(wrt) do
    local xd, n = x:detach(), x:numel()
    local ga = analytic[i] and analytic[i]:reshape(-1) or T.zeros({ n }, { dtype = "f64" })
    for j = 1, n do
      local e = element(xd, j)
      local orig = e:item()
      local plus, minus
      T.no_grad(function()
        e:fill_(orig + eps)
        plus = project(run(), weights):item()
        e:fill_(orig - eps)
        minus = project(run(), weights):item()
        e:fill_(orig)
      end)
      local numeric = (plus - minus) / (2 * eps)
      local a = ga[j]:item()
      if not (math.abs(a - numeric) <= atol + rtol * math.abs(numeric)) then
        local msg = string.format("gradcheck: input %d, element %d: analytic %.8g vs numeric %.8g", i, j, a, numeric)
        T.set_rng_state(rng)
        if raise then error(msg, 2) end
        return false, msg
      end
    end
  end
  T.set_rng_state(rng)
  return true
end

local function shape_str(t) return "[" .. table.concat(t.shape, ", ") .. "]" end

--- T.testing.tmpdir() -> the path of a new, empty directory under $TMPDIR (default /tmp)
function testing.tmpdir()
  local d, err = T._sys.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/tocha_test")
  if not d then error("T.testing.tmpdir: " .. err, 2) end
  return d
end

-- whether msg contains text, as plain text or, failing that, as a Lua pattern
local function mentions(msg, text)
  if msg:find(text, 1, true) then return true end
  local ok, found = pcall(string.find, msg, text)
  return ok and found ~= nil
end

--- T.testing.raises(expected, f, ...) -> the message: f(...) must raise an error whose message
--- contains expected (plain text, or else a Lua pattern), or each of a list of such strings
function testing.raises(expected, f, ...)
  local list = type(expected) == "table" and expected or { expected }
  local ok, err = pcall(f, ...)
  local want = "'" .. table.concat(list, "', '") .. "'"
  if ok then error("expected an error containing " .. want, 2) end
  local msg = tostring(err)
  for _, text in ipairs(list) do
    if not mentions(msg, text) then error("error '" .. msg .. "' does not contain '" .. text .. "'", 2) end
  end
  return msg
end
testing.assert_raises = testing.raises

--- T.testing.shape_is(t, shape) -> whether t's shape is the list shape
function testing.shape_is(t, shape)
  local s = t.shape
  if #s ~= #shape then return false end
  for i = 1, #s do if s[i] ~= shape[i] then return false end end
  return true
end

--- T.testing.read_file(path) -> its bytes; T.testing.write_file(path, s): raise on failure
function testing.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("read_file: " .. err, 2) end
  local s = f:read("a")
  f:close()
  return s
end

function testing.write_file(path, s)
  local f, err = io.open(path, "wb")
  if not f then error("write_file: " .. err, 2) end
  f:write(s)
  f:close()
end

--- T.testing.tocha(args, prefix) -> output, exit code: runs this tocha binary with a shell
--- command line (stdout and stderr together); prefix goes before it (environment variables)
function testing.tocha(args, prefix)
  local bin = arg and arg[-1] or "./build/tocha"
  local p = assert(io.popen("(" .. (prefix or "") .. bin .. " " .. args .. ") 2>&1; echo \"rc=$?\""))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return (out:gsub("rc=%d+%s*$", "")), rc
end

--- T.testing.path(rel) -> rel beside the file that calls it (a test's fixtures load so from
--- any working directory)
function testing.path(rel)
  local src = debug.getinfo(2, "S").source
  local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/[^/]*$") or "."
  return dir .. "/" .. rel
end

--- T.testing.assert_close(actual, expected, opts): raises with the largest difference.
--- expected: a tensor or a (nested) table; shapes must match unless expected is a flat list,
--- which is compared with actual's elements in row-major order. opts: rtol (1e-5),
--- atol (1e-6), equal_nan (false), msg.
function testing.assert_close(actual, expected, opts)
  opts = opts or {}
  local rtol, atol = opts.rtol or 1e-5, opts.atol or 1e-6
  if not T.is_tensor(actual) then actual = T.tensor(actual, { dtype = "f64" }) end
  local flat_list = type(expected) == "table" and not T.is_tensor(expected) and type(expected[1]) ~= "table"
  if not T.is_tensor(expected) then expected = T.tensor(expected, { dtype = "f64" }) end
  if not flat_list and shape_str(actual) ~= shape_str(expected) then
    error(string.format("assert_close: shape %s vs %s expected (%s)", shape_str(actual), shape_str(expected),
      opts.msg or ""), 2)
  end
  local a, e = actual:detach():double(), expected:detach():double()
  if a:numel() ~= e:numel() then
    error(string.format("assert_close: %d elements vs %d expected (%s)", a:numel(), e:numel(), opts.msg or ""), 2)
  end
  a, e = a:reshape(-1), e:reshape(-1)
  local diff, tol = (a - e):abs(), e:abs() * rtol + atol
  local ok = diff:le(tol):logical_or(a:eq(e)) -- eq: infinities of one sign
  if opts.equal_nan then ok = ok:logical_or(a:ne(a):logical_and(e:ne(e))) end
  local bad = ok:logical_not()
  local nbad = bad:sum():item()
  if nbad > 0 then
    local worst = T.where(bad, diff - tol, -math.huge):argmax():item() -- a NaN wins
    error(string.format("assert_close: %d of %d elements differ; worst at %d: %.8g vs %.8g (%s)",
      nbad, a:numel(), worst, a[worst]:item(), e[worst]:item(), opts.msg or ""), 2)
  end
end

return testing
