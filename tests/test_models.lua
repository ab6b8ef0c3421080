-- tests/test_models.lua: tocha.models against transformers' CLIPTextModel and diffusers'
-- UNet2DConditionModel (weights, inputs and outputs from tests/ref/gen_models.py, loaded by
-- name with strict load_state_dict), gradients, parameter counts from configs, presets, errors.
local T = require "tocha"
local raises = T.testing.raises
local json = require "tocha.json"
local models = require "tocha.models"

local P = models.presets
local tests = {}

-- a case: its weights, its inputs / outputs, and the config it was built from (files
-- ref/<prefix>_<name>*.safetensors, prefix "models" by default)
local function load_case(name, prefix)
  local base = "ref/" .. (prefix or "models") .. "_" .. name
  local sd, meta = T.load(T.testing.path(base .. ".safetensors"))
  local io = T.load(T.testing.path(base .. "_io.safetensors"))
  return sd, io, json.decode(meta.config)
end

local F32 = { rtol = 1e-4, atol = 1e-5 }
local F64 = { rtol = 1e-9, atol = 1e-10 }

---------------------------------------------------------------------------
-- CLIP text encoder
---------------------------------------------------------------------------
local function check_text(name, grads, strip_prefix)
  local sd, io, cfg = load_case(name)
  local m = models.CLIPTextModel(cfg):eval()
  if strip_prefix then -- as transformers >= 5 saves it, plus the buffer older versions saved
    local bare = { ["embeddings.position_ids"] = T.arange(0, cfg.max_position_embeddings, { dtype = "i64" }):view(1, -1) }
    for k, v in pairs(sd) do bare[k:gsub("^text_model%.", "")] = v end
    sd = bare
  end
  m:load_state_dict(sd, true)
  local mask = io.attention_mask
  local h, pooled = m(io.ids, { attention_mask = mask })
  T.testing.assert_close(h, io.last_hidden_state, { rtol = F32.rtol, atol = F32.atol, msg = name .. " f32 hidden" })
  T.testing.assert_close(pooled, io.pooled, { rtol = F32.rtol, atol = F32.atol, msg = name .. " f32 pooled" })
  m:to("f64")
  h, pooled = m(io.ids, { attention_mask = mask })
  T.testing.assert_close(h, io.last_hidden_state_f64, { rtol = F64.rtol, atol = F64.atol, msg = name .. " f64 hidden" })
  T.testing.assert_close(pooled, io.pooled_f64, { rtol = F64.rtol, atol = F64.atol, msg = name .. " f64 pooled" })
  ;((h * io.r):sum() + pooled:sum()):backward()
  local params = {}
  for k, p in m:named_parameters() do params[k] = p end
  for _, k in ipairs(grads or {}) do
    T.testing.assert_close(params["text_model." .. k].grad, io["grad." .. k], { rtol = 1e-8, atol = 1e-10, msg = k })
  end
end

tests["CLIPTextModel gives transformers' outputs and gradients (legacy end token: the largest id)"] = function()
  check_text("text", { "embeddings.token_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight",
    "encoder.layers.1.mlp.fc1.bias", "final_layer_norm.weight" })
end

tests["CLIPTextModel with an attention mask, eos_token_id, gelu, and a checkpoint without the prefix and with position_ids"] = function()
  check_text("text_mask", nil, true)
end

