"""Scripted Atari behaviours: paddle controllers that read the ball and paddle positions from the console's RAM.

They make mixed-quality offline Atari data without a trained agent (`dmamba collect --behaviour scripted`): each
episode plays with one epsilon-random probability of a cycled list, so returns range from a random policy's to the
controller's. The RAM addresses and pixel offsets were read off the screen (paddle and ball pixels against RAM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..envs import resolve_env_id
from ..envs.atari import atari_action_meanings

DEADBAND = 4
"""Pixels of paddle-to-ball distance inside which the controller stands still (the paddle moves ~20 per step)."""


def breakout_action(ram: np.ndarray) -> int:
    """Breakout: FIRE while no ball is in play, else move the paddle's centre under the ball (RIGHT=2, LEFT=3)."""
    paddle_x, ball_x, ball_y = int(ram[72]), int(ram[99]), int(ram[101])
    if ball_y == 0:
        return 1
    gap = (ball_x - 48) - (paddle_x - 39)  # screen columns of the ball's and the paddle's centres
    return 2 if gap > DEADBAND else 3 if gap < -DEADBAND else 0


def pong_action(ram: np.ndarray) -> int:
    """Pong: keep the right paddle's centre level with the ball (RIGHT=2 moves up, LEFT=3 down); idle between points."""
    paddle_y, ball_y = int(ram[51]), int(ram[54])
    if ball_y == 0:
        return 0
    gap = (ball_y - 13) - (paddle_y - 6)  # screen rows of the ball's and the paddle's centres
    return 3 if gap > DEADBAND else 2 if gap < -DEADBAND else 0


CONTROLLERS: dict[str, Callable[[np.ndarray], int]] = {
    "ALE/Breakout-v5": breakout_action,
    "ALE/Pong-v5": pong_action,
}
"""Scripted controllers by ALE id; their actions index the game's minimal action set."""


class AtariScriptedPolicy:
    """A RAM-reading paddle controller with epsilon-random actions, one probability per episode (cycled)."""

    def __init__(self, env_id: str, env: Any, random_prob: Sequence[float], seed: int):
        resolved = resolve_env_id(env_id)
        if resolved not in CONTROLLERS:
            raise ValueError(f"no scripted controller for {env_id!r}; expected one of {sorted(CONTROLLERS)}.")
        if env.action_space.n != len(atari_action_meanings(resolved)):
            raise ValueError(
                f"{env_id}: the scripted controller needs the minimal action set (no --full-action-space)."
            )
        self.controller, self.env = CONTROLLERS[resolved], env
        self.levels = [float(p) for p in random_prob]
        self.rng = np.random.default_rng(seed)
        self.description = (
            f"RAM-reading paddle controller, epsilon-random probability cycled over {self.levels}"
        )
        self.reset(0)

    def reset(self, episode: int) -> None:
        """Pick episode `episode`'s epsilon-random probability."""
        self.random_prob = self.levels[episode % len(self.levels)]

    def act(self, observation: np.ndarray, reward: float | None) -> int:
        """The controller's action for the current console state, or a uniformly random one."""
        if self.rng.random() < self.random_prob:
            return int(self.rng.integers(self.env.action_space.n))
        return self.controller(self.env.unwrapped.ale.getRAM())
