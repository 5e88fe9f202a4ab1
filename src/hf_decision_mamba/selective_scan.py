"""Selective scan (Mamba-1 SSM), depthwise causal conv and residual dropout for Decision Mamba, with three
backends.

* ``"cuda"``: the ``mamba_ssm`` / ``causal_conv1d`` kernels (optional packages, GPU only).
* ``"fused_cpu"``: a fused CPU kernel with a hand-written backward that never materialises
  ``(batch, dim, L, N)`` tensors. It is a small C file compiled on first use with the system C compiler
  (cached per user, keyed by a hash of the source, flags and CPU) and loaded with ``ctypes``; without a
  compiler the same algorithm runs through ``numba`` (``cache=True``). Threads: see the notes below.
  It also serves ``selective_state_update`` (one or a few recurrent steps from a given state), and
  ``causal_conv1d`` and ``dropout_add`` through the C kernel.
* ``"torch"``: pure PyTorch, any device; the fallback and the reference.

This file is also shipped as Hugging Face remote code: its top-level imports are the standard library and
``torch`` only, and every optional package is imported inside ``try`` blocks.

Notes for callers:

* Any layout is accepted (inputs are made contiguous inside); ``fused_cpu`` computes in float32 (float64
  for float64 inputs) and returns y in u's dtype, gradients in each input's dtype.
* ``fused_cpu`` (C, OpenMP) runs on torch's own OpenMP thread pool (the library links the libgomp that torch
  already loaded), with ``torch.get_num_threads()`` threads: no extra threads, no oversubscription. The
  numba / no-OpenMP fallbacks run on one thread unless ``HF_DECISION_MAMBA_THREADS`` says otherwise.
* ``last_state`` is differentiable on the ``fused_cpu`` and ``torch`` paths; mamba_ssm's CUDA kernel ignores
  its gradient. The backward of ``fused_cpu`` is not itself differentiable (no double backward).
* ``selective_state_update`` (recurrent acting, inference only) runs on CPU as one call of the fused forward
  started from the given state, which it overwrites in place; with gradients needed it falls back to torch.
* Environment: ``HF_DECISION_MAMBA_FUSED_IMPL`` = ``c`` | ``numba`` forces one fused implementation;
  ``HF_DECISION_MAMBA_THREADS`` sets the fused scan's thread count; ``HF_DECISION_MAMBA_CACHE`` moves the
  compiled-kernel cache; ``CC`` picks the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import string
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

__all__ = [
    "available_backends",
    "causal_conv1d",
    "causal_conv1d_update",
    "dropout_add",
    "resolve_backend",
    "selective_scan",
    "selective_state_update",
]

BACKENDS = ("cuda", "fused_cpu", "torch")
_FUSED_IMPL_ENV = "HF_DECISION_MAMBA_FUSED_IMPL"  # "auto" (default), "c" or "numba"
_CACHE_ENV = "HF_DECISION_MAMBA_CACHE"  # folder for the compiled C kernel
_THREADS_ENV = "HF_DECISION_MAMBA_THREADS"  # threads for the fused CPU scan (see _num_chunks)
_DROPOUT_WORK = 4  # a dropout element costs about as much as this many state updates (for _num_chunks)

# ----------------------------------------------------------------------------------------------------------
# Optional CUDA kernels
# ----------------------------------------------------------------------------------------------------------

_cuda_kernels: dict | None = None


def _load_cuda_kernels() -> dict:
    """Import the optional mamba_ssm / causal_conv1d kernels once; an empty dict when unavailable."""
    global _cuda_kernels
    if _cuda_kernels is None:
        kernels: dict = {}
        try:
            from causal_conv1d import causal_conv1d_fn as _cc_fn
            from causal_conv1d import causal_conv1d_update as _cc_update
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _ss_fn

            kernels = {"scan": _ss_fn, "conv": _cc_fn, "conv_update": _cc_update}
        except Exception:  # ImportError, or a broken build (missing CUDA libraries, ABI mismatch)
            kernels = {}
        if kernels:
            try:
                from mamba_ssm.ops.triton.selective_state_update import (
                    selective_state_update as _ss_update,
                )

                kernels["state_update"] = _ss_update
            except Exception:  # triton missing: the step falls back to torch
                pass
        _cuda_kernels = kernels
    return _cuda_kernels


def _cuda_usable() -> bool:
    return bool(_load_cuda_kernels()) and torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------------------
# Fused CPU kernels: C source (compiled at first use) and its numba twin
# ----------------------------------------------------------------------------------------------------------

_C_HEADER = r"""
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
_C_BODY = r"""
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


def _c_source() -> str:
    body = string.Template(_C_BODY)
    # float32 gets a d_state == 16 specialisation; float64 (tests, debugging) only the generic code
    return (
        _C_HEADER
        + body.substitute(T="float", S="f32", SPECIALISE=1)
        + body.substitute(T="double", S="f64", SPECIALISE=0)
    )


_C_COMPILE_FLAGS = ["-O3", "-ffast-math", "-ffp-contract=fast", "-fPIC", "-std=c99"]
_c_lock = threading.Lock()
_c_lib: ctypes.CDLL | None = None
_c_failed: str | None = None
_c_openmp = False  # the loaded library parallelises with OpenMP, on the process's only OpenMP runtime
_c_pid = 0  # process that loaded it (OpenMP pools do not survive fork)


def _private_dir(path: str) -> bool:
    """True when `path` is a folder we own that nobody else can write to (a shared /tmp must not let
    another user plant the library we are about to load)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return not (st.st_mode & 0o022)


