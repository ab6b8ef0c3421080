-- tocha/cli/pack.lua: `tocha pack DIR OUT [--shard-size SIZE] [--level N] [--no-captions] [--quiet]`
-- packs the image-caption folder DIR into zstd shards plus index.jsonl in OUT (see
-- tocha.data.pack and docs/data.md). The module returns main(args, out, err) -> exit status,
-- out and err defaulting to io.stdout and io.stderr. Called with the arguments alone, as the
-- runner's `tocha pack ...` does, or run as a script (`tocha lua/tocha/cli/pack.lua DIR OUT`),
-- a failure exits the process with its status.
local USAGE = [[
usage: tocha pack DIR OUT [options]
  packs the images of DIR (with same-name .txt captions or a metadata.jsonl) into
  zstd-compressed shards and an index in OUT, for tocha.data.Shards(OUT)
options:
  --shard-size SIZE   bytes per shard before a new one starts (suffix K, M or G; default 256M)
  --level N           zstd compression level (default 3)
  --no-captions       ignore captions
  --quiet             print nothing but errors]]

local function parse_size(s)
  local n, unit = tostring(s):match("^(%d+%.?%d*)([KkMmGg]?)[Bb]?$")
  if not n then return nil end
  local mult = ({ [""] = 1, k = 2 ^ 10, m = 2 ^ 20, g = 2 ^ 30 })[unit:lower()]
  return math.floor(tonumber(n) * mult)
end

local run

local function main(args, out, err)
  local code = run(args, out or io.stdout, err or io.stderr)
  if code ~= 0 and out == nil then os.exit(code) end
  return code
end

function run(args, out, err)
  local pos, opts = {}, { log = function(s) out:write(s, "\n") end }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then out:write(USAGE, "\n"); return 0
    elseif a == "--shard-size" then
      opts.shard_size = parse_size(args[i + 1])
      if not opts.shard_size then err:write("tocha pack: bad --shard-size '", tostring(args[i + 1]), "'\n"); return 2 end
      i = i + 1
    elseif a == "--level" then
      opts.level = math.tointeger(tonumber(args[i + 1]))
      if not opts.level then err:write("tocha pack: bad --level '", tostring(args[i + 1]), "'\n"); return 2 end
      i = i + 1
    elseif a == "--no-captions" then opts.captions = false
    elseif a == "--quiet" then opts.log = nil
    elseif a:sub(1, 2) == "--" then err:write("tocha pack: unknown option ", a, "\n", USAGE, "\n"); return 2
    else pos[#pos + 1] = a end
    i = i + 1
  end
  if #pos ~= 2 then err:write(USAGE, "\n"); return 2 end
  local data = require "tocha.data"
  local ok, msg = pcall(data.pack, pos[1], pos[2], opts)
  if not ok then err:write("tocha pack: ", (tostring(msg):gsub("^[^:]*%.lua:%d+: ", "")), "\n"); return 1 end
  return 0
end

if (...) ~= "tocha.cli.pack" and arg and arg[0] and arg[0]:match("pack%.lua$") then
  os.exit(main { table.unpack(arg, 1) })
end
return main
