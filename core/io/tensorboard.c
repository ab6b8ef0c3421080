/* tensorboard.c: the run-log writers. A tc_logfile appends whole units (records, lines) to a
 * file through a buffer that a background thread writes out on a timer, and close and exit
 * do too; tc_tb_* encode TensorBoard's Event protos by hand (scalars, PNG images, histograms,
 * text, the HParams plugin's session data) and frame them as TFRecords for such a file. */
#include "tocha.h"

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
typedef struct {
    unsigned char *data;
    size_t len, cap;
    bool oom; /* an allocation failed: every later write is dropped, the owner reports it */
} buf;

static void buf_reserve(buf *b, size_t extra) {
    if (b->oom || b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *p = realloc(b->data, cap);
    if (!p) { b->oom = true; return; }
    b->data = p;
    b->cap = cap;
}

static void buf_put(buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    if (b->oom || n == 0) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_free(buf *b) {
    free(b->data);
    *b = (buf){0};
}

static void put_le(buf *b, uint64_t v, int nbytes) {
    unsigned char t[8];
    for (int i = 0; i < nbytes; i++) t[i] = (unsigned char)(v >> (8 * i));
    buf_put(b, t, (size_t)nbytes);
}

/* ---- protobuf wire format: just what Event and its parts need ---------------------------- */
enum { WIRE_VARINT = 0, WIRE_64 = 1, WIRE_LEN = 2, WIRE_32 = 5 };

static void pb_varint(buf *b, uint64_t v) {
    unsigned char t[10];
    size_t n = 0;
    do {
        t[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    buf_put(b, t, n);
}

static void pb_key(buf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_int(buf *b, int field, int64_t v) { /* int32/int64/enum/bool: negatives take 10 bytes */
    pb_key(b, field, WIRE_VARINT);
    pb_varint(b, (uint64_t)v);
}

static void pb_double(buf *b, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_key(b, field, WIRE_64);
    put_le(b, u, 8);
}

static void pb_float(buf *b, int field, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    pb_key(b, field, WIRE_32);
    put_le(b, u, 4);
}

static void pb_bytes(buf *b, int field, const void *p, size_t n) {
    pb_key(b, field, WIRE_LEN);
    pb_varint(b, n);
    buf_put(b, p, n);
}

static void pb_str(buf *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

static void pb_msg(buf *b, int field, const buf *m) {
    if (m->oom) b->oom = true;
    pb_bytes(b, field, m->data, m->len);
}

static void pb_packed_doubles(buf *b, int field, const double *v, size_t n) {
    pb_key(b, field, WIRE_LEN);
    pb_varint(b, 8 * n);
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &v[i], 8);
        put_le(b, u, 8);
    }
}

/* ---- log files ------------------------------------------------------------------------------ */
/* a unit encoded when it is flushed, off the caller's thread (a PNG image): `encode` appends its
 * bytes, and they go at byte `at` of the pending buffer */
typedef struct job {
    struct job *next;
    size_t at, size_hint;
    int (*encode)(struct job *j, buf *out);
    void (*free)(struct job *j);
} job;

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
    buf pending;              /* whole units waiting for the file */
    job *jobs, **jobs_tail;   /* units still to encode, in order, placed in pending by `at` */
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

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void free_jobs(job *j) {
    while (j) {
        job *next = j->next;
        j->free(j);
        j = next;
    }
}

/* pending bytes with the jobs' encodings put in place; a job that fails leaves its unit out
 * and its message in *err */
static buf encode_jobs(buf *out, job *jobs, char *err, size_t errn) {
    buf merged = {0};
    buf_reserve(&merged, out->len + 64);
    size_t prev = 0;
    for (job *j = jobs; j; j = j->next) {
        size_t at = j->at < out->len ? j->at : out->len; /* (only short after an out-of-memory retry) */
        buf_put(&merged, out->data + prev, at - prev);
        prev = at;
        size_t before = merged.len;
        if (j->encode(j, &merged) != TC_OK || merged.oom) {
            merged.len = before;
            merged.oom = false;
            if (!err[0]) snprintf(err, errn, "%s", tc_last_error());
        }
    }
    buf_put(&merged, out->data + prev, out->len - prev);
    if (merged.oom) { /* keep the bytes at least */
        buf_free(&merged);
        snprintf(err, errn, "log: out of memory encoding images");
        return *out;
    }
    buf_free(out);
    return merged;
}

/* writes what is pending. A short write (a full disk) is truncated away, so the file still
 * ends on a whole unit, and the data goes back in front of what came meanwhile for a retry. */
static int flush_file(tc_logfile *f) {
    pthread_mutex_lock(&f->write_mu);
    pthread_mutex_lock(&f->mu);
    buf out = f->pending;
    job *jobs = f->jobs;
    f->pending = (buf){0};
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
        for (job *j = f->jobs; j; j = j->next) j->at += out.len; /* they follow the retried bytes */
        buf_put(&out, f->pending.data, f->pending.len);
        buf_free(&f->pending);
        f->pending = out;
        snprintf(f->err, sizeof f->err, "log: writing %s failed: %s", f->path, strerror(err));
        pthread_mutex_unlock(&f->mu);
        rc = tc_error("%s", f->err);
    } else {
        __atomic_add_fetch(&f->written, (int64_t)out.len, __ATOMIC_RELAXED); /* read by tc_logfile_bytes */
        buf_free(&out);
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
        buf_put(&f->pending, data, n);
        if (f->pending.oom) { /* keep what was there; this unit is lost and said so */
            f->pending.oom = false;
            rc = tc_error("log: out of memory buffering %zu bytes for %s", n, f->path);
        }
    }
    bool sync = rc == TC_OK && after_add(f);
    pthread_mutex_unlock(&f->mu);
    return sync ? flush_file(f) : rc;
}

/* queues a job (taking it, also on failure) */
static int logfile_defer(tc_logfile *f, job *j) {
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
    buf_free(&f->pending);
    free_jobs(f->jobs);
    free(f->path);
    free(f);
    return rc;
}

/* ---- TFRecords and events ------------------------------------------------------------------ */
/* a record: u64 length, u32 masked crc of the length, the data, u32 masked crc of the data */
static void put_record(buf *out, const buf *data) {
    if (data->oom) out->oom = true;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)data->len >> (8 * i));
    buf_reserve(out, data->len + 16);
    buf_put(out, len, 8);
    put_le(out, tc_crc32c_mask(tc_crc32c(0, len, 8)), 4);
    buf_put(out, data->data, data->len);
    put_le(out, tc_crc32c_mask(tc_crc32c(0, data->data, data->len)), 4);
}

/* Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5 }
 * with Summary { repeated Value value = 1 } holding one Value (NULL: the file_version event) */
static void put_event(buf *out, const buf *value, int64_t step, double wall_time) {
    buf e = {0}, s = {0};
    pb_double(&e, 1, wall_time < 0 ? now_secs() : wall_time);
    if (step) pb_int(&e, 2, step);
    if (value) {
        pb_msg(&s, 1, value);
        pb_msg(&e, 5, &s);
    } else pb_str(&e, 3, "brain.Event:2");
    put_record(out, &e);
    buf_free(&e);
    buf_free(&s);
}

/* one event holding value (freed) as a record of f */
static int write_value(tc_logfile *f, buf *value, int64_t step, double wall_time) {
    buf r = {0};
    put_event(&r, value, step, wall_time);
    buf_free(value);
    int rc = r.oom ? tc_error("log: out of memory encoding an event") : tc_logfile_write(f, r.data, r.len);
    buf_free(&r);
    return rc;
}

static int check_tag(const char *tag, const char *what) {
    if (!tag || !*tag) return tc_error("%s: the tag is empty", what);
    return TC_OK;
}

/* SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1; bytes content = 2 } } */
static void put_plugin(buf *value, const char *plugin, const buf *content) {
    buf pd = {0}, md = {0};
    pb_str(&pd, 1, plugin);
    if (content) pb_msg(&pd, 2, content);
    pb_msg(&md, 1, &pd);
    pb_msg(value, 9, &md);
    buf_free(&pd);
    buf_free(&md);
}

tc_logfile *tc_tb_open(const char *dir, const char *suffix, double flush_secs) {
    static int counter; /* distinct names for writers opened in the same second */
    char host[256] = "localhost", path[4096];
    if (gethostname(host, sizeof host - 1) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    if (tc_mkdirs(dir) != TC_OK) return NULL;
    int n = snprintf(path, sizeof path, "%s/events.out.tfevents.%lld.%s.%d.%d%s", dir, (long long)time(NULL),
                     host, (int)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), suffix ? suffix : "");
    if (n < 0 || (size_t)n >= sizeof path) { tc_error("log: directory name too long: %s", dir); return NULL; }
    tc_logfile *f = logfile_open(path, flush_secs, true);
    if (!f) return NULL;
    /* the first record says which format follows; written now, so an unwritable place fails here */
    buf first = {0};
    put_event(&first, NULL, 0, -1);
    int rc = first.oom ? tc_error("out of memory") : tc_logfile_write(f, first.data, first.len);
    buf_free(&first);
    if (rc != TC_OK || tc_logfile_flush(f) != TC_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tc_last_error());
        tc_logfile_close(f);
        unlink(path);
        tc_error("%s", msg);
        return NULL;
    }
    return f;
}

