/* shapes.c: the flat shapes of tocha.data.shapes. Drawing: each shape is a signed distance
 * (a circle, or a polygon) and a pixel's coverage is clamp(0.5 - distance, 0, 1), which
 * antialiases edges at any size. Analysis: pixels unmixed against the background into palette
 * colors, 8-connected regions, and each shape kind fitted to a region by centroid and area. */
#include "shapes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VERTICES 12
#define MAX_SHAPES 64

/* ---- the kinds ---------------------------------------------------------------------------- */
static const char *const NAMES[TC_SHAPE_COUNT] = {"circle", "square", "triangle", "star", "cross", "diamond"};

const char *tc_shape_name(tc_shape_kind k) { return (unsigned)k < TC_SHAPE_COUNT ? NAMES[k] : "?"; }

int tc_shape_from_name(const char *name) {
    for (int k = 0; k < TC_SHAPE_COUNT; k++)
        if (strcmp(name, NAMES[k]) == 0) return k;
    return -1;
}

/* the vertices of a kind at r = 1 around (0, 0), y pointing down; 0 for the circle (radius 1).
 * Sizes are picked so that every kind spans about 2 x 2, and pointed kinds point up. */
static int unit_polygon(tc_shape_kind k, double v[MAX_VERTICES][2]) {
    const double pi = 3.14159265358979323846;
    switch (k) {
    case TC_SHAPE_SQUARE: {
        const double h = 0.85;
        const double sq[4][2] = {{-h, -h}, {h, -h}, {h, h}, {-h, h}};
        memcpy(v, sq, sizeof sq);
        return 4;
    }
    case TC_SHAPE_TRIANGLE: /* equilateral, circumradius 1.2: its centroid is its center */
        for (int i = 0; i < 3; i++) {
            double a = -pi / 2 + i * 2 * pi / 3;
            v[i][0] = 1.2 * cos(a);
            v[i][1] = 1.2 * sin(a);
        }
        return 3;
    case TC_SHAPE_STAR: /* five points; a fat inner radius keeps the points visible when small */
        for (int i = 0; i < 10; i++) {
            double a = -pi / 2 + i * pi / 5, rr = i % 2 ? 0.575 : 1.15;
            v[i][0] = rr * cos(a);
            v[i][1] = rr * sin(a);
        }
        return 10;
    case TC_SHAPE_CROSS: { /* a plus: arms 1.0 long, 0.34 half-wide */
        const double l = 1.0, w = 0.34;
        const double cr[12][2] = {{-w, -l}, {w, -l}, {w, -w}, {l, -w}, {l, w}, {w, w},
                                  {w, l}, {-w, l}, {-w, w}, {-l, w}, {-l, -w}, {-w, -w}};
        memcpy(v, cr, sizeof cr);
        return 12;
    }
    case TC_SHAPE_DIAMOND: {
        const double d = 1.15;
        const double dm[4][2] = {{0, -d}, {d, 0}, {0, d}, {-d, 0}};
        memcpy(v, dm, sizeof dm);
        return 4;
    }
    default: return 0;
    }
}

double tc_shape_unit_area(tc_shape_kind k) {
    double v[MAX_VERTICES][2];
    int n = unit_polygon(k, v);
    if (n == 0) return 3.14159265358979323846;
    double s = 0; /* shoelace */
    for (int i = 0, j = n - 1; i < n; j = i++) s += v[j][0] * v[i][1] - v[i][0] * v[j][1];
    return fabs(s) / 2;
}

void tc_shape_extent(tc_shape_kind k, double e[4]) {
    double v[MAX_VERTICES][2];
    int n = unit_polygon(k, v);
    if (n == 0) {
        e[0] = e[1] = -1;
        e[2] = e[3] = 1;
        return;
    }
    e[0] = e[1] = INFINITY;
    e[2] = e[3] = -INFINITY;
    for (int i = 0; i < n; i++) {
        e[0] = fmin(e[0], v[i][0]);
        e[1] = fmin(e[1], v[i][1]);
        e[2] = fmax(e[2], v[i][0]);
        e[3] = fmax(e[3], v[i][1]);
    }
}

/* ---- coverage ------------------------------------------------------------------------------
 * a shape placed in pixels: its vertices (or radius) and the pixel rectangle it can touch */
typedef struct {
    int nv;
    double v[MAX_VERTICES][2];
    double cx, cy, r;
    int64_t x0, y0, x1, y1; /* end exclusive, clipped to the image */
} placed;

