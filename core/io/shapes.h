/* shapes.h: flat shapes for the synthetic captioned images of tocha.data.shapes: drawing them
 * antialiased from signed distances, and finding them again in an image (segmentation by
 * palette color, then each shape kind fitted to a region by its centroid and area). */
#ifndef TOCHA_SHAPES_H
#define TOCHA_SHAPES_H

#include "tocha.h"

typedef enum {
    TC_SHAPE_CIRCLE, TC_SHAPE_SQUARE, TC_SHAPE_TRIANGLE, TC_SHAPE_STAR, TC_SHAPE_CROSS,
    TC_SHAPE_DIAMOND, TC_SHAPE_COUNT
} tc_shape_kind;

const char *tc_shape_name(tc_shape_kind k);
int tc_shape_from_name(const char *name); /* -1 when unknown */
/* area, and extent {x0, y0, x1, y1} around the center, of a kind drawn at r = 1. Every kind
 * has its centroid at its center. */
double tc_shape_unit_area(tc_shape_kind k);
void tc_shape_extent(tc_shape_kind k, double e[4]);

typedef struct {
    tc_shape_kind kind;
    double cx, cy, r; /* pixels; pixel (x, y) spans [x, x + 1] x [y, y + 1] */
    float rgb[3];     /* [0, 1] */
} tc_shape;

/* draws n shapes in order over a plain background bg (RGB in [0, 1]) and adds uniform noise of
 * standard deviation `noise` keyed by seed. out: f32 [3, H, W] filled in [-1, 1], or u8
 * [H, W, 3]; contiguous, on the CPU. */
int tc_shapes_render(tc_tensor *out, const float bg[3], float noise, uint64_t seed,
                     const tc_shape *shapes, int n);

/* a connected region of one palette color */
typedef struct {
    int color;                    /* palette index; -1: foreground that fits no palette color */
    int64_t pixels;               /* pixels at least half covered */
    double area;                  /* coverage-weighted area, antialiased edges counted in part */
    double cx, cy;                /* coverage-weighted centroid, pixels */
    int64_t x0, y0, x1, y1;       /* bounding box of its pixels, end exclusive */
    double iou[TC_SHAPE_COUNT];   /* overlap with each kind placed at the centroid with the area */
} tc_shapes_blob;

/* segments img (f32 [H, W, 3] in [0, 1], contiguous, CPU) against npal palette colors: the
 * background is the median of the border pixels; each pixel is unmixed as bg + a (color - bg)
 * for its best-fitting palette color and is foreground when a >= 0.5 and the fit leaves at
 * most max_residual (RGB distance); pixels far from the background that fit no color form
 * regions of color -1. 8-connected regions of at least min_pixels pixels are written, largest
 * area first, up to cap of them, into out; *count receives how many there were in all. */
int tc_shapes_analyze(const tc_tensor *img, const float *palette, int npal, float max_residual,
                      int64_t min_pixels, float bg[3], tc_shapes_blob *out, int cap, int *count);

#endif
