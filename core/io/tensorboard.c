/* tensorboard.c: TensorBoard event files: tc_tb_* encode Event protos by hand (scalars, PNG
 * images, histograms, text, the HParams plugin's session data) and frame them as TFRecords,
 * the units of a run-log file (logfile.c); and the TFRecord reader. */
#include "tocha.h"
#include "tocha_io.h"
#include "logfile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- little-endian fields, wall time ------------------------------------------------------ */
static void put_le(tc_buf *b, uint64_t v, int nbytes) {
    unsigned char t[8];
    for (int i = 0; i < nbytes; i++) t[i] = (unsigned char)(v >> (8 * i));
    tc_buf_put(b, t, (size_t)nbytes);
}

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- protobuf wire format: just what Event and its parts need ---------------------------- */
enum { WIRE_VARINT = 0, WIRE_64 = 1, WIRE_LEN = 2, WIRE_32 = 5 };

static void pb_varint(tc_buf *b, uint64_t v) {
    unsigned char t[10];
    size_t n = 0;
    do {
        t[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    tc_buf_put(b, t, n);
}

static void pb_key(tc_buf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_int(tc_buf *b, int field, int64_t v) { /* int32/int64/enum/bool: negatives take 10 bytes */
    pb_key(b, field, WIRE_VARINT);
    pb_varint(b, (uint64_t)v);
}

static void pb_double(tc_buf *b, int field, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_key(b, field, WIRE_64);
    put_le(b, u, 8);
}

static void pb_float(tc_buf *b, int field, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    pb_key(b, field, WIRE_32);
    put_le(b, u, 4);
}

static void pb_bytes(tc_buf *b, int field, const void *p, size_t n) {
    pb_key(b, field, WIRE_LEN);
    pb_varint(b, n);
    tc_buf_put(b, p, n);
}

static void pb_str(tc_buf *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

static void pb_msg(tc_buf *b, int field, const tc_buf *m) {
    if (m->oom) b->oom = true;
    pb_bytes(b, field, m->data, m->len);
}

static void pb_packed_doubles(tc_buf *b, int field, const double *v, size_t n) {
    pb_key(b, field, WIRE_LEN);
    pb_varint(b, 8 * n);
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &v[i], 8);
        put_le(b, u, 8);
    }
}

/* ---- TFRecords and events ------------------------------------------------------------------ */
/* a record: u64 length, u32 masked crc of the length, the data, u32 masked crc of the data */
static void put_record(tc_buf *out, const tc_buf *data) {
    if (data->oom) out->oom = true;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)data->len >> (8 * i));
    tc_buf_reserve(out, data->len + 16);
    tc_buf_put(out, len, 8);
    put_le(out, tc_crc32c_mask(tc_crc32c(0, len, 8)), 4);
    tc_buf_put(out, data->data, data->len);
    put_le(out, tc_crc32c_mask(tc_crc32c(0, data->data, data->len)), 4);
}

/* Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5 }
 * with Summary { repeated Value value = 1 } holding one Value (NULL: the file_version event) */
static void put_event(tc_buf *out, const tc_buf *value, int64_t step, double wall_time) {
    tc_buf e = {0}, s = {0};
    pb_double(&e, 1, wall_time < 0 ? now_secs() : wall_time);
    if (step) pb_int(&e, 2, step);
    if (value) {
        pb_msg(&s, 1, value);
        pb_msg(&e, 5, &s);
    } else pb_str(&e, 3, "brain.Event:2");
    put_record(out, &e);
    tc_buf_free(&e);
    tc_buf_free(&s);
}

/* one event holding value (freed) as a record of f */
static int write_value(tc_logfile *f, tc_buf *value, int64_t step, double wall_time) {
    tc_buf r = {0};
    put_event(&r, value, step, wall_time);
    tc_buf_free(value);
    int rc = r.oom ? tc_error("log: out of memory encoding an event") : tc_logfile_write(f, r.data, r.len);
    tc_buf_free(&r);
    return rc;
}

static int check_tag(const char *tag, const char *what) {
    if (!tag || !*tag) return tc_error("%s: the tag is empty", what);
    return TC_OK;
}

/* SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1; bytes content = 2 } } */
static void put_plugin(tc_buf *value, const char *plugin, const tc_buf *content) {
    tc_buf pd = {0}, md = {0};
    pb_str(&pd, 1, plugin);
    if (content) pb_msg(&pd, 2, content);
    pb_msg(&md, 1, &pd);
    pb_msg(value, 9, &md);
    tc_buf_free(&pd);
    tc_buf_free(&md);
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
    tc_logfile *f = tc_logfile_create(path, flush_secs);
    if (!f) return NULL;
    /* the first record says which format follows; written now, so an unwritable place fails here */
    tc_buf first = {0};
    put_event(&first, NULL, 0, -1);
    int rc = first.oom ? tc_error("out of memory") : tc_logfile_write(f, first.data, first.len);
    tc_buf_free(&first);
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
    tc_buf v = {0};
    pb_str(&v, 1, tag);
    pb_float(&v, 2, (float)value);
    return write_value(f, &v, step, wall_time);
}