/* Value { string tag = 1; float simple_value = 2 } */
int tc_tb_scalar(tc_logfile *f, const char *tag, double value, int64_t step, double wall_time) {
    if (check_tag(tag, "add_scalar") != TC_OK) return TC_ERR;
    buf v = {0};
    pb_str(&v, 1, tag);
    pb_float(&v, 2, (float)value);
    return write_value(f, &v, step, wall_time);
}

/* Value { tag = 1; Image image = 4 { int32 height = 1; width = 2; colorspace = 3; bytes encoded = 4 } },
 * encoded as PNG when flushed: the training loop pays for a copy of the pixels, not for zlib */
typedef struct {
    job base;
    tc_tensor *img; /* a private contiguous copy */
    int64_t step;
    double wall_time;
    char tag[];
} image_job;

static int image_encode(job *j, buf *out) {
    image_job *ij = (image_job *)j;
    void *png;
    size_t n;
    /* zlib level 3: nearly level 6's size at half its time */
    if (tc_image_encode(ij->img, TC_IMAGE_PNG, 3, &png, &n) != TC_OK) return TC_ERR;
    buf im = {0}, v = {0};
    pb_int(&im, 1, ij->img->shape[0]);
    pb_int(&im, 2, ij->img->shape[1]);
    pb_int(&im, 3, ij->img->shape[2]);
    pb_bytes(&im, 4, png, n);
    free(png);
    pb_str(&v, 1, ij->tag);
    pb_msg(&v, 4, &im);
    buf_free(&im);
    put_event(out, &v, ij->step, ij->wall_time);
    buf_free(&v);
    return out->oom ? tc_error("log: out of memory encoding image '%s'", ij->tag) : TC_OK;
}

