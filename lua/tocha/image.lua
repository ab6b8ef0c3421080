-- tocha.image: reading and writing PNG/JPEG, image transforms and grids. Images are u8
-- tensors [H, W, C]; models take float [C, H, W] in [-1, 1] (to_float) and give it back
-- (to_u8). Transforms also come as objects (Resize, RandomCrop, ...) that Compose chains
-- into one C pipeline, which tocha.data runs on its worker threads.
local T = require "tocha"
local C = T._image

local image = {}

local function opts_or_empty(o, level)
  if o ~= nil and type(o) ~= "table" then error("options must be a table", level + 1) end
  return o or {}
end

-- a size given as a number (square, or the shorter side for resize) or {h, w}
local function hw(size, name, level)
  if type(size) == "number" then return size, size end
  if type(size) == "table" and #size == 2 then return size[1], size[2] end
  error(name .. ": size must be a number or {h, w}", level + 1)
end

---------------------------------------------------------------------------------------------
-- files
---------------------------------------------------------------------------------------------
--- image.read(path, {channels = 0}) -> u8 [H, W, C], or nil and a message naming the file and
--- the reason (missing, unreadable, corrupt, truncated). channels 0 keeps the file's; 1, 3
--- or 4 convert (gray <-> RGB, alpha dropped, or added opaque).
function image.read(path, opts)
  opts = opts_or_empty(opts, 2)
  if type(path) ~= "string" then error("image.read: path must be a string", 2) end
  return C.read(path, opts.channels or 0)
end

--- image.decode(bytes, {channels = 0, name = "image"}) -> tensor, or nil and a message
function image.decode(bytes, opts)
  opts = opts_or_empty(opts, 2)
  return C.decode(bytes, opts.channels or 0, opts.name or "image")
end

-- a tensor ready to encode: u8 [H, W, C] as is; float [C, H, W] through to_u8 with
-- opts.range, or [-1, 1] when it holds a negative value and [0, 1] otherwise
local function encodable(t, opts, level)
  if not T.is_tensor(t) then error("image: expected a tensor", level + 1) end
  if t.dtype == "u8" then return t end
  if t.dtype == "f32" or t.dtype == "f64" or t.dtype == "f16" or t.dtype == "bf16" then
    if t:dim() == 2 then t = t:unsqueeze(1) end
    local range = opts.range
    if not range then range = t:min():item() < 0 and { -1, 1 } or { 0, 1 } end
    return C.to_u8(t, range[1], range[2])
  end
  error("image: cannot write a " .. t.dtype .. " tensor (u8 [H, W, C] or float [C, H, W])", level + 1)
end

--- image.write(path, t, {quality = 90, range = {lo, hi}, text = {key = value}}): PNG, or JPEG
--- when the path ends in .jpg/.jpeg. t is u8 [H, W, C] ([H, W] for gray), or float [C, H, W]
--- mapped from `range` (default: [-1, 1] when t has a negative value, else [0, 1]). text: PNG
--- text chunks (e.g. {parameters = "..."}, the prompt and settings as A1111 writes them).
--- Raises on failure.
function image.write(path, t, opts)
  opts = opts_or_empty(opts, 2)
  if type(path) ~= "string" then error("image.write: path must be a string", 2) end
  if opts.text == nil then return C.write(path, encodable(t, opts, 2), opts.quality or -1) end
  if path:lower():match("%.jpe?g$") then error("image.write: text chunks are for PNG files only", 2) end
  local bytes = C.encode(encodable(t, opts, 2), "png", opts.quality or -1, opts.text)
  local f, err = io.open(path, "wb")
  if not f then error("image.write: cannot write " .. path .. ": " .. tostring(err), 2) end
  local ok, werr = f:write(bytes)
  f:close()
  if not ok then error("image.write: writing " .. path .. " failed: " .. tostring(werr), 2) end
  return true
end
image.save = image.write

