"""Input errors of every `dmamba` command: known exception types become one line on stderr and exit status 2.

Bad arguments, files and folders raise `ValueError` (or `FileNotFoundError`) with a message that names the field
or file; an unreachable Hub raises from deep inside `huggingface_hub` or `datasets`, and a damaged weights file
raises `SafetensorError`. None of these needs a traceback: the user can fix each from the one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..loading import WEIGHTS_FILE, corrupt_weights_message
from ..network import is_network_error, one_line, unreachable_message

INPUT_ERROR_STATUS = 2


def input_error_message(error: BaseException) -> str | None:
    """The one-line message for a known input error, else None (a bug: let its traceback show)."""
    from safetensors import SafetensorError

    if is_network_error(error):
        text = one_line(error)
        return text if "could not reach" in text else unreachable_message("load or upload files", error)
    if isinstance(error, SafetensorError):
        return corrupt_weights_message(f"a {WEIGHTS_FILE} file", error)
    if isinstance(error, (ValueError, FileNotFoundError)):
        return one_line(error)
    return None


def run_reporting_input_errors(prog: str, command: Callable[[], int]) -> int:
    """Run `command`; an input error is printed as `<prog>: error: <one line>` and gives exit status 2."""
    try:
        return command()
    except Exception as error:
        message = input_error_message(error)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return INPUT_ERROR_STATUS


__all__ = ["INPUT_ERROR_STATUS", "input_error_message", "run_reporting_input_errors"]
