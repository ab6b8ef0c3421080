-- tocha/models/single_file.lua: Stable Diffusion 1.x / 2.x as one original (CompVis / A1111)
-- .safetensors file: model.diffusion_model.* (the UNet), first_stage_model.* (the VAE) and
-- cond_stage_model.* (CLIP for 1.x, OpenCLIP for 2.x). Keys are mapped to diffusers' names
-- (tensors reshaped or split as views, so weights stay memory-mapped), the configs inferred
-- from the shapes, and the models built as for a diffusers folder.
local T = require "tocha"
local json = require "tocha.json"
local registry = require "tocha.diffusion.registry"
local W = require "tocha.models.weights"
local diffusers = require "tocha.models.diffusers"

local M = {}

local UNET, VAE = "model.diffusion_model.", "first_stage_model."
local CLIP, OPENCLIP = "cond_stage_model.transformer.", "cond_stage_model.model."

-- keys an original checkpoint holds besides the weights tocha builds from: the training
-- noise schedule's buffers, EMA copies, the autoencoder's training loss
local IGNORED = { "^betas$", "^alphas_cumprod", "^alphas_cumprod_prev$", "^sqrt_", "^log_one_minus_", "^posterior_",
  "^lvlb_weights$", "^model_ema%.", "^first_stage_model%.loss%.", "^logvar$", "position_ids$", "^cond_stage_model%.model%.text_projection$",
  "^cond_stage_model%.model%.logit_scale$" }

local function ignored(k)
  for _, p in ipairs(IGNORED) do if k:find(p) then return true end end
  return false
end

