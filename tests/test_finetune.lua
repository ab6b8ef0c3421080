-- test_finetune.lua: the pieces of fine-tuning. Aspect-ratio buckets; the zstd record cache;
-- the training set (preprocessing, cached latents and text embeddings against the encoders',
-- reuse and invalidation); models.Denoiser (coordinate channels, pooled text, latent and pixel
-- space, tocha.json extras); cross-attention maps; and experiments/finetune_sd.lua end to end
-- on tiny models: full and LoRA, mixed precision, buckets, TensorBoard tags, exact resume.
local T = require "tocha"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local image = require "tocha.image"
local json = require "tocha.json"
local text = require "tocha.text"
local D = require "tocha.diffusion"
local buckets = require "tocha.data.buckets"
local cache = require "tocha.data.cache"
local finetune = require "tocha.data.finetune"
local attention_maps = require "tocha.models.attention_maps"
local shapes = require "tocha.data.shapes"

local tests = {}
local raises = T.testing.raises

---------------------------------------------------------------------------------------------
-- fixtures: a folder of captioned images, tiny latent and pixel-space models
---------------------------------------------------------------------------------------------
-- n shapes images (side px), some cropped to other aspect ratios when `shapes_of` is given
local function write_folder(dir, n, side, crops)
  T._sys.mkdirs(dir)
  local ds = shapes { size = side, seed = 3, objects = 1, format = "u8" }
  local f = assert(io.open(dir .. "/metadata.jsonl", "w"))
  for i = 1, n do
    local s = ds[i]
    local img = s.image
    local c = crops and crops[(i - 1) % #crops + 1]
    if c then img = image.crop(img, 1, 1, c[2], c[1]) end
    local name = string.format("img-%03d.png", i)
    image.write(dir .. "/" .. name, img)
    f:write(json.encode { file_name = name, text = s.caption }, "\n")
  end
  f:close()
  return dir
end

local CAPTIONS = shapes.prompts { split = "all", objects = { 1 } }

local function tiny_parts(latent, dtype)
  T.manual_seed(21)
  local tok = text.train_bpe(CAPTIONS, 560, { max_length = 16 })
  local te = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = tok.vocab_size, max_position_embeddings = 16,
    hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1 })
  local unet_cfg = { sample_size = latent and 8 or 16, in_channels = latent and 4 or 5, out_channels = latent and 4 or 3,
    block_out_channels = { 16, 32 }, layers_per_block = 1, down_block_types = { "CrossAttnDownBlock2D", "DownBlock2D" },
    up_block_types = { "UpBlock2D", "CrossAttnUpBlock2D" }, cross_attention_dim = 32, attention_head_dim = { 2, 4 },
    norm_num_groups = 8 }
  if not latent then
    unet_cfg.class_embed_type, unet_cfg.projection_class_embeddings_input_dim = "projection", 32
  end
  local parts = { unet = models.UNet2DConditionModel(unet_cfg, { dtype = dtype }), text_encoder = te, tokenizer = tok,
    scheduler = D.DDIM { beta_schedule = "squaredcos_cap_v2", prediction_type = latent and "epsilon" or "v_prediction",
      clip_sample = false } }
  if latent then
    parts.vae = models.AutoencoderKL(models.presets.tiny_vae, { sample_size = 16, block_out_channels = { 8, 16 },
      norm_num_groups = 4 })
  else
    parts.extras = { coords = true, pooled_text = true, guidance_interval = { 100, 900 } }
  end
  for _, k in ipairs({ "unet", "vae", "text_encoder" }) do if parts[k] then parts[k]:eval() end end
  return parts
end