static void place(placed *p, tc_shape_kind k, double cx, double cy, double r, int64_t h, int64_t w) {
    double e[4];
    p->nv = unit_polygon(k, p->v);
    for (int i = 0; i < p->nv; i++) {
        p->v[i][0] = cx + r * p->v[i][0];
        p->v[i][1] = cy + r * p->v[i][1];
    }
    p->cx = cx, p->cy = cy, p->r = r;
    tc_shape_extent(k, e);
    /* one pixel of margin for the antialiased rim */
    double x0 = floor(cx + r * e[0] - 1), y0 = floor(cy + r * e[1] - 1);
    double x1 = ceil(cx + r * e[2] + 1), y1 = ceil(cy + r * e[3] + 1);
    p->x0 = (int64_t)fmax(0, fmin((double)w, x0));
    p->y0 = (int64_t)fmax(0, fmin((double)h, y0));
    p->x1 = (int64_t)fmax((double)p->x0, fmin((double)w, x1));
    p->y1 = (int64_t)fmax((double)p->y0, fmin((double)h, y1));
}

/* signed distance to a polygon (negative inside): the nearest edge, and the sign from the
 * crossings of a horizontal ray (Inigo Quilez's sdPolygon) */
static double polygon_distance(const placed *p, double x, double y) {
    double d = INFINITY;
    int inside = 0;
    for (int i = 0, j = p->nv - 1; i < p->nv; j = i++) {
        double ex = p->v[j][0] - p->v[i][0], ey = p->v[j][1] - p->v[i][1];
        double wx = x - p->v[i][0], wy = y - p->v[i][1];
        double t = (wx * ex + wy * ey) / (ex * ex + ey * ey);
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        double bx = wx - ex * t, by = wy - ey * t;
        d = fmin(d, bx * bx + by * by);
        int c1 = y >= p->v[i][1], c2 = y < p->v[j][1], c3 = ex * wy > ey * wx;
        if ((c1 && c2 && c3) || (!c1 && !c2 && !c3)) inside = !inside;
    }
    return inside ? -sqrt(d) : sqrt(d);
}

/* how much of the pixel whose center is (x, y) the shape covers, its edge ramping over
 * `soft` pixels (1 draws it sharp) */
static double coverage(const placed *p, double x, double y, double soft) {
    double d = (p->nv ? polygon_distance(p, x, y) : hypot(x - p->cx, y - p->cy) - p->r) / soft;
    return d <= -0.5 ? 1 : d >= 0.5 ? 0 : 0.5 - d;
}

/* ---- drawing -------------------------------------------------------------------------------- */
int tc_shapes_render(tc_tensor *out, const float bg[3], float noise, uint64_t seed,
                     const tc_shape *shapes, int n) {
    int chw = out->dtype == TC_F32 && out->ndim == 3 && out->shape[0] == 3;
    int hwc = out->dtype == TC_U8 && out->ndim == 3 && out->shape[2] == 3;
    if (!chw && !hwc) {
        char s[64];
        tc_shape_str(out->ndim, out->shape, s, sizeof s);
        return tc_error("shapes.render: expected an f32 [3, H, W] or u8 [H, W, 3] image, got %s %s",
                        tc_dtype_name(out->dtype), s);
    }
    if (out->storage->device.type != TC_CPU || !tc_is_contiguous(out))
        return tc_error("shapes.render: the image must be a contiguous CPU tensor");
    if (n < 0 || n > MAX_SHAPES) return tc_error("shapes.render: %d shapes (at most %d)", n, MAX_SHAPES);
    int64_t h = chw ? out->shape[1] : out->shape[0], w = chw ? out->shape[2] : out->shape[1];
    placed ps[MAX_SHAPES];
    for (int i = 0; i < n; i++) {
        const tc_shape *s = &shapes[i];
        if ((unsigned)s->kind >= TC_SHAPE_COUNT || !(s->r > 0) || !isfinite(s->cx) || !isfinite(s->cy) || !isfinite(s->r))
            return tc_error("shapes.render: shape %d has kind %d, center (%g, %g), r %g", i + 1, (int)s->kind, s->cx, s->cy, s->r);
        place(&ps[i], s->kind, s->cx, s->cy, s->r, h, w);
    }
    /* uniform noise on [-a, a] has standard deviation a / sqrt(3) */
    const double amp = noise * sqrt(3.0), scale = 2.0 * amp / 4294967296.0;
    float *f = chw ? tc_data(out) : NULL;
    uint8_t *u = hwc ? tc_data(out) : NULL;
    for (int64_t y = 0; y < h; y++) {
        for (int64_t x = 0; x < w; x++) {
            double c[3] = {bg[0], bg[1], bg[2]};
            for (int i = 0; i < n; i++) {
                const placed *p = &ps[i];
                if (x < p->x0 || x >= p->x1 || y < p->y0 || y >= p->y1) continue;
                double a = coverage(p, x + 0.5, y + 0.5, 1);
                for (int k = 0; k < 3; k++) c[k] += a * (shapes[i].rgb[k] - c[k]);
            }
            uint32_t r[4] = {0, 0, 0, 0};
            if (amp > 0) tc_philox(seed, (uint64_t)(y * w + x), r);
            for (int k = 0; k < 3; k++) {
                double v = c[k] + (amp > 0 ? r[k] * scale - amp : 0);
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                if (f) f[(k * h + y) * w + x] = (float)(2 * v - 1);
                else u[(y * w + x) * 3 + k] = (uint8_t)lrint(v * 255);
            }
        }
    }
    out->storage->version++;
    return TC_OK;
}

