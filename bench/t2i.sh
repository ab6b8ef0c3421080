#!/bin/sh
# bench/t2i.sh [--ops]: runs bench/t2i.lua (tocha) and bench/t2i_torch.py (PyTorch + diffusers +
# transformers) on the same number of threads (THREADS, default 2), alternating ROUNDS times
# (default 2) so both see the same machine load, and prints one table of the best times: the
# training step of the default experiment's model, or with --ops the model's main ops.
# Wall time and CPU time (all threads; steadier when the machine is shared) are both shown;
# ratio = PyTorch / tocha, > 1 means tocha is faster. Needs python3 with torch, diffusers, transformers.
set -e
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}; export THREADS
ROUNDS=${ROUNDS:-2}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
make -s build/tocha >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
r=0
while [ $r -lt "$ROUNDS" ]; do
    ./build/tocha bench/t2i.lua "$@" | sed -n 's/^RESULT /tocha /p' >>"$out"
    python3 bench/t2i_torch.py "$@" | sed -n 's/^RESULT /torch /p' >>"$out"
    r=$((r + 1))
done
# best per (side, name) over the rounds, then one row per name in the order first seen
awk -v threads="$THREADS" -v rounds="$ROUNDS" '
    function min(a, b) { return (a == "" || b < a) ? b : a }
    { k = $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      w[$1, k] = min(w[$1, k], $3); c[$1, k] = min(c[$1, k], $4) }
    END {
        printf "%-28s %10s %10s %7s   %10s %10s %7s\n", "ms (best)", "tocha", "torch", "ratio", "tocha cpu", "torch cpu", "ratio"
        for (i = 1; i <= n; i++) {
            k = order[i]
            printf "%-28s %10.2f %10.2f %6.2fx   %10.2f %10.2f %6.2fx\n", k,
                w["tocha", k] * 1e3, w["torch", k] * 1e3, w["torch", k] / w["tocha", k],
                c["tocha", k] * 1e3, c["torch", k] * 1e3, c["torch", k] / c["tocha", k]
        }
        printf "(threads: %s, best of %s alternating rounds; ratio = PyTorch / tocha, > 1: tocha faster)\n", threads, rounds
    }' "$out"
