-- tocha.sweep.tpe: the tree-structured Parzen estimator (Bergstra et al. 2011). Finished trials
-- are split into the best few ("good") and the rest; each set becomes a mixture of truncated
-- normal kernels (categorical kernels for choices) plus a broad prior, and the candidate drawn
-- from the good mixture that is most likely under it relative to the bad one is proposed.
-- Parameters of one block (the top level, or one sweep.when) are modelled jointly
-- (multivariate) or one by one; a block only learns from the trials in which it existed.
local space = require "tocha.sweep.space"

local tpe = {}

local SQRT2, LOG_SQRT_2PI = math.sqrt(2), 0.5 * math.log(2 * math.pi)
local INF = math.huge

---------------------------------------------------------------------------------------------
-- the standard normal: erfc after Numerical Recipes (relative error below 1.2e-7 everywhere,
-- which keeps the far tails usable) and the inverse CDF after Acklam, refined by one step
---------------------------------------------------------------------------------------------
local function erfc(x)
  local z = math.abs(x)
  local t = 1 / (1 + 0.5 * z)
  local r = t * math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 +
    t * 0.17087277)))))))))
  return x >= 0 and r or 2 - r
end

local function upper(x) return 0.5 * erfc(x / SQRT2) end -- P(Z > x)

-- P(a < Z < b), accurate when both ends are far in one tail
local function mass(a, b)
  if a > 0 then return upper(a) - upper(b) end
  if b < 0 then return upper(-b) - upper(-a) end
  return 1 - upper(-a) - upper(b)
end

local A = { -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
  -3.066479806614716e+01, 2.506628277459239e+00 }
local B = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
  -1.328068155288572e+01 }
local Cc = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
  4.374664141464968e+00, 2.938163982698783e+00 }
local Dd = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00 }

