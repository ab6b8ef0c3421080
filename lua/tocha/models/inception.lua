-- tocha/models/inception.lua: InceptionV3FID, the Inception-v3 that FID is measured with: the
-- TensorFlow graph inception-2015-12-05 as pytorch-fid rebuilds it from torchvision's Inception3
-- (1008 classes, no auxiliary head; average pools that leave padding out of the count, and a
-- max pool in the last block). Module and parameter names are torchvision's
-- (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_mean, ..., fc.weight), so
-- pytorch-fid's released weights, converted to safetensors, load by name.
local T = require "tocha"
local nn = require "tocha.nn"
local F = nn.functional

local WHAT = "InceptionV3FID"
local MIN_SIZE = 75

---------------------------------------------------------------------------
-- BasicConv2d: convolution without bias, BatchNorm (eps 0.001), ReLU
---------------------------------------------------------------------------
local BasicConv2d = nn.Module:extend("BasicConv2d")

function BasicConv2d:init(cin, cout, kernel, opts, to)
  opts = opts or {}
  self.conv = nn.Conv2d(cin, cout, kernel, { bias = false, stride = opts.stride, padding = opts.padding,
    dtype = to.dtype, device = to.device })
  self.bn = nn.BatchNorm2d(cout, { eps = 0.001, dtype = to.dtype, device = to.device })
end

function BasicConv2d:forward(x)
  local f = rawget(self, "_folded")
  if f then -- inference only: the ReLU in place spares a pass and an allocation
    return F.conv2d(x, f.weight, f.bias, { stride = self.conv.stride, padding = self.conv.padding }):clamp_(0, math.huge)
  end
  return self.bn(self.conv(x)):relu()
end

-- the BatchNorm's eval-mode affine folded into the convolution: w * s, beta - mean * s with
-- s = gamma / sqrt(var + eps); one pass over the activations instead of three
function BasicConv2d:fold()
  local bn, w = self.bn, self.conv.weight
  T.no_grad(function()
    local s = bn.weight / (bn.running_var + bn.eps):sqrt()
    rawset(self, "_folded", { weight = (w * s:view(-1, 1, 1, 1)):contiguous(), bias = bn.bias - bn.running_mean * s })
  end)
end

local function conv(cin, cout, kernel, to, opts) return BasicConv2d(cin, cout, kernel, opts, to) end

-- TensorFlow's average pool leaves the padding out of the count
local function avg_pool(x) return F.avg_pool2d(x, 3, { stride = 1, padding = 1, count_include_pad = false }) end

---------------------------------------------------------------------------
-- the blocks (torchvision's InceptionA..E with pytorch-fid's pools)
---------------------------------------------------------------------------
local InceptionA = nn.Module:extend("FIDInceptionA")

function InceptionA:init(cin, pool_features, to)
  self.branch1x1 = conv(cin, 64, 1, to)
  self.branch5x5_1 = conv(cin, 48, 1, to)
  self.branch5x5_2 = conv(48, 64, 5, to, { padding = 2 })
  self.branch3x3dbl_1 = conv(cin, 64, 1, to)
  self.branch3x3dbl_2 = conv(64, 96, 3, to, { padding = 1 })
  self.branch3x3dbl_3 = conv(96, 96, 3, to, { padding = 1 })
  self.branch_pool = conv(cin, pool_features, 1, to)
end

function InceptionA:forward(x)
  return T.cat({
    self.branch1x1(x),
    self.branch5x5_2(self.branch5x5_1(x)),
    self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
    self.branch_pool(avg_pool(x)),
  }, 2)
end

local InceptionB = nn.Module:extend("InceptionB")

function InceptionB:init(cin, to)
  self.branch3x3 = conv(cin, 384, 3, to, { stride = 2 })
  self.branch3x3dbl_1 = conv(cin, 64, 1, to)
  self.branch3x3dbl_2 = conv(64, 96, 3, to, { padding = 1 })
  self.branch3x3dbl_3 = conv(96, 96, 3, to, { stride = 2 })
