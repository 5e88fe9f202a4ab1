"""Loading a saved model: remote code only when the user allowed it, and one-line errors for the usual faults.

`load_pretrained` is the one place `dmamba evaluate` and `dmamba train --model_name_or_path` load a checkpoint.
It passes the user's `trust_remote_code` through unchanged (never retries with it on), and turns a missing
folder, a checkpoint that needs its own code, and an empty or truncated `model.safetensors` into a `ValueError`
that names the folder or file and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .network import is_network_error, one_line, require_hub

WEIGHTS_FILE = "model.safetensors"
REMOTE_CODE_HINT = "pass --trust_remote_code (trust_remote_code=True) to run it, only if you trust its source"


def corrupt_weights_message(where: str, error: BaseException) -> str:
    """The one line for a weights file that safetensors cannot read; `where` names the file or model."""
    return (
        f"{where} is corrupt or truncated ({one_line(error)}); expected a complete safetensors file: save or "
        "download the model again."
    )


def check_weights_file(path: str | os.PathLike) -> None:
    """Raise a one-line `ValueError` naming `path` if it is not a complete safetensors file (empty, truncated)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(corrupt_weights_message(str(path), error)) from None


def check_local_weights(folder: str | os.PathLike) -> None:
    """`check_weights_file` on the (sharded) weights of a local model folder, where present."""
    folder = Path(folder)
    for path in sorted(folder.glob("model*.safetensors")):
        check_weights_file(path)


def check_model_location(name_or_path: str | os.PathLike) -> None:
    """A `ValueError` when `name_or_path` is neither an existing local folder nor a valid Hub repo id; a
    `HubUnreachableError` at once (not after 30 s of retries) when it is a Hub id and the Hub does not answer."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model={name!r} is a file; expected a folder written by save_pretrained.")
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(
            f"model={name!r}: no such local folder, and not a Hub repo id either; expected an existing "
            "folder written by save_pretrained or a Hub id such as user/name."
        ) from None
    require_hub(f"load model {name!r}")


def _loading_error(name: str, error: Exception) -> ValueError | None:
    """The one-line error for a known failure of `from_pretrained` on `name`, else None."""
    from safetensors import SafetensorError

    text = str(error)
    if isinstance(error, ValueError) and "trust_remote_code" in text:
        return ValueError(
            f"model={name!r} needs its own code (config.json auto_map) to load; {REMOTE_CODE_HINT}."
        )
    if isinstance(error, SafetensorError):
        return ValueError(corrupt_weights_message(f"{name}: {WEIGHTS_FILE}", error))
    return None


def load_config(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """`AutoConfig.from_pretrained` with this package registered and the user's `trust_remote_code`."""
    from transformers import AutoConfig

    import hf_decision_mamba  # noqa: F401  (registers DecisionMamba with the Auto classes)

    name = str(name_or_path)
    check_model_location(name)
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as error:
        raise (_loading_error(name, error) or error) from None


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    model_class: Any = None,
    **kwargs: Any,
) -> Any:
    """`model_class.from_pretrained` (default `AutoModel`) for a local folder or Hub id, remote code only with
    `trust_remote_code=True`; known faults become one-line `ValueError`s (see the module docstring)."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    import hf_decision_mamba  # noqa: F401  (registers DecisionMamba with the Auto classes)

    name = str(name_or_path)
    check_model_location(name)
    if Path(name).expanduser().is_dir():
        check_local_weights(Path(name).expanduser())
    loader = model_class or AutoModel
    if loader is AutoModel:
        kwargs["trust_remote_code"] = trust_remote_code
    try:
        return loader.from_pretrained(name, **kwargs)
    except (ValueError, SafetensorError) as error:
        raise (_loading_error(name, error) or error) from None
    except OSError as error:  # transformers' "not a valid model identifier", missing files
        if is_network_error(error):
            raise
        raise ValueError(f"model={name!r} could not be loaded: {one_line(error)}") from None


__all__ = [
    "check_local_weights",
    "check_model_location",
    "check_weights_file",
    "load_config",
    "load_pretrained",
]
