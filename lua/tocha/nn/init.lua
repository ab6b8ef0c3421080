-- tocha/nn: require "tocha.nn" returns this table: nn.Module and nn.Parameter (module.lua), the
-- containers, the layers (layers.lua, batchnorm.lua), nn.MultiheadAttention (attention.lua), nn.init
-- (init_weights.lua) and nn.functional. docs/nn.md shows how to write a module.
local M = require "tocha.nn.module"
local layers = require "tocha.nn.layers"
local attention = require "tocha.nn.attention"

local nn = {
  Module = M.Module,
  Parameter = M.Parameter,
  is_parameter = M.is_parameter,
  is_module = M.is_module,
  Sequential = M.Sequential,
  ModuleList = M.ModuleList,
  ModuleDict = M.ModuleDict,
  MultiheadAttention = attention.MultiheadAttention,
  init = require "tocha.nn.init_weights",
  functional = require "tocha.nn.functional",
}
for name, cls in pairs(layers) do nn[name] = cls end
for name, cls in pairs(require "tocha.nn.batchnorm") do nn[name] = cls end

return nn
