-- tocha/models/clip_vision.lua: CLIP's image tower (transformers' CLIPVisionModel: patch
-- embedding, a class token, pre-LayerNorm, the same encoder layers as the text tower without a
-- mask, post-LayerNorm of the class token) and CLIPModel, both towers with their projections
-- into the shared space, as the CLIP score needs them. Parameter names are transformers'
-- (vision_model.embeddings.patch_embedding.weight, visual_projection.weight, ...), so a CLIP
-- checkpoint folder loads with CLIPModel.from_pretrained.
local T = require "tocha"
local nn = require "tocha.nn"
local config = require "tocha.models.config"
local json = require "tocha.json"
local clip_text = require "tocha.models.clip_text"

local WHAT = "CLIPVisionModel"

-- transformers' CLIPVisionConfig names and defaults
local SPEC = {
  defaults = {
    hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12, num_attention_heads = 12,
    num_channels = 3, image_size = 224, patch_size = 32, hidden_act = "quick_gelu", layer_norm_eps = 1e-5,
    attention_dropout = 0, initializer_range = 0.02, initializer_factor = 1,
  },
  ignored = { projection_dim = true, dropout = true, model_type = true, architectures = true, torch_dtype = true,
    transformers_version = true },
}

local function resolve(cfg, overrides)
  local c = config.resolve(WHAT, SPEC, cfg, overrides)
  config.positive(WHAT, c, { "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_channels", "image_size", "patch_size" })
  if c.hidden_size % c.num_attention_heads ~= 0 then
    error(string.format("%s: hidden_size (%d) must be divisible by num_attention_heads (%d)", WHAT, c.hidden_size,
      c.num_attention_heads), 3)
  end
  if c.image_size % c.patch_size ~= 0 then
    error(string.format("%s: image_size (%d) must be a multiple of patch_size (%d)", WHAT, c.image_size, c.patch_size), 3)
  end
  if not clip_text.ACTS[c.hidden_act] then error(WHAT .. ": unknown hidden_act " .. config.show(c.hidden_act), 3) end
  return c
end

local Embeddings = nn.Module:extend("CLIPVisionEmbeddings")

function Embeddings:init(c, lo)
  local d = c.hidden_size
  local grid = c.image_size // c.patch_size
  self.num_patches = grid * grid
  self.class_embedding = nn.Parameter(T.zeros({ d }, lo))
  self.patch_embedding = nn.Conv2d(c.num_channels, d, c.patch_size, { stride = c.patch_size, bias = false,
    dtype = lo.dtype, device = lo.device })
  self.position_embedding = nn.Embedding(self.num_patches + 1, d, lo)
end

-- pixels [B, C, S, S] -> [B, 1 + patches, D]: the class token, then the patches row by row
function Embeddings:forward(x)
  local B = x.shape[1]
  local p = self.patch_embedding(x)
  local d = p.shape[2]
  p = p:flatten(3):transpose(2, 3)
  local cls = self.class_embedding:view(1, 1, d):expand(B, 1, d)
  return T.cat({ cls, p }, 2) + self.position_embedding.weight
end

local Transformer = nn.Module:extend("CLIPVisionTransformer")

function Transformer:init(c, lo)
  local ln = { eps = c.layer_norm_eps, dtype = lo.dtype, device = lo.device }
  self.embeddings = Embeddings(c, lo)
  self.pre_layrnorm = nn.LayerNorm(c.hidden_size, ln) -- sic: transformers' name
  self.encoder = clip_text.Encoder(c, lo)
  self.post_layernorm = nn.LayerNorm(c.hidden_size, ln)
end

local CLIPVisionModel = nn.Module:extend(WHAT)

--- CLIPVisionModel(cfg, overrides): cfg takes transformers' CLIPVisionConfig names
--- (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_channels,
--- image_size, patch_size, hidden_act, layer_norm_eps, attention_dropout, initializer_range,
--- initializer_factor) plus dtype and device
function CLIPVisionModel:init(cfg, overrides)
  local c = resolve(cfg, overrides)
  self.config = c
  self.vision_model = Transformer(c, config.layer_opts(c))
  self:reset_parameters()
end

-- transformers' CLIPPreTrainedModel._init_weights for the vision tower
function CLIPVisionModel:reset_parameters()
  local c, init = self.config, nn.init
  local f = c.initializer_factor
  local emb = self.vision_model.embeddings
  init.normal_(emb.class_embedding, 0, c.hidden_size ^ -0.5 * f)
  init.normal_(emb.patch_embedding.weight, 0, c.initializer_range * f)
  init.normal_(emb.position_embedding.weight, 0, c.initializer_range * f)
  clip_text.init_encoder(self.vision_model.encoder, c)
end