tests["CLIPTextModel returns every hidden state and takes ids without padding"] = function()
  local m = models.CLIPTextModel(P.tiny_text, { vocab_size = 50, num_hidden_layers = 2 })
  local ids = T.tensor({ { 49, 3, 4, 50, 50 }, { 49, 7, 50, 50, 50 } }, { dtype = "i64" })
  local h, pooled, hidden = m(ids, { output_hidden_states = true })
  assert(#hidden == 3 and h.shape[3] == 64 and pooled.shape[1] == 2 and pooled.shape[2] == 64)
  T.testing.assert_close(m.text_model.final_layer_norm(hidden[3]), h)
  T.testing.assert_close(pooled[1], h[1][4]) -- the first largest id
  T.testing.assert_close(pooled[2], h[2][3])
  -- a shorter sequence is the prefix of a longer one (causal)
  local short = m(ids:narrow(2, 1, 3))
  T.testing.assert_close(short, h:narrow(2, 1, 3), { rtol = 1e-5, atol = 1e-6 })
end

---------------------------------------------------------------------------
-- UNet
---------------------------------------------------------------------------
local function check_unet(name, grads)
  local sd, io, cfg = load_case(name)
  local m = models.UNet2DConditionModel(cfg):eval()
  m:load_state_dict(sd, true)
  local opts = { encoder_attention_mask = io.encoder_attention_mask }
  local y = m(io.sample, io.timestep, io.context, opts)
  T.testing.assert_close(y, io.out, { rtol = F32.rtol, atol = F32.atol, msg = name .. " f32" })
  m:to("f64")
  local x = io.sample:double():requires_grad_()
  local c = io.context:double():requires_grad_()
  y = m(x, io.timestep, c, opts)
  T.testing.assert_close(y, io.out_f64, { rtol = F64.rtol, atol = F64.atol, msg = name .. " f64" })
  ;(y * io.r):sum():backward()
  local tol = { rtol = 1e-8, atol = 1e-10 }
  T.testing.assert_close(x.grad, io["grad.sample"], tol)
  T.testing.assert_close(c.grad, io["grad.context"], tol)
  local params = {}
  for k, p in m:named_parameters() do params[k] = p end
  for _, k in ipairs(grads) do
    T.testing.assert_close(params[k].grad, io["grad." .. k], { rtol = tol.rtol, atol = tol.atol, msg = k })
  end
end

tests["UNet2DConditionModel gives diffusers' outputs and gradients (SD layout)"] = function()
  check_unet("unet", { "conv_in.weight", "time_embedding.linear_1.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    "mid_block.attentions.0.norm.weight", "up_blocks.0.resnets.1.conv_shortcut.weight",
    "up_blocks.0.upsamplers.0.conv.bias", "conv_out.weight" })
end

tests["UNet2DConditionModel matches diffusers for odd sizes and every config option"] = function()
  check_unet("unet_odd", { "down_blocks.1.attentions.1.transformer_blocks.1.attn1.to_v.weight",
    "up_blocks.1.resnets.2.norm1.bias" })
end

tests["UNet2DConditionModel with resnet_time_scale_shift = scale_shift matches diffusers"] = function()
  check_unet("unet_ss", { "down_blocks.0.resnets.0.time_emb_proj.weight", "mid_block.resnets.1.time_emb_proj.bias" })
end

tests["UNet backward gives a finite gradient for every parameter"] = function()
  local sd, io, cfg = load_case("unet")
  local m = models.UNet2DConditionModel(cfg)
  m:load_state_dict(sd)
  local y = m(io.sample, io.timestep, io.context)
  ;(y * io.r:float()):sum():backward()
  local n = 0
  for name, p in m:named_parameters() do
    assert(p.grad, name .. " has no gradient")
    assert(p.grad:isfinite():logical_not():sum():item() == 0, name .. " has a non-finite gradient")
    n = n + 1
  end
  assert(n == 208, n)
end

tests["UNet timesteps: a number, a list or a tensor; inputs may be non-contiguous views"] = function()
  local _, io, cfg = load_case("unet")
  local sd = load_case("unet")
  local m = models.UNet2DConditionModel(cfg):eval()
  m:load_state_dict(sd)
  local x, ctx = io.sample, io.context
  local y = m(x, { 999, 17 }, ctx)
  T.testing.assert_close(y, io.out, F32)
  T.testing.assert_close(m(x, T.tensor({ 999, 17 }, { dtype = "i64" }), ctx), y, { rtol = 1e-6, atol = 1e-6 })
  local same = m(x, 250, ctx)
  T.testing.assert_close(same, m(x, T.tensor({ 250 }), ctx), { rtol = 1e-6, atol = 1e-6 })
  -- transposed sample and a context cut out of a wider tensor
  local xt = x:transpose(3, 4):contiguous():transpose(3, 4)
  local wide = T.cat({ ctx, T.randn({ 2, 7, 5 }) }, 3):narrow(3, 1, 24)
  assert(not xt:is_contiguous() and not wide:is_contiguous())
  T.testing.assert_close(m(xt, { 999, 17 }, wide), y, { rtol = 1e-5, atol = 1e-6 })
end

tests["gradient checkpointing gives the same gradients"] = function()
  local sd, io, cfg = load_case("unet")
  local x = io.sample:narrow(1, 1, 1):narrow(3, 1, 8):narrow(4, 1, 8):double()
  local ctx = io.context:narrow(1, 1, 1):double()
  local function grads(ckpt)
    local m = models.UNet2DConditionModel(cfg, { dtype = "f64" })
    m:load_state_dict(sd)
    if ckpt then m:enable_gradient_checkpointing() end
    m(x, 500, ctx):square():sum():backward()
    local g = {}
    for k, p in m:named_parameters() do g[k] = p.grad end
    return g
  end
  local a, b = grads(false), grads(true)
  for k, g in pairs(a) do T.testing.assert_close(b[k], g, { rtol = 1e-12, atol = 1e-14, msg = k }) end
end

---------------------------------------------------------------------------
-- presets, sizes, parameter counts
---------------------------------------------------------------------------
tests["parameter counts from the config match the built models and Stable Diffusion 1.5"] = function()
  assert(models.num_parameters("UNet2DConditionModel", P.sd15_unet) == 859520964)
  assert(models.num_parameters("CLIPTextModel", P.sd15_text) == 123060480)
  for _, name in ipairs({ "unet", "unet_odd" }) do
    local sd, _, cfg = load_case(name)
    local n = 0
    for _, t in pairs(sd) do n = n + t:numel() end
    assert(models.num_parameters("UNet2DConditionModel", cfg) == n, name)
    assert(models.UNet2DConditionModel(cfg):num_parameters() == n, name)
  end
  assert(models.UNet2DConditionModel(P.tiny_unet):num_parameters() == models.num_parameters("UNet2DConditionModel", P.tiny_unet))
  assert(models.CLIPTextModel(P.tiny_text):num_parameters() == models.num_parameters("CLIPTextModel", P.tiny_text))
end

-- runwayml/stable-diffusion-v1-5 unet/config.json, as published
local SD15_UNET_JSON = [[{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
  "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "class_embed_type": null, "num_class_embeds": null, "only_cross_attention": false, "dual_cross_attention": false,
  "use_linear_projection": false, "upcast_attention": false
}]]

-- and its text_encoder/config.json
local SD15_TEXT_JSON = [[{
  "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"], "attention_dropout": 0.0,
  "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768,
  "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
  "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
  "transformers_version": "4.22.0.dev0", "vocab_size": 49408
}]]