def _cache_dir() -> str:
    """Per-user folder for the compiled kernel: $HF_DECISION_MAMBA_CACHE, else ~/.cache/..., else /tmp/...<uid>."""
    root = os.environ.get(_CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "hf_decision_mamba", "selective_scan")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    root = os.path.join(tempfile.gettempdir(), f"hf_decision_mamba_{uid}")
    os.makedirs(root, mode=0o700, exist_ok=True)
    if not _private_dir(root):
        raise OSError(f"{root} is not a private folder; set {_CACHE_ENV}")
    return root


def _cpu_identity() -> str:
    """What -march=native depends on, so that a shared cache folder never serves a foreign binary."""
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    ident.append(line.strip())
                if line.strip() == "":
                    break  # the first processor is enough
    except OSError:
        ident.append(platform.processor())
    return "\n".join(ident)


def _find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name:
            path = shutil.which(name)
            if path:
                return path
    return None


def _compile_c(cc: str, src_path: str, lib_path: str, flags: list[str]) -> None:
    """Compile then link in two steps, so that -ffast-math never links crtfastmath (which would flip the
    process-wide denormal flags)."""
    obj = lib_path + ".o"
    subprocess.run(
        [cc, *flags, "-c", src_path, "-o", obj],
        check=True,
        capture_output=True,
        timeout=120,
    )
    link = [cc, "-shared", obj, "-o", lib_path, "-lm"] + (["-fopenmp"] if "-fopenmp" in flags else [])
    subprocess.run(link, check=True, capture_output=True, timeout=120)
    os.remove(obj)


