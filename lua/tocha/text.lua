-- tocha.text: a byte-level BPE tokenizer in the CLIP style: lowercase, collapse whitespace,
-- split with CLIP's pre-tokenization pattern, map bytes to printable symbols, merge pairs by
-- rank with an end-of-word marker, add start and end tokens, pad or truncate to a context
-- of 77. Token ids are 1-based (vocab.json's 0-based ids + 1, converted here and only here).
local T = require "tocha"
local json = require "tocha.json"

local text = {}

local BOS, EOS, EOW = "<|startoftext|>", "<|endoftext|>", "</w>"

-- GPT-2's reversible map from bytes to printable Unicode symbols
local byte_to_sym, sym_to_byte = {}, {}
do
  local keep = {}
  for b = 33, 126 do keep[b] = true end
  for b = 161, 172 do keep[b] = true end
  for b = 174, 255 do keep[b] = true end
  local n = 0
  for b = 0, 255 do
    local cp = b
    if not keep[b] then cp = 256 + n; n = n + 1 end
    byte_to_sym[b] = utf8.char(cp)
    sym_to_byte[utf8.char(cp)] = b
  end
end

--- clean(s): lowercase (ASCII and, per byte, nothing else), whitespace collapsed, trimmed
function text.clean(s)
  s = s:gsub("&amp;", "&"):gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'")
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""):lower())
end

