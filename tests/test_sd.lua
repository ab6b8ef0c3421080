-- tests/test_sd.lua: Stable Diffusion end to end: models.load on a diffusers folder that
-- diffusers saved (tests/ref/sd_pipe: sharded UNet, fp16 VAE variant, tokenizer.json),
-- D.StableDiffusion against StableDiffusionPipeline's images from the same latents (tests/ref/
-- gen_sd.py), save_pretrained round trips, PNDM, the sampler registry, and loading errors.
local T = require "tocha"
local raises = T.testing.raises
local json = require "tocha.json"
local models = require "tocha.models"
local D = require "tocha.diffusion"

local PIPE = T.testing.path("ref/sd_pipe")
local PROMPTS = { "a small red circle on the left", "a big blue square above a green triangle" }
local NEGATIVES = { "a yellow star", "" }
local tests = {}

local function io_ref() return T.load(T.testing.path("ref/sd_pipe_io.safetensors")) end

-- a fresh temporary directory, removed by the returned function
local function tmpdir()
  local d = T.testing.tmpdir()
  return d, function() os.execute("rm -rf '" .. d .. "'") end
end

local function copy_tree(from, to) assert(os.execute(string.format("cp -r '%s' '%s'", from, to))) end

local function max_rel(a, b)
  return ((a - b):abs():max() / b:abs():max()):item()
end

---------------------------------------------------------------------------
-- loading a diffusers folder
---------------------------------------------------------------------------
tests["models.load reads a diffusers folder: sharded unet, vae, text encoder, tokenizer.json, scheduler"] = function()
  local parts = models.load(PIPE)
  assert(parts.format == "diffusers" and parts.path == PIPE)
  assert(parts.unet.config.cross_attention_dim[1] == 32 and parts.vae.config.block_out_channels[2] == 16)
  assert(parts.text_encoder.config.vocab_size == 629 and parts.tokenizer.max_length == 16)
  assert(D.samplers.kind(parts.scheduler) == "ddim" and parts.scheduler.config.steps_offset == 1)
  assert(not parts.unet.training, "loaded models are in eval mode")
  for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
    for k, p in parts[name]:named_parameters() do
      assert(p.dtype == "f32" and p.requires_grad, name .. "." .. k)
    end
  end
  local ids = parts.tokenizer:encode(PROMPTS).input_ids
  T.testing.assert_close(ids, io_ref().ids)
  -- only some parts, in another dtype
  local some = models.load(PIPE, { parts = { "unet", "scheduler" }, dtype = "f64" })
  assert(some.unet and some.scheduler and not some.vae and not some.text_encoder)
  assert(some.unet.conv_in.weight.dtype == "f64")
  T.testing.assert_close(some.unet.conv_in.weight, parts.unet.conv_in.weight:double())
end

tests["weights in the dtype asked for are the mapped file's memory; fp16 variants load by option"] = function()
  local f32 = models.load(PIPE, { parts = { "vae" } }).vae
  local f16 = models.load(PIPE, { parts = { "vae" }, variant = "fp16", dtype = "f16" }).vae
  local file = T.load(PIPE .. "/vae/diffusion_pytorch_model.fp16.safetensors")
  for k, p in f16:named_parameters() do
    assert(p.dtype == "f16", k)
    T.testing.assert_close(p, file[k], { rtol = 0, atol = 0, msg = k })
  end
  -- the fp16 file rounded the f32 weights: loaded as f32 from it, they are close but not equal
  local up = models.load(PIPE, { parts = { "vae" }, variant = "fp16" }).vae
  local w32, w16 = f32.encoder.conv_in.weight, up.encoder.conv_in.weight
  assert(w16.dtype == "f32" and not w16:allclose(w32, 0, 0) and w16:allclose(w32, 1e-3, 1e-3))
  -- a model built under nn.init.skip writes no weight
  local init = require("tocha.nn").init
  local lin = init.skip(function() return require("tocha.nn").Linear(3, 2) end)
  local ones = T.ones({ 2, 3 })
  T.no_grad(function() lin.weight:copy_(ones) end)
  init.skip(init.normal_, lin.weight)
  T.testing.assert_close(lin.weight, ones)
  init.normal_(lin.weight)
  assert(not lin.weight:allclose(ones))