def _one_openmp_runtime() -> bool:
    """True when a single OpenMP runtime is mapped in this process (Linux), i.e. the kernel's OpenMP threads
    are torch's. With two runtimes (torch built against another one) the pools would compete for cores."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            names = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return False
    runtimes = {
        os.path.realpath(n) for n in names if os.path.basename(n).startswith(("libgomp", "libiomp", "libomp"))
    }
    return len(runtimes) == 1


def _declare(lib: ctypes.CDLL) -> None:
    vp, lg = ctypes.c_void_p, ctypes.c_long
    for sfx in ("f32", "f64"):
        fwd = getattr(lib, f"ssm_fwd_{sfx}")
        fwd.argtypes = [vp] * 13 + [lg] * 4
        fwd.restype = ctypes.c_int
        bwd = getattr(lib, f"ssm_bwd_{sfx}")
        bwd.argtypes = [vp] * 19 + [lg] * 5
        bwd.restype = ctypes.c_int
        conv_fwd = getattr(lib, f"conv_fwd_{sfx}")
        conv_fwd.argtypes = [vp, lg, lg, vp, vp, vp] + [lg] * 4 + [ctypes.c_int, vp, lg]
        conv_fwd.restype = ctypes.c_int
        conv_bwd = getattr(lib, f"conv_bwd_{sfx}")
        conv_bwd.argtypes = [vp, lg, lg, vp, vp, vp, vp, vp, vp] + [lg] * 4 + [ctypes.c_int, vp, lg]
        conv_bwd.restype = ctypes.c_int
        drop = getattr(lib, f"dropout_{sfx}")
        drop.argtypes = [vp, vp, vp, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_double, vp, lg]
        drop.restype = ctypes.c_int
    lib.ssm_has_openmp.argtypes = []
    lib.ssm_has_openmp.restype = ctypes.c_int


def _load_c_lib() -> ctypes.CDLL | None:
    """Compile (once per machine, cached) and load the C kernel; None when no compiler works."""
    global _c_lib, _c_failed, _c_openmp, _c_pid
    if _c_lib is not None or _c_failed is not None:
        return _c_lib
    with _c_lock:
        if _c_lib is not None or _c_failed is not None:
            return _c_lib
        cc = _find_compiler()
        if cc is None:
            _c_failed = "no C compiler found (set CC)"
            return None
        source = _c_source()
        errors = []
        # OpenMP first: linked against libgomp.so.1, the library shares torch's already-loaded OpenMP
        # runtime and thread pool, so the scan's threads are torch's threads (no oversubscription)
        variants = (
            _C_COMPILE_FLAGS + ["-march=native", "-fopenmp"],
            _C_COMPILE_FLAGS + ["-march=native"],
            _C_COMPILE_FLAGS,
        )
        for flags in variants:
            key = hashlib.sha256("\0".join([source, cc, *flags, _cpu_identity()]).encode()).hexdigest()[:20]
            try:
                folder = _cache_dir()
                lib_path = os.path.join(folder, f"selective_scan_{key}.so")
                if not os.path.exists(lib_path):
                    tmp = tempfile.mkdtemp(dir=folder, prefix="build_")
                    try:
                        src_path = os.path.join(tmp, "selective_scan.c")
                        with open(src_path, "w", encoding="utf-8") as f:
                            f.write(source)
                        tmp_lib = os.path.join(tmp, "selective_scan.so")
                        _compile_c(cc, src_path, tmp_lib, flags)
                        os.replace(tmp_lib, lib_path)  # atomic: concurrent processes never see half a file
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                lib = ctypes.CDLL(lib_path)
                _declare(lib)
                _c_openmp, _c_pid = bool(lib.ssm_has_openmp()) and _one_openmp_runtime(), os.getpid()
                _c_lib = lib
                return lib
            except (OSError, subprocess.SubprocessError, AttributeError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                errors.append(f"{exc} {detail.decode(errors='replace')[-500:]}")
        _c_failed = "; ".join(errors)
        return None


def _nb_fwd(  # pragma: no cover - numba
    u, dl, A, Bt, Ct, Dv, z, h0, out, last, has_d, has_z, has_h0, has_last, i0, i1
):
    """numba twin of ssm_fwd (same layouts, 3-d arrays; absent optional arrays are dummies + a flag)."""
    D = u.shape[1]
    L = u.shape[2]
    N = A.shape[1]
    h = np.zeros(N, dtype=u.dtype)
    for i in range(i0, i1):
        b = i // D
        d = i - b * D
        for n in range(N):
            h[n] = h0[b, d, n] if has_h0 else 0.0
        for t in range(L):
            dt = dl[b, d, t]
            x = dt * u[b, d, t]
            acc = 0.0
            for n in range(N):
                hn = math.exp(dt * A[d, n]) * h[n] + x * Bt[b, t, n]
                h[n] = hn
                acc += hn * Ct[b, t, n]
            y = acc
            if has_d:
                y += Dv[d] * u[b, d, t]
            if has_z:
                zt = z[b, d, t]
                y = y * zt / (1.0 + math.exp(-zt))
            out[b, d, t] = y
        if has_last:
            for n in range(N):
                last[b, d, n] = h[n]


def _nb_bwd(  # pragma: no cover - numba
    u, dl, A, Bt, Ct, Dv, z, dout, dlast, du, ddl, dA, dBt, dCt, dD, dz, has_d, has_z, has_dlast, i0, i1
):
    """numba twin of ssm_bwd."""
    D = u.shape[1]
    L = u.shape[2]
    N = A.shape[1]
    hs = np.zeros((L + 1, N), dtype=u.dtype)
    a_s = np.empty((L, N), dtype=u.dtype)
    g = np.empty(L, dtype=u.dtype)
    dh = np.empty(N, dtype=u.dtype)
    dAacc = np.empty(N, dtype=u.dtype)
    for i in range(i0, i1):
        b = i // D
        d = i - b * D
        Dd = Dv[d] if has_d else 0.0
        for t in range(L):
            dt = dl[b, d, t]
            x = dt * u[b, d, t]
            acc = 0.0
            for n in range(N):
                a = math.exp(dt * A[d, n])
                a_s[t, n] = a
                hn = a * hs[t, n] + x * Bt[b, t, n]
                hs[t + 1, n] = hn
                acc += hn * Ct[b, t, n]
            if has_z:
                y = acc + Dd * u[b, d, t]
                zt = z[b, d, t]
                s = 1.0 / (1.0 + math.exp(-zt))
                g[t] = dout[b, d, t] * zt * s
                dz[b, d, t] = dout[b, d, t] * y * s * (1.0 + zt * (1.0 - s))
            else:
                g[t] = dout[b, d, t]
        dDacc = 0.0
        for n in range(N):
            dh[n] = dlast[b, d, n] if has_dlast else 0.0
            dAacc[n] = 0.0
        for t in range(L - 1, -1, -1):
            gt = g[t]
            dt = dl[b, d, t]
            ut = u[b, d, t]
            x = dt * ut
            s1 = 0.0
            s2 = 0.0
            for n in range(N):
                dhn = dh[n] + gt * Ct[b, t, n]
                dCt[b, t, n] += gt * hs[t + 1, n]
                dBt[b, t, n] += dhn * x
                s1 += dhn * Bt[b, t, n]
                w = dhn * hs[t, n] * a_s[t, n]
                s2 += w * A[d, n]
                dAacc[n] += w * dt
                dh[n] = dhn * a_s[t, n]
            du[b, d, t] = dt * s1 + Dd * gt
            ddl[b, d, t] = ut * s1 + s2
            dDacc += gt * ut
        for n in range(N):
            dA[d, n] += dAacc[n]
        dD[d] += dDacc


_nb_lock = threading.Lock()
_nb_kernels: tuple | None = None
_nb_failed: str | None = None
np = None  # numpy, bound when numba loads (the numba kernels use it as a global)


def _load_numba() -> tuple | None:
    """JIT the numba twins (cache=True: compiled once per machine); None when numba is missing."""
    global _nb_kernels, _nb_failed, np
    if _nb_kernels is not None or _nb_failed is not None:
        return _nb_kernels
    with _nb_lock:
        if _nb_kernels is not None or _nb_failed is not None:
            return _nb_kernels
        try:
            import numba
            import numpy

            np = numpy
            jit = numba.njit(nogil=True, fastmath=True, cache=True)
            _nb_kernels = (jit(_nb_fwd), jit(_nb_bwd))
        except Exception as exc:  # ImportError, or numba failing on this platform
            _nb_failed = repr(exc)
        return _nb_kernels


def _fused_impl() -> str | None:
    """Which fused CPU implementation this process uses: "c", "numba" or None."""
    want = os.environ.get(_FUSED_IMPL_ENV, "auto").lower()
    if want not in ("auto", "c", "numba"):
        raise ValueError(f"{_FUSED_IMPL_ENV}={want!r}: expected 'auto', 'c' or 'numba'")
    if want in ("auto", "c") and _load_c_lib() is not None:
        return "c"
    if want in ("auto", "numba") and _load_numba() is not None:
        return "numba"
    return None


# -- threading --------------------------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """A helper-thread pool, recreated after fork (a forked child inherits a pool without threads)."""
    global _pool, _pool_key
    key = (os.getpid(), workers)
    with _pool_lock:
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[0] == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="selective_scan")
            _pool_key = key
        return _pool


_LANES = 16  # W in the C source: chunk boundaries stay on multiples of it
_WORK_PER_THREAD = 500_000  # at least this many state updates (rows * L * N) per extra thread
_CPUS: int | None = None


def _usable_cpus() -> int:
    """CPUs this process may run on (affinity mask / cgroup-pinned sets), computed once."""
    global _CPUS
    if _CPUS is None:
        try:
            _CPUS = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            _CPUS = os.cpu_count() or 1
    return _CPUS


def _num_chunks(rows: int, work: int, impl: str) -> int:
    """Threads to use. The OpenMP C kernel runs on torch's own OpenMP pool, so it takes torch's intra-op
    thread count (capped by the CPU affinity mask). Python helper threads (numba, or C without OpenMP)
    would compete with torch's OpenMP workers, which spin for milliseconds after every parallel op: on a
    2-core machine that made 2 threads slower than 1, so they default to 1. $HF_DECISION_MAMBA_THREADS
    overrides both (e.g. with OMP_WAIT_POLICY=PASSIVE). Small problems always get fewer threads."""
    if work < 2 * _WORK_PER_THREAD:  # one thread whatever the settings (the recurrent steps' fast path)
        return 1
    forced = os.environ.get(_THREADS_ENV)
    if forced:
        threads = int(forced)
    elif impl == "c" and _c_openmp and os.getpid() == _c_pid:
        threads = min(torch.get_num_threads(), _usable_cpus())
    else:
        threads = 1
    return max(1, min(threads, rows // _LANES or 1, work // _WORK_PER_THREAD))


def _chunk_bounds(rows: int, work: int, impl: str) -> list[int]:
    """Split rows (batch*dim) into contiguous ranges, one per thread, aligned to the C kernel's blocks."""
    chunks = _num_chunks(rows, work, impl)
    inner = [(rows * k // chunks) // _LANES * _LANES for k in range(1, chunks)]
    return [0, *inner, rows]


def _run_chunks(fn, args_for, bounds: list[int]) -> None:
    """Run fn(*args_for(k, lo, hi)) for each chunk, the first on this thread, the others on helpers."""
    chunks = len(bounds) - 1
    if chunks == 1:
        results = [fn(*args_for(0, bounds[0], bounds[1]))]
    else:
        pool = _get_pool(chunks - 1)
        futures = [pool.submit(fn, *args_for(k, bounds[k], bounds[k + 1])) for k in range(1, chunks)]
        results = [fn(*args_for(0, bounds[0], bounds[1]))] + [f.result() for f in futures]
    if any(r for r in results if isinstance(r, int)):
        raise MemoryError("selective_scan: the C kernel could not allocate its work buffer")


def _run_c(call, bounds: list[int]) -> None:
    """Run a C entry point call(bounds_ptr, nchunks, first_chunk) over all chunks: in one call when the
    library has OpenMP (and we are the process that loaded it), else one chunk per Python thread."""
    chunks = len(bounds) - 1
    arr = (ctypes.c_long * len(bounds))(*bounds)
    base, size = ctypes.addressof(arr), ctypes.sizeof(ctypes.c_long)
    if chunks == 1 or (_c_openmp and os.getpid() == _c_pid):
        results = [call(base, chunks, 0)]
    else:
        _run_chunks(lambda k: call(base + k * size, 1, k), lambda k, lo, hi: (k,), bounds)
        return
    if any(results):
        raise MemoryError("selective_scan: the C kernel could not allocate its work buffer")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fused and reference scans compute in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _c_kernel(name: str, dtype: torch.dtype):
    """The loaded C entry point `name` for the compute dtype of `dtype` (`name_f32` or `name_f64`)."""
    return getattr(_c_lib, f"{name}_{'f64' if _compute_dtype(dtype) == torch.float64 else 'f32'}")


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _as_numpy(t: torch.Tensor | None, like: torch.Tensor):
    """A numpy view for numba; a 1-element dummy of the right dtype and rank for absent tensors."""
    if t is None:
        return torch.zeros((1,) * like.dim(), dtype=like.dtype).numpy()
    return t.detach().numpy()


def _empty_as(t: torch.Tensor) -> torch.Tensor:
    """An empty (batch, dim, L) tensor laid out like t: channels-last ((batch, L, dim) in memory) when t's
    channel stride is the smaller one (a transposed linear-layer output), else contiguous. Outputs and
    gradients then come back in the layout the neighbouring ops use, without copies."""
    batch, dim, L = t.shape
    if t.stride(1) < t.stride(2):
        return torch.empty(batch, L, dim, dtype=t.dtype).transpose(1, 2)
    return torch.empty(batch, dim, L, dtype=t.dtype)


def _strides(*tensors: torch.Tensor | None):
    """The (batch, channel, time) strides of each tensor, as the C array S."""
    flat = []
    for t in tensors:
        flat.extend(t.stride() if t is not None else (0, 0, 0))
    return (ctypes.c_long * len(flat))(*flat)


def _fused_forward(impl, u, delta, A, Bt, Ct, D, z, last, h0=None):
    """Run the fused forward (u, delta, z any strides, one dtype) from h0 (None: zeros), writing the final
    state into last (None: not wanted; may be h0 itself; both contiguous (batch, dim, N)); returns out."""
    batch, dim, L = u.shape
    N = A.shape[1]
    rows = batch * dim
    bounds = _chunk_bounds(rows, rows * L * N, impl)
    if impl == "c":
        out = _empty_as(z if z is not None else u)
        fn = _c_kernel("ssm_fwd", u.dtype)
        At = A.t().contiguous()  # kept alive until the kernel returns
        ptrs = [_ptr(t) for t in (u, delta, A, At, Bt, Ct, D, z, h0, out, last)]
        S = _strides(u, delta, z, out)
        _run_c(lambda b, n, k: fn(*ptrs, S, b, n, dim, L, N), bounds)
        return out
    u, delta = u.contiguous(), delta.contiguous()
    z = z.contiguous() if z is not None else None
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    arrays = [_as_numpy(t, u) for t in (u, delta)] + [_as_numpy(t, A) for t in (A, Bt, Ct)]
    arrays += [_as_numpy(D, A[0])] + [_as_numpy(t, u) for t in (z, h0, out, last)]
    flags = (D is not None, z is not None, h0 is not None, last is not None)
    _run_chunks(_nb_kernels[0], lambda k, lo, hi: (*arrays, *flags, lo, hi), bounds)
    return out


def _fused_backward(impl, u, delta, A, Bt, Ct, D, z, dout, dlast):
    """Run the fused backward; returns du, ddelta, dA, dBt, dCt, dD (or None), dz (or None)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    dtype = u.dtype
    rows = batch * dim
    bounds = _chunk_bounds(rows, rows * L * N * 3, impl)
    chunks = len(bounds) - 1
    # per-chunk partial sums (dB and dC are sums over dim, dA and dD sums over batch); the C kernel
    # accumulates dA transposed, (N, dim)
    dA_p = (
        torch.zeros(chunks, N, dim, dtype=dtype) if impl == "c" else torch.zeros(chunks, dim, N, dtype=dtype)
    )
    dB_p = torch.zeros(chunks, batch, L, N, dtype=dtype)
    dC_p = torch.zeros(chunks, batch, L, N, dtype=dtype)
    dD_p = torch.zeros(chunks, dim, dtype=dtype)
    if impl == "c":
        du, ddelta = _empty_as(u), _empty_as(delta)
        dz = _empty_as(z) if z is not None else None
        fn = _c_kernel("ssm_bwd", dtype)
        At = A.t().contiguous()  # kept alive until the kernel returns
        common = [_ptr(t) for t in (u, delta, A, At, Bt, Ct, D, z, dout, dlast, du, ddelta)]
        dz_ptr = _ptr(dz)
        S = _strides(u, delta, z, dout, du, ddelta, dz)

        def call(b, n, k):  # chunk k's partial sums first; the kernel offsets the following chunks
            parts = (dA_p[k].data_ptr(), dB_p[k].data_ptr(), dC_p[k].data_ptr(), dD_p[k].data_ptr())
            return fn(*common, *parts, dz_ptr, S, b, n, batch, dim, L, N)

        _run_c(call, bounds)
    else:
        u, delta, dout = u.contiguous(), delta.contiguous(), dout.contiguous()
        z = z.contiguous() if z is not None else None
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dz = torch.empty_like(u) if z is not None else None
        arrays = [_as_numpy(t, u) for t in (u, delta)] + [_as_numpy(t, A) for t in (A, Bt, Ct)]
        arrays += [_as_numpy(D, A[0]), _as_numpy(z, u), _as_numpy(dout, u), _as_numpy(dlast, u)]
        arrays += [_as_numpy(du, u), _as_numpy(ddelta, u)]
        dz_np = _as_numpy(dz, u)
        flags = (D is not None, z is not None, dlast is not None)

        def args_for(k, lo, hi):
            parts = [_as_numpy(t[k], t[k]) for t in (dA_p, dB_p, dC_p, dD_p)]
            return (*arrays, *parts, dz_np, *flags, lo, hi)

        _run_chunks(_nb_kernels[1], args_for, bounds)
    dD = dD_p.sum(0) if D is not None else None
    dA = dA_p.sum(0).t() if impl == "c" else dA_p.sum(0)
    return du, ddelta, dA, dB_p.sum(0), dC_p.sum(0), dD, dz


class _FusedScanFn(torch.autograd.Function):
    """Fused CPU selective scan; the backward recomputes the states row by row (O(L*N) memory per thread)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, impl, want_last):
        dtype = _compute_dtype(u.dtype)
        # (batch, dim, L) tensors keep their strides (the C kernel reads any layout); the small ones are
        # made contiguous, B and C time-major
        uc, dc = u.detach().to(dtype), delta.detach().to(dtype)
        zc = z.detach().to(dtype) if z is not None else None
        Ac = A.detach().to(dtype).contiguous()
        Bt = B.detach().to(dtype).transpose(1, 2).contiguous()
        Ct = C.detach().to(dtype).transpose(1, 2).contiguous()
        Dc = D.detach().to(dtype).contiguous() if D is not None else None
        last = uc.new_empty(uc.shape[0], uc.shape[1], Ac.shape[1]) if want_last else None
        out = _fused_forward(impl, uc, dc, Ac, Bt, Ct, Dc, zc, last)
        ctx.save_for_backward(uc, dc, Ac, Bt, Ct, Dc, zc)
        ctx.impl = impl
        ctx.dtypes = tuple(t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z))
        ctx.set_materialize_grads(False)
        out = out.to(u.dtype)
        return (out, last) if want_last else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlast=None):
        uc, dc, Ac, Bt, Ct, Dc, zc = ctx.saved_tensors
        dtype = uc.dtype
        dout = torch.zeros_like(uc) if dout is None else dout.to(dtype)
        if dlast is not None:
            dlast = dlast.to(dtype).contiguous()
        du, ddelta, dA, dBt, dCt, dD, dz = _fused_backward(ctx.impl, uc, dc, Ac, Bt, Ct, Dc, zc, dout, dlast)
        grads = (du, ddelta, dA, dBt.transpose(1, 2), dCt.transpose(1, 2), dD, dz)
        cast = tuple(
            None if (g is None or dt is None) else g.to(dt) for g, dt in zip(grads, ctx.dtypes, strict=True)
        )
        return (*cast, None, None)


