-- tocha.log: what a training script writes about itself. log.tensorboard(dir) is a writer with
-- PyTorch's SummaryWriter names whose event files the C core encodes and flushes on a timer;
-- it also keeps metrics.jsonl (one JSON object per logged step), which log.read loads back.
-- log.progress draws the console progress line; log.every, log.every_seconds and log.at are
-- the cadence predicates a loop asks "is it time?" with.
local T = require "tocha"
local json = require "tocha.json"
local C = T._log
local sys = T._sys

local log = {}

local INF = math.huge

local function is_finite(v) return v == v and v ~= INF and v ~= -INF end

---------------------------------------------------------------------------------------------
-- arguments
---------------------------------------------------------------------------------------------
local valid_tags, nvalid = {}, 0

-- a tag TensorBoard shows as a path: a non-empty UTF-8 string without control characters,
-- '/' separating non-empty parts. Checked once per distinct tag.
local function check_tag(tag, method, level)
  if valid_tags[tag] then return end
  if type(tag) ~= "string" then
    error(string.format("%s: the tag must be a string (got %s)", method, type(tag)), level + 1)
  end
  local why
  if tag == "" then why = "it is empty"
  elseif #tag > 1024 then why = "it is longer than 1024 bytes"
  elseif not utf8.len(tag) then why = "it is not valid UTF-8"
  elseif tag:find("%c") then why = "it contains a control character"
  elseif tag:sub(1, 1) == "/" or tag:sub(-1) == "/" or tag:find("//", 1, true) then
    why = "it has an empty part ('/' at an end, or '//')"
  end
  if why then error(string.format("%s: invalid tag %q: %s", method, tag, why), level + 1) end
  if nvalid > 10000 then valid_tags, nvalid = {}, 0 end
  valid_tags[tag], nvalid = true, nvalid + 1
end

local function check_step(step, method, level)
  if step == nil then return 0 end
  local s = math.tointeger(step)
  if not s or s < 0 then
    error(string.format("%s: step must be a non-negative integer (got %s)", method, tostring(step)), level + 1)
  end
  return s
end

local function scalar_value(v, method, level)
  if type(v) == "number" then return v end
  if T.is_tensor(v) then
    if v:numel() ~= 1 then
      error(string.format("%s: expected a number or a one-element tensor (got a tensor of %d elements)", method,
        v:numel()), level + 1)
    end
    return v:item()
  end
  error(string.format("%s: expected a number or a one-element tensor (got %s)", method, type(v)), level + 1)
end

-- C messages start with "log: "; at the call they start with the method instead
local function raise(method, msg, level) error(method .. ": " .. msg:gsub("^log: ", ""), level + 1) end

---------------------------------------------------------------------------------------------
-- the TensorBoard writer
---------------------------------------------------------------------------------------------
local Writer = {}
Writer.__index = Writer

-- metrics.jsonl has no NaN or infinity: they are written as these strings and read back
local NONFINITE_OUT = { [INF] = "Infinity", [-INF] = "-Infinity" }
local NONFINITE_IN = { NaN = 0 / 0, Infinity = INF, ["-Infinity"] = -INF }

