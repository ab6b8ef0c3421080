/* alloc.c (cpu): the caching allocator behind the CPU kernel table's alloc and free. A freed
 * block goes to a free list by size class and is handed to the next request of that class
 * without asking the system, so a training step that repeats the sizes of the one before
 * allocates nothing new after its first and takes no page faults (the kernel zeroing fresh
 * pages was a tenth of a training step). tc_cpu_empty_cache gives the cached blocks back.
 * TOCHA_CPU_CACHE=0, and sanitizer builds, free every block at once (nothing hidden from
 * LeakSanitizer, every overrun reported). */
#include "cpu.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ---- size classes ------------------------------------------------------------------------
 * Multiples of 64 B up to 1 KiB; above, eight classes per doubling (2^k + i 2^k/8, i = 1..8):
 * at most an eighth wasted, and the sizes a model repeats land on the same classes. */
#define SMALL_CLASSES 16
#define LARGEST_LOG2 47 /* requests past 2^47 bytes are out of memory without trying */
#define NCLASSES (SMALL_CLASSES + (LARGEST_LOG2 - 10) * 8)
#define MAPPED_MIN (256 << 10) /* blocks from this size up are mmapped: given back exactly */
#define HEADER 64               /* before each block's data: keeps the data 64-byte aligned */

static int class_of(size_t n) {
    if (n <= 1024) return n ? (int)((n - 1) / 64) : 0;
    int k = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n <= 2^(k+1) */
    if (k >= LARGEST_LOG2) return -1;
    size_t step = (size_t)1 << (k - 3);
    size_t i = (n - ((size_t)1 << k) + step - 1) / step; /* 1..8 */
    return SMALL_CLASSES + (k - 10) * 8 + (int)i - 1;
}

static size_t class_size(int c) {
    if (c < SMALL_CLASSES) return (size_t)(c + 1) * 64;
    int k = 10 + (c - SMALL_CLASSES) / 8, i = (c - SMALL_CLASSES) % 8 + 1;
    return ((size_t)1 << k) + (size_t)i * ((size_t)1 << (k - 3));
}

/* ---- blocks ------------------------------------------------------------------------------- */
typedef struct block {
    struct block *next; /* in its class's free list while cached */
    size_t size;        /* bytes of data: the class's size, or the request's when not caching */
    size_t mapped;      /* the mmapped length (header included), 0 when from malloc */
    int cls;            /* its class, -1 when it is not to be cached */
} block;
_Static_assert(sizeof(block) <= HEADER, "block header too large");

static block *header_of(void *p) { return (block *)((char *)p - HEADER); }
static void *data_of(block *b) { return (char *)b + HEADER; }

/* a fresh block from the system, or NULL */
static block *system_alloc(size_t size, int cls) {
    block *b;
    size_t mapped = 0;
    if (cls >= 0 && size >= MAPPED_MIN) { /* uncached blocks come from malloc, as they did before the cache */
        long page = sysconf(_SC_PAGESIZE);
        size_t pg = page > 0 ? (size_t)page : 4096;
        mapped = (HEADER + size + pg - 1) / pg * pg;
        void *m = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        b = m == MAP_FAILED ? NULL : m;
    } else {
        b = aligned_alloc(HEADER, HEADER + (size + 63) / 64 * 64);
    }
    if (!b) return NULL;
    b->next = NULL;
    b->size = size;
    b->mapped = mapped;
    b->cls = cls;
    return b;
}

static void system_free(block *b) {
    if (b->mapped) munmap(b, b->mapped);
    else free(b);
}

/* ---- the cache -----------------------------------------------------------------------------
 * One lock guards the lists and the counters: frees come from any thread (an OpenMP worker's
 * temporaries, a Lua finalizer) and a lock taken once per tensor costs nothing beside the
 * tensor's work. No system call runs under it. */
static struct {
    pthread_mutex_t mu;
    block *free[NCLASSES];
    size_t allocated, max_allocated, reserved, max_reserved, limit;
    int64_t allocs, frees, cache_hits, os_allocs, os_frees, ooms;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t configured = PTHREAD_ONCE_INIT;
static bool caching;

/* The cache keeps at most a quarter of the machine's memory; past that a freed block goes
 * back to the system. glibc keeps blocks up to 32 MiB on its heap (not one mmap each) and up
 * to 512 MiB of free heap, for the kernels' own temporaries (malloc'd per call). Neither is
 * done when the user tunes malloc through GLIBC_TUNABLES. */
static void configure(void) {
    const char *env = getenv("TOCHA_CPU_CACHE");
    caching = !SANITIZED && !(env && strcmp(env, "0") == 0);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    pool.limit = pages > 0 && page > 0 ? (size_t)pages * (size_t)page / 4 : (size_t)4 << 30;
#ifdef __GLIBC__
    if (!getenv("GLIBC_TUNABLES")) {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 512 << 20);
    }
#endif
}

static void hand_out(size_t size, bool fresh) { /* mu held */
    pool.allocated += size;
    if (pool.allocated > pool.max_allocated) pool.max_allocated = pool.allocated;
    pool.allocs++;
    if (fresh) {
        pool.reserved += size;
        if (pool.reserved > pool.max_reserved) pool.max_reserved = pool.reserved;
        pool.os_allocs++;
    } else {
        pool.cache_hits++;
    }
}

/* every cached block, taken off the lists (to be freed outside the lock) */
static block *take_all(void) { /* mu held */
    block *all = NULL;
    for (int c = 0; c < NCLASSES; c++)
        while (pool.free[c]) {
            block *b = pool.free[c];
            pool.free[c] = b->next;
            b->next = all;
            all = b;
            pool.reserved -= b->size;
            pool.os_frees++;
        }
    return all;
}

