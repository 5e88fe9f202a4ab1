"""The `dmamba` command line: one subcommand per module in this folder.

Each subcommand module exposes `main(argv: list[str] | None) -> int`; modules are imported only when their
subcommand runs, so `dmamba --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "quickstart",
        "train on the embedded dataset, evaluate in the real environment, print scores",
    ),
    "train": ("train", "train a Decision Mamba (or Decision Transformer) with the transformers Trainer"),
    "evaluate": (
        "evaluate",
        "evaluate a checkpoint in its environment, write a JSON report and a replay video",
    ),
    "collect": ("collect", "roll out a behaviour policy and write a dataset in the canonical schema"),
    "push": ("push", "upload a checkpoint folder with its model card to the Hub"),
}


def _usage() -> str:
    lines = ["usage: dmamba <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `dmamba <command> ...` to `hf_decision_mamba.cli.<module>.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"dmamba: unknown command {name!r}; expected one of {sorted(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{SUBCOMMANDS[name][0]}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
