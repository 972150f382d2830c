/* MaxSim kernels that score codes directly: uniembed.core.codecs calls them (never directly).
 *
 * Every kernel computes, for the documents [first, last) of a ragged corpus (document d is the code
 * rows offsets[d] .. offsets[d+1]), out[d] = sum over query tokens i of max over the document's rows
 * j of est(q_i, row_j), where est is the codec's estimate of the dot product:
 *
 *   maxsim_f16   rows are float16 (dim values): the exact dot product in float32;
 *   maxsim_i8    rows are dim int8 + a float32 scale: int8 dot products with an int8 query;
 *   maxsim_bits  rows hold 1 or 2 bit vectors, a float16 factor and optionally a uint16 centroid
 *                id: popcounts against a query quantised to 4 bit-planes (binary, residual).
 *
 * Each has an AVX-512 path (function-level target attributes, chosen at run time with
 * __builtin_cpu_supports) and a portable C path with the same arithmetic; `portable=1` forces the
 * latter (the tests compare the two). The GIL is released while a kernel runs, so Python threads
 * split the documents between cores. Rows are scored in tiles of 16 (8 for bits) that may span
 * documents: each tile's lanes are folded into per-document running maxima with lane masks.
 * `binary_encode` is the binary codec's encoding pass (signs, Walsh-Hadamard transform, sign bits,
 * factor and error norm, float16 or float32 rows), `int8_encode` the int8 codec's (per-row scale, rounding);
 * `any_nonfinite` the finiteness check of every edge;
 * `to_half` the float32 -> float16 rounding of core.vectors.to_float16.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(UE_NO_SIMD)
#define UE_X86 1
#ifndef F16_AHEAD
#define F16_AHEAD 32
#endif
#include <immintrin.h>
#define TARGET_F16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,avx2")))
#define TARGET_I8 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,avx2")))
#define TARGET_BITS \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq,f16c,fma,avx2")))
#else
#define UE_X86 0
#endif

/* ------------------------------------------------------------------ helpers */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int shift = 0;
            while (!(mantissa & 0x400u)) {
                mantissa <<= 1;
                shift++;
            }
            mantissa &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - shift + 1) << 23) | (mantissa << 13);
        }
    } else if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static int popcount64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((x * 0x0101010101010101ull) >> 56);
#endif
}

#if UE_X86 /* helpers of the SIMD paths only */
static void *aligned_buffer(size_t bytes, void **base) {
    *base = malloc(bytes + 64);
    if (*base == NULL) return NULL;
    return (void *)(((uintptr_t)*base + 63) & ~(uintptr_t)63);
}

/* A document's share of one tile: which lanes are its rows, and whether it ends in the tile. */
typedef struct {
    int64_t doc;
    uint32_t mask;
    int ends;
} segment_t;

/* The segments of the tile of rows [start, start + n), from document *doc on (advanced past the
   documents that end in the tile). */
static int tile_segments(const int64_t *offsets, int64_t *doc, int64_t last, int64_t start, int n,
                         segment_t *segments) {
    int count = 0;
    int64_t d = *doc;
    while (d < last && offsets[d] < start + n) {
        int64_t a = offsets[d] > start ? offsets[d] : start;
        int64_t b = offsets[d + 1] < start + n ? offsets[d + 1] : start + n;
        uint32_t upto_b = (uint32_t)((1ull << (b - start)) - 1);
        uint32_t upto_a = (uint32_t)((1ull << (a - start)) - 1);
        int ends = offsets[d + 1] <= start + n;
        segments[count].doc = d;
        segments[count].mask = upto_b & ~upto_a;
        segments[count].ends = ends;
        count++;
        if (!ends) break;
        d++;
    }
    *doc = d;
    return count;
}
#endif

/* Ask for the 16 rows from `from` (up to `end`) ahead of their use: the kernels stream the codes
   once, and the hardware prefetcher alone leaves the loads of each tile waiting on memory. */
static inline void prefetch_rows(const uint8_t *codes, int64_t stride, int64_t from, int64_t end) {
#if defined(__GNUC__) || defined(__clang__)
    if (from >= end) return;
    int64_t stop = from + 16 < end ? from + 16 : end;
    const uint8_t *first = codes + from * stride, *last = codes + stop * stride;
    for (const uint8_t *p = first; p < last; p += 64) __builtin_prefetch(p, 0, 3);
#else
    (void)codes, (void)stride, (void)from, (void)end;
#endif
}

static int cpu_has(int feature) {
#if UE_X86
    __builtin_cpu_init();
    switch (feature) {
        case 0:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
        case 1:
            return cpu_has(0) && __builtin_cpu_supports("avx512vnni");
        case 2:
            return cpu_has(0) && __builtin_cpu_supports("avx512vpopcntdq");
    }
#endif
    (void)feature;
    return 0;
}

/* ------------------------------------------------------------------ float16 */

typedef struct {
    const float *query; /* (q, dim) */
    int q, dim;
    const uint8_t *codes;
    int64_t stride; /* bytes per row */
    const int64_t *offsets;
    int64_t first, last;
    float *out;
} f16_args;

static int f16_portable(const f16_args *a) {
    int q = a->q, dim = a->dim;
    float *row = malloc(sizeof(float) * (size_t)dim);
    float *best = malloc(sizeof(float) * (size_t)q);
    if (row == NULL || best == NULL) {
        free(row);
        free(best);
        return -1;
    }
    for (int64_t d = a->first; d < a->last; d++) {
        for (int i = 0; i < q; i++) best[i] = -INFINITY;
        for (int64_t r = a->offsets[d]; r < a->offsets[d + 1]; r++) {
            const uint8_t *code = a->codes + r * a->stride;
            for (int k = 0; k < dim; k++) {
                uint16_t h;
                memcpy(&h, code + 2 * k, 2);
                row[k] = half_to_float(h);
            }
            for (int i = 0; i < q; i++) {
                const float *qi = a->query + (size_t)i * dim;
                float dot = 0.0f;
                for (int k = 0; k < dim; k++) dot += qi[k] * row[k];
                if (dot > best[i]) best[i] = dot;
            }
        }
        float total = 0.0f;
        for (int i = 0; i < q; i++) total += best[i];
        a->out[d] = total;
    }
    free(row);
    free(best);
    return 0;
}

#if UE_X86
/* Transpose a 16x16 block of 32-bit values held in r[0..15] (row = token) so that r[k] holds
   element k of the 16 tokens; one copy per target (always inlined: r stays in registers). */
#define TRANSPOSE16_BODY \
    __m512 t[16], u[16]; \
    for (int i = 0; i < 8; i++) { \
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]); \
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]); \
    } \
    for (int i = 0; i < 4; i++) { \
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]); \
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), e = _mm512_castps_pd(t[4 * i + 3]); \
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)); \
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)); \
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e)); \
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e)); \
    } \
    for (int c = 0; c < 4; c++) { \
        __m512 v = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44); \
        __m512 v2 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE); \
        __m512 w = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44); \
        __m512 w2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE); \
        r[c] = _mm512_shuffle_f32x4(v, w, 0x88); \
        r[4 + c] = _mm512_shuffle_f32x4(v, w, 0xDD); \
        r[8 + c] = _mm512_shuffle_f32x4(v2, w2, 0x88); \
        r[12 + c] = _mm512_shuffle_f32x4(v2, w2, 0xDD); \
    }
