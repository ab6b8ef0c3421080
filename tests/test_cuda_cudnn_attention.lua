-- test_cuda_cudnn_attention.lua: scaled_dot_product_attention in f16 and bf16 through cuDNN's
-- fused attention (kernels/cudnn_attention.cu: an operation graph through the backend API, a
-- plan per problem) and the per-problem choice between it and the flash kernel: forward and the
-- gradients of q, k and v against the CPU in f64 where cuDNN runs them (head dims 40 to 128,
-- cross-attention, causal, float masks broadcast over batch and queries, E ~= Ev, strided
-- inputs, gradients wanted for some inputs only), and the fallback to flash, with its reason,
-- where cuDNN declines a problem (a head dim its engines refuse at the plan's finalize, bool
-- masks, dropout, broadcast or non-unit-stride operands, an output changed in place before the
-- backward, an execute that fails), and TOCHA_SDPA_BACKEND. On the CUDA emulator the graph API is emulated (tests/cudaemu/cudnn_graph.cpp): it
-- computes the graph's operations in double and refuses head dims above 128. Without a GPU
-- every test skips.
local T = require "tocha"
local F = require "tocha.nn.functional"

local H = dofile(T.testing.path("cuda_harness.lua"))
local DEV, need_gpu, suite, fail = H.DEV, H.need_gpu, H.suite, H.fail

local function N(...) return T.randn({ ... }, { dtype = "f64" }) end
local HALF = { "f16", "bf16" }

--- runs fn with the backend set to name, restoring the previous one (also on error)
local function with_backend(name, fn)
  local prev = T.backends.sdpa_backend(name)
  local ok, err = pcall(fn)
  T.backends.sdpa_backend(prev)
  if not ok then error(err, 0) end
end