/* ---- analysis ------------------------------------------------------------------------------- */
#define BACKGROUND (-2)
#define OTHER (-1)

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float clean(float v) { return isfinite(v) ? (v < 0 ? 0 : v > 1 ? 1 : v) : 0.5f; }

/* the per-channel median of the border pixels */
static void border_median(const float *px, int64_t h, int64_t w, float *buf, float bg[3]) {
    for (int k = 0; k < 3; k++) {
        int64_t n = 0;
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++)
                if (y == 0 || y == h - 1 || x == 0 || x == w - 1) buf[n++] = clean(px[(y * w + x) * 3 + k]);
        qsort(buf, (size_t)n, sizeof *buf, cmp_float);
        bg[k] = n % 2 ? buf[n / 2] : (buf[n / 2 - 1] + buf[n / 2]) / 2;
    }
}

/* p = bg + a (color - bg) + residual: a in [0, 1], and the residual's squared length */
static double unmix(const float p[3], const float bg[3], const float *color, double *a) {
    double d[3], q[3], dd = 0, dq = 0;
    for (int k = 0; k < 3; k++) {
        d[k] = color[k] - bg[k];
        q[k] = p[k] - bg[k];
        dd += d[k] * d[k];
        dq += d[k] * q[k];
    }
    double t = dd > 1e-12 ? dq / dd : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double res = 0;
    for (int k = 0; k < 3; k++) res += (q[k] - t * d[k]) * (q[k] - t * d[k]);
    *a = t;
    return res;
}

typedef struct {
    int64_t h, w;
    const float *bg, *palette;
    int npal;
    double max_res2;
    float *rgb;     /* [H, W, 3], cleaned */
    int *label;     /* BACKGROUND, OTHER or a palette index */
    float *alpha;   /* coverage by that label */
    int *comp;      /* region id, -1 for background */
    int64_t *stack; /* flood fill */
    float *soft;    /* coverage by the region being measured, 0 elsewhere */
} scene;

static void classify(scene *s) {
    for (int64_t i = 0; i < s->h * s->w; i++) {
        const float *p = s->rgb + i * 3;
        int best = -1;
        double best_res = INFINITY, best_a = 0, dist = 0;
        for (int k = 0; k < 3; k++) dist += (p[k] - s->bg[k]) * (p[k] - s->bg[k]);
        for (int c = 0; c < s->npal; c++) {
            double a, res = unmix(p, s->bg, s->palette + 3 * c, &a);
            if (res < best_res) best = c, best_res = res, best_a = a;
        }
        /* a pixel a palette color explains is that color's when at least half covered, else
         * a rim or background; one no color explains is foreground when far from bg */
        if (best_res <= s->max_res2) s->label[i] = best_a >= 0.5 ? best : BACKGROUND, s->alpha[i] = best_a >= 0.5 ? (float)best_a : 0;
        else if (dist > s->max_res2) s->label[i] = OTHER, s->alpha[i] = 1;
        else s->label[i] = BACKGROUND, s->alpha[i] = 0;
    }
}

