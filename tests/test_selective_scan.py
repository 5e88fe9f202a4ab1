"""Specs for the selective scan op (hf_decision_mamba/selective_scan.py) and its three backends."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_decision_mamba import selective_scan as ss
from hf_decision_mamba import selective_scan_cbuild as cbuild
from hf_decision_mamba import selective_scan_fused as fused

SCAN_FILES = sorted(Path(ss.__file__).parent.glob("selective_scan*.py"))


def _impl_available(impl: str) -> bool:
    if impl == "torch":
        return True
    if impl == "c":
        return ss._load_c_lib() is not None
    return ss._load_numba() is not None


IMPLS = [
    pytest.param(
        impl, marks=pytest.mark.skipif(not _impl_available(impl), reason=f"{impl} kernel unavailable")
    )
    for impl in ("torch", "c", "numba")
]


def run_scan(impl: str, *args, **kwargs):
    """The scan through one implementation: pure torch, or the fused CPU kernel in C or numba."""
    if impl == "torch":
        return ss.selective_scan(*args, backend="torch", **kwargs)
    return ss._selective_scan_fused(*args, impl=impl, **kwargs)


def naive_scan(u, delta, A, B, C, D=None, z=None):
    """Per-timestep loop straight from the definition (float64). Returns y and the last state."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, length = u.shape
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        y = (h * C[:, None, :, t]).sum(-1)
        if D is not None:
            y = y + D.double() * u[:, :, t]
        ys.append(y)
    y = torch.stack(ys, dim=-1)
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(batch, dim, length, n, dtype=torch.float64, with_dz=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(batch, dim, length, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.randn(dim, n, generator=g, dtype=dtype))
    B = torch.randn(batch, n, length, generator=g, dtype=dtype)
    C = torch.randn(batch, n, length, generator=g, dtype=dtype)
    D = torch.randn(dim, generator=g, dtype=dtype) if with_dz else None
    z = torch.randn(batch, dim, length, generator=g, dtype=dtype) if with_dz else None
    return [u, delta, A, B, C, D, z]


def outputs_and_grads(fn, inputs, seed=1):
    """y, last_state, and the gradients of a random projection of both w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    y, last = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)
    gl = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.device, last.dtype)
    ((y * gy).sum() + (last * gl).sum()).backward()
    grads = [t.grad if t is not None else None for t in leaves]
    return [y, last, *grads]


NAMES = ["y", "last_state", "du", "ddelta", "dA", "dB", "dC", "dD", "dz"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_dz", [True, False], ids=["D_z", "plain"])
# (batch, dim, L, N): odd sizes, L == 1, and dims >= 16 so that the C kernel's 16-channel SIMD blocks run
# next to its one-channel leftover path (dim 35 = 2 blocks + 3 rows)
@pytest.mark.parametrize("shape", [(3, 5, 7, 4), (2, 3, 1, 16), (3, 4, 9, 16), (1, 2, 20, 8), (2, 35, 6, 16)])
def test_matches_naive_loop_values_and_gradients(impl, dtype, with_dz, shape):
    inputs = make_inputs(*shape, dtype=dtype, with_dz=with_dz)
    got = outputs_and_grads(lambda *a: run_scan(impl, *a, return_last_state=True), inputs)
    ref = outputs_and_grads(naive_scan, [t.double() if t is not None else None for t in inputs])
    rtol, atol = (1e-10, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    for name, a, r in zip(NAMES, got, ref, strict=True):
        if r is None:
            assert a is None, name
            continue
        assert a.shape == r.shape, name
        torch.testing.assert_close(a.double(), r, rtol=rtol, atol=atol * r.abs().max().item(), msg=name)
    assert got[0].dtype == dtype
    assert got[1].dtype == dtype  # float32 state for float32 inputs, float64 for float64


def _channels_last(t):
    """The same values as a (batch, dim, L) view of a (batch, L, dim) tensor, as a transposed linear layer's
    output is (differentiable)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_any_memory_layout_gives_the_same_values_and_gradients(impl):
    """u, delta, z as transposed / chunked views of (batch, L, channels) tensors, and a broadcast upstream
    gradient (y.sum()): same numbers as contiguous inputs."""
    inputs = make_inputs(2, 35, 9, 16, dtype=torch.float64, seed=9)

    def strided(u, delta, A, B, C, D, z):
        both = torch.cat([u.transpose(1, 2), z.transpose(1, 2)], dim=-1)  # (batch, L, 2 * dim), like in_proj
        u_view, z_view = both.transpose(1, 2).chunk(2, dim=1)  # non-dense views
        y, last = run_scan(impl, u_view, _channels_last(delta), A, B, C, D, z_view, return_last_state=True)
        if impl == "c":
            assert y.stride(1) == 1, "output should follow z's (batch, L, dim) layout"
        return y, last

    plain = outputs_and_grads(lambda *a: run_scan(impl, *a, return_last_state=True), inputs)
    views = outputs_and_grads(strided, inputs)
    for name, a, b in zip(NAMES, plain, views, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    # a broadcast (stride-0) upstream gradient
    leaves = [t.clone().requires_grad_() for t in inputs]
    strided(*leaves)[0].sum().backward()
    ref = [t.clone().requires_grad_() for t in inputs]
    naive_scan(*ref)[0].sum().backward()
    for name, a, b in zip(NAMES[2:], leaves, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_delta_prefix_is_exact_padding(impl):
    """delta == 0 on a left padding leaves h at 0, whatever u, B, C hold there: the real positions see
    exactly what they would see without the padding."""
    pad, real = 5, 9
    u, delta, A, B, C, D, z = make_inputs(2, 20, pad + real, 16, dtype=torch.float32, seed=3)
    delta = delta.clone()
    delta[:, :, :pad] = 0.0
    u[:, :, :pad] *= 100.0  # garbage in the padding
    y_pad, last_pad = run_scan(impl, u, delta, A, B, C, D, z, return_last_state=True)
    cut = [u[..., pad:], delta[..., pad:], A, B[..., pad:], C[..., pad:], D, z[..., pad:]]
    y_cut, last_cut = run_scan(impl, *[t.contiguous() for t in cut], return_last_state=True)
    assert (y_pad[..., pad:] - y_cut).abs().max().item() <= 1e-6
    assert (last_pad - last_cut).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    ("impl", "openmp"),
    [  # numba always runs on Python helper threads
        pytest.param(impl, openmp, marks=IMPLS[index].marks, id=f"{impl}-{'openmp' if openmp else 'threads'}")
        for index, impl, openmp in ((1, "c", True), (1, "c", False), (2, "numba", False))
    ],
)
def test_fused_cpu_is_deterministic_across_thread_chunks(monkeypatch, impl, openmp):
    """Splitting rows over threads (chunk boundaries inside a batch element) gives the same answer, on
    OpenMP threads or on Python helper threads."""
    if impl == "c" and openmp and not cbuild._c_openmp:
        pytest.skip("C kernel built without OpenMP")
    if impl == "c" and not openmp:
        monkeypatch.setattr(cbuild, "_c_openmp", False)
    inputs = make_inputs(3, 35, 11, 16, dtype=torch.float64, seed=4)
    fn = lambda *a: run_scan(impl, *a, return_last_state=True)  # noqa: E731
    monkeypatch.setenv(ss._THREADS_ENV, "1")
    one = outputs_and_grads(fn, inputs)
    monkeypatch.setattr(fused, "_num_chunks", lambda rows, work, impl: 4)
    four = outputs_and_grads(fn, inputs)
    for name, a, b in zip(NAMES, one, four, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def _scan_in_child(queue, inputs):
    queue.put(ss.selective_scan(*inputs, backend="fused_cpu").tolist())  # plain data: no shared memory


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fused_cpu_works_in_a_forked_child_after_parallel_use(monkeypatch):
    """DataLoader-style fork after the parent ran the scan on several threads: the child must not hang
    on the parent's (dead) OpenMP pool."""
    import multiprocessing

    if ss._fused_impl() is None:
        pytest.skip("fused_cpu unavailable")
    inputs = make_inputs(4, 64, 30, 16, dtype=torch.float32, seed=8)
    monkeypatch.setattr(fused, "_num_chunks", lambda rows, work, impl: 2)
    expected = ss.selective_scan(*inputs, backend="fused_cpu")
    monkeypatch.undo()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_scan_in_child, args=(queue, inputs))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    torch.testing.assert_close(torch.tensor(got), expected)


def test_fused_cpu_keeps_low_precision_dtypes():
    """bfloat16 activations are computed in float32 and come back (with their grads) in their own dtype."""
    if ss._fused_impl() is None:
        pytest.skip("fused_cpu unavailable")
    u, delta, A, B, C, D, z = make_inputs(2, 4, 6, 8, dtype=torch.float32)
    low = [t.bfloat16().requires_grad_() for t in (u, delta, B, C, z)]
    A, D = A.requires_grad_(), D.requires_grad_()
    y = ss.selective_scan(low[0], low[1], A, low[2], low[3], D, low[4], backend="fused_cpu")
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 for t in low)
    assert A.grad.dtype == torch.float32 and D.grad.dtype == torch.float32


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_state_update_and_conv_update_step_through_the_sequence(backend):
    """Recurrent inference (conv state + SSM state, one token at a time) reproduces the parallel pass."""
    batch, dim, length, n, width = 2, 6, 10, 16, 4
    u, delta, A, B, C, D, z = make_inputs(batch, dim, length, n, dtype=torch.float32, seed=5)
    weight = torch.randn(dim, width)
    bias = torch.randn(dim)
    x_conv = ss.causal_conv1d(u, weight, bias, activation="silu", backend=backend)
    y_par, last = ss.selective_scan(x_conv, delta, A, B, C, D, z, return_last_state=True, backend=backend)

    conv_state = torch.zeros(batch, dim, width)
    ssm_state = torch.zeros(batch, dim, n)
    for t in range(length):
        xc = ss.causal_conv1d_update(u[:, :, t], conv_state, weight, bias, activation="silu", backend=backend)
        torch.testing.assert_close(xc, x_conv[:, :, t], rtol=1e-5, atol=1e-5)
        y = ss.selective_state_update(
            ssm_state, xc, delta[:, :, t], A, B[:, :, t], C[:, :, t], D, z[:, :, t], backend=backend
        )
        torch.testing.assert_close(y, y_par[:, :, t], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ssm_state, last, rtol=1e-4, atol=1e-5)


FUSED_IMPLS = IMPLS[1:]  # "c", "numba"


def _model_views(u, delta, B, C, z):
    """The layouts DecisionMambaMixer.step passes: u, delta, z (batch, dim, n) as transposed views of
    (batch, n, dim) tensors (u and z chunks of one in_proj output), B and C (batch, N, n) views of one
    (batch, n, 2N) tensor."""
    u_view, z_view = torch.cat([u.transpose(1, 2), z.transpose(1, 2)], dim=-1).transpose(1, 2).chunk(2, dim=1)
    B_view, C_view = torch.cat([B.transpose(1, 2), C.transpose(1, 2)], dim=-1).transpose(1, 2).chunk(2, dim=1)
    return u_view, _channels_last(delta), B_view, C_view, z_view


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("state_size", [16, 5])  # 16: float32's specialised kernel; dim 35: blocks + rows
def test_fused_state_update_continues_a_scan(monkeypatch, impl, dtype, n, state_size):
    """n new tokens from the state of a previous scan, through the fused CPU kernel: the same y and state
    as the torch update, and as the last n columns and final state of one scan over the whole history."""
    monkeypatch.setenv(ss._FUSED_IMPL_ENV, impl)
    prefix = 6
    u, delta, A, B, C, D, z = make_inputs(3, 35, prefix + n, state_size, dtype=dtype, seed=10 + n)
    y_all, last_all = ss.selective_scan(u, delta, A, B, C, D, z, return_last_state=True, backend="torch")
    head = [t[..., :prefix] for t in (u, delta, B, C)]
    _, state = ss.selective_scan(*head[:2], A, *head[2:], return_last_state=True, backend="torch")
    new = _model_views(*(t[..., prefix:] for t in (u, delta, B, C, z)))
    fused_state, torch_state = state.clone(), state.clone()
    with torch.inference_mode():
        y = ss.selective_state_update(fused_state, *new[:2], A, *new[2:4], D, new[4], backend="fused_cpu")
        y_torch = ss._state_update_torch(torch_state, *new[:2], A, *new[2:4], D, new[4])
    rtol, atol = (1e-10, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    assert y.dtype == dtype and y.shape == (3, 35, n)
    torch.testing.assert_close(y, y_torch, rtol=rtol, atol=atol)
    torch.testing.assert_close(fused_state, torch_state, rtol=rtol, atol=atol)
    torch.testing.assert_close(y, y_all[..., prefix:], rtol=rtol, atol=atol)
    torch.testing.assert_close(fused_state, last_all, rtol=rtol, atol=atol)


@pytest.mark.parametrize("impl", FUSED_IMPLS)
def test_fused_single_token_update_and_odd_layouts(monkeypatch, impl):
    """The 2-D (one token) form through the fused kernel, into a non-contiguous state, with float32 inputs
    on a float64 state: the same as the torch update."""
    monkeypatch.setenv(ss._FUSED_IMPL_ENV, impl)
    u, delta, A, B, C, D, z = make_inputs(2, 20, 1, 16, dtype=torch.float32, seed=11)
    start = torch.randn(2, 16, 20, dtype=torch.float64).transpose(1, 2)  # (batch, dim, N), not contiguous
    fused_state, torch_state = start.clone(), start.clone()
    step = [t[..., 0] for t in (u, delta, B, C, z)]
    with torch.inference_mode():
        y = ss.selective_state_update(fused_state, *step[:2], A, *step[2:4], D, step[4], backend="fused_cpu")
        y_torch = ss.selective_state_update(
            torch_state, *step[:2], A, *step[2:4], D, step[4], backend="torch"
        )
    assert y.shape == (2, 20) and y.dtype == torch.float32
    assert not fused_state.is_contiguous()
    torch.testing.assert_close(y, y_torch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_state, torch_state, rtol=1e-12, atol=1e-12)


def test_state_update_with_gradients_takes_the_differentiable_path():
    """Outside inference mode, inputs that require grad go through torch: y keeps its autograd graph."""
    if ss._fused_impl() is None:
        pytest.skip("fused_cpu unavailable")
    u, delta, A, B, C, D, z = make_inputs(2, 4, 2, 8, dtype=torch.float32, seed=12)
    u.requires_grad_()
    y = ss.selective_state_update(torch.zeros(2, 4, 8), u, delta, A, B, C, D, z, backend="fused_cpu")
    y.sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_causal_conv1d_is_causal_and_matches_definition():
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    out = ss.causal_conv1d(x, w, b, activation=None)
    ref = torch.zeros_like(x)
    for t in range(8):
        for k in range(4):  # weight[:, -1] multiplies the current input
            if t - (3 - k) >= 0:
                ref[:, :, t] += w[:, k] * x[:, :, t - (3 - k)]
    torch.testing.assert_close(out, ref + b[:, None])
    torch.testing.assert_close(ss.causal_conv1d(x, w, b), F.silu(ref + b[:, None]))


@pytest.mark.skipif(not _impl_available("c"), reason="C kernel unavailable")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
# (batch, dim, L, width): SIMD-sized and odd channel counts, L shorter than the kernel, another width
@pytest.mark.parametrize("shape", [(3, 35, 7, 4), (2, 64, 30, 4), (2, 20, 2, 4), (1, 16, 9, 3)])
def test_fused_conv_on_channels_last_inputs_matches_conv1d(dtype, activation, with_bias, shape):
    batch, dim, L, width = shape
    generator = torch.Generator().manual_seed(3)
    # x as a transposed linear layer's half: a (batch, dim, L) view with unit channel stride
    wide = torch.randn(batch, L, 2 * dim, dtype=dtype, generator=generator, requires_grad=True)
    w = torch.randn(dim, width, dtype=dtype, generator=generator, requires_grad=True)
    b = torch.randn(dim, dtype=dtype, generator=generator, requires_grad=True) if with_bias else None
    leaves = [t for t in (wide, w, b) if t is not None]
    x = wide[..., :dim].transpose(1, 2)
    grad_out = torch.randn(batch, dim, L, dtype=dtype, generator=generator)

    def values_and_grads(out):
        grads = torch.autograd.grad((out * grad_out).sum(), leaves)
        return [out, *grads]

    fused = values_and_grads(ss.causal_conv1d(x, w, b, activation, backend="fused_cpu"))
    ref = F.conv1d(x, w.unsqueeze(1), b, padding=width - 1, groups=dim)[..., :L]
    reference = values_and_grads(F.silu(ref) if activation else ref)
    assert fused[0].stride(1) == 1, "channels-last in, channels-last out"
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for name, got, expected in zip(["out", "dx", "dweight", "dbias"], fused, reference, strict=False):
        torch.testing.assert_close(got, expected, **tolerance, msg=name)


needs_c = pytest.mark.skipif(not _impl_available("c"), reason="C kernel unavailable")


@needs_c
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fused_dropout_drops_a_fraction_p_scales_the_rest_and_routes_gradients_through_the_same_mask(
    dtype, with_residual, p
):
    n = 300_007  # enough work for two threads where there are two, and not a multiple of the chunk alignment
    x = (torch.rand(n, dtype=dtype) + 0.5).requires_grad_()  # never zero: a zero output means dropped
    residual = torch.randn(n, dtype=dtype, requires_grad=True) if with_residual else None
    out = ss.dropout_add(x, p, residual, backend="fused_cpu")
    dropped = out - residual if with_residual else out
    kept = dropped != 0
    assert abs(1 - kept.double().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(dropped[kept], x[kept] / (1 - p))
    # neighbouring draws are independent: P(both kept) ~ (1 - p)^2
    both = (kept[1:] & kept[:-1]).double().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * (1 / n) ** 0.5
    grad_out = torch.randn(n, dtype=dtype)
    out.backward(grad_out)
    torch.testing.assert_close(x.grad, torch.where(kept, grad_out / (1 - p), torch.zeros_like(grad_out)))
    if with_residual:
        torch.testing.assert_close(residual.grad, grad_out)


@needs_c
def test_fused_dropout_follows_torch_manual_seed_and_draws_a_new_mask_per_call():
    x = torch.ones(4096)
    torch.manual_seed(0)
    first, second = ss.dropout_add(x, 0.3, backend="fused_cpu"), ss.dropout_add(x, 0.3, backend="fused_cpu")
    torch.manual_seed(0)
    again = ss.dropout_add(x, 0.3, backend="fused_cpu")
    assert torch.equal(first, again)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_dropout_add_without_training_or_with_p_zero_is_the_plain_sum(backend):
    x, residual = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.testing.assert_close(
        ss.dropout_add(x, 0.4, residual, training=False, backend=backend), residual + x
    )
    torch.testing.assert_close(ss.dropout_add(x, 0.0, residual, backend=backend), residual + x)
    assert torch.equal(ss.dropout_add(x, 1.0, backend=backend), torch.zeros_like(x))
    assert torch.equal(ss.dropout_add(torch.ones(4096), 1 - 1e-12, backend=backend), torch.zeros(4096))
    with pytest.raises(ValueError, match="dropout probability"):
        ss.dropout_add(x, 1.5, residual, backend=backend)


def test_dropout_add_on_the_torch_backend_is_torch_dropout():
    x, residual = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.manual_seed(1)
    got = ss.dropout_add(x, 0.2, residual, backend="torch")
    torch.manual_seed(1)
    torch.testing.assert_close(got, residual + F.dropout(x, 0.2))


def test_resolve_backend_auto_and_errors():
    cpu = torch.zeros(1)
    if importlib.util.find_spec("numba") is not None:
        assert ss.resolve_backend("auto", cpu) == "fused_cpu"
    assert ss.resolve_backend("torch", cpu) == "torch"
    assert ss.available_backends()[-1] == "torch"
    with pytest.raises(ValueError, match="no_such_backend"):
        ss.resolve_backend("no_such_backend", cpu)
    with pytest.raises(ValueError, match="no_such_backend"):
        ss.selective_scan(*make_inputs(1, 2, 3, 4)[:5], backend="no_such_backend")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            ss.resolve_backend("cuda", cpu)


def test_fused_impl_can_be_forced_by_environment(monkeypatch):
    monkeypatch.setenv(ss._FUSED_IMPL_ENV, "numba")
    assert ss._fused_impl() in ("numba", None)
    monkeypatch.setenv(ss._FUSED_IMPL_ENV, "fortran")
    with pytest.raises(ValueError, match="fortran"):
        ss._fused_impl()


def test_bad_shapes_are_rejected_before_reaching_a_kernel():
    u, delta, A, B, C, D, z = make_inputs(2, 3, 5, 4)
    with pytest.raises(ValueError, match="B has shape"):
        ss.selective_scan(u, delta, A, B.transpose(1, 2), C)


@pytest.mark.parametrize("backend", ["torch", "fused_cpu"])
def test_conv_weights_for_another_width_are_rejected_before_reaching_a_kernel(backend):
    """More channels than weights would make the C kernel read past the weight buffer."""
    if backend not in ss.available_backends():
        pytest.skip(f"{backend} unavailable")
    x = torch.randn(2, 5, 40).transpose(1, 2)  # (batch, 40 channels, L=5), channels-last
    with pytest.raises(ValueError, match=r"causal_conv1d: x \(2, 40, 5\) and weight \(16, 4\)"):
        ss.causal_conv1d(x, torch.randn(16, 4), None, backend=backend)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\), expected \(40,\)"):
        ss.causal_conv1d(x, torch.randn(40, 4), torch.randn(3), backend=backend)


def test_loading_the_c_kernel_keeps_denormals():
    """-ffast-math must not link crtfastmath (it would set flush-to-zero for the whole process)."""
    if ss._load_c_lib() is None:
        pytest.skip("no C compiler")
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() > 0.0
    x = float.fromhex("0x0.0000000000001p-1022")
    assert x * 1.0 > 0.0


def _stdlib() -> set[str]:
    return set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("path", SCAN_FILES, ids=lambda path: path.name)
def test_scan_files_are_loadable_as_remote_code(path):
    """Top-level imports are stdlib + torch only, plus flat sibling `selective_scan*` files imported
    relatively (so the remote-code file list follows them); optional packages live inside try blocks."""
    allowed = _stdlib() | {"torch"}
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    assert set(get_imports(path)) <= allowed
    siblings = set(get_relative_imports(path))
    assert all(
        name.startswith("selective_scan") and (path.parent / f"{name}.py").is_file() for name in siblings
    )
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= allowed
        elif isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module in siblings, "only flat scan siblings, by name"
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in allowed


def test_the_dispatcher_reaches_every_scan_file():
    """Shipping selective_scan.py ships its siblings: transformers follows relative imports from it."""
    from transformers.dynamic_module_utils import get_relative_import_files

    reached = {Path(name).name for name in get_relative_import_files(str(Path(ss.__file__)))}
    assert reached | {"selective_scan.py"} == {path.name for path in SCAN_FILES}


def test_cuda_dispatch_calls_the_kernels_with_their_signatures(monkeypatch):
    """Without a GPU: stand-ins with mamba_ssm / causal_conv1d's signatures check what the "cuda" path
    passes (delta already positive: no bias, no softplus; A and D float32; step kernels in place)."""
    calls = []

    def scan_fn(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
    ):
        calls.append("scan")
        assert delta_bias is None and delta_softplus is False
        assert A.dtype == torch.float32 and (D is None or D.dtype == torch.float32)
        assert delta.dtype == B.dtype == C.dtype == u.dtype
        return ss._selective_scan_torch(u, delta, A, B, C, D, z, return_last_state)

    def conv_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                final_states_out=None, activation=None):  # fmt: skip
        calls.append("conv")
        return ss.causal_conv1d(x, weight, bias, activation, backend="torch")

    def conv_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
        calls.append("conv_update")
        return ss.causal_conv1d_update(x, conv_state, weight, bias, activation, backend="torch")

    def state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
        calls.append("state_update")
        assert dt_bias is None and dt_softplus is False
        return ss.selective_state_update(state, x, dt, A, B, C, D, z, backend="torch")

    kernels = {"scan": scan_fn, "conv": conv_fn, "conv_update": conv_update, "state_update": state_update}
    monkeypatch.setattr(ss, "_cuda_kernels", kernels)
    monkeypatch.setattr(
        ss, "resolve_backend", lambda backend, tensor: "cuda" if backend == "auto" else backend
    )
    u, delta, A, B, C, D, z = make_inputs(2, 4, 5, 8, dtype=torch.float32)
    y, last = ss.selective_scan(u, delta, A, B, C, D, z, return_last_state=True)
    ref_y, ref_last = naive_scan(u, delta, A, B, C, D, z)
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)
    weight, state, conv_state = torch.randn(4, 4), torch.zeros(2, 4, 8), torch.zeros(2, 4, 4)
    ss.causal_conv1d(u, weight, None)
    ss.causal_conv1d_update(u[:, :, 0], conv_state, weight, None)
    ss.selective_state_update(state, u[:, :, 0], delta[:, :, 0], A, B[:, :, 0], C[:, :, 0], D, z[:, :, 0])
    assert calls == ["scan", "conv", "conv_update", "state_update"]


