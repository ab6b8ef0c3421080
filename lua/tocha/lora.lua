-- tocha.lora: low-rank adaptation (Hu et al. 2021). inject() turns the matching Linear (and,
-- when asked, Conv2d) layers of a model into LoRA layers, y = W x + b + s B(A(dropout(x))), with
-- s = alpha / rank times a scale set at sampling time, and freezes everything else; merge() folds
-- s B A into W for speed, unmerge() takes it out again. Weights go in and out in the layout
-- diffusers' load_lora_weights reads (PEFT names in pytorch_lora_weights.safetensors); kohya's
-- files (lora_unet_..., lora_down / lora_up / alpha) load too.
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local init = require "tocha.nn.init_weights"

local lora = {}

lora.DEFAULT_TARGETS = { "to_q", "to_k", "to_v", "to_out.0" }
lora.WEIGHT_NAME = "pytorch_lora_weights.safetensors"

---------------------------------------------------------------------------------------------
-- the layers: a Linear or Conv2d whose class becomes its LoRA subclass, with lora_A, lora_B
-- and lora_dropout as children (so state_dict and parameters() see them)
---------------------------------------------------------------------------------------------
local LoRALinear = nn.Linear:extend("LoRALinear")
local LoRAConv2d = nn.Conv2d:extend("LoRAConv2d")
lora.Linear, lora.Conv2d = LoRALinear, LoRAConv2d
local BASE = { [LoRALinear] = nn.Linear, [LoRAConv2d] = nn.Conv2d }

local function is_lora(m) return BASE[getmetatable(m)] ~= nil end
lora.is_lora = is_lora

-- s: alpha / rank times the user's scale
local function scaling(m) return m.lora_alpha / m.lora_rank * m.lora_scale end

local function adapter(self, x)
  return self.lora_B(self.lora_A(self.lora_dropout(x))) * scaling(self)
end

function LoRALinear:forward(x)
  local y = F.linear(x, self.weight, self.bias)
  if self.lora_merged or self.lora_scale == 0 then return y end
  return y + adapter(self, x)
end

function LoRAConv2d:forward(x)
  local y = nn.Conv2d.forward(self, x)
  if self.lora_merged or self.lora_scale == 0 then return y end
  return y + adapter(self, x)
end

local function repr(self)
  return BASE[getmetatable(self)].extra_repr(self) .. string.format(", rank=%d, alpha=%g%s", self.lora_rank,
    self.lora_alpha, self.lora_merged and ", merged" or "")
end
LoRALinear.extra_repr, LoRAConv2d.extra_repr = repr, repr

-- s B A as a tensor of the base weight's shape
local function delta(m)
  local a, b = m.lora_A.weight, m.lora_B.weight
  local r = m.lora_rank
  local d = b:reshape(b.shape[1], r):matmul(a:reshape(r, -1))
  return (d * scaling(m)):reshape(m.weight.shape):to(m.weight.dtype)
end

-- makes m (a Linear or Conv2d) a LoRA layer of the given rank and alpha, its adapter on m's
-- dtype and device: A drawn as PEFT draws it (kaiming_uniform, a = sqrt 5), B zero, so the
-- model starts out unchanged
local function convert(m, rank, alpha, dropout)
  local w = m.weight
  local lo = { bias = false, dtype = w.dtype, device = w.device }
  local cls = getmetatable(m)
  if cls == nn.Linear then
    setmetatable(m, LoRALinear)
    m.lora_A = nn.Linear(m.in_features, rank, lo)
    m.lora_B = nn.Linear(rank, m.out_features, lo)
  else
    if m.padding_mode ~= "zeros" then error("lora: Conv2d layers with padding_mode " .. m.padding_mode .. " are not supported", 4) end
    setmetatable(m, LoRAConv2d)
    m.lora_A = nn.Conv2d(m.in_channels, rank, m.kernel_size, { stride = m.stride, padding = m.padding,
      dilation = m.dilation, groups = 1, bias = false, dtype = w.dtype, device = w.device })
    m.lora_B = nn.Conv2d(rank, m.out_channels, 1, lo)
    if m.groups ~= 1 then error("lora: grouped Conv2d layers are not supported", 4) end
  end
  init.zeros_(m.lora_B.weight)
  m.lora_dropout = dropout > 0 and nn.Dropout(dropout) or nn.Identity()
  rawset(m, "lora_rank", rank)
  rawset(m, "lora_alpha", alpha)
  rawset(m, "lora_scale", 1.0)
  rawset(m, "lora_merged", false)
  if not m.training then m:eval() end
  return m