end

---------------------------------------------------------------------------
-- the pipeline against diffusers
---------------------------------------------------------------------------
tests["StableDiffusion equals StableDiffusionPipeline: DDIM 10 steps, guidance 7.5, same latents (1e-4)"] = function()
  local io = io_ref()
  local pipe = D.StableDiffusion(models.load(PIPE))
  T.testing.assert_close(pipe:encode_prompt(PROMPTS), io.prompt_embeds, { rtol = 1e-5, atol = 1e-5 })
  T.testing.assert_close(pipe:encode_prompt(NEGATIVES), io.negative_prompt_embeds, { rtol = 1e-5, atol = 1e-5 })
  local steps = 0
  local images, latents = pipe:sample { prompts = PROMPTS, negative_prompts = NEGATIVES, steps = 10,
    guidance_scale = 7.5, latents = io.latents, height = 16, width = 16,
    callback = function(s) steps = steps + 1; assert(s.step == steps and s.steps == 10 and s.latents) end }
  assert(steps == 10)
  assert(images.shape[1] == 2 and images.shape[2] == 3 and images.shape[3] == 16 and images.dtype == "f32")
  local rl, ri = max_rel(latents, io.final_latents), max_rel(images, io.images)
  assert(rl < 1e-4, "latents differ by " .. rl)
  assert(ri < 1e-4, "images differ by " .. ri)
  assert(images:min():item() >= 0 and images:max():item() <= 1)
end

tests["StableDiffusion: clip skip, images per prompt, seeds, callbacks that stop, samplers by name"] = function()
  local io = io_ref()
  local pipe = D.StableDiffusion(models.load(PIPE))
  T.testing.assert_close(pipe:encode_prompt(PROMPTS, { clip_skip = 1 }), io.prompt_embeds_clip_skip1,
    { rtol = 1e-5, atol = 1e-5 })
  raises("clip_skip must be an integer below the 2 layers", pipe.encode_prompt, pipe, PROMPTS, { clip_skip = 2 })
  local o = { prompts = { PROMPTS[1] }, steps = 3, seed = 7, height = 8, width = 16, batch = 2 }
  local before = T.randn({ 1 })
  T.manual_seed(0)
  local a = pipe:sample(o)
  local after_a = T.randn({ 1 })
  T.manual_seed(0)
  local b = pipe:sample(o)
  assert(a.shape[1] == 2 and a.shape[3] == 8 and a.shape[4] == 16)
  T.testing.assert_close(a, b, { rtol = 0, atol = 0 })
  T.manual_seed(0)
  T.testing.assert_close(T.randn({ 1 }), after_a, { rtol = 0, atol = 0, msg = "the caller's stream is left as it was" })
  assert(before)
  assert(not a[1]:allclose(a[2], 1e-3, 1e-3), "two images of one prompt start from different latents")
  -- stopping after the first step; guidance 1 runs the conditional pass alone
  local n = 0
  pipe:sample { prompts = PROMPTS, steps = 5, guidance_scale = 1, height = 8, width = 8,
    callback = function() n = n + 1; return false end }
  assert(n == 1)
  for _, name in ipairs({ "euler", "euler_a", "dpmpp2m", "dpmpp2m_karras", "pndm", "unipc", "heun", "ddpm" }) do
    local img = pipe:sample { prompts = PROMPTS[2], steps = 4, seed = 1, height = 8, width = 8, sampler = name }
    assert(img:isfinite():logical_not():sum():item() == 0, name)
  end
  raises("height and width must be multiples of 2, got 9x8", pipe.sample, pipe, { prompts = "x", height = 9, width = 8 })
  raises("latents must be %[2 x 4 x 8 x 8%]", pipe.sample, pipe, { prompts = PROMPTS, height = 16, width = 16,
    latents = T.randn({ 1, 4, 8, 8 }) })
  raises("unknown sampler 'lms'", pipe.sample, pipe, { prompts = "x", sampler = "lms" })
  raises("missing part 'vae'", D.StableDiffusion, { unet = pipe.unet })