--- whether the device is the CUDA emulator (whose cuDNN refuses head dims above 128; a real
--- cuDNN's engines take more)
local function emulated() return T.cuda.get_device_name(0):find("cudaemu", 1, true) ~= nil end

--- attention that checks, on the device, which backend its forward ran (want; "emulator:flash":
--- flash on the emulator, either on a GPU) and why (a pattern of the reason). On a GPU, a case
--- that wants cudnn fails, naming cuDNN's refusal, where the real cuDNN declines our graph.
local function attn(o, want, why)
  return function(q, k, v, m)
    local out = F.scaled_dot_product_attention(q, k, v,
      { attn_mask = m, is_causal = o.causal, scale = o.scale, dropout_p = o.p })
    if want == "emulator:flash" then want = emulated() and "flash" or nil end
    if q.device ~= "cpu" and want then
      local last = T.backends.sdpa_last()
      if last.forward ~= want or (why and not last.forward_reason:find(why)) then
        fail("the forward ran %s (%s), expected %s%s", last.forward, last.forward_reason, want,
          why and " (" .. why .. ")" or "")
      end
    end
    return out
  end
end

local list = {}
local function C(name, make, f, o)
  o = o or {}
  o.dtypes, o.tol, o.gtol = HALF, o.tol or 1, o.gtol or 2
  H.case(list, name, make, f, o)
end

local key_padding = H.key_padding

C("head dim 40, L = S = 77 (cuDNN)", function() return { N(2, 2, 77, 40), N(2, 2, 77, 40), N(2, 2, 77, 40) } end,
  attn({}, "cudnn"))
C("head dim 64, cross-attention L 130 x S 77, one batch dim (cuDNN)",
  function() return { N(3, 130, 64), N(3, 77, 64), N(3, 77, 64) } end, attn({}, "cudnn"))
C("head dim 80, causal, L = S = 90 (cuDNN)", function() return { N(1, 2, 90, 80), N(1, 2, 90, 80), N(1, 2, 90, 80) } end,
  attn({ causal = true }, "cudnn"))
C("head dim 128, causal L 70 < S 100 (top-left) (cuDNN)",
  function() return { N(2, 70, 128), N(2, 100, 128), N(2, 100, 128) } end, attn({ causal = true }, "cudnn"))
C("head dim 48, causal L 100 > S 40, scale 0.2 (cuDNN)",
  function() return { N(2, 100, 48), N(2, 40, 48), N(2, 40, 48) } end, attn({ causal = true, scale = 0.2 }, "cudnn"))
C("float key padding mask [B, 1, 1, S] as cuDNN's bias (broadcast over heads and queries)", function()
    local m = key_padding(77, { 77, 20 }):to("f64") * 30 - 30 + N(2, 1, 1, 77) * 0.5
    return { N(2, 3, 50, 64), N(2, 3, 77, 64), N(2, 3, 77, 64), m }
  end, attn({}, "cudnn"), { nograd = { [4] = true } })
C("float mask [L, S] broadcast over the batch (cuDNN)", function()
    return { N(2, 2, 40, 32), N(2, 2, 60, 32), N(2, 2, 60, 32), N(40, 60) }
  end, attn({}, "cudnn"), { nograd = { [4] = true } })
C("E 64, Ev 40 (cuDNN)", function() return { N(2, 50, 64), N(2, 77, 64), N(2, 77, 40) } end, attn({}, "cudnn"))
C("q and v transposed views, head dim unit-stride (cuDNN)", function()
    return { N(2, 69, 3, 40), N(2, 3, 81, 40), N(2, 81, 3, 24) }
  end, function(q, k, v)
    return attn({}, "cudnn")(q:transpose(2, 3), k, v:transpose(2, 3))
  end)
C("no batch dims, one query (L = 1) against S 77 (cuDNN)", function() return { N(1, 40), N(77, 40), N(77, 40) } end,
  attn({}, "cudnn"))
C("only v wants a gradient (cuDNN writes the others to temporaries)",
  function() return { N(2, 70, 96), N(2, 90, 96), N(2, 90, 96) } end,
  attn({ causal = true }, "cudnn"), { nograd = { [1] = true, [2] = true } })
-- declined: flash runs them, and says why
C("head dim 160: the emulated cuDNN's plan refuses it (flash)", function() return { N(2, 50, 160), N(2, 60, 160), N(2, 60, 160) } end,
  attn({}, "emulator:flash", "no engine's plan finalizes"))
C("bool mask (flash)", function()
    return { N(2, 2, 40, 32), N(2, 2, 60, 32), N(2, 2, 60, 32), key_padding(60, { 60, 11 }) }
  end, attn({}, "flash", "bool mask"))
C("dropout 0.3 (flash)", function() return { N(2, 70, 32), N(2, 90, 32), N(2, 90, 32) } end,
  attn({ p = 0.3 }, "flash", "dropout"))
C("k with a non-unit head-dim stride (flash)", function() return { N(2, 70, 40), N(2, 40, 81), N(2, 81, 40) } end,
  function(q, k, v) return attn({}, "flash", "unit%-stride")(q, k:transpose(2, 3), v) end)
C("k broadcast over a batch dim (flash)", function() return { N(2, 3, 70, 40), N(3, 77, 40), N(2, 3, 77, 40) } end,
  attn({}, "flash", "broadcast"))

--- q, k, v in dt on the device, wanting gradients
local function inputs(dt, ...)
  local out = {}
  for i, x in ipairs({ ... }) do out[i] = x:to(dt):to(DEV):requires_grad_() end
  return table.unpack(out)
end

--- the gradients of sum(out * gy) with respect to q, k, v, the output, and the backend the
--- backward ran; change: a function that may change the output before the backward
local function grads(q, k, v, o, change)
  local out = F.scaled_dot_product_attention(q, k, v, o)
  local forward = T.backends.sdpa_last().forward
  T.manual_seed(3)
  local gy = T.randn(out.shape):to(out.dtype):to(DEV)
  if change then change(out) end
  local loss = (out * gy):sum()
  loss:backward()
  local last = T.backends.sdpa_last()
  local g = { q.grad:clone(), k.grad:clone(), v.grad:clone() }
  q.grad, k.grad, v.grad = nil, nil, nil
  return g, forward, last.backward, last.backward_reason
end

local function close(a, b, what)
  for i = 1, 3 do
    local e = H.rel_err(a[i], b[i])
    if not (e <= 0.05) then fail("%s: gradient %d differs by %.3g", what, i, e) end
  end
end

return {
  ["cuDNN attention: forward and gradients against f64, and the fallback to flash"] = function()
    with_backend("cudnn", suite(list))
  end,

  ["cuDNN attention: the backward runs on cuDNN and agrees with flash's"] = function()
    need_gpu()
    T.manual_seed(7)
    local q, k, v = inputs("bf16", N(2, 2, 70, 40), N(2, 2, 77, 40), N(2, 2, 77, 40))
    local o = { is_causal = true }
    local gc, gf, fwd, bwd, why
    with_backend("cudnn", function() gc, fwd, bwd, why = grads(q, k, v, o) end)
    if fwd ~= "cudnn" or bwd ~= "cudnn" then fail("ran %s forward, %s backward (%s)", fwd, bwd, why) end
    with_backend("flash", function() gf, fwd, bwd = grads(q, k, v, o) end)
    if fwd ~= "flash" or bwd ~= "flash" then fail("flash forced, but ran %s forward, %s backward", fwd, bwd) end
    close(gc, gf, "cuDNN against flash")
  end,

  ["cuDNN attention: a flash forward's logsumexp serves cuDNN's backward"] = function()
    need_gpu()
    T.manual_seed(8)
    local q, k, v = inputs("f16", N(1, 3, 64, 64), N(1, 3, 50, 64), N(1, 3, 50, 64))
    local gf, gm, fwd, bwd
    with_backend("flash", function() gf = grads(q, k, v, {}) end)
    -- forward on flash, backward on cuDNN
    local out
    with_backend("flash", function() out = F.scaled_dot_product_attention(q, k, v) end)
    fwd = T.backends.sdpa_last().forward
    T.manual_seed(3)
    local gy = T.randn(out.shape):to(out.dtype):to(DEV)
    with_backend("cudnn", function() (out * gy):sum():backward() end)
    bwd = T.backends.sdpa_last().backward
    gm = { q.grad, k.grad, v.grad }
    if fwd ~= "flash" or bwd ~= "cudnn" then fail("ran %s forward, %s backward", fwd, bwd) end
    close(gm, gf, "flash forward + cuDNN backward against flash")
  end,

  ["cuDNN attention: an output changed in place leaves the backward to flash, correct"] = function()
    need_gpu()
    T.manual_seed(9)
    local q, k, v = inputs("bf16", N(2, 40, 32), N(2, 50, 32), N(2, 50, 32))
    local ga, gb, fwd, bwd, why
    with_backend("cudnn", function()
      ga = grads(q, k, v, {})
      -- out:mul_(1) bumps the storage's version without changing a value: the gradients stay
      -- those of the untouched output, from flash
      gb, fwd, bwd, why = grads(q, k, v, {}, function(out) T.no_grad(function() out:mul_(1) end) end)
    end)
    if fwd ~= "cudnn" or bwd ~= "flash" or not why:find("output is unknown") then
      fail("ran %s forward, %s backward (%s)", fwd, bwd, why)
    end
    close(gb, ga, "flash after an in-place change against cuDNN")
  end,

  ["cuDNN attention: TOCHA_SDPA_BACKEND, and a failed execute falls back to flash (emulator)"] = function()
    need_gpu()
    if not emulated() then skip("TOCHA_EMU_CUDNN_FAIL_EXECUTE is the CUDA emulator's") end
    local exe = arg and arg[-1]
    if not exe or not io.popen then skip("no interpreter path to start a process with") end
    local script = [[ -e 'local T = require "tocha"
      local F = require "tocha.nn.functional"
      T.manual_seed(1)
      local q, k, v = T.randn({2, 40, 32}), T.randn({2, 50, 32}), T.randn({2, 50, 32})
      local ref = F.scaled_dot_product_attention(q, k, v)
      local d = {}
      for i, x in ipairs({q, k, v}) do d[i] = x:to("bf16"):to("cuda"):requires_grad_() end
      local out = F.scaled_dot_product_attention(d[1], d[2], d[3])
      out:sum():backward()
      local last = T.backends.sdpa_last()
      local err = (out:to("cpu"):double() - ref:double()):abs():max():item()
      io.write(string.format("ran=%s/%s err=%.4f why=%s\n", last.forward, last.backward, err, last.forward_reason))' 2>&1]]
    local function run(env)
      local p = io.popen(env .. " " .. exe .. script)
      local out = p:read("a")
      p:close()
      return out
    end
    local out = run("TOCHA_EMU_CUDNN_FAIL_EXECUTE=1")
    local err = tonumber(out:match("err=([%d.]+)"))
    if not (out:find("ran=flash/flash", 1, true) and out:find("failed to run: cudnnBackendExecute returned", 1, true)
        and err and err < 0.05) then
      fail("with every execute failing: %s", out)
    end
    out = run("TOCHA_SDPA_BACKEND=flash")
    if not out:find("ran=flash/flash", 1, true) or not out:find("TOCHA_SDPA_BACKEND", 1, true) then
      fail("with TOCHA_SDPA_BACKEND=flash: %s", out)
    end
    out = run("TOCHA_SDPA_BACKEND=cudnn")
    if not out:find("ran=cudnn/cudnn", 1, true) then fail("with TOCHA_SDPA_BACKEND=cudnn: %s", out) end
  end,

  ["cuDNN attention: the backend switch takes cudnn or flash, and nothing else"] = function()
    local prev = T.backends.sdpa_backend()
    local ok, err = pcall(T.backends.sdpa_backend, "cutlass")
    if ok or not tostring(err):find('expected "cudnn" or "flash", got "cutlass"', 1, true) then
      fail("sdpa_backend(\"cutlass\") gave %s", tostring(err))
    end
    if T.backends.sdpa_backend() ~= prev then fail("a refused name changed the backend") end
    if T.backends.sdpa_backend("flash") ~= prev or T.backends.sdpa_backend(prev) ~= "flash" then
      fail("sdpa_backend does not return the previous backend")
    end
  end,
}
