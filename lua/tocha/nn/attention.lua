-- tocha/nn/attention.lua: nn.MultiheadAttention, self- or cross-attention with separate q, k, v
-- and output projections named as diffusers' Attention (to_q, to_k, to_v, to_out.0), so the
-- attention weights of a diffusers UNet or transformer load by name. Batch first: [B, L, E].
local F = require "tocha.nn.functional"
local M = require "tocha.nn.module"
local L = require "tocha.nn.layers"

local MHA = M.Module:extend("MultiheadAttention")

--- nn.MultiheadAttention(embed_dim, num_heads, {context_dim = embed_dim, dim_head =
--- embed_dim / num_heads, bias = false, out_bias = true, dropout = 0, dtype, device}):
--- to_q [heads * dim_head, embed_dim], to_k and to_v [heads * dim_head, context_dim], to_out.0
--- [embed_dim, heads * dim_head] then to_out.1, a Dropout(dropout) on the output (as diffusers;
--- the attention weights themselves are not dropped). bias is for q, k, v (false, as diffusers).
function MHA:init(embed_dim, num_heads, opts)
  opts = opts or {}
  if math.type(embed_dim) ~= "integer" or embed_dim < 1 then error("MultiheadAttention: embed_dim must be a positive integer", 2) end
  if math.type(num_heads) ~= "integer" or num_heads < 1 then error("MultiheadAttention: num_heads must be a positive integer", 2) end
  local dim_head = opts.dim_head
  if dim_head == nil then
    if embed_dim % num_heads ~= 0 then
      error(string.format("MultiheadAttention: embed_dim (%d) must be divisible by num_heads (%d), or give dim_head",
        embed_dim, num_heads), 2)
    end
    dim_head = embed_dim // num_heads
  end
  local context_dim = opts.context_dim or embed_dim
  self.embed_dim, self.heads, self.dim_head, self.context_dim = embed_dim, num_heads, dim_head, context_dim
  local inner = num_heads * dim_head
  local lo = { bias = opts.bias == true, dtype = opts.dtype, device = opts.device }
  self.to_q = L.Linear(embed_dim, inner, lo)
  self.to_k = L.Linear(context_dim, inner, lo)
  self.to_v = L.Linear(context_dim, inner, lo)
  self.to_out = M.ModuleList({
    L.Linear(inner, embed_dim, { bias = opts.out_bias ~= false, dtype = opts.dtype, device = opts.device }),
    L.Dropout(opts.dropout or 0),
  })
end

-- [B, N, heads * dim_head] -> [B, heads, N, dim_head]
local function split_heads(t, heads, dim_head)
  return t:view(t.shape[1], t.shape[2], heads, dim_head):transpose(2, 3)
end

--- attn(x [B, L, embed_dim], context [B, S, context_dim] or nil (self-attention),
--- {attn_mask, is_causal}) -> [B, L, embed_dim]. attn_mask broadcasts to [B, heads, L, S]:
--- bool (true = may attend) or float (added to the scores).
function MHA:forward(x, context, opts)
  opts = opts or {}
  if x:dim() ~= 3 then error("MultiheadAttention: x must be [batch, length, embed_dim], got " .. x:dim() .. " dims", 2) end
  context = context or x
  if context:dim() ~= 3 or context.shape[1] ~= x.shape[1] then
    error("MultiheadAttention: context must be [batch, length, context_dim] with x's batch size", 2)
  end
  local h, d = self.heads, self.dim_head
  local q = split_heads(self.to_q(x), h, d)
  local k = split_heads(self.to_k(context), h, d)
  local v = split_heads(self.to_v(context), h, d)
  local o = F.scaled_dot_product_attention(q, k, v, { attn_mask = opts.attn_mask, is_causal = opts.is_causal })
  o = o:transpose(2, 3):reshape(x.shape[1], x.shape[2], h * d)
  return self.to_out[2](self.to_out[1](o))
end

function MHA:extra_repr()
  local s = string.format("embed_dim=%d, heads=%d, dim_head=%d", self.embed_dim, self.heads, self.dim_head)
  if self.context_dim ~= self.embed_dim then s = s .. ", context_dim=" .. self.context_dim end
  return s
end

return { MultiheadAttention = MHA }
