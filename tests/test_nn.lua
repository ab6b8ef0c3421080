-- tests/test_nn.lua: tocha.nn: module registration and naming, state_dict round trips and
-- strict loading, modes, conversion, initialisation statistics, printing, each layer's forward
-- against PyTorch (tests/ref/nn_ref.lua), a PyTorch state_dict loaded from safetensors
-- (tests/ref/nn_model.safetensors), and a small MLP trained with a manual SGD loop.
local T = require "tocha"
local raises = T.testing.raises
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"

local ref = dofile(T.testing.path("ref/nn_ref.lua"))

local function tensor(e, dtype)
  return T.tensor(e.v, { dtype = dtype or "f64" }):view(e.shape)
end

local function state_of(case, dtype)
  local sd = {}
  for k, e in pairs(case.sd) do sd[k] = tensor(e, dtype) end
  return sd
end

local function names(iter)
  local out = {}
  for name in iter do out[#out + 1] = name end
  return table.concat(out, " ")
end

-- the model of tests/ref/gen_nn.py, rebuilt in tocha
local Block = nn.Module:extend("Block")

function Block:init(ch, groups, emb_dim, heads)
  self.norm1 = nn.GroupNorm(groups, ch)
  self.conv1 = nn.Conv2d(ch, ch, 3, { padding = 1 })
  self.emb_proj = nn.Linear(emb_dim, ch)
  self.norm2 = nn.LayerNorm(ch)
  self.attn = nn.MultiheadAttention(ch, heads, { context_dim = emb_dim })
end

function Block:forward(x, emb, ctx)
  local b, c, h, w = table.unpack(x.shape)
  local y = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(emb):view(b, c, 1, 1)
  local t = y:flatten(3, 4):transpose(2, 3)
  t = t + self.attn(self.norm2(t), ctx)
  return t:transpose(2, 3):reshape(b, c, h, w)
end

local Model = nn.Module:extend("Model")

function Model:init()
  self.embed = nn.Embedding(12, 6)
  self.conv_in = nn.Conv2d(3, 8, 3, { padding = 1 })
  self.blocks = nn.ModuleList({ Block(8, 2, 6, 2), Block(8, 4, 6, 4) })
  self.head = nn.Sequential(nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, { padding = 1 }))
end

function Model:forward(x, ids)
  local ctx = self.embed(ids)
  local emb = ctx:mean(2)
  local h = self.conv_in(x)
  for _, b in ipairs(self.blocks) do h = b(h, emb, ctx) end
  return self.head(h)
end

local function mlp()
  return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
end

local tests = {}

