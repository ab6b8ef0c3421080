-- test_lora.lua: tocha.lora: injection into a UNet's attention, the LoRA forward against its
-- formula (and an f64 gradient check), merge / unmerge / scale, Conv2d adapters, files in
-- diffusers' PEFT layout and kohya's, training only the adapters, and bad input.
local T = require "tocha"
local nn = require "tocha.nn"
local F = require "tocha.nn.functional"
local models = require "tocha.models"
local optim = require "tocha.optim"
local lora = require "tocha.lora"

local tests = {}

local function tiny_unet(dtype)
  T.manual_seed(11)
  return models.UNet2DConditionModel({ sample_size = 8, in_channels = 4, out_channels = 4,
    block_out_channels = { 16, 32 }, layers_per_block = 1, down_block_types = { "CrossAttnDownBlock2D", "DownBlock2D" },
    up_block_types = { "UpBlock2D", "CrossAttnUpBlock2D" }, cross_attention_dim = 32, attention_head_dim = { 2, 4 },
    norm_num_groups = 8 }, { dtype = dtype })
end

local function inputs(dtype)
  T.manual_seed(5)
  return T.randn({ 2, 4, 8, 8 }, { dtype = dtype }), T.tensor({ 10, 700 }, { dtype = "i64" }),
    T.randn({ 2, 6, 32 }, { dtype = dtype })
end

-- gives every adapter random, non-zero weights
local function randomize(model, std)
  T.no_grad(function()
    for _, e in ipairs(lora.layers(model)) do
      e[2].lora_A.weight:normal_(0, std or 0.2)
      e[2].lora_B.weight:normal_(0, std or 0.2)
    end
  end)
end

