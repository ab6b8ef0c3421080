-- tocha/cli/eval.lua: `tocha eval fid|kid|is|clipscore|stats ...`: the metrics of tocha.eval
-- on folders of images (any size, PNG or JPEG) or saved statistics, printing `FID: <value>`
-- and the like. The module returns main(args, out, err) -> exit status (out and err default to
-- io.stdout and io.stderr); the runner calls it with the arguments after `eval`.
local USAGE = [[
usage: tocha eval fid REAL FAKE [options]        Fréchet Inception Distance of two folders of
                                                  images or statistics files
       tocha eval kid REAL FAKE [options]        Kernel Inception Distance (mean and std over subsets)
       tocha eval is FOLDER [options]            Inception Score (mean and std over splits)
       tocha eval clipscore FOLDER --clip DIR    CLIP score of the images against their captions
                                                  (same-name .txt files or metadata.jsonl)
       tocha eval stats FOLDER OUT.safetensors   save a folder's statistics for later fid runs
options:
  --model inception|shapes  the feature network: Inception-v3 (default) or the small shapes network
                            (offline, for tocha.data.shapes images; see docs/eval.md)
  --mode legacy|clean|fidelity
                            preprocessing: pytorch-fid's (legacy, the default), clean-fid's, or
                            torch-fidelity's (TensorFlow 1's bilinear resize)
  --dims 64|192|768|2048    Inception feature tap (default 2048)
  --weights FILE            Inception weights (default $TOCHA_INCEPTION_WEIGHTS, else
                            ~/.cache/tocha/pt_inception-2015-12-05.safetensors)
  --batch N                 images per forward pass (default 50)
  --device cpu|cuda         where the network runs (default cpu)
  --workers N               image decoding threads (default 2)
  --cache DIR               where folder statistics are cached (default ~/.cache/tocha/eval)
  --no-cache                neither read nor write cached statistics
  --allow-singular          compute FID even with no more images than feature dims
  --subsets N               KID subsets (default 100)
  --subset-size N           KID subset size (default 1000)
  --splits N                Inception Score splits (default 10)
  --seed N                  KID subsets and the Inception Score's shuffle (default 0 and 2020)
  --clip DIR                a transformers CLIP folder (clipscore)]]

-- option -> {field, kind}
local OPTIONS = {
  ["--model"] = { "model", "string" }, ["--mode"] = { "mode", "string" }, ["--dims"] = { "dims", "int" },
  ["--weights"] = { "weights", "string" }, ["--batch"] = { "batch", "int" }, ["--device"] = { "device", "string" },
  ["--workers"] = { "workers", "int" }, ["--cache"] = { "cache", "string" }, ["--subsets"] = { "subsets", "int" },
  ["--subset-size"] = { "subset_size", "int" }, ["--splits"] = { "splits", "int" }, ["--seed"] = { "seed", "int" },
  ["--clip"] = { "clip", "string" },
}
local FLAGS = { ["--no-cache"] = { "cache", false }, ["--allow-singular"] = { "allow_singular", true } }
local ARITY = { fid = 2, kid = 2, is = 1, clipscore = 1, stats = 2 }

local function parse(args)
  local cmd = args[1]
  if cmd == nil or cmd == "-h" or cmd == "--help" then return nil, nil, "help" end
  if not ARITY[cmd] then return nil, nil, "unknown command '" .. tostring(cmd) .. "'" end
  local pos, opts = {}, {}
  local i = 2
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-h" or name == "--help" then return nil, nil, "help" end
    if OPTIONS[name] then
      local spec = OPTIONS[name]
      local v = inline
      if v == nil then i = i + 1; v = args[i] end
      if v == nil then return nil, nil, name .. " needs a value" end
      if spec[2] == "int" then
        local n = math.tointeger(tonumber(v))
        if not n then return nil, nil, "bad " .. name .. " '" .. v .. "' (an integer)" end
        v = n
      end
      opts[spec[1]] = v
    elseif FLAGS[name] then
      opts[FLAGS[name][1]] = FLAGS[name][2]
    elseif a:sub(1, 2) == "--" then
      return nil, nil, "unknown option " .. a
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if #pos ~= ARITY[cmd] then
    return nil, nil, string.format("%s takes %d path%s, got %d", cmd, ARITY[cmd], ARITY[cmd] == 1 and "" or "s", #pos)
  end
  return cmd, pos, nil, opts
end

local function clean(msg) return (tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", "")) end

local function run(args, out, err)
  local cmd, pos, problem, opts = parse(args)
  if problem == "help" then out:write(USAGE, "\n"); return 0 end
  if problem then err:write("tocha eval: ", problem, "\n", USAGE, "\n"); return 2 end
  local eval = require "tocha.eval"
  local ok, msg = pcall(function()
    if cmd == "fid" then
      out:write(string.format("FID: %.10g\n", eval.fid(pos[1], pos[2], opts)))
    elseif cmd == "kid" then
      local m, s = eval.kid(pos[1], pos[2], opts)
      out:write(string.format("KID: %.10g\nKID std: %.10g\n", m, s))
    elseif cmd == "is" then
      local m, s = eval.inception_score(pos[1], opts)
      out:write(string.format("IS: %.10g\nIS std: %.10g\n", m, s))
    elseif cmd == "clipscore" then
      if not opts.clip then error("clipscore needs --clip DIR (a transformers CLIP folder)", 0) end
      local score = eval.clip.score_folder(pos[1], opts.clip, opts)
      out:write(string.format("CLIP score: %.10g\n", score))
    elseif cmd == "stats" then
      local st = eval.statistics(pos[1], opts)
      eval.save_statistics(pos[2], st)
      out:write(string.format("wrote %s (%d images, %d dims)\n", pos[2], st.n, st.mu:numel()))
    end
  end)
  if not ok then err:write("tocha eval: ", clean(msg), "\n"); return 1 end
  return 0
end

local function main(args, out, err)
  local code = run(args, out or io.stdout, err or io.stderr)
  if code ~= 0 and out == nil then os.exit(code) end
  return code
end

if (...) ~= "tocha.cli.eval" and arg and arg[0] and arg[0]:match("eval%.lua$") then
  os.exit(main { table.unpack(arg, 1) })
end
return main
