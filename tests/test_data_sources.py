"""Every vector-state reader loads its format, written here in that format's real on-disk layout, into the
canonical episode schema (no network: Hub paths are redirected to the files the tests write)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, Features, Sequence, Value

from hf_decision_mamba.data import CANONICAL_COLUMNS, iter_episodes, load_trajectories, sources
from hf_decision_mamba.data.collection import dataset_card, summarise, write_parquet_dataset
from hf_decision_mamba.data.synthetic import synthetic_episodes

GYM_REPLAY_FEATURES = Features(
    {
        "observations": Sequence(Sequence(Value("float32"))),
        "actions": Sequence(Sequence(Value("float32"))),
        "rewards": Sequence(Value("float32")),
        "dones": Sequence(Value("bool")),
    }
)


def gym_replay_rows(lengths, seed=0, terminal_last=(True, False, True)):
    """Episodes in the edbeeching/D4RL layout: `dones` marks true terminals only (timeouts end without one)."""
    rows = []
    for episode, terminal in zip(synthetic_episodes(lengths, seed=seed), terminal_last, strict=False):
        dones = np.zeros(len(episode["rewards"]), dtype=bool)
        dones[-1] = terminal
        rows.append(
            {
                "observations": episode["observations"].tolist(),
                "actions": episode["actions"].tolist(),
                "rewards": episode["rewards"].tolist(),
                "dones": dones.tolist(),
            }
        )
    return rows


def write_parquet_export(root, config, rows):
    """The Hub's refs/convert/parquet layout: <config>/<split>/0000.parquet."""
    folder = root / config / "train"
    folder.mkdir(parents=True)
    Dataset.from_list(rows, features=GYM_REPLAY_FEATURES).to_parquet(str(folder / "0000.parquet"))


@pytest.fixture
def hub_without_scripts(tmp_path, monkeypatch):
    """`datasets` >= 4 refuses the gym-replay loading script; its parquet export lives in tmp_path."""
    real_load_dataset = datasets.load_dataset

    def load_dataset(path, *args, **kwargs):
        if path == sources.GYM_REPLAY_REPO:
            raise RuntimeError(
                "Dataset scripts are no longer supported, but found decision_transformer_gym_replay.py"
            )
        return real_load_dataset(path, *args, **kwargs)

    monkeypatch.setattr(sources, "load_dataset", load_dataset)
    monkeypatch.setattr(sources, "PARQUET_EXPORT", str(tmp_path / "{config}" / "{split}" / "*.parquet"))
    return tmp_path


def assert_canonical(dataset):
    assert set(CANONICAL_COLUMNS) <= set(dataset.column_names)
    for episode in iter_episodes(dataset):
        length = len(episode["actions"])
        assert episode["observations"].dtype == np.float32 and len(episode["observations"]) == length
        assert episode["rewards"].shape == (length,) and episode["terminations"].dtype == bool
        assert episode["truncations"].shape == (length,)


def test_embedded_hopper_is_canonical_with_varied_returns():
    dataset = load_trajectories("embedded:hopper")
    assert_canonical(dataset)
    returns = [float(np.sum(r)) for r in dataset["rewards"]]
    assert (
        len(returns) >= 100 and max(returns) > 2 * np.mean(returns) and min(returns) < 0.2 * np.mean(returns)
    )
    assert np.asarray(dataset[0]["observations"]).shape[1] == 11


def test_unknown_embedded_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"no embedded dataset 'walker'.*'hopper'"):
        load_trajectories("embedded:walker")


def test_gym_replay_falls_back_to_the_parquet_export(hub_without_scripts):
    rows = gym_replay_rows([30, 25, 40])
    write_parquet_export(hub_without_scripts, "hopper-medium-v2", rows)
    dataset = load_trajectories("edbeeching/decision_transformer_gym_replay", "hopper-medium-v2")
    assert_canonical(dataset)
    episodes = list(iter_episodes(dataset))
    np.testing.assert_allclose(episodes[1]["observations"], np.asarray(rows[1]["observations"], np.float32))
    # dones -> terminations; an episode ending without a terminal was a timeout -> truncated on its last step
    assert [e["terminations"][-1] for e in episodes] == [True, False, True]
    assert [e["truncations"][-1] for e in episodes] == [False, True, False]
    assert not any(e["truncations"][:-1].any() for e in episodes)


def test_medium_expert_is_medium_followed_by_expert(hub_without_scripts):
    write_parquet_export(hub_without_scripts, "walker2d-medium-v2", gym_replay_rows([21, 22]))
    write_parquet_export(hub_without_scripts, "walker2d-expert-v2", gym_replay_rows([23, 24, 25], seed=5))
    dataset = load_trajectories("d4rl:walker2d-medium-expert-v2")
    assert [len(r) for r in dataset["rewards"]] == [21, 22, 23, 24, 25]


def test_gym_replay_streams_from_the_parquet_export(hub_without_scripts):
    write_parquet_export(hub_without_scripts, "halfcheetah-expert-v2", gym_replay_rows([20, 30]))
    dataset = load_trajectories("d4rl:halfcheetah-expert-v2", streaming=True)
    assert isinstance(dataset, datasets.IterableDataset)
    assert [len(e["actions"]) for e in iter_episodes(dataset)] == [20, 30]


