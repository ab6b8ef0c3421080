"""data_torch.py: the PyTorch twin of bench/data.lua: the same folder of JPEGs through PIL and a
torch DataLoader with the same transforms (resize shorter side to 288, bilinear; random 256 crop;
random horizontal flip; float CHW in [-1, 1]), batch size and worker count.
usage: python3 bench/data_torch.py DIR WORKERS EPOCHS BATCH  -> prints "images/s: N" """
import os
import random
import sys
import time

import numpy as np
import torch
from PIL import Image


class Folder(torch.utils.data.Dataset):
    def __init__(self, root):
        self.files = sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".jpg"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        with open(path[:-4] + ".txt") as f:
            text = f.read().rstrip()
        img = Image.open(path).convert("RGB")
        w, h = img.size
        s = 288
        size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        img = img.resize(size, Image.BILINEAR)
        w, h = img.size
        top, left = random.randint(0, h - 256), random.randint(0, w - 256)
        img = img.crop((left, top, left + 256, top + 256))
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float().div_(127.5).sub_(1)
        return {"image": x, "text": text}


def main():
    root, workers, epochs, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    ds = Folder(root)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    for b in loader:  # warm-up epoch: workers started, files in the page cache
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += b["image"].shape[0]
    dt = time.perf_counter() - t0
    print("images/s: %.1f" % (n / dt))


if __name__ == "__main__":
    main()
