#!/usr/bin/env bash
# scripts/gpu_check.sh: the one script for a session with a lent GPU (about 15 minutes of device
# time in all, so every step has a time limit and the whole run stays under about 8 minutes).
#   scripts/gpu_check.sh prepare       HERE, on the build machine: builds build/tocha and build/test_c
#                                      with CUDA, copies into build/gpulibs/ the shared libraries they
#                                      need beyond glibc, the C++ runtime and CUDA (the GPU machine
#                                      has libjpeg.so.8, not .62, and maybe no cairo) and diffusers'
#                                      Python package into build/pylib/, packs the four
#                                      into build/gpu.tar.xz (the one path to carry) and prints the size
#                                      of what a run sends (the limit is 64 MiB)
#   scripts/gpu_check.sh run [STEPS]   THERE, from the repository root: unpacks build/gpu.tar.xz where
#                                      needed, then the library check, the card, the C tests, the GPU
#                                      suite, the benchmarks against PyTorch (GPU ops, then SD 1.5
#                                      at real size) and the suite under
#                                      compute-sanitizer memcheck; logs and RESULTS.md go to $OUT, and
#                                      a summary table comes last. STEPS: any of ctest suite bench
#                                      sd experiment memcheck (default: all but experiment, in that
#                                      order; experiment trains the default experiment on the GPU)
# Environment for run: TOCHA_BIN (default build/tocha; build-emu/tocha runs it without a GPU, on the
# CUDA emulator), OUT (default build/gpu_out), GPU_CHECK_BUDGET (seconds for the whole run, default
# 480: a step that would pass it is cut short or left out, and says so), SD_GPU_FLAGS (e.g.
# --channels_last: passed to both sides of the sd step). Without a GPU each step
# says why it is skipped, and the benchmarks run at --small sizes.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

# ---- prepare ---------------------------------------------------------------------------------
# libraries the GPU machine has in a compatible version (glibc 2.39, GCC 14's C++ runtime, CUDA 13,
# cuDNN 9, the driver): never carried
SYSTEM_LIBS='^(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|ld-linux-x86-64|linux-vdso'
SYSTEM_LIBS+='|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnvrtc|libnvJitLink)\.so'
PACK=build/gpu.tar.xz # build/tocha, build/test_c and build/gpulibs/, compressed: what a run carries

