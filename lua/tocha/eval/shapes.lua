-- tocha.eval.shapes: does an image show what its shapes caption says? Finds the objects of an
-- image analytically (pixels unmixed into palette colors against the background, connected
-- regions, each shape kind fitted to a region by centroid and area), reads color, shape, size
-- and position off them, and scores captions per attribute. See docs/shapes.md.
local T = require "tocha"
local shapes = require "tocha.data.shapes"
local C = T._shapes

local M = {}

-- min_area: smallest object, as a fraction of the image; min_iou: the least overlap with the
-- best-fitting shape kind for a region to count as that kind; max_residual: the farthest
-- (RGB distance, [0, 1] per channel) a pixel may lie from a palette color blended with the
-- background and still take that color
M.defaults = { min_area = 0.01, min_iou = 0.6, max_residual = 0.3 }

local KINDS = C.kinds()
-- radius (fraction of the image side) between "small" and "big"
local SIZE_SPLIT = math.sqrt(shapes.SIZES.small * shapes.SIZES.big)

local function union(base, extra)
  local seen, out = {}, {}
  for _, list in ipairs { base, extra } do
    for _, n in ipairs(list) do
      if not seen[n] then seen[n] = true; out[#out + 1] = n end
    end
  end
  return out
end

-- an image as f32 [H, W, 3] in [0, 1]: float [3, H, W] in [-1, 1], or u8 [H, W, 3]
local function to_rgb01(img, level)
  if not T.is_tensor(img) then error("eval.shapes: expected an image tensor, got " .. type(img), level + 1) end
  img = img:detach()
  if img.dtype == "u8" then
    if img:dim() ~= 3 or img.shape[3] ~= 3 then
      error("eval.shapes: a u8 image must be [H, W, 3], got [" .. table.concat(img.shape, " x ") .. "]", level + 1)
    end
    return (img:to("f32") / 255):contiguous()
  end
  if img.dtype == "bool" or img.dtype == "i32" or img.dtype == "i64" or img:dim() ~= 3 or img.shape[1] ~= 3 then
    error("eval.shapes: expected a float [3, H, W] image in [-1, 1] or a u8 [H, W, 3] one, got "
      .. img.dtype .. " [" .. table.concat(img.shape, " x ") .. "]", level + 1)
  end
  return ((img:to("cpu"):to("f32") + 1) * 0.5):permute(2, 3, 1):contiguous()
end

local function nearest_position(fx, fy)
  local best, bd = nil, math.huge
  for _, p in ipairs(shapes.POSITIONS) do
    local d = (fx - p.x) ^ 2 + (fy - p.y) ^ 2
    if d < bd then best, bd = p.name, d end
  end
  return best
end

--- eval.analyze(image, {colors, shapes, min_area, min_iou, max_residual}) -> objects,
--- background: the objects found, largest first, each {color (nil: none of the palette),
--- shape (nil: no kind fits), size, position, x, y (centroid, fractions of the width and
--- height), area (fraction of the image), iou = {kind = overlap}}. colors and shapes are the
--- names considered (default: the dataset's defaults).
function M.analyze(image, opts)
  opts = opts or {}
  local colors = opts.colors or shapes.DEFAULT_COLORS
  local kinds = opts.shapes or shapes.DEFAULT_SHAPES
  local min_area = opts.min_area or M.defaults.min_area
  local min_iou = opts.min_iou or M.defaults.min_iou
  local rgb = to_rgb01(image, 2)
  local h, w = rgb.shape[1], rgb.shape[2]
  local palette = {}
  for k, c in ipairs(colors) do palette[k] = shapes.color_rgb(c) end
  local min_pixels = math.max(1, math.floor(min_area * h * w * 0.5))
  local regions, bg = C.analyze(rgb, palette, opts.max_residual or M.defaults.max_residual, min_pixels, 16)
  local side = math.sqrt(h * w)
  local out = {}
  for _, g in ipairs(regions) do
    if g.area >= min_area * h * w then
      local best, biou = nil, 0
      for _, kind in ipairs(kinds) do
        if g.iou[kind] > biou then best, biou = kind, g.iou[kind] end
      end
      local shape = biou >= min_iou and best or nil
      local r = math.sqrt(g.area / KINDS[shape or "circle"].area) / side
      out[#out + 1] = {
        color = g.color and colors[g.color] or nil, shape = shape,
        size = r < SIZE_SPLIT and "small" or "big",
        position = nearest_position(g.x / w, g.y / h),
        x = g.x / w, y = g.y / h, area = g.area / (h * w), iou = g.iou,
      }
    end
  end
  return out, bg
end

-- does the relation between two found objects (a first) hold? the offset along the
-- relation's axis must exceed the one across it
local function relation_holds(rel, a, b)
  local dx, dy = b.x - a.x, b.y - a.y
  if rel == "above" then return dy > math.abs(dx) end
  if rel == "below" then return -dy > math.abs(dx) end
  if rel == "left of" then return dx > math.abs(dy) end
  return -dx > math.abs(dy) -- right of
end

-- the parsed caption of a string (raises on one the grammar does not read)
local function parsed(caption, level)
  if type(caption) == "table" then return caption end
  local p, msg = shapes.parse(caption)
  if not p then error("eval.shapes: " .. msg, level + 1) end
  return p
end

local function wanted_names(scene, field, base)
  local extra = {}
  for _, o in ipairs(scene.objects) do extra[#extra + 1] = o[field] end
  return union(base, extra)
end

--- eval.check(image, caption, opts) -> {color, shape, position, size, all, count = booleans,
--- objects = the matched found objects}. The image's largest objects, as many as the caption
--- names, are matched to the caption's: by color first, then in order of size. color/shape: every wanted object's
--- matches; position: a single object's place, or a pair's relation; size: only for captions
--- naming one (nil otherwise); all: color, shape, position and size together; count: as many
--- objects found as the caption names (reported apart, not part of all).
function M.check(image, caption, opts)
  opts = opts or {}
  local scene = parsed(caption, 2)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.colors = opts.colors or wanted_names(scene, "color", shapes.DEFAULT_COLORS)
  o.shapes = opts.shapes or wanted_names(scene, "shape", shapes.DEFAULT_SHAPES)
  local found = M.analyze(image, o)
  local want, match, used = scene.objects, {}, {}
  local top = math.min(#want, #found) -- the image's main objects: its largest ones
  for k, ob in ipairs(want) do -- matched by color first
    for j = 1, top do
      if not used[j] and found[j].color == ob.color then match[k], used[j] = found[j], true; break end
    end
  end
  for k = 1, #want do -- then in order of size
    if not match[k] then
      for j = 1, top do
        if not used[j] then match[k], used[j] = found[j], true; break end
      end
    end
  end
  local res = { color = true, shape = true, position = true, count = #found == #want, objects = match }
  local size_named = false
  for k, ob in ipairs(want) do
    local f = match[k]
    res.color = res.color and f ~= nil and f.color == ob.color
    res.shape = res.shape and f ~= nil and f.shape == ob.shape
    if ob.size == "small" or ob.size == "big" then
      size_named = true
      res.size = (res.size ~= false) and f ~= nil and f.size == ob.size
    end
  end
  if #want == 1 then
    res.position = match[1] ~= nil and match[1].position == want[1].position
  else
    res.position = match[1] ~= nil and match[2] ~= nil and relation_holds(scene.relation, match[1], match[2])
  end
  if not size_named then res.size = nil end
  res.all = res.color and res.shape and res.position and res.size ~= false
  return res
end

local ATTRS = { "color", "shape", "position", "size", "all", "count" }
M.ATTRIBUTES = ATTRS

local function tally(acc, res)
  acc.n = acc.n + 1
  for _, a in ipairs(ATTRS) do
    if res[a] ~= nil then
      acc.hits[a] = (acc.hits[a] or 0) + (res[a] and 1 or 0)
      acc.seen[a] = (acc.seen[a] or 0) + 1
    end
  end
end

local function rates(acc)
  local out = { n = acc.n }
  for _, a in ipairs(ATTRS) do
    if acc.seen[a] then out[a] = acc.hits[a] / acc.seen[a] end
  end
  return out
end

--- eval.evaluate(images, captions, opts) -> {n, color, shape, position, size, all, count,
--- single = {...}, pair = {...}, by_size = {small = {...}, big = {...}}, results = {per image
--- check}, confusion}: accuracies in [0, 1]; by_size holds the single-object captions by the
--- size they name (none for those naming no size). images: a list of images or one batched tensor ([B, 3, H, W] float or
--- [B, H, W, 3] u8); captions: strings (or parsed scenes). An image showing nothing
--- recognisable counts as wrong. confusion[wanted][found] counts the shapes of every wanted
--- object against what its matched object was read as ("none": no kind fits, "missing": no
--- object to match).
function M.evaluate(images, captions, opts)
  if type(captions) ~= "table" then error("eval.shapes.evaluate: captions must be a list", 2) end
  local n = #captions
  local batched = T.is_tensor(images)
  if batched then
    if images:dim() ~= 4 or images.shape[1] ~= n then
      error(string.format("eval.shapes.evaluate: %d captions for images of shape [%s]", n, table.concat(images.shape, " x ")), 2)
    end
  elseif type(images) ~= "table" or #images ~= n then
    error(string.format("eval.shapes.evaluate: %d captions but %s images", n, type(images) == "table" and #images or type(images)), 2)
  end
  local all = { n = 0, hits = {}, seen = {} }
  local by = { { n = 0, hits = {}, seen = {} }, { n = 0, hits = {}, seen = {} } }
  local sized = {} -- single objects by the size their caption names
  local results, confusion = {}, {}
  for i = 1, n do
    local scene = parsed(captions[i], 2)
    local res = M.check(images[i], scene, opts)
    results[i] = res
    tally(all, res)
    tally(by[#scene.objects], res)
    local size = #scene.objects == 1 and scene.objects[1].size
    if size then
      sized[size] = sized[size] or { n = 0, hits = {}, seen = {} }
      tally(sized[size], res)
    end
    for k, ob in ipairs(scene.objects) do
      local f = res.objects[k]
      local got = f and (f.shape or "none") or "missing"
      local row = confusion[ob.shape] or {}
      confusion[ob.shape] = row
      row[got] = (row[got] or 0) + 1
    end
  end
  local out = rates(all)
  out.single, out.pair, out.results, out.confusion = rates(by[1]), rates(by[2]), results, confusion
  out.by_size = {}
  for size, acc in pairs(sized) do out.by_size[size] = rates(acc) end
  return out
end

--- eval.format(result) -> a printable table of an evaluate result
function M.format(r)
  local lines = { string.format("%-8s %6s %6s %6s %6s %6s %6s %6s", "", "n", "color", "shape", "pos", "size", "all", "count") }
  local function row(name, t)
    if not t or t.n == 0 then return end
    local cells = { string.format("%-8s %6d", name, t.n) }
    for _, a in ipairs(ATTRS) do
      cells[#cells + 1] = t[a] and string.format("%5.1f%%", 100 * t[a]) or string.format("%6s", "-")
    end
    lines[#lines + 1] = table.concat(cells, " ")
  end
  row("single", r.single)
  row("pair", r.pair)
  row("total", r)
  return table.concat(lines, "\n")
end

--- eval.format_confusion(result) -> a printable table of an evaluate result's shape
--- confusion: a row per wanted shape, a column per shape read (and none, missing)
function M.format_confusion(r)
  local wanted, read, seen = {}, {}, {}
  for w, row in pairs(r.confusion or {}) do
    wanted[#wanted + 1] = w
    for g in pairs(row) do if not seen[g] then seen[g] = true; read[#read + 1] = g end end
  end
  local order = {}
  for k, name in ipairs(shapes.SHAPES) do order[name] = k end
  order.none, order.missing = #shapes.SHAPES + 1, #shapes.SHAPES + 2
  local function by_order(a, b) return order[a] < order[b] end
  table.sort(wanted, by_order)
  table.sort(read, by_order)
  local head = { string.format("%-12s", "wanted\\read") }
  for _, g in ipairs(read) do head[#head + 1] = string.format("%8s", g) end
  local lines = { table.concat(head, " ") }
  for _, w in ipairs(wanted) do
    local cells = { string.format("%-12s", w) }
    for _, g in ipairs(read) do cells[#cells + 1] = string.format("%8d", r.confusion[w][g] or 0) end
    lines[#lines + 1] = table.concat(cells, " ")
  end
  return table.concat(lines, "\n")
end

return M
