"""Time the selective scan per backend: forward and forward+backward, at Decision Mamba "hopper size".

Wall times (median and min) and the process CPU time summed over threads (cpu) are printed; on a busy
machine the min and the cpu columns are the more telling ones.

python scripts/benchmark_scan.py                 # batch 64, dim 256, N 16, L 60 and 300
python scripts/benchmark_scan.py --compile-times # also first-call compile/load times, cold and warm cache
python scripts/benchmark_scan.py --state-update  # also selective_state_update (batch 10, n 3 tokens) per call
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

try:
    from hf_decision_mamba import selective_scan as ss
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from hf_decision_mamba import selective_scan as ss


def make_inputs(
    batch: int,
    dim: int,
    length: int,
    n: int,
    device: str,
    dtype: torch.dtype,
    gated: bool,
    layout: str = "bdl",
):
    """Random inputs shaped like a Mamba block's (delta already softplus'ed, A = -exp(A_log)). layout "bld":
    u, delta, z are transposed views of (batch, L, dim) tensors, as a Mamba block's linear layers give them."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    delta = torch.nn.functional.softplus(torch.randn(batch, dim, length, generator=g) - 3).to(dtype)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(batch, n, length, generator=g, dtype=dtype)
    C = torch.randn(batch, n, length, generator=g, dtype=dtype)
    D = torch.ones(dim)
    z = torch.randn(batch, dim, length, generator=g, dtype=dtype) if gated else None
    if layout == "bld":
        u, delta = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta))
        z = z.transpose(1, 2).contiguous().transpose(1, 2) if z is not None else None
    tensors = [u, delta, A, B, C, D, z]
    return [t.to(device).requires_grad_() if t is not None else None for t in tensors]


def timed(fn, repeats: int, warmup: int, device: str) -> tuple[float, float, float]:
    """Median and min wall time, and median process CPU time (all threads), in ms."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def bench_one(label: str, scan, inputs, repeats: int, warmup: int, device: str) -> None:
    u = inputs[0]
    grad = torch.randn_like(u)
    params = [t for t in inputs if t is not None]

    def fwd():
        with torch.no_grad():
            scan(*inputs)

    def fwd_bwd():
        out = scan(*inputs)
        torch.autograd.grad(out, params, grad)

    f_med, f_min, f_cpu = timed(fwd, repeats, warmup, device)
    fb_med, fb_min, fb_cpu = timed(fwd_bwd, repeats, warmup, device)
    print(
        f"  {label:<18} forward {f_med:8.2f} ms (min {f_min:7.2f}, cpu {f_cpu:7.2f})   "
        f"forward+backward {fb_med:8.2f} ms (min {fb_min:7.2f}, cpu {fb_cpu:7.2f})",
        flush=True,
    )


def bench_state_update(batch: int, dim: int, n: int, tokens: int, repeats: int) -> None:
    """Per-call time of selective_state_update (recurrent acting), inputs laid out as the model has them."""
    u, delta, A, B, C, D, z = make_inputs(batch, dim, tokens, n, "cpu", torch.float32, True, "bld")
    args = [t.detach() for t in (u, delta, A, B, C, D, z)]
    state = torch.zeros(batch, dim, n)
    print(f"selective_state_update batch={batch} dim={dim} N={n} tokens={tokens}")
    with torch.inference_mode():
        for backend in [b for b in ss.available_backends() if b != "cuda"]:

            def step(_b=backend):
                ss.selective_state_update(state, *args, backend=_b)

            med, low, cpu = timed(step, repeats, max(repeats // 10, 10), "cpu")
            print(
                f"  {backend:<18} {med * 1e3:8.1f} us (min {low * 1e3:7.1f}, cpu {cpu * 1e3:7.1f})",
                flush=True,
            )


_PROBE = """
import time, sys
t0 = time.perf_counter()
from hf_decision_mamba import selective_scan as ss
import torch
t1 = time.perf_counter()
args = [torch.randn(2, 4, 5), torch.rand(2, 4, 5), -torch.rand(4, 16), torch.randn(2, 16, 5), torch.randn(2, 16, 5)]
args = [a.requires_grad_() for a in args]
y = ss._selective_scan_fused(*args, impl=sys.argv[1])
y.sum().backward()
print(f"{time.perf_counter() - t1:.2f}")
"""


def compile_times() -> None:
    """First fused call (compile or JIT + load) in fresh processes: cold cache, then warm cache."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HF_DECISION_MAMBA_CACHE=tmp, NUMBA_CACHE_DIR=tmp)
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        for impl in ("c", "numba"):
            for state in ("cold", "warm"):
                proc = subprocess.run(
                    [sys.executable, "-c", _PROBE, impl], env=env, capture_output=True, text=True, check=False
                )
                result = proc.stdout.strip() + " s" if proc.returncode == 0 else "unavailable"
                print(f"  {impl:<6} first call (fwd+bwd), {state} cache: {result}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=256, help="d_inner = expand * hidden")
    parser.add_argument("--state", type=int, default=16, help="N (d_state)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[60, 300])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)"
    )
    parser.add_argument("--no-gate", action="store_true", help="no z (silu gate)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--skip-torch", action="store_true", help="skip the (slow) pure-torch backend")
    parser.add_argument(
        "--layout",
        default="bdl",
        choices=["bdl", "bld"],
        help="memory layout of u, delta, z (bld: channels last)",
    )
    parser.add_argument("--compile-times", action="store_true")
    parser.add_argument(
        "--state-update", action="store_true", help="also time selective_state_update (batch 10, 3 tokens)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    backends = ss.available_backends()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, backends {backends}, "
        f"fused implementation {ss._fused_impl()!r}"
    )
    for length in args.lengths:
        print(
            f"batch={args.batch} dim={args.dim} L={length} N={args.state} {args.dtype} "
            f"gate={'no' if args.no_gate else 'yes'} layout={args.layout}"
        )
        for backend in backends:
            if backend == "torch" and args.skip_torch:
                continue
            device = "cuda" if backend == "cuda" else "cpu"
            gated = not args.no_gate
            inputs = make_inputs(args.batch, args.dim, length, args.state, device, dtype, gated, args.layout)

            def scan(*xs, _b=backend):
                return ss.selective_scan(*xs, backend=_b)

            slow = backend == "torch" and device == "cpu"  # seconds per call: a few repeats are enough
            repeats, warmup = (min(args.repeats, 3), 1) if slow else (args.repeats, args.warmup)
            bench_one(backend, scan, inputs, repeats, warmup, device)
            if backend == "fused_cpu" and ss._fused_impl() == "c" and ss._load_numba() is not None:

                def scan_nb(*xs):
                    return ss._selective_scan_fused(*xs, impl="numba")

                bench_one("fused_cpu (numba)", scan_nb, inputs, args.repeats, args.warmup, device)
        if torch.cuda.is_available() and "cuda" not in backends:
            inputs = make_inputs(
                args.batch, args.dim, length, args.state, "cuda", dtype, not args.no_gate, args.layout
            )
            bench_one(
                "torch (cuda)",
                lambda *xs: ss.selective_scan(*xs, backend="torch"),
                inputs,
                args.repeats,
                args.warmup,
                "cuda",
            )
    if args.state_update:
        bench_state_update(10, args.dim, args.state, 3, repeats=2000)
    if args.compile_times:
        print("compile / load times (fresh processes):")
        compile_times()


if __name__ == "__main__":
    main()
