"""The numba twin of the fused C scan (forward and backward, same layouts and algorithm), used when no C
compiler works. numba is optional: `load_numba()` returns the jitted kernels or None (`numba_failed()`
says why). Standard library only at import (Hub remote code)."""

from __future__ import annotations

import math
import threading


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


def load_numba() -> tuple | None:
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


def numba_failed() -> str | None:
    """Why numba could not be used (None when it loaded, or was not tried yet)."""
    return _nb_failed


def numba_kernels() -> tuple | None:
    """The jitted (forward, backward) pair, once `load_numba()` succeeded."""
    return _nb_kernels
