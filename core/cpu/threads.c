/* threads.c (cpu): the minimum work of a parallel loop, by kind (cpu.h says how work is
 * counted). Measured with bench/threads.sh on 2 threads (docs/performance.md, "Threads"):
 * the smallest work at which two threads beat one by a quarter in every case of the kind.
 * TOCHA_PAR_MIN=<n> replaces every minimum by n (0: every loop parallel), for that
 * measurement. */
#include "cpu.h"

#include <stdlib.h>

static int64_t par_min[TC_PAR_KINDS] = {
    [TC_PAR_MEMORY] = 1 << 18,
    [TC_PAR_COMPUTE] = 1 << 15,
};

__attribute__((constructor)) static void read_env(void) {
    const char *env = getenv("TOCHA_PAR_MIN");
    if (!env || !*env) return;
    char *end;
    long long n = strtoll(env, &end, 10);
    if (*end || n < 0) return; /* not a count: the measured minima stay */
    for (int k = 0; k < TC_PAR_KINDS; k++) par_min[k] = n;
}

int64_t tc_cpu_par_min(tc_par_kind kind) { return par_min[kind]; }