def _conv_call(
    direction: str, x: torch.Tensor, wT: torch.Tensor, *rest: torch.Tensor | None, silu: bool
) -> None:
    """Run the C conv kernel `conv_{direction}` over channel chunks; x: (batch, L, C), unit channel stride;
    wT: (K, C); `rest`: the kernel's remaining tensor arguments, in its order."""
    batch, L, channels = x.shape
    K = wT.shape[0]
    fn = _c_kernel(f"conv_{direction}", x.dtype)
    ptrs = [_ptr(t) for t in (wT, *rest)]
    bounds = _chunk_bounds(channels, batch * L * channels * K, "c")
    _run_c(
        lambda b, n, k: fn(_ptr(x), x.stride(0), x.stride(1), *ptrs, batch, L, channels, K, silu, b, n),
        bounds,
    )


class _FusedConvFn(torch.autograd.Function):
    """Fused CPU depthwise causal conv (+ SiLU) on x (batch, L, C) with unit channel stride; returns a contiguous
    (batch, L, C). The backward recomputes the pre-activation rather than storing it."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        dtype = _compute_dtype(x.dtype)
        xc = x.detach().to(dtype)
        wT = weight.detach().to(dtype).t().contiguous()  # (K, C): each tap's weights contiguous over channels
        bc = bias.detach().to(dtype).contiguous() if bias is not None else None
        out = torch.empty(x.shape, dtype=dtype)
        _conv_call("fwd", xc, wT, bc, out, silu=silu)
        ctx.save_for_backward(xc, wT, bc)
        ctx.silu = silu
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        xc, wT, bc = ctx.saved_tensors
        dout = dout.to(xc.dtype).contiguous()
        dx, dwT = torch.zeros(xc.shape, dtype=xc.dtype), torch.zeros_like(wT)
        dbias = torch.zeros_like(bc) if bc is not None else None
        _conv_call("bwd", xc, wT, bc, dout, dx, dwT, dbias, silu=ctx.silu)
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        return dx.to(x_dtype), dwT.t().to(w_dtype), None if dbias is None else dbias.to(b_dtype), None


def _dropout_call(
    x: torch.Tensor, residual: torch.Tensor | None, out: torch.Tensor, seed: int, p: float
) -> None:
    """out = residual + dropout(x) (no residual: None) through the C kernel; all contiguous, one dtype."""
    fn = _c_kernel("dropout", x.dtype)
    threshold, scale, n = min(round(p * 2**32), 2**32 - 1), 1.0 / (1.0 - p), x.numel()  # uint32 threshold
    bounds = _chunk_bounds(n, n * _DROPOUT_WORK, "c")
    _run_c(lambda b, n, _: fn(_ptr(x), _ptr(residual), _ptr(out), seed, threshold, scale, b, n), bounds)


class _FusedDropoutFn(torch.autograd.Function):
    """residual + dropout(x) in one pass on CPU. The mask comes from a counter-based generator seeded from
    torch's generator (so `torch.manual_seed` fixes it); the backward regenerates it instead of storing it."""

    @staticmethod
    def forward(ctx, x, residual, p):
        seed = int(torch.randint(0, 2**63 - 1, ()).item())
        out = torch.empty_like(x)
        _dropout_call(x, residual, out, seed, p)
        ctx.seed, ctx.p = seed, p
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        dout, dx = dout.contiguous(), None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(dout)
            _dropout_call(dout, None, dx, ctx.seed, ctx.p)
        return dx, dout if ctx.needs_input_grad[1] else None, None


