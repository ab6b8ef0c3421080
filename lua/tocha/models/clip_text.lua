-- tocha/models/clip_text.lua: a text encoder built as CLIP's (transformers' CLIPTextModel):
-- token + position embeddings, pre-norm causal transformer layers with a quick-GELU MLP, and a
-- final LayerNorm. Module and parameter names are transformers' (text_model.encoder.layers.0.
-- self_attn.q_proj.weight, ...), so a CLIP / Stable Diffusion text encoder loads by name.
local T = require "tocha"
local nn = require "tocha.nn"
local config = require "tocha.models.config"
local F = nn.functional

local WHAT = "CLIPTextModel"

-- transformers' CLIPTextConfig names and defaults (eos_token_id is left out: see pooled below)
local SPEC = {
  defaults = {
    vocab_size = 49408, hidden_size = 512, intermediate_size = 2048, num_hidden_layers = 12,
    num_attention_heads = 8, max_position_embeddings = 77, hidden_act = "quick_gelu",
    layer_norm_eps = 1e-5, attention_dropout = 0.0, initializer_range = 0.02, initializer_factor = 1.0,
  },
  optional = { eos_token_id = true },
  ignored = { projection_dim = true, dropout = true, pad_token_id = true, bos_token_id = true,
    model_type = true, architectures = true, torch_dtype = true, transformers_version = true },
}

-- transformers' activation names, as F.bias_act's: the MLP adds fc1's bias in the activation's pass
local ACTS = { quick_gelu = "quick_gelu", gelu = "gelu", gelu_new = "gelu_tanh" }

--- resolve(cfg, overrides): the complete, checked config
local function resolve(cfg, overrides)
  local c = config.resolve(WHAT, SPEC, cfg, overrides)
  config.positive(WHAT, c, { "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "max_position_embeddings" })
  if c.hidden_size % c.num_attention_heads ~= 0 then
    error(string.format("%s: hidden_size (%d) must be divisible by num_attention_heads (%d)", WHAT,
      c.hidden_size, c.num_attention_heads), 3)
  end
  if not ACTS[c.hidden_act] then
    error(WHAT .. ": hidden_act must be \"quick_gelu\", \"gelu\" or \"gelu_new\", got " .. config.show(c.hidden_act), 3)
  end
  if c.eos_token_id ~= nil and math.type(c.eos_token_id) ~= "integer" then
    error(WHAT .. ": eos_token_id must be an integer (transformers' 0-based id)", 3)
  end
  return c
end

---------------------------------------------------------------------------
-- layers
---------------------------------------------------------------------------
local Attention = nn.Module:extend("CLIPAttention")

function Attention:init(c, lo)
  local d = c.hidden_size
  self.heads, self.head_dim, self.dropout = c.num_attention_heads, d // c.num_attention_heads, c.attention_dropout
  self.k_proj = nn.Linear(d, d, lo)
  self.v_proj = nn.Linear(d, d, lo)
  self.q_proj = nn.Linear(d, d, lo)
  self.out_proj = nn.Linear(d, d, lo)
end

-- x [B, L, D], mask: nil (causal only), false (no mask at all: the vision tower) or a bool
-- [B, 1, L, L] (true = may attend) -> [B, L, D]
function Attention:forward(x, mask)
  local B, L = x.shape[1], x.shape[2]
  local function heads(t) return t:view(B, L, self.heads, self.head_dim):transpose(2, 3) end
  local o = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
    { attn_mask = mask or nil, is_causal = mask == nil, dropout_p = self.training and self.dropout or 0 })
  return self.out_proj(o:transpose(2, 3):reshape(B, L, self.heads * self.head_dim))
end

local MLP = nn.Module:extend("CLIPMLP")

function MLP:init(c, lo)
  self.act = ACTS[c.hidden_act]
  self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size, lo)
  self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size, lo)
end

function MLP:forward(x) return self.fc2(self.fc1:forward_act(x, self.act)) end

local EncoderLayer = nn.Module:extend("CLIPEncoderLayer")