static void free_list(block *b) {
    while (b) {
        block *next = b->next;
        system_free(b);
        b = next;
    }
}

void *tc_cpu_alloc(size_t n) {
    pthread_once(&configured, configure);
    int cls = class_of(n);
    if (cls < 0) return NULL;
    size_t size = caching ? class_size(cls) : n;
    if (caching) {
        pthread_mutex_lock(&pool.mu);
        block *b = pool.free[cls];
        if (b) {
            pool.free[cls] = b->next;
            hand_out(size, false);
        }
        pthread_mutex_unlock(&pool.mu);
        if (b) return data_of(b);
    }
    block *b = system_alloc(size, caching ? cls : -1);
    if (!b) { /* out of memory: give the cache back and try once more */
        pthread_mutex_lock(&pool.mu);
        pool.ooms++;
        block *all = take_all();
        pthread_mutex_unlock(&pool.mu);
        free_list(all);
        b = system_alloc(size, caching ? cls : -1);
        if (!b) return NULL;
    }
    pthread_mutex_lock(&pool.mu);
    hand_out(size, true);
    pthread_mutex_unlock(&pool.mu);
    return data_of(b);
}

void tc_cpu_free(void *p) {
    if (!p) return;
    block *b = header_of(p);
    bool keep;
    pthread_mutex_lock(&pool.mu);
    pool.allocated -= b->size;
    pool.frees++;
    keep = b->cls >= 0 && pool.reserved - pool.allocated <= pool.limit;
    if (keep) {
        b->next = pool.free[b->cls];
        pool.free[b->cls] = b;
    } else {
        pool.reserved -= b->size;
        pool.os_frees++;
    }
    pthread_mutex_unlock(&pool.mu);
    if (!keep) system_free(b);
}

/* ---- stats and the cache's release ------------------------------------------------------- */
void tc_cpu_memory(tc_cpu_memory_stats *out) {
    pthread_once(&configured, configure);
    pthread_mutex_lock(&pool.mu);
    *out = (tc_cpu_memory_stats){
        .allocated = pool.allocated, .max_allocated = pool.max_allocated,
        .reserved = pool.reserved, .max_reserved = pool.max_reserved,
        .allocs = pool.allocs, .frees = pool.frees, .cache_hits = pool.cache_hits,
        .os_allocs = pool.os_allocs, .os_frees = pool.os_frees, .ooms = pool.ooms,
        .caching = caching,
    };
    pthread_mutex_unlock(&pool.mu);
}

void tc_cpu_reset_peak(void) {
    pthread_mutex_lock(&pool.mu);
    pool.max_allocated = pool.allocated;
    pool.max_reserved = pool.reserved;
    pthread_mutex_unlock(&pool.mu);
}

void tc_cpu_empty_cache(void) {
    pthread_mutex_lock(&pool.mu);
    block *all = take_all();
    pthread_mutex_unlock(&pool.mu);
    free_list(all);
#ifdef __GLIBC__
    malloc_trim(0); /* the heap's free top and free pages of smaller blocks, back to the kernel */
#endif
}

/* "1.50 MiB" */
static const char *human(size_t n, char *buf, size_t cap) {
    static const char prefix[] = "KMGTPE";
    double v = (double)n;
    int u = -1;
    for (; v >= 1024 && u < 5; u++) v /= 1024;
    if (u < 0) snprintf(buf, cap, "%zu B", n);
    else snprintf(buf, cap, "%.2f %ciB", v, prefix[u]);
    return buf;
}

/* appends to buf (capacity cap, *len used), truncating */
static void add(char *buf, size_t cap, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0) *len = *len + (size_t)n < cap ? *len + (size_t)n : cap - 1;
}

void tc_cpu_memory_summary(char *buf, size_t cap) {
    if (cap == 0) return;
    buf[0] = 0;
    size_t len = 0;
    char a[32], b[32];
    tc_cpu_memory_stats s;
    tc_cpu_memory(&s);
    add(buf, cap, &len, "cpu memory (tensor data above 256 B): %s\n",
        s.caching ? "cached" : "not cached (TOCHA_CPU_CACHE=0 or a sanitizer build)");
    add(buf, cap, &len, "  %-16s %14s %14s\n", "", "now", "peak");
    add(buf, cap, &len, "  %-16s %14s %14s\n", "allocated", human(s.allocated, a, sizeof a),
        human(s.max_allocated, b, sizeof b));
    add(buf, cap, &len, "  %-16s %14s %14s\n", "reserved", human(s.reserved, a, sizeof a),
        human(s.max_reserved, b, sizeof b));
    add(buf, cap, &len, "  %-16s %14s\n", "cached", human(s.reserved - s.allocated, a, sizeof a));
    add(buf, cap, &len,
        "  allocations %lld (%lld from the cache, %lld from the system), frees %lld, "
        "blocks given back %lld, out of memory %lld\n",
        (long long)s.allocs, (long long)s.cache_hits, (long long)s.os_allocs, (long long)s.frees,
        (long long)s.os_frees, (long long)s.ooms);
    add(buf, cap, &len, "  cached blocks:");
    int shown = 0, sizes = 0;
    pthread_mutex_lock(&pool.mu);
    for (int c = 0; c < NCLASSES; c++) {
        int count = 0;
        for (block *p = pool.free[c]; p; p = p->next) count++;
        if (!count) continue;
        if (shown < 16) add(buf, cap, &len, "%s %s x %d", shown ? "," : "", human(class_size(c), a, sizeof a), count);
        shown += shown < 16;
        sizes++;
    }
    pthread_mutex_unlock(&pool.mu);
    if (sizes == 0) add(buf, cap, &len, " none");
    else if (sizes > shown) add(buf, cap, &len, ", ... (%d sizes)", sizes);
    add(buf, cap, &len, "\n");
}
