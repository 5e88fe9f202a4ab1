"""The fused CPU kernels' C source: the selective scan forward and backward, the depthwise causal conv forward
and backward, and the dropout-add, each for float32 and float64 (`c_source()` is the whole file that
`selective_scan_cbuild` compiles). Kept apart so the algorithm can be read without the Python around it."""

from __future__ import annotations

import string

C_HEADER = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* exp for float32 that vectorises: range reduction x = k*ln2 + r (one fused multiply-add), a degree-6
   polynomial for exp(r) on |r| <= ln2/2, then 2^k through the exponent bits. Max relative error ~5e-7;
   exp(0) == 1 exactly, so delta == 0 leaves the state untouched. */
INLINE float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float k = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - k * 0.693147180559945309f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof(s));
    return p * s;
}

INLINE double exp_f64(double x) { return exp(x); }

/* Dropout's keep decision for element i: a counter-based generator (splitmix64's output function on
   seed + i * golden ratio), so any element's draw is computed independently, in any order or thread. The
   element is dropped with probability threshold / 2^32. */
INLINE int kept(uint64_t seed, long i, uint32_t threshold) {
    uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32) >= threshold;
}

#define W 16 /* channels per SIMD block */

/* The body of an entry point: return the OR of the error codes of CALL over the chunks k = 0 .. nchunks - 1
   (CALL reads k, e.g. bounds[k]). One chunk runs here without any OpenMP call, which is safe in a forked
   child; more run on the process's OpenMP pool. */
#define OVER_CHUNKS(CALL)                                                                              \
    do {                                                                                               \
        if (nchunks == 1) {                                                                            \
            const long k = 0;                                                                          \
            return CALL;                                                                               \
        }                                                                                              \
        int err = 0;                                                                                   \
        _Pragma("omp parallel for num_threads(nchunks) schedule(static, 1) reduction(| : err)")        \
        for (long k = 0; k < nchunks; ++k) err |= CALL;                                                \
        return err;                                                                                    \
    } while (0)

int ssm_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
"""

# $T is the C type, $S the suffix. The (batch, D, L) tensors u, dl, z, out, dout, du, ddl, dz may have any
# strides: each comes with a stride triple (batch, channel, time) in the array S. A: (D, N) and AT, dAT:
# (N, D); Bt, Ct, dBt, dCt: (batch, L, N) (time-major); Dv, dD: (D,); h0, last, dlast: (batch, D, N); all
# contiguous. The forward starts from h0 (NULL: zeros); last may alias h0 (each row reads its h0 before it
# writes its last), so neither is restrict. Rows i0..i1 of the flattened (batch*D) index are processed:
# aligned groups of W channels of one batch element go through the "block" kernels, which put the W channels
# in SIMD lanes (no horizontal sums in the time loop); leftover rows go through the "row" kernels, which
# vectorise over N.
# dAT, dBt, dCt, dD are private to the calling chunk (+=), so there are no races.
C_BODY = r"""
/* strides of tensor k in S: S[3k] batch, S[3k + 1] channel, S[3k + 2] time */
#define ROW(p, k, b, d) ((p) + (b) * S[3 * (k)] + (d) * S[3 * (k) + 1])
#define TS(k) (S[3 * (k) + 2])

/* forward tensors: 0 u, 1 dl, 2 z, 3 out. backward: 0 u, 1 dl, 2 z, 3 dout, 4 du, 5 ddl, 6 dz */

/* ---------------- row kernels: one channel, SIMD over N ---------------- */

/* One channel's recurrence from the states h[0 .. N): h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, and
   y_t = C_t h_t + D u_t (before the gate) into y[t * ys]. keep == 0 (forward): h is updated in place.
   keep == 1 (backward): h_t goes to h + (t + 1) * N and exp(dt_t A) to as + t * N. */
INLINE void scan_row_$S(const $T* restrict ui, long us, const $T* restrict di, long ds, const $T* restrict Ad,
                        const $T* restrict Bb, const $T* restrict Cb, const $T Dd, $T* h, $T* restrict as,
                        $T* restrict y, long ys, const int keep, long L, const long N) {
    for (long t = 0; t < L; ++t) {
        const $T dt = di[t * ds], ut = ui[t * us], x = dt * ut;
        const $T* restrict Bp = Bb + t * N;
        const $T* restrict Cp = Cb + t * N;
        const $T* hp = keep ? h + t * N : h;
        $T* hc = keep ? h + (t + 1) * N : h;
        $T acc = 0;
        for (long n = 0; n < N; ++n) {
            const $T a = exp_$S(dt * Ad[n]);
            if (keep) as[t * N + n] = a;
            const $T hn = a * hp[n] + x * Bp[n];
            hc[n] = hn;
            acc += hn * Cp[n];
        }
        y[t * ys] = acc + Dd * ut;
    }
}