#define TRANSPOSE16(TARGET, NAME) \
    TARGET static inline __attribute__((always_inline)) void NAME(__m512 r[16]) { TRANSPOSE16_BODY }
TRANSPOSE16(TARGET_F16, transpose16)
TRANSPOSE16(TARGET_I8, transpose16_i8)

/* Rows [start, start + n) (n <= 16) of float16 codes → tile[k * ld + lane] float32, dims padded
   with zeros to dim_pad (a multiple of 16), lanes n..15 zero. */
TARGET_F16 static void f16_tile(const f16_args *a, int64_t start, int n, int dim_pad, float *tile,
                                int ld) {
    __m512 r[16];
    const uint8_t *base = a->codes + start * a->stride;
    const int64_t stride = a->stride;
    int full = a->dim / 16 * 16;
    if (n == 16) { /* the common case: plain loads, one pointer walking down the rows */
        for (int kb = 0; kb < full; kb += 16) {
            const uint8_t *p = base + 2 * kb;
            _Pragma("GCC unroll 16") for (int lane = 0; lane < 16; lane++) {
                r[lane] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
                p += stride;
            }
            transpose16(r);
            _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++)
                _mm512_store_ps(tile + (size_t)(kb + k) * ld, r[k]);
        }
    }
    for (int kb = n == 16 ? full : 0; kb < dim_pad; kb += 16) {
        int left = a->dim - kb;
        __mmask16 keep = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        for (int lane = 0; lane < 16; lane++)
            r[lane] = lane < n ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                                     keep, base + lane * stride + 2 * kb))
                               : _mm512_setzero_ps();
        transpose16(r);
        for (int k = 0; k < 16; k++) _mm512_store_ps(tile + (size_t)(kb + k) * ld, r[k]);
    }
}

/* One group of G query tokens (packed[k * G + g]) against a tile of 32 rows (two halves of 16
   lanes, tile[k * 32 ..]): each broadcast query value feeds two FMAs, so a query load serves 32
   rows; then folded into running[g * 16 ..] per segment (lane masks of 32 bits); a document's
   total for this group is added to out when it ends. */
#define F16_GROUP(G)                                                                               \
    TARGET_F16 static void f16_group_##G(const float *tile, const float *packed, int dim_pad,      \
                                         float *running, const segment_t *segments, int count,     \
                                         float *out) {                                             \
        __m512 lo[G], hi[G];                                                                       \
        _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                     \
            lo[g] = _mm512_setzero_ps();                                                           \
            hi[g] = _mm512_setzero_ps();                                                           \
        }                                                                                          \
        for (int k = 0; k < dim_pad; k++) {                                                        \
            __m512 d0 = _mm512_load_ps(tile + (size_t)k * 32);                                     \
            __m512 d1 = _mm512_load_ps(tile + (size_t)k * 32 + 16);                                \
            const float *p = packed + (size_t)k * G;                                               \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                 \
                __m512 b = _mm512_set1_ps(p[g]);                                                   \
                lo[g] = _mm512_fmadd_ps(b, d0, lo[g]);                                             \
                hi[g] = _mm512_fmadd_ps(b, d1, hi[g]);                                             \
            }                                                                                      \
        }                                                                                          \
        for (int s = 0; s < count; s++) {                                                          \
            __mmask16 m0 = (__mmask16)(segments[s].mask & 0xffffu);                                \
            __mmask16 m1 = (__mmask16)(segments[s].mask >> 16);                                    \
            float total = 0.0f;                                                                    \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                 \
                __m512 run = _mm512_load_ps(running + g * 16);                                     \
                run = _mm512_mask_max_ps(run, m0, run, lo[g]);                                     \
                run = _mm512_mask_max_ps(run, m1, run, hi[g]);                                     \
                if (segments[s].ends) {                                                            \
                    total += _mm512_reduce_max_ps(run);                                            \
                    run = _mm512_set1_ps(-INFINITY);                                               \
                }                                                                                  \
                _mm512_store_ps(running + g * 16, run);                                            \
            }                                                                                      \
            if (segments[s].ends) out[segments[s].doc] += total;                                   \
        }                                                                                          \
    }

F16_GROUP(1)
F16_GROUP(2)
F16_GROUP(3)
F16_GROUP(4)
F16_GROUP(5)
F16_GROUP(6)
F16_GROUP(7)
F16_GROUP(8)
F16_GROUP(9)
F16_GROUP(10)
F16_GROUP(11)
F16_GROUP(12)
F16_GROUP(13)
F16_GROUP(14)

#define F16_MAX_GROUP 14 /* 2 × 14 accumulators + 2 rows + 1 broadcast: 31 of 32 zmm */
typedef void (*f16_group_fn)(const float *, const float *, int, float *, const segment_t *, int,
                             float *);
static const f16_group_fn F16_GROUPS[F16_MAX_GROUP + 1] = {
    NULL,         f16_group_1,  f16_group_2,  f16_group_3,  f16_group_4,
    f16_group_5,  f16_group_6,  f16_group_7,  f16_group_8,  f16_group_9,
    f16_group_10, f16_group_11, f16_group_12, f16_group_13, f16_group_14};

/* Query tokens split into groups of at most `most`, as even as possible. */
static int query_groups(int q, int most, int *starts, int *sizes) {
    int groups = (q + most - 1) / most;
    int at = 0;
    for (int k = 0; k < groups; k++) {
        int size = (q - at) / (groups - k);
        starts[k] = at;
        sizes[k] = size;
        at += size;
    }
    return groups;
}

TARGET_F16 static int f16_avx512(const f16_args *a) {
    int q = a->q, dim_pad = (a->dim + 15) / 16 * 16;
    int starts[128], sizes[128];
    if (q > F16_MAX_GROUP * 128) return -2;
    int groups = query_groups(q, F16_MAX_GROUP, starts, sizes);
    void *base_tile, *base_packed, *base_running;
    float *tile = aligned_buffer(sizeof(float) * 32 * (size_t)dim_pad, &base_tile);
    float *packed = aligned_buffer(sizeof(float) * (size_t)dim_pad * q, &base_packed);
    float *running = aligned_buffer(sizeof(float) * 16 * (size_t)q, &base_running);
    if (tile == NULL || packed == NULL || running == NULL) {
        free(base_tile);
        free(base_packed);
        free(base_running);
        return -1;
    }
    for (int k = 0; k < groups; k++) { /* packed group k: [dim_pad][size], zero past dim */
        float *p = packed + (size_t)starts[k] * dim_pad;
        for (int kk = 0; kk < dim_pad; kk++)
            for (int g = 0; g < sizes[k]; g++)
                p[(size_t)kk * sizes[k] + g] =
                    kk < a->dim ? a->query[(size_t)(starts[k] + g) * a->dim + kk] : 0.0f;
    }
    for (int i = 0; i < 16 * q; i++) running[i] = -INFINITY;
    for (int64_t d = a->first; d < a->last; d++) a->out[d] = 0.0f;
    segment_t segments[33];
    int64_t doc = a->first, end = a->offsets[a->last];
    for (int64_t start = a->offsets[a->first]; start < end; start += 32) {
        int n = end - start < 32 ? (int)(end - start) : 32;
        prefetch_rows(a->codes, a->stride, start + F16_AHEAD, end);
        prefetch_rows(a->codes, a->stride, start + F16_AHEAD + 16, end);
        f16_tile(a, start, n < 16 ? n : 16, dim_pad, tile, 32);
        f16_tile(a, start + 16, n > 16 ? n - 16 : 0, dim_pad, tile + 16, 32);
        int count = tile_segments(a->offsets, &doc, a->last, start, n, segments);
        for (int k = 0; k < groups; k++)
            F16_GROUPS[sizes[k]](tile, packed + (size_t)starts[k] * dim_pad, dim_pad,
                                 running + (size_t)starts[k] * 16, segments, count, a->out);
    }
    free(base_tile);
    free(base_packed);
    free(base_running);
    return 0;
}
#endif

