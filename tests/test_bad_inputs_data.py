"""Bad data and bad configs, case by case: each either gives the correct result or stops with one line naming the
file, episode, column, step or field and what was expected, before any training step.

Every case is one row of a table: a name, a function that builds the input under a temporary folder and runs the
code under test, and the outcome (a regex the `ValueError` must match, or a check of the correct result).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from transformers import AutoConfig

from conftest import tiny_model
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.cli import train as train_cli
from hf_decision_mamba.data import TrajectoryWindowDataset, canonical_features, load_trajectories
from hf_decision_mamba.data.schema import episodes_to_table
from hf_decision_mamba.data.synthetic import synthetic_episodes
from hf_decision_mamba.training import last_complete_checkpoint
from test_training import TINY_TRAIN_ARGS

LENGTHS = (10, 12, 11)
FINITE = r"expected finite values within float32's range \(\|x\| <= 3\.4e\+38\)"
FEATURES = canonical_features(atari=False, discrete=False)


@dataclass(frozen=True)
class Case:
    """One bad input: `run(tmp_path)` builds and uses it; it must raise a `ValueError` matching `error`, or
    return a result that `check` accepts."""

    name: str
    run: Callable[[Path], Any]
    error: str | None = None
    check: Callable[[Any, Path], None] | None = None


# -- building bad inputs ----------------------------------------------------------------------------------------


def rows(lengths=LENGTHS) -> list[dict[str, Any]]:
    return [{k: np.asarray(v).tolist() for k, v in e.items()} for e in synthetic_episodes(lengths)]


def as_strings(value: Any) -> Any:
    return [as_strings(v) for v in value] if isinstance(value, list) else repr(float(value))


def with_value(field: str, episode: int, step: int, value: Any, strings: bool = True) -> list[dict[str, Any]]:
    """Canonical rows whose `field` column is stored as strings (or float64 numbers), one entry replaced."""
    episodes = rows()
    for row in episodes:
        row[field] = as_strings(row[field]) if strings else row[field]
    entry = episodes[episode][field]
    if isinstance(entry[step], list):
        entry[step][0] = value
    else:
        entry[step] = value
    return episodes


def write_rows(path: Path, episodes: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    return path


def zero_row_parquet(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(FEATURES.arrow_schema.empty_table(), path)
    return path


def empty_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def windows(source: Any, **kwargs: Any) -> TrajectoryWindowDataset:
    """The window dataset the Trainer samples from, built from `source` (a path is loaded first)."""
    episodes = load_trajectories(source) if isinstance(source, Path) else source
    return TrajectoryWindowDataset(episodes, 4, progress=False, **kwargs)


def windows_of(episodes: list[dict[str, Any]], **kwargs: Any) -> Callable[[Path], TrajectoryWindowDataset]:
    return lambda tmp: windows(write_rows(tmp / "episodes.parquet", episodes), **kwargs)


def stored_rewards(dataset: TrajectoryWindowDataset, _tmp: Path) -> None:
    """The windows hold the numbers stored in the file, as float32."""
    expected = [np.asarray(e["rewards"], np.float64).astype(np.float32) for e in synthetic_episodes(LENGTHS)]
    assert [r.dtype for r in dataset.rewards] == [np.float32] * 3
    for got, want in zip(dataset.rewards, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# -- configs ------------------------------------------------------------------------------------------------------


def saved_config(tmp: Path, drop: str = "", **changes: Any) -> Path:
    """A tiny model saved with `save_pretrained`, its config.json edited: `drop` removed, `changes` set."""
    folder = tmp / "checkpoint"
    tiny_model("dmamba-mujoco").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop(drop, None)
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def warnings_of(build: Callable[[Path], Any]) -> Callable[[Path], list[str]]:
    """Run `build` and return the config warnings it logged (captured on the config module's logger)."""

    def run(tmp: Path) -> list[str]:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append
        config_logger = logging.getLogger("hf_decision_mamba.configuration_decision_mamba")
        config_logger.addHandler(handler)
        try:
            build(tmp)
        finally:
            config_logger.removeHandler(handler)
        return [record.getMessage() for record in records]

    return run


def one_warning(pattern: str) -> Callable[[list[str], Path], None]:
    def check(messages: list[str], _tmp: Path) -> None:
        assert len(messages) == 1, messages
        assert re.search(pattern, messages[0]), messages

    return check


def silent(messages: list[str], _tmp: Path) -> None:
    assert messages == []


def round_trip(tmp: Path) -> None:
    """save_pretrained / from_pretrained of the model and the config, through the Auto classes too."""
    config = DecisionMambaConfig(
        state_dim=5, act_dim=3, hidden_size=16, num_hidden_layers=1, state_size=4, torch_dtype="float32"
    )
    DecisionMambaModel(config).save_pretrained(tmp / "saved")
    DecisionMambaModel.from_pretrained(tmp / "saved")
    AutoConfig.from_pretrained(tmp / "saved")
    DecisionMambaConfig.from_pretrained(tmp / "saved", return_unused_kwargs=True)


TRANSFORMERS_FIELDS = {
    "dtype": "float32",
    "architectures": ["DecisionMambaModel"],
    "auto_map": {"AutoConfig": "configuration_decision_mamba.DecisionMambaConfig"},
    "transformers_version": "5.0.0",
    "_name_or_path": "somewhere",
    "model_type": "decision_mamba",
    "output_hidden_states": False,
    "return_dict": True,
    "use_cache": True,
    "tie_word_embeddings": False,
}


# -- training -----------------------------------------------------------------------------------------------------


def train(
    tmp: Path, data: Path, capsys: pytest.CaptureFixture, max_steps: int = 1, *extra: str
) -> tuple[int, str]:
    """`dmamba train` in-process on `data` (tiny model, a checkpoint every step): (exit status, its messages)."""
    capsys.readouterr()
    tiny = TINY_TRAIN_ARGS[2:]  # without --max_episodes 6
    status = train_cli.main(
        [
            *tiny,
            "--dataset",
            str(data),
            "--output_dir",
            str(tmp / "run"),
            "--env_id",
            "Hopper-v5",
            "--no_env_eval",
            "--report_to",
            "none",
            "--max_steps",
            str(max_steps),
            "--save_steps",
            "1",
            *extra,
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, "\n".join(
        line for line in err.splitlines() if line.startswith("dmamba")
    )  # no progress bars


def no_training_step(output: Path) -> None:
    assert last_complete_checkpoint(output) is None
    assert not (output / "model.safetensors").exists()


def _big_rewards() -> list[dict[str, Any]]:
    episodes = rows()
    episodes[1]["rewards"] = [3e38] * 2 + [0.0] * 10  # each is a float32, their sum is not
    return episodes


def _numpy_episodes_with(episode: int, field: str, step: int, value: float) -> list[dict[str, np.ndarray]]:
    episodes = synthetic_episodes(LENGTHS)
    episodes[episode][field] = episodes[episode][field].astype(np.float64)
    episodes[episode][field][step] = value
    return episodes


def _folder_with_an_empty_shard(tmp: Path):
    folder = tmp / "folder"
    zero_row_parquet(folder / "train-00000-of-00002.parquet")
    pq.write_table(
        episodes_to_table(synthetic_episodes(LENGTHS), FEATURES), folder / "train-00001-of-00002.parquet"
    )
    return load_trajectories(folder)


def _saved_empty(path: Path) -> Path:
    Dataset(FEATURES.arrow_schema.empty_table()).save_to_disk(str(path))
    return path


def _same_episodes(dataset: Dataset, expected: list[dict[str, np.ndarray]]) -> None:
    assert len(dataset) == len(expected)
    for row, episode in zip(dataset.with_format("numpy"), expected, strict=True):
        np.testing.assert_array_equal(row["rewards"], episode["rewards"])


def _equal(got: Any, want: Any) -> None:
    assert got == want


# -- the table ----------------------------------------------------------------------------------------------------

CASES = [
    # values checked after the cast to float32 (issue 14, item 4)
    Case(
        "string 'nan' reward",
        windows_of(with_value("rewards", 1, 3, "nan")),
        rf"^episode 1: 'rewards' contains NaN or inf at step 3; {FINITE}, got 'nan'\.$",
    ),
    Case(
        "string 'inf' observation",
        windows_of(with_value("observations", 2, 7, "inf")),
        rf"^episode 2: 'observations' contains NaN or inf at step 7; {FINITE}, got 'inf'\.$",
    ),
    Case(
        "string '-inf' action",
        windows_of(with_value("actions", 0, 9, "-inf")),
        rf"^episode 0: 'actions' contains NaN or inf at step 9; {FINITE}, got '-inf'\.$",
    ),
    Case(
        "float64 1e300 observation overflows float32",
        windows_of(with_value("observations", 1, 2, 1e300, strings=False)),
        rf"^episode 1: 'observations' contains NaN or inf at step 2; {FINITE}, got 1e\+300, which overflows "
        r"float32\.$",
    ),
    Case(
        "float64 -1e39 reward overflows float32",
        windows_of(with_value("rewards", 2, 0, -1e39, strings=False)),
        rf"^episode 2: 'rewards' contains NaN or inf at step 0; {FINITE}, got -1e\+39, which overflows float32\.$",
    ),
    Case(
        "finite rewards whose returns-to-go overflow float32",
        windows_of(_big_rewards(), rtg_scale=1.0),
        rf"^episode 1: 'returns_to_go' contains NaN or inf at step 0; {FINITE}, got 6e\+38, which overflows "
        r"float32\.$",
    ),
    Case(
        "numpy episodes with a float64 1e300 reward",
        lambda tmp: windows(_numpy_episodes_with(1, "rewards", 4, 1e300)),
        rf"^episode 1: 'rewards' contains NaN or inf at step 4; {FINITE}, got 1e\+300, which overflows float32\.$",
    ),
    Case(
        "unconvertible string 'oops' reward",
        windows_of(with_value("rewards", 1, 4, "oops")),
        r"^episode 1: 'rewards' has 'oops' at step 4; expected float32 numbers\.$",
    ),
    Case(
        "unconvertible string 'oops' inside an observation vector",
        windows_of(with_value("observations", 2, 6, "oops")),
        r"^episode 2: 'observations' has 'oops' at step 6; expected float32 numbers\.$",
    ),
    Case(
        "numbers stored as strings train on their values",
        windows_of([{**row, "rewards": as_strings(row["rewards"])} for row in rows()]),
        check=stored_rewards,
    ),
    Case(
        "float64 numbers within range train on their float32 values",
        windows_of(rows()),
        check=stored_rewards,
    ),
    # empty data: one line naming the source
    Case(
        "empty (0-byte) parquet file",
        lambda tmp: load_trajectories(empty_file(tmp / "episodes.parquet")),
        r"^.*episodes\.parquet: the file is empty \(0 bytes\); expected a \.parquet file of episodes\.$",
    ),
    Case(
        "empty (0-byte) jsonl file",
        lambda tmp: load_trajectories(empty_file(tmp / "episodes.jsonl")),
        r"^.*episodes\.jsonl: the file is empty \(0 bytes\); expected a \.jsonl file of episodes\.$",
    ),
    Case(
        "local parquet folder with an empty file",
        lambda tmp: load_trajectories(empty_file(tmp / "folder" / "data" / "train-00000.parquet").parents[1]),
        r"^.*folder/data/train-00000\.parquet: the file is empty \(0 bytes\); expected a \.parquet file",
    ),
    Case(
        "0-row parquet file",
        lambda tmp: load_trajectories(zero_row_parquet(tmp / "episodes.parquet")),
        r"^.*episodes\.parquet: has 0 episodes \(its data files have 0 rows\); expected at least one episode\.$",
    ),
    Case(
        "local folder whose only file has 0 rows",
        lambda tmp: load_trajectories(zero_row_parquet(tmp / "folder" / "train.parquet").parent),
        r"^.*folder: has 0 episodes \(its data files have 0 rows\); expected at least one episode\.$",
    ),
    Case(
        "local folder with a 0-row shard next to a full one loads the full one",
        lambda tmp: _folder_with_an_empty_shard(tmp),
        check=lambda dataset, tmp: _same_episodes(dataset, synthetic_episodes(LENGTHS)),
    ),
    Case(
        "0-row save_to_disk dataset",
        lambda tmp: load_trajectories(_saved_empty(tmp / "saved")),
        r"^.*saved: has 0 episodes \(no data files\); expected at least one episode\.$",
    ),
    Case(
        "0-row in-memory dataset",
        lambda tmp: windows(Dataset(FEATURES.arrow_schema.empty_table())),
        r"^no episodes: the dataset is empty \(0 episodes\); expected at least one episode\.$",
    ),
    # configs loaded from a config.json
    Case(
        "config.json without state_dim",
        lambda tmp: AutoConfig.from_pretrained(saved_config(tmp, drop="state_dim")),
        r"^DecisionMambaConfig: the saved config \(config\.json\) has no 'state_dim'; expected the size of one",
    ),
    Case(
        "config.json without act_dim (continuous)",
        lambda tmp: DecisionMambaConfig.from_pretrained(saved_config(tmp, drop="act_dim")),
        r"^DecisionMambaConfig: the saved config \(config\.json\) has no 'act_dim'; expected the size of one "
        r"continuous action",
    ),
    Case(
        "config.json without hidden_size",
        lambda tmp: DecisionMambaModel.from_pretrained(saved_config(tmp, drop="hidden_size")),
        r"^DecisionMambaConfig: the saved config \(config\.json\) has no 'hidden_size'; expected the width",
    ),
    Case(
        "config.json without num_hidden_layers",
        lambda tmp: DecisionMambaModel.from_pretrained(saved_config(tmp, drop="num_hidden_layers")),
        r"^DecisionMambaConfig: the saved config \(config\.json\) has no 'num_hidden_layers'; expected the number",
    ),
    Case(
        "discrete config.json without act_dim takes it from n_actions",
        lambda tmp: AutoConfig.from_pretrained(
            saved_config(tmp, drop="act_dim", action_space="discrete", n_actions=4, action_tanh=False)
        ),
        check=lambda config, tmp: _equal((config.act_dim, config.n_actions), (4, 4)),
    ),
    Case(
        "config state_mean beyond float32",
        lambda tmp: DecisionMambaConfig(state_dim=3, state_mean=[0.0, 1e300, 0.0], state_std=[1.0] * 3),
        r"^DecisionMambaConfig\.state_mean\[1\]=1e\+300: expected a finite number within float32's range "
        r"\(\|x\| <= 3\.4e\+38\)\.$",
    ),
    Case(
        "config.json with a NaN state_std",
        lambda tmp: AutoConfig.from_pretrained(
            saved_config(tmp, state_std=[1.0, float("nan"), 1.0, 1.0, 1.0])
        ),
        r"^DecisionMambaConfig\.state_std\[1\]=nan: expected a finite number within float32's range",
    ),
    Case(
        "config with a string for a boolean field",
        lambda tmp: DecisionMambaConfig(action_tanh="False"),
        r"^DecisionMambaConfig\.action_tanh='False': expected true or false \(a boolean\)\.$",
    ),
    Case(
        "config.json with a number for a boolean field",
        lambda tmp: AutoConfig.from_pretrained(saved_config(tmp, use_timestep_embedding=0)),
        r"^DecisionMambaConfig\.use_timestep_embedding=0: expected true or false \(a boolean\)\.$",
    ),
    Case(
        "config rtg_scale=inf",
        lambda tmp: DecisionMambaConfig(rtg_scale=float("inf")),
        r"^DecisionMambaConfig\.rtg_scale=inf: expected a positive number within float32's range\.$",
    ),
    Case(
        "misspelt field in the constructor warns with the closest field",
        warnings_of(lambda tmp: DecisionMambaConfig(hiden_size=64)),
        check=one_warning(
            r"^DecisionMambaConfig: unknown field 'hiden_size' .*; did you mean 'hidden_size'\?$"
        ),
    ),
    Case(
        "misspelt field in a config.json warns with the closest field",
        warnings_of(lambda tmp: AutoConfig.from_pretrained(saved_config(tmp, num_hiden_layers=2))),
        check=one_warning(r"unknown field 'num_hiden_layers' .*; did you mean 'num_hidden_layers'\?$"),
    ),
    Case(
        "fields transformers passes do not warn",
        warnings_of(lambda tmp: DecisionMambaConfig(torch_dtype="float32", **TRANSFORMERS_FIELDS)),
        check=silent,
    ),
    Case("save_pretrained / from_pretrained round trips are silent", warnings_of(round_trip), check=silent),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, tmp_path: Path):
    if case.error is not None:
        with pytest.raises(ValueError, match=case.error) as raised:
            case.run(tmp_path)
        assert "\n" not in str(raised.value)
    else:
        case.check(case.run(tmp_path), tmp_path)


# -- dmamba train -------------------------------------------------------------------------------------------------


def test_dmamba_train_on_a_nan_string_stops_before_step_one(tmp_path, capsys):
    data = write_rows(tmp_path / "episodes.parquet", with_value("rewards", 2, 5, "nan"))
    status, err = train(tmp_path, data, capsys)
    assert status == 2
    assert err == (
        "dmamba train: error: episode 2: 'rewards' contains NaN or inf at step 5; expected finite values within "
        "float32's range (|x| <= 3.4e+38), got 'nan'."
    )
    no_training_step(tmp_path / "run")


def test_dmamba_train_on_an_empty_file_names_it(tmp_path, capsys):
    status, err = train(tmp_path, empty_file(tmp_path / "episodes.parquet"), capsys)
    assert status == 2
    assert err == (
        f"dmamba train: error: {tmp_path / 'episodes.parquet'}: the file is empty (0 bytes); expected a .parquet "
        "file of episodes."
    )
    no_training_step(tmp_path / "run")


def test_data_that_went_bad_under_a_run_stops_before_training(tmp_path, capsys):
    data = write_rows(tmp_path / "episodes.parquet", rows())
    status, _ = train(tmp_path, data, capsys)
    assert status == 0
    checkpoint = Path(last_complete_checkpoint(tmp_path / "run"))
    state = (checkpoint / "trainer_state.json").read_bytes()
    write_rows(data, with_value("observations", 0, 3, 1e300, strings=False))
    status, err = train(tmp_path, data, capsys, 2)  # would resume from checkpoint-1: the run record refuses
    assert status == 2 and "holds a run trained with data.sha256=" in err and "--overwrite_output_dir" in err
    assert (checkpoint / "trainer_state.json").read_bytes() == state
    status, err = train(
        tmp_path, data, capsys, 2, "--overwrite_output_dir", "true"
    )  # a clean run: the value check
    assert status == 2
    assert err == (
        "dmamba train: error: episode 0: 'observations' contains NaN or inf at step 3; expected finite values "
        "within float32's range (|x| <= 3.4e+38), got 1e+300, which overflows float32."
    )
    assert not (tmp_path / "run" / "model.safetensors").exists()
