"""Which files of a trained folder may go to the Hub: an explicit allow-list, never a whole folder.

A training folder also holds `training_args.bin` (a pickle that can carry the Hub token), TensorBoard runs,
checkpoints and whatever else a user keeps there (`.env`, tokens); none of it matches these names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers.dynamic_module_utils import get_relative_import_files

from ..evaluation.callback import REPORT_NAME as TRAINING_EVAL_REPORT_NAME
from ..evaluation.results import EVAL_RESULTS_NAME, REPLAY_NAME

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
TRAINING_ARGS_NAME = "training_args.json"
TRAINING_CURVES_NAME = "training_curves.png"
"""The PNG of the loss and the environment returns that `dmamba train` writes into its run folder."""

REQUIRED_FILES = (WEIGHTS_NAME, CONFIG_NAME)
MODEL_FILES = (*REQUIRED_FILES, TRAINING_ARGS_NAME, TRAINING_CURVES_NAME)
EVALUATION_FILES = (EVAL_RESULTS_NAME, REPLAY_NAME)
# What a Trainer checkpoint needs to resume (hub_strategy="checkpoint"), without the pickled `training_args.bin`.
CHECKPOINT_FILES = (*REQUIRED_FILES, "optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json")
CHECKPOINT_PATTERNS = ("rng_state.pth", "rng_state_*.pth")


def _require_model(folder: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder} has no {', '.join(missing)}; expected a folder written by save_pretrained."
        )


def remote_code_files(folder: str | Path) -> list[str]:
    """The `.py` files `config.json`'s `auto_map` points to, plus every module they import relatively."""
    folder = Path(folder)
    auto_map = json.loads((folder / CONFIG_NAME).read_text()).get("auto_map", {})
    references = [
        ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value])
    ]
    modules = {ref.rsplit(".", 1)[0] for ref in references if ref and "--" not in ref}
    files: set[str] = set()
    for module in modules:
        path = folder / f"{module}.py"
        if not path.is_file():
            raise ValueError(
                f"{folder}: auto_map names {module!r} but {path.name} is missing; expected remote code."
            )
        files |= {path.name, *(Path(name).name for name in get_relative_import_files(str(path)))}
    return sorted(files)


def select_model_files(folder: str | Path, eval_dir: str | Path | None = None) -> dict[str, Path]:
    """Upload name -> source path for a model folder: weights, config, remote code, training args, evaluation.

    Evaluation files (`eval_results.json`, `replay.mp4`) come from `eval_dir` when given, else from `folder`.
    The model card is not copied: it is rendered (see `hub.card`).
    """
    folder = Path(folder)
    _require_model(folder)
    selected = {name: folder / name for name in (*MODEL_FILES, *remote_code_files(folder))}
    evaluation = Path(eval_dir) if eval_dir is not None else folder
    selected |= {name: evaluation / name for name in EVALUATION_FILES}
    return {name: path for name, path in selected.items() if path.is_file()}


def select_checkpoint_files(checkpoint: str | Path) -> dict[str, Path]:
    """Upload name -> source path for a resumable Trainer checkpoint (no pickled arguments, no stray files)."""
    checkpoint = Path(checkpoint)
    _require_model(checkpoint)
    names = {*CHECKPOINT_FILES, *remote_code_files(checkpoint)}
    names |= {path.name for pattern in CHECKPOINT_PATTERNS for path in checkpoint.glob(pattern)}
    return {name: checkpoint / name for name in sorted(names) if (checkpoint / name).is_file()}


def copy_selected(files: dict[str, Path], destination: str | Path) -> Path:
    """Copy `files` (name -> source) into the new or empty folder `destination`."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"destination={str(destination)!r} is not empty; expected a new or empty folder.")
    destination.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copy2(source, destination / name)
    return destination


__all__ = [
    "CARD_NAME",
    "CHECKPOINT_FILES",
    "CONFIG_NAME",
    "EVALUATION_FILES",
    "EVAL_RESULTS_NAME",
    "MODEL_FILES",
    "REPLAY_NAME",
    "TRAINING_ARGS_NAME",
    "TRAINING_EVAL_REPORT_NAME",
    "WEIGHTS_NAME",
    "copy_selected",
    "remote_code_files",
    "select_checkpoint_files",
    "select_model_files",
]
