-- tocha.data.folder: datasets of image-caption pairs whose images are decoded in C: a folder
-- (each image with a same-name .txt caption, or a metadata.jsonl of {file_name, text} as the
-- Hugging Face imagefolder), and shards written from such a folder by pack (`tocha pack`):
-- zstd frames plus an index.jsonl. Both give identical samples {image, text, file}.
local T = require "tocha"
local image = require "tocha.image"
local json = require "tocha.json"
local D = require "tocha.data.dataset"
local C = T._image

local M = {}
local EMPTY = {}
local IMAGE_EXT = { png = true, jpg = true, jpeg = true }

---------------------------------------------------------------------------------------------
-- the C-backed base: a source of encoded images, captions, and a transform pipeline
---------------------------------------------------------------------------------------------
local Images = D.class(D.Dataset)
M.Images = Images

local function set_transform(self, tf)
  if tf ~= nil and not image.is_transform(tf) then
    error("transform must be an image transform (tocha.image.Compose, Resize, ...); use ds:map(fn) for Lua functions", 3)
  end
  self.tf = tf and (getmetatable(tf) == image._Compose and tf or image.Compose { tf }) or image.Compose {}
  self.pipe = self.tf:pipeline(self.channels)
end

local function init(self, opts)
  self.channels = opts.channels or 3
  if math.type(self.channels) ~= "integer" or self.channels < 0 or self.channels > 4 then
    error("channels must be 0 (as stored), 1, 3 or 4", 3)
  end
  set_transform(self, opts.transform)
  return self
end

function Images:len() return #self.names end

--- the sample's fields besides the image
function Images:_build(i, img)
  return { image = img, text = self:_text(i), file = self.names[i] }
end

--- ds[i]: decoded and transformed now (random transforms draw from the global generator);
--- a bad sample raises with the file and the reason
function Images:get(i)
  D.check_index(self, i, 2)
  if self.errs[i] then error(self.errs[i], 2) end
  local img, msg = C.source_load(self.src, i, self.pipe)
  if not img then error(msg, 2) end
  return self:_build(i, img)
end

function Images:_locate(i) return self, i, EMPTY end

--- what the loader's workers need for sample i, with its augmentation key
function Images:_c_sample(i, seed, counter)
  local e = self.errs[i]
  if e then return { err = e } end
  return { self.src, i, self.pipe, seed, counter }
end

--- the same samples through a further transform (joined to the existing one)
function Images:with_transform(tf)
  local copy = setmetatable({}, getmetatable(self))
  for k, v in pairs(self) do copy[k] = v end
  local list = { self.tf }
  list[2] = tf
  set_transform(copy, image.Compose(list))
  return copy
end

---------------------------------------------------------------------------------------------
-- folders
---------------------------------------------------------------------------------------------
local Folder = D.class(Images)
M.Folder = Folder

