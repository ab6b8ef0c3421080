-- tocha/eval/inception.lua: Inception features the way the reference tools compute them.
-- "legacy" is pytorch-fid's path (pixels / 255, bilinear resize to 299 without antialiasing,
-- 2x - 1); "clean" is clean-fid's (each channel resized as a float image with PIL's bicubic
-- filter, antialiased, clipped to [0, 255], then (x - 128) / 128); "fidelity" is
-- torch-fidelity's (TensorFlow 1's bilinear resize of the 0-255 pixels, (x - 128) / 128). All
-- then run models.InceptionV3FID with the user's converted pt_inception-2015-12-05 weights.
local T = require "tocha"
local F = require "tocha.nn.functional"
local image = require "tocha.image"
local models = require "tocha.models"

local M = {}

M.SIZE = 299
M.MODES = { legacy = true, clean = true, fidelity = true }
M.DIMS = { [64] = "64", [192] = "192", [768] = "768", [2048] = "2048" }
M.WEIGHTS_NAME = "pt_inception-2015-12-05.safetensors"

local function home_cache()
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or ".") .. "/.cache" end
  return base .. "/tocha"
end
M.cache_root = home_cache

--- the weights file used when none is given: $TOCHA_INCEPTION_WEIGHTS, else
--- ~/.cache/tocha/pt_inception-2015-12-05.safetensors
function M.default_weights()
  local env = os.getenv("TOCHA_INCEPTION_WEIGHTS")
  if env and env ~= "" then return env end
  return home_cache() .. "/" .. M.WEIGHTS_NAME
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- a short identity of a weights file for cache keys: its size and the CRC of its ends
local function file_id(path)
  local f = assert(io.open(path, "rb"))
  local size = f:seek("end")
  f:seek("set", 0)
  local head = f:read(65536) or ""
  f:seek("set", math.max(0, size - 65536))
  local tail = f:read(65536) or ""
  f:close()
  return string.format("%08x", (T._log.crc32c(size .. head .. tail)))
end

---------------------------------------------------------------------------------------------
-- preprocessing: u8 images -> the network's input
---------------------------------------------------------------------------------------------
local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

-- one image as u8 [H, W, 3] (gray repeated to RGB, as PIL's convert("RGB"))
local function rgb(img, level)
  if not T.is_tensor(img) then error("inception: expected an image tensor, got " .. type(img), level + 1) end
  if img.dtype ~= "u8" then
    error("inception: expected u8 [H, W, 3] images (float batches: [N, 3, H, W] in [0, 1]), got " .. img.dtype
      .. " " .. shape_str(img), level + 1)
  end
  if img:dim() == 2 then img = img:unsqueeze(3) end
  if img:dim() ~= 3 or (img.shape[3] ~= 3 and img.shape[3] ~= 1) then
    error("inception: expected u8 [H, W, 3] images, got " .. shape_str(img), level + 1)
  end
  if img.shape[3] == 1 then img = img:expand(img.shape[1], img.shape[2], 3) end
  return img
end

--- inception.images(x, {range = {0, 1}}) -> a list of u8 [H, W, 3] images from a u8 [N, H, W, 3]
--- batch, a float [N, 3, H, W] batch in `range` (rounded to 8 bits, as saving to PNG would), a
--- u8 [H, W, 3] image, or a list of u8 images
function M.images(x, opts, level)
  level = (level or 1) + 1
  if type(x) == "table" and not T.is_tensor(x) then
    local out = {}
    for i, img in ipairs(x) do out[i] = rgb(img, level) end
    return out
  end
  if not T.is_tensor(x) then error("inception: expected images (a tensor or a list), got " .. type(x), level) end
  if x.dtype ~= "u8" then
    if x:dim() ~= 4 or x.shape[2] ~= 3 then
      error("inception: a float batch must be [N, 3, H, W], got " .. x.dtype .. " " .. shape_str(x), level)
    end
    x = image.to_u8(x:detach():to("cpu"), { range = opts and opts.range or { 0, 1 } })
  end
  x = x:to("cpu")
  if x:dim() == 3 or x:dim() == 2 then return { rgb(x, level) } end
  if x:dim() ~= 4 then error("inception: expected u8 images [N, H, W, 3], got " .. shape_str(x), level) end
  local out = {}
  for i = 1, x.shape[1] do out[i] = rgb(x[i], level) end
  return out
end

local function same_size(list)
  for i = 2, #list do
    if list[i].shape[1] ~= list[1].shape[1] or list[i].shape[2] ~= list[1].shape[2] then return false end
  end
  return true
end

-- TensorFlow 1's bilinear resize (align_corners = false, no half-pixel centres) of x [1, C, H,
-- W], as torch-fidelity reproduces it: source = i * (in / out) in f32, the floor and the next
-- pixel (clamped), blended across then down
local function tf1_resize(x, size)
  local function taps(n)
    local pos = T.arange(0, size, { dtype = "f32" }) * T.tensor({ n / size }, { dtype = "f32" })
    local lo = pos:to("i64") -- truncation, the floor of these non-negative positions
    return lo + 1, (lo + 1):clamp(0, n - 1) + 1, pos - lo:to("f32")
  end
  local ylo, yhi, dy = taps(x.shape[3])
  local xlo, xhi, dx = taps(x.shape[4])
  local top, bottom = x:index_select(3, ylo), x:index_select(3, yhi)
  local c00, c01 = top:index_select(4, xlo), top:index_select(4, xhi)
  local c10, c11 = bottom:index_select(4, xlo), bottom:index_select(4, xhi)
  dx = dx:view(1, 1, 1, size)
  local r0, r1 = c00 + (c01 - c00) * dx, c10 + (c11 - c10) * dx
  return r0 + (r1 - r0) * dy:view(1, 1, size, 1)
