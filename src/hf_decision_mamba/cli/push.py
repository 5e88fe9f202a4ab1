"""`dmamba push <folder> --repo_id user/name`: upload a trained model with its model card to the Hub.

Only the allow-listed files are uploaded (weights, config with normalisation and `auto_map`, remote code, the
rendered card, `eval_results.json`, `replay.mp4`, `training_args.json`); `--dry_run` builds that exact folder
locally and lists it without any network access.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..hub import build_upload_folder, publish
from ..network import UPLOAD_ADVICE, HubUnreachableError, is_network_error, unreachable_message
from .errors import run_reporting_input_errors
from .options import accept_both_spellings


def build_parser() -> argparse.ArgumentParser:
    """The `dmamba push` argument parser."""
    parser = argparse.ArgumentParser(prog="dmamba push", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder written by dmamba train (its output_dir or a checkpoint-N)")
    parser.add_argument("--repo_id", required=True, help="Hub model repository, e.g. user/dmamba-hopper")
    parser.add_argument(
        "--eval_dir", help="take eval_results.json and replay.mp4 from here (dmamba evaluate's output)"
    )
    parser.add_argument(
        "--private", action="store_true", default=None, help="create the repository as private"
    )
    parser.add_argument("--revision", help="branch to push to")
    parser.add_argument(
        "--commit_message", default="Upload Decision Mamba policy", help="the Hub commit message"
    )
    parser.add_argument(
        "--install_command",
        help="the install line of the model card (default: $DMAMBA_INSTALL_COMMAND, else from the package metadata)",
    )
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument(
        "--dry_run", action="store_true", help="build the upload folder and list it, do not push"
    )
    parser.add_argument(
        "--upload_dir", help="where --dry_run builds the folder (default: a new temporary folder)"
    )
    return accept_both_spellings(parser)


def dry_run(args: argparse.Namespace) -> Path:
    """Build the upload folder and print its files."""
    destination = Path(args.upload_dir or tempfile.mkdtemp(prefix="dmamba-upload-"))
    build_upload_folder(args.folder, destination, repo_id=args.repo_id, eval_dir=args.eval_dir,
                        install_command=args.install_command)  # fmt: skip
    print(f"Would upload to {args.repo_id} from {destination}:")
    for path in sorted(destination.iterdir()):
        print(f"  {path.name:<36} {path.stat().st_size:>12,d} bytes")
    return destination


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dmamba push`; returns the exit status (2 for invalid inputs)."""
    args = build_parser().parse_args(argv)
    return run_reporting_input_errors("dmamba push", lambda: _push(args))


def _push(args: argparse.Namespace) -> int:
    if args.dry_run:
        dry_run(args)
        return 0
    try:
        commit = publish(args.folder, args.repo_id, eval_dir=args.eval_dir, token=args.token, private=args.private,
                         revision=args.revision, commit_message=args.commit_message,
                         install_command=args.install_command)  # fmt: skip
    except Exception as error:
        if not is_network_error(error):
            raise
        message = unreachable_message(f"push to {args.repo_id!r}", error, advice=UPLOAD_ADVICE)
        raise HubUnreachableError(message) from None
    print(f"Pushed {args.folder} to {getattr(commit, 'commit_url', None) or args.repo_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