-- CLIP's pattern: special tokens | 's 't 're 've 'm 'll 'd | letters+ | one digit |
-- other non-space characters+. Any non-ASCII UTF-8 character counts as a letter.
local function pretokenize(s)
  local out, i, n = {}, 1, #s
  local function class(pos)
    local c = s:byte(pos)
    if not c then return nil end
    if c >= 0x80 then return "L" end
    local ch = string.char(c)
    if ch:match("%a") then return "L" end
    if ch:match("%d") then return "N" end
    if ch:match("%s") then return "S" end
    return "P"
  end
  local function char_len(pos)
    local c = s:byte(pos)
    if c >= 0xF0 then return 4 elseif c >= 0xE0 then return 3 elseif c >= 0xC0 then return 2 end
    return 1
  end
  while i <= n do
    local special = s:sub(i, i + #BOS - 1) == BOS and BOS or s:sub(i, i + #EOS - 1) == EOS and EOS
    local contraction = s:match("^'[stmd]", i) or s:match("^'re", i) or s:match("^'ve", i) or s:match("^'ll", i)
    local k = class(i)
    if special then out[#out + 1] = special; i = i + #special
    elseif contraction then out[#out + 1] = contraction; i = i + #contraction
    elseif k == "S" then i = i + 1
    elseif k == "N" then out[#out + 1] = s:sub(i, i); i = i + 1
    else
      local j = i
      while j <= n and class(j) == k do
        if k == "P" and (s:sub(j, j + #BOS - 1) == BOS or s:sub(j, j + #EOS - 1) == EOS) and j > i then break end
        j = j + char_len(j)
      end
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    end
  end
  return out
end
text.pretokenize = pretokenize

-- a word as byte symbols, the last one carrying the end-of-word marker
local function word_symbols(word)
  local syms = {}
  for k = 1, #word do syms[k] = byte_to_sym[word:byte(k)] end
  syms[#syms] = syms[#syms] .. EOW
  return syms
end

local Tokenizer = {}
Tokenizer.__index = Tokenizer

--- text.Tokenizer(vocab, merges, opts): vocab maps symbol strings to 0-based ids (as
--- vocab.json), merges is a list of "a b" strings in rank order. opts.max_length (77).
function text.Tokenizer(vocab, merges, opts)
  opts = opts or {}
  if type(vocab) ~= "table" then error("tokenizer: vocab must be a table symbol -> 0-based id, got a " .. type(vocab), 2) end
  if type(merges) ~= "table" then error("tokenizer: merges must be a list of \"a b\" strings, got a " .. type(merges), 2) end
  local self = setmetatable({ encoder = {}, decoder = {}, ranks = {}, cache = {},
                              max_length = opts.max_length or 77, warned = false }, Tokenizer)
  for sym, id in pairs(vocab) do
    if math.type(id) ~= "integer" or id < 0 then error("tokenizer: vocab id of '" .. sym .. "' is not a non-negative integer", 2) end
    self.encoder[sym] = id + 1 -- the one place 0-based ids become 1-based
    self.decoder[id + 1] = sym
  end
  for r, m in ipairs(merges) do
    local a, b = m:match("^(%S+) (%S+)$")
    if not a then error("tokenizer: bad merge line " .. r .. ": '" .. m .. "'", 2) end
    self.ranks[a .. " " .. b] = r
  end
  for _, special in ipairs({ BOS, EOS }) do
    if not self.encoder[special] then error("tokenizer: vocab lacks " .. special, 2) end
  end
  self.bos_id, self.eos_id = self.encoder[BOS], self.encoder[EOS]
  self.pad_id = self.encoder[opts.pad_token or EOS] or self.eos_id
  self.vocab_size = 0
  for _ in pairs(self.encoder) do self.vocab_size = self.vocab_size + 1 end
  return self
end

--- loads vocab.json and merges.txt from a directory (a Hugging Face CLIP tokenizer folder)
function text.load(dir, opts)
  local vocab, err = json.read_file(dir .. "/vocab.json")
  if not vocab then error("tokenizer: cannot read " .. dir .. "/vocab.json: " .. tostring(err), 2) end
  local f = io.open(dir .. "/merges.txt")
  if not f then error("tokenizer: cannot read " .. dir .. "/merges.txt", 2) end
  local merges = {}
  for line in f:lines() do
    if not line:match("^#version") and line:match("%S") then merges[#merges + 1] = line end
  end
  f:close()
  return text.Tokenizer(vocab, merges, opts)
end

--- writes vocab.json and merges.txt (0-based ids, as other tools expect)
function Tokenizer:save(dir)
  local made, err = T._sys.mkdirs(dir)
  if not made then error("Tokenizer:save: " .. err, 2) end
  local vocab = {}
  for sym, id in pairs(self.encoder) do vocab[sym] = id - 1 end
  local merges = {}
  for m, r in pairs(self.ranks) do merges[r] = m end
  local f = assert(io.open(dir .. "/vocab.json", "w"))
  f:write(json.encode(vocab))
  f:close()
  f = assert(io.open(dir .. "/merges.txt", "w"))
  f:write("#version: 0.2\n", table.concat(merges, "\n"), "\n")
  f:close()
end

-- BPE on one pre-token: merge the lowest-ranked adjacent pair until none applies
function Tokenizer:bpe(word)
  local hit = self.cache[word]
  if hit then return hit end
  local syms = word_symbols(word)
  while #syms > 1 do
    local best, at
    for k = 1, #syms - 1 do
      local r = self.ranks[syms[k] .. " " .. syms[k + 1]]
      if r and (not best or r < best) then best, at = r, k end
    end
    if not best then break end
    local a, b = syms[at], syms[at + 1]
    local merged = {}
    local k = 1
    while k <= #syms do -- merge every occurrence of the pair, left to right
      if k < #syms and syms[k] == a and syms[k + 1] == b then merged[#merged + 1] = a .. b; k = k + 2
      else merged[#merged + 1] = syms[k]; k = k + 1 end
    end
    syms = merged
  end
  self.cache[word] = syms
  return syms
end

--- token ids of one prompt without start/end tokens
function Tokenizer:tokenize(s)
  local ids = {}
  for _, tok in ipairs(pretokenize(text.clean(s))) do
    if tok == BOS or tok == EOS then ids[#ids + 1] = self.encoder[tok]
    else
      for _, sym in ipairs(self:bpe(tok)) do
        local id = self.encoder[sym]
        if not id then error("tokenizer: symbol '" .. sym .. "' is not in the vocabulary", 2) end
        ids[#ids + 1] = id
      end
    end
  end
  return ids
end

--- encode(prompts, {max_length = 77, padding = "max_length" | false, truncation = true})
--- -> {input_ids = i64 [B, L], attention_mask = i64 [B, L], lengths = {...}}; a prompt
--- longer than the context is truncated (its end token kept) with one warning per tokenizer
function Tokenizer:encode(prompts, opts)
  opts = opts or {}
  if type(prompts) == "string" then prompts = { prompts } end
  local L = opts.max_length or self.max_length
  local pad = opts.padding == nil and "max_length" or opts.padding
  local truncate = opts.truncation ~= false
  local rows, lengths, width = {}, {}, 0
  for i, p in ipairs(prompts) do
    if type(p) ~= "string" then error("tokenizer: prompt " .. i .. " is not a string", 2) end
    local ids = { self.bos_id }
    for _, id in ipairs(self:tokenize(p)) do ids[#ids + 1] = id end
    ids[#ids + 1] = self.eos_id
    if #ids > L and truncate then
      if not self.warned then
        io.stderr:write(string.format("tocha.text: a prompt of %d tokens was truncated to the context of %d: '%s'\n",
          #ids, L, p:sub(1, 60)))
        self.warned = true
      end
      for k = #ids, L, -1 do ids[k] = nil end
      ids[L] = self.eos_id
    end
    rows[i], lengths[i] = ids, #ids
    if #ids > width then width = #ids end
  end
  if pad == "max_length" then width = math.max(width, L) end
  local ids_t, mask_t = {}, {}
  for i, ids in ipairs(rows) do
    local r, m = {}, {}
    for k = 1, width do r[k] = ids[k] or self.pad_id; m[k] = ids[k] and 1 or 0 end
    ids_t[i], mask_t[i] = r, m
  end
  return { input_ids = T.tensor(ids_t, { dtype = "i64" }), attention_mask = T.tensor(mask_t, { dtype = "i64" }),
           lengths = lengths }
end

--- decode(ids): text from 1-based ids (a Lua list or a 1-d tensor), special tokens dropped
function Tokenizer:decode(ids)
  if T.is_tensor(ids) then ids = ids:tolist() end
  local bytes = {}
  for _, id in ipairs(ids) do
    local sym = self.decoder[id]
    if sym and sym ~= BOS and sym ~= EOS then
      for _, cp in utf8.codes(sym:gsub(EOW, " ")) do
        local ch = utf8.char(cp)
        bytes[#bytes + 1] = sym_to_byte[ch] and string.char(sym_to_byte[ch]) or ch
      end
    end
  end
  return (table.concat(bytes):gsub(" $", ""))
end

--- text.train_bpe(texts, vocab_size) -> Tokenizer: a CLIP-style vocabulary (256 byte
--- symbols, the same with the end-of-word marker, merges, the two special tokens) learnt
--- from captions by repeatedly merging the most frequent adjacent pair
function text.train_bpe(texts, vocab_size, opts)
  local base = 512 + 2
  if math.type(vocab_size) ~= "integer" or vocab_size < base then
    error("train_bpe: vocab_size must be an integer of at least " .. base, 2)
  end
  local counts = {}
  for _, s in ipairs(texts) do
    for _, tok in ipairs(pretokenize(text.clean(s))) do
      if tok ~= BOS and tok ~= EOS then counts[tok] = (counts[tok] or 0) + 1 end
    end
  end
  local words = {}
  local sorted = {}
  for w in pairs(counts) do sorted[#sorted + 1] = w end
  table.sort(sorted) -- deterministic ties
  for _, w in ipairs(sorted) do words[#words + 1] = { syms = word_symbols(w), n = counts[w] } end
  local vocab, merges = {}, {}
  local id = 0
  for b = 0, 255 do vocab[byte_to_sym[b]] = id; id = id + 1 end
  for b = 0, 255 do vocab[byte_to_sym[b] .. EOW] = id; id = id + 1 end
  while id < vocab_size - 2 do
    local pairs_n, first_seen, order = {}, {}, 0
    for _, w in ipairs(words) do
      for k = 1, #w.syms - 1 do
        local p = w.syms[k] .. " " .. w.syms[k + 1]
        if not pairs_n[p] then order = order + 1; first_seen[p] = order end
        pairs_n[p] = (pairs_n[p] or 0) + w.n
      end
    end
    local best
    for p, n in pairs(pairs_n) do
      if not best or n > pairs_n[best] or (n == pairs_n[best] and first_seen[p] < first_seen[best]) then best = p end
    end
    if not best then break end
    local a, b = best:match("^(%S+) (%S+)$")
    merges[#merges + 1] = best
    if not vocab[a .. b] then vocab[a .. b] = id; id = id + 1 end
    for _, w in ipairs(words) do
      local out, k = {}, 1
      while k <= #w.syms do
        if k < #w.syms and w.syms[k] == a and w.syms[k + 1] == b then out[#out + 1] = a .. b; k = k + 2
        else out[#out + 1] = w.syms[k]; k = k + 1 end
      end
      w.syms = out
    end
  end
  vocab[BOS] = id
  vocab[EOS] = id + 1
  return text.Tokenizer(vocab, merges, opts)
end

return text