def _fused_dropout_applies(x: torch.Tensor, residual: torch.Tensor | None, backend: str) -> bool:
    """The C dropout serves contiguous float32/float64 CPU tensors of one shape and dtype."""
    if resolve_backend(backend, x) != "fused_cpu" or _fused_impl() != "c":
        return False
    if x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
        return False
    return residual is None or (
        residual.dtype == x.dtype and residual.shape == x.shape and residual.is_contiguous()
    )


def _selective_scan_fused(u, delta, A, B, C, D=None, z=None, return_last_state=False, impl=None):
    """Fused CPU path; impl None picks C, else numba ("c" / "numba" force one, for tests)."""
    if impl is None:
        impl = _fused_impl()
        if impl is None:
            raise RuntimeError(
                "fused_cpu backend unavailable: no working C compiler and numba not importable"
            )
    elif impl == "c" and _load_c_lib() is None:
        raise RuntimeError(f"fused_cpu C kernel unavailable: {_c_failed}")
    elif impl == "numba" and _load_numba() is None:
        raise RuntimeError(f"fused_cpu numba kernel unavailable: {_nb_failed}")
    return _FusedScanFn.apply(u, delta, A, B, C, D, z, impl, bool(return_last_state))


# ----------------------------------------------------------------------------------------------------------
# Pure torch path
# ----------------------------------------------------------------------------------------------------------


