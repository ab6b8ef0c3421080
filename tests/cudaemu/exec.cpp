/* exec.cpp (cudaemu): kernel launches on the CPU. A launch runs its blocks one after the
 * other on the calling OS thread; a block's threads are fibers (cooperative, switched only
 * where CUDA threads wait for each other: __syncthreads and warp collectives). A thread that
 * never waits runs to its end on the fiber of the thread before it, so a kernel without
 * barriers costs a function call per thread and one switch per block.
 * Environment: TOCHA_EMU_ORDER=reverse runs blocks and threads last to first (a kernel whose
 * result changes is missing a barrier or racing between blocks). */
#include "emu.h"

#include <limits.h>
#include <mutex>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define TCU_EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif
#if !defined(__x86_64__) || defined(TCU_EMU_UCONTEXT)
#define TCU_EMU_UC 1
#include <ucontext.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
const int warpSize = 32;

/* ---- fibers -----------------------------------------------------------------------------
 * A fiber owns a stack (with a guard page below it) and runs fiber_loop: it takes the
 * block's next unstarted thread, runs it, and parks when none is left. Fibers are kept for
 * later blocks and launches. On x86-64 a switch saves the callee-saved registers, MXCSR and
 * the x87 control word (tcu_emu_ctx_switch below); elsewhere it is swapcontext. */
#ifdef TCU_EMU_ASAN
#define STACK_SIZE (256 << 10) /* instrumented frames are bigger */
#else
#define STACK_SIZE (64 << 10)
#endif
#define MAX_THREADS 1024

struct fiber {
    char *map, *lo;     /* the mapping (guard page first) and the usable stack */
    size_t map_size, size;
    int thread;         /* the block's thread it runs, -1 when parked or fresh */
    fiber *next_idle;
#ifdef TCU_EMU_UC
    ucontext_t uc;
#else
    void *sp;           /* saved stack pointer while switched out */
#endif
};

static fiber main_fiber = {NULL, NULL, 0, 0, -1, NULL, {}}; /* the launching thread's own stack */
static fiber *cur = &main_fiber;
static fiber *idle_fibers;
static std::vector<fiber *> fibers; /* every fiber made, for reset and the fault handler */

#ifndef TCU_EMU_UC
extern "C" void tcu_emu_ctx_switch(void **save_sp, void *sp);
__asm__(R"(
    .pushsection .text
    .globl tcu_emu_ctx_switch
    .hidden tcu_emu_ctx_switch
    .type tcu_emu_ctx_switch, @function
tcu_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tcu_emu_ctx_switch, .-tcu_emu_ctx_switch
    .popsection
)");
#endif

#ifdef TCU_EMU_ASAN
static fiber *asan_from;
/* after every switch, in the context switched to: completes AddressSanitizer's switch and
 * learns the launching thread's stack the first time a fiber is entered from it */
static void asan_arrived(void *fake) {
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(fake, &lo, &size);
    if (asan_from == &main_fiber) { main_fiber.lo = (char *)lo; main_fiber.size = size; }
}
#endif

static void switch_to(fiber *to) {
    fiber *from = cur;
    if (to == from) return;
    cur = to;
#ifdef TCU_EMU_ASAN
    void *fake = NULL;
    asan_from = from;
    __sanitizer_start_switch_fiber(&fake, to->lo, to->size);
#endif
#ifdef TCU_EMU_UC
    swapcontext(&from->uc, &to->uc);
#else
    tcu_emu_ctx_switch(&from->sp, to->sp);
#endif
#ifdef TCU_EMU_ASAN
    asan_arrived(fake);
#endif
}

static void fiber_loop(void);
static void fiber_entry(void) {
#ifdef TCU_EMU_ASAN
    asan_arrived(NULL);
#endif
    fiber_loop(); /* never returns */
    abort();
}

/* makes f start at fiber_entry when next switched to */
static void fiber_reset(fiber *f) {
    f->thread = -1;
#ifdef TCU_EMU_UC
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->lo;
    f->uc.uc_stack.ss_size = f->size;
    f->uc.uc_link = NULL;
    makecontext(&f->uc, fiber_entry, 0);
#else
    /* the frame tcu_emu_ctx_switch pops: MXCSR and x87 control word, r15..rbp, then the
     * return address fiber_entry, entered with rsp = 8 mod 16 as after a call */
    uintptr_t top = ((uintptr_t)f->lo + f->size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 72);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = (uint64_t)mxcsr | (uint64_t)fpucw << 32;
    for (int i = 1; i <= 6; i++) sp[i] = 0;
    sp[7] = (uint64_t)(uintptr_t)fiber_entry;
    sp[8] = 0; /* fiber_entry's return address: it never returns */
    f->sp = sp;
#endif
}

