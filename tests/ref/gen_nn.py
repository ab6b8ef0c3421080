# tests/ref/gen_nn.py: PyTorch references for tests/test_nn.lua. Writes
#   tests/ref/nn_ref.lua          per-layer cases (weights, input, output; float64) and the
#                                 small model's input, expected output and gradients
#   tests/ref/nn_model.safetensors that model's state_dict, saved by safetensors.torch.save_file
# The attention is diffusers' own Attention class, so its parameter names are checked too.
# Run by hand: python3 tests/ref/gen_nn.py  (needs torch, safetensors, diffusers)
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)


def enc(t):
    t = t.detach().double().contiguous()
    vals = ", ".join(repr(v) for v in t.reshape(-1).tolist())
    return "{shape = {%s}, v = {%s}}" % (", ".join(str(s) for s in t.shape), vals)


def enc_sd(m):
    items = ['["%s"] = %s' % (k, enc(v)) for k, v in m.state_dict().items()]
    return "{" + ",\n      ".join(items) + "}"


def randomize(m):
    # norms start at ones/zeros; random values make the comparison meaningful
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                p.normal_(0, 1)
    return m


cases = {}


def case(name, module, x, y, **extra):
    fields = ["sd = " + enc_sd(module), "x = " + enc(x), "y = " + enc(y)]
    for k, v in extra.items():
        fields.append("%s = %s" % (k, enc(v) if torch.is_tensor(v) else v))
    cases[name] = "{\n    " + ",\n    ".join(fields) + "}"


def run(name, module, x, **extra):
    module = module.double()
    with torch.no_grad():
        y = module(x.double())
    case(name, module, x, y, **extra)


# ---- layers ---------------------------------------------------------------------------------
run("linear", nn.Linear(5, 3), torch.randn(2, 4, 5))
run("linear_nobias", nn.Linear(5, 3, bias=False), torch.randn(3, 5))
run("conv2d", nn.Conv2d(4, 6, 3, stride=2, padding=1), torch.randn(2, 4, 7, 6))
run("conv2d_groups", nn.Conv2d(4, 6, (3, 2), groups=2, dilation=(2, 1), padding=(2, 0), bias=False),
    torch.randn(2, 4, 6, 5))
run("conv2d_reflect", nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"), torch.randn(1, 3, 5, 4))
run("conv_transpose2d", nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
    torch.randn(2, 4, 5, 4))
run("group_norm", randomize(nn.GroupNorm(3, 6, eps=1e-6)), torch.randn(2, 6, 4, 5))
run("layer_norm", randomize(nn.LayerNorm(7)), torch.randn(3, 5, 7))
run("layer_norm_2d", randomize(nn.LayerNorm([5, 7], eps=1e-6)), torch.randn(3, 5, 7))
run("silu", nn.SiLU(), torch.randn(3, 7))
run("gelu", nn.GELU(), torch.randn(3, 7))
run("gelu_tanh", nn.GELU(approximate="tanh"), torch.randn(3, 7))
run("relu", nn.ReLU(), torch.randn(3, 7))
run("upsample_nearest", nn.Upsample(scale_factor=2, mode="nearest"), torch.randn(1, 2, 3, 4))
run("upsample_bilinear", nn.Upsample(size=(5, 7), mode="bilinear"), torch.randn(1, 2, 3, 4))
run("upsample_bilinear_ac", nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
    torch.randn(1, 2, 3, 4))

emb = nn.Embedding(10, 4, padding_idx=2).double()
ids = torch.tensor([[0, 2, 9], [3, 3, 1]])
case("embedding", emb, ids + 1, emb(ids).detach(), padding_idx=3)  # tocha ids are 1-based

# diffusers' Attention: the parameter names nn.MultiheadAttention follows
attn_self = Attention(query_dim=8, heads=2, dim_head=4, bias=True).double().eval()
x = torch.randn(2, 5, 8, dtype=torch.float64)
with torch.no_grad():
    case("attention_self", attn_self, x, attn_self(x))
attn_cross = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=3).double().eval()
ctx = torch.randn(2, 3, 6, dtype=torch.float64)
with torch.no_grad():
    case("attention_cross", attn_cross, x, attn_cross(x, encoder_hidden_states=ctx), context=ctx)


def causal(attn, x):
    B, L, _ = x.shape
    q, k, v = (f(x).view(B, L, attn.heads, -1).transpose(1, 2) for f in (attn.to_q, attn.to_k, attn.to_v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, -1)
    return attn.to_out[0](o)


with torch.no_grad():
    case("attention_causal", attn_self, x, causal(attn_self, x))


# ---- a small model mixing the layers, its state_dict saved as safetensors -------------------
class Block(nn.Module):
    def __init__(self, ch, groups, emb_dim, heads):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, ch)
        self.norm2 = nn.LayerNorm(ch)
        self.attn = Attention(query_dim=ch, cross_attention_dim=emb_dim, heads=heads, dim_head=ch // heads)

    def forward(self, x, emb, ctx):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(emb)[:, :, None, None]
        B, C, H, W = h.shape
        t = h.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm2(t), encoder_hidden_states=ctx)
        return t.transpose(1, 2).reshape(B, C, H, W)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8, 2, 6, 2), Block(8, 4, 6, 4)])
        self.head = nn.Sequential(nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, ids):
        ctx = self.embed(ids)
        emb = ctx.mean(1)
        h = self.conv_in(x)
        for b in self.blocks:
            h = b(h, emb, ctx)
        return self.head(h)


model = Model()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "norm" in name or name.startswith("head.0"):
            p.normal_(0, 1)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(HERE, "nn_model.safetensors"))

model = model.double().eval()
x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
ids = torch.tensor([[1, 4, 11, 0], [7, 7, 2, 5]])
r = torch.randn(2, 3, 6, 5, dtype=torch.float64)
y = model(x, ids)
(y * r).sum().backward()
grads = dict(model.named_parameters())
cases["model"] = "{\n    " + ",\n    ".join([
    "x = " + enc(x), "ids = " + enc(ids + 1), "y = " + enc(y), "r = " + enc(r), "grad_x = " + enc(x.grad),
    "grad_conv_in_weight = " + enc(grads["conv_in.weight"].grad),
    "grad_to_q = " + enc(grads["blocks.0.attn.to_q.weight"].grad),
    "grad_norm1_weight = " + enc(grads["blocks.1.norm1.weight"].grad),
    "grad_embed = " + enc(grads["embed.weight"].grad),
]) + "}"

with open(os.path.join(HERE, "nn_ref.lua"), "w") as f:
    f.write("-- generated by tests/ref/gen_nn.py (PyTorch %s); do not edit\nreturn {\n" % torch.__version__)
    for name in sorted(cases):
        f.write("  %s = %s,\n" % (name, cases[name]))
    f.write("}\n")
print("wrote nn_ref.lua (%d bytes) and nn_model.safetensors (%d bytes)" % (
    os.path.getsize(os.path.join(HERE, "nn_ref.lua")), os.path.getsize(os.path.join(HERE, "nn_model.safetensors"))))
