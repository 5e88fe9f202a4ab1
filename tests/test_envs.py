"""Environment construction: ids, MuJoCo shapes, the Atari (Machado et al.) protocol, input validation."""

from __future__ import annotations

import numpy as np
import pytest

from hf_decision_mamba.envs import (
    AtariProtocol,
    atari_rom,
    env_family,
    make_env,
    make_protocol,
    make_vector_env,
    resolve_env_id,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Hopper-v5", "Hopper-v5"),
        ("hopper-medium-v2", "Hopper-v5"),
        ("hopper", "Hopper-v5"),
        ("Hopper-v3", "Hopper-v5"),
        ("halfcheetah-medium-replay-v2", "HalfCheetah-v5"),
        ("mujoco/walker2d/expert-v0", "Walker2d-v5"),
        ("ALE/Breakout-v5", "ALE/Breakout-v5"),
        ("BreakoutNoFrameskip-v4", "ALE/Breakout-v5"),
        ("atari-breakout", "ALE/Breakout-v5"),
        ("ms_pacman", "ALE/MsPacman-v5"),
        ("Pong", "ALE/Pong-v5"),
    ],
)
def test_resolve_env_id_maps_d4rl_and_ale_names(name, expected):
    assert resolve_env_id(name) == expected


def test_env_family_and_rom():
    assert env_family("walker2d-medium-v2") == "mujoco"
    assert env_family("atari-qbert") == "atari"
    assert atari_rom("ALE/MsPacman-v5") == "ms_pacman"


@pytest.mark.parametrize("bad", ["NoSuchEnv-v0", "", "hopperr"])
def test_unknown_env_id_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="env_id="):
        resolve_env_id(bad)


@pytest.mark.parametrize(
    ("env_id", "obs_dim", "act_dim"),
    [("Hopper-v5", 11, 3), ("HalfCheetah-v5", 17, 6), ("Walker2d-v5", 17, 6)],
)
def test_mujoco_shapes_match_d4rl(env_id, obs_dim, act_dim):
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
    vec = make_vector_env(env_id, 3, seed=0)
    obs, *_ = vec.step(np.zeros((3, act_dim), dtype=np.float32))
    assert obs.shape == (3, obs_dim) and vec.action_space.shape == (3, act_dim)
    assert vec.num_envs == 3


def test_mujoco_time_limit_is_1000_and_configurable():
    assert make_env("hopper").spec.max_episode_steps == 1000
    assert make_env("hopper", max_episode_steps=50).spec.max_episode_steps == 50


def test_vector_env_seed_gives_the_single_env_start():
    vec = make_vector_env("hopper", 2, seed=7)
    vec_obs, _ = vec.reset(seed=[7, 8])
    single_obs, _ = make_env("hopper").reset(seed=8)
    np.testing.assert_array_equal(vec_obs[1], single_obs)


def test_atari_single_env_protocol():
    env = make_env("breakout")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    dt_env = make_env("breakout", repeat_action_probability=0.0)
    assert dt_env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0


def test_atari_vector_env_protocol():
    vec = make_vector_env("ALE/Breakout-v5", 3, seed=0)
    obs = vec.step(np.ones(3, dtype=np.int64))[0]
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
    assert vec.protocol == AtariProtocol()
    assert vec.protocol.repeat_action_probability == 0.25 and vec.protocol.frame_skip == 4
    assert vec.protocol.noop_max == 30 and vec.protocol.max_num_frames == 108_000


@pytest.mark.parametrize(("full_action_space", "n"), [(False, 4), (True, 18)])
def test_minimal_and_full_action_sets(full_action_space, n):
    assert make_env("breakout", full_action_space=full_action_space).action_space.n == n
    assert make_vector_env("breakout", 2, full_action_space=full_action_space).single_action_space.n == n


def test_noop_starts_vary_with_the_seed():
    def start_frames(noop_max):
        vec = make_vector_env("breakout", 6, noop_max=noop_max)
        return vec.reset(seed=np.arange(6))[1]["episode_frame_number"]

    assert len(set(start_frames(30).tolist())) > 1
    assert len(set(start_frames(0).tolist())) == 1


def _twin_observations_differ(repeat_action_probability: float) -> bool:
    """Step two envs (seeds 0 and 1, no no-ops) with identical actions; only sticky actions can separate them."""
    vec = make_vector_env("breakout", 2, repeat_action_probability=repeat_action_probability, noop_max=0)
    obs, _ = vec.reset(seed=np.array([0, 1]))
    rng = np.random.default_rng(0)
    for _ in range(150):
        obs, *_ = vec.step(np.full(2, rng.integers(4), dtype=np.int64))
        if not np.array_equal(obs[0], obs[1]):
            return True
    return False


def test_sticky_actions_reach_the_native_ale():
    assert not _twin_observations_differ(0.0)
    assert _twin_observations_differ(0.25)


def test_atari_rewards_are_not_clipped():
    vec = make_vector_env("asterix", 4, seed=0)
    rng = np.random.default_rng(0)
    rewards = [vec.step(rng.integers(vec.single_action_space.n, size=4))[1].max() for _ in range(300)]
    assert max(rewards) > 1


def test_atari_episode_ends_on_game_over_not_life_loss():
    vec = make_vector_env("breakout", 1, seed=0)
    rng = np.random.default_rng(0)
    lives = []
    while True:
        _, _, terminated, truncated, info = vec.step(rng.integers(4, size=1))
        lives.append(int(info["lives"][0]))
        if terminated[0] or truncated[0]:
            break
    assert terminated[0] and lives[-1] == 0 and max(lives) == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"env_id": "breakout", "repeat_action_probability": 1.5}, "repeat_action_probability"),
        ({"env_id": "breakout", "repeat_action_probability": "high"}, "repeat_action_probability"),
        ({"env_id": "breakout", "noop_max": -1}, "noop_max"),
        ({"env_id": "breakout", "frame_skip": 0}, "frame_skip"),
        ({"env_id": "breakout", "full_action_space": "yes"}, "full_action_space"),
        ({"env_id": "breakout", "sticky": 0.1}, "sticky"),
        ({"env_id": "hopper", "noop_max": 30}, "noop_max"),
        ({"env_id": "hopper", "max_episode_steps": 0}, "max_episode_steps"),
    ],
)
def test_bad_protocol_options_are_value_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        make_protocol(**kwargs)


def test_bad_num_envs_and_seed_are_value_errors():
    with pytest.raises(ValueError, match="^num_envs=0"):
        make_vector_env("hopper", 0)
    with pytest.raises(ValueError, match="^seed=-1"):
        make_vector_env("hopper", 2, seed=-1)


def test_render_true_gives_rgb_frames_of_every_sub_env():
    vec = make_vector_env("hopper", 2, seed=0, render=True, render_width=64, render_height=48)
    frames = vec.render()
    assert len(frames) == 2 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    atari = make_vector_env("breakout", 2, seed=0, render=True)
    assert atari.render()[0].shape == (210, 160, 3) and atari.observation_space.shape == (2, 4, 84, 84)