tests["diffusers and transformers config.json files resolve as they are"] = function()
  local cfg = json.decode(SD15_UNET_JSON)
  assert(models.num_parameters("UNet2DConditionModel", cfg) == 859520964)
  assert(models.num_parameters("CLIPTextModel", json.decode(SD15_TEXT_JSON)) == 123060480)
  assert(models.resolve("CLIPTextModel", json.decode(SD15_TEXT_JSON)).eos_token_id == 2)
  local c = models.resolve("UNet2DConditionModel", cfg, { block_out_channels = { 32, 64, 64, 64 } })
  assert(c.block_out_channels[4] == 64 and c.attention_head_dim[3] == 8 and c.cross_attention_dim[1] == 768)
  assert(cfg.block_out_channels[1] == 320, "resolve must not modify its input")
end

tests["tiny presets run at the default experiment's shapes and at odd sizes"] = function()
  local te = models.CLIPTextModel(P.tiny_text)
  local unet = models.UNet2DConditionModel(P.tiny_unet)
  local ids = T.randint(1, P.tiny_text.vocab_size + 1, { 2, 32 }, { dtype = "i64" })
  local ctx = te(ids)
  assert(ctx.shape[1] == 2 and ctx.shape[2] == 32 and ctx.shape[3] == 64)
  for _, hw in ipairs({ { 32, 32 }, { 17, 13 }, { 8, 24 } }) do
    local y = unet(T.randn({ 2, 3, hw[1], hw[2] }), { 10, 900 }, ctx)
    assert(y.shape[1] == 2 and y.shape[2] == 3 and y.shape[3] == hw[1] and y.shape[4] == hw[2])
    assert(y:isfinite():logical_not():sum():item() == 0)
  end