INLINE void fwd_row_$S(const $T* restrict u, const $T* restrict dl, const $T* restrict A,
                       const $T* restrict Bt, const $T* restrict Ct, const $T* restrict Dv,
                       const $T* restrict z, const $T* h0, $T* restrict out, $T* last, const long* S,
                       long i, long D, long L, const long N) {
    $T h[N];
    const long b = i / D, d = i - (i / D) * D;
    const $T* restrict Bb = Bt + b * L * N;
    const $T* restrict Cb = Ct + b * L * N;
    const $T* restrict Ad = A + d * N;
    const $T* restrict ui = ROW(u, 0, b, d);
    const $T* restrict di = ROW(dl, 1, b, d);
    $T* restrict oi = ROW(out, 3, b, d);
    const long us = TS(0), ds = TS(1), os = TS(3);
    const $T Dd = Dv ? Dv[d] : ($T)0;
    for (long n = 0; n < N; ++n) h[n] = h0 ? h0[i * N + n] : ($T)0;
    scan_row_$S(ui, us, di, ds, Ad, Bb, Cb, Dd, h, NULL, oi, os, 0, L, N);
    if (z) {
        const $T* restrict zi = ROW(z, 2, b, d);
        const long zs = TS(2);
        for (long t = 0; t < L; ++t) oi[t * os] *= zi[t * zs] / (($T)1 + exp_$S(-zi[t * zs]));
    }
    if (last)
        for (long n = 0; n < N; ++n) last[i * N + n] = h[n];
}

/* work: (2L + 1) * N + L */
INLINE void bwd_row_$S(const $T* restrict u, const $T* restrict dl, const $T* restrict A,
                       const $T* restrict Bt, const $T* restrict Ct, const $T* restrict Dv,
                       const $T* restrict z, const $T* restrict dout, const $T* restrict dlast,
                       $T* restrict du, $T* restrict ddl, $T* restrict dAT, $T* restrict dBt,
                       $T* restrict dCt, $T* restrict dD, $T* restrict dz, $T* restrict work, const long* S,
                       long i, long D, long L, const long N) {
    $T* restrict hs = work;                  /* (L + 1) * N states, hs[0] = 0 */
    $T* restrict as = work + (L + 1) * N;    /* L * N decays exp(delta_t * A) */
    $T* restrict g = as + L * N;             /* L: y before the gate, then dL/dy before the gate */
    $T dh[N], dAacc[N];
    const long b = i / D, d = i - (i / D) * D;
    const $T* restrict Bb = Bt + b * L * N;
    const $T* restrict Cb = Ct + b * L * N;
    $T* restrict dBb = dBt + b * L * N;
    $T* restrict dCb = dCt + b * L * N;
    const $T* restrict Ad = A + d * N;
    const $T* restrict ui = ROW(u, 0, b, d);
    const $T* restrict di = ROW(dl, 1, b, d);
    const $T* restrict gi = ROW(dout, 3, b, d);
    $T* restrict dui = ROW(du, 4, b, d);
    $T* restrict ddi = ROW(ddl, 5, b, d);
    const long us = TS(0), ds = TS(1), gs = TS(3), dus = TS(4), dds = TS(5);
    const $T Dd = Dv ? Dv[d] : ($T)0;
    for (long n = 0; n < N; ++n) hs[n] = 0;
    scan_row_$S(ui, us, di, ds, Ad, Bb, Cb, Dd, hs, as, g, 1, 1, L, N);
    if (z) {
        const $T* restrict zi = ROW(z, 2, b, d);
        $T* restrict dzi = ROW(dz, 6, b, d);
        const long zs = TS(2), dzs = TS(6);
        for (long t = 0; t < L; ++t) {
            const $T zt = zi[t * zs], go = gi[t * gs];
            const $T s = ($T)1 / (($T)1 + exp_$S(-zt));
            dzi[t * dzs] = go * g[t] * s * (($T)1 + zt * (($T)1 - s));
            g[t] = go * zt * s;
        }
    } else {
        for (long t = 0; t < L; ++t) g[t] = gi[t * gs];
    }
    $T dDacc = 0;
    for (long n = 0; n < N; ++n) {
        dh[n] = dlast ? dlast[i * N + n] : ($T)0;
        dAacc[n] = 0;
    }
    for (long t = L - 1; t >= 0; --t) {
        const $T gt = g[t], dt = di[t * ds], ut = ui[t * us], x = dt * ut;
        const $T* restrict Bp = Bb + t * N;
        const $T* restrict Cp = Cb + t * N;
        $T* restrict dBp = dBb + t * N;
        $T* restrict dCp = dCb + t * N;
        const $T* restrict hp = hs + t * N;
        const $T* restrict hc = hs + (t + 1) * N;
        const $T* restrict ap = as + t * N;
        $T s1 = 0, s2 = 0;
        for (long n = 0; n < N; ++n) {
            const $T dhn = dh[n] + gt * Cp[n];
            dCp[n] += gt * hc[n];
            dBp[n] += dhn * x;
            s1 += dhn * Bp[n];
            const $T w = dhn * hp[n] * ap[n];
            s2 += w * Ad[n];
            dAacc[n] += w * dt;
            dh[n] = dhn * ap[n];
        }
        dui[t * dus] = dt * s1 + Dd * gt;
        ddi[t * dds] = ut * s1 + s2;
        dDacc += gt * ut;
    }
    for (long n = 0; n < N; ++n) dAT[n * D + d] += dAacc[n];
    if (dD) dD[d] += dDacc;
}

