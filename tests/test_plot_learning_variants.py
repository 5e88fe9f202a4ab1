"""`scripts/plot_learning_variants.py`: variants are named LABEL=FOLDER:MODEL, and the table shows each variant's
final return per task and length with the mean over tasks only where every task was measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def plot():
    return load_script("plot_learning_variants")


def test_a_variant_label_may_hold_equals_signs(plot):
    assert plot.parse_variant("DM, K=20=out/k20:dmamba-mujoco") == (
        "DM, K=20",
        Path("out/k20"),
        "dmamba-mujoco",
    )
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL=FOLDER:MODEL"):
        plot.parse_variant("no-folder-or-model")


def test_table_and_figure_from_saved_results(plot, tmp_path, capsys):
    rows = [
        {"task": task, "quality": "medium-replay", "model": "dt", "length": length, "seeds": 3,
         "final_mean": value, "final_ci95": 1.0}
        for task, length, value in [("Hopper", 500, 10.0), ("HalfCheetah", 500, 20.0), ("Walker2d", 500, 30.0),
                                    ("Hopper", 1000, 40.0)]
    ]  # fmt: skip
    (tmp_path / "learning.json").write_text(json.dumps({"rows": rows}))
    figure = tmp_path / "variants.png"
    assert plot.main(["--variant", f"DT, K=20={tmp_path}:dt", "--output", str(figure)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("| DT, K=20 | 3 | 10 | 40 | 20 | - | 30 | - |")
    assert line.endswith("| 20 / - |")  # Hopper alone was measured at 1000 steps
    assert figure.stat().st_size > 0