def _selective_scan_torch(u, delta, A, B, C, D=None, z=None, return_last_state=False):
    """Reference path: time-major decays and inputs, then a loop over time (autograd does the backward)."""
    dtype_in = u.dtype
    dtype = _compute_dtype(u.dtype)
    batch, dim, L = u.shape
    uf = u.to(dtype)
    dt_tm = delta.to(dtype).permute(2, 0, 1).unsqueeze(-1)  # (L, batch, dim, 1)
    decay = torch.exp(dt_tm * A.to(dtype))  # (L, batch, dim, N)
    drive = (dt_tm * uf.permute(2, 0, 1).unsqueeze(-1)) * B.to(dtype).permute(2, 0, 1).unsqueeze(2)
    c_tm = C.to(dtype).permute(2, 0, 1).unsqueeze(-1)  # (L, batch, N, 1)
    h = torch.zeros(batch, dim, A.shape[1], dtype=dtype, device=u.device)
    ys = []
    for a_t, x_t, c_t in zip(decay.unbind(0), drive.unbind(0), c_tm.unbind(0), strict=True):
        h = torch.addcmul(x_t, a_t, h)
        ys.append(torch.bmm(h, c_t))  # (batch, dim, 1)
    y = torch.cat(ys, dim=-1)  # (batch, dim, L)
    if D is not None:
        y = y + D.to(dtype)[:, None] * uf
    if z is not None:
        y = y * F.silu(z.to(dtype))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y


