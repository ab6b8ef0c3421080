-- test_tensor.lua: creation (zeros .. linspace, from nested tables), the 8 dtypes and the
-- conversions between them against PyTorch (tests/ref/core_ref.lua), tolist, item and printing.
local T = require "tocha"
local shape_is = T.testing.shape_is
local REF = dofile(T.testing.path("ref/core_ref.lua"))
local close = T.testing.assert_close

local DTYPES = { "f32", "f64", "f16", "bf16", "i32", "i64", "u8", "bool" }

local errors = T.testing.assert_raises

-- the value of IEEE half-precision and bfloat16 bit patterns, decoded independently of tocha
local function half_value(h)
  local sign = (h >> 15) == 1 and -1.0 or 1.0
  local e, m = (h >> 10) & 0x1f, h & 0x3ff
  if e == 0x1f then return m == 0 and sign * math.huge or 0 / 0 end
  if e == 0 then return sign * (m * 2.0 ^ -24) end
  return sign * (1 + m / 1024) * 2.0 ^ (e - 15)
end

local function bf16_value(h) return (string.unpack("<f", string.pack("<I4", h << 16))) end

-- equal as IEEE values: NaN matches NaN, and the sign of zero counts
local function ieee_eq(a, b)
  if a ~= a then return b ~= b end
  if a == 0 and b == 0 then return 1 / a == 1 / b end
  return a == b
end

