/* image.c: PNG (libpng) and JPEG (libjpeg-turbo) codecs between encoded bytes and u8
 * [H, W, C] tensors. Both libraries report errors by longjmp from their callbacks; the
 * jumps stay inside this file, so a corrupt or truncated file is a tc_error naming the
 * file and the reason, never an exit or a crash. libjpeg's warnings (premature end of
 * data, corrupt entropy data) are errors here too: a damaged image must not load. */
#include "tocha.h"
#include "tocha_io.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
/* jpeglib.h needs size_t and FILE declared first */
#include <jpeglib.h>
#include <jerror.h>

/* ---- helpers ---------------------------------------------------------------------------- */
static const char *file_name(const char *name) { return name && *name ? name : "image"; }

static tc_tensor *new_image(int64_t h, int64_t w, int64_t c) {
    int64_t shape[3] = {h, w, c};
    return tc_empty(3, shape, TC_U8, TC_DEV_CPU);
}

tc_image_format tc_image_sniff(const void *data, size_t n) {
    const unsigned char *p = data;
    if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0) return TC_IMAGE_PNG;
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return TC_IMAGE_JPEG;
    return TC_IMAGE_UNKNOWN;
}

/* gray/alpha <-> RGB(A) conversion of packed u8 pixels, for the requested channel count */
static void convert_channels(const uint8_t *src, int sc, uint8_t *dst, int dc, int64_t npix) {
    for (int64_t i = 0; i < npix; i++, src += sc, dst += dc) {
        uint8_t r, g, b, a = sc == 2 ? src[1] : sc == 4 ? src[3] : 255;
        if (sc <= 2) r = g = b = src[0];
        else { r = src[0]; g = src[1]; b = src[2]; }
        switch (dc) {
        case 1: dst[0] = sc <= 2 ? r : (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); break;
        case 2: dst[0] = sc <= 2 ? r : (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); dst[1] = a; break;
        case 3: dst[0] = r; dst[1] = g; dst[2] = b; break;
        default: dst[0] = r; dst[1] = g; dst[2] = b; dst[3] = a; break;
        }
    }
}

/* the tensor with `channels` channels (0: as decoded); consumes img */
static tc_tensor *with_channels(tc_tensor *img, int channels) {
    if (!img || channels == 0 || channels == img->shape[2]) return img;
    int64_t c = img->shape[2];
    tc_tensor *out = new_image(img->shape[0], img->shape[1], channels);
    if (out) convert_channels(tc_data(img), (int)c, tc_data(out), channels, img->shape[0] * img->shape[1]);
    tc_tensor_release(img);
    return out;
}

/* ---- PNG -------------------------------------------------------------------------------- */
typedef struct {
    const uint8_t *data;
    size_t n, pos;
    char msg[200];
} png_src;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->n - s->pos) png_error(png, "truncated file (unexpected end of data)");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static tc_tensor *png_decode(const void *data, size_t n, int channels, const char *name) {
    png_src src = {data, n, 0, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        tc_error("image: %s: out of memory", file_name(name));
        return NULL;
    }
    /* volatile: modified between setjmp and a possible longjmp */
    tc_tensor *volatile img = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        tc_tensor_release(img);
        tc_error("image: %s: corrupt PNG: %s", file_name(name), src.msg);
        return NULL;
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info);
    png_set_expand(png);                       /* palette -> RGB, low-bit gray -> 8 bits, tRNS -> alpha */
    png_set_strip_16(png);                     /* 16-bit samples keep their high byte, as PIL's RGB does */
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    (void)color;
    if (png_get_bit_depth(png, info) != 8 || c < 1 || c > 4) png_error(png, "unsupported pixel format");
    img = new_image(h, w, c);
    if (!img) png_error(png, "out of memory");
    rows = malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!rows) png_error(png, "out of memory");
    uint8_t *p = tc_data(img);
    for (png_uint_32 y = 0; y < h; y++) rows[y] = p + (size_t)y * w * c;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    return with_channels(img, channels);
}

typedef struct {
    uint8_t *data;
    size_t n, cap;
    char msg[200];
} mem_sink;

static void png_write_mem(png_structp png, png_bytep in, png_size_t n) {
    mem_sink *s = png_get_io_ptr(png);
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        while (cap < s->n + n) cap *= 2;
        uint8_t *d = realloc(s->data, cap);
        if (!d) png_error(png, "out of memory");
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->n, in, n);
    s->n += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_on_write_error(png_structp png, png_const_charp msg) {
    mem_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* text chunks: tEXt (Latin-1) where the value is ASCII, else iTXt (UTF-8, uncompressed) */
static void png_add_text(png_structp png, png_infop info, const char *const *keys, const char *const *values, int ntext) {
    for (int i = 0; i < ntext; i++) {
        png_text t;
        memset(&t, 0, sizeof t);
        bool ascii = true;
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) ascii = ascii && *p < 0x80;
        t.compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        t.key = (png_charp)keys[i];
        t.text = (png_charp)values[i];
        if (ascii) t.text_length = strlen(values[i]);
        else t.itxt_length = strlen(values[i]);
        png_set_text(png, info, &t, 1);
    }
}

