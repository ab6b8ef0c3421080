-- tocha.data.loader: DataLoader. The order of epoch e is a Philox shuffle of (seed, e); a
-- sample's random augmentation is keyed by (seed, e, its index), so a run is reproducible
-- whatever the worker count, and resumable from (epoch, index). Samples of folder and shard
-- datasets are read, decoded and transformed on C worker threads a few batches ahead;
-- samples of Lua datasets are made on the calling thread.
local T = require "tocha"
local D = require "tocha.data.dataset"
local C = T._image

local M = {}
local Loader = {}
Loader.__index = Loader
M.Loader = Loader

local LUA = "<made in Lua>" -- marks a sample the loader makes in Lua rather than on a worker
local AUG_KEY = 0x5DEECE66D   -- augmentation draws use seed ~ AUG_KEY, apart from shuffling's

local function check(cond, msg) if not cond then error("DataLoader: " .. msg, 3) end end

--- data.DataLoader(ds, {batch_size = 1, shuffle = false, seed, drop_last = false, collate,
--- workers = 0, on_error = "raise" | "skip", prefetch = 2, pin_memory = false}). seed defaults
--- to a draw from the global generator (so T.manual_seed fixes it). pin_memory: the batch's CPU
--- tensors come in page-locked memory, so batch.x:to("cuda") returns without waiting for the
--- GPU (ignored when CUDA is not available). Iterate with `for batch in loader:iter()` or
--- `for batch in loader()`: one epoch per loop.
function M.DataLoader(ds, opts)
  opts = opts or {}
  local bs, workers = opts.batch_size or 1, opts.workers or 0
  check(math.type(bs) == "integer" and bs >= 1, "batch_size must be a positive integer")
  check(math.type(workers) == "integer" and workers >= 0, "workers must be a non-negative integer")
  local on_error = opts.on_error or "raise"
  check(on_error == "raise" or on_error == "skip", "on_error must be \"raise\" or \"skip\"")
  check(opts.collate == nil or type(opts.collate) == "function", "collate must be a function")
  local prefetch = opts.prefetch or 2
  check(math.type(prefetch) == "integer" and prefetch >= 1, "prefetch must be a positive integer")
  check(opts.pin_memory == nil or type(opts.pin_memory) == "boolean", "pin_memory must be a boolean")
  local seed = opts.seed or T.randint(0, 2147483647, { 1 }):item()
  check(math.type(seed) == "integer", "seed must be an integer")
  local self = setmetatable({
    ds = ds, n = D.len(ds), batch_size = bs, shuffle = opts.shuffle and true or false, seed = seed,
    drop_last = opts.drop_last and true or false, collate = opts.collate, workers = workers,
    on_error = on_error, depth = workers > 0 and math.max(2, prefetch * workers) or 1,
    epoch = 1, pos = 0, skipped = 0, queue = {}, orders = {},
    pin = opts.pin_memory == true and T.cuda.is_available(),
  }, Loader)
  self.native = type(ds) == "table" and type(ds._locate) == "function"
  return self
end

--- #loader: batches per epoch
function Loader:__len()
  local n, bs = self.n, self.batch_size
  return self.drop_last and n // bs or (n + bs - 1) // bs
end

