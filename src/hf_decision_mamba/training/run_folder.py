"""The run record: what a `dmamba train` output folder was trained on, so that a rerun cannot mix two runs.

`run_record.json` holds the data's identity (source, config, revision, episode cap and, for local files, a SHA-256
fingerprint of their content, plus the window mode and return-to-go scale) and the model config fields that fix
the architecture. A rerun into a folder that
holds a run (finished or partial) must have the same record, or it is refused with one line naming what differs;
`--overwrite_output_dir` removes the earlier run's files first. A resume from a checkpoint must match the record
stored with that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..hub.files import CARD_NAME, EVALUATION_FILES, MODEL_FILES, TRAINING_EVAL_REPORT_NAME
from .arguments import DataArguments

RUN_RECORD_NAME = "run_record.json"
CHECKPOINT_PREFIX = "checkpoint-"
# Config fields computed from the data or used only when acting: they may differ between reruns of one run.
NOT_ARCHITECTURE = frozenset(
    {
        "state_mean",
        "state_std",
        "target_return",
        "rtg_scale",
        "env_id",
        "preset",
        "architectures",
        "auto_map",
        "transformers_version",
        "dtype",
        "torch_dtype",
        "_name_or_path",
    }
)
# What a run writes into its output folder (removed by --overwrite_output_dir; anything else is left alone).
RUN_FILES = (
    RUN_RECORD_NAME,
    *MODEL_FILES,
    *EVALUATION_FILES,
    CARD_NAME,
    TRAINING_EVAL_REPORT_NAME,
    "generation_config.json",
    "training_args.bin",
    "trainer_state.json",
    "runs",
    ".staging",
)


def fingerprint_files(path: Path) -> str:
    """SHA-256 over the relative names and contents of the file `path` or of every file under the folder `path`."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_identity(args: DataArguments) -> dict[str, Any]:
    """The dataset's identity (source, config, revision, episode cap; local and embedded files also by content)
    and how it is turned into training targets (window mode, return-to-go scale)."""
    from ..data.sources import embedded_path

    source = args.dataset
    local = Path(source).expanduser()
    if source.startswith("embedded:"):
        local = embedded_path(source.partition(":")[2])
    sha256 = fingerprint_files(local) if local.exists() else None
    return {
        "dataset": source,
        "dataset_config": args.dataset_config,
        "dataset_revision": args.dataset_revision,
        "max_episodes": args.max_episodes,
        "window_mode": args.window_mode,
        "rtg_scale": args.rtg_scale,
        "sha256": sha256,
    }


def architecture(config: Any) -> dict[str, Any]:
    """The config fields that fix what is trained (JSON values), without data-derived and acting fields."""
    fields = json.loads(config.to_json_string(use_diff=False))
    return {key: value for key, value in sorted(fields.items()) if key not in NOT_ARCHITECTURE}


def run_record(data: DataArguments, config: Any) -> dict[str, Any]:
    """The record of a run on `data` with `config`."""
    return {"data": data_identity(data), "model": architecture(config)}


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The run record in `folder`, or None."""
    path = Path(folder) / RUN_RECORD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` as JSON through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def write_record(folder: str | Path, record: dict[str, Any]) -> None:
    """Write `record` into `folder` (through a temporary file and a rename)."""
    write_json(Path(folder) / RUN_RECORD_NAME, record)


def holds_run(folder: str | Path) -> bool:
    """Whether `folder` holds (part of) a run: a saved model or a checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return (folder / "config.json").is_file() or any(folder.glob(f"{CHECKPOINT_PREFIX}*"))


def difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first field that differs between two records (the data's content first), as
    `data.sha256='ab12...' (this run: 'cd34...')`, or None. Local data with the same content under another path
    is the same data."""
    old_data, new_data = dict(old.get("data", {})), dict(new.get("data", {}))
    if old_data.get("sha256") and old_data.get("sha256") == new_data.get("sha256"):
        old_data.pop("dataset", None)
        new_data.pop("dataset", None)
    for group, before, after in (("data", old_data, new_data), ("model", old.get("model", {}), new["model"])):
        for key in sorted(set(before) | set(after), key=lambda name: (name != "sha256", name)):
            if before.get(key) != after.get(key):
                return f"{group}.{key}={before.get(key)!r} (this run: {after.get(key)!r})"
    return None


def clear_run(folder: Path) -> None:
    """Remove an earlier run's files (`RUN_FILES` and checkpoints) from `folder`; nothing else is touched."""
    for path in [*(folder / name for name in RUN_FILES), *folder.glob(f"{CHECKPOINT_PREFIX}*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_run_folder(folder: str | Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse to train into `folder` when it holds a run with another record (or none), unless `overwrite`,
    which removes that run first. Raises a one-line `ValueError` naming the folder and the first difference."""
    folder = Path(folder)
    if not holds_run(folder):
        return
    if overwrite:
        clear_run(folder)
        return
    earlier = read_record(folder)
    if earlier is None:
        raise ValueError(
            f"output_dir={str(folder)!r} holds a run without {RUN_RECORD_NAME}, so it cannot be checked against "
            "this one; expected another --output_dir, or --overwrite_output_dir to start clean."
        )
    changed = difference(earlier, record)
    if changed is not None:
        raise ValueError(
            f"output_dir={str(folder)!r} holds a run trained with {changed}; expected the same data and "
            "architecture to continue it, another --output_dir, or --overwrite_output_dir to start clean."
        )


def check_checkpoint(checkpoint: str | Path, record: dict[str, Any]) -> None:
    """Refuse to resume from `checkpoint` when its run record (its own, else its run folder's) differs."""
    checkpoint = Path(checkpoint)
    earlier = read_record(checkpoint) or read_record(checkpoint.parent)
    if earlier is None:
        return
    changed = difference(earlier, record)
    if changed is not None:
        raise ValueError(
            f"resume_from_checkpoint={str(checkpoint)!r} was trained with {changed}; expected the same data "
            "and architecture as that checkpoint."
        )


__all__ = [
    "RUN_RECORD_NAME",
    "architecture",
    "check_checkpoint",
    "check_run_folder",
    "clear_run",
    "data_identity",
    "fingerprint_files",
    "holds_run",
    "read_record",
    "run_record",
    "write_json",
    "write_record",
]
