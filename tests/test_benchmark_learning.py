"""`scripts/benchmark_learning.py`: every model is trained with the same command but its model type, the final
model's return at each length comes from that step's evaluation (the best one is kept apart), seeds are summarised
with a 95% t-interval, and one tiny end-to-end run generates data, trains DM and DT and writes table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_learning")


def write_report(folder: Path, returns: dict[int, float]) -> None:
    """A finished run's `env_eval_report.json` with one evaluation per step."""
    folder.mkdir(parents=True)
    history = [{"step": step, "metrics": {"env_eval/return_mean": value}} for step, value in returns.items()]
    (folder / "env_eval_report.json").write_text(json.dumps({"history": history}))


def test_interval_is_the_student_t_interval(bench):
    mean, half = bench.interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-4)
    assert bench.interval([5.0]) == (5.0, 0.0)


def test_models_are_trained_with_one_command_but_the_model(bench, tmp_path):
    args = bench.parse_args(["--output", str(tmp_path)])
    dm = bench.train_command(args, "Hopper", "medium", "dema-mujoco", 1, 1000, tmp_path / "a")
    dt = bench.train_command(args, "Hopper", "medium", bench.DT, 1, 1000, tmp_path / "a")
    differing = {dm[i - 1] for i in range(1, len(dm)) if dm[i] != dt[i]}
    assert differing == {"--model_type", "--preset"}
    assert dm[dm.index("--lr_scheduler_type") + 1] == "constant_with_warmup"
    assert dm[dm.index("--seed") + 1] == "1"


def test_config_overrides_reach_the_dm_only_unless_given_for_all_models_and_later_fields_win(bench, tmp_path):
    argv = [
        "--output",
        str(tmp_path),
        "--config-overrides",
        "dropout=0.2,action_tanh=False",
        "--all-config-overrides",
        "context_length=20",
    ]
    args = bench.parse_args(argv)
    dm = bench.train_command(args, "Hopper", "medium", "dmamba-mujoco", 0, 1000, tmp_path / "a")
    dt = bench.train_command(args, "Hopper", "medium", bench.DT, 0, 1000, tmp_path / "a")
    overrides = {
        name: command[command.index("--config_overrides") + 1] for name, command in (("dm", dm), ("dt", dt))
    }
    assert overrides == {
        "dm": "hidden_size=64,num_hidden_layers=2,context_length=20,dropout=0.2,action_tanh=false",
        "dt": "hidden_size=64,num_hidden_layers=2,context_length=20",
    }


def test_final_return_is_the_evaluation_at_that_length_and_best_is_kept_apart(bench, tmp_path):
    args = bench.parse_args(
        ["--output", str(tmp_path), "--tasks", "Hopper", "--qualities", "medium", "--models", "dt"]
        + ["--seeds", "0", "1", "--lengths", "2", "4"]
    )
    write_report(tmp_path / "runs" / "Hopper-medium-dt-s0", {2: 100.0, 3: 400.0, 4: 200.0})
    write_report(tmp_path / "runs" / "Hopper-medium-dt-s1", {2: 300.0, 3: 100.0, 4: 600.0})
    rows = {row["length"]: row for row in bench.collect_results(args)}
    assert rows[2]["final"] == [100.0, 300.0] and rows[2]["best_mean"] == pytest.approx(200.0)
    assert rows[4]["final"] == [200.0, 600.0]
    assert rows[4]["final_mean"] == pytest.approx(400.0)
    assert rows[4]["best_mean"] == pytest.approx((400.0 + 600.0) / 2)


def test_summary_compares_each_model_with_the_dt_and_the_data_per_quality(bench):
    rows = [
        {"task": "Hopper", "quality": quality, "model": model, "length": length, "final_mean": value}
        for quality, model, length, value in [
            ("medium", "dm", 1, 100.0),
            ("medium", "dm", 2, 90.0),
            ("medium", "dt", 1, 50.0),
            ("medium", "dt", 2, 100.0),
            ("expert", "dm", 1, 80.0),  # this quality was only measured at the shortest length
            ("expert", "dt", 1, 40.0),
        ]
    ]
    expert, medium = bench.summary_lines(rows, {"Hopper-medium": 95.0, "Hopper-expert": 70.0})
    assert "on medium" in medium and "1: 2.00, 2: 0.90" in medium
    assert "0/1" in medium  # 90 < the data's 95 at the longest length
    assert "Hopper 0.900" in medium.split("longest/shortest length")[1]
    assert "on expert" in expert and "{1: 2.00}" in expert and "1/1" in expert
    assert "Hopper 1.000" in expert.split("longest/shortest length")[1]


def test_update_benchmarks_replaces_only_its_own_section(bench, tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        f"# Benchmarks\n\n## Other\n\nkept\n\n{bench.SECTION}\n\nold table\n\n## Later\n\nalso kept\n"
    )
    bench.update_benchmarks("new table", "python scripts/benchmark_learning.py", path)
    text = path.read_text()
    assert "new table" in text and "old table" not in text
    assert "kept" in text and "## Later\n\nalso kept" in text
    assert text.count(bench.SECTION) == 1


def test_tiny_benchmark_trains_dm_and_dt_and_writes_table_and_plot(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the runs' dataset cache stays in this test's folder
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    argv = [
        "--output",
        str(tmp_path),
        "--tasks",
        "Hopper",
        "--qualities",
        "medium",
        "--models",
        "dmamba-mujoco",
    ]
    argv += ["dt", "--seeds", "0", "--lengths", "2", "4", "--eval-every", "2", "--eval-episodes", "1"]
    assert bench.main([*argv, "--episodes", "4"]) == 0
    results = json.loads((tmp_path / "learning.json").read_text())["rows"]
    assert {(row["model"], row["length"]) for row in results} == {
        (model, length) for model in ("dmamba-mujoco", "dt") for length in (2, 4)
    }
    assert (tmp_path / "learning.png").stat().st_size > 0
    assert (tmp_path / "data" / "Hopper-medium" / "spec.json").exists()
    assert "FINAL return" in capsys.readouterr().out
