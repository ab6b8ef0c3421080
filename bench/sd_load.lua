-- bench/sd_load.lua: loading Stable Diffusion 1.5 from a diffusers folder, tocha's side.
--   tocha bench/sd_load.lua make DIR     writes a random-weight SD 1.5 (UNet, VAE, text encoder)
--                                        in f16 to DIR, as save_pretrained does
--   tocha bench/sd_load.lua load DIR PARTS DTYPE   loads PARTS ("unet" or "all") as DTYPE,
--                                        then reads every weight once
-- Prints "RESULT <name> <value>" lines: seconds to load, seconds to load and read every weight,
-- the peak resident memory (VmHWM, MB) before loading, after loading and after reading, and
-- the weight files' size (MB). bench/sd_load_torch.py is the same with diffusers' from_pretrained;
-- bench/sd.sh runs both in fresh processes, alternating, and prints the ratios.
local T = require "tocha"
local models = require "tocha.models"

local mode, dir, which, dtype = arg[1], arg[2], arg[3] or "unet", arg[4] or "f16"
assert((mode == "make" or mode == "load") and dir, "usage: tocha bench/sd_load.lua make|load DIR [unet|all] [f16|f32]")

local function result(name, v) print(string.format("RESULT %s %.6g", name, v)); io.stdout:flush() end

-- the peak resident set of this process, in MB
local function peak_mb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

local function file_mb(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n / 2 ^ 20
end

if mode == "make" then
  local init = require("tocha.nn").init
  local P = models.presets
  local parts = {}
  for name, spec in pairs({ unet = { models.UNet2DConditionModel, P.sd15_unet }, vae = { models.AutoencoderKL, P.sd15_vae },
    text_encoder = { models.CLIPTextModel, P.sd15_text } }) do
    -- f16 weights drawn in place: no f32 copy of the model is ever made
    local m = init.skip(spec[1], spec[2], { dtype = "f16" })
    T.no_grad(function()
      for _, p in ipairs(m:parameters()) do p:normal_(0, 0.02) end
    end)
    parts[name] = m
  end
  models.save_pretrained(dir, parts)
  print("wrote " .. dir)
  return
end

local files = {}
for _, part in ipairs(which == "all" and { "unet", "vae", "text_encoder" } or { "unet" }) do
  files[#files + 1] = dir .. "/" .. part .. "/" .. (part == "text_encoder" and "model" or "diffusion_pytorch_model") .. ".safetensors"
end
local size = 0
for _, f in ipairs(files) do size = size + file_mb(f) end
collectgarbage()
local before = peak_mb()
local t0 = T.clock()
local parts = models.load(dir, { parts = which == "all" and { "unet", "vae", "text_encoder" } or { "unet" }, dtype = dtype })
local t_load = T.clock() - t0
local after_load = peak_mb()
local sum = 0
for _, name in ipairs({ "unet", "vae", "text_encoder" }) do
  if parts[name] then
    for _, p in ipairs(parts[name]:parameters()) do sum = sum + p:sum():item() end
  end
end
local t_read = T.clock() - t0
result("load_s", t_load)
result("load_read_s", t_read)
result("rss_before_mb", before)
result("rss_loaded_mb", after_load)
result("rss_read_mb", peak_mb())
result("files_mb", size)
assert(sum == sum, "the weights read back as numbers")