prepare() {
    echo "== building build/tocha and build/test_c with CUDA"
    make --no-print-directory -j"$(nproc)" build/tocha build/test_c || { echo "error: the build failed"; exit 1; }
    if ! nm build/tocha 2>/dev/null | grep -q cudaStreamSynchronize; then
        echo "error: build/tocha has no CUDA in it (is nvcc on the PATH or in /usr/local/cuda/bin?)"; exit 1
    fi
    echo "== copying the shared libraries to carry into build/gpulibs/"
    rm -rf build/gpulibs && mkdir -p build/gpulibs
    ldd build/tocha build/test_c | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
        while read -r name path; do
            echo "$name" | grep -Eq "$SYSTEM_LIBS" && continue
            case $path in */cuda*) continue ;; esac
            cp -L "$path" "build/gpulibs/$name"
        done
    ls build/gpulibs | tr '\n' ' '; echo
    local missing glibc
    missing=$(LD_LIBRARY_PATH=$ROOT/build/gpulibs ldd build/tocha build/test_c |
        awk '/not found/ || ($3 ~ /^\// && $3 !~ /gpulibs/) { print $1 }' | grep -Ev "$SYSTEM_LIBS" | grep -v cuda)
    [ -n "$missing" ] && { echo "error: still taken from the system: $missing"; exit 1; }
    glibc=$(objdump -T build/tocha build/test_c build/gpulibs/* 2>/dev/null | grep -o 'GLIBC_2\.[0-9]*' |
        sort -uV | tail -1)
    echo "newest glibc symbol needed: $glibc (the GPU machine has 2.39)"
    echo "== copying diffusers (bench/sd_gpu_torch.py's models; not installed there) and the"
    echo "   huggingface_hub it needs into build/pylib/"
    rm -rf build/pylib && mkdir -p build/pylib
    local pkg dir
    for pkg in diffusers huggingface_hub; do
        dir=$(python3 -c "import $pkg, os; print(os.path.dirname($pkg.__file__))" 2>/dev/null) &&
            cp -r "$dir" build/pylib/ ||
            echo "warning: no $pkg here: the SD benchmark may have no PyTorch side"
    done
    find build/pylib -name __pycache__ -prune -exec rm -rf {} +
    echo "== packing $PACK"
    tar -C build -cf - tocha test_c gpulibs pylib | xz -T2 -6 >"$PACK" || { echo "error: packing failed"; exit 1; }
    local pack tree
    pack=$(du -b "$PACK" | cut -f1)
    # what travels besides: tracked files and untracked ones git does not ignore
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null |
        awk '$2 == "total" { s += $1 } END { print s + 0 }')
    awk -v p="$pack" -v t="$tree" 'BEGIN {
        m = 1048576
        printf "carried: %.1f MiB packed + the working tree %.1f MiB = %.1f MiB (limit 64)\n", p / m, t / m, (p + t) / m
        if (p + t > 60 * m) print "warning: close to or over the 64 MiB limit" }'
    git ls-files -o --exclude-standard --directory | grep -E '^build' |
        sed 's/^/warning: not ignored by git, so it travels with every run: /'
    echo "next, on the GPU machine: scripts/gpu_check.sh run   (carry $PACK)"
}

# ---- run -------------------------------------------------------------------------------------
BIN=${TOCHA_BIN:-build/tocha}
OUT=${OUT:-$ROOT/build/gpu_out}
# the carried libraries serve tocha only (each tocha command gets LD_LIBRARY_PATH=$LIBPATH):
# python3 and torch keep the system's. cuDNN: tocha is built against 9.19 (the build machine's);
# the GPU machine's system cuDNN is 9.14 and PyTorch's own 9.19, so tocha takes PyTorch's, which
# also puts both sides of the conv benchmark on one cuDNN
CUDNN_DIR=$(python3 -c 'import nvidia.cudnn as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
[ -d "$CUDNN_DIR" ] || CUDNN_DIR=
LIBPATH=$ROOT/build/gpulibs${CUDNN_DIR:+:$CUDNN_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# the whole run's deadline: each step's limit is its own or what is left, whichever is less
BUDGET=${GPU_CHECK_BUDGET:-480}
START=$(date +%s)
SUMMARY=()
note() { SUMMARY+=("$(printf '%-24s %s' "$1" "$2")"); printf '%-24s %s\n' "$1" "$2" | tee -a "$OUT/RESULTS.md"; }
section() { printf '\n== %s\n' "$1"; printf '\n## %s\n\n' "$1" >>"$OUT/RESULTS.md"; }
passline() { grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1; }
limit() { # limit CAP: seconds a step may take; 0 when too little is left to start it
    local left=$((BUDGET - ($(date +%s) - START) - 10))
    if [ "$left" -lt 20 ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# in_time NAME CAP: sets LIMIT, or notes that the step was left out
in_time() {
    LIMIT=$(limit "$2")
    [ "$LIMIT" -gt 0 ] && return 0
    note "$1" "NOT RUN: the run's budget of ${BUDGET} s is spent"
    return 1
}

step_libraries() {
    section "libraries"
    local missing
    missing=$(LD_LIBRARY_PATH=$LIBPATH ldd "$BIN" 2>&1 | grep -E 'not found|not a dynamic')
    if [ -n "$missing" ]; then
        echo "$missing"
        note "libraries" "MISSING: $(echo "$missing" | awk '{ print $1 }' | tr '\n' ' ')"
        return 1
    fi
    LD_LIBRARY_PATH=$LIBPATH ldd "$BIN" | grep -E 'cudnn|cublas' | sed 's/ (0x.*//'
    note "libraries" "all found ($BIN)"
}