end

---------------------------------------------------------------------------------------------
-- injection
---------------------------------------------------------------------------------------------
-- does module path `name` match target t (the whole path, or its last components)?
local function matches(name, t)
  return name == t or name:sub(-(#t + 1)) == "." .. t
end

local function check_model(model, who, level)
  if not nn.is_module(model) then error(who .. ": expected a module, got " .. type(model), level + 1) end
end

local INJECT_FIELDS = { rank = true, alpha = true, targets = true, dropout = true, conv = true, freeze = true }

--- lora.inject(model, {rank = 4, alpha = rank, targets = {"to_q", "to_k", "to_v", "to_out.0"},
--- dropout = 0, conv = false, freeze = true}) -> the list of module paths turned into LoRA
--- layers. A target names a module by its path or the path's last components ("to_q" matches
--- every attention's query projection); Linear layers match, Conv2d ones when conv = true.
--- With freeze (the default) every parameter of the model stops requiring grad but the
--- adapters'. Raises when no layer matches.
function lora.inject(model, opts)
  check_model(model, "lora.inject", 2)
  opts = opts or {}
  if type(opts) ~= "table" then error("lora.inject: options must be a table", 2) end
  for k in pairs(opts) do
    if not INJECT_FIELDS[k] then error(string.format("lora.inject: unknown option %q", tostring(k)), 2) end
  end
  local rank = opts.rank or 4
  if math.type(rank) ~= "integer" or rank < 1 then error("lora.inject: rank must be a positive integer", 2) end
  local alpha = opts.alpha or rank
  if type(alpha) ~= "number" or alpha <= 0 then error("lora.inject: alpha must be a positive number", 2) end
  local dropout = opts.dropout or 0
  if type(dropout) ~= "number" or dropout < 0 or dropout >= 1 then error("lora.inject: dropout must be in [0, 1)", 2) end
  local targets = opts.targets or lora.DEFAULT_TARGETS
  if type(targets) == "string" then targets = { targets } end
  if type(targets) ~= "table" or #targets == 0 then error("lora.inject: targets must be a non-empty list of module names", 2) end
  local found = {}
  for name, m in model:named_modules() do
    local cls = getmetatable(m)
    local kind_ok = cls == nn.Linear or (opts.conv and cls == nn.Conv2d)
    if kind_ok then
      for _, t in ipairs(targets) do
        if matches(name, t) then
          found[#found + 1] = { name, m }
          break
        end
      end
    end
  end
  if #found == 0 then
    error(string.format("lora.inject: no %s layer matches the targets %s", opts.conv and "Linear or Conv2d" or "Linear",
      table.concat(targets, ", ")), 2)
  end
  if opts.freeze ~= false then model:requires_grad_(false) end
  local names = {}
  for i, e in ipairs(found) do
    convert(e[2], rank, alpha, dropout)
    names[i] = e[1]
  end
  return names
end

-- (name, layer) of every LoRA layer of model, in module order
local function layers(model)
  local out = {}
  for name, m in model:named_modules() do
    if is_lora(m) then out[#out + 1] = { name, m } end
  end
  return out
end

--- lora.layers(model) -> a list of {name, layer} for every LoRA layer
function lora.layers(model)
  check_model(model, "lora.layers", 2)
  return layers(model)
end

--- lora.parameters(model) -> the adapters' parameters (what an optimizer trains)
function lora.parameters(model)
  check_model(model, "lora.parameters", 2)
  local ps = {}
  for _, e in ipairs(layers(model)) do
    for _, p in ipairs(e[2].lora_A:parameters()) do ps[#ps + 1] = p end
    for _, p in ipairs(e[2].lora_B:parameters()) do ps[#ps + 1] = p end
  end
  return ps
end

---------------------------------------------------------------------------------------------
-- merging and scale
---------------------------------------------------------------------------------------------
-- folds (merge = true) or takes out (false) the adapters of the layers in the other state;
-- returns how many changed
local function set_merged(model, merge)
  local n = 0
  T.no_grad(function()
    for _, e in ipairs(layers(model)) do
      local m = e[2]
      if m.lora_merged ~= merge then
        if merge then m.weight:add_(delta(m)) else m.weight:sub_(delta(m)) end
        rawset(m, "lora_merged", merge)
        n = n + 1
      end
    end
  end)
  return n
end

--- lora.merge(model): W += s B A in every unmerged LoRA layer (the forward then costs what the
--- plain model's does); returns the number merged
function lora.merge(model)
  check_model(model, "lora.merge", 2)
  return set_merged(model, true)
end

--- lora.unmerge(model): W -= s B A where merged; returns the number unmerged
function lora.unmerge(model)
  check_model(model, "lora.unmerge", 2)
  return set_merged(model, false)
end

--- lora.set_scale(model, s): every adapter's output times s (0 turns them off); merged layers
--- are re-merged at the new scale
function lora.set_scale(model, s)
  check_model(model, "lora.set_scale", 2)
  if type(s) ~= "number" or s ~= s then error("lora.set_scale: the scale must be a number", 2) end
  local merged = {}
  for _, e in ipairs(layers(model)) do
    if e[2].lora_merged then merged[#merged + 1] = e[2] end
  end
  T.no_grad(function()
    for _, m in ipairs(merged) do m.weight:sub_(delta(m)) end
    for _, e in ipairs(layers(model)) do rawset(e[2], "lora_scale", s) end
    for _, m in ipairs(merged) do m.weight:add_(delta(m)) end
  end)
end

-- m back to its base class, its adapter taken out of the weight where merged, then dropped
local function drop(m)
  if m.lora_merged then T.no_grad(function() m.weight:sub_(delta(m)) end) end
  m.lora_A, m.lora_B, m.lora_dropout = nil, nil, nil
  for _, k in ipairs({ "lora_rank", "lora_alpha", "lora_scale", "lora_merged" }) do rawset(m, k, nil) end
  setmetatable(m, BASE[getmetatable(m)])
end

--- lora.unload(model, {merge = true}): the LoRA layers become plain Linear / Conv2d again,
--- their adapters merged into the weights first (merge = false drops them); the model's
--- state_dict is then the base model's names only (for save_pretrained)
function lora.unload(model, opts)
  check_model(model, "lora.unload", 2)
  if not opts or opts.merge ~= false then lora.merge(model) end
  for _, e in ipairs(layers(model)) do
    rawset(e[2], "lora_merged", false) -- merged ones keep their update
    drop(e[2])
  end
end

---------------------------------------------------------------------------------------------
-- files: diffusers / PEFT names out and in, kohya's names in
---------------------------------------------------------------------------------------------
-- does t hold the sizes of shape (a Linear's 2-d adapter may come as [r, in, 1, 1])?
local function same_size(t, shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return t:numel() == n and t.shape[1] == shape[1]
end

-- {prefix = model} from a model or a table of them (unet / text_encoder)
local function components(parts, who)
  if nn.is_module(parts) then return { { "unet", parts } } end
  if type(parts) ~= "table" then error(who .. ": expected a model or a table {unet =, text_encoder =}", 3) end
  local out = {}
  for _, k in ipairs({ "unet", "text_encoder", "text_encoder_2" }) do
    if parts[k] ~= nil then
      if not nn.is_module(parts[k]) then error(who .. ": " .. k .. " is not a module", 3) end
      out[#out + 1] = { k, parts[k] }
    end
  end
  for k in pairs(parts) do
    if k ~= "unet" and k ~= "text_encoder" and k ~= "text_encoder_2" and nn.is_module(parts[k]) then
      error(who .. ": unknown component " .. tostring(k) .. " (unet, text_encoder, text_encoder_2)", 3)
    end
  end
  if #out == 0 then error(who .. ": no model given (unet =, text_encoder =)", 3) end
  return out
end

--- lora.state_dict(parts) -> name -> tensor in diffusers' PEFT layout: for each LoRA layer at
--- path P of component C (unet, text_encoder), C.P.lora_A.weight and C.P.lora_B.weight, with
--- alpha / rank folded into lora_B (readers that assume alpha = rank, as diffusers does for
--- files without alphas, get the same model). parts: a UNet, or {unet =, text_encoder =}.
function lora.state_dict(parts)
  local sd, n = {}, 0
  for _, c in ipairs(components(parts, "lora.state_dict")) do
    for _, e in ipairs(layers(c[2])) do
      local m = e[2]
      local key = c[1] .. "." .. e[1]
      sd[key .. ".lora_A.weight"] = m.lora_A.weight:detach():contiguous()
      sd[key .. ".lora_B.weight"] = (m.lora_B.weight:detach() * (m.lora_alpha / m.lora_rank)):contiguous()
      n = n + 1
    end
  end
  if n == 0 then error("lora.state_dict: the model has no LoRA layers (lora.inject first)", 2) end
  return sd
end

--- lora.save(path, parts, {dtype}): the adapters as pytorch_lora_weights.safetensors (path is
--- that file, or a directory to put it in); returns the file written
function lora.save(path, parts, opts)
  if type(path) ~= "string" then error("lora.save: path must be a string", 2) end
  local sd = lora.state_dict(parts)
  if opts and opts.dtype then
    for k, t in pairs(sd) do sd[k] = t:to(opts.dtype) end
  end
  if not path:match("%.safetensors$") then
    local ok, err = T._sys.mkdirs(path)
    if not ok then error("lora.save: " .. tostring(err), 2) end
    path = path .. "/" .. lora.WEIGHT_NAME
  end
  T.save(path, sd, { format = "pt" })
  return path
end

-- kohya's component prefixes
local KOHYA = { lora_unet = "unet", lora_te = "text_encoder", lora_te1 = "text_encoder", lora_te2 = "text_encoder_2" }

-- a file's adapters as {component, path (dotted for PEFT, underscored for kohya), A, B, alpha}
local function read_entries(sd, file)
  local entries, by_key = {}, {}
  local function entry(comp, path, kohya)
    local key = comp .. "\0" .. path
    local e = by_key[key]
    if not e then
      e = { comp = comp, path = path, kohya = kohya }
      by_key[key] = e
      entries[#entries + 1] = e
    end
    return e
  end
  for k, t in pairs(sd) do
    local comp, path, which = k:match("^([%w_]+)%.(.+)%.(lora_[AB])%.weight$")
    if comp then
      local e = entry(comp, path, false)
      e[which == "lora_A" and "A" or "B"] = t
    else
      local prefix, rest, kind = k:match("^(lora_[%w]+)_(.-)%.(.+)$")
      local c = prefix and KOHYA[prefix]
      if c and (kind == "lora_down.weight" or kind == "lora_up.weight" or kind == "alpha") then
        local e = entry(c, rest, true)
        if kind == "alpha" then e.alpha = t:to("f64"):item()
        elseif kind == "lora_down.weight" then e.A = t
        else e.B = t end
      elseif not k:match("%.lora_magnitude_vector") then
        error(string.format("lora.load: %s: key %s is neither diffusers' (unet.<module>.lora_A.weight) nor kohya's "
          .. "(lora_unet_<module>.lora_down.weight)", file, k), 0)
      else
        error("lora.load: " .. file .. " is a DoRA file (lora_magnitude_vector), which tocha does not read", 0)
      end
    end
  end
  for _, e in ipairs(entries) do
    if not e.A or not e.B then
      error(string.format("lora.load: %s: %s.%s has %s but not %s", file, e.comp, e.path, e.A and "A (down)" or "B (up)",
        e.A and "B (up)" or "A (down)"), 0)
    end
  end
  return entries
end

--- lora.load(path, parts, {scale = 1, merge = false}) -> the number of layers loaded: reads a
--- diffusers / PEFT file (or a directory holding pytorch_lora_weights.safetensors) or a kohya
--- file, turns the layers it names into LoRA layers of its ranks (and alphas: kohya's alpha
--- entries, else alpha = rank), and loads its weights; scale multiplies every adapter, merge
--- folds them into the weights. parts: a UNet, or {unet =, text_encoder =}.
function lora.load(path, parts, opts)
  if type(path) ~= "string" then error("lora.load: path must be a string", 2) end
  opts = opts or {}
  local comps = {}
  for _, c in ipairs(components(parts, "lora.load")) do comps[c[1]] = c[2] end
  if T._sys.isdir(path) then path = path .. "/" .. lora.WEIGHT_NAME end
  local ok, sd = pcall(T.load, path)
  if not ok then error("lora.load: " .. tostring(sd), 2) end
  local ok2, entries = pcall(read_entries, sd, path)
  if not ok2 then error(entries, 2) end
  if #entries == 0 then error("lora.load: " .. path .. " holds no LoRA weights", 2) end
  -- each component's Linear / Conv2d layers by their path, dotted and underscored
  local index = {}
  for comp, model in pairs(comps) do
    local dotted, flat = {}, {}
    for name, m in model:named_modules() do
      local cls = getmetatable(m)
      if cls == nn.Linear or cls == nn.Conv2d or is_lora(m) then
        dotted[name] = m
        flat[(name:gsub("%.", "_"))] = m
      end
    end
    index[comp] = { dotted = dotted, flat = flat }
  end
  local plan = {}
  for _, e in ipairs(entries) do
    local idx = index[e.comp]
    if not idx then
      error(string.format("lora.load: %s has weights for the %s, which was not given", path, e.comp), 2)
    end
    local m = e.kohya and idx.flat[e.path] or idx.dotted[e.path]
    if not m then error(string.format("lora.load: %s: the %s has no Linear or Conv2d layer %s", path, e.comp, e.path), 2) end
    local rank = e.A.shape[1]
    local linear = getmetatable(m) == nn.Linear or getmetatable(m) == LoRALinear
    local want_a = linear and { rank, m.in_features } or { rank, m.in_channels, m.kernel_size[1], m.kernel_size[2] }
    local want_b = linear and { m.out_features, rank } or { m.out_channels, rank, 1, 1 }
    if not same_size(e.A, want_a) or not same_size(e.B, want_b) then
      error(string.format("lora.load: %s: %s.%s: A [%s] and B [%s] do not fit the layer's weight [%s]", path, e.comp,
        e.path, table.concat(e.A.shape, " x "), table.concat(e.B.shape, " x "), table.concat(m.weight.shape, " x ")), 2)
    end
    plan[#plan + 1] = { m = m, e = e, rank = rank }
  end
  for comp, model in pairs(comps) do
    local touched = false
    for _, p in ipairs(plan) do touched = touched or p.e.comp == comp end
    if touched then model:requires_grad_(false) end
  end
  T.no_grad(function()
    for _, p in ipairs(plan) do
      local m = p.m
      if is_lora(m) then drop(m) end -- a second file replaces the first's adapter
      convert(m, p.rank, p.e.alpha or p.rank, 0)
      m.lora_A.weight:copy_(p.e.A:reshape(m.lora_A.weight.shape):to(m.weight.dtype):to(m.weight.device))
      m.lora_B.weight:copy_(p.e.B:reshape(m.lora_B.weight.shape):to(m.weight.dtype):to(m.weight.device))
      rawset(m, "lora_scale", opts.scale or 1.0)
    end
  end)
  if opts.merge then
    for _, model in pairs(comps) do lora.merge(model) end
  end
  return #plan
end

return lora
