"""Bad data fails early with a `ValueError` naming the episode, the field and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from transformers import DecisionTransformerConfig

from hf_decision_mamba.data import TrajectoryWindowDataset, compute_state_stats
from hf_decision_mamba.data.synthetic import synthetic_episodes


def build(episodes, **kwargs):
    return TrajectoryWindowDataset(episodes, 4, short_episodes="keep", progress=False, **kwargs)


def as_dataset(episodes):
    return Dataset.from_list([{k: np.asarray(v).tolist() for k, v in e.items()} for e in episodes])


def broken(index, field, value, lengths=(10, 10, 10)):
    episodes = synthetic_episodes(lengths)
    episodes[index][field] = value
    return episodes


@pytest.mark.parametrize("container", [list, as_dataset])
def test_missing_column_is_named(container):
    episodes = synthetic_episodes((10,))
    del episodes[0]["rewards"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rewards'\]"):
        build(container(episodes))


@pytest.mark.parametrize("container", [list, as_dataset])
def test_ragged_episode_names_episode_and_field(container):
    episodes = broken(1, "observations", np.zeros((9, 11), np.float32))
    with pytest.raises(
        ValueError, match=r"episode 1: 'observations' has 9 steps but 'actions' has 10; expected every"
    ):
        build(container(episodes))


def test_empty_episode_is_rejected():
    episodes = synthetic_episodes((10, 10))
    episodes[1] = {name: value[:0] for name, value in episodes[1].items()}
    with pytest.raises(ValueError, match=r"episode 1: 'actions' is empty; expected at least one step"):
        build(episodes)


def test_state_size_that_disagrees_with_the_config_is_rejected():
    config = DecisionTransformerConfig(state_dim=11, act_dim=3)
    episodes = broken(2, "observations", np.zeros((10, 12), np.float32))
    with pytest.raises(
        ValueError,
        match=r"episode 2: 'observations' has shape \(12,\) per step; expected \(11,\) \(the config\)",
    ):
        TrajectoryWindowDataset.from_config(episodes, config, context_length=4, progress=False)


def test_action_size_that_disagrees_with_the_config_is_rejected():
    config = DecisionTransformerConfig(state_dim=11, act_dim=6)
    with pytest.raises(
        ValueError, match=r"episode 0: 'actions' has size 3 per step; expected act_dim=6 \(the config\)"
    ):
        TrajectoryWindowDataset.from_config(
            synthetic_episodes((10,)), config, context_length=4, progress=False
        )


def test_state_sizes_that_change_between_episodes_are_rejected():
    episodes = broken(1, "observations", np.zeros((10, 17), np.float32))
    with pytest.raises(
        ValueError,
        match=r"episode 1: 'observations' has shape \(17,\) per step; expected \(11,\) \(episode 0\)",
    ):
        build(episodes)


@pytest.mark.parametrize("field, bad", [("rewards", np.nan), ("observations", np.inf), ("actions", -np.inf)])
def test_non_finite_values_are_rejected_with_their_step(field, bad):
    episodes = synthetic_episodes((10, 10, 10))
    episodes[2][field] = episodes[2][field].copy()
    episodes[2][field][3] = bad
    with pytest.raises(
        ValueError, match=rf"episode 2: '{field}' contains NaN or inf at step 3; expected finite values"
    ):
        build(episodes)


def test_discrete_actions_out_of_range_are_rejected():
    episodes = synthetic_episodes((10,), n_actions=6)
    with pytest.raises(ValueError, match=r"episode 0: 'actions' has indices in \[0, 5\]; expected \[0, 4\)"):
        build(episodes, action_space="discrete", n_actions=4)


def synthetic_rows(count):
    return [{k: v.tolist() for k, v in e.items()} for e in synthetic_episodes([5] * count)]


def test_states_of_mixed_sizes_inside_an_episode_are_rejected():
    rows = synthetic_rows(3)
    rows[2]["observations"][4] = [0.0] * 10
    with pytest.raises(
        ValueError, match=r"episode 2: 'observations' mixes per-step sizes 11 and 10; expected one size"
    ):
        compute_state_stats(Dataset.from_list(rows), progress=False)


def test_missing_values_are_rejected():
    rows = synthetic_rows(1)
    rows[0]["rewards"][2] = None
    with pytest.raises(ValueError, match=r"column 'rewards' contains missing \(null\) values"):
        build(Dataset.from_list(rows))


def test_no_episode_long_enough_is_an_error():
    with pytest.raises(ValueError, match=r"all 2 episode\(s\) are shorter than context_length=4"):
        TrajectoryWindowDataset(synthetic_episodes((2, 3)), 4, progress=False)
