"""check_eval.py: FID of two folders by pytorch-fid and by clean-fid (their own folder reading,
resizing and statistics code), with the stand-in Inception weights tocha wrote, so that
tests/interop/eval.sh can compare `tocha eval fid` against them. pytorch-fid's network takes
the weights where it would download its own; clean-fid's "clean" mode is given a feature
model that does what its TorchScript Inception does, (x - 128) / 128 and the network.
usage: python3 check_eval.py WEIGHTS.safetensors DIR_A DIR_B DIMS -> prints "legacy: F" and "clean: F" """
import sys

import numpy as np
import torch
from safetensors.torch import load_file


def main():
    weights, a, b, dims = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sd = {k: v.float() for k, v in load_file(weights).items()}
    import pytorch_fid.inception as pi
    from pytorch_fid.fid_score import calculate_fid_given_paths
    pi.load_state_dict_from_url = lambda *args, **kw: sd
    torch.set_num_threads(2)
    print("legacy: %.10g" % calculate_fid_given_paths([a, b], 50, "cpu", dims, num_workers=0))

    from cleanfid.fid import get_folder_features, frechet_distance
    block = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]], resize_input=False, normalize_input=False).eval()

    def model(x):  # clean-fid's InceptionV3W without resize_inside: (x - 128) / 128, then the network
        with torch.no_grad():
            f = block((x - 128) / 128)[0]
            return torch.nn.functional.adaptive_avg_pool2d(f, (1, 1)).flatten(1)

    feats = [get_folder_features(d, model=model, num_workers=0, batch_size=50, device=torch.device("cpu"),
                                 mode="clean", verbose=False) for d in (a, b)]
    stats = [(np.mean(f, axis=0), np.cov(f, rowvar=False)) for f in feats]
    print("clean: %.10g" % frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1]))


if __name__ == "__main__":
    main()
