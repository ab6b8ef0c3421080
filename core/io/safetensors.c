/* safetensors.c: reading and writing the safetensors format (Hugging Face's weight files):
 * a u64 little-endian header length, a JSON header (name -> dtype, shape, data_offsets,
 * plus an optional "__metadata__" string map), then the raw little-endian tensor bytes.
 * Loading maps the file and hands out zero-copy tensors that keep the mapping alive;
 * every header field is validated first. Saving writes a temporary file and renames it. */
#include "../internal.h"
#include "json.h"
#include "tocha_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian and is copied as it is: a little-endian host is assumed");

#define MAX_HEADER 100000000ull /* 100 MB, the reference implementation's limit */

static const char *const st_dtype_names[TC_NDTYPES] = {
    [TC_F32] = "F32", [TC_F64] = "F64", [TC_F16] = "F16", [TC_BF16] = "BF16",
    [TC_I32] = "I32", [TC_I64] = "I64", [TC_U8] = "U8",   [TC_BOOL] = "BOOL",
};

static int st_dtype_from_name(const char *s) {
    for (int i = 0; i < TC_NDTYPES; i++)
        if (strcmp(s, st_dtype_names[i]) == 0) return i;
    return -1;
}

static int cmp_str(const char *a, const char *b) { return strcmp(a, b); }
static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- save ---------------------------------------------------------------------------------- */
typedef struct {
    const char *name;
    tc_tensor *t;   /* a contiguous CPU copy or alias of the caller's tensor */
    size_t nbytes;
    uint64_t begin; /* offset in the data region */
} save_entry;

static int cmp_entry_name(const void *a, const void *b) {
    return cmp_str(((const save_entry *)a)->name, ((const save_entry *)b)->name);
}

/* data is laid out widest dtype first (then by name), so every tensor starts aligned to its
 * element size when the data region is: the header is padded to keep it at a multiple of 8 */
static int cmp_entry_layout(const void *a, const void *b) {
    const save_entry *x = *(save_entry *const *)a, *y = *(save_entry *const *)b;
    size_t sx = tc_dtype_size(x->t->dtype), sy = tc_dtype_size(y->t->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return cmp_str(x->name, y->name);
}

typedef struct { const char *key, *value; } meta_pair;

static int cmp_meta(const void *a, const void *b) { return cmp_str(((const meta_pair *)a)->key, ((const meta_pair *)b)->key); }

static int check_text(const char *what, const char *s) {
    if (!s) return tc_error("save: %s is NULL", what);
    if (!tc_utf8_valid(s, strlen(s))) return tc_error("save: %s '%.200s' is not valid UTF-8", what, s);
    return TC_OK;
}

/* the JSON header, padded with spaces to a multiple of 8 bytes */
static int build_header(tc_strbuf *b, const save_entry *e, int n, const meta_pair *meta, int nmeta) {
    tc_strbuf_add(b, "{", 1);
    if (nmeta > 0) {
        tc_strbuf_add(b, "\"__metadata__\":{", 16);
        for (int i = 0; i < nmeta; i++) {
            if (i) tc_strbuf_add(b, ",", 1);
            tc_strbuf_json_string(b, meta[i].key, strlen(meta[i].key));
            tc_strbuf_add(b, ":", 1);
            tc_strbuf_json_string(b, meta[i].value, strlen(meta[i].value));
        }
        tc_strbuf_add(b, "}", 1);
    }
    for (int i = 0; i < n; i++) {
        if (i || nmeta > 0) tc_strbuf_add(b, ",", 1);
        tc_strbuf_json_string(b, e[i].name, strlen(e[i].name));
        tc_strbuf_addf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_names[e[i].t->dtype]);
        for (int k = 0; k < e[i].t->ndim; k++) tc_strbuf_addf(b, k ? ",%lld" : "%lld", (long long)e[i].t->shape[k]);
        tc_strbuf_addf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e[i].begin,
                       (unsigned long long)(e[i].begin + e[i].nbytes));
    }
    tc_strbuf_add(b, "}", 1);
    while (!b->failed && b->len % 8) tc_strbuf_add(b, " ", 1);
    return b->failed ? tc_error("save: out of memory building the header") : TC_OK;
}

/* fsync of the directory makes the rename itself durable; best effort (some file systems
 * refuse it), since the data is already safe in the renamed file */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* errno after a failed call; EIO where the C library left it unset (a short fwrite may) */
