-- tocha.eval: generative-model metrics with the reference tools' numbers. FID, KID and the
-- Inception Score over images, folders or saved statistics (features from
-- models.InceptionV3FID in pytorch-fid's or clean-fid's preprocessing, or from the small
-- shapes network for offline work), the CLIP score, and the arithmetic underneath
-- (eval.metrics). Folder statistics are cached per folder and feature extractor. The caption
-- checker of the shapes dataset is tocha.eval.shapes. See docs/eval.md.
local T = require "tocha"
local metrics = require "tocha.eval.metrics"
local inception = require "tocha.eval.inception"

local eval = { metrics = metrics, inception = inception, Statistics = metrics.Statistics,
  frechet_distance = metrics.frechet_distance }

-- submodules loaded when first used
setmetatable(eval, { __index = function(t, k)
  local sub = ({ shapes = "tocha.eval.shapes", shapes_fid = "tocha.eval.shapes_fid", clip = "tocha.eval.clip" })[k]
  if sub then
    local m = require(sub)
    rawset(t, k, m)
    return m
  end
end })

---------------------------------------------------------------------------------------------
-- extractors
---------------------------------------------------------------------------------------------
--- eval.extractor(opts) -> a feature extractor: opts.extractor itself when given; model =
--- "shapes": the shapes network (eval.shapes_fid); else the Inception extractor
--- (eval.inception.Extractor{weights, mode, dims, batch, device})
function eval.extractor(opts)
  opts = opts or {}
  if opts.extractor then return opts.extractor end
  local model = opts.model or "inception"
  if model == "shapes" then return eval.shapes_fid.extractor(opts) end
  if model ~= "inception" then error("eval: model must be \"inception\" or \"shapes\", got " .. tostring(model), 3) end
  return inception.Extractor(opts)
end

---------------------------------------------------------------------------------------------
-- sources: folders, statistics files, images
---------------------------------------------------------------------------------------------
local function is_dir(path) return T._sys.isdir(path) end

-- the images of a folder, in sorted order, a batch (list of u8 [H, W, 3]) at a time, decoded
-- on `workers` C threads
local function folder_batches(dir, batch, workers)
  local data = require "tocha.data"
  local ds = data.ImageFolder(dir, { captions = false, channels = 3 })
  if #ds == 0 then error("eval: no PNG or JPEG images in " .. dir, 0) end
  local loader = data.DataLoader(ds, { batch_size = batch, workers = workers or 2,
    collate = function(samples)
      local out = {}
      for i, s in ipairs(samples) do out[i] = s.image end
      return out
    end })
  return loader, #ds, ds.names
end

-- a cache key for a folder's content: names, sizes and the first 4 KiB of every file
local function folder_key(dir, names)
  local crc = T._log.crc32c
  local parts = {}
  for i, name in ipairs(names) do
    local f = io.open(dir .. "/" .. name, "rb")
    local size, head = 0, ""
    if f then
      size = f:seek("end")
      f:seek("set", 0)
      head = f:read(4096) or ""
      f:close()
    end
    parts[i] = string.format("%08x", (crc(name .. "\0" .. size .. "\0" .. head)))
  end
  return string.format("%08x", (crc(table.concat(parts))))
end

