"""Decision Mamba on collected data for two tasks beyond D4RL and Atari: does it beat the data's mean return?

Protocol (fixed before running; the numbers in BENCHMARKS.md come from exactly this):
- Data: `dmamba collect`'s random behaviour, collection seed 0 (episode k reset with seed k):
  CartPole-v1 (discrete), 300 episodes; InvertedPendulum-v5 (continuous), 300 episodes.
- Model: preset dmamba-hopper resized with `hidden_size=64,num_hidden_layers=2,context_length=10,dropout=0.1`;
  sizes and action space inferred from the data, checked against `--env_id` (a Hub-schema folder names no
  environment); batch 64, learning rate 1e-3,
  500 warm-up-free steps (`--warmup_steps 0`), rtg_scale 100.
- Evaluation: 10 episodes (seeds 0..9, the env's own time limit: 500 steps CartPole, 1000 InvertedPendulum),
  window mode, deterministic, conditioned on 2x the data's best return; every 100 steps and at the end.
- Seeds 0 and 1 (training seed; the data are the same for both).
- Reported: the data's mean return, the final model's mean return and the best evaluation during training.

Usage: `python scripts/benchmark_any_env.py --output benchmarks/any_env` (about 3-5 minutes per run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TASKS = {"CartPole-v1": 300, "InvertedPendulum-v5": 300}
SEEDS = (0, 1)
STEPS = 500
OVERRIDES = "hidden_size=64,num_hidden_layers=2,context_length=10,dropout=0.1"


def collect(env_id: str, episodes: int, folder: Path) -> dict:
    """Random-behaviour episodes of `env_id` in the canonical Hub schema; their summary."""
    from hf_decision_mamba.data.collection import (
        RandomPolicy,
        make_env,
        rollout,
        summarise,
        write_parquet_dataset,
    )

    env = make_env(env_id)
    stats = summarise(
        write_parquet_dataset(
            rollout(env, RandomPolicy(env.action_space, 0), episodes=episodes, progress=False), folder
        )
    )
    env.close()
    return stats


def train(env_id: str, data: Path, output: Path, seed: int, target: float) -> dict:
    """One `dmamba train` run; the final and best evaluations' mean returns."""
    from hf_decision_mamba.cli import main

    argv = ["train", "--dataset", str(data), "--env_id", env_id, "--output_dir", str(output), "--seed", str(seed),
            "--max_steps", str(STEPS), "--config_overrides", OVERRIDES, "--per_device_train_batch_size", "64",
            "--learning_rate", "1e-3", "--warmup_steps", "0", "--rtg_scale", "100", "--env_eval_episodes", "10",
            "--env_eval_steps", "100", "--target_return", str(target), "--save_steps", str(STEPS),
            "--report_to", "none", "--no_record_replay", "--logging_steps", "100"]  # fmt: skip
    if main(argv) != 0:
        raise SystemExit(f"training failed: {output}")
    report = json.loads((output / "env_eval_report.json").read_text())
    return {
        "final_return": report["last"]["metrics"]["env_eval/return_mean"],
        "best_return": report["best"]["metrics"]["env_eval/return_mean"],
        "best_step": report["best"]["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/any_env"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    results = {}
    for env_id in args.tasks:
        folder = args.output / env_id.replace("/", "_")
        data = collect(env_id, TASKS[env_id], folder / "data")
        runs = {
            seed: train(env_id, folder / "data", folder / f"seed{seed}", seed, 2 * data["return_max"])
            for seed in SEEDS
        }
        results[env_id] = {"data": data, "runs": runs}
        print(json.dumps({env_id: results[env_id]}, indent=2), flush=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