end

---------------------------------------------------------------------------
-- save_pretrained
---------------------------------------------------------------------------
tests["save_pretrained writes a diffusers folder that loads back to the same models and images"] = function()
  local dir, done = tmpdir()
  local parts = models.load(PIPE)
  models.save_pretrained(dir, parts)
  for _, f in ipairs({ "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json",
    "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json" }) do
    assert(io.open(dir .. "/" .. f), f .. " is missing")
  end
  local index = json.read_file(dir .. "/model_index.json")
  assert(index._class_name == "StableDiffusionPipeline" and index.unet[2] == "UNet2DConditionModel")
  assert(index.scheduler[2] == "DDIMScheduler" and index.safety_checker[1] == json.null)
  local cfg = json.read_file(dir .. "/unet/config.json")
  assert(cfg.cross_attention_dim == 32 and cfg.attention_head_dim[2] == 4 and cfg.dtype == nil)
  local _, meta = T.load(dir .. "/unet/diffusion_pytorch_model.safetensors")
  assert(meta.format == "pt")
  local back = models.load(dir)
  for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
    local want = parts[name]:state_dict()
    for k, v in pairs(back[name]:state_dict()) do T.testing.assert_close(v, want[k], { rtol = 0, atol = 0, msg = k }) end
  end
  local io = io_ref()
  local o = { prompts = PROMPTS, negative_prompts = NEGATIVES, steps = 10, latents = io.latents, height = 16, width = 16 }
  T.testing.assert_close(D.StableDiffusion(back):sample(o), D.StableDiffusion(parts):sample(o), { rtol = 0, atol = 0 })
  -- an f16 variant beside it
  models.save_pretrained(dir, { unet = parts.unet }, { dtype = "f16", variant = "fp16" })
  local file = T.load(dir .. "/unet/diffusion_pytorch_model.fp16.safetensors")
  assert(file["conv_in.weight"].dtype == "f16")
  done()
end

tests["the sampler registry: diffusers classes in and out, names, options that do not apply"] = function()
  local R = D.samplers
  local s = R.from_diffusers(json.read_file(PIPE .. "/scheduler/scheduler_config.json"))
  local cfg = R.to_diffusers(s)
  assert(cfg._class_name == "DDIMScheduler" and cfg.steps_offset == 1 and cfg.beta_schedule == "scaled_linear")
  local e = R.by_name("dpmpp2m_karras", s)
  local name, class = R.kind(e)
  assert(name == "dpmpp2m" and class == "DPMSolverMultistepScheduler" and e.config.use_karras_sigmas)
  assert(e.config.beta_end == 0.012 and e.config.steps_offset == 1, "the schedule is kept")
  local pndm = R.from_diffusers({ _class_name = "PNDMScheduler", skip_prk_steps = true, beta_schedule = "scaled_linear",
    beta_start = 0.00085, beta_end = 0.012, set_alpha_to_one = false, steps_offset = 1, trained_betas = json.null,
    clip_sample = false })
  assert(R.kind(pndm) == "pndm")
  raises("option thresholding = true of DDIMScheduler is not supported", R.from_diffusers,
    { _class_name = "DDIMScheduler", thresholding = true })
  raises("scheduler LMSDiscreteScheduler is not one tocha has", R.from_diffusers, { _class_name = "LMSDiscreteScheduler" })
  -- a model whose scheduler tocha lacks loads with another chosen by name, its schedule kept
  local dir, done = tmpdir()
  copy_tree(PIPE, dir .. "/p")
  T.testing.write_file(dir .. "/p/scheduler/scheduler_config.json", json.encode({ _class_name = "LMSDiscreteScheduler",
    beta_start = 0.001, beta_end = 0.02, beta_schedule = "linear", use_karras_sigmas = true }))
  raises("LMSDiscreteScheduler is not one tocha has", models.load, dir .. "/p", { parts = { "scheduler" } })
  local chosen = models.load(dir .. "/p", { parts = { "scheduler" }, scheduler = "euler" }).scheduler
  assert(R.kind(chosen) == "euler" and chosen.config.beta_start == 0.001 and chosen.config.use_karras_sigmas)
  done()
  for _, n in ipairs(R.names()) do assert(R.by_name(n, s).config.num_train_timesteps == 1000, n) end