/* ---------------- block kernels: W channels of one batch element, SIMD over channels ---------------- */

/* copy W channels x L steps (strides cs, ts) into a time-major tile [L][W], and back */
INLINE void load_tile_$S($T* restrict tile, const $T* restrict src, long cs, long ts, long L) {
    if (cs == 1) {
        for (long t = 0; t < L; ++t)
            for (long l = 0; l < W; ++l) tile[t * W + l] = src[t * ts + l];
    } else {
        for (long l = 0; l < W; ++l)
            for (long t = 0; t < L; ++t) tile[t * W + l] = src[l * cs + t * ts];
    }
}

INLINE void store_tile_$S($T* restrict dst, const $T* restrict tile, long cs, long ts, long L) {
    if (cs == 1) {
        for (long t = 0; t < L; ++t)
            for (long l = 0; l < W; ++l) dst[t * ts + l] = tile[t * W + l];
    } else {
        for (long l = 0; l < W; ++l)
            for (long t = 0; t < L; ++t) dst[l * cs + t * ts] = tile[t * W + l];
    }
}

#define LOAD(tile, p, k) load_tile_$S(tile, ROW(p, k, b, d0), S[3 * (k) + 1], TS(k), L)
#define STORE(p, k, tile) store_tile_$S(ROW(p, k, b, d0), tile, S[3 * (k) + 1], TS(k), L)

/* The recurrence over W channels (time-major tiles ut, dt) from the states h[0 .. N*W): h_t = exp(dt_t A) h_{t-1}
   + dt_t u_t B_t, and y_t = C_t h_t + D u_t (before the gate) into yt. keep == 0 (forward): h is updated in
   place. keep == 1 (backward): h_t goes to h + (t + 1) * N * W and exp(dt_t A) to as + t * N * W. Both
   callers pass keep as a constant, so the compiler specialises each inlined copy. */
INLINE void scan_block_$S(const $T* restrict ut, const $T* restrict dt, const $T* restrict AT,
                          const $T* restrict Bb, const $T* restrict Cb, const $T* restrict Dd, $T* h,
                          $T* restrict as, $T* restrict yt, const int keep, long d0, long D, long L,
                          const long N) {
    for (long t = 0; t < L; ++t) {
        const $T* restrict ur = ut + t * W;
        const $T* restrict dr = dt + t * W;
        const $T* hp = keep ? h + t * N * W : h;
        $T* hc = keep ? h + (t + 1) * N * W : h;
        $T x[W], y[W];
        for (long l = 0; l < W; ++l) {
            x[l] = dr[l] * ur[l];
            y[l] = Dd[l] * ur[l];
        }
        for (long n = 0; n < N; ++n) {
            const $T bn = Bb[t * N + n], cn = Cb[t * N + n];
            const $T* restrict An = AT + n * D + d0;
            for (long l = 0; l < W; ++l) {
                const $T a = exp_$S(dr[l] * An[l]);
                if (keep) as[(t * N + n) * W + l] = a;
                const $T v = a * hp[n * W + l] + x[l] * bn;
                hc[n * W + l] = v;
                y[l] += v * cn;
            }
        }
        for (long l = 0; l < W; ++l) yt[t * W + l] = y[l];
    }
}