end

tests["a 1-layer, 1-block UNet without attention levels (mid block only)"] = function()
  local m = models.UNet2DConditionModel({ in_channels = 2, out_channels = 1, block_out_channels = { 8 },
    down_block_types = { "DownBlock2D" }, up_block_types = { "UpBlock2D" }, layers_per_block = 1,
    attention_head_dim = 2, cross_attention_dim = 6, norm_num_groups = 2 })
  assert(m.down_blocks[1].downsamplers == nil and m.up_blocks[1].upsamplers == nil)
  local y = m(T.randn({ 3, 2, 5, 7 }), 3, T.randn({ 3, 4, 6 }))
  assert(y.shape[1] == 3 and y.shape[2] == 1 and y.shape[3] == 5 and y.shape[4] == 7)
  assert(m:num_parameters() == models.num_parameters("UNet2DConditionModel", m.config))
end

---------------------------------------------------------------------------
-- bad input
---------------------------------------------------------------------------
tests["clear errors for bad configs and inputs"] = function()
  local U, C = models.UNet2DConditionModel, models.CLIPTextModel
  raises("unknown config key%(s%): block_channels", U, P.tiny_unet, { block_channels = { 1 } })
  raises("class_embed_type = \"class\" is not supported", U, P.tiny_unet, { class_embed_type = "class" })
  raises("down_block_types%[1%] = \"AttnDownBlock2D\" is not supported", U, P.tiny_unet,
    { down_block_types = { "AttnDownBlock2D", "DownBlock2D", "DownBlock2D" } })
  raises("up_block_types must list 3 block types", U, P.tiny_unet, { up_block_types = { "UpBlock2D" } })
  raises("layers_per_block must be an integer or a list of 3", U, P.tiny_unet, { layers_per_block = { 1, 2 } })
  raises("block_out_channels%[1%] = 30 is not divisible by norm_num_groups %(8%)", U, P.tiny_unet,
    { block_out_channels = { 30, 64, 64 } })
  raises("config must be a table", U, "sd15")
  raises("hidden_size %(64%) must be divisible by num_attention_heads %(5%)", C, P.tiny_text, { num_attention_heads = 5 })
  raises("hidden_act must be", C, P.tiny_text, { hidden_act = "relu" })
  raises("unknown config key%(s%): layers", C, P.tiny_text, { layers = 2 })
  raises("kind must be", models.num_parameters, "VAE", {})

  local te = C(P.tiny_text, { vocab_size = 20, max_position_embeddings = 8 })
  raises("ids must be an integer tensor", te, T.randn({ 2, 4 }))
  raises("9 tokens is more than max_position_embeddings %(8%)", te, T.ones({ 1, 9 }, { dtype = "i64" }))
  raises("attention_mask must be %[1 x 4%]", te, T.ones({ 1, 4 }, { dtype = "i64" }), { attention_mask = T.ones({ 1, 3 }) })
  local u = U({ in_channels = 2, out_channels = 1, block_out_channels = { 8 }, down_block_types = { "DownBlock2D" },
    up_block_types = { "UpBlock2D" }, layers_per_block = 1, attention_head_dim = 2, cross_attention_dim = 6,
    norm_num_groups = 2 })
  local ctx = T.randn({ 2, 3, 6 })
  raises("sample must be %[batch, 2, height, width%], got %[2 x 3 x 4 x 4%]", u, T.randn({ 2, 3, 4, 4 }), 1, ctx)
  raises("encoder_hidden_states must be %[2 %(batch%), length, 6%], got %[1 x 3 x 6%]", u, T.randn({ 2, 2, 4, 4 }), 1,
    T.randn({ 1, 3, 6 }))
  raises("encoder_hidden_states must be %[2 %(batch%), length, 6%], got %[2 x 3 x 5%]", u, T.randn({ 2, 2, 4, 4 }), 1,
    T.randn({ 2, 3, 5 }))
  raises("timestep must hold 1 or 2", u, T.randn({ 2, 2, 4, 4 }), { 1, 2, 3 }, ctx)
  raises("encoder_attention_mask must be %[2 x 3%]", u, T.randn({ 2, 2, 4, 4 }), 1, ctx,
    { encoder_attention_mask = T.ones({ 2, 4 }) })
  raises("size mismatch for conv_in.weight", function()
    u:load_state_dict({ ["conv_in.weight"] = T.zeros({ 8, 3, 3, 3 }) }, false)
  end)
