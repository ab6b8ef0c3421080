-- test_errors.lua: bad input is a Lua error that names the op and what was wrong, never a
-- crash: wrong argument types, shape mismatches, out-of-range (and 0) dims, dtype mismatches,
-- and a sweep calling every core method and function with junk arguments.
local T = require "tocha"

local errors = T.testing.assert_raises

-- the core's methods and functions (other families are tested in their own files)
local METHODS = {
  "item", "tolist", "numel", "dim", "size", "stride", "is_contiguous", "storage_id", "to", "contiguous", "clone",
  "detach", "float", "double", "long", "copy_", "fill_", "zero_", "uniform_", "normal_", "view", "reshape",
  "expand", "expand_as", "permute", "transpose", "t", "narrow", "select", "squeeze", "unsqueeze", "flatten",
  "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "silu", "gelu", "softplus",
  "sign", "reciprocal", "square", "logical_not", "isfinite", "clamp", "leaky_relu", "pow", "add", "sub", "mul",
  "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "add_", "sub_",
  "mul_", "div_", "clamp_", "sum", "mean", "prod", "logsumexp", "amax", "amin", "max", "min", "argmax", "argmin",
  "var", "std", "norm", "matmul", "bmm", "outer", "backward", "requires_grad_", "split", "chunk", "allclose",
}
local FUNCS = {
  "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "multinomial", "arange", "linspace",
  "tensor", "zeros_like", "ones_like", "rand_like", "randn_like", "empty_like", "full_like", "manual_seed",
  "set_rng_state", "where", "matmul", "bmm", "outer", "maximum", "minimum", "linear",
}
local JUNK = { "abc", {}, { 1, "x" }, 0, -99, 99, 2.5, true, function() end, math.huge, 0 / 0, -1 }