/* Value { tag = 1; Image image = 4 { int32 height = 1; width = 2; colorspace = 3; bytes encoded = 4 } },
 * encoded as PNG when flushed: the training loop pays for a copy of the pixels, not for zlib */
typedef struct {
    tc_logjob base;
    tc_tensor *img; /* a private contiguous copy */
    int64_t step;
    double wall_time;
    char tag[];
} image_job;

static int image_encode(tc_logjob *j, tc_buf *out) {
    image_job *ij = (image_job *)j;
    void *png;
    size_t n;
    /* zlib level 3: nearly level 6's size at half its time */
    if (tc_image_encode(ij->img, TC_IMAGE_PNG, 3, &png, &n) != TC_OK) return TC_ERR;
    tc_buf im = {0}, v = {0};
    pb_int(&im, 1, ij->img->shape[0]);
    pb_int(&im, 2, ij->img->shape[1]);
    pb_int(&im, 3, ij->img->shape[2]);
    pb_bytes(&im, 4, png, n);
    free(png);
    pb_str(&v, 1, ij->tag);
    pb_msg(&v, 4, &im);
    tc_buf_free(&im);
    put_event(out, &v, ij->step, ij->wall_time);
    tc_buf_free(&v);
    return out->oom ? tc_error("log: out of memory encoding image '%s'", ij->tag) : TC_OK;
}

static void image_free(tc_logjob *j) {
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
    return tc_logfile_defer(f, &j->base);
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
    tc_buf h = {0}, v = {0};
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
    tc_buf_free(&h);
    return write_value(f, &v, step, wall_time);
}

/* Value { tag = 1; metadata = 9 (plugin "text"); TensorProto tensor = 8 { DataType dtype = 1
 * (DT_STRING = 7); bytes string_val = 8 } }: a scalar string tensor, as tf.summary.text writes */
int tc_tb_text(tc_logfile *f, const char *tag, const char *text, size_t n, int64_t step, double wall_time) {
    if (check_tag(tag, "add_text") != TC_OK) return TC_ERR;
    tc_buf t = {0}, v = {0};
    pb_int(&t, 1, 7);
    pb_bytes(&t, 8, text, n);
    pb_str(&v, 1, tag);
    put_plugin(&v, "text", NULL);
    pb_msg(&v, 8, &t);
    tc_buf_free(&t);
    return write_value(f, &v, step, wall_time);
}

/* one hparams summary: Value { tag; metadata (plugin "hparams", content = HParamsPluginData
 * { int32 version = 1 (0); oneof { experiment = 2; session_start_info = 3; session_end_info = 4 } });
 * tensor = an empty float vector (what the plugin's own writer puts there) } */
static int write_hparams_value(tc_logfile *f, const char *tag, int field, tc_buf *msg, double wall_time) {
    static const unsigned char null_tensor[] = {0x08, 0x01, 0x12, 0x02, 0x12, 0x00};
    tc_buf content = {0}, v = {0};
    pb_int(&content, 1, 0);
    pb_msg(&content, field, msg);
    tc_buf_free(msg);
    pb_str(&v, 1, tag);
    put_plugin(&v, "hparams", &content);
    tc_buf_free(&content);
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
    tc_buf exp = {0};
    for (int i = 0; i < n; i++) {
        tc_buf info = {0};
        pb_str(&info, 1, hp[i].name);
        pb_int(&info, 4, hp[i].type == TC_HPARAM_STRING ? 1 : hp[i].type == TC_HPARAM_BOOL ? 2 : 3);
        pb_msg(&exp, 4, &info);
        tc_buf_free(&info);
    }
    for (int i = 0; i < nmetrics; i++) {
        tc_buf name = {0}, info = {0};
        pb_str(&name, 2, metric_tags[i]);
        pb_msg(&info, 1, &name);
        pb_msg(&exp, 5, &info);
        tc_buf_free(&name);
        tc_buf_free(&info);
    }
    if (write_hparams_value(f, "_hparams_/experiment", 2, &exp, wall_time) != TC_OK) return TC_ERR;

    /* SessionStartInfo { map<string, google.protobuf.Value> hparams = 1; double start_time_secs = 5 },
     * a map entry { string key = 1; Value value = 2 }, Value { double number_value = 2;
     * string string_value = 3; bool bool_value = 4 } */
    tc_buf start = {0};
    for (int i = 0; i < n; i++) {
        tc_buf val = {0}, entry = {0};
        if (hp[i].type == TC_HPARAM_STRING) pb_str(&val, 3, hp[i].string ? hp[i].string : "");
        else if (hp[i].type == TC_HPARAM_BOOL) pb_int(&val, 4, hp[i].boolean);
        else pb_double(&val, 2, hp[i].number);
        pb_str(&entry, 1, hp[i].name);
        pb_msg(&entry, 2, &val);
        pb_msg(&start, 1, &entry);
        tc_buf_free(&val);
        tc_buf_free(&entry);
    }
    pb_double(&start, 5, wall_time);
    if (write_hparams_value(f, "_hparams_/session_start_info", 3, &start, wall_time) != TC_OK) return TC_ERR;

    /* SessionEndInfo { Status status = 1 (STATUS_SUCCESS = 1); double end_time_secs = 2 } */
    tc_buf end = {0};
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
