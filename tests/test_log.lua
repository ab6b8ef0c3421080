-- tests/test_log.lua: tocha.log. Event files are decoded here (tocha.log.events, CRCs checked
-- in C) and compared with what was logged; a fixture written by TensorBoard's own writer
-- (tests/ref/gen_log.py) checks the decoder; child processes check kill -9, exit without
-- close and a full file system. TensorBoard itself reads them in tests/interop/tensorboard.sh.
local T = require "tocha"
local raises, read_file, write_file = T.testing.raises, T.testing.read_file, T.testing.write_file
local log = require "tocha.log"
local events = require "tocha.log.events"
local image = require "tocha.image"
local C = T._log

local tocha_bin = arg and arg[-1] or "./build/tocha"

local tmpdir = T.testing.tmpdir

local function same_pixels(a, b)
  return a.dtype == b.dtype and #a.shape == #b.shape and a:numel() == b:numel() and a:ne(b):sum():item() == 0
end

local function close_to(a, b, tol) return math.abs(a - b) <= (tol or 1e-6) * math.max(1, math.abs(b)) end

-- runs a Lua chunk in a child tocha; returns its output and exit status
local function child(dir, code, prefix)
  local script = dir .. "/child.lua"
  write_file(script, code)
  return T.testing.tocha(script, prefix)
end

local function scalars(dir, tag)
  local r = events.load(dir)
  return r.scalars[tag] or {}, r
end