local function probit(p) -- Φ⁻¹(p) for p in (0, 1)
  local x
  if p < 0.02425 then
    local q = math.sqrt(-2 * math.log(p))
    x = (((((Cc[1] * q + Cc[2]) * q + Cc[3]) * q + Cc[4]) * q + Cc[5]) * q + Cc[6]) /
      ((((Dd[1] * q + Dd[2]) * q + Dd[3]) * q + Dd[4]) * q + 1)
  elseif p <= 1 - 0.02425 then
    local q = p - 0.5
    local r = q * q
    x = (((((A[1] * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * r + A[6]) * q /
      (((((B[1] * r + B[2]) * r + B[3]) * r + B[4]) * r + B[5]) * r + 1)
  else
    return -probit(1 - p)
  end
  local e = upper(-x) - p -- one Halley step
  local u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
  return x - u / (1 + x * u / 2)
end

-- a draw from N(mu, sigma) truncated to [lo, hi] (by the inverse CDF, on the tail's side)
local function truncnorm_sample(r, mu, sigma, lo, hi)
  local a, b = (lo - mu) / sigma, (hi - mu) / sigma
  local z
  if a > 0 then
    local ta, tb = upper(a), upper(b)
    local t = tb + (ta - tb) * r:random()
    z = t > 0 and -probit(t) or a
  else
    local pa, pb = a == -INF and 0 or upper(-a), b == INF and 1 or 1 - upper(b)
    if b < 0 then pb = upper(-b) end
    local p = pa + (pb - pa) * r:random()
    z = (p > 0 and p < 1) and probit(p) or (p <= 0 and a or b)
  end
  return math.max(lo, math.min(hi, mu + sigma * z))
end

local function truncnorm_logpdf(x, mu, sigma, lo, hi)
  local z = (x - mu) / sigma
  local m = mass((lo - mu) / sigma, (hi - mu) / sigma)
  return -0.5 * z * z - LOG_SQRT_2PI - math.log(sigma) - math.log(math.max(m, 1e-300))
end

local function logsumexp(xs)
  local m = -INF
  for _, x in ipairs(xs) do if x > m then m = x end end
  if m == -INF then return -INF end
  local s = 0
  for _, x in ipairs(xs) do s = s + math.exp(x - m) end
  return m + math.log(s)
end

---------------------------------------------------------------------------------------------
-- parameters as kernel dimensions
---------------------------------------------------------------------------------------------
-- a numerical parameter lives on [lo, hi] (its log for log scales; an integer's range padded
-- by half a step); width sets its bandwidths (for normal: ten standard deviations)
local function dimension(p)
  local k = p.kind
  if k == "choice" or k == "grid" then return { p = p, categorical = true, n = #p.values } end
  local d = { p = p }
  if k == "uniform" then d.lo, d.hi = p.low, p.high
  elseif k == "loguniform" then d.lo, d.hi, d.log = math.log(p.low), math.log(p.high), true
  elseif k == "normal" then d.lo, d.hi, d.width, d.prior_mu, d.prior_sigma = -INF, INF, 10 * p.std, p.mean, p.std
  elseif p.log then d.lo, d.hi, d.log, d.int = math.log(p.low - 0.5), math.log(p.high + 0.5), true, true
  else d.lo, d.hi, d.int = p.low - p.step / 2, p.high + p.step / 2, true end
  d.width = d.width or d.hi - d.lo
  d.prior_mu = d.prior_mu or (d.lo + d.hi) / 2
  d.prior_sigma = d.prior_sigma or d.width
  return d
end

local function encode(d, v)
  if d.categorical then
    for i, x in ipairs(d.p.values) do if space.same(x, v) then return i end end
    return nil
  end
  if type(v) ~= "number" then return nil end
  if d.log then return v > 0 and math.log(v) or nil end
  return v
end

local function decode(d, x)
  if d.categorical then return d.p.values[x] end
  local p = d.p
  local v = d.log and math.exp(x) or x
  if d.int then
    local k = math.floor((v - p.low) / p.step + 0.5)
    return math.max(p.low, math.min(p.high, p.low + k * p.step))
  end
  if p.kind == "normal" then return v end
  return math.max(p.low, math.min(p.high, v))
end

---------------------------------------------------------------------------------------------
-- Parzen estimators
---------------------------------------------------------------------------------------------
-- Optuna's weighting: equal weights, except that beyond the newest 25 observations older ones
-- fade linearly (trials from early in a search describe it less well)
local function observation_weights(n)
  local w = {}
  if n < 25 then
    for i = 1, n do w[i] = 1 end
  else
    local ramp = n - 25
    for i = 1, ramp do w[i] = ramp == 1 and 1 / n or 1 / n + (1 - 1 / n) * (i - 1) / (ramp - 1) end
    for i = ramp + 1, n do w[i] = 1 end
  end
  return w
end

-- bandwidths: for each observation the larger gap to its neighbours (the bounds count as
-- neighbours only of the observations next to them when endpoints is true), clipped between
-- width / min(100, n + 2) and the width
local function neighbour_sigmas(d, mus, endpoints)
  local order = {}
  for i = 1, #mus do order[i] = i end
  table.sort(order, function(a, b) return mus[a] < mus[b] end)
  local lo = d.lo == -INF and d.prior_mu - d.width / 2 or d.lo
  local hi = d.hi == INF and d.prior_mu + d.width / 2 or d.hi
  local sorted = { lo }
  for _, i in ipairs(order) do sorted[#sorted + 1] = mus[i] end
  sorted[#sorted + 1] = hi
  local n, sig = #mus, {}
  for rank, i in ipairs(order) do
    local k = rank + 1
    local left, right = sorted[k] - sorted[k - 1], sorted[k + 1] - sorted[k]
    if not endpoints and n >= 2 then
      if rank == 1 then left = right elseif rank == n then right = left end
    end
    sig[i] = math.max(left, right)
  end
  local minsig, maxsig = d.width / math.min(100, n + 2), d.width
  for i = 1, n do sig[i] = math.max(minsig, math.min(maxsig, sig[i])) end
  return sig
end

-- the mixture over the dims of a block from observations (rows of encoded values): kernels
-- per observation and one prior kernel, with the component weights
local function estimator(dims, rows, opts)
  local n = #rows
  local w = observation_weights(n)
  w[n + 1] = opts.prior_weight
  local total = 0
  for i = 1, n + 1 do total = total + w[i] end
  local logw = {}
  for i = 1, n + 1 do logw[i] = math.log(w[i] / total) end
  local kernels = {}
  for j, d in ipairs(dims) do
    local col = {}
    for i, row in ipairs(rows) do col[i] = row[j] end
    if d.categorical then
      local probs = {}
      for i = 1, n + 1 do
        local pr = {}
        for c = 1, d.n do pr[c] = opts.prior_weight / d.n end
        if i <= n then pr[col[i]] = pr[col[i]] + 1 end
        local s = 0
        for c = 1, d.n do s = s + pr[c] end
        for c = 1, d.n do pr[c] = pr[c] / s end
        probs[i] = pr
      end
      kernels[j] = { probs = probs }
    else
      local sig
      if opts.bandwidth == "scott" then
        sig = {}
        local s = 0.2 * math.max(n, 1) ^ (-1 / (#dims + 4)) * d.width
        local minsig = d.width / math.min(100, n + 2)
        for i = 1, n do sig[i] = math.max(s, minsig) end
      else
        sig = neighbour_sigmas(d, col, opts.endpoints)
      end
      local mus = table.move(col, 1, n, 1, {})
      mus[n + 1], sig[n + 1] = d.prior_mu, d.prior_sigma
      kernels[j] = { mus = mus, sigmas = sig }
    end
  end
  return { dims = dims, logw = logw, kernels = kernels, n = n }
end

local function pick(r, logw)
  local u, acc = r:random(), 0
  for i, lw in ipairs(logw) do
    acc = acc + math.exp(lw)
    if u < acc then return i end
  end
  return #logw
end

-- a candidate from the mixture, as encoded values (integers rounded to their grid)
local function draw(r, est)
  local i = pick(r, est.logw)
  local x = {}
  for j, d in ipairs(est.dims) do
    local k = est.kernels[j]
    if d.categorical then
      local u, acc, pr = r:random(), 0, k.probs[i]
      x[j] = d.n
      for c = 1, d.n do
        acc = acc + pr[c]
        if u < acc then x[j] = c; break end
      end
    else
      local v = truncnorm_sample(r, k.mus[i], k.sigmas[i], d.lo, d.hi)
      if d.int then v = encode(d, decode(d, v)) end
      x[j] = v
    end
  end
  return x
end

local function log_density(est, x)
  local terms = {}
  for i, lw in ipairs(est.logw) do
    local s = lw
    for j, d in ipairs(est.dims) do
      local k = est.kernels[j]
      if d.categorical then s = s + math.log(k.probs[i][x[j]])
      else s = s + truncnorm_logpdf(x[j], k.mus[i], k.sigmas[i], d.lo, d.hi) end
    end
    terms[i] = s
  end
  return logsumexp(terms)
end

---------------------------------------------------------------------------------------------
-- the strategy
---------------------------------------------------------------------------------------------
-- the best `gamma` share of the finished trials (at least one, at most 25) are "good"
local function n_good(n, gamma)
  if type(gamma) == "function" then return math.max(1, math.min(n, gamma(n))) end
  return math.max(1, math.min(25, math.ceil(gamma * n)))
end

-- dims of the block `ps` proposed together: all of them, or one at a time
local function propose_block(self, ps, history, r, goal, params)
  local sign = goal == "max" and -1 or 1
  local dims = {}
  for i, p in ipairs(ps) do dims[i] = dimension(p) end
  -- the trials in which this block existed, encoded, best first: finished ones by value, then
  -- pruned ones by how far they got (as Optuna ranks them); running ones only as bad (liar)
  local ranked, running = {}, {}
  for _, t in ipairs(history) do
    local row, ok = {}, true
    for j, d in ipairs(dims) do
      row[j] = encode(d, t.params[d.p.name])
      if row[j] == nil then ok = false; break end
    end
    if ok then
      if t.state == "done" and type(t.value) == "number" and t.value == t.value then
        ranked[#ranked + 1] = { row = row, rank = 0, score = sign * t.value, number = t.number }
      elseif t.state == "pruned" then
        ranked[#ranked + 1] = { row = row, rank = 1, score = -(t.steps or 0), number = t.number }
      elseif t.state == "running" and self.liar then
        running[#running + 1] = { row = row, number = t.number }
      end
    end
  end
  if #ranked < self.startup then
    for _, p in ipairs(ps) do params[p.name] = space.sample(p, r) end
    return
  end
  table.sort(ranked, function(a, b)
    if a.rank ~= b.rank then return a.rank < b.rank end
    if a.score ~= b.score then return a.score < b.score end
    return a.number < b.number
  end)
  local ng = n_good(#ranked, self.gamma)
  local good, bad = {}, {}
  for i, t in ipairs(ranked) do
    if i <= ng then good[#good + 1] = t else bad[#bad + 1] = t end
  end
  for _, t in ipairs(running) do bad[#bad + 1] = t end
  -- oldest first, for the weights that fade old observations
  local function by_number(a, b) return a.number < b.number end
  table.sort(good, by_number)
  table.sort(bad, by_number)
  local groups = {}
  if self.multivariate then groups[1] = dims
  else for j, d in ipairs(dims) do groups[j] = { d } end end
  for _, g in ipairs(groups) do
    local index = {}
    for j, d in ipairs(dims) do index[d] = j end
    local function rows_of(list)
      local rows = {}
      for i, t in ipairs(list) do
        local row = {}
        for j, d in ipairs(g) do row[j] = t.row[index[d]] end
        rows[i] = row
      end
      return rows
    end
    local l = estimator(g, rows_of(good), self)
    local gm = estimator(g, rows_of(bad), self)
    local best, best_score
    for _ = 1, self.candidates do
      local x = draw(r, l)
      local score = log_density(l, x) - log_density(gm, x)
      if not best_score or score > best_score then best, best_score = x, score end
    end
    for j, d in ipairs(g) do params[d.p.name] = decode(d, best[j]) end
  end
end

local Strategy = {}
Strategy.__index = Strategy

--- strategy:suggest(space, history, rng, info) -> params; history: {number, params, value,
--- state}; info.goal "min" or "max"
function Strategy:suggest(list, history, r, info)
  local params = {}
  local i = 1
  while i <= #list do
    local cond = list[i].condition
    local block = {}
    local j = i
    while j <= #list and list[j].condition == cond do
      block[#block + 1] = list[j]
      j = j + 1
    end
    if space.active(list[i], params) then
      local free = {}
      for _, p in ipairs(block) do
        if p.kind == "fixed" then params[p.name] = p.value else free[#free + 1] = p end
      end
      if #free > 0 then propose_block(self, free, history, r, info.goal, params) end
    end
    i = j
  end
  return params
end

local OPTIONS = { bandwidth = "string", endpoints = "boolean", startup = "integer", candidates = "integer", multivariate = "boolean", gamma = "number",
  prior_weight = "number", liar = "boolean" }

--- tpe.new{startup = 10, candidates = 24, multivariate = true, gamma = 0.15, prior_weight = 1,
--- liar = true}: startup random trials before the model is used; candidates drawn per
--- proposal; gamma the good share (or a function n -> count); liar counts running trials as
--- bad, so parallel workers spread out
function tpe.new(opts, level)
  level = (level or 1) + 1
  if opts ~= nil and type(opts) ~= "table" then error("sweep.tpe: options must be a table", level) end
  opts = opts or {}
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error("sweep.tpe: unknown option '" .. tostring(k) .. "' (startup, candidates, multivariate, gamma, prior_weight, liar)", level) end
    local ok = want == "integer" and math.type(v) == "integer" and v >= 1
      or want == "number" and (type(v) == "number" and v > 0 and v <= 1 or (k == "gamma" and type(v) == "function"))
      or want == "boolean" and type(v) == "boolean" or want == "string" and type(v) == "string"
    if k == "prior_weight" then ok = type(v) == "number" and v > 0 end
    if not ok then error(string.format("sweep.tpe: %s must be %s (got %s)", k,
      want == "integer" and "a positive integer" or want == "boolean" and "true or false" or "a number in (0, 1]", tostring(v)), level) end
  end
  local s = setmetatable({ name = "tpe", startup = 10, candidates = 24, multivariate = true, gamma = 0.15,
    prior_weight = 1.0, liar = true }, Strategy)
  for k, v in pairs(opts) do s[k] = v end
  return s
end

tpe._probit, tpe._upper, tpe._truncnorm_sample, tpe._truncnorm_logpdf = probit, upper, truncnorm_sample, truncnorm_logpdf

return tpe
