"""Scripted Atari behaviours: the RAM-reading paddle controllers move toward the ball, play Breakout far better than
random play, and `dmamba collect --behaviour scripted` cycles their epsilon-random levels per episode."""

from __future__ import annotations

import numpy as np
import pytest

from hf_decision_mamba.cli import collect
from hf_decision_mamba.data import iter_episodes, load_trajectories
from hf_decision_mamba.data.scripted_atari import breakout_action, pong_action

NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3


def ram(**cells: int) -> np.ndarray:
    """A console RAM with the given cells set (by address) and the rest zero."""
    memory = np.zeros(128, dtype=np.uint8)
    for address, value in cells.items():
        memory[int(address.removeprefix("a"))] = value
    return memory


@pytest.mark.parametrize(
    ("paddle_x", "ball_x", "ball_y", "expected"),
    [
        (100, 0, 0, FIRE),  # no ball in play: launch one
        (100, 150, 120, RIGHT),  # ball centre 102 px, paddle centre 61 px
        (180, 100, 120, LEFT),
        (100, 109, 120, NOOP),  # centres aligned
    ],
)
def test_breakout_controller_moves_the_paddle_under_the_ball(paddle_x, ball_x, ball_y, expected):
    assert breakout_action(ram(a72=paddle_x, a99=ball_x, a101=ball_y)) == expected


@pytest.mark.parametrize(
    ("paddle_y", "ball_y", "expected"),
    [(100, 0, NOOP), (100, 60, RIGHT), (100, 150, LEFT), (100, 107, NOOP)],
)
def test_pong_controller_keeps_the_paddle_level_with_the_ball(paddle_y, ball_y, expected):
    assert pong_action(ram(a51=paddle_y, a54=ball_y)) == expected


def collect_breakout(tmp_path, *extra: str) -> list[dict]:
    argv = ["--env", "ALE/Breakout-v5", "--behaviour", "scripted", "--seed", "0", "--no-progress"]
    assert collect.main([*argv, "--output", str(tmp_path), *extra]) == 0
    return list(iter_episodes(load_trajectories(tmp_path)))


def test_scripted_breakout_outscores_random_play_on_the_same_seeds(tmp_path):
    # Levels cycle per episode: episodes 0 and 2 are the controller's, 1 and 3 random play, all capped at 400 steps.
    episodes = collect_breakout(
        tmp_path, "--random-prob", "0", "1", "--episodes", "4", "--max-episode-steps", "400"
    )
    returns = [float(episode["rewards"].sum()) for episode in episodes]
    controller, random_play = returns[0::2], returns[1::2]
    assert min(controller) > max(random_play) and sum(controller) >= 3 * sum(random_play), returns
    assert episodes[0]["observations"].dtype == np.uint8 and episodes[0]["actions"].dtype == np.int64


def test_scripted_atari_rejects_what_it_cannot_do(tmp_path):
    with pytest.raises(
        ValueError, match=r"noise=\[0.3\] is for continuous controllers; expected --random-prob"
    ):
        collect_breakout(tmp_path, "--noise", "0.3", "--episodes", "1")
    with pytest.raises(ValueError, match="needs the minimal action set"):
        collect_breakout(tmp_path, "--full-action-space", "--episodes", "1")
    argv = [
        "--env",
        "ALE/Seaquest-v5",
        "--behaviour",
        "scripted",
        "--episodes",
        "1",
        "--output",
        str(tmp_path),
    ]
    with pytest.raises(ValueError, match=r"no scripted controller for 'ALE/Seaquest-v5'; expected one of"):
        collect.main(argv)
