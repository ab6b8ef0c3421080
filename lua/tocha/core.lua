-- tocha/core.lua: the half of the main module written in Lua. luaopen_tocha calls the
-- function returned here with T (the C functions) to add printing, grad-mode helpers,
-- split/chunk, custom autograd functions, checkpointing and gradcheck.
return function(T)
  local M = T._methods
  local meta = getmetatable(T.zeros(0))

  ---------------------------------------------------------------------------
  -- printing: values (abbreviated when large), shape, dtype, device, grad_fn
  ---------------------------------------------------------------------------
  local EDGE, LIMIT = 3, 1000

  local function format_numbers(t)
    local flat = t:detach():to("cpu"):reshape(-1)
    local n = flat:numel()
    local vals = {}
    local step = n > LIMIT and math.max(1, n // LIMIT) or 1
    for i = 1, n, step do vals[#vals + 1] = flat[i]:item() end
    local dt = t.dtype
    if dt == "bool" then return function(v) return tostring(v) end end
    if dt ~= "f32" and dt ~= "f64" and dt ~= "f16" and dt ~= "bf16" then
      return function(v) return string.format("%d", v) end
    end
    local maxabs, minabs, all_int = 0, math.huge, true
    for _, v in ipairs(vals) do
      if v == v and v ~= math.huge and v ~= -math.huge then
        local a = math.abs(v)
        if a > maxabs then maxabs = a end
        if a > 0 and a < minabs then minabs = a end
        if v ~= math.floor(v) then all_int = false end
      end
    end
    local sci = maxabs >= 1e8 or (minabs < 1e-4 and minabs ~= math.huge)
    return function(v)
      if v ~= v then return "nan" end
      if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
      if sci then return string.format("%.4e", v) end
      if all_int then return string.format("%.0f.", v) end
      return string.format("%.4f", v)
    end
  end

  local function render(t, fmt)
    local shape = t.shape
    if #shape == 0 then return fmt(t:item()) end
    local width = 0
    local big = t:numel() > LIMIT
    local function cell_strings(x, d, out)
      local n = shape[d]
      for i = 1, n do
        if not (big and n > 2 * EDGE and i > EDGE and i <= n - EDGE) then
          local s = x[i]
          if d == #shape then
            local str = fmt(s:item())
            if #str > width then width = #str end
          else cell_strings(s, d + 1, out) end
        end
      end
    end
    cell_strings(t, 1)
    local function rec(x, d, indent)
      local n = shape[d]
      local parts = {}
      for i = 1, n do
        if big and n > 2 * EDGE and i == EDGE + 1 then parts[#parts + 1] = "..." end
        if not (big and n > 2 * EDGE and i > EDGE and i <= n - EDGE) then
          local s = x[i]
          if d == #shape then
            local str = fmt(s:item())
            parts[#parts + 1] = string.rep(" ", width - #str) .. str
          else parts[#parts + 1] = rec(s, d + 1, indent .. " ") end
        end
      end
      local sep = d == #shape and ", " or (",\n" .. string.rep("\n", #shape - d - 1) .. indent .. " ")
      return "[" .. table.concat(parts, sep) .. "]"
    end
    return rec(t, 1, "       ")
  end

  meta.__tostring = function(t)
    local cpu = t:detach():to("cpu") -- one copy (and one synchronization) for the whole print
    local body = t:numel() == 0 and "[]" or render(cpu, format_numbers(cpu))
    local shape = "[" .. table.concat(t.shape, ", ") .. "]"
    local extras = { "shape=" .. shape, "dtype=" .. t.dtype }
    if t.device ~= "cpu" then extras[#extras + 1] = "device=" .. t.device end
    if t.grad_fn then extras[#extras + 1] = "grad_fn=<" .. t.grad_fn .. ">"
    elseif t.requires_grad then extras[#extras + 1] = "requires_grad=true" end
    return "tensor(" .. body .. ", " .. table.concat(extras, ", ") .. ")"
  end

  ---------------------------------------------------------------------------
  -- grad mode
  ---------------------------------------------------------------------------
  local function with_grad_mode(on, fn, ...)
    local prev = T.set_grad_enabled(on)
    local res = table.pack(pcall(fn, ...))
    T.set_grad_enabled(prev)
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
  end

  --- T.no_grad(fn, ...) runs fn with gradient recording off and returns its results
  function T.no_grad(fn, ...) return with_grad_mode(false, fn, ...) end
  function T.enable_grad(fn, ...) return with_grad_mode(true, fn, ...) end

  ---------------------------------------------------------------------------
  -- methods written in Lua
  ---------------------------------------------------------------------------
  --- x:split(size, dim): pieces of `size` along dim (the last may be smaller);
  --- x:split({s1, s2, ...}, dim): pieces of the given sizes
  function M.split(x, size, dim)
    dim = dim or 1
    local n = x:size(dim)
    local out, start = {}, 1
    if type(size) == "table" then
      local total = 0
      for _, s in ipairs(size) do total = total + s end
      if total ~= n then error(string.format("split: sizes sum to %d but dimension %d has %d", total, dim, n), 2) end
      for _, s in ipairs(size) do out[#out + 1] = x:narrow(dim, start, s); start = start + s end
      return out
    end
    if math.type(size) ~= "integer" or size <= 0 then error("split: size must be a positive integer", 2) end
    while start <= n do
      local len = math.min(size, n - start + 1)
      out[#out + 1] = x:narrow(dim, start, len)
      start = start + len
    end
    return out
  end

  --- x:chunk(n, dim): n pieces as equal as possible (as torch.chunk)
  function M.chunk(x, n, dim)
    dim = dim or 1
    if math.type(n) ~= "integer" or n <= 0 then error("chunk: number of chunks must be a positive integer", 2) end
    local size = x:size(dim)
    return M.split(x, math.max(1, (size + n - 1) // n), dim)
  end

  function M.allclose(x, y, rtol, atol)
    rtol, atol = rtol or 1e-5, atol or 1e-8
    if #x.shape ~= #y.shape then return false end
    for i, s in ipairs(x.shape) do if y.shape[i] ~= s then return false end end
    local a, b = x:detach():double(), y:detach():double()
    local bad = ((a - b):abs() - (b:abs() * rtol + atol)):gt(0)
    return bad:sum():item() == 0
  end

  function M.type_as(x, y) return x:to(y.dtype) end

  T.split = M.split
  T.chunk = M.chunk
  T.allclose = M.allclose

  ---------------------------------------------------------------------------
  -- autograd in Lua: grad, Function, checkpoint
  ---------------------------------------------------------------------------
  T.autograd = T.autograd or {}

  --- T.autograd.grad(outputs, inputs, opts): gradients without touching .grad;
  --- opts: grad_outputs, retain_graph, allow_unused. Returns a list (nil where unused).
  function T.autograd.grad(outputs, inputs, opts)
    opts = opts or {}
    local single = T.is_tensor(inputs)
    local grads = T._autograd_grad(outputs, inputs, opts.grad_outputs, opts.retain_graph, opts.allow_unused)
    if single then return grads[1] end
    return grads
  end

  function T.autograd.backward(t, grad, opts) return t:backward(grad, opts) end

  --- T.autograd.Function{forward = function(ctx, ...) end, backward = function(ctx, gy) end}
  --- returns an object whose apply(...) (or call) runs forward without recording and
  --- attaches backward, which returns one gradient (or nil) per forward argument.
  function T.autograd.Function(def)
    if type(def) ~= "table" or type(def.forward) ~= "function" or type(def.backward) ~= "function" then
      error("autograd.Function: expects {forward = function(ctx, ...), backward = function(ctx, grad)}", 2)
    end
    local F = {}
    function F.apply(...)
      local args = table.pack(...)
      local ctx = { saved_tensors = {}, needs_input_grad = {} }
      function ctx.save_for_backward(self, ...) self.saved_tensors = table.pack(...) end
      local ins, pos = {}, {}
      for i = 1, args.n do
        if T.is_tensor(args[i]) then
          ins[#ins + 1] = args[i]
          pos[#pos + 1] = i
          ctx.needs_input_grad[i] = args[i].requires_grad
        end
      end
      local out = T.no_grad(def.forward, ctx, table.unpack(args, 1, args.n))
      if not T.is_tensor(out) then error("autograd.Function: forward must return one tensor", 2) end
      return T._custom_attach(out, ins, function(gy)
        local g = table.pack(def.backward(ctx, gy))
        local res = {}
        for k, i in ipairs(pos) do res[k] = g[i] end
        return table.unpack(res, 1, #pos)
      end)
    end
    return setmetatable(F, { __call = function(_, ...) return F.apply(...) end })
  end

  --- T.checkpoint(fn, ...): runs fn(...) without keeping its activations; backward runs
  --- it again (with the same random numbers) to get them. Parameters fn uses through
  --- closures (a module's weights) receive their gradients as usual.
  function T.checkpoint(fn, ...)
    local args = table.pack(...)
    local rng = T.get_rng_state()
    local out = T.no_grad(fn, ...)
    if not T.is_tensor(out) then error("checkpoint: fn must return one tensor", 2) end
    local anchor = T.zeros({}, { requires_grad = true }) -- the node exists even if no input needs grad
    local ins, pos = { anchor }, {}
    for i = 1, args.n do
      if T.is_tensor(args[i]) and args[i].requires_grad then ins[#ins + 1] = args[i]; pos[#pos + 1] = i end
    end
    if not T.is_grad_enabled() then return out end
    return T._custom_attach(out, ins, function(gy)
      local after = T.get_rng_state()
      T.set_rng_state(rng)
      local replay = {}
      for i = 1, args.n do replay[i] = args[i] end
      for _, i in ipairs(pos) do replay[i] = args[i]:detach():requires_grad_(true) end
      local y = T.enable_grad(fn, table.unpack(replay, 1, args.n))
      T.set_rng_state(after)
      -- y needs no grad when only non-differentiable ops or no-grad parameters were involved
      if y.requires_grad then T.enable_grad(function() y:backward(gy) end) end
      local res = { nil }
      for k, i in ipairs(pos) do res[k + 1] = replay[i].grad end
      return table.unpack(res, 1, #pos + 1)
    end)
  end

  ---------------------------------------------------------------------------
  -- testing
  ---------------------------------------------------------------------------
  T.testing = T.testing or {}

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
  function T.testing.gradcheck(fn, inputs, opts)
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
  function T.testing.tmpdir()
    local d, err = T._sys.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/tocha_test")
    if not d then error("T.testing.tmpdir: " .. err, 2) end
    return d
  end

  --- T.testing.assert_raises(text, f, ...): f(...) must raise an error containing text
  function T.testing.assert_raises(text, f, ...)
    local ok, err = pcall(f, ...)
    if ok then error("expected an error containing '" .. text .. "'", 2) end
    if not tostring(err):find(text, 1, true) then
      error("error '" .. tostring(err) .. "' does not contain '" .. text .. "'", 2)
    end
  end

  --- T.testing.assert_close(actual, expected, opts): raises with the largest difference.
  --- expected: a tensor or a (nested) table; shapes must match unless expected is a flat list,
  --- which is compared with actual's elements in row-major order. opts: rtol (1e-5),
  --- atol (1e-6), equal_nan (false), msg.
  function T.testing.assert_close(actual, expected, opts)
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

  ---------------------------------------------------------------------------
  -- the library's modules on first use: T.nn, T.optim, T.run{...}, ... are
  -- require "tocha.nn", ... (T.run and T.log as the issue texts spell them)
  ---------------------------------------------------------------------------
  local LAZY = { nn = true, optim = true, lr = true, checkpoint = true, data = true, image = true, log = true,
                 run = true, diffusion = true, text = true, models = true, json = true }
  setmetatable(T, { __index = function(t, k)
    if not LAZY[k] then return nil end
    local m = require("tocha." .. k)
    rawset(t, k, m)
    return m
  end })
end