# ----------------------------------------------------------------------------------------------------------
# CUDA path
# ----------------------------------------------------------------------------------------------------------


def _selective_scan_cuda(u, delta, A, B, C, D=None, z=None, return_last_state=False):
    """mamba_ssm's kernel: delta is already positive (no bias, no softplus). The kernel wants delta, B, C, z
    in u's dtype and A, D in float32; it ignores the gradient of last_state."""
    fn = _load_cuda_kernels()["scan"]
    dt = u.dtype
    return fn(
        u.contiguous(),
        delta.to(dt).contiguous(),
        A.float().contiguous(),
        B.to(dt).contiguous(),
        C.to(dt).contiguous(),
        D.float().contiguous() if D is not None else None,
        z.to(dt).contiguous() if z is not None else None,
        delta_bias=None,
        delta_softplus=False,
        return_last_state=return_last_state,
    )


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def available_backends() -> list[str]:
    """Backends usable in this process, a subset of ["cuda", "fused_cpu", "torch"] in that order.

    May compile the C kernel (once per machine, then cached) to find out."""
    found = []
    if _cuda_usable():
        found.append("cuda")
    if _fused_impl() is not None:
        found.append("fused_cpu")
    found.append("torch")
    return found


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """Map "auto" to "cuda" (kernels importable, CUDA tensor), "fused_cpu" (CPU tensor) or "torch".

    Explicit names are checked: unknown -> ValueError, known but unusable for `tensor` -> RuntimeError."""
    if backend == "auto":
        if tensor.is_cuda and _cuda_usable():
            return "cuda"
        if tensor.device.type == "cpu" and _fused_impl() is not None:
            return "fused_cpu"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; expected one of {('auto', *BACKENDS)}")
    if backend == "cuda" and not (tensor.is_cuda and _cuda_usable()):
        raise RuntimeError(
            "backend 'cuda' needs CUDA tensors and importable mamba_ssm + causal_conv1d kernels "
            f"(tensor on {tensor.device}, kernels {'found' if _load_cuda_kernels() else 'not importable'})"
        )
    if backend == "fused_cpu":
        if tensor.device.type != "cpu":
            raise RuntimeError(f"backend 'fused_cpu' needs CPU tensors, got a tensor on {tensor.device}")
        if _fused_impl() is None:
            raise RuntimeError(
                f"backend 'fused_cpu' unavailable: C kernel: {_c_failed}; numba: {_nb_failed or 'disabled'}"
            )
    return backend


