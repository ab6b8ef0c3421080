-- tocha.log.events: reads TensorBoard event files without TensorBoard. The C side checks the
-- TFRecord framing and both CRCs; the Event protos are decoded here from a schema of just the
-- fields tocha and PyTorch write. Used by the tests, `tocha plot` and log.read_events.
local T = require "tocha"
local C = T._log

local events = {}

---------------------------------------------------------------------------------------------
-- protobuf wire format
---------------------------------------------------------------------------------------------
local function bad(msg) error("events: " .. msg, 0) end

local function varint(s, i)
  local v, shift = 0, 0
  while true do
    local b = s:byte(i)
    if not b then bad("truncated varint") end
    v = v | ((b & 0x7f) << shift)
    i = i + 1
    if b < 0x80 then return v, i end
    shift = shift + 7
    if shift > 63 then bad("varint longer than 10 bytes") end
  end
end

-- schemas: field number -> {name, kind, repeated}; kind is a scalar type name or a schema
local S = {}
S.PluginData = { [1] = { "plugin_name", "string" }, [2] = { "content", "bytes" } }
S.Metadata = { [1] = { "plugin_data", S.PluginData }, [2] = { "display_name", "string" },
  [4] = { "data_class", "int" } }
S.Image = { [1] = { "height", "int" }, [2] = { "width", "int" }, [3] = { "colorspace", "int" },
  [4] = { "encoded_image_string", "bytes" } }
S.Histogram = { [1] = { "min", "double" }, [2] = { "max", "double" }, [3] = { "num", "double" },
  [4] = { "sum", "double" }, [5] = { "sum_squares", "double" }, [6] = { "bucket_limit", "double", true },
  [7] = { "bucket", "double", true } }
S.Dim = { [1] = { "size", "int" }, [2] = { "name", "string" } }
S.Shape = { [2] = { "dim", S.Dim, true } }
S.Tensor = { [1] = { "dtype", "int" }, [2] = { "tensor_shape", S.Shape }, [4] = { "tensor_content", "bytes" },
  [5] = { "float_val", "float", true }, [6] = { "double_val", "double", true }, [7] = { "int_val", "int", true },
  [8] = { "string_val", "bytes", true }, [10] = { "int64_val", "int", true } }
S.Value = { [1] = { "tag", "string" }, [2] = { "simple_value", "float" }, [4] = { "image", S.Image },
  [5] = { "histo", S.Histogram }, [7] = { "node_name", "string" }, [8] = { "tensor", S.Tensor },
  [9] = { "metadata", S.Metadata } }
S.Summary = { [1] = { "value", S.Value, true } }
S.Event = { [1] = { "wall_time", "double" }, [2] = { "step", "int" }, [3] = { "file_version", "string" },
  [5] = { "summary", S.Summary } }
-- the HParams plugin's content (tensorboard/plugins/hparams/{api,plugin_data}.proto)
S.PValue = { [1] = { "null_value", "int" }, [2] = { "number_value", "double" }, [3] = { "string_value", "string" },
  [4] = { "bool_value", "bool" } }
S.MapEntry = { [1] = { "key", "string" }, [2] = { "value", S.PValue } }
S.HParamInfo = { [1] = { "name", "string" }, [4] = { "type", "int" } }
S.MetricName = { [1] = { "group", "string" }, [2] = { "tag", "string" } }
S.MetricInfo = { [1] = { "name", S.MetricName } }
S.Experiment = { [4] = { "hparam_infos", S.HParamInfo, true }, [5] = { "metric_infos", S.MetricInfo, true } }
S.SessionStart = { [1] = { "hparams", S.MapEntry, true }, [5] = { "start_time_secs", "double" } }
S.SessionEnd = { [1] = { "status", "int" }, [2] = { "end_time_secs", "double" } }
S.HParamsData = { [1] = { "version", "int" }, [2] = { "experiment", S.Experiment },
  [3] = { "session_start_info", S.SessionStart }, [4] = { "session_end_info", S.SessionEnd } }
events.schemas = S

local FIXED = { double = { "<d", 8, 1 }, float = { "<f", 4, 5 } }

