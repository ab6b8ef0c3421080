-- tocha.nn.functional: neural-net ops with PyTorch's argument conventions. Tensors come
-- first and positionally, then what PyTorch takes positionally, then one options table.
-- Each function normalises its options and calls the raw C op in T._nn (lua/lnn.c,
-- lua/lnorm.c) or a tensor method; dims are 1-based (negative counts from the end).
local T = require "tocha"
local C = T._nn

local F = {}

local function pair(v, name, default)
  if v == nil then v = default end
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(string.format("%s must be a number or a pair {h, w}", name), 3)
end

local REDUCTIONS = { none = true, mean = true, sum = true }
local function reduction(opts)
  local r = opts.reduction or "mean"
  if not REDUCTIONS[r] then error("reduction must be \"none\", \"mean\" or \"sum\" (got " .. tostring(r) .. ")", 3) end
  return r
end

-- activations -------------------------------------------------------------------------------
function F.relu(x) return x:relu() end
function F.silu(x) return x:silu() end
function F.gelu(x, opts) return x:gelu(opts) end
function F.sigmoid(x) return x:sigmoid() end
function F.tanh(x) return x:tanh() end
function F.softplus(x) return x:softplus() end
function F.leaky_relu(x, slope) return x:leaky_relu(slope or 0.01) end
--- x * sigmoid(1.702 x) (CLIP's activation), one fused op
function F.quick_gelu(x) return x:quick_gelu() end

--- F.bias_act(x, b, act): act(x + b) as one op, b [C] (or nil) added along x's last dim; act
--- "relu", "silu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid" or "tanh". The bias and the
--- activation of a linear layer in one pass: F.bias_act(F.linear(x, w), b, "silu")
function F.bias_act(x, b, act) return C.bias_act(x, b, act, false) end

--- F.geglu(x, b, {approximate = "none"}): x [.., 2C] -> [.., C], the first half times the GELU of
--- the second (diffusers' GEGLU after its projection), with b [2C] (or nil) added first, as one
--- op; approximate = "tanh" takes GELU's tanh form
function F.geglu(x, b, opts)
  local approx = opts and opts.approximate or "none"
  if approx ~= "none" and approx ~= "tanh" then
    error("geglu: approximate must be \"none\" or \"tanh\", got " .. tostring(approx), 2)
  end
  return C.bias_act(x, b, approx == "tanh" and "gelu_tanh" or "gelu", true)
end

-- linear and convolution --------------------------------------------------------------------
function F.linear(x, w, b) return T.linear(x, w, b) end

--- F.conv2d(x, w, b, {stride = 1, padding = 0, dilation = 1, groups = 1})
--- padding may be a number, a pair, or "same" (stride 1) / "valid"
function F.conv2d(x, w, b, opts)
  opts = opts or {}
  local sh, sw = pair(opts.stride, "stride", 1)
  local dh, dw = pair(opts.dilation, "dilation", 1)
  local ph, pw
  if opts.padding == "valid" then ph, pw = 0, 0
  elseif opts.padding == "same" then
    if sh ~= 1 or sw ~= 1 then error("conv2d: padding = \"same\" needs stride 1", 2) end
    local kh, kw = w.shape[3], w.shape[4]
    ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    if (dh * (kh - 1)) % 2 ~= 0 or (dw * (kw - 1)) % 2 ~= 0 then
      error("conv2d: padding = \"same\" with an even kernel is not supported", 2)
    end
  else ph, pw = pair(opts.padding, "padding", 0) end
  return C.conv2d(x, w, b, sh, sw, ph, pw, dh, dw, opts.groups or 1)
end

--- F.conv_transpose2d(x, w, b, {stride, padding, output_padding, dilation, groups});
--- w is [in, out / groups, kh, kw] as in PyTorch
function F.conv_transpose2d(x, w, b, opts)
  opts = opts or {}
  local sh, sw = pair(opts.stride, "stride", 1)
  local ph, pw = pair(opts.padding, "padding", 0)
  local oh, ow = pair(opts.output_padding, "output_padding", 0)
  local dh, dw = pair(opts.dilation, "dilation", 1)
  return C.conv_transpose2d(x, w, b, sh, sw, ph, pw, oh, ow, dh, dw, opts.groups or 1)
end

-- pooling, resampling, padding ------------------------------------------------------------------
--- F.avg_pool2d(x, kernel_size, {stride = kernel_size, padding = 0, ceil_mode, count_include_pad = true})
function F.avg_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, "kernel_size")
  local sh, sw = pair(opts.stride, "stride", { kh, kw })
  local ph, pw = pair(opts.padding, "padding", 0)
  local cip = opts.count_include_pad
  if cip == nil then cip = true end
  return C.avg_pool2d(x, kh, kw, sh, sw, ph, pw, opts.ceil_mode or false, cip)
end

--- F.max_pool2d(x, kernel_size, {stride = kernel_size, padding = 0, dilation = 1, ceil_mode})
function F.max_pool2d(x, kernel, opts)
  opts = opts or {}
  local kh, kw = pair(kernel, "kernel_size")
  local sh, sw = pair(opts.stride, "stride", { kh, kw })
  local ph, pw = pair(opts.padding, "padding", 0)
  local dh, dw = pair(opts.dilation, "dilation", 1)
  return C.max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, opts.ceil_mode or false)