local function read_text(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- every file under dir (relative paths, sorted), skipping hidden ones
local function walk(dir, rel, out)
  local names, msg = T._sys.listdir(rel == "" and dir or dir .. "/" .. rel)
  if not names then error(msg, 0) end
  table.sort(names)
  for _, n in ipairs(names) do
    if n:sub(1, 1) ~= "." then
      local path = rel == "" and n or rel .. "/" .. n
      if n:sub(-1) == "/" then walk(dir, path:sub(1, -2), out)
      else out[#out + 1] = path end
    end
  end
  return out
end

--- data.ImageFolder(dir, {transform, channels = 3, captions = "auto", caption_column = "text"})
--- Samples {image, text, file} in sorted file order. Captions come from metadata.jsonl when
--- it exists, else from same-name .txt files; captions = "auto" requires them when either
--- exists (an image without one is a bad sample: "missing caption"), false ignores them.
function M.ImageFolder(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("ImageFolder: dir must be a string", 2) end
  dir = dir:gsub("/+$", "")
  local ok, files = pcall(walk, dir, "", {})
  if not ok then error("ImageFolder: " .. files, 2) end
  local self = setmetatable({ dir = dir, names = {}, paths = {}, errs = {}, texts = {} }, Folder)
  local present, has_txt = {}, false
  for _, f in ipairs(files) do
    present[f] = true
    local ext = f:match("%.([^./]+)$")
    if ext and IMAGE_EXT[ext:lower()] then self.names[#self.names + 1] = f end
    if ext == "txt" then has_txt = true end
  end
  local column = opts.caption_column or "text"
  local meta
  if present["metadata.jsonl"] and opts.captions ~= false then
    meta = {}
    local n = 0
    for line in io.lines(dir .. "/metadata.jsonl") do
      n = n + 1
      if line:find("%S") then
        local okj, row = pcall(json.decode, line)
        if not okj or type(row) ~= "table" or type(row.file_name) ~= "string" then
          error(string.format("ImageFolder: %s/metadata.jsonl:%d: %s", dir, n,
            okj and "each line needs a \"file_name\" string" or row), 2)
        end
        meta[row.file_name] = row[column]
        if not present[row.file_name] then -- listed but absent: reading it will say so
          present[row.file_name] = true
          self.names[#self.names + 1] = row.file_name
        end
      end
    end
    table.sort(self.names)
  end
  local want = opts.captions
  if want == nil or want == "auto" then want = meta ~= nil or has_txt end
  self.has_text = want and true or false
  for i, f in ipairs(self.names) do
    self.paths[i] = dir .. "/" .. f
    if want then
      if meta then
        if meta[f] == nil then self.errs[i] = string.format("%s: missing caption (no \"%s\" for it in %s/metadata.jsonl)", self.paths[i], column, dir)
        else self.texts[i] = tostring(meta[f]) end
      else
        local txt = f:gsub("%.[^./]+$", "") .. ".txt"
        if present[txt] then self.texts[i] = dir .. "/" .. txt -- read when asked for
        else self.errs[i] = string.format("%s: missing caption (no %s/%s)", self.paths[i], dir, txt) end
      end
    end
  end
  self.meta = meta ~= nil
  self.src = C.source_files(self.paths)
  return init(self, opts)
end

function Folder:_text(i)
  if not self.has_text then return nil end
  local t = self.texts[i]
  if self.meta or t == nil then return t end
  local s = read_text(t)
  if not s then error(string.format("%s: cannot read caption %s", self.paths[i], t), 0) end
  return (s:gsub("%s+$", ""))
end

---------------------------------------------------------------------------------------------
-- shards
---------------------------------------------------------------------------------------------
local Shards = D.class(Images)
M.ShardsClass = Shards

--- data.Shards(dir, {transform, channels = 3}): the samples `tocha pack` wrote to dir
function M.Shards(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("Shards: dir must be a string", 2) end
  dir = dir:gsub("/+$", "")
  local index = dir .. "/index.jsonl"
  local f = io.open(index, "rb")
  if not f then error("Shards: cannot open " .. index .. " (not a directory written by tocha pack?)", 2) end
  local self = setmetatable({ dir = dir, names = {}, errs = {}, texts = {} }, Shards)
  local shard, offset, size = {}, {}, {}
  local header
  local n = 0
  for line in f:lines() do
    n = n + 1
    local ok, row = pcall(json.decode, line)
    if not ok or type(row) ~= "table" then
      f:close()
      error(string.format("Shards: %s:%d: damaged index: %s", index, n, ok and "not an object" or row), 2)
    end
    if n == 1 then
      header = row
      if row.format ~= "tocha-shards" or type(row.shards) ~= "table" then
        f:close()
        error("Shards: " .. index .. ": damaged index: the first line is not a tocha-shards header", 2)
      end
    else
      local i = #self.names + 1
      if type(row.file_name) ~= "string" or math.type(row.shard) ~= "integer" or math.type(row.offset) ~= "integer"
        or math.type(row.size) ~= "integer" then
        f:close()
        error(string.format("Shards: %s:%d: damaged index: a sample needs file_name, shard, offset and size", index, n), 2)
      end
      self.names[i], shard[i], offset[i], size[i] = row.file_name, row.shard, row.offset, row.size
      self.texts[i] = row.text
      self.errs[i] = row.error
    end
  end
  f:close()
  if not header then error("Shards: " .. index .. " is empty", 2) end
  if header.count ~= #self.names then
    error(string.format("Shards: %s: damaged index: the header counts %s samples, %d are listed",
      index, tostring(header.count), #self.names), 2)
  end
  self.has_text = header.captions and true or false
  local paths = {}
  for k, s in ipairs(header.shards) do paths[k] = dir .. "/" .. s end
  local ok, src = pcall(C.source_shards, paths, shard, offset, size, self.names)
  if not ok then error("Shards: " .. tostring(src), 2) end
  self.src = src
  return init(self, opts)
end

function Shards:_text(i) return self.has_text and self.texts[i] or nil end

---------------------------------------------------------------------------------------------
-- packing
---------------------------------------------------------------------------------------------
--- data.pack(dir, out, {shard_size = 256 MiB, level = 3, captions = "auto", log = print}):
--- writes the folder dataset at dir as shards in out (shard-00000.tzst, ... and index.jsonl,
--- written last and atomically). Images are stored as their file bytes, so the shards decode
--- to exactly what the folder does; bad samples keep their message. Returns the count.
function M.pack(dir, out, opts)
  opts = opts or {}
  local ds = M.ImageFolder(dir, { channels = 0, captions = opts.captions })
  local shard_size, level = opts.shard_size or 256 * 2 ^ 20, opts.level or 3
  local log = opts.log or function() end
  local made, err = T._sys.mkdirs(out)
  if not made then error("pack: " .. err, 2) end
  local shards, rows = {}, {}
  local f, at
  local function open_shard()
    if f then f:close() end
    local name = string.format("shard-%05d.tzst", #shards)
    shards[#shards + 1] = name
    f = assert(io.open(out .. "/" .. name, "wb"))
    f:write("TOCHASH1") -- TC_SHARD_MAGIC
    at = 8
  end
  for i = 1, #ds do
    local row = { file_name = ds.names[i], error = ds.errs[i] }
    if not row.error and ds.has_text then row.text = ds:_text(i) end
    local bytes, msg = C.source_read(ds.src, i)
    if not bytes then row.error = msg; bytes = "" end
    local frame = C.zstd_compress(bytes, level)
    if not f or (at + #frame > shard_size and at > 8) then open_shard() end
    f:write(frame)
    row.shard, row.offset, row.size = #shards, at, #frame
    at = at + #frame
    rows[i] = json.encode(row)
    if i % 1000 == 0 then log(string.format("pack: %d / %d samples", i, #ds)) end
  end
  if not f then open_shard() end
  f:close()
  local header = json.encode { format = "tocha-shards", version = 1, shards = shards, count = #ds,
    captions = ds.has_text }
  local tmp = out .. "/index.jsonl.tmp"
  local idx = assert(io.open(tmp, "wb"))
  idx:write(header, "\n")
  for _, r in ipairs(rows) do idx:write(r, "\n") end
  idx:close()
  assert(os.rename(tmp, out .. "/index.jsonl"))
  log(string.format("pack: %d samples in %d shard(s) in %s", #ds, #shards, out))
  return #ds
end

return M