def test_unknown_gym_replay_config_names_the_known_ones():
    with pytest.raises(
        ValueError, match=r"config 'hopper-random-v2'.*'hopper-medium-replay-v2'.*medium-expert"
    ):
        load_trajectories("edbeeching/decision_transformer_gym_replay", "hopper-random-v2")


def test_local_copy_of_a_hub_dataset_is_detected_from_its_columns(tmp_path):
    write_parquet_export(tmp_path, "hopper-expert-v2", gym_replay_rows([20, 21]))
    from_file = load_trajectories(tmp_path / "hopper-expert-v2" / "train" / "0000.parquet")
    from_folder = load_trajectories(tmp_path, "hopper-expert-v2")
    assert_canonical(from_file)
    assert from_file["rewards"] == from_folder["rewards"]


def test_canonical_parquet_arrow_and_saved_folders_load_the_same(tmp_path):
    episodes = synthetic_episodes([20, 33])
    dataset = Dataset.from_list([{k: v.tolist() for k, v in e.items()} for e in episodes])
    dataset.to_parquet(str(tmp_path / "episodes.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    arrow_file = next((tmp_path / "saved").glob("*.arrow"))
    for source in (tmp_path / "episodes.parquet", tmp_path / "saved", arrow_file):
        loaded = list(iter_episodes(load_trajectories(source)))
        np.testing.assert_allclose(loaded[1]["observations"], episodes[1]["observations"])
        np.testing.assert_array_equal(loaded[0]["terminations"], episodes[0]["terminations"])


def test_unrecognised_columns_name_the_missing_ones(tmp_path):
    Dataset.from_list(
        [{"observations": [[0.0]], "actions": [[0.0]], "rewards": [0.0], "terminations": [True]}]
    ).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match=r"missing \['truncations'\] for the canonical format"):
        load_trajectories(tmp_path / "x.parquet")


# Minari ------------------------------------------------------------------------------------------------------


def box(shape, dtype="float64"):
    return json.dumps(
        {
            "type": "Box",
            "dtype": dtype,
            "shape": list(shape),
            "low": [-1.0] * shape[0],
            "high": [1.0] * shape[0],
        }
    )


def minari_metadata(data_format, episodes, action_space):
    return {
        "dataset_id": "mujoco/hopper/medium-v0",
        "data_format": data_format,
        "total_episodes": len(episodes),
        "total_steps": sum(len(e["rewards"]) for e in episodes),
        "observation_space": box((11,)),
        "action_space": action_space,
        "minari_version": "0.5.2",
    }


def minari_episodes(lengths):
    """Minari keeps the final observation: observations have steps + 1 entries, stored as float64."""
    episodes = synthetic_episodes(lengths)
    for episode in episodes:
        final = np.ones((1, 11), np.float32)
        episode["observations"] = np.concatenate([episode["observations"], final]).astype(np.float64)
    return episodes


def write_minari_hdf5(root, episodes, action_space=None):
    """minari's HDF5Storage layout: data/main_data.hdf5 with one episode_<i> group per episode."""
    action_space = action_space or box((3,), "float32")
    data = root / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps(minari_metadata("hdf5", episodes, action_space)))
    with h5py.File(data / "main_data.hdf5", "w") as file:
        for index, episode in enumerate(episodes):
            group = file.create_group(f"episode_{index}")
            group.attrs.update({"id": index, "total_steps": len(episode["rewards"]), "seed": index})
            for name, values in episode.items():
                group.create_dataset(name, data=values, chunks=True, maxshape=(None, *values.shape[1:]))
            group.create_group("infos")


def write_minari_columnar(root, episodes, data_format, action_space=None):
    """minari's Arrow/ParquetStorage layout: data/<episode>/part-0.<format>, rows are steps, padded by one row."""
    data = root / "data"
    data.mkdir(parents=True)
    action_space = action_space or box((3,), "float32")
    (data / "metadata.json").write_text(json.dumps(minari_metadata(data_format, episodes, action_space)))
    for index, episode in enumerate(episodes):
        rows = len(episode["observations"])

        def padded(values, rows=rows):
            values = np.pad(values, [(0, rows - len(values))] + [(0, 0)] * (values.ndim - 1))
            if values.ndim == 1:  # Discrete spaces: int32 scalars
                return pa.array(values.astype(np.int32) if values.dtype.kind == "i" else values)
            return pa.FixedSizeListArray.from_arrays(values.reshape(-1), values.shape[1])

        columns = {name: padded(episode[name]) for name in ("observations", "actions", "rewards")}
        flags = {name: np.pad(episode[name], (0, 1)) for name in ("terminations", "truncations")}
        batch = pa.RecordBatch.from_pydict(
            {"episode_id": np.full(rows, index, dtype=np.int32), **columns, **flags}
        )
        pads.write_dataset(
            batch,
            data,
            format=data_format,
            partitioning=["episode_id"],
            existing_data_behavior="overwrite_or_ignore",
        )
        (data / str(index) / "metadata.json").write_text(json.dumps({"id": index, "total_steps": rows - 1}))


