-- tests/test_sys.lua: T._sys, the operating-system calls the library makes instead of
-- shelling out (directories, fsync, isatty, the clocks, the host name), and run.mkdirs.
local T = require "tocha"
local sys = T._sys

local function touch(path)
  local f = assert(io.open(path, "wb"))
  f:write("x")
  f:close()
end

return {
  ["mkdir makes one new directory and says when it exists"] = function()
    local dir = T.testing.tmpdir()
    assert(sys.mkdir(dir .. "/a") == true and sys.isdir(dir .. "/a"))
    local ok, msg, why = sys.mkdir(dir .. "/a")
    assert(ok == nil and msg:find("cannot create directory .*/a: File exists") and why == "exists", msg)
    ok, msg, why = sys.mkdir(dir .. "/no/such/parent")
    assert(ok == nil and msg:find("No such file or directory") and why == nil, msg)
  end,

  ["mkdirs makes the parents, accepts an existing directory, refuses a file"] = function()
    local dir = T.testing.tmpdir()
    assert(sys.mkdirs(dir .. "/a/b/c") == true and sys.isdir(dir .. "/a/b/c"))
    assert(sys.mkdirs(dir .. "/a/b/c") == true, "an existing directory is fine")
    touch(dir .. "/file")
    local ok, msg = sys.mkdirs(dir .. "/file/d")
    assert(ok == nil and msg == "cannot create directory " .. dir .. "/file: a file of that name exists", msg)
    local run = require "tocha.run"
    assert(run.mkdirs(dir .. "/x/y") == dir .. "/x/y" and sys.isdir(dir .. "/x/y"))
    T.testing.assert_raises("run.mkdirs: cannot create directory", run.mkdirs, dir .. "/file/e")
  end,

  ["listdir names files and marks directories with a slash"] = function()
    local dir = T.testing.tmpdir()
    assert(#assert(sys.listdir(dir)) == 0, "a new tmpdir is empty")
    touch(dir .. "/f.txt")
    sys.mkdir(dir .. "/sub")
    assert(os.execute("ln -s sub " .. dir .. "/link"))
    local names = assert(sys.listdir(dir))
    table.sort(names)
    assert(table.concat(names, " ") == "f.txt link/ sub/", table.concat(names, " "))
    local ok, msg = sys.listdir(dir .. "/missing")
    assert(ok == nil and msg == "cannot list " .. dir .. "/missing: No such file or directory", msg)
    assert(sys.isdir(dir) and not sys.isdir(dir .. "/f.txt") and not sys.isdir(dir .. "/missing"))
  end,

  ["fsync flushes files and directories, and reports a missing one"] = function()
    local dir = T.testing.tmpdir()
    touch(dir .. "/f")
    assert(sys.fsync(dir .. "/f") == true and sys.fsync(dir) == true)
    local ok, msg = sys.fsync(dir .. "/missing")
    assert(ok == nil and msg:find("^cannot open .*/missing: No such file"), msg)
  end,

  ["mkdtemp makes a new empty directory each time"] = function()
    local a, b = T.testing.tmpdir(), T.testing.tmpdir()
    assert(a ~= b and sys.isdir(a) and sys.isdir(b))
    assert(a:match("/tocha_test%.[%w]+$"), a)
    local ok, msg = sys.mkdtemp("/proc/tocha-cannot/x")
    assert(ok == nil and msg:find("cannot create a directory from /proc/tocha%-cannot/x"), msg)
  end,

  ["the clocks, isatty and the host name"] = function()
    local now = sys.now()
    assert(math.abs(now - os.time()) <= 2, "now() is the epoch time")
    local t0 = T.clock()
    assert(T.clock() >= t0)
    assert(sys.isatty(io.popen("true")) == false)
    T.testing.assert_raises("FILE* expected, got string", sys.isatty, "stdout")
    local host = sys.hostname()
    assert(type(host) == "string" and #host > 0, tostring(host))
  end,
}
