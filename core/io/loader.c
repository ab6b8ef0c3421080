/* loader.c: the data loader's worker pool. Batches are queued into a ring of `depth` slots;
 * pthread workers take samples from the oldest unfinished batch, read, decode and transform
 * them (writing straight into the batch tensor when one was given), and the caller takes
 * finished batches in order. With no workers, taking a batch runs it on the caller's
 * thread: the same code on the same (seed, counter), so the results are identical. */
#include "tocha.h"
#include "tocha_io.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n, next, remaining;    /* samples; next to claim; not yet finished */
    tc_loader_sample *samples; /* copies: pipe points into pipes, err is owned */
    tc_pipeline *pipes;
    tc_tensor *batch;
    tc_tensor **items;
    char **errors;
} slot;

struct tc_loader {
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    slot *slots;
    int depth, head, count;    /* ring: slots[head] is the oldest of count queued batches */
    bool stop;
    int nworkers;
    pthread_t *threads;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void slot_clear(slot *s) {
    for (int j = 0; j < s->n; j++) {
        tc_source_release(s->samples[j].src);
        free((char *)s->samples[j].err);
        if (s->items) tc_tensor_release(s->items[j]);
        if (s->errors) free(s->errors[j]);
    }
    free(s->samples); free(s->pipes); free(s->items); free(s->errors);
    tc_tensor_release(s->batch);
    memset(s, 0, sizeof *s);
}

/* the message of the last error, prefixed with the sample's name unless it has it */
static char *sample_error(const char *name) {
    const char *msg = tc_last_error();
    char *out = malloc(strlen(name) + strlen(msg) + 3);
    if (!out) return NULL;
    if (strstr(msg, name)) strcpy(out, msg);
    else sprintf(out, "%s: %s", name, msg);
    return out;
}

/* reads, decodes and transforms sample j of s: into its batch row, or as a tensor of its own */
static void run_sample(slot *s, int j) {
    const tc_loader_sample *smp = &s->samples[j];
    if (!smp->src) { s->errors[j] = dup_str(smp->err ? smp->err : "bad sample"); return; }
    const char *name = tc_source_name(smp->src, smp->index);
    if (!s->batch) {
        s->items[j] = tc_source_load(smp->src, smp->index, smp->pipe, smp->seed, smp->counter);
        if (!s->items[j]) s->errors[j] = sample_error(name);
        return;
    }
    void *data;
    size_t n;
    if (tc_source_read(smp->src, smp->index, &data, &n) != TC_OK) { s->errors[j] = sample_error(name); return; }
    tc_tensor *img = tc_image_decode(data, n, smp->pipe->channels, name);
    free(data);
    /* row j as a plain header over the batch storage: nothing here touches autograd state */
    const tc_tensor *b = s->batch;
    tc_tensor *row = img ? tc_tensor_make(b->storage, b->dtype, b->ndim - 1, b->shape + 1, NULL,
                                          b->offset + j * tc_numel(b) / b->shape[0]) : NULL;
    int rc = row ? tc_pipeline_run_into(smp->pipe, img, smp->seed, smp->counter, row) : TC_ERR;
    if (rc != TC_OK) s->errors[j] = sample_error(name);
    tc_tensor_release(row);
    tc_tensor_release(img);
}

/* the oldest queued batch with a sample left to claim, or NULL */
static slot *claimable(tc_loader *l) {
    for (int k = 0; k < l->count; k++) {
        slot *s = &l->slots[(l->head + k) % l->depth];
        if (s->next < s->n) return s;
    }
    return NULL;
}

static void *worker(void *arg) {
    tc_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot *s;
        while (!l->stop && !(s = claimable(l))) pthread_cond_wait(&l->work, &l->mu);
        if (l->stop) break;
        int j = s->next++;
        pthread_mutex_unlock(&l->mu);
        run_sample(s, j); /* each sample writes only its own row and entries: no lock */
        pthread_mutex_lock(&l->mu);
        if (--s->remaining == 0) pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

tc_loader *tc_loader_new(int workers, int depth) {
    if (workers < 0 || workers > 256) { tc_error("loader: workers must be 0 to 256, got %d", workers); return NULL; }
    if (depth < 1 || depth > 1024) { tc_error("loader: depth must be 1 to 1024, got %d", depth); return NULL; }
    tc_loader *l = calloc(1, sizeof *l);
    if (!l || !(l->slots = calloc((size_t)depth, sizeof(slot))) || !(l->threads = calloc((size_t)(workers ? workers : 1), sizeof(pthread_t)))) {
        if (l) free(l->slots);
        free(l);
        tc_error("loader: out of memory");
        return NULL;
    }
    l->depth = depth;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->done, NULL);
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&l->threads[i], NULL, worker, l) != 0) {
            tc_loader_free(l);
            tc_error("loader: could not start worker thread %d", i + 1);
            return NULL;
        }
        l->nworkers++;
    }
    return l;
}

