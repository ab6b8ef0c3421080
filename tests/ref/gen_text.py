# tests/ref/gen_text.py: reference encodings for tocha.text from Hugging Face's
# CLIPTokenizer. Run by hand (pip install transformers) after `make`:
#   python3 tests/ref/gen_text.py  -> tests/ref/text_vocab/{vocab.json,merges.txt}, tests/ref/text_ref.lua
# The vocabulary is trained by tocha (train_bpe on the captions below); transformers then
# loads it and encodes the prompts, so the test checks tocha's encoder against theirs.
import json, os, subprocess
from transformers import CLIPTokenizer

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
vocab_dir = os.path.join(here, "text_vocab")
subprocess.run([os.path.join(root, "build", "tocha"), "-e",
                "local text = require 'tocha.text'; local caps = dofile('tests/ref/text_captions.lua');"
                "text.train_bpe(caps, 700):save('" + vocab_dir + "')"], check=True, cwd=root)
tok = CLIPTokenizer(os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt"))
prompts = [
    "a small red circle on the left",
    "A Blue SQUARE above a green triangle!",
    "two   yellow stars,   and 3 purple hexagons (big)",
    "don't you've they'll it's we'd I'm",
    "unicode: café naïve — ok",
    "numbers 12345 and 6.5 percent",
    "",
    "a " * 100,
]
out = ["-- made by tests/ref/gen_text.py with transformers' CLIPTokenizer; do not edit", "return {"]
for p in prompts:
    enc = tok(p, padding="max_length", max_length=77, truncation=True)
    ids = [i + 1 for i in enc["input_ids"]]  # tocha ids are 1-based
    out.append("  { prompt = %s, ids = {%s}, mask = {%s} }," % (
        json.dumps(p, ensure_ascii=False), ", ".join(map(str, ids)), ", ".join(map(str, enc["attention_mask"]))))
out.append("}")
with open(os.path.join(here, "text_ref.lua"), "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", os.path.join(here, "text_ref.lua"))
