-- tests/test_shapes.lua: the synthetic shapes dataset (tocha.data.shapes) and its caption
-- evaluator (tocha.eval.shapes): determinism, captions, the held-out split, speed, and the
-- evaluator's accuracy on the dataset's own images, on noise and on garbage.
local T = require "tocha"
local data = require "tocha.data"
local S = require "tocha.data.shapes"
local E = require "tocha.eval.shapes"

local function same(a, b) return a.dtype == b.dtype and (a:to("f64") - b:to("f64")):abs():max():item() == 0 end

local function errs(fn, pattern)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), "error '" .. tostring(err) .. "' does not mention '" .. pattern .. "'")
end

local function at_least(res, floor, what)
  for _, a in ipairs { "color", "shape", "position", "size", "all" } do
    if res[a] then assert(res[a] >= floor, string.format("%s: %s accuracy %.3f < %.2f\n%s", what, a, res[a], floor, E.format(res))) end
  end
end

return {
  ["samples follow the dataset protocol"] = function()
    local ds = S { size = 32, seed = 0 }
    assert(#ds == 2 ^ 31 and data.len(ds) == 2 ^ 31)
    local s = ds[1]
    assert(s.image.dtype == "f32" and s.image:dim() == 3 and s.image.shape[1] == 3 and s.image.shape[2] == 32 and s.image.shape[3] == 32)
    assert(s.image:min():item() >= -1 and s.image:max():item() <= 1)
    assert(type(s.caption) == "string" and #s.objects >= 1 and #s.objects <= 2)
    assert(same(ds:get(1).image, s.image) and ds:get(1).caption == s.caption)
    for _, o in ipairs(s.objects) do
      assert(o.color and o.shape and o.size and o.position and #o.bbox == 4 and #o.center == 2)
      assert(o.bbox[1] >= 0 and o.bbox[3] <= 32 and o.bbox[1] < o.bbox[3] and o.bbox[2] < o.bbox[4])
    end
    local u = S { size = 24, format = "u8", objects = 1, seed = 0 }[7]
    assert(u.image.dtype == "u8" and u.image.shape[1] == 24 and u.image.shape[3] == 3 and #u.objects == 1)
    -- the wrappers and the loader of tocha.data take it (an infinite dataset: take a piece)
    local loader = data.DataLoader(ds:take(10), { batch_size = 4 })
    local sizes = {}
    for b in loader:iter() do
      sizes[#sizes + 1] = b.image.shape[1]
      assert(#b.caption == b.image.shape[1] and #b.objects == b.image.shape[1])
    end
    assert(table.concat(sizes, ",") == "4,4,2")
    assert(ds:map(function(x) return x.caption end)[3] == ds[3].caption)
  end,

  ["deterministic by seed and index"] = function()
    local a, b, c = S { seed = 5 }, S { seed = 5 }, S { seed = 6 }
    local later = a[40] -- access order does not matter
    for i = 1, 40 do
      local x, y = a[i], b[i]
      assert(x.caption == y.caption and same(x.image, y.image))
    end
    assert(same(later.image, a[40].image))
    local differ = 0
    for i = 1, 20 do if c[i].caption ~= a[i].caption then differ = differ + 1 end end
    assert(differ >= 15, "seeds 5 and 6 give mostly the same captions")
    -- batches are the samples, drawn into one tensor
    local bt = a:batch(3, 5)
    assert(bt.image.shape[1] == 5)
    for k = 1, 5 do assert(bt.caption[k] == a[k + 2].caption and same(bt.image[k], a[k + 2].image)) end
    local bl = a:batch { 9, 2 }
    assert(bl.caption[1] == a[9].caption and same(bl.image[2], a[2].image))
  end,

  ["captions parse back to the drawn attributes"] = function()
    local ds = S { seed = 1 }
    local kinds = { 0, 0 }
    for i = 1, 300 do
      local s = ds[i]
      local p = assert(S.parse(s.caption))
      assert(#p.objects == #s.objects, s.caption)
      kinds[#p.objects] = kinds[#p.objects] + 1
      assert((p.relation or false) == s.relation, s.caption)
      for k, o in ipairs(p.objects) do
        local w = s.objects[k]
        assert(o.color == w.color and o.shape == w.shape and o.position == w.position, s.caption)
        if #p.objects == 1 then assert(o.size == w.size, s.caption) end
      end
      assert(S.caption(p) == s.caption)
    end
    assert(kinds[1] > 100 and kinds[2] > 100, "one and two objects should both be common")
    -- objects are placed as the caption says
    for i = 1, 300 do
      local s = ds[i]
      if s.relation == "above" then assert(s.objects[1].center[2] < s.objects[2].center[2]) end
      if s.relation == "right of" then assert(s.objects[1].center[1] > s.objects[2].center[1]) end
      if s.objects[1].position == "left" and not s.relation then assert(s.objects[1].center[1] < 16) end
    end
    local p = assert(S.parse("An  Orange STAR to the right of a blue circle"))
    assert(p.relation == "right of" and p.objects[1].color == "orange" and p.objects[1].position == "right"
      and p.objects[2].shape == "circle" and p.objects[2].position == "left")
    assert(S.parse("a red circle in the center").objects[1].size == nil)
    local bad, msg = S.parse("a red blob on the left")
    assert(bad == nil and msg:find("color", 1, true))
    assert(S.parse("a red circle near a blue star") == nil)
    assert(S.parse("a red circle above a blue star and more") == nil)
    assert(S.parse(42) == nil)
  end,

  ["held-out prompts are disjoint from training captions"] = function()
    local test = S.prompts { split = "test" }
    local train = S.prompts { split = "train" }
    local all = S.prompts { split = "all" }
    assert(#test + #train == #all and #test > 0.15 * #all and #test < 0.25 * #all)
    local held = {}
    for _, c in ipairs(test) do held[c] = true; assert(S.split_of(c) == "test") end
    for _, c in ipairs(train) do assert(not held[c]) end
    local ds = S { seed = 3 }
    for i = 1, 2000 do assert(not held[ds:scene(i).caption]) end
    local ts = S { seed = 3, split = "test" }
    for i = 1, 200 do assert(held[ts:scene(i).caption]) end
    -- a pair said either way round is in the same split
    assert(S.split_of("a red circle above a blue star") == S.split_of("a blue star below a red circle"))
    assert(S.split_of("a red circle to the left of a blue star") == S.split_of("a blue star to the right of a red circle"))
    -- every pair of attributes of a held-out single object is seen in training
    local seen = {}
    for _, c in ipairs(S.prompts { split = "train", objects = 1 }) do
      local o = S.parse(c).objects[1]
      seen[o.color .. "/" .. o.shape], seen[o.shape .. "/" .. o.position], seen[o.color .. "/" .. o.position] = true, true, true
    end
    for _, c in ipairs(S.prompts { split = "test", objects = 1 }) do
      local o = S.parse(c).objects[1]
      assert(seen[o.color .. "/" .. o.shape] and seen[o.shape .. "/" .. o.position] and seen[o.color .. "/" .. o.position], c)
    end
    -- listing: all single-object prompts, and n drawn by seed (cycling past the end)
    assert(#S.single_prompts() == 2 * 6 * 4 * 5)
    local n1, n2 = S.prompts { split = "test", objects = 1, n = 100, seed = 4 }, S.prompts { split = "test", objects = 1, n = 100, seed = 4 }
    assert(#n1 == 100 and table.concat(n1, "|") == table.concat(n2, "|"))
    for _, c in ipairs(n1) do assert(held[c]) end
    assert(#S.prompts { split = "test", colors = { "red", "cyan" }, shapes = { "cross", "circle" } } > 0)
  end,

  ["the evaluator scores the dataset's own images"] = function()
    local ds = S { seed = 11 }
    local b = ds:batch(1, 300)
    local res = E.evaluate(b.image, b.caption)
    print(E.format(res))
    assert(res.n == 300 and res.single.n > 100 and res.pair.n > 100)
    at_least(res.single, 0.98, "single")
    at_least(res.pair, 0.98, "pair")
    -- u8 images, a list of them, held-out prompts, and a larger size
    local u = S { seed = 12, format = "u8", size = 48 }
    local imgs, caps = {}, {}
    for i = 1, 100 do local s = u[i]; imgs[i], caps[i] = s.image, s.caption end
    at_least(E.evaluate(imgs, caps), 0.98, "u8 48x48")
    local prompts = S.prompts { split = "test", n = 100, seed = 1 }
    imgs = {}
    for i, p in ipairs(prompts) do imgs[i] = S.render(p, { seed = i }) end
    at_least(E.evaluate(imgs, prompts), 0.98, "held-out prompts")
    -- every color and shape the module knows
    local full = S { seed = 13, colors = { "red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink" },
      shapes = { "circle", "square", "triangle", "star", "cross", "diamond" } }
    local fb = full:batch(1, 200)
    at_least(E.evaluate(fb.image, fb.caption), 0.97, "full vocabulary")
    -- the shape confusion counts every wanted object, and is diagonal on the dataset's images
    local total, diagonal = 0, 0
    for w, row in pairs(res.confusion) do
      for g, k in pairs(row) do
        total = total + k
        if g == w then diagonal = diagonal + k end
      end
    end
    assert(total == res.single.n + 2 * res.pair.n, "one count per wanted object")
    assert(diagonal >= 0.98 * total, E.format_confusion(res))
    local table_text = E.format_confusion(res)
    assert(table_text:find("circle") and table_text:find("star"), table_text)
    -- mild noise on top does not change the verdicts
    local noisy = (b.image + T.randn(b.image.shape) * 0.05):clamp(-1, 1)
    at_least(E.evaluate(noisy, b.caption), 0.97, "noisy")
  end,

  ["noise and garbage score near or below chance"] = function()
    local ds = S { seed = 21 }
    local b = ds:batch(1, 300)
    local noise = T.rand({ 300, 3, 32, 32 }) * 2 - 1
    local res = E.evaluate(noise, b.caption)
    -- chance: color 1/6, shape 1/4, position 1/5 (pairs: 1/4), size 1/2
    assert(res.color <= 0.2 and res.shape <= 0.3 and res.position <= 0.35 and res.size <= 0.65 and res.all <= 0.05, E.format(res))
    local diagonal = 0
    for w, row in pairs(res.confusion) do diagonal = diagonal + (row[w] or 0) end
    assert(diagonal <= 0.3 * 600, E.format_confusion(res))
    -- captions paired with the wrong images
    local wrong = {}
    for i = 1, 300 do wrong[i] = b.caption[i % 300 + 1] end
    res = E.evaluate(b.image, wrong)
    assert(res.color <= 0.3 and res.shape <= 0.35 and res.position <= 0.35 and res.all <= 0.1, E.format(res))
    -- by_size: the single objects by the size their caption names, counted like the totals
    local imgs = { T.zeros({ 3, 32, 32 }), S.render("a big red circle on the left", { seed = 1 }),
      S.render("a small blue square in the center", { seed = 2 }), S.render("a big green star on the right", { seed = 3 }) }
    local caps = { "a big red circle on the left", "a big red circle on the left", "a small blue square in the center",
      "a big green star on the right" }
    imgs[5], caps[5] = S.render("a red square above a blue circle", { seed = 4 }), "a red square above a blue circle"
    res = E.evaluate(imgs, caps)
    assert(res.by_size.big.n == 3 and res.by_size.small.n == 1 and res.by_size.medium == nil, "pairs are left out")
    assert(math.abs(res.by_size.big.shape - 2 / 3) < 1e-12 and res.by_size.small.shape == 1, E.format(res))
    assert(res.by_size.big.color == 2 / 3 and res.by_size.big.size == 2 / 3)
    -- blank, NaN and saturated images count as wrong, without an error
    local blank = E.check(T.zeros({ 3, 32, 32 }), "a small red circle on the left")
    assert(not blank.color and not blank.shape and not blank.position and not blank.all and not blank.count)
    local nan = E.check(T.full({ 3, 16, 16 }, 0 / 0), "a blue square above a green triangle")
    assert(not nan.all and not nan.color)
    local inf = E.check(T.full({ 3, 8, 8 }, math.huge), "a big red star in the center")
    assert(not inf.all)
    local tiny = E.check(T.zeros({ 3, 1, 1 }), "a big red star in the center")
    assert(not tiny.all)
    assert(#E.analyze(T.zeros({ 3, 17, 23 })) == 0)
  end,

  ["the evaluator reads each attribute"] = function()
    local img = S.render("a big green triangle at the bottom", { seed = 2 })
    local found = E.analyze(img)
    assert(#found == 1)
    local o = found[1]
    assert(o.color == "green" and o.shape == "triangle" and o.size == "big" and o.position == "bottom", E.format({ n = 0 }))
    assert(o.y > 0.6 and o.area > 0.03)
    local r = E.check(img, "a small green triangle at the bottom")
    assert(r.color and r.shape and r.position and r.size == false and not r.all)
    r = E.check(img, "a big red square on the left")
    assert(not r.color and not r.shape and not r.position and r.size)
    -- a pair: relation judged from the centroids, either phrasing
    local pair = S.render("a blue star to the left of a yellow circle", { seed = 3 })
    assert(E.check(pair, "a blue star to the left of a yellow circle").all)
    assert(E.check(pair, "a yellow circle to the right of a blue star").all)
    r = E.check(pair, "a blue star to the right of a yellow circle")
    assert(r.color and r.shape and not r.position)
    r = E.check(pair, "a blue star above a yellow circle")
    assert(not r.position)
    -- both image layouts and a channel-last u8 image of the same scene agree
    local u8 = S.render("a blue star to the left of a yellow circle", { seed = 3, format = "u8" })
    assert(E.check(u8, "a blue star to the left of a yellow circle").all)
  end,

  ["object_weights cover every object pixel and average 1 per image"] = function()
    local b = S { size = 32, seed = 3 }:batch(1, 12)
    local w = S.object_weights(b.objects, { size = 32, weight = 4 })
    assert(w.dtype == "f32" and w.shape[1] == 12 and w.shape[2] == 1 and w.shape[3] == 32 and w.shape[4] == 32)
    local means = w:mean({ 2, 3, 4 }):tolist()
    for k = 1, 12 do assert(math.abs(means[k] - 1) < 1e-5, "image " .. k .. " weights average " .. means[k]) end
    local object_px, heavy = 0, 0
    for k = 1, 12 do
      local img, wk = b.image[k], w[k][1]:tolist()
      local bg = img:narrow(2, 1, 1):narrow(3, 1, 1):reshape(3, 1, 1)
      local d = (img - bg):abs():amax(1):tolist()
      local lo = math.huge
      for y = 1, 32 do for x = 1, 32 do lo = math.min(lo, wk[y][x]) end end
      for y = 1, 32 do
        for x = 1, 32 do
          if d[y][x] > 0.25 then -- an object's pixel: inside a box
            object_px = object_px + 1
            if wk[y][x] > lo * 3.99 then heavy = heavy + 1 end
          end
        end
      end
    end
    assert(object_px > 300 and heavy == object_px, heavy .. " of " .. object_px .. " object pixels are weighted")
    assert(same(S.object_weights(b.objects, { size = 32, weight = 1 }), T.ones({ 12, 1, 32, 32 })))
    errs(function() S.object_weights({}) end, "a batch's list of object lists")
    errs(function() S.object_weights(b.objects, { weight = 0 }) end, "weight must be a positive number")
  end,

  ["bad input gives clear errors"] = function()
    errs(function() S { colors = { "red", "mauve" } } end, "unknown color 'mauve'")
    errs(function() S { shapes = { "blob" } } end, "unknown shape 'blob'")
    errs(function() S { split = "val" } end, "split must be")
    errs(function() S { size = 4 } end, "size must be an integer")
    errs(function() S { objects = 3 } end, "objects must be 1, 2")
    errs(function() S { colors = { "red" }, objects = 2 } end, "at least two colors")
    errs(function() S { format = "png" } end, "format must be")
    errs(function() return S {}[0] end, "index 0 out of range")
    errs(function() S {}:batch(1, 0) end, "batch(first, n)")
    errs(function() S.render("a red circle above a red star") end, "differ in color")
    errs(function() S.render("two red circles") end, "expected 'a [size] <color> <shape>'")
    errs(function() E.check(T.zeros({ 32, 32 }), "a red circle on the left") end, "expected a float [3, H, W]")
    errs(function() E.check(T.zeros({ 32, 32, 4 }, { dtype = "u8" }), "a red circle on the left") end, "must be [H, W, 3]")
    errs(function() E.check(T.zeros({ 3, 8, 8 }), "a red blob") end, "eval.shapes")
    errs(function() E.evaluate({ T.zeros({ 3, 8, 8 }) }, { "a red circle on the left", "a red circle on the left" }) end, "2 captions but 1 images")
    errs(function() T._shapes.render(T.zeros({ 3, 8 }), { 1, 1, 1 }, 0, 0, {}) end, "expected an f32 [3, H, W] or u8 [H, W, 3]")
    errs(function() T._shapes.render(T.zeros({ 3, 8, 8 }), { 1, 1, 1 }, 0, 0, { { shape = "blob", x = 1, y = 1, r = 1, rgb = { 1, 0, 0 } } }) end, "unknown shape 'blob'")
    errs(function() T._shapes.render(T.zeros({ 3, 8, 8 }), { 1, 1, 1 }, 0, 0, { { shape = "star", x = 1, y = 1, r = -1, rgb = { 1, 0, 0 } } }) end, "shape 1 has")
    errs(function() T._shapes.render(T.zeros({ 3, 8, 8 }):transpose(2, 3), { 1, 1, 1 }, 0, 0, {}) end, "contiguous")
  end,

  ["1000 samples take well under a second"] = function()
    local ds = S { size = 32, seed = 0 }
    local t0 = T.clock()
    for i = 1, 1000 do local _ = ds[i] end
    local t1 = T.clock()
    local _ = ds:batch(1001, 1000)
    local t2 = T.clock()
    print(string.format("1000 samples: %.3f s one by one, %.3f s as a batch", t1 - t0, t2 - t1))
    assert(t1 - t0 < 1.0 and t2 - t1 < 1.0)
  end,
}