step_card() {
    section "card"
    GPU=0
    command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && GPU=1
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); host kernel $(uname -r); $(nproc) cores"
        if [ "$GPU" = 1 ]; then
            nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
            nvidia-smi | grep -o 'CUDA Version: [0-9.]*'
        else
            echo "no GPU: nvidia-smi is missing or sees no device"
        fi
        command -v nvcc >/dev/null && nvcc --version | tail -1
        timeout 60 env LD_LIBRARY_PATH=$LIBPATH "$ROOT/$BIN" -e 'local T = require "tocha"
            local ok = T.cuda.is_available()
            print("tocha: cuda available " .. tostring(ok) .. ", " .. T.cuda.device_count() .. " device(s)"
              .. (ok and (", " .. T.cuda.get_device_name(0)) or ""))' 2>&1
    } | tee -a "$OUT/RESULTS.md"
    CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
    CARD=${CARD:+$CARD (name, driver), $(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*')}
    CARD=${CARD:-no GPU}
}

step_ctest() {
    section "C tests"
    in_time "C tests" 30 || return
    timeout "$LIMIT" env LD_LIBRARY_PATH=$LIBPATH "$ROOT/build/test_c" >"$OUT/ctest.log" 2>&1
    local rc=$? line
    line=$(passline "$OUT/ctest.log")
    [ $rc = 124 ] && line="TIMED OUT after $LIMIT s; ${line:-no summary}"
    tail -3 "$OUT/ctest.log"
    note "C tests" "${line:-no summary line (exit $rc)}"
}

# the GPU suite: every test whose name holds "cuda" (tests/test_cuda*.lua); every check's error in suite.log
step_suite() {
    section "GPU suite (TEST=cuda)"
    in_time "GPU suite" 120 || return
    TEST=cuda TOCHA_CUDA_VERBOSE=1 timeout "$LIMIT" env LD_LIBRARY_PATH=$LIBPATH "$ROOT/$BIN" tests/run.lua \
        >"$OUT/suite.log" 2>&1
    local rc=$? line
    grep -v '^  ok ' "$OUT/suite.log" | tail -60
    line=$(passline "$OUT/suite.log")
    [ $rc = 124 ] && line="TIMED OUT after $LIMIT s; ${line:-no summary}"
    note "GPU suite" "${line:-no summary line (exit $rc)}"
}

# compute-sanitizer memcheck over the suite in every dtype, without the training run (f32 alone
# took under a minute on an H100); first a probe, since the sanitizer refuses some machines (seen
# on gVisor: "Device not supported")
step_memcheck() {
    section "GPU suite under compute-sanitizer memcheck"
    local cs
    cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
        /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
    if [ "$GPU" = 0 ] || [ -z "$cs" ]; then
        note "memcheck" "skipped: ${cs:+no GPU}${cs:-no compute-sanitizer}"; return
    fi
    in_time "memcheck" 60 || return
    LD_LIBRARY_PATH=$LIBPATH timeout -k 5 "$LIMIT" "$cs" --tool memcheck "$ROOT/$BIN" -e 'local T = require "tocha"
        print((T.ones({1000}, {device = "cuda"}) + 1):sum():item())' >"$OUT/memcheck.log" 2>&1
    if ! grep -q 'ERROR SUMMARY: 0 errors' "$OUT/memcheck.log"; then
        tail -5 "$OUT/memcheck.log"
        local why
        why=$(grep -m1 -E 'rror|not supported' "$OUT/memcheck.log" | cut -c1-80)
        note "memcheck" "UNAVAILABLE: the probe failed ($why)"
        return
    fi
    in_time "memcheck" 300 || return
    # TOCHA_CUDA_NO_CACHE=1 asks the allocator for exact-size blocks, where it knows the variable,
    # so that memcheck sees an access past a tensor's end rather than into a cached block's slack
    TEST=cuda TOCHA_CUDA_QUICK=1 TOCHA_CUDA_NO_CACHE=1 LD_LIBRARY_PATH=$LIBPATH \
        timeout -k 10 "$LIMIT" "$cs" --tool memcheck --print-limit 30 "$ROOT/$BIN" tests/run.lua \
        >"$OUT/memcheck.log" 2>&1
    local rc=$? errs line
    grep -v '^  ok ' "$OUT/memcheck.log" | grep -E 'FAIL|=========|passed' | head -40
    errs=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$OUT/memcheck.log" | tail -1)
    if [ -z "$errs" ]; then # stopped before its summary: count the reports so far
        errs="$(grep -cE '^========= (Invalid|Program hit|Malloc|Out-of-range|Misaligned|Address|Barrier|Leaked)' \
            "$OUT/memcheck.log") error reports before it stopped"
    fi
    line=$(passline "$OUT/memcheck.log")
    if [ $rc = 124 ] || [ $rc = 137 ]; then errs="TIMED OUT after $LIMIT s; $errs"; fi
    note "memcheck" "$errs; suite: ${line:-no summary}"
}

# bench_pair NAME LOG SCRIPT SECONDS TORCH_SECONDS [FLAGS]: tocha's bench/SCRIPT.lua, then PyTorch's
# bench/SCRIPT_torch.py (its lines prefixed "torch "), both into LOG, --small without a GPU
bench_pair() {
    local small="${6:-}" rc
    [ "$GPU" = 0 ] && small="$small --small"
    in_time "$1" "$4" || return 1
    timeout "$LIMIT" env LD_LIBRARY_PATH=$LIBPATH "$ROOT/$BIN" "bench/$3.lua" $small >"$2" 2>&1
    rc=$?
    [ $rc = 124 ] && echo "tocha's $1 TIMED OUT after $LIMIT s" | tee -a "$2"
    if in_time "PyTorch $1" "$5"; then
        PYTHONPATH=$ROOT/build/pylib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 timeout "$LIMIT" \
            python3 "bench/${3}_torch.py" $small 2>&1 | sed 's/^/torch /' >>"$2"
    fi
    grep -E 'INFO|SKIP|rror' "$2" | head -10
}

# the benchmarks: one table of tocha's and PyTorch's times on this card, ratio = PyTorch / tocha
step_bench() {
    section "benchmarks (bf16 GEMM, conv 3x3 fwd+bwd in NCHW and channels-last, per-op overhead, attention fwd+bwd)"
    bench_pair "benchmarks" "$OUT/bench.log" gpu_ops 120 120 || return
    BENCH_TABLE=$(bench_table "$OUT/bench.log")
    printf '```\n%s\n```\n' "$BENCH_TABLE" >>"$OUT/RESULTS.md"
    echo "$BENCH_TABLE"
    local met missed
    met=$(echo "$BENCH_TABLE" | grep -c ' ok$'); missed=$(echo "$BENCH_TABLE" | grep -c ' MISSED$')
    note "benchmarks" "$met goals met, $missed missed"
}

# Stable Diffusion 1.5 at real size: attention fwd+bwd at SD's four shapes on cuDNN's fused
# attention and on the flash kernel (goal: 1.0x PyTorch's SDPA; "INFO attention" lines say which
# backend ran and why), the UNet's training step (goal: 1.0x PyTorch eager), its peak memory with
# and without gradient checkpointing, DDIM sampling eager and from CUDA graphs against PyTorch's
# eager and CUDA-graph pipelines (goal 1.5x), model FLOPs utilisation against the bf16 GEMM rate
# each side measured. diffusers is
# not installed on the GPU machine: prepare carries it in build/pylib.
step_sd() {
    section "Stable Diffusion 1.5 (attention on cuDNN and flash, UNet training step, fine-tuning recipe, peak memory, DDIM sampling)"
    bench_pair "SD benchmarks" "$OUT/sd.log" sd_gpu 240 200 "${SD_GPU_FLAGS:-}" || return
    SD_TABLE=$(sd_table "$OUT/sd.log")
    printf '```\n%s\n```\n' "$SD_TABLE" >>"$OUT/RESULTS.md"
    echo "$SD_TABLE"
    # which attention backend each shape ran, and why (cuDNN's refusals name the failing call)
    grep '^INFO attention' "$OUT/sd.log" | tee -a "$OUT/RESULTS.md"
    note "SD" "$(echo "$SD_TABLE" | grep -c ' ok$') goals met, $(echo "$SD_TABLE" | grep -c ' MISSED$') missed"
}

# the default experiment (experiments/t2i_shapes.lua, its default settings) trained and graded on
# the GPU: steps per second, the whole run's time, and the grades' total row
step_experiment() {
    section "the default experiment with --device cuda"
    [ "$GPU" = 0 ] && { note "experiment" "skipped: no GPU"; return; }
    in_time "experiment" 400 || return
    local t0 t1 rc line
    t0=$(date +%s)
    timeout "$LIMIT" env TOCHA_RUNS="$OUT/runs" LD_LIBRARY_PATH=$LIBPATH "$ROOT/$BIN" experiments/t2i_shapes.lua \
        --device cuda >"$OUT/experiment.log" 2>&1
    rc=$?; t1=$(date +%s)
    line=$(grep -E '^training: [0-9]+ steps in' "$OUT/experiment.log" | tail -1)
    if [ $rc != 0 ] || [ -z "$line" ]; then
        note "experiment" "FAILED (exit $rc$([ $rc = 124 ] && echo ", timed out after $LIMIT s"); see experiment.log)"
        return
    fi
    local steps secs total
    steps=$(echo "$line" | awk '{ print $2 }'); secs=$(echo "$line" | awk '{ print $5 }')
    total=$(grep -E '^total ' "$OUT/experiment.log" | tail -1)
    printf 'default experiment on cuda: %s (%.1f steps/s); whole run %d s; grades: %s\n' "$line" \
        "$(awk -v a="$steps" -v b="$secs" 'BEGIN { print b > 0 ? a / b : 0 }')" $((t1 - t0)) "$total" |
        tee -a "$OUT/RESULTS.md"
    note "experiment" "$steps steps in $secs s, run $((t1 - t0)) s; $total"
}

# RESULT and MEM lines of sd_gpu.lua / sd_gpu_torch.py -> the table: times, ratios, model FLOPs
# utilisation (PyTorch's FLOP count of the step over each side's time, against each side's GEMM
# rate), images/s of the fine-tuning recipe, peak memory; goals 1.0x for the training step, 1.5x
# for sampling
sd_table() {
    awk '
        $1 == "RESULT" { t[$2] = $3; order[++n] = $2 }
        $1 == "MEM" { m[$2] = $3; morder[++nm] = $2 }
        $1 == "torch" && $2 == "RESULT" { p[$3] = $4; fl[$3] = $5 }
        $1 == "torch" && $2 == "MEM" { pm[$3] = $4 }
        END {
            for (i = 1; i <= n; i++) if (order[i] ~ /^sd_gemm/) { g = order[i]; gt = 2 * (substr(g, 14) + 0) ^ 3 }
            printf "%-40s %12s %12s %8s %10s  %s\n", "benchmark", "tocha", "torch", "ratio", "MFU t/p", "goal"
            for (i = 1; i <= n; i++) {
                k = order[i]
                goal = k ~ /_train_bf16_b[0-9]+_[0-9x]+$/ || k ~ /^sd_attn/ ? 1.0 : k ~ /^sd15_sample/ ? 1.5 : 0
                mfu = "-"; b = k; sub(/_ckpt$/, "", b) # checkpointing recomputes: the model FLOPs are the same
                if (fl[b] > 0 && g != "" && (g in p) && (k in p))
                    mfu = sprintf("%.0f%%/%.0f%%", 100 * (fl[b] / t[k]) / (gt / t[g]), 100 * (fl[b] / p[k]) / (gt / p[g]))
                note = "(no goal)"
                if (k ~ /^sd15_recipe/ && match(k, /_b[0-9]+_/)) { # images per second at that batch
                    bs = substr(k, RSTART + 2, RLENGTH - 3) + 0
                    note = sprintf("(no goal; images/s %.1f, PyTorch %s)", bs / t[k], (k in p) ? sprintf("%.1f", bs / p[k]) : "-")
                }
                # sampling from CUDA graphs: against the PyTorch CUDA-graph row where there is one, else the eager
                # pipeline; attention on each tocha backend (suffix _cudnn, _flash): against PyTorch SDPA
                pk = k; sub(/_graph$/, "", pk); sub(/_(cudnn|flash)([+](cudnn|flash))?$/, "", pk)
                if (!(k in p) && (pk in p)) p[k] = p[pk]
                if (k in p) {
                    r = p[k] / t[k]
                    printf "%-40s %9.2f ms %9.2f ms %7.2fx %10s  %s\n", k, t[k] * 1e3, p[k] * 1e3, r, mfu,
                        goal == 0 ? note : sprintf(">= %.2fx %s", goal, r >= goal ? "ok" : "MISSED")
                } else printf "%-40s %9.2f ms %12s %8s %10s  (no PyTorch number)\n", k, t[k] * 1e3, "-", "-", mfu
            }
            for (i = 1; i <= nm; i++) {
                k = morder[i]
                printf "%-40s %9.2f GiB %9s GiB  peak memory\n", k, m[k] / 2^30,
                    (k in pm) ? sprintf("%.2f", pm[k] / 2^30) : "-"
            }
            if (n == 0) print "(no tocha results: see sd.log)"
            print "(ratio = PyTorch time / tocha time; MFU: model FLOPs (PyTorch counter) per second / the side'"'"'s bf16 GEMM rate)"
        }' "$1"
}