/* ------------------------------------------------------------------ int8 */

typedef struct {
    const int8_t *query; /* (q, dim) int8, symmetric */
    const float *qscale; /* (q,) */
    int q, dim;
    const uint8_t *codes; /* rows: dim int8, then float32 scale */
    int64_t stride;
    const int64_t *offsets;
    int64_t first, last;
    float *out;
} i8_args;

static float row_scale(const uint8_t *code, int dim) {
    float s;
    memcpy(&s, code + dim, 4);
    return s;
}

static int i8_portable(const i8_args *a) {
    int q = a->q, dim = a->dim;
    float *best = malloc(sizeof(float) * (size_t)q);
    if (best == NULL) return -1;
    for (int64_t d = a->first; d < a->last; d++) {
        for (int i = 0; i < q; i++) best[i] = -INFINITY;
        for (int64_t r = a->offsets[d]; r < a->offsets[d + 1]; r++) {
            const uint8_t *code = a->codes + r * a->stride;
            const int8_t *row = (const int8_t *)code;
            float scale = row_scale(code, dim);
            for (int i = 0; i < q; i++) {
                const int8_t *qi = a->query + (size_t)i * dim;
                int32_t dot = 0;
                for (int k = 0; k < dim; k++) dot += (int32_t)qi[k] * (int32_t)row[k];
                float value = (float)dot * scale;
                if (value > best[i]) best[i] = value;
            }
        }
        float total = 0.0f;
        for (int i = 0; i < q; i++) total += a->qscale[i] * best[i];
        a->out[d] = total;
    }
    free(best);
    return 0;
}

#if UE_X86
/* Rows [start, start + n) → tile[k4 * 16 + lane] = the 4 bytes of dims 4k4..4k4+3 of row `lane`,
   biased to unsigned (x + 128, for vpdpbusd); scales[lane] the row scales (0 past n). */
TARGET_I8 static void i8_tile(const i8_args *a, int64_t start, int n, int dim_pad,
                              int32_t *tile, float *scales) {
    __m512 r[16];
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int kb = 0; kb < dim_pad; kb += 64) {
        int left = a->dim - kb;
        __mmask64 keep = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
        for (int lane = 0; lane < 16; lane++) {
            if (lane < n) {
                const uint8_t *code = a->codes + (start + lane) * a->stride + kb;
                __m512i v = _mm512_maskz_loadu_epi8(keep, code);
                r[lane] = _mm512_castsi512_ps(_mm512_xor_si512(v, bias));
            } else {
                r[lane] = _mm512_castsi512_ps(bias);
            }
        }
        transpose16_i8(r);
        for (int k = 0; k < 16; k++)
            _mm512_store_si512((void *)(tile + (size_t)(kb / 4 + k) * 16),
                               _mm512_castps_si512(r[k]));
    }
    for (int lane = 0; lane < 16; lane++)
        scales[lane] = lane < n ? row_scale(a->codes + (start + lane) * a->stride, a->dim) : 0.0f;
}

#define I8_GROUP(G)                                                                                \
    TARGET_I8 static void i8_group_##G(const int32_t *tile, const int32_t *packed, int words,      \
                                       const int32_t *bias, const float *scales, float *running,   \
                                       const float *qscale, const segment_t *segments, int count,  \
                                       float *out) {                                               \
        __m512i acc[G];                                                                            \
        _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_si512();      \
        for (int k = 0; k < words; k++) {                                                          \
            __m512i d = _mm512_load_si512((const void *)(tile + (size_t)k * 16));                  \
            const int32_t *p = packed + (size_t)k * G;                                             \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) acc[g] =                          \
                _mm512_dpbusd_epi32(acc[g], d, _mm512_set1_epi32(p[g]));                           \
        }                                                                                          \
        __m512 scale = _mm512_load_ps(scales);                                                     \
        __m512 value[G];                                                                           \
        _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) value[g] = _mm512_mul_ps(             \
            _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[g], _mm512_set1_epi32(bias[g]))), scale);      \
        for (int s = 0; s < count; s++) {                                                          \
            __mmask16 m = (__mmask16)segments[s].mask;                                             \
            float total = 0.0f;                                                                    \
            _Pragma("GCC unroll 16") for (int g = 0; g < G; g++) {                                 \
                __m512 run = _mm512_load_ps(running + g * 16);                                     \
                run = _mm512_mask_max_ps(run, m, run, value[g]);                                   \
                if (segments[s].ends) {                                                            \
                    total += qscale[g] * _mm512_reduce_max_ps(run);                                \
                    run = _mm512_set1_ps(-INFINITY);                                               \
                }                                                                                  \
                _mm512_store_ps(running + g * 16, run);                                            \
            }                                                                                      \
            if (segments[s].ends) out[segments[s].doc] += total;                                   \
        }                                                                                          \
    }

I8_GROUP(1)
I8_GROUP(2)
I8_GROUP(3)
I8_GROUP(4)
I8_GROUP(5)
I8_GROUP(6)
I8_GROUP(7)
I8_GROUP(8)
I8_GROUP(9)
I8_GROUP(10)
I8_GROUP(11)
I8_GROUP(12)
I8_GROUP(13)
I8_GROUP(14)
I8_GROUP(15)
I8_GROUP(16)

typedef void (*i8_group_fn)(const int32_t *, const int32_t *, int, const int32_t *, const float *,
                            float *, const float *, const segment_t *, int, float *);
static const i8_group_fn I8_GROUPS[17] = {
    NULL,         i8_group_1,  i8_group_2,  i8_group_3,  i8_group_4,  i8_group_5,
    i8_group_6,   i8_group_7,  i8_group_8,  i8_group_9,  i8_group_10, i8_group_11,
    i8_group_12,  i8_group_13, i8_group_14, i8_group_15, i8_group_16};

