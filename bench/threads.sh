#!/bin/sh
# bench/threads.sh: runs bench/threads.lua with every CPU loop allowed to go parallel
# (TOCHA_PAR_MIN=0), to measure the minimum work per kind that core/cpu/threads.c keeps.
# REPS=30 (best of), CASES=add,sum (some cases). Run it on a machine doing nothing else.
set -e
cd "$(dirname "$0")/.."
make -s build/tocha >/dev/null
TOCHA_PAR_MIN=0 exec ./build/tocha bench/threads.lua
