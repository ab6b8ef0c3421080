#!/bin/sh
# bench/run.sh: runs bench/core.lua (tocha) and bench/core_torch.py (PyTorch) on the same
# number of threads (THREADS, default 2) and prints one table: time, peer time, ratio.
# ratio > 1 means tocha is faster. Needs python3 with torch (pip install torch).
set -e
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}; export THREADS
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
make -s build/tocha >/dev/null
mkdir -p build
cc -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/gemm_openblas.c -o build/gemm_openblas -lopenblas
tocha_out=$(./build/tocha bench/core.lua)
blas_out=$(./build/gemm_openblas)
torch_out=$(python3 bench/core_torch.py)
get() { echo "$1" | awk -v k="$2" '$1 == "RESULT" && $2 == k { print $3 }'; }
printf "%-22s %14s %14s %8s   %s\n" "benchmark" "tocha" "peer" "ratio" "peer is"
row() { # name scale unit peer_out peer_key peer_name
    t=$(get "$tocha_out" "$1"); p=$(get "$4" "$5")
    awk -v n="$1" -v t="$t" -v p="$p" -v s="$2" -v u="$3" -v pn="$6" 'BEGIN {
        printf "%-22s %11.3f %-2s %11.3f %-2s %7.2fx   %s\n", n, t * s, u, p * s, u, p / t, pn }'
}
row add_chain_per_op 10 us "$torch_out" add_chain_per_op "PyTorch eager"
row gemm_1024 1000 ms "$blas_out" gemm_1024_openblas "OpenBLAS sgemm directly"
row gemm_1024 1000 ms "$torch_out" gemm_1024 "PyTorch"
row mlp_train_step 1000 ms "$torch_out" mlp_train_step "PyTorch (its default AdamW)"
row conv2d_fwd_bwd 1000 ms "$torch_out" conv2d_fwd_bwd "PyTorch"
echo "(add_chain_per_op: time per add = total / 100000, shown in us; threads: $THREADS)"
