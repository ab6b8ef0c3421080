-- tocha.data.dataset: the dataset protocol and its wrappers. A dataset is anything with a
-- length (#ds) and samples ds[i] (or ds:get(i)), i from 1: a plain Lua list works. Wrappers
-- (map, transform, shuffle, concat, split, take) keep track of which underlying C-backed
-- sample each index is (_locate), so the loader can still decode those on its workers.
local T = require "tocha"

local M = {}

--- M.class(parent): a class whose instances answer #x and x[i] through len and get
function M.class(parent)
  local c = {}
  c.__index = function(self, k)
    if math.type(k) == "integer" then return self:get(k) end
    return c[k]
  end
  c.__len = function(self) return self:len() end
  return setmetatable(c, { __index = parent })
end

--- the length and the i-th sample of any dataset
function M.len(ds)
  if type(ds) == "table" and type(ds.len) == "function" then return ds:len() end
  if type(ds) ~= "table" then error("expected a dataset (a list, or a table with len and get), got a " .. type(ds), 3) end
  return #ds
end

function M.get(ds, i)
  if type(ds) == "table" and type(ds.get) == "function" then return ds:get(i) end
  return ds[i]
end

local function check_index(ds, i, level)
  local n = M.len(ds)
  if math.type(i) ~= "integer" or i < 1 or i > n then
    error(string.format("dataset: index %s out of range (1 to %d)", tostring(i), n), level + 1)
  end
end
M.check_index = check_index

local Dataset = M.class()
M.Dataset = Dataset

---------------------------------------------------------------------------------------------
-- wrappers
---------------------------------------------------------------------------------------------
local Map = M.class(Dataset)
local Subset = M.class(Dataset)
local Concat = M.class(Dataset)
M.Map, M.Subset, M.Concat = Map, Subset, Concat

--- ds:map(fn): samples fn(ds[i])
function M.map(ds, fn)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then error("map: expected a function", 2) end
  return setmetatable({ ds = ds, fn = fn, chains = setmetatable({}, { __mode = "k" }) }, Map)
end
function Map:len() return M.len(self.ds) end
function Map:get(i) return self.fn(M.get(self.ds, i)) end
function Map:_locate(i)
  if not (type(self.ds) == "table" and self.ds._locate) then return nil end
  local base, j, chain = self.ds:_locate(i)
  if not base then return nil end
  local mine = self.chains[chain]
  if not mine then -- one chain table per inner chain, so locating allocates nothing
    mine = { table.unpack(chain) }
    mine[#mine + 1] = self.fn
    self.chains[chain] = mine
  end
  return base, j, mine
end

--- ds:transform(tf): tf applied to each sample's image (sample.image, or the sample when it
--- is a tensor). An image transform from tocha.image on a folder or shard dataset joins its
--- C pipeline (and the loader's workers); anything else runs in Lua.
function M.transform(ds, tf)
  if type(ds) == "table" and ds.with_transform then
    local image = require "tocha.image"
    if image.is_transform(tf) then return ds:with_transform(tf) end
  end
  return M.map(ds, function(s)
    if T.is_tensor(s) then return tf(s) end
    local out = {}
    for k, v in pairs(s) do out[k] = v end
    out.image = tf(s.image)
    return out
  end)
end

--- M.subset(ds, indices): samples ds[indices[1]], ds[indices[2]], ...
function M.subset(ds, idx)
  local n = M.len(ds)
  for k, i in ipairs(idx) do
    if math.type(i) ~= "integer" or i < 1 or i > n then
      error(string.format("subset: index %d is %s, outside 1 to %d", k, tostring(i), n), 2)
    end
  end
  return setmetatable({ ds = ds, idx = idx }, Subset)
end
function Subset:len() return #self.idx end
function Subset:get(i) check_index(self, i, 2); return M.get(self.ds, self.idx[i]) end
function Subset:_locate(i)
  if not (type(self.ds) == "table" and self.ds._locate) then return nil end
  return self.ds:_locate(self.idx[i])
end

--- ds:take(n): the first n samples
function M.take(ds, n)
  if math.type(n) ~= "integer" or n < 0 then error("take: n must be a non-negative integer", 2) end
  local idx = {}
  for i = 1, math.min(n, M.len(ds)) do idx[i] = i end
  return M.subset(ds, idx)
end

--- ds:shuffle(seed): a fixed random order (Philox, from seed; default: the global generator)
function M.shuffle(ds, seed)
  seed = seed or T.randint(0, 2147483647, { 1 }):item()
  return M.subset(ds, T._image.permutation(M.len(ds), seed, 0))
end

--- M.concat(a, b, ...) or a:concat(b, ...): the samples of each in turn
function M.concat(...)
  local parts, ends, n = { ... }, {}, 0
  for k, p in ipairs(parts) do
    n = n + M.len(p)
    ends[k] = n
  end
  return setmetatable({ parts = parts, ends = ends }, Concat)
end
function Concat:len() return self.ends[#self.ends] or 0 end
function Concat:_find(i)
  local lo, hi = 1, #self.ends
  while lo < hi do -- the first part whose end reaches i
    local mid = (lo + hi) // 2
    if self.ends[mid] >= i then hi = mid else lo = mid + 1 end
  end
  return self.parts[lo], i - (self.ends[lo - 1] or 0)
end
function Concat:get(i)
  check_index(self, i, 2)
  local p, j = self:_find(i)
  return M.get(p, j)
end
function Concat:_locate(i)
  local p, j = self:_find(i)
  if not (type(p) == "table" and p._locate) then return nil end
  return p:_locate(j)
end

--- ds:split(sizes, {seed = s}): consecutive pieces of the given sizes (counts, or fractions
--- summing to 1, the last piece taking the rounding); shuffled first when a seed is given
function M.split(ds, sizes, opts)
  opts = opts or {}
  local n = M.len(ds)
  local order
  if opts.seed then order = T._image.permutation(n, opts.seed, 0)
  else order = {}; for i = 1, n do order[i] = i end end
  local counts, total = {}, 0
  local fractions = true -- floats are fractions, integers counts
  for _, s in ipairs(sizes) do if math.type(s) ~= "float" then fractions = false end end
  for k, s in ipairs(sizes) do
    counts[k] = fractions and math.floor(s * n) or s
    total = total + counts[k]
  end
  if fractions then counts[#counts] = counts[#counts] + n - total; total = n end
  if total ~= n then error(string.format("split: sizes add up to %d, the dataset has %d samples", total, n), 2) end
  local out, at = {}, 0
  for k, c in ipairs(counts) do
    local idx = {}
    for i = 1, c do idx[i] = order[at + i] end
    at = at + c
    out[k] = M.subset(ds, idx)
  end
  return table.unpack(out)
end

-- the wrappers as methods of every dataset class
for _, name in ipairs { "map", "transform", "take", "shuffle", "concat", "split" } do
  Dataset[name] = M[name]
end
function Dataset:subset(idx) return M.subset(self, idx) end

---------------------------------------------------------------------------------------------
-- collate
---------------------------------------------------------------------------------------------
local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

--- M.collate(samples): tensors are stacked along a new first dim; numbers become a tensor
--- (i64 when all are integers, else f64); strings (and anything else) a list; tables are
--- collated field by field (or position by position)
function M.collate(samples, key)
  local first = samples[1]
  if T.is_tensor(first) then
    for k = 2, #samples do
      local s = samples[k]
      if not T.is_tensor(s) or s:dim() ~= first:dim() or shape_str(s) ~= shape_str(first) then
        error(string.format("collate: %s sample %d is %s, sample 1 is %s (resize or crop to one size, or give a collate function)",
          key and ("field '" .. tostring(key) .. "' of") or "", k, T.is_tensor(s) and shape_str(s) or type(s), shape_str(first)), 0)
      end
    end
    return T.stack(samples, 1)
  elseif type(first) == "number" then
    local ints = true
    for _, v in ipairs(samples) do if math.type(v) ~= "integer" then ints = false end end
    return T.tensor(samples, { dtype = ints and "i64" or "f64" })
  elseif type(first) == "table" and getmetatable(first) == nil then
    local out = {}
    for k in pairs(first) do
      local col = {}
      for j, s in ipairs(samples) do col[j] = s[k] end
      out[k] = M.collate(col, k)
    end
    return out
  end
  local list = {}
  for j, s in ipairs(samples) do list[j] = s end
  return list
end

return M