static int last_errno(void) { return errno ? errno : EIO; }

static int write_atomically(const char *path, const tc_strbuf *hdr, save_entry **order, int n) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return tc_error("save: cannot write '%.200s': path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return tc_error("save: cannot write '%s': %s", path, strerror(last_errno()));
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hdr->len >> (8 * i));
    int err = 0;
    errno = 0;
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(hdr->data, 1, hdr->len, f) != hdr->len) err = last_errno();
    for (int i = 0; i < n && !err; i++)
        if (order[i]->nbytes && fwrite(tc_data(order[i]->t), 1, order[i]->nbytes, f) != order[i]->nbytes) err = last_errno();
    if (!err && (fflush(f) != 0 || fsync(fileno(f)) != 0)) err = last_errno();
    if (fclose(f) != 0 && !err) err = last_errno();
    if (!err && rename(tmp, path) != 0) err = last_errno();
    if (err) {
        unlink(tmp);
        return tc_error("save: cannot write '%s': %s", path, strerror(err));
    }
    sync_parent_dir(path);
    return TC_OK;
}

int tc_safetensors_save(const char *path, const tc_tensor_dict *d) {
    if (!path || !d || d->count < 0 || d->nmeta < 0) return tc_error("save: bad arguments");
    for (int i = 0; i < d->nmeta; i++)
        if (check_text("metadata key", d->meta_keys[i]) || check_text("metadata value", d->meta_values[i])) return TC_ERR;
    int rc = TC_ERR;
    save_entry *e = calloc((size_t)d->count + 1, sizeof *e);
    save_entry **order = calloc((size_t)d->count + 1, sizeof *order);
    meta_pair *meta = calloc((size_t)d->nmeta + 1, sizeof *meta);
    tc_strbuf hdr = {0};
    bool grad = tc_set_grad_enabled(false);
    if (!e || !order || !meta) { tc_error("save: out of memory"); goto done; }

    for (int i = 0; i < d->count; i++) {
        if (check_text("tensor name", d->names[i])) goto done;
        if (strcmp(d->names[i], "__metadata__") == 0) { tc_error("save: '__metadata__' is reserved and cannot name a tensor"); goto done; }
        if (!d->tensors[i]) { tc_error("save: tensor '%.200s' is NULL", d->names[i]); goto done; }
    }
    for (int i = 0; i < d->nmeta; i++) meta[i] = (meta_pair){d->meta_keys[i], d->meta_values[i]};
    qsort(meta, (size_t)d->nmeta, sizeof *meta, cmp_meta);
    for (int i = 1; i < d->nmeta; i++)
        if (strcmp(meta[i].key, meta[i - 1].key) == 0) { tc_error("save: metadata key '%.200s' appears twice", meta[i].key); goto done; }

    /* what is written: contiguous CPU tensors, without recording any autograd */
    for (int i = 0; i < d->count; i++) {
        tc_tensor *t = d->tensors[i], *cpu = tc_to(t, t->dtype, TC_DEV_CPU);
        e[i].name = d->names[i];
        e[i].t = cpu ? tc_contiguous(cpu) : NULL;
        tc_tensor_release(cpu);
        if (!e[i].t) goto done;
        e[i].nbytes = (size_t)tc_numel(t) * tc_dtype_size(t->dtype);
    }
    qsort(e, (size_t)d->count, sizeof *e, cmp_entry_name);
    for (int i = 1; i < d->count; i++)
        if (strcmp(e[i].name, e[i - 1].name) == 0) { tc_error("save: tensor name '%.200s' appears twice", e[i].name); goto done; }
    for (int i = 0; i < d->count; i++) order[i] = &e[i];
    qsort(order, (size_t)d->count, sizeof *order, cmp_entry_layout);
    uint64_t at = 0;
    for (int i = 0; i < d->count; i++) {
        order[i]->begin = at;
        at += order[i]->nbytes;
    }

    if (build_header(&hdr, e, d->count, meta, d->nmeta) == TC_OK) rc = write_atomically(path, &hdr, order, d->count);
done:
    tc_set_grad_enabled(grad);
    if (e)
        for (int i = 0; i < d->count; i++) tc_tensor_release(e[i].t);
    free(e);
    free(order);
    free(meta);
    tc_strbuf_free(&hdr);
    return rc;
}

