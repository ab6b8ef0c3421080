-- tests/test_data.lua: the dataset protocol and wrappers, collate, DataLoader order, resume
-- and bad-data handling, folder datasets in both caption layouts, shards (pack), and the
-- equality of batches made with and without worker threads.
local T = require "tocha"
local raises, read_file, write_file = T.testing.raises, T.testing.read_file, T.testing.write_file
local image = require "tocha.image"
local data = require "tocha.data"
local json = require "tocha.json"

local ROOT = T.testing.tmpdir()

local function list_eq(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function tensor_eq(a, b)
  if #a.shape ~= #b.shape then return false end
  for i = 1, #a.shape do if a.shape[i] ~= b.shape[i] then return false end end
  return a.dtype == b.dtype and (a:double() - b:double()):abs():max():item() == 0
end

-- a folder of n images (sizes vary; png and jpg alternate) with .txt captions
local function make_folder(name, n, opts)
  opts = opts or {}
  local dir = ROOT .. "/" .. name
  os.execute("rm -rf " .. dir .. " && mkdir -p " .. dir)
  T.manual_seed(100)
  for i = 1, n do
    local img = (T.rand(18 + i % 5, 22 + i % 3, 3) * 255):to("u8")
    local base = string.format("%s/im%03d", dir, i)
    image.write(base .. (i % 2 == 0 and ".png" or ".jpg"), img)
    if not opts.no_text then write_file(base .. ".txt", "a photo of " .. i .. "\n") end
  end
  return dir
end

local AUG = function()
  return image.Compose { image.Resize(20), image.RandomCrop(16), image.RandomHorizontalFlip(), image.ToFloat() }
end

-- every batch of one epoch: images and captions
local function epoch_of(loader)
  local out = {}
  for b in loader:iter() do out[#out + 1] = b end
  return out
end

local function same_batches(a, b)
  assert(#a == #b, #a .. " vs " .. #b .. " batches")
  for k = 1, #a do
    assert(tensor_eq(a[k].image, b[k].image), "batch " .. k .. " images differ")
    assert(list_eq(a[k].file, b[k].file), "batch " .. k .. " files differ")
    if a[k].text then assert(list_eq(a[k].text, b[k].text)) end
  end
end

return {
  ["wrappers: map, take, shuffle, concat, split, subset"] = function()
    local ds = data.wrap { 10, 20, 30, 40, 50 }
    assert(#ds == 5 and ds[2] == 20 and ds:get(3) == 30)
    local m = ds:map(function(x) return x + 1 end)
    assert(#m == 5 and m[1] == 11 and m[5] == 51)
    local t = ds:take(2)
    assert(#t == 2 and t[2] == 20)
    local s1, s2 = ds:shuffle(7), ds:shuffle(7)
    local seen = {}
    for i = 1, 5 do assert(s1[i] == s2[i]); seen[s1[i]] = true end
    for _, v in ipairs { 10, 20, 30, 40, 50 } do assert(seen[v]) end
    local c = ds:concat(data.wrap { 60 }, { 70, 80 })
    assert(#c == 8 and c[5] == 50 and c[6] == 60 and c[8] == 80)
    local a, b = ds:split { 3, 2 }
    assert(#a == 3 and #b == 2 and a[1] == 10 and b[1] == 40)
    local f1, f2 = c:split({ 0.75, 0.25 }, { seed = 1 })
    assert(#f1 == 6 and #f2 == 2)
    local all = {}
    for i = 1, 6 do all[f1[i]] = true end
    for i = 1, 2 do assert(not all[f2[i]]); all[f2[i]] = true end
    local cnt = 0
    for _ in pairs(all) do cnt = cnt + 1 end
    assert(cnt == 8)
    raises("add up to 6, the dataset has 5", function() ds:split { 3, 3 } end)
    raises("index 2 is 9, outside 1 to 5", function() data.subset(ds, { 1, 9 }) end)
    raises("index 3 out of range", function() return t[3] end)
    -- plain lists work as datasets everywhere
    assert(data.len { 1, 2 } == 2 and data.map({ 1, 2 }, function(x) return -x end)[2] == -2)
  end,

  ["collate"] = function()
    local samples = {
      { x = T.tensor { 1, 2 }, y = 3, s = "a", nested = { z = 1.5 } },
      { x = T.tensor { 4, 5 }, y = 6, s = "b", nested = { z = 2.5 } },
    }
    local b = data.collate(samples)
    assert(tensor_eq(b.x, T.tensor { { 1, 2 }, { 4, 5 } }))
    assert(b.y.dtype == "i64" and b.y:tolist()[2] == 6)
    assert(list_eq(b.s, { "a", "b" }))
    assert(b.nested.z.dtype == "f64" and b.nested.z:tolist()[1] == 1.5)
    local pairs_ = data.collate { { T.zeros(2), 1 }, { T.ones(2), 2 } }
    assert(tensor_eq(pairs_[1], T.tensor { { 0, 0 }, { 1, 1 } }) and pairs_[2]:tolist()[2] == 2)
    raises("field 'im' of sample 2 is %[3 x 3%], sample 1 is %[2 x 3%]", function() data.collate { { im = T.zeros(2, 3) }, { im = T.zeros(3, 3) } } end)
  end,

  ["loader order: batches, drop_last, shuffle per seed and epoch"] = function()
    local ds = {}
    for i = 1, 10 do ds[i] = i end
    local L = data.DataLoader(ds, { batch_size = 4 })
    assert(#L == 3)
    local got = {}
    for b in L:iter() do got[#got + 1] = b:tolist() end
    assert(#got == 3 and list_eq(got[1], { 1, 2, 3, 4 }) and list_eq(got[3], { 9, 10 }))
    local D2 = data.DataLoader(ds, { batch_size = 4, drop_last = true })
    assert(#D2 == 2 and #epoch_of(D2) == 2)
    local function order(seed, epochs)
      local l = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = seed })
      local out = {}
      for _ = 1, epochs do
        local e = {}
        for b in l() do for _, v in ipairs(b:tolist()) do e[#e + 1] = v end end
        out[#out + 1] = e
      end
      return out
    end
    local a, b, c = order(1, 2), order(1, 2), order(2, 1)
    assert(list_eq(a[1], b[1]) and list_eq(a[2], b[2]))
    assert(not list_eq(a[1], a[2]), "two epochs in the same order")
    assert(not list_eq(a[1], c[1]), "two seeds in the same order")
    local sorted = { table.unpack(a[2]) }
    table.sort(sorted)
    assert(list_eq(sorted, ds))
    -- the default seed comes from the global generator
    T.manual_seed(9)
    local d1 = data.DataLoader(ds, { shuffle = true }).seed
    T.manual_seed(9)
    assert(data.DataLoader(ds, { shuffle = true }).seed == d1)
    raises("batch_size must be a positive integer", function() data.DataLoader(ds, { batch_size = 0 }) end)
    raises("on_error must be", function() data.DataLoader(ds, { on_error = "ignore" }) end)
  end,

  ["loader resumes from its state, across epochs"] = function()
    local ds = {}
    for i = 1, 11 do ds[i] = i end
    local opts = { batch_size = 3, shuffle = true, seed = 4 }
    local full = {}
    local L = data.DataLoader(ds, opts)
    for _ = 1, 3 do for b in L:iter() do full[#full + 1] = table.concat(b:tolist(), ",") end end
    -- stop after 5 batches (inside epoch 2), save, resume in a fresh loader
    local A = data.DataLoader(ds, opts)
    local seen, state = {}, nil
    for _ = 1, 2 do
      for b in A:iter() do
        seen[#seen + 1] = table.concat(b:tolist(), ",")
        if #seen == 5 then state = A:state(); break end
      end
      if state then break end
    end
    assert(state.epoch == 2 and state.index == 3, state.epoch .. " " .. state.index)
    local B = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 99 })
    B:load_state(state)
    for _ = 1, 2 do for b in B:iter() do seen[#seen + 1] = table.concat(b:tolist(), ",") end end
    assert(#seen == #full)
    for k = 1, #full do assert(seen[k] == full[k], "batch " .. k) end
    -- a loop left early goes on where it stopped
    local C = data.DataLoader(ds, opts)
    for _ in C:iter() do break end
    local rest = epoch_of(C)
    assert(#rest == 3 and table.concat(rest[1]:tolist(), ",") == full[2])
  end,

  ["folder dataset with .txt captions"] = function()
    local dir = make_folder("txt", 6)
    local ds = data.ImageFolder(dir)
    assert(#ds == 6)
    local s = ds[2]
    assert(s.text == "a photo of 2" and s.file == "im002.png")
    assert(s.image.dtype == "u8" and s.image:size(3) == 3)
    local direct = image.read(dir .. "/im002.png")
    assert(tensor_eq(s.image, direct))
    local f = data.ImageFolder(dir, { transform = image.Compose { image.CenterCrop(16), image.ToFloat() } })
    assert(tensor_eq(f[3].image, image.to_float(image.center_crop(image.read(dir .. "/im003.jpg"), 16))))
    -- no captions at all: samples without text
    local bare = data.ImageFolder(make_folder("bare", 3, { no_text = true }))
    assert(#bare == 3 and bare[1].text == nil)
  end,

  ["folder dataset with metadata.jsonl"] = function()
    local dir = ROOT .. "/meta"
    os.execute("rm -rf " .. dir .. " && mkdir -p " .. dir .. "/train")
    local img = (T.rand(10, 12, 3) * 255):to("u8")
    image.write(dir .. "/train/b.png", img)
    image.write(dir .. "/a.jpg", img)
    write_file(dir .. "/metadata.jsonl", json.encode { file_name = "train/b.png", text = "second \"quoted\" \u{e9}" } .. "\n"
      .. '{"file_name": "a.jpg", "text": "first", "extra": [1, 2]}\n')
    local ds = data.ImageFolder(dir)
    assert(#ds == 2 and ds[1].file == "a.jpg" and ds[1].text == "first")
    assert(ds[2].file == "train/b.png" and ds[2].text == "second \"quoted\" \u{e9}")
    assert(tensor_eq(ds[2].image, img))
    write_file(dir .. "/metadata.jsonl", '{"file_name": "a.jpg", "text": "x"}\n{"file_name": oops}\n')
    raises("metadata.jsonl:2: json", function() data.ImageFolder(dir) end)
  end,

  ["missing captions and corrupt images: raise or skip and count"] = function()
    local dir = make_folder("bad", 8)
    os.remove(dir .. "/im003.txt")
    local jpg = read_file(dir .. "/im005.jpg")
    write_file(dir .. "/im005.jpg", jpg:sub(1, #jpg // 2))   -- truncated
    write_file(dir .. "/im006.png", "not an image at all")   -- garbage
    local ds = data.ImageFolder(dir, { transform = AUG() })
    raises("im003%.jpg: missing caption %(no .*im003%.txt%)", function() return ds[3] end)
    raises("im005%.jpg: corrupt JPEG", function() return ds[5] end)
    for _, w in ipairs { 0, 2 } do
      local L = data.DataLoader(ds, { batch_size = 4, workers = w })
      raises("im003%.jpg: missing caption", function() epoch_of(L) end)
      local S = data.DataLoader(ds, { batch_size = 4, workers = w, on_error = "skip" })
      local batches = epoch_of(S)
      assert(S.skipped == 3, "skipped " .. S.skipped)
      assert(#batches == 2 and batches[1].image:size(1) == 3 and batches[2].image:size(1) == 2)
      assert(list_eq(batches[1].file, { "im001.jpg", "im002.png", "im004.png" }))
      assert(list_eq(batches[2].text, { "a photo of 7", "a photo of 8" }))
      -- the skipped count is part of the state
      assert(S:state().skipped == 3)
    end
    -- the raised message names the file and the reason, also from a worker thread
    local L = data.DataLoader(data.subset(ds, { 5 }), { workers = 2 })
    raises("im005%.jpg: corrupt JPEG: Premature end of JPEG file", function() epoch_of(L) end)
    local G = data.DataLoader(data.subset(ds, { 6 }), { workers = 1 })
    raises("im006%.png: not a PNG or JPEG file", function() epoch_of(G) end)
  end,

  ["workers give the same batches as no workers"] = function()
    local ds = data.ImageFolder(make_folder("eq", 13), { transform = AUG() })
    local ref
    for _, w in ipairs { 0, 1, 3 } do
      local L = data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 11, workers = w })
      local two = epoch_of(L)
      for _, b in ipairs(epoch_of(L)) do two[#two + 1] = b end -- epoch 2 was prefetched
      if not ref then ref = two else same_batches(ref, two) end
      L:close()
    end
    assert(#ref == 8 and ref[1].image.dtype == "f32" and ref[1].image:size(2) == 3)
    -- augmentations differ between epochs, and a resumed loader draws the same ones
    assert(not tensor_eq(ref[1].image, ref[5].image))
    local R = data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 11, workers = 2 })
    R:load_state { epoch = 2, index = 4 }
    local rest = epoch_of(R)
    same_batches({ ref[6], ref[7], ref[8] }, rest)
  end,

  ["map, concat and custom collate with workers"] = function()
    local ds = data.ImageFolder(make_folder("mix", 5), { transform = AUG() })
    local mapped = ds:map(function(s) return { image = s.image * 2, text = s.text:upper() } end)
    local plain = { { image = T.zeros(3, 16, 16), text = "LUA" } }
    local both = data.concat(mapped, plain)
    local outs = {}
    for _, w in ipairs { 0, 2 } do
      local L = data.DataLoader(both, { batch_size = 3, workers = w, seed = 5 })
      outs[w] = epoch_of(L)
    end
    for k = 1, 2 do
      assert(tensor_eq(outs[0][k].image, outs[2][k].image))
      assert(list_eq(outs[0][k].text, outs[2][k].text))
    end
    assert(outs[0][1].text[1] == "A PHOTO OF 1" and outs[0][2].text[3] == "LUA", tostring(outs[0][1].text[1]) .. " " .. tostring(outs[0][2].text[3]))
    assert(outs[0][2].image[3]:abs():sum():item() == 0)
    local first = data.DataLoader(ds, { batch_size = 2, seed = 5 })
    local b1 = epoch_of(first)[1]
    assert(tensor_eq(outs[0][1].image:narrow(1, 1, 2), b1.image * 2))
    -- a transform without a fixed size: one sample per batch, or a collate that keeps lists
    local raw = data.ImageFolder(ROOT .. "/mix")
    local L = data.DataLoader(raw, { batch_size = 2, workers = 2, collate = function(s) return s end })
    local b = epoch_of(L)[1]
    assert(#b == 2 and b[1].image.dtype == "u8" and b[2].text == "a photo of 2")
    raises("field 'image' of sample 2", function() epoch_of(data.DataLoader(raw, { batch_size = 2 })) end)
    -- transform() on a folder joins its C pipeline
    local t = raw:transform(image.Compose { image.CenterCrop(8), image.ToFloat() })
    assert(t.pipe ~= raw.pipe and t[1].image:size(1) == 3 and t[1].image:size(2) == 8)
  end,

  ["pack: shards give the folder's samples"] = function()
    local dir = make_folder("topack", 9)
    os.remove(dir .. "/im004.txt")
    local out = ROOT .. "/shards"
    assert(data.pack(dir, out, { shard_size = 1500 }) == 9)
    local ok, err = pcall(data.pack, dir, "/proc/tocha-cannot/shards")
    assert(not ok and err:find("pack: cannot create directory /proc/tocha%-cannot"), err)
    local index = read_file(out .. "/index.jsonl")
    assert(index:find("shard%-00001%.tzst"), "expected several shards")
    local folder = data.ImageFolder(dir, { transform = AUG() })
    local shards = data.Shards(out, { transform = AUG() })
    assert(#shards == 9)
    for i = 1, 9 do
      if i ~= 4 then
        T.manual_seed(i)
        local a = folder[i]
        T.manual_seed(i)
        local b = shards[i]
        assert(tensor_eq(a.image, b.image) and a.text == b.text and a.file == b.file)
      end
    end
    raises("im004%.png: missing caption", function() return shards[4] end)
    local fa = data.DataLoader(folder, { batch_size = 4, shuffle = true, seed = 3, workers = 2, on_error = "skip" })
    local sa = data.DataLoader(shards, { batch_size = 4, shuffle = true, seed = 3, workers = 2, on_error = "skip" })
    same_batches(epoch_of(fa), epoch_of(sa))
    assert(fa.skipped == 1 and sa.skipped == 1)
  end,

  ["damaged shards name the shard and the reason"] = function()
    local dir = make_folder("dmg", 4)
    local out = ROOT .. "/dmg_shards"
    data.pack(dir, out, { shard_size = 1 }) -- one sample per shard
    local s1 = read_file(out .. "/shard-00001.tzst")
    write_file(out .. "/shard-00001.tzst", s1:sub(1, #s1 - 10))                                -- truncated
    local s2 = read_file(out .. "/shard-00002.tzst")
    write_file(out .. "/shard-00002.tzst", s2:sub(1, 100) .. string.char((s2:byte(101) + 1) % 256) .. s2:sub(102)) -- a flipped byte
    local ds = data.Shards(out)
    assert(ds[1].image)
    raises("shard%-00001%.tzst: truncated: sample im002%.png", function() return ds[2] end)
    raises("shard%-00002%.tzst: sample im003%.jpg: damaged data", function() return ds[3] end)
    local L = data.DataLoader(ds, { workers = 2, on_error = "skip", collate = function(s) return s end })
    assert(#epoch_of(L) == 2 and L.skipped == 2)
    write_file(out .. "/shard-00003.tzst", "garbage!")
    raises("shard%-00003%.tzst is not a tocha shard", function() data.Shards(out) end)
    os.remove(out .. "/shard-00003.tzst")
    raises("cannot open .*shard%-00003%.tzst", function() data.Shards(out) end)
    local idx = read_file(out .. "/index.jsonl")
    write_file(out .. "/index.jsonl", idx:sub(1, #idx - 30))
    raises("index.jsonl:5: damaged index", function() data.Shards(out) end)
    raises("cannot open .*index.jsonl", function() data.Shards(ROOT .. "/nowhere") end)
  end,

  ["tocha pack command"] = function()
    local dir = make_folder("cli", 3)
    local out = ROOT .. "/cli_out"
    local pack = require "tocha.cli.pack"
    local said = {}
    local sink = { write = function(self, ...) for _, s in ipairs { ... } do said[#said + 1] = s end return self end }
    assert(pack({ dir, out, "--shard-size", "1M" }, sink, sink) == 0)
    assert(#data.Shards(out) == 3 and table.concat(said):find("3 samples in 1 shard"))
    assert(pack({ "--help" }, sink, sink) == 0)
    assert(pack({ dir }, sink, sink) == 2)
    said = {}
    assert(pack({ ROOT .. "/missing", out }, sink, sink) == 1)
    assert(table.concat(said):find("^tocha pack: ImageFolder: cannot list .*missing: No such file"), table.concat(said))
  end,

  ["json"] = function()
    local v = json.decode('{"a": [1, 2.5, "x\\n\\u00e9\\ud83d\\ude00"], "b": {"c": true, "d": null}, "e": -3e2}')
    assert(v.a[1] == 1 and v.a[2] == 2.5 and v.a[3] == "x\n\u{e9}\u{1F600}" and v.b.c == true and v.e == -300)
    assert(json.decode(json.encode(v)).a[3] == v.a[3])
    assert(json.encode { b = 1, a = { 1, 2 } } == '{"a":[1,2],"b":1}')
    raises("json: unexpected character '}' at position 7", function() json.decode('{"a": }') end)
    raises("json", function() json.decode('[1, 2') end)
  end,
}
