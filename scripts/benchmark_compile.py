"""What `torch.compile` buys on the CPU: training step and window acting, eager against compiled (inductor), for
Decision Mamba and the Decision Transformer, at the sizes of `scripts/benchmark.py` (hidden 128, 3 layers).

    python scripts/benchmark_compile.py                       # K=20 and K=100, both models
    python scripts/benchmark_compile.py --contexts 20 --repeats 5

Training step = forward, backward and AdamW step on a (batch, K) window (`benchmark.training_step`); acting =
one `policy.act` for one environment with a full K-step window (`mode="window"`). Each time is the median of
`--repeats` calls after the warm-up calls (which include the compile, reported separately). The 1-minute load
average before and after each row is printed with it: on a shared machine the absolute numbers move, the
eager/compiled ratio of one row much less (both are measured back to back).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import STATE_DIM, dm_model, dt_model, training_step, window_batch  # noqa: E402
from hf_decision_mamba import DecisionMambaPolicy  # noqa: E402


def build(name: str, steps: int, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "DT":
        return dt_model(args.hidden, args.layers, args.max_ep_len, steps)
    return dm_model(args.preset, args.hidden, args.layers, args.max_ep_len, "auto")


def median_seconds(call, repeats: int, warmup: int) -> tuple[float, float]:
    """(seconds of the warm-up calls, median seconds of the timed calls)."""
    start = time.perf_counter()
    for _ in range(warmup):
        call()
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return warm, statistics.median(times)


def measure(name: str, steps: int, compiled: bool, args: argparse.Namespace) -> dict:
    torch._dynamo.reset()
    model = build(name, steps, args).train()
    run = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = window_batch(args.batch_size, steps, "cpu")
    warm, step = median_seconds(lambda: training_step(run, optimizer, batch, "cpu"), args.repeats, 2)
    policy = DecisionMambaPolicy(run, mode="window", target_return=1.0, context_length=steps)
    policy.reset(num_envs=1)
    observation = torch.zeros(1, STATE_DIM).numpy()
    act_warm, act = median_seconds(lambda: policy.act(observation, reward=[0.0]), args.repeats * 3, steps + 2)
    return {"step": step, "act": act, "warm": warm + act_warm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contexts", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--models", nargs="+", default=["DM", "DT"], choices=["DM", "DT"])
    parser.add_argument("--preset", default="dmamba-mujoco")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--max-ep-len", type=int, default=4096)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    print("| model | K | step eager (ms) | step compiled (ms) | speed-up | act eager (ms) | act compiled (ms) "
          "| speed-up | compile + warm-up (s) | load before / after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for steps in args.contexts:
        for name in args.models:
            load = os.getloadavg()[0]
            eager = measure(name, steps, False, args)
            fast = measure(name, steps, True, args)
            label = f"Decision Mamba ({args.preset})" if name == "DM" else "DT"
            print(
                f"| {label} | {steps} | {eager['step'] * 1e3:.1f} | {fast['step'] * 1e3:.1f} "
                f"| {eager['step'] / fast['step']:.2f}x | {eager['act'] * 1e3:.2f} | {fast['act'] * 1e3:.2f} "
                f"| {eager['act'] / fast['act']:.2f}x | {fast['warm']:.0f} | {load:.1f} / {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