function EncoderLayer:init(c, lo)
  local ln = { eps = c.layer_norm_eps, dtype = lo.dtype, device = lo.device }
  self.self_attn = Attention(c, lo)
  self.layer_norm1 = nn.LayerNorm(c.hidden_size, ln)
  self.mlp = MLP(c, lo)
  self.layer_norm2 = nn.LayerNorm(c.hidden_size, ln)
end

function EncoderLayer:forward(x, mask)
  x = x + self.self_attn(self.layer_norm1(x), mask)
  return x + self.mlp(self.layer_norm2(x))
end

local Embeddings = nn.Module:extend("CLIPTextEmbeddings")

function Embeddings:init(c, lo)
  self.token_embedding = nn.Embedding(c.vocab_size, c.hidden_size, lo)
  self.position_embedding = nn.Embedding(c.max_position_embeddings, c.hidden_size, lo)
end

-- ids [B, L] -> [B, L, D]; positions 1..L, the first L rows of the position table
function Embeddings:forward(ids)
  return self.token_embedding(ids) + self.position_embedding.weight:narrow(1, 1, ids.shape[2])
end

local Encoder = nn.Module:extend("CLIPEncoder")

function Encoder:init(c, lo)
  local layers = {}
  for i = 1, c.num_hidden_layers do layers[i] = EncoderLayer(c, lo) end
  self.layers = nn.ModuleList(layers)
end

local Transformer = nn.Module:extend("CLIPTextTransformer")

function Transformer:init(c, lo)
  self.embeddings = Embeddings(c, lo)
  self.encoder = Encoder(c, lo)
  self.final_layer_norm = nn.LayerNorm(c.hidden_size, { eps = c.layer_norm_eps, dtype = lo.dtype, device = lo.device })
end

---------------------------------------------------------------------------
-- the model
---------------------------------------------------------------------------
local CLIPTextModel = nn.Module:extend(WHAT)

--- CLIPTextModel(cfg, overrides): cfg takes transformers' CLIPTextConfig names (vocab_size,
--- hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
--- max_position_embeddings, hidden_act, layer_norm_eps, attention_dropout, initializer_range,
--- initializer_factor, eos_token_id) plus dtype and device; overrides are merged over cfg.
--- Weights start as transformers initialises CLIP.
function CLIPTextModel:init(cfg, overrides)
  local c = resolve(cfg, overrides)
  self.config = c
  self.text_model = Transformer(c, config.layer_opts(c))
  self:reset_parameters()
end

-- transformers' CLIPPreTrainedModel._init_weights for an encoder's layers (both towers)
local function init_encoder(encoder, c)
  local init = nn.init
  local d, f = c.hidden_size, c.initializer_factor
  local in_std = d ^ -0.5 * (2 * c.num_hidden_layers) ^ -0.5 * f
  for _, layer in ipairs(encoder.layers) do
    local a, m = layer.self_attn, layer.mlp
    for _, lin in ipairs({ a.q_proj, a.k_proj, a.v_proj, a.out_proj, m.fc1, m.fc2 }) do init.zeros_(lin.bias) end
    for _, lin in ipairs({ a.q_proj, a.k_proj, a.v_proj }) do init.normal_(lin.weight, 0, in_std) end
    init.normal_(a.out_proj.weight, 0, d ^ -0.5 * f)
    init.normal_(m.fc1.weight, 0, (2 * d) ^ -0.5 * f)
    init.normal_(m.fc2.weight, 0, in_std)
  end
end

-- and for the text tower's embeddings
function CLIPTextModel:reset_parameters()
  local c = self.config
  local emb = self.text_model.embeddings
  nn.init.normal_(emb.token_embedding.weight, 0, c.initializer_range * c.initializer_factor)
  nn.init.normal_(emb.position_embedding.weight, 0, c.initializer_range * c.initializer_factor)
  init_encoder(self.text_model.encoder, c)
end

