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

This file is the dispatcher and public API. Its siblings, each one concern: ``selective_scan_torch`` (the
reference), ``selective_scan_ops`` (the fused kernels as PyTorch custom operators, so ``torch.compile`` and
``torch.export`` treat them as opaque ops), ``selective_scan_fused`` (running the kernels: threads, layouts),
``selective_scan_cbuild`` (compiling and loading the C library), ``selective_scan_csrc`` (its C source) and
``selective_scan_numba`` (the numba twin). All are shipped as Hugging Face remote code: flat siblings with
relative imports, whose top-level imports are the standard library and ``torch`` only; every optional
package is imported inside ``try`` blocks.

Notes for callers:

* Any layout is accepted (inputs are made contiguous inside); ``fused_cpu`` computes in float32 (float64
  for float64 inputs) and returns y in u's dtype, gradients in each input's dtype.
* ``fused_cpu`` (C, OpenMP) runs on torch's own OpenMP thread pool (the library links the libgomp that torch
  already loaded), with ``torch.get_num_threads()`` threads: no extra threads, no oversubscription. The
  numba / no-OpenMP fallbacks run on one thread unless ``HF_DECISION_MAMBA_THREADS`` says otherwise.
* Under ``torch.compile`` the ``"cuda"`` kernels run behind ``torch.compiler.disable`` (a graph break around
  each call); the ``fused_cpu`` and ``torch`` paths compile without graph breaks.
* ``last_state`` is differentiable on the ``fused_cpu`` and ``torch`` paths; mamba_ssm's CUDA kernel ignores
  its gradient. The backward of ``fused_cpu`` is not itself differentiable (no double backward).
* ``selective_state_update`` (recurrent acting, inference only) runs on CPU as one call of the fused forward
  started from the given state, which it overwrites in place; with gradients needed it falls back to torch.
* Environment: ``HF_DECISION_MAMBA_FUSED_IMPL`` = ``c`` | ``numba`` forces one fused implementation;
  ``HF_DECISION_MAMBA_THREADS`` sets the fused scan's thread count; ``HF_DECISION_MAMBA_CACHE`` moves the
  compiled-kernel cache; ``CC`` picks the compiler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .selective_scan_cbuild import c_failed, load_c_lib
from .selective_scan_fused import _FUSED_IMPL_ENV, _THREADS_ENV, fused_impl  # noqa: F401 (env names)
from .selective_scan_numba import load_numba, numba_failed
from .selective_scan_ops import fused_conv, fused_dropout_add, fused_scan, fused_state_update
from .selective_scan_torch import scan_torch, state_update_torch

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

# names kept for callers of the single-file module (tests, scripts)
_load_c_lib, _load_numba = load_c_lib, load_numba
# the implementation is a per-process constant: under torch.compile it is read once, not traced
_fused_impl = torch.compiler.assume_constant_result(fused_impl)
_selective_scan_torch, _state_update_torch = scan_torch, state_update_torch

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


@torch.compiler.assume_constant_result
def _cuda_usable() -> bool:
    return bool(_load_cuda_kernels()) and torch.cuda.is_available()


@torch.compiler.disable
def _cuda_kernel(name: str, *args, **kwargs):
    """Call one of the optional CUDA kernels; under torch.compile a graph break (they are not traceable)."""
    return _load_cuda_kernels()[name](*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Fused CPU path (the kernels are custom operators: see selective_scan_ops)
# ----------------------------------------------------------------------------------------------------------


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
        raise RuntimeError(f"fused_cpu C kernel unavailable: {c_failed()}")
    elif impl == "numba" and _load_numba() is None:
        raise RuntimeError(f"fused_cpu numba kernel unavailable: {numba_failed()}")
    y, last = fused_scan(u, delta, A, B, C, D, z, impl)
    return (y, last) if return_last_state else y


def _selective_scan_cuda(u, delta, A, B, C, D=None, z=None, return_last_state=False):
    """mamba_ssm's kernel: delta is already positive (no bias, no softplus). The kernel wants delta, B, C, z
    in u's dtype and A, D in float32; it ignores the gradient of last_state."""
    dt = u.dtype
    return _cuda_kernel(
        "scan",
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
                f"backend 'fused_cpu' unavailable: C kernel: {c_failed()}; numba: {numba_failed() or 'disabled'}"
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
    return scan_torch(u, delta, A, B, C, D, z, return_last_state)


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
        return _cuda_kernel(
            "state_update", state, u, delta, A, B, C, D=D, z=z, dt_bias=None, dt_softplus=False
        )
    last = lambda t: None if t is None else t[..., None]  # noqa: E731
    return _state_update_steps(name, state, *map(last, (u, delta)), A, *map(last, (B, C)), D, last(z))[..., 0]


def _state_update_steps(name, state, u, delta, A, B, C, D, z) -> torch.Tensor:
    """The n-token update on the resolved backend `name`: the fused CPU kernel when it applies, else torch."""
    fused = name == "fused_cpu" and state.dtype in (torch.float32, torch.float64)
    if fused and torch.is_grad_enabled():  # the fused kernel has no autograd here: keep gradients right
        fused = not any(t is not None and t.requires_grad for t in (state, u, delta, A, B, C, D, z))
    if fused:
        return fused_state_update(state, u, delta, A, B, C, D, z, _fused_impl())
    return state_update_torch(state, u, delta, A, B, C, D, z)


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
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"causal_conv1d: x {tuple(x.shape)} and weight {tuple(weight.shape)}: expected (batch, dim, L) "
            "and (dim, width)"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"causal_conv1d: bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    name = resolve_backend(backend, x)
    if name == "cuda":
        return _cuda_kernel("conv", x, weight, bias, activation=activation)
    if name == "fused_cpu" and x.stride(1) == 1 and _fused_impl() == "c":  # channels-last: no layout copies
        return fused_conv(x.transpose(1, 2), weight, bias, activation is not None).transpose(1, 2)
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
        return fused_dropout_add(x, residual, p)
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
        return _cuda_kernel("conv_update", x, conv_state, weight, bias, activation=activation)
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x.to(conv_state.dtype)
    out = (conv_state * weight.to(conv_state.dtype)).sum(-1)
    if bias is not None:
        out = out + bias.to(out.dtype)
    out = F.silu(out) if activation is not None else out
    return out.to(x.dtype)