end

--- F.interpolate(x, {size = {h, w}} or {scale_factor = 2, mode = "nearest" | "bilinear", align_corners,
--- recompute_scale_factor}). The kernel maps output to input pixels by the sizes; PyTorch maps
--- by a given scale_factor itself, which is the same when the input size times the factor is a
--- whole number. When it is not (1.5 on 5 pixels), pass recompute_scale_factor = true (PyTorch's
--- option that maps by the sizes) or a size.
function F.interpolate(x, opts)
  opts = opts or {}
  if #x.shape ~= 4 then error("interpolate: expected a 4-d input [N, C, H, W]", 2) end
  local h, w
  if opts.size then h, w = pair(opts.size, "size")
  elseif opts.scale_factor then
    local fh, fw = pair(opts.scale_factor, "scale_factor")
    local sh, sw = x.shape[3] * fh, x.shape[4] * fw
    h, w = math.floor(sh), math.floor(sw)
    if (sh ~= h or sw ~= w) and not opts.recompute_scale_factor and not opts.align_corners then
      error(string.format("interpolate: scale_factor %g x %g on %d x %d pixels is not a whole size; PyTorch then maps "
        .. "pixels by the factor and tocha by the sizes: give size = {%d, %d} or recompute_scale_factor = true",
        fh, fw, x.shape[3], x.shape[4], h, w), 2)
    end
  else error("interpolate: give size or scale_factor", 2) end
  local mode = opts.mode or "nearest"
  if mode ~= "nearest" and mode ~= "bilinear" then
    error("interpolate: mode must be \"nearest\" or \"bilinear\" (got " .. tostring(mode) .. ")", 2)
  end
  return C.interpolate(x, h, w, mode, opts.align_corners or false)
end

--- F.pad(x, {left, right, top, bottom, ...}, {mode = "constant" | "reflect" | "replicate", value = 0})
--- pads start from the last dim, as torch.nn.functional.pad
function F.pad(x, pads, opts)
  opts = opts or {}
  if type(pads) ~= "table" or #pads % 2 ~= 0 then error("pad: pads must be a table of (before, after) pairs", 2) end
  return C.pad(x, pads, opts.mode or "constant", opts.value or 0)
end

-- softmax and losses --------------------------------------------------------------------------
function F.softmax(x, dim) return C.softmax(x, dim or -1) end
function F.log_softmax(x, dim) return C.log_softmax(x, dim or -1) end

--- F.cross_entropy(logits [N, C] or [N, C, d...], target, {weight, ignore_index = -100,
--- label_smoothing = 0, reduction = "mean"}); target holds 1-based class indices (i64),
--- or class probabilities shaped like logits
function F.cross_entropy(logits, target, opts)
  opts = opts or {}
  return C.cross_entropy(logits, target, opts.weight, opts.ignore_index or -100,
    opts.label_smoothing or 0, reduction(opts))
end

function F.mse_loss(a, b, opts) return C.mse_loss(a, b, reduction(opts or {})) end
function F.l1_loss(a, b, opts) return C.l1_loss(a, b, reduction(opts or {})) end

function F.nll_loss(logp, target, opts)
  opts = opts or {}
  local picked = -logp:gather(2, target:unsqueeze(2)):squeeze(2)
  local r = reduction(opts)
  if r == "none" then return picked elseif r == "sum" then return picked:sum() end
  return picked:mean()
end

