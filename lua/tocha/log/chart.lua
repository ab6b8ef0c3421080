-- tocha.log.chart: the drawing `tocha plot` and `tocha sweep plot` share, on the cairo canvas
-- of T._log: round tick values, axes with a grid and labels inside a box of the canvas
-- (several boxes make a figure of panels), polylines, markers and a legend.
local T = require "tocha"
local C = T._log

local chart = {}

-- Tableau 10
chart.COLORS = {
  { 0.12, 0.47, 0.71 }, { 1.00, 0.50, 0.05 }, { 0.17, 0.63, 0.17 }, { 0.84, 0.15, 0.16 }, { 0.58, 0.40, 0.74 },
  { 0.55, 0.34, 0.29 }, { 0.89, 0.47, 0.76 }, { 0.50, 0.50, 0.50 }, { 0.74, 0.74, 0.13 }, { 0.09, 0.75, 0.81 },
}

function chart.color(i) return chart.COLORS[(i - 1) % #chart.COLORS + 1] end

function chart.finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end
local finite = chart.finite

--- chart.canvas(width, height) -> a white canvas (T._log.canvas)
function chart.canvas(w, h) return C.canvas(w, h) end

--- chart.ticks(lo, hi, n) -> about n round values covering [lo, hi]
function chart.ticks(lo, hi, n)
  local span = hi - lo
  if span <= 0 then return { lo } end
  local raw = span / n
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if raw <= m * mag then step = m * mag; break end
  end
  local out = {}
  for k = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) do out[#out + 1] = k * step end
  return out
end

--- chart.log_ticks(lo, hi) -> ticks on a log10 axis covering [lo, hi]: the log10 of 1, 2 and
--- 5 times the powers of ten (only the powers when that gives more than eight)
function chart.log_ticks(lo, hi)
  local all, powers = {}, {}
  for k = math.floor(lo), math.ceil(hi) do
    for _, m in ipairs({ 1, 2, 5 }) do
      local v = k + math.log(m, 10)
      if v >= lo - 1e-9 and v <= hi + 1e-9 then
        all[#all + 1] = v
        if m == 1 then powers[#powers + 1] = v end
      end
    end
  end
  if #all > 8 and #powers >= 2 then return powers end
  return #all > 0 and all or chart.ticks(lo, hi, 3)
end

--- chart.label(v) -> a short label for a tick value
function chart.label(v)
  if v == 0 then return "0" end
  local a = math.abs(v)
  if a >= 1e5 or a < 1e-3 then return (string.format("%.1e", v):gsub("%.0e", "e")) end
  return (string.format("%.4f", v):gsub("%.?0+$", ""))
end

--- chart.range(values, {log = false, pad = 0.05}) -> lo, hi of the finite values (log10 of
--- the positive ones for log), padded; nil when there is none
function chart.range(values, opts)
  opts = opts or {}
  local lo, hi = math.huge, -math.huge
  for _, v in pairs(values) do
    if opts.log then v = v > 0 and math.log(v, 10) or nil end
    if finite(v) then lo, hi = math.min(lo, v), math.max(hi, v) end
  end
  if lo > hi then return nil end
  if hi == lo then lo, hi = lo - (opts.log and 0.5 or 0.5 * math.max(1, math.abs(lo))), hi + (opts.log and 0.5 or 0.5 * math.max(1, math.abs(hi))) end
  local pad = (hi - lo) * (opts.pad or 0.05)
  return lo - pad, hi + pad
end

--- chart.axes(cv, box, r, opts) -> px, py: the grid, ticks, frame and labels of a panel in
--- box {x, y, w, h} (the plot area; labels go outside it) for the data range r {xmin, xmax,
--- ymin, ymax}; px and py map data to pixels. opts: title, xlabel, ylabel, logx, logy (the
--- range is then in log10), xfmt (a tick's label), xticks ({{value, label}, ...} instead of
--- round values), size (font size, 12)
function chart.axes(cv, box, r, opts)
  opts = opts or {}
  local L, Tp, pw, ph = box[1], box[2], box[3], box[4]
  local size = opts.size or 12
  local function px(x) return L + (x - r[1]) / (r[2] - r[1]) * pw end
  local function py(y) return Tp + (1 - (y - r[3]) / (r[4] - r[3])) * ph end
  cv:line_width(1)
  local yticks = opts.logy and chart.log_ticks(r[3], r[4]) or chart.ticks(r[3], r[4], math.max(2, ph // 70))
  for _, y in ipairs(yticks) do
    cv:color(0.9, 0.9, 0.9)
    cv:move_to(L, py(y)); cv:line_to(L + pw, py(y)); cv:stroke()
    cv:color(0.25, 0.25, 0.25)
    cv:text(L - 8, py(y) + 4, opts.logy and chart.label(10 ^ y) or chart.label(y), size, 1)
  end
  local xticks = opts.xticks
  if not xticks then
    xticks = {}
    local xs = opts.logx and chart.log_ticks(r[1], r[2]) or chart.ticks(r[1], r[2], math.max(2, pw // 110))
    for i, x in ipairs(xs) do
      xticks[i] = { x, opts.xfmt and opts.xfmt(x) or opts.logx and chart.label(10 ^ x) or chart.label(x) }
    end
  end
  for _, t in ipairs(xticks) do
    cv:color(0.9, 0.9, 0.9)
    cv:move_to(px(t[1]), Tp); cv:line_to(px(t[1]), Tp + ph); cv:stroke()
    cv:color(0.25, 0.25, 0.25)
    cv:text(px(t[1]), Tp + ph + size + 6, t[2], size, 0.5)
  end
  cv:color(0.3, 0.3, 0.3)
  cv:rect(L, Tp, pw, ph); cv:stroke()
  if opts.xlabel then cv:text(L + pw / 2, Tp + ph + 2 * size + 16, opts.xlabel, size + 1, 0.5) end
  if opts.ylabel then cv:text(L - 56, Tp + ph / 2, opts.ylabel, size + 1, 0.5, -math.pi / 2) end
  if opts.title then cv:text(L + pw / 2, Tp - 12, opts.title, size + 4, 0.5) end
  return px, py
end

--- chart.markers(cv, xs, ys, color, radius): small filled diamonds at the points (pixels)
function chart.markers(cv, xs, ys, col, radius)
  local s = radius or 3.5
  cv:color(col[1], col[2], col[3], col[4] or 1)
  for i, x in ipairs(xs) do
    local y = ys[i]
    if finite(x) and finite(y) then
      cv:polyline({ x - s, x, x + s, x, x - s }, { y, y - s, y, y + s, y })
      cv:fill()
    end
  end
end

--- chart.legend(cv, box, items): items {{name, color, width = 3}, ...} in a framed box at the
--- top right inside box {x, y, w, h}
function chart.legend(cv, box, items)
  local lw = 0
  for _, it in ipairs(items) do lw = math.max(lw, cv:text_width(it[1], 12)) end
  local bx, by, bh = box[1] + box[3] - lw - 44, box[2] + 8, 18 * #items + 8
  cv:color(1, 1, 1, 0.85)
  cv:rect(bx, by, lw + 36, bh); cv:fill()
  cv:color(0.7, 0.7, 0.7)
  cv:line_width(1)
  cv:rect(bx, by, lw + 36, bh); cv:stroke()
  for i, it in ipairs(items) do
    local col = it[2]
    local y = by + 4 + 18 * (i - 1) + 9
    cv:color(col[1], col[2], col[3])
    cv:line_width(it.width or 3)
    cv:move_to(bx + 6, y); cv:line_to(bx + 24, y); cv:stroke()
    cv:color(0.15, 0.15, 0.15)
    cv:text(bx + 30, y + 4, it[1], 12, 0)
  end
end

--- chart.legend_row(cv, x, y, items): the same items in one row from (x, y), outside a panel
function chart.legend_row(cv, x, y, items)
  for _, it in ipairs(items) do
    local col = it[2]
    cv:color(col[1], col[2], col[3])
    cv:line_width(it.width or 3)
    cv:move_to(x, y - 4); cv:line_to(x + 18, y - 4); cv:stroke()
    cv:color(0.15, 0.15, 0.15)
    cv:text(x + 24, y, it[1], 12, 0)
    x = x + 24 + cv:text_width(it[1], 12) + 18
  end
end

return chart