static void image_free(job *j) {
    tc_tensor_release(((image_job *)j)->img);
    free(j);
}

int tc_tb_image(tc_logfile *f, const char *tag, tc_tensor *img, int64_t step, double wall_time) {
    if (check_tag(tag, "add_image") != TC_OK) return TC_ERR;
    char s[64];
    tc_shape_str(img->ndim, img->shape, s, sizeof s);
    if (img->dtype != TC_U8 || img->ndim != 3)
        return tc_error("add_image: expected a u8 [H, W, C] image, got %s %s", tc_dtype_name(img->dtype), s);
    int64_t h = img->shape[0], w = img->shape[1], c = img->shape[2];
    if (c < 1 || c > 4 || h < 1 || w < 1 || h > 65535 || w > 65535)
        return tc_error("add_image: cannot encode an image of shape %s (1 to 4 channels, 1 to 65535 pixels a side)", s);
    size_t taglen = strlen(tag);
    image_job *j = malloc(sizeof *j + taglen + 1);
    if (!j) return tc_error("out of memory");
    /* a copy, so the caller may change its tensor at once */
    tc_tensor *cpu = tc_to(img, TC_U8, TC_DEV_CPU);
    j->img = cpu == img ? tc_clone(img) : cpu;
    if (cpu == img) tc_tensor_release(cpu);
    if (!j->img) { free(j); return TC_ERR; }
    memcpy(j->tag, tag, taglen + 1);
    j->step = step;
    j->wall_time = wall_time < 0 ? now_secs() : wall_time;
    j->base.encode = image_encode;
    j->base.free = image_free;
    j->base.size_hint = (size_t)(h * w * c) / 2 + 64;
    return logfile_defer(f, &j->base);
}

/* Value { tag = 1; HistogramProto histo = 5 { double min = 1; max = 2; num = 3; sum = 4;
 * sum_squares = 5; repeated double bucket_limit = 6 (right edges); repeated double bucket = 7 } } */