# RESULT lines (tocha's bare, PyTorch's prefixed "torch ") -> the table; goals: GEMM and conv at
# least 0.95x PyTorch (NCHW against NCHW, channels-last *_cl against channels-last; under each
# NCHW row PyTorch's channels-last time for reference), per-op overhead at most PyTorch eager's, attention (fwd+bwd, bf16)
# at least 1.0x PyTorch's SDPA, the fused GEGLU, bias + gelu, LayerNorm and GroupNorm + SiLU (fwd+bwd,
# bf16 and f32) at least 1.0x PyTorch's unfused expressions; the GroupNorm forward rows are for reference
bench_table() {
    awk '
        $1 == "RESULT" { t[$2] = $3; fl[$2] = $4; order[++n] = $2 }
        $1 == "torch" && $2 == "RESULT" { p[$3] = $4; if ($3 ~ /_cl$/) cl[substr($3, 1, length($3) - 3)] = $4 }
        END {
            printf "%-42s %13s %13s %8s %9s  %s\n", "benchmark", "tocha", "torch", "ratio", "TFLOP/s", "goal"
            for (i = 1; i <= n; i++) {
                k = order[i]; per_op = k ~ /per_op/; goal = per_op || k ~ /^(sdpa|geglu|bias_gelu|layernorm|groupnorm32_silu_fused)/ ? 1.0 : k ~ /^(gemm|conv)/ ? 0.95 : 0
                s = per_op ? 1e6 : 1e3; u = per_op ? "us" : "ms"
                tf = fl[k] > 0 ? sprintf("%9.1f", fl[k] / t[k] / 1e12) : sprintf("%9s", "-")
                pk = k; sub(/_graph$/, "", pk) # sampling from CUDA graphs: against the diffusers eager pipeline
                if (!(k in p) && (pk in p)) p[k] = p[pk]
                if (k in p) {
                    r = p[k] / t[k]
                    printf "%-42s %10.4f %s %10.4f %s %7.2fx %s  %s\n", k, t[k] * s, u, p[k] * s, u, r, tf,
                        goal == 0 ? "(no goal)" : sprintf(">= %.2fx %s", goal, r >= goal ? "ok" : "MISSED")
                } else printf "%-42s %10.4f %s %13s %8s %s  (no PyTorch number)\n", k, t[k] * s, u, "-", "-", tf
                if (k in cl) printf "%-42s %13s %10.4f %s %7.2fx %9s  (PyTorch channels-last, for reference)\n",
                    "  vs channels-last", "", cl[k] * s, u, cl[k] / t[k], ""
            }
            if (n == 0) print "(no tocha results: see bench.log)"
            print "(ratio = PyTorch time / tocha time: above 1, tocha is faster; medians of synchronized batches)"
        }' "$1"
}