static int png_encode(const uint8_t *pix, int64_t h, int64_t w, int c, int level, const char *const *keys,
                      const char *const *values, int ntext, void **out, size_t *n) {
    static const int types[] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                PNG_COLOR_TYPE_RGB_ALPHA};
    mem_sink sink = {NULL, 0, 0, ""};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_on_write_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return tc_error("image: encoding PNG: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink.data);
        return tc_error("image: encoding PNG: %s", sink.msg);
    }
    png_set_write_fn(png, &sink, png_write_mem, png_flush_mem);
    png_set_compression_level(png, level);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, types[c], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_add_text(png, info, keys, values, ntext);
    png_write_info(png, info);
    for (int64_t y = 0; y < h; y++) png_write_row(png, pix + y * w * c);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = sink.data;
    *n = sink.n;
    return TC_OK;
}

/* ---- JPEG -------------------------------------------------------------------------------- */
typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* level -1 is a warning: libjpeg fills missing data with gray and carries on; we refuse */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_on_error(cinfo);
}

static tc_tensor *jpeg_decode(const void *data, size_t n, int channels, const char *name) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    tc_tensor *volatile img = NULL;
    uint8_t *volatile cmyk = NULL;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        tc_tensor_release(img);
        free(cmyk);
        tc_error("image: %s: corrupt JPEG: %s", file_name(name), err.msg);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    bool is_cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    int c = cinfo.num_components == 1 ? 1 : 3;
    if (is_cmyk) cinfo.out_color_space = JCS_CMYK;
    else if (channels == 1 || (channels == 0 && c == 1)) { cinfo.out_color_space = JCS_GRAYSCALE; c = 1; }
    else { cinfo.out_color_space = JCS_RGB; c = 3; }
    jpeg_start_decompress(&cinfo);
    int64_t h = cinfo.output_height, w = cinfo.output_width;
    img = new_image(h, w, is_cmyk ? 3 : c);
    if (!img) { snprintf(err.msg, sizeof err.msg, "out of memory"); longjmp(err.jump, 1); }
    uint8_t *p = tc_data(img);
    if (is_cmyk && !(cmyk = malloc((size_t)w * 4))) { snprintf(err.msg, sizeof err.msg, "out of memory"); longjmp(err.jump, 1); }
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *row = p + (int64_t)cinfo.output_scanline * w * (is_cmyk ? 3 : c);
        JSAMPROW rp = is_cmyk ? cmyk : row;
        jpeg_read_scanlines(&cinfo, &rp, 1);
        /* Adobe writes CMYK inverted; this is PIL's CMYK -> RGB */
        if (is_cmyk)
            for (int64_t x = 0; x < w; x++) {
                const uint8_t *q = cmyk + 4 * x;
                for (int k = 0; k < 3; k++) row[3 * x + k] = (uint8_t)((q[k] * q[3] + 127) / 255);
            }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(cmyk);
    return with_channels(img, channels);
}

/* a growable memory destination of our own: libjpeg's jpeg_mem_dest hides its current
 * buffer until it finishes, so an error in between could not free it */
typedef struct {
    struct jpeg_destination_mgr pub;
    uint8_t *data;
    size_t cap;
} jpeg_sink;

static void sink_init(j_compress_ptr cinfo) {
    jpeg_sink *s = (jpeg_sink *)cinfo->dest;
    s->pub.next_output_byte = s->data;
    s->pub.free_in_buffer = s->cap;
}

static boolean sink_grow(j_compress_ptr cinfo) {
    jpeg_sink *s = (jpeg_sink *)cinfo->dest;
    uint8_t *d = realloc(s->data, s->cap * 2);
    if (!d) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
    s->pub.next_output_byte = d + s->cap;
    s->pub.free_in_buffer = s->cap;
    s->data = d;
    s->cap *= 2;
    return TRUE;
}

static void sink_term(j_compress_ptr cinfo) { (void)cinfo; }

static int jpeg_encode(const uint8_t *pix, int64_t h, int64_t w, int c, int quality, void **out, size_t *n) {
    if (c != 1 && c != 3) return tc_error("image: JPEG holds 1 or 3 channels, got %d (drop the alpha channel or write a PNG)", c);
    struct jpeg_compress_struct cinfo;
    jpeg_err err;
    jpeg_sink sink = {{0}, malloc(65536), 65536};
    if (!sink.data) return tc_error("image: encoding JPEG: out of memory");
    sink.pub.init_destination = sink_init;
    sink.pub.empty_output_buffer = sink_grow;
    sink.pub.term_destination = sink_term;
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(sink.data);
        return tc_error("image: encoding JPEG: %s", err.msg);
    }
    jpeg_create_compress(&cinfo);
    cinfo.dest = &sink.pub;
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = c;
    cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (int64_t)cinfo.next_scanline * w * c);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    *out = sink.data;
    *n = sink.cap - sink.pub.free_in_buffer;
    jpeg_destroy_compress(&cinfo);
    return TC_OK;
}