local function starts(s, p) return s:sub(1, #p) == p end

---------------------------------------------------------------------------
-- the UNet: input_blocks / middle_block / output_blocks -> down / mid / up blocks
---------------------------------------------------------------------------
local RESNET = { ["in_layers.0"] = "norm1", ["in_layers.2"] = "conv1", ["emb_layers.1"] = "time_emb_proj",
  ["out_layers.0"] = "norm2", ["out_layers.3"] = "conv2", skip_connection = "conv_shortcut" }
local UNET_FIXED = { ["time_embed.0"] = "time_embedding.linear_1", ["time_embed.2"] = "time_embedding.linear_2",
  ["input_blocks.0.0"] = "conv_in", ["out.0"] = "conv_norm_out", ["out.2"] = "conv_out",
  ["label_emb.0.0"] = "class_embedding.linear_1", ["label_emb.0.2"] = "class_embedding.linear_2",
  label_emb = "class_embedding" }

-- a ResnetBlock's inner name ("in_layers.0.weight") as diffusers names it ("norm1.weight")
local function resnet_name(rest)
  for from, to in pairs(RESNET) do
    if starts(rest, from .. ".") then return to .. rest:sub(#from + 1) end
  end
  return nil
end

-- levels and layers from the input blocks: the downsamplers sit at input_blocks.(k (L + 1)).0.op
local function unet_layout(keys, where)
  local downs, blocks = {}, 0
  for k in pairs(keys) do
    local i = tonumber(k:match("^input_blocks%.(%d+)%.0%.op%.weight$"))
    if i then downs[#downs + 1] = i end
    local b = tonumber(k:match("^input_blocks%.(%d+)%."))
    if b and b + 1 > blocks then blocks = b + 1 end
  end
  table.sort(downs)
  local L = downs[1] and downs[1] - 1 or blocks - 1
  local n = #downs + 1
  if L < 1 or blocks ~= n * (L + 1) then
    error(string.format("models.load: %s: the UNet's input_blocks do not form levels of equal depth", where), 0)
  end
  return n, L
end

-- original UNet keys (without the prefix) -> diffusers' names; nil for a key that fits nowhere
local function unet_key(k, L, up_attn)
  local head, leaf = k:match("^(.*)%.([^.]+)$")
  if UNET_FIXED[head] then return UNET_FIXED[head] .. "." .. leaf end
  local i, j, rest = k:match("^input_blocks%.(%d+)%.(%d+)%.(.*)$")
  if i then
    i, j = tonumber(i), tonumber(j)
    local b, l = (i - 1) // (L + 1), (i - 1) % (L + 1)
    if l == L then return rest:match("^op%.") and string.format("down_blocks.%d.downsamplers.0.conv.%s", b, rest:sub(4)) end
    if j == 0 then return string.format("down_blocks.%d.resnets.%d.%s", b, l, resnet_name(rest) or rest) end
    if j == 1 then return string.format("down_blocks.%d.attentions.%d.%s", b, l, rest) end
    return nil
  end
  j, rest = k:match("^middle_block%.(%d+)%.(.*)$")
  if j then
    j = tonumber(j)
    if j == 1 then return "mid_block.attentions.0." .. rest end
    if j == 0 or j == 2 then return string.format("mid_block.resnets.%d.%s", j // 2, resnet_name(rest) or rest) end
    return nil
  end
  i, j, rest = k:match("^output_blocks%.(%d+)%.(%d+)%.(.*)$")
  if i then
    i, j = tonumber(i), tonumber(j)
    local b, l = i // (L + 1), i % (L + 1)
    if j == 0 then return string.format("up_blocks.%d.resnets.%d.%s", b, l, resnet_name(rest) or rest) end
    if starts(rest, "conv.") and j == (up_attn[b] and 2 or 1) then
      return string.format("up_blocks.%d.upsamplers.0.%s", b, rest)
    end
    if j == 1 then return string.format("up_blocks.%d.attentions.%d.%s", b, l, rest) end
  end
  return nil
end

local function map_unet(raw, where, problems)
  local keys = {}
  for k, v in pairs(raw) do if starts(k, UNET) then keys[k:sub(#UNET + 1)] = v end end
  local n, L = unet_layout(keys, where)
  local up_attn = {}
  for k in pairs(keys) do
    local i = tonumber(k:match("^output_blocks%.(%d+)%.1%.norm%.weight$"))
    if i then up_attn[i // (L + 1)] = true end
  end
  local out = {}
  for k, v in pairs(keys) do
    local name = unet_key(k, L, up_attn)
    if name then out[name] = v else problems[#problems + 1] = UNET .. k end
  end
  return out, n, L
end

---------------------------------------------------------------------------
-- the VAE
---------------------------------------------------------------------------
local ATTN = { norm = "group_norm", q = "to_q", k = "to_k", v = "to_v", proj_out = "to_out.0" }

local function vae_key(k, levels)
  local side, rest = k:match("^(%a+coder)%.(.*)$")
  if not side then return (k:match("^quant_conv%.") or k:match("^post_quant_conv%.")) and k end
  local function res(r) return (r:gsub("^nin_shortcut%.", "conv_shortcut.")) end
  local b, name = rest:match("^mid%.block_(%d)%.(.*)$")
  if b then return string.format("%s.mid_block.resnets.%d.%s", side, tonumber(b) - 1, res(name)) end
  local a, leaf = rest:match("^mid%.attn_1%.(.-)%.(%a+)$")
  if a then return ATTN[a] and string.format("%s.mid_block.attentions.0.%s.%s", side, ATTN[a], leaf) end
  if starts(rest, "norm_out.") then return side .. ".conv_norm_out." .. rest:sub(10) end
  if rest:match("^conv_in%.") or rest:match("^conv_out%.") then return k end
  local i, j, r = rest:match("^down%.(%d+)%.block%.(%d+)%.(.*)$")
  if i and side == "encoder" then return string.format("encoder.down_blocks.%s.resnets.%s.%s", i, j, res(r)) end
  i, r = rest:match("^down%.(%d+)%.downsample%.(conv%..*)$")
  if i and side == "encoder" then return string.format("encoder.down_blocks.%s.downsamplers.0.%s", i, r) end
  i, j, r = rest:match("^up%.(%d+)%.block%.(%d+)%.(.*)$")
  if i and side == "decoder" then return string.format("decoder.up_blocks.%d.resnets.%s.%s", levels - 1 - tonumber(i), j, res(r)) end
  i, r = rest:match("^up%.(%d+)%.upsample%.(conv%..*)$")
  if i and side == "decoder" then return string.format("decoder.up_blocks.%d.upsamplers.0.%s", levels - 1 - tonumber(i), r) end
  return nil
end

local function map_vae(raw, problems)
  local levels = 0
  for k in pairs(raw) do
    local i = tonumber(k:match("^" .. VAE:gsub("%.", "%%.") .. "encoder%.down%.(%d+)%."))
    if i and i + 1 > levels then levels = i + 1 end
  end
  local out = {}
  for k, v in pairs(raw) do
    if starts(k, VAE) and not ignored(k) then
      local name = vae_key(k:sub(#VAE + 1), levels)
      if not name then problems[#problems + 1] = k
      else
        -- the mid-block attention's projections are 1x1 convolutions there, Linear layers here
        if name:match("attentions%.0%.to_") and name:match("weight$") and v:dim() == 4 then v = v:view(v.shape[1], v.shape[2]) end
        out[name] = v
      end
    end
  end
  return out, levels
end

---------------------------------------------------------------------------
-- the text encoder: CLIP (1.x) as it is, OpenCLIP (2.x) renamed, its fused q, k, v split
---------------------------------------------------------------------------
local function map_clip(raw)
  local out = {}
  for k, v in pairs(raw) do
    if starts(k, CLIP) and not ignored(k) then
      local name = k:sub(#CLIP + 1)
      if not starts(name, "text_model.") then name = "text_model." .. name end
      out[name] = v
    end
  end
  return out
end

local OPEN = { ["ln_1"] = "layer_norm1", ["ln_2"] = "layer_norm2", ["mlp.c_fc"] = "mlp.fc1", ["mlp.c_proj"] = "mlp.fc2",
  ["attn.out_proj"] = "self_attn.out_proj" }

-- OpenCLIP's resblocks; Stable Diffusion 2.x reads the penultimate layer, so the last is dropped
local function map_openclip(raw, problems)
  local layers = 0
  for k in pairs(raw) do
    local i = tonumber(k:match("^cond_stage_model%.model%.transformer%.resblocks%.(%d+)%."))
    if i and i + 1 > layers then layers = i + 1 end
  end
  local out = {}
  for k, v in pairs(raw) do
    if starts(k, OPENCLIP) and not ignored(k) then
      local rest = k:sub(#OPENCLIP + 1)
      local i, name, leaf = rest:match("^transformer%.resblocks%.(%d+)%.(.-)%.([%a_]+)$")
      if i then
        i = tonumber(i)
        local at = "text_model.encoder.layers." .. i .. "."
        if i == layers - 1 then -- the skipped last layer
        elseif name == "attn" and (leaf == "in_proj_weight" or leaf == "in_proj_bias") then
          local d = v.shape[1] // 3
          local kind = leaf == "in_proj_weight" and "weight" or "bias"
          for j, x in ipairs({ "q", "k", "v" }) do out[at .. "self_attn." .. x .. "_proj." .. kind] = v:narrow(1, (j - 1) * d + 1, d) end
        elseif OPEN[name] then out[at .. OPEN[name] .. "." .. leaf] = v
        else problems[#problems + 1] = k end
      elseif rest == "token_embedding.weight" then out["text_model.embeddings.token_embedding.weight"] = v
      elseif rest == "positional_embedding" then out["text_model.embeddings.position_embedding.weight"] = v
      elseif rest == "ln_final.weight" or rest == "ln_final.bias" then
        out["text_model.final_layer_norm." .. rest:sub(10)] = v
      else problems[#problems + 1] = k end
    end
  end
  return out, layers - 1
end

---------------------------------------------------------------------------
-- configs from the shapes
---------------------------------------------------------------------------
local function shape(sd, k, d)
  local t = sd[k]
  return t and t.shape[d]
end

local function unet_config(sd, n, L, sd2)
  local ch, down, up, heads, layers = {}, {}, {}, {}, {}
  for b = 0, n - 1 do
    ch[b + 1] = shape(sd, string.format("down_blocks.%d.resnets.0.conv1.weight", b), 1)
    local attn = sd[string.format("down_blocks.%d.attentions.0.norm.weight", b)] ~= nil
    down[b + 1] = attn and "CrossAttnDownBlock2D" or "DownBlock2D"
    local t = 0
    while sd[string.format("down_blocks.%d.attentions.0.transformer_blocks.%d.norm1.weight", b, t)] do t = t + 1 end
    layers[b + 1] = math.max(t, 1)
    -- SD 1.x: 8 heads everywhere; SD 2.x: heads of 64 dimensions
    heads[b + 1] = sd2 and math.max(ch[b + 1] // 64, 1) or 8
  end
  for b = 0, n - 1 do
    up[b + 1] = sd[string.format("up_blocks.%d.attentions.0.norm.weight", b)] and "CrossAttnUpBlock2D" or "UpBlock2D"
  end
  local cross
  for k, v in pairs(sd) do
    if k:match("attn2%.to_k%.weight$") then cross = v.shape[2]; break end
  end
  local proj
  for k, v in pairs(sd) do
    if k:match("%.proj_in%.weight$") then proj = v:dim() == 2; break end
  end
  local c = { in_channels = shape(sd, "conv_in.weight", 2), out_channels = shape(sd, "conv_out.weight", 1),
    block_out_channels = ch, layers_per_block = L, down_block_types = down, up_block_types = up,
    attention_head_dim = heads, cross_attention_dim = cross or 768, use_linear_projection = proj or false,
    transformer_layers_per_block = layers, upcast_attention = sd2, sample_size = sd2 and 96 or 64,
    conv_in_kernel = shape(sd, "conv_in.weight", 3), conv_out_kernel = shape(sd, "conv_out.weight", 3) }
  local temb = shape(sd, "time_embedding.linear_1.weight", 1)
  if temb and temb ~= 4 * ch[1] then c.time_embedding_dim = temb end
  if sd["class_embedding.weight"] then c.num_class_embeds = shape(sd, "class_embedding.weight", 1)
  elseif sd["class_embedding.linear_1.weight"] then
    c.class_embed_type, c.projection_class_embeddings_input_dim = "projection", shape(sd, "class_embedding.linear_1.weight", 2)
  end
  return c
end

local function vae_config(sd, levels, sd2)
  local ch = {}
  local L = 0
  while sd[string.format("encoder.down_blocks.0.resnets.%d.conv1.weight", L)] do L = L + 1 end
  local types_down, types_up = {}, {}
  for i = 0, levels - 1 do
    ch[i + 1] = shape(sd, string.format("encoder.down_blocks.%d.resnets.0.conv1.weight", i), 1)
    types_down[i + 1], types_up[i + 1] = "DownEncoderBlock2D", "UpDecoderBlock2D"
  end
  return { in_channels = shape(sd, "encoder.conv_in.weight", 2), out_channels = shape(sd, "decoder.conv_out.weight", 1),
    latent_channels = shape(sd, "decoder.conv_in.weight", 2), block_out_channels = ch, layers_per_block = L,
    down_block_types = types_down, up_block_types = types_up, sample_size = sd2 and 768 or 512,
    use_quant_conv = sd["quant_conv.weight"] ~= nil, use_post_quant_conv = sd["post_quant_conv.weight"] ~= nil,
    mid_block_add_attention = sd["encoder.mid_block.attentions.0.to_q.weight"] ~= nil }
end

local function text_config(sd, layers, sd2)
  local d = shape(sd, "text_model.embeddings.token_embedding.weight", 2)
  return { vocab_size = shape(sd, "text_model.embeddings.token_embedding.weight", 1), hidden_size = d,
    intermediate_size = shape(sd, "text_model.encoder.layers.0.mlp.fc1.weight", 1), num_hidden_layers = layers,
    num_attention_heads = math.max(d // 64, 1), max_position_embeddings = shape(sd, "text_model.embeddings.position_embedding.weight", 1),
    hidden_act = sd2 and "gelu" or "quick_gelu", eos_token_id = 2 }
end

local function count_layers(sd)
  local n = 0
  while sd["text_model.encoder.layers." .. n .. ".layer_norm1.weight"] do n = n + 1 end
  return n
end

---------------------------------------------------------------------------
-- loading
---------------------------------------------------------------------------
--- M.convert(raw, where) -> {unet = sd, vae = sd, text_encoder = sd} under diffusers' names,
--- the inferred configs {unet, vae, text_encoder}, and whether it is SD 2.x. Keys that map
--- nowhere raise, naming the file (where) and the keys.
function M.convert(raw, where)
  local problems = {}
  local sd2 = raw[OPENCLIP .. "token_embedding.weight"] ~= nil
  for k in pairs(raw) do
    if not (starts(k, UNET) or starts(k, VAE) or starts(k, CLIP) or starts(k, OPENCLIP) or ignored(k)) then
      problems[#problems + 1] = k
    end
  end
  local unet, n, L = map_unet(raw, where, problems)
  local vae, levels = map_vae(raw, problems)
  local text, layers
  if sd2 then text, layers = map_openclip(raw, problems)
  else text = map_clip(raw); layers = count_layers(text) end
  if #problems > 0 then
    table.sort(problems)
    local shown = { table.unpack(problems, 1, math.min(#problems, 12)) }
    error(string.format("models.load: %s: unknown key(s) in a Stable Diffusion checkpoint: %s%s", where,
      table.concat(shown, ", "), #problems > 12 and string.format(" and %d more", #problems - 12) or ""), 0)
  end
  local cfg = { unet = unet_config(unet, n, L, sd2), vae = vae_config(vae, levels, sd2),
    text_encoder = text_config(text, layers, sd2) }
  return { unet = unet, vae = vae, text_encoder = text }, cfg, sd2
end

local function merge(base, over)
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(over or {}) do out[k] = v end
  return out
end

-- the folders where Hugging Face's cache may already hold the tokenizer SD 1.x / 2.x use
local function cached_tokenizer(sd2)
  local home = os.getenv("HF_HOME") or ((os.getenv("HOME") or "") .. "/.cache/huggingface")
  local repo = sd2 and "models--stabilityai--stable-diffusion-2-1/snapshots" or "models--openai--clip-vit-large-patch14/snapshots"
  local p = io.popen(string.format("ls -d '%s/hub/%s'/*%s 2>/dev/null", home, repo, sd2 and "/tokenizer" or ""))
  local dir = p:read("l")
  p:close()
  return dir
end

-- opts.config: a diffusers folder whose configs, tokenizer and scheduler are used, or a table
-- {unet, vae, text_encoder, scheduler} of overrides to the inferred configs
local function given(opts)
  local c = opts.config
  if c == nil then return {} end
  if type(c) == "table" then return c end
  if type(c) ~= "string" then error("models.load: config must be a diffusers folder or a table of configs", 0) end
  local function read(path)
    local v = json.read_file(path)
    if not v then error("models.load: cannot read " .. path, 0) end
    v.dtype, v.torch_dtype, v.architectures = nil, nil, nil
    return v
  end
  return { unet = read(c .. "/unet/config.json"), vae = read(c .. "/vae/config.json"),
    text_encoder = read(c .. "/text_encoder/config.json"), scheduler = read(c .. "/scheduler/scheduler_config.json"),
    tokenizer = c .. "/tokenizer", folder = true }
end

--- M.load(path, opts, models) -> {unet, vae, text_encoder, tokenizer, scheduler} from one
--- original checkpoint. opts: dtype, device, config (a diffusers folder, or overrides to the
--- configs inferred from the shapes), tokenizer (a folder with vocab.json and merges.txt, or
--- tokenizer.json; by default the config folder's, else Hugging Face's cache), parts.
function M.load(path, opts, models)
  opts = opts or {}
  local raw = T.load(path)
  local sd, inferred, sd2 = M.convert(raw, path)
  raw = nil -- luacheck: ignore (the mapped tensors are views that keep the file mapped)
  local over = given(opts)
  local want = {}
  for _, name in ipairs(opts.parts or diffusers.PART_NAMES) do want[name] = true end
  local out = { path = path, format = sd2 and "single file (SD 2.x)" or "single file (SD 1.x)" }
  local kinds = { unet = "UNet2DConditionModel", vae = "AutoencoderKL", text_encoder = "CLIPTextModel" }
  for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
    if want[name] then
      local cfg = over.folder and over[name] or merge(inferred[name], over[name])
      local ok, model = pcall(W.build, models[kinds[name]], cfg, opts)
      if not ok then error(string.format("models.load: %s: the %s config: %s", path, name, (tostring(model):gsub("^[^:]*%.lua:%d+: ", ""))), 0) end
      out[name] = W.assign(model, sd[name], function() return path end, kinds[name]):eval()
    end
  end
  if want.tokenizer then
    local dir = opts.tokenizer or over.tokenizer or cached_tokenizer(sd2)
    if not dir then
      error(string.format("models.load: %s holds no tokenizer: give opts.tokenizer (a folder with vocab.json and "
        .. "merges.txt, such as a diffusers model's tokenizer/), or a diffusers folder as opts.config "
        .. "(`tocha sample --tokenizer DIR` or `--config DIR`)", path), 0)
    end
    out.tokenizer = diffusers.load_tokenizer(dir)
  end
  if want.scheduler then
    -- Stable Diffusion's schedule; 2.x (768) predicts v, as stable-diffusion-2-1 does
    local base = { _class_name = sd2 and "DDIMScheduler" or "PNDMScheduler", beta_start = 0.00085, beta_end = 0.012,
      beta_schedule = "scaled_linear", steps_offset = 1, set_alpha_to_one = false, clip_sample = false,
      skip_prk_steps = true, prediction_type = sd2 and "v_prediction" or "epsilon" }
    local cfg = over.folder and over.scheduler or merge(base, over.scheduler)
    out.scheduler = registry.choose(cfg, opts.scheduler, path)
  end
  return out
end

return M