end

function InceptionB:forward(x)
  return T.cat({
    self.branch3x3(x),
    self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
    F.max_pool2d(x, 3, { stride = 2 }),
  }, 2)
end

local InceptionC = nn.Module:extend("FIDInceptionC")

function InceptionC:init(cin, c7, to)
  self.branch1x1 = conv(cin, 192, 1, to)
  self.branch7x7_1 = conv(cin, c7, 1, to)
  self.branch7x7_2 = conv(c7, c7, { 1, 7 }, to, { padding = { 0, 3 } })
  self.branch7x7_3 = conv(c7, 192, { 7, 1 }, to, { padding = { 3, 0 } })
  self.branch7x7dbl_1 = conv(cin, c7, 1, to)
  self.branch7x7dbl_2 = conv(c7, c7, { 7, 1 }, to, { padding = { 3, 0 } })
  self.branch7x7dbl_3 = conv(c7, c7, { 1, 7 }, to, { padding = { 0, 3 } })
  self.branch7x7dbl_4 = conv(c7, c7, { 7, 1 }, to, { padding = { 3, 0 } })
  self.branch7x7dbl_5 = conv(c7, 192, { 1, 7 }, to, { padding = { 0, 3 } })
  self.branch_pool = conv(cin, 192, 1, to)
end

function InceptionC:forward(x)
  local d = self.branch7x7dbl_1(x)
  d = self.branch7x7dbl_3(self.branch7x7dbl_2(d))
  d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
  return T.cat({
    self.branch1x1(x),
    self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
    d,
    self.branch_pool(avg_pool(x)),
  }, 2)
end

local InceptionD = nn.Module:extend("InceptionD")

function InceptionD:init(cin, to)
  self.branch3x3_1 = conv(cin, 192, 1, to)
  self.branch3x3_2 = conv(192, 320, 3, to, { stride = 2 })
  self.branch7x7x3_1 = conv(cin, 192, 1, to)
  self.branch7x7x3_2 = conv(192, 192, { 1, 7 }, to, { padding = { 0, 3 } })
  self.branch7x7x3_3 = conv(192, 192, { 7, 1 }, to, { padding = { 3, 0 } })
  self.branch7x7x3_4 = conv(192, 192, 3, to, { stride = 2 })
end

function InceptionD:forward(x)
  local b = self.branch7x7x3_2(self.branch7x7x3_1(x))
  return T.cat({
    self.branch3x3_2(self.branch3x3_1(x)),
    self.branch7x7x3_4(self.branch7x7x3_3(b)),
    F.max_pool2d(x, 3, { stride = 2 }),
  }, 2)
end

-- pool: "avg" in Mixed_7b (pytorch-fid's FIDInceptionE_1), "max" in Mixed_7c (FIDInceptionE_2,
-- where the TensorFlow graph has a max pool)
local InceptionE = nn.Module:extend("FIDInceptionE")

function InceptionE:init(cin, pool, to)
  self.pool = pool
  self.branch1x1 = conv(cin, 320, 1, to)
  self.branch3x3_1 = conv(cin, 384, 1, to)
  self.branch3x3_2a = conv(384, 384, { 1, 3 }, to, { padding = { 0, 1 } })
  self.branch3x3_2b = conv(384, 384, { 3, 1 }, to, { padding = { 1, 0 } })
  self.branch3x3dbl_1 = conv(cin, 448, 1, to)
  self.branch3x3dbl_2 = conv(448, 384, 3, to, { padding = 1 })
  self.branch3x3dbl_3a = conv(384, 384, { 1, 3 }, to, { padding = { 0, 1 } })
  self.branch3x3dbl_3b = conv(384, 384, { 3, 1 }, to, { padding = { 1, 0 } })
  self.branch_pool = conv(cin, 192, 1, to)
end

