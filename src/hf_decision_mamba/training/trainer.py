"""`DecisionTrainer`: the plain `transformers.Trainer` with safe persistence.

Training (loop, loss from the model's `labels`, sampler sharding, schedule, logging) is the Trainer's own. Only
two things change, both about what reaches the disk and the Hub:

- checkpoints are written into `<output_dir>/.staging/checkpoint-N` and renamed into place once complete (after
  every rank wrote its RNG state), so a kill never leaves a half-written `checkpoint-N` for a resume to pick;
- Hub pushes (`push_to_hub`, `hub_strategy`) upload an allow-listed folder with a rendered model card instead of
  the whole `output_dir` (which holds `training_args.bin`, a pickle that can carry the Hub token).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    HubStrategy,
    rotate_checkpoints,
    sort_checkpoints,
)
from transformers.utils import PushInProgress

from ..hub import publish
from .run_folder import RUN_RECORD_NAME

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
TRAINER_STATE_NAME = "trainer_state.json"
INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"  # written by transformers' SIGTERM (JIT) checkpointing


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a finished checkpoint: trainer state and weights present, no in-progress marker."""
    path = Path(path)
    return (
        (path / TRAINER_STATE_NAME).is_file()
        and any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
        and not (path / INCOMPLETE_MARKER).exists()
    )


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-step complete `checkpoint-N` in `output_dir`; incomplete ones are skipped with a warning."""
    if not Path(output_dir).is_dir():
        return None
    for candidate in reversed(sort_checkpoints(str(output_dir))):
        if is_complete_checkpoint(candidate):
            return candidate
        logger.warning("Skipping incomplete checkpoint %s.", candidate)
    return None


def default_file_mode() -> int:
    """The mode a new file gets under the current umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def give_default_modes(folder: Path) -> None:
    """Give the files directly in `folder` the umask's default mode: safetensors writes `model.safetensors`
    through a private temporary file (0600), unlike every other file of the folder."""
    mode = default_file_mode()
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished folder `source` to `target` with one rename, replacing an older `target`."""
    if target.exists():
        old = target.with_name(f".replaced-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


class DecisionTrainer(Trainer):
    """`transformers.Trainer` with atomic checkpoints and allow-listed Hub pushes (see the module docstring).

    `hub_api` replaces `huggingface_hub.HfApi()` for pushes (tests use a recording stand-in);
    `saved_checkpoints` lists the checkpoints this process moved into place (only the saving rank has any).
    """

    def __init__(self, *args: Any, hub_api: Any = None, **kwargs: Any) -> None:
        self.hub_api = hub_api
        self.saved_checkpoints: list[str] = []
        self._staging = False
        self._deferred_push = False
        super().__init__(*args, **kwargs)

    # -- atomic checkpoints ---------------------------------------------------------------------------------

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Let the Trainer write the checkpoint into the staging folder, then rename it into place."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING_DIR / name, run_dir / name
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)  # left over by a killed run
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        if self.args.should_save:
            self._publish_checkpoint(staged, final)
        self.accelerator.wait_for_everyone()
        if self._deferred_push:
            self._deferred_push = False
            self._push_from_checkpoint(str(final))

    def _publish_checkpoint(self, staged: Path, final: Path) -> None:
        """Point trainer state at the final path, rename the checkpoint into place, rotate old ones."""
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staged.parent:
            self.state.best_model_checkpoint = str(final.parent / Path(best).name)
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
        give_default_modes(staged)
        record = Path(self.args.output_dir) / RUN_RECORD_NAME
        if record.is_file():  # a resume from this checkpoint is checked against the run it belongs to
            shutil.copy2(record, staged / RUN_RECORD_NAME)
        replace_directory(staged, final)
        self.saved_checkpoints.append(str(final))
        rotate_checkpoints(
            output_dir=str(final.parent),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
        )

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`; a final save goes through a staging folder so that each file appears complete."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        self.save_final_model(output_dir)
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def save_final_model(self, output_dir: str | os.PathLike | None = None) -> None:
        """Save the model (all ranks call it) through a staging folder, without pushing."""
        target = Path(output_dir or self.args.output_dir)
        staged = target / STAGING_DIR / "final"
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
        super().save_model(str(staged), _internal_call=True)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            give_default_modes(staged)
            for path in sorted(staged.iterdir()):
                os.replace(path, target / path.name)
            shutil.rmtree(staged, ignore_errors=True)
            with contextlib.suppress(OSError):
                staged.parent.rmdir()  # `.staging` itself, once nothing is in flight
        self.accelerator.wait_for_everyone()

    # -- allow-listed Hub pushes ----------------------------------------------------------------------------

    def _push_kwargs(self, token: str | None = None, revision: str | None = None) -> dict[str, Any]:
        return {
            "token": token if token is not None else self.args.hub_token,
            "revision": revision if revision is not None else self.args.hub_revision,
            "api": self.hub_api,
        }

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Push the model (and, for `hub_strategy` checkpoint/all_checkpoints, the resumable checkpoint)."""
        if self._staging:  # called from inside the Trainer's save, before the rename: push the final folder
            self._deferred_push = True
            return
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if (
            not self.args.hub_always_push
            and self.push_in_progress is not None
            and not self.push_in_progress.is_done()
        ):
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        message = f"Training in progress, step {self.state.global_step}"
        kwargs = {**self._push_kwargs(), "run_as_future": True}
        jobs = [publish(checkpoint_folder, self.hub_model_id, commit_message=message, **kwargs)]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            last = self.args.hub_strategy == HubStrategy.CHECKPOINT
            path_in_repo = "last-checkpoint" if last else Path(checkpoint_folder).name
            jobs.append(
                publish(
                    checkpoint_folder,
                    self.hub_model_id,
                    checkpoint=True,
                    path_in_repo=path_in_repo,
                    commit_message=f"{message}, checkpoint",
                    **kwargs,
                )
            )
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        eval_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save, then upload the allow-listed model folder with its rendered card (main process only)."""
        kwargs.pop("model_name", None)
        if self.hub_model_id is None:
            self.init_hf_repo(token=self._push_kwargs(token)["token"], private=private)
        self.save_final_model()
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        return publish(
            self.args.output_dir,
            self.hub_model_id,
            eval_dir=eval_dir,
            commit_message=commit_message or "End of training",
            run_as_future=not blocking,
            **self._push_kwargs(token, revision),
        )


__all__ = [
    "DecisionTrainer",
    "INCOMPLETE_MARKER",
    "STAGING_DIR",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "replace_directory",
]