TARGET_I8 static int i8_avx512(const i8_args *a) {
    int q = a->q, dim_pad = (a->dim + 63) / 64 * 64, words = dim_pad / 4;
    int starts[64], sizes[64];
    if (q > 16 * 64) return -2;
    int groups = query_groups(q, 16, starts, sizes);
    void *base_tile, *base_packed, *base_running, *base_scales;
    int32_t *tile = aligned_buffer(sizeof(int32_t) * 16 * (size_t)words, &base_tile);
    int32_t *packed = aligned_buffer(sizeof(int32_t) * (size_t)words * q, &base_packed);
    float *running = aligned_buffer(sizeof(float) * 16 * (size_t)q, &base_running);
    float *scales = aligned_buffer(sizeof(float) * 16, &base_scales);
    int32_t *bias = malloc(sizeof(int32_t) * (size_t)q);
    if (tile == NULL || packed == NULL || running == NULL || scales == NULL || bias == NULL) {
        free(base_tile);
        free(base_packed);
        free(base_running);
        free(base_scales);
        free(bias);
        return -1;
    }
    for (int k = 0; k < groups; k++) { /* packed group k: [words][size] dwords, zero past dim */
        int32_t *p = packed + (size_t)starts[k] * words;
        for (int w = 0; w < words; w++)
            for (int g = 0; g < sizes[k]; g++) {
                uint8_t bytes[4];
                for (int b = 0; b < 4; b++) {
                    int kk = 4 * w + b;
                    bytes[b] = kk < a->dim
                                   ? (uint8_t)a->query[(size_t)(starts[k] + g) * a->dim + kk]
                                   : 0;
                }
                memcpy(p + (size_t)w * sizes[k] + g, bytes, 4);
            }
    }
    for (int i = 0; i < q; i++) { /* (x + 128) · q = x · q + 128 Σq */
        int32_t sum = 0;
        for (int k = 0; k < a->dim; k++) sum += a->query[(size_t)i * a->dim + k];
        bias[i] = 128 * sum;
    }
    for (int i = 0; i < 16 * q; i++) running[i] = -INFINITY;
    for (int64_t d = a->first; d < a->last; d++) a->out[d] = 0.0f;
    segment_t segments[17];
    int64_t doc = a->first, end = a->offsets[a->last];
    for (int64_t start = a->offsets[a->first]; start < end; start += 16) {
        int n = end - start < 16 ? (int)(end - start) : 16;
        i8_tile(a, start, n, dim_pad, tile, scales);
        int count = tile_segments(a->offsets, &doc, a->last, start, n, segments);
        for (int k = 0; k < groups; k++)
            I8_GROUPS[sizes[k]](tile, packed + (size_t)starts[k] * words, words, bias + starts[k],
                                scales, running + (size_t)starts[k] * 16, a->qscale + starts[k],
                                segments, count, a->out);
    }
    free(base_tile);
    free(base_packed);
    free(base_running);
    free(base_scales);
    free(bias);
    return 0;
}
#endif

/* ------------------------------------------------------------------ bits */

/* est(i, j) = lut[i, cid_j] + f_j · (Σ_v weights[v] · (lo_i · pc(b_jv) + delta_i · W_ijv) + c_i),
   W_ijv = Σ_p 2^p popcount(plane_ip & b_jv): the dot product of the query's 4-bit codes u_i with
   the bit vector b_jv, so that lo_i · pc + delta_i · W = <lo_i + delta_i u_i, b_jv>. */
typedef struct {
    const uint64_t *planes; /* (q, 4, words) */
    const float *lo, *delta, *constant; /* (q,) */
    int q, words, nvec;
    const float *weights; /* (nvec,) */
    const uint8_t *codes;
    int64_t stride;
    int64_t bits_at;    /* byte offset of bit vector 0; vector v at bits_at + v * words * 8 */
    int64_t factor_at;  /* byte offset of the float16 factor f_j */
    int64_t centroid_at; /* byte offset of the uint16 centroid id, or -1 */
    const float *lut;   /* (q, centroids) or NULL */
    int64_t centroids;
    const int64_t *offsets;
    int64_t first, last;
    float *out;
} bits_args;

static float row_factor(const bits_args *a, const uint8_t *code) {
    uint16_t h;
    memcpy(&h, code + a->factor_at, 2);
    return half_to_float(h);
}

static int row_centroid(const bits_args *a, const uint8_t *code) {
    uint16_t c;
    memcpy(&c, code + a->centroid_at, 2);
    return c;
}

static int bits_portable(const bits_args *a) {
    int q = a->q, words = a->words;
    float *best = malloc(sizeof(float) * (size_t)q);
    if (best == NULL) return -1;
    for (int64_t d = a->first; d < a->last; d++) {
        for (int i = 0; i < q; i++) best[i] = -INFINITY;
        for (int64_t r = a->offsets[d]; r < a->offsets[d + 1]; r++) {
            const uint8_t *code = a->codes + r * a->stride;
            float factor = row_factor(a, code);
            int centroid = a->centroid_at >= 0 ? row_centroid(a, code) : 0;
            for (int i = 0; i < q; i++) {
                float inner = a->constant[i];
                for (int v = 0; v < a->nvec; v++) {
                    int64_t pc = 0, w_sum = 0;
                    for (int w = 0; w < words; w++) {
                        uint64_t b;
                        memcpy(&b, code + a->bits_at + (int64_t)(v * words + w) * 8, 8);
                        pc += popcount64(b);
                        int64_t h = 0;
                        for (int p = 3; p >= 0; p--)
                            h = 2 * h + popcount64(b & a->planes[((size_t)i * 4 + p) * words + w]);
                        w_sum += h;
                    }
                    inner += a->weights[v] * (a->lo[i] * (float)pc + a->delta[i] * (float)w_sum);
                }
                float value = factor * inner;
                if (a->lut != NULL) value += a->lut[(size_t)i * a->centroids + centroid];
                if (value > best[i]) best[i] = value;
            }
        }
        float total = 0.0f;
        for (int i = 0; i < q; i++) total += best[i];
        a->out[d] = total;
    }
    free(best);
    return 0;
}

#if UE_X86
/* The kernel for `words` 64-bit words and `nvec` bit vectors per row: always inlined into the
   dispatcher below, so the common shapes (128-d: 2 words; 1 or 2 vectors) get constant loops. */
