/* tocha_io.h: the I/O half of the engine's C API, apart from tocha.h (tensors, ops,
 * autograd): safetensors files, images and their transforms, data sources, shards and the
 * loader's worker pool, run-log files and TensorBoard events. Conventions as tocha.h's:
 * functions that fail return NULL or TC_ERR with a message for tc_last_error(). */
#ifndef TOCHA_IO_H
#define TOCHA_IO_H

#include "tocha.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- safetensors (core/io/safetensors.c) ---------------------------------------------- */
typedef struct {
    int count;
    char **names;
    tc_tensor **tensors;
    int nmeta;
    char **meta_keys, **meta_values;
} tc_tensor_dict;
int tc_safetensors_save(const char *path, const tc_tensor_dict *d);
int tc_safetensors_load(const char *path, tc_tensor_dict *out); /* mmap-backed tensors */
void tc_tensor_dict_free(tc_tensor_dict *d);

/* ---- images and data (core/io/image.c, transform.c, shard.c, loader.c) -------------------------
 * Images are u8 [H, W, C] tensors: C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. Errors about a file
 * name the file and the reason (corrupt, truncated, unreadable). */
typedef enum { TC_IMAGE_UNKNOWN, TC_IMAGE_PNG, TC_IMAGE_JPEG } tc_image_format;
tc_image_format tc_image_sniff(const void *data, size_t n);  /* from the first bytes */
tc_image_format tc_image_format_for(const char *path);       /* .jpg/.jpeg: JPEG, else PNG */
/* channels: 0 keeps the file's, 1/3/4 convert (gray <-> RGB; alpha dropped, or opaque when added) */
tc_tensor *tc_image_decode(const void *data, size_t n, int channels, const char *name);
tc_tensor *tc_image_read(const char *path, int channels);
/* img u8 [H, W, C] or [H, W]; *out is malloc'd. quality: JPEG 1-100, PNG zlib level 0-9;
 * -1: the defaults (JPEG 90, PNG 6) */
int tc_image_encode(tc_tensor *img, tc_image_format fmt, int quality, void **out, size_t *n);
/* PNG at zlib level 0-9 (-1: 6) with ntext text chunks keys[i] = values[i] (tEXt for ASCII
 * values, iTXt for UTF-8 ones); keys are 1-79 printable ASCII characters */
int tc_image_encode_png(tc_tensor *img, int level, const char *const *keys, const char *const *values, int ntext,
                        void **out, size_t *n);
int tc_image_write(const char *path, tc_tensor *img, int quality); /* format from the extension */
int tc_read_file(const char *path, void **data, size_t *n);        /* whole file, malloc'd */

/* transforms of u8 [H, W, C] images (any strides); each returns a new contiguous image */
typedef enum { TC_RESIZE_NEAREST, TC_RESIZE_BILINEAR, TC_RESIZE_BICUBIC, TC_RESIZE_AREA,
               TC_RESIZE_LANCZOS } tc_resize_mode;
/* PIL's Image.resize, bit for bit: separable filters widened by the scale when shrinking
 * (antialiasing; AREA is PIL's BOX). antialias = false keeps the filter's own width, which
 * for BILINEAR is torch's interpolate(align_corners = false) */
tc_tensor *tc_image_resize(tc_tensor *img, int64_t h, int64_t w, tc_resize_mode mode, bool antialias);
/* the same resize on each channel as a float image (PIL's mode "F", as clean-fid resizes):
 * u8 [H, W, C] -> f32 [C, h, w] on the 0-255 scale, not clipped (bicubic overshoots) */
tc_tensor *tc_image_resize_float(tc_tensor *img, int64_t h, int64_t w, tc_resize_mode mode, bool antialias);
tc_tensor *tc_image_crop(tc_tensor *img, int64_t top, int64_t left, int64_t h, int64_t w); /* 0-based */
tc_tensor *tc_image_hflip(tc_tensor *img);
/* u8 [..., H, W, C] -> f32 [..., C, H, W] in [-1, 1] (v / 127.5 - 1) */
tc_tensor *tc_image_to_float(tc_tensor *img);
/* float [..., C, H, W] in [lo, hi] -> u8 [..., H, W, C]: floor(255 (x - lo) / (hi - lo) + 0.5), clamped */
tc_tensor *tc_image_to_u8(tc_tensor *x, double lo, double hi);

