-- test_views.lua: strided views never copy (view, reshape, transpose, permute, narrow, select,
-- x[i], expand, squeeze, unsqueeze, flatten share storage with their base), writes through a
-- view reach the base, reshape copies only when it must, and every view's gradient.
local T = require "tocha"
local shape_is = T.testing.shape_is
local close, gradcheck = T.testing.assert_close, T.testing.gradcheck

local errors = T.testing.assert_raises

local function f64(...) return T.randn({ ... }, { dtype = "f64", requires_grad = true }) end

return {
  ["views share storage and never copy"] = function()
    local x = T.arange(0, 24):view(2, 3, 4)
    local id = x:storage_id()
    local views = {
      x:view(6, 4), x:view({ 4, -1 }), x:reshape(24), x:transpose(1, 3), x:permute(3, 1, 2), x:permute({ 2, 3, 1 }),
      x:narrow(2, 2, 2), x:select(1, 2), x[2], x[-1], x:unsqueeze(1):expand(5, 2, 3, 4), x:unsqueeze(4),
      x:view(2, 1, 3, 4):squeeze(), x:view(2, 1, 3, 4):squeeze(2), x:flatten(), x:flatten(2, 3), x:t(), x.T,
      x:detach(), x:contiguous(), x[1][2], x:narrow(3, 1, 2):view(2, 3, 2), x:narrow(3, 1, 2):flatten(1, 2),
    }
    for i, v in ipairs(views) do assert(v:storage_id() == id, "view " .. i .. " copied") end
    -- values
    assert(x:transpose(1, 3)[4][3][2]:item() == x[2][3][4]:item())
    assert(x:permute(3, 1, 2)[4][2][3]:item() == 23)
    assert(shape_is(x:permute(3, 1, 2), { 4, 2, 3 }) and shape_is(x:narrow(2, 2, 2), { 2, 2, 4 }))
    assert(x:narrow(2, 2, 2)[1][1][1]:item() == 4 and x:select(3, 4)[2][3]:item() == 23)
    assert(x[-1][-1][-1]:item() == 23 and x[1][1][1]:item() == 0)
    assert(shape_is(x:unsqueeze(1):expand(5, 2, 3, 4), { 5, 2, 3, 4 }))
    assert(x:unsqueeze(1):expand(5, -1, -1, -1)[5][2][3][4]:item() == 23)
    assert(shape_is(x:unsqueeze(-1), { 2, 3, 4, 1 }) and shape_is(x:unsqueeze(2), { 2, 1, 3, 4 }))
    assert(shape_is(x:flatten(2), { 2, 12 }) and shape_is(x:flatten(1, 2), { 6, 4 }))
    assert(shape_is(T.zeros(1, 3, 1):squeeze(), { 3 }) and shape_is(T.zeros(1, 3, 1):squeeze(-1), { 1, 3 }))
    assert(shape_is(T.zeros(2, 3):squeeze(1), { 2, 3 })) -- a non-1 dim is left alone
    assert(shape_is(x.T, { 2, 4, 3 }) and shape_is(T.zeros(5).T, { 5 }) and shape_is(T.zeros(3):t(), { 3 }))
    assert(shape_is(T.tensor(1.0):flatten(), { 1 }))
    assert(x:expand_as(T.zeros(7, 2, 3, 4)):storage_id() == id)
  end,

  ["reshape views when it can and copies when it must"] = function()
    local x = T.arange(0, 12):view(3, 4)
    assert(x:reshape(2, 6):storage_id() == x:storage_id())
    local t = x:t()
    local r = t:reshape(12)
    assert(r:storage_id() ~= x:storage_id() and r:is_contiguous())
    assert(r[2]:item() == 4 and r[4]:item() == 1) -- row-major order of the transposed tensor
    assert(t:reshape(2, 2, 3):storage_id() == x:storage_id()) -- splits one dim of t: a view
    errors("view: the tensor's strides are incompatible with the new shape; use reshape()", t.view, t, 12)
    assert(t:contiguous():storage_id() ~= x:storage_id() and t:contiguous():is_contiguous())
    assert(x:contiguous():storage_id() == x:storage_id())
    local n = x:narrow(2, 2, 2) -- [3, 2] with row stride 4
    assert(n:reshape(6):storage_id() ~= x:storage_id() and n:reshape(3, 2, 1):storage_id() == x:storage_id())
    assert(x:reshape(-1, 2):size(1) == 6)
  end,

  ["writes through views reach the base"] = function()
    local x = T.zeros(3, 4)
    x[2] = 5
    x:select(2, 4):fill_(7)
    x:narrow(1, 3, 1):narrow(2, 1, 2):copy_(T.tensor({ { 1, 2 } }))
    x:t()[1][1] = -1
    close(x, { { -1, 0, 0, 7 }, { 5, 5, 5, 7 }, { 1, 2, 0, 7 } })
    x[1] = T.tensor({ 9, 8, 7, 6 })
    close(x[1], { 9, 8, 7, 6 })
    local v = x:view(12)
    v:mul_(2)
    assert(x[1][1]:item() == 18)
    x:t():add_(T.ones(4, 3))
    assert(x[3][4]:item() == 15)
    x:narrow(2, 1, 1):zero_()
    assert(x:select(2, 1):sum():item() == 0)
    local b = T.zeros(3, { dtype = "bool" })
    b[2] = true
    assert(b:tolist()[2] == true and b:sum():item() == 1)
  end,

  ["view gradients (f64 gradcheck)"] = function()
    local x = f64(2, 3, 4)
    local cases = {
      view = function(a) return a:view(4, 6) end,
      reshape_copy = function(a) return a:transpose(1, 2):reshape(6, 4) end,
      transpose = function(a) return a:transpose(1, 3) end,
      permute = function(a) return a:permute(2, 3, 1) end,
      narrow = function(a) return a:narrow(3, 2, 2) end,
      select = function(a) return a:select(2, 3) end,
      index = function(a) return a[2] end,
      expand = function(a) return a:narrow(2, 1, 1):expand(2, 5, 4) end,
      expand_new_dims = function(a) return a:unsqueeze(1):expand(3, 2, 3, 4) end,
      squeeze = function(a) return a:narrow(2, 2, 1):squeeze(2) end,
      unsqueeze = function(a) return a:unsqueeze(2) end,
      flatten = function(a) return a:flatten(2, 3) end,
      t = function(a) return a[1]:t() end,
      contiguous = function(a) return a:t():contiguous() end,
      chained = function(a) return a:transpose(1, 2):narrow(1, 2, 2):select(3, 4) * a[1]:narrow(1, 1, 2):narrow(2, 1, 2) end,
      split = function(a) local p = a:split(2, 3); return p[1] * p[2] end,
      chunk = function(a) local p = a:chunk(3, 2); return p[1] + p[3] * 2 end,
    }
    for name, f in pairs(cases) do
      local ok, msg = gradcheck(f, { x }, { raise = false })
      assert(ok, name .. ": " .. tostring(msg))
    end
    local s = T.tensor(2.0, { dtype = "f64", requires_grad = true })
    assert(gradcheck(function(a) return a:view(1, 1) * a:unsqueeze(1):expand(3) end, { s }))
  end,

  ["gradients of views accumulate into the base's shape"] = function()
    local x = T.zeros(3, 4, { dtype = "f64", requires_grad = true })
    local y = x[2] * 2 + x:narrow(2, 3, 2):sum() + x:t()[1]:sum() * 10
    y:sum():backward()
    -- x[2]: 2 per element; columns 3-4: 4 (their sum feeds 4 outputs); column 1: 10 * 4
    close(x.grad, { { 40, 0, 4, 4 }, { 42, 2, 6, 6 }, { 40, 0, 4, 4 } })
    assert(x.grad:is_contiguous() and x.grad:storage_id() ~= x:storage_id())
  end,

  ["view errors name the op"] = function()
    local x = T.zeros(2, 3)
    errors("view: shape [4 x 2] is invalid for a tensor of shape [2 x 3] (6 elements)", x.view, x, 4, 2)
    errors("view: only one dimension can be -1", x.view, x, -1, -1)
    errors("reshape: invalid size -3", x.reshape, x, -3, -2)
    errors("expand: cannot expand [2 x 3] to [2 x 4] (dimension 2)", x.expand, x, 2, 4)
    errors("expand: cannot expand a 2-d tensor to 1 dimensions", x.expand, x, 6)
    errors("expand: -1 is not allowed for a new leading dimension", x.expand, x, -1, 2, 3)
    errors("expand: invalid size -2", T.zeros(1).expand, T.zeros(1), -2)
    errors("narrow: range [3, 4] out of bounds for dimension 2 of size 3", x.narrow, x, 2, 3, 2)
    errors("narrow: range", x.narrow, x, 1, 0, 1)
    errors("select: index 4 out of range for dimension 2 of size 3", x.select, x, 2, 4)
    errors("select: index 3 out of range for dimension 1 of size 2", function() return x[3] end)
    errors("index 0 is invalid (indices are 1-based)", function() return x[0] end)
    errors("select: cannot index a 0-d tensor", function() return T.tensor(1)[1] end)
    errors("permute: dimension 1 repeated", x.permute, x, 1, 1)
    errors("permute: expected 2 dimensions, got 3", x.permute, x, 1, 2, 3)
    errors("transpose: dimension 3 out of range for a 2-d tensor", x.transpose, x, 1, 3)
    errors("dimension 0 is invalid (dimensions are 1-based; -1 is the last)", x.transpose, x, 0, 1)
    errors("unsqueeze: dimension 4 out of range for a 3-d tensor", x.unsqueeze, x, 4)
    errors("flatten: start dimension after end dimension", x.flatten, x, 2, 1)
    errors("squeeze: dimension 3 out of range", x.squeeze, x, 3)
  end,

  ["transposing copies (permuted views made contiguous) move every element, any dtype and size"] = function()
    local threads = T.get_num_threads()
    -- each: a shape and the permutation; the reference copies through a dtype change, which
    -- walks element by element
    local cases = {
      { { 3, 17, 23 }, { 1, 3, 2 } }, { { 64, 64 }, { 2, 1 } }, { { 5, 9, 8, 6 }, { 1, 3, 4, 2 } },
      { { 2, 3, 4 }, { 1, 3, 2 } }, { { 7, 33, 18 }, { 3, 2, 1 } }, { { 64, 64, 16, 16 }, { 1, 3, 4, 2 } },
      { { 301, 203 }, { 2, 1 } }, -- one slab, threaded in bands of rows
    }
    for nt = 1, 2 do
      T.set_num_threads(nt)
      for _, c in ipairs(cases) do
        local x = T.randn(c[1])
        local v = x:permute(table.unpack(c[2]))
        local msg = table.concat(c[1], "x") .. " " .. nt .. " threads"
        close(v:contiguous():double(), v:double(), { rtol = 0, atol = 0, msg = msg .. " f32" })
        local d = x:double():permute(table.unpack(c[2]))
        close(d:contiguous():float(), d:float(), { rtol = 0, atol = 0, msg = msg .. " f64" })
        local h = x:to("f16"):permute(table.unpack(c[2]))
        close(h:contiguous():float(), h:float(), { rtol = 0, atol = 0, msg = msg .. " f16" })
        local i = (x * 100):to("i64"):permute(table.unpack(c[2]))
        close(i:contiguous():double(), i:double(), { rtol = 0, atol = 0, msg = msg .. " i64" })
      end
    end
    T.set_num_threads(threads)
  end,

  ["0-d and zero-size views"] = function()
    local s = T.tensor(3.0)
    assert(s:view(1):item() == 3 and s:reshape(1, 1):item() == 3 and s:unsqueeze(1):dim() == 1)
    assert(s:view({}):dim() == 0 and s:transpose(-1, -1):item() == 3 and s:squeeze():dim() == 0)
    assert(s:expand(2, 3):sum():item() == 18)
    local z = T.zeros(0, 3)
    assert(shape_is(z:view(3, 0), { 3, 0 }) and shape_is(z:t(), { 3, 0 }) and shape_is(z:view(-1), { 0 }))
    assert(shape_is(z:narrow(2, 2, 0), { 0, 0 }) and shape_is(z:unsqueeze(1):expand(4, 0, 3), { 4, 0, 3 }))
    assert(shape_is(T.zeros(2, 3):narrow(1, 3, 0), { 0, 3 })) -- an empty range at the end is fine
  end,
}
