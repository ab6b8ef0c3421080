-- test_autograd.lua: backward (implicit and given gradients), accumulation into .grad,
-- retain_graph, no_grad, detach, requires_grad_, T.autograd.grad, T.checkpoint,
-- T.autograd.Function, and gradcheck itself.
local T = require "tocha"
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

local errors = T.testing.assert_raises

local function f64(t) return T.tensor(t, { dtype = "f64", requires_grad = true }) end

return {
  ["backward: implicit 1 for one-element outputs, a given gradient otherwise"] = function()
    local x = f64({ 1, 2, 3 })
    local y = (x * x):sum()
    y:backward()
    close(x.grad, { 2, 4, 6 })
    local z = f64({ 1, 2 })
    local v = z * 3
    errors("backward: grad can be implicitly created only for one-element outputs (shape [2]); pass a gradient",
      v.backward, v)
    v:backward(T.tensor({ 1, 10 }, { dtype = "f64" }))
    close(z.grad, { 3, 30 })
    local w = f64({ 1, 2 })
    errors("backward: a gradient of shape [3] was given for an output of shape [2]", function()
      (w * 2):backward(T.ones(3, { dtype = "f64" }))
    end)
    -- a gradient of another dtype is converted to the output's
    local h = T.ones(2, { requires_grad = true })
    local out = h * 2
    out:backward(T.ones(2, { dtype = "f64" }))
    assert(h.grad.dtype == "f32")
    close(h.grad, { 2, 2 })
    -- a one-element output of any shape, and a leaf as the root
    local m = f64({ { 3 } })
    local mm = m * m
    mm:backward()
    close(m.grad, { { 6 } })
    local leaf = f64({ 1, 2 })
    leaf:backward(T.tensor({ 5, 6 }, { dtype = "f64" }))
    close(leaf.grad, { 5, 6 })
    errors("backward: the tensor does not require grad", function() T.ones(1):backward() end)
  end,

  ["gradients accumulate in .grad, in place, and never alias other tensors"] = function()
    local x = f64({ 1, 2 })
    local function loss() return (x * x * 0.5):sum() end
    loss():backward()
    local first = x.grad
    loss():backward()
    close(x.grad, { 2, 4 })
    assert(x.grad:storage_id() == first:storage_id(), "accumulated in place")
    close(first, { 2, 4 })
    x.grad = nil
    loss():backward()
    close(x.grad, { 1, 2 })
    -- the gradient handed to backward is not adopted as .grad
    local g = T.tensor({ 1, 1 }, { dtype = "f64" })
    local a = f64({ 1, 2 })
    local b = a + 0
    b:backward(g)
    assert(a.grad:storage_id() ~= g:storage_id())
    g:mul_(10)
    close(a.grad, { 1, 1 })
    -- nor is a gradient shared by two leaves, or a view of one
    local p, q = f64({ 1, 2 }), f64({ 3, 4 })
    local s = (p + q):sum()
    s:backward()
    assert(p.grad:storage_id() ~= q.grad:storage_id())
    p.grad:zero_()
    close(q.grad, { 1, 1 })
    local r = f64({ { 1, 2 }, { 3, 4 } })
    local e = r:view(4) * 1
    e:backward(T.ones(4, { dtype = "f64" }))
    assert(r.grad:is_contiguous())
    -- .grad can be assigned
    x.grad = T.ones(2, { dtype = "f64" })
    loss():backward()
    close(x.grad, { 2, 3 })
    errors("assigned grad has a different shape than the tensor", function() x.grad = T.ones(3) end)
  end,

  ["retain_graph: a second backward needs it"] = function()
    local x = f64({ 1, 2 })
    local y = (x:exp() * x):sum()
    y:backward({ retain_graph = true })
    y:backward()
    close(x.grad, (x:exp() * (x + 1) * 2):detach())
    errors("backward: trying to run backward through the graph a second time", function() y:backward() end)
    -- the same holds for a part of the graph another output shares
    local z = x * x
    local u, v = z:sum(), (z * 2):sum()
    u:backward()
    errors("second time", function() v:backward() end)
  end,

  ["no_grad, enable_grad, set_grad_enabled, detach"] = function()
    local x = T.ones(2, { requires_grad = true })
    local y = T.no_grad(function() return x * 2 end)
    assert(not y.requires_grad and y.grad_fn == nil)
    assert(T.is_grad_enabled())
    local a, b = T.no_grad(function(p, q) return p + q, T.is_grad_enabled() end, x, 1)
    assert(not a.requires_grad and b == false)
    local z = T.no_grad(function() return T.enable_grad(function() return x * 2 end) end)
    assert(z.requires_grad)
    errors("boom", T.no_grad, function() error("boom") end)
    assert(T.is_grad_enabled(), "restored after an error")
    assert(T.set_grad_enabled(false) == true and not T.is_grad_enabled())
    assert(not (x * 2).requires_grad)
    T.set_grad_enabled(true)
    local d = (x * 2):detach()
    assert(not d.requires_grad and d.is_leaf and d.grad_fn == nil)
    local s = x * 1
    assert(s:detach():storage_id() == s:storage_id())
    local w = d * x
    w:sum():backward()
    close(x.grad, { 2, 2 })
  end,

  ["requires_grad_ and is_leaf"] = function()
    local x = T.ones(2)
    assert(not x.requires_grad)
    assert(x:requires_grad_():storage_id() == x:storage_id()) -- returns x
    assert(x.requires_grad and x.is_leaf)
    x:requires_grad_(false)
    assert(not x.requires_grad)
    x.requires_grad = true
    assert(x.requires_grad)
    local y = x * 2
    assert(y.requires_grad and not y.is_leaf and y.grad_fn == "MulScalarBackward")
    errors("requires_grad_: cannot turn off requires_grad on a non-leaf tensor; use detach()", y.requires_grad_, y, false)
    errors("requires_grad_: only floating point tensors can require gradients (got i64)", function()
      T.ones(2, { dtype = "i64" }):requires_grad_()
    end)
    errors("only floating point tensors can require gradients", T.zeros, 2, { dtype = "i32", requires_grad = true })
    assert(T.ones(2, { dtype = "f16", requires_grad = true }).requires_grad)
    -- an integer result of a differentiable input does not require grad
    assert(not x:argmax().requires_grad and not x:gt(0).requires_grad)
  end,

  ["T.autograd.grad does not touch .grad"] = function()
    local x, w = f64({ 1, 2, 3 }), f64({ 0.5, -1, 2 })
    local h = x * w -- a non-leaf input
    local y = (h * h):sum()
    local g = T.autograd.grad(y, { x, h }, { retain_graph = true })
    close(g[1], (w * w * x * 2):detach())
    close(g[2], (h * 2):detach())
    assert(x.grad == nil and w.grad == nil and h.grad == nil)
    local gw = T.autograd.grad({ y }, w) -- a single input gives a single tensor
    assert(T.is_tensor(gw))
    close(gw, (x * x * w * 2):detach())
    assert(w.grad == nil)
    -- unused inputs
    local u = f64({ 1 })
    local z = (x * 2):sum()
    errors("autograd.grad: input 2 was not used in the graph (pass allow_unused = true)", function()
      T.autograd.grad(z, { x, u }, { retain_graph = true })
    end)
    local r = T.autograd.grad(z, { x, u }, { allow_unused = true })
    close(r[1], { 2, 2, 2 })
    assert(r[2] == nil)
    -- grad_outputs, several outputs
    local p = f64({ 1, 2 })
    local o1, o2 = p * 3, p * p
    local gs = T.autograd.grad({ o1, o2 }, { p }, { grad_outputs = { T.ones(2, { dtype = "f64" }), T.tensor({ 1, 0 }, { dtype = "f64" }) } })
    close(gs[1], { 3 + 2, 3 })
    errors("autograd.grad: input 1 does not require grad", function() T.autograd.grad(o1:sum(), { T.ones(2) }) end)
    errors("autograd.grad: output 1 does not require grad", function() T.autograd.grad(T.ones(1), { p }) end)
  end,

  ["T.checkpoint: the same gradients, closures and randomness included"] = function()
    local w1 = T.randn(4, 4, { dtype = "f64", requires_grad = true })
    local w2 = T.randn(4, { dtype = "f64", requires_grad = true })
    local function block(x, scale) -- dropout-like: draws random numbers in its forward
      local mask = T.rand(x.shape, { dtype = "f64" }):gt(0.3):double()
      return (T.matmul(x, w1):tanh() * mask * scale + w2):sin()
    end
    local x = T.randn(3, 4, { dtype = "f64", requires_grad = true })
    T.manual_seed(11)
    local plain = block(x, 2):sum()
    plain:backward()
    local gx, g1, g2 = x.grad, w1.grad, w2.grad
    x.grad, w1.grad, w2.grad = nil, nil, nil
    T.manual_seed(11)
    local y = T.checkpoint(block, x, 2)
    assert(y.requires_grad and y.grad_fn == "CustomFunctionBackward")
    close(y:sum(), plain)
    T.rand(5) -- the stream moves on between forward and backward
    local before = T.get_rng_state()
    y:sum():backward()
    close(x.grad, gx, { rtol = 1e-12 })
    close(w1.grad, g1, { rtol = 1e-12 })
    close(w2.grad, g2, { rtol = 1e-12 })
    local now = T.get_rng_state()
    assert(now.seed == before.seed and now.offset == before.offset, "backward leaves the caller's stream where it was")
    -- inputs that do not require grad: parameters still get theirs
    w1.grad = nil
    local c = T.checkpoint(function(a) return T.matmul(a, w1) end, T.ones(2, 4, { dtype = "f64" }))
    c:sum():backward()
    close(w1.grad, T.full({ 4, 4 }, 2, { dtype = "f64" }))
    -- under no_grad a checkpoint is a plain call
    local n = T.no_grad(function() return T.checkpoint(block, x, 1) end)
    assert(not n.requires_grad)
    -- nothing differentiable inside: backward is a no-op rather than an error
    local k = T.checkpoint(function(a) return a:gt(0):double() end, x)
    k:sum():backward()
  end,

  ["T.autograd.Function with ctx:save_for_backward"] = function()
    local Cube = T.autograd.Function {
      forward = function(ctx, x, k)
        ctx:save_for_backward(x)
        ctx.k = k
        return x * x * x * k
      end,
      backward = function(ctx, gy)
        local x = ctx.saved_tensors[1]
        return gy * x * x * 3 * ctx.k, nil
      end,
    }
    local x = f64({ 1, -2, 0.5 })
    local y = Cube.apply(x, 2)
    assert(y.grad_fn == "CustomFunctionBackward")
    y:sum():backward()
    close(x.grad, { 6, 24, 1.5 })
    assert(gradcheck(function(a) return Cube(a, 1.5) end, { f64({ 0.3, -1.2 }) }))
    -- two tensor inputs, one without grad
    local Mul = T.autograd.Function {
      forward = function(ctx, a, b) ctx:save_for_backward(a, b); return a * b end,
      backward = function(ctx, gy)
        local a, b = table.unpack(ctx.saved_tensors)
        assert(ctx.needs_input_grad[1] and not ctx.needs_input_grad[2])
        return gy * b, gy * a
      end,
    }
    local p = f64({ 2, 3 })
    Mul(p, T.tensor({ 4, 5 }, { dtype = "f64" })):sum():backward()
    close(p.grad, { 4, 5 })
    -- errors inside a Lua backward surface as Lua errors
    local Bad = T.autograd.Function {
      forward = function(ctx, a) return a * 1 end,
      backward = function(ctx, gy) error("no derivative here") end,
    }
    errors("no derivative here", function() Bad(f64({ 1 })):sum():backward() end)
    local Shape = T.autograd.Function {
      forward = function(ctx, a) return a * 1 end,
      backward = function(ctx, gy) return T.ones(5, { dtype = "f64" }) end,
    }
    errors("a gradient of shape [5] does not fit a tensor of shape [2]", function()
      Shape(f64({ 1, 2 })):sum():backward()
    end)
    errors("autograd.Function: expects {forward", T.autograd.Function, { forward = 1 })
  end,

  ["gradcheck catches a wrong derivative"] = function()
    local Wrong = T.autograd.Function {
      forward = function(ctx, x) ctx:save_for_backward(x); return x:sin() end,
      backward = function(ctx, gy) return gy * ctx.saved_tensors[1]:cos() * 1.01 end,
    }
    local x = f64({ 0.1, 0.7, -0.4 })
    local ok, msg = gradcheck(function(a) return Wrong(a) end, { x }, { raise = false })
    assert(ok == false and msg:find("gradcheck: input 1, element 1: analytic", 1, true), msg)
    errors("gradcheck: input 1, element 1", gradcheck, function(a) return Wrong(a) end, { x })
    assert(gradcheck(function(a) return a:sin() end, { x }))
    errors("gradcheck: input 1 must be f64", gradcheck, function(a) return a end, { T.ones(2, { requires_grad = true }) })
    -- inputs that need no gradient are passed through; several outputs are all checked
    local k = T.tensor({ 1, 2, 3 }, { dtype = "i64" })
    assert(gradcheck(function(a, idx) return a * idx, a:exp() end, { x, k }))
    -- a non-contiguous input is perturbed in place, element by element
    local nc = T.randn(3, 2, { dtype = "f64" }):t():requires_grad_()
    assert(not nc:is_contiguous() and gradcheck(function(a) return a:exp() * a end, { nc }))
  end,

  ["a long chain backpropagates and frees without deep recursion"] = function()
    local x = f64({ 1 })
    local y = x
    for _ = 1, 20000 do y = y * 1.0 + 0.0 end
    y:sum():backward()
    close(x.grad, { 1 })
  end,
}
