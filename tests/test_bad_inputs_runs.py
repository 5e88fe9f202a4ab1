"""Bad inputs to runs, checkpoints, remote code, the command line and the Space, as a table.

Each case is one row: a scenario, the exit status it must end with (0: the correct result), the fragments its one
error line must contain (the field or file, and what was expected), and a check of what it left on disk. A
refused `dmamba train` must stop before any training step and leave the earlier run's folder byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from conftest import tiny_model
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.cli import evaluate as evaluate_cli
from hf_decision_mamba.cli import train as train_cli
from hf_decision_mamba.data import canonical_features, load_trajectories
from hf_decision_mamba.data.synthetic import synthetic_episodes
from hf_decision_mamba.evaluation import is_browser_playable
from hf_decision_mamba.evaluation.episode import record_episode
from hf_decision_mamba.loading import load_config
from test_training import TINY_TRAIN_ARGS

APP = Path(__file__).resolve().parent.parent / "spaces_demo" / "app.py"
UNREACHABLE_HUB = "http://127.0.0.1:9"  # nothing listens on the discard port: refused at once


@dataclass
class Outcome:
    status: int
    err: str
    folder: Path | None = None
    extra: dict = field(default_factory=dict)


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def call(main: Callable[[list[str]], int], argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


# -- a finished run to rerun, resume and evaluate --------------------------------------------------------------


def _episodes_file(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    load_trajectories("embedded:hopper", max_episodes=count).to_parquet(str(path))
    return path


def _train_argv(output_dir: Path, data: Path, *extra: str) -> list[str]:
    return [*TINY_TRAIN_ARGS, "--no_env_eval", "--max_steps", "2", "--save_steps", "2", "--report_to", "none",
            "--dataset", str(data), "--output_dir", str(output_dir), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data file): two steps of a tiny model on six Hopper episodes, with checkpoint-2."""
    root = tmp_path_factory.mktemp("finished_run")
    data = _episodes_file(root / "data" / "hopper.parquet", 6)
    assert train_cli.main(_train_argv(root / "run", data)) == 0
    return root / "run", data


def _rerun(finished_run, tmp_path, capsys, *extra: str, data_count: int | None = None, copy_data=False):
    """Rerun `dmamba train` into a copy of the finished run (the data optionally rewritten or copied)."""
    run, data = finished_run
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    data_path = tmp_path / "data" / "hopper.parquet"
    if data_count is not None:
        _episodes_file(data_path, data_count)
    elif copy_data:
        shutil.copytree(data.parent, data_path.parent)
    else:
        data_path = data
    before = snapshot(folder)
    status, err = call(train_cli.main, _train_argv(folder, data_path, *extra), capsys)
    return Outcome(status, err, folder, {"before": before})


def rerun_same(finished_run, tmp_path, capsys):
    return _rerun(finished_run, tmp_path, capsys)


def rerun_same_data_elsewhere(finished_run, tmp_path, capsys):
    return _rerun(finished_run, tmp_path, capsys, copy_data=True)


def rerun_rewritten_data(finished_run, tmp_path, capsys):
    return _rerun(finished_run, tmp_path, capsys, data_count=5)


def rerun_other_architecture(finished_run, tmp_path, capsys):
    overrides = "hidden_size=32,num_hidden_layers=1,state_size=4,context_length=5,dropout=0.0"
    return _rerun(finished_run, tmp_path, capsys, "--config_overrides", overrides)


def rerun_other_return_scale(finished_run, tmp_path, capsys):
    return _rerun(finished_run, tmp_path, capsys, "--rtg_scale", "100")


def rerun_other_data_overwrite(finished_run, tmp_path, capsys):
    return _rerun(finished_run, tmp_path, capsys, "--overwrite_output_dir", data_count=5)


def rerun_overwrite_and_resume(finished_run, tmp_path, capsys):
    return _rerun(
        finished_run, tmp_path, capsys, "--overwrite_output_dir", "--resume_from_checkpoint", "last"
    )


