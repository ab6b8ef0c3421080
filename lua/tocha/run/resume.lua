-- tocha/run/resume.lua: what `--resume` continues, for tocha.run. Finds the run and its
-- checkpoint (the newest run of the experiment whose options match, or a run directory, a
-- checkpoint or a directory of checkpoints given by path), lists the options that change
-- training and differ from the checkpoint's, and trims the run's logs back to the
-- checkpoint's step, so that the continued run logs no step twice.
local T = require "tocha"
local json = require "tocha.json"
local ckpt = require "tocha.checkpoint"
local events = require "tocha.log.events"
local sys = T._sys

local R = {}

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- R.checkpoints(dir) -> where a run directory keeps its checkpoints
function R.checkpoints(dir) return dir .. "/checkpoints" end

-- the run directory a checkpoint root belongs to (<run>/checkpoints), or nil
local function run_of_root(root)
  local dir = root:match("^(.*)/checkpoints$")
  return dir and exists(dir .. "/meta.json") and dir or nil
end

--- R.locate(path) -> {checkpoint = dir, run = run directory or nil} for a path given to
--- --resume: a checkpoint, a run directory or a directory of checkpoints; nil, why otherwise
function R.locate(path)
  path = path:gsub("/+$", "")
  if exists(path .. "/meta.lua") then
    return { checkpoint = path, run = run_of_root(path:match("^(.*)/[^/]+$") or ".") }
  end
  if exists(path .. "/meta.json") then
    local c = ckpt.latest(R.checkpoints(path))
    if not c then return nil, "the run " .. path .. " has no checkpoint (in " .. R.checkpoints(path) .. ")" end
    return { checkpoint = c, run = path }
  end
  local c = sys.isdir(path) and ckpt.latest(path)
  if c then return { checkpoint = c, run = run_of_root(path) } end
  if not sys.isdir(path) and not exists(path) then return nil, path .. " does not exist" end
  return nil, path .. " is not a run directory, a checkpoint or a directory of checkpoints"
end

--- R.runs(dir) -> the run directories in dir (an experiment's runs), newest first, without
--- the failed ones
function R.runs(dir)
  local names = sys.listdir(dir) or {}
  local out = {}
  for _, n in ipairs(names) do
    local d = dir .. "/" .. n:gsub("/$", "")
    local meta = n:sub(-1) == "/" and exists(d .. "/meta.json") and json.read_file(d .. "/meta.json")
    if meta and meta.status ~= "failed" then
      out[#out + 1] = { dir = d, start = tostring(meta.start_time or ""), started = tonumber(meta.started) or 0 }
    end
  end
  table.sort(out, function(a, b)
    if a.start ~= b.start then return a.start > b.start end
    if a.started ~= b.started then return a.started > b.started end
    return a.dir > b.dir
  end)
  for i, r in ipairs(out) do out[i] = r.dir end
  return out
end

--- R.info(found) fills found.step and found.config (the checkpoint's options, or for an older
--- checkpoint its run's config.json) and returns it
function R.info(found)
  local i = ckpt.info(found.checkpoint)
  found.step, found.time, found.config = i.step, i.time, i.config
  if not found.config and found.run then found.config = json.read_file(found.run .. "/config.json") end
  return found
end

local function get(config, path)
  local t = config
  for _, p in ipairs(path) do
    if type(t) ~= "table" then return nil end
    t = t[p]
  end
  return t
end

local same = require("tocha.run.options").same -- values, lists compared element by element

--- R.differences(opts, config, saved, show) -> {{name, now, was}, ...}: the options that change
--- training whose value in config is not the one in saved (an option saved before it existed
--- counts as its default)
function R.differences(opts, config, saved, show)
  local out = {}
  if not saved then return out end
  for _, o in ipairs(opts) do
    if o.training and not o.control then
      local now, was = get(config, o.path), get(saved, o.path)
      if was == nil then was = o.default end
      if not same(now, was) then out[#out + 1] = { o.name, show(now), show(was) } end
    end
  end
  return out
end

--- R.describe(diffs) -> one line per difference: "--lr 0.003 (the checkpoint: 0.0015)"
function R.describe(diffs)
  local lines = {}
  for i, d in ipairs(diffs) do lines[i] = string.format("  --%s %s (the checkpoint: %s)", d[1], d[2], d[3]) end
  return table.concat(lines, "\n")
end

---------------------------------------------------------------------------------------------
-- the logs of a continued run, back to the checkpoint's step
---------------------------------------------------------------------------------------------
local function rewrite(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

-- what a log may keep: logged at step or before, and (when the checkpoint says when it was
-- written) not after the checkpoint: final metrics logged at its step after it go too
local function kept(step, time, s, t) return s <= step and not (time and t and t > time) end

-- metrics.jsonl without the rows after the checkpoint (nor a line a killed process left half
-- written)
local function trim_metrics(path, step, time)
  local f = io.open(path, "rb")
  if not f then return end
  local keep, changed = {}, false
  for line in f:lines() do
    local ok, row = pcall(json.decode, line)
    if ok and type(row) == "table" and (math.type(row.step) ~= "integer" or kept(step, time, row.step, row.time)) then
      keep[#keep + 1] = line
    else changed = true end
  end
  f:close()
  if changed then rewrite(path, #keep > 0 and table.concat(keep, "\n") .. "\n" or "") end
end

-- an event file cut before its first summary after the checkpoint (records are appended in order)
local function trim_events(path, step, time)
  local recs = T._log.read_records(path)
  if not recs then return end
  local offset = 0
  for _, rec in ipairs(recs) do
    local ok, e = pcall(events.decode_event, rec)
    if ok and e.summary and not kept(step, time, e.step, e.wall_time) then
      local f = assert(io.open(path, "rb"))
      local head = f:read(offset)
      f:close()
      rewrite(path, head or "")
      return
    end
    offset = offset + 12 + #rec + 4 -- length (8), its checksum (4), the record, its checksum (4)
  end
end

--- R.trim(dir, step, time): the run's metrics.jsonl and event files keep what was logged up to
--- step and, when time (the checkpoint's wall clock) is given, before time
function R.trim(dir, step, time)
  trim_metrics(dir .. "/metrics.jsonl", step, time)
  for _, path in ipairs(events.files(dir) or {}) do trim_events(path, step, time) end
end

return R