TARGET_BITS static inline __attribute__((always_inline)) int bits_body(const bits_args *a,
                                                                       int words, int nvec) {
    int q = a->q;
    void *base_tile, *base_running;
    /* tile: [v][w] zmm of 8 rows' words */
    __m512i *tile = aligned_buffer(sizeof(__m512i) * (size_t)nvec * words, &base_tile);
    float *running = aligned_buffer(sizeof(float) * 8 * (size_t)q, &base_running);
    if (tile == NULL || running == NULL) {
        free(base_tile);
        free(base_running);
        return -1;
    }
    for (int i = 0; i < 8 * q; i++) running[i] = -INFINITY;
    for (int64_t d = a->first; d < a->last; d++) a->out[d] = 0.0f;
    segment_t segments[9];
    __m256 pcs[4];
    uint16_t halves[8];
    int32_t cids[8];
    const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    int64_t doc = a->first, end = a->offsets[a->last];
    for (int64_t start = a->offsets[a->first]; start < end; start += 8) {
        int n = end - start < 8 ? (int)(end - start) : 8;
        __mmask8 valid = (__mmask8)((1u << n) - 1);
        const uint8_t *base = a->codes + start * a->stride;
        __m512i index = _mm512_mullo_epi64(lanes, _mm512_set1_epi64(a->stride));
        for (int v = 0; v < nvec; v++) {
            __m512i count = _mm512_setzero_si512();
            for (int w = 0; w < words; w++) {
                const uint8_t *at = base + a->bits_at + (int64_t)(v * words + w) * 8;
                __m512i b = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), valid, index,
                                                        (const void *)at, 1);
                tile[v * words + w] = b;
                count = _mm512_add_epi64(count, _mm512_popcnt_epi64(b));
            }
            pcs[v] = _mm512_cvtepi64_ps(count);
        }
        for (int lane = 0; lane < 8; lane++) {
            const uint8_t *code = base + (int64_t)lane * a->stride;
            halves[lane] = 0;
            cids[lane] = 0;
            if (lane < n) {
                memcpy(&halves[lane], code + a->factor_at, 2);
                if (a->centroid_at >= 0) cids[lane] = row_centroid(a, code);
            }
        }
        __m256 factor = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)halves));
        __m256i cid = _mm256_loadu_si256((const __m256i *)cids);
        int count = tile_segments(a->offsets, &doc, a->last, start, n, segments);
        for (int i = 0; i < q; i++) {
            __m256 inner = _mm256_set1_ps(a->constant[i]);
            for (int v = 0; v < nvec; v++) {
                __m512i sum = _mm512_setzero_si512();
                for (int w = 0; w < words; w++) {
                    __m512i b = tile[v * words + w];
                    const uint64_t *p = a->planes + (size_t)i * 4 * words + w;
                    __m512i h = _mm512_popcnt_epi64(
                        _mm512_and_si512(b, _mm512_set1_epi64((long long)p[3 * words])));
                    h = _mm512_add_epi64(
                        _mm512_add_epi64(h, h),
                        _mm512_popcnt_epi64(
                            _mm512_and_si512(b, _mm512_set1_epi64((long long)p[2 * words]))));
                    h = _mm512_add_epi64(
                        _mm512_add_epi64(h, h),
                        _mm512_popcnt_epi64(
                            _mm512_and_si512(b, _mm512_set1_epi64((long long)p[words]))));
                    h = _mm512_add_epi64(
                        _mm512_add_epi64(h, h),
                        _mm512_popcnt_epi64(_mm512_and_si512(b, _mm512_set1_epi64((long long)p[0]))));
                    sum = _mm512_add_epi64(sum, h);
                }
                float wv = a->weights[v];
                inner = _mm256_fmadd_ps(_mm256_set1_ps(wv * a->lo[i]), pcs[v], inner);
                inner = _mm256_fmadd_ps(_mm256_set1_ps(wv * a->delta[i]),
                                        _mm512_cvtepi64_ps(sum), inner);
            }
            __m256 value = _mm256_mul_ps(factor, inner);
            if (a->lut != NULL)
                value = _mm256_add_ps(
                    value, _mm256_i32gather_ps(a->lut + (size_t)i * a->centroids, cid, 4));
            float *run_at = running + (size_t)i * 8;
            __m256 run = _mm256_load_ps(run_at);
            for (int s = 0; s < count; s++) {
                run = _mm256_mask_max_ps(run, (__mmask8)segments[s].mask, run, value);
                if (segments[s].ends) {
                    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(run),
                                           _mm256_extractf128_ps(run, 1));
                    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
                    a->out[segments[s].doc] += _mm_cvtss_f32(m4);
                    run = _mm256_set1_ps(-INFINITY);
                }
            }
            _mm256_store_ps(run_at, run);
        }
    }
    free(base_tile);
    free(base_running);
    return 0;
}
TARGET_BITS static int bits_avx512(const bits_args *a) {
    if (a->nvec > 4) return -2;
    if (a->words == 2 && a->nvec == 1) return bits_body(a, 2, 1);
    if (a->words == 2 && a->nvec == 2) return bits_body(a, 2, 2);
    return bits_body(a, a->words, a->nvec);
}
#endif

/* ------------------------------------------------------------------ binary encode */

/* The binary codec's encoding pass over (n, dim) float16 or float32 rows: each row times the
   codec's signs, then (hadamard) the unnormalised Walsh-Hadamard transform in place (dim a power of
   two), then bit k of the result (value > 0) into out[r * stride + k / 8] (little-endian bit order,
   words of 64 zero-padded), then the row's tail (finish_binary_row) from its L1 and squared L2
   norms (16 float32 lanes of at most dim/16 terms each, summed in float64). Both paths run the
   same additions in the same order (the file is built without FMA contraction): equal. */
typedef struct {
    const void *rows;
    int half, dim, hadamard;
    const float *signs;
    uint8_t *out;
    int64_t stride, first, last;
} encode_args;

static uint16_t double_to_half(double value);
static double half_to_double(uint16_t h);

/* RaBitQ's two float16s after the sign bits, from the norms of the unnormalised transform: the
   factor f = |x|^2 / |x|_1 (0 for a zero row) rounded to nearest, and the error norm
   ||Px| - f| = sqrt(|x|^2 - 2 f |x|_1 + dim f^2) plus twice the float32 sums' rounding
   (dim 2^-24 (|x|^2 + 2 f |x|_1)), rounded up (a norm that goes into a bound must not shrink).
   The operations and their order are numpy's in tests/core/test_codecs.py: byte for byte. */
static void finish_binary_row(uint8_t *tail, double l1, double l2, int dim, int hadamard) {
    if (hadamard) { /* the norms of the normalised rotation: H / sqrt(dim) */
        l1 /= sqrt((double)dim);
        l2 /= (double)dim;
    }
    uint16_t factor = double_to_half(l1 > 0 ? l2 / l1 : 0.0);
    double f = half_to_double(factor);
    double rounding = ((double)dim * 0x1p-24) * (l2 + 2 * f * l1);
    double squared = l2 - 2 * f * l1 + (double)dim * f * f;
    double error = sqrt((squared > 0 ? squared : 0.0) + 2 * rounding);
    uint16_t bound = double_to_half(error);
    if (half_to_double(bound) < error) bound++; /* the next float16 up (error >= 0) */
    tail[0] = (uint8_t)factor;
    tail[1] = (uint8_t)(factor >> 8);
    tail[2] = (uint8_t)bound;
    tail[3] = (uint8_t)(bound >> 8);
}

static void sum_lanes(const float *a1, const float *a2, double *s1, double *s2) {
    double t1 = 0.0, t2 = 0.0;
    for (int lane = 0; lane < 16; lane++) {
        t1 += a1[lane];
        t2 += a2[lane];
    }
    *s1 = t1;
    *s2 = t2;
}

