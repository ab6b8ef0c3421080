-- tocha/models/diffusers.lua: Stable Diffusion as a diffusers folder, in and out. A folder has
-- model_index.json and one directory per part (unet/, vae/, text_encoder/, tokenizer/,
-- scheduler/), each with its config and safetensors weights: single files, *.fp16.* variants,
-- or shards listed in *.safetensors.index.json. Loading builds each model from its config and
-- hands it the memory-mapped weights (weights.lua); saving writes what diffusers'
-- StableDiffusionPipeline.from_pretrained reads.
local T = require "tocha"
local json = require "tocha.json"
local text = require "tocha.text"
local registry = require "tocha.diffusion.registry"
local W = require "tocha.models.weights"

local sys = T._sys -- mkdirs, isdir (lua/lsys.c)

local M = {}

-- the parts tocha builds: model_index.json's [library, class] for each, the constructor
-- (by name in tocha.models), and the base name of its weight files
local PARTS = {
  unet = { lib = "diffusers", class = "UNet2DConditionModel", base = "diffusion_pytorch_model" },
  vae = { lib = "diffusers", class = "AutoencoderKL", base = "diffusion_pytorch_model" },
  text_encoder = { lib = "transformers", class = "CLIPTextModel", base = "model" },
  tokenizer = { lib = "transformers", class = "CLIPTokenizer" },
  scheduler = { lib = "diffusers" },
}
M.PART_NAMES = { "unet", "vae", "text_encoder", "tokenizer", "scheduler" }
-- a tocha model's conditioning extras (coordinate channels, pooled text), beside model_index.json
local EXTRAS = "tocha.json"

local PICKLES = { ".bin", ".ckpt", ".pt", ".pth", ".pkl" }

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
M.exists = exists

local function read_json(path, what)
  local v, err = json.read_file(path)
  if v == nil then error(string.format("models.load: cannot read %s %s: %s", what, path, tostring(err)), 0) end
  if type(v) ~= "table" then error(string.format("models.load: %s %s is not a JSON object", what, path), 0) end
  return v
end

--- M.pickle_message(path): why tocha does not read a pickle file, and how to convert it
function M.pickle_message(path)
  return string.format("models.load: %s is a pickle file (PyTorch's .ckpt / .bin / .pt format): loading one runs "
    .. "whatever code it holds, so tocha does not read it. Convert it to safetensors once, where you trust the "
    .. "file: python3 -c \"import torch; from safetensors.torch import save_file; sd = torch.load('%s', "
    .. "map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); save_file({k: v.contiguous() for k, "
    .. "v in sd.items() if hasattr(v, 'contiguous')}, '%s')\" (a diffusers folder: save it again with "
    .. "safe_serialization=True)", path, path, (path:gsub("%.[^./]*$", "") .. ".safetensors"))
end

