"""convert_weights.py: brings weights and statistics from the Python tools into the files tocha
reads. Needs torch (and transformers for `clip`); runs outside tocha, once.

  python3 tools/convert_weights.py inception pt_inception-2015-12-05-6726825d.pth OUT.safetensors
      pytorch-fid's FID Inception weights (the same file torch-fidelity ships as
      weights-inception-2015-12-05-6726825d.pth) -> safetensors for models.InceptionV3FID;
      by default tocha looks for ~/.cache/tocha/pt_inception-2015-12-05.safetensors
  python3 tools/convert_weights.py stats STATS.npz OUT.safetensors
      pytorch-fid's --save-stats file (mu, sigma) -> statistics `tocha eval fid` takes
  python3 tools/convert_weights.py clip MODEL OUT_DIR
      a transformers CLIP (a hub name or a folder) -> OUT_DIR with config.json,
      model.safetensors, vocab.json, merges.txt and the image processor's settings
"""
import json
import os
import sys


def inception(src, out):
    import torch
    from safetensors.torch import save_file

    sd = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in sd.items()}
    fc = sd.get("fc.weight")
    if fc is None or tuple(fc.shape) != (1008, 2048):
        sys.exit("%s does not look like the FID Inception weights (fc.weight should be 1008 x 2048, got %s)"
                 % (src, None if fc is None else tuple(fc.shape)))
    extra = sorted(k for k in sd if k.startswith("AuxLogits."))
    for k in extra:
        del sd[k]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(sd, out, metadata={"source": os.path.basename(src)})
    print("wrote %s (%d tensors%s)" % (out, len(sd), ", AuxLogits dropped" if extra else ""))


def stats(src, out):
    import numpy as np
    import torch
    from safetensors.torch import save_file

    with np.load(src) as f:
        mu, sigma = f["mu"], f["sigma"]
    save_file({"mu": torch.from_numpy(np.asarray(mu, dtype=np.float64)),
               "sigma": torch.from_numpy(np.asarray(sigma, dtype=np.float64))}, out,
              metadata={"n": "", "dims": str(mu.shape[0]), "extractor": "", "source": os.path.basename(src)})
    print("wrote %s (%d dims)" % (out, mu.shape[0]))


def clip(name, out):
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer

    model = CLIPModel.from_pretrained(name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    CLIPProcessor.from_pretrained(name).image_processor.save_pretrained(out)
    CLIPTokenizer.from_pretrained(name).save_vocabulary(out)  # vocab.json + merges.txt
    print("wrote", out)


def main():
    cmds = {"inception": inception, "stats": stats, "clip": clip}
    if len(sys.argv) != 4 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