/* work: 4 * L * W */
INLINE void fwd_block_$S(const $T* restrict u, const $T* restrict dl, const $T* restrict AT,
                         const $T* restrict Bt, const $T* restrict Ct, const $T* restrict Dv,
                         const $T* restrict z, const $T* h0, $T* restrict out, $T* last,
                         $T* restrict work, const long* S, long b, long d0, long D, long L, const long N) {
    $T* restrict ut = work;
    $T* restrict dt = work + L * W;
    $T* restrict yt = work + 2 * L * W;
    $T* restrict zt = work + 3 * L * W;
    const long i0 = b * D + d0;
    const $T* restrict Bb = Bt + b * L * N;
    const $T* restrict Cb = Ct + b * L * N;
    LOAD(ut, u, 0);
    LOAD(dt, dl, 1);
    $T h[N * W], Dd[W];
    if (h0)
        for (long l = 0; l < W; ++l)
            for (long n = 0; n < N; ++n) h[n * W + l] = h0[(i0 + l) * N + n];
    else
        for (long k = 0; k < N * W; ++k) h[k] = 0;
    for (long l = 0; l < W; ++l) Dd[l] = Dv ? Dv[d0 + l] : ($T)0;
    scan_block_$S(ut, dt, AT, Bb, Cb, Dd, h, NULL, yt, 0, d0, D, L, N);
    if (z) {
        LOAD(zt, z, 2);
        for (long k = 0; k < L * W; ++k) yt[k] *= zt[k] / (($T)1 + exp_$S(-zt[k]));
    }
    STORE(out, 3, yt);
    if (last)
        for (long l = 0; l < W; ++l)
            for (long n = 0; n < N; ++n) last[(i0 + l) * N + n] = h[n * W + l];
}