def assert_same_as_minari(dataset, episodes):
    loaded = list(iter_episodes(dataset))
    assert [len(e["actions"]) for e in loaded] == [len(e["rewards"]) for e in episodes]
    for got, want in zip(loaded, episodes, strict=True):
        np.testing.assert_allclose(got["observations"], want["observations"][:-1].astype(np.float32))
        np.testing.assert_allclose(got["actions"], want["actions"])
        np.testing.assert_array_equal(got["terminations"], want["terminations"])


def test_minari_hdf5_drops_the_final_observation(tmp_path):
    episodes = minari_episodes([20, 31])
    write_minari_hdf5(tmp_path / "medium-v0", episodes)
    assert_same_as_minari(load_trajectories(tmp_path / "medium-v0"), episodes)


@pytest.mark.parametrize("data_format", ["arrow", "parquet"])
def test_minari_columnar_formats_drop_the_padding_row(tmp_path, data_format):
    episodes = minari_episodes([22, 20, 25])
    write_minari_columnar(tmp_path / "medium-v0", episodes, data_format)
    assert_same_as_minari(load_trajectories(tmp_path / "medium-v0"), episodes)


@pytest.mark.parametrize("write", ["hdf5", "arrow"])
def test_minari_discrete_actions_become_int64(tmp_path, write):
    episodes = minari_episodes([20])
    episodes[0]["actions"] = np.arange(20) % 2
    discrete = json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": 2})
    if write == "hdf5":
        write_minari_hdf5(tmp_path / "d", episodes, action_space=discrete)
    else:
        write_minari_columnar(tmp_path / "d", episodes, "arrow", action_space=discrete)
    (episode,) = iter_episodes(load_trajectories(tmp_path / "d"))
    assert (
        episode["actions"].dtype == np.int64 and episode["actions"].tolist() == (np.arange(20) % 2).tolist()
    )


def test_minari_ids_resolve_to_the_farama_minari_hub_repo(tmp_path, monkeypatch):
    episodes = minari_episodes([20])
    write_minari_columnar(tmp_path / "hopper" / "medium-v0", episodes, "arrow")
    requested = []

    def snapshot_download(repo_id, repo_type, allow_patterns, **kwargs):
        requested.append((repo_id, repo_type, allow_patterns))
        return str(tmp_path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no-local-copy"))
    for dataset in (
        load_trajectories("minari:mujoco/hopper/medium-v0"),
        load_trajectories("farama-minari/mujoco", "hopper/medium-v0"),
    ):
        assert_same_as_minari(dataset, episodes)
    assert requested == [("farama-minari/mujoco", "dataset", "hopper/medium-v0/*")] * 2


def test_minari_stream_yields_the_same_episodes(tmp_path):
    episodes = minari_episodes([20, 21])
    write_minari_columnar(tmp_path / "m", episodes, "parquet")
    dataset = load_trajectories(tmp_path / "m", streaming=True)
    assert isinstance(dataset, datasets.IterableDataset)
    assert_same_as_minari(dataset, episodes)


def test_parquet_schema_of_written_canonical_data_keeps_float32(tmp_path):
    dataset = load_trajectories("embedded:hopper", max_episodes=2)
    assert len(dataset) == 2
    dataset.to_parquet(str(tmp_path / "two.parquet"))
    schema = pq.read_schema(tmp_path / "two.parquet")
    assert "float" in str(schema.field("observations").type)


def _collected(folder, lengths):
    """A `dmamba collect`-style folder (Hub layout shards plus a dataset card) holding episodes of `lengths`."""
    stats = summarise(write_parquet_dataset(synthetic_episodes(lengths), folder))
    card = dataset_card(title="t", env_id="Hopper-v5", behaviour="random", command="c", stats=stats)
    (folder / "README.md").write_text(card)
    return folder


def test_two_folders_with_the_same_name_load_their_own_episodes(tmp_path):
    first = _collected(tmp_path / "a" / "samebase", [20, 21])
    second = _collected(tmp_path / "b" / "samebase", [30, 31, 32])
    assert len(load_trajectories(first)) == 2
    assert len(load_trajectories(second)) == 3


def test_a_rewritten_folder_is_read_again(tmp_path):
    folder = _collected(tmp_path / "data", [20, 21])
    assert len(load_trajectories(folder)) == 2
    _collected(folder, [25, 26, 27, 28])
    assert [len(e["rewards"]) for e in iter_episodes(load_trajectories(folder))] == [25, 26, 27, 28]


def test_the_suite_writes_only_to_its_own_caches():
    from huggingface_hub import constants

    from conftest import CACHE_ROOT

    for cache in (
        datasets.config.HF_DATASETS_CACHE,
        constants.HF_HUB_CACHE,
        os.environ["MINARI_DATASETS_PATH"],
    ):
        assert Path(cache).is_relative_to(CACHE_ROOT), cache
