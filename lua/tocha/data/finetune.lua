-- tocha.data.finetune: the training set of a text-to-image fine-tune. Captioned images (a
-- folder with metadata.jsonl or .txt captions, or `tocha pack` shards) are resized and cropped
-- to the resolution (or to aspect-ratio buckets), flipped at random, and batched; with a cache,
-- the VAE's latents (of both flips) and the text encoder's embeddings are computed once into
-- zstd shards beside the data and read back instead. See docs/finetune.md.
local T = require "tocha"
local data = require "tocha.data"
local image = require "tocha.image"
local buckets = require "tocha.data.buckets"
local cache = require "tocha.data.cache"
local json = require "tocha.json"

local M = {}

local Set = {}
Set.__index = Set

local CACHE_VERSION = 1

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return -1 end
  local n = f:seek("end")
  f:close()
  return n
end

--- finetune.new{data, resolution, center_crop = false, random_flip = false, buckets = false,
--- bucket_step = 64, max_ratio = 2, seed = 0} -> set. data: a directory of images with
--- captions, or of shards (index.jsonl). #set is the number of images; set.captions[i] each
--- one's caption.
function M.new(o)
  if type(o) ~= "table" or type(o.data) ~= "string" then error("finetune data: expected {data = DIR, ...}", 2) end
  local res = o.resolution
  if math.type(res) ~= "integer" or res < 8 then error("finetune data: resolution must be an integer of at least 8", 2) end
  local is_shards = io.open(o.data .. "/index.jsonl", "rb")
  if is_shards then is_shards:close() end
  local ok, ds = pcall(is_shards and data.Shards or data.ImageFolder, o.data, { channels = 3 })
  if not ok then error("finetune data: " .. tostring(ds):gsub("^[^:]*%.lua:%d+: ", ""), 2) end
  if #ds == 0 then error("finetune data: " .. o.data .. " holds no images", 2) end
  if not ds.has_text then error("finetune data: " .. o.data .. " has no captions (metadata.jsonl or .txt files)", 2) end
  local self = setmetatable({ ds = ds, dir = o.data:gsub("/+$", ""), shards = is_shards and true or false,
    resolution = res, center_crop = o.center_crop and true or false, random_flip = o.random_flip and true or false,
    seed = o.seed or 0, captions = {} }, Set)
  for i = 1, #ds do
    local text = ds:_text(i)
    if ds.errs[i] then error("finetune data: " .. ds.errs[i], 2) end
    self.captions[i] = text
  end
  if o.buckets then
    self.sizes = buckets.sizes { resolution = res, step = o.bucket_step or 64, max_ratio = o.max_ratio or 2 }
    self.bucket = {}
    for i = 1, #ds do
      local img = ds:get(i).image
      self.bucket[i] = buckets.assign(self.sizes, img.shape[2], img.shape[1])
    end
  end
  return self
end

Set.__len = function(self) return #self.ds end

--- set:size_of(i) -> width, height of sample i once preprocessed
function Set:size_of(i)
  if self.bucket then local s = self.sizes[self.bucket[i]]; return s[1], s[2] end
  return self.resolution, self.resolution
end