static void hadamard_in_place(float *x, int dim) {
    for (int h = 1; h < dim; h *= 2)
        for (int i = 0; i < dim; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

static void sign_bits_row(const float *x, int dim, int hadamard, uint8_t *code) {
    int words = (dim + 63) / 64;
    for (int w = 0; w < words; w++) {
        uint64_t word = 0;
        int end = dim < 64 * (w + 1) ? dim : 64 * (w + 1);
        for (int k = 64 * w; k < end; k++) word |= (uint64_t)(x[k] > 0.0f) << (k - 64 * w);
        for (int b = 0; b < 8; b++) code[8 * w + b] = (uint8_t)(word >> (8 * b));
    }
    float a1[16] = {0}, a2[16] = {0};
    int k = 0;
    for (; k + 16 <= dim; k += 16)
        for (int lane = 0; lane < 16; lane++) {
            a1[lane] += fabsf(x[k + lane]);
            a2[lane] += x[k + lane] * x[k + lane];
        }
    for (int lane = 0; k < dim; k++, lane++) {
        a1[lane] += fabsf(x[k]);
        a2[lane] += x[k] * x[k];
    }
    double l1, l2;
    sum_lanes(a1, a2, &l1, &l2);
    finish_binary_row(code + 8 * words, l1, l2, dim, hadamard);
}

static int encode_portable(const encode_args *a) {
    int dim = a->dim;
    float *x = malloc(sizeof(float) * (size_t)dim);
    if (x == NULL) return -1;
    for (int64_t r = a->first; r < a->last; r++) {
        for (int k = 0; k < dim; k++) {
            float value;
            if (a->half) {
                uint16_t h;
                memcpy(&h, (const uint8_t *)a->rows + 2 * (r * dim + k), 2);
                value = half_to_float(h);
            } else {
                value = ((const float *)a->rows)[r * dim + k];
            }
            x[k] = value * a->signs[k];
        }
        if (a->hadamard) hadamard_in_place(x, dim);
        sign_bits_row(x, dim, a->hadamard, a->out + r * a->stride);
    }
    free(x);
    return 0;
}

#if UE_X86
/* One butterfly stage of span h < 16 inside a register: lane i gets x[i] + x[i ^ h] where bit h
   of i is clear, x[i ^ h] - x[i] where it is set (a + b and a - b of the portable loop). */
TARGET_F16 static inline __m512 butterfly_lanes(__m512 v, int h) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i partner = _mm512_xor_si512(lane, _mm512_set1_epi32(h));
    __mmask16 upper = _mm512_test_epi32_mask(lane, _mm512_set1_epi32(h));
    __m512 other = _mm512_permutexvar_ps(partner, v);
    return _mm512_mask_sub_ps(_mm512_add_ps(v, other), upper, other, v);
}

/* The same pass for dim a multiple of 16 (a power of two >= 16 with hadamard). */
TARGET_F16 static int encode_avx512(const encode_args *a) {
    int dim = a->dim;
    void *base;
    float *x = aligned_buffer(sizeof(float) * (size_t)dim, &base);
    if (x == NULL) return -1;
    const __m512 zero = _mm512_setzero_ps();
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    float a1[16], a2[16];
    for (int64_t r = a->first; r < a->last; r++) {
        for (int k = 0; k < dim; k += 16) {
            __m512 v = a->half ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                     (const __m256i *)((const uint16_t *)a->rows + r * dim + k)))
                               : _mm512_loadu_ps((const float *)a->rows + r * dim + k);
            v = _mm512_mul_ps(v, _mm512_loadu_ps(a->signs + k));
            if (a->hadamard)
                for (int h = 1; h < 16; h *= 2) v = butterfly_lanes(v, h);
            _mm512_store_ps(x + k, v);
        }
        if (a->hadamard)
            for (int h = 16; h < dim; h *= 2)
                for (int i = 0; i < dim; i += 2 * h)
                    for (int j = i; j < i + h; j += 16) {
                        __m512 p = _mm512_load_ps(x + j), q = _mm512_load_ps(x + j + h);
                        _mm512_store_ps(x + j, _mm512_add_ps(p, q));
                        _mm512_store_ps(x + j + h, _mm512_sub_ps(p, q));
                    }
        uint8_t *code = a->out + r * a->stride;
        __m512 s1 = zero, s2 = zero;
        uint64_t word = 0;
        for (int k = 0; k < dim; k += 16) {
            __m512 v = _mm512_load_ps(x + k);
            word |= (uint64_t)_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ) << (k % 64);
            s1 = _mm512_add_ps(s1, _mm512_castsi512_ps(
                                       _mm512_and_si512(_mm512_castps_si512(v), magnitude)));
            s2 = _mm512_add_ps(s2, _mm512_mul_ps(v, v));
            if (k % 64 == 48 || k + 16 == dim) {
                for (int b = 0; b < 8; b++) code[k / 64 * 8 + b] = (uint8_t)(word >> (8 * b));
                word = 0;
            }
        }
        _mm512_storeu_ps(a1, s1);
        _mm512_storeu_ps(a2, s2);
        double l1, l2;
        sum_lanes(a1, a2, &l1, &l2);
        finish_binary_row(code + (dim + 63) / 64 * 8, l1, l2, dim, a->hadamard);
    }
    free(base);
    return 0;
}
#endif

/* ------------------------------------------------------------------ int8 encoding */

/* The int8 codec's code of each row: s = max|x| / 127 (float32), values rint(x / s) clamped to
   +-127 (0 for a zero row), then s as 4 little-endian bytes - numpy's arithmetic, byte for byte:
   a float32 division, rounding half to even. */
typedef struct {
    const void *rows;
    int half, dim;
    uint8_t *out;
    int64_t stride, first, last;
} i8_encode_args;

static float row_value(const i8_encode_args *a, int64_t r, int k) {
    if (!a->half) return ((const float *)a->rows)[r * a->dim + k];
    uint16_t h;
    memcpy(&h, (const uint8_t *)a->rows + 2 * (r * a->dim + k), 2);
    return half_to_float(h);
}

static void store_scale(uint8_t *code, int dim, float scale) { memcpy(code + dim, &scale, 4); }

static int i8_encode_portable(const i8_encode_args *a) {
    for (int64_t r = a->first; r < a->last; r++) {
        float top = 0.0f;
        for (int k = 0; k < a->dim; k++) top = fmaxf(top, fabsf(row_value(a, r, k)));
        float scale = top / 127.0f, safe = scale > 0.0f ? scale : 1.0f;
        uint8_t *code = a->out + r * a->stride;
        for (int k = 0; k < a->dim; k++) {
            float q = nearbyintf(row_value(a, r, k) / safe);
            q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
            code[k] = (uint8_t)(int8_t)q;
        }
        store_scale(code, a->dim, scale);
    }
    return 0;
}

#if UE_X86
/* The same for dim a multiple of 16: one pass loads the row (float16 converted)
   into an L1 buffer and takes its largest magnitude, a second divides, rounds and narrows. */
TARGET_F16 static int i8_encode_avx512(const i8_encode_args *a) {
    int dim = a->dim;
    void *base;
    float *x = aligned_buffer(sizeof(float) * (size_t)dim, &base);
    if (x == NULL) return -1;
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i high = _mm512_set1_epi32(127), low = _mm512_set1_epi32(-127);
    for (int64_t r = a->first; r < a->last; r++) {
        __m512 top = _mm512_setzero_ps();
        for (int k = 0; k < dim; k += 16) {
            __m512 v = a->half ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                     (const __m256i *)((const uint16_t *)a->rows + r * dim + k)))
                               : _mm512_loadu_ps((const float *)a->rows + r * dim + k);
            _mm512_store_ps(x + k, v);
            top = _mm512_max_ps(top, _mm512_castsi512_ps(
                                         _mm512_and_si512(_mm512_castps_si512(v), magnitude)));
        }
        float scale = _mm512_reduce_max_ps(top) / 127.0f;
        __m512 safe = _mm512_set1_ps(scale > 0.0f ? scale : 1.0f);
        uint8_t *code = a->out + r * a->stride;
        for (int k = 0; k < dim; k += 16) {
            __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_load_ps(x + k), safe),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512i v = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(q), low), high);
            _mm_storeu_si128((__m128i *)(code + k), _mm512_cvtepi32_epi8(v));
        }
        store_scale(code, dim, scale);
    }
    free(base);
    return 0;
}
#endif