--- image.encode(t, "png" | "jpeg", {quality, range, text}) -> bytes (a Lua string)
function image.encode(t, format, opts)
  opts = opts_or_empty(opts, 2)
  return C.encode(encodable(t, opts, 2), format or "png", opts.quality or -1, opts.text)
end

---------------------------------------------------------------------------------------------
-- transforms as objects: each is {op = ..., ...}; calling one runs it on an image
---------------------------------------------------------------------------------------------
local Transform = {}
Transform.__index = Transform
Transform.__call = function(self, img) return C.pipeline_run(C.pipeline(0, { self }), img) end

local function transform(t) return setmetatable(t, Transform) end

local MODES = { nearest = true, bilinear = true, bicubic = true, area = true, lanczos = true }

--- image.Resize(size, {mode = "bilinear", antialias = true}): size a number (the shorter side,
--- keeping the aspect ratio, as torchvision's Resize(int)) or {h, w}. Modes: bilinear, area,
--- bicubic, lanczos, nearest, each PIL's resize bit for bit (area is PIL's BOX).
function image.Resize(size, opts)
  opts = opts_or_empty(opts, 2)
  local mode = opts.mode or "bilinear"
  if not MODES[mode] then error("Resize: unknown mode '" .. tostring(mode) .. "'", 2) end
  local h, w
  if type(size) == "number" then h, w = size, 0 else h, w = hw(size, "Resize", 2) end
  return transform { op = "resize", h = h, w = w, mode = mode, antialias = opts.antialias ~= false }
end

function image.CenterCrop(size)
  local h, w = hw(size, "CenterCrop", 2)
  return transform { op = "center_crop", h = h, w = w }
end

