-- tocha/cli/sample.lua: `tocha sample MODEL --prompt "..." [options]` draws images from a Stable
-- Diffusion checkpoint (anything models.load reads: a diffusers folder, a single .safetensors
-- file, a format registered with models.register_loader) or from a tocha training run's
-- TextToImage, and writes them as PNGs with
-- the prompt and every setting in a "parameters" text chunk, as A1111's web UI does, so
-- each image says how to make it again. The module returns main(args, out, err) -> status.
local USAGE = [[
usage: tocha sample MODEL --prompt TEXT [options]
  MODEL               a diffusers folder, a single-file .safetensors checkpoint, or a tocha
                      training run (or one of its checkpoints) of a models.TextToImage
  --prompt TEXT       what to draw
  --prompts FILE      one prompt a line (blank lines and lines starting with # are skipped)
  --negative TEXT     what to steer away from (default: nothing)
  --sampler NAME      ddim, pndm, euler, euler_a, heun, dpmpp2m, dpmpp2m_karras, unipc, ddpm,
                      or a .lua file returning a sampler class (default: the model's own)
  --steps N           sampler steps (default 25; a tocha run: its own)
  --guidance G        classifier-free guidance scale (default 7.5)
  --rescale PHI       guidance rescale (default 0)
  --seed S            the first image's seed; image k takes S + k - 1 (default: from the clock)
  --size WxH          image size in pixels (default: the model's, 512x512 for SD 1.5)
  --n N               images per prompt (default 1)
  --batch B           images drawn at once (default: N)
  --clip-skip K       use the text encoder's output K layers from the end
  --eta E             DDIM's eta (default 0)
  --lora FILE         LoRA weights to apply (pytorch_lora_weights.safetensors as diffusers and
                      finetune_sd.lua write them, a folder holding one, or a kohya file)
  --lora-scale S      the LoRA's strength (default 1; 0 turns it off)
  --device DEV        cpu or cuda (default cpu)
  --dtype DT          f32, f16 or bf16 (default f32)
  --variant V         load *.V.safetensors weights where present (e.g. fp16)
  --config DIR        for a single file: a diffusers folder whose configs, tokenizer and
                      scheduler to use (default: inferred from the weights' shapes)
  --tokenizer DIR     for a single file: vocab.json + merges.txt (default: --config's, or
                      Hugging Face's cache)
  --out DIR           where the PNGs go (default samples/); files are numbered after those there
  --quiet             no progress line]]

-- A1111's names for the samplers, for the parameters text
local A1111 = { ddim = "DDIM", pndm = "PLMS", plms = "PLMS", euler = "Euler", euler_a = "Euler a", heun = "Heun",
  dpmpp2m = "DPM++ 2M", dpmpp2m_karras = "DPM++ 2M Karras", unipc = "UniPC", ddpm = "DDPM", euler_karras = "Euler Karras" }

local OPTIONS = { ["--prompt"] = "prompt", ["--prompts"] = "prompts", ["--negative"] = "negative",
  ["--sampler"] = "sampler", ["--steps"] = "steps", ["--guidance"] = "guidance", ["--rescale"] = "rescale",
  ["--seed"] = "seed", ["--size"] = "size", ["--n"] = "n", ["--batch"] = "batch", ["--clip-skip"] = "clip_skip",
  ["--eta"] = "eta", ["--device"] = "device", ["--dtype"] = "dtype", ["--variant"] = "variant", ["--out"] = "out",
  ["--config"] = "config", ["--tokenizer"] = "tokenizer", ["--lora"] = "lora", ["--lora-scale"] = "lora_scale",
  ["--lora_scale"] = "lora_scale" }
local INTEGER = { steps = true, seed = true, n = true, batch = true, clip_skip = true }
local NUMBER = { guidance = true, rescale = true, eta = true, lora_scale = true }

local function parse(args)
  local o, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local key = OPTIONS[a]
    if a == "-h" or a == "--help" then return nil, nil, true
    elseif a == "--quiet" then o.quiet = true
    elseif key then
      local v = args[i + 1]
      if v == nil then return nil, "option " .. a .. " needs a value" end
      if INTEGER[key] then
        v = math.tointeger(tonumber(v))
        if not v then return nil, "option " .. a .. " needs an integer, got '" .. args[i + 1] .. "'" end
      elseif NUMBER[key] then
        v = tonumber(v)
        if not v then return nil, "option " .. a .. " needs a number, got '" .. args[i + 1] .. "'" end
      end
      o[key] = v
      i = i + 1
    elseif a:sub(1, 2) == "--" then return nil, "unknown option " .. a
    else pos[#pos + 1] = a end
    i = i + 1
  end
  if #pos ~= 1 then return nil, "give one MODEL (a diffusers folder or a .safetensors file)" end
  o.model = pos[1]
  return o
end

local function read_prompts(path)
  local f, err = io.open(path)
  if not f then return nil, "cannot read prompts: " .. tostring(err) end
  local out = {}
  for line in f:lines() do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then out[#out + 1] = line end
  end
  f:close()
  if #out == 0 then return nil, path .. " holds no prompt" end
  return out
end

-- the next free number in dir: files are NNNNN-SEED.png
local function next_index(T, dir)
  local names = T._sys.listdir(dir) or {}
  local n = 0
  for _, name in ipairs(names) do
    local k = tonumber(name:match("^(%d+)%-.*%.png$"))
    if k and k + 1 > n then n = k + 1 end
  end
  return n
end

--- parameters(o): the A1111-style text: prompt, "Negative prompt: ...", then the settings
local function parameters(o, prompt, seed, width, height, sampler)
  local lines = { prompt }
  if o.negative and o.negative ~= "" then lines[#lines + 1] = "Negative prompt: " .. o.negative end
  local s = { "Steps: " .. o.steps, "Sampler: " .. sampler, "CFG scale: " .. o.guidance, "Seed: " .. seed,
    string.format("Size: %dx%d", width, height), "Model: " .. (o.model:match("([^/]+)/*$") or o.model) }
  if o.rescale and o.rescale > 0 then s[#s + 1] = "Guidance rescale: " .. o.rescale end
  if o.clip_skip then s[#s + 1] = "Clip skip: " .. (o.clip_skip + 1) end -- A1111 counts the last layer as 1
  if o.eta then s[#s + 1] = "Eta: " .. o.eta end
  if o.lora then s[#s + 1] = string.format("Lora: %s, Lora scale: %g", o.lora:match("([^/]+)/*$"), o.lora_scale or 1) end
  s[#s + 1] = "Version: tocha"
  lines[#lines + 1] = table.concat(s, ", ")
  return table.concat(lines, "\n")
end

-- a pixel-space TextToImage (a tocha run or checkpoint): one image at a time, image k with seed
-- S + k - 1, written as the Stable Diffusion path writes them
local function run_pixels(m, o, prompts, width, height, out, err)
  local T, image, log = require "tocha", require "tocha.image", require "tocha.log"
  local seed = o.seed or (os.time() % 1000000007)
  local dir = o.out or "samples"
  local made, why = T._sys.mkdirs(dir)
  if not made then err:write("tocha sample: cannot create ", dir, ": ", tostring(why), "\n"); return 1 end
  width, height = width or m.size, height or m.size
  local sampler = o.sampler or m.sampling.sampler or "ddim"
  local progress = not o.quiet and log.progress { total = #prompts * o.n, out = err, smooth = {}, tty = io.type(err) == "file"
    and T._sys.isatty(err) }
  local index, k = next_index(T, dir), 0
  for _, p in ipairs(prompts) do
    for _ = 1, o.n do
      local img = m:sample { prompts = { p }, negative_prompts = o.negative, sampler = o.sampler, steps = o.steps,
        guidance_scale = o.guidance, guidance_rescale = o.rescale, seed = seed + k, height = height, width = width,
        eta = o.eta }
      local path = string.format("%s/%05d-%d.png", dir, index, seed + k)
      image.write(path, img[1], { range = { -1, 1 },
        text = { parameters = parameters(o, p, seed + k, width, height, A1111[sampler] or sampler) } })
      index, k = index + 1, k + 1
      if progress then progress:update(k); progress:print(path) else out:write(path, "\n") end
    end
  end
  if progress then progress:close() end
  return 0
end

local function run(o, out, err)
  local T = require "tocha"
  local models = require "tocha.models"
  local D = require "tocha.diffusion"
  local image = require "tocha.image"
  local log = require "tocha.log"
  -- a terminal redraws the progress line in place; anything else (a test's sink) gets lines
  local function is_terminal(f) return io.type(f) == "file" and T._sys.isatty(f) end
  local prompts = { o.prompt }
  if o.prompts then
    local list, msg = read_prompts(o.prompts)
    if not list then err:write("tocha sample: ", msg, "\n"); return 1 end
    prompts = list
  end
  if not prompts[1] then err:write("tocha sample: give --prompt TEXT or --prompts FILE\n"); return 2 end
  local given = { steps = o.steps, guidance = o.guidance } -- a trained run has its own defaults
  o.steps, o.guidance, o.n = o.steps or 25, o.guidance or 7.5, o.n or 1
  o.batch = o.batch or o.n
  if o.n < 1 or o.batch < 1 or o.steps < 1 then err:write("tocha sample: --n, --batch and --steps must be positive\n"); return 2 end
  local width, height
  if o.size then
    width, height = o.size:match("^(%d+)[xX](%d+)$")
    if not width then width = o.size:match("^(%d+)$"); height = width end
    width, height = math.tointeger(tonumber(width)), math.tointeger(tonumber(height))
    if not width then err:write("tocha sample: --size must be WxH, e.g. 512x512\n"); return 2 end
  end
  local parts = models.load(o.model, { dtype = o.dtype or "f32", device = o.device, variant = o.variant,
    config = o.config, tokenizer = o.tokenizer, scheduler = o.sampler })
  if type(parts) == "table" and parts.sample and not parts.vae then -- a TextToImage (a tocha run)
    o.steps, o.guidance = given.steps or parts.sampling.steps or 50, given.guidance or parts.sampling.guidance_scale or 7.5
    return run_pixels(parts, o, prompts, width, height, out, err)
  end
  local pixels = type(parts) == "table" and parts.unet and not parts.vae and parts.scheduler -- tocha saved it
  if type(parts) ~= "table" or not parts.unet or not (parts.vae or pixels) or not parts.text_encoder or not parts.tokenizer then
    err:write("tocha sample: ", o.model, " is not a whole Stable Diffusion model (unet, vae, text encoder, tokenizer)\n")
    return 1
  end
  if o.device then
    for _, name in ipairs({ "unet", "vae", "text_encoder" }) do if parts[name] then parts[name]:to(o.device) end end
  end
  if o.lora then -- merged: sampling then costs what the plain model does
    require("tocha.lora").load(o.lora, { unet = parts.unet, text_encoder = parts.text_encoder },
      { scale = o.lora_scale or 1, merge = true })
  elseif o.lora_scale then
    err:write("tocha sample: --lora-scale needs --lora FILE\n"); return 2
  end
  if pixels then -- a pixel-space model (a diffusers folder with its conditioning in tocha.json)
    local d = models.Denoiser(parts)
    return run_pixels({ size = d.size, sampling = { sampler = D.samplers.kind(parts.scheduler) },
      sample = function(_, so)
        so.sampler = parts.scheduler
        return d:sample(so)
      end }, o, prompts, width, height, out, err)
  end
  local pipe = D.StableDiffusion(parts)
  width, height = width or pipe.default_size, height or pipe.default_size
  local sampler_name = o.sampler or D.samplers.kind(pipe.scheduler)
  local scheduler = pipe.scheduler
  local seed = o.seed or (os.time() % 1000000007)
  local dir = o.out or "samples"
  local made, why = T._sys.mkdirs(dir)
  if not made then err:write("tocha sample: cannot create ", dir, ": ", tostring(why), "\n"); return 1 end
  local index = next_index(T, dir)
  local runs = {}
  for _, p in ipairs(prompts) do
    for k = 1, o.n, o.batch do runs[#runs + 1] = { prompt = p, first = k, count = math.min(o.batch, o.n - k + 1) } end
  end
  local progress = not o.quiet and log.progress { total = #runs * o.steps, out = err, smooth = {},
    tty = is_terminal(err) }
  local done, f = 0, pipe.vae_scale_factor
  local k = 0 -- images so far: image k takes seed + k
  for _, r in ipairs(runs) do
    local latents = {}
    for j = 1, r.count do
      T.manual_seed(seed + k + j - 1)
      latents[j] = T.randn({ 1, parts.unet.config.in_channels, height // f, width // f })
    end
    T.manual_seed(seed + k)
    local images = pipe:sample { prompts = r.prompt, negative_prompts = o.negative, steps = o.steps,
      guidance_scale = o.guidance, guidance_rescale = o.rescale, height = height, width = width, batch = r.count,
      latents = T.cat(latents, 1), eta = o.eta, clip_skip = o.clip_skip, scheduler = scheduler,
      callback = progress and function(s) progress:update(done + s.step) end }
    done = done + o.steps
    images = images:to("cpu")
    for j = 1, r.count do
      local path = string.format("%s/%05d-%d.png", dir, index, seed + k)
      image.write(path, images[j], { range = { 0, 1 },
        text = { parameters = parameters(o, r.prompt, seed + k, width, height, A1111[sampler_name] or sampler_name) } })
      if progress then progress:print(path) else out:write(path, "\n") end
      index, k = index + 1, k + 1
    end
  end
  if progress then progress:close() end
  return 0
end

local function main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local o, msg, help = parse(args)
  if help then out:write(USAGE, "\n"); return 0 end
  if not o then err:write("tocha sample: ", msg, "\n", USAGE, "\n"); return 2 end
  local ok, code = pcall(run, o, out, err)
  if not ok then
    err:write("\ntocha sample: ", (tostring(code):gsub("^[^:]*%.lua:%d+: ", "")), "\n")
    return 1
  end
  return code
end

return main
