-- tocha.cli.sweep: `tocha sweep run|status|best|export|plot FILE`, the commands over a sweep
-- file (tocha.sweep) and its storage. sweep.main(args) returns the exit status; calling the
-- module (what `tocha sweep` does) exits with it when it is not 0.
local T = require "tocha"
local sweep = require "tocha.sweep"
local storage = require "tocha.sweep.storage"
local worker = require "tocha.sweep.worker"
local tables = require "tocha.sweep.tables"
local sweep_plot = require "tocha.sweep.plot"

local cli = {}

local USAGE = [==[
usage: tocha sweep COMMAND FILE [options]
  run FILE      run the sweep's trials to the end; run it again to continue after a crash,
                or elsewhere on the same storage to add workers
                  --workers N        worker processes (default: the file's workers, or 1)
                  --stale SECONDS    re-queue a running trial whose heartbeat is this old
                  --quiet            no line per trial
  status FILE   the trials as a table, redrawn until the sweep ends
                  --once             print it once
                  --all              every trial (default: running, best and latest, 40 rows)
                  --every SECONDS    between redraws (default 2)
  best FILE     the best trial: parameters, value, run directory, the command that reproduces it
  export FILE   --csv OUT.csv and/or --json OUT.json: one row per trial
  plot FILE     --out sweep.png (default): value by trial, and a scatter per parameter
every command takes --storage URL: a SQLite file or postgresql://user@host/db (default: the
file's storage, or runs/<name>/sweep.db; runs is $TOCHA_RUNS when set)
]==]

local COMMANDS = {
  run = { workers = "int", stale = "number", quiet = "flag", storage = "string" },
  status = { once = "flag", all = "flag", every = "number", storage = "string" },
  best = { storage = "string" },
  export = { csv = "string", json = "string", storage = "string" },
  plot = { out = "string", width = "int", storage = "string" },
}

local function usage_error(msg) error({ usage = msg }, 0) end

local function parse(args)
  local command, file, opts = args[1], nil, {}
  if command == nil or command == "-h" or command == "--help" then return nil end
  local spec = COMMANDS[command]
  if not spec then usage_error("unknown command '" .. tostring(command) .. "' (run, status, best, export, plot)") end
  local i = 2
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then return nil end
    local name, inline = a:match("^%-%-([%w_-]+)=(.*)$")
    name = name or a:match("^%-%-([%w_-]+)$")
    if name then
      local ty = spec[name]
      if not ty then usage_error(string.format("tocha sweep %s: unknown option --%s", command, name)) end
      if ty == "flag" then opts[name] = true
      else
        local v = inline
        if not v then i = i + 1; v = args[i] end
        if v == nil then usage_error(string.format("--%s needs a value", name)) end
        if ty == "int" then
          v = math.tointeger(tonumber(v))
          if not v or v < 1 then usage_error(string.format("--%s must be a positive integer", name)) end
        elseif ty == "number" then
          v = tonumber(v)
          if not v or v < 0 then usage_error(string.format("--%s must be a number >= 0", name)) end
        end
        opts[name] = v
      end
    elseif a:sub(1, 1) == "-" then usage_error("unknown option " .. a)
    elseif file then usage_error("unexpected argument " .. a .. " (one sweep file)")
    else file = a end
    i = i + 1
  end
  if not file then usage_error("tocha sweep " .. command .. ": no sweep file given") end
  return command, file, opts
end

-- the storage of an existing sweep (status, best, export and plot never make one)
local function open_existing(sw, opts)
  local target = worker.target(sw, opts.storage)
  if not storage.is_url(target) then
    local f = io.open((target:gsub("^sqlite:", "")), "rb")
    if not f then error(string.format("sweep %s has no storage at %s yet (tocha sweep run starts it)", sw.name, target), 0) end
    f:close()
  end
  local st, err = storage.open(target, sw.name)
  if not st then error(err, 0) end
  return st
end

local function write(path, text)
  local f, err = io.open(path, "wb")
  if not f then error("cannot write " .. tostring(err), 0) end
  f:write(text)
  f:close()
end

local RUN = {}

function RUN.run(sw, opts, out) return worker.run(sw, { storage = opts.storage, workers = opts.workers, stale = opts.stale,
  quiet = opts.quiet, out = out }) end

function RUN.status(sw, opts, out)
  local st = open_existing(sw, opts)
  local tty = T._sys.isatty(io.stdout) and out == io.stdout
  local last
  repeat
    local text, finished = tables.status(sw, st, { all = opts.all })
    if tty and not opts.once then out:write("\27[H\27[2J") end
    if text ~= last or tty then out:write(text) end
    out:flush()
    last = text
    if opts.once or finished then break end
    T._sys.sleep(math.max(0.1, opts.every or 2))
  until false
  st:close()
  return 0
end

function RUN.best(sw, opts, out)
  local st = open_existing(sw, opts)
  local text, why = tables.best_text(sw, st)
  st:close()
  if not text then error(why, 0) end
  out:write(text)
  return 0
end

function RUN.export(sw, opts, out)
  if not opts.csv and not opts.json then usage_error("tocha sweep export: give --csv OUT.csv and/or --json OUT.json") end
  local st = open_existing(sw, opts)
  if opts.csv then write(opts.csv, tables.csv(sw, st)) end
  if opts.json then write(opts.json, tables.json(sw, st)) end
  st:close()
  out:write(string.format("wrote %s\n", table.concat({ opts.csv, opts.json }, " and ")))
  return 0
end

function RUN.plot(sw, opts, out)
  local st = open_existing(sw, opts)
  local rows = st:trials()
  st:close()
  local path = opts.out or "sweep.png"
  local ok, err = sweep_plot.draw(sw, rows, { path = path, width = opts.width })
  if not ok then error(err, 0) end
  out:write("wrote " .. path .. "\n")
  return 0
end

--- cli.main(args, out = io.stdout, err = io.stderr) -> exit status (2: bad usage or sweep file)
function cli.main(args, out, err_out)
  out, err_out = out or io.stdout, err_out or io.stderr
  local ok, command, file, opts = pcall(parse, args)
  if not ok then
    err_out:write("tocha sweep: ", type(command) == "table" and command.usage or tostring(command), "\n", USAGE)
    return 2
  end
  if not command then out:write(USAGE); return 0 end
  local sw, why = sweep.load(file)
  if not sw then
    err_out:write("tocha sweep: ", why, "\n")
    return 2
  end
  local ok2, code = pcall(RUN[command], sw, opts, out)
  if not ok2 then
    local msg = type(code) == "table" and code.usage or tostring(code)
    err_out:write("tocha sweep: ", msg, "\n")
    return 2
  end
  return code
end

return setmetatable(cli, { __call = function(_, args)
  local code = cli.main(args)
  if code ~= 0 then os.exit(code, true) end
  return code
end })
