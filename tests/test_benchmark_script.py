"""`scripts/benchmark.py`: one command measures Decision Mamba against DT in one run, each training
configuration in its own process with its peak memory, acting latency along an episode, and writes a Markdown
report with the issue's targets and a PNG plot, printing the ratio table last."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
CONTEXTS = [8, 16]
PROBES = [2, 10, 18]
NUM_ENVS = [1, 2]
TINY_RUN = [
    "--device", "cpu", "--presets", "dmamba-mujoco", "--contexts", *map(str, CONTEXTS), "--backends", "torch",
    "--acting-contexts", "4", "--num-envs", *map(str, NUM_ENVS), "--episode-steps", "30",
    "--probes", *map(str, PROBES), "--hidden", "32", "--layers", "1", "--batch-size", "16", "--repeats", "1",
    "--acting-seconds", "0",
]  # fmt: skip
NUMBER = re.compile(r"^\d+(\.\d+)?$")


benchmark = load_script("benchmark")


def md_section_table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first table under `### heading`, as one dict per row keyed by the header."""
    section = markdown.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One tiny end-to-end run of `main`: its stdout, Markdown and plot."""
    folder = tmp_path_factory.mktemp("benchmark")
    markdown, plot, results = folder / "x.md", folder / "x.png", folder / "x.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        outputs = ["--markdown", str(markdown), "--plot", str(plot), "--results", str(results)]
        assert benchmark.main([*TINY_RUN, *outputs]) == 0
    return {"stdout": stdout.getvalue(), "markdown": markdown.read_text(), "plot": plot, "results": results}


def test_defaults_are_the_issues_full_run():
    args = benchmark.parse_args(["--device", "cpu"])
    benchmark.output_paths(args)
    assert args.contexts == [20, 60, 100, 300, 1000]
    assert args.num_envs == [1, 64]
    assert args.batch_size == 16 and args.repeats == 10 and args.max_step_seconds == 60
    assert args.presets == benchmark.mujoco_presets()
    assert args.backends == [b for b in benchmark.available_backends() if b != "cuda"]
    assert args.markdown == ROOT / "BENCHMARKS.md"
    assert args.plot == ROOT / "benchmarks" / "benchmark_cpu.png"
    assert args.results == ROOT / "benchmarks" / "benchmark_cpu.json"


def test_presets_all_means_every_mujoco_preset():
    presets = benchmark.parse_args(["--device", "cpu", "--presets", "all"]).presets
    assert {"dmamba-mujoco", "dema-mujoco", "mambadm-mujoco", "hf-mamba-dt"} <= set(presets)
    assert not [name for name in presets if "atari" in name]
    assert "dmamba-hopper" not in presets, "dmamba-mujoco's architecture for Hopper: the same model here"


def test_training_table_has_dt_and_decision_mamba_per_context_with_ratios_and_peak_memory(run):
    rows = md_section_table(run["markdown"], "Training step")
    for steps in CONTEXTS:
        at_k = {row["model"]: row for row in rows if row["K"] == str(steps)}
        assert set(at_k) == {"DT", "dmamba-mujoco [torch]"}
        assert at_k["DT"]["x DT"] == "1.00" and at_k["DT"]["tokens"] == str(3 * steps)
        for row in at_k.values():
            assert NUMBER.match(row["step ms"]) and NUMBER.match(row["x DT"]), row
            assert float(row["peak MiB"]) > 0 and NUMBER.match(row["x DT memory"]), row


def test_acting_table_has_every_policy_per_env_count_with_a_latency_per_probe(run):
    rows = md_section_table(run["markdown"], "Acting latency")
    policies = ["DT window", "dmamba-mujoco window", "dmamba-mujoco recurrent"]
    assert [(row["policy"], row["envs"]) for row in rows] == [(p, str(n)) for n in NUM_ENVS for p in policies]
    for row in rows:
        assert all(NUMBER.match(row[f"step {probe} ms"]) for probe in PROBES), row
        assert NUMBER.match(row["x DT window (step 2)"]) and NUMBER.match(row["step 18 / step 2"]), row
        assert row["episodes"] == "1", "--acting-seconds 0: one episode per policy"


def test_targets_on_a_cpu_leave_the_gpu_ones_not_yet_measured(run):
    targets = {row["target"]: row["status"] for row in md_section_table(run["markdown"], "Targets")}
    gpu = [status for target, status in targets.items() if target.startswith("GPU")]
    assert len(gpu) == 4 and set(gpu) == {"not yet measured (no GPU in this run)"}
    assert targets["CPU: recurrent acting latency step 18 / step 2 <= 1.2"] in {"met", "missed"}
    assert targets["CPU: training-step time <= 1.0x DT's at K=100"].startswith("not yet measured")


def test_markdown_names_the_device_and_the_memory_method(run):
    assert f"torch {torch.__version__}" in run["markdown"]
    assert "Device: CPU" in run["markdown"] and "torch threads" in run["markdown"]
    assert "peak RSS" in run["markdown"] or "ru_maxrss" in run["markdown"]


def test_a_rerun_replaces_its_section_and_keeps_the_rest_of_the_file(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nHand-written.\n")
    benchmark.write_section(path, "first cpu run\n", "cpu")
    benchmark.write_section(path, "gpu run\n", "cuda")
    benchmark.write_section(path, "second cpu run\n", "cpu")
    text = path.read_text()
    assert text.startswith(
        "# Benchmarks\n\nHand-written.\n\n<!-- scripts/benchmark.py cpu -->\nsecond cpu run\n"
    )
    assert "first cpu run" not in text and text.count("<!-- scripts/benchmark.py cpu -->") == 1
    assert text.endswith("<!-- scripts/benchmark.py cuda -->\ngpu run\n<!-- /scripts/benchmark.py cuda -->\n")


def test_markdown_links_the_plot(run):
    assert "![training time, peak memory and acting latency" in run["markdown"]
    assert "(x.png)" in run["markdown"]


def test_a_saved_run_renders_the_same_report_without_measuring(run, tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "run_worker", lambda *a: pytest.fail("--render must not measure"))
    markdown = tmp_path / "again.md"
    with contextlib.redirect_stdout(io.StringIO()):
        args = [
            "--render",
            str(run["results"]),
            "--markdown",
            str(markdown),
            "--plot",
            str(tmp_path / "a.png"),
        ]
        assert benchmark.main(args) == 0
    assert markdown.read_text().replace("a.png", "x.png") == run["markdown"]


def test_targets_name_which_presets_meet_them():
    assert benchmark.verdict({"a": True, "b": True}) == "met"
    assert benchmark.verdict({"a": False, "b": False}) == "missed"
    assert benchmark.verdict({"a": False, "b": True, "c": True}) == "met by 2 of 3 presets (b, c)"


def test_plot_is_a_png(run):
    assert run["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ratio_table_is_printed_last(run):
    lines = run["stdout"].rstrip().splitlines()
    start = lines.index("Ratios to DT, all from this run (cpu):")
    assert any(line.startswith("train K=") for line in lines[:start])
    assert any(line.startswith("act envs=") for line in lines[:start])
    tail = lines[start + 1 :]
    assert all(line == "" or line.startswith("|") for line in tail)
    assert "| x DT (time / memory) | K=8 | K=16 |" in tail
    assert tail[-1].startswith("| CPU: recurrent acting latency")


def test_peak_memory_sees_a_200_mb_allocation():
    memory = benchmark.PeakMemory("cpu")
    memory.start()
    block = torch.ones(50_000_000)  # 200 MB, every page written
    del block
    assert memory.method in benchmark.PeakMemory.METHODS
    assert memory.peak_mib() >= 185


def tiny_spec(**overrides) -> dict:
    """A worker spec for a tiny Decision Mamba configuration."""
    spec = {
        "device": "cpu", "batch_size": 2, "hidden": 16, "layers": 1, "max_ep_len": 64, "repeats": 3, "K": 4,
        "max_step_seconds": 60, "config_seconds": 30, "model": "DM", "preset": "dmamba-mujoco",
        "backend": "torch",
    }  # fmt: skip
    return {**spec, **overrides}


def test_a_dt_configuration_is_measured_in_a_fresh_worker_process():
    spec = tiny_spec(model="DT", preset=None, backend=None, repeats=2)
    result = benchmark.run_worker(spec, timeout=120)
    assert result["steps"] == 2 and result["seconds"] > 0 and result["peak_mib"] >= 0
    assert result["note"] == "median of 2" and result["memory_method"] in benchmark.PeakMemory.METHODS


def test_a_first_step_slower_than_max_step_seconds_is_timed_once():
    result = benchmark.measure_training(tiny_spec(max_step_seconds=0))
    assert result["steps"] == 1 and result["note"] == "1 step (too slow to repeat)"


def test_repeats_shrink_to_fit_the_time_budget():
    result = benchmark.measure_training(tiny_spec(config_seconds=0))
    assert result["steps"] == 1 and "fewer" in result["note"]


def test_a_failing_configuration_reports_why_instead_of_crashing(capsys):
    assert benchmark.worker_main(json.dumps(tiny_spec(backend="cuda"))) == 0
    result = json.loads(capsys.readouterr().out.strip().removeprefix(benchmark.RESULT_MARKER))
    assert "cuda" in result["error"]
    killed = subprocess.CompletedProcess([], returncode=-9, stdout="", stderr="")
    assert benchmark.failure_reason(killed) == "killed by SIGKILL (out of memory?)"


class SlowPhasePolicy:
    """A policy whose `act` advances a fake clock by 1 ms, but by 10 ms from step 10 of its first episode on:
    a slow phase of the machine."""

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.episode, self.step = clock, 0, 0

    def reset(self, num_envs: int, target_return: float) -> None:
        self.episode, self.step = self.episode + 1, 0

    def act(self, observation, reward) -> None:
        self.clock[0] += 0.010 if self.episode == 1 and self.step >= 10 else 0.001
        self.step += 1


@pytest.mark.parametrize("seconds, episodes", [(0.0, 1), (10.0, benchmark.MAX_EPISODES)])
def test_acting_latency_pools_episodes_that_fit_the_budget_so_one_slow_phase_does_not_decide_a_probe(
    monkeypatch, seconds, episodes
):
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    latency, played = benchmark.time_acting(SlowPhasePolicy(clock), 1, 30, [2, 18], seconds)
    assert played == episodes
    assert latency[2] == pytest.approx(0.001)
    assert latency[18] == pytest.approx(0.010 if episodes == 1 else 0.001)
