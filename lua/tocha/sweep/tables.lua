-- tocha.sweep.tables: what the sweep commands print and write from the storage: the status
-- table (trial, parameters, state, value, best so far, steps, time), the best trial with the
-- command line that reproduces it, and the CSV / JSON export.
local json = require "tocha.json"
local space = require "tocha.sweep.space"

local tables = {}

local function better(goal, a, b) return goal == "max" and a > b or goal ~= "max" and a < b end

local function num(v)
  if v == nil then return "" end
  if math.type(v) == "integer" then return tostring(v) end
  return (string.format("%.4g", v))
end

local function duration(s)
  if not s then return "" end
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, s % 3600 // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%.1fs", s)
end

-- the parameters worth a column: every one that is not fixed
local function columns(sw)
  local cols = {}
  for _, p in ipairs(sw.space) do if p.kind ~= "fixed" then cols[#cols + 1] = p end end
  return cols
end

local function param_text(v)
  if v == nil then return "-" end
  if type(v) == "number" then return num(v) end
  return space.arg(v)
end

--- tables.best(sw, rows) -> the best finished row, or nil
function tables.best(sw, rows)
  local best
  for _, r in ipairs(rows) do
    if r.state == "done" and type(r.value) == "number" and r.value == r.value
      and (not best or better(sw.goal, r.value, best.value)) then best = r end
  end
  return best
end

--- tables.counts(rows) -> {queued =, running =, done =, pruned =, failed =}
function tables.counts(rows)
  local c = { queued = 0, running = 0, done = 0, pruned = 0, failed = 0 }
  for _, r in ipairs(rows) do c[r.state] = (c[r.state] or 0) + 1 end
  return c
end

--- tables.finished(sw, rows): no trial left to run (every one proposed has ended)
function tables.finished(sw, rows)
  local c = tables.counts(rows)
  return c.queued == 0 and c.running == 0 and #rows >= sw.trials
end

--- tables.header(sw, rows) -> "sweep x: 7 of 24 trials  (2 running, ...)  best loss 0.1 (trial 3)"
function tables.header(sw, rows)
  local c = tables.counts(rows)
  local best = tables.best(sw, rows)
  return string.format("sweep %s: %d of %d trials  (%d running, %d queued, %d done, %d pruned, %d failed)%s",
    sw.name, #rows, sw.trials, c.running, c.queued, c.done, c.pruned, c.failed,
    best and string.format("  best %s %s (trial %d)", sw.metric, num(best.value), best.number) or "")
end

--- tables.status(sw, st, {all = false, rows = 40}) -> the status text. Beyond `rows` trials
--- it shows the running ones, the ten best and the latest, and says how many it left out.
function tables.status(sw, st, opts)
  opts = opts or {}
  local rows = st:trials({ params = false })
  local lines = { tables.header(sw, rows) }
  -- best so far, in trial order
  local so_far
  for _, r in ipairs(rows) do
    if r.state == "done" and type(r.value) == "number" and (not so_far or better(sw.goal, r.value, so_far)) then so_far = r.value end
    r.best = so_far
  end
  local shown = rows
  local limit = opts.rows or 40
  if not opts.all and #rows > limit then
    local keep = {}
    for _, r in ipairs(rows) do if r.state == "running" then keep[r.number] = true end end
    local done = {}
    for _, r in ipairs(rows) do if r.state == "done" and type(r.value) == "number" then done[#done + 1] = r end end
    table.sort(done, function(a, b) return better(sw.goal, a.value, b.value) end)
    for i = 1, math.min(10, #done) do keep[done[i].number] = true end
    local n = 0
    for _ in pairs(keep) do n = n + 1 end
    for i = #rows, 1, -1 do
      if n >= limit then break end
      if not keep[rows[i].number] then keep[rows[i].number], n = true, n + 1 end
    end
    shown = {}
    for _, r in ipairs(rows) do if keep[r.number] then shown[#shown + 1] = r end end
  end
  -- parameters of the rows shown only: decoding every trial's would cost on a large sweep
  local params = {}
  if #shown > 0 then
    local numbers = {}
    for i, r in ipairs(shown) do numbers[i] = r.number end
    params = st:params_of(numbers)
  end
  local cols = columns(sw)
  local header = { "trial" }
  for _, p in ipairs(cols) do header[#header + 1] = p.name end
  for _, h in ipairs({ "state", sw.metric, "best", "steps", "time" }) do header[#header + 1] = h end
  local grid = { header }
  for _, r in ipairs(shown) do
    local row = { tostring(r.number) }
    local ps = params[r.number] or {}
    for _, p in ipairs(cols) do row[#row + 1] = param_text(ps[p.name]) end
    local secs = r.seconds or (r.state == "running" and r.started and r.now and r.now - r.started) or nil
    for _, x in ipairs({ r.state, num(r.value), num(r.best), num(r.steps), duration(secs) }) do row[#row + 1] = x end
    grid[#grid + 1] = row
  end
  local width = {}
  for _, row in ipairs(grid) do
    for j, x in ipairs(row) do width[j] = math.max(width[j] or 0, #x) end
  end
  for _, row in ipairs(grid) do
    local parts = {}
    for j, x in ipairs(row) do parts[j] = j == 1 and string.rep(" ", width[j] - #x) .. x or x .. string.rep(" ", width[j] - #x) end
    lines[#lines + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  if #shown < #rows then
    lines[#lines + 1] = string.format("(%d more trials not shown: --all shows every one)", #rows - #shown)
  end
  return table.concat(lines, "\n") .. "\n", tables.finished(sw, rows)
end

--- tables.best_text(sw, st) -> the best trial's parameters, value, run directory and command
--- line, or nil, why
function tables.best_text(sw, st)
  local rows = st:trials({ params = false })
  local best = tables.best(sw, rows)
  if not best then return nil, string.format("sweep %s: no trial has finished with %s yet", sw.name, sw.metric) end
  local t = st:trial(best.number)
  local lines = { string.format("best trial %d of %d in sweep %s: %s = %s (%s)", t.number, #rows, sw.name, sw.metric,
    space.show(t.value), sw.goal == "max" and "higher is better" or "lower is better") }
  for _, p in ipairs(sw.space) do
    if t.params[p.name] ~= nil then lines[#lines + 1] = string.format("  %s = %s", p.name, space.show(t.params[p.name])) end
  end
  lines[#lines + 1] = "run directory: " .. tostring(t.run_dir)
  lines[#lines + 1] = (sw.script and "reproduce: " or "reproduce: run ") .. tostring(t.command)
  return table.concat(lines, "\n") .. "\n", t
end

local function csv_field(v)
  if v == nil then return "" end
  local s = type(v) == "number" and string.format("%.17g", v) or type(v) == "table" and space.arg(v) or tostring(v)
  if type(v) == "number" and math.type(v) == "float" then
    for p = 6, 17 do
      local short = string.format("%." .. p .. "g", v)
      if tonumber(short) == v then s = short; break end
    end
  end
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

--- tables.csv(sw, st) -> one row per trial: trial,state,value, one column per parameter, seconds
function tables.csv(sw, st)
  local head = { "trial", "state", "value" }
  for _, p in ipairs(sw.space) do head[#head + 1] = csv_field(p.name) end
  head[#head + 1] = "seconds"
  local lines = { table.concat(head, ",") }
  for _, r in ipairs(st:trials()) do
    local row = { r.number, r.state, csv_field(r.value) }
    for _, p in ipairs(sw.space) do row[#row + 1] = csv_field(r.params[p.name]) end
    row[#row + 1] = csv_field(r.seconds)
    lines[#lines + 1] = table.concat(row, ",")
  end
  return table.concat(lines, "\n") .. "\n"
end

--- tables.json(sw, st) -> a JSON list of trials {trial, state, value, params, seconds, steps,
--- run_dir, command, reason, metrics}
function tables.json(sw, st)
  local out = {}
  for i, r in ipairs(st:trials()) do
    out[i] = { trial = r.number, state = r.state, value = r.value, params = r.params, seconds = r.seconds,
      steps = r.steps, run_dir = r.run_dir, command = r.command, reason = r.reason,
      metrics = r.metrics and json.decode(r.metrics) or nil }
  end
  return (#out == 0 and "[]" or json.encode(out)) .. "\n"
end

return tables