return {
  ["crc32c matches the standard check values"] = function()
    assert(C.crc32c("123456789") == 0xE3069283)
    assert(C.crc32c(string.rep("\0", 32)) == 0x8A9136AA)
    assert(C.crc32c(string.rep("\255", 32)) == 0x62A8AB43)
    assert(C.crc32c("") == 0)
    local _, masked = C.crc32c("")
    assert(masked == 0xa282ead8)
  end,

  ["decodes an event file written by TensorBoard's own writer"] = function()
    local ref = dofile(T.testing.path("ref/log_ref.lua"))
    local r = events.load(T.testing.path("ref/log_events"))
    assert(#r.files == 1 and r.truncated == 0)
    local loss = r.scalars.loss
    assert(#loss == 3)
    for i, want in ipairs(ref.loss) do
      assert(loss[i].step == want.step)
      assert(close_to(loss[i].wall_time, ref.wall + want.step))
      if want.nan then assert(loss[i].value ~= loss[i].value) else assert(loss[i].value == want.value) end
    end
    assert(r.scalars.acc[1].step == ref.acc.step and close_to(r.scalars.acc[1].value, ref.acc.value))
    local im = r.images.samples[1]
    assert(im.step == ref.image.step and im.width == ref.image.width and im.height == ref.image.height)
    assert(im.colorspace == ref.image.colorspace)
    local px = image.decode(im.png)
    assert(px.shape[1] == 2 and px.shape[2] == 3 and px.shape[3] == 3)
    local flat = px:reshape(-1):tolist()
    for i, v in ipairs(ref.image.pixels) do assert(flat[i] == v) end
    local h, want = r.histograms.weights[1], ref.histogram
    assert(h.step == want.step and h.min == want.min and h.max == want.max and h.num == want.num)
    assert(h.sum == want.sum and h.sum_squares == want.sum_squares)
    for i = 1, 3 do assert(h.limits[i] == want.limits[i] and h.counts[i] == want.counts[i]) end
    assert(r.texts.note[1].step == ref.text.step and r.texts.note[1].text == ref.text.text)
    for k, v in pairs(ref.hparams.values) do assert(r.hparams.values[k] == v, k) end
    assert(r.hparams.metrics[1] == ref.hparams.metrics[1])
  end,

  ["every kind round-trips through the event file"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir)
    for step = 1, 20 do
      w:add_scalar("train/loss", 1 / step, step)
      w:add_scalar("lr", T.tensor({ 1e-3 * step }), step) -- a one-element tensor
    end
    local img = T.rand({ 3, 5, 7 }, { dtype = "f64" })
    w:add_image("samples/float", img, 3)
    local u8 = T.randint(0, 256, { 4, 6, 3 }):to("u8")
    local u8_copy = u8:clone()
    w:add_image("samples/u8", u8, 4)
    u8:fill_(0) -- the writer keeps its own copy until it encodes the PNG
    w:add_image("samples/gray", T.rand({ 5, 5 }), 5)
    w:add_image("samples/hwc", img:permute(2, 3, 1), 6, { dataformats = "HWC" })
    w:add_images("samples/grid", T.rand({ 5, 3, 4, 4 }), 7, { nrow = 3 })
    local x = T.randn({ 1000 }, { dtype = "f64" })
    w:add_histogram("weights", x, 8, { bins = 10 })
    w:add_histogram("ints", T.arange(0, 100), 9)
    w:add_histogram("list", { 1, 2, 2, 3, 3, 3 }, 10, { bins = 3 })
    w:add_histogram("constant", T.full({ 10 }, 4.0), 11)
    local m = T.randn({ 6, 5 })
    w:add_histogram("strided", m:t():narrow(1, 2, 3), 11) -- f32, not contiguous
    w:add_text("notes", "hello **world**, ünïcode", 12)
    w:add_hparams({ lr = 1e-4, opt = "adam", ema = true, model = { ch = 64 }, sizes = { 1, 2 } },
      { ["eval/acc"] = 0.875 })
    w:close()

    local r = events.load(dir)
    assert(#r.files == 1 and r.truncated == 0)
    local loss = r.scalars["train/loss"]
    assert(#loss == 20)
    for i, e in ipairs(loss) do
      assert(e.step == i and close_to(e.value, 1 / i) and e.wall_time > 1e9)
    end
    assert(close_to(r.scalars.lr[20].value, 0.02))
    -- images come back as the same pixels
    local got = image.decode(r.images["samples/u8"][1].png)
    assert(same_pixels(got, u8_copy))
    local fl = image.decode(r.images["samples/float"][1].png)
    assert(same_pixels(fl, T._image.to_u8(img, 0, 1)))
    assert(same_pixels(image.decode(r.images["samples/hwc"][1].png), fl))
    local gray = r.images["samples/gray"][1]
    assert(gray.colorspace == 1 and gray.width == 5 and gray.height == 5)
    local grid = r.images["samples/grid"][1] -- 2 rows of 3, padding 2
    assert(grid.width == 3 * 6 + 2 and grid.height == 2 * 6 + 2 and grid.step == 7)
    -- histograms
    local h = r.histograms.weights[1]
    local xs = x:tolist()
    local lo, hi, sum, sq = math.huge, -math.huge, 0, 0
    for _, v in ipairs(xs) do lo, hi, sum, sq = math.min(lo, v), math.max(hi, v), sum + v, sq + v * v end
    assert(h.step == 8 and h.num == 1000 and h.min == lo and h.max == hi)
    assert(close_to(h.sum, sum, 1e-9) and close_to(h.sum_squares, sq, 1e-9))
    assert(#h.limits == 10 and #h.counts == 10 and h.limits[10] == hi)
    local total = 0
    for k = 1, 10 do
      local left, right = k == 1 and -math.huge or h.limits[k - 1], k == 10 and math.huge or h.limits[k]
      local n = 0
      for _, v in ipairs(xs) do if v >= left and v < right or (k == 10 and v == hi) then n = n + 1 end end
      assert(h.counts[k] == n, "bucket " .. k)
      total = total + h.counts[k]
    end
    assert(total == 1000)
    local l = r.histograms.list[1]
    assert(l.counts[1] == 1 and l.counts[2] == 2 and l.counts[3] == 3 and l.min == 1 and l.max == 3)
    assert(r.histograms.ints[1].num == 100 and r.histograms.ints[1].max == 99)
    local st, want_sum = r.histograms.strided[1], 0
    for _, v in ipairs(m:t():narrow(1, 2, 3):reshape(-1):tolist()) do want_sum = want_sum + v end
    assert(st.num == 18 and close_to(st.sum, want_sum, 1e-6))
    local c = r.histograms.constant[1]
    assert(c.min == 4 and c.max == 4 and c.num == 10 and c.limits[#c.limits] == 4.5)
    -- text and hparams
    assert(r.texts.notes[1].text == "hello **world**, ünïcode" and r.texts.notes[1].step == 12)
    local hp = r.hparams
    assert(hp.values.lr == 1e-4 and hp.values.opt == "adam" and hp.values.ema == true)
    assert(hp.values["model.ch"] == 64 and hp.values.sizes == "1,2")
    assert(hp.types.lr == 3 and hp.types.opt == 1 and hp.types.ema == 2)
    assert(hp.metrics[1] == "eval/acc" and hp.status == 1)
    assert(close_to(r.scalars["eval/acc"][1].value, 0.875) and r.scalars["eval/acc"][1].step == 20)
  end,

  ["metrics.jsonl holds one row per step and log.read loads it"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir)
    for step = 1, 5 do w:log({ loss = 1 / step, lr = 0.1 }, step) end
    w:add_scalar("eval/acc", 0.5, 5) -- joins step 5's row
    w:close()
    local rows = assert(log.read(dir))
    assert(#rows == 5)
    for i, row in ipairs(rows) do
      assert(row.step == i and row.loss == 1 / i and row.lr == 0.1 and row.time > 1e9)
    end
    assert(rows[5]["eval/acc"] == 0.5)
    local steps, values = log.series(dir, "eval/acc")
    assert(#steps == 1 and steps[1] == 5 and values[1] == 0.5)
    -- a run killed mid-line leaves a tail without a newline: it is left out
    local f = assert(io.open(dir .. "/metrics.jsonl", "a"))
    f:write('{"step":6,"lo')
    f:close()
    assert(#assert(log.read(dir)) == 5)
    assert(log.read(dir .. "/missing") == nil)
    write_file(dir .. "/bad.jsonl", "{\"step\":1}\nnot json\n")
    local none, err = log.read(dir .. "/bad.jsonl")
    assert(none == nil and err:find("bad.jsonl:2"))
    -- metrics = false writes none
    local d2 = tmpdir()
    log.tensorboard(d2, { metrics = false }):close()
    assert(io.open(d2 .. "/metrics.jsonl") == nil)
  end,

  ["non-finite scalars are logged as such and counted"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir)
    w:add_scalar("loss", 0 / 0, 1)
    w:add_scalar("loss", math.huge, 2)
    w:add_scalar("loss", -math.huge, 3)
    w:add_scalar("loss", 1.5, 4)
    w:add_scalar("grad_norm", 0 / 0, 4)
    w:add_histogram("w", T.tensor({ 1, 0 / 0, 2, math.huge }), 5)
    assert(w.nonfinite == 4 and w.nonfinite_tags.loss == 3 and w.nonfinite_tags.grad_norm == 1)
    assert(w.nonfinite_tags.w == 2)
    w:close()
    local s = scalars(dir, "loss")
    assert(#s == 4 and s[1].value ~= s[1].value and s[2].value == math.huge and s[3].value == -math.huge)
    local rows = log.read(dir)
    assert(rows[1].loss ~= rows[1].loss and rows[2].loss == math.huge and rows[3].loss == -math.huge)
    assert(rows[4].grad_norm ~= rows[4].grad_norm and rows[4].loss == 1.5)
    local h = events.load(dir).histograms.w[1]
    assert(h.num == 2 and h.min == 1 and h.max == 2)
    -- all values non-finite: an empty histogram, not an error
    local d2 = tmpdir()
    local w2 = log.tensorboard(d2)
    w2:add_histogram("w", T.tensor({ 0 / 0 }), 1)
    w2:close()
    assert(events.load(d2).histograms.w[1].num == 0)
  end,

  ["invalid tags, steps and values raise at the call"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir)
    raises("add_scalar: invalid tag \"\": it is empty", function() w:add_scalar("", 1, 1) end)
    raises("control character", function() w:add_scalar("a\nb", 1, 1) end)
    raises("empty part", function() w:add_scalar("a//b", 1, 1) end)
    raises("empty part", function() w:add_scalar("/a", 1, 1) end)
    raises("not valid UTF%-8", function() w:add_scalar("bad\255utf8", 1, 1) end)
    raises("the tag must be a string", function() w:add_scalar(42, 1, 1) end)
    raises("reserved", function() w:add_scalar("step", 1, 1) end)
    raises("expected a number or a one%-element tensor", function() w:add_scalar("x", "high", 1) end)
    raises("2 elements", function() w:add_scalar("x", T.zeros({ 2 }), 1) end)
    raises("step must be a non%-negative integer", function() w:add_scalar("x", 1, -1) end)
    raises("step must be", function() w:add_scalar("x", 1, 1.5) end)
    raises("CHW image must have 3 dims", function() w:add_image("i", T.rand({ 2, 3, 4, 5 }), 1) end)
    raises("1 to 4 channels", function() w:add_image("i", T.rand({ 5, 4, 4 }), 1) end)
    raises("cannot show a i32", function() w:add_image("i", T.zeros({ 3, 3, 3 }, { dtype = "i32" }), 1) end)
    raises("dataformats", function() w:add_image("i", T.rand({ 3, 4, 4 }), 1, { dataformats = "NCHW" }) end)
    raises("expected a tensor or a list", function() w:add_histogram("h", "x", 1) end)
    raises("bins", function() w:add_histogram("h", T.rand({ 3 }), 1, { bins = 0 }) end)
    raises("text must be a string", function() w:add_text("t", {}, 1) end)
    raises("hyperparameter 'f' is a function", function() w:add_hparams({ f = print }, {}) end)
    raises("invalid tag", function() w:add_hparams({ lr = 1 }, { ["a//b"] = 1 }) end)
    local line = debug.getinfo(1, "l").currentline + 1
    local err = raises("invalid tag", function() w:add_scalar("", 1, 1) end)
    assert(err:find("test_log.lua:" .. line), "error points at the caller: " .. err)
    w:close()
    w:close() -- a second close is allowed
    raises("add_scalar: the writer is closed", function() w:add_scalar("x", 1, 1) end)
    -- nothing invalid reached the file
    local r = events.load(dir)
    assert(next(r.scalars) == nil and next(r.images) == nil)
  end,

  ["a directory that cannot be made or written raises with the reason"] = function()
    local dir = tmpdir()
    write_file(dir .. "/file", "x")
    raises("log.tensorboard: cannot create directory .*/file: a file of that name exists", function() log.tensorboard(dir .. "/file/sub") end)
    raises("log.tensorboard: cannot create directory", function() log.tensorboard("/proc/tocha-cannot-exist/run") end)
    raises("non%-empty string", function() log.tensorboard("") end)
    -- a directory without write permission (root may write anywhere: then nothing to test)
    os.execute("mkdir -p " .. dir .. "/ro && chmod 500 " .. dir .. "/ro")
    local probe = io.open(dir .. "/ro/probe", "w")
    if probe then probe:close() else
      raises("cannot open .* for writing: Permission denied", function() log.tensorboard(dir .. "/ro") end)
    end
  end,

  ["a full file system gives the error at the call and leaves a readable file"] = function()
    local dir = tmpdir()
    -- ulimit -f stands for a full disk: writes past it fail with EFBIG (SIGXFSZ ignored)
    local out, rc = child(dir, [[
      local log = require "tocha.log"
      local w = log.tensorboard(arg[1] or "]] .. dir .. [[/run", { flush_secs = 0 })
      local n = 0
      local ok, err = pcall(function()
        for step = 1, 100000 do
          w:add_scalar("loss", step, step)
          n = step
          if step % 50 == 0 then w:flush() end
        end
      end)
      print("logged " .. n)
      print(err)
      os.exit(ok and 0 or 3)
    ]], "trap '' XFSZ; ulimit -f 16; exec ")
    assert(rc == 3, out)
    assert(out:find("flush: writing .*events%.out%.tfevents.* failed: File too large") or
      out:find("flush: writing .*metrics.jsonl failed: File too large"), out)
    local n = tonumber(out:match("logged (%d+)"))
    -- everything up to the last good flush is there, and the file has only whole records
    local s, r = scalars(dir .. "/run", "loss")
    assert(r.truncated == 0)
    assert(#s >= 50 and #s <= n, #s .. " of " .. n)
    for i, e in ipairs(s) do assert(e.step == i) end
  end,

  ["kill -9 loses at most the last flush interval and leaves readable files"] = function()
    local dir = tmpdir()
    write_file(dir .. "/child.lua", [[
      local log = require "tocha.log"
      local w = log.tensorboard("]] .. dir .. [[/run", { flush_secs = 0.2 })
      io.stdout:write("pid ", io.open("/proc/self/stat"):read("n"), "\n")
      io.stdout:flush()
      local t0 = os.clock()
      for step = 1, math.huge do
        w:add_scalar("loss", step, step)
        if step % 8 == 0 then w:add_image("img", require("tocha").rand({ 3, 16, 16 }), step) end
        io.stdout:write(step, "\n")
        io.stdout:flush()
        local t = os.clock() + 0.002
        while os.clock() < t do end
      end
    ]])
    local p = io.popen("exec " .. tocha_bin .. " " .. dir .. "/child.lua")
    local pid = tonumber(p:read("l"):match("pid (%d+)"))
    local logged = 0
    repeat logged = tonumber(p:read("l")) until logged >= 200
    -- wait two intervals while the child keeps logging, then kill it without warning
    os.execute("sleep 0.5")
    os.execute("kill -9 " .. pid)
    p:close()
    local s, r = scalars(dir .. "/run", "loss")
    assert(#r.files == 1)
    assert(#s >= logged, string.format("%d scalars in the file, %d logged more than an interval before the kill", #s, logged))
    for i, e in ipairs(s) do assert(e.step == i and e.value == i) end
    assert(#r.images.img >= logged // 8)
    local rows = assert(log.read(dir .. "/run"))
    assert(#rows >= logged - 1)
  end,

  ["a normal exit flushes without close, also through os.exit"] = function()
    local dir = tmpdir()
    local out, rc = child(dir, [[
      local log = require "tocha.log"
      local w = log.tensorboard("]] .. dir .. [[/a", { flush_secs = 1000 })
      for step = 1, 100 do w:add_scalar("loss", step, step) end
      os.exit(0) -- no close, no finalizers: the atexit path
    ]])
    assert(rc == 0, out)
    assert(#scalars(dir .. "/a", "loss") == 100)
    out, rc = child(dir, [[
      local log = require "tocha.log"
      local w = log.tensorboard("]] .. dir .. [[/b", { flush_secs = 1000 })
      for step = 1, 100 do w:add_scalar("loss", step, step) end
    ]]) -- the script ends: the writer's finalizers close it
    assert(rc == 0, out)
    assert(#scalars(dir .. "/b", "loss") == 100)
    assert(#log.read(dir .. "/b") == 100)
  end,

  ["files are flushed on the timer and by flush"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir, { flush_secs = 0.1 })
    w:add_scalar("a", 1, 1)
    local t = T.clock()
    while #scalars(dir, "a") == 0 and T.clock() - t < 5 do os.execute("sleep 0.05") end
    assert(#scalars(dir, "a") == 1, "the timer flushed")
    local w2 = log.tensorboard(dir .. "/manual", { flush_secs = 0 })
    w2:add_scalar("b", 1, 1)
    assert(#scalars(dir .. "/manual", "b") == 0)
    w2:flush()
    assert(#scalars(dir .. "/manual", "b") == 1)
    assert(#log.read(dir .. "/manual") == 1)
    -- past a megabyte the flusher is woken early
    local w3 = log.tensorboard(dir .. "/big", { flush_secs = 1000 })
    w3:add_image("noise", T.randint(0, 256, { 1000, 800, 3 }):to("u8"), 1)
    t = T.clock()
    while #(events.load(dir .. "/big").images.noise or {}) == 0 and T.clock() - t < 5 do os.execute("sleep 0.05") end
    assert(#events.load(dir .. "/big").images.noise == 1)
    w:close(); w2:close(); w3:close()
  end,

  ["two writers in one directory keep separate files"] = function()
    local dir = tmpdir()
    local a = log.tensorboard(dir, { metrics = false })
    local b = log.tensorboard(dir, { metrics = false, filename_suffix = ".eval" })
    assert(a.path ~= b.path and b.path:match("%.eval$"))
    a:add_scalar("x", 1, 1); b:add_scalar("x", 2, 1)
    a:close(); b:close()
    local s = scalars(dir, "x")
    assert(#s == 2)
  end,

  ["a corrupt record is reported, a truncated tail is tolerated"] = function()
    local dir = tmpdir()
    local w = log.tensorboard(dir)
    for i = 1, 3 do w:add_scalar("x", i, i) end
    w:close()
    local path = events.files(dir)[1]
    local data = read_file(path)
    write_file(dir .. "/cut.tfevents", data:sub(1, #data - 5))
    local evs, truncated = events.read_file(dir .. "/cut.tfevents")
    assert(evs and truncated and #evs == 3) -- file_version and two of three scalars
    local flipped = data:sub(1, #data - 10) .. string.char((data:byte(#data - 9) + 1) % 256) .. data:sub(#data - 8)
    write_file(dir .. "/bad.tfevents", flipped)
    local none, err = events.read_file(dir .. "/bad.tfevents")
    assert(none == nil and err:find("bad data checksum"), err)
    raises("bad data checksum", function() events.load(dir .. "/bad.tfevents") end)
    raises("events.load: cannot list .*missing", function() events.load(dir .. "/missing") end)
  end,

  ["interop: a sweep of two runs for TensorBoard's own reader"] = function()
    -- tests/interop/tensorboard.sh sets TOCHA_TB_INTEROP and checks this with TensorBoard
    local root = os.getenv("TOCHA_TB_INTEROP") or tmpdir()
    local json = require "tocha.json"
    local manifest = { runs = {} }
    local function num(v) -- JSON has no NaN or infinity
      if v ~= v then return "NaN" elseif v == math.huge then return "Infinity" elseif v == -math.huge then return "-Infinity" end
      return v
    end
    for r, hp in ipairs({ { lr = 0.01, opt = "adam", ema = true, layers = 4 }, { lr = 0.1, opt = "sgd", ema = false, layers = 2 } }) do
      local name = "run" .. r
      local w = log.tensorboard(root .. "/" .. name)
      local m = { scalars = {}, images = {}, histograms = {}, texts = {}, hparams = hp }
      manifest.runs[name] = m
      m.scalars.loss, m.scalars.lr = {}, {}
      for step = 1, 40 do
        local v = step == 13 and 0 / 0 or step == 14 and math.huge or 2 / (step + r)
        w:add_scalar("loss", v, step)
        w:add_scalar("lr", hp.lr * step / 40, step)
        m.scalars.loss[#m.scalars.loss + 1] = { step, num(v) }
        m.scalars.lr[#m.scalars.lr + 1] = { step, hp.lr * step / 40 }
      end
      local imgs = {
        { "samples/rgb", T.rand({ 3, 6, 8 }), 10 }, { "samples/u8", T.randint(0, 256, { 5, 7, 4 }):to("u8"), 20 },
        { "samples/gray", T.rand({ 1, 4, 4 }), 30 },
      }
      for _, it in ipairs(imgs) do
        w:add_image(it[1], it[2], it[3])
        local u8 = it[2].dtype == "u8" and it[2] or T._image.to_u8(it[2], 0, 1)
        m.images[it[1]] = { { step = it[3], height = u8.shape[1], width = u8.shape[2], channels = u8.shape[3],
          pixels = u8:reshape(-1):tolist() } }
      end
      local x = T.randn({ 500 }, { dtype = "f64" }) * r
      w:add_histogram("weights/fc1", x, 15, { bins = 12 })
      w:add_text("notes/config", "**lr** " .. hp.lr .. ", ünïcode ✓", 5)
      m.texts["notes/config"] = { { step = 5, text = "**lr** " .. hp.lr .. ", ünïcode ✓" } }
      m.metrics = { ["eval/acc"] = 0.7 + 0.1 * r }
      w:add_hparams(hp, m.metrics)
      w:close()
      local h = events.load(root .. "/" .. name).histograms["weights/fc1"][1]
      m.histograms["weights/fc1"] = { { step = 15, min = h.min, max = h.max, num = h.num, sum = h.sum,
        sum_squares = h.sum_squares, bucket_limit = h.limits, bucket = h.counts } }
      local xs, total = x:tolist(), 0
      for _, v in ipairs(xs) do total = total + v end
      assert(h.num == 500 and close_to(h.sum, total, 1e-9))
      local back = events.load(root .. "/" .. name)
      assert(#back.scalars.loss == 40 and back.scalars.loss[13].value ~= back.scalars.loss[13].value)
      assert(back.hparams.values.opt == hp.opt and back.hparams.values.ema == hp.ema)
    end
    write_file(root .. "/manifest.json", json.encode(manifest))
  end,

  ["tocha plot draws the curves of several runs into a PNG"] = function()
    local plot = require "tocha.cli.plot"
    local dir = tmpdir()
    for r = 1, 2 do
      local w = log.tensorboard(dir .. "/runs/run" .. r, { metrics = r == 1 }) -- run2: event files only
      for step = 1, 50 do w:add_scalar("loss", 1 / (step + r), step); w:add_scalar("acc", step / 50, step) end
      w:close()
    end
    local function sink()
      local buf = {}
      return { write = function(self, ...) for _, x in ipairs({ ... }) do buf[#buf + 1] = x end return self end,
        text = function() return table.concat(buf) end }
    end
    local out, err = sink(), sink()
    local png = dir .. "/loss.png"
    assert(plot.main({ dir .. "/runs/run1", dir .. "/runs/run2", "-o", png, "--smooth", "0.9" }, out, err) == 0, err:text())
    assert(out:text():find("wrote .*loss%.png %(2 curves%)"))
    local img = image.read(png)
    assert(img.shape[1] == 600 and img.shape[2] == 1000)
    assert(img:lt(200):sum():item() > 1000, "something was drawn") -- not a blank white canvas
    -- a directory of runs, two tags, log scale, another size
    assert(plot.main({ dir .. "/runs", "--tag", "loss,acc", "--logy", "--size", "400x300", "-o", png }, out, err) == 0)
    assert(out:text():find("%(4 curves%)") and image.read(png).shape[2] == 400)
    -- a tag no run has, and bad arguments
    assert(plot.main({ dir .. "/runs", "--tag", "nope", "-o", png }, out, err) == 2)
    assert(err:text():find("no run has the tag nope %(tags: acc, loss%)"))
    assert(plot.main({ dir .. "/runs", "--smooth", "1.5" }, out, err) == 2)
    assert(plot.main({}, out, err) == 2 and err:text():find("no runs given"))
    assert(plot.main({ dir .. "/runs", "-o", "/proc/no/such.png" }, out, err) == 2 and err:text():find("cannot write"))
    -- without --tag: the loss the runs log, train/loss as the experiments name it, or loss
    local exp = dir .. "/exp/run1"
    local w = log.tensorboard(exp)
    for step = 1, 10 do w:add_scalar("train/loss", 1 / step, step); w:add_scalar("eval/acc", step / 10, step) end
    w:close()
    assert(plot.main({ dir .. "/exp", "-o", png }, out, err) == 0, err:text())
    assert(out:text():find("wrote .*%(1 curve%) of train/loss"), out:text())
    assert(plot.main({ dir .. "/runs", "-o", png }, out, err) == 0 and out:text():find("of loss\n$"), out:text())
    local only = dir .. "/acc/run1"
    w = log.tensorboard(only)
    w:add_scalar("eval/acc", 0.5, 1)
    w:close()
    assert(plot.main({ only, "-o", png }, out, err) == 2)
    assert(err:text():find("no loss tag; give one with %-%-tag %(tags: eval/acc%)"), err:text())
    -- TensorBoard's smoothing: a debiased moving average that NaN does not enter
    local sm = plot.smooth({ 1, 2, 0 / 0, 4 }, 0.5)
    assert(sm[1] == 1 and close_to(sm[2], (0.5 * 0.5 + 0.5 * 2) / 0.75) and sm[3] ~= sm[3])
    assert(close_to(sm[4], ((0.5 * 0.5 + 1) * 0.5 + 2) / (1 - 0.125)))
  end,

  ["cadence predicates"] = function()
    local e = log.every(500)
    assert(e(500) and e(1000) and e(0) and not e(1) and not e(499))
    local a = log.at({ 100, 500, 1000 })
    assert(a(100) and a(1000) and not a(101))
    local any = log.any(log.every(7), log.at({ 1 }))
    assert(any(1) and any(14) and not any(2))
    local s = log.every_seconds(0.05)
    assert(not s())
    os.execute("sleep 0.06")
    assert(s() and not s())
    assert(log.every_seconds(10, { first = true })())
    raises("positive integer", function() log.every(0) end)
    raises("positive integer", function() log.every(1.5) end)
    raises("list of steps", function() log.at(5) end)
  end,

  ["progress line: plain lines off a terminal, redrawn in place on one"] = function()
    local function sink()
      local buf = {}
      return { write = function(self, ...) for _, s in ipairs({ ... }) do buf[#buf + 1] = tostring(s) end return self end,
        flush = function() end, text = function() return table.concat(buf) end }
    end
    local out = sink()
    local p = log.progress { total = 100, out = out, tty = false, interval = 1e9 }
    local beta, ema = 0.98, 0
    for step = 1, 100 do
      p:update(step, { loss = 1 / step, lr = 1e-4 })
      ema = beta * ema + (1 - beta) / step
    end
    p:close()
    local lines = {}
    for l in out:text():gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert(#lines == 2, out:text()) -- the first step and the last
    assert(lines[1]:find("^step 1/100 %(1%%%)"))
    local last = lines[2]
    assert(last:find("^step 100/100 %(100%%%)") and last:find("lr 1%.00e%-04") and last:find("it/s") and
      last:find("elapsed 0:0%d") and last:find("eta 0:00"), last)
    local shown = tonumber(last:match("loss (%S+)"))
    assert(close_to(shown, ema / (1 - beta ^ 100), 1e-3), last) -- the debiased moving average
    assert(not out:text():find("\r"))

    local tty = sink()
    local q = log.progress { total = 10, out = tty, tty = true }
    for step = 1, 10 do q:update(step, { loss = T.tensor(0.5) }) end
    q:print("a message")
    q:close()
    local text = tty:text()
    assert(text:find("^\rstep 1/10") and text:find("\27%[K") and text:find("a message\n") and text:sub(-1) == "\n")
    assert(not T._sys.isatty(io.popen("true")))
  end,
}