def rerun_without_record(finished_run, tmp_path, capsys):
    run, data = finished_run
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "run_record.json").unlink()
    for checkpoint in folder.glob("checkpoint-*"):
        (checkpoint / "run_record.json").unlink()
    before = snapshot(folder)
    status, err = call(train_cli.main, _train_argv(folder, data), capsys)
    return Outcome(status, err, folder, {"before": before})


def resume_from_other_run(finished_run, tmp_path, capsys):
    run, data = finished_run
    overrides = "hidden_size=32,num_hidden_layers=1,state_size=4,context_length=5,dropout=0.0"
    argv = _train_argv(tmp_path / "new", data, "--config_overrides", overrides,
                       "--resume_from_checkpoint", str(run / "checkpoint-2"))  # fmt: skip
    status, err = call(train_cli.main, argv, capsys)
    return Outcome(status, err, tmp_path / "new")


def resume_from_truncated_checkpoint(finished_run, tmp_path, capsys):
    run, data = finished_run
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    weights = folder / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = snapshot(folder)
    status, err = call(train_cli.main, _train_argv(folder, data, "--max_steps", "4"), capsys)
    return Outcome(status, err, folder, {"before": before})


def unchanged(outcome: Outcome) -> None:
    assert snapshot(outcome.folder) == outcome.extra["before"], "the earlier run's files were changed"


def restored_unchanged_weights(outcome: Outcome) -> None:
    after = snapshot(outcome.folder)
    assert after["model.safetensors"] == outcome.extra["before"]["model.safetensors"]
    assert not (outcome.folder / "checkpoint-4").exists()


def trained_anew_on_the_new_data(outcome: Outcome) -> None:
    record = json.loads((outcome.folder / "run_record.json").read_text())
    new_data = outcome.folder.parent / "data" / "hopper.parquet"
    assert record["data"]["sha256"] == hashlib.sha256(b"hopper.parquet\0" + new_data.read_bytes()).hexdigest()
    summary = json.loads((outcome.folder / "training_args.json").read_text())["dataset_summary"]
    assert summary["episodes"] == 5
    assert snapshot(outcome.folder)["model.safetensors"] != outcome.extra["before"]["model.safetensors"]


def train_diverging(tmp_path, capsys):
    """Train at a learning rate that turns the weights into NaN after the first step."""
    data = _episodes_file(tmp_path / "data" / "hopper.parquet", 6)
    argv = _train_argv(tmp_path / "run", data, "--max_steps", "4", "--save_steps", "1", "--learning_rate", "1e12",
                       "--max_grad_norm", "0")  # fmt: skip
    status, err = call(train_cli.main, argv, capsys)
    return Outcome(status, err, tmp_path / "run")


