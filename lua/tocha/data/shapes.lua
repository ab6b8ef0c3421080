-- tocha.data.shapes: an infinite dataset of captioned images of flat colored shapes, made on
-- the fly ("a small red circle on the left", "a blue square above a green triangle"). Sample i
-- depends only on (seed, i). Also the caption grammar (parse), the held-out prompt split
-- (prompts), and single scenes drawn from a caption (render). See docs/shapes.md.
local T = require "tocha"
local D = require "tocha.data.dataset"
local C = T._shapes

local M = {}

---------------------------------------------------------------------------------------------
-- vocabulary. The order of each full list is fixed: the held-out split hashes positions in it.
---------------------------------------------------------------------------------------------
-- colors far apart in RGB and from the light gray background
M.COLORS = {
  { name = "red", rgb = { 220, 30, 30 } },
  { name = "green", rgb = { 30, 160, 50 } },
  { name = "blue", rgb = { 30, 70, 220 } },
  { name = "yellow", rgb = { 245, 205, 20 } },
  { name = "purple", rgb = { 140, 50, 190 } },
  { name = "orange", rgb = { 250, 130, 15 } },
  { name = "cyan", rgb = { 20, 185, 205 } },
  { name = "pink", rgb = { 240, 110, 190 } },
}
M.SHAPES = { "circle", "square", "triangle", "star", "cross", "diamond" }
-- anchors as fractions of the image side, and the caption's words for them
M.POSITIONS = {
  { name = "left", x = 0.26, y = 0.5, phrase = "on the left" },
  { name = "right", x = 0.74, y = 0.5, phrase = "on the right" },
  { name = "top", x = 0.5, y = 0.26, phrase = "at the top" },
  { name = "bottom", x = 0.5, y = 0.74, phrase = "at the bottom" },
  { name = "center", x = 0.5, y = 0.5, phrase = "in the center" },
}
-- r (a shape spans about 2r) as a fraction of the image side; "medium" is the size of each
-- object in two-object scenes, whose captions name no size
M.SIZES = { small = 0.13, big = 0.22, medium = 0.16 }
M.SIZE_NAMES = { "small", "big" }
M.RELATIONS = {
  { name = "above", phrase = "above", first = "top", second = "bottom" },
  { name = "below", phrase = "below", first = "bottom", second = "top" },
  { name = "left of", phrase = "to the left of", first = "left", second = "right" },
  { name = "right of", phrase = "to the right of", first = "right", second = "left" },
}
M.DEFAULT_COLORS = { "red", "green", "blue", "yellow", "purple", "orange" }
M.DEFAULT_SHAPES = { "circle", "square", "triangle", "star" }

local COLOR, SHAPE, POSITION, RELATION = {}, {}, {}, {} -- name -> entry with its index k
for k, c in ipairs(M.COLORS) do COLOR[c.name] = { k = k, name = c.name, rgb = { c.rgb[1] / 255, c.rgb[2] / 255, c.rgb[3] / 255 } } end
for k, s in ipairs(M.SHAPES) do SHAPE[s] = { k = k, name = s } end
for k, p in ipairs(M.POSITIONS) do POSITION[p.name] = p; p.k = k end
for k, r in ipairs(M.RELATIONS) do RELATION[r.name] = r; r.k = k end
local KINDS = C.kinds() -- each shape's area and extent at r = 1

--- shapes.color_rgb(name) -> {r, g, b} in [0, 1]
function M.color_rgb(name)
  local c = COLOR[name]
  if not c then error("shapes: unknown color '" .. tostring(name) .. "'", 2) end
  return { c.rgb[1], c.rgb[2], c.rgb[3] }
end

---------------------------------------------------------------------------------------------
-- randomness: splitmix64, keyed by (seed, index) so any sample is made without the others
---------------------------------------------------------------------------------------------
local GOLDEN = 0x9E3779B97F4A7C15

local function mix(z)
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- a stream of numbers for (seed, index): r() uniform in [0, 1), r(n) an integer in 1..n,
-- r(a, b) uniform in [a, b)
local function stream(seed, index)
  local s = mix(mix(seed ~ 0x5348415045530000) + index * GOLDEN)
  return function(a, b)
    s = s + GOLDEN
    local u = (mix(s) >> 11) * 0x1p-53
    if a == nil then return u end
    if b == nil then return 1 + math.floor(u * a) end
    return a + (b - a) * u
  end
