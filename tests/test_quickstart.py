"""`dmamba quickstart`: `dmamba train` with CPU-sized defaults on the embedded Hopper data, then the score table
with the dataset's mean episode return next to the evaluated one."""

from __future__ import annotations

import re

import numpy as np

from hf_decision_mamba.cli import quickstart
from hf_decision_mamba.data import load_trajectories
from hf_decision_mamba.training import parse_train_args
from test_training import TINY_TRAIN_ARGS


def test_defaults_train_a_small_decision_mamba_on_the_embedded_data_and_options_override_them():
    args = parse_train_args([], defaults=quickstart.QUICKSTART_DEFAULTS)
    assert (args.data.dataset, args.model.preset, args.model.model_type) == (
        "embedded:hopper",
        "dmamba-hopper",
        "decision_mamba",
    )
    assert args.training.max_steps == 600 and args.training.output_dir == "outputs/quickstart"
    assert args.evaluation.env_eval and args.evaluation.env_eval_episodes == 10
    overridden = parse_train_args(["--max_steps", "7"], defaults=quickstart.QUICKSTART_DEFAULTS)
    assert overridden.training.max_steps == 7


def test_quickstart_prints_the_dataset_mean_next_to_the_evaluated_return(tmp_path, capsys):
    argv = [*TINY_TRAIN_ARGS, "--output_dir", str(tmp_path), "--max_steps", "3", "--env_eval_steps", "2",
            "--report_to", "none"]  # fmt: skip
    assert quickstart.main(argv) == 0
    table = capsys.readouterr().out

    returns = [
        float(np.sum(episode["rewards"])) for episode in load_trajectories("embedded:hopper", max_episodes=6)
    ]
    assert f"dataset embedded:hopper: 6 episodes, mean episode return {np.mean(returns):.1f}" in table
    assert table.count("Decision Mamba, final model (LAST)") == 1 and "BEST, step 2" in table
    assert table.count("return (mean ± std)") == 1, "one table"
    assert f"Training curves: {tmp_path / 'training_curves.png'}" in table
    learned, verdict, mean = re.search(
        r"mean return (\S+) (beats|does NOT beat) .* return (\S+)\.", table
    ).groups()
    assert (float(learned) > float(mean)) == (verdict == "beats")
    assert (tmp_path / "eval_results.json").is_file() and (tmp_path / "README.md").is_file()


def test_with_one_evaluation_the_table_shows_the_final_model_alone(tmp_path, capsys):
    argv = [*TINY_TRAIN_ARGS, "--output_dir", str(tmp_path), "--max_steps", "2", "--report_to", "none"]
    assert quickstart.main(argv) == 0
    table = capsys.readouterr().out
    assert "final model (LAST)" in table and "BEST" not in table