def no_model_saved(outcome: Outcome) -> None:
    """Only the checkpoint of the step before the NaN loss (finite, resumable), and no model or results."""
    visible = sorted(path.name for path in outcome.folder.iterdir() if not path.name.startswith("."))
    assert visible == ["checkpoint-1", "run_record.json"]
    weights = load_file(outcome.folder / "checkpoint-1" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def nothing_written(outcome: Outcome) -> None:
    assert not outcome.folder.exists(), f"{outcome.folder} was created"


# -- remote code, damaged weights, missing folders -------------------------------------------------------------

EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import PreTrainedConfig, PreTrainedModel
class EvilConfig(PreTrainedConfig):
    model_type = "evil_net"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def remote_code_folder(tmp_path: Path) -> Path:
    """A folder whose config names its own code (auto_map); importing that code writes `ran.txt`."""
    folder = tmp_path / "evil"
    folder.mkdir()
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_net", "auto_map": auto_map}))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(tmp_path / "ran.txt")))
    return folder


def evaluate_remote_code(tmp_path, capsys):
    folder = remote_code_folder(tmp_path)
    status, err = call(evaluate_cli.main, [str(folder), "--output_dir", str(tmp_path / "out")], capsys)
    return Outcome(status, err, tmp_path / "out")


def evaluate_remote_code_allowed(tmp_path, capsys):
    """The dashed spelling works like the others; the code then runs (the stand-in model has no weights)."""
    folder = remote_code_folder(tmp_path)
    argv = [str(folder), "--trust-remote-code", "--output_dir", str(tmp_path / "out")]
    status, err = call(evaluate_cli.main, argv, capsys)
    return Outcome(status, err, tmp_path / "out")


def train_from_remote_code(tmp_path, capsys):
    folder = remote_code_folder(tmp_path)
    argv = [*TINY_TRAIN_ARGS, "--no_env_eval", "--model_name_or_path", str(folder), "--output_dir",
            str(tmp_path / "out")]  # fmt: skip
    status, err = call(train_cli.main, argv, capsys)
    return Outcome(status, err, tmp_path / "out")


def load_remote_code_when_allowed(tmp_path, capsys):
    config = load_config(remote_code_folder(tmp_path), trust_remote_code=True)
    return Outcome(0, "", tmp_path / "out", {"config": config})


def no_code_ran(outcome: Outcome) -> None:
    assert not (outcome.folder.parent / "ran.txt").exists(), "the checkpoint's code ran without being allowed"
    nothing_written(outcome)


def code_ran_as_asked(outcome: Outcome) -> None:
    assert (outcome.folder.parent / "ran.txt").read_text() == "ran"
    if "config" in outcome.extra:
        assert type(outcome.extra["config"]).__name__ == "EvilConfig"
    nothing_written(outcome)


def _saved_hopper(folder: Path) -> Path:
    tiny_model(
        "dmamba-hopper", state_dim=11, act_dim=3, env_id="Hopper-v5", target_return=3600.0
    ).save_pretrained(folder)
    return folder


def _evaluate(tmp_path, capsys, model: str, *extra: str) -> Outcome:
    argv = [model, "--num_episodes", "1", "--max_episode_steps", "3", "--no_progress", "--device", "cpu",
            "--output_dir", str(tmp_path / "out"), *extra]  # fmt: skip
    status, err = call(evaluate_cli.main, argv, capsys)
    return Outcome(status, err, tmp_path / "out")


def evaluate_damaged_weights(keep: Callable[[bytes], bytes]):
    def scenario(tmp_path, capsys):
        folder = _saved_hopper(tmp_path / "model")
        weights = folder / "model.safetensors"
        weights.write_bytes(keep(weights.read_bytes()))
        return _evaluate(tmp_path, capsys, str(folder))

    return scenario


def evaluate_missing_folder(tmp_path, capsys):
    return _evaluate(tmp_path, capsys, str(tmp_path / "no" / "such" / "dir"))


def evaluate_failing_after_load(tmp_path, capsys):
    return _evaluate(tmp_path, capsys, str(_saved_hopper(tmp_path / "model")), "--env_id", "CartPole-v1")


# -- no network ------------------------------------------------------------------------------------------------


def _offline_command(tmp_path: Path, command: str, *argv: str) -> Outcome:
    """`dmamba <command> ...` in a fresh process whose Hub endpoint refuses every connection."""
    env = {**os.environ, "HF_ENDPOINT": UNREACHABLE_HUB, "HF_HUB_OFFLINE": "0"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", f"hf_decision_mamba.cli.{command}", *argv], env=env, capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    return Outcome(result.returncode, result.stderr, tmp_path, {"seconds": time.perf_counter() - start})


def train_without_network(tmp_path, capsys):
    return _offline_command(tmp_path, "train", "--dataset", "d4rl:hopper-medium-v2", "--output_dir", "out")


def push_without_network(tmp_path, capsys):
    folder = _saved_hopper(tmp_path / "model")
    return _offline_command(tmp_path, "push", str(folder), "--repo_id", "user/tiny-hopper")


def evaluate_hub_id_without_network(tmp_path, capsys):
    return _offline_command(tmp_path, "evaluate", "user/tiny-hopper", "--output_dir", "out")


def one_line_no_retries(outcome: Outcome) -> None:
    assert outcome.err.count("\n") == 1 and "Traceback" not in outcome.err and "Retry" not in outcome.err
    assert not (outcome.folder / "out").exists()


# -- checkpoint files ------------------------------------------------------------------------------------------


def saved_file_modes(finished_run, tmp_path, capsys):
    run, _ = finished_run
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*run.iterdir(), *(run / "checkpoint-2").iterdir()]}
    return Outcome(0, "", run, {"modes": modes})


