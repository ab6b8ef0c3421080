/* unary.h: the unary ops' formulas, forward and derivative, written once for both devices:
 * the CPU kernels (core/cpu/elementwise.c, C) and the CUDA kernels (kernels/elementwise.cu,
 * C++) expand the same list, as both draw random numbers from core/philox.h.
 *
 * TC_UNARY_OPS(ENTRY, A, M) calls ENTRY(OP, fk, y = f(x), dk, uses, dy/dx) for each op, where
 *   A   the type the formulas compute in (float, or double for f64 and the generic paths):
 *       constants are cast to it, so float inputs compute in float on both devices;
 *   M   the math functions: M(exp)(v) is the caller's exp for A (TC_LIBM_F32 below gives
 *       expf, TC_LIBM_F64 exp; CUDA passes its overloads, the CPU's vectorised loops
 *       vecmath.h's TC_VECMATH, whose tc_expf vectorises);
 *   x, y, a, b  the input, the output f(x) and the op's scalar arguments, which the caller
 *       has in scope;
 *   fk, dk  V where the CPU's contiguous f32 loop vectorises the formula (it calls no math
 *       function but those core/cpu/vecmath.h provides: exp, log, log1p, tanh, erf, pow, sin,
 *       cos, sqrt, fabs; sin and cos beyond TC_TRIG_MAX are redone with libm), S where it does not;
 *       dk is N for an op with no derivative;
 *   uses  what the derivative reads besides the scalars: X (x), Y (y = f(x), saved by the
 *       forward) or C (neither), so an op saves only what its derivative needs. */
#ifndef TOCHA_UNARY_H
#define TOCHA_UNARY_H

#define TC_SQRT1_2 0.70710678118654752440   /* 1/sqrt(2) */
#define TC_SQRT2_PI 0.79788456080286535588  /* sqrt(2/pi) */
#define TC_INV_SQRT_2PI 0.39894228040143267794 /* 1/sqrt(2 pi) */

/* the math functions of the C library for float and for double, as M */
#define TC_LIBM_F32(fn) fn##f
#define TC_LIBM_F64(fn) fn

#define TC_SIGMOID_(M, v) (1 / (1 + M(exp)(-(v))))
/* silu and its derivative, also fused into other kernels (group norm's silu option) */
#define TC_SILU(M, v) ((v) / (1 + M(exp)(-(v))))
#define TC_SILU_GRAD(M, v) (TC_SIGMOID_(M, v) * (1 + (v) * (1 - TC_SIGMOID_(M, v))))
#define TC_TANH_GELU_(A, M, v) M(tanh)((A)TC_SQRT2_PI * ((v) + (A)0.044715 * (v) * (v) * (v)))

/* the activations that bias_act and geglu fuse (core/ops/act.c): TC_ACT_<OP>(A, M, v) is f(v)
 * and TC_ACT_<OP>_D(A, M, v, y) its derivative given v and y = f(v); the list below uses them */
#define TC_FUSED_ACTS(F) F(RELU) F(SILU) F(GELU) F(GELU_TANH) F(QUICK_GELU) F(SIGMOID) F(TANH)
#define TC_ACT_RELU(A, M, v) ((v) > 0 ? (v) : 0)
#define TC_ACT_RELU_D(A, M, v, y) ((v) > 0 ? 1 : 0)
#define TC_ACT_SILU(A, M, v) TC_SILU(M, v)
#define TC_ACT_SILU_D(A, M, v, y) TC_SILU_GRAD(M, v)
#define TC_ACT_GELU(A, M, v) ((A)0.5 * (v) * (1 + M(erf)((v) * (A)TC_SQRT1_2)))
#define TC_ACT_GELU_D(A, M, v, y) \
    ((A)0.5 * (1 + M(erf)((v) * (A)TC_SQRT1_2)) + (v) * M(exp)((A)-0.5 * (v) * (v)) * (A)TC_INV_SQRT_2PI)
#define TC_ACT_GELU_TANH(A, M, v) ((A)0.5 * (v) * (1 + TC_TANH_GELU_(A, M, v)))
#define TC_ACT_GELU_TANH_D(A, M, v, y)                                                            \
    ((A)0.5 * (1 + TC_TANH_GELU_(A, M, v)) +                                                      \
     (A)0.5 * (v) * (1 - TC_TANH_GELU_(A, M, v) * TC_TANH_GELU_(A, M, v)) * (A)TC_SQRT2_PI *      \
         (1 + 3 * (A)0.044715 * (v) * (v)))
#define TC_ACT_QUICK_GELU(A, M, v) ((v) / (1 + M(exp)((A)-1.702 * (v))))
#define TC_ACT_QUICK_GELU_D(A, M, v, y) \
    (TC_SIGMOID_(M, (A)1.702 * (v)) * (1 + (A)1.702 * (v) * (1 - TC_SIGMOID_(M, (A)1.702 * (v)))))
#define TC_ACT_SIGMOID(A, M, v) TC_SIGMOID_(M, v)
#define TC_ACT_SIGMOID_D(A, M, v, y) ((y) * (1 - (y)))
#define TC_ACT_TANH(A, M, v) M(tanh)(v)
#define TC_ACT_TANH_D(A, M, v, y) (1 - (y) * (y))