void tc_loader_free(tc_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nworkers; i++) pthread_join(l->threads[i], NULL);
    for (int i = 0; i < l->depth; i++) slot_clear(&l->slots[i]);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->done);
    free(l->slots);
    free(l->threads);
    free(l);
}

int tc_loader_pending(const tc_loader *l) { return l->count; }

int tc_loader_submit(tc_loader *l, int n, const tc_loader_sample *samples, tc_tensor *batch) {
    if (n < 1) return tc_error("loader: a batch needs at least one sample");
    if (batch && (batch->ndim < 1 || batch->shape[0] != n || !tc_is_contiguous(batch)))
        return tc_error("loader: the batch tensor must be contiguous with %d rows", n);
    slot s = {n, 0, n, calloc((size_t)n, sizeof(tc_loader_sample)), calloc((size_t)n, sizeof(tc_pipeline)),
              batch, batch ? NULL : calloc((size_t)n, sizeof(tc_tensor *)), calloc((size_t)n, sizeof(char *))};
    if (!s.samples || !s.pipes || (!batch && !s.items) || !s.errors) {
        free(s.samples); free(s.pipes); free(s.items); free(s.errors);
        return tc_error("loader: out of memory");
    }
    for (int j = 0; j < n; j++) {
        s.samples[j] = samples[j];
        s.samples[j].err = NULL;
        if (samples[j].src) {
            if (!samples[j].pipe) { s.n = j; slot_clear(&s); return tc_error("loader: sample %d has no pipeline", j + 1); }
            s.pipes[j] = *samples[j].pipe;
            s.samples[j].pipe = &s.pipes[j];
            tc_source_retain(samples[j].src);
        } else s.samples[j].err = dup_str(samples[j].err ? samples[j].err : "bad sample");
    }
    if (batch) tc_tensor_retain(batch);
    pthread_mutex_lock(&l->mu);
    if (l->count == l->depth) {
        pthread_mutex_unlock(&l->mu);
        slot_clear(&s);
        return tc_error("loader: %d batches are already pending (take one first)", l->depth);
    }
    l->slots[(l->head + l->count) % l->depth] = s;
    l->count++;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    return TC_OK;
}

/* moves the rows of samples that loaded to the front, and narrows the batch to them */
static void compact(tc_loader_batch *b) {
    int good = 0;
    int64_t row = tc_numel(b->batch) / b->n * (int64_t)tc_dtype_size(b->batch->dtype);
    uint8_t *p = tc_data(b->batch);
    for (int j = 0; j < b->n; j++) {
        if (b->errors[j]) continue;
        if (good != j) memmove(p + good * row, p + j * row, (size_t)row);
        good++;
    }
    if (good == b->n) return;
    tc_tensor *t = tc_narrow(b->batch, 0, 0, good);
    if (t) { tc_tensor_release(b->batch); b->batch = t; }
}

int tc_loader_take(tc_loader *l, tc_loader_batch *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    if (l->count == 0) { pthread_mutex_unlock(&l->mu); return tc_error("loader: no batch is pending"); }
    slot *s = &l->slots[l->head];
    if (l->nworkers == 0)
        while (s->next < s->n) {
            int j = s->next++;
            pthread_mutex_unlock(&l->mu);
            run_sample(s, j);
            pthread_mutex_lock(&l->mu);
            s->remaining--;
        }
    while (s->remaining > 0) pthread_cond_wait(&l->done, &l->mu);
    slot done = *s;
    memset(s, 0, sizeof *s);
    l->head = (l->head + 1) % l->depth;
    l->count--;
    pthread_mutex_unlock(&l->mu);
    out->n = done.n;
    out->batch = done.batch;
    out->items = done.items;
    out->errors = done.errors;
    for (int j = 0; j < done.n; j++) {
        tc_source_release(done.samples[j].src);
        free((char *)done.samples[j].err);
    }
    free(done.samples);
    free(done.pipes);
    if (out->batch) compact(out);
    return TC_OK;
}

void tc_loader_batch_free(tc_loader_batch *b) {
    for (int j = 0; j < b->n; j++) {
        if (b->items) tc_tensor_release(b->items[j]);
        if (b->errors) free(b->errors[j]);
    }
    free(b->items);
    free(b->errors);
    tc_tensor_release(b->batch);
    memset(b, 0, sizeof *b);
}

/* ---- shuffling ---------------------------------------------------------------------------------- */
void tc_permutation(int64_t n, uint64_t seed, uint64_t epoch, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = i;
    uint32_t r[4];
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t k = (uint64_t)(n - 1 - i);
        if (k % 4 == 0) tc_philox(seed, (epoch << 40) + k / 4, r);
        int64_t j = (int64_t)(((uint64_t)r[k % 4] * (uint64_t)(i + 1)) >> 32);
        int64_t t = out[i]; out[i] = out[j]; out[j] = t;
    }
}