---------------------------------------------------------------------------
-- registration, naming, traversal
---------------------------------------------------------------------------
tests["registration and dotted names"] = function()
  local Net = nn.Module:extend("Net")
  function Net:init()
    self.fc = nn.Linear(4, 8)
    self.blocks = nn.ModuleList({ nn.Linear(8, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2, false)) })
    self.scale = nn.Parameter(T.ones({ 1 }))
    self:register_buffer("steps", T.zeros({}, { dtype = "i64" }))
    self:register_buffer("cache", T.zeros({ 2 }), false)
    self:register_parameter("unused", nil)
    self.plain = T.ones({ 3 }) -- a plain tensor attribute: not registered
    self.alpha = 0.5
  end
  function Net:forward(x)
    x = self.fc(x)
    for _, b in ipairs(self.blocks) do x = b(x) end
    return x * self.scale * self.alpha
  end
  local n = Net()
  assert(names(n:named_parameters()) ==
    "scale fc.weight fc.bias blocks.0.weight blocks.0.bias blocks.1.1.weight", names(n:named_parameters()))
  assert(names(n:named_buffers()) == "steps cache")
  assert(names(n:named_children()) == "fc blocks")
  assert(names(n:named_modules()) == " fc blocks blocks.0 blocks.1 blocks.1.0 blocks.1.1")
  assert(#n:parameters() == 6 and #n:buffers() == 2 and #n:children() == 2 and #n:modules() == 7)
  local sd = n:state_dict()
  local keys = {}
  for k in pairs(sd) do keys[#keys + 1] = k end
  table.sort(keys)
  assert(table.concat(keys, " ") == "blocks.0.bias blocks.0.weight blocks.1.1.weight fc.bias fc.weight scale steps",
    table.concat(keys, " "))
  assert(sd["fc.weight"]:storage_id() == n.fc.weight:storage_id() and not sd["fc.weight"].requires_grad)
  assert(nn.is_parameter(n.fc.weight) and not nn.is_parameter(n.plain))
  assert(n.fc.weight.requires_grad and n.unused == nil and n.alpha == 0.5)
  assert(n:num_parameters() == 4 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 1)
  -- containers: Lua positions are 1-based, names 0-based
  assert(#n.blocks == 2 and n.blocks[1] == n.blocks._modules["0"] and n.blocks[-1] == n.blocks[2])
  assert(n.blocks[2][2].weight.shape[1] == 2)
  assert(n(T.randn({ 3, 4 })).shape[2] == 2)
  -- reassignment goes through the registry
  n.fc = nn.Linear(4, 8, { bias = false })
  assert(names(n:named_parameters()):find("fc.weight blocks", 1, true))
  n.fc.bias = nil
  raises("wrap a tensor in nn.Parameter", function() n.fc.weight = T.ones({ 8, 4 }) end)
  raises("cannot assign a number to child module", function() n.fc = 3 end)
  n.steps = T.ones({}, { dtype = "i64" }) -- a buffer takes a new tensor
  assert(n:state_dict().steps:item() == 1)
end

tests["containers"] = function()
  local s = nn.Sequential({ nn.Linear(2, 3), nn.ReLU() })
  s:append(nn.Linear(3, 1))
  assert(#s == 3 and names(s:named_children()) == "0 1 2")
  local n = 0
  for i, m in ipairs(s) do n = n + 1; assert(m == s[i]) end
  assert(n == 3)
  assert(s(T.randn({ 5, 2 })).shape[2] == 1)
  s[2] = nn.SiLU()
  assert(s[2].__name == "SiLU")
  raises("out of range", function() s[7] = nn.ReLU() end)
  raises("element 2 is a number", function() nn.Sequential(nn.ReLU(), 3) end)

  local l = nn.ModuleList()
  l:append(nn.Linear(1, 1)):extend({ nn.Linear(2, 2), nn.Linear(3, 3) })
  l:insert(1, nn.Linear(4, 4))
  assert(#l == 4 and l[1].in_features == 4 and l[4].in_features == 3)
  assert(names(l:named_parameters()) ==
    "0.weight 0.bias 1.weight 1.bias 2.weight 2.bias 3.weight 3.bias")
  raises("no forward", function() l(T.ones({ 1 })) end)

  local d = nn.ModuleDict({ proj = nn.Linear(2, 2), act = nn.GELU() })
  d.out = nn.Linear(2, 1)
  assert(table.concat(d:keys(), " ") == "act proj out")
  assert(d.proj == d["proj"] and d:contains("out") and not d:contains("x"))
  assert(names(d:named_parameters()) == "proj.weight proj.bias out.weight out.bias")
  assert(#d:values() == 3)
end

tests["tied weights are one parameter"] = function()
  local a, b = nn.Linear(3, 3), nn.Linear(3, 3)
  b.weight = a.weight
  local s = nn.Sequential(a, b)
  assert(#s:parameters() == 3 and s:num_parameters() == 9 + 3 + 3)
  local sd = s:state_dict()
  assert(sd["0.weight"] and sd["1.weight"]) -- saved under both names, as PyTorch
  s:load_state_dict(sd)
end

---------------------------------------------------------------------------
-- state dicts
---------------------------------------------------------------------------
tests["state_dict round trip through T.save and T.load"] = function()
  T.manual_seed(1)
  local m = Model()
  m:register_buffer("count", T.full({ 2 }, 7, { dtype = "i64" }))
  local path = os.tmpname()
  T.save(path, m:state_dict())
  T.manual_seed(2)
  local m2 = Model()
  m2:register_buffer("count", T.zeros({ 2 }, { dtype = "i64" }))
  assert(not m2.conv_in.weight:allclose(m.conv_in.weight))
  local loaded = T.load(path)
  os.remove(path)
  local res = m2:load_state_dict(loaded)
  assert(#res.missing_keys == 0 and #res.unexpected_keys == 0)
  for name, p in m:named_parameters() do
    local q = m2:state_dict({ keep_vars = true })[name]
    assert(q:allclose(p, 0, 0), name)
    assert(q.requires_grad, name .. " stays a parameter")
  end
  assert(m2.count:tolist()[2] == 7)
  local x, ids = T.randn({ 1, 3, 4, 4 }), T.tensor({ { 1, 5, 12 } }, { dtype = "i64" })
  T.testing.assert_close(m2(x, ids), m(x, ids), { rtol = 0, atol = 0 })
end

tests["strict loading lists every problem in one error"] = function()
  local m = mlp()
  local before = m[1].weight:clone()
  local sd = m:state_dict()
  sd["2.bias"] = nil                     -- missing
  sd["0.weight"] = T.zeros({ 16, 5 })    -- shape mismatch
  sd["3.weight"] = T.zeros({ 1 })        -- unexpected
  sd["extra"] = T.zeros({ 1 })           -- unexpected
  local err = raises("load_state_dict", function() m:load_state_dict(sd) end)
  assert(err:find("loading into Sequential: 1 missing key, 2 unexpected keys, 1 bad tensor\n"
    .. "  missing keys: 2.bias\n"
    .. "  unexpected keys: 3.weight\n"
    .. "                   extra\n"
    .. "  size mismatch for 0.weight: the checkpoint has shape [16 x 5], the model [16 x 4]", 1, true), err)
  assert(m[1].weight:allclose(before, 0, 0), "nothing is copied when loading fails")
  -- a long list: one per line, the first 20 and a count of the rest
  local wrong = {}
  for i = 1, 30 do wrong["stray." .. string.format("%02d", i)] = T.zeros({ 1 }) end
  err = raises("load_state_dict", function() m:load_state_dict(wrong) end)
  assert(err:find("4 missing keys, 30 unexpected keys\n  missing keys: 0.bias\n                0.weight\n", 1, true), err)
  assert(err:find("\n  unexpected keys: stray.01\n                   stray.02\n", 1, true), err)
  local tail = "\n                   stray.16\n  ... and 14 more (34 in all)"
  assert(err:sub(-#tail) == tail, err)
  -- non-strict: missing and unexpected keys are returned, shape mismatches still raise
  raises("size mismatch for 0.weight", function() m:load_state_dict(sd, false) end)
  sd["0.weight"] = T.ones({ 16, 4 })
  local res = m:load_state_dict(sd, { strict = false })
  assert(table.concat(res.missing_keys, " ") == "2.bias")
  assert(table.concat(res.unexpected_keys, " ") == "3.weight extra")
  assert(m[1].weight:sum():item() == 64)
  raises("expected a table", function() m:load_state_dict(3) end)
  sd["0.weight"] = "oops"
  raises("0.weight: expected a tensor, got a string", function() m:load_state_dict(sd, false) end)
end

tests["load_state_dict converts dtype in place"] = function()
  local m = mlp()
  local w = m[1].weight
  local sd = {}
  for k, v in pairs(m:state_dict()) do sd[k] = (v * 0 + 0.25):double() end
  m:load_state_dict(sd)
  assert(rawequal(m[1].weight, w) and w.dtype == "f32" and w.requires_grad)
  assert(w:allclose(T.full({ 16, 4 }, 0.25)))
end

---------------------------------------------------------------------------
-- modes, freezing, conversion
---------------------------------------------------------------------------
tests["train and eval switch Dropout"] = function()
  local m = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.5)))
  assert(m.training and m[2][1].training)
  local x = T.ones({ 200, 4 })
  local y = m[2](x)
  local zeros = y:eq(0):sum():item()
  assert(zeros > 250 and zeros < 550, "about half dropped: " .. zeros)
  assert(y:amax():item() == 2, "kept values scaled by 1 / (1 - p)")
  assert(m:eval() == m and not m.training and not m[2][1].training)
  assert(m[2](x):allclose(x, 0, 0))
  m:train()
  assert(m[2][1].training)
  m:train(false)
  assert(not m[2][1].training)
end

tests["requires_grad_ freezes parameters"] = function()
  local m = mlp()
  m[1]:requires_grad_(false)
  assert(m:num_parameters({ trainable = true }) == 16 + 1 and m:num_parameters() == 4 * 16 + 16 + 16 + 1)
  local loss = m(T.randn({ 3, 4 })):sum()
  loss:backward()
  assert(m[1].weight.grad == nil and m[1].bias.grad == nil)
  assert(m[3].weight.grad ~= nil and m[3].bias.grad ~= nil)
  m:zero_grad()
  assert(m[3].weight.grad == nil)
  m:requires_grad_()
  assert(m[1].weight.requires_grad)
end

tests["to(f64) converts in place and keeps parameter identity"] = function()
  local m = mlp()
  m:register_buffer("ids", T.ones({ 2 }, { dtype = "i64" }))
  m(T.randn({ 2, 4 })):sum():backward()
  local params = m:parameters()
  local w = params[1]:double()
  assert(m:to("f64") == m)
  local after = m:parameters()
  for i, p in ipairs(params) do
    assert(rawequal(p, after[i]), "same tensor object")
    assert(p.dtype == "f64" and p.requires_grad and p.is_leaf and nn.is_parameter(p))
    assert(p.grad and p.grad.dtype == "f64", "grad converted too")
  end
  assert(params[1]:allclose(w, 0, 0))
  assert(m.ids.dtype == "i64", "integer buffers keep their dtype")
  -- an optimizer holding the old list keeps updating the live parameters
  T.no_grad(function() params[1]:mul_(0) end)
  assert(m[1].weight:abs():sum():item() == 0)
  m:zero_grad()
  local y = m(T.randn({ 2, 4 }, { dtype = "f64" }))
  assert(y.dtype == "f64")
  y:sum():backward()
  assert(params[3].grad.dtype == "f64")
  m:float()
  assert(params[1].dtype == "f32" and rawequal(m:parameters()[1], params[1]))
  raises("must be floating", function() m:to("i32") end)
end

tests["apply and zero_grad"] = function()
  local m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
  local order = {}
  m:apply(function(mod)
    order[#order + 1] = mod.__name
    if mod.__name == "Linear" then nn.init.constant_(mod.weight, 0.5) end
  end)
  assert(table.concat(order, " ") == "Linear Linear Sequential Sequential")
  assert(m[2][1].weight:allclose(T.full({ 2, 2 }, 0.5)))
  m(T.ones({ 1, 2 })):sum():backward()
  assert(m[1].weight.grad)
  m:zero_grad()
  for _, p in ipairs(m:parameters()) do assert(p.grad == nil) end
end

---------------------------------------------------------------------------
-- initialisation
---------------------------------------------------------------------------
local function stats(t)
  local d = t:double()
  return d:mean():item(), d:std():item(), d:amin():item(), d:amax():item()
end

tests["default initialisation matches PyTorch's"] = function()
  local lin = nn.Linear(1000, 300)
  local bound = 1 / math.sqrt(1000)
  local _, mean, std, lo, hi
  mean, std, lo, hi = stats(lin.weight)
  assert(lo >= -bound and hi <= bound and hi > 0.99 * bound, "kaiming_uniform(a = sqrt(5)) bound")
  assert(math.abs(std - bound / math.sqrt(3)) < 0.01 * bound and math.abs(mean) < 0.01 * bound)
  _, _, lo, hi = stats(lin.bias)
  assert(lo >= -bound and hi <= bound and hi > 0.9 * bound)
  local conv = nn.Conv2d(16, 64, 3, { groups = 2 })
  bound = 1 / math.sqrt(8 * 9)
  _, std, lo, hi = stats(conv.weight)
  assert(lo >= -bound and hi <= bound and math.abs(std - bound / math.sqrt(3)) < 0.03 * bound)
  local convt = nn.ConvTranspose2d(16, 8, 4)
  bound = 1 / math.sqrt(8 * 16) -- fan_in is weight:size(2) * kh * kw, as PyTorch computes it
  _, _, lo, hi = stats(convt.weight)
  assert(lo >= -bound and hi <= bound and hi > 0.95 * bound)
  local emb = nn.Embedding(1000, 100, { padding_idx = -1 })
  mean, std = stats(emb.weight:narrow(1, 1, 999))
  assert(math.abs(mean) < 0.02 and math.abs(std - 1) < 0.02)
  assert(emb.padding_idx == 1000 and emb.weight[1000]:abs():sum():item() == 0)
  local gn, ln = nn.GroupNorm(2, 4), nn.LayerNorm({ 3, 4 })
  assert(gn.weight:allclose(T.ones({ 4 })) and gn.bias:allclose(T.zeros({ 4 })))
  assert(ln.weight.shape[2] == 4 and ln.bias:abs():sum():item() == 0)
  assert(nn.LayerNorm(4, { bias = false }).bias == nil and nn.GroupNorm(1, 2, { affine = false }).weight == nil)
  assert(nn.Linear(3, 2, { dtype = "f64" }).weight.dtype == "f64")
end

tests["nn.init functions"] = function()
  local I = nn.init
  assert(I.calculate_gain("relu") == math.sqrt(2) and I.calculate_gain("tanh") == 5 / 3)
  assert(I.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01 ^ 2)) and I.calculate_gain("conv2d") == 1)
  assert(math.abs(I.calculate_gain("leaky_relu", math.sqrt(5)) - math.sqrt(1 / 3)) < 1e-15)
  assert(I.calculate_gain("selu") == 0.75)
  raises("unsupported nonlinearity", I.calculate_gain, "swish")
  local fi, fo = I.calculate_fan_in_and_fan_out(T.empty({ 6, 4, 3, 2 }))
  assert(fi == 24 and fo == 36)
  raises("fewer than 2 dimensions", I.xavier_uniform_, T.empty({ 5 }))

  local w = T.empty({ 400, 600 }, { requires_grad = true })
  assert(I.xavier_uniform_(w) == w)
  local a = math.sqrt(6 / 1000)
  local _, std, lo, hi = stats(w)
  assert(lo >= -a and hi <= a and hi > 0.99 * a and math.abs(std - a / math.sqrt(3)) < 0.01 * a)
  I.xavier_normal_(w, 2)
  _, std = stats(w)
  assert(math.abs(std - 2 * math.sqrt(2 / 1000)) < 0.02 * std)
  I.kaiming_normal_(w, { mode = "fan_out", nonlinearity = "relu" })
  _, std = stats(w)
  assert(math.abs(std - math.sqrt(2 / 400)) < 0.02 * std)
  I.kaiming_uniform_(w, 0, "fan_in", "relu")
  _, _, lo, hi = stats(w)
  local b = math.sqrt(6 / 600)
  assert(lo >= -b and hi <= b and hi > 0.99 * b)
  I.kaiming_uniform_(w, { a = math.sqrt(5) })
  _, _, lo, hi = stats(w)
  assert(hi <= 1 / math.sqrt(600) and hi > 0.99 / math.sqrt(600))
  I.uniform_(w, -3, -2)
  _, _, lo, hi = stats(w)
  assert(lo >= -3 and hi <= -2)
  I.normal_(w, { mean = 5, std = 0.1 })
  local mean
  mean, std = stats(w)
  assert(math.abs(mean - 5) < 0.01 and math.abs(std - 0.1) < 0.005)
  I.trunc_normal_(w, 0, 1, -1, 1.5)
  mean, std, lo, hi = stats(w)
  -- N(0, 1) truncated to [-1, 1.5]: mean 0.1452, std 0.6447
  assert(lo >= -1 and hi <= 1.5 and math.abs(mean - 0.1452) < 0.01 and math.abs(std - 0.6447) < 0.01, mean .. " " .. std)
  I.trunc_normal_(w, { std = 0.02 }) -- the ViT style: bounds +-2 far outside
  _, std = stats(w)
  assert(math.abs(std - 0.02) < 0.001)
  assert(I.constant_(w, 3):allclose(T.full({ 400, 600 }, 3)))
  assert(I.zeros_(w):abs():sum():item() == 0 and I.ones_(w):sum():item() == 240000)
  assert(w.requires_grad and w.is_leaf, "init keeps the leaf")
end

---------------------------------------------------------------------------
-- printing
---------------------------------------------------------------------------
tests["tostring prints the tree with parameter counts"] = function()
  local Tiny = nn.Module:extend("Tiny")
  function Tiny:init()
    self.fc = nn.Linear(3, 2)
    self.body = nn.Sequential(nn.Conv2d(1, 2, 3, { padding = 1 }), nn.GroupNorm(1, 2), nn.SiLU())
    self.up = nn.Upsample({ scale_factor = 2 })
    self.drop = nn.Dropout(0.1)
  end
  local expected = table.concat({
    "Tiny(  [32 params]",
    "  (fc): Linear(in_features=3, out_features=2, bias=true)  [8 params]",
    "  (body): Sequential(  [24 params]",
    "    (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))  [20 params]",
    "    (1): GroupNorm(1, 2, eps=1e-05, affine=true)  [4 params]",
    "    (2): SiLU()",
    "  )",
    "  (up): Upsample(scale_factor=2, mode=nearest)",
    "  (drop): Dropout(p=0.1)",
    ")",
  }, "\n")
  local got = tostring(Tiny())
  assert(got == expected, "\n" .. got)
  assert(tostring(nn.MultiheadAttention(8, 2, { context_dim = 6 })):find(
    "MultiheadAttention(  [232 params]\n  embed_dim=8, heads=2, dim_head=4, context_dim=6\n  (to_q):", 1, true))
  assert(tostring(nn.Linear(1000, 1000)):find("[1,001,000 params]", 1, true))
  assert(tostring(nn.Linear) == "class Linear")
end

---------------------------------------------------------------------------
-- layers against PyTorch
---------------------------------------------------------------------------
local function build(name)
  local c = ref[name]
  if name == "linear" then return nn.Linear(5, 3) end
  if name == "linear_nobias" then return nn.Linear(5, 3, false) end
  if name == "conv2d" then return nn.Conv2d(4, 6, 3, { stride = 2, padding = 1 }) end
  if name == "conv2d_groups" then
    return nn.Conv2d(4, 6, { 3, 2 }, { groups = 2, dilation = { 2, 1 }, padding = { 2, 0 }, bias = false })
  end
  if name == "conv2d_reflect" then return nn.Conv2d(3, 2, 3, { padding = 1, padding_mode = "reflect" }) end
  if name == "conv_transpose2d" then
    return nn.ConvTranspose2d(4, 6, 3, { stride = 2, padding = 1, output_padding = 1, groups = 2 })
  end
  if name == "group_norm" then return nn.GroupNorm(3, 6, { eps = 1e-6 }) end
  if name == "layer_norm" then return nn.LayerNorm(7) end
  if name == "layer_norm_2d" then return nn.LayerNorm({ 5, 7 }, { eps = 1e-6 }) end
  if name == "silu" then return nn.SiLU() end
  if name == "gelu" then return nn.GELU() end
  if name == "gelu_tanh" then return nn.GELU("tanh") end
  if name == "relu" then return nn.ReLU() end
  if name == "upsample_nearest" then return nn.Upsample({ scale_factor = 2 }) end
  if name == "upsample_bilinear" then return nn.Upsample({ size = { 5, 7 }, mode = "bilinear" }) end
  if name == "upsample_bilinear_ac" then
    return nn.Upsample({ scale_factor = 2, mode = "bilinear", align_corners = true })
  end
  if name == "embedding" then return nn.Embedding(10, 4, { padding_idx = c.padding_idx }) end
  if name == "attention_self" or name == "attention_causal" then return nn.MultiheadAttention(8, 2, { bias = true }) end
  if name == "attention_cross" then return nn.MultiheadAttention(8, 2, { context_dim = 6, dim_head = 3 }) end
end

-- the same values laid out with other strides
local function non_contiguous(x)
  if x:dim() < 2 then return x end
  local y = x:transpose(-1, -2):contiguous():transpose(-1, -2)
  assert(not y:is_contiguous())
  return y
end

for name, c in pairs(ref) do
  if name ~= "model" then
    tests["forward vs PyTorch: " .. name] = function()
      local m = build(name):double()
      m:load_state_dict(state_of(c))
      local x = tensor(c.x, name == "embedding" and "i64" or "f64")
      local context = c.context and tensor(c.context)
      local opts = name == "attention_causal" and { is_causal = true } or nil
      local y = m(x, context, opts)
      T.testing.assert_close(y, tensor(c.y), { rtol = 1e-10, atol = 1e-12, msg = name })
      T.testing.assert_close(m(non_contiguous(x), context, opts), tensor(c.y), { rtol = 1e-10, atol = 1e-12, msg = name })
      -- and in f32, from the same weights
      m:float()
      local y32 = m(name == "embedding" and x or x:float(), context and context:float(), opts)
      assert(y32.dtype == "f32")
      T.testing.assert_close(y32, tensor(c.y), { rtol = 1e-5, atol = 1e-5, msg = name .. " f32" })
    end
  end
end

tests["ConvTranspose2d output_size picks output_padding"] = function()
  local m = nn.ConvTranspose2d(2, 2, 3, { stride = 2, padding = 1 })
  local x = T.randn({ 1, 2, 4, 5 })
  assert(table.concat(m(x).shape, " ") == "1 2 7 9")
  assert(table.concat(m(x, { 8, 10 }).shape, " ") == "1 2 8 10")
  raises("outside %[7, 8%]", function() m(x, { 9, 9 }) end)
end

tests["embedding padding row gets no gradient"] = function()
  local e = nn.Embedding(5, 3, { padding_idx = 2 })
  e(T.tensor({ 1, 2, 2, 5 }, { dtype = "i64" })):sum():backward()
  assert(e.weight.grad[2]:abs():sum():item() == 0 and e.weight.grad[1]:sum():item() == 3)
  local pre = nn.Embedding.from_pretrained(T.ones({ 4, 2 }))
  assert(not pre.weight.requires_grad and pre.num_embeddings == 4)
  assert(nn.Embedding.from_pretrained(T.ones({ 4, 2 }), { freeze = false }).weight.requires_grad)
end

---------------------------------------------------------------------------
-- a PyTorch state_dict, saved with safetensors.torch.save_file
---------------------------------------------------------------------------
tests["PyTorch safetensors state_dict gives PyTorch's outputs"] = function()
  local c = ref.model
  local sd = T.load(T.testing.path("ref/nn_model.safetensors"))
  local m = Model():eval()
  m:load_state_dict(sd) -- strict: the trees match name for name
  local ids = tensor(c.ids, "i64")
  local y = m(tensor(c.x, "f32"), ids)
  T.testing.assert_close(y, tensor(c.y), { rtol = 1e-5, atol = 1e-5, msg = "f32" })
  -- in f64, gradients too
  m:to("f64")
  local x = tensor(c.x):requires_grad_()
  y = m(x, ids)
  T.testing.assert_close(y, tensor(c.y), { rtol = 1e-10, atol = 1e-10, msg = "f64" })
  ;(y * tensor(c.r)):sum():backward()
  local tol = { rtol = 1e-9, atol = 1e-10 }
  T.testing.assert_close(x.grad, tensor(c.grad_x), tol)
  T.testing.assert_close(m.conv_in.weight.grad, tensor(c.grad_conv_in_weight), tol)
  T.testing.assert_close(m.blocks[1].attn.to_q.weight.grad, tensor(c.grad_to_q), tol)
  T.testing.assert_close(m.blocks[2].norm1.weight.grad, tensor(c.grad_norm1_weight), tol)
  T.testing.assert_close(m.embed.weight.grad, tensor(c.grad_embed), tol)
end

---------------------------------------------------------------------------
-- training
---------------------------------------------------------------------------
tests["an MLP learns with a manual SGD loop"] = function()
  T.manual_seed(3)
  local x = T.randn({ 64, 4 })
  local target = (x:narrow(2, 1, 1) * 2 - x:narrow(2, 2, 1)):sin() + x:narrow(2, 3, 1):square() * 0.5
  local m = mlp()
  local params = m:parameters()
  local first, last
  for step = 1, 300 do
    local loss = (m(x) - target):square():mean()
    if step == 1 then first = loss:item() end
    last = loss:item()
    m:zero_grad()
    loss:backward()
    T.no_grad(function()
      for _, p in ipairs(params) do p:sub_(p.grad * 0.1) end
    end)
  end
  assert(last < 0.2 * first, string.format("loss %.4f -> %.4f", first, last))
end

---------------------------------------------------------------------------
-- bad input
---------------------------------------------------------------------------
tests["clear errors for bad arguments"] = function()
  raises("in_features must be a non%-negative integer", nn.Linear, "4", 2)
  raises("options must be a table", nn.Conv2d, 2, 2, 3, 1)
  raises("in_channels %(3%) must be divisible by groups %(2%)", nn.Conv2d, 3, 4, 3, { groups = 2 })
  raises("padding_mode must be", nn.Conv2d, 3, 4, 3, { padding_mode = "circular" })
  raises("kernel_size must be a number or a pair", nn.Conv2d, 3, 4, { 1, 2, 3 })
  raises("num_channels %(6%) must be divisible by num_groups %(4%)", nn.GroupNorm, 4, 6)
  raises("padding_idx must be in 1..5", nn.Embedding, 5, 2, { padding_idx = 0 })
  raises("p must be in %[0, 1%]", nn.Dropout, 1.5)
  raises("approximate must be", nn.GELU, "fast")
  raises("give size or scale_factor", nn.Upsample, {})
  raises("embed_dim %(10%) must be divisible by num_heads %(4%)", nn.MultiheadAttention, 10, 4)
  raises("x must be %[batch, length, embed_dim%]", function() nn.MultiheadAttention(8, 2)(T.randn({ 3, 8 })) end)
  raises("give the class a name", nn.Module.extend, nn.Module)
  raises("Thing: forward is not implemented", function() nn.Module:extend("Thing")()(T.ones({ 1 })) end)
  raises("nn.Parameter: expected a tensor", nn.Parameter, 3)
  raises("must be non%-empty and contain no", function() nn.Module():register_buffer("a.b", T.ones({ 1 })) end)
  raises("attribute \"x\" already exists", function()
    local m = nn.Module()
    m.x = 1
    m:register_parameter("x", T.ones({ 1 }))
  end)
  raises("attribute \"keys\" already exists", nn.ModuleDict, { keys = nn.ReLU() })
  raises("attribute \"forward\" already exists", function() nn.Sequential().forward = nn.ReLU() end)
  -- shape errors from the ops name the shapes
  local ok, err = pcall(function() return nn.Linear(4, 2)(T.ones({ 3, 5 })) end)
  assert(not ok and tostring(err):find("5") and tostring(err):find("4"), tostring(err))
end

return tests
