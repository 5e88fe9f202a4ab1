"""`scripts/benchmark_atari.py`'s evaluation benchmark: parallel against one-after-another Breakout episodes,
each timed cold (envs built) and warm (envs from a pool), with identical episodes in every run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_evaluation_run_reports_cold_and_warm_ratios_of_identical_episodes(capsys):
    script = load_script("benchmark_atari")
    argv = ["--only", "evaluation", "--episodes", "3", "--max_episode_steps", "6", "--eval_repeats", "1"]
    assert script.main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    row = json.loads(rows[-1])
    assert row["identical_episodes"] and row["episode_lengths"] == [6, 6, 6]
    assert row["torch_threads_while_acting"] == [1], "recurrent Atari acting runs on one torch thread"
    assert "env_construct" in row["parallel_cold_s"] and "env_construct" not in row["parallel_warm_s"]
    for start in ("cold", "warm"):
        parallel, sequential = row[f"parallel_{start}_s"]["total"], row[f"sequential_{start}_s"]["total"]
        assert row[f"ratio_{start}"] == round(parallel / sequential, 3)
    assert "warm (envs kept, as in training)" in script.markdown([row])
