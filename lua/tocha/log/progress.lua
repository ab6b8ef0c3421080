-- tocha.log.progress: the console progress line of a training loop: step/total, smoothed loss,
-- lr, it/s, elapsed and ETA. On a terminal it redraws in place (at most 10 times a second);
-- otherwise (CI logs, files) it prints a plain line every `interval` seconds and at the end.
local T = require "tocha"
local sys = T._sys

local Progress = {}
Progress.__index = Progress

local function clock_str(s)
  if s ~= s or s == math.huge or s < 0 then return "?" end
  s = math.floor(s + 0.5)
  local h, m = s // 3600, (s % 3600) // 60
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s % 60) end
  return string.format("%d:%02d", m, s % 60)
end

local function num_str(v)
  if type(v) ~= "number" then return tostring(v) end
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "nan" end
  local a = math.abs(v)
  if a ~= 0 and (a < 1e-3 or a >= 1e5) then return string.format("%.2e", v) end
  return string.format("%.4g", v)
end

--- log.progress{total = steps, out = io.stdout, tty = isatty(out), interval = 10 (plain lines;
--- 0.1 on a terminal), smoothing = 0.98, smooth = {"loss"}} -> p. p:update(step, {loss = l,
--- lr = lr, ...}) after each step; values may be numbers or one-element tensors (read only
--- when a line is drawn, except the smoothed ones); p:print(msg) prints above the line;
--- p:close() draws the last line and ends it.
local function progress(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("log.progress: options must be a table", 2) end
  if opts.total ~= nil and (math.type(opts.total) ~= "integer" or opts.total < 0) then
    error("log.progress: total must be a non-negative integer", 2)
  end
  local out = opts.out or io.stdout
  local tty = opts.tty
  if tty == nil then tty = sys.isatty(out) end
  local smooth = {}
  for _, k in ipairs(opts.smooth or { "loss" }) do smooth[k] = true end
  return setmetatable({
    total = opts.total, out = out, tty = tty, interval = opts.interval or (tty and 0.1 or 10),
    beta = opts.smoothing or 0.98, smooth = smooth, ema = {}, ema_n = 0,
    t0 = T.clock(), t_draw = nil, step = nil, first = nil, rate = nil, rate_t = nil, rate_step = nil,
    values = {}, line = "",
  }, Progress)
end

-- the line for the current state
function Progress:format()
  local parts = {}
  local step, total = self.step or 0, self.total
  if total then
    parts[1] = string.format("step %d/%d (%d%%)", step, total, total > 0 and math.floor(100 * step / total) or 100)
  else
    parts[1] = string.format("step %d", step)
  end
  local keys = {}
  for k in pairs(self.values) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) -- loss first, lr second, the rest by name
    local ra, rb = a == "loss" and 0 or a == "lr" and 1 or 2, b == "loss" and 0 or b == "lr" and 1 or 2
    if ra ~= rb then return ra < rb end
    return a < b
  end)
  for _, k in ipairs(keys) do
    local v = self.values[k]
    if self.smooth[k] and self.ema[k] then v = self.ema[k] / (1 - self.beta ^ self.ema_n) end
    if T.is_tensor(v) then v = v:item() end
    parts[#parts + 1] = k == "lr" and type(v) == "number" and string.format("lr %.2e", v) or (k .. " " .. num_str(v))
  end
  local elapsed = T.clock() - self.t0
  local rate = self.rate or (self.first and elapsed > 0 and (step - self.first) / elapsed) or nil
  if rate then
    parts[#parts + 1] = rate >= 1 and string.format("%.1f it/s", rate) or string.format("%.2f s/it", 1 / rate)
  end
  parts[#parts + 1] = "elapsed " .. clock_str(elapsed)
  if total and rate and rate > 0 then parts[#parts + 1] = "eta " .. clock_str((total - step) / rate) end
  return table.concat(parts, "  ")
end

function Progress:draw()
  local line = self:format()
  self.line, self.drawn_step = line, self.step
  if self.tty then self.out:write("\r", line, "\27[K")
  else self.out:write(line, "\n") end
  self.out:flush()
end

--- p:update(step, values)
function Progress:update(step, values)
  if math.type(step) ~= "integer" then error("progress:update: step must be an integer", 2) end
  local now = T.clock()
  if not self.first then
    self.first = step - 1
    self.rate_t, self.rate_step = self.t0, step - 1
  end
  self.step = step
  if values then
    if type(values) ~= "table" then error("progress:update: values must be a table", 2) end
    self.ema_n = self.ema_n + 1
    for k, v in pairs(values) do
      self.values[k] = v
      if self.smooth[k] then
        if T.is_tensor(v) then v = v:item() end
        if type(v) == "number" and v == v then
          self.ema[k] = self.beta * (self.ema[k] or 0) + (1 - self.beta) * v
        end
      end
    end
  end
  -- it/s: an average with a 5 s time constant, so it follows changes without jitter
  local dt = now - self.rate_t
  if dt >= 0.05 then
    local inst = (step - self.rate_step) / dt
    local a = self.rate and 1 - math.exp(-dt / 5) or 1
    self.rate = self.rate and self.rate + a * (inst - self.rate) or inst
    self.rate_t, self.rate_step = now, step
  end
  local last = self.total and step >= self.total
  if not self.t_draw or now - self.t_draw >= self.interval or last then
    self.t_draw = now
    self:draw()
  end
end

--- p:print(...): a message above the progress line (on a terminal the line is redrawn below)
function Progress:print(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  local msg = table.concat(parts, "\t", 1, parts.n)
  if self.tty then
    self.out:write("\r\27[K", msg, "\n", self.line)
  else
    self.out:write(msg, "\n")
  end
  self.out:flush()
end

--- p:close(): the final line (on a terminal, ended with a newline)
function Progress:close()
  if self.closed then return end
  self.closed = true
  if self.step and (self.tty or self.drawn_step ~= self.step) then self:draw() end
  if self.tty then
    self.out:write("\n")
    self.out:flush()
  end
end
Progress.__close = Progress.close

return progress