end

---------------------------------------------------------------------------------------------
-- captions
---------------------------------------------------------------------------------------------
local function object_phrase(o, with_size)
  local words = with_size and (o.size .. " " .. o.color .. " " .. o.shape) or (o.color .. " " .. o.shape)
  return (words:match("^[aeiou]") and "an " or "a ") .. words
end

--- shapes.caption({objects = {...}, relation = ...}) -> the caption of a scene description
function M.caption(scene)
  local o = scene.objects
  if #o == 1 then return object_phrase(o[1], o[1].size ~= nil and o[1].size ~= "medium") .. " " .. POSITION[o[1].position].phrase end
  return object_phrase(o[1]) .. " " .. RELATION[scene.relation].phrase .. " " .. object_phrase(o[2])
end

-- "a [size] color shape" from words[i]; returns the object and the next index
local function parse_object(w, i)
  if w[i] ~= "a" and w[i] ~= "an" then return nil, i end
  i = i + 1
  local size
  if w[i] == "small" or w[i] == "big" then size = w[i]; i = i + 1 end
  if not COLOR[w[i] or ""] or not SHAPE[w[i + 1] or ""] then return nil, i end
  return { size = size, color = w[i], shape = w[i + 1] }, i + 2
end

local LOCATIONS = {} -- "on the left" -> "left"
for _, p in ipairs(M.POSITIONS) do LOCATIONS[p.phrase] = p.name end
local RELATION_WORDS = { ["above"] = "above", ["below"] = "below", ["to the left of"] = "left of",
  ["left of"] = "left of", ["to the right of"] = "right of", ["right of"] = "right of" }

