-- tocha.sweep.plot: `tocha sweep plot` draws a sweep into one PNG with tocha.log.chart: each
-- trial's value and the best so far against the trial number, then one scatter per parameter
-- (value against the parameter; log axes for log distributions, one column per choice).
-- Trials that ended without a value (pruned before reporting it, failed) sit along the bottom.
local chart = require "tocha.log.chart"
local space = require "tocha.sweep.space"

local plot = {}

local DONE, PRUNED, BEST, BEST_LINE = chart.COLORS[1], { 0.6, 0.6, 0.6 }, chart.COLORS[4], chart.COLORS[2]
local FAILED = chart.COLORS[5]

local function better(goal, a, b) return goal == "max" and a > b or goal ~= "max" and a < b end

local function is_log(p) return p.kind == "loguniform" or (p.kind == "int" and p.log) end

local function categorical(p) return p.kind == "choice" or p.kind == "grid" end

--- plot.draw(sw, rows, {path, width = 1200}) -> true, or nil, message. rows: the trials with
--- their parameters (storage:trials())
function plot.draw(sw, rows, opts)
  local valued = {}
  for _, r in ipairs(rows) do
    if (r.state == "done" or r.state == "pruned") and chart.finite(r.value) then valued[#valued + 1] = r end
  end
  local params = {}
  for _, p in ipairs(sw.space) do if p.kind ~= "fixed" then params[#params + 1] = p end end
  local W = opts.width or 1200
  local ncol = math.min(3, math.max(1, #params))
  local nrow = (#params + ncol - 1) // ncol
  local top_h, cell_h, margin = 300, 250, 80
  local top = 84 -- the title and a row of legend above the first panel
  local H = top + top_h + 90 + nrow * (cell_h + 90)
  local cv = chart.canvas(W, H)
  -- pruned (or failed) trials without a value are drawn along the bottom of each panel
  local unvalued = {}
  for _, r in ipairs(rows) do
    if (r.state == "pruned" or r.state == "failed") and not chart.finite(r.value) then unvalued[#unvalued + 1] = r end
  end
  if #valued + #unvalued == 0 then return nil, string.format("sweep %s: no trial has ended yet", sw.name) end
  local values = {}
  for i, r in ipairs(valued) do values[i] = r.value end
  local ylo, yhi = chart.range(values)
  if not ylo then ylo, yhi = 0, 1 end
  if #unvalued > 0 then ylo = ylo - 0.08 * (yhi - ylo) end -- room for the bottom row
  local best
  for _, r in ipairs(valued) do
    if r.state == "done" and (not best or better(sw.goal, r.value, best.value)) then best = r end
  end

  -- the value of each trial, and the best so far
  local counts = {}
  for _, r in ipairs(rows) do counts[r.state] = (counts[r.state] or 0) + 1 end
  local title = string.format("sweep %s: %s (%s is better), %d trials: %d done, %d pruned, %d failed", sw.name, sw.metric,
    sw.goal == "max" and "higher" or "lower", #rows, counts.done or 0, counts.pruned or 0, counts.failed or 0)
  local box = { margin, top, W - margin - 30, top_h }
  local px, py = chart.axes(cv, box, { 0.5, rows[#rows].number + 0.5, ylo, yhi }, { xlabel = "trial", ylabel = sw.metric })
  cv:color(0.25, 0.25, 0.25)
  cv:text(W / 2, 28, title, 16, 0.5)
  cv:clip(box[1], box[2], box[3], box[4])
  local bx, by, so_far = {}, {}, nil
  for _, r in ipairs(rows) do
    if r.state == "done" and chart.finite(r.value) and (not so_far or better(sw.goal, r.value, so_far)) then so_far = r.value end
    if so_far then
      bx[#bx + 1], by[#by + 1] = px(r.number - 0.5), py(so_far)
      bx[#bx + 1], by[#by + 1] = px(r.number + 0.5), py(so_far)
    end
  end
  cv:color(BEST_LINE[1], BEST_LINE[2], BEST_LINE[3])
  cv:line_width(2)
  cv:polyline(bx, by); cv:stroke()
  for _, state in ipairs({ "pruned", "done" }) do
    local xs, ys = {}, {}
    for _, r in ipairs(valued) do
      if r.state == state then xs[#xs + 1], ys[#ys + 1] = px(r.number), py(r.value) end
    end
    chart.markers(cv, xs, ys, state == "done" and DONE or PRUNED, 4)
  end
  if best then chart.markers(cv, { px(best.number) }, { py(best.value) }, BEST, 6) end
  cv:clip()
  local function bottom_row(pbox, x_of_trial)
    for _, state in ipairs({ "pruned", "failed" }) do
      local xs, ys = {}, {}
      for _, r in ipairs(unvalued) do
        local x = r.state == state and x_of_trial(r)
        if x then xs[#xs + 1], ys[#ys + 1] = x, pbox[2] + pbox[4] - 7 end
      end
      chart.markers(cv, xs, ys, state == "pruned" and PRUNED or FAILED, 3.5)
    end
  end
  bottom_row(box, function(r) return px(r.number) end)
  chart.legend_row(cv, margin, top - 14, { { "done", DONE }, { "pruned", PRUNED }, { "failed", FAILED },
    { "best so far", BEST_LINE, width = 2 }, { "best trial", BEST }, { "(no value: along the bottom)", { 1, 1, 1 } } })

  -- one scatter per parameter
  local cw = (W - margin - 30 - (ncol - 1) * margin) / ncol
  for i, p in ipairs(params) do
    local col, row = (i - 1) % ncol, (i - 1) // ncol
    local pbox = { margin + col * (cw + margin), top + top_h + 90 + row * (cell_h + 90), cw, cell_h }
    local xs, ys, xticks, x_of = {}, {}, nil, nil
    local r1, r2
    if categorical(p) then
      xticks = {}
      for k, v in ipairs(p.values) do xticks[k] = { k, space.arg(v) } end
      x_of = function(v)
        for k, x in ipairs(p.values) do if space.same(x, v) then return k end end
      end
      r1, r2 = 0.5, #p.values + 0.5
    else
      local log = is_log(p)
      x_of = function(v)
        if type(v) ~= "number" then return nil end
        if log then return v > 0 and math.log(v, 10) or nil end
        return v
      end
      local lo = p.kind == "normal" and p.mean - 3 * p.std or p.low
      local hi = p.kind == "normal" and p.mean + 3 * p.std or p.high
      local seen = { lo, hi }
      for _, r in ipairs(valued) do seen[#seen + 1] = r.params[p.name] end
      r1, r2 = chart.range(seen, { log = log, pad = 0.03 })
    end
    local px2, py2 = chart.axes(cv, pbox, { r1, r2, ylo, yhi }, { xticks = xticks, logx = is_log(p), xlabel = p.name ..
      (is_log(p) and " (log)" or ""), ylabel = i % ncol == 1 and sw.metric or nil })
    cv:clip(pbox[1], pbox[2], pbox[3], pbox[4])
    for _, state in ipairs({ "pruned", "done" }) do
      xs, ys = {}, {}
      for _, r in ipairs(valued) do
        local x = x_of(r.params[p.name])
        if r.state == state and x then xs[#xs + 1], ys[#ys + 1] = px2(x), py2(r.value) end
      end
      chart.markers(cv, xs, ys, state == "done" and DONE or PRUNED, 4)
    end
    if best and x_of(best.params[p.name]) then
      chart.markers(cv, { px2(x_of(best.params[p.name])) }, { py2(best.value) }, BEST, 6)
    end
    bottom_row(pbox, function(r)
      local x = x_of(r.params[p.name])
      return x and px2(x)
    end)
    cv:clip()
  end
  return cv:write_png(opts.path)
end

return plot
