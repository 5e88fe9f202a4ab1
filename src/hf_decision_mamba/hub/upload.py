"""Building the exact folder that goes to the Hub, and pushing it with an allow-list.

`build_upload_folder` copies the allow-listed files of a trained folder (see `hub.files`) into a fresh folder and
renders the model card there; `push_folder` uploads that folder, naming every file in `allow_patterns`, so nothing
else can be uploaded even if something lands in it. `publish` does both through a temporary folder.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from .card import render_model_card
from .files import CARD_NAME, copy_selected, select_checkpoint_files, select_model_files

logger = logging.getLogger(__name__)


def build_upload_folder(
    source: str | Path,
    destination: str | Path,
    repo_id: str | None = None,
    eval_dir: str | Path | None = None,
    install_command: str | None = None,
) -> Path:
    """Write into `destination` exactly what would be uploaded for the model in `source`: files and model card
    (`install_command`: the card's install line, see `render_model_card`)."""
    destination = copy_selected(select_model_files(source, eval_dir), destination)
    card = render_model_card(source, repo_id=repo_id, eval_dir=eval_dir, install_command=install_command)
    card.save(destination / CARD_NAME)
    return destination


def build_checkpoint_folder(checkpoint: str | Path, destination: str | Path) -> Path:
    """Write into `destination` the allow-listed files that let a Trainer checkpoint resume from the Hub."""
    return copy_selected(select_checkpoint_files(checkpoint), destination)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    path_in_repo: str | None = None,
    commit_message: str = "Upload Decision Mamba policy",
    run_as_future: bool = False,
    api: HfApi | None = None,
) -> Any:
    """Upload the files directly inside `folder` (built by `build_upload_folder`), each named in `allow_patterns`."""
    folder = Path(folder)
    names = sorted(path.name for path in folder.iterdir() if path.is_file())
    if not names:
        raise ValueError(
            f"folder={str(folder)!r} has no files; expected a folder built by build_upload_folder."
        )
    api = api or HfApi()
    repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    logger.info("Uploading %s to %s: %s", folder, repo_id, ", ".join(names))
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        path_in_repo=path_in_repo,
        allow_patterns=names,
        commit_message=commit_message,
        revision=revision,
        token=token,
        run_as_future=run_as_future,
    )


def _cleanup_when_done(result: Any, folder: str) -> Any:
    """Remove the temporary `folder` now, or once the background upload `result` finishes."""
    if isinstance(result, Future):
        result.add_done_callback(lambda _: shutil.rmtree(folder, ignore_errors=True))
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def publish(
    source: str | Path,
    repo_id: str,
    *,
    eval_dir: str | Path | None = None,
    checkpoint: bool = False,
    install_command: str | None = None,
    **push_kwargs: Any,
) -> Any:
    """Build the upload folder of `source` in a temporary folder and push it (`checkpoint=True`: resumable files)."""
    staging = tempfile.mkdtemp(prefix="dmamba-upload-")
    try:
        if checkpoint:
            build_checkpoint_folder(source, staging)
        else:
            build_upload_folder(
                source, staging, repo_id=repo_id, eval_dir=eval_dir, install_command=install_command
            )
        result = push_folder(staging, repo_id, **push_kwargs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _cleanup_when_done(result, staging)


__all__ = ["build_checkpoint_folder", "build_upload_folder", "publish", "push_folder"]
