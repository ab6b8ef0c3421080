# bench/best.awk: the table of bench/t2i.sh and bench/sd.sh from lines "<side> <name> <wall s>
# <cpu s>" (side tocha or torch, several rounds): the best per side and name, one row per name
# in the order first seen, with the ratios PyTorch / tocha. -v threads=N -v rounds=N
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
}