static fiber *fiber_new(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    fiber *f = new fiber();
    f->map_size = STACK_SIZE + page;
    void *m = mmap(NULL, f->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { delete f; return NULL; }
    f->map = (char *)m;
    mprotect(f->map, page, PROT_NONE);
    f->lo = f->map + page;
    f->size = STACK_SIZE;
    fiber_reset(f);
    fibers.push_back(f);
    return f;
}

static fiber *fiber_idle(void) {
    fiber *f = idle_fibers;
    if (f) { idle_fibers = f->next_idle; return f; }
    return fiber_new();
}

/* after a failed block: every fiber starts afresh, the suspended threads are dropped */
static void fibers_reset_all(void) {
    idle_fibers = NULL;
    for (fiber *f : fibers) {
        fiber_reset(f);
        f->next_idle = idle_fibers;
        idle_fibers = f;
    }
}

/* ---- the running launch and block -------------------------------------------------------- */
enum { T_RUN, T_BARRIER, T_WARP, T_DONE };

static struct {
    void (*call)(void *);
    void *ctx;
    unsigned n;              /* threads per block */
    bool reverse;            /* TOCHA_EMU_ORDER=reverse */
    char *dyn;               /* dynamic shared memory, ending at a guard page */
    /* the block */
    unsigned started, done, at_barrier;
    uint3 next_idx; /* threadIdx of thread started (in forward order) */
    bool failed;
    unsigned ready[MAX_THREADS], ready_head, ready_count; /* threads to resume, in order */
    unsigned waiters[MAX_THREADS];                         /* at __syncthreads, in order */
    unsigned char state[MAX_THREADS];
    fiber *fib[MAX_THREADS];
    /* warp collectives: each lane's bits and source lane, then what it receives */
    unsigned warp_arrived[MAX_THREADS / 32];
    uint64_t val[MAX_THREADS], res[MAX_THREADS];
    unsigned char src[MAX_THREADS];
    /* warp exchanges: the kind of collective a warp's first lane entered (a lane entering the
     * other kind is an error), each lane's bytes, and the copy the last lane makes for all */
    unsigned char warp_kind[MAX_THREADS / 32];
    unsigned char xslot[MAX_THREADS][TCU_EMU_EXCHANGE_MAX];
    unsigned char xsnap[MAX_THREADS / 32][32][TCU_EMU_EXCHANGE_MAX];
} S;

static void set_thread(unsigned t) {
    threadIdx.x = t % blockDim.x;
    unsigned q = t / blockDim.x;
    threadIdx.y = q % blockDim.y;
    threadIdx.z = q / blockDim.y;
}

static void make_ready(unsigned t) {
    S.state[t] = T_RUN;
    S.ready[(S.ready_head + S.ready_count++) % MAX_THREADS] = t;
}

/* "(x,y,z)" of thread t of the running block */
static const char *thread_name(unsigned t, char *buf, size_t n) {
    unsigned q = t / blockDim.x;
    snprintf(buf, n, "(%u,%u,%u)", t % blockDim.x, q % blockDim.y, q / blockDim.y);
    return buf;
}

/* nothing can run but some threads wait: a barrier or a warp collective that not every
 * thread reaches. Fails the launch with what waits for what. */
static fiber *deadlock(void) {
    char a[48], b[48];
    unsigned tw = MAX_THREADS, tb = MAX_THREADS;
    for (unsigned t = 0; t < S.n; t++) {
        if (S.state[t] == T_WARP && tw == MAX_THREADS) tw = t;
        if (S.state[t] == T_BARRIER && tb == MAX_THREADS) tb = t;
    }
    S.failed = true;
    if (tw < MAX_THREADS) {
        unsigned base = tw & ~31u, end = S.n - base < 32 ? S.n : base + 32, u = base;
        while (u < end && S.state[u] == T_WARP) u++;
        if (u < end) {
            tcu_emu_fail(cudaErrorLaunchFailure,
                         "block (%u,%u,%u): thread %s waits at a warp shuffle or __syncwarp that "
                         "thread %s of its warp never reaches (it %s)",
                         blockIdx.x, blockIdx.y, blockIdx.z, thread_name(tw, a, sizeof a),
                         thread_name(u, b, sizeof b),
                         S.state[u] == T_DONE ? "has returned" : "waits at __syncthreads");
            return &main_fiber;
        }
    }
    tcu_emu_fail(cudaErrorLaunchFailure, "block (%u,%u,%u): threads wait forever (thread %s at %s)",
                 blockIdx.x, blockIdx.y, blockIdx.z, thread_name(tw < MAX_THREADS ? tw : tb, a, sizeof a),
                 tw < MAX_THREADS ? "a warp collective" : "__syncthreads");
    return &main_fiber;
}

/* the fiber to switch to when the running thread waits or its fiber parks: a thread that
 * may resume, else a fiber to start the next thread, else the launch (block finished) */
static fiber *pick_next(void) {
    if (S.ready_count) {
        unsigned t = S.ready[S.ready_head];
        S.ready_head = (S.ready_head + 1) % MAX_THREADS;
        S.ready_count--;
        set_thread(t);
        return S.fib[t];
    }
    if (S.started < S.n) {
        fiber *f = fiber_idle();
        if (f) return f;
        S.failed = true;
        tcu_emu_fail(cudaErrorLaunchOutOfResources, "no memory for the stack of thread %u of a block", S.started);
        return &main_fiber;
    }
    if (S.done == S.n) return &main_fiber;
    return deadlock();
}

static void release_barrier(unsigned self) {
    for (unsigned i = 0; i < S.at_barrier; i++)
        if (S.waiters[i] != self) make_ready(S.waiters[i]);
    S.at_barrier = 0;
}

static void fiber_loop(void) {
    for (;;) {
        while (S.started < S.n) {
            unsigned k = S.started++, t = S.reverse ? S.n - 1 - k : k;
            S.fib[t] = cur;
            S.state[t] = T_RUN;
            cur->thread = (int)t;
            if (S.reverse) set_thread(t);
            else { /* threadIdx of thread k without divisions */
                threadIdx = S.next_idx;
                if (++S.next_idx.x == blockDim.x) {
                    S.next_idx.x = 0;
                    if (++S.next_idx.y == blockDim.y) { S.next_idx.y = 0; S.next_idx.z++; }
                }
            }
            S.call(S.ctx);
            S.state[t] = T_DONE;
            S.done++;
            /* a returned thread counts as arrived at every later barrier */
            if (S.at_barrier && S.at_barrier + S.done == S.n) release_barrier(MAX_THREADS);
        }
        cur->thread = -1;
        cur->next_idle = idle_fibers;
        idle_fibers = cur;
        switch_to(pick_next());
    }
}

/* ---- what kernels call ------------------------------------------------------------------ */
void __syncthreads(void) {
    if (cur == &main_fiber) return; /* not in a kernel */
    unsigned t = (unsigned)cur->thread;
    S.state[t] = T_BARRIER;
    S.waiters[S.at_barrier++] = t;
    if (S.at_barrier + S.done == S.n) { /* the last to arrive goes on */
        release_barrier(t);
        S.state[t] = T_RUN;
        return;
    }
    switch_to(pick_next());
}

/* a lane enters a warp collective of the given kind; false (the launch failed) when lanes of
 * its warp wait in the other kind */
enum { COLL_NONE, COLL_SHUFFLE, COLL_EXCHANGE };
static bool enter_collective(unsigned t, int kind) {
    unsigned w = t >> 5;
    if (S.warp_arrived[w] == 0) S.warp_kind[w] = (unsigned char)kind;
    else if (S.warp_kind[w] != kind) {
        char a[48];
        S.failed = true;
        tcu_emu_fail(cudaErrorLaunchFailure,
                     "block (%u,%u,%u): thread %s enters a warp %s while lanes of its warp wait in %s",
                     blockIdx.x, blockIdx.y, blockIdx.z, thread_name(t, a, sizeof a),
                     kind == COLL_SHUFFLE ? "shuffle" : "exchange (mma, ldmatrix)",
                     kind == COLL_SHUFFLE ? "an exchange (mma, ldmatrix)" : "a shuffle");
        switch_to(&main_fiber); /* never resumed: the block is abandoned */
        return false;
    }
    S.state[t] = T_WARP;
    return true;
}

uint64_t tcu_emu_shfl(uint64_t bits, int mode, unsigned b, unsigned c) {
    if (cur == &main_fiber) return bits;
    unsigned t = (unsigned)cur->thread, lane = t & 31, w = t >> 5, base = t & ~31u;
    unsigned size = S.n - base < 32 ? S.n - base : 32; /* lanes of a partial last warp */
    /* PTX shfl.sync: segment mask and clamp from c, source lane from b */
    unsigned seg = (c >> 8) & 31, clamp = c & 31, bv = b & 31;
    int maxl = (int)((lane & seg) | (clamp & ~seg)), j;
    bool ok;
    switch (mode) {
    case TCU_EMU_SHFL_UP: j = (int)lane - (int)bv; ok = j >= maxl; break;
    case TCU_EMU_SHFL_DOWN: j = (int)(lane + bv); ok = j <= maxl; break;
    case TCU_EMU_SHFL_BFLY: j = (int)(lane ^ bv); ok = j <= maxl; break;
    default: j = (int)((lane & seg) | (bv & ~seg)); ok = j <= maxl; break;
    }
    S.src[t] = (unsigned char)(ok ? j : (int)lane);
    S.val[t] = bits;
    if (!enter_collective(t, COLL_SHUFFLE)) return bits;
    if (++S.warp_arrived[w] == size) { /* the last lane to arrive hands out the values */
        for (unsigned u = base; u < base + size; u++) {
            S.res[u] = S.src[u] < size ? S.val[base + S.src[u]] : ~(uint64_t)0;
            if (u != t) make_ready(u);
        }
        S.warp_arrived[w] = 0;
        S.state[t] = T_RUN;
    } else {
        switch_to(pick_next());
    }
    return S.res[t];
}

/* every lane gives n bytes; when all lanes of the warp have, the last one copies them all to
 * the warp's snapshot, from which each lane takes its copy as it resumes. The snapshot is
 * rewritten only by the next exchange's last lane, which cannot arrive before every lane has
 * taken this one's (each lane copies before it can enter another collective). */
void tcu_emu_warp_exchange(const void *mine, size_t n, void *all) {
    if (n > TCU_EMU_EXCHANGE_MAX) n = TCU_EMU_EXCHANGE_MAX;
    if (cur == &main_fiber) { /* not in a kernel: a lone lane */
        memset(all, 0xff, 32 * n);
        memcpy(all, mine, n);
        return;
    }
    unsigned t = (unsigned)cur->thread, w = t >> 5, base = t & ~31u;
    unsigned size = S.n - base < 32 ? S.n - base : 32;
    memcpy(S.xslot[t], mine, n);
    if (!enter_collective(t, COLL_EXCHANGE)) return;
    if (++S.warp_arrived[w] == size) {
        for (unsigned u = 0; u < 32; u++) {
            if (u < size) memcpy(S.xsnap[w][u], S.xslot[base + u], TCU_EMU_EXCHANGE_MAX);
            else memset(S.xsnap[w][u], 0xff, TCU_EMU_EXCHANGE_MAX); /* lanes past a partial warp */
            if (u < size && base + u != t) make_ready(base + u);
        }
        S.warp_arrived[w] = 0;
        S.state[t] = T_RUN;
    } else {
        switch_to(pick_next());
    }
    for (unsigned u = 0; u < 32; u++) memcpy((char *)all + u * n, S.xsnap[w][u], n);
}

/* an access a GPU faults on (the tensor-core copies need 16-byte aligned rows): fails the launch,
 * and the block is abandoned */
void tcu_emu_misaligned(const char *what, const void *p) {
    char a[48];
    if (cur == &main_fiber) {
        tcu_emu_fail(cudaErrorMisalignedAddress, "%s at %p: not 16-byte aligned", what, p);
        return;
    }
    S.failed = true;
    tcu_emu_fail(cudaErrorMisalignedAddress, "block (%u,%u,%u): thread %s: %s at %p: not 16-byte aligned", blockIdx.x,
                 blockIdx.y, blockIdx.z, thread_name((unsigned)cur->thread, a, sizeof a), what, p);
    switch_to(&main_fiber); /* never resumed */
}

void *tcu_emu_dynamic_shared(void) { return S.dyn; }

/* ---- faults -------------------------------------------------------------------------------
 * A segmentation fault in a launch names the block and thread, and says when it hit a
 * fiber's stack guard or the end of dynamic shared memory; then the previous handler (or
 * the default, ending the process) takes the fault. Not under AddressSanitizer, which
 * reports these itself. */
static char *dyn_guard;
static size_t page_size;

#ifndef TCU_EMU_ASAN
static struct sigaction old_segv;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    char *a = (char *)si->si_addr, msg[256], th[48];
    const char *what = "";
    if (a >= dyn_guard && a < dyn_guard + page_size) what = ": past the dynamic shared memory the launch asked for";
    for (fiber *f : fibers)
        if (a >= f->map && a < f->lo) what = ": a thread overflowed its 64 KB fiber stack";
    if (cur != &main_fiber) {
        int n = snprintf(msg, sizeof msg, "cudaemu: segmentation fault in a kernel, block (%u,%u,%u) thread %s%s\n",
                         blockIdx.x, blockIdx.y, blockIdx.z, thread_name((unsigned)cur->thread, th, sizeof th), what);
        if (n > 0 && write(2, msg, (size_t)n) < 0) {}
    }
    sigaction(SIGSEGV, &old_segv, NULL);
}
#endif

