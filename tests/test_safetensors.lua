-- tests/test_safetensors.lua: T.save / T.load (safetensors): exact round trips of every dtype,
-- files written by the Python safetensors package (tests/ref/gen_safetensors.py), the mmap
-- lifetime of loaded tensors, and a clear error (never a crash) for each kind of corrupt file.
-- With TOCHA_SAFETENSORS_INTEROP=path set, "interop file" also writes its file there for
-- tests/interop/check_safetensors.py to check with the Python package.
local T = require "tocha"

local ref = dofile(T.testing.path("ref/safetensors_ref.lua"))

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------
local tmpfiles = {}
local function tmp()
  local p = os.tmpname()
  tmpfiles[#tmpfiles + 1] = p
  return p
end
local function cleanup()
  for _, p in ipairs(tmpfiles) do os.remove(p) end
  tmpfiles = {}
end

local function read_all(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_all(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- a file from a header string and data bytes, exactly as given (for hand-made and corrupt files)
local function raw_file(header, data, len)
  local p = tmp()
  write_all(p, string.pack("<I8", len or #header) .. header .. (data or ""))
  return p
end

-- a tensor whose bytes are given exactly: values packed with fmt (string.pack), loaded from
-- a hand-made file; this reaches bit patterns (NaN payloads, i64 extremes) Lua numbers cannot
local function from_bits(st_dtype, fmt, shape, values)
  local data = {}
  for i, v in ipairs(values) do data[i] = string.pack(fmt, v) end
  data = table.concat(data)
  local header = string.format('{"x":{"dtype":"%s","shape":[%s],"data_offsets":[0,%d]}}',
    st_dtype, table.concat(shape, ","), #data)
  local t = T.load(raw_file(header, data))
  return t.x, data
end

-- the data region of a file (for a one-tensor file: that tensor's bytes)
local function data_bytes(p)
  local s = read_all(p)
  local n = string.unpack("<I8", s)
  return s:sub(9 + n), s:sub(9, 8 + n)
end

-- the bytes tocha writes for t alone
local function bytes_of(t)
  local p = tmp()
  T.save(p, { x = t })
  return (data_bytes(p))
end

local function tohex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

local function flat(t) return t:reshape(-1):tolist() end

-- equal as stored: NaN matches NaN, -0 does not match 0
local function same(a, b)
  if type(a) == "number" and type(b) == "number" then
    if a ~= a then return b ~= b end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  return a == b
end

local function assert_values(t, expected, what)
  local got = flat(t)
  assert(#got == #expected, what .. ": " .. #got .. " values, expected " .. #expected)
  for i = 1, #expected do
    assert(same(got[i], expected[i]), string.format("%s[%d]: got %s, expected %s", what, i, tostring(got[i]), tostring(expected[i])))
  end
end

local function assert_shape(t, shape, what)
  local s = t.shape
  assert(#s == #shape, what .. ": ndim " .. #s .. ", expected " .. #shape)
  for i = 1, #shape do assert(s[i] == shape[i], what .. ": shape mismatch at dim " .. i) end
end

local function expect_error(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error matching '" .. pattern .. "'")
  err = tostring(err)
  assert(err:find(pattern, 1, true), "error '" .. err .. "' does not mention '" .. pattern .. "'")
  return err
end

-- a load of a corrupt file: a Lua error naming the file and the problem
local function expect_corrupt(p, pattern)
  local err = expect_error(pattern, T.load, p)
  assert(err:find(p, 1, true), "error '" .. err .. "' does not name the file")
  assert(err:find("not a valid safetensors file", 1, true) or err:find("cannot", 1, true), err)
end

local function entry(name, dtype, shape, b, e)
  return string.format('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}', name, dtype,
    table.concat(shape, ","), b, e)
end

local F16_BITS = { 0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x7D01, 0x3555 }
local BF16_BITS = { 0x0000, 0x8000, 0x3F80, 0xC000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x7FA1, 0x4049, 0xBEAB }
local I64_EXTREMES = { math.mininteger, -(1 << 53) - 1, -1, 0, (1 << 53) + 1, math.maxinteger }

local tests = {}

---------------------------------------------------------------------------
-- round trips
---------------------------------------------------------------------------
tests["round trip: every dtype, values exact"] = function()
  local inf, nan = 1 / 0, 0 / 0
  local src = {
    f32 = T.tensor({ { 1.5, -0.0, inf, -inf }, { nan, 2 ^ -140, 3.4028234663852886e38, -1 / 3 } }),
    f64 = T.tensor({ 1 / 3, -2.5e300, 5e-324, -0.0, inf, nan }, { dtype = "f64" }),
    f16 = T.tensor({ 1, -2, 65504, 2 ^ -24, -0.0, inf, 0.333251953125 }, { dtype = "f16" }),
    bf16 = T.tensor({ 1, -2, 3.140625, 2 ^ -133, -0.0, -inf, 3.3895313892515355e38 }, { dtype = "bf16" }),
    i32 = T.tensor({ -2147483648, -1, 0, 1, 2147483647 }, { dtype = "i32" }),
    i64 = T.tensor({ math.mininteger, -2 ^ 53, -1, 0, 2 ^ 53 }, { dtype = "i64" }),
    u8 = T.tensor({ { 0, 1 }, { 254, 255 } }, { dtype = "u8" }),
    bool = T.tensor({ true, false, false, true }),
  }
  local p = tmp()
  T.save(p, src)
  local got = T.load(p)
  for name, t in pairs(src) do
    local g = got[name]
    assert(g, "missing " .. name)
    assert(g.dtype == t.dtype, name .. ": dtype " .. g.dtype)
    assert_shape(g, t.shape, name)
    assert_values(g, flat(t), name)
    assert(bytes_of(g) == bytes_of(t), name .. ": bytes differ")
  end
  local n = 0
  for _ in pairs(got) do n = n + 1 end
  assert(n == 8, "expected 8 tensors, got " .. n)
  cleanup()
end

tests["round trip: f16 and bf16 bit patterns, i64 extremes"] = function()
  for _, c in ipairs({ { "F16", "<I2", F16_BITS }, { "BF16", "<I2", BF16_BITS }, { "I64", "<i8", I64_EXTREMES } }) do
    local t, data = from_bits(c[1], c[2], { #c[3] }, c[3])
    assert(t:is_contiguous())
    local p = tmp()
    T.save(p, { x = t })
    assert(tohex(data_bytes(p)) == tohex(data), c[1] .. ": bytes changed in the round trip")
    local back = T.load(p).x
    assert(bytes_of(back) == data, c[1] .. ": bytes changed in the second round trip")
  end
  local i64 = from_bits("I64", "<i8", { 6 }, I64_EXTREMES)
  assert(i64[1]:item() == math.mininteger and i64[4]:item() == 0)
  local f16 = from_bits("F16", "<I2", { 12 }, F16_BITS)
  assert_values(f16:narrow(1, 1, 9), { 0.0, -0.0, 1, -2, 65504, 2 ^ -24, 1023 * 2 ^ -24, 1 / 0, -1 / 0 }, "f16 bits")
  cleanup()
end

tests["round trip: non-contiguous inputs are written contiguously"] = function()
  local base = T.arange(0, 20):reshape(4, 5)
  local src = {
    t = base:t(),                                  -- transposed
    n = base:narrow(2, 2, 3),                      -- inner narrow: strided, with an offset
    e = T.tensor({ 1, 2, 3 }):expand(2, 3),        -- stride 0
    p = T.arange(0, 24, { dtype = "f64" }):reshape(2, 3, 4):permute(3, 1, 2),
    s = base:select(2, 4),                         -- a column
  }
  assert(not src.t:is_contiguous() and not src.n:is_contiguous())
  local p = tmp()
  T.save(p, src)
  local got = T.load(p)
  for name, t in pairs(src) do
    assert_shape(got[name], t.shape, name)
    assert(got[name]:is_contiguous(), name)
    assert_values(got[name], flat(t), name)
  end
  assert_values(got.n, { 1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18 }, "narrow")
  cleanup()
end

tests["round trip: 0-d, zero-size, grad-carrying and empty dicts"] = function()
  local x = T.tensor({ 1, 2, 3 }, { requires_grad = true })
  local src = {
    scalar = T.tensor(3.25),
    scalar_i64 = T.tensor(7, { dtype = "i64" }),
    empty = T.zeros({ 0, 3 }),
    empty2 = T.zeros({ 2, 0, 4 }, { dtype = "i32" }),
    y = x * 2,                                     -- a non-leaf: saved as its values
    w = x,                                         -- a leaf that requires grad
  }
  local p = tmp()
  T.save(p, src)
  local got = T.load(p)
  assert(got.scalar:dim() == 0 and got.scalar:item() == 3.25)
  assert(got.scalar_i64:dim() == 0 and got.scalar_i64:item() == 7 and got.scalar_i64.dtype == "i64")
  assert_shape(got.empty, { 0, 3 }, "empty")
  assert_shape(got.empty2, { 2, 0, 4 }, "empty2")
  assert(got.empty2.dtype == "i32" and got.empty2:numel() == 0)
  assert_values(got.y, { 2, 4, 6 }, "y")
  assert(not got.y.requires_grad and got.y.grad_fn == nil and not got.w.requires_grad)
  -- nothing at all, and only zero-size tensors: data region of 0 bytes
  T.save(p, {})
  local none, meta = T.load(p)
  assert(next(none) == nil and next(meta) == nil)
  T.save(p, { a = T.zeros(0), b = T.zeros({ 0, 5 }, { dtype = "f64" }) })
  local z = T.load(p)
  assert(z.a:numel() == 0 and z.b.dtype == "f64")
  cleanup()
end

tests["metadata: strings and numbers, escapes and unicode; other types raise"] = function()
  local p = tmp()
  local note = 'caf\u{e9} "quoted" \\ back\nslash\t\u{2603} \1'
  T.save(p, { a = T.ones(2) }, { format = "pt", step = 1234, lr = 0.5, note = note, empty = "" })
  local t, meta = T.load(p)
  assert(t.a:sum():item() == 2)
  assert(meta.format == "pt" and meta.step == "1234" and meta.lr == "0.5" and meta.empty == "")
  assert(meta.note == note, meta.note)
  local n = 0
  for _ in pairs(meta) do n = n + 1 end
  assert(n == 5)
  expect_error("metadata value for 'ok' must be a string or a number (got boolean)", T.save, p, {}, { ok = true })
  expect_error("metadata value for 'x' must be a string or a number (got table)", T.save, p, {}, { x = {} })
  expect_error("metadata keys must be strings", T.save, p, {}, { "positional" })
  expect_error("tensor names must be strings", T.save, p, { T.ones(1) })
  expect_error("value for 'a' is not a tensor (got number)", T.save, p, { a = 1 })
  expect_error("'__metadata__' is reserved", T.save, p, { __metadata__ = T.ones(1) })
  expect_error("contains a NUL character", T.save, p, { ["a\0b"] = T.ones(1) })
  expect_error("not valid UTF-8", T.save, p, { ["\255"] = T.ones(1) })
  cleanup()
end

tests["header: names sorted, data aligned, padded to 8 bytes"] = function()
  local p = tmp()
  T.save(p, { zeta = T.ones(3, { dtype = "u8" }), alpha = T.ones(2, { dtype = "f64" }), mid = T.ones(5),
    b16 = T.ones(3, { dtype = "bf16" }) }, { z = "1", a = "2" })
  local data, header = data_bytes(p)
  assert(#header % 8 == 0, "header not padded to 8 bytes")
  assert(header:find('^{"__metadata__":{"a":"2","z":"1"},"alpha":'), header)
  local last = 0
  for _, name in ipairs({ "alpha", "b16", "mid", "zeta" }) do
    local at = header:find('"' .. name .. '"', 1, true)
    assert(at and at > last, "names not sorted: " .. header)
    last = at
  end
  for name, size in pairs({ alpha = 8, mid = 4, b16 = 2, zeta = 1 }) do
    local b = tonumber(header:match('"' .. name .. '":{[^}]*"data_offsets":%[(%d+),'))
    assert(b % size == 0, name .. " misaligned at " .. b)
  end
  assert(#data == 3 + 16 + 20 + 6)
  -- the same inputs give the same bytes
  local p2 = tmp()
  T.save(p2, { mid = T.ones(5), b16 = T.ones(3, { dtype = "bf16" }), zeta = T.ones(3, { dtype = "u8" }),
    alpha = T.ones(2, { dtype = "f64" }) }, { a = "2", z = "1" })
  assert(read_all(p) == read_all(p2), "output is not deterministic")
  cleanup()
end

---------------------------------------------------------------------------
-- files made by the Python safetensors package
---------------------------------------------------------------------------
tests["python fixtures: names, dtypes, shapes, values, bytes, metadata"] = function()
  for fname, expected in pairs(ref) do
    local got, meta = T.load(T.testing.path("ref/" .. fname .. ".safetensors"))
    local want_meta = expected.__metadata__ or {}
    for k, v in pairs(want_meta) do assert(meta[k] == v, fname .. ": metadata " .. k) end
    for k in pairs(meta) do assert(want_meta[k], fname .. ": unexpected metadata " .. k) end
    for name, e in pairs(expected) do
      if name ~= "__metadata__" then
        local t = got[name]
        assert(t, fname .. ": missing tensor " .. name)
        assert(t.dtype == e.dtype, name .. ": dtype " .. t.dtype .. ", expected " .. e.dtype)
        assert_shape(t, e.shape, name)
        if e.dtype == "i64" then -- tolist goes through doubles: compare what they hold exactly
          local got_vals = flat(t)
          for i, v in ipairs(e.values) do
            if math.abs(v) <= 2 ^ 53 then assert(got_vals[i] == v, name .. "[" .. i .. "]") end
          end
        else
          assert_values(t, e.values, fname .. ":" .. name)
        end
        assert(tohex(bytes_of(t)) == e.hex, name .. ": bytes differ from the reference")
        got[name] = nil
      end
    end
    assert(next(got) == nil, fname .. ": unexpected tensor " .. tostring(next(got)))
  end
  cleanup()
end

tests["python fixture re-saved by tocha loads back identically"] = function()
  local src, meta = T.load(T.testing.path("ref/safetensors_all_dtypes.safetensors"))
  local p = tmp()
  T.save(p, src, meta)
  local got, meta2 = T.load(p)
  for k, v in pairs(meta) do assert(meta2[k] == v) end
  for name, t in pairs(src) do assert(bytes_of(got[name]) == bytes_of(t), name) end
  cleanup()
end

---------------------------------------------------------------------------
-- lifetime of the mapping
---------------------------------------------------------------------------
tests["mmap: loaded tensors outlive the dict, the file and collections"] = function()
  local p = tmp()
  T.save(p, { a = T.arange(0, 1000, { dtype = "f64" }), b = T.ones(10), c = T.arange(0, 6):reshape(2, 3) })
  local a, view
  do
    local t = T.load(p)
    a = t.a
    view = t.c:t()
  end
  collectgarbage(); collectgarbage()
  os.remove(p) -- unlinked: the mapping stays valid
  T.save(p, { a = T.zeros(3) }) -- a new file at the same path (rename: the old one stays mapped)
  collectgarbage()
  assert(a:sum():item() == 499500)
  local tail = a:narrow(1, 991, 10)
  a = nil
  collectgarbage(); collectgarbage()
  assert_values(tail, { 990, 991, 992, 993, 994, 995, 996, 997, 998, 999 }, "tail")
  assert_values(view, { 0, 3, 1, 4, 2, 5 }, "view")
  assert_values(T.load(p).a, { 0, 0, 0 }, "new file")
  -- many loads and drops: mappings are released (this would exhaust them otherwise)
  for _ = 1, 2000 do
    local t = T.load(p)
    assert(t.a:numel() == 3)
  end
  collectgarbage()
  assert_values(tail:clone(), { 990, 991, 992, 993, 994, 995, 996, 997, 998, 999 }, "tail after loads")
  cleanup()
end

tests["mmap: in-place writes to a loaded tensor never reach the file"] = function()
  local p = tmp()
  T.save(p, { a = T.arange(0, 4) })
  local before = read_all(p)
  local a = T.load(p).a
  a:add_(10)
  assert_values(a, { 10, 11, 12, 13 }, "modified")
  assert(read_all(p) == before, "the file changed")
  assert_values(T.load(p).a, { 0, 1, 2, 3 }, "reloaded")
  cleanup()
end

tests["misaligned data is copied, not wrapped"] = function()
  -- u8[1] at 0, then f32[2] at byte 1 and f64[1] at byte 9: legal, but not aligned
  local header = "{" .. entry("a", "U8", { 1 }, 0, 1) .. "," .. entry("b", "F32", { 2 }, 1, 9) .. "," ..
      entry("c", "F64", { 1 }, 9, 17) .. "}"
  local data = string.pack("<B", 7) .. string.pack("<ff", 1.5, -2) .. string.pack("<d", 1 / 3)
  local t = T.load(raw_file(header, data))
  assert(t.a:item() == 7 and t.c:item() == 1 / 3)
  assert_values(t.b, { 1.5, -2 }, "b")
  -- and a header whose length is not a multiple of 8 (allowed by the format)
  local h2 = "{" .. entry("x", "I32", { 2 }, 0, 8) .. "} "
  local t2 = T.load(raw_file(h2, string.pack("<i4i4", -5, 6)))
  assert_values(t2.x, { -5, 6 }, "x")
  cleanup()
end

---------------------------------------------------------------------------
-- corrupt files: a clear error, never a crash
---------------------------------------------------------------------------
tests["corrupt: truncated files"] = function()
  local p = tmp()
  write_all(p, "")
  expect_corrupt(p, "0 bytes long, too short")
  write_all(p, "\5\0\0")
  expect_corrupt(p, "3 bytes long, too short")
  -- a good file cut short in its data
  T.save(p, { a = T.ones(6), b = T.ones(2) })
  local s = read_all(p)
  write_all(p, s:sub(1, #s - 5))
  expect_corrupt(p, "outside the data region")
  -- cut inside the header
  write_all(p, s:sub(1, 20))
  expect_corrupt(p, "runs past the end of the file")
  cleanup()
end

tests["corrupt: header length lying or oversized"] = function()
  local h = "{" .. entry("a", "F32", { 1 }, 0, 4) .. "}"
  expect_corrupt(raw_file(h, "\0\0\0\0", 1000), "header length 1000 runs past the end of the file")
  expect_corrupt(raw_file(h, "\0\0\0\0", 200000000), "header length 200000000 exceeds the 100 MB limit")
  expect_corrupt(raw_file(h, "\0\0\0\0", -1), "exceeds the 100 MB limit")
  -- too short: the header's JSON is cut, the rest is read as data
  expect_corrupt(raw_file(h, "\0\0\0\0", #h - 3), "invalid JSON in the header")
  cleanup()
end

tests["corrupt: offsets out of range, overlapping, gaps, inconsistent sizes"] = function()
  local d24 = string.rep("\0", 24)
  local function hdr(...) return "{" .. table.concat({ ... }, ",") .. "}" end
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 100 }, 0, 400)), d24), "data_offsets [0, 400] outside the data region (24 bytes)")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 2 }, 16, 8)), d24), "end before they begin")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 4 }, 0, 16), entry("b", "F32", { 4 }, 8, 24)), d24),
    "tensors 'a' and 'b' overlap")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 6 }, 0, 24), entry("z", "F32", { 0 }, 8, 8)), d24), "overlap")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 2 }, 0, 8), entry("b", "F32", { 2 }, 16, 24)), d24),
    "bytes 8 to 16 of the data region belong to no tensor")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 2 }, 0, 8)), d24), "the last 16 bytes of the data region belong to no tensor")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 1 }, 4, 8)), string.rep("\0", 8)), "bytes 0 to 4")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 2, 3 }, 0, 20)), d24), "needs 24 bytes but its data_offsets [0, 20] span 20")
  expect_corrupt(raw_file(hdr(entry("a", "F64", { 2 }, 0, 8)), string.rep("\0", 8)), "needs 16 bytes")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 4611686018427387904, 4 }, 0, 8)), string.rep("\0", 8)), "too large")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 1, 1, 1, 1, 1, 1, 1, 1, 1 }, 0, 4)), "\0\0\0\0"), "9 dimensions")
  expect_corrupt(raw_file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', "\0\0\0\0"), "non-negative integer")
  expect_corrupt(raw_file('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', "\0\0\0\0"), "non-negative integer")
  expect_corrupt(raw_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', "\0\0\0\0"), "data_offsets")
  expect_corrupt(raw_file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}}', "\0\0\0\0"), "data_offsets")
  expect_corrupt(raw_file('{"a":{"dtype":"F32","data_offsets":[0,4]}}', "\0\0\0\0"), "no \"shape\" array")
  expect_corrupt(raw_file(hdr(entry("a", "F32", { 1 }, 0, 4), entry("a", "F32", { 1 }, 4, 8)), string.rep("\0", 8)),
    "tensor 'a' appears twice")
  cleanup()
end

tests["corrupt: unknown dtype, bad JSON, wrong JSON types"] = function()
  local d4 = "\0\0\0\0"
  expect_corrupt(raw_file("{" .. entry("a", "Q4", { 1 }, 0, 4) .. "}", d4), "unknown or unsupported dtype 'Q4'")
  expect_corrupt(raw_file("{" .. entry("a", "F8_E4M3", { 4 }, 0, 4) .. "}", d4), "dtype 'F8_E4M3'")
  expect_corrupt(raw_file('{"a":{"dtype":3,"shape":[1],"data_offsets":[0,4]}}', d4), "no \"dtype\" string")
  expect_corrupt(raw_file('{"a": {"dtype": "F32",', d4), "invalid JSON in the header")
  expect_corrupt(raw_file('{"a": 1,}', d4), "invalid JSON in the header")
  expect_corrupt(raw_file('{"a": 1} x', d4), "trailing characters")
  expect_corrupt(raw_file('{"a\\q": 1}', d4), "bad escape")
  expect_corrupt(raw_file('{"\\ud800": 1}', d4), "surrogate")
  expect_corrupt(raw_file('{"\255": 1}', d4), "invalid UTF-8")
  expect_corrupt(raw_file('{"a\1": 1}', d4), "control character")
  expect_corrupt(raw_file('{"a": 01}', d4), "invalid JSON in the header")
  expect_corrupt(raw_file('{"a": tru}', d4), "invalid JSON in the header")
  expect_corrupt(raw_file(string.rep("[", 100000), d4), "nested deeper than")
  expect_corrupt(raw_file("", d4), "unexpected end of input")
  expect_corrupt(raw_file("[1, 2]", d4), "the header is a JSON array, not an object")
  expect_corrupt(raw_file('"hello"', d4), "the header is a JSON string, not an object")
  expect_corrupt(raw_file('{"a": 5}', d4), "entry for tensor 'a' is a JSON number, not an object")
  expect_corrupt(raw_file('{"__metadata__": [1]}', ""), "\"__metadata__\" is a JSON array")
  expect_corrupt(raw_file('{"__metadata__": {"k": 1}}', ""), "\"__metadata__\" value for 'k' is a JSON number, not a string")
  expect_corrupt(raw_file('{"__metadata__": {"k": "1", "k": "2"}}', ""), "key 'k' appears twice")
  expect_corrupt(raw_file('{"__metadata__": {}, "__metadata__": {}}', ""), "appears twice")
  expect_corrupt(raw_file('{"a\\u0000b": {}}', ""), "NUL character")
  cleanup()
end

tests["corrupt: random damage to a good file never crashes"] = function()
  local p = tmp()
  T.save(p, { a = T.arange(0, 10), b = T.ones({ 2, 3 }, { dtype = "i64" }), c = T.zeros(0) }, { k = "v" })
  local good = read_all(p)
  local q = tmp()
  local rejected = 0
  for i = 1, 300 do
    local s = { good:byte(1, -1) }
    for _ = 1, 1 + i % 3 do
      local at = 1 + (i * 7919 + _ * 104729) % #s
      s[at] = (s[at] + 1 + i) % 256
    end
    local bytes = {}
    for k, b in ipairs(s) do bytes[k] = string.char(b) end
    write_all(q, table.concat(bytes))
    local ok, t = pcall(T.load, q)
    if ok then
      for _, x in pairs(t) do local _ = x:numel() > 0 and x:sum() end
    else
      rejected = rejected + 1
      assert(t:find("not a valid safetensors file", 1, true), t)
    end
  end
  assert(rejected > 0)
  cleanup()
end

tests["load and save: missing files, directories, unwritable paths"] = function()
  expect_error("load: cannot open '/nonexistent/x.safetensors': No such file or directory", T.load, "/nonexistent/x.safetensors")
  expect_error("load: '/tmp' is not a regular file", T.load, "/tmp")
  expect_error("save: cannot write '/nonexistent/dir/x.safetensors': No such file or directory",
    T.save, "/nonexistent/dir/x.safetensors", { a = T.ones(1) })
  -- a failed rename (the target is a directory) leaves no temporary file behind
  local dir = tmp()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "/target'"))
  expect_error("save: cannot write '" .. dir .. "/target'", T.save, dir .. "/target", { a = T.ones(4) })
  local ls = io.popen("ls -A '" .. dir .. "'")
  local listing = ls:read("a")
  ls:close()
  assert(listing == "target\n", "left behind: " .. listing)
  os.execute("rm -r '" .. dir .. "'")
  expect_error("bad argument #2", T.save, "x", nil)
  expect_error("bad argument #1", T.load, {})