def _mamba_kernels_importable() -> bool:
    return torch.cuda.is_available() and bool(ss._load_cuda_kernels())


@pytest.mark.gpu
@pytest.mark.skipif(
    not _mamba_kernels_importable(), reason="needs a CUDA GPU with mamba_ssm and causal_conv1d importable"
)
@pytest.mark.parametrize("with_dz", [True, False], ids=["D_z", "plain"])
def test_cuda_kernel_matches_torch(with_dz):
    inputs = [
        t.float().cuda() if t is not None else None
        for t in make_inputs(4, 64, 50, 16, dtype=torch.float32, with_dz=with_dz, seed=6)
    ]

    def cuda_scan(*a):
        y, last = ss.selective_scan(*a, return_last_state=True, backend="cuda")
        return y, last.detach()  # the CUDA kernel does not backpropagate through last_state

    def torch_scan(*a):
        y, last = ss.selective_scan(*a, return_last_state=True, backend="torch")
        return y, last.detach()

    got = outputs_and_grads(cuda_scan, inputs)
    ref = outputs_and_grads(torch_scan, inputs)
    for name, a, r in zip(NAMES, got, ref, strict=True):
        if r is None:
            continue
        rel = ((a.float() - r.float()).norm() / r.float().norm().clamp_min(1e-12)).item()
        assert rel < 1e-3, f"{name}: relative error {rel:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(
    not _mamba_kernels_importable(), reason="needs a CUDA GPU with mamba_ssm and causal_conv1d importable"
)
def test_cuda_step_kernels_match_parallel():
    batch, dim, length, n, width = 2, 64, 12, 16, 4
    u, delta, A, B, C, D, z = (
        t.cuda() for t in make_inputs(batch, dim, length, n, dtype=torch.float32, seed=7)
    )
    weight = torch.randn(dim, width, device="cuda")
    bias = torch.randn(dim, device="cuda")
    x_conv = ss.causal_conv1d(u, weight, bias, backend="cuda")
    torch.testing.assert_close(
        x_conv, ss.causal_conv1d(u, weight, bias, backend="torch"), rtol=1e-4, atol=1e-4
    )
    y_par = ss.selective_scan(x_conv, delta, A, B, C, D, z, backend="cuda")
    conv_state = torch.zeros(batch, dim, width, device="cuda")
    ssm_state = torch.zeros(batch, dim, n, device="cuda")
    for t in range(length):
        xc = ss.causal_conv1d_update(u[:, :, t], conv_state, weight, bias, backend="cuda")
        y = ss.selective_state_update(ssm_state, xc, delta[:, :, t], A, B[:, :, t], C[:, :, t], D, z[:, :, t])
        torch.testing.assert_close(y, y_par[:, :, t], rtol=1e-3, atol=1e-3)