int tc_tb_histogram(tc_logfile *f, const char *tag, tc_tensor *x, int bins, int64_t step, double wall_time,
                    int64_t *nonfinite) {
    if (check_tag(tag, "add_histogram") != TC_OK) return TC_ERR;
    if (bins < 1 || bins > 100000) return tc_error("add_histogram: bins must be 1 to 100000, got %d", bins);
    bool f64 = x->dtype == TC_F64 || !tc_dtype_is_float(x->dtype); /* integers are exact in f64 */
    tc_tensor *d = tc_detach(x), *c = d ? tc_to(d, f64 ? TC_F64 : TC_F32, TC_DEV_CPU) : NULL;
    tc_tensor *cc = c ? tc_contiguous(c) : NULL;
    tc_tensor_release(d);
    tc_tensor_release(c);
    if (!cc) return TC_ERR;
    int64_t n = tc_numel(cc), count = 0;
    const double *pd = tc_data(cc);
    const float *pf = tc_data(cc);
#define AT(i) (f64 ? pd[i] : (double)pf[i])
    double lo = INFINITY, hi = -INFINITY, sum = 0, sumsq = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = AT(i);
        if (!isfinite(v)) continue;
        count++;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        sum += v;
        sumsq += v * v;
    }
    if (nonfinite) *nonfinite = n - count;
    double *limits = malloc(sizeof(double) * (size_t)bins), *counts = calloc((size_t)bins, sizeof(double));
    if (!limits || !counts) {
        free(limits);
        free(counts);
        tc_tensor_release(cc);
        return tc_error("out of memory");
    }
    if (count == 0) { lo = hi = 0; bins = 1; } /* an empty histogram: TensorBoard shows no buckets */
    /* a constant tensor gets a unit-wide range around its value, as numpy.histogram does */
    double a = lo == hi && count ? lo - 0.5 : lo, b = lo == hi && count ? hi + 0.5 : hi;
    double scale = b > a ? bins / (b - a) : 0;
    for (int k = 0; k < bins; k++) limits[k] = k + 1 == bins ? b : a + (b - a) * (k + 1) / bins;
    for (int64_t i = 0; i < n; i++) {
        double v = AT(i);
        if (!isfinite(v)) continue;
        int64_t k = (int64_t)((v - a) * scale);
        counts[k < 0 ? 0 : k >= bins ? bins - 1 : k] += 1;
    }
#undef AT
    tc_tensor_release(cc);
    buf h = {0}, v = {0};
    pb_double(&h, 1, lo);
    pb_double(&h, 2, hi);
    pb_double(&h, 3, (double)count);
    pb_double(&h, 4, sum);
    pb_double(&h, 5, sumsq);
    pb_packed_doubles(&h, 6, limits, (size_t)bins);
    pb_packed_doubles(&h, 7, counts, (size_t)bins);
    free(limits);
    free(counts);
    pb_str(&v, 1, tag);
    pb_msg(&v, 5, &h);
    buf_free(&h);
    return write_value(f, &v, step, wall_time);
}

/* Value { tag = 1; metadata = 9 (plugin "text"); TensorProto tensor = 8 { DataType dtype = 1
 * (DT_STRING = 7); bytes string_val = 8 } }: a scalar string tensor, as tf.summary.text writes */
int tc_tb_text(tc_logfile *f, const char *tag, const char *text, size_t n, int64_t step, double wall_time) {
    if (check_tag(tag, "add_text") != TC_OK) return TC_ERR;
    buf t = {0}, v = {0};
    pb_int(&t, 1, 7);
    pb_bytes(&t, 8, text, n);
    pb_str(&v, 1, tag);
    put_plugin(&v, "text", NULL);
    pb_msg(&v, 8, &t);
    buf_free(&t);
    return write_value(f, &v, step, wall_time);
}

/* one hparams summary: Value { tag; metadata (plugin "hparams", content = HParamsPluginData
 * { int32 version = 1 (0); oneof { experiment = 2; session_start_info = 3; session_end_info = 4 } });
 * tensor = an empty float vector (what the plugin's own writer puts there) } */