/* ---- public entry points ------------------------------------------------------------------ */
tc_tensor *tc_image_decode(const void *data, size_t n, int channels, const char *name) {
    if (channels < 0 || channels > 4) {
        tc_error("image: channels must be 0 (as stored), 1, 2, 3 or 4, got %d", channels);
        return NULL;
    }
    switch (tc_image_sniff(data, n)) {
    case TC_IMAGE_PNG: return png_decode(data, n, channels, name);
    case TC_IMAGE_JPEG: return jpeg_decode(data, n, channels, name);
    default:
        if (n == 0) tc_error("image: %s: empty file", file_name(name));
        else tc_error("image: %s: not a PNG or JPEG file (unrecognised header)", file_name(name));
        return NULL;
    }
}

int tc_read_file(const char *path, void **data, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return tc_error("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); return tc_error("reading %s: out of memory", path); }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        uint8_t *b = realloc(buf, cap * 2);
        if (!b) free(buf);
        buf = b;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return tc_error("reading %s: I/O error", path); }
    *data = buf;
    *n = len;
    return TC_OK;
}

tc_tensor *tc_image_read(const char *path, int channels) {
    void *data;
    size_t n;
    if (tc_read_file(path, &data, &n) != TC_OK) return NULL;
    tc_tensor *img = tc_image_decode(data, n, channels, path);
    free(data);
    return img;
}

/* img: u8 [H, W, C] or [H, W] (any strides), on the CPU; its sizes in h, w, c */
static int check_encodable(const tc_tensor *img, int64_t *h, int64_t *w, int64_t *c) {
    char s[64];
    tc_shape_str(img->ndim, img->shape, s, sizeof s);
    if (img->dtype != TC_U8 || (img->ndim != 3 && img->ndim != 2))
        return tc_error("image: expected a u8 [H, W, C] tensor to encode, got %s %s", tc_dtype_name(img->dtype), s);
    *h = img->shape[0], *w = img->shape[1], *c = img->ndim == 3 ? img->shape[2] : 1;
    if (*c < 1 || *c > 4 || *h < 1 || *w < 1 || *h > 65535 || *w > 65535)
        return tc_error("image: cannot encode an image of shape %s (1 to 4 channels, 1 to 65535 pixels a side)", s);
    if (img->storage->device.type != TC_CPU) return tc_error("image: encode needs a CPU tensor (use :to(\"cpu\"))");
    return TC_OK;
}

int tc_image_encode(tc_tensor *img, tc_image_format fmt, int quality, void **out, size_t *n) {
    if (fmt != TC_IMAGE_JPEG) return tc_image_encode_png(img, quality, NULL, NULL, 0, out, n);
    int64_t h, w, c;
    if (check_encodable(img, &h, &w, &c) != TC_OK) return TC_ERR;
    if (quality < 0) quality = 90;
    if (quality < 1 || quality > 100) return tc_error("image: JPEG quality must be 1 to 100, got %d", quality);
    tc_tensor *cont = tc_contiguous(img);
    if (!cont) return TC_ERR;
    int rc = jpeg_encode(tc_data(cont), h, w, (int)c, quality, out, n);
    tc_tensor_release(cont);
    return rc;
}

int tc_image_encode_png(tc_tensor *img, int level, const char *const *keys, const char *const *values, int ntext,
                        void **out, size_t *n) {
    int64_t h, w, c;
    if (check_encodable(img, &h, &w, &c) != TC_OK) return TC_ERR;
    for (int i = 0; i < ntext; i++) {
        size_t len = strlen(keys[i]);
        bool ok = len >= 1 && len <= 79;
        for (const unsigned char *p = (const unsigned char *)keys[i]; *p; p++) ok = ok && *p >= 32 && *p < 127;
        if (!ok) return tc_error("image: PNG text key '%.100s' must be 1 to 79 printable ASCII characters", keys[i]);
    }
    tc_tensor *cont = tc_contiguous(img);
    if (!cont) return TC_ERR;
    int rc = png_encode(tc_data(cont), h, w, (int)c, level >= 0 && level <= 9 ? level : 6, keys, values, ntext, out, n);
    tc_tensor_release(cont);
    return rc;
}

tc_image_format tc_image_format_for(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"))) return TC_IMAGE_JPEG;
    return TC_IMAGE_PNG;
}

int tc_image_write(const char *path, tc_tensor *img, int quality) {
    void *buf;
    size_t n;
    tc_image_format fmt = tc_image_format_for(path);
    if (tc_image_encode(img, fmt, quality, &buf, &n) != TC_OK) return TC_ERR;
    FILE *f = fopen(path, "wb");
    if (!f) { free(buf); return tc_error("image: cannot write %s: %s", path, strerror(errno)); }
    size_t wrote = fwrite(buf, 1, n, f);
    int rc = fclose(f);
    free(buf);
    if (wrote != n || rc != 0) return tc_error("image: writing %s failed: %s", path, strerror(errno));
    return TC_OK;
}