/* work: (2 * (L + 1) * N + 7 * L) * W; dBl, dCl: lane accumulators [L][N][W] for batch element b */
INLINE void bwd_block_$S(const $T* restrict u, const $T* restrict dl, const $T* restrict AT,
                         const $T* restrict Bt, const $T* restrict Ct, const $T* restrict Dv,
                         const $T* restrict z, const $T* restrict dout, const $T* restrict dlast,
                         $T* restrict du, $T* restrict ddl, $T* restrict dAT, $T* restrict dBl,
                         $T* restrict dCl, $T* restrict dD, $T* restrict dz, $T* restrict work,
                         const long* S, long b, long d0, long D, long L, const long N) {
    $T* restrict hs = work;                       /* [L + 1][N][W] */
    $T* restrict as = hs + (L + 1) * N * W;       /* [L][N][W] (+ one spare row) */
    $T* restrict ut = as + (L + 1) * N * W;       /* [L][W] tiles */
    $T* restrict dt = ut + L * W;
    $T* restrict gt = dt + L * W;
    $T* restrict yt = gt + L * W;
    $T* restrict zt = yt + L * W;
    $T* restrict dut = zt + L * W;
    $T* restrict ddt = dut + L * W;
    const long i0 = b * D + d0;
    const $T* restrict Bb = Bt + b * L * N;
    const $T* restrict Cb = Ct + b * L * N;
    LOAD(ut, u, 0);
    LOAD(dt, dl, 1);
    LOAD(gt, dout, 3);
    $T Dd[W];
    for (long l = 0; l < W; ++l) Dd[l] = Dv ? Dv[d0 + l] : ($T)0;
    /* recompute the states (and y before the gate) */
    for (long k = 0; k < N * W; ++k) hs[k] = 0;
    scan_block_$S(ut, dt, AT, Bb, Cb, Dd, hs, as, yt, 1, d0, D, L, N);
    /* through the gate, out = y * silu(z): dz, and gt becomes dL/dy */
    if (z) {
        LOAD(zt, z, 2);
        for (long k = 0; k < L * W; ++k) {
            const $T zk = zt[k], go = gt[k];
            const $T s = ($T)1 / (($T)1 + exp_$S(-zk));
            zt[k] = go * yt[k] * s * (($T)1 + zk * (($T)1 - s)); /* zt now holds dz */
            gt[k] = go * zk * s;
        }
        STORE(dz, 6, zt);
    }
    /* reverse pass */
    $T dh[N * W], dAacc[N * W], dDacc[W];
    for (long l = 0; l < W; ++l) {
        dDacc[l] = 0;
        for (long n = 0; n < N; ++n) dh[n * W + l] = dlast ? dlast[(i0 + l) * N + n] : ($T)0;
    }
    for (long k = 0; k < N * W; ++k) dAacc[k] = 0;
    for (long t = L - 1; t >= 0; --t) {
        const $T* restrict gr = gt + t * W;
        const $T* restrict ur = ut + t * W;
        const $T* restrict dr = dt + t * W;
        $T x[W], s1[W], s2[W];
        for (long l = 0; l < W; ++l) {
            x[l] = dr[l] * ur[l];
            s1[l] = 0;
            s2[l] = 0;
        }
        for (long n = 0; n < N; ++n) {
            const $T bn = Bb[t * N + n], cn = Cb[t * N + n];
            const $T* restrict An = AT + n * D + d0;
            const $T* restrict hp = hs + (t * N + n) * W;
            const $T* restrict hc = hs + ((t + 1) * N + n) * W;
            const $T* restrict ap = as + (t * N + n) * W;
            $T* restrict dBp = dBl + (t * N + n) * W;
            $T* restrict dCp = dCl + (t * N + n) * W;
            $T* restrict dhn_ = dh + n * W;
            $T* restrict dAn = dAacc + n * W;
            for (long l = 0; l < W; ++l) {
                const $T dhn = dhn_[l] + gr[l] * cn;
                dCp[l] += gr[l] * hc[l];
                dBp[l] += dhn * x[l];
                s1[l] += dhn * bn;
                const $T w = dhn * hp[l] * ap[l];
                s2[l] += w * An[l];
                dAn[l] += w * dr[l];
                dhn_[l] = dhn * ap[l];
            }
        }
        for (long l = 0; l < W; ++l) {
            dut[t * W + l] = dr[l] * s1[l] + Dd[l] * gr[l];
            ddt[t * W + l] = ur[l] * s1[l] + s2[l];
            dDacc[l] += gr[l] * ur[l];
        }
    }
    STORE(du, 4, dut);
    STORE(ddl, 5, ddt);
    for (long n = 0; n < N; ++n)
        for (long l = 0; l < W; ++l) dAT[n * D + d0 + l] += dAacc[n * W + l];
    if (dD)
        for (long l = 0; l < W; ++l) dD[d0 + l] += dDacc[l];
}

#undef LOAD
#undef STORE

/* ---------------- drivers ---------------- */

INLINE int is_block_$S(long i, long i1, long D) {
    const long d = i % D;
    return (d % W == 0) && (d + W <= D) && (i + W <= i1);
}

INLINE void fwd_rows_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
                        const $T* Dv, const $T* z, const $T* h0, $T* out, $T* last, $T* work,
                        const long* S, long i0, long i1, long D, long L, const long N) {
    long i = i0;
    while (i < i1) {
        if (is_block_$S(i, i1, D)) {
            fwd_block_$S(u, dl, AT, Bt, Ct, Dv, z, h0, out, last, work, S, i / D, i % D, D, L, N);
            i += W;
        } else {
            fwd_row_$S(u, dl, A, Bt, Ct, Dv, z, h0, out, last, S, i, D, L, N);
            i += 1;
        }
    }
}

/* rows i0..i1 from h0 (NULL: zeros); float32 gets N == 16 as a constant (Mamba's default d_state: the
   states stay in registers) */
#if $SPECIALISE
#define FWD_ROWS(H0)                                                                                   \
    (N == 16 ? fwd_rows_$S(u, dl, A, AT, Bt, Ct, Dv, z, H0, out, last, work, S, i0, i1, D, L, 16) \
             : fwd_rows_$S(u, dl, A, AT, Bt, Ct, Dv, z, H0, out, last, work, S, i0, i1, D, L, N))
