-- tocha.eval.shapes_fid: FID without downloaded weights, for tocha.data.shapes images. A small
-- convolutional network learns to read a scene's attributes (which color is where, which shape
-- is where, which color goes with which shape, how big); its 64-wide penultimate layer is the
-- feature space, so the distance weighs what captions talk about. The weights ship beside this
-- file (shapes_features.safetensors, made by experiments/shapes_features.lua); without them the
-- network is trained on first use and cached under runs/.
local T = require "tocha"
local nn = require "tocha.nn"
local F = nn.functional
local shapes = require "tocha.data.shapes"
local image = require "tocha.image"

local M = {}

M.SIZE = 32
M.DIMS = 64
local NC, NS, NP = #shapes.COLORS, #shapes.SHAPES, #shapes.POSITIONS
-- the heads: multi-label (color at a place, shape at a place, color with shape) and the size
-- class (small, big, or medium: the objects of a pair). A pair's objects sit at the places its
-- relation gives them, so every label is read off the image alone (a relation is not: "a
-- above b" and "b below a" are one picture).
M.HEADS = { color_at = NC * NP, shape_at = NS * NP, pairs = NC * NS, size = 3 }
local HEAD_ORDER = { "color_at", "shape_at", "pairs", "size" }

---------------------------------------------------------------------------------------------
-- the network
---------------------------------------------------------------------------------------------
local Net = nn.Module:extend("ShapesFeatures")
M.Net = Net

local function block(cin, cout)
  return nn.Sequential(nn.Conv2d(cin, cout, 3, { padding = 1, bias = false }), nn.BatchNorm2d(cout), nn.ReLU())
end

--- eval.shapes_fid.Net(): [N, 3, 32, 32] in [-1, 1] -> features [N, 64], and with
--- forward(x, true) also the heads' logits {color_at, shape_at, pairs, size}. Two more input
--- channels hold each pixel's x and y, so that features pooled over the image still know
--- where things are.
function Net:init()
  self.body = nn.Sequential(block(5, 16), block(16, 32), nn.MaxPool2d(2), block(32, 48), nn.MaxPool2d(2),
    block(48, 64), nn.MaxPool2d(2))
  self.features = nn.Linear(64, M.DIMS)
  local total = 0
  for _, n in pairs(M.HEADS) do total = total + n end
  self.heads = nn.Linear(M.DIMS, total)
end

local coords = {}
local function with_coords(x)
  local N, S = x.shape[1], x.shape[3]
  local key = S .. x.dtype .. tostring(x.device)
  if not coords[key] then
    local r = T.linspace(-1, 1, S):to(x.dtype):to(x.device)
    coords[key] = T.stack({ r:view(1, S):expand(S, S), r:view(S, 1):expand(S, S) }, 1):contiguous()
  end
  return T.cat({ x, coords[key]:unsqueeze(1):expand(N, 2, S, S) }, 2)
end

function Net:forward(x, with_heads)
  local f = self.features(self.body(with_coords(x)):mean({ 3, 4 }))
  if not with_heads then return f end
  local h, out, at = self.heads(f:relu()), {}, 1
  for _, name in ipairs(HEAD_ORDER) do
    out[name] = h:narrow(2, at, M.HEADS[name])
    at = at + M.HEADS[name]
  end
  return f, out
end

---------------------------------------------------------------------------------------------
-- targets: what a scene's caption says, as the heads predict it
---------------------------------------------------------------------------------------------
local COLOR_K, SHAPE_K, POS_K, SIZE_K = {}, {}, {}, { small = 1, big = 2, medium = 3 }
for k, c in ipairs(shapes.COLORS) do COLOR_K[c.name] = k end
for k, s in ipairs(shapes.SHAPES) do SHAPE_K[s] = k end
for k, p in ipairs(shapes.POSITIONS) do POS_K[p.name] = k end

--- targets(objects) for a batch (the list ds:batch gives) -> {color_at [B, 40], shape_at
--- [B, 30], pairs [B, 48] (0/1 f32 at (color - 1) * places + place, and the like), size [B]
--- (i64: small, big, or medium for a pair's objects)}
function M.targets(objects)
  local B = #objects
  local color_at, shape_at, pairs = T.zeros({ B, NC * NP }), T.zeros({ B, NS * NP }), T.zeros({ B, NC * NS })
  local size = {}
  for i, objs in ipairs(objects) do
    for _, o in ipairs(objs) do
      local c, s, p = COLOR_K[o.color], SHAPE_K[o.shape], POS_K[o.position]
      color_at[i][(c - 1) * NP + p] = 1
      shape_at[i][(s - 1) * NP + p] = 1
      pairs[i][(c - 1) * NS + s] = 1
    end
    size[i] = SIZE_K[#objs == 1 and objs[1].size or "medium"]
  end
  return { color_at = color_at, shape_at = shape_at, pairs = pairs, size = T.tensor(size, { dtype = "i64" }) }
end

local function bce(logits, y)
  -- log(1 + e^x) - y x, written stably
  return (logits:relu() - logits * y + (-logits:abs()):exp():add(1):log()):mean()
end

--- loss(net, images, targets) -> total loss, the heads' logits
function M.loss(net, x, t)
  local _, h = net(x, true)
  local loss = (bce(h.color_at, t.color_at) + bce(h.shape_at, t.shape_at) + bce(h.pairs, t.pairs)) * 10
    + F.cross_entropy(h.size, t.size)
  return loss, h
end

--- accuracy(heads, targets) -> {color_at, shape_at, pairs (the whole multi-label vector right),
--- size} as fractions of the batch
function M.accuracy(h, t)
  local function exact(logits, y) return logits:gt(0):to("f32"):eq(y):to("f32"):min(2):mean():item() end
  return { color_at = exact(h.color_at, t.color_at), shape_at = exact(h.shape_at, t.shape_at),
    pairs = exact(h.pairs, t.pairs), size = h.size:argmax(2):eq(t.size):to("f32"):mean():item() }
end

--- the training data: scenes of one and two objects over the full vocabulary of the default
--- dataset, every split
function M.dataset(seed)
  return shapes { size = M.SIZE, seed = seed, objects = { 1, 2 }, split = "all" }
end

--- train{steps = 2000, batch = 64, lr = 2e-3, seed = 0, log = function(step, loss) end} ->
--- net (eval mode), {accuracy on 1000 fresh scenes}. AdamW with warmup and cosine decay.
function M.train(opts)
  opts = opts or {}
  local optim, lr = require "tocha.optim", require "tocha.lr"
  local steps, batch, seed = opts.steps or 2000, opts.batch or 64, opts.seed or 0
  T.manual_seed(seed)
  local net = Net()
  local ds = M.dataset(seed)
  local opt = optim.AdamW(net:parameters(), { lr = opts.lr or 2e-3, weight_decay = 1e-4 })
  local schedule = lr.cosine { lr = opts.lr or 2e-3, steps = steps, warmup = math.min(100, steps // 10) }
  net:train()
  for step = 0, steps - 1 do
    local b = ds:batch(step * batch + 1, batch)
    local loss = M.loss(net, b.image, M.targets(b.objects))
    loss:backward()
    opt:set_lr(schedule(step))
    opt:step()
    opt:zero_grad()
    if opts.log then opts.log(step + 1, loss:item()) end
  end
  net:eval()
  return net, M.evaluate(net, seed + 1)
end

--- evaluate(net, seed) -> accuracy of the heads on 1000 scenes of M.dataset(seed)
function M.evaluate(net, seed)
  local b = M.dataset(seed):batch(1, 1000)
  local t = M.targets(b.objects)
  local h = T.no_grad(function() return select(2, M.loss(net, b.image, t)) end)
  return M.accuracy(h, t)
end

---------------------------------------------------------------------------------------------
-- the weights
---------------------------------------------------------------------------------------------
local function here()
  local path = package.searchpath("tocha.eval.shapes_fid", package.path)
  return path and path:match("^(.*)/[^/]*$") or "."
end

M.SHIPPED = here() .. "/shapes_features.safetensors"
M.CACHED = "runs/shapes_features/shapes_features.safetensors"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- save(net, path, meta)
function M.save(net, path, meta)
  T.save(path, net:state_dict(), meta)
end

local loaded = {}

--- load(path) -> the network in eval mode, from path, else the shipped weights, else the
--- runs/ cache, else trained now (a few minutes on two cores) and cached there
function M.load(path)
  path = path or (exists(M.SHIPPED) and M.SHIPPED) or (exists(M.CACHED) and M.CACHED) or nil
  if path and loaded[path] then return loaded[path] end
  local net = Net()
  if path then
    local ok, sd = pcall(T.load, path)
    if not ok then error("shapes_fid: cannot read " .. path .. ": " .. tostring(sd), 2) end
    local okl, err = pcall(net.load_state_dict, net, sd)
    if not okl then error("shapes_fid: the weights in " .. path .. " do not fit the network: " .. tostring(err), 2) end
  else
    io.stderr:write("shapes_fid: no trained weights; training the feature network now (cached in " .. M.CACHED .. ")\n")
    local acc
    net, acc = M.train()
    T._sys.mkdirs((M.CACHED:gsub("/[^/]*$", "")))
    M.save(net, M.CACHED, { accuracy_pairs = tostring(acc.pairs) })
    path = M.CACHED
  end
  net:eval()
  loaded[path] = net
  return net
end

---------------------------------------------------------------------------------------------
-- the extractor and the metric
---------------------------------------------------------------------------------------------
local Extractor = {}
Extractor.__index = Extractor

--- extractor{weights = path, batch = 256, device} -> features(images, {range}) -> f32 [N, 64]:
--- images as eval.inception.images takes them (u8, or float in range, default [0, 1]); other
--- sizes than 32 x 32 are resized (bilinear, antialiased)
function M.extractor(opts)
  opts = opts or {}
  local net = type(opts.weights) == "table" and opts.weights or M.load(opts.weights)
  if opts.device then net:to(opts.device) end
  return setmetatable({ net = net, dims = M.DIMS, batch = opts.batch or 256, device = opts.device or "cpu",
    id = "shapes64" }, Extractor)
end

function Extractor:features(images, opts)
  local list = require("tocha.eval.inception").images(images, { range = opts and opts.range }, 2)
  local parts = {}
  T.no_grad(function()
    for first = 1, #list, self.batch do
      local xs = {}
      for i = first, math.min(first + self.batch - 1, #list) do
        local img = list[i]
        if img.shape[1] ~= M.SIZE or img.shape[2] ~= M.SIZE then img = image.resize(img, { M.SIZE, M.SIZE }) end
        xs[#xs + 1] = img
      end
      parts[#parts + 1] = self.net(image.to_float(T.stack(xs, 1)):to(self.device)):to("cpu")
    end
  end)
  return #parts > 0 and T.cat(parts, 1) or T.zeros({ 0, M.DIMS })
end

local refs = {}

--- reference(opts) -> statistics of n real images of the dataset (single objects of the test
--- split by default: what a text-to-image model's held-out prompts ask for), kept for the run:
--- {n = 2000, split = "test", objects = 1, seed = 12345, size = 32}
function M.reference(opts)
  opts = opts or {}
  local n, split, objects, seed = opts.n or 2000, opts.split or "test", opts.objects or 1, opts.seed or 12345
  local key = table.concat({ n, split, tostring(objects), seed, opts.size or M.SIZE }, "/")
  if refs[key] then return refs[key] end
  local ds = shapes { size = opts.size or M.SIZE, seed = seed, objects = objects, split = split, format = "u8" }
  local ext = M.extractor(opts)
  local st = require("tocha.eval.metrics").Statistics(M.DIMS)
  for first = 1, n, 500 do st:add(ext:features(ds:batch(first, math.min(500, n - first + 1)).image)) end
  refs[key] = { mu = st:mean(), sigma = st:cov(), n = st.n, extractor = ext.id }
  return refs[key]
end

--- fid(images, opts) -> shapes FID of images (as the extractor takes them; a model's samples
--- in [-1, 1]: range = {-1, 1}) against M.reference(opts)
function M.fid(images, opts)
  opts = opts or {}
  local eval = require "tocha.eval"
  return eval.fid(M.reference(opts), images, { extractor = M.extractor(opts), range = opts.range,
    allow_singular = opts.allow_singular })
end

return M
