-- tocha.checkpoint: training checkpoints that resume exactly. save(root, state) writes
-- root/step-<n>/ with safetensors files (model, optimizer state, EMA) and meta.lua (step, RNG
-- state, data position, the user's table, the non-tensor half of the state dicts), atomically:
-- into step-<n>.tmp, fsync, rename. load(dir) restores all of it in place; latest(root) finds
-- the newest complete checkpoint.
local T = require "tocha"
local sys = T._sys -- mkdir, mkdirs, listdir, isdir, fsync (lua/lsys.c)

local M = {}

local META = "meta.lua"
local FORMAT = 1

---------------------------------------------------------------------------------------------
-- files and directories
---------------------------------------------------------------------------------------------
local function join(dir, name) return dir:sub(-1) == "/" and dir .. name or dir .. "/" .. name end

-- raises an I/O failure (nil, message) without a position: save and load add the caller's
local function check(ok, err)
  if not ok then error("checkpoint: " .. tostring(err), 0) end
  return ok
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- the names in dir, directories without their trailing "/"
local function names(dir)
  local list = check(sys.listdir(dir))
  for i, name in ipairs(list) do list[i] = name:gsub("/$", "") end
  return list
end

local function remove_tree(path)
  if sys.isdir(path) then
    for _, name in ipairs(names(path)) do remove_tree(join(path, name)) end
  end
  check(os.remove(path))
end

-- complete checkpoints under root, oldest first: {{step = n, dir = path}, ...}
local function complete(root)
  local list = {}
  if not sys.isdir(root) then return list end
  for _, name in ipairs(names(root)) do
    local n = name:match("^step%-(%d+)$")
    local dir = join(root, name)
    if n and exists(join(dir, META)) then list[#list + 1] = { step = tonumber(n), dir = dir } end
  end
  table.sort(list, function(a, b) return a.step < b.step end)
  return list
end

---------------------------------------------------------------------------------------------
-- meta.lua: plain values written as Lua source that reads back exactly
---------------------------------------------------------------------------------------------
local function number_source(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v or v == math.huge or v == -math.huge then return string.format("%q", v) end
  local s
  for digits = 15, 17 do -- the shortest that reads back the same double (17 always does)
    s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end -- stays a float
  return s
end

local function serialize(v, indent, path, seen)
  local t = type(v)
  if t == "number" then return number_source(v) end
  if t == "string" then return string.format("%q", v) end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" or T.is_tensor(v) then
    error(string.format("checkpoint: cannot write a %s at %s into the metadata (only numbers, strings, booleans and tables)",
      T.is_tensor(v) and "tensor" or t, path), 0)
  end
  if seen[v] then error("checkpoint: a table refers to itself at " .. path, 0) end
  seen[v] = true
  local keys, n = {}, 0
  while v[n + 1] ~= nil do n = n + 1 end -- the list part, written without keys
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      if type(k) ~= "string" and type(k) ~= "number" then
        error(string.format("checkpoint: a %s key at %s cannot be written", type(k), path), 0)
      end
      keys[#keys + 1] = k
    end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  local flat = true -- a table of plain values goes on one line
  for _, x in pairs(v) do if type(x) == "table" then flat = false end end
  local inner = flat and "" or indent .. "  "
  local parts = {}
  for i = 1, n do parts[#parts + 1] = inner .. serialize(v[i], inner, path .. "[" .. i .. "]", seen) end
  for _, k in ipairs(keys) do
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. serialize(k, "", path, seen) .. "]"
    parts[#parts + 1] = inner .. ks .. " = " .. serialize(v[k], inner, path .. "." .. tostring(k), seen)
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  if flat then return "{" .. table.concat(parts, ", ") .. "}" end
  return "{\n" .. table.concat(parts, ",\n") .. ",\n" .. indent .. "}"
end

local function write_meta(path, meta)
  local src = "-- tocha checkpoint metadata (written by tocha.checkpoint.save)\nreturn "
    .. serialize(meta, "", "meta", {}) .. "\n"
  local f = check(io.open(path, "wb"))
  check(f:write(src))
  check(f:close())
end

local function read_meta(dir)
  local path = join(dir, META)
  local f, err = io.open(path, "rb")
  if not f then error("checkpoint.load: " .. tostring(err), 3) end
  local src = f:read("a")
  f:close()
  local chunk, perr = load(src, "=" .. path, "t", {}) -- no globals: data only
  if not chunk then error("checkpoint.load: " .. path .. " is damaged: " .. perr, 3) end
  local ok, meta = pcall(chunk)
  if not ok or type(meta) ~= "table" or meta.format ~= FORMAT then
    error("checkpoint.load: " .. path .. " is not a tocha checkpoint (format " .. tostring(FORMAT) .. ")", 3)
  end
  return meta
end

---------------------------------------------------------------------------------------------
-- state dicts: tensors go to a safetensors file, the rest stays in meta.lua with
-- {tensor = "name"} where a tensor was
---------------------------------------------------------------------------------------------
local function split(v, name, tensors)
  if T.is_tensor(v) then
    if tensors[name] then error("checkpoint: two tensors would be saved as " .. name, 0) end
    tensors[name] = v
    return { tensor = name }
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = split(x, name == "" and tostring(k) or name .. "." .. tostring(k), tensors) end
  return out
end

local function rejoin(v, tensors, file)
  if type(v) ~= "table" then return v end
  if type(v.tensor) == "string" and next(v, next(v)) == nil then
    return tensors[v.tensor] or error("checkpoint.load: " .. file .. " has no tensor " .. v.tensor, 0)
  end
  local out = {}
  for k, x in pairs(v) do out[k] = rejoin(x, tensors, file) end
  return out
end

-- a model's tensors by name: a module's state_dict, a list of tensors ("1", "2", ...) or a
-- table of name -> tensor
local function model_tensors(m)
  if type(m) == "table" and type(m.state_dict) == "function" then return m:state_dict() end
  if T.is_tensor(m) then m = { m } end
  if type(m) ~= "table" then error("checkpoint: model must be a module, a list of tensors or a table of tensors", 0) end
  local out = {}
  for k, t in pairs(m) do
    if not T.is_tensor(t) then error("checkpoint: model entry " .. tostring(k) .. " is not a tensor", 0) end
    out[tostring(k)] = t
  end
  return out
end

local function load_model(m, tensors, file)
  if type(m) == "table" and type(m.load_state_dict) == "function" then return m:load_state_dict(tensors) end
  if T.is_tensor(m) then m = { m } end
  T.no_grad(function()
    for k, t in pairs(m) do
      local src = tensors[tostring(k)] or error("checkpoint.load: " .. file .. " has no tensor " .. tostring(k), 0)
      if src:numel() ~= t:numel() then
        error(string.format("checkpoint.load: tensor %s has %d elements in %s, %d in the model", tostring(k),
          src:numel(), file, t:numel()), 0)
      end
      t:copy_(src:reshape(t.shape))
    end
  end)
end

---------------------------------------------------------------------------------------------
-- the interface
---------------------------------------------------------------------------------------------
local PARTS = { model = true, optimizer = true, ema = true, scaler = true, step = true, extra = true, data = true,
  keep = true, config = true, files = true }

--- checkpoint.save(root, {model =, optimizer =, ema =, scaler =, step = n, extra = {...}, data = {...},
--- config = {...}, files = function(dir), keep = N}) -> the directory written (root/step-<n>).
--- The RNG state is saved too (and a GradScaler's scale, growth count and skips in meta.lua).
--- config: the run's resolved options (what a resume compares); files(dir) writes more files
--- into the checkpoint before it is complete (a model's configs and tokenizer, so that the
--- checkpoint is usable on its own). With keep, only the newest N complete checkpoints stay.
--- A crash at any point leaves the previous
--- checkpoints as they were (a half-written step-<n>.tmp is ignored, and removed by the next save).
function M.save(root, state)
  if type(root) ~= "string" or root == "" then error("checkpoint.save: expected a directory name", 2) end
  if type(state) ~= "table" then error("checkpoint.save: expected a state table", 2) end
  for k in pairs(state) do
    if not PARTS[k] then error(string.format("checkpoint.save: unknown field %q", tostring(k)), 2) end
  end
  local step = state.step
  if math.type(step) ~= "integer" or step < 0 then
    error("checkpoint.save: step must be a non-negative integer (got " .. tostring(step) .. ")", 2)
  end
  local keep = state.keep
  if keep ~= nil and (math.type(keep) ~= "integer" or keep < 1) then
    error("checkpoint.save: keep must be a positive integer", 2)
  end
  if state.files ~= nil and type(state.files) ~= "function" then error("checkpoint.save: files must be a function(dir)", 2) end
  if state.config ~= nil and type(state.config) ~= "table" then error("checkpoint.save: config must be a table", 2) end
  local data = state.data
  if type(data) == "table" and type(data.state_dict) == "function" then data = data:state_dict() end
  local meta = { format = FORMAT, step = step, time = sys.now(), rng = T.get_rng_state(), extra = state.extra,
    data = data, config = state.config, scaler = state.scaler and state.scaler:state_dict() or nil }

  local ok, err = pcall(function()
    check(sys.mkdirs(root))
    for _, name in ipairs(names(root)) do -- leftovers of crashed saves
      if name:match("^step%-%d+%.tmp$") or name:match("^step%-%d+%.old$") then remove_tree(join(root, name)) end
    end
    local final = join(root, "step-" .. step)
    local tmp = final .. ".tmp"
    check(sys.mkdir(tmp))
    local function write(file, tensors)
      local path = join(tmp, file)
      T.save(path, tensors)
      check(sys.fsync(path))
      return file
    end
    if state.model then meta.model = write("model.safetensors", model_tensors(state.model)) end
    if state.optimizer then
      local tensors = {}
      meta.optimizer = split(state.optimizer:state_dict(), "", tensors)
      meta.optimizer_file = write("optimizer.safetensors", tensors)
    end
    if state.ema then
      local tensors = {}
      meta.ema = split(state.ema:state_dict(), "", tensors)
      meta.ema_file = write("ema.safetensors", tensors)
    end
    if state.files then state.files(tmp) end
    write_meta(join(tmp, META), meta)
    check(sys.fsync(join(tmp, META)))
    check(sys.fsync(tmp))
    if sys.isdir(final) then -- the same step saved again: the old copy goes only once the new is in place
      check(os.rename(final, final .. ".old"))
      check(os.rename(tmp, final))
      remove_tree(final .. ".old")
    else
      check(os.rename(tmp, final))
    end
    check(sys.fsync(root))
    if keep then
      local list = complete(root)
      for i = 1, #list - keep do remove_tree(list[i].dir) end
    end
    return final
  end)
  if not ok then
    local msg = tostring(err):gsub("^checkpoint: ", "")
    error("checkpoint.save: " .. msg, 2)
  end
  return err
end

--- checkpoint.latest(root) -> the newest complete checkpoint directory under root, or nil
function M.latest(root)
  if type(root) ~= "string" then error("checkpoint.latest: expected a directory name", 2) end
  local list = complete(root)
  return list[#list] and list[#list].dir or nil
end

--- checkpoint.info(dir_or_root) -> {step =, time =, config =, extra =, dir =} of a checkpoint (a root:
--- its latest), without loading any tensor; nil when there is none
function M.info(path)
  if type(path) ~= "string" then error("checkpoint.info: expected a directory name", 2) end
  local dir = exists(join(path, META)) and path or M.latest(path)
  if not dir then return nil end
  local meta = read_meta(dir)
  return { step = meta.step, time = meta.time, config = meta.config, extra = meta.extra, dir = dir }
end

--- checkpoint.load(dir_or_root, {model =, optimizer =, ema =, scaler =, data =, rng = true}) restores in
--- place what it is given, and the RNG state (unless rng = false); returns {step =, extra =,
--- data =, dir =}. A root directory loads its latest checkpoint. data: an object with
--- load_state_dict receives the saved position too.
function M.load(path, targets)
  if type(path) ~= "string" then error("checkpoint.load: expected a directory name", 2) end
  targets = targets or {}
  local dir = path
  if not exists(join(path, META)) then
    dir = M.latest(path)
    if not dir then error("checkpoint.load: no complete checkpoint in " .. path, 2) end
  end
  local meta = read_meta(dir)
  local function tensors_of(file, what)
    if not file then error(string.format("checkpoint.load: %s holds no %s", dir, what), 0) end
    local ts = T.load(join(dir, file))
    return ts, join(dir, file)
  end
  local ok, err = pcall(function()
    if targets.model then
      local ts, file = tensors_of(meta.model, "model")
      load_model(targets.model, ts, file)
    end
    if targets.optimizer then
      local ts, file = tensors_of(meta.optimizer_file, "optimizer state")
      targets.optimizer:load_state_dict(rejoin(meta.optimizer, ts, file))
    end
    if targets.ema then
      local ts, file = tensors_of(meta.ema_file, "EMA")
      targets.ema:load_state_dict(rejoin(meta.ema, ts, file))
    end
    if targets.scaler then
      if not meta.scaler then error(string.format("checkpoint.load: %s holds no GradScaler state", dir), 0) end
      targets.scaler:load_state_dict(meta.scaler)
    end
    if type(targets.data) == "table" and type(targets.data.load_state_dict) == "function" then
      targets.data:load_state_dict(meta.data)
    end
  end)
  if not ok then
    local msg = tostring(err):gsub("^checkpoint%.load: ", ""):gsub("^checkpoint: ", "")
    error("checkpoint.load: " .. msg, 2)
  end
  if targets.rng ~= false then T.set_rng_state(meta.rng) end
  return { step = meta.step, extra = meta.extra, data = meta.data, config = meta.config, dir = dir }
end

return M