#else
#define FWD_ROWS(H0) fwd_rows_$S(u, dl, A, AT, Bt, Ct, Dv, z, H0, out, last, work, S, i0, i1, D, L, N)
#endif

/* the forward from a given state (recurrent steps), out of line: inlined next to the h0 == NULL code, it
   made the training forward ~4% slower */
static __attribute__((noinline)) void fwd_from_$S(const $T* u, const $T* dl, const $T* A, const $T* AT,
                                                  const $T* Bt, const $T* Ct, const $T* Dv, const $T* z,
                                                  const $T* h0, $T* out, $T* last, $T* work, const long* S,
                                                  long i0, long i1, long D, long L, long N) {
    FWD_ROWS(h0);
}

static int fwd_range_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
                        const $T* Dv, const $T* z, const $T* h0, $T* out, $T* last, const long* S, long i0,
                        long i1, long D, long L, long N) {
    $T* work = ($T*)malloc((size_t)(4 * L * W) * sizeof($T));
    if (!work) return 1;
    if (h0)
        fwd_from_$S(u, dl, A, AT, Bt, Ct, Dv, z, h0, out, last, work, S, i0, i1, D, L, N);
    else
        FWD_ROWS(NULL);
    free(work);
    return 0;
}

#undef FWD_ROWS

/* add the lane accumulators of batch element b into dBt / dCt and clear them */
INLINE void flush_lanes_$S($T* restrict dBl, $T* restrict dCl, $T* restrict dBt, $T* restrict dCt,
                           long b, long L, long N) {
    for (long k = 0; k < L * N; ++k) {
        $T sb = 0, sc = 0;
        for (long l = 0; l < W; ++l) {
            sb += dBl[k * W + l];
            sc += dCl[k * W + l];
            dBl[k * W + l] = 0;
            dCl[k * W + l] = 0;
        }
        dBt[b * L * N + k] += sb;
        dCt[b * L * N + k] += sc;
    }
}

INLINE void bwd_rows_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
                        const $T* Dv, const $T* z, const $T* dout, const $T* dlast, $T* du, $T* ddl,
                        $T* dAT, $T* dBt, $T* dCt, $T* dD, $T* dz, $T* work, $T* dBl, $T* dCl,
                        const long* S, long i0, long i1, long D, long L, const long N) {
    long i = i0, lanes_b = -1;
    while (i < i1) {
        const long b = i / D;
        if (lanes_b >= 0 && lanes_b != b) {
            flush_lanes_$S(dBl, dCl, dBt, dCt, lanes_b, L, N);
            lanes_b = -1;
        }
        if (is_block_$S(i, i1, D)) {
            bwd_block_$S(u, dl, AT, Bt, Ct, Dv, z, dout, dlast, du, ddl, dAT, dBl, dCl, dD, dz, work, S,
                         b, i % D, D, L, N);
            lanes_b = b;
            i += W;
        } else {
            bwd_row_$S(u, dl, A, Bt, Ct, Dv, z, dout, dlast, du, ddl, dAT, dBt, dCt, dD, dz, work, S,
                       i, D, L, N);
            i += 1;
        }
    }
    if (lanes_b >= 0) flush_lanes_$S(dBl, dCl, dBt, dCt, lanes_b, L, N);
}

static int bwd_range_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
                        const $T* Dv, const $T* z, const $T* dout, const $T* dlast, $T* du, $T* ddl, $T* dAT,
                        $T* dBt, $T* dCt, $T* dD, $T* dz, const long* S, long i0, long i1, long D, long L,
                        long N) {
    const size_t block = (size_t)(2 * (L + 1) * N + 7 * L) * W;
    const size_t row = (size_t)((2 * L + 1) * N + L);
    const size_t lanes = (size_t)(L * N * W);
    $T* work = ($T*)calloc((block > row ? block : row) + 2 * lanes, sizeof($T));
    if (!work) return 1;
    $T* dBl = work + (block > row ? block : row);
    $T* dCl = dBl + lanes;
#if $SPECIALISE
    if (N == 16)  /* Mamba's default d_state: the states stay in registers */
        bwd_rows_$S(u, dl, A, AT, Bt, Ct, Dv, z, dout, dlast, du, ddl, dAT, dBt, dCt, dD, dz, work, dBl, dCl,
                    S, i0, i1, D, L, 16);
    else
#endif
        bwd_rows_$S(u, dl, A, AT, Bt, Ct, Dv, z, dout, dlast, du, ddl, dAT, dBt, dCt, dD, dz, work, dBl, dCl,
                    S, i0, i1, D, L, N);
    free(work);
    return 0;
}

