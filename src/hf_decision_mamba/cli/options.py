"""Option spelling shared by every `dmamba` command: `--no_progress` and `--no-progress` both work.

`dmamba train` and `dmamba quickstart` parse with `HfArgumentParser`, which already accepts both; the other
commands build an `argparse` parser and pass it through `accept_both_spellings`.
"""

from __future__ import annotations

import argparse


def other_spelling(option: str) -> str:
    """`--no_progress` <-> `--no-progress` (the long option with underscores and dashes swapped)."""
    name = option[2:]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every long option of `parser` (argument groups included) its other spelling as an alias; returns it.

    The alias is added to the option's own action, so `--help` lists both and both set the same destination.
    """
    for action in parser._actions:
        for option in list(action.option_strings):
            alias = other_spelling(option)
            if option.startswith("--") and alias != option and alias not in parser._option_string_actions:
                action.option_strings.append(alias)
                parser._option_string_actions[alias] = action
    return parser


__all__ = ["accept_both_spellings", "other_spelling"]