--- model(pixel_values [B, C, image_size, image_size]) -> last_hidden_state [B, 1 + patches, D],
--- pooled [B, D] (the class token after post_layernorm)
function CLIPVisionModel:forward(x)
  local c = self.config
  if not T.is_tensor(x) or x:dim() ~= 4 or x.shape[2] ~= c.num_channels or x.shape[3] ~= c.image_size
    or x.shape[4] ~= c.image_size then
    error(string.format("%s: expected pixel values [B, %d, %d, %d], got %s", WHAT, c.num_channels, c.image_size,
      c.image_size, T.is_tensor(x) and ("[" .. table.concat(x.shape, " x ") .. "]") or type(x)), 2)
  end
  local vm = self.vision_model
  local h = vm.pre_layrnorm(vm.embeddings(x))
  for _, layer in ipairs(vm.encoder.layers) do h = layer(h, false) end
  return h, vm.post_layernorm(h:select(2, 1))
end

---------------------------------------------------------------------------
-- CLIPModel: both towers and their projections
---------------------------------------------------------------------------
local CLIPModel = nn.Module:extend("CLIPModel")

-- the keys of a sub-config that a tower's constructor knows; transformers' config.json also
-- carries generic keys of every PretrainedConfig (bos_token_id, output_attentions, ...)
local function known(sub, spec)
  local out = {}
  for k, v in pairs(sub or {}) do
    if spec.defaults[k] ~= nil or (spec.optional and spec.optional[k]) or k == "dtype" or k == "device" then out[k] = v end
  end
  return out
end

--- CLIPModel({text_config, vision_config, projection_dim = 512, logit_scale_init_value =
--- 2.6592, dtype, device}): a decoded CLIPConfig (config.json); the sub-configs' keys that
--- the towers do not use are ignored. Children text_model, vision_model, visual_projection,
--- text_projection, and the parameter logit_scale.
function CLIPModel:init(cfg)
  cfg = cfg or {}
  if type(cfg) ~= "table" then error("CLIPModel: config must be a table", 3) end
  local lo = { dtype = cfg.dtype, device = cfg.device }
  local tc, vc = known(cfg.text_config, clip_text.SPEC), known(cfg.vision_config, SPEC)
  tc.dtype, tc.device, vc.dtype, vc.device = lo.dtype, lo.device, lo.dtype, lo.device
  local text, vision = clip_text.CLIPTextModel(tc), CLIPVisionModel(vc)
  local proj = cfg.projection_dim or 512
  if json.null == proj or math.type(proj) ~= "integer" or proj < 1 then error("CLIPModel: projection_dim must be a positive integer", 3) end
  self.text_model = text.text_model
  self.vision_model = vision.vision_model
  rawset(self, "_text", text)
  rawset(self, "_vision", vision)
  self.visual_projection = nn.Linear(vision.config.hidden_size, proj, { bias = false, dtype = lo.dtype, device = lo.device })
  self.text_projection = nn.Linear(text.config.hidden_size, proj, { bias = false, dtype = lo.dtype, device = lo.device })
  self.logit_scale = nn.Parameter(T.full({}, cfg.logit_scale_init_value or 2.6592, lo))
  self.projection_dim = proj
  nn.init.normal_(self.visual_projection.weight, 0, vision.config.hidden_size ^ -0.5)
  nn.init.normal_(self.text_projection.weight, 0, text.config.hidden_size ^ -0.5)
end

--- get_image_features(pixel_values) -> [B, projection_dim]
function CLIPModel:get_image_features(x)
  local _, pooled = self._vision(x)
  return self.visual_projection(pooled)
end

--- get_text_features(ids, {attention_mask}) -> [B, projection_dim]; ids are tocha's 1-based
function CLIPModel:get_text_features(ids, opts)
  local _, pooled = self._text(ids, opts)
  return self.text_projection(pooled)
end

function CLIPModel:forward() error("CLIPModel: call get_image_features or get_text_features", 2) end

--- CLIPModel.from_pretrained(dir, {dtype, device}) -> the model of a transformers CLIP folder
--- (config.json and model.safetensors), in eval mode
function CLIPModel.from_pretrained(dir, opts)
  opts = opts or {}
  local f = io.open(dir .. "/config.json", "rb")
  if not f then error("CLIPModel: no config.json in " .. dir, 2) end
  local cfg = json.decode(f:read("a"))
  f:close()
  cfg.dtype, cfg.device = opts.dtype, opts.device
  local m = CLIPModel(cfg)
  local ok, sd = pcall(T.load, dir .. "/model.safetensors")
  if not ok then error("CLIPModel: cannot read " .. dir .. "/model.safetensors: " .. tostring(sd), 2) end
  local clean = {}
  for k, v in pairs(sd) do
    if not k:match("position_ids$") then clean[k] = v end
  end
  local okl, err = pcall(nn.Module.load_state_dict, m, clean)
  if not okl then error("CLIPModel: the weights in " .. dir .. " do not fit its config: " .. tostring(err), 2) end
  return m:eval()
end

return { CLIPVisionModel = CLIPVisionModel, CLIPModel = CLIPModel, resolve = resolve }
