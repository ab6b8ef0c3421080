#!/bin/sh
# bench/t2i.sh [--ops]: runs bench/t2i.lua (tocha) and bench/t2i_torch.py (PyTorch + diffusers +
# transformers) on the same number of threads (THREADS, default 2), alternating ROUNDS times
# (default 2) so both see the same machine load, and prints one table of the best times: the
# training step of the default experiment's model, or with --ops the model's main ops.
# Wall time and CPU time (all threads; steadier when the machine is shared) are both shown;
# ratio = PyTorch / tocha, > 1 means tocha is faster. OPS=silu,exp REPS=40 (with --ops): only the
# cases whose names start so, timed 40 times each. Needs python3 with torch, diffusers, transformers.
exec sh "$(dirname "$0")/alternate.sh" t2i "$@"
