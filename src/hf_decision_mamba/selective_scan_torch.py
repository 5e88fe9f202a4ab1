"""The pure PyTorch selective scan and recurrent state update: any device, differentiable by autograd; the
fallback of every backend and the reference the fused kernels are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fused and reference scans compute in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """t in dtype; skips the call when it already is (a no-op .to costs more than the check)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def scan_torch(u, delta, A, B, C, D=None, z=None, return_last_state=False):
    """Reference path: time-major decays and inputs, then a loop over time (autograd does the backward)."""
    dtype_in = u.dtype
    dtype = compute_dtype(u.dtype)
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


def state_update_torch(state, u, delta, A, B, C, D, z) -> torch.Tensor:
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
