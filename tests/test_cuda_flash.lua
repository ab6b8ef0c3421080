-- test_cuda_flash.lua: scaled_dot_product_attention in f16 and bf16 on the GPU, the tensor-core
-- kernels of kernels/flash.cu (head dims multiples of 8 up to 256), forward and the gradients of
-- q, k and v against the CPU in f64 on the same rounded inputs: the head dims of Stable
-- Diffusion's attention (40, 80, 160) and others, query and key tiles cut short (L, S not
-- multiples of 64), cross-attention (S 77), causal with L < S and L > S, key padding masks
-- (bool and float), E ~= Ev, strided and broadcast inputs, dropout, fully masked rows, and
-- gradients wanted for only some of q, k, v; the flash kernel forced (T.backends.sdpa_backend).
-- Without a GPU every test skips.
--   TOCHA_CUDA_VERBOSE=1   prints every check's largest error
local T = require "tocha"
local F = require "tocha.nn.functional"

local H = dofile(T.testing.path("cuda_harness.lua"))
local DEV, need_gpu, suite = H.DEV, H.need_gpu, H.suite

local function N(...) return T.randn({ ... }, { dtype = "f64" }) end
local HALF = { "f16", "bf16" }

local list = {}
-- probabilities and dS are rounded to the input dtype for the tensor cores, so gradients carry
-- a few of its units more than the output
local function C(name, make, f, o)
  o = o or {}
  o.dtypes, o.tol, o.gtol = HALF, o.tol or 2, o.gtol or 4
  H.case(list, name, make, f, o)
end
local attn = function(o) return function(q, k, v, m) return F.scaled_dot_product_attention(q, k, v,
  { attn_mask = m, is_causal = o.causal, scale = o.scale, dropout_p = o.p }) end end

local key_padding = H.key_padding

C("head dim 40, L = S = 77", function() return { N(2, 2, 77, 40), N(2, 2, 77, 40), N(2, 2, 77, 40) } end, attn({}))
C("head dim 64, cross-attention L 130 x S 77", function() return { N(2, 130, 64), N(2, 77, 64), N(2, 77, 64) } end,
  attn({}))
C("head dim 80, causal, L = S = 150", function() return { N(1, 2, 150, 80), N(1, 2, 150, 80), N(1, 2, 150, 80) } end,
  attn({ causal = true }))
C("head dim 128, causal L 70 < S 200 (top-left)", function() return { N(2, 70, 128), N(2, 200, 128), N(2, 200, 128) } end,
  attn({ causal = true }))
C("head dim 48, causal L 140 > S 77", function() return { N(2, 140, 48), N(2, 77, 48), N(2, 77, 48) } end,
  attn({ causal = true }))
C("head dim 160, key padding mask (bool [B, 1, 1, S])", function()
    return { N(2, 2, 90, 160), N(2, 2, 100, 160), N(2, 2, 100, 160), key_padding(100, { 100, 37 }) }
  end, attn({}))
C("head dim 256, L 65, S 129, scale 0.05", function() return { N(1, 65, 256), N(1, 129, 256), N(1, 129, 256) } end,
  attn({ scale = 0.05 }))
C("E 64, Ev 40, float key padding mask (added)", function()
    local m = key_padding(77, { 77, 20 }):to("f64") * 30 - 30 + N(2, 1, 1, 77) * 0.5
    return { N(2, 3, 50, 64), N(2, 3, 77, 64), N(2, 3, 77, 40), m }
  end, attn({}), { nograd = { [4] = true } })
C("strided q, k, v (transposed; k with a non-unit inner stride)", function()
    return { N(2, 69, 3, 40), N(2, 3, 40, 81), N(2, 81, 3, 24) }
  end, function(q, k, v) return F.scaled_dot_product_attention(q:transpose(2, 3), k:transpose(3, 4), v:transpose(2, 3)) end)
C("bool mask [L, S] with fully masked rows, head dim 8", function()
    local m = T.rand({ 70, 66 }):lt(0.5)
    m:narrow(1, 3, 1):fill_(0)
    m:narrow(1, 68, 1):fill_(0)
    return { N(2, 70, 8), N(2, 66, 8), N(2, 66, 8), m }
  end, attn({}))
C("head dim 80, L 50 < 64, S 150 (one query tile: gk, gv written directly)",
  function() return { N(2, 50, 80), N(2, 150, 80), N(2, 150, 80) } end, attn({}))
C("520 slices of 40 keys (a key tile's 3 query tiles split over 2 blocks, gk, gv summed)",
  function() return { N(520, 150, 8), N(520, 40, 8), N(520, 40, 16) } end, attn({}))
C("q, k, v narrowed by one element (rows not 16-byte aligned: copied element by element)", function()
    return { N(2, 70, 48), N(2, 66, 48), N(2, 66, 48) }
  end, function(q, k, v) return F.scaled_dot_product_attention(q:narrow(3, 2, 40), k:narrow(3, 2, 40), v:narrow(3, 9, 32)) end)
C("broadcast batch dims (k [3, S, E], v [1, 3, S, Ev])", function() return { N(2, 3, 70, 40), N(3, 77, 40), N(1, 3, 77, 24) } end,
  attn({}))
C("head dim 96, only v wants a gradient", function() return { N(2, 70, 96), N(2, 90, 96), N(2, 90, 96) } end,
  attn({ causal = true }), { nograd = { [1] = true, [2] = true } })
C("head dim 96, only q wants a gradient", function() return { N(2, 70, 96), N(2, 90, 96), N(2, 90, 96) } end,
  attn({}), { nograd = { [2] = true, [3] = true } })
C("head dim 40, only k wants a gradient", function() return { N(2, 70, 40), N(2, 90, 40), N(2, 90, 40) } end,
  attn({}), { nograd = { [1] = true, [3] = true } })
C("dropout 0.3 (the CPU's mask), head dim 32, L 70, S 90", function() return { N(2, 70, 32), N(2, 90, 32), N(2, 90, 32) } end,
  attn({ p = 0.3 }))

--- runs fn with the flash kernel forced (cuDNN's fused attention, where it takes a problem, is
--- tested in test_cuda_cudnn_attention.lua)
local function on_flash(fn)
  return function()
    local prev = T.backends.sdpa_backend("flash")
    local ok, err = pcall(fn)
    T.backends.sdpa_backend(prev)
    if not ok then error(err, 0) end
  end
end

return {
  ["f16, bf16 attention on tensor cores: forward and gradients against f64"] = on_flash(suite(list)),

  ["f16 causal attention at L 200 matches the f32 tiled kernel on the device"] = on_flash(function()
    need_gpu()
    T.manual_seed(5)
    local q, k, v = N(1, 4, 200, 40), N(1, 4, 200, 40), N(1, 4, 200, 40)
    local function on(x, dt) return x:to(dt):to(DEV) end
    local ref = F.scaled_dot_product_attention(on(q, "f32"), on(k, "f32"), on(v, "f32"), { is_causal = true })
    local out = F.scaled_dot_product_attention(on(q, "f16"), on(k, "f16"), on(v, "f16"), { is_causal = true })
    T.testing.assert_close(out:to("f32"):to("cpu"), ref:to("cpu"), { rtol = 1e-2, atol = 1e-2 })
  end),
}