--- image.RandomCrop(size): a window drawn uniformly (from the global generator when called
--- directly; inside a data loader, from the loader's seed, epoch and sample)
function image.RandomCrop(size)
  local h, w = hw(size, "RandomCrop", 2)
  return transform { op = "random_crop", h = h, w = w }
end

function image.RandomHorizontalFlip(p)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then error("RandomHorizontalFlip: p must be in [0, 1]", 2) end
  return transform { op = "hflip", p = p }
end

--- image.ToFloat(): u8 [H, W, C] -> f32 [C, H, W] in [-1, 1]; must come last in a Compose
function image.ToFloat() return transform { op = "to_float" } end

local Compose = {}
Compose.__index = Compose
Compose.__call = function(self, img) return C.pipeline_run(self:pipeline(0), img) end

--- image.Compose{t1, t2, ...}: the transforms in order, as one pipeline
function image.Compose(list)
  if type(list) ~= "table" then error("Compose: expected a list of transforms", 2) end
  local ops = {}
  for i, t in ipairs(list) do
    if getmetatable(t) == Compose then
      for _, o in ipairs(t.ops) do ops[#ops + 1] = o end
    elseif getmetatable(t) == Transform then ops[#ops + 1] = t
    else error("Compose: element " .. i .. " is not an image transform (write a Lua function "
      .. "and use dataset:map for custom steps)", 2) end
  end
  C.pipeline(0, ops) -- checks now: to_float last, sizes, at most 16
  return setmetatable({ ops = ops, cache = {} }, Compose)
end

--- compose:pipeline(channels) -> the C pipeline (decoding to `channels`)
function Compose:pipeline(channels)
  local p = self.cache[channels]
  if not p then p = C.pipeline(channels, self.ops); self.cache[channels] = p end
  return p
end

image.is_transform = function(t) local m = getmetatable(t); return m == Compose or m == Transform end
image._Compose, image._Transform = Compose, Transform

---------------------------------------------------------------------------------------------
-- transforms as functions of a u8 [H, W, C] image
---------------------------------------------------------------------------------------------
--- image.resize(img, size, {mode = "bilinear", antialias = true}): size as in Resize
function image.resize(img, size, opts)
  return image.Resize(size, opts)(img)
end

--- image.resize_float(img, {h, w}, {mode = "bicubic", antialias = true}) -> f32 [C, h, w]:
--- the same filters with each channel resized as a float image (PIL's mode "F", which
--- clean-fid uses): values on the 0-255 scale, unrounded and unclipped
function image.resize_float(img, size, opts)
  opts = opts_or_empty(opts, 2)
  local h, w = hw(size, "resize_float", 2)
  local mode = opts.mode or "bicubic"
  if not MODES[mode] then error("resize_float: unknown mode '" .. tostring(mode) .. "'", 2) end
  return C.resize_float(img, h, w, mode, opts.antialias ~= false)
end

--- image.crop(img, top, left, h, w): top and left are 1-based
function image.crop(img, top, left, h, w) return C.crop(img, top, left, h, w) end

--- image.center_crop(img, size): torchvision's window (offsets rounded half to even)
function image.center_crop(img, size) return image.CenterCrop(size)(img) end

--- image.random_crop(img, size): a window drawn from the global Philox generator, so
--- T.manual_seed makes it reproducible
function image.random_crop(img, size) return image.RandomCrop(size)(img) end

function image.hflip(img) return C.hflip(img) end
function image.random_hflip(img, p) return image.RandomHorizontalFlip(p)(img) end

--- image.to_float(img): u8 [..., H, W, C] -> f32 [..., C, H, W] in [-1, 1] (v / 127.5 - 1)
function image.to_float(img) return C.to_float(img) end

--- image.to_u8(x, {range = {-1, 1}}): float [..., C, H, W] -> u8 [..., H, W, C], rounded and
--- clamped; the exact inverse of to_float
function image.to_u8(x, opts)
  opts = opts_or_empty(opts, 2)
  local r = opts.range or { -1, 1 }
  return C.to_u8(x, r[1], r[2])
end

---------------------------------------------------------------------------------------------
-- grids
---------------------------------------------------------------------------------------------
--- image.grid(images, nrow, {padding = 2, pad_value = 0}): torchvision's make_grid. images is
--- a list of float [C, H, W] or a batch [N, C, H, W] (gives [C, H', W']), or u8 [H, W, C]
--- images / an [N, H, W, C] batch (gives [H', W', C]). nrow images per row (default 8).
function image.grid(images, nrow, opts)
  opts = opts_or_empty(opts, 2)
  nrow = nrow or 8
  local pad, value = opts.padding or 2, opts.pad_value or 0
  local list = images
  if T.is_tensor(images) then
    list = {}
    for i = 1, images:size(1) do list[i] = images[i] end
  end
  if type(list) ~= "table" or #list == 0 then error("image.grid: expected a non-empty list or batch of images", 2) end
  local first = list[1]
  local hwc = first.dtype == "u8"
  if first:dim() ~= 3 then error("image.grid: images must be [C, H, W] (float) or [H, W, C] (u8)", 2) end
  local hd, wd = hwc and 1 or 2, hwc and 2 or 3
  local h, w = first:size(hd), first:size(wd)
  local n = #list
  local cols = math.min(nrow, n)
  local rows = (n + cols - 1) // cols
  local H, W = rows * (h + pad) + pad, cols * (w + pad) + pad
  local c = first:size(hwc and 3 or 1)
  local out = T.full(hwc and { H, W, c } or { c, H, W }, value, { dtype = first.dtype })
  for i, img in ipairs(list) do
    if img.dtype ~= first.dtype or img:dim() ~= 3 or img:size(hd) ~= h or img:size(wd) ~= w then
      error("image.grid: image " .. i .. " differs in shape or dtype from the first", 2)
    end
    local r, q = (i - 1) // cols, (i - 1) % cols
    out:narrow(hd, r * (h + pad) + pad + 1, h):narrow(wd, q * (w + pad) + pad + 1, w):copy_(img)
  end
  return out
end

return image
