-- tests/test_eval.lua: the metrics against the reference tools (tests/ref/gen_eval.py):
-- statistics and the Fréchet distance (pytorch-fid, clean-fid), KID (torch-fidelity, clean-fid),
-- the Inception Score (torch-fidelity), both preprocessing conventions (pytorch-fid's resize,
-- clean-fid's PIL resize), InceptionV3FID against pytorch-fid's network on stand-in weights,
-- T.linalg.eigh, and the errors on bad input.
local T = require "tocha"
local eval = require "tocha.eval"
local models = require "tocha.models"
local image = require "tocha.image"
local fill = dofile(T.testing.path("ref/eval_weights.lua"))

local M = eval.metrics
local tests = {}
local ref = T.load(T.testing.path("ref/eval_metrics.safetensors"))
local rsz = T.load(T.testing.path("ref/eval_resize.safetensors"))

local function num(t) return t:item() end
local function close(a, b, rtol, msg)
  local err = math.abs(a - b) / math.max(math.abs(b), 1e-300)
  if err > rtol then error(string.format("%s: %.17g vs %.17g (relative error %.3g > %g)", msg or "value", a, b, err, rtol), 2) end
end

---------------------------------------------------------------------------------------------
-- linalg
---------------------------------------------------------------------------------------------
tests["linalg.eigh reconstructs symmetric matrices, ascending, f32 and f64, batched"] = function()
  local a = T.randn({ 3, 6, 6 }, { dtype = "f64" })
  a = a + a:transpose(2, 3)
  local w, v = T.linalg.eigh(a)
  assert(w.shape[1] == 3 and w.shape[2] == 6 and v.shape[3] == 6)
  for b = 1, 3 do
    local rec = (v[b] * w[b]:view(1, 6)):matmul(v[b]:t())
    T.testing.assert_close(rec, a[b], { rtol = 1e-12, atol = 1e-12 })
    T.testing.assert_close(v[b]:t():matmul(v[b]), T.eye and T.eye(6) or (v[b]:t():matmul(v[b])), { atol = 1e-12 })
    for i = 1, 5 do assert(w[b][i]:item() <= w[b][i + 1]:item(), "ascending") end
  end
  -- orthonormal eigenvectors
  local g = v[1]:t():matmul(v[1])
  for i = 1, 6 do for j = 1, 6 do close(g[i][j]:item() + 1, (i == j and 2 or 1), 1e-12, "V^T V") end end
  local wf = T.linalg.eigvalsh(a[1]:float())
  assert(wf.dtype == "f32")
  T.testing.assert_close(wf:double(), w[1], { rtol = 1e-4, atol = 1e-4 })
  -- the lower triangle by default; uplo = "U" the upper
  local u = a[1]:clone()
  u[6][1] = 1e3
  T.testing.assert_close(T.linalg.eigvalsh(u, { uplo = "U" }), w[1], { rtol = 1e-12, atol = 1e-12 })
  T.testing.assert_raises("square matrices", function() T.linalg.eigh(T.zeros({ 2, 3 })) end)
  T.testing.assert_raises("f32 or f64", function() T.linalg.eigh(T.zeros({ 2, 2 }, { dtype = "i64" })) end)
  T.testing.assert_raises("non-finite value at [2, 1]", function()
    T.linalg.eigvalsh(T.tensor({ { 1, 0 }, { 0 / 0, 1 } }, { dtype = "f64" }))
  end)
  T.testing.assert_raises("has no gradient", function() T.linalg.eigh(T.ones({ 2, 2 }, { requires_grad = true })) end)
  T.testing.assert_raises("uplo must be", function() T.linalg.eigh(T.ones({ 2, 2 }), { uplo = "X" }) end)
end

---------------------------------------------------------------------------------------------
-- statistics and the Fréchet distance
---------------------------------------------------------------------------------------------
tests["Statistics in batches equal np.mean and np.cov"] = function()
  for _, case in ipairs({ { "f1", "mu1", "sigma1" }, { "f2", "mu2", "sigma2" }, { "f3", "mu3", "sigma3" } }) do
    local f = ref[case[1]]
    local st = eval.Statistics(f.shape[2])
    local n = f.shape[1]
    for first = 1, n, 47 do st:add(f:narrow(1, first, math.min(47, n - first + 1))) end
    assert(st.n == n)
    T.testing.assert_close(st:mean(), ref[case[2]], { rtol = 1e-12, atol = 1e-12, msg = case[2] })
    -- f3 sits at 1e4 from the origin: only a centred accumulation keeps its covariance
    T.testing.assert_close(st:cov(), ref[case[3]], { rtol = 1e-9, atol = 1e-11, msg = case[3] })
  end
  -- one batch, f32 features
  local st = eval.Statistics(24):add(ref.f1:float())
  T.testing.assert_close(st:cov(), ref.sigma1, { rtol = 1e-5, atol = 1e-6 })
end

tests["Fréchet distance equals pytorch-fid's and clean-fid's (scipy sqrtm) to 1e-6"] = function()
  local fid = eval.frechet_distance(ref.mu1, ref.sigma1, ref.mu2, ref.sigma2)
  close(fid, num(ref.fid_pytorch_fid), 1e-6, "pytorch-fid")
  close(fid, num(ref.fid_clean_fid), 1e-6, "clean-fid")
  -- from the features, through the one-pass statistics
  local a = eval.Statistics(24):add(ref.f1)
  local b = eval.Statistics(24):add(ref.f2)
  close(eval.fid(a, b), num(ref.fid_pytorch_fid), 1e-6, "eval.fid")
  close(eval.frechet_distance(ref.mu1, ref.sigma1, ref.mu1, ref.sigma1) + 1, 1, 1e-9, "d(x, x) = 0")
end

tests["KID equals torch-fidelity and clean-fid on the same features"] = function()
  -- subsets as large as the sets: every subset is the whole set, no randomness
  local m, s = M.kid(ref.k1, ref.k2, { subsets = 3, subset_size = 100 })
  close(m, num(ref.kid_full_torch_fidelity), 1e-10, "torch-fidelity")
  close(m, num(ref.kid_full_clean_fid), 1e-10, "clean-fid")
  assert(s < 1e-12 * math.abs(m))
  -- torch-fidelity's own random subsets, given as rows
  local rows = {}
  for i = 1, 5 do rows[i] = { ref["kid_rows1_" .. i], ref["kid_rows2_" .. i] } end
  m, s = M.kid(ref.k3, ref.k2, { indices = rows })
  close(m, num(ref.kid_subsets_mean), 1e-10, "KID mean over subsets")
  close(s, num(ref.kid_subsets_std), 1e-9, "KID std over subsets")
  -- tocha's own subsets: reproducible and the global generator untouched
  T.manual_seed(5)
  local before = T.rand({ 1 }):item()
  T.manual_seed(5)
  local a = M.kid(ref.k3, ref.k2, { subsets = 4, subset_size = 30, seed = 7 })
  assert(T.rand({ 1 }):item() == before, "kid leaves the global generator as it was")
  assert(a == M.kid(ref.k3, ref.k2, { subsets = 4, subset_size = 30, seed = 7 }))
  assert(a ~= M.kid(ref.k3, ref.k2, { subsets = 4, subset_size = 30, seed = 8 }))
end

tests["Inception Score equals torch-fidelity's on the same logits"] = function()
  local m, s = M.inception_score(ref.logits, { splits = 10, shuffle = false })
  close(m, num(ref.is_mean), 1e-12, "IS mean")
  close(s, num(ref.is_std), 1e-9, "IS std")
  m, s = M.inception_score(ref.logits, { splits = 4, order = ref.is_order })
  close(m, num(ref.is_shuffled_mean), 1e-12, "shuffled IS mean")
  close(s, num(ref.is_shuffled_std), 1e-9, "shuffled IS std")
  local m2 = M.inception_score(ref.logits:float(), { splits = 4 })  -- tocha's shuffle: close, not equal
  assert(math.abs(m2 - m) / m < 0.05)
end

tests["CLIP score: 100 cos, the mean clamped at 0 (torchmetrics)"] = function()
  local a = T.tensor({ { 1, 0 }, { 0, 2 }, { 3, 3 } }, { dtype = "f64" })
  local b = T.tensor({ { 2, 0 }, { 0, -1 }, { 1, 0 } }, { dtype = "f64" })
  local score, per = M.clip_score(a, b)
  T.testing.assert_close(per, T.tensor({ 100, -100, 100 / math.sqrt(2) }, { dtype = "f64" }), { atol = 1e-12 })
  close(score, (100 - 100 + 100 / math.sqrt(2)) / 3, 1e-12)
  assert(M.clip_score(a, -a) == 0)
end

---------------------------------------------------------------------------------------------
-- preprocessing
---------------------------------------------------------------------------------------------
tests["clean mode resizes as clean-fid (PIL's float bicubic) to 1e-3"] = function()
  for _, name in ipairs({ "up", "down", "thin" }) do
    local want = rsz["clean_" .. name]
    local got = image.resize_float(rsz["img_" .. name], { want.shape[2], want.shape[3] }):clamp(0, 255)
    T.testing.assert_close(got, want, { rtol = 0, atol = 1e-3, msg = name })
  end
  local x = eval.inception.prepare({ rsz.img_up }, "clean")
  T.testing.assert_close(x[1], (rsz.clean_up - 128) / 128, { rtol = 0, atol = 1e-3 / 128 })
end

tests["legacy mode resizes as pytorch-fid (bilinear, no antialias, 2x - 1) to 1e-3"] = function()
  local x = eval.inception.prepare({ rsz.img_up }, "legacy")
  assert(x.dtype == "f32" and x.shape[3] == 299 and x.shape[4] == 299)
  T.testing.assert_close(x[1], rsz.legacy_up, { rtol = 0, atol = 1e-5 })
  -- a list of different sizes resizes each; a u8 batch, a float batch in [0, 1] agree
  local both = eval.inception.prepare({ rsz.img_up, rsz.img_down }, "legacy")
  T.testing.assert_close(both[1], rsz.legacy_up, { rtol = 0, atol = 1e-5 })
  local batch = T.stack({ rsz.img_up, rsz.img_up }, 1)
  local list = eval.inception.images(batch)
  assert(#list == 2 and list[2].shape[3] == 3)
  local floats = eval.inception.images(batch:permute(1, 4, 2, 3):float() / 255)
  assert(floats[1]:eq(rsz.img_up):logical_not():sum():item() == 0, "float [0, 1] rounds back to the same pixels")
end

---------------------------------------------------------------------------------------------
-- the network
---------------------------------------------------------------------------------------------
local inc = T.load(T.testing.path("ref/eval_inception.safetensors"))
local net64
local function network()
  if not net64 then net64 = fill(models.InceptionV3FID({ dtype = "f64" })) end
  return net64
end

tests["InceptionV3FID matches pytorch-fid's network: every tap and the logits to 1e-5 (f64)"] = function()
  local net = network()
  assert(net:num_parameters() == 23850960)
  local names = { "64", "192", "768", "2048", "logits", "logits_unbiased" }
  local x = inc.x107 * 2 - 1
  local out = net(x, { outputs = names })
  for _, n in ipairs(names) do
    local want = n:match("^logits") and inc[n] or inc["feat" .. n]
    T.testing.assert_close(out[n], want, { rtol = 1e-5, atol = 1e-5 * want:abs():max():item(), msg = n })
  end
  -- folding the BatchNorms into the convolutions changes nothing but rounding
  net:fold()
  local folded = net(x, { outputs = { "2048", "logits" } })
  T.testing.assert_close(folded["2048"], inc.feat2048, { rtol = 1e-5, atol = 1e-5 * inc.feat2048:abs():max():item() })
  -- loading weights (or training) undoes the fold
  net:load_state_dict(net:state_dict())
  assert(rawget(net.Conv2d_1a_3x3, "_folded") == nil)
end

tests["legacy, clean and fidelity paths at 299 give pytorch-fid's, clean-fid's and torch-fidelity's features (f32)"] = function()
  local net = network()
  local net32 = models.InceptionV3FID()
  net32:load_state_dict(net:state_dict())
  net32:fold()
  for _, mode in ipairs({ "legacy", "clean", "fidelity" }) do
    local ext = eval.inception.Extractor({ weights = net32, mode = mode })
    local f = ext:features(T.stack({ inc.img }, 1))
    local want = inc[mode .. "_2048"]
    T.testing.assert_close(f:double(), want, { rtol = 1e-4, atol = 1e-4 * want:abs():max():item(), msg = mode })
    if mode == "fidelity" then -- and the logits torch-fidelity's Inception Score reads
      local l, wl = ext:logits({ inc.img }), inc.fidelity_logits_unbiased
      T.testing.assert_close(l:double(), wl, { rtol = 1e-4, atol = 1e-4 * wl:abs():max():item(), msg = "logits" })
    end
  end
end

---------------------------------------------------------------------------------------------
-- CLIP
---------------------------------------------------------------------------------------------
local CLIP_DIR = T.testing.path("ref/eval_clip")
local CAPTIONS = { "a small red circle on the left", "a blue square above a green triangle", "a big yellow star" }

tests["CLIPModel from a transformers folder matches transformers: pixels, image and text features"] = function()
  local r = T.load(T.testing.path("ref/eval_clip.safetensors"))
  local clip = eval.clip.load(CLIP_DIR, { dtype = "f64" })
  local imgs = { r.img1, r.img2, r.img3 }
  -- CLIPImageProcessor with PIL: shorter side to 32 (bicubic), center crop, normalise
  T.testing.assert_close(clip:pixel_values(imgs):double(), r.pixels_pil, { rtol = 0, atol = 1e-6 })
  T.testing.assert_close(clip.model:get_image_features(r.pixels_pil), r.image_features, { rtol = 1e-10, atol = 1e-12 })
  T.testing.assert_close(clip:image_features(imgs), r.image_features, { rtol = 1e-6, atol = 1e-7 })
  T.testing.assert_close(clip:text_features(CAPTIONS), r.text_features, { rtol = 1e-10, atol = 1e-12 })
  local n = 0
  for _ in pairs(clip.model:state_dict()) do n = n + 1 end
  assert(n == 78, "CLIPModel's 78 tensors")
end

tests["CLIP score equals torchmetrics' (mean, then clamp at 0)"] = function()
  local r = T.load(T.testing.path("ref/eval_clip.safetensors"))
  local imgs = { r.img1, r.img2, r.img3 }
  local score, per = eval.clip_score(imgs, CAPTIONS, { model = CLIP_DIR, dtype = "f64" })
  T.testing.assert_close(per, r.per_sample_pil, { rtol = 1e-6, atol = 1e-6 })
  close(score, num(r.score_pil), 1e-6, "CLIP score (PIL processor)")
  -- transformers 5's default processor resizes with torchvision: a few pixels a level apart
  close(score, num(r.score_torchvision), 1e-2, "CLIP score (torchvision processor)")
  assert(per:min():item() < 0 and score > 0, "the fixture has mixed signs: clamping the mean, not each pair")
end

---------------------------------------------------------------------------------------------
-- bad input
---------------------------------------------------------------------------------------------
tests["bad input: sizes, channels, dtypes, too few images, mismatched weights"] = function()
  local net = models.InceptionV3FID()
  T.testing.assert_raises("images must be at least 75 x 75", function() net(T.zeros({ 1, 3, 64, 64 })) end)
  T.testing.assert_raises("expected images [N, 3, H, W], got [1 x 4 x 80 x 80]", function() net(T.zeros({ 1, 4, 80, 80 })) end)
  T.testing.assert_raises("the images are f64, the network f32", function() net(T.zeros({ 1, 3, 80, 80 }, { dtype = "f64" })) end)
  T.testing.assert_raises("unknown output \"1000\"", function() net(T.zeros({ 1, 3, 80, 80 }), { outputs = { "1000" } }) end)
  T.testing.assert_raises("expected u8 [H, W, 3] images, got [8 x 8 x 4]", function() eval.inception.images({ T.zeros({ 8, 8, 4 }, { dtype = "u8" }) }) end)
  T.testing.assert_raises("a float batch must be [N, 3, H, W]", function() eval.inception.images(T.zeros({ 2, 8, 8, 3 })) end)
  T.testing.assert_raises("expected u8 [H, W, 3] images", function() eval.inception.images({ T.zeros({ 8, 8, 3 }, { dtype = "i32" }) }) end)
  -- statistics
  local st = eval.Statistics(4):add(T.randn({ 1, 4 }))
  T.testing.assert_raises("a covariance needs at least 2 samples, got 1", function() st:cov() end)
  T.testing.assert_raises("features have 5 dims, the statistics 4", function() st:add(T.randn({ 3, 5 })) end)
  T.testing.assert_raises("non-finite values", function() eval.Statistics(2):add(T.tensor({ { 1, 0 / 0 } })) end)
  local few = eval.Statistics(8):add(T.randn({ 5, 8 }))
  local many = eval.Statistics(8):add(T.randn({ 50, 8 }))
  T.testing.assert_raises("has 5 images for 8-dimensional features", function() eval.fid(few, many) end)
  local v = eval.fid(few, many, { allow_singular = true })
  assert(v == v and v > 0, "a rank-deficient covariance still gives a finite distance")
  T.testing.assert_raises("the covariances must be [8 x 8]", function()
    eval.frechet_distance(many:mean(), many:cov(), many:mean(), T.zeros({ 7, 7 }, { dtype = "f64" }))
  end)
  T.testing.assert_raises("sigma2 has 1 non-finite values", function()
    local s = many:cov():clone()
    s[2][3] = 0 / 0
    eval.frechet_distance(many:mean(), many:cov(), many:mean(), s)
  end)
  T.testing.assert_raises("kid: the features have 4 and 5 dims", function() M.kid(T.randn({ 9, 4 }), T.randn({ 9, 5 })) end)
  T.testing.assert_raises("kid: needs at least 2 samples", function() M.kid(T.randn({ 1, 4 }), T.randn({ 9, 4 })) end)
  T.testing.assert_raises("3 samples cannot fill 10 splits", function() M.inception_score(T.randn({ 3, 5 })) end)
  -- weights that do not fit
  local sd = net:state_dict()
  local bad = {}
  for k, t in pairs(sd) do bad[k] = t end
  bad["Mixed_5b.branch1x1.conv.weight"] = T.zeros({ 64, 191, 1, 1 })
  bad["Mixed_7c.branch_pool.bn.running_mean"] = nil
  bad["AuxLogits.fc.weight"] = T.zeros({ 1000, 768 })
  local ok, err = pcall(net.load_state_dict, net, bad)
  assert(not ok)
  for _, want in ipairs({ "missing keys: Mixed_7c.branch_pool.bn.running_mean", "unexpected keys: AuxLogits.fc.weight",
    "size mismatch for Mixed_5b.branch1x1.conv.weight" }) do
    assert(tostring(err):find(want, 1, true), "the error names " .. want .. ": " .. tostring(err))
  end
  bad = { ["fc.weight"] = T.zeros({ 1000, 2048 }) }
  T.testing.assert_raises("1000 classes (torchvision's ImageNet Inception-v3)", function() net:load_state_dict(bad) end)
  local dir = T.testing.tmpdir()
  T.save(dir .. "/wrong.safetensors", { ["fc.weight"] = T.zeros({ 1008, 2048 }) })
  T.testing.assert_raises("the weights in " .. dir .. "/wrong.safetensors do not fit the network", function()
    models.InceptionV3FID.from_file(dir .. "/wrong.safetensors")
  end)
  T.testing.assert_raises("no Inception weights at " .. dir .. "/none.safetensors", function()
    eval.inception.Extractor({ weights = dir .. "/none.safetensors" })
  end)
  T.testing.assert_raises("mode must be \"legacy\", \"clean\" or \"fidelity\"", function() eval.inception.Extractor({ weights = net, mode = "tf" }) end)
  T.testing.assert_raises("dims must be 64, 192, 768 or 2048", function() eval.inception.Extractor({ weights = net, dims = 100 }) end)
  -- CLIP
  local clip = eval.clip.load(CLIP_DIR)
  T.testing.assert_raises("expected pixel values [B, 3, 32, 32], got [1 x 3 x 16 x 16]", function()
    clip.model:get_image_features(T.zeros({ 1, 3, 16, 16 }))
  end)
  T.testing.assert_raises("2 images and 1 captions", function()
    eval.clip_score({ T.zeros({ 40, 40, 3 }, { dtype = "u8" }), T.zeros({ 40, 40, 3 }, { dtype = "u8" }) }, { "a" },
      { model = clip })
  end)
  T.testing.assert_raises("no config.json in " .. dir, function() eval.clip.load(dir) end)
end

return tests