#define TC_UNARY_OPS(ENTRY, A, M)                                                                        \
    ENTRY(NEG,         V, -(x),                                  V, C, -1)                               \
    ENTRY(EXP,         V, M(exp)(x),                             V, Y, y)                                \
    ENTRY(LOG,         V, M(log)(x),                             V, X, 1 / (x))                          \
    ENTRY(SQRT,        V, M(sqrt)(x),                            V, Y, (A)0.5 / (y))                     \
    ENTRY(RSQRT,       V, 1 / M(sqrt)(x),                        V, Y, (A)-0.5 * (y) * (y) * (y))        \
    ENTRY(ABS,         V, M(fabs)(x),                            V, X, (x) > 0 ? 1 : (x) < 0 ? -1 : 0)   \
    ENTRY(SIN,         V, M(sin)(x),                             V, X, M(cos)(x))                        \
    ENTRY(COS,         V, M(cos)(x),                             V, X, -M(sin)(x))                       \
    ENTRY(TANH,        V, TC_ACT_TANH(A, M, x),                  V, Y, TC_ACT_TANH_D(A, M, x, y))        \
    ENTRY(SIGMOID,     V, TC_ACT_SIGMOID(A, M, x),               V, Y, TC_ACT_SIGMOID_D(A, M, x, y))     \
    ENTRY(RELU,        V, TC_ACT_RELU(A, M, x),                  V, X, TC_ACT_RELU_D(A, M, x, y))        \
    ENTRY(SILU,        V, TC_ACT_SILU(A, M, x),                  V, X, TC_ACT_SILU_D(A, M, x, y))        \
    ENTRY(GELU,        V, TC_ACT_GELU(A, M, x),                  V, X, TC_ACT_GELU_D(A, M, x, y))        \
    ENTRY(GELU_TANH,   V, TC_ACT_GELU_TANH(A, M, x),             V, X, TC_ACT_GELU_TANH_D(A, M, x, y))   \
    ENTRY(QUICK_GELU,  V, TC_ACT_QUICK_GELU(A, M, x),            V, X, TC_ACT_QUICK_GELU_D(A, M, x, y))  \
    ENTRY(SOFTPLUS,    V, (x) > 20 ? (x) : M(log1p)(M(exp)(x)),  V, X, (x) > 20 ? 1 : TC_SIGMOID_(M, x)) \
    ENTRY(SIGN,        S, (x) > 0 ? 1 : (x) < 0 ? -1 : 0,        N, C, 0)                                \
    ENTRY(RECIPROCAL,  V, 1 / (x),                               V, Y, -(y) * (y))                       \
    ENTRY(SQUARE,      V, (x) * (x),                             V, X, 2 * (x))                          \
    ENTRY(LOGICAL_NOT, S, (x) == 0,                              N, C, 0)                                \
    ENTRY(ISFINITE,    S, isfinite(x) ? 1 : 0,                   N, C, 0)                                \
    /* with scalar arguments a, b */                                                                     \
    ENTRY(ADD_SCALAR,  V, (x) + (a),                             V, C, 1)                                \
    ENTRY(MUL_SCALAR,  V, (x) * (a),                             V, C, a)                                \
    ENTRY(POW_SCALAR,  V, (a) == 2 ? (x) * (x) : M(pow)(x, a),                                           \
                          V, X, (a) == 0 ? 0 : (a) * M(pow)(x, (a) - 1))                                 \
    ENTRY(RPOW_SCALAR, V, M(pow)(a, x),                          V, Y, (y) * M(log)(a))                  \
    ENTRY(RSUB_SCALAR, V, (a) - (x),                             V, C, -1)                               \
    ENTRY(RDIV_SCALAR, V, (a) / (x),                             V, X, -(a) / ((x) * (x)))               \
    ENTRY(CLAMP,       S, isnan(x) ? (x) : (x) < (a) ? (a) : (x) > (b) ? (b) : (x),                      \
                          S, X, (x) >= (a) && (x) <= (b) ? 1 : 0)                                        \
    ENTRY(LEAKY_RELU,  V, (x) > 0 ? (x) : (x) * (a),             V, X, (x) > 0 ? 1 : (a))

/* selectors for building one kind of case from the list: TC_UNARY_IF_<flag>_<kind>(...) keeps
 * its arguments when the flag holds for that kind (VEC: vectorised; DIFF: has a derivative;
 * X, Y: the derivative reads x, y) and drops them otherwise */
#define TC_UNARY_IF_VEC_V(...) __VA_ARGS__
#define TC_UNARY_IF_VEC_S(...)
#define TC_UNARY_IF_VEC_N(...)
#define TC_UNARY_IF_DIFF_V(...) __VA_ARGS__
#define TC_UNARY_IF_DIFF_S(...) __VA_ARGS__
#define TC_UNARY_IF_DIFF_N(...)
#define TC_UNARY_IF_X_X(...) __VA_ARGS__
#define TC_UNARY_IF_X_Y(...)
#define TC_UNARY_IF_X_C(...)
#define TC_UNARY_IF_Y_X(...)
#define TC_UNARY_IF_Y_Y(...) __VA_ARGS__
#define TC_UNARY_IF_Y_C(...)

#endif
