/* iter.c: the strided iterator under every CPU elementwise kernel. Dims are merged where
 * all operands allow, so a contiguous tensor is one run of numel elements; large runs are
 * split across threads. */
#include "cpu.h"

#include <omp.h>
#include <string.h>

void tc_iter_init(tc_iter *it, int nops, const tc_tensor *const *ts) {
    const tc_tensor *t0 = ts[0];
    it->nops = nops;
    it->ndim = 0;
    it->kind = TC_PAR_MEMORY;
    for (int k = 0; k < nops; k++) {
        it->base[k] = (char *)tc_data(ts[k]);
        it->esize[k] = tc_dtype_size(ts[k]->dtype);
    }
    if (tc_numel(t0) == 0) { /* nothing to visit (and merging the other sizes could overflow) */
        it->ndim = 1;
        it->shape[0] = 0;
        for (int k = 0; k < nops; k++) it->stride[k][0] = 1;
        return;
    }
    /* keep dims of size != 1, outermost first, merging a dim into the previous kept one
     * when every operand steps through both as one */
    for (int d = 0; d < t0->ndim; d++) {
        if (t0->shape[d] == 1) continue;
        int j = it->ndim;
        bool merge = j > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = it->stride[k][j - 1] == ts[k]->stride[d] * t0->shape[d];
        if (merge) {
            it->shape[j - 1] *= t0->shape[d];
            for (int k = 0; k < nops; k++) it->stride[k][j - 1] = ts[k]->stride[d];
        } else {
            it->shape[j] = t0->shape[d];
            for (int k = 0; k < nops; k++) it->stride[k][j] = ts[k]->stride[d];
            it->ndim++;
        }
    }
    if (it->ndim == 0) { /* a single element */
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->stride[k][0] = 1;
    }
}

/* the innermost runs [lo, hi): the operands' addresses from the outer multi-index of run lo
 * (divisions, once), then stepped through the outer dims as an odometer (a division per dim
 * and run was a fifth of a transposing copy's time) */
static void outer_runs(const tc_iter *it, int64_t lo, int64_t hi, const int64_t *st, tc_iter_fn fn, void *ctx) {
    int nd = it->ndim, nops = it->nops;
    int64_t idx[TC_MAX_DIMS], step[4][TC_MAX_DIMS], rem = lo;
    char *p[4];
    for (int k = 0; k < nops; k++) p[k] = it->base[k];
    for (int d = nd - 2; d >= 0; d--) {
        idx[d] = rem % it->shape[d];
        rem /= it->shape[d];
        for (int k = 0; k < nops; k++) {
            step[k][d] = it->stride[k][d] * (int64_t)it->esize[k];
            p[k] += idx[d] * step[k][d];
        }
    }
    for (int64_t o = lo; o < hi; o++) {
        fn(it->shape[nd - 1], p, st, ctx);
        for (int d = nd - 2; d >= 0; d--) { /* the next run: carry through the outer dims */
            for (int k = 0; k < nops; k++) p[k] += step[k][d];
            if (++idx[d] < it->shape[d]) break;
            for (int k = 0; k < nops; k++) p[k] -= it->shape[d] * step[k][d];
            idx[d] = 0;
        }
    }
}

void tc_iter_run(tc_iter *it, tc_iter_fn fn, void *ctx) {
    int nd = it->ndim, nops = it->nops;
    int64_t inner = it->shape[nd - 1], st[4];
    for (int k = 0; k < nops; k++) st[k] = it->stride[k][nd - 1];
    if (inner == 0) return;
    int64_t outer = 1;
    for (int d = 0; d < nd - 1; d++) outer *= it->shape[d];
    /* small work runs here without entering OpenMP at all: even a parallel region with
     * a false if-clause costs more than a 16-element add */
    int64_t work = outer * inner * (it->kind == TC_PAR_MEMORY ? nops : 1);
    bool parallel = tc_cpu_parallel(work, it->kind) && omp_get_max_threads() > 1;
    if (parallel && outer == 1) { /* one long run: split it, in pieces of 4,096 elements or more */
        int64_t chunks = inner / 4096 > 4 * omp_get_max_threads() ? 4 * omp_get_max_threads() : inner / 4096;
        if (chunks < 2) chunks = 2;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            int64_t lo = inner * c / chunks, hi = inner * (c + 1) / chunks;
            char *p[4];
            for (int k = 0; k < nops; k++) p[k] = it->base[k] + lo * st[k] * (int64_t)it->esize[k];
            fn(hi - lo, p, st, ctx);
        }
        return;
    }
    if (!parallel) {
        outer_runs(it, 0, outer, st, fn, ctx);
        return;
    }
#pragma omp parallel
    { /* each thread a contiguous range of runs, as schedule(static) would give it */
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        outer_runs(it, outer * t / nt, outer * (t + 1) / nt, st, fn, ctx);
    }
}
