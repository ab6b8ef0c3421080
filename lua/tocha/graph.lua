-- tocha/graph.lua: CUDA graphs, as T.cuda.graph and T.cuda.CUDAGraph. A capture runs a function
-- once with the GPU recording instead of computing; each replay then runs the recorded kernels
-- with one launch, on the same addresses: the inputs are tensors made before the capture
-- (refill them with copy_), the outputs those the function returned. Libraries that keep
-- per-step values on the device (the optimizers' step counts and learning rates) register a
-- function to run before each replay with on_replay.
local T = require "tocha"

local M = {}

local Graph = {}
Graph.__index = Graph

local capturing -- the graph whose capture runs now, or nil

--- T.cuda.CUDAGraph() -> an empty graph: g:capture(fn, ...), g:replay(), g:release()
function M.CUDAGraph()
  return setmetatable({ hooks = {} }, Graph)
end

--- g:capture(fn, ...) -> fn's results: runs fn(...) with the GPU's work recorded into g. Run fn
--- once before (a warm-up) so that what it creates on its first call (optimizer state, buffers)
--- exists before the capture. An error in fn, or an operation a capture cannot hold (reading a
--- value on the host, a copy between the CPU and the GPU, a synchronization), ends the capture
--- and raises; g stays empty and the device usable.
function Graph:capture(fn, ...)
  if type(fn) ~= "function" then
    error("cuda graph: capture expects a function (got " .. type(fn) .. ")", 2)
  end
  if self.handle then error("cuda graph: the graph already holds a capture (release it first)", 2) end
  local handle = T.cuda._graph_begin()
  capturing, self.hooks = self, {}
  local res = table.pack(pcall(fn, ...))
  capturing = nil
  local ok, err = res[1], res[2]
  if ok then ok, err = pcall(handle.finish, handle) end
  if not ok then
    handle:release()
    self.hooks = {}
    error(err, 0)
  end
  self.handle = handle
  return table.unpack(res, 2, res.n)
end

--- g:replay(): the recorded work, queued on the GPU (asynchronous, as any op)
function Graph:replay()
  if not self.handle then error("cuda graph: nothing to replay (not captured, or released)", 2) end
  for _, hook in ipairs(self.hooks) do hook() end
  self.handle:replay()
end

--- g:release(): frees the graph and its private memory pool (tensors made during the capture
--- that are still referenced keep their memory); also on garbage collection and <close>
function Graph:release()
  local h = self.handle
  self.handle, self.hooks = nil, {}
  if h then h:release() end
end
Graph.__close = Graph.release

--- g:pool_bytes(): device memory the graph's private pool holds
function Graph:pool_bytes() return self.handle and self.handle:pool_bytes() or 0 end

--- T.cuda.graph(fn, ...) -> g, fn's results: a new graph holding the capture of fn(...)
function M.graph(fn, ...)
  if type(fn) ~= "function" then error("T.cuda.graph: expects a function (got " .. type(fn) .. ")", 2) end
  local g = M.CUDAGraph()
  return g, g:capture(fn, ...)
end

--- on_replay(f) -> true when a capture runs: f() will run before each replay of its graph
function M.on_replay(f)
  if not capturing then return false end
  capturing.hooks[#capturing.hooks + 1] = f
  return true
end

return M
