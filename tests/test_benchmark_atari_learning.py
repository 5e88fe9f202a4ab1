"""`scripts/benchmark_atari_learning.py`: the protocol is in the commands it runs, the final model's return is the
last evaluation's (the best one is kept apart), the DT differs from Decision Mamba only in its mixer, and random play
is the baseline on the evaluation's own seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_atari_learning")


def test_training_command_carries_the_fixed_protocol(bench, tmp_path):
    args = bench.parse_args(["--output", str(tmp_path)])
    command = bench.train_command(args, "dm", 2, tmp_path / "run")
    option = {name: command[command.index(name) + 1] for name in command if name.startswith("--")}
    assert option["--preset"] == "mamba-rl-atari-3l" and option["--env_id"] == "ALE/Breakout-v5"
    assert option["--config_overrides"] == "hidden_size=64,context_length=8"
    assert (option["--max_steps"], option["--env_eval_steps"], option["--seed"]) == ("2000", "1000", "2")
    assert (option["--env_eval_episodes"], option["--env_eval_seed"]) == ("10", "0")


def test_the_dt_is_the_same_run_with_attention_in_place_of_mamba(bench, tmp_path):
    args = bench.parse_args(["--output", str(tmp_path)])
    dm, dt = (bench.train_command(args, model, 1, tmp_path / "run") for model in ("dm", "dt"))
    changed = [(a, b) for a, b in zip(dm, dt, strict=True) if a != b]
    assert changed == [
        ("hidden_size=64,context_length=8", "hidden_size=64,context_length=8,block_type=attention")
    ]


def test_final_is_the_last_evaluation_and_best_is_kept_apart(bench, tmp_path):
    args = bench.parse_args(["--output", str(tmp_path), "--seeds", "0", "1", "2", "--max-steps", "4"])
    for seed, history in (
        (0, {2: 9.0, 4: 5.0}),
        (1, {2: 3.0, 4: 7.0}),
        (2, {2: 1.0}),
    ):  # seed 2 did not finish
        run = tmp_path / "runs" / f"breakout-dm-s{seed}"
        run.mkdir(parents=True)
        entries = [
            {"step": step, "metrics": {"env_eval/return_mean": value}} for step, value in history.items()
        ]
        (run / "env_eval_report.json").write_text(json.dumps({"history": entries}))
    results = bench.collect_results(args, "dm")
    assert results["final"] == [5.0, 7.0] and results["best"] == [9.0, 7.0]
    assert bench.collect_results(args, "dt")["final"] == []  # no DT run here
    table = bench.markdown(
        {"episodes": 6, "steps": 60, "return_mean": 6.5, "return_min": 0, "return_max": 20},
        1.0,
        {"dm": results},
    )
    assert "| Decision Mamba | 4 | 6.0 ± 12.7 | 6.0 | no | 2 |" in table
    assert "BEST evaluation during training (optimistic): Decision Mamba 8.0" in table


def test_random_policy_acts_uniformly_for_every_env(bench):
    policy = bench.UniformRandomPolicy(4, seed=0)
    policy.reset(3)
    actions = np.concatenate([policy.act(np.zeros((3, 4, 84, 84), np.uint8), None) for _ in range(400)])
    assert actions.shape == (1200,) and set(actions.tolist()) == {0, 1, 2, 3}
    assert np.bincount(actions).min() > 240  # each action near a quarter of the draws
