"""gen_eval.py: references for tests/test_eval.lua from the tools papers report metrics with:
pytorch-fid (InceptionV3, its preprocessing, calculate_frechet_distance), clean-fid (its PIL
resize, frechet_distance, kernel_distance), torch-fidelity (its Inception extractor, KID and
the Inception Score),
torchmetrics (CLIP score) and transformers (CLIPModel).

Run by hand from the repository root, after `make`: python3 tests/ref/gen_eval.py
Writes tests/ref/eval_*.safetensors (f64 unless said) and tests/ref/eval_clip/ (a tiny CLIP
with random weights in transformers' folder layout).

Inception weights: the real ones cannot ship and a random-weight Inception-v3 is 95 MB, so the
network's weights come from tests/ref/eval_weights.lua (Philox, seeded per tensor): this
script has tocha write them to a temporary file and loads that into pytorch-fid's model; the
tests fill tocha's network the same way. Only inputs and outputs are committed.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file, load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
torch.manual_seed(0)
rng = np.random.RandomState(0)


def t64(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64).contiguous()


def save(name, tensors, meta=None):
    path = os.path.join(HERE, name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print("wrote", path, "(%d KB)" % (os.path.getsize(path) // 1024))


def scalar(v):
    return torch.tensor([float(v)], dtype=torch.float64)


# ---- statistics, Fréchet distance, KID, Inception Score ------------------------------------------
def correlated(n, d, shift, scale):
    a = rng.randn(d, d) * scale / np.sqrt(d)
    return rng.randn(n, d) @ a + shift + rng.randn(d) * 0.3


def gen_metrics():
    from pytorch_fid.fid_score import calculate_frechet_distance
    from cleanfid.fid import frechet_distance as clean_fd, kernel_distance
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = {}
    # two full-rank feature sets: their statistics, and the distance by both tools
    f1, f2 = correlated(300, 24, 0.0, 1.0), correlated(260, 24, 0.4, 1.3)
    out["f1"], out["f2"] = t64(f1), t64(f2)
    mu1, s1 = np.mean(f1, axis=0), np.cov(f1, rowvar=False)
    mu2, s2 = np.mean(f2, axis=0), np.cov(f2, rowvar=False)
    out.update(mu1=t64(mu1), sigma1=t64(s1), mu2=t64(mu2), sigma2=t64(s2))
    out["fid_pytorch_fid"] = scalar(calculate_frechet_distance(mu1, s1, mu2, s2))
    out["fid_clean_fid"] = scalar(clean_fd(mu1, s1, mu2, s2))
    # features with a large common offset (one-pass sums would lose their covariance)
    f3 = correlated(200, 8, 0.0, 1.0) + 1e4
    out["f3"], out["mu3"], out["sigma3"] = t64(f3), t64(np.mean(f3, axis=0)), t64(np.cov(f3, rowvar=False))

    # KID. Every subset the whole set (subset size = n): no randomness, both tools agree
    k1, k2 = correlated(100, 32, 0.0, 1.0), correlated(100, 32, 0.2, 1.1)
    out["k1"], out["k2"] = t64(k1), t64(k2)
    tf = kid_features_to_metric(torch.from_numpy(k1), torch.from_numpy(k2), kid_subsets=3, kid_subset_size=100,
                                verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020)
    out["kid_full_torch_fidelity"] = scalar(tf["kernel_inception_distance_mean"])
    out["kid_full_clean_fid"] = scalar(kernel_distance(k1, k2, num_subsets=3, max_subset_size=1000))
    # random subsets: torch-fidelity's own draws (RandomState(2020)), exported as 1-based rows
    k3 = correlated(130, 32, 0.1, 1.0)
    out["k3"] = t64(k3)
    tf = kid_features_to_metric(torch.from_numpy(k3), torch.from_numpy(k2), kid_subsets=5, kid_subset_size=40,
                                verbose=False, kid_kernel="poly", kid_kernel_poly_degree=3,
                                kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020)
    r = np.random.RandomState(2020)
    for i in range(5):
        out["kid_rows1_%d" % (i + 1)] = torch.as_tensor(r.choice(130, 40, replace=False) + 1, dtype=torch.int64)
        out["kid_rows2_%d" % (i + 1)] = torch.as_tensor(r.choice(100, 40, replace=False) + 1, dtype=torch.int64)
    out["kid_subsets_mean"] = scalar(tf["kernel_inception_distance_mean"])
    out["kid_subsets_std"] = scalar(tf["kernel_inception_distance_std"])

    # Inception Score from logits, unshuffled and with torch-fidelity's shuffle (exported)
    logits = torch.from_numpy(rng.randn(103, 50) * 3)
    out["logits"] = logits.double()
    isc = isc_features_to_metric(logits, splits=10, shuffle=False)
    out["is_mean"], out["is_std"] = scalar(isc["inception_score_mean"]), scalar(isc["inception_score_std"])
    isc = isc_features_to_metric(logits, splits=4, shuffle=True, rng_seed=2020)
    out["is_shuffled_mean"] = scalar(isc["inception_score_mean"])
    out["is_shuffled_std"] = scalar(isc["inception_score_std"])
    out["is_order"] = torch.as_tensor(np.random.RandomState(2020).permutation(103) + 1, dtype=torch.int64)
    save("eval_metrics.safetensors", out)


# ---- preprocessing: clean-fid's resize and pytorch-fid's ------------------------------------------
def gen_resize():
    from cleanfid.resize import make_resizer
    import torch.nn.functional as F
    import torchvision.transforms.functional as TF

    out = {}
    images = {"up": (37, 53), "down": (211, 157), "thin": (23, 300)}
    sizes = {"up": (299, 299), "down": (80, 64), "thin": (41, 40)}  # (w, h) as PIL takes them
    for name, (h, w) in images.items():
        img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        out["img_" + name] = torch.from_numpy(img)
        fn = make_resizer("PIL", False, "bicubic", sizes[name])
        out["clean_" + name] = torch.from_numpy(fn(img)).permute(2, 0, 1).float()  # [C, H, W] f32
    # pytorch-fid: ToTensor, bilinear to 299 without antialias, 2x - 1 (f32)
    x = TF.to_tensor(Image.fromarray(out["img_up"].numpy())).unsqueeze(0)
    y = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    out["legacy_up"] = (2 * y - 1)[0].float()
    save("eval_resize.safetensors", out)


# ---- InceptionV3FID against pytorch-fid's model, on tocha's stand-in weights ------------------------
def inception_weights():
    path = os.path.join(tempfile.mkdtemp(), "inception_f64.safetensors")
    subprocess.run([os.path.join(ROOT, "build", "tocha"), os.path.join(HERE, "eval_weights.lua"), path],
                   check=True, cwd=ROOT)
    return load_file(path)


def pytorch_fid_models(sd, dims):
    """pytorch-fid's InceptionV3 (its own code) and the torchvision network it patches, with sd
    loaded where pytorch-fid would download its weights"""
    import pytorch_fid.inception as pi
    pi.load_state_dict_from_url = lambda *a, **k: sd
    block = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[d] for d in dims]).double().eval()
    net = pi.fid_inception_v3().double().eval()
    return block, net


def gen_inception():
    from cleanfid.resize import make_resizer
    import torchvision.transforms.functional as TF
    import torch.nn.functional as F

    sd = inception_weights()
    dims = [64, 192, 768, 2048]
    block, net = pytorch_fid_models(sd, dims)
    out = {}
    # small inputs (107 x 107: every block still sees more than one pixel, so max and average
    # pools differ) through the network itself, f64
    x = torch.rand(2, 3, 107, 107, dtype=torch.float64)
    out["x107"] = x
    with torch.no_grad():
        block.resize_input = False
        feats = block(x)  # normalize_input: 2x - 1 inside
        for d, f in zip(dims, feats):
            out["feat%d" % d] = F.adaptive_avg_pool2d(f, (1, 1)).flatten(1)
        logits = net(2 * x - 1)
        out["logits"] = logits
        out["logits_unbiased"] = logits - net.fc.bias
        # the whole legacy path at 299 in f32: u8 image -> ToTensor -> pytorch-fid's InceptionV3
        img = rng.randint(0, 256, (45, 61, 3)).astype(np.uint8)
        out["img"] = torch.from_numpy(img)
        block32 = pytorch_fid_models({k: v.float() for k, v in sd.items()}, [2048])[0].float().eval()
        t = TF.to_tensor(Image.fromarray(img)).unsqueeze(0)
        out["legacy_2048"] = block32(t)[0].flatten(1).double()
        # the clean path: clean-fid's resize, (x - 128) / 128, the same network
        r = torch.from_numpy(make_resizer("PIL", False, "bicubic", (299, 299))(img)).permute(2, 0, 1)[None]
        block32.resize_input, block32.normalize_input = False, False
        out["clean_2048"] = block32((r - 128) / 128)[0].flatten(1).double()
        # torch-fidelity's extractor (its own network code and TensorFlow-1 resize) on the same
        # image and weights: the features FID / KID use and the logits the Inception Score uses
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        pth = os.path.join(tempfile.mkdtemp(), "inception.pth")
        torch.save({k: v.float() for k, v in sd.items()}, pth)
        fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=pth)
        f, logits = fe(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())
        out["fidelity_2048"], out["fidelity_logits_unbiased"] = f.double(), logits.double()
    save("eval_inception.safetensors", out)


# ---- CLIP: a tiny random CLIPModel in transformers' folder layout, and torchmetrics' score ----------
class Features(torch.nn.Module):
    """CLIPModel whose get_*_features return the projected tensor, as torchmetrics expects
    (transformers 5 returns an output object there); everything else is CLIPModel's own"""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.get_text_features(input_ids, attention_mask).pooler_output


