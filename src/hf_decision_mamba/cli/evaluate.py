"""`dmamba evaluate <model folder or Hub id>`: score a checkpoint in its environment, save JSON and a replay."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..evaluation.results import EVAL_RESULTS_NAME as RESULTS_NAME
from ..evaluation.results import REPLAY_NAME as VIDEO_NAME
from .errors import run_reporting_input_errors
from .options import accept_both_spellings


def build_parser() -> argparse.ArgumentParser:
    """The `dmamba evaluate` argument parser."""
    parser = argparse.ArgumentParser(
        prog="dmamba evaluate",
        description="Evaluate a checkpoint on seeded episodes run in parallel; write eval_results.json and "
        "replay.mp4 (H.264) to --output_dir.",
    )
    parser.add_argument("model", help="local model folder or Hub repo id")
    parser.add_argument("--env_id", help="environment (default: the model config's env_id)")
    parser.add_argument("--num_episodes", type=int, default=10, help="seeded episodes to play (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="episode i starts from seed + i")
    parser.add_argument("--target_return", type=float, action="append", help="repeat to evaluate several")
    parser.add_argument(
        "--mode",
        choices=("window", "recurrent"),
        default="window",
        help="inference mode: window (the last K steps each step, as trained) or recurrent (state carried)",
    )
    parser.add_argument("--output_dir", help="default: eval_results/<model name>")
    parser.add_argument("--no_video", action="store_true", help="skip the replay video of the first episode")
    parser.add_argument("--num_envs", type=int, help="parallel environments (default: one per episode)")
    parser.add_argument("--max_episode_steps", type=int, help="default: 1000 (MuJoCo), 27000 (Atari)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    parser.add_argument("--device", help="torch device for the model (default: cuda if available)")
    parser.add_argument(
        "--torch_threads",
        type=int,
        default=None,
        help="torch intra-op threads while playing (default: 1 for recurrent Atari acting, else torch's)",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="let the checkpoint run its own code (config.json auto_map); only for sources you trust",
    )
    atari = parser.add_argument_group("Atari protocol")
    atari.add_argument("--repeat_action_probability", type=float, help="sticky actions (default 0.25; DT: 0)")
    atari.add_argument("--noop_max", type=int, help="up to this many no-ops at reset (default 30)")
    atari.add_argument("--full_action_space", action="store_true", default=None, help="all 18 actions")
    return accept_both_spellings(parser)


def load_model(name_or_path: str, device: str | None = None, trust_remote_code: bool = False) -> Any:
    """The checkpoint on `device`, in eval mode; its own code runs only with `trust_remote_code`."""
    import torch

    from ..loading import load_pretrained

    model = load_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Protocol options given on the command line (unset ones keep the protocol's defaults)."""
    names = ("repeat_action_probability", "noop_max", "full_action_space")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, evaluate, print the table and write the results (and video) to the output folder."""
    from ..evaluation import format_report

    output_dir = Path(args.output_dir or Path("eval_results") / Path(args.model.rstrip("/")).name)
    model = load_model(args.model, args.device, args.trust_remote_code)
    with output_folder(output_dir):
        report = {"model": args.model, **_evaluate(model, args, output_dir)}
        (output_dir / RESULTS_NAME).write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"Wrote {output_dir / RESULTS_NAME}" + (f" and {report['video']}" if report["video"] else ""))
    return report


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[None]:
    """Create `path` for the block; if the block fails and `path` was new, remove it (no empty folder left)."""
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _evaluate(model: Any, args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    """`evaluate_policy` with the command line's settings (the replay goes to `output_dir`)."""
    from ..evaluation import evaluate_policy

    return evaluate_policy(
        model,
        env_id=args.env_id,
        num_episodes=args.num_episodes,
        seed=args.seed,
        target_return=args.target_return,
        mode=args.mode,
        deterministic=not args.stochastic,
        num_envs=args.num_envs,
        max_episode_steps=args.max_episode_steps,
        record_video=None if args.no_video else output_dir / VIDEO_NAME,
        progress=not args.no_progress,
        torch_threads=args.torch_threads or "auto",
        **_env_kwargs(args),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dmamba evaluate`; returns the exit status (2 for invalid inputs)."""
    args = build_parser().parse_args(argv)
    return run_reporting_input_errors("dmamba evaluate", lambda: run(args) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