function M.is_pickle(path)
  for _, ext in ipairs(PICKLES) do
    if path:sub(-#ext) == ext then return true end
  end
  return false
end

---------------------------------------------------------------------------
-- weights of one part: which files, and their tensors
---------------------------------------------------------------------------
-- the tensors of a sharded checkpoint: every key where the index says, each once
local function load_sharded(dir, index_path)
  local index = read_json(index_path, "weight index")
  local map = index.weight_map
  if type(map) ~= "table" then error("models.load: " .. index_path .. " has no weight_map", 0) end
  local by_file = {}
  for key, file in pairs(map) do
    if type(file) ~= "string" then error(string.format("models.load: %s: weight_map[%s] is not a file name", index_path, key), 0) end
    by_file[file] = by_file[file] or {}
    by_file[file][key] = true
  end
  local sd, origin = {}, {}
  for file, keys in pairs(by_file) do
    local path = dir .. "/" .. file
    if not exists(path) then error(string.format("models.load: %s lists %s, which is missing", index_path, path), 0) end
    for key, t in pairs(T.load(path)) do
      if not keys[key] then
        error(string.format("models.load: %s: unknown key %s (%s does not list it in this file)", path, key, index_path), 0)
      end
      sd[key], origin[key] = t, path
    end
    for key in pairs(keys) do
      if sd[key] == nil then
        error(string.format("models.load: %s: missing key %s (%s says it is in this file)", path, key, index_path), 0)
      end
    end
  end
  return sd, origin
end

-- the weight files of part directory dir: the variant's when asked and present, else the
-- plain ones, else a variant (a folder with only fp16 files)
local function find_weights(dir, base, variant)
  local function single(v) return dir .. "/" .. base .. (v and ("." .. v) or "") .. ".safetensors" end
  local function index(v) return dir .. "/" .. base .. ".safetensors.index" .. (v and ("." .. v) or "") .. ".json" end
  local order = { variant or false, false, "fp16", "bf16" }
  for _, v in ipairs(order) do
    v = v or nil
    if exists(single(v)) then return { file = single(v) } end
    if exists(index(v)) then return { index = index(v) } end
  end
  for _, name in ipairs({ base .. ".bin", base .. ".fp16.bin", "pytorch_model.bin", base .. ".ckpt" }) do
    if exists(dir .. "/" .. name) then error(M.pickle_message(dir .. "/" .. name), 0) end
  end
  error(string.format("models.load: no weights in %s (looked for %s and %s)", dir, single(), index()), 0)
end

--- M.load_weights(dir, base, variant) -> name -> tensor (views of the mapped files), and
--- origin(name) -> the file it came from
function M.load_weights(dir, base, variant)
  local w = find_weights(dir, base, variant)
  if w.file then
    local sd = T.load(w.file)
    return sd, function() return w.file end
  end
  local sd, origin = load_sharded(dir, w.index)
  return sd, function(k) return origin[k] or w.index end
end

---------------------------------------------------------------------------
-- loading
---------------------------------------------------------------------------
-- a model config.json as the constructor takes it: the file's own dtype names are dropped
-- (tocha's dtype comes from the options)
local function model_config(path)
  local cfg = read_json(path, "config")
  cfg.dtype, cfg.torch_dtype = nil, nil
  return cfg
end

local function build(models, kind, dir, opts)
  local cfg = model_config(dir .. "/config.json")
  if kind == "CLIPTextModel" then
    local arch = cfg.architectures
    if type(arch) == "table" and arch[1] and arch[1] ~= "CLIPTextModel" then
      error(string.format("models.load: %s/config.json: %s is not a CLIPTextModel", dir, tostring(arch[1])), 0)
    end
    cfg.architectures = nil
  elseif cfg._class_name ~= nil and cfg._class_name ~= kind then
    error(string.format("models.load: %s/config.json: _class_name %s, %s expected", dir, tostring(cfg._class_name), kind), 0)
  end
  local ok, model = pcall(W.build, models[kind], cfg, opts)
  if not ok then error(string.format("models.load: %s/config.json: %s", dir, tostring(model):gsub("^[^:]*%.lua:%d+: ", "")), 0) end
  local sd, origin = M.load_weights(dir, kind == "CLIPTextModel" and "model" or "diffusion_pytorch_model", opts.variant)
  if model.checkpoint_state_dict then sd = model:checkpoint_state_dict(sd) end
  return W.assign(model, sd, origin, kind)
end

-- the vocabulary and merges of a tokenizers-library tokenizer.json (a BPE model), the special
-- tokens added to the vocabulary where it lacks them
local function tokenizer_json(path)
  local t = read_json(path, "tokenizer")
  local model = t.model
  if type(model) ~= "table" or model.type ~= "BPE" or type(model.vocab) ~= "table" or type(model.merges) ~= "table" then
    error("models.load: " .. path .. " does not hold a BPE tokenizer (model.vocab, model.merges)", 0)
  end
  local merges = {}
  for i, m in ipairs(model.merges) do merges[i] = type(m) == "table" and (m[1] .. " " .. m[2]) or m end
  for _, a in ipairs(t.added_tokens or {}) do
    if type(a) == "table" and type(a.content) == "string" and model.vocab[a.content] == nil then model.vocab[a.content] = a.id end
  end
  return model.vocab, merges
end

--- M.load_tokenizer(dir) -> a tocha.text tokenizer from vocab.json and merges.txt (or
--- tokenizer.json), with tokenizer_config.json's length and padding
function M.load_tokenizer(dir)
  local o = {}
  if exists(dir .. "/tokenizer_config.json") then
    local c = read_json(dir .. "/tokenizer_config.json", "tokenizer config")
    if math.type(c.model_max_length) == "integer" and c.model_max_length < 1e6 then o.max_length = c.model_max_length end
    local pad = c.pad_token
    if type(pad) == "table" then pad = pad.content end
    if type(pad) == "string" then o.pad_token = pad end
  end
  if exists(dir .. "/vocab.json") or not exists(dir .. "/tokenizer.json") then return text.load(dir, o) end
  local vocab, merges = tokenizer_json(dir .. "/tokenizer.json")
  return text.Tokenizer(vocab, merges, o)
end

-- the part directories model_index.json names, checked against what tocha builds
local function parts_of(root, index, want)
  local out = {}
  for _, name in ipairs(want) do
    local entry = index[name]
    local spec = PARTS[name]
    if not spec then error("models.load: unknown part " .. tostring(name) .. " (unet, vae, text_encoder, tokenizer, scheduler)", 0) end
    if type(entry) == "table" and entry[1] ~= json.null and entry[1] ~= nil then
      local class = entry[2]
      if spec.class and class ~= spec.class and not (name == "tokenizer" and class == "CLIPTokenizerFast") then
        error(string.format("models.load: %s/model_index.json: %s is a %s; tocha builds %s", root, name, tostring(class),
          spec.class), 0)
      end
      local dir = root .. "/" .. name
      if not sys.isdir(dir) then
        error(string.format("models.load: %s/model_index.json names %s, but %s is missing", root, name, dir), 0)
      end
      out[name] = dir
    end
  end
  return out
end

--- M.load(root, opts) -> {unet, vae, text_encoder, tokenizer, scheduler} from a diffusers
--- folder. opts: dtype ("f32"), device ("cpu"), variant ("fp16": *.fp16.safetensors where
--- present), parts (a list: load only these), scheduler (a sampler name, or a sampler, instead
--- of the one scheduler_config.json names; its noise schedule is kept)
function M.load(root, opts, models)
  opts = opts or {}
  local index = read_json(root .. "/model_index.json", "pipeline index")
  local class = index._class_name
  if class ~= nil and class ~= "StableDiffusionPipeline" then
    io.stderr:write(string.format("tocha: %s is a %s; loading its Stable Diffusion parts\n", root, tostring(class)))
  end
  local dirs = parts_of(root, index, opts.parts or M.PART_NAMES)
  local out = { path = root, format = "diffusers" }
  if dirs.unet then out.unet = build(models, "UNet2DConditionModel", dirs.unet, opts) end
  if dirs.vae then out.vae = build(models, "AutoencoderKL", dirs.vae, opts) end
  if dirs.text_encoder then out.text_encoder = build(models, "CLIPTextModel", dirs.text_encoder, opts) end
  if dirs.tokenizer then out.tokenizer = M.load_tokenizer(dirs.tokenizer) end
  if dirs.scheduler then
    local path = dirs.scheduler .. "/scheduler_config.json"
    out.scheduler = registry.choose(read_json(path, "scheduler config"), opts.scheduler, path)
  end
  for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
    if out[name] then out[name]:eval() end
  end
  if exists(root .. "/" .. EXTRAS) then out.extras = read_json(root .. "/" .. EXTRAS, "tocha extras") end
  return out
end

--- M.load_part(dir, opts) -> one model from a part directory (config.json + weights)
function M.load_part(dir, opts, models)
  local cfg = read_json(dir .. "/config.json", "config")
  local kind = cfg._class_name
  if kind == nil and type(cfg.architectures) == "table" then kind = cfg.architectures[1] end
  if kind ~= "UNet2DConditionModel" and kind ~= "AutoencoderKL" and kind ~= "CLIPTextModel" then
    error(string.format("models.load: %s/config.json describes a %s, not a model tocha builds", dir, tostring(kind)), 0)
  end
  return build(models, kind, dir, opts or {}):eval()
end

---------------------------------------------------------------------------
-- saving
---------------------------------------------------------------------------
local function make_dirs(path)
  local ok, why = sys.mkdirs(path)
  if not ok then error("save_pretrained: cannot create " .. path .. ": " .. tostring(why), 0) end
end

local function write(path, s)
  local f, err = io.open(path, "w")
  if not f then error("save_pretrained: cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(s, "\n")
  f:close()
end

local PER_BLOCK = { layers_per_block = true, attention_head_dim = true, cross_attention_dim = true,
  transformer_layers_per_block = true }

-- a resolved tocha config as diffusers writes one: without tocha's dtype / device, per-block
-- lists that hold one value written as that value
local function diffusers_config(c, class)
  local out = { _class_name = class }
  for k, v in pairs(c) do
    if k ~= "dtype" and k ~= "device" then
      if PER_BLOCK[k] and type(v) == "table" then
        local same = true
        for i = 2, #v do same = same and v[i] == v[1] end
        if same then v = v[1] end
      end
      out[k] = v
    end
  end
  return out
end

local function save_weights(model, path, dtype)
  local sd = model:state_dict()
  if dtype then
    for k, t in pairs(sd) do if t.dtype ~= dtype then sd[k] = t:to(dtype) end end
  end
  T.save(path, sd, { format = "pt" })
end

local function weights_name(base, variant) return base .. (variant and ("." .. variant) or "") .. ".safetensors" end

--- M.save(dir, parts, opts): a diffusers folder from parts {unet, vae, text_encoder, tokenizer,
--- scheduler} (any subset). opts.dtype converts the weights ("f16"); opts.variant names the files
--- (*.fp16.safetensors).
function M.save(dir, parts, opts)
  opts = opts or {}
  make_dirs(dir)
  local index = { _class_name = "StableDiffusionPipeline", _diffusers_version = "0.30.0",
    safety_checker = { json.null, json.null }, feature_extractor = { json.null, json.null },
    requires_safety_checker = false }
  local function part(name, class, lib)
    make_dirs(dir .. "/" .. name)
    index[name] = { lib, class }
    return dir .. "/" .. name .. "/"
  end
  for _, name in ipairs({ "unet", "vae" }) do
    local m = parts[name]
    if m then
      local class = PARTS[name].class
      local at = part(name, class, "diffusers")
      local cfg = diffusers_config(m.config, class)
      cfg._diffusers_version = index._diffusers_version
      write(at .. "config.json", json.encode(cfg))
      save_weights(m, at .. weights_name(PARTS[name].base, opts.variant), opts.dtype)
    end
  end
  if parts.text_encoder then
    local at = part("text_encoder", "CLIPTextModel", "transformers")
    local cfg = diffusers_config(parts.text_encoder.config)
    cfg._class_name = nil
    cfg.architectures, cfg.model_type = { "CLIPTextModel" }, "clip_text_model"
    if cfg.eos_token_id == nil then cfg.eos_token_id = 2 end -- transformers' legacy value: the end token is the largest id
    if parts.tokenizer then -- transformers' 0-based ids
      cfg.bos_token_id, cfg.pad_token_id = parts.tokenizer.bos_id - 1, parts.tokenizer.pad_id - 1
    end
    write(at .. "config.json", json.encode(cfg))
    save_weights(parts.text_encoder, at .. weights_name("model", opts.variant), opts.dtype)
  end
  if parts.tokenizer then
    local tok = parts.tokenizer
    local at = part("tokenizer", "CLIPTokenizer", "transformers")
    tok:save(at)
    local special = { bos_token = "<|startoftext|>", eos_token = "<|endoftext|>", unk_token = "<|endoftext|>",
      pad_token = tok.decoder[tok.pad_id] }
    write(at .. "special_tokens_map.json", json.encode(special))
    local cfg = { tokenizer_class = "CLIPTokenizer", model_max_length = tok.max_length, do_lower_case = true,
      errors = "replace", add_prefix_space = false }
    for k, v in pairs(special) do cfg[k] = v end
    write(at .. "tokenizer_config.json", json.encode(cfg))
  end
  if parts.scheduler then
    local cfg = registry.to_diffusers(parts.scheduler)
    local at = part("scheduler", cfg._class_name, "diffusers")
    cfg._diffusers_version = index._diffusers_version
    write(at .. "scheduler_config.json", json.encode(cfg))
  end
  if parts.extras then write(dir .. "/" .. EXTRAS, json.encode(parts.extras)) end
  write(dir .. "/model_index.json", json.encode(index))
end

return M
