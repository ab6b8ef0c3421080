-- tocha/nn/module.lua: nn.Module, the base of every layer and model, nn.Parameter, and the
-- containers Sequential, ModuleList and ModuleDict. A module registers the parameters, buffers
-- and child modules assigned to it (self.fc = nn.Linear(4, 8)) in order, so that state_dict
-- names are PyTorch's dotted paths ("blocks.0.attn.to_q.weight") and PyTorch weights load by name.
local T = require "tocha"

local M = {}

---------------------------------------------------------------------------
-- parameters: tensors marked in a weak set (a tensor userdata carries no fields of its own)
---------------------------------------------------------------------------
local param_set = setmetatable({}, { __mode = "k" })

--- nn.Parameter(t, requires_grad = true): marks t (detached first if it is not a leaf) as a
--- parameter, so that assigning it to a module field registers it. Returns the tensor.
function M.Parameter(t, requires_grad)
  if not T.is_tensor(t) then error("nn.Parameter: expected a tensor, got " .. type(t), 2) end
  if not t.is_leaf then t = t:detach() end
  t.requires_grad = requires_grad ~= false
  param_set[t] = true
  return t
end

function M.is_parameter(t) return param_set[t] == true end

---------------------------------------------------------------------------
-- the class machinery
---------------------------------------------------------------------------
-- An instance keeps its registered tensors and children in maps (never as raw fields), so every
-- assignment to them goes through __newindex; plain attributes (numbers, config) are raw fields.
local KINDS = { parameter = "_parameters", buffer = "_buffers", module = "_modules" }
local METAMETHODS = { "__index", "__newindex", "__call", "__tostring", "__len" }
local FLOAT = { f32 = true, f64 = true, f16 = true, bf16 = true }
local DTYPES = { f32 = true, f64 = true, f16 = true, bf16 = true, i32 = true, i64 = true, u8 = true, bool = true }

local Module = { __name = "Module" }
M.Module = Module

local function is_module(v) return type(v) == "table" and rawget(v, "_modules") ~= nil end
M.is_module = is_module