--- set:batches(batch, epoch) -> the epoch's batches: lists of sample indices, each of one size
--- (one bucket), in an order drawn from (seed, epoch)
function Set:batches(batch, epoch)
  if self.bucket then return buckets.batches(self.bucket, batch, { seed = self.seed, epoch = epoch }) end
  local perm, out = T._image.permutation(#self.ds, self.seed, epoch), {}
  for k = 1, #perm, batch do out[#out + 1] = table.move(perm, k, math.min(k + batch - 1, #perm), 1, {}) end
  return out
end

--- set:image(i, flip) -> sample i preprocessed, f32 [3, H, W] in [-1, 1]: resized (the shorter
--- side to the resolution, or to cover its bucket), cropped (centre, or at random), flipped
function Set:image(i, flip)
  local img = self.ds:get(i).image
  if self.bucket then
    local w, h = self:size_of(i)
    img = buckets.fit(img, w, h, { crop = self.center_crop and "center" or "random" })
  else
    img = image.resize(img, self.resolution)
    img = self.center_crop and image.center_crop(img, self.resolution) or image.random_crop(img, self.resolution)
  end
  if flip then img = image.hflip(img) end
  return image.to_float(img)
end

-- does sample i get flipped this time?
local function draw_flips(self, n)
  if not self.random_flip then return {} end
  local u = T.rand({ n }):tolist()
  local out = {}
  for k = 1, n do out[k] = u[k] < 0.5 end
  return out
end

-- captions with each dropped (replaced by "") with probability p
local function drop_captions(captions, p)
  if p <= 0 then return captions end
  local u = T.rand({ #captions }):tolist()
  local out = {}
  for k, c in ipairs(captions) do out[k] = u[k] < p and "" or c end
  return out
end

---------------------------------------------------------------------------------------------
-- the cache
---------------------------------------------------------------------------------------------
--- set:cache_key(denoiser) -> the key of this set's cache for that model: the frozen encoders'
--- weights, the preprocessing settings and the files (names, sizes, captions)
function Set:cache_key(d)
  local files = {}
  for i = 1, #self.ds do
    files[i] = self.ds.names[i] .. ":" .. (self.shards and 0 or file_size(self.ds.paths[i])) .. ":" .. self.captions[i]
  end
  return cache.key { version = CACHE_VERSION, text_encoder = cache.fingerprint(d.text_encoder),
    vae = d.vae and cache.fingerprint(d.vae) or "pixels", resolution = self.resolution, center_crop = self.center_crop,
    random_flip = self.random_flip, sizes = self.sizes or "square", bucket = self.bucket or "square",
    files = cache.key(files), pooled = d.extras.pooled_text and true or false }
end

--- set:build_cache(denoiser, {dir, batch = 16, log = print}) -> opens the cache for this model
--- and settings in dir (default DATA/.tocha-cache/<key>), computing it first when there is none:
--- each image's latents (mean and std; both flips with random_flip) and each distinct caption's
--- embedding (and ""'s, for caption dropout). Afterwards set:batch reads from it.
function Set:build_cache(d, o)
  o = o or {}
  local log = o.log or function() end
  local key = self:cache_key(d)
  local root = o.dir or (self.dir .. "/.tocha-cache")
  local dir = root .. "/" .. key
  local images, texts = cache.open(dir .. "/images", key), cache.open(dir .. "/texts", key)
  local n = #self.ds
  if images and texts then
    log(string.format("cache: reusing %s (%d images, %d captions)", dir, #images, #texts))
  else
    local t0 = T.clock()
    local uniq, order = { [""] = 1 }, { "" }
    for _, c in ipairs(self.captions) do
      if not uniq[c] then order[#order + 1] = c; uniq[c] = #order end
    end
    -- captions in chunks through the text encoder
    local chunk, text_rec = o.batch or 16, {}
    T.no_grad(function()
      for k = 1, #order, chunk do
        local list = table.move(order, k, math.min(k + chunk - 1, #order), 1, {})
        local states, added = d:encode_prompts(list)
        for j = 1, #list do
          local rec = { states = states[j] }
          if added then rec.pooled = added.class_labels[j] end
          text_rec[k + j - 1] = rec
        end
      end
    end)
    texts = cache.write(dir .. "/texts", key, #order, function(i)
      return { tensors = text_rec[i], meta = { text = order[i] } }
    end)
    -- images one by one (each may have its own bucket's size)
    images = cache.write(dir .. "/images", key, n, function(i)
      local flips = self.random_flip and { false, true } or { false }
      local rec = {}
      T.no_grad(function()
        for _, flip in ipairs(flips) do
          local mean, std = d:encode_images(self:image(i, flip):unsqueeze(1))
          local suffix = flip and "_flip" or ""
          rec["mean" .. suffix] = mean[1]
          if std then rec["std" .. suffix] = std[1] end
        end
      end)
      if i % 100 == 0 then log(string.format("cache: %d / %d images", i, n)) end
      return { tensors = rec, meta = { caption = uniq[self.captions[i]] } }
    end)
    log(string.format("cache: %d images and %d captions encoded in %.1f s into %s", n, #order, T.clock() - t0, dir))
  end
  self.cached = { images = images, texts = texts, dir = dir }
  return self.cached
end

---------------------------------------------------------------------------------------------
-- writing a training set
---------------------------------------------------------------------------------------------
--- finetune.write_folder(dir, n, sample) -> dir: a folder set: sample(i) returns image i (u8
--- [H, W, 3], or float [3, H, W] in [-1, 1]) and its caption; written as NNNN.png files and a
--- metadata.jsonl, the metadata last (a folder without one is incomplete)
function M.write_folder(dir, n, sample)
  local ok, err = T._sys.mkdirs(dir)
  if not ok then error("write_folder: " .. tostring(err), 2) end
  local rows = {}
  for i = 1, n do
    local img, caption = sample(i)
    local name = string.format("%04d.png", i)
    image.write(dir .. "/" .. name, img, img.dtype ~= "u8" and { range = { -1, 1 } } or nil)
    rows[i] = json.encode { file_name = name, text = caption }
  end
  local f = assert(io.open(dir .. "/metadata.jsonl.tmp", "w"))
  f:write(table.concat(rows, "\n"), "\n")
  f:close()
  assert(os.rename(dir .. "/metadata.jsonl.tmp", dir .. "/metadata.jsonl"))
  return dir
end

---------------------------------------------------------------------------------------------
-- batches
---------------------------------------------------------------------------------------------
local function stack(list) return #list == 1 and list[1]:unsqueeze(1) or T.stack(list, 1) end

--- set:batch(indices, d, {caption_dropout = 0, encode_text = true}) -> {x0, states, added,
--- captions}: the training data of one step, on the model's device. x0: latents drawn from the
--- posterior (mean + std * noise) or the pixels themselves. With encode_text = false (a text
--- encoder that trains), states and added are left out: the step encodes the captions itself.
function Set:batch(idx, d, o)
  o = o or {}
  local flips = draw_flips(self, #idx)
  local captions = {}
  for k, i in ipairs(idx) do captions[k] = self.captions[i] end
  captions = drop_captions(captions, o.caption_dropout or 0)
  local dev = o.device or "cpu"
  local out = { captions = captions }
  if self.cached then
    local means, stds, states, pooled = {}, {}, {}, {}
    for k, i in ipairs(idx) do
      local rec = self.cached.images:get(i)
      local suffix = flips[k] and "_flip" or ""
      means[k], stds[k] = rec["mean" .. suffix], rec["std" .. suffix]
      local t = self.cached.texts:get(captions[k] == "" and 1 or rec.meta.caption)
      states[k], pooled[k] = t.states, t.pooled
    end
    local mean = stack(means):to(dev)
    out.x0 = stds[1] and mean + stack(stds):to(dev) * T.randn_like(mean) or mean
    out.states = stack(states):to(dev)
    if pooled[1] then out.added = { class_labels = stack(pooled):to(dev) } end
    return out
  end
  local imgs = {}
  for k, i in ipairs(idx) do imgs[k] = self:image(i, flips[k]) end
  T.no_grad(function()
    local mean, std = d:encode_images(stack(imgs):to(dev))
    out.x0 = std and mean + std * T.randn_like(mean) or mean
  end)
  if o.encode_text ~= false then
    T.no_grad(function() out.states, out.added = d:encode_prompts(captions) end)
  end
  return out
end

return M
