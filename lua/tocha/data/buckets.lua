-- tocha.data.buckets: aspect-ratio buckets. Instead of cropping every image to one square, a
-- few resolutions of about the target area and different shapes are made; each image goes to
-- the one nearest its aspect ratio, is resized to cover it and cropped by what is left over,
-- and each batch draws from one bucket (a batch is one tensor). See docs/finetune.md.
local T = require "tocha"
local image = require "tocha.image"

local M = {}

--- buckets.sizes{resolution = 512, step = 64, max_ratio = 2} -> a list of {width, height},
--- multiples of step whose area is at most resolution^2 and as large as fits, from the tallest
--- (1 : max_ratio) through the square to the widest, sorted by aspect ratio (width / height)
function M.sizes(opts)
  opts = opts or {}
  local res, step, ratio = opts.resolution or 512, opts.step or 64, opts.max_ratio or 2
  if math.type(res) ~= "integer" or res < 1 then error("buckets.sizes: resolution must be a positive integer", 2) end
  if math.type(step) ~= "integer" or step < 1 or res % step ~= 0 then
    error("buckets.sizes: step must be a positive integer dividing the resolution", 2)
  end
  if type(ratio) ~= "number" or ratio < 1 then error("buckets.sizes: max_ratio must be a number >= 1", 2) end
  local area, seen, out = res * res, {}, {}
  local function add(w, h)
    local key = w .. "x" .. h
    if h >= step and w >= step and not seen[key] and math.max(w / h, h / w) <= ratio + 1e-9 then
      seen[key] = true
      out[#out + 1] = { w, h }
    end
  end
  for w = step, math.floor(res * math.sqrt(ratio)), step do
    local h = (area // w) // step * step
    add(w, h)
    add(h, w)
  end
  add(res, res)
  table.sort(out, function(a, b) return a[1] / a[2] < b[1] / b[2] end)
  return out
end

--- buckets.assign(sizes, width, height) -> the index of the bucket whose aspect ratio is
--- nearest the image's (on a log scale, so 1:2 and 2:1 are as far from square)
function M.assign(sizes, w, h)
  if type(sizes) ~= "table" or #sizes == 0 then error("buckets.assign: expected a non-empty list of {width, height}", 2) end
  local r = math.log(w / h)
  local best, bd
  for i, s in ipairs(sizes) do
    local d = math.abs(math.log(s[1] / s[2]) - r)
    if not bd or d < bd - 1e-12 then best, bd = i, d end
  end
  return best
end

--- buckets.fit(img, width, height, {crop = "center" | "random", mode = "bilinear"}) -> img
--- (u8 [H, W, C]) resized so that it covers width x height, keeping its aspect ratio, then
--- cropped to exactly that (in the middle, or at a place drawn from the global generator);
--- also returns the crop's top and left in the resized image (0-based)
function M.fit(img, w, h, opts)
  opts = opts or {}
  local ih, iw = img.shape[1], img.shape[2]
  local s = math.max(w / iw, h / ih)
  local rw, rh = math.max(w, math.floor(iw * s + 0.5)), math.max(h, math.floor(ih * s + 0.5))
  if rw ~= iw or rh ~= ih then img = image.resize(img, { rh, rw }, { mode = opts.mode or "bilinear" }) end
  local top, left
  if opts.crop == "random" then
    top = T.randint(0, rh - h + 1, { 1 }):item()
    left = T.randint(0, rw - w + 1, { 1 }):item()
  elseif opts.crop == nil or opts.crop == "center" then
    top, left = (rh - h) // 2, (rw - w) // 2
  else
    error("buckets.fit: crop must be \"center\" or \"random\"", 2)
  end
  if rh == h and rw == w then return img, 0, 0 end
  return image.crop(img, top + 1, left + 1, h, w), top, left
end

--- buckets.batches(bucket_of, batch, {seed = 0, epoch = 0, drop_last = false}) -> a list of
--- batches, each a list of sample indices from one bucket. bucket_of[i] is sample i's bucket.
--- Samples are shuffled within their bucket and the batches across buckets, by (seed, epoch);
--- a bucket's last batch may be short unless drop_last.
function M.batches(bucket_of, batch, opts)
  opts = opts or {}
  if type(bucket_of) ~= "table" then error("buckets.batches: expected a list of bucket indices", 2) end
  if math.type(batch) ~= "integer" or batch < 1 then error("buckets.batches: batch must be a positive integer", 2) end
  local seed, epoch = opts.seed or 0, opts.epoch or 0
  local perm = T._image.permutation(#bucket_of, seed, epoch)
  local groups, order = {}, {}
  for _, i in ipairs(perm) do
    local b = bucket_of[i]
    if not groups[b] then groups[b] = {}; order[#order + 1] = b end
    local g = groups[b]
    g[#g + 1] = i
  end
  table.sort(order)
  local out = {}
  for _, b in ipairs(order) do
    local g = groups[b]
    for k = 1, #g, batch do
      if k + batch - 1 <= #g or not opts.drop_last then out[#out + 1] = table.move(g, k, math.min(k + batch - 1, #g), 1, {}) end
    end
  end
  local shuffled = {}
  for k, j in ipairs(T._image.permutation(#out, seed + 1, epoch)) do shuffled[k] = out[j] end
  return shuffled
end

return M