---------------------------------------------------------------------------------------------
-- buckets
---------------------------------------------------------------------------------------------
tests["buckets: sizes about the target area, nearest aspect ratio, one bucket per batch"] = function()
  local sizes = buckets.sizes { resolution = 512, step = 64, max_ratio = 2 }
  local square = false
  for i, s in ipairs(sizes) do
    local w, h = s[1], s[2]
    assert(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512, w .. "x" .. h)
    assert(math.max(w / h, h / w) <= 2 + 1e-9, w .. "x" .. h)
    assert(w * h >= 0.75 * 512 * 512, "as large as fits: " .. w .. "x" .. h)
    if i > 1 then assert(w / h > sizes[i - 1][1] / sizes[i - 1][2], "sorted by aspect ratio") end
    square = square or (w == 512 and h == 512)
  end
  assert(square and #sizes >= 5, #sizes .. " buckets")
  local function pick(w, h) local s = sizes[buckets.assign(sizes, w, h)]; return s[1] .. "x" .. s[2] end
  assert(pick(1000, 1000) == "512x512" and pick(400, 800) == "384x640" and pick(1600, 800) == "640x384",
    pick(400, 800) .. " " .. pick(1600, 800))
  -- batches: every sample once, each batch within one bucket, an order per (seed, epoch)
  local of = {}
  for i = 1, 23 do of[i] = i % 3 + 1 end
  local b0 = buckets.batches(of, 4, { seed = 5, epoch = 0 })
  local seen = {}
  for _, b in ipairs(b0) do
    assert(#b >= 1 and #b <= 4)
    for _, i in ipairs(b) do
      assert(of[i] == of[b[1]], "one bucket per batch")
      assert(not seen[i]); seen[i] = true
    end
  end
  for i = 1, 23 do assert(seen[i], "sample " .. i .. " missing") end
  local again, other = buckets.batches(of, 4, { seed = 5, epoch = 0 }), buckets.batches(of, 4, { seed = 5, epoch = 1 })
  assert(table.concat(b0[1], ",") == table.concat(again[1], ","), "deterministic")
  local differ = false
  for k = 1, #b0 do differ = differ or table.concat(b0[k], ",") ~= table.concat(other[k], ",") end
  assert(differ, "another epoch, another order")
  assert(#buckets.batches(of, 4, { drop_last = true }) == 5, "7 + 8 + 8 samples: 1 + 2 + 2 full batches")
  raises("step must be a positive integer dividing the resolution", buckets.sizes, { resolution = 100, step = 64 })
end

tests["buckets.fit: resized to cover, then cropped in the middle"] = function()
  local img = (T.rand({ 30, 50, 3 }) * 255):to("u8")
  local out, top, left = buckets.fit(img, 24, 16)
  assert(T.testing.shape_is(out, { 16, 24, 3 }))
  -- 50x30 -> scale max(24/50, 16/30) = 0.533: 27x16, crop 1 column from the left
  local resized = image.resize(img, { 16, 27 })
  assert(top == 0 and left == 1, top .. "," .. left)
  T.testing.assert_close(out, image.crop(resized, 1, 2, 16, 24), { rtol = 0, atol = 0 })
end

---------------------------------------------------------------------------------------------
-- the cache
---------------------------------------------------------------------------------------------
tests["cache: records round-trip bit for bit; a wrong key, a missing index: no cache"] = function()
  local dir = T.testing.tmpdir() .. "/c"
  T.manual_seed(2)
  local recs = {}
  for i = 1, 7 do
    recs[i] = { a = T.randn({ 3, i % 2 + 1, 2 }), b = T.randint(0, 9, { 4 }, { dtype = "i64" }), h = T.randn({ 5 }):to("bf16") }
  end
  local key = cache.key { model = "x", size = 32, list = { 1, 2 } }
  assert(key == cache.key { size = 32, list = { 1, 2 }, model = "x" } and key ~= cache.key { model = "x", size = 32.5, list = { 1, 2 } })
  local c = cache.write(dir, key, 7, function(i) return { tensors = recs[i], meta = { n = i, name = "r" .. i } } end,
    { shard_size = 200 })
  assert(#c == 7)
  local reopened = cache.open(dir, key)
  for i = 1, 7 do
    local r = reopened:get(i)
    assert(r.meta.n == i and r.meta.name == "r" .. i)
    for k, t in pairs(recs[i]) do
      assert(r[k].dtype == t.dtype and T.testing.shape_is(r[k], t.shape), k)
      T.testing.assert_close(r[k]:to("f64"), t:to("f64"), { rtol = 0, atol = 0 })
    end
  end
  local shards = 0
  for _, n in ipairs(T._sys.listdir(dir)) do if n:match("^shard%-") then shards = shards + 1 end end
  assert(shards > 1, "small shards: " .. shards)
  assert(cache.open(dir, "another") == nil)
  os.remove(dir .. "/index.jsonl")
  assert(cache.open(dir, key) == nil)
  raises("out of range", reopened.get, reopened, 8)
  local fp = cache.fingerprint(models.CLIPTextModel(models.presets.tiny_text, { num_hidden_layers = 1 }))
  assert(fp ~= cache.fingerprint(models.CLIPTextModel(models.presets.tiny_text, { num_hidden_layers = 1 })),
    "differently drawn weights, another fingerprint")
end

---------------------------------------------------------------------------------------------
-- the training set
---------------------------------------------------------------------------------------------
tests["training set: preprocessing, cached latents and embeddings equal the encoders', reused, redone"] = function()
  local root = T.testing.tmpdir()
  local dir = write_folder(root .. "/data", 6, 24)
  local parts = tiny_parts(true)
  local d = models.Denoiser(parts)
  local set = finetune.new { data = dir, resolution = 16, center_crop = true, random_flip = true }
  assert(#set == 6 and set.captions[2]:match("^an? "))
  local img = set:image(3, false)
  local want = image.to_float(image.center_crop(image.resize(set.ds:get(3).image, 16), 16))
  T.testing.assert_close(img, want, { rtol = 0, atol = 0 })
  T.testing.assert_close(set:image(3, true), want:index_select(3, T.arange(16, 0, -1, { dtype = "i64" })),
    { rtol = 0, atol = 0 })
  local logs = {}
  local c = set:build_cache(d, { log = function(s) logs[#logs + 1] = s end })
  assert(#c.images == 6 and #c.texts >= 2, #c.texts)
  local rec = c.images:get(3)
  local mean, std = d:encode_images(set:image(3, true):unsqueeze(1))
  -- (the cache encodes in batches, here one at a time: f32 sums may round differently)
  T.testing.assert_close(rec.mean_flip, mean[1], { rtol = 1e-5, atol = 1e-6 })
  T.testing.assert_close(rec.std_flip, std[1], { rtol = 1e-5, atol = 1e-6 })
  local states = d:encode_prompts({ set.captions[3] })
  T.testing.assert_close(c.texts:get(rec.meta.caption).states, states[1], { rtol = 1e-5, atol = 1e-6 })
  assert(c.texts:get(1).meta.text == "", "the empty caption, for dropout")
  -- a batch: latents drawn from the cached posterior, captions dropped with probability 1
  local b = set:batch({ 1, 2, 3 }, d, { caption_dropout = 1 })
  assert(T.testing.shape_is(b.x0, { 3, 4, 8, 8 }) and b.captions[1] == "")
  T.testing.assert_close(b.states, d:encode_prompts({ "", "", "" }), { rtol = 1e-5, atol = 1e-6 })
  -- opened again: reused; another setting or other weights: computed afresh
  local again = finetune.new { data = dir, resolution = 16, center_crop = true, random_flip = true }
  again:build_cache(d, { log = function(s) logs[#logs + 1] = s end })
  assert(logs[#logs]:find("reusing", 1, true), logs[#logs])
  assert(again.cached.dir == c.dir)
  local other = finetune.new { data = dir, resolution = 16, center_crop = true }
  other:build_cache(d, {})
  assert(other.cached.dir ~= c.dir)
  T.no_grad(function() parts.vae.encoder.conv_in.weight:add_(0.01) end)
  local changed = finetune.new { data = dir, resolution = 16, center_crop = true, random_flip = true }
  changed:build_cache(d, {})
  assert(changed.cached.dir ~= c.dir, "new VAE weights, new cache")
  write_folder(root .. "/nocap", 1, 16)
  os.remove(root .. "/nocap/metadata.jsonl")
  raises("has no captions", finetune.new, { data = root .. "/nocap", resolution = 16 })
  raises("holds no images", finetune.new, { data = T.testing.tmpdir(), resolution = 16 })
end

tests["training set with buckets: each batch one size, cached per bucket"] = function()
  local root = T.testing.tmpdir()
  local dir = write_folder(root .. "/data", 9, 32, { { 32, 16 }, { 16, 32 }, { 32, 32 } })
  local d = models.Denoiser(tiny_parts(true))
  local set = finetune.new { data = dir, resolution = 32, buckets = true, bucket_step = 8 } -- 40x24, 32x32, 24x40
  set:build_cache(d, {})
  for _, idx in ipairs(set:batches(3, 0)) do
    local w, h = set:size_of(idx[1])
    local b = set:batch(idx, d)
    assert(T.testing.shape_is(b.x0, { #idx, 4, h // 2, w // 2 }), w .. "x" .. h)
  end
  local w1, h1 = set:size_of(1)
  local w2, h2 = set:size_of(2)
  assert(w1 > h1 and w2 < h2, string.format("%dx%d, %dx%d", w1, h1, w2, h2))
end

---------------------------------------------------------------------------------------------
-- the denoiser
---------------------------------------------------------------------------------------------
tests["Denoiser: coordinate channels and pooled text as the default experiment feeds them"] = function()
  local parts = tiny_parts(false)
  local d = models.Denoiser(parts)
  assert(not d.latent and d.channels == 3 and d.factor == 1 and d.size == 16)
  T.manual_seed(3)
  local x, t = T.randn({ 2, 3, 16, 16 }), T.tensor({ 5, 600 }, { dtype = "i64" })
  local ids = parts.tokenizer:encode({ "a small red circle on the left", "a big blue star at the top" }).input_ids
  local states, pooled = parts.text_encoder(ids)
  local xy = T.stack({ T.linspace(-1, 1, 16):reshape(1, 16):expand(16, 16), T.linspace(-1, 1, 16):reshape(16, 1):expand(16, 16) }, 1)
  local want = parts.unet(T.cat({ x, xy:unsqueeze(1):expand(2, 2, 16, 16) }, 2), t, states, { class_labels = pooled })
  local s, added = d:encode_text(ids)
  T.testing.assert_close(d:denoise(x, t, s, added), want, { rtol = 0, atol = 0 })
  -- sampling: D.sample with the same model and the model's guidance interval
  local prompts = { "a small red circle on the left" }
  local got = d:sample { prompts = prompts, steps = 3, seed = 4 }
  local z = D.sample { model = function(...) return d:denoise(...) end, text_encoder = function(i) return d:encode_text(i) end,
    tokenizer = parts.tokenizer, scheduler = D.samplers.by_name("ddim", parts.scheduler), prompts = prompts, steps = 3,
    seed = 4, height = 16, width = 16, channels = 3, guidance_interval = { 100, 900 } }
  T.testing.assert_close(got, z:clamp(-1, 1), { rtol = 0, atol = 0 })
  -- the extras survive save_pretrained / models.load
  local dir = T.testing.tmpdir() .. "/model"
  models.save_pretrained(dir, parts)
  local back = models.load(dir)
  assert(back.extras.coords == true and back.extras.pooled_text == true and back.extras.guidance_interval[2] == 900)
  T.testing.assert_close(models.Denoiser(back):sample { prompts = prompts, steps = 3, seed = 4 }, got, { rtol = 1e-6, atol = 1e-6 })
  raises("unknown extra 'colour'", models.Denoiser, { unet = parts.unet, text_encoder = parts.text_encoder,
    tokenizer = parts.tokenizer, extras = { colour = true } })
end

tests["Denoiser: a tocha run's TextToImage as its parts; tocha sample draws a pixel-space folder"] = function()
  local parts = tiny_parts(false)
  local m = models.TextToImage { text_encoder = parts.text_encoder, unet = parts.unet, tokenizer = parts.tokenizer,
    noise = { beta_schedule = "squaredcos_cap_v2", prediction_type = "v_prediction" }, coords = true, pooled_text = true,
    sampling = { sampler = "ddim", options = { ddim = { clip_sample = false } }, guidance_interval = { 100, 900 } } }
  local p = models.Denoiser.parts(m)
  assert(p.unet == parts.unet and p.extras.coords and p.extras.pooled_text and p.extras.guidance_interval[1] == 100)
  assert(models.Denoiser.parts(parts) == parts, "a parts table stays as it is")
  local prompts = { "a small red circle on the left" }
  local want = m:sample { prompts = prompts, steps = 3, seed = 4, guidance_scale = 7.5 }
  T.testing.assert_close(models.Denoiser(m):sample { prompts = prompts, steps = 3, seed = 4 }, want, { rtol = 0, atol = 1e-6 })
  -- the same model as a diffusers folder: tocha sample draws it in pixel space
  local dir = T.testing.tmpdir()
  models.save_pretrained(dir .. "/model", parts)
  local sink = { write = function(self) return self end, flush = function() end }
  assert(require("tocha.cli.sample")({ dir .. "/model", "--prompt", prompts[1], "--steps", "3", "--seed", "4",
    "--sampler", "ddim", "--out", dir .. "/out", "--quiet" }, sink, sink) == 0)
  local got = image.read(dir .. "/out/00000-4.png")
  local d = models.Denoiser(models.load(dir .. "/model"))
  local img = d:sample { prompts = prompts, steps = 3, seed = 4 }
  T.testing.assert_close(got:to("f32") / 255, ((img[1] + 1) / 2):permute(2, 3, 1), { rtol = 0, atol = 1.01 / 255 })
  raises("expected a TextToImage or a parts table", models.Denoiser.parts, 3)
end

tests["Denoiser: a latent model encodes through the VAE (scaled) and decodes back"] = function()
  local parts = tiny_parts(true)
  local d = models.Denoiser(parts)
  assert(d.latent and d.channels == 4 and d.factor == 2 and d.size == 16)
  local x = T.rand({ 1, 3, 16, 16 }) * 2 - 1
  local mean, std = d:encode_images(x)
  local post = parts.vae:encode(x)
  T.testing.assert_close(mean, post.mean * parts.vae.scaling_factor, { rtol = 1e-6, atol = 1e-7 })
  T.testing.assert_close(std, post.std * parts.vae.scaling_factor, { rtol = 1e-6, atol = 1e-7 })
  T.testing.assert_close(d:decode(mean), parts.vae:decode(post.mean), { rtol = 1e-5, atol = 1e-5 })
  local img = d:sample { prompts = { "a big red star on the right" }, steps = 2, seed = 1 }
  assert(T.testing.shape_is(img, { 1, 3, 16, 16 }))
end

---------------------------------------------------------------------------------------------
-- attention maps
---------------------------------------------------------------------------------------------
tests["attention maps: per token, the probabilities over tokens sum to 1; the figure; unhooked on close"] = function()
  local parts = tiny_parts(false)
  local d = models.Denoiser(parts)
  local prompts = { "a small red circle on the left", "a big green square at the top" }
  local rec = attention_maps.record(parts.unet, { batch = 2, height = 16, width = 16 })
  local images = d:sample { prompts = prompts, steps = 2, seed = 1 }
  local maps = rec:result()
  assert(T.testing.shape_is(maps, { 2, 16, 16, 16 }))
  T.testing.assert_close(maps:sum(2), T.ones({ 2, 16, 16 }), { rtol = 1e-5, atol = 1e-5 })
  rec:close()
  for name, m in parts.unet:named_modules() do
    if name:match("attn2$") then assert(rawget(m, "forward") == nil, "still hooked: " .. name) end
  end
  local toks = attention_maps.tokens(parts.tokenizer, prompts[1])
  assert(#toks >= 7 and toks[1].position == 2)
  local words = {}
  for _, t in ipairs(toks) do words[#words + 1] = t.text end
  assert(table.concat(words, ""):gsub(" ", "") == prompts[1]:gsub(" ", ""), table.concat(words, "|"))
  local fig = attention_maps.figure(images, maps, { toks, attention_maps.tokens(parts.tokenizer, prompts[2]) }, { scale = 2 })
  assert(fig.dtype == "u8" and fig.shape[3] == 3 and fig.shape[2] >= (#toks + 1) * 32 and fig.shape[1] >= 2 * 32)
  raises("no cross%-attention", attention_maps.record, models.CLIPTextModel(models.presets.tiny_text, {}),
    { batch = 1, height = 8, width = 8 })
end

---------------------------------------------------------------------------------------------
-- experiments/finetune_sd.lua end to end
---------------------------------------------------------------------------------------------
local function script(args, env)
  local out, rc = T.testing.tocha("experiments/finetune_sd.lua " .. args, "OMP_NUM_THREADS=1 " .. (env or "") .. " ")
  return out, rc
end

local function run_dir(out) return out:match("run: (%S+)") end

tests["finetune_sd.lua: --help lists every option; bad combinations fail with the option's name"] = function()
  local out, rc = script("--help")
  assert(rc == 0, out)
  for _, o in ipairs({ "model", "data", "resolution", "center_crop", "random_flip", "batch", "accumulation", "epochs",
    "max_steps", "lr", "scale_lr", "lr_scheduler", "warmup", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay",
    "ema", "ema_decay", "ema_offload", "snr_gamma", "noise_offset", "input_perturbation", "prediction_type",
    "mixed_precision", "gradient_checkpointing", "max_grad_norm", "train_text_encoder", "checkpoint_every",
    "checkpoints_total_limit", "resume", "validation_prompts", "validation_every", "seed", "caption_dropout", "recipe",
    "no_cache", "buckets", "log_attention", "lora", "prior_data", "prior_prompts", "prior_loss_weight", "eval_prompts",
    "eval_images", "eval_real", "eval_model", "inception_weights", "trainable" }) do
    assert(out:find("--" .. o .. "[ ,]"), "--help lacks --" .. o)
  end
  assert(out:find("cosine_with_restarts", 1, true) and out:find("no, fp16, bf16", 1, true))
  local tmp = T.testing.tmpdir()
  out, rc = script("--data x", "TOCHA_RUNS=" .. tmp)
  assert(rc == 2 and out:find("give the model to fine%-tune"), out)
  out, rc = script("--model x --data y --train_text_encoder", "TOCHA_RUNS=" .. tmp)
  assert(rc == 2 and out:find("needs %-%-no_cache"), out)
  out, rc = script("--model x --data y --mixed_precision fp8", "TOCHA_RUNS=" .. tmp)
  assert(rc == 2 and out:find("must be one of no, fp16, bf16"), out)
end

tests["finetune_sd.lua: a pixel-space model, full fine-tune in bf16, validation, attention maps, a diffusers folder"] = function()
  local root = T.testing.tmpdir()
  local data = write_folder(root .. "/data", 8, 16)
  local parts = tiny_parts(false)
  models.save_pretrained(root .. "/base", parts)
  local out, rc = script(string.format("--model %s/base --data %s --max_steps 3 --batch 4 --random_flip "
    .. "--validation_prompts 'a small red circle on the left' --validation_every 2 --validation_steps 2 --log_attention "
    .. "--log_every 1 --mixed_precision bf16 --ema --ema_decay 0.9 --snr_gamma 5 --noise_offset 0.05 "
    .. "--input_perturbation 0.1 --caption_dropout 0.2 --lr_scheduler cosine --warmup 1 --threads 1", root, data),
    "TOCHA_RUNS=" .. root .. "/runs")
  assert(rc == 0, out)
  local dir = run_dir(out)
  local ev = require("tocha.log").read_events(dir)
  for _, tag in ipairs({ "train/loss", "train/lr", "train/grad_norm", "train/images_per_second", "train/loss_scale",
    "train/skipped_steps" }) do
    assert(ev.scalars[tag] and #ev.scalars[tag] >= 3, "scalar " .. tag) -- (finish adds the run's totals)
  end
  assert(ev.scalars["train/loss_scale"][1].value == 1, "bf16 needs no loss scale")
  local steps = {}
  for _, im in ipairs(ev.images.validation) do steps[#steps + 1] = im.step end
  assert(table.concat(steps, ",") == "0,2,3", table.concat(steps, ","))
  assert(#ev.images.attention == 3)
  assert(T._sys.isdir(dir .. "/validation"))
  local back = models.load(dir .. "/model")
  assert(back.extras.coords and back.extras.pooled_text and not back.vae)
  local changed = false
  for name, p in back.unet:named_parameters() do
    if (p - parts.unet:state_dict()[name]):abs():max():item() > 0 then changed = true end
  end
  assert(changed, "the UNet trained")
  T.testing.assert_close(back.text_encoder.text_model.embeddings.token_embedding.weight,
    parts.text_encoder.text_model.embeddings.token_embedding.weight, { rtol = 0, atol = 0, msg = "the text encoder is frozen" })
end

tests["finetune_sd.lua: --trainable trains the matching UNet modules only; no match, or with --lora, is an error"] = function()
  local root = T.testing.tmpdir()
  local data = write_folder(root .. "/data", 8, 16)
  local parts = tiny_parts(false)
  models.save_pretrained(root .. "/base", parts)
  local base = string.format("--model %s/base --data %s --max_steps 2 --batch 4 --validation_every 0 --checkpoint_every 0 "
    .. "--threads 1", root, data)
  local env = "TOCHA_RUNS=" .. root .. "/runs"
  local out, rc = script(base .. " --trainable attn2.to_k,class_embedding.linear_1 --lr 1e-3", env)
  assert(rc == 0, out)
  assert(out:find("UNet: attn2.to_k,class_embedding.linear_1", 1, true), out)
  local back, before = models.load(run_dir(out) .. "/model"), parts.unet:state_dict()
  local n_changed = 0
  for name, p in back.unet:named_parameters() do
    local changed = (p - before[name]):abs():max():item() > 0
    local wanted = name:find("attn2%.to_k%.") ~= nil or name:find("^class_embedding%.linear_1%.") ~= nil
    assert(changed == wanted, name .. (changed and " trained" or " did not train"))
    if changed then n_changed = n_changed + 1 end
  end
  assert(n_changed >= 3, "too few trained: " .. n_changed)
  out, rc = script(base .. " --trainable no_such_layer", env)
  assert(rc == 2 and out:find("--trainable: no UNet module matches no_such_layer", 1, true), out)
  out, rc = script(base .. " --trainable to_k --lora 2", env)
  assert(rc == 2 and out:find("with --lora, --lora_targets does", 1, true), out)
end

tests["finetune_sd.lua: a latent model, LoRA in fp16 with loss scaling and buckets; resume gives the uninterrupted run"] = function()
  local root = T.testing.tmpdir()
  local data = write_folder(root .. "/data", 8, 32, { { 32, 24 }, { 24, 32 } })
  models.save_pretrained(root .. "/base", tiny_parts(true))
  local common = string.format("--model %s/base --data %s --resolution 32 --buckets --bucket_step 8 --batch 2 --lora 2 "
    .. "--mixed_precision fp16 --max_steps 4 --validation_every 0 --threads 1 --seed 3 --lr 1e-3", root, data)
  local env = "TOCHA_RUNS=" .. root .. "/runs"
  local out, rc = script(common .. " --checkpoint_every 2 --out " .. root .. "/full", env)
  assert(rc == 0, out)
  assert(out:find("latent model") and out:find("LoRA rank 2"), out)
  local ev = require("tocha.log").read_events(run_dir(out))
  assert(ev.scalars["train/loss_scale"][1].value == 65536, "fp16 scales the loss")
  local first = T.load(root .. "/full/pytorch_lora_weights.safetensors")
  local ck = run_dir(out) .. "/checkpoints"
  assert(T._sys.isdir(ck .. "/step-2") and T._sys.isdir(ck .. "/step-4"))
  -- the same run from its step-2 checkpoint
  out, rc = script(common .. " --resume " .. ck .. "/step-2 --out " .. root .. "/resumed", env)
  assert(rc == 0, out)
  assert(out:find("resumed from .-step%-2 at step 2"), out)
  local second = T.load(root .. "/resumed/pytorch_lora_weights.safetensors")
  for k, t in pairs(first) do T.testing.assert_close(second[k], t, { rtol = 0, atol = 0, msg = k }) end
  -- the file is one diffusers reads: PEFT names under unet.
  local n = 0
  for k in pairs(first) do assert(k:match("^unet%..-%.lora_[AB]%.weight$"), k); n = n + 1 end
  assert(n > 0)
end

tests["finetune_sd.lua: the seed's evaluation: FID of the eval prompts' images before and after, against held-out images"] = function()
  local root = T.testing.tmpdir()
  local data = write_folder(root .. "/data", 4, 16)
  local real = write_folder(root .. "/real", 70, 16) -- more images than the shapes features' 64 dims
  models.save_pretrained(root .. "/base", tiny_parts(false))
  local prompts = root .. "/prompts.txt"
  T.testing.write_file(prompts, "a small red circle on the left\na big blue square at the top\n")
  local env = "TOCHA_RUNS=" .. root .. "/runs"
  local args = string.format("--model %s/base --data %s --max_steps 2 --batch 2 --validation_steps 2 --threads 1 "
    .. "--lr 1e-2 --eval_prompts %s --eval_images 66 --eval_real %s --eval_model shapes", root, data, prompts, real)
  local out, rc = script(args, env)
  assert(rc == 0, out)
  local before = tonumber(out:match("FID before fine%-tuning: ([%d%.]+) %(66 images of 2 prompts"))
  local after = tonumber(out:match("FID after fine%-tuning: ([%d%.]+)"))
  assert(before and after and before > 0 and after > 0 and before ~= after, out)
  local dir = run_dir(out)
  assert(T.testing.shape_is(image.read(dir .. "/eval/before/0066.png"), { 16, 16, 3 }))
  assert(T.testing.shape_is(image.read(dir .. "/eval/after/0001.png"), { 16, 16, 3 }))
  -- the same FID from the saved images, as tocha eval would measure them
  local again = require("tocha.eval").fid(real, dir .. "/eval/before", { model = "shapes", cache = false })
  assert(math.abs(again - before) < 0.05 * before + 1e-3, again .. " vs " .. before)
  local ev = require("tocha.log").read_events(dir)
  local fid = ev.scalars["eval/fid"]
  assert(fid and fid[1].step == 0 and fid[#fid].step == 2, "eval/fid logged at the start and the end")
  -- bad combinations name the option
  out, rc = script(string.format("--model %s/base --data %s --eval_prompts %s", root, data, prompts), env)
  assert(rc == 2 and out:find("give %-%-eval_real"), out)
  out, rc = script(string.format("--model %s/base --data %s --eval_prompts %s --eval_real %s", root, data, prompts, real), env)
  assert(rc == 2 and out:find("needs %-%-inception_weights"), out)
  out, rc = script(string.format("--model %s/base --data %s --eval_prompts %s/none.txt --eval_real %s", root, data, root, real), env)
  assert(rc == 2 and out:find("cannot read"), out)
end

tests["finetune_sd.lua: prior preservation draws the model's own images once, then trains on both"] = function()
  local root = T.testing.tmpdir()
  local data = write_folder(root .. "/data", 6, 16)
  models.save_pretrained(root .. "/base", tiny_parts(false))
  local prompts = root .. "/prompts.txt"
  T.testing.write_file(prompts, "a small red circle on the left\na big blue square at the top\n")
  local args = string.format("--model %s/base --data %s --max_steps 2 --batch 3 --prior_data %s/prior --prior_prompts %s "
    .. "--prior_images 5 --validation_steps 2 --threads 1 --lr 1e-3", root, data, root, prompts)
  local out, rc = script(args, "TOCHA_RUNS=" .. root .. "/runs")
  assert(rc == 0, out)
  assert(out:find("drawing 5 prior images"), out)
  local meta = T.testing.read_file(root .. "/prior/metadata.jsonl")
  local n = 0
  for line in meta:gmatch("[^\n]+") do
    n = n + 1
    local row = json.decode(line)
    assert(row.text == (n % 2 == 1 and "a small red circle on the left" or "a big blue square at the top"), line)
  end
  assert(n == 5 and T.testing.shape_is(image.read(root .. "/prior/0003.png"), { 16, 16, 3 }))
  -- the images per step count both sets: 3 new and 3 prior
  local ev = require("tocha.log").read_events(run_dir(out))
  assert(ev.scalars["train/images_per_second"], "logged")
  out, rc = script(args, "TOCHA_RUNS=" .. root .. "/runs")
  assert(rc == 0 and not out:find("drawing"), "drawn once: " .. out)
  out, rc = script(string.format("--model %s/base --data %s --prior_data %s/none --max_steps 1", root, data, root),
    "TOCHA_RUNS=" .. root .. "/runs")
  assert(rc == 2 and out:find("holds no images; give %-%-prior_prompts"), out)
end

tests["finetune_demo.lua: both fine-tunes side by side on a tiny base, graded; the base's grades kept and reused"] = function()
  local root = T.testing.tmpdir()
  models.save_pretrained(root .. "/base", tiny_parts(false))
  local args = string.format("experiments/finetune_demo.lua --out %s/out --base %s/base --images 8 --batch 4 --epochs 1 "
    .. "--eval_new 3 --eval_old 3 --prior_images 4 --sample_steps 2", root, root)
  local env = "OMP_NUM_THREADS=1 TOCHA_RUNS=" .. root .. "/runs "
  local out, rc = T.testing.tocha(args .. " --threads 2", env)
  assert(rc == 0, out)
  assert(out:find("fine%-tuning full and lora side by side, 1 thread%(s%) each"), out)
  assert(out:find("the base drew 4 prior images"), out)
  local res = T.testing.read_file(root .. "/out/results.md")
  for _, name in ipairs({ "base", "full", "lora" }) do assert(res:find("\n| " .. name .. " | "), res) end
  for _, f in ipairs({ "full.log", "lora.log", "full.seconds", "lora.seconds", "grid.png", "base-graded.json",
    "base-graded-grid.safetensors", "lora/pytorch_lora_weights.safetensors", "full/model_index.json" }) do
    assert(io.open(root .. "/out/" .. f), f)
  end
  local kept = T.testing.read_file(root .. "/out/base-graded.json")
  -- again, LoRA alone in another folder: the base's grades come from the file, the prior images are not drawn again
  out, rc = T.testing.tocha(args .. " --threads 1 --methods lora --work " .. root .. "/again", env)
  assert(rc == 0, out)
  assert(not out:find("drew") and not out:find("side by side"), out)
  assert(T.testing.read_file(root .. "/again/results.md"):find("\n| base | " .. res:match("\n| base | ([^\n]+)"), 1, true))
  assert(T.testing.read_file(root .. "/out/base-graded.json") == kept)
  -- the lr search's sweep names a metric the demo reports, for both methods
  T.testing.write_file(root .. "/metric.lua", 'print(assert(require("tocha.sweep").load("experiments/finetune_sweep.lua")).metric)')
  for method, kind in pairs({ lora = "lora", lora2 = "lora", full = "full", full2 = "full", full3 = "full", full4 = "full" }) do
    out, rc = T.testing.tocha(root .. "/metric.lua", "FINETUNE_SWEEP=" .. method .. " ")
    assert(rc == 0 and out:find("eval/" .. kind .. "_score", 1, true), out)
  end
  out, rc = T.testing.tocha(root .. "/metric.lua", "FINETUNE_SWEEP=half ")
  assert(rc ~= 0 and out:find("FINETUNE_SWEEP must be lora, lora2, full, full2, full3 or full4, not half", 1, true), out)
end

return tests
