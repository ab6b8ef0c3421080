-- tocha/models/attention_maps.lua: where a UNet looks for each word. record() makes every
-- cross-attention of a UNet (each transformer block's attn2) also keep its attention
-- probabilities while sampling; the maps come back per token, averaged over heads, layers and
-- sampler steps and upsampled to the image, and figure() draws them as a grid labelled with the
-- tokens (for TensorBoard and a PNG). Recording costs one more q k^T per cross-attention.
local T = require "tocha"
local F = require "tocha.nn.functional"
local image = require "tocha.image"

local M = {}

local Recorder = {}
Recorder.__index = Recorder

-- the probabilities of one cross-attention call, [B, L, S] averaged over heads
local function probabilities(mha, x, context)
  local N, L, S, h, d = x.shape[1], x.shape[2], context.shape[2], mha.heads, mha.dim_head
  local q = mha.to_q(x):view(N, L, h, d):transpose(2, 3)
  local k = mha.to_k(context):view(N, S, h, d):transpose(2, 3)
  local scores = q:matmul(k:transpose(3, 4)) * (1 / math.sqrt(d))
  return F.softmax(scores:to("f32"), -1):mean(2)
end

--- attention_maps.record(unet, {batch, height, width}) -> rec. From now on each cross-attention
--- call adds the attention of its last `batch` rows (the conditional half of a guided batch)
--- to a running sum, each layer's map (at its own resolution, a height:width grid) upsampled
--- bilinearly to height x width. rec:result() -> [batch, S, height, width] (the mean over every
--- call so far), rec:close() stops recording (also on <close>).
function M.record(unet, o)
  if type(o) ~= "table" or math.type(o.batch) ~= "integer" or math.type(o.height) ~= "integer"
      or math.type(o.width) ~= "integer" then
    error("attention_maps.record: expected {batch =, height =, width =} (integers)", 2)
  end
  local self = setmetatable({ batch = o.batch, height = o.height, width = o.width, calls = 0, hooked = {} }, Recorder)
  for name, m in unet:named_modules() do
    if name:match("attn2$") and m.to_q and m.to_k and m.heads then
      local class_forward = getmetatable(m).forward
      rawset(m, "forward", function(mha, x, context, opts)
        local out = class_forward(mha, x, context, opts)
        if context then T.no_grad(function() self:_add(probabilities(mha, x, context)) end) end
        return out
      end)
      self.hooked[#self.hooked + 1] = m
    end
  end
  if #self.hooked == 0 then error("attention_maps.record: the model has no cross-attention (attn2) layers", 2) end
  return self
end

function Recorder:_add(p)
  local B, H, W = self.batch, self.height, self.width
  local N, L, S = p.shape[1], p.shape[2], p.shape[3]
  if N < B then return end
  p = p:narrow(1, N - B + 1, B)
  local hh = math.floor(math.sqrt(L * H / W) + 0.5) -- the layer's grid keeps the image's aspect ratio
  local ww = L // hh
  if hh * ww ~= L then error(string.format("attention_maps: %d positions do not make a %d:%d grid", L, H, W), 0) end
  local m = p:transpose(2, 3):reshape(B, S, hh, ww)
  m = F.interpolate(m, { size = { H, W }, mode = "bilinear" })
  self.sum = self.sum and self.sum + m or m
  self.calls = self.calls + 1
end

function Recorder:result()
  if not self.sum then error("attention_maps: nothing recorded yet", 2) end
  return self.sum / self.calls
end

function Recorder:close()
  for _, m in ipairs(self.hooked) do rawset(m, "forward", nil) end
  self.hooked = {}
end
Recorder.__close = Recorder.close

--- attention_maps.tokens(tokenizer, prompt) -> the prompt's tokens as text, in order, with their
--- positions in the encoded sequence (the start token is position 1)
function M.tokens(tokenizer, prompt)
  local ids = tokenizer:tokenize(prompt)
  local out = {}
  for i, id in ipairs(ids) do out[i] = { text = tokenizer:decode({ id }), position = i + 1 } end
  return out
end

-- a heat map in [0, 1] ([H, W]) over an image ([3, H, W] in [-1, 1]) as u8 [H, W, 3]: the
-- image in gray, tinted from blue (little attention) to red (most)
local function overlay(img, heat)
  local gray = ((img + 1) * 0.5):mean(1):clamp(0, 1) * 0.5 + 0.25
  local r = gray * (1 - heat) + heat
  local g = gray * (1 - heat) + heat * (1 - (heat - 0.5):abs() * 2) * 0.8
  local b = gray * (1 - heat) + (1 - heat) * heat * 2
  return image.to_u8(T.stack({ r, g, b }, 1), { range = { 0, 1 } })
end

--- attention_maps.figure(images [B, 3, H, W] in [-1, 1], maps [B, S, H, W], tokens (a list per
--- image of {text, position}), {scale = 2, titles}) -> u8 [H', W', 3]: a row per image, the
--- image then one map per token, each map scaled to [0, 1] and labelled with its token
function M.figure(images, maps, tokens, opts)
  opts = opts or {}
  local B, H, W = images.shape[1], images.shape[3], images.shape[4]
  local scale = opts.scale or 2
  local cols = 1
  for _, list in ipairs(tokens) do cols = math.max(cols, #list + 1) end
  local cw, ch, pad, label = W * scale, H * scale, 4, 14
  local canvas = T._log.canvas(cols * (cw + pad) + pad, B * (ch + label + pad) + pad)
  images, maps = images:to("cpu"):to("f32"), maps:to("cpu"):to("f32")
  local function cell(img_u8, row, col, text)
    local x, y = pad + (col - 1) * (cw + pad), pad + (row - 1) * (ch + label + pad)
    local big = scale == 1 and img_u8 or image.resize(img_u8, { ch, cw }, { mode = "nearest" })
    canvas:image(big:contiguous(), x, y)
    canvas:color(0, 0, 0)
    canvas:text(x + cw / 2, y + ch + label - 3, text, 11, 0.5)
  end
  for b = 1, B do
    cell(image.to_u8(images[b]), b, 1, opts.titles and opts.titles[b] or "image")
    for j, tok in ipairs(tokens[b]) do
      local m = maps[b][tok.position]
      local lo, hi = m:min():item(), m:max():item()
      cell(overlay(images[b], (m - lo) / math.max(hi - lo, 1e-12)), b, j + 1, tok.text)
    end
  end
  return canvas:pixels()
end

return M