local function check_values(t, expected, what)
  local got = t:tolist()
  assert(#got == #expected, what .. ": length")
  for i = 1, #expected do
    assert(ieee_eq(got[i], expected[i]),
      string.format("%s: element %d (input %.17g): got %.17g, PyTorch %.17g", what, i, REF.convert.x[i] or 0,
        got[i], expected[i]))
  end
end

local function decoded(bits, decode)
  local out = {}
  for i, b in ipairs(bits) do out[i] = decode(b) end
  return out
end

return {
  ["zeros, ones, full, empty: shapes, dtypes, options"] = function()
    local z = T.zeros({ 2, 3 })
    assert(shape_is(z, { 2, 3 }) and z.dtype == "f32" and z.device == "cpu" and not z.requires_grad)
    assert(z:sum():item() == 0 and z:numel() == 6 and z:dim() == 2 and z.ndim == 2)
    local o = T.ones(2, 3, 4, { dtype = "f64", requires_grad = true })
    assert(shape_is(o, { 2, 3, 4 }) and o.dtype == "f64" and o.requires_grad and o.is_leaf)
    assert(o:sum():item() == 24)
    local f = T.full({ 3 }, 7, { dtype = "i32" })
    assert(f.dtype == "i32" and f:tolist()[3] == 7 and math.type(f:tolist()[1]) == "integer")
    assert(shape_is(T.empty({ 4, 0 }), { 4, 0 }) and T.empty(4, 0):numel() == 0)
    local s = T.zeros({})
    assert(s:dim() == 0 and s:numel() == 1 and shape_is(s, {}))
    for _, dt in ipairs(DTYPES) do
      local t = T.ones({ 2 }, { dtype = dt })
      assert(t.dtype == dt)
      assert(t:tolist()[1] == (dt == "bool" and true or 1), dt)
    end
    assert(shape_is(T.zeros_like(o), { 2, 3, 4 }) and T.zeros_like(o).dtype == "f64")
    assert(T.ones_like(f):sum():item() == 3 and T.full_like(f, 2.0):tolist()[2] == 2)
    assert(T.empty_like(o, { dtype = "i64" }).dtype == "i64")
  end,

  ["arange and linspace match PyTorch"] = function()
    for _, c in ipairs(REF.linspace) do
      local s, e, n = table.unpack(c.args)
      local l32, l64 = T.linspace(s, e, n), T.linspace(s, e, n, { dtype = "f64" })
      assert(l32:numel() == n and l32.dtype == "f32")
      close(l64, c.f64, { rtol = 0, atol = 1e-15 })
      close(l32, c.f32, { rtol = 1.2e-7, atol = 1e-7 }) -- PyTorch steps in f32, tocha in f64
      if n > 1 then assert(l32[1]:item() == c.f32[1] and l32[n]:item() == c.f32[n]) end -- exact ends
    end
    for _, c in ipairs(REF.arange) do
      local s, e, st = table.unpack(c.args)
      local a32, a64 = T.arange(s, e, st), T.arange(s, e, st, { dtype = "f64" })
      assert(a32:numel() == #c.f32 and a64:numel() == #c.f64)
      close(a64, c.f64, { rtol = 0, atol = 1e-15 })
      close(a32, c.f32, { rtol = 1.2e-7, atol = 1e-7 })
    end
    assert(T.arange(5):numel() == 5 and T.arange(5):tolist()[5] == 4)
    assert(T.arange(0, 24):numel() == 24)
    assert(T.arange(0, 5, { dtype = "i64" }).dtype == "i64" and T.arange(0, 5, { dtype = "i64" }):tolist()[5] == 4)
    assert(T.arange(3, 3):numel() == 0)
    errors("arange: step must be non-zero", T.arange, 0, 3, 0)
    errors("linspace: number of steps must be non-negative", T.linspace, 0, 1, -1)
  end,

  ["tensor from nested tables, scalars and booleans"] = function()
    local t = T.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
    assert(shape_is(t, { 2, 3 }) and t.dtype == "f32")
    assert(t[2][3]:item() == 6 and t:tolist()[1][2] == 2)
    local d = T.tensor({ { { 1.5 } }, { { -2 } } }, { dtype = "f64", requires_grad = true })
    assert(shape_is(d, { 2, 1, 1 }) and d.dtype == "f64" and d.requires_grad)
    local s = T.tensor(3.25)
    assert(s:dim() == 0 and s:item() == 3.25)
    local b = T.tensor({ true, false, true })
    assert(b.dtype == "bool" and b:tolist()[2] == false and b:sum():item() == 2)
    assert(T.tensor({ true, false }, { dtype = "f32" }):tolist()[1] == 1.0)
    assert(T.tensor(false):item() == false)
    local e = T.tensor({})
    assert(shape_is(e, { 0 }) and e:numel() == 0)
    assert(shape_is(T.tensor({ {}, {} }), { 2, 0 }))
    local i = T.tensor({ 1, 2, 3 }, { dtype = "i64" })
    assert(i.dtype == "i64" and math.type(i:tolist()[1]) == "integer")
    local c = T.tensor(t) -- a copy, not a view
    assert(c:storage_id() ~= t:storage_id() and c:allclose(t))
  end,

  ["ragged or malformed tables are errors"] = function()
    errors("ragged nested table (dimension 2: expected 2 elements, got 1)", T.tensor, { { 1, 2 }, { 3 } })
    errors("ragged nested table (dimension 2: expected 2 elements, got number)", T.tensor, { { 1, 2 }, 3 })
    errors("ragged nested table (dimension 2: expected 0 elements, got 1)", T.tensor, { {}, { 1 } })
    errors("expected a number at element 2, got table", T.tensor, { 1, { 2 } })
    errors("expected a number at element 2, got string", T.tensor, { 1, "x" })
    errors("too deeply nested", T.tensor, { { { { { { { { { 1 } } } } } } } } })
    errors("table or number expected", T.tensor, "abc")
    errors("unknown dtype 'float32'", T.tensor, { 1 }, { dtype = "float32" })
  end,

  ["tolist and item"] = function()
    local x = T.arange(0, 6):view(2, 3)
    local l = x:tolist()
    assert(#l == 2 and #l[1] == 3 and l[2][1] == 3)
    assert(x:t():tolist()[3][2] == 5) -- follows strides
    assert(T.tensor(2.5):tolist() == 2.5) -- a 0-d tensor gives a number
    assert(x[2][3]:item() == 5 and x:sum():item() == 15)
    assert(T.ones({ 1, 1, 1 }):item() == 1)
    errors("item: only one-element tensors can be converted to a number (shape [2 x 3])", x.item, x)
    -- i64 values past 2^53 read back exactly
    local big = T.full({ 2 }, 2 ^ 62, { dtype = "i64" })
    assert(big[1]:item() == 1 << 62 and big:tolist()[2] == 1 << 62)
    local odd = T.full({ 1 }, 2 ^ 60, { dtype = "i64" }):add_(T.ones({ 1 }, { dtype = "i64" }))
    assert(odd:item() == (1 << 60) + 1, "i64 + i64 is exact")
  end,

  ["f32, f16 and bf16 rounding match PyTorch bit for bit"] = function()
    local c = REF.convert
    local x = T.tensor(c.x, { dtype = "f64" })
    check_values(x:to("f32"), c.f32, "f64 -> f32")
    check_values(x:to("f16"), decoded(c.f16_bits, half_value), "f64 -> f16")
    check_values(x:to("f32"):to("f16"), decoded(c.f16_from_f32_bits, half_value), "f32 -> f16")
    check_values(x:to("bf16"), decoded(c.bf16_bits, bf16_value), "f64 -> bf16")
    check_values(x:to("f32"):to("bf16"), decoded(c.bf16_from_f32_bits, bf16_value), "f32 -> bf16")
    check_values(x:to("f16"), c.f16_back, "f16 values")
    check_values(x:to("bf16"):to("f64"), c.bf16_back, "bf16 values")
    local f = REF.from_int
    local xi = T.tensor(f.x, { dtype = "i64" })
    check_values(xi:to("f32"), f.f32, "i64 -> f32")
    check_values(xi:to("f16"), decoded(f.f16_bits, half_value), "i64 -> f16")
    check_values(xi:to("bf16"), decoded(f.bf16_bits, bf16_value), "i64 -> bf16")
    assert(T.tensor({ 0, 1, 200, 255 }, { dtype = "u8" }):to("i32"):tolist()[3] == f.i32_from_u8[3])
  end,

  ["float to integer conversions truncate as PyTorch"] = function()
    local c = REF.to_int
    local x = T.tensor(c.x, { dtype = "f64" })
    local i32, i64, u8, b = x:to("i32"):tolist(), x:to("i64"):tolist(), x:to("u8"):tolist(), x:to("bool"):tolist()
    for i = 1, #c.x do
      assert(i32[i] == c.i32[i], "i32 of " .. c.x[i])
      assert(i64[i] == c.i64[i] and math.type(i64[i]) == "integer", "i64 of " .. c.x[i])
      assert(u8[i] == c.u8[i], "u8 of " .. c.x[i] .. ": " .. u8[i] .. " vs " .. c.u8[i])
      assert(b[i] == c.bool[i], "bool of " .. c.x[i])
    end
    -- outside an integer type's range the result is defined (saturating), never a crash
    local wild = T.tensor({ 0 / 0, math.huge, -math.huge, 1e30 }, { dtype = "f64" })
    assert(wild:to("i32"):tolist()[1] == 0 and wild:to("i64"):tolist()[2] == math.maxinteger)
    assert(wild:to("i32"):tolist()[3] == -2 ^ 31 and wild:to("bool"):tolist()[1] == true)
  end,

  ["every dtype converts to every other"] = function()
    local vals = { 0, 1, 2, 3.75, 100, 127 }
    for _, a in ipairs(DTYPES) do
      local x = T.tensor(vals, { dtype = "f64" }):to(a)
      assert(x.dtype == a)
      for _, b in ipairs(DTYPES) do
        local y = x:to(b)
        assert(y.dtype == b and shape_is(y, { 6 }))
        local back = y:to("f64"):tolist()
        for i, v in ipairs(vals) do
          local want = v
          if a == "bool" or b == "bool" then want = v ~= 0 and 1 or 0
          elseif not (a:sub(1, 1) == "f" or a == "bf16") or not (b:sub(1, 1) == "f" or b == "bf16") then
            want = math.floor(v)
          end
          assert(back[i] == want, a .. " -> " .. b .. ": " .. tostring(back[i]) .. " vs " .. want)
        end
      end
    end
    local x = T.ones(3)
    assert(x:to("f32"):storage_id() == x:storage_id(), "to() returns the tensor itself when nothing changes")
    assert(x:to({ dtype = "f64" }).dtype == "f64" and x:to("cpu", "i32").dtype == "i32")
    assert(x:float().dtype == "f32" and x:double().dtype == "f64" and x:long().dtype == "i64")
    assert(x:type_as(T.zeros(1, { dtype = "f16" })).dtype == "f16")
  end,

  ["dtype promotion in binary ops"] = function()
    local cases = {
      { "f32", "f64", "f64" }, { "f16", "bf16", "f32" }, { "f16", "f32", "f32" }, { "i32", "f16", "f16" },
      { "u8", "i32", "i32" }, { "bool", "u8", "u8" }, { "i64", "i32", "i64" }, { "bool", "f32", "f32" },
    }
    for _, c in ipairs(cases) do
      local r = T.ones(2, { dtype = c[1] }) + T.ones(2, { dtype = c[2] })
      assert(r.dtype == c[3], c[1] .. " + " .. c[2] .. " gave " .. r.dtype)
    end
    assert((T.ones(2, { dtype = "i64" }) / T.ones(2, { dtype = "i64" })).dtype == "f32") -- true division
    assert((T.ones(2, { dtype = "i32" }) * 2).dtype == "i32" and (T.ones(2, { dtype = "i32" }) * 2.5).dtype == "f32")
    assert((T.ones(2, { dtype = "f16" }) * 2.5).dtype == "f16")
    assert(T.ones(2, { dtype = "i32" }):sqrt().dtype == "f32")
    assert(T.tensor({ 1, 2, 3 }, { dtype = "i64" }):clamp(1.5, 2.5):tolist()[1] == 1.5)
    assert(T.ones(2):gt(0).dtype == "bool")
    assert(T.tensor({ true, false }):logical_not():tolist()[2] == true)
  end,

  ["printing: small, large, int, bool, 0-d, grad_fn"] = function()
    local s = tostring(T.tensor({ { 1.5, -2 }, { 3, 4.25 } }))
    assert(s == "tensor([[ 1.5000, -2.0000],\n        [ 3.0000,  4.2500]], shape=[2, 2], dtype=f32)", s)
    assert(tostring(T.tensor({ 1, 2, 3 })) == "tensor([1., 2., 3.], shape=[3], dtype=f32)")
    local big = tostring(T.arange(0, 5000):view(50, 100))
    assert(big:find("...", 1, true) and big:find("4999.", 1, true) and #big < 800, big)
    assert(tostring(T.tensor({ 1, -20 }, { dtype = "i64" })) == "tensor([  1, -20], shape=[2], dtype=i64)")
    assert(tostring(T.tensor({ true, false })) == "tensor([ true, false], shape=[2], dtype=bool)")
    assert(tostring(T.tensor(2.5)) == "tensor(2.5000, shape=[], dtype=f32)")
    assert(tostring(T.zeros(0, 3)) == "tensor([], shape=[0, 3], dtype=f32)")
    local x = T.ones(2, { requires_grad = true })
    assert(tostring(x):find("requires_grad=true", 1, true))
    assert(tostring(x * 2):find("grad_fn=<MulScalarBackward>", 1, true), tostring(x * 2))
    assert(tostring(x:sum()):find("grad_fn=<SumBackward>", 1, true))
    assert(tostring(T.tensor({ 1e-6, 1 })):find("1.0000e-06", 1, true))
    assert(tostring(T.tensor({ 0 / 0, math.huge })):find("nan", 1, true))
    assert((x * 2).grad_fn == "MulScalarBackward" and x.grad_fn == nil)
  end,

  ["properties and sizes"] = function()
    local x = T.zeros(2, 3, 4)
    assert(x:size(1) == 2 and x:size(-1) == 4 and #x:size() == 3 and #x == 2)
    assert(x:stride()[1] == 12 and x:stride()[3] == 1 and x:is_contiguous())
    assert(not x:transpose(1, 3):is_contiguous())
    errors("dimension 0 is invalid", x.size, x, 0)
    errors("size: dimension 4 out of range for a 3-d tensor", x.size, x, 4)
    errors("len() of a 0-d tensor", function() return #T.zeros({}) end)
    errors("cannot set field 'foo'", function() x.foo = 1 end)
  end,
}
