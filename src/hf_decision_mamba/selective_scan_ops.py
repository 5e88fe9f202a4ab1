"""The fused CPU kernels as PyTorch custom operators: scan forward/backward, causal conv forward/backward,
dropout-add and the recurrent state update, each with a fake (shape-only) implementation and, where it
trains, a registered autograd formula. `torch.compile` and `torch.export` treat them as opaque ops: they
never trace into the ctypes / numba calls, and no graph breaks inside them.

Fake implementations allocate their outputs with the same helpers as the real ones (`_scan_out`,
`_grad_like`), so the traced strides are the strides the kernels write (inductor checks them).

The namespace is `hf_decision_mamba` for the installed package; a copy loaded as Hub remote code registers
under a name derived from its module path, so the package and any checkpoint's copy can live side by side.
"""

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .selective_scan_fused import (
    conv_call,
    dropout_call,
    empty_as,
    fused_backward,
    fused_forward,
    state_update_fused,
)
from .selective_scan_torch import compute_dtype


def _namespace() -> str:
    if __name__ == "hf_decision_mamba.selective_scan_ops":
        return "hf_decision_mamba"
    return "hf_decision_mamba_" + hashlib.sha1(__name__.encode()).hexdigest()[:12]


NAMESPACE = _namespace()
_EMPTY = (0,)  # shape of the placeholder returned for the gradient of an absent optional input


_IMPLS: dict[str, Callable] = {}  # op name -> its plain Python implementation (for the eager twins below)


def _op(name: str, mutates_args: tuple[str, ...] = ()):
    def register(fn: Callable):
        _IMPLS[name] = fn
        return torch.library.custom_op(
            f"{NAMESPACE}::{name}", fn, mutates_args=mutates_args, device_types="cpu"
        )

    return register


def _scan_out(impl: str, like: Tensor, dtype: torch.dtype) -> Tensor:
    """The (batch, dim, L) output buffer of the fused forward: `like`'s layout for C, contiguous for numba."""
    if impl == "c":
        return empty_as(like, dtype)
    return torch.empty(like.shape, dtype=dtype)


def _prepare(u, delta, A, B, C, D, z):
    """Inputs in the compute dtype: the (batch, dim, L) ones keep their strides (the C kernel reads any
    layout), the small ones contiguous, B and C time-major (batch, L, N)."""
    dtype = compute_dtype(u.dtype)
    uc, dc = u.detach().to(dtype), delta.detach().to(dtype)
    zc = z.detach().to(dtype) if z is not None else None
    Ac = A.detach().to(dtype).contiguous()
    Bt = B.detach().to(dtype).transpose(1, 2).contiguous()
    Ct = C.detach().to(dtype).transpose(1, 2).contiguous()
    Dc = D.detach().to(dtype).contiguous() if D is not None else None
    return uc, dc, Ac, Bt, Ct, Dc, zc


# -- selective scan ----------------------------------------------------------------------------------------


@_op("scan_fwd")
def scan_fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None, impl: str
) -> tuple[Tensor, Tensor]:
    """y (u's dtype) and the last state (batch, dim, N) in the compute dtype."""
    uc, dc, Ac, Bt, Ct, Dc, zc = _prepare(u, delta, A, B, C, D, z)
    last = uc.new_empty(uc.shape[0], uc.shape[1], Ac.shape[1])
    out = fused_forward(impl, uc, dc, Ac, Bt, Ct, Dc, zc, last)
    return out.to(u.dtype), last


@scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, impl):
    dtype = compute_dtype(u.dtype)
    like = (z if z is not None else u).to(dtype)
    return _scan_out(impl, like, dtype).to(u.dtype), u.new_empty(
        u.shape[0], u.shape[1], A.shape[1], dtype=dtype
    )


def _grad_like(impl: str, t: Tensor, dtype: torch.dtype) -> Tensor:
    """Layout of the backward's (batch, dim, L) gradients, as `fused_backward` allocates them."""
    return _scan_out(impl, t.to(compute_dtype(t.dtype)), dtype)


