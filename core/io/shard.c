/* shard.c: zstd frames, shard files, and the sample sources the data loader reads from.
 * A shard is TC_SHARD_MAGIC followed by one zstd frame (with a content checksum) per
 * sample; an index kept beside the shards (by tocha.data) gives each sample's shard,
 * offset and size, so any sample is one pread and one decompression away. */
#include "tocha.h"
#include "tocha_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* ---- zstd ------------------------------------------------------------------------------------ */
int tc_zstd_compress(const void *src, size_t n, int level, void **out, size_t *outn) {
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t cap = ZSTD_compressBound(n);
    void *buf = malloc(cap ? cap : 1);
    if (!cc || !buf) { ZSTD_freeCCtx(cc); free(buf); return tc_error("zstd: out of memory"); }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    size_t r = ZSTD_compress2(cc, buf, cap, src, n);
    ZSTD_freeCCtx(cc);
    if (ZSTD_isError(r)) { free(buf); return tc_error("zstd: compression failed: %s", ZSTD_getErrorName(r)); }
    *out = buf;
    *outn = r;
    return TC_OK;
}

int tc_zstd_decompress(const void *src, size_t n, void **out, size_t *outn, const char *what) {
    unsigned long long size = ZSTD_getFrameContentSize(src, n);
    if (size == ZSTD_CONTENTSIZE_ERROR) return tc_error("%s: damaged data: not a zstd frame", what);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size > ((size_t)1 << 40))
        return tc_error("%s: damaged data: the zstd frame does not give a usable size", what);
    void *buf = malloc(size ? size : 1);
    if (!buf) return tc_error("%s: out of memory (%llu bytes)", what, size);
    size_t r = ZSTD_decompress(buf, size, src, n);
    if (ZSTD_isError(r) || r != size) {
        free(buf);
        return tc_error("%s: damaged data: %s", what, ZSTD_isError(r) ? ZSTD_getErrorName(r) : "size mismatch");
    }
    *out = buf;
    *outn = r;
    return TC_OK;
}

/* ---- sources ------------------------------------------------------------------------------------ */
struct tc_source {
    int refcount;
    int64_t n;
    char **names;          /* files: the paths; shards: each sample's name */
    int nshards;           /* 0 for files */
    char **shard_paths;
    int *fds;
    int32_t *shard;
    uint64_t *offset, *size;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void source_free(tc_source *s) {
    for (int64_t i = 0; s->names && i < s->n; i++) free(s->names[i]);
    for (int i = 0; i < s->nshards; i++) {
        if (s->shard_paths) free(s->shard_paths[i]);
        if (s->fds && s->fds[i] >= 0) close(s->fds[i]);
    }
    free(s->names); free(s->shard_paths); free(s->fds);
    free(s->shard); free(s->offset); free(s->size);
    free(s);
}

static tc_source *source_new(int64_t n, const char *const *names) {
    tc_source *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->refcount = 1;
    s->n = n;
    s->names = calloc((size_t)(n ? n : 1), sizeof(char *));
    if (!s->names) { free(s); return NULL; }
    for (int64_t i = 0; i < n; i++)
        if (!(s->names[i] = dup_str(names[i]))) { source_free(s); return NULL; }
    return s;
}

tc_source *tc_source_files(int64_t n, const char *const *paths) {
    tc_source *s = source_new(n, paths);
    if (!s) tc_error("source: out of memory");
    return s;
}

tc_source *tc_source_shards(int nshards, const char *const *shard_paths, int64_t n, const int32_t *shard,
                            const uint64_t *offset, const uint64_t *size, const char *const *names) {
    for (int64_t i = 0; i < n; i++)
        if (shard[i] < 0 || shard[i] >= nshards) {
            tc_error("shards: sample %s names shard %d of %d (damaged index)", names[i], (int)shard[i] + 1, nshards);
            return NULL;
        }
    tc_source *s = source_new(n, names);
    if (!s) { tc_error("shards: out of memory"); return NULL; }
    s->nshards = nshards;
    s->shard_paths = calloc((size_t)(nshards ? nshards : 1), sizeof(char *));
    s->fds = malloc(sizeof(int) * (size_t)(nshards ? nshards : 1));
    s->shard = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    s->offset = malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    s->size = malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    if (!s->shard_paths || !s->fds || !s->shard || !s->offset || !s->size) {
        s->nshards = 0;
        source_free(s);
        tc_error("shards: out of memory");
        return NULL;
    }
    for (int i = 0; i < nshards; i++) s->fds[i] = -1;
    memcpy(s->shard, shard, sizeof(int32_t) * (size_t)n);
    memcpy(s->offset, offset, sizeof(uint64_t) * (size_t)n);
    memcpy(s->size, size, sizeof(uint64_t) * (size_t)n);
    for (int i = 0; i < nshards; i++) {
        char magic[8];
        s->shard_paths[i] = dup_str(shard_paths[i]);
        s->fds[i] = open(shard_paths[i], O_RDONLY | O_CLOEXEC);
        if (!s->shard_paths[i] || s->fds[i] < 0) {
            tc_error("shards: cannot open %s: %s", shard_paths[i], s->shard_paths[i] ? strerror(errno) : "out of memory");
            source_free(s);
            return NULL;
        }
        if (pread(s->fds[i], magic, 8, 0) != 8 || memcmp(magic, TC_SHARD_MAGIC, 8) != 0) {
            tc_error("shards: %s is not a tocha shard (bad header)", shard_paths[i]);
            source_free(s);
            return NULL;
        }
    }
    return s;
}

tc_source *tc_source_retain(tc_source *s) {
    __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
    return s;
}

void tc_source_release(tc_source *s) {
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) source_free(s);
}