end

tests["save: overwrite is atomic and keeps the old file's tensors alive"] = function()
  local p = tmp()
  T.save(p, { w = T.full({ 100 }, 3) })
  local old = T.load(p).w
  for i = 1, 5 do T.save(p, { w = T.full({ 100 }, i) }) end
  assert(T.load(p).w:sum():item() == 500)
  assert(old:sum():item() == 300)
  cleanup()
end

---------------------------------------------------------------------------
-- the file tests/interop/check_safetensors.py checks with the Python package
---------------------------------------------------------------------------
tests["interop file"] = function()
  local base = T.arange(0, 20):reshape(4, 5)
  local src = {
    f32 = T.arange(0, 6):reshape(2, 3) * 0.5 - 1,
    f32_transposed = T.arange(0, 6):reshape(2, 3):t(),
    f32_narrow = base:narrow(2, 2, 3),
    f64 = T.tensor({ 1 / 3, -2.5e300, 5e-324, -0.0, 1 / 0, -1 / 0 }, { dtype = "f64" }),
    f16 = from_bits("F16", "<I2", { 3, 4 }, F16_BITS),
    bf16 = from_bits("BF16", "<I2", { 2, 6 }, BF16_BITS),
    i32 = T.tensor({ -2147483648, -1, 0, 1, 2147483647 }, { dtype = "i32" }),
    i64 = from_bits("I64", "<i8", { 6 }, I64_EXTREMES),
    u8 = T.tensor({ 0, 1, 127, 128, 255 }, { dtype = "u8" }),
    bool = T.tensor({ true, false, true, true, false }),
    scalar = T.tensor(3.25),
    empty = T.zeros({ 0, 3 }),
    empty_i32 = T.zeros({ 2, 0, 4 }, { dtype = "i32" }),
    grad = T.arange(0, 4, { dtype = "f64" }):reshape(2, 2):requires_grad_() * 2,
  }
  local meta = { format = "pt", step = 1234, lr = 0.5, note = 'caf\u{e9} "q"\n\u{2603}', empty = "" }
  local out = os.getenv("TOCHA_SAFETENSORS_INTEROP")
  local p = out or tmp()
  T.save(p, src, meta)
  local got = T.load(p)
  for name, t in pairs(src) do assert(bytes_of(got[name]) == bytes_of(t), name) end
  cleanup()
end

return tests