local function abspath(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD")
  return (pwd and pwd ~= "" and pwd .. "/" or "") .. path
end

--- eval.cache_dir(): where folder statistics are kept: $TOCHA_CACHE/eval, else
--- ~/.cache/tocha/eval
function eval.cache_dir()
  local env = os.getenv("TOCHA_CACHE")
  return ((env and env ~= "") and env or inception.cache_root()) .. "/eval"
end

--- eval.save_statistics(path, st, {extractor = id}): mu and sigma (f64) of an eval.Statistics
--- or of a {mu, sigma, n} table (what eval.statistics returns) into a safetensors file
function eval.save_statistics(path, st, meta)
  local mu, sigma = st.mu, st.sigma
  if metrics.is_statistics(st) then mu, sigma = st:mean(), st:cov() end
  T.save(path, { mu = mu, sigma = sigma }, { n = tostring(st.n or ""), dims = tostring(mu:numel()),
    extractor = (meta and meta.extractor) or st.extractor or "" })
end

--- eval.load_statistics(path) -> {mu, sigma, n, extractor}: a file save_statistics wrote (or
--- any safetensors file with mu [d] and sigma [d, d], e.g. pytorch-fid's .npz converted by
--- tools/convert_weights.py)
function eval.load_statistics(path)
  if path:match("%.npz$") then
    error("eval: " .. path .. " is NumPy's format; convert it with python3 tools/convert_weights.py stats "
      .. path .. " OUT.safetensors", 2)
  end
  local ok, t, meta = pcall(T.load, path)
  if not ok then error("eval: cannot read statistics " .. path .. ": " .. tostring(t), 2) end
  if not (T.is_tensor(t.mu) and T.is_tensor(t.sigma)) then
    error("eval: " .. path .. " holds no statistics (it needs tensors mu and sigma)", 2)
  end
  meta = meta or {}
  return { mu = t.mu:double(), sigma = t.sigma:double(), n = tonumber(meta.n), extractor = meta.extractor }
end

-- the extractor opts describe, made on first use (a folder is checked before its network loads)
local function lazy_extractor(opts)
  local ext
  return function()
    ext = ext or eval.extractor(opts)
    return ext
  end
end

-- statistics of a folder through get_ext(), from the cache when it has them
local function folder_statistics(dir, get_ext, opts)
  local loader, n, names = folder_batches(dir, opts.batch or 50, opts.workers)
  local ext = get_ext()
  local path
  if opts.cache ~= false then
    local root = type(opts.cache) == "string" and opts.cache or eval.cache_dir()
    local base = abspath(dir):gsub("/+$", ""):gsub("[^%w%-_.]", "_"):sub(-60)
    path = string.format("%s/%s-%s-%s.safetensors", root, base, ext.id, folder_key(dir, names))
    local f = io.open(path, "rb")
    if f then
      f:close()
      local ok, s = pcall(eval.load_statistics, path)
      if ok and s.n == n then return s, path, true end
    end
  end
  local st = metrics.Statistics(ext.dims)
  for batch in loader:iter() do st:add(ext:features(batch)) end
  loader:close()
  if path then
    local ok = T._sys.mkdirs((path:gsub("/[^/]*$", "")))
    if ok then eval.save_statistics(path, st, { extractor = ext.id }) end
  end
  return { mu = st:mean(), sigma = st:cov(), n = st.n, extractor = ext.id }, path, false
end

--- eval.statistics(source, opts) -> {mu, sigma, n, extractor}: source a folder of images
--- (cached: opts.cache = false skips, a string names the directory), a statistics file
--- (.safetensors), an eval.Statistics, or images (a u8 batch [N, H, W, 3], a float batch
--- [N, 3, H, W] in opts.range (default [0, 1]), or a list of u8 images). opts: those of
--- eval.extractor, and batch, workers (folder decoding threads, default 2).
function eval.statistics(source, opts)
  opts = opts or {}
  if metrics.is_statistics(source) then
    return { mu = source:mean(), sigma = source:cov(), n = source.n }
  end
  if type(source) == "string" then
    if is_dir(source) then return (folder_statistics(source, opts.get_extractor or lazy_extractor(opts), opts)) end
    if not io.open(source, "rb") then error("eval: " .. source .. " is neither a folder nor a file", 2) end
    return eval.load_statistics(source)
  end
  if type(source) == "table" and source.mu and source.sigma then return source end
  local ext = (opts.get_extractor or lazy_extractor(opts))()
  local st = metrics.Statistics(ext.dims)
  st:add(ext:features(source, { range = opts.range }))
  return { mu = st:mean(), sigma = st:cov(), n = st.n, extractor = ext.id }
end

---------------------------------------------------------------------------------------------
-- the metrics over images
---------------------------------------------------------------------------------------------
local function check_samples(what, s, opts)
  if s.n and s.n < 2 then
    error(string.format("fid: %s has %d image%s; a covariance needs at least 2", what, s.n, s.n == 1 and "" or "s"), 3)
  end
  local d = s.mu:numel()
  if s.n and s.n <= d and not opts.allow_singular then
    error(string.format("fid: %s has %d images for %d-dimensional features: the covariance is singular and the "
      .. "distance unreliable (pytorch-fid's warning); use more images than dims, fewer dims (--dims 64, 192, "
      .. "768), or allow_singular = true (--allow-singular)", what, s.n, d), 3)
  end
end

--- eval.fid(real, fake, opts) -> the Fréchet distance between two sources (see
--- eval.statistics), with opts.model, mode, dims, weights, batch, device, cache, range.
--- More images than feature dims are needed (opts.allow_singular = true computes anyway).
function eval.fid(real, fake, opts)
  opts = opts or {}
  local get_ext = lazy_extractor(opts)
  local function stats(src)
    return eval.statistics(src, { get_extractor = get_ext, cache = opts.cache, batch = opts.batch,
      workers = opts.workers, range = opts.range })
  end
  local a, b = stats(real), stats(fake)
  if a.mu:numel() ~= b.mu:numel() then
    error(string.format("fid: the statistics have %d and %d dims", a.mu:numel(), b.mu:numel()), 2)
  end
  if a.extractor and b.extractor and a.extractor ~= "" and b.extractor ~= "" and a.extractor ~= b.extractor then
    error(string.format("fid: the statistics come from different feature extractors (%s and %s)", a.extractor,
      b.extractor), 2)
  end
  check_samples("the first set", a, opts)
  check_samples("the second set", b, opts)
  return metrics.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
end

-- every image of a folder or image source through fn(batch) -> tensor, concatenated
local function gather(source, fn, opts)
  if type(source) == "string" then
    if not is_dir(source) then error("eval: " .. source .. " is not a folder of images", 3) end
    local loader = folder_batches(source, opts.batch or 50, opts.workers)
    local parts = {}
    for batch in loader:iter() do parts[#parts + 1] = fn(batch) end
    loader:close()
    return T.cat(parts, 1)
  end
  return fn(source)
end

--- eval.kid(real, fake, opts) -> mean, std: KID between two folders or image sources, with the
--- extractor options of eval.fid and eval.metrics.kid's (subsets = 100, subset_size = 1000,
--- seed, degree, gamma, coef0)
function eval.kid(real, fake, opts)
  opts = opts or {}
  local get_ext = lazy_extractor(opts)
  local function feats(b) return get_ext():features(b, { range = opts.range }) end
  return metrics.kid(gather(real, feats, opts), gather(fake, feats, opts), opts)
end

--- eval.inception_score(images, opts) -> mean, std over splits, from the logits (without bias)
--- of the Inception extractor; opts: eval.fid's and eval.metrics.inception_score's (splits =
--- 10, shuffle, seed, order)
function eval.inception_score(source, opts)
  opts = opts or {}
  local get_ext = lazy_extractor(opts)
  local function logits(b)
    local ext = get_ext()
    if not ext.logits then error("inception_score: the feature extractor has no class logits (use the Inception one)", 0) end
    return ext:logits(b, { range = opts.range })
  end
  return metrics.inception_score(gather(source, logits, opts), opts)
end

--- eval.clip_score(images, captions, {model = a CLIP folder or eval.clip.CLIP, batch}) ->
--- score, per_sample (torchmetrics' CLIPScore; see eval.clip)
function eval.clip_score(images, captions, opts)
  return eval.clip.score(images, captions, opts)
end

return eval
