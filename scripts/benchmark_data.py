"""Benchmark the data pipeline against the model it feeds (a benchmark, not a timed test).

Measures, with 2 dataloader workers: hopper-size batches (64 x 20) from the embedded Hopper data and Atari batches
(256 x 30 frame stacks) from synthetic 84x84 frames; the training step (forward, backward, AdamW) of the models at
the same batch sizes; and the resident memory of a window dataset holding `--atari-transitions` Atari transitions.

    python scripts/benchmark_data.py                     # full sizes (500k Atari transitions, ~4 GB RAM)
    python scripts/benchmark_data.py --quick             # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psutil
import torch

from hf_decision_mamba.data import TrajectoryWindowDataset, load_trajectories

FRAME_BYTES = 84 * 84


def _forever(loader: torch.utils.data.DataLoader):
    """Batches from `loader`, epoch after epoch (unlike `itertools.cycle`, which keeps every batch)."""
    while True:
        yield from loader


def batches_per_second(
    dataset: TrajectoryWindowDataset, batch_size: int, workers: int, batches: int
) -> float:
    """Batches/s of a shuffled DataLoader over `dataset`, after the workers have warmed up."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=dataset.collator(),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
    )
    iterator = _forever(loader)
    for _ in range(2 * max(workers, 1)):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def train_steps_per_second(model: torch.nn.Module, batch: dict, steps: int, device: str) -> float:
    """Training steps/s (forward with labels, backward, AdamW) on one fixed batch."""
    model.to(device).train()
    batch = {name: value.to(device) for name, value in batch.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


class _DTWithLoss(torch.nn.Module):
    """`DecisionTransformerModel` plus the masked action MSE, to time a full training step."""

    def __init__(self, state_dim: int, act_dim: int):
        super().__init__()
        from transformers import DecisionTransformerConfig, DecisionTransformerModel

        config = DecisionTransformerConfig(
            state_dim=state_dim, act_dim=act_dim, hidden_size=128, n_layer=3, n_head=1, max_ep_len=1000
        )
        self.model = DecisionTransformerModel(config)

    def forward(self, labels, **inputs):
        output = self.model(**inputs, return_dict=True)
        real = inputs["attention_mask"].bool()
        output["loss"] = torch.nn.functional.mse_loss(output.action_preds[real], labels[real])
        return output


def _decision_mamba(preset: str, dataset: TrajectoryWindowDataset, **overrides):
    try:
        from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
    except ImportError:
        return None
    config = DecisionMambaConfig.from_preset(preset, **overrides)
    return DecisionMambaModel(config)


def synthetic_atari_episodes(
    transitions: int, episode_length: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Atari-shaped episodes whose frames are real, touched memory (each episode its own array)."""
    rng = np.random.default_rng(seed)
    episodes, left = [], transitions
    while left > 0:
        length = min(episode_length, left)
        frames = np.empty((length, 84, 84), dtype=np.uint8)
        frames[:] = rng.integers(0, 256, (84, 84), dtype=np.uint8)
        episodes.append(
            {
                "observations": frames,
                "initial_frames": np.zeros((3, 84, 84), np.uint8),
                "actions": rng.integers(0, 4, length),
                "rewards": rng.integers(0, 2, length).astype(np.float32),
                "terminations": np.arange(length) == length - 1,
                "truncations": np.zeros(length, dtype=bool),
            }
        )
        left -= length
    return episodes


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--atari-transitions", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-models", action="store_true", help="only time the data pipeline")
    args = parser.parse_args(argv)
    transitions = 20_000 if args.quick else args.atari_transitions
    rows = []

    hopper = TrajectoryWindowDataset(load_trajectories("embedded:hopper"), 20, rtg_scale=1000, progress=False)
    hopper_rate = batches_per_second(hopper, 64, args.workers, 50 if args.quick else 500)
    rows.append(("hopper 64x20 collator, batches/s", f"{hopper_rate:.0f}"))

    baseline = rss_gb()
    atari = TrajectoryWindowDataset(synthetic_atari_episodes(transitions, 2_000), 30, progress=False)
    rows.append((f"Atari store, {transitions} transitions: dataset bytes", f"{atari.nbytes / 1e9:.3f} GB"))
    rows.append(
        (f"Atari store, {transitions} transitions: process RSS increase", f"{rss_gb() - baseline:.3f} GB")
    )
    rows.append(("Atari bytes per transition", f"{atari.nbytes / atari.num_transitions:.0f}"))
    atari_rate = batches_per_second(atari, 256, args.workers, 5 if args.quick else 30)
    rows.append(("Atari 256x30 collator, batches/s", f"{atari_rate:.2f}"))

    if not args.skip_models:
        hopper_batch = hopper.collator()([hopper[i] for i in range(64)])
        dt_rate = train_steps_per_second(
            _DTWithLoss(11, 3), hopper_batch, 3 if args.quick else 20, args.device
        )
        rows.append((f"DecisionTransformer hopper train steps/s ({args.device})", f"{dt_rate:.2f}"))
        rows.append(("  collator / DT speed ratio", f"{hopper_rate / dt_rate:.0f}x"))
        mamba = _decision_mamba("dmamba-mujoco", hopper, state_dim=11, act_dim=3, max_ep_len=1000)
        if mamba is not None:
            mamba_rate = train_steps_per_second(mamba, hopper_batch, 2 if args.quick else 5, args.device)
            rows.append(
                (f"DecisionMamba (dmamba-mujoco) hopper train steps/s ({args.device})", f"{mamba_rate:.2f}")
            )
            rows.append(("  collator / DecisionMamba speed ratio", f"{hopper_rate / mamba_rate:.0f}x"))
            atari_batch = atari.collator()([atari[i] for i in range(256)])
            atari_model = _decision_mamba("dmamba-atari", atari, max_ep_len=4096)
            atari_step = train_steps_per_second(atari_model, atari_batch, 1 if args.quick else 2, args.device)
            rows.append(
                (f"DecisionMamba (dmamba-atari) 256x30 train steps/s ({args.device})", f"{atari_step:.3f}")
            )
            rows.append(("  collator / Atari train speed ratio", f"{atari_rate / atari_step:.1f}x"))

    print(f"| measurement ({args.workers} workers, {psutil.cpu_count()} CPUs) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
