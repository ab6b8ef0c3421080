-- tests/test_text.lua: the CLIP-style BPE tokenizer against Hugging Face's CLIPTokenizer
-- (tests/ref/gen_text.py), vocabulary training, truncation, decoding and bad input.
local T = require "tocha"
local text = require "tocha.text"
local ref = dofile(T.testing.path("ref/text_ref.lua"))

local tests = {}

tests["encodes like transformers' CLIPTokenizer"] = function()
  local tok = text.load(T.testing.path("ref/text_vocab"))
  local old = io.stderr
  io.stderr = { write = function() end } -- the long prompt warns; keep the test output clean
  for _, case in ipairs(ref) do
    local enc = tok:encode({ case.prompt })
    local ids, mask = enc.input_ids[1]:tolist(), enc.attention_mask[1]:tolist()
    assert(#ids == 77, "padded to the context")
    for k = 1, 77 do
      if ids[k] ~= case.ids[k] or mask[k] ~= case.mask[k] then
        io.stderr = old
        error(string.format("prompt %q: position %d: id %d vs %d, mask %d vs %d", case.prompt, k, ids[k],
          case.ids[k], mask[k], case.mask[k]))
      end
    end
  end
  io.stderr = old
end

tests["train_bpe is deterministic and reproduces the committed vocabulary"] = function()
  local caps = dofile(T.testing.path("ref/text_captions.lua"))
  local tok = text.train_bpe(caps, 700)
  local ref_tok = text.load(T.testing.path("ref/text_vocab"))
  assert(tok.vocab_size == ref_tok.vocab_size, "vocabulary size")
  for sym, id in pairs(ref_tok.encoder) do assert(tok.encoder[sym] == id, "symbol " .. sym) end
  -- frequent caption words become single tokens
  local ids = tok:tokenize("a red circle")
  assert(#ids == 3, "each common word is one token, got " .. #ids)
end

tests["decode inverts encode"] = function()
  local tok = text.load(T.testing.path("ref/text_vocab"))
  local cases = { -- decoding joins words with spaces, as CLIP's does
    ["a small red circle on the left"] = "a small red circle on the left",
    ["Café —  12 Stars!"] = "café — 1 2 stars !",
  }
  for p, want in pairs(cases) do
    local enc = tok:encode(p)
    local got = tok:decode(enc.input_ids[1]:narrow(1, 1, enc.lengths[1]))
    assert(got == want, string.format("decode(encode(%q)) = %q", p, got))
  end
end

tests["truncation keeps the end token and warns once"] = function()
  local tok = text.load(T.testing.path("ref/text_vocab"))
  local lines = {}
  local old = io.stderr
  io.stderr = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end }
  local enc = tok:encode({ ("red "):rep(200), ("blue "):rep(200) })
  io.stderr = old
  assert(#lines == 1 and lines[1]:find("truncated to the context of 77"), "one warning")
  assert(enc.input_ids.shape[2] == 77)
  assert(enc.input_ids[1][77]:item() == tok.eos_id and enc.input_ids[1][1]:item() == tok.bos_id)
  assert(enc.attention_mask:sum():item() == 154)
  local short = tok:encode("red", { padding = false })
  assert(short.input_ids.shape[2] == 3, "no padding: start, word, end")
end

tests["save writes a vocabulary that loads back the same, making its directory"] = function()
  local tok = text.load(T.testing.path("ref/text_vocab"))
  local dir = T.testing.tmpdir() .. "/new/vocab"
  tok:save(dir)
  local back = text.load(dir)
  local prompts = { "a small red circle on the left", "two blue squares" }
  T.testing.assert_close(back:encode(prompts).input_ids, tok:encode(prompts).input_ids, { rtol = 0, atol = 0 })
  local ok, err = pcall(tok.save, tok, "/proc/tocha-cannot/vocab")
  assert(not ok and err:find("Tokenizer:save: cannot create directory /proc/tocha%-cannot"), err)
end

tests["bad input gives clear errors"] = function()
  local tok = text.load(T.testing.path("ref/text_vocab"))
  local ok, err = pcall(tok.encode, tok, { "fine", 42 })
  assert(not ok and err:find("prompt 2 is not a string"), err)
  ok, err = pcall(text.load, "/nonexistent")
  assert(not ok and err:find("cannot read"), err)
  ok, err = pcall(text.train_bpe, { "x" }, 10)
  assert(not ok and err:find("at least 514"), err)
  ok, err = pcall(text.Tokenizer, { a = 0 }, {})
  assert(not ok and err:find("lacks"), err)
end

return tests
