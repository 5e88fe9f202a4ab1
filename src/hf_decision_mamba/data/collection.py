"""Roll out a behaviour policy in a Gymnasium or ALE environment and write a Hub-ready canonical dataset.

Behaviours: `random` (uniform actions), `scripted` (a fixed linear controller for Hopper, Walker2d and HalfCheetah
with per-episode Gaussian noise and epsilon-random actions, cycling through the given levels so that returns vary;
for Breakout and Pong a RAM-reading paddle controller, `scripted_atari.py`)
and `model` (a saved model's policy). Output folder: `data/train-XXXXX-of-YYYYY.parquet` plus a `README.md` card.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..envs.spaces import action_start
from .atari import split_stacks
from .schema import (
    ACTIONS,
    OBSERVATIONS,
    REWARDS,
    TERMINATIONS,
    TRUNCATIONS,
    canonical_features,
    episodes_to_table,
)

if TYPE_CHECKING:
    from .scripted_atari import AtariScriptedPolicy

CONTROLLERS_FILE = Path(__file__).parent / "embedded" / "linear_controllers.json"
SHARD_BYTES = 256 * 2**20
BEHAVIOURS = ("random", "scripted", "model")


def is_atari(env_id: str) -> bool:
    """Whether `env_id` names an ALE game (`ALE/Breakout-v5`, `breakout`, ...)."""
    from ..envs import env_family

    try:
        return env_family(env_id) == "atari"
    except ValueError:  # any other Gymnasium id
        return False


def make_env(
    env_id: str, max_episode_steps: int | None = None, minari: bool = False, **atari_protocol: Any
) -> Any:
    """A Gymnasium env for any registered id, its observations flattened as `envs.spaces` documents (the
    canonical schema's state vectors); ALE games are built by `hf_decision_mamba.envs.make_env` under the
    evaluation protocol (frame skip 4, sticky actions 0.25, 84x84 gray, zero-padded 4-frame stacks, up to 30
    no-ops), which `atari_protocol` adjusts (e.g. `repeat_action_probability=0.0`, `full_action_space=True`).

    `max_episode_steps` counts agent steps (for ALE, after frame skipping). `minari=True` records the raw
    (unflattened) env with `minari.DataCollector`, reachable as `env.collector` for `write_minari_dataset`.
    """
    import gymnasium as gym

    from ..envs import resolve_env_id
    from ..envs.spaces import FlattenObservations, is_flat, observation_layout

    if not is_atari(env_id):
        if atari_protocol:
            raise ValueError(
                f"{sorted(atari_protocol)[0]} is an Atari protocol option but env={env_id!r} is not an ALE game; "
                "expected an id such as ALE/Breakout-v5."
            )
        env = gym.make(resolve_env_id(env_id), max_episode_steps=max_episode_steps)
        collector = _minari_collector(env) if minari else None
        env = collector or env
        if not is_flat(observation_layout(env.observation_space)):
            env = FlattenObservations(env)
        env.collector = collector
        return env
    if minari:
        raise ValueError(
            f"--minari-id: Atari games are written in the canonical schema only; env={env_id!r}."
        )
    from gymnasium.wrappers import TimeLimit

    from ..envs import make_env as make_protocol_env

    env = make_protocol_env(env_id, **atari_protocol)
    return TimeLimit(env, max_episode_steps) if max_episode_steps else env


def _minari_collector(env: Any) -> Any:
    try:
        from minari import DataCollector
    except ImportError as error:
        raise ImportError(
            f"--minari-id needs minari's DataCollector: `pip install 'minari[create]'` ({error})"
        ) from None
    return DataCollector(env)


def write_minari_dataset(env: Any, dataset_id: str, algorithm_name: str, eval_env: str | None = None) -> str:
    """Write what `env` (from `make_env(..., minari=True)`) recorded as Minari dataset `dataset_id` (in
    `MINARI_DATASETS_PATH`) through `minari`'s own writer; returns its folder."""
    dataset = env.collector.create_dataset(
        dataset_id=dataset_id, algorithm_name=algorithm_name, eval_env=eval_env
    )
    return str(Path(dataset.storage.data_path).parent)


class RandomPolicy:
    """Uniformly random actions from the env's action space (seeded)."""

    description = "uniformly random actions"

    def __init__(self, action_space: Any, seed: int):
        self.action_space = action_space
        self.action_space.seed(seed)

    def reset(self, episode: int) -> None:
        """Nothing to reset."""

    def act(self, observation: np.ndarray, reward: float | None) -> Any:
        """A random action (the observation and last reward are ignored)."""
        return self.action_space.sample()


class ScriptedPolicy:
    """A fixed linear controller `W s + b`, plus Gaussian noise and epsilon-random actions (levels cycled per episode)."""

    def __init__(
        self, env_id: str, action_space: Any, noise: Sequence[float], random_prob: Sequence[float], seed: int
    ):
        controllers = json.loads(CONTROLLERS_FILE.read_text())
        family = env_id.split("-")[0]
        if family not in controllers["controllers"]:
            raise ValueError(
                f"no scripted controller for {env_id!r}; expected one of {sorted(controllers['controllers'])}."
            )
        controller = controllers["controllers"][family]
        self.weight, self.bias = np.asarray(controller["weight"]), np.asarray(controller["bias"])
        self.low, self.high = action_space.low, action_space.high
        self.levels = list(itertools.product(noise, random_prob))
        self.rng = np.random.default_rng(seed)
        self.description = (
            f"linear controller, Gaussian noise std x epsilon-random probability cycled over {self.levels}"
        )
        self.reset(0)

    def reset(self, episode: int) -> None:
        """Pick episode `episode`'s (noise std, random probability) level."""
        self.noise, self.random_prob = self.levels[episode % len(self.levels)]

    def act(self, observation: np.ndarray, reward: float | None) -> np.ndarray:
        """The controller's action plus noise, or a uniformly random one, clipped to the action bounds."""
        if self.rng.random() < self.random_prob:
            return self.rng.uniform(self.low, self.high).astype(np.float32)
        action = self.weight @ observation + self.bias + self.rng.normal(0.0, self.noise, self.bias.shape)
        return np.clip(action, self.low, self.high).astype(np.float32)


class ModelPolicy:
    """A saved model's policy (`AutoModel.from_pretrained(path).policy(mode="window")`) acting in one env, with
    optional Gaussian `noise` on continuous actions (clipped to the bounds) or epsilon-random actions."""

    def __init__(
        self, path: str, action_space: Any = None, noise: float = 0.0, random_prob: float = 0.0, seed: int = 0
    ):
        from transformers import AutoModel

        import hf_decision_mamba  # noqa: F401  (registers the model with AutoModel)

        self.policy = AutoModel.from_pretrained(path).policy(mode="window")
        self.action_space, self.noise, self.random_prob = action_space, noise, random_prob
        self.rng = np.random.default_rng(seed)
        if action_space is not None:
            action_space.seed(seed)
        extras = f", action noise std {noise}" if noise else ""
        extras += f", epsilon-random probability {random_prob}" if random_prob else ""
        self.description = f"policy of the model at {path}{extras}"

    def reset(self, episode: int) -> None:
        """Start a new episode in the policy's context."""
        self.policy.reset(1)

    def act(self, observation: np.ndarray, reward: float | None) -> Any:
        """The policy's action for one env, given the reward that followed its previous action (plus noise)."""
        rewards = None if reward is None else np.asarray([reward], dtype=np.float32)
        action = self.policy.act(np.asarray(observation)[None], rewards)[0]
        space = self.action_space
        if space is None:
            return action
        if self.random_prob and self.rng.random() < self.random_prob:
            return space.sample()
        if hasattr(space, "n"):
            return np.int64(action + action_start(space))
        noisy = np.asarray(action, dtype=np.float64) + self.rng.normal(0.0, self.noise, np.shape(action))
        return np.clip(noisy, space.low, space.high).astype(np.float32)


def make_policy(
    behaviour: str,
    env_id: str,
    env: Any,
    *,
    noise: Sequence[float] = (0.0,),
    random_prob: Sequence[float] = (0.0,),
    model: str | None = None,
    seed: int = 0,
    action_noise: float = 0.0,
) -> RandomPolicy | ScriptedPolicy | AtariScriptedPolicy | ModelPolicy:
    """Build the named behaviour policy (`action_noise`: Gaussian noise std on a model's continuous actions)."""
    if behaviour == "random":
        return RandomPolicy(env.action_space, seed)
    if behaviour == "scripted" and is_atari(env_id):
        if any(noise):
            raise ValueError(
                f"noise={list(noise)} is for continuous controllers; expected --random-prob for {env_id}."
            )
        from .scripted_atari import AtariScriptedPolicy

        return AtariScriptedPolicy(env_id, env, random_prob, seed)
    if behaviour == "scripted":
        return ScriptedPolicy(env_id, env.action_space, noise, random_prob, seed)
    if behaviour == "model":
        if model is None:
            raise ValueError(
                "behaviour 'model' needs a model path; expected --policy PATH (or --model PATH)."
            )
        return ModelPolicy(model, env.action_space, action_noise, random_prob[0], seed)
    raise ValueError(f"behaviour {behaviour!r}; expected one of {list(BEHAVIOURS)}.")


@dataclasses.dataclass
class _EpisodeBuffer:
    observations: list = dataclasses.field(default_factory=list)
    actions: list = dataclasses.field(default_factory=list)
    rewards: list = dataclasses.field(default_factory=list)
    terminations: list = dataclasses.field(default_factory=list)
    truncations: list = dataclasses.field(default_factory=list)

    def episode(self) -> dict[str, np.ndarray]:
        observations = np.asarray(self.observations)
        actions = np.asarray(self.actions)
        episode = {
            OBSERVATIONS: observations.astype(np.float32) if observations.dtype != np.uint8 else observations,
            ACTIONS: actions.astype(np.int64) if actions.dtype.kind in "iu" else actions.astype(np.float32),
            REWARDS: np.asarray(self.rewards, dtype=np.float32),
            TERMINATIONS: np.asarray(self.terminations, dtype=bool),
            TRUNCATIONS: np.asarray(self.truncations, dtype=bool),
        }
        if observations.ndim == 4:  # Atari stacks: store each frame once
            episode.update(split_stacks(observations, field=OBSERVATIONS))
        return episode


def rollout(
    env: Any,
    policy: Any,
    *,
    steps: int | None = None,
    episodes: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield canonical episodes until `steps` steps (the last episode cut, marked truncated) or `episodes` episodes.

    Episode k is reset with seed `seed + k`. Discrete actions are recorded as indices 0..n-1 (the env's
    `start` subtracted), as models and the Minari loader count them.
    """
    if (steps is None) == (episodes is None):
        raise ValueError(f"steps={steps}, episodes={episodes}; expected exactly one of them.")
    total = steps if steps is not None else episodes
    bar = tqdm(
        total=total, unit="step" if steps is not None else "episode", desc="collecting", disable=not progress
    )
    done_steps, start = 0, action_start(env.action_space)
    for index in itertools.count():
        if (episodes is not None and index >= episodes) or (steps is not None and done_steps >= steps):
            break
        observation, _ = env.reset(seed=seed + index)
        policy.reset(index)
        buffer, reward, ended = _EpisodeBuffer(), None, False
        while not ended:
            action = policy.act(observation, reward)
            buffer.observations.append(observation)
            buffer.actions.append(action - start if start else action)
            observation, reward, terminated, truncated, _ = env.step(action)
            done_steps += 1
            cut = steps is not None and done_steps >= steps
            buffer.rewards.append(reward)
            buffer.terminations.append(terminated)
            buffer.truncations.append((truncated or cut) and not terminated)
            ended = terminated or truncated or cut
            if steps is not None:
                bar.update(1)
        if episodes is not None:
            bar.update(1)
        yield buffer.episode()
    bar.close()


def write_parquet_dataset(
    episodes: Iterable[Mapping[str, np.ndarray]], output_dir: str | Path, shard_bytes: int = SHARD_BYTES
) -> list[dict[str, float]]:
    """Write canonical episodes as Hub-layout parquet shards (`data/train-XXXXX-of-YYYYY.parquet`).

    Returns per-episode summaries (`length`, `return`) for the dataset card; memory stays at one shard.
    """
    data_dir = Path(output_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.glob("train-*.parquet"):  # a previous run's shards would mix with these
        stale.unlink()
    summaries, shards, pending, pending_bytes, features = [], [], [], 0, None
    for episode in episodes:
        features = features or canonical_features(
            atari=episode[OBSERVATIONS].dtype == np.uint8, discrete=episode[ACTIONS].ndim == 1
        )
        summaries.append(
            {"length": len(episode[REWARDS]), "return": float(episode[REWARDS].sum(dtype=np.float64))}
        )
        pending.append(episode)
        pending_bytes += sum(np.asarray(value).nbytes for value in episode.values())
        if pending_bytes >= shard_bytes:
            shards.append(_write_shard(pending, features, data_dir, len(shards)))
            pending, pending_bytes = [], 0
    if pending or not shards:
        if features is None:
            raise ValueError("no episodes to write; expected at least one.")
        shards.append(_write_shard(pending, features, data_dir, len(shards)))
    for index, shard in enumerate(shards):
        shard.rename(data_dir / f"train-{index:05d}-of-{len(shards):05d}.parquet")
    return summaries


def _write_shard(
    episodes: Sequence[Mapping[str, np.ndarray]], features: Any, data_dir: Path, index: int
) -> Path:
    path = data_dir / f"shard-{index:05d}.parquet.tmp"
    pq.write_table(episodes_to_table(episodes, features), path, row_group_size=64, compression="zstd")
    return path


def summarise(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Episode count, steps and mean/min/max episode return."""
    returns = np.array([s["return"] for s in summaries])
    return {
        "episodes": len(summaries),
        "steps": int(sum(s["length"] for s in summaries)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
    }


def dataset_card(
    *, title: str, env_id: str, behaviour: str, command: str, stats: Mapping[str, float], notes: str = ""
) -> str:
    """A Hub dataset card (YAML header + description) for a dataset in the canonical schema; its `env_id`
    field names the environment, for `dmamba train` to evaluate in (see `card_environment`)."""
    frames = (
        " Each 84x84 frame is stored once: `observations[t]` is the newest frame of the 4-frame stack of step t and "
        "`initial_frames` holds the 3 frames before the first step."
        if is_atari(env_id)
        else ""
    )
    return f"""---
license: apache-2.0
env_id: {env_id}
task_categories:
- reinforcement-learning
tags:
- offline-rl
- decision-mamba
- {env_id.replace("/", "-")}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# {title}

Offline trajectories of `{env_id}` in the canonical episode schema of `hf-decision-mamba`: one row per episode
with `observations`, `actions`, `rewards`, `terminations` and `truncations`, one entry per step.{frames}

- Behaviour: {behaviour}
- Episodes: {stats["episodes"]}, steps: {stats["steps"]}
- Episode return: mean {stats["return_mean"]:.1f}, std {stats["return_std"]:.1f}, min {stats["return_min"]:.1f}, max {stats["return_max"]:.1f}
{notes}
## How it was made

```bash
{command}
```

Load it with `hf_decision_mamba.data.load_trajectories("<this folder or repo id>")`.
"""


def card_environment(folder: str | Path) -> str | None:
    """The `env_id` a local dataset folder's `README.md` card names in its YAML header (as `dataset_card`
    writes it), else None."""
    import yaml

    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text()
    if not text.startswith("---"):
        return None
    try:
        header = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None
    env_id = header.get("env_id") if isinstance(header, dict) else None
    return env_id if isinstance(env_id, str) else None


def push_dataset_folder(
    folder: str | Path, repo_id: str, private: bool = False, token: str | None = None
) -> str:
    """Upload a dataset folder (parquet shards + card) to a Hub dataset repo; return the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Upload dataset"
    )
    return str(url)