def gen_clip():
    import shutil
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPProcessor, CLIPImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    out_dir = os.path.join(HERE, "eval_clip")
    os.makedirs(out_dir, exist_ok=True)
    vocab = os.path.join(HERE, "text_vocab")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(vocab, f), os.path.join(out_dir, f))
    tok = CLIPTokenizer(os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt"))
    n = len(tok)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    size = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pil = CLIPImageProcessorPil(**size)
    images = [torch.from_numpy(rng.randint(0, 256, (3, h, w)).astype(np.uint8)) for h, w in ((40, 50), (64, 33), (32, 32))]
    captions = ["a small red circle on the left", "a blue square above a green triangle", "a big yellow star"]
    # the first random model whose scores have both signs and a positive mean, so that the
    # order of mean and clamp shows
    for seed in range(1000):
        torch.manual_seed(seed)
        model = CLIPModel(cfg).double().eval()
        with torch.no_grad():
            per, _ = _clip_score_update(images, captions, Features(model), CLIPProcessor(image_processor=pil, tokenizer=tok))
        if per.mean() > 0 and per.min() < 0:
            break
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=pil, tokenizer=tok).save_pretrained(out_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):  # tocha reads vocab.json + merges.txt
        if os.path.exists(os.path.join(out_dir, f)):
            os.remove(os.path.join(out_dir, f))
    out = {"img%d" % (i + 1): im.permute(1, 2, 0).contiguous() for i, im in enumerate(images)}
    fast = CLIPImageProcessor(**size)
    out["pixels_pil"] = pil(images=images, return_tensors="pt")["pixel_values"].double()
    out["pixels_torchvision"] = fast(images=images, return_tensors="pt")["pixel_values"].double()
    m = Features(model)
    with torch.no_grad():
        out["image_features"] = m.get_image_features(out["pixels_pil"])
        enc = tok(captions, padding=True, return_tensors="pt")
        out["text_features"] = m.get_text_features(enc["input_ids"], enc["attention_mask"])
        for name, proc in (("pil", pil), ("torchvision", fast)):
            per, _ = _clip_score_update(images, captions, m, CLIPProcessor(image_processor=proc, tokenizer=tok))
            out["per_sample_" + name] = per.double()
            out["score_" + name] = torch.clamp(per.mean(0), min=0).double().reshape(1)
    save("eval_clip.safetensors", out)


def main():
    which = sys.argv[1:] or ["metrics", "resize", "inception", "clip"]
    for w in which:
        globals()["gen_" + w]()


if __name__ == "__main__":
    main()
