#!/bin/sh
# bench/alternate.sh NAME [ARGS...]: runs bench/NAME.lua (tocha) and bench/NAME_torch.py (its
# PyTorch peer), both given ARGS, alternating ROUNDS times (default 2) on THREADS threads
# (default 2) so both see the same machine load, and prints bench/best.awk's table of the best
# times (ratio = PyTorch / tocha, > 1: tocha faster). t2i.sh, finetune.sh and sd.sh call it.
set -e
cd "$(dirname "$0")/.."
name=$1
shift
THREADS=${THREADS:-2}; export THREADS
ROUNDS=${ROUNDS:-2}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
make -s build/tocha >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
r=0
while [ $r -lt "$ROUNDS" ]; do
    ./build/tocha "bench/$name.lua" "$@" | sed -n 's/^RESULT /tocha /p' >>"$out"
    python3 "bench/${name}_torch.py" "$@" | sed -n 's/^RESULT /torch /p' >>"$out"
    r=$((r + 1))
done
awk -v threads="$THREADS" -v rounds="$ROUNDS" -f bench/best.awk "$out"
