-- tocha.sweep.storage: a sweep's state in a database, SQLite (a file, WAL) or PostgreSQL (for
-- workers on several machines), through T._db. The SQL is written once; what differs between
-- the two (the clock, taking the write lock, setup) is in DIALECTS. Trials move queued ->
-- running -> done | pruned | failed; a worker claims one in a single transaction, keeps a
-- heartbeat while it runs, and a running trial whose heartbeat stops is queued again (up to
-- `retries` times) by whichever worker claims next.
local T = require "tocha"
local json = require "tocha.json"

local storage = {}

local DIALECTS = {
  sqlite = {
    now = "((julianday('now') - 2440587.5) * 86400.0)",
    begin = "BEGIN IMMEDIATE", -- the write lock up front: claims queue on the busy timeout
    setup = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
    schema_lock = nil,
  },
  postgresql = {
    now = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION",
    begin = "BEGIN; LOCK TABLE tocha_trials IN EXCLUSIVE MODE", -- readers still read
    setup = nil,
    schema_lock = "SELECT pg_advisory_xact_lock(7354215)", -- two workers making the tables at once
  },
}

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS tocha_sweeps (
  name TEXT PRIMARY KEY, definition TEXT NOT NULL, created DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS tocha_trials (
  sweep TEXT NOT NULL, number BIGINT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
  seed BIGINT, value DOUBLE PRECISION, attempts BIGINT NOT NULL DEFAULT 0,
  worker TEXT, host TEXT, pid BIGINT, heartbeat DOUBLE PRECISION,
  started DOUBLE PRECISION, finished DOUBLE PRECISION, seconds DOUBLE PRECISION,
  steps BIGINT, run_dir TEXT, command TEXT, reason TEXT, metrics TEXT,
  PRIMARY KEY (sweep, number));
CREATE INDEX IF NOT EXISTS tocha_trials_state ON tocha_trials (sweep, state);
CREATE TABLE IF NOT EXISTS tocha_reports (
  sweep TEXT NOT NULL, number BIGINT NOT NULL, step BIGINT NOT NULL, value DOUBLE PRECISION,
  PRIMARY KEY (sweep, number, step));
]]

local Storage = {}
Storage.__index = Storage

--- storage.is_url(s): whether s names a PostgreSQL database
function storage.is_url(s) return s:match("^postgres") ~= nil end

--- storage.display(target) -> target without the password a URL may hold
function storage.display(target) return (target:gsub("^(postgres[%w]*://[^:/@]+):[^@]*@", "%1:***@")) end