# the packed build from prepare, unpacked where it is newer than build/tocha (the GPU machine has none)
unpack() {
    [ -f "$PACK" ] && [ "$BIN" = build/tocha ] || return 0
    [ -x build/tocha ] && [ ! "$PACK" -nt build/tocha ] && return 0
    echo "unpacking $PACK"
    if command -v xz >/dev/null; then xz -dc "$PACK" | tar -C build -xf -
    else python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$PACK" |
        tar -C build -xf -; fi
}

run() {
    mkdir -p "$OUT"
    unpack || { echo "error: could not unpack $PACK"; exit 1; }
    printf '# tocha on the GPU: scripts/gpu_check.sh run\n' >"$OUT/RESULTS.md"
    local steps=${*:-ctest suite bench sd memcheck}
    echo "tocha: $BIN; output: $OUT; steps: $steps; budget: $BUDGET s"
    if [ ! -x "$ROOT/$BIN" ]; then
        echo "error: $BIN is missing (run scripts/gpu_check.sh prepare first, and carry $PACK)"; exit 1
    fi
    step_libraries || { echo "stopping: tocha cannot start here"; exit 1; }
    step_card
    for s in $steps; do
        case $s in
        ctest) step_ctest ;; suite) step_suite ;; bench) step_bench ;; sd) step_sd ;;
        experiment) step_experiment ;; memcheck) step_memcheck ;;
        *) echo "unknown step $s (ctest suite bench sd experiment memcheck)" ;;
        esac
    done
    section "summary"
    printf '%s\n' "card: $CARD" "${SUMMARY[@]}" | tee -a "$OUT/RESULTS.md"
    [ -n "${BENCH_TABLE:-}" ] && echo "$BENCH_TABLE"
    [ -n "${SD_TABLE:-}" ] && echo "$SD_TABLE"
}

case ${1:-} in
prepare) prepare ;;
run) shift; run "$@" ;;
*) echo "usage: scripts/gpu_check.sh prepare | run [ctest suite bench sd experiment memcheck]"; exit 2 ;;
esac