@_op("scan_bwd")
def scan_bwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dout: Tensor,
    dlast: Tensor | None,
    impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients for u, delta, A, B, C, D, z in each input's dtype (empty for an absent D or z). dlast None:
    the last state was not used (the kernel then takes its faster path)."""
    uc, dc, Ac, Bt, Ct, Dc, zc = _prepare(u, delta, A, B, C, D, z)
    dtype = uc.dtype
    du, ddelta, dA, dBt, dCt, dD, dz = fused_backward(
        impl,
        uc,
        dc,
        Ac,
        Bt,
        Ct,
        Dc,
        zc,
        dout.to(dtype),
        None if dlast is None else dlast.to(dtype).contiguous(),
    )
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA.to(A.dtype),
        dBt.transpose(1, 2).to(B.dtype),
        dCt.transpose(1, 2).to(C.dtype),
        dD.to(D.dtype) if D is not None else u.new_empty(_EMPTY),
        dz.to(z.dtype) if z is not None else u.new_empty(_EMPTY),
    )


@scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, dout, dlast, impl):
    return (
        _grad_like(impl, u, u.dtype),
        _grad_like(impl, delta if impl == "c" else u, delta.dtype),
        # dA: the C kernel sums it transposed; dB, dC: time-major sums, returned as (batch, N, L) views
        torch.empty(A.shape[::-1], dtype=A.dtype).t() if impl == "c" else torch.empty(A.shape, dtype=A.dtype),
        torch.empty(B.shape[0], B.shape[2], B.shape[1], dtype=B.dtype).transpose(1, 2),
        torch.empty(C.shape[0], C.shape[2], C.shape[1], dtype=C.dtype).transpose(1, 2),
        torch.empty(D.shape, dtype=D.dtype) if D is not None else u.new_empty(_EMPTY),
        _grad_like(impl, z, z.dtype) if z is not None else u.new_empty(_EMPTY),
    )


def _scan_setup(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, impl = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z)
    ctx.impl, ctx.bwd = impl, scan_bwd
    ctx.set_materialize_grads(False)  # an unused last state keeps dlast None


def _scan_backward(ctx, dout, dlast):
    u, delta, A, B, C, D, z = ctx.saved_tensors
    dout = torch.zeros_like(u) if dout is None else dout
    grads = ctx.bwd(u, delta, A, B, C, D, z, dout, dlast, ctx.impl)
    return (*grads[:5], grads[5] if D is not None else None, grads[6] if z is not None else None, None)


scan_fwd.register_autograd(_scan_backward, setup_context=_scan_setup)


# -- causal conv -------------------------------------------------------------------------------------------


@_op("conv_fwd")
def conv_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    """Depthwise causal conv (+ SiLU) of x (batch, L, C) with unit channel stride -> contiguous (batch, L, C)."""
    dtype = compute_dtype(x.dtype)
    wT = weight.detach().to(dtype).t().contiguous()  # (K, C): each tap's weights contiguous over channels
    bc = bias.detach().to(dtype).contiguous() if bias is not None else None
    out = torch.empty(x.shape, dtype=dtype)
    conv_call("fwd", x.detach().to(dtype), wT, bc, out, silu=silu)
    return out.to(x.dtype)


@conv_fwd.register_fake
def _(x, weight, bias, silu):
    return torch.empty(x.shape, dtype=x.dtype)


@_op("conv_bwd")
def conv_bwd(
    x: Tensor, weight: Tensor, bias: Tensor | None, dout: Tensor, silu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for x, weight and bias (empty without bias); the pre-activation is recomputed."""
    dtype = compute_dtype(x.dtype)
    xc = x.detach().to(dtype)
    wT = weight.detach().to(dtype).t().contiguous()
    bc = bias.detach().to(dtype).contiguous() if bias is not None else None
    dx, dwT = torch.zeros(x.shape, dtype=dtype), torch.zeros_like(wT)
    dbias = torch.zeros_like(bc) if bc is not None else None
    conv_call("bwd", xc, wT, bc, dout.to(dtype).contiguous(), dx, dwT, dbias, silu=silu)
    db = dbias.to(bias.dtype) if bias is not None else x.new_empty(_EMPTY)
    return dx.to(x.dtype), dwT.t().to(weight.dtype).contiguous(), db


@conv_bwd.register_fake
def _(x, weight, bias, dout, silu):
    db = torch.empty(bias.shape, dtype=bias.dtype) if bias is not None else x.new_empty(_EMPTY)
    return torch.empty(x.shape, dtype=x.dtype), torch.empty(weight.shape, dtype=weight.dtype), db


def _conv_setup(ctx, inputs, output) -> None:
    x, weight, bias, silu = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.silu, ctx.bwd = silu, conv_bwd


def _conv_backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dweight, dbias = ctx.bwd(x, weight, bias, dout, ctx.silu)
    return dx, dweight, dbias if bias is not None else None, None


conv_fwd.register_autograd(_conv_backward, setup_context=_conv_setup)


# -- dropout-add -------------------------------------------------------------------------------------------