/* a pipeline: decode to `channels`, then ops in order. Random ops draw from Philox at
 * (seed, counter + op position), so a sample's augmentation is fixed by (seed, counter)
 * on whichever thread runs it. TO_FLOAT may only come last. */
typedef enum { TC_TF_RESIZE, TC_TF_CENTER_CROP, TC_TF_RANDOM_CROP, TC_TF_HFLIP, TC_TF_TO_FLOAT } tc_tf_kind;
typedef struct {
    tc_tf_kind kind;
    int64_t h, w;          /* RESIZE: w = 0 scales the shorter side to h (torchvision's Resize(int)) */
    tc_resize_mode mode;   /* RESIZE */
    bool antialias;        /* RESIZE */
    double p;              /* HFLIP: probability of flipping */
} tc_transform;
#define TC_MAX_TRANSFORMS 16
typedef struct {
    int channels;          /* decoding: 0 keeps the file's */
    int nops;
    tc_transform ops[TC_MAX_TRANSFORMS];
} tc_pipeline;
int tc_pipeline_check(const tc_pipeline *p);
tc_tensor *tc_pipeline_run(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter);
/* the same, writing into dst (contiguous, of exactly the output's shape and dtype) */
int tc_pipeline_run_into(const tc_pipeline *p, tc_tensor *img, uint64_t seed, uint64_t counter, tc_tensor *dst);
/* when every image comes out the same shape (channels fixed, a resize to h x w or a crop
 * fixes the size): that shape ([C, H, W] after TO_FLOAT, else [H, W, C]) and dtype; else false */
bool tc_pipeline_out_shape(const tc_pipeline *p, int64_t shape[3], tc_dtype *dt);

/* zstd frames with a content checksum (shards hold one per sample) */
int tc_zstd_compress(const void *src, size_t n, int level, void **out, size_t *outn);
int tc_zstd_decompress(const void *src, size_t n, void **out, size_t *outn, const char *what);
#define TC_SHARD_MAGIC "TOCHASH1" /* the first 8 bytes of a shard file */

/* where samples' encoded image bytes live: files, or zstd frames in shard files */
typedef struct tc_source tc_source;
tc_source *tc_source_files(int64_t n, const char *const *paths);
/* sample i is the frame of size[i] bytes at offset[i] in shard_paths[shard[i]] (0-based) */
tc_source *tc_source_shards(int nshards, const char *const *shard_paths, int64_t n, const int32_t *shard,
                            const uint64_t *offset, const uint64_t *size, const char *const *names);
tc_source *tc_source_retain(tc_source *s);
void tc_source_release(tc_source *s);
int64_t tc_source_len(const tc_source *s);
const char *tc_source_name(const tc_source *s, int64_t i);
int tc_source_read(const tc_source *s, int64_t i, void **data, size_t *n); /* encoded bytes, malloc'd */
tc_tensor *tc_source_load(const tc_source *s, int64_t i, const tc_pipeline *p, uint64_t seed, uint64_t counter);

/* the data loader's worker pool: whole batches are decoded and transformed on pthreads
 * into a ring of `depth` slots; with 0 workers tc_loader_take runs the batch itself */
