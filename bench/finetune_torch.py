"""finetune_torch.py: the peer of bench/finetune.lua in PyTorch + diffusers: the default
experiment's UNet (diffusers' UNet2DConditionModel with tocha's tiny preset and the demo's
overrides) trained on cached text embeddings, batch 16 at 32x32, v-prediction MSE, backward,
gradient clipping, AdamW; in f32 and under torch.autocast("cpu", torch.bfloat16).
Prints "RESULT <name> <wall seconds> <CPU seconds>" lines (the bests of the timed repetitions),
on THREADS threads."""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from t2i_torch import best_of, result  # noqa: E402  (the same timing as the other benchmarks)

THREADS = int(os.environ.get("THREADS", "2"))
STEPS = int(os.environ.get("STEPS", "5"))
N, LEN, WIDTH = 16, 32, 64
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def main():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=32, out_channels=3, block_out_channels=(16, 32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=8,
        cross_attention_dim=WIDTH, norm_num_groups=8, in_channels=5, time_embedding_dim=512,
        resnet_time_scale_shift="scale_shift", class_embed_type="projection",
        projection_class_embeddings_input_dim=WIDTH)
    unet.train()
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    x0 = torch.rand(N, 3, 32, 32) * 2 - 1
    xy = torch.rand(N, 2, 32, 32) * 2 - 1
    states, pooled = torch.randn(N, LEN, WIDTH), torch.randn(N, WIDTH)
    for dtype in ("f32", "bf16"):
        def step():
            noise = torch.randn_like(x0)
            ts = torch.randint(0, 1000, (N,))
            xt = sched.add_noise(x0, noise, ts)
            target = sched.get_velocity(x0, noise, ts)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                pred = unet(torch.cat([xt, xy], 1), ts, states, class_labels=pooled).sample
            F.mse_loss(pred.float(), target).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()

        result("finetune_step_" + dtype, best_of(step, STEPS))


if __name__ == "__main__":
    main()
