-- tests/ref/eval_weights.lua: deterministic stand-in weights for a network whose real weights
-- cannot ship (InceptionV3FID): tensor i of the state dict, in sorted name order, is drawn from
-- Philox with seed + i and scaled by its role. tests/ref/gen_eval.py writes them to a file
-- PyTorch loads (`build/tocha tests/ref/eval_weights.lua OUT.safetensors`); the tests fill the
-- network again the same way, so the 95 MB of weights never enter the repository.
local T = require "tocha"

local function fill(net, seed)
  seed = seed or 1000
  local sd = net:state_dict()
  local names = {}
  for k in pairs(sd) do names[#names + 1] = k end
  table.sort(names)
  T.no_grad(function()
    for i, name in ipairs(names) do
      local t = sd[name]
      if t.dtype ~= "i64" then
        T.manual_seed(seed + i)
        local r = T.randn(t.shape, { dtype = "f64" })
        local v
        if name:match("weight$") and t:dim() >= 2 then v = r * math.sqrt(2 / (t:numel() / t.shape[1]))
        elseif name:match("bn%.weight$") then v = r * 0.1 + 1
        elseif name:match("running_var$") then v = r:abs() * 0.1 + 1
        else v = r * 0.1 end
        t:copy_(v)
      end
    end
  end)
  return net
end

if select("#", ...) > 0 and (...) ~= nil and tostring(...):match("%.safetensors$") then
  local models = require "tocha.models"
  local net = fill(models.InceptionV3FID({ dtype = "f64" }))
  T.save((...), net:state_dict())
  print("wrote " .. (...))
end

return fill
