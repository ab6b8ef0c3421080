-- tocha.eval.clip: the CLIP score (torchmetrics' CLIPScore) with a CLIP model the user brings
-- as a transformers folder (config.json, model.safetensors, vocab.json, merges.txt and the
-- image processor's settings). Images are prepared as CLIPImageProcessor does it with PIL:
-- the shorter side resized to the processor's size (bicubic, antialiased, 8-bit), a center
-- crop, pixels / 255 normalised by the processor's mean and std.
local T = require "tocha"
local json = require "tocha.json"
local image = require "tocha.image"
local text = require "tocha.text"
local models = require "tocha.models"
local metrics = require "tocha.eval.metrics"
local inception = require "tocha.eval.inception"

local M = {}

-- CLIPImageProcessor's defaults (OpenAI's mean and std)
local PROCESSOR = {
  size = { shortest_edge = 224 }, crop_size = { height = 224, width = 224 }, do_resize = true,
  do_center_crop = true, do_rescale = true, rescale_factor = 1 / 255, do_normalize = true,
  image_mean = { 0.48145466, 0.4578275, 0.40821073 }, image_std = { 0.26862954, 0.26130258, 0.27577711 },
  resample = 3,
}
local RESAMPLE = { [0] = "nearest", [1] = "lanczos", [2] = "bilinear", [3] = "bicubic", [4] = "area" }

local function read_json(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return json.decode(s)
end

-- the image processor's settings: preprocessor_config.json, or processor_config.json's
-- image_processor entry (transformers 5), over the defaults
local function processor_config(dir, image_size)
  local cfg = read_json(dir .. "/preprocessor_config.json")
  if not cfg then
    local p = read_json(dir .. "/processor_config.json")
    cfg = p and p.image_processor
  end
  local out = {}
  for k, v in pairs(PROCESSOR) do out[k] = v end
  if not cfg then -- a folder without one: the vision tower's size
    out.size, out.crop_size = { shortest_edge = image_size }, { height = image_size, width = image_size }
    return out
  end
  for k, v in pairs(cfg) do if PROCESSOR[k] ~= nil and v ~= json.null then out[k] = v end end
  if type(out.size) == "number" then out.size = { shortest_edge = out.size } end
  if type(out.crop_size) == "number" then out.crop_size = { height = out.crop_size, width = out.crop_size } end
  if not RESAMPLE[out.resample] then error("clip: unknown resample " .. tostring(out.resample) .. " in " .. dir, 3) end
  return out
end

local CLIP = {}
CLIP.__index = CLIP

--- eval.clip.load(dir, {dtype, device, batch = 32}) -> a CLIP: transformers' CLIPModel, its
--- tokenizer (vocab.json + merges.txt) and its image processor's settings
function M.load(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("clip.load: dir must be a string", 2) end
  local ok, model = pcall(models.CLIPModel.from_pretrained, dir, opts)
  if not ok then error(tostring(model):gsub("^[^:]*%.lua:%d+: ", ""), 2) end
  local okt, tok = pcall(text.load, dir)
  if not okt then error("clip.load: cannot read the tokenizer in " .. dir .. ": " .. tostring(tok), 2) end
  local vcfg = model._vision.config
  return setmetatable({ model = model, tokenizer = tok, processor = processor_config(dir, vcfg.image_size),
    max_length = model._text.config.max_position_embeddings, batch = opts.batch or 32,
    device = opts.device or "cpu" }, CLIP)
end

--- clip:pixel_values(images) -> f32 [N, 3, S, S]: images as eval.inception.images takes them
function CLIP:pixel_values(images, opts)
  local p = self.processor
  local list = inception.images(images, { range = opts and opts.range }, 2)
  local mean, std = T.tensor(p.image_mean):view(3, 1, 1), T.tensor(p.image_std):view(3, 1, 1)
  local out = {}
  for i, img in ipairs(list) do
    if p.do_resize then
      local h, w = img.shape[1], img.shape[2]
      local nh, nw
      if p.size.shortest_edge then -- transformers' get_resize_output_image_size, default_to_square = false
        local s = p.size.shortest_edge
        if w <= h then nw, nh = s, math.floor(s * h / w) else nh, nw = s, math.floor(s * w / h) end
      else
        nh, nw = p.size.height, p.size.width
      end
      img = image.resize(img, { nh, nw }, { mode = RESAMPLE[p.resample] })
    end
    if p.do_center_crop then
      local ch, cw = p.crop_size.height, p.crop_size.width
      local h, w = img.shape[1], img.shape[2]
      if ch > h or cw > w then
        error(string.format("clip: the crop %d x %d is larger than the resized image %d x %d", ch, cw, h, w), 2)
      end
      img = image.crop(img, (h - ch) // 2 + 1, (w - cw) // 2 + 1, ch, cw)
    end
    local x = img:permute(3, 1, 2):to("f64")
    if p.do_rescale then x = x * p.rescale_factor end
    x = x:float()
    if p.do_normalize then x = (x - mean) / std end
    out[i] = x
  end
  return T.stack(out, 1)
end

local function batched(n, size, f)
  local parts = {}
  for first = 1, n, size do parts[#parts + 1] = f(first, math.min(first + size - 1, n)) end
  return T.cat(parts, 1)
end

--- clip:image_features(images) -> [N, projection_dim]
function CLIP:image_features(images, opts)
  local x = self:pixel_values(images, opts)
  local dt = self.model.visual_projection.weight.dtype
  return T.no_grad(function()
    return batched(x.shape[1], self.batch, function(a, b)
      return self.model:get_image_features(x:narrow(1, a, b - a + 1):to(self.device):to(dt)):to("cpu")
    end)
  end)
end

--- clip:text_features(captions) -> [N, projection_dim]; captions past the context are cut to it
function CLIP:text_features(captions)
  if type(captions) == "string" then captions = { captions } end
  return T.no_grad(function()
    return batched(#captions, self.batch, function(a, b)
      local enc = self.tokenizer:encode(table.move(captions, a, b, 1, {}), { max_length = self.max_length })
      return self.model:get_text_features(enc.input_ids:to(self.device),
        { attention_mask = enc.attention_mask:to(self.device) }):to("cpu")
    end)
  end)
end

--- eval.clip.score(images, captions, {model = dir or a loaded CLIP, range, dtype, device,
--- batch}) -> score, per_sample: torchmetrics' CLIPScore, 100 cos(image, caption) per pair,
--- the score being max(mean, 0)
function M.score(images, captions, opts)
  opts = opts or {}
  local clip = opts.model
  if type(clip) == "string" then clip = M.load(clip, opts) end
  if getmetatable(clip) ~= CLIP then error("clip_score: give model = a CLIP folder (or eval.clip.load's result)", 2) end
  if type(captions) == "string" then captions = { captions } end
  local img = clip:image_features(images, opts)
  if img.shape[1] ~= #captions then
    error(string.format("clip_score: %d images and %d captions", img.shape[1], #captions), 2)
  end
  return metrics.clip_score(img, clip:text_features(captions))
end

--- eval.clip.score_folder(dir, clip_dir, opts) -> score over the images of dir and their
--- captions (same-name .txt files or metadata.jsonl, as tocha.data.ImageFolder reads them)
function M.score_folder(dir, clip_dir, opts)
  opts = opts or {}
  local data = require "tocha.data"
  local ds = data.ImageFolder(dir, { channels = 3 })
  if not ds.has_text then error("clipscore: " .. dir .. " has no captions (same-name .txt files or metadata.jsonl)", 2) end
  local clip = M.load(clip_dir, opts)
  local loader = data.DataLoader(ds, { batch_size = opts.batch or 32, workers = opts.workers or 2,
    collate = function(s) return s end })
  local img, txt = {}, {}
  for batch in loader:iter() do
    local imgs, caps = {}, {}
    for i, s in ipairs(batch) do imgs[i], caps[i] = s.image, s.text end
    img[#img + 1] = clip:image_features(imgs)
    txt[#txt + 1] = clip:text_features(caps)
  end
  loader:close()
  return metrics.clip_score(T.cat(img, 1), T.cat(txt, 1))
end

return M
