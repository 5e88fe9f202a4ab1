"""Normalised scores, only where a reference exists: D4RL's for MuJoCo (0 = random, 100 = expert), the
gamer-normalised Atari score, and a Minari dataset's `ref_min_score`/`ref_max_score` (recorded in the config).
Any other environment reports its raw return only; no reference is ever invented."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..envs.registry import resolve_env_id


@dataclass(frozen=True)
class ScoreRange:
    """Returns mapped to 0 and 100: `low` (random policy) and `high` (D4RL expert or human gamer)."""

    low: float
    high: float
    reference: str

    def normalize(self, returns: float | np.ndarray) -> float | np.ndarray:
        """100 * (returns - low) / (high - low)."""
        return 100.0 * (returns - self.low) / (self.high - self.low)


_D4RL = "D4RL (random = 0, expert = 100)"
_GAMER = "Atari (random = 0, human gamer = 100)"
_MINARI = "Minari (ref_min_score = 0, ref_max_score = 100)"

SCORE_RANGES: dict[str, ScoreRange] = {
    "HalfCheetah-v5": ScoreRange(-280.178953, 12135.0, _D4RL),
    "Hopper-v5": ScoreRange(-20.272305, 3234.3, _D4RL),
    "Walker2d-v5": ScoreRange(1.629008, 4592.3, _D4RL),
    "ALE/Breakout-v5": ScoreRange(2.0, 30.0, _GAMER),
    "ALE/Qbert-v5": ScoreRange(164.0, 13455.0, _GAMER),
    "ALE/Pong-v5": ScoreRange(-21.0, 15.0, _GAMER),
    "ALE/Seaquest-v5": ScoreRange(68.0, 42055.0, _GAMER),
    "ALE/Asterix-v5": ScoreRange(210.0, 8503.0, _GAMER),
    "ALE/Frostbite-v5": ScoreRange(65.0, 4335.0, _GAMER),
    "ALE/Assault-v5": ScoreRange(222.0, 742.0, _GAMER),
    "ALE/Gopher-v5": ScoreRange(258.0, 2412.0, _GAMER),
}
"""The one table of normalisation constants, keyed by the id `resolve_env_id` returns."""


def score_range(env_id: str, config: Any = None) -> ScoreRange | None:
    """The normalisation constants of `env_id`: the `config`'s Minari references (`ref_min_score`,
    `ref_max_score`) when it has both, else the table's; None where there is no reference."""
    low, high = getattr(config, "ref_min_score", None), getattr(config, "ref_max_score", None)
    if low is not None and high is not None and high != low:
        return ScoreRange(float(low), float(high), _MINARI)
    try:
        return SCORE_RANGES.get(resolve_env_id(env_id))
    except ValueError:
        return None


def normalized_score(
    env_id: str, returns: float | Sequence[float] | np.ndarray, config: Any = None
) -> float | np.ndarray | None:
    """Normalised score(s) of raw episode `returns` (a float for a scalar, an array otherwise); None if unknown."""
    constants = score_range(env_id, config)
    if constants is None:
        return None
    if np.ndim(returns) == 0:
        return float(constants.normalize(float(returns)))
    return constants.normalize(np.asarray(returns, dtype=np.float64))