end

--- inception.prepare(list of u8 [H, W, 3], mode, size = 299) -> f32 [N, 3, size, size], the
--- network's input as the mode's tool makes it
function M.prepare(list, mode, size)
  size = size or M.SIZE
  if mode == "fidelity" then
    local xs = {}
    for i, img in ipairs(list) do xs[i] = tf1_resize(img:permute(3, 1, 2):to("f32"):unsqueeze(1), size)[1] end
    return (T.stack(xs, 1) - 128) / 128
  end
  if mode == "clean" then
    local xs = {}
    for i, img in ipairs(list) do
      xs[i] = (image.resize_float(img, { size, size }, { mode = "bicubic" }):clamp(0, 255) - 128) / 128
    end
    return T.stack(xs, 1)
  elseif mode == "legacy" then
    local function tensor01(imgs) -- ToTensor
      local b = T.stack(imgs, 1):permute(1, 4, 2, 3):to("f32")
      return b / 255
    end
    local x
    if same_size(list) then
      x = F.interpolate(tensor01(list), { size = { size, size }, mode = "bilinear" })
    else
      local xs = {}
      for i, img in ipairs(list) do
        xs[i] = F.interpolate(tensor01({ img }), { size = { size, size }, mode = "bilinear" })[1]
      end
      x = T.stack(xs, 1)
    end
    return x * 2 - 1
  end
  error("inception: mode must be \"legacy\", \"clean\" or \"fidelity\", got " .. tostring(mode), 2)
end

---------------------------------------------------------------------------------------------
-- the extractor
---------------------------------------------------------------------------------------------
local Extractor = {}
Extractor.__index = Extractor

--- inception.Extractor{weights = path (default M.default_weights()) or a network, mode =
--- "legacy", dims = 2048, batch = 50, device = "cpu"}: ext:features(images) -> f32 [N, dims],
--- ext:logits(images) -> [N, 1008] (without fc's bias, torch-fidelity's choice for the
--- Inception Score); ext.id names the weights, mode and dims for statistics caches
function M.Extractor(opts)
  opts = opts or {}
  local mode = opts.mode or "legacy"
  if not M.MODES[mode] then
    error("inception: mode must be \"legacy\", \"clean\" or \"fidelity\", got " .. tostring(mode), 2)
  end
  local dims = opts.dims or 2048
  if not M.DIMS[dims] then error("inception: dims must be 64, 192, 768 or 2048, got " .. tostring(dims), 2) end
  local batch = opts.batch or 50
  if math.type(batch) ~= "integer" or batch < 1 then error("inception: batch must be a positive integer", 2) end
  local net, wid = opts.weights, nil
  if type(net) ~= "table" then
    local path = net or M.default_weights()
    if not file_exists(path) then
      error("inception: no Inception weights at " .. path .. ": convert pytorch-fid's pt_inception-2015-12-05 "
        .. "with tools/convert_weights.py and pass --weights FILE (or set TOCHA_INCEPTION_WEIGHTS); see docs/eval.md", 2)
    end
    local ok, res = pcall(models.InceptionV3FID.from_file, path, { device = opts.device })
    if not ok then error(tostring(res):gsub("^[^:]*%.lua:%d+: ", ""), 2) end
    net, wid = res, file_id(path)
  else
    wid = opts.weights_id or "custom"
  end
  return setmetatable({ net = net, mode = mode, dims = dims, batch = batch, device = opts.device or "cpu",
    id = string.format("inception-%s-%d-%s", mode, dims, wid) }, Extractor)
end

-- runs the network on the images in batches, gathering the named outputs
function Extractor:run(images, names, range)
  local list = M.images(images, { range = range }, 3)
  local outs = {}
  for _, n in ipairs(names) do outs[n] = {} end
  T.no_grad(function()
    for first = 1, #list, self.batch do
      local chunk = table.move(list, first, math.min(first + self.batch - 1, #list), 1, {})
      local x = M.prepare(chunk, self.mode):to(self.device):to(self.net.fc.weight.dtype)
      local o = self.net(x, { outputs = names })
      for _, n in ipairs(names) do table.insert(outs[n], o[n]:to("cpu")) end
    end
  end)
  for _, n in ipairs(names) do
    outs[n] = #outs[n] > 0 and T.cat(outs[n], 1) or T.zeros({ 0, n == "logits_unbiased" and 1008 or self.dims })
  end
  return outs
end

--- ext:features(images, {range}) -> f32 [N, dims]
function Extractor:features(images, opts)
  local key = M.DIMS[self.dims]
  return self:run(images, { key }, opts and opts.range)[key]
end

--- ext:logits(images, {range}) -> [N, 1008], without fc's bias
function Extractor:logits(images, opts)
  return self:run(images, { "logits_unbiased" }, opts and opts.range).logits_unbiased
end

return M