/* ---- load ---------------------------------------------------------------------------------- */
/* One mapping per loaded file, shared by the storages of all its tensors: the last one
 * released unmaps it. The mapping is private and writable, so an in-place op on a loaded
 * tensor copies that page and never reaches the file. */
typedef struct {
    int refcount;
    void *addr;
    size_t len;
} mapping;

static void mapping_release(void *ctx) {
    mapping *m = ctx;
    if (__atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    munmap(m->addr, m->len);
    free(m);
}

static int bad(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *path, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tc_error("load: '%s' is not a valid safetensors file: %s", path, msg);
}

typedef struct {
    const char *name;
    tc_dtype dtype;
    int ndim;
    int64_t shape[TC_MAX_DIMS];
    uint64_t begin, end;
} load_entry;

static int cmp_load_name(const void *a, const void *b) {
    return cmp_str(((const load_entry *)a)->name, ((const load_entry *)b)->name);
}

static int cmp_load_offsets(const void *a, const void *b) {
    const load_entry *x = *(load_entry *const *)a, *y = *(load_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static bool json_uint(const tc_json *v, uint64_t *out) {
    if (!v || v->type != TC_JSON_NUMBER || !v->is_int || v->integer < 0) return false;
    *out = (uint64_t)v->integer;
    return true;
}

/* one tensor's entry: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
 * checked against itself and the size of the data region */
static int parse_entry(const char *path, const char *name, const tc_json *v, uint64_t data_len, load_entry *e) {
    e->name = name;
    if (v->type != TC_JSON_OBJECT) return bad(path, "entry for tensor '%.200s' is a JSON %s, not an object", name, tc_json_type_name(v->type));
    const tc_json *dt = tc_json_get(v, "dtype"), *shape = tc_json_get(v, "shape"), *offs = tc_json_get(v, "data_offsets");
    if (!dt || dt->type != TC_JSON_STRING) return bad(path, "tensor '%.200s' has no \"dtype\" string", name);
    int k = st_dtype_from_name(dt->string);
    if (k < 0)
        return bad(path, "tensor '%.200s' has unknown or unsupported dtype '%.40s' (tocha reads F32, F64, F16, BF16, I32, I64, U8 and BOOL)", name, dt->string);
    e->dtype = (tc_dtype)k;
    if (!shape || shape->type != TC_JSON_ARRAY) return bad(path, "tensor '%.200s' has no \"shape\" array", name);
    if (shape->count > TC_MAX_DIMS) return bad(path, "tensor '%.200s' has %zu dimensions (at most %d)", name, shape->count, TC_MAX_DIMS);
    e->ndim = (int)shape->count;
    uint64_t numel = 1, nbytes;
    bool overflow = false;
    for (int i = 0; i < e->ndim; i++) {
        uint64_t s;
        if (!json_uint(&shape->items[i], &s)) return bad(path, "tensor '%.200s' has a shape entry that is not a non-negative integer", name);
        e->shape[i] = (int64_t)s;
        overflow |= __builtin_mul_overflow(numel, s, &numel);
    }
    overflow |= __builtin_mul_overflow(numel, (uint64_t)tc_dtype_size(e->dtype), &nbytes);
    if (!offs || offs->type != TC_JSON_ARRAY || offs->count != 2 || !json_uint(&offs->items[0], &e->begin) ||
        !json_uint(&offs->items[1], &e->end))
        return bad(path, "tensor '%.200s' needs \"data_offsets\": [begin, end] with non-negative integers", name);
    if (e->begin > e->end)
        return bad(path, "tensor '%.200s' has data_offsets [%llu, %llu] that end before they begin", name,
                   (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return bad(path, "tensor '%.200s' has data_offsets [%llu, %llu] outside the data region (%llu bytes)", name,
                   (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_len);
    char sh[160];
    tc_shape_str(e->ndim, e->shape, sh, sizeof sh);
    if (overflow) return bad(path, "tensor '%.200s' has shape %s, too large to address", name, sh);
    if (nbytes != e->end - e->begin)
        return bad(path, "tensor '%.200s' (%s, shape %s) needs %llu bytes but its data_offsets [%llu, %llu] span %llu",
                   name, dt->string, sh, (unsigned long long)nbytes, (unsigned long long)e->begin,
                   (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    return TC_OK;
}

static int parse_metadata(const char *path, const tc_json *m, tc_tensor_dict *out) {
    if (m->type != TC_JSON_OBJECT) return bad(path, "\"__metadata__\" is a JSON %s, not an object", tc_json_type_name(m->type));
    out->meta_keys = calloc(m->count + 1, sizeof(char *));
    out->meta_values = calloc(m->count + 1, sizeof(char *));
    if (!out->meta_keys || !out->meta_values) return tc_error("load: out of memory");
    for (size_t i = 0; i < m->count; i++) {
        const tc_json *v = &m->items[i];
        if (v->type != TC_JSON_STRING)
            return bad(path, "\"__metadata__\" value for '%.200s' is a JSON %s, not a string", m->keys[i], tc_json_type_name(v->type));
        if (strlen(m->keys[i]) != m->key_lens[i] || strlen(v->string) != v->len)
            return bad(path, "\"__metadata__\" entry '%.200s' contains a NUL character", m->keys[i]);
        out->meta_keys[i] = strdup(m->keys[i]);
        out->meta_values[i] = strdup(v->string);
        out->nmeta = (int)i + 1;
        if (!out->meta_keys[i] || !out->meta_values[i]) return tc_error("load: out of memory");
    }
    char **sorted = malloc((m->count + 1) * sizeof *sorted);
    if (!sorted) return tc_error("load: out of memory");
    memcpy(sorted, out->meta_keys, m->count * sizeof *sorted);
    qsort(sorted, m->count, sizeof *sorted, cmp_strp);
    int rc = TC_OK;
    for (size_t i = 1; i < m->count && rc == TC_OK; i++)
        if (strcmp(sorted[i], sorted[i - 1]) == 0) rc = bad(path, "\"__metadata__\" key '%.200s' appears twice", sorted[i]);
    free(sorted);
    return rc;
}

/* the header's entries must tile the data region exactly: sorted by offsets, each begins
 * where the previous ended, and the last ends at the end of the file */
static int check_coverage(const char *path, load_entry *e, int n, uint64_t data_len) {
    load_entry **by_off = malloc(((size_t)n + 1) * sizeof *by_off);
    if (!by_off) return tc_error("load: out of memory");
    for (int i = 0; i < n; i++) by_off[i] = &e[i];
    qsort(by_off, (size_t)n, sizeof *by_off, cmp_load_offsets);
    uint64_t at = 0;
    const load_entry *prev = NULL;
    int rc = TC_OK;
    for (int i = 0; i < n && rc == TC_OK; i++) {
        const load_entry *x = by_off[i];
        if (x->begin < at)
            rc = bad(path, "tensors '%.200s' and '%.200s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])", prev->name,
                     x->name, (unsigned long long)prev->begin, (unsigned long long)prev->end,
                     (unsigned long long)x->begin, (unsigned long long)x->end);
        else if (x->begin > at)
            rc = bad(path, "bytes %llu to %llu of the data region belong to no tensor (a gap before '%.200s')",
                     (unsigned long long)at, (unsigned long long)x->begin, x->name);
        at = x->end;
        prev = x;
    }
    if (rc == TC_OK && at != data_len)
        rc = bad(path, "the last %llu bytes of the data region belong to no tensor", (unsigned long long)(data_len - at));
    free(by_off);
    return rc;
}

/* a tensor over the mapping, or a copy when its bytes are not aligned for its dtype */
static tc_tensor *make_tensor(const load_entry *e, char *data, mapping *m) {
    size_t nbytes = (size_t)(e->end - e->begin), size = tc_dtype_size(e->dtype);
    char *p = data + e->begin;
    if (nbytes == 0 || (uintptr_t)p % size != 0) {
        tc_tensor *t = tc_empty(e->ndim, e->shape, e->dtype, TC_DEV_CPU);
        if (t && nbytes) memcpy(tc_data(t), p, nbytes);
        return t;
    }
    tc_storage *s = tc_storage_wrap(p, nbytes, mapping_release, m);
    if (!s) return NULL;
    __atomic_add_fetch(&m->refcount, 1, __ATOMIC_RELAXED);
    tc_tensor *t = tc_tensor_make(s, e->dtype, e->ndim, e->shape, NULL, 0);
    tc_storage_release(s);
    return t;
}

/* everything after the header's JSON is parsed: validate it and build the dict */
static int load_header(const char *path, const tc_json *h, char *data, uint64_t data_len, mapping *m, tc_tensor_dict *out) {
    if (h->type != TC_JSON_OBJECT) return bad(path, "the header is a JSON %s, not an object", tc_json_type_name(h->type));
    const tc_json *meta = NULL;
    int n = 0, rc = TC_ERR;
    for (size_t i = 0; i < h->count; i++) {
        if (strcmp(h->keys[i], "__metadata__") != 0) n++;
        else if (meta) return bad(path, "\"__metadata__\" appears twice");
        else meta = &h->items[i];
    }
    if (meta && parse_metadata(path, meta, out)) return TC_ERR;
    load_entry *e = calloc((size_t)n + 1, sizeof *e);
    if (!e) return tc_error("load: out of memory");
    for (size_t i = 0, k = 0; i < h->count; i++) {
        if (strcmp(h->keys[i], "__metadata__") == 0) continue;
        if (strlen(h->keys[i]) != h->key_lens[i]) { bad(path, "a tensor name contains a NUL character"); goto done; }
        if (parse_entry(path, h->keys[i], &h->items[i], data_len, &e[k++])) goto done;
    }
    qsort(e, (size_t)n, sizeof *e, cmp_load_name);
    for (int i = 1; i < n; i++)
        if (strcmp(e[i].name, e[i - 1].name) == 0) { bad(path, "tensor '%.200s' appears twice", e[i].name); goto done; }
    if (check_coverage(path, e, n, data_len)) goto done;

    out->names = calloc((size_t)n + 1, sizeof *out->names);
    out->tensors = calloc((size_t)n + 1, sizeof *out->tensors);
    if (!out->names || !out->tensors) { tc_error("load: out of memory"); goto done; }
    for (int i = 0; i < n; i++) {
        out->names[i] = strdup(e[i].name);
        out->tensors[i] = make_tensor(&e[i], data, m);
        out->count = i + 1;
        if (!out->names[i] || !out->tensors[i]) { tc_error("load: out of memory reading '%s'", path); goto done; }
    }
    rc = TC_OK;
done:
    free(e);
    return rc;
}

int tc_safetensors_load(const char *path, tc_tensor_dict *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tc_error("load: cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    uint8_t len8[8];
    if (fstat(fd, &st) != 0) { int err = errno; close(fd); return tc_error("load: cannot read '%s': %s", path, strerror(err)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return tc_error("load: '%s' is not a regular file", path); }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) { close(fd); return bad(path, "the file is %llu bytes long, too short to hold the 8-byte header length", (unsigned long long)size); }
    errno = 0;
    if (pread(fd, len8, 8, 0) != 8) { int err = last_errno(); close(fd); return tc_error("load: cannot read '%s': %s", path, strerror(err)); }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    if (hlen > MAX_HEADER) { close(fd); return bad(path, "header length %llu exceeds the 100 MB limit", (unsigned long long)hlen); }
    if (hlen > size - 8) {
        close(fd);
        return bad(path, "header length %llu runs past the end of the file (%llu bytes)", (unsigned long long)hlen, (unsigned long long)size);
    }

    mapping *m = calloc(1, sizeof *m);
    if (!m) { close(fd); return tc_error("load: out of memory"); }
    void *addr = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (addr == MAP_FAILED) { free(m); return tc_error("load: cannot map '%s': %s", path, strerror(err)); }
    m->refcount = 1; /* the loader's own reference, dropped below */
    m->addr = addr;
    m->len = (size_t)size;

    char jerr[256];
    tc_json h;
    int rc;
    if (tc_json_parse((char *)addr + 8, (size_t)hlen, &h, jerr, sizeof jerr) != 0) rc = bad(path, "invalid JSON in the header %s", jerr);
    else {
        rc = load_header(path, &h, (char *)addr + 8 + hlen, size - 8 - hlen, m, out);
        tc_json_free(&h);
    }
    if (rc != TC_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tc_last_error()); /* freeing tensors must not lose it */
        tc_tensor_dict_free(out);
        tc_error("%s", msg);
    }
    mapping_release(m);
    return rc;
}

void tc_tensor_dict_free(tc_tensor_dict *d) {
    if (!d) return;
    for (int i = 0; i < d->count; i++) {
        if (d->names) free(d->names[i]);
        if (d->tensors) tc_tensor_release(d->tensors[i]);
    }
    for (int i = 0; i < d->nmeta; i++) {
        if (d->meta_keys) free(d->meta_keys[i]);
        if (d->meta_values) free(d->meta_values[i]);
    }
    free(d->names);
    free(d->tensors);
    free(d->meta_keys);
    free(d->meta_values);
    memset(d, 0, sizeof *d);
}
