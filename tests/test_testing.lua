-- tests/test_testing.lua: T.testing's own helpers fail when they should: raises (text,
-- pattern, lists), shape_is, read_file/write_file, path (fixtures beside the test file) and
-- tocha (a child run).
local T = require "tocha"
local testing = T.testing

local function boom(msg) error(msg, 0) end

return {
  ["raises: plain text, a Lua pattern or a list, and fails otherwise"] = function()
    assert(testing.raises("size [4 x 3]", boom, "matmul: size [4 x 3] @ [4 x 3]") == "matmul: size [4 x 3] @ [4 x 3]")
    testing.raises("size %[%d x %d%]", boom, "matmul: size [4 x 3]")
    testing.raises({ "matmul", "[4 x 3]" }, boom, "matmul: size [4 x 3]")
    assert(testing.assert_raises == testing.raises)
    local ok, err = pcall(testing.raises, "x", function() end)
    assert(not ok and err:find("expected an error containing 'x'", 1, true), err)
    ok, err = pcall(testing.raises, "other", boom, "the message")
    assert(not ok and err:find("error 'the message' does not contain 'other'", 1, true), err)
    ok, err = pcall(testing.raises, { "the", "missing" }, boom, "the message")
    assert(not ok and err:find("does not contain 'missing'", 1, true), err)
    ok, err = pcall(testing.raises, "[unclosed", boom, "a message") -- a bad pattern is just text not found
    assert(not ok and err:find("does not contain '[unclosed'", 1, true), err)
  end,

  ["shape_is compares the whole shape"] = function()
    local x = T.zeros({ 2, 3 })
    assert(testing.shape_is(x, { 2, 3 }) and not testing.shape_is(x, { 2 }) and not testing.shape_is(x, { 3, 2 }))
    assert(testing.shape_is(T.tensor(1), {}) and not testing.shape_is(x, { 2, 3, 1 }))
  end,

  ["read_file and write_file round-trip bytes and name the path on failure"] = function()
    local path = testing.tmpdir() .. "/f.bin"
    local bytes = "a\0b\r\n\255"
    testing.write_file(path, bytes)
    assert(testing.read_file(path) == bytes)
    testing.raises("read_file: /nonexistent/f: No such file", testing.read_file, "/nonexistent/f")
    testing.raises("write_file: /nonexistent/f: No such file", testing.write_file, "/nonexistent/f", "x")
  end,

  ["path resolves beside the calling file, whatever the working directory"] = function()
    local p = testing.path("ref/core_ref.lua")
    assert(p:match("/ref/core_ref%.lua$") and io.open(p) ~= nil, p)
    assert(testing.read_file(testing.path("test_testing.lua")):find("T.testing's own helpers", 1, true))
  end,

  ["tocha runs a child with its output and exit code"] = function()
    local dir = testing.tmpdir()
    testing.write_file(dir .. "/c.lua", 'print(os.getenv("TOCHA_X")); os.exit(3)')
    local out, rc = testing.tocha(dir .. "/c.lua", "TOCHA_X=hello ")
    assert(out == "hello\n" and rc == 3, out .. tostring(rc))
  end,
}