/* floods the region of pixel `start` with id, filling in its pixel count and bounding box */
static void flood(scene *s, int64_t start, int id, tc_shapes_blob *b) {
    int64_t top = 0, h = s->h, w = s->w;
    int lab = s->label[start];
    s->comp[start] = id;
    s->stack[top++] = start;
    b->pixels = 0;
    b->x0 = w, b->y0 = h, b->x1 = 0, b->y1 = 0;
    while (top > 0) {
        int64_t i = s->stack[--top], y = i / w, x = i % w;
        b->pixels++;
        if (x < b->x0) b->x0 = x;
        if (y < b->y0) b->y0 = y;
        if (x + 1 > b->x1) b->x1 = x + 1;
        if (y + 1 > b->y1) b->y1 = y + 1;
        for (int64_t dy = -1; dy <= 1; dy++)
            for (int64_t dx = -1; dx <= 1; dx++) {
                int64_t yy = y + dy, xx = x + dx;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                int64_t j = yy * w + xx;
                if (s->comp[j] < 0 && s->label[j] == lab) {
                    s->comp[j] = id;
                    s->stack[top++] = j;
                }
            }
    }
}

/* fills s->soft over the region's box grown by one pixel: its own pixels' coverage, and for
 * background pixels touching it, their (partial) coverage by its color, so that area and
 * centroid count antialiased rims; returns the area and the centroid */
static void measure(scene *s, int id, tc_shapes_blob *b) {
    int64_t h = s->h, w = s->w;
    int64_t x0 = b->x0 > 0 ? b->x0 - 1 : 0, y0 = b->y0 > 0 ? b->y0 - 1 : 0;
    int64_t x1 = b->x1 < w ? b->x1 + 1 : w, y1 = b->y1 < h ? b->y1 + 1 : h;
    double area = 0, sx = 0, sy = 0;
    for (int64_t y = y0; y < y1; y++)
        for (int64_t x = x0; x < x1; x++) {
            int64_t i = y * w + x;
            double a = 0;
            if (s->comp[i] == id) a = s->alpha[i];
            else if (s->label[i] == BACKGROUND && b->color >= 0) {
                int touches = 0;
                for (int64_t dy = -1; dy <= 1 && !touches; dy++)
                    for (int64_t dx = -1; dx <= 1; dx++) {
                        int64_t yy = y + dy, xx = x + dx;
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w && s->comp[yy * w + xx] == id) { touches = 1; break; }
                    }
                if (touches && unmix(s->rgb + i * 3, s->bg, s->palette + 3 * b->color, &a) > s->max_res2) a = 0;
                if (a > 0.5) a = 0.5;
            }
            s->soft[i] = (float)a;
            area += a;
            sx += a * (x + 0.5);
            sy += a * (y + 0.5);
        }
    b->area = area;
    b->cx = area > 0 ? sx / area : (b->x0 + b->x1) / 2.0;
    b->cy = area > 0 ? sy / area : (b->y0 + b->y1) / 2.0;
}

/* soft intersection over union of the region (s->soft) and kind k placed at its centroid with
 * its area, its edge as sharp as drawn or softened as a blurry image's would be */
static double fit(const scene *s, const tc_shapes_blob *b, tc_shape_kind k, double soft) {
    double r = sqrt(b->area / tc_shape_unit_area(k));
    if (!(r >= 0.5)) return 0;
    placed p;
    place(&p, k, b->cx, b->cy, r, s->h, s->w);
    int64_t x0 = b->x0 > 0 ? b->x0 - 1 : 0, y0 = b->y0 > 0 ? b->y0 - 1 : 0;
    int64_t x1 = b->x1 < s->w ? b->x1 + 1 : s->w, y1 = b->y1 < s->h ? b->y1 + 1 : s->h;
    if (p.x0 < x0) x0 = p.x0;
    if (p.y0 < y0) y0 = p.y0;
    if (p.x1 > x1) x1 = p.x1;
    if (p.y1 > y1) y1 = p.y1;
    double inter = 0, uni = 0;
    for (int64_t y = y0; y < y1; y++)
        for (int64_t x = x0; x < x1; x++) {
            double a = s->soft[y * s->w + x];
            double t = (x >= p.x0 && x < p.x1 && y >= p.y0 && y < p.y1) ? coverage(&p, x + 0.5, y + 0.5, soft) : 0;
            inter += fmin(a, t);
            uni += fmax(a, t);
        }
    return uni > 0 ? inter / uni : 0;
}