def weights_have_the_files_mode(outcome: Outcome) -> None:
    mask = os.umask(0)
    os.umask(mask)
    modes = outcome.extra["modes"]
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~mask


# -- local datasets (issue item 1, fixed earlier) ---------------------------------------------------------------


def same_name_folders(tmp_path, capsys):
    counts = {}
    for parent, count in (("a", 2), ("b", 3)):
        folder = tmp_path / parent / "samebase"
        folder.mkdir(parents=True)
        features = canonical_features(atari=False, discrete=False)
        Dataset.from_list(synthetic_episodes([20] * count), features=features).to_parquet(
            str(folder / "train.parquet")
        )
        counts[parent] = len(load_trajectories(folder))
    return Outcome(0, "", tmp_path, {"counts": counts})


def each_folder_its_own(outcome: Outcome) -> None:
    assert outcome.extra["counts"] == {"a": 2, "b": 3}


# -- the Space -------------------------------------------------------------------------------------------------


def _space(monkeypatch, root: Path | None):
    import importlib.util

    monkeypatch.setenv("DMAMBA_SPACE_MODEL", "user/some-model")
    if root is None:
        monkeypatch.delenv("DMAMBA_SPACE_LOCAL_ROOT", raising=False)
    else:
        monkeypatch.setenv("DMAMBA_SPACE_LOCAL_ROOT", str(root))
    spec = importlib.util.spec_from_file_location("space_app_bad_inputs", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def space_request(model_under: str | None, root_set: bool):
    def scenario(tmp_path, capsys, monkeypatch):
        root = tmp_path / "allowed"
        folder = tmp_path / (model_under or "allowed") / "model"
        folder.mkdir(parents=True)
        app = _space(monkeypatch, root if root_set else None)
        model = "user/some-model" if model_under is None else str(folder)
        try:
            request = app.parse_request(model, "Hopper-v5", 0, 3600, "window", 10)
        except ValueError as error:
            return Outcome(2, f"{error}\n", tmp_path)
        return Outcome(0, "", tmp_path, {"request": request, "folder": folder})

    return scenario


def plays(expected: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        value = outcome.extra["folder"].resolve() if expected == "folder" else expected
        assert outcome.extra["request"].model == str(value)

    return check


SPACE_LIMIT_S = 2.0
START_OVERHEAD_S = 2.5
"""Starting the renderer and ffmpeg and closing the file: paid once, whatever the limit."""


def space_long_episode(tmp_path, capsys):
    """HalfCheetah never ends early: 1000 steps would take far longer to play, render and encode than the cap
    (recurrent mode plays fast, so the replay of what was played would take seconds more)."""
    torch.manual_seed(0)
    config = DecisionMambaConfig.from_preset(
        "dmamba-hopper", hidden_size=16, num_hidden_layers=1, state_size=4, state_dim=17, act_dim=6,
        context_length=4, env_id="HalfCheetah-v5", target_return=6000.0,
    )  # fmt: skip
    model = DecisionMambaModel(config).eval()
    start = time.perf_counter()
    recording = record_episode(model, seed=0, mode="recurrent", max_episode_steps=1000, time_limit_s=SPACE_LIMIT_S,
                               video_path=tmp_path / "episode.mp4", render_width=320, render_height=320,
                               render_effects=False)  # fmt: skip
    return Outcome(0, "", tmp_path, {"recording": recording, "seconds": time.perf_counter() - start})


def play_and_video_within_the_cap(outcome: Outcome) -> None:
    recording = outcome.extra["recording"]
    assert recording.video_cut and (recording.timed_out or recording.length == 1000)
    assert outcome.extra["seconds"] <= SPACE_LIMIT_S + START_OVERHEAD_S, outcome.extra["seconds"]
    assert is_browser_playable(recording.video)


# -- the table -------------------------------------------------------------------------------------------------

RERUN_HINT = "--overwrite_output_dir"
CASES = [
    # (scenario, needs, exit status, fragments of the one error line, check of what is left)
    pytest.param(rerun_same, "run", 0, (), restored_unchanged_weights, id="train: same rerun restores the run"),
    pytest.param(rerun_same_data_elsewhere, "run", 0, (), restored_unchanged_weights,
                 id="train: same data at another path is the same run"),
    pytest.param(rerun_rewritten_data, "run", 2, ("output_dir=", "data.sha256=", RERUN_HINT), unchanged,
                 id="train: rewritten data file is refused"),
    pytest.param(rerun_other_architecture, "run", 2, ("model.hidden_size=16 (this run: 32)", RERUN_HINT),
                 unchanged, id="train: other hidden size is refused"),
    pytest.param(rerun_other_return_scale, "run", 2, ("data.rtg_scale=None (this run: 100.0)", RERUN_HINT),
                 unchanged, id="train: other return-to-go scale is refused"),
    pytest.param(train_diverging, "", 2,
                 ("loss: got nan, expected a finite number", "--learning_rate", "--max_grad_norm"),
                 no_model_saved, id="train: a diverging run stops at its first NaN loss and saves no model"),
    pytest.param(rerun_without_record, "run", 2, ("without run_record.json", RERUN_HINT), unchanged,
                 id="train: folder with an unrecorded run is refused"),
    pytest.param(rerun_other_data_overwrite, "run", 0, (), trained_anew_on_the_new_data,
                 id="train: --overwrite_output_dir starts clean"),
    pytest.param(rerun_overwrite_and_resume, "run", 2,
                 ("overwrite_output_dir=True", "resume_from_checkpoint='last'", "expected one of the two"),
                 unchanged, id="train: --overwrite_output_dir with a resume is refused before removing anything"),
    pytest.param(resume_from_other_run, "run", 2, ("resume_from_checkpoint=", "model.hidden_size=16"),
                 nothing_written, id="train: resume from a checkpoint of another architecture is refused"),
    pytest.param(resume_from_truncated_checkpoint, "run", 2, ("checkpoint-2/model.safetensors", "truncated"),
                 unchanged, id="train: resume from a truncated checkpoint is refused"),
    pytest.param(saved_file_modes, "run", 0, (), weights_have_the_files_mode,
                 id="checkpoints: model.safetensors has the mode of the other files"),
    pytest.param(evaluate_remote_code, "", 2, ("model=", "needs its own code", "--trust_remote_code"), no_code_ran,
                 id="evaluate: remote code does not run without --trust_remote_code"),
    pytest.param(evaluate_remote_code_allowed, "", 2, ("model=", "could not be loaded", "model.safetensors"),
                 code_ran_as_asked, id="evaluate: --trust-remote-code runs the checkpoint's code"),
    pytest.param(train_from_remote_code, "", 2, ("needs its own code", "--trust_remote_code"), no_code_ran,
                 id="train: --model_name_or_path remote code does not run without --trust_remote_code"),
    pytest.param(load_remote_code_when_allowed, "", 0, (), code_ran_as_asked,
                 id="remote code runs when the user allows it"),
    pytest.param(evaluate_damaged_weights(lambda b: b[: len(b) // 2]), "", 2,
                 ("model/model.safetensors is corrupt or truncated", "expected a complete safetensors file"),
                 nothing_written, id="checkpoints: truncated model.safetensors"),
    pytest.param(evaluate_damaged_weights(lambda b: b""), "", 2,
                 ("model/model.safetensors is corrupt or truncated", "expected a complete safetensors file"),
                 nothing_written, id="checkpoints: empty model.safetensors"),
    pytest.param(evaluate_missing_folder, "", 2,
                 ("no/such/dir", "no such local folder, and not a Hub repo id either"), nothing_written,
                 id="evaluate: missing folder"),
    pytest.param(evaluate_failing_after_load, "", 2, ("action_space='continuous'", "CartPole-v1"), nothing_written,
                 id="evaluate: a failed evaluation leaves no output folder"),
    pytest.param(train_without_network, "", 2,
                 ("dmamba train: error: could not reach the Hugging Face Hub at http://127.0.0.1:9",
                  "to load dataset 'd4rl:hopper-medium-v2'", "HF_HUB_OFFLINE=1", "local copy"),
                 one_line_no_retries, id="train: no network"),
    pytest.param(push_without_network, "", 2,
                 ("dmamba push: error: could not reach the Hugging Face Hub at http://127.0.0.1:9",
                  "push to 'user/tiny-hopper'", "nothing was uploaded"),
                 one_line_no_retries, id="push: no network"),
    pytest.param(evaluate_hub_id_without_network, "", 2,
                 ("dmamba evaluate: error: could not reach the Hugging Face Hub at http://127.0.0.1:9",
                  "to load model 'user/tiny-hopper'", "HF_HUB_OFFLINE=1"),
                 one_line_no_retries, id="evaluate: Hub id without network"),
    pytest.param(same_name_folders, "", 0, (), each_folder_its_own,
                 id="data: two folders with the same name load their own episodes"),
    pytest.param(space_request("elsewhere", root_set=True), "space", 2,
                 ("is not playable here", "DMAMBA_SPACE_LOCAL_ROOT"), None,
                 id="space: local folder outside the configured root"),
    pytest.param(space_request("elsewhere", root_set=False), "space", 2,
                 ("is not playable here", "Hub ids"), None, id="space: local folder without a configured root"),
    pytest.param(space_request("allowed", root_set=True), "space", 0, (), plays("folder"),
                 id="space: local folder under the root"),
    pytest.param(space_request(None, root_set=False), "space", 0, (), plays("user/some-model"),
                 id="space: Hub id"),
    pytest.param(space_long_episode, "", 0, (), play_and_video_within_the_cap,
                 id="space: the time cap covers rendering and encoding"),
]  # fmt: skip


@pytest.mark.parametrize(("scenario", "needs", "status", "says", "check"), CASES)
def test_bad_input(scenario, needs, status, says, check, request, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if needs == "run":
        outcome = scenario(request.getfixturevalue("finished_run"), tmp_path, capsys)
    elif needs == "space":
        outcome = scenario(tmp_path, capsys, monkeypatch)
    else:
        outcome = scenario(tmp_path, capsys)
    lines = outcome.err.splitlines()
    error_lines = [line for line in lines if ": error: " in line] if ": error: " in outcome.err else lines
    assert outcome.status == status, outcome.err[-2000:]
    if status == 2:
        assert len(error_lines) == 1 and "Traceback" not in outcome.err, outcome.err[-2000:]
        for fragment in says:
            assert fragment in error_lines[0], error_lines[0]
    if check is not None:
        check(outcome)


def test_overwrite_removes_every_file_a_run_writes_and_nothing_else(tmp_path):
    from hf_decision_mamba.training.run_folder import clear_run

    written = ["config.json", "model.safetensors", "env_eval_report.json", "eval_results.json", "replay.mp4"]
    for name in [*written, "checkpoint-5/trainer_state.json", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_run(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
