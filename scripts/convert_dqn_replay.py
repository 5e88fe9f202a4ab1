"""Convert DQN-replay checkpoints (Agarwal et al. 2020) into a Hub-ready dataset in the canonical episode schema.

The replay logs of one game/run hold, per checkpoint N, gzipped numpy arrays `$store$_observation_ckpt.N.gz`
(84x84 uint8 frames), `$store$_action_ckpt.N.gz`, `$store$_reward_ckpt.N.gz`, `$store$_terminal_ckpt.N.gz` and
`add_count_ckpt.N.gz`. Episodes are split at terminals in the order they were added (the circular buffer is
unrolled, the episode cut by its start dropped), Dopamine's zero padding before each episode is removed, and each
frame is stored once. DT and the Atari papers train on 500k transitions (1% of a game's data):

    python scripts/convert_dqn_replay.py --input-dir dqn/Breakout/1/replay_logs --checkpoints 49 48 \
        --max-transitions 500000 --env-id ALE/Breakout-v5 --output breakout-dqn-500k --push-to-hub user/breakout
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hf_decision_mamba.data.atari import iter_dqn_replay
from hf_decision_mamba.data.collection import (
    dataset_card,
    push_dataset_folder,
    summarise,
    write_parquet_dataset,
)


def first_transitions(
    episodes: Iterable[dict[str, np.ndarray]], limit: int | None
) -> Iterator[dict[str, np.ndarray]]:
    """Episodes until `limit` transitions; the last one is cut there and marked truncated."""
    total = 0
    with tqdm(total=limit, unit="step", desc="converting") as bar:
        for episode in episodes:
            length = len(episode["actions"])
            if limit is not None and total + length >= limit:
                yield _cut(episode, limit - total)
                bar.update(limit - total)
                return
            total += length
            bar.update(length)
            yield episode


def _cut(episode: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    if length >= len(episode["actions"]):
        return episode
    cut = {name: value[:length] if name != "initial_frames" else value for name, value in episode.items()}
    cut["terminations"] = np.zeros(length, dtype=bool)
    cut["truncations"] = np.arange(length) == length - 1
    return cut


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-dir", required=True, type=Path, help="a run's replay_logs folder")
    parser.add_argument(
        "--checkpoints", type=int, nargs="+", required=True, help="checkpoint numbers, in order"
    )
    parser.add_argument("--max-transitions", type=int, help="stop after this many transitions (DT: 500000)")
    parser.add_argument("--env-id", default="ALE/Breakout-v5", help="environment id recorded in the card")
    parser.add_argument(
        "--output", required=True, type=Path, help="output folder (parquet shards + README.md)"
    )
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Convert, write the card, optionally push; print the summary as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    episodes = itertools.chain.from_iterable(iter_dqn_replay(args.input_dir, n) for n in args.checkpoints)
    stats = summarise(write_parquet_dataset(first_transitions(episodes, args.max_transitions), args.output))
    card = dataset_card(
        title=f"{args.env_id} DQN-replay (checkpoints {args.checkpoints})",
        env_id=args.env_id,
        behaviour="DQN agent's replay (Agarwal et al. 2020), sticky actions 0.25",
        command="python scripts/convert_dqn_replay.py " + shlex.join(argv),
        stats=stats,
    )
    (args.output / "README.md").write_text(card)
    if args.push_to_hub:
        stats["url"] = push_dataset_folder(args.output, args.push_to_hub, private=args.private)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