-- normalisation ---------------------------------------------------------------------------------
--- F.layer_norm(x, normalized_shape, w, b, {eps = 1e-5})
function F.layer_norm(x, normalized_shape, w, b, opts)
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  local n = #normalized_shape
  for i = 1, n do
    if x.shape[#x.shape - n + i] ~= normalized_shape[i] then
      error(string.format("layer_norm: normalized_shape {%s} does not match the input's trailing dims [%s]",
        table.concat(normalized_shape, ", "), table.concat(x.shape, " x ")), 2)
    end
  end
  return C.layer_norm(x, n, w, b, opts)
end

--- F.group_norm(x, num_groups, w, b, {eps = 1e-5, silu = false}); silu: silu(group_norm(x)) as one op
function F.group_norm(x, groups, w, b, opts)
  return C.group_norm(x, groups, w, b, opts)
end

--- F.batch_norm(x, running_mean, running_var, w, b, {training = false, momentum = 0.1,
--- eps = 1e-5}): x [N, C, *] normalised per channel. In training (or without running
--- statistics) by the batch's mean and biased variance, and running_mean / running_var (when
--- given) move toward the batch's mean and unbiased variance by momentum, in place; otherwise
--- by the running statistics.
function F.batch_norm(x, running_mean, running_var, w, b, opts)
  opts = opts or {}
  if x:dim() < 2 then error("batch_norm: expected an input [N, C, *], got " .. x:dim() .. "-d", 2) end
  local C = x.shape[2]
  for name, t in pairs({ running_mean = running_mean, running_var = running_var, weight = w, bias = b }) do
    if t ~= nil and (t:dim() ~= 1 or t.shape[1] ~= C) then
      error(string.format("batch_norm: %s has shape [%s], expected [%d] (the input's channels)", name,
        table.concat(t.shape, " x "), C), 2)
    end
  end
  if (running_mean == nil) ~= (running_var == nil) then error("batch_norm: give both running statistics or neither", 2) end
  local shape = { 1, C }
  for _ = 3, x:dim() do shape[#shape + 1] = 1 end
  local eps = opts.eps or 1e-5
  if opts.training or running_mean == nil then
    local n = x:numel() // C
    if n <= 1 then
      error(string.format("batch_norm: expected more than 1 value per channel when training, got input [%s]",
        table.concat(x.shape, " x ")), 2)
    end
    -- channels first, each a contiguous row: the statistics are then layer_norm's over a row,
    -- whose fused kernels (forward and backward) beat reductions across the batch and space
    local xt = x:transpose(1, 2):reshape(C, n)
    if running_mean ~= nil then
      local m = opts.momentum or 0.1
      T.no_grad(function()
        local xd = xt:detach()
        running_mean:mul_(1 - m):add_(xd:mean(2):to(running_mean.dtype), m)
        running_var:mul_(1 - m):add_(xd:var(2, false, { correction = 1 }):to(running_var.dtype), m)
      end)
    end
    local z = F.layer_norm(xt, { n }, nil, nil, { eps = eps })
    if w ~= nil then z = z * w:view(C, 1) end
    if b ~= nil then z = z + b:view(C, 1) end
    local cn = { C, x.shape[1] }
    for d = 3, x:dim() do cn[#cn + 1] = x.shape[d] end
    return z:view(cn):transpose(1, 2):contiguous()
  end
  local scale = (running_var:view(shape) + eps):rsqrt()
  if w ~= nil then scale = scale * w:view(shape) end
  local y = (x - running_mean:view(shape)) * scale
  return b ~= nil and y + b:view(shape) or y
end

-- regularisation, embedding, attention ------------------------------------------------------------
--- F.dropout(x, p = 0.5, {training = true})
function F.dropout(x, p, opts)
  local training = true
  if opts and opts.training ~= nil then training = opts.training end
  return C.dropout(x, p or 0.5, training)
end

--- F.embedding(ids, weight, {padding_idx}): ids hold 1-based rows of weight
function F.embedding(ids, weight, opts)
  return T.embedding(ids, weight, (opts and opts.padding_idx) or 0)
end

--- F.scaled_dot_product_attention(q, k, v, {attn_mask, is_causal, dropout_p = 0, scale})
--- q [..., L, E], k [..., S, E], v [..., S, Ev]; a bool mask is true where attention is
--- allowed, a float mask is added to the scores
function F.scaled_dot_product_attention(q, k, v, opts)
  return C.sdpa(q, k, v, opts)
end

return F