--- log.tensorboard(dir, {flush_secs = 10, metrics = true, filename_suffix = ""}) -> writer.
--- Makes dir (and its parents); raises when it cannot be made or written. metrics = false
--- skips metrics.jsonl.
function log.tensorboard(dir, opts)
  if type(dir) ~= "string" or dir == "" then error("log.tensorboard: dir must be a non-empty string", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("log.tensorboard: options must be a table", 2) end
  opts = opts or {}
  local secs = opts.flush_secs or 10
  if type(secs) ~= "number" or secs < 0 then error("log.tensorboard: flush_secs must be a number >= 0", 2) end
  local f, err = C.tb_open(dir, opts.filename_suffix or "", secs)
  if not f then raise("log.tensorboard", err, 2) end
  local m, metrics_path
  if opts.metrics ~= false then
    metrics_path = dir .. "/metrics.jsonl"
    local err2
    m, err2 = C.logfile_open(metrics_path, secs)
    if not m then
      f:close()
      raise("log.tensorboard", err2, 2)
    end
  end
  -- made after its files, so at exit its finalizer (writing the last row) runs before theirs
  local w = setmetatable({ dir = dir, path = f:path(), metrics_path = metrics_path, flush_secs = secs,
    nonfinite = 0, nonfinite_tags = {}, last_step = 0, _f = f, _m = m }, Writer)
  return w
end

function Writer:_file(method, level)
  local f = self._f
  if not f then error(method .. ": the writer is closed", level + 1) end
  return f
end

-- the metrics row of the step being logged goes out when the next step starts (or at flush)
function Writer:_end_row(level)
  local row = self._row
  self._row = nil
  if not row or not self._m then return end
  for k, v in pairs(row) do
    if v ~= v then row[k] = "NaN" elseif NONFINITE_OUT[v] then row[k] = NONFINITE_OUT[v] end
  end
  local ok, err = self._m:write(json.encode(row) .. "\n")
  if not ok then raise("metrics.jsonl", err, level + 1) end
end

function Writer:_metric(tag, value, step, level)
  if not self._m then return end
  local row = self._row
  if not row or row.step ~= step then
    if row then self:_end_row(level + 1) end
    row = { step = step, time = sys.now() }
    self._row = row
  end
  row[tag] = value
end

function Writer:_seen(step)
  if step > self.last_step then self.last_step = step end
end

--- w:add_scalar(tag, value, step, wall_time): value a number or a one-element tensor. A NaN or
--- infinite value is written as it is and counted in w.nonfinite and w.nonfinite_tags[tag].
function Writer:add_scalar(tag, value, step, wall_time)
  local f = self:_file("add_scalar", 2)
  check_tag(tag, "add_scalar", 2)
  if tag == "step" or tag == "time" then
    error(string.format("add_scalar: tag %q is reserved (it names a column of metrics.jsonl)", tag), 2)
  end
  value = scalar_value(value, "add_scalar", 2)
  step = check_step(step, "add_scalar", 2)
  if not is_finite(value) then
    self.nonfinite = self.nonfinite + 1
    self.nonfinite_tags[tag] = (self.nonfinite_tags[tag] or 0) + 1
  end
  local ok, err = f:scalar(tag, value, step, wall_time)
  if not ok then raise("add_scalar", err, 2) end
  self:_seen(step)
  self:_metric(tag, value, step, 2)
end

--- w:log({tag = value, ...}, step): add_scalar for each entry, in tag order
function Writer:log(values, step)
  if type(values) ~= "table" then error("log: expected a table of tag = value", 2) end
  local tags = {}
  for k in pairs(values) do tags[#tags + 1] = k end
  table.sort(tags, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(tags) do self:add_scalar(k, values[k], step) end
end

-- an image ready for the C writer: u8 [H, W, C] on the CPU
local function hwc_u8(img, opts, method, level)
  if not T.is_tensor(img) then error(method .. ": expected a tensor image", level + 1) end
  img = img:detach()
  if img.device ~= "cpu" then img = img:to("cpu") end
  local u8 = img.dtype == "u8"
  local float = img.dtype == "f32" or img.dtype == "f64" or img.dtype == "f16" or img.dtype == "bf16"
  if not u8 and not float then
    error(string.format("%s: cannot show a %s tensor (float [C, H, W] in [0, 1] or u8 [H, W, C])", method,
      img.dtype), level + 1)
  end
  local fmt = opts.dataformats or (img:dim() == 2 and "HW" or u8 and "HWC" or "CHW")
  if fmt ~= "CHW" and fmt ~= "HWC" and fmt ~= "HW" then
    error(method .. ": dataformats must be \"CHW\", \"HWC\" or \"HW\" (got " .. tostring(fmt) .. ")", level + 1)
  end
  if img:dim() ~= #fmt then
    local shape = table.concat(img.shape, " x ")
    error(string.format("%s: a %s image must have %d dims, got [%s]", method, fmt, #fmt, shape), level + 1)
  end
  if fmt == "HW" then img, fmt = img:unsqueeze(u8 and 3 or 1), u8 and "HWC" or "CHW" end
  if u8 then return fmt == "CHW" and img:permute(2, 3, 1) or img end
  if fmt == "HWC" then img = img:permute(3, 1, 2) end
  local range = opts.range or { 0, 1 }
  return T._image.to_u8(img, range[1], range[2])
end

--- w:add_image(tag, img, step, {dataformats, range = {0, 1}}): img float [C, H, W] with values
--- in range (clamped), or u8 [H, W, C]; "HWC", "CHW" or "HW" in dataformats say otherwise.
--- C is 1 (gray), 3 (RGB) or 4 (RGBA). Written as PNG.
function Writer:add_image(tag, img, step, opts, wall_time)
  local f = self:_file("add_image", 2)
  check_tag(tag, "add_image", 2)
  step = check_step(step, "add_image", 2)
  local ok, err = f:image(tag, hwc_u8(img, opts or {}, "add_image", 2), step, wall_time)
  if not ok then raise("add_image", err, 2) end
  self:_seen(step)
end

--- w:add_images(tag, batch, step, {nrow = 8, padding = 2, range}): a batch float [N, C, H, W]
--- (or u8 [N, H, W, C], or a list of images) as one grid image
function Writer:add_images(tag, batch, step, opts)
  opts = opts or {}
  local grid = require("tocha.image").grid(batch, opts.nrow or 8, { padding = opts.padding or 2 })
  self:add_image(tag, grid, step, { range = opts.range })
end

--- w:add_histogram(tag, values, step, {bins = 64}): values a tensor (any dtype) or a list of
--- numbers. NaN and infinite values are left out of the buckets and counted in
--- w.nonfinite_tags[tag].
function Writer:add_histogram(tag, values, step, opts, wall_time)
  local f = self:_file("add_histogram", 2)
  check_tag(tag, "add_histogram", 2)
  step = check_step(step, "add_histogram", 2)
  if type(values) == "table" and not T.is_tensor(values) then values = T.tensor(values, { dtype = "f64" }) end
  if not T.is_tensor(values) then error("add_histogram: expected a tensor or a list of numbers", 2) end
  local bins = opts and opts.bins or 64
  if math.type(bins) ~= "integer" or bins < 1 then error("add_histogram: bins must be a positive integer", 2) end
  local bad, err = f:histogram(tag, values, bins, step, wall_time)
  if not bad then raise("add_histogram", err, 2) end
  if bad > 0 then self.nonfinite_tags[tag] = (self.nonfinite_tags[tag] or 0) + bad end
  self:_seen(step)
end

--- w:add_text(tag, text, step): text is shown as markdown
function Writer:add_text(tag, text, step, wall_time)
  local f = self:_file("add_text", 2)
  check_tag(tag, "add_text", 2)
  step = check_step(step, "add_text", 2)
  if type(text) ~= "string" and type(text) ~= "number" then
    error("add_text: text must be a string (got " .. type(text) .. ")", 2)
  end
  local ok, err = f:text(tag, tostring(text), step, wall_time)
  if not ok then raise("add_text", err, 2) end
  self:_seen(step)
end

-- nested config tables become dotted names; lists become "a,b,c"
local function flatten(t, prefix, out)
  for k, v in pairs(t) do
    local name = prefix .. tostring(k)
    if type(v) == "table" then
      if #v > 0 or next(v) == nil then
        local parts = {}
        for i, x in ipairs(v) do parts[i] = tostring(x) end
        out[#out + 1] = { name, table.concat(parts, ",") }
      else flatten(v, name .. ".", out) end
    elseif type(v) == "number" or type(v) == "string" or type(v) == "boolean" then
      out[#out + 1] = { name, v }
    else
      error(string.format("add_hparams: hyperparameter '%s' is a %s (numbers, strings, booleans, lists, tables)",
        name, type(v)), 4)
    end
  end
  return out
end
log.flatten = function(t) return flatten(t, "", {}) end

--- w:add_hparams(hparams, metrics, {step}): hparams a (nested) table of numbers, strings and
--- booleans; metrics tag = value, written as scalars at `step` (default: the last step logged).
--- TensorBoard's HParams tab then lists this run with its values and metrics, so the runs of
--- a sweep sort and filter as one table.
function Writer:add_hparams(hparams, metrics, opts)
  local f = self:_file("add_hparams", 2)
  if type(hparams) ~= "table" then error("add_hparams: hparams must be a table", 2) end
  metrics = metrics or {}
  if type(metrics) ~= "table" then error("add_hparams: metrics must be a table of tag = number", 2) end
  local list = flatten(hparams, "", {})
  table.sort(list, function(a, b) return a[1] < b[1] end)
  local tags = {}
  for tag, v in pairs(metrics) do
    check_tag(tag, "add_hparams", 2)
    scalar_value(v, "add_hparams", 2)
    tags[#tags + 1] = tag
  end
  table.sort(tags)
  local step = check_step(opts and opts.step or self.last_step, "add_hparams", 2)
  local ok, err = f:hparams(list, tags)
  if not ok then raise("add_hparams", err, 2) end
  for _, tag in ipairs(tags) do self:add_scalar(tag, metrics[tag], step) end
end

--- w:flush(): everything logged so far reaches the files now
function Writer:flush()
  local f = self:_file("flush", 2)
  self:_end_row(2)
  local ok, err = f:flush()
  if not ok then raise("flush", err, 2) end
  if self._m then
    ok, err = self._m:flush()
    if not ok then raise("flush", err, 2) end
  end
end

--- w:close(): flushes and closes; raises if the last flush failed. Closing twice is allowed.
function Writer:close()
  if not self._f then return end
  local ok_row, row_err = pcall(self._end_row, self, 1)
  local f, m = self._f, self._m
  self._f, self._m = nil, nil
  local ok, err = f:close()
  if m then
    local ok2, err2 = m:close()
    if ok then ok, err = ok2, err2 end
  end
  if not ok then raise("close", err, 2) end
  if not ok_row then error(row_err, 2) end
end

Writer.__close = function(w) w:close() end
Writer.__gc = function(w) -- the last row, when the script ends without closing
  if w._f then pcall(w._end_row, w, 1) end
end

---------------------------------------------------------------------------------------------
-- reading metrics back
---------------------------------------------------------------------------------------------
--- log.read(run_dir or path to a .jsonl) -> list of rows {step =, time =, tag = value, ...},
--- or nil, message. A last line cut short (a killed run) is left out.
function log.read(path)
  if type(path) ~= "string" then error("log.read: expected a run directory or a .jsonl path", 2) end
  local file = path:match("%.jsonl$") and path or path .. "/metrics.jsonl"
  local f, err = io.open(file, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local rows, lineno = {}, 0
  for line, nl in text:gmatch("([^\n]*)(\n?)") do
    lineno = lineno + 1
    if nl == "" then break end -- the unterminated tail of a run killed mid-write
    if line ~= "" then
      local ok, row = pcall(json.decode, line)
      if not ok then return nil, string.format("%s:%d: %s", file, lineno, row) end
      for k, v in pairs(row) do
        if NONFINITE_IN[v] then row[k] = NONFINITE_IN[v] end
      end
      rows[#rows + 1] = row
    end
  end
  return rows
end

--- log.series(rows or run_dir, tag) -> steps, values: the rows that hold tag, in file order
function log.series(rows, tag)
  if type(rows) == "string" then
    local err
    rows, err = log.read(rows)
    if not rows then error("log.series: " .. err, 2) end
  end
  local steps, values = {}, {}
  for _, row in ipairs(rows) do
    local v = row[tag]
    if type(v) == "number" then
      steps[#steps + 1] = row.step
      values[#values + 1] = v
    end
  end
  return steps, values
end

--- log.read_events(run_dir) -> scalars, images, histograms, texts and hparams by tag, decoded
--- from the event files (see tocha.log.events)
function log.read_events(dir) return require("tocha.log.events").load(dir) end

---------------------------------------------------------------------------------------------
-- cadence
---------------------------------------------------------------------------------------------
--- log.every(n) -> f(step): true when step is a multiple of n
function log.every(n)
  if math.type(n) ~= "integer" or n < 1 then error("log.every: n must be a positive integer", 2) end
  return function(step) return step % n == 0 end
end

--- log.every_seconds(s, {first = false}) -> f(): true when s seconds have passed since it was last
--- true (or since it was made); first = true makes the first call true too
function log.every_seconds(s, opts)
  if type(s) ~= "number" or s < 0 then error("log.every_seconds: s must be a number >= 0", 2) end
  local last = not (opts and opts.first) and T.clock() or nil
  return function()
    local now = T.clock()
    if last and now - last < s then return false end
    last = now
    return true
  end
end

--- log.at({100, 500, 1000}) -> f(step): true at exactly those steps
function log.at(steps)
  if type(steps) ~= "table" then error("log.at: expected a list of steps", 2) end
  local set = {}
  for _, s in ipairs(steps) do set[s] = true end
  return function(step) return set[step] == true end
end

--- log.any(p1, p2, ...) -> f(step): true when any of the predicates is
function log.any(...)
  local ps = { ... }
  return function(step)
    for _, p in ipairs(ps) do if p(step) then return true end end
    return false
  end
end

---------------------------------------------------------------------------------------------
-- the console progress line
---------------------------------------------------------------------------------------------
log.progress = require("tocha.log.progress")
log.isatty = sys.isatty

return log