int64_t tc_source_len(const tc_source *s) { return s->n; }

const char *tc_source_name(const tc_source *s, int64_t i) { return i >= 0 && i < s->n ? s->names[i] : "?"; }

static int read_shard_sample(const tc_source *s, int64_t i, void **data, size_t *n) {
    const char *path = s->shard_paths[s->shard[i]];
    uint64_t size = s->size[i], off = s->offset[i];
    if (size > ((uint64_t)1 << 34)) return tc_error("shard %s: sample %s: size %llu is not plausible (damaged index)", path, s->names[i], (unsigned long long)size);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return tc_error("shard %s: out of memory", path);
    uint64_t got = 0;
    while (got < size) {
        ssize_t r = pread(s->fds[s->shard[i]], buf + got, size - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            if (r < 0) return tc_error("shard %s: sample %s: read failed: %s", path, s->names[i], strerror(errno));
            return tc_error("shard %s: truncated: sample %s needs bytes %llu to %llu", path, s->names[i],
                            (unsigned long long)off, (unsigned long long)(off + size));
        }
        got += (uint64_t)r;
    }
    char what[512];
    snprintf(what, sizeof what, "shard %s: sample %s", path, s->names[i]);
    int rc = tc_zstd_decompress(buf, size, data, n, what);
    free(buf);
    return rc;
}

int tc_source_read(const tc_source *s, int64_t i, void **data, size_t *n) {
    if (i < 0 || i >= s->n) return tc_error("source: sample %lld out of range (%lld samples)", (long long)i + 1, (long long)s->n);
    if (s->nshards == 0) return tc_read_file(s->names[i], data, n);
    return read_shard_sample(s, i, data, n);
}

tc_tensor *tc_source_load(const tc_source *s, int64_t i, const tc_pipeline *p, uint64_t seed, uint64_t counter) {
    void *data;
    size_t n;
    if (tc_source_read(s, i, &data, &n) != TC_OK) return NULL;
    const char *name = s->names[i];
    tc_tensor *img = tc_image_decode(data, n, p ? p->channels : 0, name);
    free(data);
    if (!img || !p || p->nops == 0) return img;
    tc_tensor *out = tc_pipeline_run(p, img, seed, counter);
    tc_tensor_release(img);
    if (!out) {
        char why[768];
        snprintf(why, sizeof why, "%s", tc_last_error());
        tc_error("%s: %s", name, why);
    }
    return out;
}