@_op("dropout_add")
def dropout_add_fwd(x: Tensor, residual: Tensor | None, p: float) -> tuple[Tensor, Tensor]:
    """residual + dropout(x) for contiguous x (and residual) of one dtype, and the seed that drew the mask.

    The seed comes from torch's generator inside the op (so `torch.manual_seed` fixes it, and a compiled
    model draws exactly what eager draws); it is an output so that the backward regenerates the mask."""
    seed = torch.randint(0, 2**63 - 1, (), dtype=torch.int64)
    out = torch.empty_like(x)
    dropout_call(x, residual, out, int(seed), p)
    return out, seed


@dropout_add_fwd.register_fake
def _(x, residual, p):
    return torch.empty_like(x), torch.empty((), dtype=torch.int64)


@_op("dropout_bwd")
def dropout_bwd(dout: Tensor, seed: Tensor, p: float) -> Tensor:
    """The gradient of dropout(x): dout through the mask that `seed` draws."""
    dout = dout.contiguous()
    dx = torch.empty_like(dout)
    dropout_call(dout, None, dx, int(seed), p)
    return dx


@dropout_bwd.register_fake
def _(dout, seed, p):
    return torch.empty(dout.shape, dtype=dout.dtype)


def _dropout_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])
    ctx.p, ctx.has_residual, ctx.bwd = inputs[2], inputs[1] is not None, dropout_bwd


def _dropout_backward(ctx, dout, dseed):
    (seed,) = ctx.saved_tensors
    dx = ctx.bwd(dout, seed, ctx.p) if ctx.needs_input_grad[0] else None
    return dx, dout if ctx.has_residual and ctx.needs_input_grad[1] else None, None


dropout_add_fwd.register_autograd(_dropout_backward, setup_context=_dropout_setup)


# -- recurrent state update (inference) ----------------------------------------------------------------------


@_op("state_update", mutates_args=("state",))
def state_update(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    impl: str,
) -> Tensor:
    """n recurrent steps from `state` (batch, dim, N), written back into it; y in u's dtype."""
    return state_update_fused(state, u, delta, A, B, C, D, z, impl)


@state_update.register_fake
def _(state, u, delta, A, B, C, D, z, impl):
    like = (z if z is not None else u).to(state.dtype)
    return _scan_out(impl, like, state.dtype).to(u.dtype)


# -- the wrappers the dispatcher calls ---------------------------------------------------------------------
# In eager mode the dispatcher's round trip through a Python custom op costs about 0.1 ms a call, as much as
# a recurrent step's whole scan: eager calls go through an autograd.Function twin of each op instead, with
# the same implementation, setup and backward (the backward then calls the kernels directly too). Under
# torch.compile / torch.export the ops themselves are used.


def _eager_twin(name: str, backward_name: str, setup, backward) -> type[torch.autograd.Function]:
    """An autograd.Function running op `name`'s implementation, with its setup and backward formula, whose
    backward calls op `backward_name`'s implementation directly."""
    impl, backward_impl = _IMPLS[name], _IMPLS[backward_name]

    def forward(ctx, *inputs):
        output = impl(*inputs)
        setup(ctx, inputs, output)
        ctx.bwd = backward_impl
        return output

    methods = {"forward": staticmethod(forward), "backward": staticmethod(once_differentiable(backward))}
    return type(f"Eager_{name}", (torch.autograd.Function,), methods)


_EagerScan = _eager_twin("scan_fwd", "scan_bwd", _scan_setup, _scan_backward)
_EagerConv = _eager_twin("conv_fwd", "conv_bwd", _conv_setup, _conv_backward)
_EagerDropout = _eager_twin("dropout_add", "dropout_bwd", _dropout_setup, _dropout_backward)


def fused_scan(u, delta, A, B, C, D, z, impl: str) -> tuple[Tensor, Tensor]:
    """y and last state through the fused scan (differentiable in every tensor input and in last)."""
    if torch.compiler.is_compiling():
        return scan_fwd(u, delta, A, B, C, D, z, impl)
    return _EagerScan.apply(u, delta, A, B, C, D, z, impl)


def fused_conv(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    """The fused causal conv on x (batch, L, C) with unit channel stride."""
    if torch.compiler.is_compiling():
        return conv_fwd(x, weight, bias, silu)
    return _EagerConv.apply(x, weight, bias, silu)


def fused_dropout_add(x: Tensor, residual: Tensor | None, p: float) -> Tensor:
    """residual + dropout(x) through the fused kernel."""
    if torch.compiler.is_compiling():
        return dropout_add_fwd(x, residual, p)[0]
    return _EagerDropout.apply(x, residual, p)[0]


def fused_state_update(state, u, delta, A, B, C, D, z, impl: str) -> Tensor:
    """n recurrent steps from `state`, updated in place (inference only: no autograd)."""
    if torch.compiler.is_compiling():
        return state_update(state, u, delta, A, B, C, D, z, impl)
    return state_update_fused(state, u, delta, A, B, C, D, z, impl)