typedef struct tc_loader tc_loader;
typedef struct {
    tc_source *src;        /* NULL: the sample is bad and err says why */
    int64_t index;
    const tc_pipeline *pipe;
    uint64_t seed, counter;
    const char *err;
} tc_loader_sample;
typedef struct {
    int n;
    tc_tensor *batch;      /* [n, ...] when submitted with one, else NULL */
    tc_tensor **items;     /* else one result per sample (NULL where it failed) */
    char **errors;         /* per sample: NULL or why it failed */
} tc_loader_batch;
tc_loader *tc_loader_new(int workers, int depth);
void tc_loader_free(tc_loader *l);
int tc_loader_pending(const tc_loader *l);
/* queues a batch (copies samples); batch: a tensor [n, ...] to write into, or NULL */
int tc_loader_submit(tc_loader *l, int n, const tc_loader_sample *samples, tc_tensor *batch);
int tc_loader_take(tc_loader *l, tc_loader_batch *out); /* the oldest batch; the caller owns it */
void tc_loader_batch_free(tc_loader_batch *b);
/* epoch `epoch`'s order of n samples (0-based), a Fisher-Yates shuffle driven by Philox */
void tc_permutation(int64_t n, uint64_t seed, uint64_t epoch, int64_t *out);

/* ---- run logs (core/io/logfile.c, tensorboard.c, crc32c.c) ---------------------------------------
 * A tc_logfile appends to one file through a memory buffer that a background thread writes out
 * every flush_secs (<= 0: no thread); tc_logfile_flush, close and process exit (atexit) write it
 * too. Only whole units (an event record, a JSON line) reach the file, so a killed process loses
 * at most the last interval and never leaves a unit half written. A failed write (a full disk)
 * is undone, its data kept for the next try, and its error returned by the next call. */
typedef struct tc_logfile tc_logfile;
int tc_mkdirs(const char *path);                                  /* mkdir -p */
tc_logfile *tc_logfile_open(const char *path, double flush_secs); /* appends; makes parent dirs */
int tc_logfile_write(tc_logfile *f, const void *data, size_t n);  /* one unit */
int tc_logfile_flush(tc_logfile *f);
int tc_logfile_close(tc_logfile *f); /* flushes and frees, also when the flush fails */
const char *tc_logfile_path(const tc_logfile *f);
int64_t tc_logfile_bytes(const tc_logfile *f); /* bytes written to the file so far */

/* TensorBoard event files: dir/events.out.tfevents.<secs>.<host>.<pid>.<n><suffix>, records of
 * Event protos (encoded here by hand) in TFRecord framing. wall_time < 0: now. */
tc_logfile *tc_tb_open(const char *dir, const char *suffix, double flush_secs);
int tc_tb_scalar(tc_logfile *f, const char *tag, double value, int64_t step, double wall_time);
/* img: u8 [H, W, C], C = 1 to 4, written as PNG */
int tc_tb_image(tc_logfile *f, const char *tag, tc_tensor *img, int64_t step, double wall_time);
/* `bins` equal-width buckets over the finite values (any float or integer dtype, any device);
 * *nonfinite (when not NULL) gets how many values were NaN or infinite and left out */
int tc_tb_histogram(tc_logfile *f, const char *tag, tc_tensor *x, int bins, int64_t step,
                    double wall_time, int64_t *nonfinite);
int tc_tb_text(tc_logfile *f, const char *tag, const char *text, size_t n, int64_t step, double wall_time);
typedef enum { TC_HPARAM_NUMBER, TC_HPARAM_STRING, TC_HPARAM_BOOL } tc_hparam_type;
typedef struct {
    const char *name;
    tc_hparam_type type;
    double number;
    const char *string;
    bool boolean;
} tc_hparam;
/* the HParams plugin's session data: an experiment (these hparams, these metric tags), a session
 * start with the values, a session end (success). Metric values are scalars of those tags. */
int tc_tb_hparams(tc_logfile *f, int n, const tc_hparam *hp, int nmetrics, const char *const *metric_tags,
                  double wall_time);
/* TFRecord reading: the record at data[*pos] (pos advances past it). Returns 1 with the record,
 * 0 at the end, 2 when the data ends inside a record (a file still being written), TC_ERR on a
 * CRC mismatch */
int tc_tfrecord_next(const void *data, size_t n, size_t *pos, const void **rec, size_t *len);
uint32_t tc_crc32c(uint32_t crc, const void *data, size_t n); /* crc: 0 to start */
uint32_t tc_crc32c_mask(uint32_t crc);

#ifdef __cplusplus
}
#endif

#endif
