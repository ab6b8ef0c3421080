-- tocha/eval/metrics.lua: the arithmetic of the generative metrics, on features already
-- extracted: feature statistics accumulated in f64 in one pass (Statistics), the Fréchet
-- distance through symmetric eigendecompositions (T.linalg.eigh), KID (unbiased MMD with a
-- polynomial kernel over random subsets), the Inception Score over splits, and the CLIP score.
-- Each follows the formula of the reference tool named in docs/eval.md; everything is f64.
local T = require "tocha"
local F = require "tocha.nn.functional"

local M = {}

local function shape_str(t) return "[" .. table.concat(t.shape, " x ") .. "]" end

-- features as an f64 CPU matrix [N, d], detached
local function matrix(x, what, level)
  if not T.is_tensor(x) then error(what .. ": expected a tensor of features [N, d], got " .. type(x), level + 1) end
  if x:dim() ~= 2 then error(what .. ": expected features [N, d], got " .. shape_str(x), level + 1) end
  if x.dtype ~= "f32" and x.dtype ~= "f64" and x.dtype ~= "f16" and x.dtype ~= "bf16" then
    error(what .. ": expected floating point features, got " .. x.dtype, level + 1)
  end
  return x:detach():to("cpu"):to("f64")
end

local function check_finite(x, what, level)
  local bad = x:isfinite():logical_not():sum():item()
  if bad > 0 then error(string.format("%s has %d non-finite values (NaN or inf)", what, bad), level + 1) end
end

-- the trace of a square matrix
local function trace(s)
  local d = s.shape[1]
  return s:reshape(-1):index_select(1, T.arange(0, d, { dtype = "i64" }) * (d + 1) + 1):sum():item()
end

-- runs f with the global generator seeded, and puts the caller's state back
local function with_seed(seed, f)
  local saved = T.get_rng_state()
  T.manual_seed(seed)
  local ok, a, b = pcall(f)
  T.set_rng_state(saved)
  if not ok then error(a, 0) end
  return a, b
end

---------------------------------------------------------------------------------------------
-- statistics: mean and covariance in one pass
---------------------------------------------------------------------------------------------
local Statistics = {}
Statistics.__index = Statistics

--- eval.Statistics(dims) -> an accumulator: st:add(features [N, dims]) any number of times,
--- then st.n, st:mean() (f64 [dims]) and st:cov() (f64 [dims, dims], unbiased, as np.cov). Each
--- batch is centred on its own mean and merged (Chan et al.), so the sums never lose the
--- covariance to a large mean, and nothing is kept but the running mean and co-moment.
function M.Statistics(dims)
  if math.type(dims) ~= "integer" or dims < 1 then error("Statistics: dims must be a positive integer", 2) end
  return setmetatable({ dims = dims, n = 0, mu = T.zeros({ dims }, { dtype = "f64" }),
    m2 = T.zeros({ dims, dims }, { dtype = "f64" }) }, Statistics)
end

function Statistics:add(features)
  local x = matrix(features, "Statistics:add", 2)
  if x.shape[2] ~= self.dims then
    error(string.format("Statistics:add: features have %d dims, the statistics %d", x.shape[2], self.dims), 2)
  end
  check_finite(x, "Statistics:add: the features", 2)
  local nb = x.shape[1]
  if nb == 0 then return self end
  local mb = x:mean(1)
  local xc = x - mb
  local m2b = xc:t():matmul(xc)
  if self.n == 0 then
    self.mu, self.m2 = mb, m2b
  else
    local n, total = self.n, self.n + nb
    local delta = mb - self.mu
    self.mu = self.mu + delta * (nb / total)
    self.m2 = self.m2 + m2b + T.outer(delta, delta) * (n * nb / total)
  end
  self.n = self.n + nb
  return self
end

function Statistics:mean() return self.mu end

function Statistics:cov()
  if self.n < 2 then
    error(string.format("Statistics: a covariance needs at least 2 samples, got %d", self.n), 2)
  end
  return self.m2 / (self.n - 1)
end

M.is_statistics = function(s) return getmetatable(s) == Statistics end

---------------------------------------------------------------------------------------------
-- Fréchet distance
---------------------------------------------------------------------------------------------
-- the symmetric square root of a covariance: V sqrt(max(w, 0)) V^T
local function sqrt_psd(s)
  local w, v = T.linalg.eigh(s)
  return (v * w:clamp(0, math.huge):sqrt():view(1, -1)):matmul(v:t())
end