--- shapes.parse(caption) -> {objects = {{color, shape, size, position}, ...}, relation} or nil
--- and a message. A single object's position is its place in the image; a pair's are the
--- places the relation gives them ("above": the first at the top, the second at the bottom).
function M.parse(caption)
  if type(caption) ~= "string" then return nil, "caption must be a string" end
  local w = {}
  for word in caption:lower():gmatch("%a+") do w[#w + 1] = word end
  local a, i = parse_object(w, 1)
  if not a then return nil, "expected 'a [size] <color> <shape>' at the start of '" .. caption .. "'" end
  local rest = table.concat(w, " ", i)
  local where = LOCATIONS[rest]
  if where then
    a.position = where
    return { objects = { a } }
  end
  for phrase, rel in pairs(RELATION_WORDS) do
    if rest:sub(1, #phrase + 1) == phrase .. " " then
      local j = i + select(2, phrase:gsub("%a+", ""))
      local b, k = parse_object(w, j)
      if b and k == #w + 1 then
        a.position, b.position = RELATION[rel].first, RELATION[rel].second
        return { objects = { a, b }, relation = rel }
      end
    end
  end
  return nil, "expected a position ('on the left', ...) or a relation ('above a <color> <shape>', ...) in '" .. caption .. "'"
end

---------------------------------------------------------------------------------------------
-- the held-out split. Test prompts are the scenes whose (color, shape, position) of a single
-- object, or (first color, first shape, second color, second shape, axis) of a pair written
-- with "above" or "left of", hash to 0 mod 5 (indices in the full lists above). About a fifth
-- of the prompts are held out, and every pair of attributes still appears in training.
---------------------------------------------------------------------------------------------
local function held_out(scene)
  local o = scene.objects
  if #o == 1 then
    return ((COLOR[o[1].color].k - 1) + 2 * (SHAPE[o[1].shape].k - 1) + 3 * (POSITION[o[1].position].k - 1)) % 5 == 0
  end
  local a, b, axis = o[1], o[2], 0
  local rel = scene.relation
  if rel == "below" or rel == "right of" then a, b = b, a end
  if rel == "left of" or rel == "right of" then axis = 1 end
  return ((COLOR[a.color].k - 1) + 2 * (SHAPE[a.shape].k - 1) + 3 * (COLOR[b.color].k - 1)
    + 4 * (SHAPE[b.shape].k - 1) + axis) % 5 == 0
end

--- shapes.split_of(caption_or_scene) -> "train" or "test"
function M.split_of(scene)
  if type(scene) == "string" then
    local parsed, msg = M.parse(scene)
    if not parsed then error("shapes.split_of: " .. msg, 2) end
    scene = parsed
  end
  return held_out(scene) and "test" or "train"
end

local function in_split(scene, split)
  return split == "all" or (split == "test") == held_out(scene)
end

---------------------------------------------------------------------------------------------
-- options
---------------------------------------------------------------------------------------------
local function check_names(list, known, what, level)
  if type(list) ~= "table" or #list == 0 then error("shapes: " .. what .. " must be a non-empty list of names", level + 1) end
  for _, n in ipairs(list) do
    if not known[n] then error(string.format("shapes: unknown %s '%s'", what:gsub("s$", ""), tostring(n)), level + 1) end
  end
  return list
end

local function check_split(split, level)
  if split ~= "train" and split ~= "test" and split ~= "all" then
    error("shapes: split must be \"train\", \"test\" or \"all\"", level + 1)
  end
  return split
end

local function check_objects(objects, level)
  if objects == 1 or objects == 2 then return { objects } end
  if type(objects) == "table" and #objects > 0 then
    for _, n in ipairs(objects) do
      if n ~= 1 and n ~= 2 then error("shapes: objects must be 1, 2 or a list of them", level + 1) end
    end
    return objects
  end
  error("shapes: objects must be 1, 2 or a list of them", level + 1)
end

local function vocab(opts, level)
  local sizes = opts.sizes or M.SIZE_NAMES
  for _, s in ipairs(sizes) do
    if s ~= "small" and s ~= "big" then error("shapes: sizes must be a list of \"small\" and \"big\"", level + 1) end
  end
  return {
    colors = check_names(opts.colors or M.DEFAULT_COLORS, COLOR, "colors", level + 1),
    shapes = check_names(opts.shapes or M.DEFAULT_SHAPES, SHAPE, "shapes", level + 1),
    positions = check_names(opts.positions or { "left", "right", "top", "bottom", "center" }, POSITION, "positions", level + 1),
    relations = check_names(opts.relations or { "above", "below", "left of", "right of" }, RELATION, "relations", level + 1),
    sizes = sizes,
  }
end

---------------------------------------------------------------------------------------------
-- scenes: what a caption says, then where things go
---------------------------------------------------------------------------------------------
-- a random scene description in the split (rejection keeps the draws keyed by the index)
local function draw_scene(r, v, counts, split)
  for _ = 1, 1000 do
    local scene
    if counts[r(#counts)] == 1 then
      scene = { objects = { { size = v.sizes[r(#v.sizes)], color = v.colors[r(#v.colors)],
        shape = v.shapes[r(#v.shapes)], position = v.positions[r(#v.positions)] } } }
    elseif #v.colors >= 2 then
      local ca = r(#v.colors)
      local cb = r(#v.colors - 1)
      if cb >= ca then cb = cb + 1 end -- two different colors, so each object is found by its color
      local rel = RELATION[v.relations[r(#v.relations)]]
      scene = { relation = rel.name, objects = {
        { size = "medium", color = v.colors[ca], shape = v.shapes[r(#v.shapes)], position = rel.first },
        { size = "medium", color = v.colors[cb], shape = v.shapes[r(#v.shapes)], position = rel.second } } }
    else
      error("shapes: two-object scenes need at least two colors", 3)
    end
    if in_split(scene, split) then return scene end
  end
  error("shapes: no scene of this vocabulary falls in the '" .. split .. "' split", 3)
end

-- places each object (x, y, r in pixels, kept inside the image) and fills in its box
local function layout(r, scene, size)
  local o = scene.objects
  local anchors = {}
  if #o == 1 then
    local p = POSITION[o[1].position]
    anchors[1] = { p.x + r(-0.05, 0.05), p.y + r(-0.05, 0.05) }
  else
    local shift = r(-0.1, 0.1) -- the pair moves together across its axis
    for k, ob in ipairs(o) do
      local p = POSITION[ob.position]
      local along, across = r(-0.03, 0.03), shift + r(-0.04, 0.04)
      if ob.position == "top" or ob.position == "bottom" then anchors[k] = { 0.5 + across, p.y + along }
      else anchors[k] = { p.x + along, 0.5 + across } end
    end
  end
  for k, ob in ipairs(o) do
    local e = KINDS[ob.shape]
    local rad = M.SIZES[ob.size] * size * r(0.92, 1.08)
    local x = math.max(-e.x0 * rad + 1, math.min(size - e.x1 * rad - 1, anchors[k][1] * size))
    local y = math.max(-e.y0 * rad + 1, math.min(size - e.y1 * rad - 1, anchors[k][2] * size))
    ob.center, ob.radius = { x, y }, rad
    ob.bbox = { math.max(0, x + e.x0 * rad), math.max(0, y + e.y0 * rad),
                math.min(size, x + e.x1 * rad), math.min(size, y + e.y1 * rad) }
  end
  return scene
end

local function draw_list(scene)
  local list = {}
  for k, ob in ipairs(scene.objects) do
    list[k] = { shape = ob.shape, x = ob.center[1], y = ob.center[2], r = ob.radius, rgb = COLOR[ob.color].rgb }
  end
  return list
end

---------------------------------------------------------------------------------------------
-- the dataset
---------------------------------------------------------------------------------------------
local Shapes = D.class(D.Dataset)
M.Shapes = Shapes

--- shapes.new{size = 32, seed = 0, objects = {1, 2}, split = "train", colors, shapes, sizes,
--- positions, relations, background = {0.92, 0.92, 0.92}, tint = 0.04, noise = 0.015,
--- format = "float" | "u8", length = 2^31}, or shapes{...}: sample i (1 <= i <= length) is
--- {image, caption, objects, relation}; image is f32 [3, size, size] in [-1, 1] ("float") or
--- u8 [size, size, 3] ("u8"); objects a list of {color, shape, size, position, center,
--- radius, bbox}; relation a pair's ("above", "below", "left of", "right of"), else false.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("shapes: options must be a table", 2) end
  local size = opts.size or 32
  if math.type(size) ~= "integer" or size < 8 or size > 4096 then error("shapes: size must be an integer in 8 to 4096", 2) end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("shapes: seed must be an integer", 2) end
  local format = opts.format or "float"
  if format ~= "float" and format ~= "u8" then error("shapes: format must be \"float\" or \"u8\"", 2) end
  local length = opts.length or (1 << 31)
  if math.type(length) ~= "integer" or length < 1 then error("shapes: length must be a positive integer", 2) end
  local bg = opts.background or { 0.92, 0.92, 0.92 }
  if type(bg) ~= "table" or #bg ~= 3 then error("shapes: background must be {r, g, b} in [0, 1]", 2) end
  local tint, noise = opts.tint or 0.04, opts.noise or 0.015
  if type(tint) ~= "number" or tint < 0 or tint > 0.5 then error("shapes: tint must be a number in [0, 0.5]", 2) end
  if type(noise) ~= "number" or noise < 0 or noise > 0.5 then error("shapes: noise must be a number in [0, 0.5]", 2) end
  local self = setmetatable({
    size = size, seed = seed, format = format, length = length, background = bg, tint = tint, noise = noise,
    counts = check_objects(opts.objects or { 1, 2 }, 2),
    split = check_split(opts.split or "train", 2),
    vocab = vocab(opts, 2),
  }, Shapes)
  if #self.vocab.colors < 2 then
    for _, n in ipairs(self.counts) do
      if n == 2 then error("shapes: two-object scenes need at least two colors", 2) end
    end
  end
  return self
end
setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

function Shapes:len() return self.length end

--- ds:scene(i) -> {caption, objects, relation, background, noise_seed}: sample i without
--- its image
function Shapes:scene(i)
  D.check_index(self, i, 2)
  local r = stream(self.seed, i)
  local scene = layout(r, draw_scene(r, self.vocab, self.counts, self.split), self.size)
  local t = self.tint
  scene.background = {}
  for k = 1, 3 do scene.background[k] = math.max(0, math.min(1, self.background[k] + r(-t, t))) end
  scene.noise_seed = mix(r(1 << 30) + 0x4E4F495345 * i)
  scene.caption = M.caption(scene)
  return scene
end

-- draws a scene into img (a fresh image, or a view into a batch)
function Shapes:_draw(img, scene)
  C.render(img, scene.background, self.noise, scene.noise_seed, draw_list(scene))
  return img
end

function Shapes:_new_image(n)
  local s = self.size
  if self.format == "u8" then
    return T.empty(n and { n, s, s, 3 } or { s, s, 3 }, { dtype = "u8" })
  end
  return T.empty(n and { n, 3, s, s } or { 3, s, s })
end

-- a list of objects that the loader's collate keeps as a list rather than collating per field
-- (scenes of one and of two objects mix in a batch)
local Objects = { __name = "tocha.data.shapes.objects" }

function Shapes:get(i)
  local scene = self:scene(i)
  return { image = self:_draw(self:_new_image(), scene), caption = scene.caption,
           objects = setmetatable(scene.objects, Objects), relation = scene.relation or false }
end

--- ds:batch(first, n) or ds:batch({i1, i2, ...}) -> {image = [B, 3, size, size] (or
--- [B, size, size, 3] u8), caption = {...}, objects = {...}, relation = {...}}: the same
--- samples as ds[i], drawn straight into one tensor
function Shapes:batch(first, n)
  local idx = first
  if type(first) ~= "table" then
    if math.type(first) ~= "integer" or math.type(n) ~= "integer" or n < 1 then
      error("shapes: batch(first, n) takes two integers, n >= 1, or a list of indices", 2)
    end
    idx = {}
    for k = 1, n do idx[k] = first + k - 1 end
  end
  if #idx == 0 then error("shapes: batch of no samples", 2) end
  local img = self:_new_image(#idx)
  local out = { image = img, caption = {}, objects = {}, relation = {} }
  for k, i in ipairs(idx) do
    local scene = self:scene(i)
    self:_draw(img[k], scene)
    out.caption[k], out.objects[k], out.relation[k] = scene.caption, setmetatable(scene.objects, Objects), scene.relation or false
  end
  return out
end

---------------------------------------------------------------------------------------------
-- prompts and single scenes
---------------------------------------------------------------------------------------------
--- shapes.prompts{split = "test", objects = {1, 2}, n, seed = 0, colors, shapes, ...} -> list
--- of captions in the split ("train", "test" or "all"). Without n, every one, in a fixed
--- order; with n, n of them in an order shuffled by seed (cycling when n exceeds them).
function M.prompts(opts)
  opts = opts or {}
  local v = vocab(opts, 2)
  local split = check_split(opts.split or "test", 2)
  local counts = check_objects(opts.objects or { 1, 2 }, 2)
  local out = {}
  local function add(scene) if in_split(scene, split) then out[#out + 1] = M.caption(scene) end end
  for _, count in ipairs(counts) do
    if count == 1 then
      for _, size in ipairs(v.sizes) do for _, c in ipairs(v.colors) do for _, s in ipairs(v.shapes) do
        for _, p in ipairs(v.positions) do
          add { objects = { { size = size, color = c, shape = s, position = p } } }
        end
      end end end
    else
      for _, ca in ipairs(v.colors) do for _, sa in ipairs(v.shapes) do for _, rel in ipairs(v.relations) do
        for _, cb in ipairs(v.colors) do for _, sb in ipairs(v.shapes) do
          if ca ~= cb then
            add { relation = rel, objects = { { color = ca, shape = sa, position = RELATION[rel].first },
              { color = cb, shape = sb, position = RELATION[rel].second } } }
          end
        end end
      end end end
    end
  end
  if opts.n == nil then return out end
  if math.type(opts.n) ~= "integer" or opts.n < 0 then error("shapes.prompts: n must be a non-negative integer", 2) end
  if #out == 0 then error("shapes.prompts: no prompt of this vocabulary falls in the '" .. split .. "' split", 2) end
  local r = stream(opts.seed or 0, 0)
  for k = #out, 2, -1 do -- Fisher-Yates
    local j = r(k)
    out[k], out[j] = out[j], out[k]
  end
  local picked = {}
  for k = 1, opts.n do picked[k] = out[(k - 1) % #out + 1] end
  return picked
end

--- shapes.single_prompts{split = "all", ...}: every single-object prompt
function M.single_prompts(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.split, o.objects = o.split or "all", 1
  return M.prompts(o)
end

--- shapes.render(caption, {size = 32, seed = 0, format = "float", background, tint, noise})
--- -> image, scene: the caption drawn as the dataset would draw it, placed by seed (a single
--- object whose caption names no size is drawn small)
function M.render(caption, opts)
  opts = opts or {}
  local scene, msg = M.parse(caption)
  if not scene then error("shapes.render: " .. msg, 2) end
  if #scene.objects == 2 and scene.objects[1].color == scene.objects[2].color then
    error("shapes.render: the two objects must differ in color", 2)
  end
  for _, o in ipairs(scene.objects) do
    o.size = o.size or (#scene.objects == 1 and "small" or "medium")
  end
  local ds = M.new { size = opts.size, seed = opts.seed, format = opts.format, background = opts.background,
    tint = opts.tint, noise = opts.noise }
  local r = stream(ds.seed, -1)
  layout(r, scene, ds.size)
  scene.background = {}
  for k = 1, 3 do scene.background[k] = math.max(0, math.min(1, ds.background[k] + r(-ds.tint, ds.tint))) end
  scene.noise_seed = mix(r(1 << 30))
  scene.caption = M.caption(scene)
  return ds:_draw(ds:_new_image(), scene), scene
end

--- shapes.object_weights(objects, {size = 32, weight = 4, margin = 1}) -> f32 [B, 1, size, size]:
--- per-pixel loss weights for a batch's objects (batch.objects: one list of objects per
--- image): `weight` inside each object's box grown by `margin` pixels, 1 elsewhere, scaled
--- so that each image's weights average 1. A small object covers a few percent of the image,
--- so a plain mean over pixels barely sees whether it came out a star or a circle.
function M.object_weights(objects, opts)
  opts = opts or {}
  local n, weight, margin = opts.size or 32, opts.weight or 4, opts.margin or 1
  if type(objects) ~= "table" or #objects == 0 then error("shapes.object_weights: expected a batch's list of object lists", 2) end
  if math.type(n) ~= "integer" or n < 1 then error("shapes.object_weights: size must be a positive integer", 2) end
  if type(weight) ~= "number" or weight <= 0 then error("shapes.object_weights: weight must be a positive number", 2) end
  if math.type(margin) ~= "integer" or margin < 0 then error("shapes.object_weights: margin must be an integer >= 0", 2) end
  local w = {}
  for k, obs in ipairs(objects) do
    local base = (k - 1) * n * n
    for i = 1, n * n do w[base + i] = 1 end
    local sum = n * n
    for _, ob in ipairs(obs) do
      local x0, y0, x1, y1 = table.unpack(ob.bbox)
      for y = math.max(0, math.floor(y0) - margin), math.min(n - 1, math.ceil(y1) - 1 + margin) do
        for x = math.max(0, math.floor(x0) - margin), math.min(n - 1, math.ceil(x1) - 1 + margin) do
          local i = base + y * n + x + 1
          if w[i] == 1 then sum = sum + weight - 1 end -- boxes of a pair may overlap
          w[i] = weight
        end
      end
    end
    for i = base + 1, base + n * n do w[i] = w[i] * n * n / sum end
  end
  return T.tensor(w, { dtype = "f32" }):view(#objects, 1, n, n)
end

--- shapes.words() -> every word a caption can use (for a tokenizer's vocabulary)
function M.words()
  local seen, out = {}, {}
  local function add(text)
    for w in text:gmatch("%a+") do
      if not seen[w] then seen[w] = true; out[#out + 1] = w end
    end
  end
  add("a an small big")
  for _, c in ipairs(M.COLORS) do add(c.name) end
  for _, s in ipairs(M.SHAPES) do add(s) end
  for _, p in ipairs(M.POSITIONS) do add(p.phrase) end
  for _, r in ipairs(M.RELATIONS) do add(r.phrase) end
  return out
end

return M