local function count_targets(model, targets)
  local n = 0
  for name, m in model:named_modules() do
    if getmetatable(m) == nn.Linear then
      for _, t in ipairs(targets) do
        if name == t or name:sub(-(#t + 1)) == "." .. t then n = n + 1; break end
      end
    end
  end
  return n
end

tests["inject: the attention projections, only the adapters train, the model starts unchanged"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  local before = unet(x, t, ctx)
  local n = count_targets(unet, lora.DEFAULT_TARGETS)
  local names = lora.inject(unet, { rank = 2 })
  assert(#names == n and n == 32, string.format("%d layers injected, %d match", #names, n)) -- 4 transformers x 2 attentions x 4
  for _, name in ipairs(names) do assert(name:match("attn[12]%.to_[qkvo]"), name) end
  local trainable = 0
  for name, p in unet:named_parameters() do
    if p.requires_grad then
      trainable = trainable + 1
      assert(name:match("%.lora_[AB]%.weight$"), "trainable: " .. name)
    end
  end
  assert(trainable == 2 * n, trainable .. " trainable tensors")
  T.testing.assert_close(unet(x, t, ctx), before, { rtol = 0, atol = 0 })
  assert(#lora.parameters(unet) == 2 * n)
  assert(tostring(unet):find("LoRALinear%(.-in_features=16, out_features=16, bias=false, rank=2, alpha=2"))
end

tests["LoRALinear: W x + b + alpha / r B A x, and an f64 gradient check"] = function()
  T.manual_seed(2)
  local lin = nn.Linear(5, 3, { dtype = "f64" })
  local holder = nn.Sequential(lin)
  lora.inject(holder, { rank = 2, alpha = 3, targets = { "0" } })
  randomize(holder, 0.5)
  local x = T.randn({ 4, 5 }, { dtype = "f64" })
  local A, B = lin.lora_A.weight, lin.lora_B.weight
  local want = F.linear(x, lin.weight, lin.bias) + x:matmul(A:t()):matmul(B:t()) * 1.5
  T.testing.assert_close(holder(x), want, { rtol = 1e-12, atol = 1e-12 })
  T.testing.gradcheck(function(xx, a, b)
    T.no_grad(function() A:copy_(a:detach()); B:copy_(b:detach()) end)
    return F.linear(xx, lin.weight, lin.bias) + xx:matmul(a:t()):matmul(b:t()) * 1.5
  end, { x:clone():requires_grad_(true), A:clone():requires_grad_(true), B:clone():requires_grad_(true) })
  -- autograd through the layer itself reaches A and B with the formula's gradients
  local xr = x:clone():requires_grad_(true)
  holder(xr):sum():backward()
  local gB = T.ones({ 4, 3 }, { dtype = "f64" }):t():matmul(x:matmul(A:t())) * 1.5
  T.testing.assert_close(B.grad, gB, { rtol = 1e-12, atol = 1e-12 })
  assert(lin.weight.grad == nil, "the base weight is frozen")
end

tests["merge, unmerge and set_scale give the unmerged forward"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  local w0 = unet.down_blocks[1].attentions[1].transformer_blocks[1].attn1.to_q.weight:clone()
  lora.inject(unet, { rank = 4, alpha = 8 })
  randomize(unet)
  local y = unet(x, t, ctx)
  assert(lora.merge(unet) == 32)
  T.testing.assert_close(unet(x, t, ctx), y, { rtol = 1e-4, atol = 1e-5 })
  assert(lora.merge(unet) == 0, "merging twice does nothing")
  lora.set_scale(unet, 0.5)
  local merged_half = unet(x, t, ctx)
  assert(lora.unmerge(unet) == 32)
  T.testing.assert_close(unet.down_blocks[1].attentions[1].transformer_blocks[1].attn1.to_q.weight, w0, { atol = 1e-6 })
  T.testing.assert_close(unet(x, t, ctx), merged_half, { rtol = 1e-4, atol = 1e-5 })
  lora.set_scale(unet, 0)
  local off = unet(x, t, ctx)
  lora.unload(unet, { merge = false })
  T.testing.assert_close(unet(x, t, ctx), off, { rtol = 0, atol = 0 })
  for name in pairs(unet:state_dict()) do assert(not name:find("lora"), name) end
end

tests["unload merges into plain layers whose state dict loads in the base model"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  lora.inject(unet, { rank = 2, targets = { "to_q", "to_v", "proj" } }) -- proj: GEGLU's, run whole
  randomize(unet)
  local y = unet(x, t, ctx)
  lora.unload(unet)
  local plain = tiny_unet()
  plain:load_state_dict(unet:state_dict())
  T.testing.assert_close(plain(x, t, ctx), y, { rtol = 1e-4, atol = 1e-5 })
  assert(getmetatable(unet.down_blocks[1].attentions[1].transformer_blocks[1].attn1.to_q) == nn.Linear)
end

tests["Conv2d adapters: forward, merged forward"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  local names = lora.inject(unet, { rank = 3, targets = { "conv1", "conv2", "to_k" }, conv = true })
  local convs = 0
  for _, n in ipairs(names) do if n:match("conv[12]$") then convs = convs + 1 end end
  assert(convs > 0, "no Conv2d injected")
  randomize(unet, 0.05)
  local y = unet(x, t, ctx)
  lora.merge(unet)
  T.testing.assert_close(unet(x, t, ctx), y, { rtol = 1e-4, atol = 1e-4 })
  T.testing.raises("no Linear layer matches", lora.inject, tiny_unet(), { targets = { "conv1" } })
end

tests["save / load in diffusers' PEFT layout, alpha folded into B"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  lora.inject(unet, { rank = 4, alpha = 2 })
  randomize(unet)
  local y = unet(x, t, ctx)
  local dir = T.testing.tmpdir()
  local file = lora.save(dir, unet)
  assert(file == dir .. "/pytorch_lora_weights.safetensors")
  local sd = T.load(file)
  local key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
  assert(sd[key .. ".lora_A.weight"] and sd[key .. ".lora_B.weight"], "PEFT names")
  local n = 0
  for _ in pairs(sd) do n = n + 1 end
  assert(n == 64, n .. " tensors")
  local m = unet.down_blocks[1].attentions[1].transformer_blocks[1].attn1.to_q
  T.testing.assert_close(sd[key .. ".lora_B.weight"], m.lora_B.weight * 0.5, { rtol = 0, atol = 0 })
  local fresh = tiny_unet()
  assert(lora.load(dir, fresh) == 32)
  local f = fresh.down_blocks[1].attentions[1].transformer_blocks[1].attn1.to_q
  assert(f.lora_rank == 4 and f.lora_alpha == 4, "alpha = rank on a file without alphas")
  T.testing.assert_close(fresh(x, t, ctx), y, { rtol = 1e-5, atol = 1e-6 })
  -- the scale at load time, and merged loading
  local half = tiny_unet()
  lora.load(file, half, { scale = 0.5, merge = true })
  lora.set_scale(unet, 0.5)
  T.testing.assert_close(half(x, t, ctx), unet(x, t, ctx), { rtol = 1e-4, atol = 1e-5 })
  -- a text encoder's adapters go under text_encoder.
  local te = models.CLIPTextModel(models.presets.tiny_text, { vocab_size = 600, hidden_size = 32, intermediate_size = 64,
    num_hidden_layers = 1 })
  lora.inject(te, { rank = 2, targets = { "q_proj", "v_proj" } })
  local both = lora.state_dict { unet = unet, text_encoder = te }
  assert(both["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"])
end

tests["load: kohya's names, lora_down / lora_up / alpha"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  T.manual_seed(4)
  local path = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
  local lin = unet.down_blocks[1].attentions[1].transformer_blocks[1].attn2.to_k
  local down, up = T.randn({ 2, lin.in_features }) * 0.3, T.randn({ lin.out_features, 2 }) * 0.3
  local file = T.testing.tmpdir() .. "/kohya.safetensors"
  local k = "lora_unet_" .. path:gsub("%.", "_")
  T.save(file, { [k .. ".lora_down.weight"] = down, [k .. ".lora_up.weight"] = up, [k .. ".alpha"] = T.tensor(1.0) })
  local plain = tiny_unet()
  T.no_grad(function()
    local w = plain.down_blocks[1].attentions[1].transformer_blocks[1].attn2.to_k.weight
    w:add_(up:matmul(down) * 0.5) -- alpha / rank = 1 / 2
  end)
  assert(lora.load(file, unet) == 1)
  assert(lin.lora_alpha == 1 and lin.lora_rank == 2)
  T.testing.assert_close(unet(x, t, ctx), plain(x, t, ctx), { rtol = 1e-4, atol = 1e-5 })
end

tests["training moves only the adapters"] = function()
  local unet = tiny_unet()
  local x, t, ctx = inputs()
  lora.inject(unet, { rank = 2, dropout = 0.1 })
  local frozen = {}
  for name, p in unet:named_parameters() do if not p.requires_grad then frozen[name] = p:clone() end end
  local opt = optim.AdamW(lora.parameters(unet), { lr = 1e-2 })
  local first
  for step = 1, 5 do
    local loss = F.mse_loss(unet(x, t, ctx), x)
    if step == 1 then first = loss:item() end
    loss:backward(); opt:step(); opt:zero_grad()
  end
  local last = F.mse_loss(unet(x, t, ctx), x):item()
  assert(last < first, string.format("loss %g -> %g", first, last))
  for name, p in unet:named_parameters() do
    if frozen[name] then T.testing.assert_close(p, frozen[name], { rtol = 0, atol = 0, msg = name }) end
  end
end

tests["tocha sample --lora FILE --lora-scale S draws the merged model's images"] = function()
  local main = require "tocha.cli.sample"
  local image = require "tocha.image"
  local D = require "tocha.diffusion"
  local pipe_dir = T.testing.path("ref/sd_pipe")
  local dir = T.testing.tmpdir()
  local parts = models.load(pipe_dir)
  lora.inject(parts.unet, { rank = 2 })
  lora.inject(parts.text_encoder, { rank = 2, targets = { "q_proj", "v_proj" } })
  randomize(parts.unet, 0.3)
  randomize(parts.text_encoder, 0.3)
  local file = lora.save(dir .. "/lora", { unet = parts.unet, text_encoder = parts.text_encoder })
  local sink = { write = function(self) return self end, flush = function() end }
  local function draw(extra, sub)
    local args = { pipe_dir, "--prompt", "a small red circle", "--steps", "3", "--size", "16x16", "--seed", "3",
      "--sampler", "ddim", "--out", dir .. "/" .. sub, "--quiet" }
    for _, a in ipairs(extra) do args[#args + 1] = a end
    assert(main(args, sink, sink) == 0)
    return image.read(dir .. "/" .. sub .. "/00000-3.png")
  end
  local plain, off, half = draw({}, "plain"), draw({ "--lora", file, "--lora-scale", "0" }, "off"),
    draw({ "--lora", dir .. "/lora", "--lora_scale", "0.5" }, "half")
  T.testing.assert_close(off, plain, { rtol = 0, atol = 0 })
  lora.set_scale(parts.unet, 0.5)
  lora.set_scale(parts.text_encoder, 0.5)
  T.manual_seed(3)
  local latents = T.randn({ 1, 4, 8, 8 })
  local want = D.StableDiffusion(parts):sample { prompts = "a small red circle", steps = 3, height = 16, width = 16,
    latents = latents, sampler = "ddim" }
  T.testing.assert_close(half:to("f32") / 255, want[1]:permute(2, 3, 1), { rtol = 0, atol = 1.01 / 255 })
  assert((half:to("f32") - plain:to("f32")):abs():max():item() > 2, "the LoRA changes the image")
  local err = { text = "", write = function(self, ...) self.text = self.text .. table.concat({ ... }) return self end }
  assert(main({ pipe_dir, "--prompt", "x", "--lora-scale", "2" }, sink, err) == 2 and err.text:find("needs %-%-lora FILE"))
end

tests["bad input: options, files, shapes"] = function()
  local unet = tiny_unet()
  T.testing.raises("rank must be a positive integer", lora.inject, unet, { rank = 0 })
  T.testing.raises("unknown option \"ranks\"", lora.inject, unet, { ranks = 2 })
  T.testing.raises("no Linear layer matches the targets nothing", lora.inject, unet, { targets = { "nothing" } })
  T.testing.raises("expected a module", lora.inject, {}, {})
  T.testing.raises("no LoRA layers", lora.state_dict, tiny_unet())
  local dir = T.testing.tmpdir()
  T.save(dir .. "/bad.safetensors", { ["something.else"] = T.zeros({ 2 }) })
  T.testing.raises("neither diffusers'", lora.load, dir .. "/bad.safetensors", unet)
  T.save(dir .. "/half.safetensors", { ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"] = T.zeros({ 2, 16 }) })
  T.testing.raises("has A %(down%) but not B", lora.load, dir .. "/half.safetensors", unet)
  T.save(dir .. "/shape.safetensors", { ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"] = T.zeros({ 2, 7 }),
    ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"] = T.zeros({ 16, 2 }) })
  T.testing.raises("do not fit the layer's weight", lora.load, dir .. "/shape.safetensors", unet)
  T.save(dir .. "/where.safetensors", { ["unet.nowhere.lora_A.weight"] = T.zeros({ 2, 7 }),
    ["unet.nowhere.lora_B.weight"] = T.zeros({ 16, 2 }) })
  T.testing.raises("has no Linear or Conv2d layer nowhere", lora.load, dir .. "/where.safetensors", unet)
  T.save(dir .. "/te.safetensors", { ["text_encoder.a.lora_A.weight"] = T.zeros({ 2, 7 }), ["text_encoder.a.lora_B.weight"] = T.zeros({ 7, 2 }) })
  T.testing.raises("the text_encoder, which was not given", lora.load, dir .. "/te.safetensors", unet)
  T.testing.raises("cannot open", lora.load, dir .. "/missing.safetensors", unet)
end

return tests