--- eval.frechet_distance(mu1, sigma1, mu2, sigma2) -> number: |mu1 - mu2|^2 + tr(sigma1) +
--- tr(sigma2) - 2 tr((sigma1 sigma2)^1/2). The trace of the square root is the sum of the
--- square roots of the eigenvalues of sigma1^1/2 sigma2 sigma1^1/2 (symmetric, so LAPACK's
--- syevd finds them; pytorch-fid takes scipy's sqrtm of the non-symmetric product instead).
--- Tiny negative eigenvalues of a rank-deficient covariance count as 0.
function M.frechet_distance(mu1, sigma1, mu2, sigma2)
  for i, t in ipairs({ mu1, sigma1, mu2, sigma2 }) do
    if not T.is_tensor(t) then
      error(string.format("frechet_distance: argument %d must be a tensor, got %s", i, type(t)), 2)
    end
  end
  local d = mu1:numel()
  if mu1:dim() ~= 1 or mu2:dim() ~= 1 or mu2:numel() ~= d then
    error(string.format("frechet_distance: the means must be vectors of one size, got %s and %s", shape_str(mu1),
      shape_str(mu2)), 2)
  end
  for _, s in ipairs({ sigma1, sigma2 }) do
    if s:dim() ~= 2 or s.shape[1] ~= d or s.shape[2] ~= d then
      error(string.format("frechet_distance: the covariances must be [%d x %d] like the means, got %s", d, d,
        shape_str(s)), 2)
    end
  end
  local m1, m2 = mu1:detach():to("cpu"):double(), mu2:detach():to("cpu"):double()
  local s1, s2 = sigma1:detach():to("cpu"):double(), sigma2:detach():to("cpu"):double()
  for name, t in pairs({ mu1 = m1, mu2 = m2, sigma1 = s1, sigma2 = s2 }) do
    check_finite(t, "frechet_distance: " .. name, 2)
  end
  local r1 = sqrt_psd(s1)
  local eig = T.linalg.eigvalsh(r1:matmul(s2):matmul(r1))
  local tr_covmean = eig:clamp(0, math.huge):sqrt():sum():item()
  local diff = m1 - m2
  return (diff * diff):sum():item() + trace(s1) + trace(s2) - 2 * tr_covmean
end

---------------------------------------------------------------------------------------------
-- KID
---------------------------------------------------------------------------------------------
local function kernel_opts(opts, d)
  local degree, coef0 = opts.degree or 3, opts.coef0 or 1
  local gamma = opts.gamma or 1 / d
  return degree, gamma, coef0
end

--- eval.mmd2(x [m, d], y [m, d], {degree = 3, gamma = 1 / d, coef0 = 1}) -> the unbiased
--- squared MMD between two equal-size samples under k(a, b) = (gamma a.b + coef0)^degree
--- (torch-fidelity's mmd2 with its polynomial kernel; clean-fid's kernel_distance per subset)
function M.mmd2(x, y, opts)
  opts = opts or {}
  x, y = matrix(x, "mmd2", 2), matrix(y, "mmd2", 2)
  local m, d = x.shape[1], x.shape[2]
  if y.shape[1] ~= m or y.shape[2] ~= d then
    error(string.format("mmd2: the samples must have one shape, got %s and %s", shape_str(x), shape_str(y)), 2)
  end
  if m < 2 then error("mmd2: needs at least 2 samples on each side, got " .. m, 2) end
  local degree, gamma, coef0 = kernel_opts(opts, d)
  local function k(a, b) return (a:matmul(b:t()) * gamma + coef0):pow(degree) end
  local kxx, kyy = k(x, x), k(y, y)
  local off = kxx:sum():item() - trace(kxx) + kyy:sum():item() - trace(kyy)
  return off / (m * (m - 1)) - 2 * k(x, y):sum():item() / (m * m)
end

local function mean_std(vals)
  local s = 0
  for _, v in ipairs(vals) do s = s + v end
  local mean = s / #vals
  local q = 0
  for _, v in ipairs(vals) do q = q + (v - mean) ^ 2 end
  return mean, math.sqrt(q / #vals)
end

--- eval.kid(f1 [n1, d], f2 [n2, d], {subsets = 100, subset_size = 1000, seed = 0, degree,
--- gamma, coef0, indices}) -> mean, std of mmd2 over subsets (std over subsets, ddof 0, as
--- torch-fidelity). Each subset draws m = min(n1, n2, subset_size) rows of each side without
--- replacement (clean-fid's rule for m) from tocha's generator seeded with `seed` (the global
--- generator is left as it was). indices: a list of {rows1, rows2} (1-based index tensors or
--- tables) to use instead, e.g. another tool's subsets.
function M.kid(f1, f2, opts)
  opts = opts or {}
  f1, f2 = matrix(f1, "kid", 2), matrix(f2, "kid", 2)
  if f1.shape[2] ~= f2.shape[2] then
    error(string.format("kid: the features have %d and %d dims", f1.shape[2], f2.shape[2]), 2)
  end
  local n1, n2 = f1.shape[1], f2.shape[1]
  local m = math.min(n1, n2, opts.subset_size or 1000)
  if m < 2 then error(string.format("kid: needs at least 2 samples on each side, got %d and %d", n1, n2), 2) end
  local vals = {}
  local function subset(rows1, rows2)
    local function idx(r) return T.is_tensor(r) and r:to("i64") or T.tensor(r, { dtype = "i64" }) end
    vals[#vals + 1] = M.mmd2(f1:index_select(1, idx(rows1)), f2:index_select(1, idx(rows2)), opts)
  end
  if opts.indices then
    for _, pair in ipairs(opts.indices) do subset(pair[1], pair[2]) end
  else
    local subsets = opts.subsets or 100
    if math.type(subsets) ~= "integer" or subsets < 1 then error("kid: subsets must be a positive integer", 2) end
    with_seed(opts.seed or 0, function()
      for _ = 1, subsets do
        subset(T.randperm(n1):narrow(1, 1, m), T.randperm(n2):narrow(1, 1, m))
      end
    end)
  end
  if #vals == 0 then error("kid: no subsets", 2) end
  return mean_std(vals)
end

---------------------------------------------------------------------------------------------
-- Inception Score
---------------------------------------------------------------------------------------------
--- eval.inception_score(logits [N, C], {splits = 10, shuffle = true, seed = 2020, order}) ->
--- mean, std over splits of exp(E_x KL(p(y|x) || p(y))), torch-fidelity's formula: softmax in
--- f64, split k holding rows (k-1)N/splits + 1 .. kN/splits (integer division). The rows are
--- first shuffled by tocha's generator (seed), or put in `order` (a 1-based permutation), or
--- left as they are (shuffle = false).
function M.inception_score(logits, opts)
  opts = opts or {}
  local x = matrix(logits, "inception_score", 2)
  local n = x.shape[1]
  local splits = opts.splits or 10
  if math.type(splits) ~= "integer" or splits < 1 then error("inception_score: splits must be a positive integer", 2) end
  if n < splits then error(string.format("inception_score: %d samples cannot fill %d splits", n, splits), 2) end
  check_finite(x, "inception_score: the logits", 2)
  if opts.order ~= nil then
    local o = T.is_tensor(opts.order) and opts.order:to("i64") or T.tensor(opts.order, { dtype = "i64" })
    x = x:index_select(1, o)
  elseif opts.shuffle ~= false then
    x = x:index_select(1, with_seed(opts.seed or 2020, function() return T.randperm(n) end))
  end
  local logp = F.log_softmax(x, 2)
  local p = logp:exp()
  local scores = {}
  for k = 0, splits - 1 do
    local a, b = k * n // splits, (k + 1) * n // splits
    local pk, lk = p:narrow(1, a + 1, b - a), logp:narrow(1, a + 1, b - a)
    local logq = pk:mean(1, true):log()
    scores[#scores + 1] = math.exp((pk * (lk - logq)):sum(2):mean():item())
  end
  return mean_std(scores)
end

---------------------------------------------------------------------------------------------
-- CLIP score
---------------------------------------------------------------------------------------------
--- eval.clip_score(image_features [N, d], text_features [N, d]) -> score, per_sample:
--- torchmetrics' CLIPScore: per pair 100 cos(image, text); the score is max(mean, 0) (the
--- clamp applies to the mean, as torchmetrics computes it); per_sample is an f64 [N] tensor
function M.clip_score(image_features, text_features)
  local a, b = matrix(image_features, "clip_score", 2), matrix(text_features, "clip_score", 2)
  if a.shape[1] ~= b.shape[1] or a.shape[2] ~= b.shape[2] then
    error(string.format("clip_score: image and text features must have one shape, got %s and %s", shape_str(a),
      shape_str(b)), 2)
  end
  if a.shape[1] == 0 then error("clip_score: no samples", 2) end
  local na, nb = a:norm(2, 2, true), b:norm(2, 2, true)
  local per = (a / na * (b / nb)):sum(2) * 100
  return math.max(per:mean():item(), 0), per
end

return M