static int write_hparams_value(tc_logfile *f, const char *tag, int field, buf *msg, double wall_time) {
    static const unsigned char null_tensor[] = {0x08, 0x01, 0x12, 0x02, 0x12, 0x00};
    buf content = {0}, v = {0};
    pb_int(&content, 1, 0);
    pb_msg(&content, field, msg);
    buf_free(msg);
    pb_str(&v, 1, tag);
    put_plugin(&v, "hparams", &content);
    buf_free(&content);
    pb_bytes(&v, 8, null_tensor, sizeof null_tensor);
    return write_value(f, &v, 0, wall_time);
}

int tc_tb_hparams(tc_logfile *f, int n, const tc_hparam *hp, int nmetrics, const char *const *metric_tags,
                  double wall_time) {
    if (wall_time < 0) wall_time = now_secs();
    for (int i = 0; i < n; i++)
        if (!hp[i].name || !*hp[i].name) return tc_error("add_hparams: hyperparameter %d has an empty name", i + 1);
    for (int i = 0; i < nmetrics; i++)
        if (check_tag(metric_tags[i], "add_hparams") != TC_OK) return TC_ERR;

    /* Experiment { repeated HParamInfo hparam_infos = 4 { string name = 1; DataType type = 4 };
     *              repeated MetricInfo metric_infos = 5 { MetricName name = 1 { string tag = 2 } } } */
    buf exp = {0};
    for (int i = 0; i < n; i++) {
        buf info = {0};
        pb_str(&info, 1, hp[i].name);
        pb_int(&info, 4, hp[i].type == TC_HPARAM_STRING ? 1 : hp[i].type == TC_HPARAM_BOOL ? 2 : 3);
        pb_msg(&exp, 4, &info);
        buf_free(&info);
    }
    for (int i = 0; i < nmetrics; i++) {
        buf name = {0}, info = {0};
        pb_str(&name, 2, metric_tags[i]);
        pb_msg(&info, 1, &name);
        pb_msg(&exp, 5, &info);
        buf_free(&name);
        buf_free(&info);
    }
    if (write_hparams_value(f, "_hparams_/experiment", 2, &exp, wall_time) != TC_OK) return TC_ERR;

    /* SessionStartInfo { map<string, google.protobuf.Value> hparams = 1; double start_time_secs = 5 },
     * a map entry { string key = 1; Value value = 2 }, Value { double number_value = 2;
     * string string_value = 3; bool bool_value = 4 } */
    buf start = {0};
    for (int i = 0; i < n; i++) {
        buf val = {0}, entry = {0};
        if (hp[i].type == TC_HPARAM_STRING) pb_str(&val, 3, hp[i].string ? hp[i].string : "");
        else if (hp[i].type == TC_HPARAM_BOOL) pb_int(&val, 4, hp[i].boolean);
        else pb_double(&val, 2, hp[i].number);
        pb_str(&entry, 1, hp[i].name);
        pb_msg(&entry, 2, &val);
        pb_msg(&start, 1, &entry);
        buf_free(&val);
        buf_free(&entry);
    }
    pb_double(&start, 5, wall_time);
    if (write_hparams_value(f, "_hparams_/session_start_info", 3, &start, wall_time) != TC_OK) return TC_ERR;

    /* SessionEndInfo { Status status = 1 (STATUS_SUCCESS = 1); double end_time_secs = 2 } */
    buf end = {0};
    pb_int(&end, 1, 1);
    pb_double(&end, 2, wall_time);
    return write_hparams_value(f, "_hparams_/session_end_info", 4, &end, wall_time);
}

/* ---- reading TFRecords ---------------------------------------------------------------------- */
static uint64_t get_le(const unsigned char *p, int nbytes) {
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int tc_tfrecord_next(const void *data, size_t n, size_t *pos, const void **rec, size_t *len) {
    const unsigned char *p = (const unsigned char *)data + *pos;
    size_t left = n - *pos;
    if (left == 0) return 0;
    if (left < 12) return 2;
    uint64_t m = get_le(p, 8);
    if ((uint32_t)get_le(p + 8, 4) != tc_crc32c_mask(tc_crc32c(0, p, 8)))
        return tc_error("TFRecord: bad length checksum at offset %zu", *pos);
    if (m > left - 12 || left - 12 - m < 4) return 2;
    if ((uint32_t)get_le(p + 12 + m, 4) != tc_crc32c_mask(tc_crc32c(0, p + 12, m)))
        return tc_error("TFRecord: bad data checksum in the record at offset %zu", *pos);
    *rec = p + 12;
    *len = m;
    *pos += 16 + m;
    return 1;
}
