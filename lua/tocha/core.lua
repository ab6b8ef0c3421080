-- tocha/core.lua: the half of the main module written in Lua: printing, grad mode, split and
-- chunk, custom autograd functions and checkpointing. luaopen_tocha loads it once the C half
-- is open and merges the table it returns into T; the tensor methods written here join the
-- methods table, and T.nn, T.optim, ... load on first use.
local T = require "tocha" -- the C half: luaopen_tocha registers it before loading this file
local methods = T._methods

local core = {}

--- T.version: this tocha's version (recorded in every run's meta.json)
core.version = "0.1.0"

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

local function tensor_tostring(t)
  local cpu = t:detach():to("cpu") -- one copy (and one synchronization) for the whole print
  local body = t:numel() == 0 and "[]" or render(cpu, format_numbers(cpu))
  local shape = "[" .. table.concat(t.shape, ", ") .. "]"
  local extras = { "shape=" .. shape, "dtype=" .. t.dtype }
  if t.device ~= "cpu" then extras[#extras + 1] = "device=" .. t.device end
  if t.grad_fn then extras[#extras + 1] = "grad_fn=<" .. t.grad_fn .. ">"
  elseif t.requires_grad then extras[#extras + 1] = "requires_grad=true" end
  return "tensor(" .. body .. ", " .. table.concat(extras, ", ") .. ")"
end
getmetatable(T.zeros(0)).__tostring = tensor_tostring

---------------------------------------------------------------------------
-- grad mode
---------------------------------------------------------------------------
local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

local function with_grad_mode(on, fn, ...)
  if not callable(fn) then
    error(string.format("%s: expected a function, got a %s", on and "enable_grad" or "no_grad", type(fn)), 2) -- tail-called
  end
  local prev = T.set_grad_enabled(on)
  local res = table.pack(pcall(fn, ...))
  T.set_grad_enabled(prev)
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- core.no_grad(fn, ...) runs fn with gradient recording off and returns its results
function core.no_grad(fn, ...) return with_grad_mode(false, fn, ...) end
function core.enable_grad(fn, ...) return with_grad_mode(true, fn, ...) end

---------------------------------------------------------------------------
-- autocast: mixed precision as a scope (core/ops/autocast.c says which ops do what)
---------------------------------------------------------------------------
local AUTOCAST_DTYPES = { f16 = true, bf16 = true, fp16 = "f16", float16 = "f16", half = "f16", bfloat16 = "bf16" }

local Scope = { __name = "tocha.autocast" }
Scope.__index = Scope
function Scope:close()
  if self.prev then T._autocast(self.prev[1], self.prev[2]); self.prev = nil end
end
Scope.__close = Scope.close

--- T.autocast(dtype, fn, ...) runs fn(...) with matmul, linear, conv and attention in dtype
--- ("f16" or "bf16"; f32 accumulation) and norms, softmax, losses and reductions in f32, and
--- returns its results; parameters stay f32 and get f32 gradients. T.autocast{dtype = "bf16",
--- enabled = true} returns a scope to close (local s <close> = T.autocast{...}), or with a
--- function as second argument runs it. enabled = false turns autocast off inside.
function core.autocast(o, fn, ...)
  local dtype, enabled = o, true
  if type(o) == "table" then
    dtype = o.dtype or "bf16"
    if o.enabled ~= nil then enabled = o.enabled and true or false end
  end
  local dt = AUTOCAST_DTYPES[dtype]
  if not dt then error("autocast: dtype must be \"f16\" or \"bf16\" (got " .. tostring(dtype) .. ")", 2) end
  if dt == true then dt = dtype end
  local on, prev_dt = T._autocast()
  local scope = setmetatable({ prev = { on, prev_dt } }, Scope)
  T._autocast(enabled, dt)
  if fn == nil then
    if type(o) ~= "table" then scope:close(); error("autocast: T.autocast(dtype, fn): give the function to run", 2) end
    return scope
  end
  local res = table.pack(pcall(fn, ...))
  scope:close()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- T.is_autocast_enabled() -> on, dtype
function core.is_autocast_enabled() return T._autocast() end

---------------------------------------------------------------------------
-- methods written in Lua
---------------------------------------------------------------------------
--- x:split(size, dim): pieces of `size` along dim (the last may be smaller);
--- x:split({s1, s2, ...}, dim): pieces of the given sizes
function methods.split(x, size, dim)
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
function methods.chunk(x, n, dim)
  dim = dim or 1
  if math.type(n) ~= "integer" or n <= 0 then error("chunk: number of chunks must be a positive integer", 2) end
  local size = x:size(dim)
  return methods.split(x, math.max(1, (size + n - 1) // n), dim)
end

function methods.allclose(x, y, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  if #x.shape ~= #y.shape then return false end
  for i, s in ipairs(x.shape) do if y.shape[i] ~= s then return false end end
  local a, b = x:detach():double(), y:detach():double()
  local bad = ((a - b):abs() - (b:abs() * rtol + atol)):gt(0)
  return bad:sum():item() == 0
end

function methods.type_as(x, y) return x:to(y.dtype) end

--- x:equal(y) / T.equal(x, y): true when both have the same shape and the same values (as
--- torch.equal; a == b is Lua's identity test, x:eq(y) the elementwise comparison)
function methods.equal(x, y)
  if not T.is_tensor(y) then error("equal: expected a tensor, got " .. type(y), 2) end
  local a, b = x.shape, y.shape
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return x:ne(y):sum():item() == 0
end
-- x.split(2) for x:split(2) names the mistake, as the C methods do
local lua_methods = { split = methods.split, chunk = methods.chunk, allclose = methods.allclose, type_as = methods.type_as,
  equal = methods.equal }
for name, fn in pairs(require("tocha.guard").methods(lua_methods, T.is_tensor, "x", "tensor")) do methods[name] = fn end

core.split, core.chunk, core.allclose, core.equal = methods.split, methods.chunk, methods.allclose, methods.equal

---------------------------------------------------------------------------
-- autograd in Lua: grad, Function, checkpoint
---------------------------------------------------------------------------
core.autograd = {}

--- T.autograd.grad(outputs, inputs, opts): gradients without touching .grad;
--- opts: grad_outputs, retain_graph, allow_unused. Returns a list (nil where unused).
function core.autograd.grad(outputs, inputs, opts)
  opts = opts or {}
  local single = T.is_tensor(inputs)
  local grads = T._autograd_grad(outputs, inputs, opts.grad_outputs, opts.retain_graph, opts.allow_unused)
  if single then return grads[1] end
  return grads
end

function core.autograd.backward(t, grad, opts) return t:backward(grad, opts) end

--- T.autograd.Function{forward = function(ctx, ...) end, backward = function(ctx, gy) end}
--- returns an object whose apply(...) (or call) runs forward without recording and
--- attaches backward, which returns one gradient (or nil) per forward argument.
function core.autograd.Function(def)
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
    local out = core.no_grad(def.forward, ctx, table.unpack(args, 1, args.n))
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
function core.checkpoint(fn, ...)
  if not callable(fn) then error("checkpoint: expected a function or a module, got a " .. type(fn), 2) end
  local args = table.pack(...)
  local rng = T.get_rng_state()
  local amp_on, amp_dt = T._autocast() -- the replay computes in the forward's precision
  local out = core.no_grad(fn, ...)
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
    local y = core.autocast({ dtype = amp_dt, enabled = amp_on }, core.enable_grad, fn, table.unpack(replay, 1, args.n))
    T.set_rng_state(after)
    -- y needs no grad when only non-differentiable ops or no-grad parameters were involved
    if y.requires_grad then core.enable_grad(function() y:backward(gy) end) end
    local res = { nil }
    for k, i in ipairs(pos) do res[k + 1] = replay[i].grad end
    return table.unpack(res, 1, #pos + 1)
  end)
end

---------------------------------------------------------------------------
-- memory, either device: T.cpu and T.cuda hold the rest of each allocator's calls
---------------------------------------------------------------------------
local function allocator(device, fname)
  if device == nil or device == "cpu" then return T.cpu end
  if type(device) == "string" and device:match("^cuda") then return T.cuda end
  error(string.format("%s: unknown device %s (expected \"cpu\" or \"cuda\")", fname, tostring(device)), 3)
end

-- T.cpu.memory_allocated(), ...: single fields of T.cpu.memory_stats(), named as T.cuda's
for name, key in pairs { memory_allocated = "allocated", max_memory_allocated = "max_allocated",
                         memory_reserved = "reserved", max_memory_reserved = "max_reserved" } do
  T.cpu[name] = function() return T.cpu.memory_stats()[key] end
end

--- T.memory_stats([device]): the allocator's stats table of "cpu" (the default) or "cuda"
function core.memory_stats(device) return allocator(device, "memory_stats").memory_stats() end

--- T.empty_cache([device]): gives cached blocks back to the system (both devices without one)
function core.empty_cache(device)
  if device == nil then T.cpu.empty_cache(); T.cuda.empty_cache(); return end
  allocator(device, "empty_cache").empty_cache()
end

-- CUDA graphs (tocha/graph.lua), loaded on first use
function T.cuda.graph(...) return require("tocha.graph").graph(...) end
function T.cuda.CUDAGraph() return require("tocha.graph").CUDAGraph() end

---------------------------------------------------------------------------
-- the library's modules on first use: T.nn, T.optim, T.run{...}, T.testing, ... are
-- require "tocha.nn", ...
---------------------------------------------------------------------------
local LAZY = { nn = true, optim = true, lr = true, checkpoint = true, data = true, image = true, log = true,
               run = true, diffusion = true, text = true, models = true, json = true, testing = true }
setmetatable(T, { __index = function(t, k)
  if not LAZY[k] then return nil end
  local m = require("tocha." .. k)
  rawset(t, k, m)
  return m
end })

return core