return {
  ["wrong argument types"] = function()
    local x = T.zeros(2, 3)
    errors("shape (table or numbers) expected, got string", x.view, x, "a")
    errors("bad shape: element 2 is not an integer", x.view, x, { 6, "a" })
    errors("shape (table or numbers) expected, got string", T.zeros, "3")
    errors("number has no integer representation", T.zeros, 2.5)
    errors("(tocha.Tensor expected, got table)", T.matmul, x, {})
    errors("(tocha.Tensor expected, got no value)", T.matmul, x)
    errors("unknown dtype 'float'", x.to, x, { dtype = "float" })
    errors("unknown device 'gpu'", T.zeros, 2, { device = "gpu" })
    if not T.cuda.is_available() then errors("device cuda:0 is not available", T.zeros, 2, { device = "cuda" }) end
    errors("tensor or number expected, got table", x.add, x, {})
    errors("gelu: approximate must be \"none\" or \"tanh\"", x.gelu, x, "fast")
    errors("option 'correction' must be a number", x.var, x, 1, false, { correction = "yes" })
    errors("tensor was released (used after <close>)", function()
      local y = T.zeros(2)
      y:release()
      return y + 1
    end)
    errors("expected {seed = integer, offset = integer}", T.set_rng_state, { seed = "x" })
  end,

  ["a method called with '.' instead of ':' says so"] = function()
    local nn, optim = require "tocha.nn", require "tocha.optim"
    local x = T.ones(4, 3)
    local ok, err = pcall(function() local y = x.sum(); return y end)
    assert(not ok and err:find("test_errors%.lua:%d+: bad argument #1 to 'sum' %(tocha%.Tensor expected, got no value%): "
      .. "a method is called with ':', as in x:sum%(...%)"), err)
    errors("a method is called with ':', as in x:view", function() local y = x.view(3, 4); return y end)
    errors("tensor:split: called with '.' (self is a number): write x:split(...)", function() local y = x.split(2); return y end)
    errors("(tocha.Tensor expected, got no value)", T.matmul)
    assert(not select(2, pcall(T.matmul)):find("method"), "T's own function: no method hint")
    local m = nn.Sequential(nn.Linear(3, 2))
    local opt = optim.AdamW(m:parameters())
    local ema = optim.EMA(m)
    for _, case in ipairs({ { function() m.eval() end, "Module:eval: called with '.' (self is nil): write m:eval(...), not m.eval(...)" },
        { function() local p = m.parameters(); return p end, "write m:parameters(...)" },
        { function() m.append() end, "Sequential:append: called with '.' (self is nil)" },
        { function() opt.step() end, "Optimizer:step: called with '.' (self is nil): write opt:step(...)" },
        { function() opt.zero_grad() end, "write opt:zero_grad(...)" },
        { function() ema.update() end, "EMA:update: called with '.'" } }) do
      ok, err = pcall(case[1])
      assert(not ok and err:find("test_errors%.lua:%d+: ") and err:find(case[2], 1, true), err)
    end
    -- the right calls are untouched
    assert(m:eval() == m and #m:parameters() == 2 and x:split(2)[2].shape[1] == 2)
  end,

  ["tensor comparisons with < and <= name the functions to use; == is identity"] = function()
    local a, b = T.tensor({ 1, 2 }), T.tensor({ 2, 1 })
    errors("attempt to compare tensors with '<' or '>': Lua comparisons give one boolean; for an elementwise bool tensor "
      .. "use x:lt(y) or x:gt(y) (T.lt, T.gt)", function() return a < b end)
    errors("use x:lt(y) or x:gt(y)", function() return a > 1 end)
    errors("'<=' or '>=': Lua comparisons give one boolean; for an elementwise bool tensor use x:le(y) or x:ge(y) (T.le, T.ge)",
      function() return 0 >= a end)
    assert(T.lt(a, b):tolist()[1] == true and T.ge(a, 2):tolist()[1] == false and T.ne(a, b):sum():item() == 2)
    assert(T.equal(a, a:clone()) and not T.equal(a, b) and not a:equal(T.tensor({ 1, 2, 3 })))
    assert(a == a and a ~= a:clone(), "== compares identity")
  end,

  ["the library's Lua errors point at the caller's line"] = function()
    local nn, F, optim, lr = require "tocha.nn", require "tocha.nn.functional", require "tocha.optim", require "tocha.lr"
    local D, text, data, json = require "tocha.diffusion", require "tocha.text", require "tocha.data", require "tocha.json"
    local ckpt, log, models, run = require "tocha.checkpoint", require "tocha.log", require "tocha.models", require "tocha.run"
    local lin = nn.Linear(3, 2)
    local opt = optim.AdamW(lin:parameters())
    local dir = T.testing.tmpdir()
    local Mine = nn.Module:extend("Mine")
    function Mine:init(n) if n < 0 then error("Mine: n must be >= 0", 2) end end
    -- each call on one line, not a tail call: the error must name this file and that line
    local calls = {
      function() local m = nn.Linear("a", 2); return m end,
      function() local m = nn.Conv2d(3, 2, 3, { groups = 2 }); return m end,
      function() local m = nn.Conv2d(3, 2, 3, { padding = { 1, 2, 3 } }); return m end,
      function() local m = nn.GroupNorm(3, 4); return m end,
      function() local m = nn.Dropout(2); return m end,
      function() local m = nn.Sequential(5); return m end,
      function() local m = Mine(-1); return m end,
      function() local m = models.CLIPTextModel({ hidden_size = 7, num_attention_heads = 2 }); return m end,
      function() local m = lin:to("i64"); return m end,
      function() local r = lin:load_state_dict({}); return r end,
      function() local y = F.interpolate(T.zeros(2, 3)); return y end,
      function() local o = optim.AdamW(lin:parameters(), { betas = { 0.9 } }); return o end,
      function() local o = optim.SGD(lin:parameters(), { foo = 1 }); return o end,
      function() local o = optim.Adam(5); return o end,
      function() opt:set_lr("x") end,
      function() local f = lr.cosine { lr = -1, steps = 10 }; return f end,
      function() ckpt.save(dir .. "/ck", { model = 5, step = 1 }) end,
      function() local s = D.Euler { beta_schedule = "x" }; return s end,
      function() local s = D.DDIM { foo = 1 }; return s end,
      function() local s = D.DDIM {}; s:set_timesteps(0) end,
      function() local x = D.sample {}; return x end,
      function() local t = text.Tokenizer(5); return t end,
      function() local d = data.subset(5, { 1 }); return d end,
      function() local v = json.decode("{"); return v end,
      function() local w = log.tensorboard(dir .. "/tb"); w:add_scalar(5, 1, 1) end,
      function() local r = run(5); return r end,
      function() local y = T.no_grad(5); return y end,
      function() local y = T.checkpoint(5); return y end,
    }
    for i, f in ipairs(calls) do
      local ok, err = pcall(f)
      local where = "test_errors.lua:" .. debug.getinfo(f, "S").linedefined .. ": "
      assert(not ok and tostring(err):find(where, 1, true), string.format("call %d: %s", i, tostring(err)))
    end
  end,

  ["shape mismatches name the op and the shapes"] = function()
    local a, b = T.zeros(2, 3), T.zeros(4, 3)
    errors("add: shapes [2 x 3] and [4 x 3] cannot be broadcast together (dimension 1: 2 vs 4)", function() return a + b end)
    errors("mul: shapes", function() return a * b end)
    errors("maximum: shapes", T.maximum, a, b)
    errors("where: shapes", T.where, T.ones(5):gt(0), a, a)
    errors("matmul: size mismatch [4 x 3] @ [4 x 3]", T.matmul, b, b)
    errors("copy_: shapes [2 x 3] and [4 x 3] cannot be broadcast", a.copy_, a, b)
    errors("view: shape [7] is invalid for a tensor of shape [2 x 3] (6 elements)", a.view, a, 7)
    errors("backward: a gradient of shape [4 x 3] was given for an output of shape [2 x 3]", function()
      (T.zeros(2, 3, { requires_grad = true }) * 2):backward(b)
    end)
  end,

  ["dims are 1-based: 0 and out-of-range dims are errors"] = function()
    local x = T.zeros(2, 3)
    for _, f in ipairs({
      function() return x:sum(0) end, function() return x:mean({ 1, 0 }) end, function() return x:transpose(0, 1) end,
      function() return x:narrow(0, 1, 1) end, function() return x:select(0, 1) end, function() return x:size(0) end,
      function() return x:unsqueeze(0) end, function() return x:max(0) end, function() return x:argmax(0) end,
      function() return x:permute(0, 1) end, function() return x:flatten(0) end, function() return x:squeeze(0) end,
    }) do
      errors("dimension 0 is invalid", f)
    end
    errors("sum: dimension 3 out of range for a 2-d tensor", x.sum, x, 3)
    errors("sum: dimension -3 out of range for a 2-d tensor", x.sum, x, -3)
    errors("narrow: dimension 5 out of range", x.narrow, x, 5, 1, 1)
    errors("dimension out of range", x.sum, x, 100)
    errors("select: index 3 out of range for dimension 1 of size 2", function() return x[3] end)
    errors("select: index -3 out of range for dimension 1 of size 2", function() return x[-3] end)
    assert(x:sum(-1):numel() == 2 and x:sum(-2):numel() == 3)
  end,

  ["dtype mismatches and unsupported dtypes"] = function()
    errors("matmul: expected floating point tensors of one dtype, got f32 and f16", T.matmul, T.zeros(2, 2), T.zeros(2, 2, { dtype = "f16" }))
    errors("rand: dtype must be floating point (got i64)", T.rand, 2, { dtype = "i64" })
    errors("randn: dtype must be floating point (got bool)", T.randn, 2, { dtype = "bool" })
    errors("requires_grad_: only floating point tensors can require gradients (got u8)", function()
      T.zeros(2, { dtype = "u8" }):requires_grad_()
    end)
    errors("randint: high (3) must be greater than low (5)", T.randint, 5, 3, { 2 })
  end,

  ["huge shapes are errors, not overflows"] = function()
    errors("a tensor of shape [1099511627776 x 1099511627776] is too large", T.zeros, 2 ^ 40, 2 ^ 40)
    errors("is too large", T.zeros, 2 ^ 40, 2 ^ 40, 0) -- its strides would overflow
    errors("is too large", T.empty, 2 ^ 60, 4, { dtype = "f64" })
    errors("expand: a tensor of shape [1099511627776 x 1099511627776] is too large", function()
      return T.zeros(1):expand(2 ^ 40, 2 ^ 40)
    end)
    errors("view: shape [-1 x 4611686018427387904 x 4611686018427387904] is invalid", function()
      return T.zeros(0):view(-1, 2 ^ 62, 2 ^ 62)
    end)
    errors("arange: too many elements", T.arange, 0, 1e30)
    assert(T.zeros(2 ^ 40, 0):numel() == 0 and T.zeros(2 ^ 40, 0):sum(1):numel() == 0)
  end,

  ["junk arguments never crash a core method or function"] = function()
    local calls = 0
    for _, name in ipairs(METHODS) do
      local m = T._methods[name] or assert(T._methods.split and name and T[name] or nil, name)
      for _, j in ipairs(JUNK) do
        for _, x in ipairs({ T.randn(2, 3), T.zeros({}), T.zeros(0, 2), T.ones(2, { dtype = "i32" }) }) do
          pcall(m, x, j)
          pcall(m, x, j, j)
          pcall(m, x, 1, j)
          calls = calls + 3
        end
      end
      pcall(m, 42)
      pcall(m, nil)
    end
    for _, name in ipairs(FUNCS) do
      local f = assert(T[name], name)
      for _, j in ipairs(JUNK) do
        pcall(f, j)
        pcall(f, j, j)
        pcall(f, T.ones(2), j)
        pcall(f, { 2, 2 }, j)
        calls = calls + 4
      end
    end
    T.manual_seed(0)
    assert(calls > 3000 and (T.ones(2) + 1):sum():item() == 4, "still working")
  end,
}
