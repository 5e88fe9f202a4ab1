"""Decision Mamba against `transformers.DecisionTransformerModel`, measured side by side in one run.

    python scripts/benchmark.py                      # hopper size: training step and acting latency
    python scripts/benchmark.py --contexts 20 60 100 300 1000 --markdown BENCHMARKS-scale.md

Training step = forward, backward and AdamW step on a (batch, K) window. Acting = one `policy.act` for a
batch of environments: DT recomputes its K-step window, Decision Mamba either does the same (`window`) or
feeds only the new tokens (`recurrent`). Every ratio compares numbers taken in this same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DecisionTransformerConfig, DecisionTransformerModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel, DecisionMambaPolicy  # noqa: E402
from hf_decision_mamba.selective_scan import available_backends  # noqa: E402

STATE_DIM, ACT_DIM = 11, 3


def dt_model(hidden: int, layers: int, max_ep_len: int) -> DecisionTransformerModel:
    config = DecisionTransformerConfig(
        state_dim=STATE_DIM,
        act_dim=ACT_DIM,
        hidden_size=hidden,
        n_layer=layers,
        n_head=1,
        max_ep_len=max_ep_len,
    )
    config.n_positions = max(config.n_positions, 3 * 1024)
    return DecisionTransformerModel(config)


def dm_model(preset: str, hidden: int, layers: int, max_ep_len: int, backend: str) -> DecisionMambaModel:
    config = DecisionMambaConfig.from_preset(
        preset,
        state_dim=STATE_DIM,
        act_dim=ACT_DIM,
        hidden_size=hidden,
        num_hidden_layers=layers,
        max_ep_len=max_ep_len,
        scan_backend=backend,
    )
    return DecisionMambaModel(config)


def window_batch(batch: int, steps: int, device: str) -> dict:
    return {
        "states": torch.randn(batch, steps, STATE_DIM, device=device),
        "actions": torch.rand(batch, steps, ACT_DIM, device=device) * 2 - 1,
        "rewards": torch.randn(batch, steps, 1, device=device),
        "returns_to_go": torch.randn(batch, steps, 1, device=device),
        "timesteps": torch.arange(steps, device=device).expand(batch, steps),
        "attention_mask": torch.ones(batch, steps, dtype=torch.long, device=device),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_training_step(model: torch.nn.Module, batch: dict, device: str, repeats: int) -> dict:
    """Median seconds per forward+backward+AdamW step, and peak CUDA memory when on a GPU."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        preds = model(**batch).action_preds
        loss = ((preds - batch["actions"]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        if index >= 2:  # two warm-up steps (JIT caches, allocator)
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"seconds": statistics.median(times), "peak_mib": peak}


def time_acting(
    policy: DecisionMambaPolicy, num_envs: int, steps: int, probes: list[int]
) -> dict[int, float]:
    """Median seconds of `policy.act` around each probe step of a `steps`-long episode."""
    policy.reset(num_envs, target_return=3600.0)
    rng = np.random.default_rng(0)
    observation = rng.normal(size=(num_envs, STATE_DIM)).astype(np.float32)
    reward = None
    samples: dict[int, list[float]] = {probe: [] for probe in probes}
    for step in range(steps):
        start = time.perf_counter()
        policy.act(observation, reward)
        elapsed = time.perf_counter() - start
        for probe in probes:
            if probe <= step < probe + 10:
                samples[probe].append(elapsed)
        reward = np.ones(num_envs, np.float32)
    return {probe: statistics.median(values) for probe, values in samples.items() if values}


def training_rows(args, device: str) -> list[dict]:
    rows = []
    for steps in args.contexts:
        batch = window_batch(args.batch_size, steps, device)
        reference = time_training_step(
            dt_model(args.hidden, args.layers, args.max_ep_len), batch, device, args.repeats
        )
        rows.append({"model": "DT", "K": steps, **reference, "ratio": 1.0})
        for preset in args.presets:
            for backend in args.backends:
                model = dm_model(preset, args.hidden, args.layers, args.max_ep_len, backend)
                measured = time_training_step(model, batch, device, args.repeats)
                ratio = measured["seconds"] / reference["seconds"]
                rows.append({"model": f"{preset} [{backend}]", "K": steps, **measured, "ratio": ratio})
                print(
                    f"train K={steps:<5} {rows[-1]['model']:<34} {measured['seconds'] * 1e3:8.1f} ms  x{ratio:.2f} DT"
                )
    return rows


def acting_rows(args, device: str) -> list[dict]:
    rows = []
    probes = [10, args.episode_steps - 10]
    for num_envs in args.num_envs:
        for steps in args.acting_contexts:
            dt = dt_model(args.hidden, args.layers, args.max_ep_len).to(device)
            dt_policy = DecisionMambaPolicy(dt, mode="window", rtg_scale=1000.0, context_length=steps)
            reference = time_acting(dt_policy, num_envs, args.episode_steps, probes)
            rows.append(
                {"model": "DT window", "envs": num_envs, "K": steps, "latency": reference, "ratio": 1.0}
            )
            model = dm_model(args.presets[0], args.hidden, args.layers, args.max_ep_len, "auto").to(device)
            model.config.context_length = steps
            for mode in ("window", "recurrent"):
                measured = time_acting(model.policy(mode=mode), num_envs, args.episode_steps, probes)
                ratio = measured[probes[0]] / reference[probes[0]]
                growth = measured[probes[-1]] / measured[probes[0]]
                rows.append(
                    {"model": f"DM {mode}", "envs": num_envs, "K": steps, "latency": measured, "ratio": ratio}
                )
                print(
                    f"act envs={num_envs:<3} K={steps:<4} DM {mode:<9} {measured[probes[0]] * 1e3:7.2f} ms "
                    f"x{ratio:.2f} DT window; step {probes[-1]}/step {probes[0]} = {growth:.2f}"
                )
    return rows


def markdown(training: list[dict], acting: list[dict], args, device: str) -> str:
    lines = [f"Device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}.", ""]
    lines += ["| model | K | step (ms) | x DT | peak MiB |", "|---|---|---|---|---|"]
    for row in training:
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        lines.append(
            f"| {row['model']} | {row['K']} | {row['seconds'] * 1e3:.1f} | {row['ratio']:.2f} | {peak} |"
        )
    first, last = 10, args.episode_steps - 10
    lines += [
        "",
        f"| policy | envs | K | act at step {first} (ms) | x DT window | step {last} / step {first} |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for row in acting:
        latency = row["latency"]
        lines.append(
            f"| {row['model']} | {row['envs']} | {row['K']} | {latency[first] * 1e3:.2f} | {row['ratio']:.2f} "
            f"| {latency[last] / latency[first]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["dmamba-mujoco"])
    parser.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    parser.add_argument("--contexts", nargs="+", type=int, default=[20], help="training contexts K")
    parser.add_argument("--acting-contexts", nargs="+", type=int, default=[20, 100])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[10])
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--max-ep-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if args.backends is None:
        args.backends = [b for b in available_backends() if device.startswith("cuda") == (b == "cuda")]
    torch.manual_seed(0)
    training = training_rows(args, device)
    acting = acting_rows(args, device)
    table = markdown(training, acting, args, device)
    if args.markdown:
        args.markdown.write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
