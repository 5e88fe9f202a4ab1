"""Running the fused CPU kernels on tensors: which implementation (C or numba), how rows are split over
threads, and the host side of each kernel call (layouts, pointers, per-thread partial sums). The autograd
and custom-operator wrappers live in `selective_scan_ops`."""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .selective_scan_cbuild import c_kernel, c_openmp_here, load_c_lib
from .selective_scan_numba import load_numba, numba_kernels
from .selective_scan_torch import cast, compute_dtype

_FUSED_IMPL_ENV = "HF_DECISION_MAMBA_FUSED_IMPL"  # "auto" (default), "c" or "numba"
_THREADS_ENV = "HF_DECISION_MAMBA_THREADS"  # threads for the fused CPU scan (see _num_chunks)
_DROPOUT_WORK = 4  # a dropout element costs about as much as this many state updates (for _num_chunks)


def fused_impl() -> str | None:
    """Which fused CPU implementation this process uses: "c", "numba" or None."""
    want = os.environ.get(_FUSED_IMPL_ENV, "auto").lower()
    if want not in ("auto", "c", "numba"):
        raise ValueError(f"{_FUSED_IMPL_ENV}={want!r}: expected 'auto', 'c' or 'numba'")
    if want in ("auto", "c") and load_c_lib() is not None:
        return "c"
    if want in ("auto", "numba") and load_numba() is not None:
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
    elif impl == "c" and c_openmp_here():
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
    if chunks == 1 or (c_openmp_here()):
        results = [call(base, chunks, 0)]
    else:
        _run_chunks(lambda k: call(base + k * size, 1, k), lambda k, lo, hi: (k,), bounds)
        return
    if any(results):
        raise MemoryError("selective_scan: the C kernel could not allocate its work buffer")


def _c_kernel(name: str, dtype: torch.dtype):
    """The loaded C entry point `name` for the compute dtype of `dtype` (`name_f32` or `name_f64`)."""
    return c_kernel(name, compute_dtype(dtype) == torch.float64)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _as_numpy(t: torch.Tensor | None, like: torch.Tensor):
    """A numpy view for numba; a 1-element dummy of the right dtype and rank for absent tensors."""
    if t is None:
        return torch.zeros((1,) * like.dim(), dtype=like.dtype).numpy()
    return t.detach().numpy()


def empty_as(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An empty (batch, dim, L) tensor laid out like t: channels-last ((batch, L, dim) in memory) when t's
    channel stride is the smaller one (a transposed linear-layer output), else contiguous. Outputs and
    gradients then come back in the layout the neighbouring ops use, without copies. dtype: t's by default."""
    batch, dim, L = t.shape
    dtype = t.dtype if dtype is None else dtype
    if t.stride(1) < t.stride(2):
        return torch.empty(batch, L, dim, dtype=dtype).transpose(1, 2)
    return torch.empty(batch, dim, L, dtype=dtype)


def _strides(*tensors: torch.Tensor | None):
    """The (batch, channel, time) strides of each tensor, as the C array S."""
    flat = []
    for t in tensors:
        flat.extend(t.stride() if t is not None else (0, 0, 0))
    return (ctypes.c_long * len(flat))(*flat)


def fused_forward(impl, u, delta, A, Bt, Ct, D, z, last, h0=None):
    """Run the fused forward (u, delta, z any strides, one dtype) from h0 (None: zeros), writing the final
    state into last (None: not wanted; may be h0 itself; both contiguous (batch, dim, N)); returns out."""
    batch, dim, L = u.shape
    N = A.shape[1]
    rows = batch * dim
    bounds = _chunk_bounds(rows, rows * L * N, impl)
    if impl == "c":
        out = empty_as(z if z is not None else u)
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
    _run_chunks(numba_kernels()[0], lambda k, lo, hi: (*arrays, *flags, lo, hi), bounds)
    return out


def fused_backward(impl, u, delta, A, Bt, Ct, D, z, dout, dlast):
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
        du, ddelta = empty_as(u), empty_as(delta)
        dz = empty_as(z) if z is not None else None
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

        _run_chunks(numba_kernels()[1], args_for, bounds)
    dD = dD_p.sum(0) if D is not None else None
    dA = dA_p.sum(0).t() if impl == "c" else dA_p.sum(0)
    return du, ddelta, dA, dB_p.sum(0), dC_p.sum(0), dD, dz


def conv_call(
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


def dropout_call(
    x: torch.Tensor, residual: torch.Tensor | None, out: torch.Tensor, seed: int, p: float
) -> None:
    """out = residual + dropout(x) (no residual: None) through the C kernel; all contiguous, one dtype."""
    fn = _c_kernel("dropout", x.dtype)
    threshold, scale, n = min(round(p * 2**32), 2**32 - 1), 1.0 / (1.0 - p), x.numel()  # uint32 threshold
    bounds = _chunk_bounds(n, n * _DROPOUT_WORK, "c")
    _run_c(lambda b, n, _: fn(_ptr(x), _ptr(residual), _ptr(out), seed, threshold, scale, b, n), bounds)


def state_update_fused(state, u, delta, A, B, C, D, z, impl: str) -> torch.Tensor:
    """`selective_state_update` over n tokens in one fused CPU call: the scan from h0 = state, its final
    state written straight into `state` (through a contiguous copy when state is not contiguous)."""
    dtype, out_dtype = state.dtype, u.dtype
    h = state if state.is_contiguous() else state.contiguous()
    Bt, Ct = (cast(t, dtype).transpose(1, 2).contiguous() for t in (B, C))
    A, D = (cast(t, dtype).contiguous() if t is not None else None for t in (A, D))
    u, delta, z = (cast(t, dtype) for t in (u, delta, z))
    y = fused_forward(impl, u, delta, A, Bt, Ct, D, z, h, h)
    if h is not state:
        state.copy_(h)
    return cast(y, out_dtype)