def _check_scan_shapes(u, delta, A, B, C, D, z) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, L), got {tuple(u.shape)}")
    batch, dim, L = u.shape
    N = A.shape[-1]
    expected = {
        "delta": (delta, (batch, dim, L)),
        "A": (A, (dim, N)),
        "B": (B, (batch, N, L)),
        "C": (C, (batch, N, L)),
        "D": (D, (dim,)),
        "z": (z, (batch, dim, L)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}, expected {shape}")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y_t = C_t . h_t + D*u_t, h_t = exp(delta_t*A) * h_{t-1} + delta_t * B_t * u_t, h_0 = 0; y *= silu(z) if z given.

    u, delta, z: (batch, dim, L), delta >= 0 already (0 leaves h unchanged); A: (dim, N); B, C: (batch, N, L); D: (dim,).
    Returns y in u's dtype [and last_state (batch, dim, N), float32; float64 for float64 inputs]; differentiable."""
    _check_scan_shapes(u, delta, A, B, C, D, z)
    name = resolve_backend(backend, u)
    if name == "cuda":
        return _selective_scan_cuda(u, delta, A, B, C, D, z, return_last_state)
    if name == "fused_cpu":
        return _selective_scan_fused(u, delta, A, B, C, D, z, return_last_state)
    return _selective_scan_torch(u, delta, A, B, C, D, z, return_last_state)


def selective_state_update(
    state: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Recurrent steps from `state` (batch, dim, N), updated IN PLACE; returns y in u's dtype.

    One step: u, delta, z (batch, dim), B, C (batch, N). A few steps at once (the tokens of one timestep):
    u, delta, z (batch, dim, n), B, C (batch, N, n). Same maths as the matching columns of selective_scan.
    Inference only (the model calls it under torch.inference_mode): the CUDA and fused CPU kernels have no
    backward; with gradients enabled and an input requiring them, the torch path runs instead."""
    name = resolve_backend(backend, state)
    if u.dim() == 3:
        return _state_update_steps(name, state, u, delta, A, B, C, D, z)
    kernels = _load_cuda_kernels() if name == "cuda" else {}
    if "state_update" in kernels:
        return kernels["state_update"](state, u, delta, A, B, C, D=D, z=z, dt_bias=None, dt_softplus=False)
    last = lambda t: None if t is None else t[..., None]  # noqa: E731
    return _state_update_steps(name, state, *map(last, (u, delta)), A, *map(last, (B, C)), D, last(z))[..., 0]


def _state_update_steps(name, state, u, delta, A, B, C, D, z) -> torch.Tensor:
    """The n-token update on the resolved backend `name`: the fused CPU kernel when it applies, else torch."""
    fused = name == "fused_cpu" and state.dtype in (torch.float32, torch.float64)
    if fused and torch.is_grad_enabled():  # the fused kernel has no autograd here: keep gradients right
        fused = not any(t is not None and t.requires_grad for t in (state, u, delta, A, B, C, D, z))
    update = _state_update_fused if fused else _state_update_torch
    return update(state, u, delta, A, B, C, D, z)


def _state_update_fused(state, u, delta, A, B, C, D, z) -> torch.Tensor:
    """`selective_state_update` over n tokens in one fused CPU call: the scan from h0 = state, its final
    state written straight into `state` (through a contiguous copy when state is not contiguous)."""
    dtype, out_dtype = state.dtype, u.dtype
    h = state if state.is_contiguous() else state.contiguous()
    Bt, Ct = (_cast(t, dtype).transpose(1, 2).contiguous() for t in (B, C))
    A, D = (_cast(t, dtype).contiguous() if t is not None else None for t in (A, D))
    u, delta, z = (_cast(t, dtype) for t in (u, delta, z))
    y = _fused_forward(_fused_impl(), u, delta, A, Bt, Ct, D, z, h, h)
    if h is not state:
        state.copy_(h)
    return _cast(y, out_dtype)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in dtype; skips the call when it already is (a no-op .to costs more than the check)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _state_update_torch(state, u, delta, A, B, C, D, z) -> torch.Tensor:
    """`selective_state_update` over n tokens, u/delta/z (batch, dim, n), B/C (batch, N, n), in torch."""
    dtype = state.dtype
    dt = delta.to(dtype).transpose(1, 2)[..., None]  # (batch, n, dim, 1)
    decay = torch.exp(dt * A.to(dtype))
    inputs = (dt * u.to(dtype).transpose(1, 2)[..., None]) * B.to(dtype).transpose(1, 2)[:, :, None, :]
    readout = C.to(dtype).transpose(1, 2)[..., None]  # (batch, n, N, 1)
    outputs, current = [], state
    for step in range(u.shape[-1]):  # a handful of tokens: a few fused ops each
        current = torch.addcmul(inputs[:, step], decay[:, step], current)
        outputs.append(torch.matmul(current, readout[:, step]))  # (batch, dim, 1)
    state.copy_(current)
    y = torch.cat(outputs, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(u.dtype)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    backend: str = "auto",
) -> torch.Tensor:
    """Depthwise causal conv: x (batch, dim, L), weight (dim, width), bias (dim,) -> (batch, dim, L).

    activation is None or "silu" (alias "swish"). On the fused CPU path, a channels-last x (unit channel
    stride, as a transposed linear layer's output is) goes through the C kernel and comes back channels-last."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    name = resolve_backend(backend, x)
    if name == "cuda":
        return _load_cuda_kernels()["conv"](x, weight, bias, activation=activation)
    if name == "fused_cpu" and x.stride(1) == 1 and _fused_impl() == "c":  # channels-last: no layout copies
        return _FusedConvFn.apply(x.transpose(1, 2), weight, bias, activation is not None).transpose(1, 2)
    width = weight.shape[1]
    bias = bias.to(x.dtype) if bias is not None else None
    out = F.conv1d(x, weight.to(x.dtype).unsqueeze(1), bias, padding=width - 1, groups=weight.shape[0])
    out = out[..., : x.shape[-1]]
    return F.silu(out) if activation is not None else out


def dropout_add(
    x: torch.Tensor,
    p: float,
    residual: torch.Tensor | None = None,
    training: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """`residual + F.dropout(x, p, training)` (just the dropout when residual is None), in one pass.

    On the fused CPU path a C kernel draws the mask: torch's own CPU dropout draws it one element at a time
    from a serial generator on non-Intel CPUs (about 5 ns per element). Elsewhere, `F.dropout`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if training and 0.0 < p < 1.0 and _fused_dropout_applies(x, residual, backend):
        return _FusedDropoutFn.apply(x, residual, p)
    dropped = F.dropout(x, p, training)
    return dropped if residual is None else residual + dropped


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    backend: str = "auto",
) -> torch.Tensor:
    """One step: x (batch, dim); conv_state (batch, dim, width) is shifted left IN PLACE and x written at the end.

    Returns (batch, dim), equal to the last column of causal_conv1d over the history."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    name = resolve_backend(backend, x)
    if name == "cuda":
        return _load_cuda_kernels()["conv_update"](x, conv_state, weight, bias, activation=activation)
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x.to(conv_state.dtype)
    out = (conv_state * weight.to(conv_state.dtype)).sum(-1)
    if bias is not None:
        out = out + bias.to(out.dtype)
    out = F.silu(out) if activation is not None else out
    return out.to(x.dtype)