/* Entry points. Chunk k covers rows bounds[k]..bounds[k + 1]; with OpenMP the chunks run on the process's
   OpenMP pool (torch's own, when torch loaded libgomp first), else the caller runs one chunk per call.
   The backward's partial sums for chunk k live at dAT + k * N * D, dBt/dCt + k * B * L * N, dD + k * D. */
int ssm_fwd_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
               const $T* Dv, const $T* z, const $T* h0, $T* out, $T* last, const long* S,
               const long* bounds, long nchunks, long D, long L, long N) {
    OVER_CHUNKS(fwd_range_$S(u, dl, A, AT, Bt, Ct, Dv, z, h0, out, last, S, bounds[k], bounds[k + 1], D, L, N));
}

int ssm_bwd_$S(const $T* u, const $T* dl, const $T* A, const $T* AT, const $T* Bt, const $T* Ct,
               const $T* Dv, const $T* z, const $T* dout, const $T* dlast, $T* du, $T* ddl, $T* dAT,
               $T* dBt, $T* dCt, $T* dD, $T* dz, const long* S, const long* bounds, long nchunks,
               long batch, long D, long L, long N) {
    OVER_CHUNKS(bwd_range_$S(u, dl, A, AT, Bt, Ct, Dv, z, dout, dlast, du, ddl, dAT + k * N * D,
                             dBt + k * batch * L * N, dCt + k * batch * L * N, dD ? dD + k * D : dD, dz, S,
                             bounds[k], bounds[k + 1], D, L, N));
}

/* ---------------- depthwise causal conv over time, (batch, L, C) layout ----------------
   x row (b, t) starts at x + b * xb + t * xt, channels contiguous; out, dout, dx: contiguous (batch, L, C);
   wT: (K, C) (the taps of channel c at wT[k * C + c]); bias: (C,) or NULL.
   pre[b, t, c] = bias[c] + sum_k wT[k, c] * x[b, t - K + 1 + k, c] (zero before t = 0); out = silu(pre) or pre.
   Each chunk covers the channels bounds[k]..bounds[k + 1] of every (b, t), so dwT and dbias need no
   partial sums. */

/* pre (batch element b, channels c0..c1) into row-major rows[L][cw] */
INLINE void conv_pre_$S(const $T* restrict x, long xb, long xt, const $T* restrict wT, const $T* restrict bias,
                        $T* restrict rows, long b, long L, long C, long K, long c0, long c1) {
    const long cw = c1 - c0;
    for (long t = 0; t < L; ++t) {
        $T* restrict r = rows + t * cw;
        for (long c = 0; c < cw; ++c) r[c] = bias ? bias[c0 + c] : ($T)0;
        for (long k = 0; k < K; ++k) {
            const long tt = t - K + 1 + k;
            if (tt < 0) continue;
            const $T* restrict xr = x + b * xb + tt * xt + c0;
            const $T* restrict wk = wT + k * C + c0;
            for (long c = 0; c < cw; ++c) r[c] += wk[c] * xr[c];
        }
    }
}

static int conv_fwd_range_$S(const $T* x, long xb, long xt, const $T* wT, const $T* bias, $T* out, long B,
                             long L, long C, long K, int silu, long c0, long c1) {
    const long cw = c1 - c0;
    $T* rows = ($T*)malloc((size_t)(L * cw) * sizeof($T));
    if (!rows) return 1;
    for (long b = 0; b < B; ++b) {
        conv_pre_$S(x, xb, xt, wT, bias, rows, b, L, C, K, c0, c1);
        for (long t = 0; t < L; ++t) {
            const $T* restrict r = rows + t * cw;
            $T* restrict o = out + (b * L + t) * C + c0;
            if (silu)
                for (long c = 0; c < cw; ++c) o[c] = r[c] / (($T)1 + exp_$S(-r[c]));
            else
                for (long c = 0; c < cw; ++c) o[c] = r[c];
        }
    }
    free(rows);
    return 0;
}