function InceptionE:forward(x)
  local a = self.branch3x3_1(x)
  local d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
  local p = self.pool == "max" and F.max_pool2d(x, 3, { stride = 1, padding = 1 }) or avg_pool(x)
  return T.cat({
    self.branch1x1(x),
    self.branch3x3_2a(a), self.branch3x3_2b(a),
    self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
    self.branch_pool(p),
  }, 2)
end

---------------------------------------------------------------------------
-- the network
---------------------------------------------------------------------------
local InceptionV3FID = nn.Module:extend(WHAT)

-- the feature taps: name -> (block after which it is taken, its width)
local TAPS = { ["64"] = 1, ["192"] = 2, ["768"] = 3, ["2048"] = 4, logits = 5, logits_unbiased = 5 }
InceptionV3FID.TAPS = { "64", "192", "768", "2048", "logits", "logits_unbiased" }

--- models.InceptionV3FID({dtype, device}): weights start as zeros and BatchNorm's defaults;
--- load them with net:load_state_dict(T.load(path)) or InceptionV3FID.from_file(path)
function InceptionV3FID:init(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(WHAT .. ": options must be a table", 3) end
  local to = { dtype = opts.dtype, device = opts.device }
  self.Conv2d_1a_3x3 = conv(3, 32, 3, to, { stride = 2 })
  self.Conv2d_2a_3x3 = conv(32, 32, 3, to)
  self.Conv2d_2b_3x3 = conv(32, 64, 3, to, { padding = 1 })
  self.Conv2d_3b_1x1 = conv(64, 80, 1, to)
  self.Conv2d_4a_3x3 = conv(80, 192, 3, to)
  self.Mixed_5b = InceptionA(192, 32, to)
  self.Mixed_5c = InceptionA(256, 64, to)
  self.Mixed_5d = InceptionA(288, 64, to)
  self.Mixed_6a = InceptionB(288, to)
  self.Mixed_6b = InceptionC(768, 128, to)
  self.Mixed_6c = InceptionC(768, 160, to)
  self.Mixed_6d = InceptionC(768, 160, to)
  self.Mixed_6e = InceptionC(768, 192, to)
  self.Mixed_7a = InceptionD(768, to)
  self.Mixed_7b = InceptionE(1280, "avg", to)
  self.Mixed_7c = InceptionE(2048, "max", to)
  self.fc = nn.Linear(2048, 1008, to)
  self:eval()
end

-- the four blocks of pytorch-fid's InceptionV3, each ending where a feature tap is taken
local BLOCKS = {
  { "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool" },
  { "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool" },
  { "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e" },
  { "Mixed_7a", "Mixed_7b", "Mixed_7c" },
}

local function global_mean(x) return x:mean({ 3, 4 }) end

--- net(x, {outputs = {"2048"}}) -> a table name -> tensor. x: float [N, 3, H, W] already
--- scaled to the network's range ([-1, 1]), H and W at least 75 (299 for FID). Outputs:
--- "64", "192", "768", "2048" (pytorch-fid's blocks, averaged over space: [N, d]), "logits"
--- ([N, 1008]) and "logits_unbiased" (the same without fc's bias, which torch-fidelity's
--- Inception Score uses). Only the blocks the outputs need are run.
function InceptionV3FID:forward(x, opts)
  opts = opts or {}
  if not T.is_tensor(x) or x:dim() ~= 4 or x.shape[2] ~= 3 then
    error(string.format("%s: expected images [N, 3, H, W], got %s", WHAT,
      T.is_tensor(x) and ("[" .. table.concat(x.shape, " x ") .. "]") or type(x)), 2)
  end
  if x.shape[3] < MIN_SIZE or x.shape[4] < MIN_SIZE then
    error(string.format("%s: images must be at least %d x %d (299 x 299 for FID), got %d x %d", WHAT, MIN_SIZE,
      MIN_SIZE, x.shape[3], x.shape[4]), 2)
  end
  if x.dtype ~= self.fc.weight.dtype then
    error(string.format("%s: the images are %s, the network %s", WHAT, x.dtype, self.fc.weight.dtype), 2)
  end
  local outputs = opts.outputs or { "2048" }
  local last = 0
  for _, name in ipairs(outputs) do
    local b = TAPS[name]
    if not b then
      error(string.format("%s: unknown output %q (64, 192, 768, 2048, logits, logits_unbiased)", WHAT, tostring(name)), 2)
    end
    if b > last then last = b end
  end
  local want = {}
  for _, name in ipairs(outputs) do want[name] = true end
  local out = {}
  for b = 1, math.min(last, 4) do
    for _, name in ipairs(BLOCKS[b]) do
      if name == "maxpool" then x = F.max_pool2d(x, 3, { stride = 2 }) else x = self[name](x) end
    end
    local tap = ({ "64", "192", "768", "2048" })[b]
    if want[tap] or b == 4 then
      local pooled = global_mean(x)
      if want[tap] then out[tap] = pooled end
      if b == 4 then x = pooled end
    end
  end
  if last == 5 then
    local unbiased = x:matmul(self.fc.weight:t())
    if want.logits_unbiased then out.logits_unbiased = unbiased end
    if want.logits then out.logits = unbiased + self.fc.bias end
  end
  return out
end

--- net:fold() folds every BatchNorm into its convolution (inference only: eval mode, the
--- weights as they are now). Loading weights or switching to training undoes it.
function InceptionV3FID:fold()
  for _, m in ipairs(self:modules()) do
    if m.__name == "BasicConv2d" then m:fold() end
  end
  rawset(self, "_is_folded", true)
  return self
end

local function unfold(self)
  if not rawget(self, "_is_folded") then return end
  for _, m in ipairs(self:modules()) do
    if m.__name == "BasicConv2d" then rawset(m, "_folded", nil) end
  end
  rawset(self, "_is_folded", nil)
end

function InceptionV3FID:train(mode)
  if mode ~= false then unfold(self) end
  return nn.Module.train(self, mode)
end

function InceptionV3FID:to(...)
  unfold(self)
  return nn.Module.to(self, ...)
end

--- load_state_dict(sd, strict): as nn.Module's; a checkpoint of torchvision's ImageNet
--- Inception (1000 classes, AuxLogits) is refused with a word on which weights FID needs
function InceptionV3FID:load_state_dict(sd, strict)
  unfold(self)
  if type(sd) == "table" and T.is_tensor(sd["fc.weight"]) and sd["fc.weight"].shape[1] == 1000 then
    error(WHAT .. ": these weights have 1000 classes (torchvision's ImageNet Inception-v3); FID uses the "
      .. "TensorFlow graph's 1008-class weights, pt_inception-2015-12-05 (see docs/eval.md)", 2)
  end
  local ok, res = pcall(nn.Module.load_state_dict, self, sd, strict)
  if not ok then error(res, 2) end
  return res
end

--- InceptionV3FID.from_file(path, {dtype, device}) -> the network with the safetensors
--- weights at path (pytorch-fid's pt_inception-2015-12-05 converted by
--- tools/convert_weights.py), in eval mode with its BatchNorms folded
function InceptionV3FID.from_file(path, opts)
  if type(path) ~= "string" then error(WHAT .. ".from_file: path must be a string", 2) end
  local okl, sd = pcall(T.load, path)
  if not okl then error(string.format("%s: cannot read the weights %s: %s", WHAT, path, tostring(sd)), 2) end
  local net = InceptionV3FID(opts)
  local ok, err = pcall(net.load_state_dict, net, sd)
  if not ok then
    error(string.format("%s: the weights in %s do not fit the network: %s", WHAT, path,
      tostring(err):gsub("^[^:]*%.lua:%d+: ", "")), 2)
  end
  return net:eval():fold()
end

return { InceptionV3FID = InceptionV3FID }