# -- the fused kernels as custom operators ------------------------------------------------------------------


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """The same (batch, dim, L) values laid out (batch, L, dim) in memory, as a transposed linear output."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("impl", [p for p in IMPLS if p.values[0] != "torch"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("with_dz", [True, False], ids=["D_z", "plain"])
def test_scan_ops_pass_opcheck(impl, layout, with_dz):
    """Schema, fake implementation (shapes, dtypes and strides the kernel writes), autograd registration
    and AOT dispatch agree with the real kernels: torch.compile and torch.export can trust them."""
    from hf_decision_mamba import selective_scan_ops as ops

    u, delta, A, B, C, D, z = make_inputs(2, 20, 7, 4, dtype=torch.float32, with_dz=with_dz)
    if layout == "channels_last":
        u, delta = _channels_last(u), _channels_last(delta)
        z = _channels_last(z) if z is not None else None
    leaves = [t.requires_grad_() if t is not None else None for t in (u, delta, A, B, C, D, z)]
    torch.library.opcheck(ops.scan_fwd, (*leaves, impl), test_utils=OPCHECK_TESTS)
    y, last = ops.scan_fwd(*(t.detach() if t is not None else None for t in leaves), impl)
    dout, dlast = torch.randn_like(y), torch.randn_like(last)
    torch.library.opcheck(
        ops.scan_bwd, (u, delta, A, B, C, D, z, dout, dlast, impl), test_utils=OPCHECK_TESTS[:3]
    )


@pytest.mark.skipif(not _impl_available("c"), reason="C kernel unavailable")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_conv_dropout_and_state_update_ops_pass_opcheck(with_bias):
    from hf_decision_mamba import selective_scan_ops as ops

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, 16, generator=g).requires_grad_()  # (batch, L, C), unit channel stride
    weight = torch.randn(16, 4, generator=g).requires_grad_()
    bias = torch.randn(16, generator=g).requires_grad_() if with_bias else None
    torch.library.opcheck(ops.conv_fwd, (x, weight, bias, True), test_utils=OPCHECK_TESTS)
    residual = torch.randn(2, 9, 16, generator=g).requires_grad_()
    # the dropout draws its seed inside the op: only the checks that do not compare two calls' outputs
    torch.library.opcheck(
        ops.dropout_add_fwd, (x, residual if with_bias else None, 0.3), test_utils=OPCHECK_TESTS[:3]
    )
    u, delta, A, B, C, D, z = make_inputs(2, 20, 3, 4, dtype=torch.float32, with_dz=with_bias)
    state = torch.randn(2, 20, 4, generator=g)
    torch.library.opcheck(
        ops.state_update, (state, u, delta, A, B, C, D, z, "c"), test_utils=OPCHECK_TESTS[:3]
    )
