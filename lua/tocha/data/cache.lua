-- tocha.data.cache: records of tensors computed once and read back many times (the latents
-- and text embeddings of a fine-tuning set), in the shard container `tocha pack` writes: files
-- of zstd frames, one frame per record holding its tensors' bytes, and an index.jsonl written
-- last. A cache carries a key (what it was computed from); open() returns it only when the key
-- matches and it is complete, so a changed model or setting computes a fresh one.
local T = require "tocha"
local json = require "tocha.json"
local C = T._image
local sys = T._sys

local M = {}

local MAGIC = "TOCHASH1" -- the shard header data.pack writes (TC_SHARD_MAGIC)
local FORMAT = "tocha-cache"

--- cache.key(t) -> a short hex string naming the plain table t (numbers, strings, booleans,
--- nested tables): equal tables give equal keys, any change gives another
function M.key(t)
  local parts = {}
  local function walk(v, prefix)
    if type(v) == "table" then
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(keys) do walk(v[k], prefix .. "." .. tostring(k)) end
    else
      parts[#parts + 1] = prefix .. "=" .. (math.type(v) == "float" and string.format("%.17g", v) or tostring(v))
    end
  end
  walk(t, "")
  local s = table.concat(parts, "\n")
  return string.format("%08x%08x", T._log.crc32c(s), T._log.crc32c(s .. "\0tocha"))
end

--- cache.fingerprint(model) -> a string that changes when any of the model's weights do (the
--- sum and the sum of squares of each parameter, in double)
function M.fingerprint(model)
  local parts = {}
  T.no_grad(function()
    for name, p in model:named_parameters() do
      local d = p:detach():to("f64")
      parts[#parts + 1] = string.format("%s:%.17g:%.17g", name, d:sum():item(), (d * d):sum():item())
    end
  end)
  return M.key(parts)
end

---------------------------------------------------------------------------------------------
-- reading
---------------------------------------------------------------------------------------------
local Cache = {}
Cache.__index = function(self, k)
  if math.type(k) == "integer" then return self:get(k) end
  return Cache[k]
end
Cache.__len = function(self) return #self.rows end

local function read_index(dir)
  local f = io.open(dir .. "/index.jsonl", "rb")
  if not f then return nil end
  local header, rows = nil, {}
  for line in f:lines() do
    local ok, v = pcall(json.decode, line)
    if not ok or type(v) ~= "table" then f:close(); return nil end
    if not header then header = v else rows[#rows + 1] = v end
  end
  f:close()
  if not header or header.format ~= FORMAT or header.count ~= #rows then return nil end
  return header, rows
end

--- cache.open(dir, key) -> the cache in dir, or nil when there is none, it is incomplete, or
--- it was made for another key
function M.open(dir, key)
  local header, rows = read_index(dir)
  if not header or (key ~= nil and header.key ~= key) then return nil end
  local paths, shard, offset, size, names = {}, {}, {}, {}, {}
  for k, s in ipairs(header.shards) do paths[k] = dir .. "/" .. s end
  for i, r in ipairs(rows) do shard[i], offset[i], size[i], names[i] = r.shard, r.offset, r.size, tostring(i) end
  local ok, src = pcall(C.source_shards, paths, shard, offset, size, names)
  if not ok then return nil end
  return setmetatable({ dir = dir, key = header.key, info = header.info, layouts = header.layouts, rows = rows,
    src = src }, Cache)
end

--- c:meta(i) -> record i's plain fields
function Cache:meta(i) return self.rows[i].meta end

--- c:get(i) -> record i: its tensors by name, and its plain fields under meta
function Cache:get(i)
  local row = self.rows[i]
  if not row then error(string.format("cache: index %s out of range (1 to %d)", tostring(i), #self.rows), 2) end
  local bytes, msg = C.source_read(self.src, i)
  if not bytes then error("cache: " .. self.dir .. ": " .. tostring(msg), 2) end
  local out, at = { meta = row.meta }, 1
  for _, e in ipairs(self.layouts[row.layout]) do
    out[e.name] = T.frombytes(bytes:sub(at, at + e.bytes - 1), e.dtype, e.shape)
    at = at + e.bytes
  end
  return out
end

---------------------------------------------------------------------------------------------
-- writing
---------------------------------------------------------------------------------------------
local function remove_tree(path)
  if sys.isdir(path) then
    for _, name in ipairs(sys.listdir(path) or {}) do remove_tree(path .. "/" .. name:gsub("/$", "")) end
  end
  os.remove(path)
end

--- cache.write(dir, key, n, produce, {info, level = 3, shard_size = 256 MiB, log}) -> the
--- cache: produce(i) for i = 1..n returns record i as {tensors = {name = tensor}, meta = {...}}
--- (tensors on any device, written as they are); info is kept in the index. Anything already in
--- dir is replaced; the index is written last, so a crash leaves no cache that open() accepts.
function M.write(dir, key, n, produce, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("cache.write: dir must be a string", 2) end
  if math.type(n) ~= "integer" or n < 0 then error("cache.write: n must be a non-negative integer", 2) end
  if sys.isdir(dir) then remove_tree(dir) end
  local ok, err = sys.mkdirs(dir)
  if not ok then error("cache.write: " .. tostring(err), 2) end
  local level, shard_size, log = opts.level or 3, opts.shard_size or 256 * 2 ^ 20, opts.log or function() end
  local shards, rows, layouts, layout_ids = {}, {}, {}, {}
  local f, at
  local function open_shard()
    if f then f:close() end
    local name = string.format("shard-%05d.tzst", #shards)
    shards[#shards + 1] = name
    f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(MAGIC)
    at = #MAGIC
  end
  for i = 1, n do
    local rec = produce(i)
    if type(rec) ~= "table" or type(rec.tensors) ~= "table" then
      error("cache.write: produce(" .. i .. ") must return {tensors = {...}, meta = {...}}", 2)
    end
    local names = {}
    for name in pairs(rec.tensors) do names[#names + 1] = name end
    table.sort(names)
    local layout, chunks, desc = {}, {}, {}
    for k, name in ipairs(names) do
      local t = rec.tensors[name]:detach():to("cpu")
      chunks[k] = t:tobytes()
      layout[k] = { name = name, dtype = t.dtype, shape = t.shape, bytes = #chunks[k] }
      desc[k] = name .. ":" .. t.dtype .. ":" .. table.concat(t.shape, "x")
    end
    local lkey = table.concat(desc, ";")
    local id = layout_ids[lkey]
    if not id then
      layouts[#layouts + 1] = layout
      id = #layouts
      layout_ids[lkey] = id
    end
    local frame = C.zstd_compress(table.concat(chunks), level)
    if not f or (at + #frame > shard_size and at > #MAGIC) then open_shard() end
    f:write(frame)
    rows[i] = json.encode { shard = #shards, offset = at, size = #frame, layout = id, meta = rec.meta or {} }
    at = at + #frame
    if i % 1000 == 0 then log(string.format("cache: %d / %d records", i, n)) end
  end
  if not f then open_shard() end
  f:close()
  local tmp = dir .. "/index.jsonl.tmp"
  local idx = assert(io.open(tmp, "wb"))
  idx:write(json.encode { format = FORMAT, version = 1, key = key, count = n, shards = shards, layouts = layouts,
    info = opts.info or {} }, "\n")
  for _, r in ipairs(rows) do idx:write(r, "\n") end
  idx:close()
  assert(os.rename(tmp, dir .. "/index.jsonl"))
  return M.open(dir, key) or error("cache.write: the cache just written in " .. dir .. " cannot be read back", 2)
end

return M