/* dx must come zeroed; dwT (K, C) and dbias (C,) are added to */
static int conv_bwd_range_$S(const $T* x, long xb, long xt, const $T* wT, const $T* bias, const $T* dout,
                             $T* dx, $T* dwT, $T* dbias, long B, long L, long C, long K, int silu, long c0,
                             long c1) {
    const long cw = c1 - c0;
    $T* g = ($T*)malloc((size_t)(L * cw) * sizeof($T));
    if (!g) return 1;
    for (long b = 0; b < B; ++b) {
        conv_pre_$S(x, xb, xt, wT, bias, g, b, L, C, K, c0, c1);
        for (long t = 0; t < L; ++t) { /* g: dL/dpre */
            $T* restrict gr = g + t * cw;
            const $T* restrict dr = dout + (b * L + t) * C + c0;
            if (silu)
                for (long c = 0; c < cw; ++c) {
                    const $T s = ($T)1 / (($T)1 + exp_$S(-gr[c]));
                    gr[c] = dr[c] * s * (($T)1 + gr[c] * (($T)1 - s));
                }
            else
                for (long c = 0; c < cw; ++c) gr[c] = dr[c];
            if (dbias)
                for (long c = 0; c < cw; ++c) dbias[c0 + c] += gr[c];
        }
        for (long t = 0; t < L; ++t) {
            const $T* restrict gr = g + t * cw;
            for (long k = 0; k < K; ++k) {
                const long tt = t - K + 1 + k;
                if (tt < 0) continue;
                const $T* restrict xr = x + b * xb + tt * xt + c0;
                const $T* restrict wk = wT + k * C + c0;
                $T* restrict dxr = dx + (b * L + tt) * C + c0;
                $T* restrict dwk = dwT + k * C + c0;
                for (long c = 0; c < cw; ++c) {
                    dxr[c] += wk[c] * gr[c];
                    dwk[c] += gr[c] * xr[c];
                }
            }
        }
    }
    free(g);
    return 0;
}

int conv_fwd_$S(const $T* x, long xb, long xt, const $T* wT, const $T* bias, $T* out, long B, long L, long C,
                long K, int silu, const long* bounds, long nchunks) {
    OVER_CHUNKS(conv_fwd_range_$S(x, xb, xt, wT, bias, out, B, L, C, K, silu, bounds[k], bounds[k + 1]));
}

int conv_bwd_$S(const $T* x, long xb, long xt, const $T* wT, const $T* bias, const $T* dout, $T* dx, $T* dwT,
                $T* dbias, long B, long L, long C, long K, int silu, const long* bounds, long nchunks) {
    OVER_CHUNKS(conv_bwd_range_$S(x, xb, xt, wT, bias, dout, dx, dwT, dbias, B, L, C, K, silu, bounds[k],
                                  bounds[k + 1]));
}

/* ---------------- dropout (+ residual), contiguous tensors of n elements ----------------
   out[i] = residual[i] + (kept(seed, i) ? x[i] * scale : 0), without the residual when it is NULL. The
   backward is the same call on the incoming gradient with no residual: the mask is regenerated from the
   seed, never stored. */
static int dropout_range_$S(const $T* restrict x, const $T* restrict residual, $T* restrict out, uint64_t seed,
                            uint32_t threshold, $T scale, long i0, long i1) {
    if (residual)
        for (long i = i0; i < i1; ++i) out[i] = residual[i] + (kept(seed, i, threshold) ? x[i] * scale : ($T)0);
    else
        for (long i = i0; i < i1; ++i) out[i] = kept(seed, i, threshold) ? x[i] * scale : ($T)0;
    return 0;
}

int dropout_$S(const $T* x, const $T* residual, $T* out, uint64_t seed, uint32_t threshold, double scale,
               const long* bounds, long nchunks) {
    OVER_CHUNKS(dropout_range_$S(x, residual, out, seed, threshold, ($T)scale, bounds[k], bounds[k + 1]));
}
"""


def c_source() -> str:
    """The full C file: the header, then the body instantiated for float32 and float64."""
    body = string.Template(C_BODY)
    # float32 gets a d_state == 16 specialisation; float64 (tests, debugging) only the generic code
    return (
        C_HEADER
        + body.substitute(T="float", S="f32", SPECIALISE=1)
        + body.substitute(T="double", S="f64", SPECIALISE=0)
    )