end

tests["class_embed_type projection adds a per-sample vector to the time embedding, as diffusers names it"] = function()
  local cfg = { class_embed_type = "projection", projection_class_embeddings_input_dim = 6 }
  local u = models.UNet2DConditionModel(models.presets.tiny_unet, cfg)
  local names = {}
  for name, p in u:named_parameters() do names[name] = p.shape end
  assert(names["class_embedding.linear_1.weight"][1] == 64 and names["class_embedding.linear_1.weight"][2] == 6)
  assert(names["class_embedding.linear_2.weight"][1] == 64 and names["class_embedding.linear_2.bias"][1] == 64)
  assert(u:num_parameters() == models.num_parameters("UNet2DConditionModel", models.presets.tiny_unet, cfg))
  local x, ctx, ts = T.randn({ 2, 3, 32, 32 }), T.randn({ 2, 4, 64 }), T.tensor({ 10, 900 }, { dtype = "i64" })
  local a = T.randn({ 2, 6 })
  local y1 = u(x, ts, ctx, { class_labels = a })
  local y2 = u(x, ts, ctx, { class_labels = a * 3 })
  assert(not y1:allclose(y2), "the vector changes the output")
  -- it enters exactly as time_embedding(t) + class_embedding(v): zero weights there change nothing
  T.no_grad(function()
    for _, p in ipairs(u.class_embedding:parameters()) do p:zero_() end
  end)
  local plain = models.UNet2DConditionModel(models.presets.tiny_unet)
  local sd = u:state_dict()
  sd["class_embedding.linear_1.weight"], sd["class_embedding.linear_1.bias"] = nil, nil
  sd["class_embedding.linear_2.weight"], sd["class_embedding.linear_2.bias"] = nil, nil
  plain:load_state_dict(sd, true)
  T.testing.assert_close(u(x, ts, ctx, { class_labels = a }), plain(x, ts, ctx), { rtol = 1e-5, atol = 1e-6 })
  local ok, err = pcall(u.forward, u, x, ts, ctx)
  assert(not ok and err:find("class_labels must be"), err)
  ok, err = pcall(models.UNet2DConditionModel, models.presets.tiny_unet, { class_embed_type = "projection" })
  assert(not ok and err:find("projection_class_embeddings_input_dim"), err)
end

---------------------------------------------------------------------------
-- Stable Diffusion 1.x / 2.x config variants (tests/ref/gen_sd.py)
---------------------------------------------------------------------------
local function load_sd_case(name) return load_case(name, "sd") end

local function check_variant(name)
  local sd, io, cfg = load_sd_case(name)
  local m = models.UNet2DConditionModel(cfg):eval()
  m:load_state_dict(sd, true)
  local labels = io.class_labels
  T.testing.assert_close(m(io.sample, io.timestep, io.context, { class_labels = labels }), io.out,
    { rtol = F32.rtol, atol = F32.atol, msg = name .. " f32" })
  m:to("f64")
  local x = io.sample:double():requires_grad_()
  if labels and labels.dtype == "f32" then labels = labels:double() end
  local y = m(x, io.timestep, io.context:double(), { class_labels = labels })
  T.testing.assert_close(y, io.out_f64, { rtol = 1e-6, atol = 1e-9, msg = name .. " f64" })
  T.testing.assert_close(y, io.out_f64, { rtol = F64.rtol, atol = F64.atol, msg = name .. " f64 (tight)" })
  ;(y * io.r):sum():backward()
  T.testing.assert_close(x.grad, io["grad.sample"], { rtol = 1e-8, atol = 1e-10, msg = name .. " grad" })
  return m
end