static void install_fault_handler(void) {
#ifndef TCU_EMU_ASAN
    static bool done;
    static thread_local bool alt_done;
    if (!alt_done) { /* the handler must not run on an overflowed fiber stack */
        stack_t old;
        alt_done = true;
        if (sigaltstack(NULL, &old) == 0 && (old.ss_flags & SS_DISABLE)) {
            stack_t ss;
            ss.ss_size = 64 << 10;
            ss.ss_sp = malloc(ss.ss_size);
            ss.ss_flags = 0;
            if (ss.ss_sp) sigaltstack(&ss, NULL);
        }
    }
    if (done) return;
    done = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
#endif
}

/* ---- the launch -------------------------------------------------------------------------- */
static std::mutex launch_mutex;
static thread_local bool in_launch;

static bool launch_init(void) {
    if (dyn_guard) return true;
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_t region = (TCU_EMU_SHARED_OPTIN + page_size - 1) / page_size * page_size;
    void *m = mmap(NULL, region + page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return false;
    dyn_guard = (char *)m + region;
    mprotect(dyn_guard, page_size, PROT_NONE);
    const char *order = getenv("TOCHA_EMU_ORDER");
    S.reverse = order && !strcmp(order, "reverse");
    return true;
}

void tcu_emu_run(dim3 grid, dim3 block, size_t shmem, void (*call)(void *), void *ctx) {
    if (tcu_emu_no_device()) { tcu_emu_fail(cudaErrorNoDevice, NULL); return; }
    uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > MAX_THREADS || block.x > 1024 || block.y > 1024 || block.z > 64) {
        tcu_emu_fail(cudaErrorInvalidConfiguration,
                     "block (%u,%u,%u): at most 1024 threads, none of x, y, z 0, z at most 64",
                     block.x, block.y, block.z);
        return;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > INT_MAX || grid.y > 65535 || grid.z > 65535) {
        tcu_emu_fail(cudaErrorInvalidConfiguration,
                     "grid (%u,%u,%u): x below 2^31, y and z at most 65535, none 0", grid.x, grid.y, grid.z);
        return;
    }
    if (shmem > tcu_emu_shared_limit) {
        tcu_emu_fail(cudaErrorInvalidValue,
                     "%zu bytes of dynamic shared memory; the limit is %zu (48 KB unless "
                     "cudaFuncSetAttribute raised it, at most 227 KB)", shmem, tcu_emu_shared_limit);
        return;
    }
    if (in_launch) {
        tcu_emu_fail(cudaErrorNotSupported, "a kernel launched a kernel");
        return;
    }
    std::lock_guard<std::mutex> lock(launch_mutex);
    if (!launch_init()) { tcu_emu_fail(cudaErrorLaunchOutOfResources, "no memory for shared memory"); return; }
    install_fault_handler();
    in_launch = true;
    S.call = call;
    S.ctx = ctx;
    S.n = (unsigned)threads;
    S.failed = false;
    size_t dyn_bytes = (shmem + 15) & ~(size_t)15;
    S.dyn = dyn_guard - dyn_bytes;
    blockDim = block;
    gridDim = grid;
    unsigned nwarps = (S.n + 31) / 32;
    uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
    for (uint64_t i = 0; i < nblocks && !S.failed; i++) {
        uint64_t k = S.reverse ? nblocks - 1 - i : i;
        blockIdx.x = (unsigned)(k % grid.x);
        blockIdx.y = (unsigned)(k / grid.x % grid.y);
        blockIdx.z = (unsigned)(k / grid.x / grid.y);
        S.started = S.done = S.at_barrier = 0;
        S.next_idx = uint3{0, 0, 0};
        S.ready_head = S.ready_count = 0;
        memset(S.warp_arrived, 0, nwarps * sizeof S.warp_arrived[0]);
        memset(S.dyn, 0xff, dyn_bytes); /* fresh shared memory holds garbage: NaN, -1 */
        switch_to(pick_next());
        if (S.failed) fibers_reset_all();
    }
    in_launch = false;
}