--- storage.open(target, sweep_name, {timeout = 30, schema = true}) -> st, or nil, message.
--- target: a postgresql:// URL, or a SQLite file (its directory is made; "sqlite:" in front is
--- allowed). schema = false skips making the tables (they exist: a worker's connection).
function storage.open(target, name, opts)
  opts = opts or {}
  local path = target:gsub("^sqlite:", "")
  if not storage.is_url(path) then
    local dir = path:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then
      local ok, err = T._sys.mkdirs(dir)
      if not ok then return nil, err end
    end
  end
  local db, err = T._db.open(path, { timeout = opts.timeout or 30 })
  if not db then
    local secret, shown = path:gsub("%p", "%%%0"), storage.display(path):gsub("%%", "%%%%")
    return nil, (err:gsub(secret, shown))
  end
  local st = setmetatable({ db = db, kind = db:kind(), target = storage.display(target), name = name, cache = {} }, Storage)
  st.sql = DIALECTS[st.kind]
  local ok, why = pcall(function()
    if st.sql.setup then db:exec(st.sql.setup) end
    if opts.schema == false then return end
    db:exec("BEGIN")
    if st.sql.schema_lock then db:exec(st.sql.schema_lock) end
    db:exec(SCHEMA)
    db:exec("COMMIT")
  end)
  if not ok then
    pcall(db.exec, db, "ROLLBACK")
    db:close()
    return nil, tostring(why)
  end
  return st
end

function Storage:close() self.db:close() end

-- the SQL of both dialects, with {now} for the database's clock (seconds since 1970)
function Storage:query(sql, params) return self.db:query((sql:gsub("{now}", self.sql.now)), params) end

--- st:transaction(fn, ...) -> fn's results, inside the write lock; rolled back if fn raises
function Storage:transaction(fn, ...)
  self.db:exec(self.sql.begin)
  local res = table.pack(pcall(fn, ...))
  if res[1] then
    self.db:exec("COMMIT")
    return table.unpack(res, 2, res.n)
  end
  pcall(self.db.exec, self.db, "ROLLBACK")
  error(res[2], 0)
end

---------------------------------------------------------------------------------------------
-- the sweep's definition
---------------------------------------------------------------------------------------------
--- st:register(definition): records a new sweep, or checks that a known one is unchanged
--- (its space, metric, goal, script and args); raises naming what changed
function Storage:register(def)
  local text = json.encode(def)
  self:transaction(function()
    local rows = self:query("SELECT definition FROM tocha_sweeps WHERE name = ?", { self.name })
    if #rows == 0 then
      self:query("INSERT INTO tocha_sweeps (name, definition, created) VALUES (?, ?, {now})", { self.name, text })
      return
    end
    if rows[1].definition == text then return end
    local old = json.decode(rows[1].definition)
    local what = {}
    for _, k in ipairs({ "space", "metric", "goal", "script", "args", "objective" }) do
      if json.encode(old[k]) ~= json.encode(def[k]) then what[#what + 1] = k end
    end
    error(string.format("sweep %s in %s was started with a different %s; give the sweep a new name (or another storage) to start afresh",
      self.name, self.target, table.concat(what, ", ")), 0)
  end)
end

---------------------------------------------------------------------------------------------
-- claiming
---------------------------------------------------------------------------------------------
local TRIAL_COLUMNS = "number, state, params, seed, value, attempts, worker, host, pid, heartbeat, started, " ..
  "finished, seconds, steps, run_dir, command, reason, metrics"

-- every trial's number, state, value and last step, and its parameters (decoded once: they
-- never change)
function Storage:history()
  local rows = self:query("SELECT number, state, value, steps FROM tocha_trials WHERE sweep = ? ORDER BY number", { self.name })
  local cache, upto = self.cache, self.cache_upto or 0
  if #rows > 0 and rows[#rows].number > upto then
    for _, r in ipairs(self:query("SELECT number, params FROM tocha_trials WHERE sweep = ? AND number > ?", { self.name, upto })) do
      cache[r.number] = json.decode(r.params)
    end
    self.cache_upto = rows[#rows].number
  end
  for _, r in ipairs(rows) do r.params = cache[r.number] end
  return rows
end

-- whether process pid is running here: it exists and is not a zombie (a worker killed with
-- its parent may wait a while for init to reap it)
local function process_alive(pid)
  local ok, err = T._sys.kill(pid, "0")
  if not ok and not err:find("not permitted", 1, true) then return false end
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if not f then return true end
  local stat = f:read("a") or ""
  f:close()
  return stat:match("%)%s+(%a)") ~= "Z"
end

-- running trials whose worker stopped: a heartbeat older than stale_after, or a worker on this
-- host whose process is gone; each goes back to the queue, or fails once out of retries
local function requeue_dead(self, w, stale_after, retries)
  local rows = self:query("SELECT number, attempts, host, pid, worker, " ..
    "CASE WHEN heartbeat < {now} - CAST(? AS DOUBLE PRECISION) THEN 1 ELSE 0 END AS stale " ..
    "FROM tocha_trials WHERE sweep = ? AND state = 'running'", { stale_after, self.name })
  for _, r in ipairs(rows) do
    local dead = r.stale == 1
    if not dead and r.host == w.host and r.pid and r.worker ~= w.id then dead = not process_alive(r.pid) end
    if dead then
      local why = string.format("its worker %s stopped (attempt %d)", r.worker or "?", r.attempts)
      if r.attempts > retries then
        self:query("UPDATE tocha_trials SET state = 'failed', finished = {now}, reason = ? WHERE sweep = ? AND number = ?",
          { why .. string.format("; no retries left (retries = %d)", retries), self.name, r.number })
      else
        self:query("UPDATE tocha_trials SET state = 'queued', worker = NULL, reason = ? WHERE sweep = ? AND number = ?",
          { why .. "; queued again", self.name, r.number })
      end
    end
  end
end

--- st:claim(w, s, propose, describe) -> the trial row w now runs, or nil, "wait" (others are
--- running trials, or may be requeued) or "finished". w: {id, host, pid}; s: the sweep
--- (trials, stale_after, retries, trial_seed); propose(history, number) -> params, or nil when
--- the strategy has nothing more; describe(trial) -> its run directory and command line. All
--- in one transaction: no two workers get the same trial.
function Storage:claim(w, s, propose, describe)
  return self:transaction(function()
    requeue_dead(self, w, s.stale_after, s.retries)
    local q = self:query("SELECT number FROM tocha_trials WHERE sweep = ? AND state = 'queued' ORDER BY number LIMIT 1", { self.name })
    local number = q[1] and q[1].number
    if not number then
      local c = self:query("SELECT COUNT(*) AS n, COALESCE(MAX(number), 0) AS last FROM tocha_trials WHERE sweep = ?", { self.name })[1]
      local params
      if c.n < s.trials then
        local history = self:history()
        params = propose(history, c.last + 1)
      end
      if not params then
        local running = self:query("SELECT COUNT(*) AS n FROM tocha_trials WHERE sweep = ? AND state = 'running'", { self.name })[1].n
        return nil, running > 0 and "wait" or "finished"
      end
      number = c.last + 1
      self:query("INSERT INTO tocha_trials (sweep, number, state, params, seed, attempts) VALUES (?, ?, 'queued', ?, ?, 0)",
        { self.name, number, json.encode(params), s:trial_seed(number) })
      self.cache[number] = params
    end
    self:query("UPDATE tocha_trials SET state = 'running', attempts = attempts + 1, worker = ?, host = ?, pid = ?, " ..
      "heartbeat = {now}, started = {now}, finished = NULL, value = NULL, steps = NULL, reason = NULL WHERE sweep = ? AND number = ?",
      { w.id, w.host, w.pid, self.name, number })
    self:query("DELETE FROM tocha_reports WHERE sweep = ? AND number = ?", { self.name, number })
    local t = self:trial(number)
    if describe then
      t.run_dir, t.command = describe(t)
      self:query("UPDATE tocha_trials SET run_dir = ?, command = ? WHERE sweep = ? AND number = ?",
        { t.run_dir, t.command, self.name, number })
    end
    return t
  end)
end

--- st:trial(number) -> its row, params decoded
function Storage:trial(number)
  local r = self:query("SELECT " .. TRIAL_COLUMNS .. " FROM tocha_trials WHERE sweep = ? AND number = ?", { self.name, number })[1]
  if r then r.params = json.decode(r.params) end
  return r
end

-- an UPDATE of a trial this worker still owns; true when it did (false: it was taken over)
local function owned_update(self, t, w, set, params)
  local n = params.n or #params
  local p = table.move(params, 1, n, 1, {})
  p[n + 1], p[n + 2], p[n + 3], p[n + 4] = self.name, t.number, w.id, t.attempts
  p.n = n + 4
  local _, changed = self:query("UPDATE tocha_trials SET " .. set ..
    " WHERE sweep = ? AND number = ? AND worker = ? AND attempts = ? AND state = 'running'", p)
  return changed > 0
end

--- st:heartbeat(t, w) -> whether w still owns t
function Storage:heartbeat(t, w) return owned_update(self, t, w, "heartbeat = {now}", {}) end

--- st:report(number, {{step, value}, ...}, last_step): intermediate values (a step reported
--- twice keeps the last), and the last step the trial reached (default: the last reported)
function Storage:report(number, list, last_step)
  last_step = last_step or (list[#list] and list[#list].step)
  if not last_step then return end
  self:transaction(function()
    for _, r in ipairs(list) do
      self:query("INSERT INTO tocha_reports (sweep, number, step, value) VALUES (?, ?, ?, ?) " ..
        "ON CONFLICT (sweep, number, step) DO UPDATE SET value = excluded.value", { self.name, number, r.step, r.value })
    end
    self:query("UPDATE tocha_trials SET steps = ? WHERE sweep = ? AND number = ?", { last_step, self.name, number })
  end)
end

--- st:finish(t, w, state, {value, seconds, reason, metrics}) -> owned (false: another worker
--- took the trial over and this result is dropped)
function Storage:finish(t, w, state, r)
  return owned_update(self, t, w, "state = ?, value = ?, seconds = ?, reason = ?, metrics = ?, finished = {now}",
    { n = 5, state, r.value, r.seconds, r.reason, r.metrics and json.encode(r.metrics) or nil })
end

--- st:release(t, w): back to the queue without using up a retry (the worker is shutting down)
function Storage:release(t, w)
  return owned_update(self, t, w, "state = 'queued', attempts = attempts - 1, worker = NULL, steps = NULL", {})
end

---------------------------------------------------------------------------------------------
-- reading
---------------------------------------------------------------------------------------------
--- st:trials({params = true}) -> every trial's row in number order (params decoded if asked)
function Storage:trials(opts)
  local cols = TRIAL_COLUMNS
  if opts and opts.params == false then cols = cols:gsub("params, ", "") end
  local rows = self:query("SELECT " .. cols .. ", " .. self.sql.now .. " AS now FROM tocha_trials WHERE sweep = ? ORDER BY number", { self.name })
  if not (opts and opts.params == false) then
    for _, r in ipairs(rows) do r.params = json.decode(r.params) end
  end
  return rows
end

--- st:params_of(numbers) -> {[number] = params}
function Storage:params_of(numbers)
  local out = {}
  for i = 1, #numbers, 500 do
    local chunk = table.move(numbers, i, math.min(i + 499, #numbers), 2, { self.name })
    local marks = string.rep("?, ", #chunk - 2) .. "?"
    for _, r in ipairs(self:query("SELECT number, params FROM tocha_trials WHERE sweep = ? AND number IN (" .. marks .. ")", chunk)) do
      out[r.number] = json.decode(r.params)
    end
  end
  return out
end

--- st:reports(numbers or nil) -> {[number] = {{step, value}, ...}} in step order
function Storage:reports(numbers)
  local rows
  if numbers then
    if #numbers == 0 then return {} end
    local marks = string.rep("?, ", #numbers - 1) .. "?"
    local p = { self.name }
    table.move(numbers, 1, #numbers, 2, p)
    rows = self:query("SELECT number, step, value FROM tocha_reports WHERE sweep = ? AND number IN (" .. marks .. ") ORDER BY number, step", p)
  else
    rows = self:query("SELECT number, step, value FROM tocha_reports WHERE sweep = ? ORDER BY number, step", { self.name })
  end
  local out = {}
  for _, r in ipairs(rows) do
    local list = out[r.number] or {}
    out[r.number] = list
    if r.value then list[#list + 1] = { step = r.step, value = r.value } end
  end
  return out
end

--- st:pruning_view() -> {number, state, reports} of every trial, for a pruner. Reports of
--- finished trials are read once and kept; those of running ones each time.
function Storage:pruning_view()
  local rows = self:query("SELECT number, state FROM tocha_trials WHERE sweep = ?", { self.name })
  self.final_reports = self.final_reports or {}
  local fresh = {}
  for _, r in ipairs(rows) do
    if not (self.final_reports[r.number] and (r.state == "done" or r.state == "pruned" or r.state == "failed")) then
      fresh[#fresh + 1] = r.number
    end
  end
  local got = self:reports(fresh)
  local out = {}
  for _, r in ipairs(rows) do
    local reps = self.final_reports[r.number] or got[r.number] or {}
    if r.state == "done" or r.state == "pruned" or r.state == "failed" then self.final_reports[r.number] = reps end
    out[#out + 1] = { number = r.number, state = r.state, reports = reps }
  end
  return out
end

return storage
