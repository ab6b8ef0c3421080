#!/bin/sh
# tests/check_simd.sh OBJ...: checks that the AVX2 and AVX-512 clones of the CPU's hot loops
# (the functions built with TC_SIMD_CLONES, named <fn>.arch_x86_64_v3 and .arch_x86_64_v4 in
# the objects) really run on vectors. In each clone, every innermost loop that does scalar
# float or double arithmetic (vmulss, vfmadd213sd, vdivss, ...: a vectorised loop's remainder) needs a
# vector twin: a loop of the same clone doing at least 3/8 as much arithmetic packed on the
# clone's registers (ymm for AVX2, zmm for AVX-512; a remainder may be unrolled twice). A
# clone whose polynomial loops were left scalar (exp's once were, in AVX2) has no such loop
# and fails with the clone's name. Limits: scalar work outside innermost loops (a row's
# 1 / sum) is not counted, and one scalar loop among vectorised ones as big is not caught
# (the count is per clone, not per source loop).
# Prints one line per failure and a summary; exits 1 on failure. Needs objdump (x86-64 objects).
set -e
[ $# -gt 0 ] || { echo "usage: $0 OBJ..." >&2; exit 2; }
command -v objdump >/dev/null || { echo "check_simd: objdump not found, not checked"; exit 0; }
objdump -d --no-show-raw-insn "$@" | awk '
function hex(s,   i, v) {
    v = 0
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v
}
function family(m) {
    if (m ~ /^vfn?m(add|sub)(132|213|231)/) return "fma"
    if (m ~ /^v(add|sub|mul|div|sqrt|min|max)/) { sub(/^v/, "", m); sub(/(ss|ps|sd|pd)$/, "", m); return m }
    return ""
}
# the clone just read: its instructions (address, mnemonic, line) and its loops (a jump back
# from address b to a makes [a, b] a loop; innermost: containing no other)
function finish(   i, j, k, f, L, best, twin, what) {
    if (fn == "") return
    nloops = 0
    for (i = 1; i <= ni; i++)
        if (mn[i] ~ /^j/ && split(ln[i], w, " ") >= 2 && w[2] ~ /^[0-9a-f]+$/ && hex(w[2]) <= ad[i]) {
            lo[++nloops] = hex(w[2]); hi[nloops] = ad[i]
        }
    delete inner; delete sc; delete np; delete ns; delete fams
    for (i = 1; i <= nloops; i++) {
        inner[i] = 1
        for (j = 1; j <= nloops; j++)
            if (j != i && lo[j] >= lo[i] && hi[j] <= hi[i] && (lo[j] != lo[i] || hi[j] != hi[i])) inner[i] = 0
    }
    for (i = 1; i <= ni; i++) {
        f = family(mn[i])
        if (f == "") continue
        best = 0
        for (j = 1; j <= nloops; j++)
            if (ad[i] >= lo[j] && ad[i] <= hi[j] && (!best || hi[j] - lo[j] < hi[best] - lo[best])) best = j
        if (!best || !inner[best]) continue
        if (mn[i] ~ /p[sd]$/ && index(ln[i], "%" wide)) np[best]++
        else if (mn[i] ~ /s[sd]$/) { sc[best, f]++; ns[best]++; fams[best] = fams[best] " " f }
    }
    for (L in fams) {
        split(substr(fams[L], 2), fl, " ")
        twin = 0
        for (j in np) {
            if (8 * np[j] >= 3 * ns[L]) twin = j
        }
        if (twin) continue
        what = ""
        for (k in fl) if (!index(what, " " fl[k] "(")) what = what " " fl[k] "(" sc[L, fl[k]] ")"
        printf "check_simd: %s: a loop at %x runs scalar%s with no vector twin on %s\n", fn, lo[L], what, wide
        bad++
    }
    nclones++
    fn = ""
}
/^[0-9a-f]+ <.*>:$/ {
    finish()
    name = $2; gsub(/[<>:]/, "", name)
    if (name ~ /\.arch_x86_64_v[34]$/) { fn = name; ni = 0; wide = name ~ /v4$/ ? "zmm" : "ymm" }
    next
}
fn != "" && /^ *[0-9a-f]+:\t/ {
    split($0, h, ":"); gsub(/ /, "", h[1]); a = hex(h[1]); sub(/^[^\t]*\t/, "", $0)
    ni++; ad[ni] = a; ln[ni] = $0; split($0, w, " "); mn[ni] = w[1]
}
END {
    finish()
    printf "check_simd: %d AVX2 / AVX-512 clones checked, %d scalar loops\n", nclones, bad
    exit bad > 0
}'