-- samples served in an epoch
function Loader:_end()
  return self.drop_last and (self.n // self.batch_size) * self.batch_size or self.n
end

function Loader:_order(e)
  local o = self.orders[e]
  if o then return o end
  if self.shuffle then o = C.permutation(self.n, self.seed, e)
  else
    o = self.orders.identity
    if not o then o = {}; for i = 1, self.n do o[i] = i end; self.orders.identity = o end
  end
  self.orders[e - 2] = nil -- keep the epochs in use (the current and the next being prefetched)
  self.orders[e] = o
  return o
end

--- loader:state() -> {epoch, index, seed, skipped}: index samples of the epoch are done
function Loader:state()
  return { epoch = self.epoch, index = self.pos, seed = self.seed, skipped = self.skipped }
end

--- loader:load_state(s): the next batch is the one after those s counted
function Loader:load_state(s)
  if type(s) ~= "table" or math.type(s.epoch) ~= "integer" or math.type(s.index) ~= "integer" then
    error("DataLoader:load_state: expected {epoch = integer, index = integer}", 2)
  end
  if s.seed ~= nil and s.seed ~= self.seed then self.seed = s.seed; self.orders = {} end
  self.epoch, self.pos, self.skipped = s.epoch, s.index, s.skipped or self.skipped
  self:_reset()
end

--- loader:set_epoch(e): start epoch e from its beginning
function Loader:set_epoch(e)
  self.epoch, self.pos = e, 0
  self:_reset()
end

--- loader:close(): stops the workers (also done when the loader is collected)
function Loader:close()
  if self.cl then C.loader_close(self.cl); self.cl = nil end
  self.queue = {}
end
Loader.__close = Loader.close
Loader.__gc = Loader.close

---------------------------------------------------------------------------------------------
-- batches from C-backed datasets, through the worker pool
---------------------------------------------------------------------------------------------
function Loader:_reset()
  if self.cl then
    while C.loader_pending(self.cl) > 0 do C.loader_take(self.cl) end -- discard
  end
  self.queue = {}
  self.sub_epoch, self.sub_pos = self.epoch, self.pos
end

-- queues the batch at the submission cursor and moves it on (into the next epoch at the end)
function Loader:_submit()
  local e, p = self.sub_epoch, self.sub_pos
  local stop = self:_end()
  if p >= stop then e, p = e + 1, 0 end
  if stop == 0 then return false end
  local order, ds = self:_order(e), self.ds
  local last = math.min(p + self.batch_size, stop)
  local idx, loc, samples = {}, {}, {}
  local direct = self.collate == nil
  local key = self.seed ~ AUG_KEY
  for k = p + 1, last do
    local i = order[k]
    local m = #idx + 1
    idx[m] = i
    local base, j, chain = ds:_locate(i)
    if base then
      loc[m] = { base, j, chain }
      samples[m] = base:_c_sample(j, key, (e << 36) | (i << 4))
      if #chain > 0 then direct = false end
    else
      loc[m] = false
      samples[m] = { err = LUA }
      direct = false
    end
  end
  local stacked = C.loader_submit(self.cl, samples, direct)
  self.queue[#self.queue + 1] = { epoch = e, start = p, stop = last, idx = idx, loc = loc, stacked = stacked }
  self.sub_epoch, self.sub_pos = e, last
  return true
end

function Loader:_fill()
  while #self.queue < self.depth and self:_submit() do end
end

-- a bad sample: raise, or count it
function Loader:_bad(msg)
  if self.on_error == "raise" then error(msg, 0) end
  self.skipped = self.skipped + 1
end

function Loader:_lua_sample(i)
  if self.on_error == "raise" then return D.get(self.ds, i) end
  local ok, s = pcall(D.get, self.ds, i)
  if ok then return s end
  self:_bad(tostring(s))
  return nil
end

-- the next batch (nil when every sample of it was skipped) and where it ends
function Loader:_native_batch()
  if not self.cl then self.cl = C.loader_new(self.workers, self.depth); self:_reset() end
  local head = self.queue[1]
  if not head or head.epoch ~= self.epoch or head.start ~= self.pos then self:_reset() end
  self:_fill()
  local b = table.remove(self.queue, 1)
  local out, errs = C.loader_take(self.cl)
  self:_fill() -- the workers go on while the caller uses this batch
  if b.stacked then
    local texts, files, has_text = {}, {}, false
    for k in ipairs(b.idx) do
      if errs[k] then self:_bad(errs[k])
      else
        local base, j = b.loc[k][1], b.loc[k][2]
        texts[#files + 1] = base:_text(j)
        files[#files + 1] = base.names[j]
        has_text = has_text or base.has_text
      end
    end
    if #files == 0 then return nil, b.stop end
    return { image = out, text = has_text and texts or nil, file = files }, b.stop
  end
  local samples = {}
  for k, i in ipairs(b.idx) do
    local s
    if errs[k] == LUA then s = self:_lua_sample(i)
    elseif errs[k] then self:_bad(errs[k])
    else
      local base, j, chain = b.loc[k][1], b.loc[k][2], b.loc[k][3]
      s = base:_build(j, out[k])
      for _, fn in ipairs(chain) do s = fn(s) end
    end
    samples[#samples + 1] = s
  end
  if #samples == 0 then return nil, b.stop end
  return (self.collate or D.collate)(samples), b.stop
end

---------------------------------------------------------------------------------------------
-- batches from Lua datasets
---------------------------------------------------------------------------------------------
function Loader:_lua_batch()
  local order = self:_order(self.epoch)
  local last = math.min(self.pos + self.batch_size, self:_end())
  local samples = {}
  for k = self.pos + 1, last do samples[#samples + 1] = self:_lua_sample(order[k]) end
  if #samples == 0 then return nil, last end
  return (self.collate or D.collate)(samples), last
end

---------------------------------------------------------------------------------------------
-- iteration
---------------------------------------------------------------------------------------------
-- the batch with its CPU tensors replaced by pinned copies, tables walked in place
local function pin(b)
  if T.is_tensor(b) then return b.device == "cpu" and b:pin_memory() or b end
  if type(b) == "table" then
    for k, v in pairs(b) do b[k] = pin(v) end
  end
  return b
end

--- loader:iter(): an iterator over the rest of the current epoch; when it ends the loader
--- moves to the next epoch. Leaving a loop early keeps the position: the next iter() goes on
--- from there (loader:set_epoch(e) starts over).
function Loader:iter()
  if self.pos >= self:_end() then self.epoch, self.pos = self.epoch + 1, 0 end
  local e = self.epoch
  return function()
    while true do
      if self.epoch ~= e then return nil end
      if self.pos >= self:_end() then
        self.epoch, self.pos = e + 1, 0
        return nil
      end
      local batch, stop
      if self.native then batch, stop = self:_native_batch() else batch, stop = self:_lua_batch() end
      self.pos = stop
      if batch ~= nil then return self.pin and pin(batch) or batch end
    end
  end
end
Loader.__call = Loader.iter

return M