/* ------------------------------------------------------------------ float32 -> float16 */

/* IEEE round to nearest even from float64 in one step, as numpy's casts and F16C's vcvtps2ph:
   overflow to infinity, subnormal halves kept, NaN quieted (its top payload bits kept). A float32
   goes through it exactly (float32 -> float64 is exact); a float64 rounded through float32 first
   could round twice. */
static uint16_t double_to_half(double value) {
    uint64_t x;
    memcpy(&x, &value, 8);
    uint16_t sign = (uint16_t)((x >> 48) & 0x8000u);
    uint64_t mantissa = x & 0xfffffffffffffull;
    int exponent = (int)((x >> 52) & 0x7ffu);
    if (exponent == 0x7ff)
        return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u | (uint16_t)(mantissa >> 42) : 0));
    int e = exponent - 1023 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    uint64_t half, rest, middle;
    if (e <= 0) { /* a subnormal half (or zero): the 53-bit significand shifted down */
        if (e < -10) return sign;
        uint64_t significand = mantissa | (1ull << 52);
        int shift = 43 - e;
        half = significand >> shift;
        rest = significand & ((1ull << shift) - 1);
        middle = 1ull << (shift - 1);
    } else {
        half = ((uint64_t)e << 10) | (mantissa >> 42);
        rest = mantissa & ((1ull << 42) - 1);
        middle = 1ull << 41;
    }
    if (rest > middle || (rest == middle && (half & 1u))) half++; /* may carry up to infinity */
    return (uint16_t)(sign | half);
}

static double half_to_double(uint16_t h) { return (double)half_to_float(h); }

static void to_half_portable(const float *in, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = double_to_half((double)in[i]);
}

#if UE_X86
TARGET_F16 static void to_half_avx512(const float *in, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(in + i),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    to_half_portable(in + i, out + i, n - i);
}
#endif

static void to_half(const float *in, uint16_t *out, int64_t n, int portable) {
#if UE_X86
    if (!portable && cpu_has(0)) {
        to_half_avx512(in, out, n);
        return;
    }
#endif
    (void)portable;
    to_half_portable(in, out, n);
}

/* ------------------------------------------------------------------ finiteness */

/* Whether any of n float16 (half) or float32 values is NaN or infinite: all exponent bits set. */
static int any_nonfinite(const void *values, int64_t n, int half) {
    unsigned bad = 0;
    if (half) {
        const uint16_t *h = values;
        for (int64_t i = 0; i < n; i++) bad |= (h[i] & 0x7c00u) == 0x7c00u;
    } else {
        const uint32_t *f = values;
        for (int64_t i = 0; i < n; i++) bad |= (f[i] & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

/* ------------------------------------------------------------------ Python edge */

static int check_docs(const Py_buffer *offsets, int64_t first, int64_t last, int64_t rows) {
    if (first < 0 || last < first || (int64_t)(offsets->len / 8) < last + 1) {
        PyErr_SetString(PyExc_ValueError, "document range outside offsets");
        return -1;
    }
    const int64_t *o = offsets->buf;
    if (o[first] < 0 || o[last] > rows) {
        PyErr_SetString(PyExc_ValueError, "offsets outside the code rows");
        return -1;
    }
    for (int64_t d = first; d < last; d++)
        if (o[d + 1] <= o[d]) {
            PyErr_SetString(PyExc_ValueError, "offsets must increase (documents of >= 1 row)");
            return -1;
        }
    return 0;
}

static void release(Py_buffer *buffers, int count) {
    for (int k = 0; k < count; k++)
        if (buffers[k].obj != NULL) PyBuffer_Release(&buffers[k]);
}

static PyObject *finish(int status, Py_buffer *buffers, int count) {
    release(buffers, count);
    if (status == -1) return PyErr_NoMemory();
    if (status == -2) {
        PyErr_SetString(PyExc_ValueError, "too many query tokens or bit vectors");
        return NULL;
    }
    if (status != 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_maxsim_f16(PyObject *self, PyObject *args) {
    Py_buffer b[4] = {{0}};
    int q, dim, portable;
    Py_ssize_t stride, first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iiy*ny*nnw*p", &b[0], &q, &dim, &b[1], &stride, &b[2], &first,
                          &last, &b[3], &portable)) {
        release(b, 4);
        return NULL;
    }
    int64_t rows = stride > 0 ? (int64_t)(b[1].len / stride) : 0;
    if (q < 1 || dim < 1 || stride < 2 * (Py_ssize_t)dim || b[0].len < (Py_ssize_t)q * dim * 4 ||
        b[3].len < last * 4) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 4);
    }
    if (check_docs(&b[2], first, last, rows) != 0) return finish(-3, b, 4);
    f16_args a = {b[0].buf, q, dim, b[1].buf, stride, b[2].buf, first, last, b[3].buf};
    int status;
    Py_BEGIN_ALLOW_THREADS
#if UE_X86
    if (!portable && cpu_has(0))
        status = f16_avx512(&a);
    else
#endif
        status = f16_portable(&a);
    Py_END_ALLOW_THREADS
    return finish(status, b, 4);
}

static PyObject *py_maxsim_i8(PyObject *self, PyObject *args) {
    Py_buffer b[5] = {{0}};
    int q, dim, portable;
    Py_ssize_t stride, first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*iiy*ny*nnw*p", &b[0], &b[1], &q, &dim, &b[2], &stride, &b[3],
                          &first, &last, &b[4], &portable)) {
        release(b, 5);
        return NULL;
    }
    int64_t rows = stride > 0 ? (int64_t)(b[2].len / stride) : 0;
    if (q < 1 || dim < 1 || stride < (Py_ssize_t)dim + 4 || b[0].len < (Py_ssize_t)q * dim ||
        b[1].len < (Py_ssize_t)q * 4 || b[4].len < last * 4) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 5);
    }
    if (check_docs(&b[3], first, last, rows) != 0) return finish(-3, b, 5);
    i8_args a = {b[0].buf, b[1].buf, q, dim, b[2].buf, stride, b[3].buf, first, last, b[4].buf};
    int status;
    Py_BEGIN_ALLOW_THREADS
#if UE_X86
    if (!portable && cpu_has(1))
        status = i8_avx512(&a);
    else
#endif
        status = i8_portable(&a);
    Py_END_ALLOW_THREADS
    return finish(status, b, 5);
}