static void clear_soft(scene *s, const tc_shapes_blob *b) {
    int64_t x0 = b->x0 > 0 ? b->x0 - 1 : 0, y0 = b->y0 > 0 ? b->y0 - 1 : 0;
    int64_t x1 = b->x1 < s->w ? b->x1 + 1 : s->w, y1 = b->y1 < s->h ? b->y1 + 1 : s->h;
    for (int64_t y = y0; y < y1; y++) memset(s->soft + y * s->w + x0, 0, (size_t)(x1 - x0) * sizeof(float));
}

static int cmp_area(const void *a, const void *b) {
    double x = ((const tc_shapes_blob *)a)->area, y = ((const tc_shapes_blob *)b)->area;
    return (x < y) - (x > y);
}

int tc_shapes_analyze(const tc_tensor *img, const float *palette, int npal, float max_residual,
                      int64_t min_pixels, float bg[3], tc_shapes_blob *out, int cap, int *count) {
    *count = 0;
    if (img->dtype != TC_F32 || img->ndim != 3 || img->shape[2] != 3 || img->shape[0] < 1 || img->shape[1] < 1) {
        char s[64];
        tc_shape_str(img->ndim, img->shape, s, sizeof s);
        return tc_error("shapes.analyze: expected an f32 [H, W, 3] image, got %s %s", tc_dtype_name(img->dtype), s);
    }
    if (img->storage->device.type != TC_CPU || !tc_is_contiguous(img))
        return tc_error("shapes.analyze: the image must be a contiguous CPU tensor");
    if (npal < 1) return tc_error("shapes.analyze: the palette is empty");
    int64_t h = img->shape[0], w = img->shape[1], n = h * w;
    scene s = {h, w, bg, palette, npal, (double)max_residual * max_residual, NULL, NULL, NULL, NULL, NULL, NULL};
    /* one block for the per-pixel buffers; blobs grow separately */
    size_t bytes = (size_t)n * (3 * sizeof(float) + 2 * sizeof(int) + 2 * sizeof(float) + sizeof(int64_t));
    char *block = malloc(bytes);
    tc_shapes_blob *blobs = NULL;
    size_t nblobs = 0, capblobs = 0;
    if (!block) return tc_error("shapes.analyze: out of memory for a %lld x %lld image", (long long)h, (long long)w);
    s.stack = (int64_t *)block;
    s.rgb = (float *)(s.stack + n);
    s.alpha = s.rgb + 3 * n;
    s.soft = s.alpha + n;
    s.label = (int *)(s.soft + n);
    s.comp = s.label + n;

    const float *src = tc_data(img);
    for (int64_t i = 0; i < 3 * n; i++) s.rgb[i] = clean(src[i]);
    border_median(s.rgb, h, w, s.alpha, bg); /* alpha serves as scratch before classify */
    classify(&s);
    memset(s.soft, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) s.comp[i] = -1;

    int id = 0, rc = TC_OK;
    for (int64_t i = 0; i < n; i++) {
        if (s.label[i] == BACKGROUND || s.comp[i] >= 0) continue;
        tc_shapes_blob b;
        memset(&b, 0, sizeof b);
        b.color = s.label[i];
        flood(&s, i, id, &b);
        if (b.pixels >= min_pixels) {
            measure(&s, id, &b);
            for (int k = 0; k < TC_SHAPE_COUNT; k++)
                for (int soft = 1; soft <= 3; soft++) b.iou[k] = fmax(b.iou[k], fit(&s, &b, (tc_shape_kind)k, soft));
            clear_soft(&s, &b);
            if (nblobs == capblobs) {
                size_t nc = capblobs ? 2 * capblobs : 16;
                tc_shapes_blob *nb = realloc(blobs, nc * sizeof *nb);
                if (!nb) {
                    rc = tc_error("shapes.analyze: out of memory");
                    break;
                }
                blobs = nb, capblobs = nc;
            }
            blobs[nblobs++] = b;
        }
        id++;
    }
    if (rc == TC_OK) {
        if (nblobs > 1) qsort(blobs, nblobs, sizeof *blobs, cmp_area);
        for (size_t k = 0; k < nblobs && (int)k < cap; k++) out[k] = blobs[k];
        *count = (int)nblobs;
    }
    free(blobs);
    free(block);
    return rc;
}