local function new_instance(cls, ...)
  local self = setmetatable({
    _parameters = {}, _buffers = {}, _modules = {},
    _kind = {},                                          -- name -> "parameter" | "buffer" | "module"
    _names = { parameter = {}, buffer = {}, module = {} }, -- registration order per kind
    _nonpersistent = {},                                 -- buffers left out of state_dict
    training = true,
  }, cls)
  -- init's errors belong to the line that made the module. Under pcall, one raised for init's
  -- caller (level 2) has no position and one for the caller's caller (level 3) points at the
  -- pcall's line (hence `here` on the same line): both are raised again at our caller.
  -- Errors from deeper down keep their position.
  local ok, err = pcall(self.init, self, ...); local here = debug.getinfo(1, "Sl")
  if not ok then
    if type(err) ~= "string" then error(err, 0) end
    local own = here.short_src .. ":" .. here.currentline .. ": "
    if err:sub(1, #own) == own then err = err:sub(#own + 1)
    elseif err:find("^[^\n]-:%d+: ") then error(err, 0) end
    error(err, 2)
  end
  return self
end

local function class_meta(parent)
  return {
    __index = parent,
    __call = new_instance,
    __tostring = function(cls) return "class " .. rawget(cls, "__name") end,
  }
end

--- Module:extend(name): a subclass. Define cls:init(...) (the constructor: assign layers and
--- parameters there) and cls:forward(...); instances are made by calling the class.
function Module.extend(parent, name)
  if type(name) ~= "string" then error("Module:extend: give the class a name, e.g. nn.Module:extend(\"MyNet\")", 2) end
  local cls = { __name = name, super = parent }
  for _, mm in ipairs(METAMETHODS) do cls[mm] = parent[mm] end
  return setmetatable(cls, class_meta(parent))
end
setmetatable(Module, class_meta(nil))

function Module:init() end

function Module:forward()
  error(self.__name .. ": forward is not implemented", 2)
end

function Module:__call(...) return self:forward(...) end

function Module:__len() return #self._names.module end

--- extra_repr(): the text inside the parentheses of this module's line in tostring(model)
function Module:extra_repr() return "" end

-- lookup: registered tensors and children, then container positions, then the class
function Module:__index(k)
  local v = rawget(self, "_parameters")[k]
  if v ~= nil then return v end
  v = self._buffers[k]
  if v ~= nil then return v end
  v = self._modules[k]
  if v ~= nil then return v end
  if math.type(k) == "integer" then -- seq[1] is child "0"; seq[-1] the last
    if k < 0 then k = #self._names.module + k + 1 end
    return self._modules[tostring(k - 1)]
  end
  return getmetatable(self)[k]
end

local function remove_name(list, name)
  for i, n in ipairs(list) do
    if n == name then table.remove(list, i); return end
  end
end

local function check_name(self, name, what)
  if type(name) ~= "string" then error(what .. " name must be a string, got " .. type(name), 3) end
  if name == "" or name:find(".", 1, true) then
    error(string.format("%s name %q must be non-empty and contain no \".\"", what, name), 3)
  end
  if rawget(self, name) ~= nil or type(getmetatable(self)[name]) == "function" then
    error(string.format("attribute %q already exists", name), 3) -- it would hide a field or a method
  end
end

-- puts v under name in the registry of kind, moving the name out of another kind
local function register(self, kind, name, v)
  local old = self._kind[name]
  if old ~= kind then
    if old then
      self[KINDS[old]][name] = nil
      remove_name(self._names[old], name)
    end
    self._kind[name] = kind
    local names = self._names[kind]
    names[#names + 1] = name
  end
  self[KINDS[kind]][name] = v
end

function Module:__newindex(k, v)
  if math.type(k) == "integer" then -- seq[i] = module replaces child i (or appends at #seq + 1)
    local n = #self._names.module
    if k < 0 then k = n + k + 1 end
    if not is_module(v) then error("only a module can be assigned to position " .. k, 2) end
    if k < 1 or k > n + 1 then error(string.format("position %d is out of range (%d children)", k, n), 2) end
    register(self, "module", tostring(k - 1), v)
    return
  end
  local kind = self._kind[k]
  if is_module(v) then
    if not kind then check_name(self, k, "module") end
    register(self, "module", k, v)
  elseif T.is_tensor(v) and param_set[v] and kind ~= "buffer" then
    if not kind then check_name(self, k, "parameter") end
    register(self, "parameter", k, v)
  elseif kind == "parameter" then
    if v ~= nil then
      error(string.format("cannot assign a %s to parameter %q (wrap a tensor in nn.Parameter)",
        T.is_tensor(v) and "plain tensor" or type(v), k), 2)
    end
    self._parameters[k] = nil
  elseif kind == "buffer" then
    if v ~= nil and not T.is_tensor(v) then error(string.format("cannot assign a %s to buffer %q", type(v), k), 2) end
    self._buffers[k] = v
  elseif kind == "module" then
    if v ~= nil then error(string.format("cannot assign a %s to child module %q", type(v), k), 2) end
    self._modules[k] = nil
  else
    rawset(self, k, v)
  end
end

---------------------------------------------------------------------------
-- registration
---------------------------------------------------------------------------
--- register_parameter(name, t): t (a tensor, marked as a parameter here, or nil) under name
function Module:register_parameter(name, t)
  if self._kind[name] == nil then check_name(self, name, "parameter") end
  if t ~= nil then
    if not T.is_tensor(t) then error("register_parameter: expected a tensor or nil, got " .. type(t), 2) end
    if not param_set[t] then t = M.Parameter(t) end
  end
  register(self, "parameter", name, t)
  return t
end

--- register_buffer(name, t, persistent = true): a tensor that is state but not a parameter
--- (running statistics, masks); non-persistent buffers stay out of state_dict
function Module:register_buffer(name, t, persistent)
  if self._kind[name] == nil then check_name(self, name, "buffer") end
  if t ~= nil and not T.is_tensor(t) then error("register_buffer: expected a tensor or nil, got " .. type(t), 2) end
  register(self, "buffer", name, t)
  self._nonpersistent[name] = persistent == false or nil
  return t
end

--- add_module(name, m): the same as self[name] = m, for names that are not identifiers
function Module:add_module(name, m)
  if not is_module(m) then error("add_module: expected a module, got " .. type(m), 2) end
  if self._kind[name] == nil then check_name(self, name, "module") end
  register(self, "module", name, m)
  return m
end
Module.register_module = Module.add_module

---------------------------------------------------------------------------
-- traversal
---------------------------------------------------------------------------
local function join(prefix, name) return prefix == "" and name or prefix .. "." .. name end

-- { {name, module}, ... } in pre-order, each module once
local function module_list(root)
  local out, seen = {}, {}
  local function walk(m, prefix)
    if seen[m] then return end
    seen[m] = true
    out[#out + 1] = { prefix, m }
    for _, name in ipairs(m._names.module) do
      local c = m._modules[name]
      if c then walk(c, join(prefix, name)) end
    end
  end
  walk(root, "")
  return out
end

-- { {name, tensor}, ... } of one kind over the tree, each tensor once
local function tensor_list(root, kind, recurse)
  local out, seen = {}, {}
  local mods = recurse == false and { { "", root } } or module_list(root)
  for _, pm in ipairs(mods) do
    local prefix, m = pm[1], pm[2]
    local map = m[KINDS[kind]]
    for _, name in ipairs(m._names[kind]) do
      local t = map[name]
      if t ~= nil and not seen[t] then
        seen[t] = true
        out[#out + 1] = { join(prefix, name), t }
      end
    end
  end
  return out
end

local function pairs_iter(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

local function values(list)
  local out = {}
  for i, e in ipairs(list) do out[i] = e[2] end
  return out
end

--- parameters(recurse = true): a list of the parameter tensors (each once, tied weights too)
function Module:parameters(recurse) return values(tensor_list(self, "parameter", recurse)) end
--- named_parameters(): an iterator: for name, p in m:named_parameters() do ... end
function Module:named_parameters(recurse) return pairs_iter(tensor_list(self, "parameter", recurse)) end
function Module:buffers(recurse) return values(tensor_list(self, "buffer", recurse)) end
function Module:named_buffers(recurse) return pairs_iter(tensor_list(self, "buffer", recurse)) end

local function child_list(self)
  local out = {}
  for _, name in ipairs(self._names.module) do
    local c = self._modules[name]
    if c then out[#out + 1] = { name, c } end
  end
  return out
end

--- children(): a list of the direct children; named_children(): an iterator of (name, child)
function Module:children() return values(child_list(self)) end
function Module:named_children() return pairs_iter(child_list(self)) end
--- modules(): a list of every module in the tree, self first; named_modules(): (name, module)
function Module:modules() return values(module_list(self)) end
function Module:named_modules() return pairs_iter(module_list(self)) end

---------------------------------------------------------------------------
-- state
---------------------------------------------------------------------------
-- name -> tensor for every persistent tensor; no de-duplication, as in PyTorch, so a weight
-- shared by two modules is saved under both names
local function collect_state(m, prefix, out, keep_vars)
  for _, name in ipairs(m._names.parameter) do
    local t = m._parameters[name]
    if t ~= nil then out[prefix .. name] = keep_vars and t or t:detach() end
  end
  for _, name in ipairs(m._names.buffer) do
    local t = m._buffers[name]
    if t ~= nil and not m._nonpersistent[name] then out[prefix .. name] = keep_vars and t or t:detach() end
  end
  for _, name in ipairs(m._names.module) do
    local c = m._modules[name]
    if c then collect_state(c, prefix .. name .. ".", out, keep_vars) end
  end
  return out
end

--- state_dict({keep_vars = false}): a table name -> tensor (detached, sharing storage) of every
--- parameter and persistent buffer; T.save(path, m:state_dict()) writes a checkpoint
function Module:state_dict(opts)
  return collect_state(self, "", {}, opts and opts.keep_vars)
end

local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

local function same_shape(a, b)
  local sa, sb = a.shape, b.shape
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  return true
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- the problems of a load, one per line, the first LIST_LIMIT of them and a count of the rest:
-- "missing keys: a" then the other missing keys aligned under it, the same for unexpected
-- keys, then the shape mismatches; nil when there are none
local LIST_LIMIT = 20
local function report_problems(missing, unexpected, bad)
  local n = #missing + #unexpected + #bad
  if n == 0 then return nil end
  local counts = {}
  for _, c in ipairs({ { #missing, "missing key" }, { #unexpected, "unexpected key" }, { #bad, "bad tensor" } }) do
    if c[1] > 0 then counts[#counts + 1] = string.format("%d %s%s", c[1], c[2], c[1] > 1 and "s" or "") end
  end
  local lines = {}
  for _, group in ipairs({ { "missing keys: ", missing }, { "unexpected keys: ", unexpected }, { "", bad } }) do
    for i, item in ipairs(group[2]) do
      if #lines == LIST_LIMIT then break end
      lines[#lines + 1] = (i == 1 and group[1] or string.rep(" ", #group[1])) .. item
    end
  end
  if n > #lines then lines[#lines + 1] = string.format("... and %d more (%d in all)", n - #lines, n) end
  return table.concat(counts, ", ") .. "\n  " .. table.concat(lines, "\n  ")
end

--- load_state_dict(sd, strict = true): copies sd's tensors into this module's parameters and
--- buffers in place (no_grad; dtype and device converted to the module's). Every problem is
--- found before anything is copied and reported in one error: missing and unexpected keys
--- (strict only) and shape mismatches (always). Returns {missing_keys, unexpected_keys}. A
--- module class may define state_defaults() -> {name = tensor} for state an older checkpoint
--- may lack (BatchNorm's num_batches_tracked), used when sd has no such key.
--- strict may also be given as {strict = false}.
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then error("load_state_dict: expected a table name -> tensor, got " .. type(sd), 2) end
  if type(strict) == "table" then strict = strict.strict end
  if strict == nil then strict = true end
  local own = collect_state(self, "", {}, true)
  -- what a module may take from its own defaults when an older checkpoint lacks it
  local defaults = {}
  for prefix, m in self:named_modules() do
    if m.state_defaults then
      for k, t in pairs(m:state_defaults()) do defaults[join(prefix, k)] = t end
    end
  end
  local missing, unexpected, bad = {}, {}, {}
  for _, k in ipairs(sorted_keys(own)) do
    local v, t = sd[k] or defaults[k], own[k]
    if v == nil then missing[#missing + 1] = k
    elseif not T.is_tensor(v) then
      bad[#bad + 1] = string.format("%s: expected a tensor, got a %s", k, type(v))
    elseif not same_shape(v, t) then
      bad[#bad + 1] = string.format("size mismatch for %s: the checkpoint has shape %s, the model %s",
        k, shape_str(v), shape_str(t))
    end
  end
  for _, k in ipairs(sorted_keys(sd)) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  local problems = report_problems(strict and missing or {}, strict and unexpected or {}, bad)
  if problems then error(string.format("load_state_dict: error(s) loading into %s: %s", self.__name, problems), 2) end
  T.no_grad(function()
    for k, t in pairs(own) do
      local v = sd[k] or defaults[k]
      if v ~= nil then t:copy_(v:to(t.device)) end
    end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

---------------------------------------------------------------------------
-- modes, conversion, gradients
---------------------------------------------------------------------------
--- train(mode = true) / eval(): sets `training` on every module in the tree; returns self
function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode and true or false) end
  return self
end

function Module:eval() return self:train(false) end

--- apply(fn): fn(m) on every module, children before their parent (as PyTorch); returns self
function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

-- the dtype, device and memory format named by to()'s arguments: strings, or a table
-- {dtype =, device =, memory_format =}
local function target(...)
  local dt, dev, fmt
  for i = 1, select("#", ...) do
    local a = select(i, ...)
    if type(a) == "table" then dt, dev, fmt = a.dtype or dt, a.device or dev, a.memory_format or fmt
    elseif type(a) == "string" then
      if DTYPES[a] then dt = a else dev = a end
    elseif a ~= nil then error("to: expected a dtype or device string, got " .. type(a), 3) end
  end
  if dt and not FLOAT[dt] then error("to: a module's dtype must be floating (f32, f64, f16, bf16), got " .. dt, 3) end
  if fmt ~= nil and fmt ~= "channels_last" and fmt ~= "contiguous_format" then
    error("to: memory_format must be \"contiguous_format\" or \"channels_last\", got " .. tostring(fmt), 3)
  end
  return dt, dev, fmt
end

--- to(device or dtype, ...): converts parameters and buffers IN PLACE (t.data = converted),
--- so the tensor objects an optimizer already holds stay the ones the module uses; gradients
--- are converted too. A dtype applies to floating tensors only (integer buffers keep theirs).
--- to{memory_format = "channels_last"} lays out the 4-d ones (conv weights) channels-last
--- ("contiguous_format" back). Returns self.
function Module:to(...)
  local dt, dev, fmt = target(...)
  local function convert(t)
    local args = {}
    if dt and FLOAT[t.dtype] then args[#args + 1] = dt end
    if dev then args[#args + 1] = dev end
    local layout = fmt and t:dim() == 4 and FLOAT[t.dtype] and not t:is_contiguous{ memory_format = fmt }
    if #args == 0 and not layout then return t end
    local function move(x)
      if #args > 0 then x = x:to(table.unpack(args)) end
      return layout and x:contiguous{ memory_format = fmt } or x
    end
    local g = t.grad
    local new = move(t:detach())
    if not t.is_leaf then return new end
    t.data = new
    if g then t.grad = move(g) end
    return t
  end
  T.no_grad(function()
    local done = {}
    for _, m in ipairs(self:modules()) do
      for _, kind in ipairs({ "parameter", "buffer" }) do
        local map = m[KINDS[kind]]
        for _, name in ipairs(m._names[kind]) do
          local t = map[name]
          if t ~= nil then
            if done[t] == nil then done[t] = convert(t) end
            map[name] = done[t]
          end
        end
      end
    end
  end)
  return self
end

function Module:float() return self:to("f32") end
function Module:double() return self:to("f64") end
function Module:half() return self:to("f16") end
function Module:bfloat16() return self:to("bf16") end
function Module:cuda() return self:to("cuda") end
function Module:cpu() return self:to("cpu") end

--- zero_grad(): clears every parameter's .grad (sets it to nil)
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
  return self
end

--- requires_grad_(flag = true): sets requires_grad on every parameter (false freezes); returns self
function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p.requires_grad = flag end
  return self
end

--- num_parameters({trainable = false}): the number of scalars in the parameters (each tensor
--- once); trainable = true counts only those that require grad
function Module:num_parameters(opts)
  local only = opts and opts.trainable
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not only or p.requires_grad then n = n + p:numel() end
  end
  return n
end

---------------------------------------------------------------------------
-- printing: the tree, PyTorch's layout, with the parameter count of every module that has any
---------------------------------------------------------------------------
local function thousands(n)
  local s = tostring(n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

local function repr(m, indent)
  local n = m:num_parameters()
  local count = n > 0 and ("  [" .. thousands(n) .. " params]") or ""
  local extra = m:extra_repr()
  local kids = child_list(m)
  if #kids == 0 then return m.__name .. "(" .. extra .. ")" .. count end
  local inner = indent .. "  "
  local lines = { m.__name .. "(" .. count }
  if extra ~= "" then lines[#lines + 1] = inner .. extra end
  for _, e in ipairs(kids) do lines[#lines + 1] = inner .. "(" .. e[1] .. "): " .. repr(e[2], inner) end
  lines[#lines + 1] = indent .. ")"
  return table.concat(lines, "\n")
end

function Module:__tostring() return repr(self, "") end

---------------------------------------------------------------------------
-- containers
---------------------------------------------------------------------------
-- a list of modules given as arguments or as one table
local function module_args(what, ...)
  local n = select("#", ...)
  local list = { ... }
  if n == 1 and type(list[1]) == "table" and not is_module(list[1]) then
    list = list[1]
    n = #list
  end
  for i = 1, n do
    if not is_module(list[i]) then
      error(string.format("%s: element %d is a %s, not a module", what, i, type(list[i])), 3)
    end
  end
  return list, n
end

--- nn.Sequential(m1, m2, ...) or nn.Sequential({m1, m2, ...}): children "0", "1", ... (their
--- state_dict names); Lua access seq[1], #seq, ipairs(seq). forward passes x through each.
local Sequential = Module:extend("Sequential")
M.Sequential = Sequential

function Sequential:init(...)
  local list, n = module_args("Sequential", ...)
  for i = 1, n do self:append(list[i]) end
end

function Sequential:append(m)
  if not is_module(m) then error(self.__name .. ":append: expected a module, got " .. type(m), 2) end
  register(self, "module", tostring(#self), m)
  return self
end
Sequential.add = Sequential.append

function Sequential:forward(x)
  for _, m in ipairs(self:children()) do x = m(x) end
  return x
end

--- nn.ModuleList({m1, m2, ...}): children "0", "1", ...; ml[i], #ml, ipairs(ml), ml:append(m),
--- ml:extend(list), ml:insert(i, m). It holds modules; it has no forward.
local ModuleList = Module:extend("ModuleList")
M.ModuleList = ModuleList

function ModuleList:init(...)
  local list, n = module_args("ModuleList", ...)
  for i = 1, n do self:append(list[i]) end
end

ModuleList.append = Sequential.append

function ModuleList:extend(list)
  local l, n = module_args("ModuleList:extend", list)
  for i = 1, n do self:append(l[i]) end
  return self
end

--- insert(i, m): m becomes element i, the rest shift up (and are renamed, as in PyTorch)
function ModuleList:insert(i, m)
  local list = self:children()
  if i < 0 then i = #list + i + 2 end
  if i < 1 or i > #list + 1 then error(string.format("insert: position %d is out of range (%d elements)", i, #list), 2) end
  table.insert(list, i, m)
  for k = 1, #list do register(self, "module", tostring(k - 1), list[k]) end
  return self
end

function ModuleList:forward()
  error("ModuleList has no forward: iterate over it in the parent's forward", 2)
end

--- nn.ModuleDict({name = m, ...}): children by name (a table's keys are registered in sorted
--- order; assign md.name = m for an explicit order); md.name, md[name], md:keys(), md:items()
local ModuleDict = Module:extend("ModuleDict")
M.ModuleDict = ModuleDict

function ModuleDict:init(tbl)
  if tbl == nil then return end
  if type(tbl) ~= "table" or is_module(tbl) then error("ModuleDict: expected a table name -> module", 2) end
  for _, k in ipairs(sorted_keys(tbl)) do
    if not is_module(tbl[k]) then error(string.format("ModuleDict: entry %q is a %s, not a module", k, type(tbl[k])), 2) end
    self:add_module(k, tbl[k])
  end
end

function ModuleDict:keys()
  local out = {}
  for _, e in ipairs(child_list(self)) do out[#out + 1] = e[1] end
  return out
end
function ModuleDict:values() return self:children() end
function ModuleDict:items() return self:named_children() end
function ModuleDict:contains(k) return self._modules[k] ~= nil end

function ModuleDict:forward()
  error("ModuleDict has no forward: index it in the parent's forward", 2)
end

-- m.eval() for m:eval() names the mistake (extend is called on classes, init by the constructor)
local guard = require "tocha.guard"
for _, cls in ipairs({ Module, Sequential, ModuleList, ModuleDict }) do
  guard.methods(cls, is_module, "m", cls.__name, { extend = true, init = true })
end

return M
