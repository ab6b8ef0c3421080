#!/bin/sh
# bench/t2i_profile.sh: where the demo's training step (bench/t2i.lua) spends its time: `perf
# record` with DWARF call graphs of the timed steps only (perf's control fifo; the warm-up and
# the model's construction are left out), then bench/t2i_profile.py groups the samples by op
# kind and phase (forward / backward), and the engine's own costs (autograd, the Lua collector
# and interpreter, the optimizer, the noise) apart. THREADS (default 1) and STEPS (default 20);
# with THREADS=2 it adds the main thread's work outside any parallel region. Needs perf and
# python3 (only for the grouping). Milliseconds are CPU time per step.
set -e
cd "$(dirname "$0")/.."
THREADS=${THREADS:-1}; STEPS=${STEPS:-20}
export THREADS STEPS OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
# build/tocha restarts itself to set GOMP_SPINCOUNT, which perf's unwinder does not follow: set it here
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-20000}
make -s build/tocha >/dev/null
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/ctl"
PERF_CTL="$dir/ctl" perf record -q -F 1000 --call-graph dwarf,32768 -D -1 --control "fifo:$dir/ctl" \
    -o "$dir/perf.data" ./build/tocha bench/t2i.lua >"$dir/out" 2>/dev/null
perf script -i "$dir/perf.data" -F tid,period,ip,sym,dso 2>/dev/null >"$dir/stacks"
python3 bench/t2i_profile.py "$dir/stacks" "$dir/out" "$STEPS" "$THREADS"