end

tests["PNDM (PLMS) gives diffusers' PNDMScheduler samples, epsilon and v-prediction"] = function()
  local ref = T.load(T.testing.path("ref/sd_pndm_io.safetensors"))
  for _, pred in ipairs({ "epsilon", "v_prediction" }) do
    for _, n in ipairs({ 1, 2, 7 }) do
      local s = D.PNDM { beta_start = 0.00085, beta_end = 0.012, beta_schedule = "scaled_linear", steps_offset = 1,
        set_alpha_to_one = false, prediction_type = pred }
      s:set_timesteps(n)
      local key = pred .. "_" .. n
      assert(#s.timesteps == ref[key .. "_timesteps"]:numel(), key)
      for i, t in ipairs(ref[key .. "_timesteps"]:tolist()) do assert(s.timesteps[i] == t, key) end
      local x = ref.x0
      for _, t in ipairs(s.timesteps) do x = s:step(x * 0.3 + 0.001 * t, t, x) end
      T.testing.assert_close(x, ref[key], { rtol = 1e-5, atol = 1e-5, msg = key })
    end
  end
  local ok, err = pcall(D.PNDM, { skip_prk_steps = false })
  assert(not ok and err:find("skip_prk_steps"), err)
end

---------------------------------------------------------------------------
-- errors
---------------------------------------------------------------------------
tests["models.load refuses pickle files and says how to convert them"] = function()
  local dir, done = tmpdir()
  local f = assert(io.open(dir .. "/model.ckpt", "wb"))
  f:write("PK\3\4 not really")
  f:close()
  local err = raises("is a pickle file", models.load, dir .. "/model.ckpt")
  assert(err:find("runs whatever code it holds") and err:find("weights_only=True") and err:find("model.safetensors"), err)
  copy_tree(PIPE, dir .. "/pipe")
  os.remove(dir .. "/pipe/text_encoder/model.safetensors")
  f = assert(io.open(dir .. "/pipe/text_encoder/pytorch_model.bin", "wb"))
  f:write("x")
  f:close()
  raises("text_encoder/pytorch_model.bin is a pickle file", models.load, dir .. "/pipe")
  done()
end

tests["models.load errors name the file and the key"] = function()
  local dir, done = tmpdir()
  copy_tree(PIPE, dir .. "/p")
  local root = dir .. "/p"
  local vae_file = root .. "/vae/diffusion_pytorch_model.safetensors"
  local orig = T.load(vae_file)
  local function with_vae(sd, pattern)
    T.save(vae_file, sd, { format = "pt" })
    local err = raises(pattern, models.load, root, { parts = { "vae" } })
    return err
  end
  local sd = {}
  for k, v in pairs(orig) do sd[k] = v end
  sd["encoder.conv_in.weight"] = T.zeros({ 8, 3, 3, 5 })
  with_vae(sd, "diffusion_pytorch_model.safetensors: encoder.conv_in.weight has shape %[8 x 3 x 3 x 5%], AutoencoderKL expects %[8 x 3 x 3 x 3%]")
  sd["encoder.conv_in.weight"] = orig["encoder.conv_in.weight"]:to("i32")
  with_vae(sd, "encoder.conv_in.weight is i32, AutoencoderKL expects a floating tensor")
  sd["encoder.conv_in.weight"] = orig["encoder.conv_in.weight"]
  sd["encoder.extra.weight"] = T.zeros({ 1 })
  with_vae(sd, "vae/diffusion_pytorch_model.safetensors: unknown key encoder.extra.weight")
  sd["encoder.extra.weight"] = nil
  sd["decoder.conv_out.bias"] = nil
  with_vae(sd, "vae/diffusion_pytorch_model.safetensors: missing key decoder.conv_out.bias")
  -- truncated
  local bytes = assert(io.open(root .. "/text_encoder/model.safetensors", "rb")):read("a")
  local f = assert(io.open(root .. "/text_encoder/model.safetensors", "wb"))
  f:write(bytes:sub(1, #bytes - 100))
  f:close()
  raises("text_encoder/model.safetensors' is not a valid safetensors file", models.load, root, { parts = { "text_encoder" } })
  -- a shard the index names is gone; a part directory is gone
  local index = json.read_file(root .. "/unet/diffusion_pytorch_model.safetensors.index.json")
  os.remove(root .. "/unet/" .. index.weight_map["conv_in.weight"])
  raises("diffusion_pytorch_model.safetensors.index.json lists .*, which is missing", models.load, root, { parts = { "unet" } })
  os.execute("rm -rf '" .. root .. "/scheduler'")
  raises("model_index.json names scheduler, but .*/scheduler is missing", models.load, root)
  raises("does not exist", models.load, dir .. "/nothing")
  raises("unknown config key%(s%): foo", function()
    local c = json.read_file(root .. "/vae/config.json")
    c.foo = 1
    local g = assert(io.open(root .. "/vae/config.json", "w"))
    g:write(json.encode(c))
    g:close()
    models.load(root, { parts = { "vae" } })
  end)
  done()
end

tests["a part folder loads alone; register_loader adds a format"] = function()
  local unet = models.load(PIPE .. "/unet")
  assert(unet.__name == "UNet2DConditionModel")
  local seen
  models.register_loader { name = "test format", detect = function(p) return p == "test://x" end,
    load = function(p, o) seen = o; return { path = p } end }
  local out = models.load("test://x", { dtype = "f16" })
  assert(out.path == "test://x" and seen.dtype == "f16")
  table.remove(models.loaders, 1)
  raises("models.load: test://x does not exist", models.load, "test://x")
end

---------------------------------------------------------------------------
-- tocha sample, PNG text
---------------------------------------------------------------------------
-- the text chunks of a PNG file: key -> text (tEXt and uncompressed iTXt)
local function png_text(bytes)
  assert(bytes:sub(1, 8) == "\x89PNG\r\n\x1a\n", "not a PNG")
  local out, i = {}, 9
  while i < #bytes do
    local len, kind = string.unpack(">I4", bytes, i), bytes:sub(i + 4, i + 7)
    local data = bytes:sub(i + 8, i + 7 + len)
    if kind == "tEXt" then
      local k, v = data:match("^([^%z]+)%z(.*)$")
      out[k] = v
    elseif kind == "iTXt" then
      local k, rest = data:match("^([^%z]+)%z(.*)$")
      assert(rest:byte(1) == 0, "compressed iTXt")
      out[k] = rest:match("^..[^%z]*%z[^%z]*%z(.*)$")
    end
    i = i + 12 + len
  end
  return out
end

local function sink()
  local buf = {}
  return { write = function(self, ...) for _, s in ipairs({ ... }) do buf[#buf + 1] = tostring(s) end return self end,
           flush = function() end, text = function() return table.concat(buf) end }
end

tests["PNG text chunks: ASCII as tEXt, UTF-8 as iTXt, bad keys refused"] = function()
  local image = require "tocha.image"
  local img = T.rand({ 3, 5, 4 })
  local bytes = image.encode(img, "png", { text = { parameters = "a cat\nSteps: 20", Comment = "caf\xc3\xa9 \xe2\x80\x94 ok" } })
  local text = png_text(bytes)
  assert(text.parameters == "a cat\nSteps: 20", text.parameters)
  assert(text.Comment == "caf\xc3\xa9 \xe2\x80\x94 ok", text.Comment)
  T.testing.assert_close(image.decode(bytes), image.decode(image.encode(img, "png")), { rtol = 0, atol = 0 })
  raises("PNG text key '' must be 1 to 79 printable ASCII characters", image.encode, img, "png", { text = { [""] = "x" } })
  raises("text chunks are for PNG", image.encode, img, "jpeg", { text = { a = "b" } })
  raises("PNG text must map strings to strings", image.encode, img, "png", { text = { a = 1 } })
  local dir, done = tmpdir()
  image.write(dir .. "/a.png", img, { text = { parameters = "p" } })
  assert(png_text(assert(io.open(dir .. "/a.png", "rb")):read("a")).parameters == "p")
  raises("text chunks are for PNG files only", image.write, dir .. "/a.jpg", img, { text = { a = "b" } })
  done()
end

tests["tocha sample writes PNGs with A1111's parameters; each image's seed redraws it alone"] = function()
  local main = require "tocha.cli.sample"
  local image = require "tocha.image"
  local dir, done = tmpdir()
  local prompts = dir .. "/prompts.txt"
  local f = assert(io.open(prompts, "w"))
  f:write("# two prompts\na small red circle\n\na big blue square\n")
  f:close()
  local out, err = sink(), sink()
  local code = main({ PIPE, "--prompts", prompts, "--negative", "a star", "--steps", "3", "--size", "16x8", "--n", "2",
    "--batch", "1", "--seed", "10", "--sampler", "euler", "--clip-skip", "1", "--out", dir .. "/png" }, out, err)
  assert(code == 0, err.text())
  local files = {}
  for _, name in ipairs(T._sys.listdir(dir .. "/png")) do files[#files + 1] = name end
  table.sort(files)
  assert(#files == 4 and files[1] == "00000-10.png" and files[4] == "00003-13.png", table.concat(files, " "))
  local text = png_text(assert(io.open(dir .. "/png/00002-12.png", "rb")):read("a")).parameters
  assert(text == "a big blue square\nNegative prompt: a star\nSteps: 3, Sampler: Euler, CFG scale: 7.5, Seed: 12, "
    .. "Size: 16x8, Model: sd_pipe, Clip skip: 2, Version: tocha", text)
  local img = image.read(dir .. "/png/00003-13.png")
  assert(img.shape[1] == 8 and img.shape[2] == 16 and img.shape[3] == 3)
  assert(err.text():find("step 12/12", 1, true), err.text())
  -- the fourth image again, alone, from its own seed: the same pixels
  code = main({ PIPE, "--prompt", "a big blue square", "--negative", "a star", "--steps", "3", "--size", "16x8",
    "--seed", "13", "--sampler", "euler", "--clip-skip", "1", "--out", dir .. "/png", "--quiet" }, out, err)
  assert(code == 0, err.text())
  T.testing.assert_close(image.read(dir .. "/png/00004-13.png"), img, { rtol = 0, atol = 0 })
  assert(out.text():find("00004-13.png", 1, true))
  -- bad input
  assert(main({ PIPE, "--steps", "x" }, sink(), err) == 2 and err.text():find("option %-%-steps needs an integer"))
  assert(main({ PIPE }, sink(), err) == 2 and err.text():find("give %-%-prompt TEXT or %-%-prompts FILE"))
  assert(main({ PIPE, "--prompt", "a", "--size", "big" }, sink(), err) == 2 and err.text():find("size must be WxH"))
  assert(main({ dir .. "/x.ckpt", "--prompt", "a" }, sink(), err) == 1 and err.text():find("is a pickle file"))
  local help = sink()
  assert(main({ "--help" }, help, err) == 0 and help.text():find("usage: tocha sample MODEL"))
  done()
end

---------------------------------------------------------------------------
-- single-file (CompVis / A1111) checkpoints
---------------------------------------------------------------------------
local SINGLE = { v1 = { file = T.testing.path("ref/sd_single_v1.safetensors"), folder = PIPE },
  v2 = { file = T.testing.path("ref/sd_single_v2.safetensors"), folder = T.testing.path("ref/sd_pipe_v2") } }
local KIND = { unet = "UNet2DConditionModel", vae = "AutoencoderKL", text_encoder = "CLIPTextModel" }

local function single_images(parts, case)
  local io = T.load(T.testing.path("ref/sd_single_" .. case .. "_io.safetensors"))
  local images = D.StableDiffusion(parts):sample { prompts = PROMPTS, negative_prompts = NEGATIVES, steps = 10,
    latents = io.latents, height = 16, width = 16 }
  return images, io.images
end

tests["single files (SD 1.x with CLIP, SD 2.x with OpenCLIP) load and give diffusers' images"] = function()
  for _, case in ipairs({ "v1", "v2" }) do
    local parts = models.load(SINGLE[case].file, { config = SINGLE[case].folder })
    assert(parts.format == (case == "v1" and "single file (SD 1.x)" or "single file (SD 2.x)"), parts.format)
    local got, want = single_images(parts, case)
    local r = max_rel(got, want)
    assert(r < 1e-4, case .. ": images differ by " .. r)
  end
  -- the SD 1.x file holds the very weights of the diffusers folder
  local a, b = models.load(SINGLE.v1.file, { config = PIPE }), models.load(PIPE)
  for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
    local want = b[name]:state_dict()
    for k, v in pairs(a[name]:state_dict()) do T.testing.assert_close(v, want[k], { rtol = 0, atol = 0, msg = k }) end
  end
end

tests["single files: configs inferred from the shapes are diffusers' (heads and groups given)"] = function()
  for _, case in ipairs({ "v1", "v2" }) do
    local folder = SINGLE[case].folder
    local given = {}
    for name in pairs(KIND) do
      local c = json.read_file(folder .. "/" .. name .. "/config.json")
      c.dtype, c.architectures = nil, nil
      given[name] = models.resolve(KIND[name], c)
    end
    -- what shapes cannot tell: heads, GroupNorm groups, the sizes trained at
    local config = { unet = { attention_head_dim = given.unet.attention_head_dim, norm_num_groups = 4 + (case == "v1" and 4 or 0),
      sample_size = 8 }, vae = { norm_num_groups = 4, sample_size = 16 },
      text_encoder = { num_attention_heads = given.text_encoder.num_attention_heads },
      scheduler = json.read_file(folder .. "/scheduler/scheduler_config.json") }
    local parts = models.load(SINGLE[case].file, { config = config, tokenizer = folder .. "/tokenizer" })
    for name, kind in pairs(KIND) do
      for k, v in pairs(given[name]) do
        assert(json.encode(models.resolve(kind, parts[name].config)[k]) == json.encode(v) or (v == 0 and parts[name].config[k] == 0),
          string.format("%s %s: %s inferred, %s in diffusers' config", case, name .. "." .. k,
            json.encode(parts[name].config[k]), json.encode(v)))
      end
    end
    local got, want = single_images(parts, case)
    assert(max_rel(got, want) < 1e-4, case)
  end
  -- with nothing given, SD 2.x is v-prediction with OpenCLIP's gelu, SD 1.x epsilon with quick_gelu
  local _, cfg, sd2 = require("tocha.models.single_file").convert(T.load(SINGLE.v2.file), "x")
  assert(sd2 and cfg.text_encoder.hidden_act == "gelu" and cfg.unet.use_linear_projection and cfg.unet.sample_size == 96)
  local p2 = models.load(SINGLE.v2.file, { parts = { "scheduler" } })
  assert(D.samplers.kind(p2.scheduler) == "ddim" and p2.scheduler.config.prediction_type == "v_prediction")
  local p1 = models.load(SINGLE.v1.file, { parts = { "scheduler" } })
  assert(D.samplers.kind(p1.scheduler) == "pndm" and p1.scheduler.config.prediction_type == "epsilon")
end

tests["single files: unknown keys, missing tokenizers and bad configs are named"] = function()
  local dir, done = tmpdir()
  local raw = T.load(SINGLE.v1.file)
  local sd = {}
  for k, v in pairs(raw) do sd[k] = v end
  sd["model.diffusion_model.input_blocks.1.7.weight"] = T.zeros({ 1 })
  sd["something_else.weight"] = T.zeros({ 1 })
  T.save(dir .. "/odd.safetensors", sd)
  local err = raises("odd.safetensors: unknown key%(s%) in a Stable Diffusion checkpoint: model%.diffusion_model%.input_blocks%.1%.7%.weight, something_else%.weight",
    models.load, dir .. "/odd.safetensors", { config = PIPE })
  assert(err)
  local ok, msg = pcall(models.load, SINGLE.v1.file, { parts = { "tokenizer" } })
  if not ok then assert(msg:find("holds no tokenizer: give opts.tokenizer"), msg) end -- unless Hugging Face's cache has CLIP's
  raises("sd_single_v1.safetensors: the vae config: AutoencoderKL: block_out_channels%[1%] = 8 is not divisible by norm_num_groups %(32%)",
    models.load, SINGLE.v1.file, { parts = { "vae" } })
  raises("size mismatch", function() -- a config that does not fit the weights
    local ok2, e = pcall(models.load, SINGLE.v1.file, { parts = { "unet" }, config = { unet = { norm_num_groups = 8, cross_attention_dim = 16 } } })
    assert(not ok2)
    error(e:find("attn2.to_k.weight has shape %[16 x 32%], UNet2DConditionModel expects %[16 x 16%]") and "size mismatch" or e)
  end)
  done()
end

---------------------------------------------------------------------------
-- on the GPU (skipped without one; CI runs it on the CUDA emulator)
---------------------------------------------------------------------------
tests["cuda: models.load onto the GPU, the pipeline equal to diffusers', f16 single files, tiled VAE"] = function()
  if not (T.cuda and T.cuda.is_available()) then skip("no CUDA GPU (T.cuda.is_available() is false)") end
  local io = io_ref()
  local parts = models.load(PIPE, { device = "cuda" })
  assert(parts.unet.conv_in.weight.device:find("^cuda") and parts.text_encoder.text_model.final_layer_norm.weight.device:find("^cuda"))
  local images = D.StableDiffusion(parts):sample { prompts = PROMPTS, negative_prompts = NEGATIVES, steps = 10,
    latents = io.latents, height = 16, width = 16 }
  assert(images.device:find("^cuda"))
  local r = max_rel(images:to("cpu"), io.images)
  assert(r < 1e-4, "images differ by " .. r)
  local p16 = models.load(SINGLE.v1.file, { device = "cuda", dtype = "f16", config = PIPE })
  assert(p16.unet.conv_in.weight.dtype == "f16")
  local i16 = D.StableDiffusion(p16):sample { prompts = PROMPTS[1], steps = 3, seed = 1, height = 16, width = 16,
    sampler = "euler_a" }
  assert(i16.dtype == "f32" and i16:isfinite():logical_not():sum():item() == 0)
  local vae = parts.vae:enable_tiling(true, { tile_sample_min_size = 8 })
  local x = T.rand({ 1, 3, 20, 12 }) * 2 - 1
  local cpu = models.load(PIPE, { parts = { "vae" } }).vae:enable_tiling(true, { tile_sample_min_size = 8 })
  T.testing.assert_close(vae:encode(x:to("cuda")).mean:to("cpu"), cpu:encode(x).mean, { rtol = 1e-4, atol = 1e-5 })
end

return tests
