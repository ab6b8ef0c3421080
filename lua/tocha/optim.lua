-- tocha.optim: optimizers (SGD, Adam, AdamW) over parameter groups, gradient clipping, and an
-- exponential moving average of weights (EMA). Each parameter's update is one fused C kernel
-- (T._optim, lua/loptim.c) following PyTorch's formulas; this file keeps the groups, the
-- per-parameter state and the state dicts, with PyTorch's names and layout.
local T = require "tocha"
local C = T._optim

local M = {}

---------------------------------------------------------------------------------------------
-- parameters: a module (anything with parameters()), a list of tensors, or one tensor
---------------------------------------------------------------------------------------------
local function param_list(x, who, level)
  level = (level or 2) + 1
  if T.is_tensor(x) then return { x } end
  if type(x) ~= "table" then
    error(string.format("%s: expected a module, a list of tensors or a tensor, got a %s", who, type(x)), level)
  end
  if type(x.parameters) == "function" then x = x:parameters() end
  local out = {}
  for i, p in ipairs(x) do
    if not T.is_tensor(p) then
      error(string.format("%s: parameter %d is a %s, expected a tensor", who, i, type(p)), level)
    end
    out[i] = p
  end
  return out
end

local function is_group_list(x)
  return type(x) == "table" and not T.is_tensor(x) and type(x.parameters) ~= "function"
    and type(x[1]) == "table" and not T.is_tensor(x[1]) and x[1].params ~= nil
end

-- {lr = 0.1, betas = {0.9, 0.999}} -> a copy one level deep (betas is copied too)
local function copy_options(t)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "table" and not T.is_tensor(v) then
      local c = {}
      for i, x in ipairs(v) do c[i] = x end
      v = c
    end
    out[k] = v
  end
  return out
end

---------------------------------------------------------------------------------------------
-- the optimizers: defaults, checks, and one update per parameter
---------------------------------------------------------------------------------------------
-- the checks return a message for the first bad option, or nil
local function bad_range(name, v, lo, hi, open_hi)
  if type(v) ~= "number" or v ~= v or v < lo or (open_hi and v >= hi) or (not open_hi and v > hi) then
    return string.format("%s must be a number in [%g, %g%s (got %s)", name, lo, hi, open_hi and ")" or "]",
      tostring(v))
  end
end

local function check_adam(g)
  if type(g.betas) ~= "table" or #g.betas ~= 2 then return "betas must be a pair {beta1, beta2}" end
  return bad_range("lr", g.lr, 0, math.huge) or bad_range("lr_scale", g.lr_scale, 0, math.huge)
    or bad_range("eps", g.eps, 0, math.huge)
    or bad_range("weight_decay", g.weight_decay, 0, math.huge)
    or bad_range("betas[1]", g.betas[1], 0, 1, true) or bad_range("betas[2]", g.betas[2], 0, 1, true)
end

local function check_sgd(g)
  local msg = bad_range("lr", g.lr, 0, math.huge) or bad_range("lr_scale", g.lr_scale, 0, math.huge)
    or bad_range("momentum", g.momentum, 0, math.huge)
    or bad_range("weight_decay", g.weight_decay, 0, math.huge)
    or bad_range("dampening", g.dampening, -math.huge, math.huge)
  if not msg and g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
    msg = "nesterov momentum requires a momentum and zero dampening"
  end
  return msg
end

local function adam_state(self, g, p)
  local st = self.state[p]
  if not st then
    st = { step = 0, exp_avg = T.zeros_like(p), exp_avg_sq = T.zeros_like(p) }
    self.state[p] = st
  end
  if g.amsgrad and not st.max_exp_avg_sq then st.max_exp_avg_sq = T.zeros_like(p) end
  return st
end

local function adam_update(self, g, p, grad)
  local st = adam_state(self, g, p)
  st.step = st.step + 1
  self.kind.step(p, grad, st, g)
end