-- the position of each row's end token: the first eos_token_id (transformers' 0-based id,
-- + 1 here) or, as transformers does for eos_token_id nil or 2, the first largest id
local function eos_positions(ids, eos_token_id)
  if eos_token_id == nil or eos_token_id == 2 then return ids:argmax(2, false) end
  return ids:eq(eos_token_id + 1):argmax(2, false)
end

--- model(ids, {attention_mask, output_hidden_states}) -> last_hidden_state [B, L, D], pooled
--- [B, D] (the final states at the end token), and with output_hidden_states a list of the
--- L + 1 hidden states (the embeddings, then each layer's output, before final_layer_norm).
--- ids: integer [B, L] with tocha's 1-based ids (transformers' + 1), L <= max_position_embeddings.
--- attention_mask [B, L]: 1 / true for tokens, 0 / false for padding keys; causal either way.
function CLIPTextModel:forward(ids, opts)
  opts = opts or {}
  local c = self.config
  if not T.is_tensor(ids) or ids:dim() ~= 2 or (ids.dtype ~= "i64" and ids.dtype ~= "i32") then
    error(WHAT .. ": ids must be an integer tensor [batch, length] of 1-based token ids", 2)
  end
  local B, L = ids.shape[1], ids.shape[2]
  if L > c.max_position_embeddings then
    error(string.format("%s: %d tokens is more than max_position_embeddings (%d)", WHAT, L, c.max_position_embeddings), 2)
  end
  local tm = self.text_model
  local x = tm.embeddings(ids)
  local mask
  if opts.attention_mask ~= nil then
    local am = opts.attention_mask
    if not T.is_tensor(am) or am:dim() ~= 2 or am.shape[1] ~= B or am.shape[2] ~= L then
      error(string.format("%s: attention_mask must be [%d x %d] like ids", WHAT, B, L), 2)
    end
    local pos = T.arange(0, L, { device = ids.device })
    local causal = pos:view(L, 1):ge(pos:view(1, L))
    mask = causal:logical_and(am:ne(0):view(B, 1, 1, L))
  end
  local hidden = opts.output_hidden_states and { x } or nil
  for _, layer in ipairs(tm.encoder.layers) do
    x = layer(x, mask)
    if hidden then hidden[#hidden + 1] = x end
  end
  x = tm.final_layer_norm(x)
  local rows = T.arange(0, B, { dtype = "i64", device = ids.device }) * L + eos_positions(ids, c.eos_token_id)
  local pooled = x:reshape(B * L, x.shape[3]):index_select(1, rows)
  return x, pooled, hidden
end

--- checkpoint_state_dict(sd) -> sd with this model's names: a checkpoint saved without the
--- "text_model." prefix (transformers >= 5 saves CLIPTextModel so) gets it, and the position_ids
--- buffer older transformers saved (a constant 0 .. L - 1, as transformers does) is dropped
function CLIPTextModel:checkpoint_state_dict(sd)
  local bare = sd["text_model.embeddings.token_embedding.weight"] == nil and sd["embeddings.token_embedding.weight"] ~= nil
  local out = {}
  for k, v in pairs(sd) do
    if bare then k = "text_model." .. k end
    if k ~= "text_model.embeddings.position_ids" then out[k] = v end
  end
  return out
end

--- load_state_dict(sd, strict): as nn.Module's, on checkpoint_state_dict(sd)
function CLIPTextModel:load_state_dict(sd, strict)
  if type(sd) == "table" then sd = self:checkpoint_state_dict(sd) end
  return nn.Module.load_state_dict(self, sd, strict)
end

--- num_parameters_for(cfg, overrides): the parameter count of CLIPTextModel(cfg), computed
--- from the config without building the model
local function num_parameters_for(cfg, overrides)
  local c = resolve(cfg, overrides)
  local d, m = c.hidden_size, c.intermediate_size
  local layer = 4 * (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
  return (c.vocab_size + c.max_position_embeddings) * d + c.num_hidden_layers * layer + 2 * d
end

return { CLIPTextModel = CLIPTextModel, resolve = resolve, num_parameters_for = num_parameters_for, Encoder = Encoder,
  init_encoder = init_encoder, SPEC = SPEC, ACTS = ACTS }
