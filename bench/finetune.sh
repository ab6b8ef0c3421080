#!/bin/sh
# bench/finetune.sh: the fine-tuning step of the default experiment's model (f32 and bf16
# autocast) in tocha (bench/finetune.lua) and PyTorch + diffusers (bench/finetune_torch.py), on
# THREADS threads (default 2), alternating ROUNDS times (default 3) so both see the same machine
# load; one table of the best times (ratio = PyTorch / tocha, > 1: tocha faster). Then the data
# side, tocha alone: images/s from the latent cache against encoding every batch.
set -e
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} sh bench/alternate.sh finetune
THREADS=${THREADS:-2}; export THREADS
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
echo
echo "the training set, images/s (best of the timed passes; higher is faster):"
./build/tocha bench/finetune.lua --data | awk '/^RESULT/ { v[$2] = $3; printf "  %-22s %10.1f\n", $2, $3 }
    END { if (v["encode_images_per_s"] > 0) printf "  cached / encoded: %.1fx\n", v["cached_images_per_s"] / v["encode_images_per_s"] }'