-- On CUDA the multi-tensor updates read their per-step scalars (learning rate, bias
-- corrections) from a device buffer, one per group and list, so that a CUDA graph's capture of
-- a step replays with each step's values: while a capture runs, the update reads what a
-- function run before each replay writes (tocha.graph's on_replay), from the step counts and
-- learning rate then; the step counts advance at each replay.
local function capturing() return T.cuda.is_current_stream_capturing() end

local function device_scalars(self, g, ps)
  local key = ps[1].device .. " " .. ps[1].dtype
  local per = self._scalars[g]
  if not per then per = {}; self._scalars[g] = per end
  local buf = per[key]
  if not buf or buf:numel() < #ps * 16 then -- 16 f64 = one 128-byte slot per run of equal steps
    buf = T.empty({ #ps * 16 }, { dtype = "f64", device = ps[1].device })
    per[key] = buf
  end
  return buf
end

local function no_state_in_capture(self, name)
  error("optim." .. self.name .. ": a parameter has no " .. name .. " yet, and a CUDA graph is capturing: "
        .. "run one step before the capture (a warm-up), so that the state exists", 3)
end

-- the multi-tensor updates: ps and grads are lists of one device and dtype
local function adam_multi(self, g, ps, grads)
  local capture = capturing()
  local states = {}
  for i, p in ipairs(ps) do
    if capture and not self.state[p] then no_state_in_capture(self, "state") end
    local st = adam_state(self, g, p)
    if not capture then st.step = st.step + 1 end
    states[i] = st
  end
  local decoupled = self.kind.decoupled
  if ps[1].device:sub(1, 4) ~= "cuda" then return C.adam_multi(ps, grads, states, g, decoupled) end
  local buf = device_scalars(self, g, ps)
  if capture then
    require("tocha.graph").on_replay(function()
      for _, st in ipairs(states) do st.step = st.step + 1 end
      C.adam_scalars(buf, states, g, decoupled, ps[1])
    end)
  end
  C.adam_multi(ps, grads, states, g, decoupled, buf, capture)
end

local function sgd_multi(self, g, ps, grads)
  local capture, bufs, first = capturing(), nil, {}
  if g.momentum ~= 0 then
    bufs = {}
    for i, p in ipairs(ps) do
      local st = self.state[p]
      if not st then -- the buffer starts as the gradient, written by this step
        if capture then no_state_in_capture(self, "momentum buffer") end
        st = { momentum_buffer = T.empty_like(p) }
        self.state[p] = st
        first[i] = true
      end
      bufs[i] = st.momentum_buffer
    end
  end
  if ps[1].device:sub(1, 4) ~= "cuda" then return C.sgd_multi(ps, grads, g, bufs, first) end
  local buf = device_scalars(self, g, ps)
  if capture then require("tocha.graph").on_replay(function() C.sgd_scalars(buf, g, ps[1]) end) end
  C.sgd_multi(ps, grads, g, bufs, first, buf, capture)
end

local KINDS = {
  SGD = {
    defaults = { lr = 1e-3, lr_scale = 1, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false },
    check = check_sgd,
    update = function(self, g, p, grad)
      local st = self.state[p]
      local buf = C.sgd_step(p, grad, g, st and st.momentum_buffer) -- made on the first step with momentum
      if buf and not st then self.state[p] = { momentum_buffer = buf } end
    end,
    multi = sgd_multi,
  },
  Adam = {
    defaults = { lr = 1e-3, lr_scale = 1, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, amsgrad = false },
    check = check_adam, update = adam_update, step = C.adam_step, multi = adam_multi, decoupled = false,
  },
  AdamW = {
    defaults = { lr = 1e-3, lr_scale = 1, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 1e-2, amsgrad = false },
    check = check_adam, update = adam_update, step = C.adamw_step, multi = adam_multi, decoupled = true,
  },
}

-- The tensors of a step in lists by device and dtype, in first-seen order: {{items, at, cuda}}
-- where items[j] is ps[at[j]].
local function by_device(ps)
  local lists, index = {}, {}
  for i, p in ipairs(ps) do
    local key = p.device .. " " .. p.dtype
    local l = index[key]
    if not l then
      l = { cuda = p.device:sub(1, 4) == "cuda", items = {}, at = {} }
      index[key] = l
      lists[#lists + 1] = l
    end
    l.items[#l.items + 1], l.at[#l.at + 1] = p, i
  end
  return lists
end

-- foreach: true (multi-tensor updates on every device), false (one tensor at a time) or nil
-- (multi-tensor on CUDA, as PyTorch's default)
local function use_multi(foreach, list) return foreach == true or (foreach == nil and list.cuda) end

---------------------------------------------------------------------------------------------
-- Optimizer: the methods every kind shares
---------------------------------------------------------------------------------------------
local Optimizer = {}
local Optimizer_meta = {
  -- opt.lr reads the first group's rate; assigning it sets every group's (like set_lr)
  __index = function(self, k)
    if k == "lr" then return rawget(self, "param_groups")[1].lr end
    return Optimizer[k]
  end,
  __newindex = function(self, k, v)
    if k == "lr" then self:set_lr(v) else rawset(self, k, v) end
  end,
  __tostring = function(self)
    local parts = {}
    for i, g in ipairs(self.param_groups) do
      local keys = {}
      for k in pairs(self.defaults) do keys[#keys + 1] = k end
      table.sort(keys)
      local opts = {}
      for _, k in ipairs(keys) do
        local v = g[k]
        if type(v) == "table" then v = "{" .. table.concat(v, ", ") .. "}" end
        opts[#opts + 1] = k .. " = " .. tostring(v)
      end
      parts[#parts + 1] = string.format("  group %d: %d tensors, %s", i, #g.params, table.concat(opts, ", "))
    end
    return self.name .. " (\n" .. table.concat(parts, "\n") .. "\n)"
  end,
}

--- opt:add_param_group({params = ..., lr = ...}): options not given take the defaults; a
--- group with lr_scale and no lr of its own starts at the default lr times lr_scale
function Optimizer:add_param_group(group)
  local who = "optim." .. self.name
  if type(group) ~= "table" or group.params == nil then
    error(who .. ": a parameter group is a table with a params field", 2)
  end
  local g = copy_options(self.defaults)
  for k, v in pairs(group) do
    if k ~= "params" then
      if self.defaults[k] == nil then
        error(string.format("%s: unknown option %q", who, tostring(k)), 2)
      end
      g[k] = type(v) == "table" and copy_options({ v })[1] or v
    end
  end
  if group.lr == nil then g.lr = self.defaults.lr * g.lr_scale end
  g.params = param_list(group.params, who)
  if #g.params == 0 then error(who .. ": a parameter group has no parameters", 2) end
  for gi, other in ipairs(self.param_groups) do
    for _, p in ipairs(other.params) do
      for j, q in ipairs(g.params) do
        if rawequal(p, q) then
          error(string.format("%s: parameter %d also appears in group %d", who, j, gi), 2)
        end
      end
    end
  end
  for j, p in ipairs(g.params) do
    if not (p:is_contiguous() or p:is_contiguous{ memory_format = "channels_last" }) then
      error(string.format("%s: parameter %d is not contiguous (an optimizer updates parameters in place)", who, j), 2)
    end
    if p.dtype ~= "f32" and p.dtype ~= "f64" then
      error(string.format("%s: parameter %d is %s; parameters must be f32 or f64", who, j, p.dtype), 2)
    end
  end
  local msg = self.kind.check(g)
  if msg then error(who .. ": " .. msg, 2) end
  self.param_groups[#self.param_groups + 1] = g
end

--- opt:step(closure): updates every parameter that has a gradient; closure (optional)
--- recomputes the loss with gradients and its result is returned
function Optimizer:step(closure)
  local loss
  if closure then loss = T.enable_grad(closure) end
  local kind = self.kind
  for _, g in ipairs(self.param_groups) do
    local ps = {}
    for _, p in ipairs(g.params) do
      if p.grad then ps[#ps + 1] = p end
    end
    for _, list in ipairs(by_device(ps)) do
      if list.cuda and capturing() and not use_multi(self.foreach, list) then
        error("optim." .. self.name .. ": a CUDA graph captures only the multi-tensor update (foreach = false "
              .. "bakes each step's scalars into the graph)", 2)
      end
      if use_multi(self.foreach, list) then
        local grads = {}
        for i, p in ipairs(list.items) do grads[i] = p.grad end
        kind.multi(self, g, list.items, grads)
      else
        for _, p in ipairs(list.items) do kind.update(self, g, p, p.grad) end
      end
    end
  end
  return loss
end

--- opt:zero_grad(): drops every gradient (p.grad = nil), as PyTorch's set_to_none;
--- opt:zero_grad{set_to_none = false} fills them with zeros instead
function Optimizer:zero_grad(opts)
  local keep = opts and opts.set_to_none == false
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do
      if keep then
        local grad = p.grad
        if grad then grad:zero_() end
      else
        p.grad = nil
      end
    end
  end
end

--- opt:set_lr(v): the learning rate of every group, v times the group's lr_scale (a schedule's
--- value: opt:set_lr(f(step)))
function Optimizer:set_lr(v)
  if type(v) ~= "number" or v ~= v or v < 0 then
    error("optim." .. self.name .. ": lr must be a non-negative number (got " .. tostring(v) .. ")", 2)
  end
  for _, g in ipairs(self.param_groups) do g.lr = v * g.lr_scale end
end

--- opt:state_dict() -> {state = {[i] = {step =, exp_avg =, ...}}, param_groups = {{lr =, ...,
--- params = {i, ...}}}}: parameters are numbered 1, 2, ... across groups in order, as
--- PyTorch numbers them from 0. Tensors are the live state (save them, do not modify them).
function Optimizer:state_dict()
  local state, groups, idx = {}, {}, 0
  for gi, g in ipairs(self.param_groups) do
    local sg = copy_options(g)
    sg.params = {}
    for j, p in ipairs(g.params) do
      idx = idx + 1
      sg.params[j] = idx
      if self.state[p] then state[idx] = copy_options(self.state[p]) end
    end
    groups[gi] = sg
  end
  return { state = state, param_groups = groups }
end

--- opt:load_state_dict(sd): hyperparameters and state from a state_dict of an optimizer over
--- parameters of the same shapes, in the same groups; state tensors are copied
function Optimizer:load_state_dict(sd)
  local who = "optim." .. self.name .. ":load_state_dict"
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" then
    error(who .. ": expected a table with param_groups (and state)", 2)
  end
  if #sd.param_groups ~= #self.param_groups then
    error(string.format("%s: the state has %d parameter groups, the optimizer %d", who,
      #sd.param_groups, #self.param_groups), 2)
  end
  for gi, sg in ipairs(sd.param_groups) do
    local n = type(sg.params) == "table" and #sg.params or -1
    if n ~= #self.param_groups[gi].params then
      error(string.format("%s: group %d has %d parameters in the state, %d in the optimizer", who, gi, n,
        #self.param_groups[gi].params), 2)
    end
  end
  local state = sd.state or {}
  local new_state = {}
  for gi, sg in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    for k, v in pairs(sg) do
      if k ~= "params" and self.defaults[k] ~= nil then g[k] = type(v) == "table" and copy_options({ v })[1] or v end
    end
    for j, p in ipairs(g.params) do
      local s = state[sg.params[j]] or state[tostring(sg.params[j])]
      if s then
        local ns = {}
        for k, v in pairs(s) do
          if T.is_tensor(v) then
            if v:numel() ~= p:numel() then
              error(string.format("%s: state %s of parameter %d in group %d has %d elements, the parameter %d",
                who, k, j, gi, v:numel(), p:numel()), 2)
            end
            v = T.no_grad(function() return v:detach():to(p.device, p.dtype):reshape(p.shape):clone() end)
          elseif k == "step" then
            v = math.tointeger(v) or error(who .. ": step must be an integer", 2)
          end
          ns[k] = v
        end
        new_state[p] = ns
      end
    end
  end
  self.state = new_state
end

-- SGD, Adam and AdamW tail-call it: level 2 is their caller
local function new_optimizer(name, params, opts)
  local kind = KINDS[name]
  local who = "optim." .. name
  opts = opts or {}
  if type(opts) ~= "table" then error(who .. ": options must be a table", 2) end
  if opts.foreach ~= nil and type(opts.foreach) ~= "boolean" then
    error(who .. ": foreach must be true, false or nil", 2)
  end
  local defaults = copy_options(kind.defaults)
  for k, v in pairs(opts) do
    if k == "foreach" then -- not a group option
    elseif kind.defaults[k] == nil then error(string.format("%s: unknown option %q", who, tostring(k)), 2) end
    defaults[k] = type(v) == "table" and copy_options({ v })[1] or v
  end
  local msg = kind.check(defaults)
  if msg then error(who .. ": " .. msg, 2) end
  local self = setmetatable({ name = name, kind = kind, defaults = defaults, param_groups = {}, state = {},
    foreach = opts.foreach, _scalars = setmetatable({}, { __mode = "k" }) }, Optimizer_meta)
  local groups = is_group_list(params) and params or { { params = params } }
  for _, g in ipairs(groups) do
    local ok, err = pcall(self.add_param_group, self, g)
    if not ok then error(err, 2) end
  end
  return self
end

--- Every optimizer also takes foreach: nil (the default) updates the parameters on CUDA with
--- multi-tensor kernels (many tensors per launch) and the others one tensor at a time; true
--- takes the multi-tensor path on every device, false the per-tensor one. Both give the same bits.
--- optim.SGD(params, {lr, lr_scale, momentum, dampening, weight_decay, nesterov})
function M.SGD(params, opts) return new_optimizer("SGD", params, opts) end
--- optim.Adam(params, {lr, lr_scale, betas, eps, weight_decay, amsgrad}): L2 penalty added to the gradient
function M.Adam(params, opts) return new_optimizer("Adam", params, opts) end
--- optim.AdamW(params, {lr, lr_scale, betas, eps, weight_decay = 1e-2, amsgrad}): decoupled weight decay
function M.AdamW(params, opts) return new_optimizer("AdamW", params, opts) end

---------------------------------------------------------------------------------------------
-- gradient clipping
---------------------------------------------------------------------------------------------
local function grads_of(params, who)
  local gs = {}
  for _, p in ipairs(param_list(params, who, 3)) do
    local g = p.grad
    if g then gs[#gs + 1] = g end
  end
  return gs
end

--- optim.clip_grad_norm(params, max_norm, norm_type = 2, {error_if_nonfinite = false}) -> total norm
--- of all gradients taken together (accumulated in double); when it exceeds max_norm every
--- gradient is scaled by max_norm / (total + 1e-6), as torch.nn.utils.clip_grad_norm_
function M.clip_grad_norm(params, max_norm, norm_type, opts)
  if type(max_norm) ~= "number" then error("clip_grad_norm: max_norm must be a number", 2) end
  norm_type = norm_type or 2
  if type(norm_type) ~= "number" or not (norm_type > 0) then
    error("clip_grad_norm: norm_type must be a positive number or math.huge", 2)
  end
  local gs = grads_of(params, "clip_grad_norm")
  if #gs == 0 then return 0 end
  local total = C.total_norm(gs, norm_type)
  if opts and opts.error_if_nonfinite and (total ~= total or total == math.huge) then
    error(string.format("clip_grad_norm: the total norm of the gradients is %s", tostring(total)), 2)
  end
  local coef = max_norm / (total + 1e-6)
  if coef < 1 then
    for _, g in ipairs(gs) do g:mul_(coef) end
  end
  return total
end

--- optim.clip_grad_value(params, v): clamps every gradient element into [-v, v]
function M.clip_grad_value(params, v)
  if type(v) ~= "number" or v < 0 then error("clip_grad_value: the clip value must be a non-negative number", 2) end
  for _, g in ipairs(grads_of(params, "clip_grad_value")) do g:clamp_(-v, v) end
end

---------------------------------------------------------------------------------------------
-- GradScaler: dynamic loss scaling for f16 training, as torch.amp.GradScaler
---------------------------------------------------------------------------------------------
local GradScaler = {}
GradScaler.__index = GradScaler

local SCALER_FIELDS = { init_scale = true, growth_factor = true, backoff_factor = true, growth_interval = true,
  enabled = true }

--- optim.GradScaler{init_scale = 2^16, growth_factor = 2, backoff_factor = 0.5,
--- growth_interval = 2000, enabled = true}. f16 gradients of small losses underflow to zero;
--- scaling the loss by S before backward keeps them representable, and the gradients are
--- divided by S before the optimizer sees them. A step whose gradients hold an inf or NaN is
--- skipped and S shrinks by backoff_factor; after growth_interval finite steps in a row S grows
--- by growth_factor. The loop:
---   scaler:scale(loss):backward(); scaler:unscale_(opt) (before clipping);
---   optim.clip_grad_norm(...); scaler:step(opt); scaler:update()
--- enabled = false (f32 or bf16 training) makes every method a pass-through.
function M.GradScaler(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("optim.GradScaler: options must be a table", 2) end
  for k in pairs(opts) do
    if not SCALER_FIELDS[k] then error(string.format("optim.GradScaler: unknown option %q", tostring(k)), 2) end
  end
  local self = setmetatable({
    scale_value = opts.init_scale or 2.0 ^ 16,
    growth_factor = opts.growth_factor or 2.0,
    backoff_factor = opts.backoff_factor or 0.5,
    growth_interval = opts.growth_interval or 2000,
    enabled = opts.enabled ~= false,
    growth_tracker = 0, -- finite steps since the scale last changed
    skipped_steps = 0,  -- steps skipped for non-finite gradients, over the whole run
    steps = 0,          -- updates made (skipped or not)
    per_optimizer = {}, -- opt -> {unscaled = bool, found_inf = bool} for the current step
  }, GradScaler)
  local msg = bad_range("init_scale", self.scale_value, 0, math.huge)
    or ((type(self.growth_factor) ~= "number" or not (self.growth_factor > 1)) and "growth_factor must be a number above 1")
    or bad_range("backoff_factor", self.backoff_factor, 0, 1, true)
    or ((math.type(self.growth_interval) ~= "integer" or self.growth_interval < 1) and "growth_interval must be a positive integer")
  if not msg and self.scale_value <= 0 then msg = "init_scale must be positive" end
  if not msg and self.backoff_factor <= 0 then msg = "backoff_factor must be in (0, 1)" end
  if msg then error("optim.GradScaler: " .. msg, 2) end
  return self
end

--- scaler:get_scale() -> the current scale (1 when disabled)
function GradScaler:get_scale() return self.enabled and self.scale_value or 1.0 end

--- scaler:scale(loss) -> loss * scale (the loss itself when disabled)
function GradScaler:scale(loss)
  if not T.is_tensor(loss) then error("GradScaler:scale: expected the loss tensor, got " .. type(loss), 2) end
  if not self.enabled then return loss end
  return loss * self.scale_value
end

local function opt_state(self, opt)
  local st = self.per_optimizer[opt]
  if not st then
    st = { unscaled = false, found_inf = false }
    self.per_optimizer[opt] = st
  end
  return st
end

local function check_optimizer(opt, who)
  if type(opt) ~= "table" or type(opt.param_groups) ~= "table" or type(opt.step) ~= "function" then
    error(who .. ": expected an optimizer", 3)
  end
end

--- scaler:unscale_(opt) -> the gradients' total 2-norm after unscaling: divides the gradients
--- of opt's parameters by the scale, in place, and notes whether any is inf or NaN. Call it
--- once per step, before clipping; step() calls it when the loop has not.
function GradScaler:unscale_(opt)
  check_optimizer(opt, "GradScaler:unscale_")
  if not self.enabled then return nil end
  local st = opt_state(self, opt)
  if st.unscaled then error("GradScaler:unscale_: already called for this optimizer since the last update()", 2) end
  local gs = {}
  for _, g in ipairs(opt.param_groups) do
    for _, p in ipairs(g.params) do
      local grad = p.grad
      if grad then gs[#gs + 1] = grad end
    end
  end
  local inv = 1.0 / self.scale_value
  T.no_grad(function() for _, g in ipairs(gs) do g:mul_(inv) end end)
  -- the norm in double is inf or NaN exactly when some element is: squares of finite f32
  -- values cannot overflow a double
  local total = #gs > 0 and C.total_norm(gs, 2) or 0.0
  st.unscaled, st.found_inf = true, total ~= total or total == math.huge
  return total
end

--- scaler:step(opt, ...) -> true when opt stepped, false when the step was skipped for
--- non-finite gradients (they are left unscaled; the next zero_grad clears them)
function GradScaler:step(opt, ...)
  check_optimizer(opt, "GradScaler:step")
  if not self.enabled then opt:step(...); return true end
  local st = opt_state(self, opt)
  if not st.unscaled then self:unscale_(opt) end
  if st.found_inf then return false end
  opt:step(...)
  return true
end

--- scaler:update(new_scale) -> true when this step was skipped: backs the scale off if any
--- optimizer saw non-finite gradients (and counts the skip), else grows it after
--- growth_interval finite steps; new_scale sets the scale instead
function GradScaler:update(new_scale)
  if not self.enabled then return false end
  local found = false
  for _, st in pairs(self.per_optimizer) do found = found or st.found_inf end
  self.per_optimizer = {}
  self.steps = self.steps + 1
  if found then self.skipped_steps = self.skipped_steps + 1 end
  if new_scale ~= nil then
    if type(new_scale) ~= "number" or not (new_scale > 0) then error("GradScaler:update: new_scale must be a positive number", 2) end
    self.scale_value, self.growth_tracker = new_scale, 0
  elseif found then
    self.scale_value, self.growth_tracker = self.scale_value * self.backoff_factor, 0
  else
    self.growth_tracker = self.growth_tracker + 1
    if self.growth_tracker == self.growth_interval then
      local grown = self.scale_value * self.growth_factor
      if grown < math.huge then self.scale_value = grown end
      self.growth_tracker = 0
    end
  end
  return found
end

--- scaler:state_dict() -> plain numbers (PyTorch's names, plus the skip count)
function GradScaler:state_dict()
  return { scale = self.scale_value, growth_factor = self.growth_factor, backoff_factor = self.backoff_factor,
    growth_interval = self.growth_interval, _growth_tracker = self.growth_tracker, enabled = self.enabled,
    skipped_steps = self.skipped_steps, steps = self.steps }
end

function GradScaler:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.scale) ~= "number" then
    error("GradScaler:load_state_dict: expected a table with a scale", 2)
  end
  self.scale_value = sd.scale
  self.growth_factor = sd.growth_factor or self.growth_factor
  self.backoff_factor = sd.backoff_factor or self.backoff_factor
  self.growth_interval = sd.growth_interval or self.growth_interval
  self.growth_tracker = sd._growth_tracker or 0
  if sd.enabled ~= nil then self.enabled = sd.enabled end
  self.skipped_steps, self.steps = sd.skipped_steps or 0, sd.steps or 0
  self.per_optimizer = {}
end

---------------------------------------------------------------------------------------------
-- EMA: an exponential moving average of weights, as diffusers' EMAModel
---------------------------------------------------------------------------------------------
local EMA = {}
EMA.__index = EMA

local EMA_FIELDS = { decay = true, min_decay = true, update_after_step = true, use_ema_warmup = true,
  warmup = true, inv_gamma = true, power = true, device = true, foreach = true }

--- optim.EMA(model_or_params, {decay = 0.9999, min_decay = 0, update_after_step = 0,
---   warmup = false, inv_gamma = 1, power = 2/3}): the average starts as a copy of the weights.
--- The decay at optimization step s (1, 2, ...), with k = s - update_after_step - 1, is 0 while
--- k <= 0, then 1 - (1 + k / inv_gamma)^-power with warmup, else (1 + k) / (10 + k); capped by
--- decay and floored by min_decay. (warmup is diffusers' use_ema_warmup; either name works.)
--- device (e.g. "cpu" while the model trains on "cuda"): where the average lives, as diffusers'
--- EMA offload; each update then copies the weights there first. foreach: as the optimizers'.
function M.EMA(model, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not EMA_FIELDS[k] then error(string.format("optim.EMA: unknown option %q", tostring(k)), 2) end
  end
  local params = param_list(model, "optim.EMA")
  local self = setmetatable({
    decay = opts.decay or 0.9999,
    min_decay = opts.min_decay or 0,
    update_after_step = opts.update_after_step or 0,
    use_ema_warmup = opts.warmup or opts.use_ema_warmup or false,
    inv_gamma = opts.inv_gamma or 1,
    power = opts.power or 2 / 3,
    optimization_step = 0,
    params = params,
    shadow_params = {},
  }, EMA)
  T.no_grad(function()
    for i, p in ipairs(params) do
      self.shadow_params[i] = opts.device and p:detach():to(opts.device):contiguous():clone() or p:detach():contiguous():clone()
    end
  end)
  self.device = opts.device
  if opts.foreach ~= nil and type(opts.foreach) ~= "boolean" then
    error("optim.EMA: foreach must be true, false or nil", 2)
  end
  self.foreach = opts.foreach
  return self
end

--- ema:get_decay(step): the decay the update at optimization step `step` uses
function EMA:get_decay(optimization_step)
  local step = math.max(0, optimization_step - self.update_after_step - 1)
  if step <= 0 then return 0.0 end
  local d
  if self.use_ema_warmup then d = 1 - (1 + step / self.inv_gamma) ^ -self.power
  else d = (1 + step) / (10 + step) end
  return math.max(math.min(d, self.decay), self.min_decay)
end

local function targets(self, model, who)
  if model == nil then return self.params end
  local ps = param_list(model, who, 3)
  if #ps ~= #self.shadow_params then
    error(string.format("%s: %d parameters given, the average holds %d", who, #ps, #self.shadow_params), 3)
  end
  return ps
end

--- ema:update(model_or_params): one step of the average toward the current weights (those
--- given at construction unless others are passed); parameters that do not require grad are copied
function EMA:update(model)
  local ps = targets(self, model, "ema:update")
  self.optimization_step = self.optimization_step + 1
  local decay = self:get_decay(self.optimization_step)
  self.cur_decay_value = decay
  T.no_grad(function()
    local shadows, ws = {}, {}
    for i, p in ipairs(ps) do
      local s = self.shadow_params[i]
      local w = self.device and p:detach():to(self.device) or p
      if p.requires_grad then
        shadows[#shadows + 1], ws[#ws + 1] = s, w
      else
        s:copy_(w)
      end
    end
    -- the averages on CUDA blend in multi-tensor launches, one list per device and dtype
    for _, list in ipairs(by_device(shadows)) do
      local l_ws = {}
      for j, i in ipairs(list.at) do l_ws[j] = ws[i] end
      if list.cuda and capturing() and not use_multi(self.foreach, list) then
        error("optim." .. self.name .. ": a CUDA graph captures only the multi-tensor update (foreach = false "
              .. "bakes each step's scalars into the graph)", 2)
      end
      if use_multi(self.foreach, list) then
        C.ema_multi(list.items, l_ws, decay)
      else
        for j, s in ipairs(list.items) do C.ema_update(s, l_ws[j], decay) end
      end
    end
  end)
end

--- ema:copy_to(model_or_params): writes the averaged weights into the model
function EMA:copy_to(model)
  local ps = targets(self, model, "ema:copy_to")
  T.no_grad(function()
    for i, p in ipairs(ps) do p:copy_(self.shadow_params[i]) end
  end)
end

--- ema:store(model_or_params) / ema:restore(): keep the current weights aside, e.g. around
--- an evaluation with ema:copy_to(model), and put them back
function EMA:store(model)
  local ps = targets(self, model, "ema:store")
  self.stored = { params = ps, values = {} }
  T.no_grad(function()
    for i, p in ipairs(ps) do self.stored.values[i] = p:detach():clone() end
  end)
end

function EMA:restore()
  if not self.stored then error("ema:restore: nothing stored (call ema:store() first)", 2) end
  local st = self.stored
  T.no_grad(function()
    for i, p in ipairs(st.params) do p:copy_(st.values[i]) end
  end)
  self.stored = nil
end

--- ema:state_dict() -> diffusers' fields and shadow_params (a list of tensors)
function EMA:state_dict()
  return {
    decay = self.decay, min_decay = self.min_decay, optimization_step = self.optimization_step,
    update_after_step = self.update_after_step, use_ema_warmup = self.use_ema_warmup,
    inv_gamma = self.inv_gamma, power = self.power, shadow_params = { table.unpack(self.shadow_params) },
  }
end

function EMA:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.shadow_params) ~= "table" then
    error("ema:load_state_dict: expected a table with shadow_params", 2)
  end
  if #sd.shadow_params ~= #self.shadow_params then
    error(string.format("ema:load_state_dict: %d shadow parameters in the state, %d in the average",
      #sd.shadow_params, #self.shadow_params), 2)
  end
  for i, t in ipairs(sd.shadow_params) do
    if not T.is_tensor(t) or t:numel() ~= self.shadow_params[i]:numel() then
      error(string.format("ema:load_state_dict: shadow parameter %d does not match the model's", i), 2)
    end
  end
  for _, k in ipairs({ "decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup",
    "inv_gamma", "power" }) do
    if sd[k] ~= nil then self[k] = sd[k] end
  end
  T.no_grad(function()
    for i, t in ipairs(sd.shadow_params) do
      local s = self.shadow_params[i]
      s:copy_(t:detach():to(s.dtype):reshape(s.shape))
    end
  end)
end

-- opt.step() for opt:step() names the mistake
local guard = require "tocha.guard"
guard.methods(Optimizer, function(o) return getmetatable(o) == Optimizer_meta end, "opt", "Optimizer")
guard.methods(EMA, function(e) return getmetatable(e) == EMA end, "ema", "EMA")

return M
