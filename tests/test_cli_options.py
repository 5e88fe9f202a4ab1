"""Every `dmamba` command takes `--an_option` and `--an-option` alike, and every option says what it does."""

from __future__ import annotations

import argparse

import pytest

from hf_decision_mamba.cli import collect, evaluate, push
from hf_decision_mamba.cli.options import other_spelling
from hf_decision_mamba.training.arguments import build_parser as train_parser

PARSERS = {"evaluate": evaluate.build_parser, "push": push.build_parser, "collect": collect.build_parser,
           "train": train_parser}  # fmt: skip


def _long_options(parser: argparse.ArgumentParser) -> list[tuple[argparse.Action, str]]:
    return [(action, option) for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"]  # fmt: skip


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_long_option_has_both_spellings_and_a_help_line(command):
    parser = PARSERS[command]()
    for action, option in _long_options(parser):
        if "_" in option[2:] or "-" in option[2:]:
            assert parser._option_string_actions.get(other_spelling(option)) is action, (command, option)
        assert action.help and action.help is not argparse.SUPPRESS, f"dmamba {command} {option} has no help"


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("evaluate", ["model", "--num_episodes", "3", "--no_progress", "--max_episode_steps", "5"]),
        ("push", ["folder", "--repo_id", "u/m", "--dry_run", "--commit_message", "m"]),
        ("collect", ["--env", "Hopper-v5", "--episodes", "2", "--output", "o", "--no_progress", "--random_prob", "0.1"]),
    ],
)  # fmt: skip
def test_dashed_and_underscored_spellings_parse_the_same(command, argv):
    dashed = [other_spelling(arg) if arg.startswith("--") and "_" in arg else arg for arg in argv]
    underscored = ["--" + arg[2:].replace("-", "_") if arg.startswith("--") else arg for arg in dashed]
    parser = PARSERS[command]()
    assert vars(parser.parse_args(dashed)) == vars(parser.parse_args(underscored))
    assert dashed != underscored
