/* logfile.c: run-log files. A tc_logfile appends whole units (records, lines) to a file
 * through a buffer that a background thread writes out on a timer, and close and exit do
 * too; units can also be deferred jobs, encoded when flushed (TensorBoard's PNG images). What
 * the units hold is the writers' business (tensorboard.c, the binding's JSON lines). */
#include "tocha.h"
#include "tocha_io.h"
#include "logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- byte buffers ------------------------------------------------------------------------- */
void tc_buf_reserve(tc_buf *b, size_t extra) {
    if (b->oom || b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = realloc(b->data, cap);
    if (!p) { b->oom = true; return; }
    b->data = p;
    b->cap = cap;
}

void tc_buf_put(tc_buf *b, const void *p, size_t n) {
    tc_buf_reserve(b, n);
    if (b->oom || n == 0) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void tc_buf_free(tc_buf *b) {
    free(b->data);
    *b = (tc_buf){0};
}

/* ---- log files ------------------------------------------------------------------------------ */
struct tc_logfile {
    char *path;
    int fd;
    double flush_secs;
    pthread_mutex_t mu;       /* guards pending, jobs, err, stop, urgent */
    pthread_mutex_t write_mu; /* one writer of the file at a time, so units keep their order */
    pthread_cond_t wake;
    pthread_t thread;
    bool has_thread, stop, urgent;
    bool broken;              /* a failed write could not be undone: the file ends mid-unit */
    tc_buf pending;              /* whole units waiting for the file */
    tc_logjob *jobs, **jobs_tail;   /* units still to encode, in order, placed in pending by `at` */
    size_t jobs_bytes;        /* their estimated size */
    int64_t written;          /* the file's size: everything before it is whole units */
    char err[512];            /* a failed background write, returned by the next call */
    tc_logfile *next;         /* in the list flushed at exit */
};

#define URGENT_BYTES (1u << 20)  /* wake the flusher early past this much */
#define SYNC_BYTES (64u << 20)   /* and write in the caller past this much */

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static tc_logfile *open_files;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void free_jobs(tc_logjob *j) {
    while (j) {
        tc_logjob *next = j->next;
        j->free(j);
        j = next;
    }
}

/* pending bytes with the jobs' encodings put in place; a tc_logjob that fails leaves its unit out
 * and its message in *err */
static tc_buf encode_jobs(tc_buf *out, tc_logjob *jobs, char *err, size_t errn) {
    tc_buf merged = {0};
    tc_buf_reserve(&merged, out->len + 64);
    size_t prev = 0;
    for (tc_logjob *j = jobs; j; j = j->next) {
        size_t at = j->at < out->len ? j->at : out->len; /* (only short after an out-of-memory retry) */
        tc_buf_put(&merged, out->data + prev, at - prev);
        prev = at;
        size_t before = merged.len;
        if (j->encode(j, &merged) != TC_OK || merged.oom) {
            merged.len = before;
            merged.oom = false;
            if (!err[0]) snprintf(err, errn, "%s", tc_last_error());
        }
    }
    tc_buf_put(&merged, out->data + prev, out->len - prev);
    if (merged.oom) { /* keep the bytes at least */
        tc_buf_free(&merged);
        snprintf(err, errn, "log: out of memory encoding images");
        return *out;
    }
    tc_buf_free(out);
    return merged;
}

/* writes what is pending. A short write (a full disk) is truncated away, so the file still
 * ends on a whole unit, and the data goes back in front of what came meanwhile for a retry. */
static int flush_file(tc_logfile *f) {
    pthread_mutex_lock(&f->write_mu);
    pthread_mutex_lock(&f->mu);
    tc_buf out = f->pending;
    tc_logjob *jobs = f->jobs;
    f->pending = (tc_buf){0};
    f->jobs = NULL;
    f->jobs_tail = &f->jobs;
    f->jobs_bytes = 0;
    pthread_mutex_unlock(&f->mu);

    char job_err[512] = "";
    if (jobs) {
        out = encode_jobs(&out, jobs, job_err, sizeof job_err);
        free_jobs(jobs);
    }
    size_t done = 0;
    int err = 0;
    while (done < out.len) {
        ssize_t k = write(f->fd, out.data + done, out.len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { err = k < 0 ? errno : ENOSPC; break; }
        done += (size_t)k;
    }
    int rc = TC_OK;
    if (err) {
        bool undone = done == 0 || ftruncate(f->fd, (off_t)f->written) == 0;
        pthread_mutex_lock(&f->mu);
        if (!undone) f->broken = true;
        for (tc_logjob *j = f->jobs; j; j = j->next) j->at += out.len; /* they follow the retried bytes */
        tc_buf_put(&out, f->pending.data, f->pending.len);
        tc_buf_free(&f->pending);
        f->pending = out;
        snprintf(f->err, sizeof f->err, "log: writing %s failed: %s", f->path, strerror(err));
        pthread_mutex_unlock(&f->mu);
        rc = tc_error("%s", f->err);
    } else {
        __atomic_add_fetch(&f->written, (int64_t)out.len, __ATOMIC_RELAXED); /* read by tc_logfile_bytes */
        tc_buf_free(&out);
        if (job_err[0]) {
            pthread_mutex_lock(&f->mu);
            snprintf(f->err, sizeof f->err, "%s", job_err);
            pthread_mutex_unlock(&f->mu);
            rc = tc_error("%s", job_err);
        }
    }
    pthread_mutex_unlock(&f->write_mu);
    return rc;
}

static void flush_all_at_exit(void) {
    pthread_mutex_lock(&open_mu);
    for (tc_logfile *f = open_files; f; f = f->next) (void)flush_file(f);
    pthread_mutex_unlock(&open_mu);
}

static void register_atexit(void) { atexit(flush_all_at_exit); }

static void *flusher(void *arg) {
    tc_logfile *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        double whole = floor(f->flush_secs);
        until.tv_sec += (time_t)whole;
        until.tv_nsec += (long)((f->flush_secs - whole) * 1e9);
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        while (!f->stop && !f->urgent)
            if (pthread_cond_timedwait(&f->wake, &f->mu, &until) == ETIMEDOUT) break;
        if (f->stop) break;
        f->urgent = false;
        pthread_mutex_unlock(&f->mu);
        (void)flush_file(f); /* a failure is kept in f->err for the next call */
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int tc_mkdirs(const char *path) {
    size_t n = strlen(path);
    if (n == 0) return tc_error("log: empty directory name");
    char *p = malloc(n + 1);
    if (!p) return tc_error("out of memory");
    memcpy(p, path, n + 1);
    int rc = TC_OK;
    for (size_t i = 1; i <= n && rc == TC_OK; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        struct stat st;
        if (mkdir(p, 0777) != 0) {
            int e = errno;
            if (e != EEXIST) rc = tc_error("log: cannot create directory %s: %s", p, strerror(e));
            else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
                rc = tc_error("log: cannot create directory %s: a file of that name exists", p);
        }
        p[i] = c;
    }
    free(p);
    return rc;
}

static tc_logfile *logfile_open(const char *path, double flush_secs, bool exclusive) {
    char *dir = strdup(path);
    if (!dir) { tc_error("out of memory"); return NULL; }
    char *slash = strrchr(dir, '/');
    int rc = TC_OK;
    if (slash && slash != dir) { *slash = 0; rc = tc_mkdirs(dir); }
    free(dir);
    if (rc != TC_OK) return NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (exclusive ? O_EXCL : 0), 0666);
    if (fd < 0) { tc_error("log: cannot open %s for writing: %s", path, strerror(errno)); return NULL; }
    tc_logfile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        tc_error("out of memory");
        return NULL;
    }
    f->fd = fd;
    f->jobs_tail = &f->jobs;
    f->written = (int64_t)lseek(fd, 0, SEEK_END);
    f->flush_secs = flush_secs;
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->write_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (flush_secs > 0 && isfinite(flush_secs)) {
        int e = pthread_create(&f->thread, NULL, flusher, f);
        if (e != 0) {
            tc_error("log: cannot start the flushing thread for %s: %s", path, strerror(e));
            f->flush_secs = 0;
            tc_logfile_close(f);
            return NULL;
        }
        f->has_thread = true;
    }
    pthread_once(&atexit_once, register_atexit);
    pthread_mutex_lock(&open_mu);
    f->next = open_files;
    open_files = f;
    pthread_mutex_unlock(&open_mu);
    return f;
}

tc_logfile *tc_logfile_open(const char *path, double flush_secs) { return logfile_open(path, flush_secs, false); }
tc_logfile *tc_logfile_create(const char *path, double flush_secs) { return logfile_open(path, flush_secs, true); }

const char *tc_logfile_path(const tc_logfile *f) { return f->path; }

int64_t tc_logfile_bytes(const tc_logfile *f) { return __atomic_load_n(&f->written, __ATOMIC_RELAXED); }

/* a background failure not yet reported: report it now (once) */
static int take_error(tc_logfile *f) {
    if (!f->err[0]) return TC_OK;
    int rc = tc_error("%s", f->err);
    f->err[0] = 0;
    return rc;
}

/* under f->mu: whether a unit may be added now */
static int admit(tc_logfile *f) {
    int rc = take_error(f);
    if (rc == TC_OK && f->broken)
        rc = tc_error("log: %s ends in a partly written unit after a failed write; no more is added to it", f->path);
    return rc;
}

/* under f->mu, after adding: wake the flusher past URGENT_BYTES; true when the caller must
 * write itself (no flusher, or past SYNC_BYTES) */
static bool after_add(tc_logfile *f) {
    size_t len = f->pending.len + f->jobs_bytes;
    if (len >= URGENT_BYTES && f->has_thread) {
        f->urgent = true;
        pthread_cond_signal(&f->wake);
    }
    return len >= SYNC_BYTES || (!f->has_thread && len >= URGENT_BYTES);
}

int tc_logfile_write(tc_logfile *f, const void *data, size_t n) {
    pthread_mutex_lock(&f->mu);
    int rc = admit(f);
    if (rc == TC_OK) {
        tc_buf_put(&f->pending, data, n);
        if (f->pending.oom) { /* keep what was there; this unit is lost and said so */
            f->pending.oom = false;
            rc = tc_error("log: out of memory buffering %zu bytes for %s", n, f->path);
        }
    }
    bool sync = rc == TC_OK && after_add(f);
    pthread_mutex_unlock(&f->mu);
    return sync ? flush_file(f) : rc;
}

/* queues a tc_logjob (taking it, also on failure) */
int tc_logfile_defer(tc_logfile *f, tc_logjob *j) {
    pthread_mutex_lock(&f->mu);
    int rc = admit(f);
    bool sync = false;
    if (rc == TC_OK) {
        j->next = NULL;
        j->at = f->pending.len;
        *f->jobs_tail = j;
        f->jobs_tail = &j->next;
        f->jobs_bytes += j->size_hint;
        sync = after_add(f);
    }
    pthread_mutex_unlock(&f->mu);
    if (rc != TC_OK) j->free(j);
    return sync ? flush_file(f) : rc;
}

int tc_logfile_flush(tc_logfile *f) {
    int rc = flush_file(f);
    pthread_mutex_lock(&f->mu);
    f->err[0] = 0; /* reported by this call, or retried with success */
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int tc_logfile_close(tc_logfile *f) {
    if (!f) return TC_OK;
    pthread_mutex_lock(&open_mu);
    for (tc_logfile **p = &open_files; *p; p = &(*p)->next)
        if (*p == f) { *p = f->next; break; }
    pthread_mutex_unlock(&open_mu);
    if (f->has_thread) {
        pthread_mutex_lock(&f->mu);
        f->stop = true;
        pthread_cond_signal(&f->wake);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->thread, NULL);
    }
    int rc = flush_file(f);
    if (close(f->fd) != 0 && rc == TC_OK) rc = tc_error("log: closing %s failed: %s", f->path, strerror(errno));
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->write_mu);
    pthread_cond_destroy(&f->wake);
    tc_buf_free(&f->pending);
    free_jobs(f->jobs);
    free(f->path);
    free(f);
    return rc;
}