tests["SD 2.x UNet config: head lists, linear projections, upcast attention, class ids (num_class_embeds)"] = function()
  local m = check_variant("unet_sd2")
  assert(m.config.upcast_attention == true and m.config.use_linear_projection == true)
  assert(m.class_embedding.weight.shape[1] == 5)
  local sd, io, cfg = load_sd_case("unet_sd2")
  local ok, err = pcall(m.forward, m, io.sample:double(), 1, io.context:double(), { class_labels = T.tensor({ 1.5, 2 }) })
  assert(not ok and err:find("class_labels must be an integer tensor %[2 %(batch%)%] of 1%-based class ids"), err)
  assert(models.UNet2DConditionModel(cfg):num_parameters() == models.num_parameters("UNet2DConditionModel", cfg))
  local n = 0
  for _, t in pairs(sd) do n = n + t:numel() end
  assert(models.num_parameters("UNet2DConditionModel", cfg) == n)
end

tests["UNet class_embed_type timestep and simple_projection match diffusers"] = function()
  check_variant("unet_classts")
  check_variant("unet_classproj")
  for _, name in ipairs({ "unet_classts", "unet_classproj" }) do
    local sd, _, cfg = load_sd_case(name)
    local n = 0
    for _, t in pairs(sd) do n = n + t:numel() end
    assert(models.num_parameters("UNet2DConditionModel", cfg) == n, name)
  end
end

tests["UNet class_embed_type identity adds the vector itself to the time embedding"] = function()
  local cfg = { in_channels = 2, out_channels = 2, block_out_channels = { 8 }, down_block_types = { "DownBlock2D" },
    up_block_types = { "UpBlock2D" }, layers_per_block = 1, attention_head_dim = 2, cross_attention_dim = 6,
    norm_num_groups = 2, class_embed_type = "identity", dtype = "f64" }
  local m = models.UNet2DConditionModel(cfg)
  local plain = models.UNet2DConditionModel(cfg, { class_embed_type = json.null })
  plain:load_state_dict(m:state_dict(), true)
  local x, ctx = T.randn({ 2, 2, 4, 4 }, { dtype = "f64" }), T.randn({ 2, 3, 6 }, { dtype = "f64" })
  T.testing.assert_close(m(x, 10, ctx, { class_labels = T.zeros({ 2, 32 }, { dtype = "f64" }) }), plain(x, 10, ctx))
  assert(not m(x, 10, ctx, { class_labels = T.ones({ 2, 32 }, { dtype = "f64" }) }):allclose(plain(x, 10, ctx)))
end

-- stabilityai/stable-diffusion-2-1 unet/config.json, as published
local SD21_UNET_JSON = [[{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0", "act_fn": "silu",
  "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4, "sample_size": 96,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": true, "use_linear_projection": true
}]]

tests["SD 2.1's unet config resolves as it is: 865,910,724 parameters, as diffusers builds it"] = function()
  local cfg = json.decode(SD21_UNET_JSON)
  assert(models.num_parameters("UNet2DConditionModel", cfg) == 865910724)
  local c = models.resolve("UNet2DConditionModel", cfg)
  assert(c.attention_head_dim[4] == 20 and c.cross_attention_dim[1] == 1024 and c.upcast_attention)
end

tests["CLIPTextModel as SD 2.x's OpenCLIP encoder: gelu, padding with another token, every hidden state, clip skip"] = function()
  local sd, io, cfg = load_sd_case("text_sd2")
  local m = models.CLIPTextModel(cfg, { dtype = "f64" }):eval()
  m:load_state_dict(sd, true)
  local h, pooled, hidden = m(io.ids, { output_hidden_states = true })
  local tol = { rtol = 1e-6, atol = 1e-9 }
  T.testing.assert_close(h, io.last_hidden_state_f64, tol)
  T.testing.assert_close(pooled, io.pooled_f64, tol)
  assert(#hidden == cfg.num_hidden_layers + 1)
  for i, x in ipairs(hidden) do
    T.testing.assert_close(x, io["hidden." .. i], { rtol = F64.rtol, atol = F64.atol, msg = "hidden " .. i })
  end
  T.testing.assert_close(m.text_model.final_layer_norm(hidden[#hidden - 1]), io.clip_skip2, tol)
end

return tests
