#!/bin/sh
# bench/sd.sh [models] [load]: Stable Diffusion 1.5 at its real sizes with random weights, tocha
# against diffusers / transformers on the same threads (THREADS, default 2), each side in its own
# process, alternating ROUNDS times (default 2) so both see the same machine load; best times.
#   models: bench/sd_models.lua vs bench/sd_models_torch.py: UNet forward (64x64 latents, batch 1),
#           attention at the UNet's 4,096 tokens (forward, forward + backward),
#           VAE decode (512x512), text encoder (77 tokens), f32; ratio = PyTorch / tocha
#   load:   bench/sd_load.lua vs bench/sd_load_torch.py: models.load against from_pretrained on a
#           random SD 1.5 in f16 (written once to SD_DIR, default /tmp/tocha-sd15, 2 GB), as f16
#           and as f32, then every weight read once; seconds and peak resident memory (VmHWM)
# Needs python3 with torch, diffusers and transformers; about 6 GB of memory at a time.
set -e
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}; export THREADS
ROUNDS=${ROUNDS:-2}
SD_DIR=${SD_DIR:-/tmp/tocha-sd15}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
make -s build/tocha >/dev/null
what=${*:-models load}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

case " $what " in *" models "*)
    ROUNDS=$ROUNDS sh bench/alternate.sh sd_models ;;
esac

case " $what " in *" load "*)
    [ -f "$SD_DIR/model_index.json" ] || ./build/tocha bench/sd_load.lua make "$SD_DIR"
    for case in "unet f16" "all f16" "unet f32"; do
        r=0
        while [ $r -lt "$ROUNDS" ]; do
            # shellcheck disable=SC2086
            ./build/tocha bench/sd_load.lua load "$SD_DIR" $case | sed -n "s/^RESULT /tocha ${case% *}_${case#* } /p" >>"$out"
            # shellcheck disable=SC2086
            python3 bench/sd_load_torch.py "$SD_DIR" $case 2>/dev/null | sed -n "s/^RESULT /torch ${case% *}_${case#* } /p" >>"$out"
            r=$((r + 1))
        done
    done
    awk -v rounds="$ROUNDS" '
        function min(a, b) { return (a == "" || b < a) ? b : a }
        function max(a, b) { return (a == "" || b > a) ? b : a }
        { k = $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
          if ($3 ~ /_s$/) v[$1, k, $3] = min(v[$1, k, $3], $4); else v[$1, k, $3] = max(v[$1, k, $3], $4) }
        END {
            printf "%-9s %7s | %-23s | %-23s | %-30s\n", "", "files", "load s (lazy)", "load + read every weight s", "peak RSS MB (minus the start)"
            printf "%-9s %7s | %7s %7s %7s | %7s %7s %7s | %9s %9s %5s %5s\n", "case", "MB", "tocha", "torch", "ratio",
                "tocha", "torch", "ratio", "tocha", "torch", "t/MB", "ratio"
            for (i = 1; i <= n; i++) {
                k = order[i]
                tr = v["tocha", k, "rss_read_mb"]; pr = v["torch", k, "rss_read_mb"]
                td = tr - v["tocha", k, "rss_before_mb"]; pd = pr - v["torch", k, "rss_before_mb"]
                printf "%-9s %7.0f | %7.2f %7.2f %6.2fx | %7.2f %7.2f %6.2fx | %4.0f(%4.0f) %4.0f(%4.0f) %5.2f %4.2fx\n", k,
                    v["tocha", k, "files_mb"], v["tocha", k, "load_s"], v["torch", k, "load_s"],
                    v["torch", k, "load_s"] / v["tocha", k, "load_s"], v["tocha", k, "load_read_s"],
                    v["torch", k, "load_read_s"], v["torch", k, "load_read_s"] / v["tocha", k, "load_read_s"],
                    tr, td, pr, pd, tr / v["tocha", k, "files_mb"], pr / tr
            }
            printf "(best times and the largest peaks of %s alternating rounds, fresh processes; t/MB: tocha peak / file size;\n", rounds
            printf " ratio = PyTorch / tocha, > 1: tocha faster or smaller; the files sit in the page cache after the first round)\n"
        }' "$out" ;;
esac
