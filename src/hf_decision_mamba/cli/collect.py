"""`dmamba collect`: roll out a behaviour policy and write (and optionally push) a canonical dataset.

Any registered Gymnasium id works (Dict/Tuple observations flattened as `envs.spaces` documents). Examples (the
first is how the embedded Hopper dataset was made):
    dmamba collect --env Hopper-v5 --behaviour scripted --noise 0.1 0.3 0.5 0.8 --random-prob 0 0.1 0.3 \
        --episodes 120 --seed 0 --output hopper-data
    dmamba collect --env CartPole-v1 --episodes 100 --output cartpole-random --minari-id local/cartpole/random-v0
    dmamba collect --env InvertedPendulum-v5 --policy outputs/run --action-noise 0.2 --episodes 50 --output ip
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..data.collection import (
    BEHAVIOURS,
    dataset_card,
    make_env,
    make_policy,
    push_dataset_folder,
    rollout,
    summarise,
    write_minari_dataset,
    write_parquet_dataset,
)
from .options import accept_both_spellings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmamba collect", description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="Gymnasium or ALE id, e.g. Hopper-v5 or ALE/Breakout-v5")
    parser.add_argument(
        "--behaviour",
        choices=BEHAVIOURS,
        default="random",
        help="who acts: uniform random, a scripted controller (MuJoCo linear, Breakout/Pong from RAM), a model",
    )
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--steps", type=int, help="total environment steps (the last episode is cut)")
    amount.add_argument("--episodes", type=int, help="number of episodes")
    parser.add_argument(
        "--seed", type=int, default=0, help="episode k is reset with seed + k; seeds the policy"
    )
    parser.add_argument(
        "--noise", type=float, nargs="+", default=[0.0], help="scripted MuJoCo: Gaussian noise stds"
    )
    parser.add_argument(
        "--random-prob", type=float, nargs="+", default=[0.0], help="scripted: epsilon-random probs"
    )
    parser.add_argument("--model", help="model: path or Hub id of a saved model")
    parser.add_argument(
        "--policy",
        metavar="CHECKPOINT",
        help="act with this trained checkpoint (same as --behaviour model --model)",
    )
    parser.add_argument(
        "--action-noise", type=float, default=0.0, help="--policy: Gaussian noise std on continuous actions"
    )
    parser.add_argument(
        "--minari-id",
        help="also write a Minari dataset with this id (e.g. local/cartpole/random-v0) into MINARI_DATASETS_PATH",
    )
    parser.add_argument("--max-episode-steps", type=int, help="override the env's time limit")
    atari = parser.add_argument_group("Atari protocol (ALE games only)")
    atari.add_argument(
        "--repeat-action-probability", type=float, help="sticky actions (default 0.25; DT's protocol: 0)"
    )
    atari.add_argument(
        "--full-action-space", action="store_true", default=None, help="record in all 18 ALE actions"
    )
    parser.add_argument("--output", required=True, help="output folder (parquet shards + README.md card)")
    parser.add_argument("--title", help="dataset card title")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return accept_both_spellings(parser)


def main(argv: list[str] | None = None) -> int:
    """Collect a dataset as the arguments say; print its summary as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for name in ("steps", "episodes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"dmamba collect: --{name}={getattr(args, name)}; expected a positive integer.")
    protocol = {
        name: getattr(args, name)
        for name in ("repeat_action_probability", "full_action_space")
        if getattr(args, name) is not None
    }
    if args.policy:
        args.behaviour, args.model = "model", args.policy
    try:
        env = make_env(args.env, args.max_episode_steps, minari=bool(args.minari_id), **protocol)
    except ValueError as error:
        raise SystemExit(f"dmamba collect: {error}") from None
    policy = make_policy(
        args.behaviour,
        args.env,
        env,
        noise=args.noise,
        random_prob=args.random_prob,
        model=args.model,
        seed=args.seed,
        action_noise=args.action_noise,
    )
    episodes = rollout(
        env, policy, steps=args.steps, episodes=args.episodes, seed=args.seed, progress=not args.no_progress
    )
    stats = summarise(write_parquet_dataset(episodes, args.output))
    command = "dmamba collect " + shlex.join(argv)
    card = dataset_card(
        title=args.title or f"{args.env} ({args.behaviour} behaviour)",
        env_id=args.env,
        behaviour=f"{args.behaviour}: {policy.description}",
        command=command,
        stats=stats,
    )
    (Path(args.output) / "README.md").write_text(card)
    if args.minari_id:
        stats["minari_dataset"] = write_minari_dataset(
            env, args.minari_id, f"{args.behaviour}: {policy.description}"
        )
    if args.push_to_hub:
        stats["url"] = push_dataset_folder(args.output, args.push_to_hub, private=args.private)
    print(json.dumps(stats, indent=2))
    env.close()
    return 0