-- decodes message bytes s by schema; unknown fields are skipped
local function decode(s, schema)
  local msg, i, n = {}, 1, #s
  while i <= n do
    local key
    key, i = varint(s, i)
    local field, wire = key >> 3, key & 7
    local spec = schema[field]
    local kind = spec and spec[2]
    local fixed = FIXED[kind]
    local v
    if wire == 0 then
      v, i = varint(s, i)
      if kind == "bool" then v = v ~= 0 end
    elseif wire == 1 or wire == 5 then
      local size = wire == 1 and 8 or 4
      if i + size - 1 > n then bad("truncated fixed-size field") end
      v = string.unpack(wire == 1 and "<d" or "<f", s, i)
      i = i + size
    elseif wire == 2 then
      local len
      len, i = varint(s, i)
      if len < 0 or i + len - 1 > n then bad("field " .. field .. " runs past the end of its message") end
      v = s:sub(i, i + len - 1)
      i = i + len
      if spec and fixed and spec[3] then -- packed repeated doubles or floats
        local list = msg[spec[1]] or {}
        for j = 1, #v, fixed[2] do list[#list + 1] = string.unpack(fixed[1], v, j) end
        msg[spec[1]] = list
        spec = nil
      elseif spec and type(kind) == "table" then
        v = decode(v, kind)
      end
    else
      bad("unsupported wire type " .. wire)
    end
    if spec then
      if spec[3] then
        local list = msg[spec[1]] or {}
        list[#list + 1] = v
        msg[spec[1]] = list
      else
        msg[spec[1]] = v
      end
    end
  end
  return msg
end
events.decode = decode

--- events.decode_event(record bytes) -> {wall_time, step, file_version | summary = {value = {...}}}
function events.decode_event(rec)
  local e = decode(rec, S.Event)
  e.step = e.step or 0
  return e
end

---------------------------------------------------------------------------------------------
-- files
---------------------------------------------------------------------------------------------
--- events.read_file(path) -> list of events, and true when the file ends inside a record
--- (it is being written); nil, message when it cannot be read or a checksum is wrong
function events.read_file(path)
  local recs, status = C.read_records(path)
  if not recs then return nil, status end
  local out = {}
  for i, r in ipairs(recs) do
    local ok, e = pcall(events.decode_event, r)
    if not ok then return nil, string.format("%s: record %d: %s", path, i, e) end
    out[i] = e
  end
  return out, status == "truncated"
end

--- events.files(dir) -> the event files directly in dir, oldest first (their names start with
--- the creation time); dir may also be one event file. nil, message when dir cannot be listed.
function events.files(dir)
  if dir:find("tfevents", 1, true) and not T._sys.isdir(dir) then return { dir } end
  local names, err = T._sys.listdir(dir)
  if not names then return nil, err end
  local files = {}
  for _, name in ipairs(names) do
    if name:find("tfevents", 1, true) then files[#files + 1] = dir .. "/" .. name end
  end
  table.sort(files)
  return files
end

local function plugin_of(v) return v.metadata and v.metadata.plugin_data and v.metadata.plugin_data.plugin_name end

--- events.load(dir) -> what the event files in dir hold, by kind and tag:
---   scalars[tag] = {{step, value, wall_time}, ...}
---   images[tag] = {{step, width, height, colorspace, png}, ...}
---   histograms[tag] = {{step, min, max, num, sum, sum_squares, limits, counts}, ...}
---   texts[tag] = {{step, text}, ...}
---   hparams = {values = {name = v}, types = {name = 1 string | 2 bool | 3 number},
---              metrics = {tags}, status, start_time, end_time} (nil when none was written)
--- plus files and truncated (how many files end inside a record). Raises on a corrupt file
--- or a directory that cannot be listed.
function events.load(dir)
  local files, err = events.files(dir)
  if not files then error("events.load: " .. err, 2) end
  local r = { scalars = {}, images = {}, histograms = {}, texts = {}, files = files, truncated = 0 }
  local seq = 0
  local function add(kind, tag, item)
    seq = seq + 1
    item.seq = seq -- keeps the file order among equal steps when sorting
    local list = r[kind][tag] or {}
    list[#list + 1] = item
    r[kind][tag] = list
  end
  for _, path in ipairs(r.files) do
    local evs, truncated = events.read_file(path)
    if not evs then error(truncated, 2) end
    if truncated then r.truncated = r.truncated + 1 end
    for _, e in ipairs(evs) do
      for _, v in ipairs(e.summary and e.summary.value or {}) do
        local plugin = plugin_of(v)
        if v.simple_value then
          add("scalars", v.tag, { step = e.step, value = v.simple_value, wall_time = e.wall_time })
        elseif v.image then
          local im = v.image
          add("images", v.tag, { step = e.step, width = im.width, height = im.height, colorspace = im.colorspace,
            png = im.encoded_image_string })
        elseif v.histo then
          local h = v.histo
          add("histograms", v.tag, { step = e.step, min = h.min or 0, max = h.max or 0, num = h.num or 0,
            sum = h.sum or 0, sum_squares = h.sum_squares or 0, limits = h.bucket_limit or {}, counts = h.bucket or {} })
        elseif plugin == "text" and v.tensor then
          add("texts", v.tag, { step = e.step, text = (v.tensor.string_val or {})[1] or "" })
        elseif plugin == "scalars" and v.tensor then -- new-style scalars (tf.summary v2)
          local t = v.tensor
          local value = (t.float_val or t.double_val or {})[1]
          if not value and t.tensor_content then
            value = string.unpack(#t.tensor_content == 8 and "<d" or "<f", t.tensor_content)
          end
          add("scalars", v.tag, { step = e.step, value = value, wall_time = e.wall_time })
        elseif plugin == "hparams" then
          local d = decode(v.metadata.plugin_data.content or "", S.HParamsData)
          local hp = r.hparams or { values = {}, types = {}, metrics = {} }
          r.hparams = hp
          if d.experiment then
            for _, info in ipairs(d.experiment.hparam_infos or {}) do hp.types[info.name] = info.type end
            for _, m in ipairs(d.experiment.metric_infos or {}) do hp.metrics[#hp.metrics + 1] = m.name.tag end
          elseif d.session_start_info then
            for _, entry in ipairs(d.session_start_info.hparams or {}) do
              local pv = entry.value or {}
              local val = pv.number_value
              if val == nil then val = pv.string_value end
              if val == nil then val = pv.bool_value end
              hp.values[entry.key] = val
            end
            hp.start_time = d.session_start_info.start_time_secs
          elseif d.session_end_info then
            hp.status = d.session_end_info.status or 0
            hp.end_time = d.session_end_info.end_time_secs
          end
        end
      end
    end
  end
  for kind in pairs({ scalars = 1, images = 1, histograms = 1, texts = 1 }) do
    for _, list in pairs(r[kind]) do table.sort(list, function(a, b) return a.step < b.step or (a.step == b.step and a.seq < b.seq) end) end
  end
  return r
end

return events
