-- tocha.cli.plot: `tocha plot runs/t2i/* -o loss.png` draws one tag's curves (or several tags')
-- from one or several runs into one PNG, with TensorBoard's smoothing, for a picture without
-- starting TensorBoard. Reads metrics.jsonl, or the event files when a run has none; draws
-- with cairo through tocha.log.chart. plot.main(args) returns the exit status; calling the
-- module (what `tocha plot` does) exits with it when it is not 0.
local T = require "tocha"
local log = require "tocha.log"
local events = require "tocha.log.events"
local chart = require "tocha.log.chart"

local plot = {}

local USAGE = [==[
usage: tocha plot RUN... [-o loss.png] [--tag loss[,tag2...]] [--smooth 0.6] [--x step|time]
                  [--logy] [--size 1000x600] [--title TEXT]
  RUN        a run directory (with metrics.jsonl or TensorBoard event files), or a directory
             of runs
  -o FILE    the PNG to write (default plot.png)
  --tag      the tags to draw, comma-separated (default: the runs' loss, train/loss or loss)
  --smooth   TensorBoard's smoothing weight in [0, 1) (default 0.6; 0 draws the raw values only)
  --x        step (default) or time: seconds since the run's first logged value
  --logy     a logarithmic y axis
]==]

local finite = chart.finite

---------------------------------------------------------------------------------------------
-- reading runs
---------------------------------------------------------------------------------------------
local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- a run with logs; one its meta.json marks failed (it ended in an error) is left out
local function is_run(dir)
  if not (exists(dir .. "/metrics.jsonl") or #(events.files(dir) or {}) > 0) then return false end
  local meta = exists(dir .. "/meta.json") and require("tocha.json").read_file(dir .. "/meta.json")
  return not (meta and meta.status == "failed")
end

-- the run directories named by the arguments: a run itself, or a directory of runs
local function find_runs(paths, err_out)
  local runs = {}
  for _, p in ipairs(paths) do
    p = p:gsub("/+$", "")
    if is_run(p) then runs[#runs + 1] = p
    elseif T._sys.isdir(p) then
      local names = T._sys.listdir(p) or {}
      table.sort(names)
      local found = false
      for _, n in ipairs(names) do -- directories end in "/"
        if n:sub(-1) == "/" and is_run(p .. "/" .. n:sub(1, -2)) then
          runs[#runs + 1] = p .. "/" .. n:sub(1, -2)
          found = true
        end
      end
      if not found then err_out:write("tocha plot: no metrics.jsonl or event files in ", p, "\n") end
    else
      err_out:write("tocha plot: not a directory: ", p, "\n")
    end
  end
  return runs
end

-- {tag = {xs = {steps}, ts = {wall times}, ys = {values}}} of a run
local function read_run(dir)
  local series = {}
  if exists(dir .. "/metrics.jsonl") then
    local rows, err = log.read(dir)
    if not rows then error(err, 0) end
    for _, row in ipairs(rows) do
      for k, v in pairs(row) do
        if k ~= "step" and k ~= "time" and type(v) == "number" then
          local s = series[k] or { xs = {}, ts = {}, ys = {} }
          series[k] = s
          s.xs[#s.xs + 1], s.ts[#s.ts + 1], s.ys[#s.ys + 1] = row.step, row.time or 0, v
        end
      end
    end
  else
    for tag, list in pairs(events.load(dir).scalars) do
      local s = { xs = {}, ts = {}, ys = {} }
      for i, e in ipairs(list) do s.xs[i], s.ts[i], s.ys[i] = e.step, e.wall_time or 0, e.value end
      series[tag] = s
    end
  end
  return series
end

---------------------------------------------------------------------------------------------
-- drawing
---------------------------------------------------------------------------------------------
--- plot.smooth(ys, weight): TensorBoard's debiased exponential moving average; NaN and
--- infinities pass through without entering the average
function plot.smooth(ys, w)
  local out, last, n = {}, 0, 0
  for i, y in ipairs(ys) do
    if finite(y) then
      last = last * w + (1 - w) * y
      n = n + 1
      out[i] = w > 0 and last / (1 - w ^ n) or y
    else
      out[i] = y
    end
  end
  return out
end

local function duration_label(s)
  if s >= 3600 then return string.format("%.1fh", s / 3600) end
  if s >= 60 then return string.format("%.0fm", s / 60) end
  return string.format("%.0fs", s)
end

--- plot.draw(curves, opts): curves = {{name =, xs =, ys =}, ...}; opts: path, width, height,
--- smooth, logy, title, xlabel. Returns true or nil, message.
function plot.draw(curves, opts)
  local W, H = opts.width or 1000, opts.height or 600
  local L, R, Tp, B = 80, 24, 44, 56
  local pw, ph = W - L - R, H - Tp - B
  local fy = opts.logy and function(y) return y > 0 and math.log(y, 10) or 0 / 0 end or function(y) return y end
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, c in ipairs(curves) do
    for i, x in ipairs(c.xs) do
      local y = fy(c.ys[i])
      if finite(x) and finite(y) then
        xmin, xmax = math.min(xmin, x), math.max(xmax, x)
        ymin, ymax = math.min(ymin, y), math.max(ymax, y)
      end
    end
  end
  if xmin > xmax then return nil, "no finite values to draw" end
  if xmax == xmin then xmin, xmax = xmin - 1, xmax + 1 end
  if ymax == ymin then ymin, ymax = ymin - 0.5, ymax + 0.5 end
  local pad = (ymax - ymin) * 0.05
  ymin, ymax = ymin - pad, ymax + pad

  local cv = chart.canvas(W, H)
  local box = { L, Tp, pw, ph }
  local px, py = chart.axes(cv, box, { xmin, xmax, ymin, ymax }, { logy = opts.logy, title = opts.title,
    xlabel = opts.xlabel or "step", xfmt = opts.time and duration_label or nil, size = 12 })

  -- curves: the raw values faint, the smoothed ones solid
  cv:clip(L, Tp, pw, ph)
  local smooth = opts.smooth or 0
  local items = {}
  for i, c in ipairs(curves) do
    local col = chart.color(i)
    local xs, raw, sm = {}, {}, {}
    local s = plot.smooth(c.ys, smooth)
    for j, x in ipairs(c.xs) do
      xs[j], raw[j], sm[j] = px(x), py(fy(c.ys[j])), py(fy(s[j]))
    end
    if smooth > 0 then
      cv:color(col[1], col[2], col[3], 0.25)
      cv:line_width(1)
      cv:polyline(xs, raw); cv:stroke()
    end
    cv:color(col[1], col[2], col[3])
    cv:line_width(2)
    cv:polyline(xs, sm); cv:stroke()
    items[i] = { c.name, col }
  end
  cv:clip()
  chart.legend(cv, box, items)
  return cv:write_png(opts.path)
end

---------------------------------------------------------------------------------------------
-- the command
---------------------------------------------------------------------------------------------
--- plot.main(args, out = io.stdout, err = io.stderr) -> exit status
function plot.main(args, out, err_out)
  out, err_out = out or io.stdout, err_out or io.stderr
  local function fail(msg)
    err_out:write("tocha plot: ", msg, "\n")
    return 2
  end
  local paths, opts, tags, xmode = {}, { path = "plot.png", smooth = 0.6 }, nil, "step"
  local i = 1
  while i <= #args do
    local a = args[i]
    local key, inline = a:match("^(%-%-?[%w-]+)=(.*)$")
    key = key or a
    local function value()
      if inline then return inline end
      i = i + 1
      if args[i] == nil then error({ usage = key .. " needs a value" }) end
      return args[i]
    end
    local ok, err = pcall(function()
      if key == "-h" or key == "--help" then out:write(USAGE); error({ exit = 0 })
      elseif key == "-o" or key == "--output" then opts.path = value()
      elseif key == "--tag" or key == "--tags" then
        tags = {}
        for t in value():gmatch("[^,]+") do tags[#tags + 1] = t end
      elseif key == "--smooth" then
        opts.smooth = tonumber(value())
        if not opts.smooth or opts.smooth < 0 or opts.smooth >= 1 then error({ usage = "--smooth must be in [0, 1)" }) end
      elseif key == "--x" then
        xmode = value()
        if xmode ~= "step" and xmode ~= "time" then error({ usage = "--x must be step or time" }) end
      elseif key == "--logy" then opts.logy = true
      elseif key == "--title" then opts.title = value()
      elseif key == "--size" then
        local w, h = value():match("^(%d+)x(%d+)$")
        if not w then error({ usage = "--size must be WIDTHxHEIGHT, e.g. 1000x600" }) end
        opts.width, opts.height = tonumber(w), tonumber(h)
      elseif a:sub(1, 1) == "-" then error({ usage = "unknown option " .. a })
      else paths[#paths + 1] = a end
    end)
    if not ok then
      if type(err) == "table" and err.exit then return err.exit end
      if type(err) == "table" and err.usage then return fail(err.usage .. "\n" .. USAGE) end
      error(err, 0)
    end
    i = i + 1
  end
  if #paths == 0 then return fail("no runs given\n" .. USAGE) end
  local runs = find_runs(paths, err_out)
  if #runs == 0 then return fail("no runs found") end

  local all, available = {}, {}
  for i, dir in ipairs(runs) do
    local ok, series = pcall(read_run, dir)
    if not ok then return fail(tostring(series)) end
    all[i] = series
    for tag in pairs(series) do available[tag] = true end
  end
  local names = {}
  for t in pairs(available) do names[#names + 1] = t end
  table.sort(names)
  local listed = #names > 0 and table.concat(names, ", ") or "none"
  if not tags then -- the loss: as the experiments log it (train/loss), or plain loss
    local tag = available["train/loss"] and "train/loss" or available.loss and "loss"
    if not tag then
      for _, t in ipairs(names) do if t:match("loss$") then tag = t; break end end
    end
    if not tag then return fail("no loss tag; give one with --tag (tags: " .. listed .. ")") end
    tags = { tag }
  end
  local curves = {}
  for i, dir in ipairs(runs) do
    local series = all[i]
    local short = dir:match("([^/]+)$")
    for _, tag in ipairs(tags) do
      local s = series[tag]
      if s then
        local xs = s.xs
        if xmode == "time" then
          xs = {}
          for j, t in ipairs(s.ts) do xs[j] = t - s.ts[1] end
        end
        local name = #runs > 1 and #tags > 1 and short .. " " .. tag or #runs > 1 and short or tag
        curves[#curves + 1] = { name = name, xs = xs, ys = s.ys }
      end
    end
  end
  if #curves == 0 then return fail(string.format("no run has the tag %s (tags: %s)", table.concat(tags, ", "), listed)) end
  opts.time = xmode == "time"
  opts.xlabel = opts.time and "time" or "step"
  opts.title = opts.title or table.concat(tags, ", ")
  local ok, err = plot.draw(curves, opts)
  if not ok then return fail(err) end
  out:write(string.format("wrote %s (%d curve%s) of %s\n", opts.path, #curves, #curves == 1 and "" or "s",
    table.concat(tags, ", ")))
  return 0
end

-- run as a script (`tocha lua/tocha/cli/plot.lua ...`): ... holds the arguments, not a module name
if select("#", ...) == 0 or (...) ~= "tocha.cli.plot" then os.exit(plot.main({ ... })) end

-- `tocha plot ...`: the runner calls the module with the arguments
return setmetatable(plot, { __call = function(_, args)
  local code = plot.main(args)
  if code ~= 0 then os.exit(code, true) end
  return code
end })