static PyObject *py_maxsim_bits(PyObject *self, PyObject *args) {
    /* planes, lo, delta, constant, weights, q, words, codes, stride, bits_at, factor_at,
       centroid_at, lut, centroids, offsets, first, last, out, portable */
    Py_buffer b[9] = {{0}};
    int q, words, portable;
    Py_ssize_t stride, bits_at, factor_at, centroid_at, centroids, first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*iiy*nnnny*ny*nnw*p", &b[0], &b[1], &b[2], &b[3], &b[4],
                          &q, &words, &b[5], &stride, &bits_at, &factor_at, &centroid_at, &b[6],
                          &centroids, &b[7], &first, &last, &b[8], &portable)) {
        release(b, 9);
        return NULL;
    }
    int nvec = (int)(b[4].len / 4);
    int64_t rows = stride > 0 ? (int64_t)(b[5].len / stride) : 0;
    int ok = q >= 1 && words >= 1 && nvec >= 1 && nvec <= 4 &&
             b[0].len >= (Py_ssize_t)q * 4 * words * 8 && b[1].len >= q * 4 && b[2].len >= q * 4 &&
             b[3].len >= q * 4 && b[8].len >= last * 4 && bits_at >= 0 &&
             bits_at + (Py_ssize_t)nvec * words * 8 <= stride && factor_at >= 0 &&
             factor_at + 2 <= stride && centroid_at + 2 <= stride;
    if (ok && centroid_at >= 0) ok = centroids >= 1 && b[6].len >= (Py_ssize_t)q * centroids * 4;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 9);
    }
    if (check_docs(&b[7], first, last, rows) != 0) return finish(-3, b, 9);
    if (centroid_at >= 0) { /* every centroid id must index the table */
        const int64_t *o = b[7].buf;
        const uint8_t *codes = b[5].buf;
        for (int64_t r = o[first]; r < o[last]; r++) {
            uint16_t c;
            memcpy(&c, codes + r * stride + centroid_at, 2);
            if (c >= centroids) {
                PyErr_SetString(PyExc_ValueError, "a centroid id is outside the table");
                return finish(-3, b, 9);
            }
        }
    }
    bits_args a = {b[0].buf, b[1].buf, b[2].buf, b[3].buf, q, words, nvec, b[4].buf, b[5].buf,
                   stride, bits_at, factor_at, centroid_at,
                   centroid_at >= 0 ? (const float *)b[6].buf : NULL, centroids, b[7].buf, first,
                   last, b[8].buf};
    int status;
    Py_BEGIN_ALLOW_THREADS
#if UE_X86
    if (!portable && cpu_has(2))
        status = bits_avx512(&a);
    else
#endif
        status = bits_portable(&a);
    Py_END_ALLOW_THREADS
    return finish(status, b, 9);
}

static PyObject *py_binary_encode(PyObject *self, PyObject *args) {
    /* rows (n, dim) float16 or float32, half, signs (dim,) float32, hadamard, out, stride, first,
       last, portable */
    Py_buffer b[3] = {{0}};
    int half, hadamard, portable;
    Py_ssize_t stride, first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*py*pw*nnnp", &b[0], &half, &b[1], &hadamard, &b[2], &stride,
                          &first, &last, &portable)) {
        release(b, 3);
        return NULL;
    }
    int dim = (int)(b[1].len / 4);
    Py_ssize_t width = half ? 2 : 4;
    int64_t n = dim > 0 ? (int64_t)(b[0].len / (dim * width)) : 0;
    if (dim < 1 || b[0].len != (Py_ssize_t)n * dim * width || stride < (dim + 63) / 64 * 8 + 4 ||
        b[2].len < (Py_ssize_t)n * stride || first < 0 || last < first || last > n ||
        (hadamard && (dim & (dim - 1)) != 0)) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 3);
    }
    encode_args a = {b[0].buf, half, dim, hadamard, b[1].buf, b[2].buf, stride, first, last};
    int status;
    Py_BEGIN_ALLOW_THREADS
#if UE_X86
    if (!portable && dim % 16 == 0 && cpu_has(0))
        status = encode_avx512(&a);
    else
#endif
        status = encode_portable(&a);
    Py_END_ALLOW_THREADS
    return finish(status, b, 3);
}

static PyObject *py_int8_encode(PyObject *self, PyObject *args) {
    /* rows (n, dim) float16 or float32, half, dim, out, stride, first, last, portable */
    Py_buffer b[2] = {{0}};
    int half, dim, portable;
    Py_ssize_t stride, first, last;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*piw*nnnp", &b[0], &half, &dim, &b[1], &stride, &first, &last,
                          &portable)) {
        release(b, 2);
        return NULL;
    }
    Py_ssize_t width = half ? 2 : 4;
    int64_t n = dim > 0 ? (int64_t)(b[0].len / (dim * width)) : 0;
    if (dim < 1 || b[0].len != (Py_ssize_t)n * dim * width || stride < dim + 4 ||
        b[1].len < (Py_ssize_t)n * stride || first < 0 || last < first || last > n) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 2);
    }
    i8_encode_args a = {b[0].buf, half, dim, b[1].buf, stride, first, last};
    int status;
    Py_BEGIN_ALLOW_THREADS
#if UE_X86
    if (!portable && dim % 16 == 0 && cpu_has(0))
        status = i8_encode_avx512(&a);
    else
#endif
        status = i8_encode_portable(&a);
    Py_END_ALLOW_THREADS
    return finish(status, b, 2);
}

static PyObject *py_to_half(PyObject *self, PyObject *args) {
    /* values (n float32), out (n float16 as bytes), portable */
    Py_buffer b[2] = {{0}};
    int portable;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*p", &b[0], &b[1], &portable)) {
        release(b, 2);
        return NULL;
    }
    int64_t n = b[0].len / 4;
    if (b[0].len != n * 4 || b[1].len != n * 2) {
        PyErr_SetString(PyExc_ValueError, "bad shapes");
        return finish(-3, b, 2);
    }
    if (n > (1 << 18)) { /* long enough to let other threads run meanwhile */
        Py_BEGIN_ALLOW_THREADS
        to_half(b[0].buf, b[1].buf, n, portable);
        Py_END_ALLOW_THREADS
    } else {
        to_half(b[0].buf, b[1].buf, n, portable);
    }
    return finish(0, b, 2);
}

static PyObject *py_any_nonfinite(PyObject *self, PyObject *args) {
    /* values (contiguous float16 or float32 bytes), half */
    Py_buffer values = {0};
    int half, bad;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*p", &values, &half)) return NULL;
    int64_t n = values.len / (half ? 2 : 4);
    if (values.len < (1 << 20)) { /* microseconds: not worth waiting for the GIL again */
        bad = any_nonfinite(values.buf, n, half);
    } else {
        Py_BEGIN_ALLOW_THREADS
        bad = any_nonfinite(values.buf, n, half);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&values);
    return PyBool_FromLong(bad);
}

static PyObject *py_features(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("{s:O,s:O,s:O}", "float16", cpu_has(0) ? Py_True : Py_False, "int8",
                         cpu_has(1) ? Py_True : Py_False, "bits", cpu_has(2) ? Py_True : Py_False);
}

static PyMethodDef METHODS[] = {
    {"maxsim_f16", py_maxsim_f16, METH_VARARGS, "MaxSim of float16 rows (exact, float32)."},
    {"maxsim_i8", py_maxsim_i8, METH_VARARGS, "MaxSim of int8 rows with a per-row scale."},
    {"maxsim_bits", py_maxsim_bits, METH_VARARGS, "MaxSim of bit-vector codes by popcount."},
    {"binary_encode", py_binary_encode, METH_VARARGS, "The binary codec's encoding pass."},
    {"int8_encode", py_int8_encode, METH_VARARGS, "The int8 codec's encoding pass."},
    {"any_nonfinite", py_any_nonfinite, METH_VARARGS, "Whether a float16/32 buffer has NaN/inf."},
    {"to_half", py_to_half, METH_VARARGS, "float32 values rounded to float16 (nearest even)."},
    {"features", py_features, METH_NOARGS, "Which kernels have a SIMD path on this CPU."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&MODULE); }
