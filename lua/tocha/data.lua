-- tocha.data: datasets and the data loader. A dataset is anything with #ds and ds[i] (or
-- ds:get(i)); wrappers map/transform/shuffle/concat/split/take; ImageFolder and Shards give
-- image-caption samples decoded in C; DataLoader batches them, on worker threads when asked.
-- See docs/data.md.
local D = require "tocha.data.dataset"
local folder = require "tocha.data.folder"
local loader = require "tocha.data.loader"

local data = {
  Dataset = D.Dataset,
  len = D.len, get = D.get,
  map = D.map, transform = D.transform, subset = D.subset, take = D.take,
  shuffle = D.shuffle, concat = D.concat, split = D.split,
  collate = D.collate,
  ImageFolder = folder.ImageFolder,
  Shards = folder.Shards,
  pack = folder.pack,
  DataLoader = loader.DataLoader,
}

--- data.wrap(list): a Lua list as a dataset with the wrapper methods
function data.wrap(list)
  local W = D.class(D.Dataset)
  W.len = function(self) return #self.list end
  W.get = function(self, i) return self.list[i] end
  return setmetatable({ list = list }, W)
end

return data
