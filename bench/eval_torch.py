"""eval_torch.py: the PyTorch twin of bench/eval.lua: pytorch-fid's InceptionV3 (its own code;
random weights stand in for the downloaded ones, which the timing does not depend on) turning
batches of 299x299 images in [0, 1] into 2048-d features, eval mode, no_grad.
usage: python3 bench/eval_torch.py BATCH BATCHES THREADS [DEVICE]  -> prints "images/s: N" """
import sys
import time

import torch
import pytorch_fid.inception as pi


def main():
    batch, batches, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # pytorch-fid's network with its own random initialisation instead of the download
    pi.load_state_dict_from_url = lambda *a, **k: None
    orig = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, sd, *a, **k: None if sd is None else orig(self, sd, *a, **k)
    model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(device)
    x = torch.rand(batch, 3, 299, 299, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        model(x)  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)[0].cpu()
        sync()
        dt = time.perf_counter() - t0
    print("images/s: %.3f" % (batch * batches / dt))


if __name__ == "__main__":
    main()
