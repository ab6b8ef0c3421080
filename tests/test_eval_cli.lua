-- tests/test_eval_cli.lua: `tocha eval` on folders (FID, KID, IS, statistics files and the
-- per-folder cache), and the shapes FID: its network reads scenes, and its distance grows as
-- images drift from the dataset's.
local T = require "tocha"
local eval = require "tocha.eval"
local models = require "tocha.models"
local image = require "tocha.image"
local shapes = require "tocha.data.shapes"
local cli = require "tocha.cli.eval"
local fill = dofile(T.testing.path("ref/eval_weights.lua"))

local sf = eval.shapes_fid
local tests = {}

-- a writable stand-in for io.stdout / io.stderr
local function buffer()
  local b = { parts = {} }
  function b:write(...) for _, s in ipairs({ ... }) do self.parts[#self.parts + 1] = tostring(s) end return self end
  function b:text() return table.concat(self.parts) end
  return b
end

local function tocha_eval(args)
  local out, err = buffer(), buffer()
  local code = cli(args, out, err)
  return code, out:text(), err:text()
end

-- n shapes images (u8 32 x 32) into dir as PNGs; transform(img) may alter each
local function write_shapes(dir, n, seed, transform, size)
  T._sys.mkdirs(dir)
  local ds = shapes { size = size or 32, seed = seed, objects = 1, split = "test", format = "u8" }
  local b = ds:batch(1, n)
  for i = 1, n do
    local img = b.image[i]
    if transform then img = transform(img) end
    image.write(string.format("%s/%04d.png", dir, i), img)
  end
  return b.image
end

local have_weights = io.open(sf.SHIPPED, "rb")
if have_weights then have_weights:close() end

---------------------------------------------------------------------------------------------
-- the shapes FID
---------------------------------------------------------------------------------------------
tests["shapes features: the shipped network reads held-out scenes"] = function()
  if not have_weights then skip("no " .. sf.SHIPPED .. " (run experiments/shapes_features.lua)") end
  local acc = sf.evaluate(sf.load(), 4242)
  -- which color and which shape is at each place; with both, the features hold which color
  -- goes with which shape even where the pairs head alone misreads it (60% of scenes whole)
  for _, k in ipairs({ "color_at", "shape_at", "size" }) do
    assert(acc[k] > 0.9, string.format("%s read right for %.1f%% of scenes", k, 100 * acc[k]))
  end
end

tests["shapes FID: near 0 between real sets, growing as the images go wrong"] = function()
  if not have_weights then skip("no " .. sf.SHIPPED) end
  local ds = shapes { size = 32, seed = 99, objects = 1, split = "test", format = "u8" }
  local real = ds:batch(1, 400).image
  local ref = { n = 2000 }
  local same = sf.fid(real, ref)
  -- the same scenes with the colors of the channels swapped: every object a wrong color
  local swapped = sf.fid(real:index_select(4, T.tensor({ 3, 1, 2 }, { dtype = "i64" })), ref)
  -- blurred: the shapes lose their edges
  local blurred = {}
  for i = 1, 400 do blurred[i] = image.resize(image.resize(real[i], { 8, 8 }, { mode = "area" }), { 32, 32 }) end
  local blur = sf.fid(blurred, ref)
  -- noise added to the pixels, a little and a lot
  local function noisy(s)
    local x = real:to("f32") + T.randn(real.shape) * s
    return x:clamp(0, 255):add(0.5):to("u8") -- rounded (the conversion truncates)
  end
  local little, lot = sf.fid(noisy(8), ref), sf.fid(noisy(40), ref)
  assert(same < little and little < lot, string.format("noise: %.3g < %.3g < %.3g", same, little, lot))
  assert(swapped > 10 * same and blur > 10 * same, string.format("real %.3g, colors swapped %.3g, blurred %.3g",
    same, swapped, blur))
  -- float samples in [-1, 1], as a model draws them, give the same distance
  local f = image.to_float(real)
  assert(math.abs(sf.fid(f, { n = 2000, range = { -1, 1 } }) - same) < 1e-9 * math.max(1, same))
end

tests["shapes features: targets, a short training run, save and load"] = function()
  local b = sf.dataset(3):batch(1, 8)
  local t = sf.targets(b.objects)
  local NC, NS, NP = #shapes.COLORS, #shapes.SHAPES, #shapes.POSITIONS
  assert(t.color_at.shape[2] == NC * NP and t.shape_at.shape[2] == NS * NP and t.pairs.shape[2] == NC * NS)
  local pos = {}
  for k, p in ipairs(shapes.POSITIONS) do pos[p.name] = k end
  for i = 1, 8 do
    local objs = b.objects[i]
    assert(t.color_at[i]:sum():item() == #objs and t.pairs[i]:sum():item() == #objs)
    for _, o in ipairs(objs) do
      local c = ({ red = 1, green = 2, blue = 3, yellow = 4, purple = 5, orange = 6 })[o.color]
      assert(t.color_at[i][(c - 1) * NP + pos[o.position]]:item() == 1, "color at its place")
    end
    assert(t.size[i]:item() == (#objs == 2 and 3 or (objs[1].size == "small" and 1 or 2)), "size class")
  end
  local net = sf.train { steps = 3, batch = 8 }
  assert(not net.training)
  local dir = T.testing.tmpdir()
  sf.save(net, dir .. "/w.safetensors")
  local again = sf.load(dir .. "/w.safetensors")
  local x = image.to_float(shapes { size = 32, format = "u8" }:batch(1, 4).image)
  T.testing.assert_close(again(x), net(x))
  local ext = sf.extractor({ weights = dir .. "/w.safetensors" })
  assert(ext:features(T.zeros({ 3, 64, 48, 3 }, { dtype = "u8" })).shape[2] == 64, "other sizes are resized")
  T.save(dir .. "/bad.safetensors", { ["features.weight"] = T.zeros({ 3, 3 }) })
  T.testing.assert_raises("do not fit the network", function() sf.load(dir .. "/bad.safetensors") end)
end

---------------------------------------------------------------------------------------------
-- the command
---------------------------------------------------------------------------------------------
tests["tocha eval fid --model shapes: folders, statistics files, the cache"] = function()
  if not have_weights then skip("no " .. sf.SHIPPED) end
  local root = T.testing.tmpdir()
  write_shapes(root .. "/a", 80, 1)
  write_shapes(root .. "/b", 80, 2, function(img) return img:index_select(3, T.tensor({ 2, 3, 1 }, { dtype = "i64" })) end)
  local cache = root .. "/cache"
  local code, out, err = tocha_eval({ "fid", root .. "/a", root .. "/b", "--model", "shapes", "--cache", cache })
  assert(code == 0, err)
  local v = tonumber(out:match("^FID: (%S+)\n$"))
  assert(v and v > 1, out)
  local direct = eval.fid(root .. "/a", root .. "/b", { model = "shapes", cache = false })
  assert(math.abs(v - direct) < 1e-6 * direct, string.format("%g vs %g", v, direct))
  -- each folder's statistics are now cached; a second run reads them
  local files = T._sys.listdir(cache)
  assert(#files == 2, "two cache files, got " .. #files)
  local code2, out2 = tocha_eval({ "fid", root .. "/a", root .. "/b", "--model", "shapes", "--cache", cache })
  assert(code2 == 0 and out2 == out)
  -- a changed folder is a new cache entry
  write_shapes(root .. "/a", 1, 7)
  tocha_eval({ "fid", root .. "/a", root .. "/b", "--model", "shapes", "--cache", cache })
  assert(#T._sys.listdir(cache) == 3)
  -- statistics saved to a file stand in for the folder
  local c3, o3, e3 = tocha_eval({ "stats", root .. "/b", root .. "/b.safetensors", "--model", "shapes", "--no-cache" })
  assert(c3 == 0, e3)
  assert(o3:find("80 images, 64 dims", 1, true), o3)
  local c4, o4 = tocha_eval({ "fid", root .. "/a", root .. "/b.safetensors", "--model", "shapes", "--no-cache" })
  assert(c4 == 0)
  local a2 = eval.fid(root .. "/a", root .. "/b", { model = "shapes", cache = false })
  assert(math.abs(tonumber(o4:match("FID: (%S+)")) - a2) < 1e-6 * a2)
  -- KID on the same folders
  local c5, o5, e5 = tocha_eval({ "kid", root .. "/a", root .. "/b", "--model", "shapes", "--subsets", "5",
    "--subset-size", "50" })
  assert(c5 == 0, e5)
  assert(tonumber(o5:match("KID: (%S+)")) > 0 and o5:find("KID std: "), o5)
end

tests["tocha eval with Inception weights from a file: fid, is, mismatched statistics"] = function()
  local root = T.testing.tmpdir()
  local net = fill(models.InceptionV3FID())
  local weights = root .. "/inception.safetensors"
  T.save(weights, net:state_dict())
  write_shapes(root .. "/a", 3, 1, nil, 40)
  write_shapes(root .. "/b", 3, 2, nil, 56)
  local code, out, err = tocha_eval({ "fid", root .. "/a", root .. "/b", "--weights", weights, "--dims", "64",
    "--allow-singular", "--no-cache", "--mode", "clean" })
  assert(code == 0, err)
  local v = tonumber(out:match("^FID: (%S+)\n$"))
  local ext = eval.inception.Extractor({ weights = weights, dims = 64, mode = "clean" })
  local function stats(dir)
    local list = {}
    for i = 1, 3 do list[i] = image.read(string.format("%s/%04d.png", dir, i), { channels = 3 }) end
    return eval.statistics(list, { extractor = ext })
  end
  local want = eval.fid(stats(root .. "/a"), stats(root .. "/b"), { allow_singular = true })
  assert(math.abs(v - want) < 1e-6 * want, string.format("%g vs %g", v, want))
  -- without --allow-singular, 3 images for 64 dims is an error that says why
  local c2, _, e2 = tocha_eval({ "fid", root .. "/a", root .. "/b", "--weights", weights, "--dims", "64", "--no-cache" })
  assert(c2 == 1 and e2:find("has 3 images for 64-dimensional features", 1, true), e2)
  -- the Inception Score of a folder
  local c3, o3, e3 = tocha_eval({ "is", root .. "/a", "--weights", weights, "--splits", "1" })
  assert(c3 == 0, e3)
  assert(tonumber(o3:match("IS: (%S+)")) >= 1, o3)
  -- statistics from different extractors do not mix
  tocha_eval({ "stats", root .. "/a", root .. "/a.safetensors", "--weights", weights, "--dims", "64" })
  tocha_eval({ "stats", root .. "/b", root .. "/b.safetensors", "--weights", weights, "--dims", "64", "--mode", "clean" })
  local c4, _, e4 = tocha_eval({ "fid", root .. "/a.safetensors", root .. "/b.safetensors", "--allow-singular" })
  assert(c4 == 1 and e4:find("different feature extractors (inception-legacy-64-", 1, true), e4)
end

tests["tocha eval: usage and errors"] = function()
  local code, out = tocha_eval({ "--help" })
  assert(code == 0 and out:find("usage: tocha eval fid REAL FAKE", 1, true))
  local c, _, e = tocha_eval({ "fid", "a" })
  assert(c == 2 and e:find("fid takes 2 paths, got 1", 1, true), e)
  c, _, e = tocha_eval({ "fid", "a", "b", "--dims", "x" })
  assert(c == 2 and e:find("bad --dims 'x'", 1, true), e)
  c, _, e = tocha_eval({ "fig", "a", "b" })
  assert(c == 2 and e:find("unknown command 'fig'", 1, true), e)
  c, _, e = tocha_eval({ "fid", "a", "b", "--colour" })
  assert(c == 2 and e:find("unknown option --colour", 1, true), e)
  local root = T.testing.tmpdir()
  c, _, e = tocha_eval({ "fid", root .. "/none", root, "--model", "shapes" })
  assert(c == 1 and e:find("is neither a folder nor a file", 1, true), e)
  T._sys.mkdirs(root .. "/empty")
  c, _, e = tocha_eval({ "fid", root .. "/empty", root .. "/empty", "--model", "shapes" })
  assert(c == 1 and e:find("no PNG or JPEG images in", 1, true), e)
  write_shapes(root .. "/one", 1, 1)
  c, _, e = tocha_eval({ "fid", root .. "/one", root .. "/one", "--weights", root .. "/w.safetensors" })
  assert(c == 1 and e:find("no Inception weights at", 1, true), e)
  local f = io.open(root .. "/s.npz", "wb"); f:write("PK"); f:close()
  c, _, e = tocha_eval({ "fid", root .. "/s.npz", root .. "/s.npz" })
  assert(c == 1 and e:find("convert it with python3 tools/convert_weights.py stats", 1, true), e)
  c, _, e = tocha_eval({ "clipscore", root .. "/empty" })
  assert(c == 1 and e:find("clipscore needs --clip DIR", 1, true), e)
end

return tests
