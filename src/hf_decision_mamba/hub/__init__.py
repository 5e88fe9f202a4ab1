"""Publishing trained policies: the exact upload folder, its model card, and allow-listed pushes to the Hub."""

from .card import TEMPLATE_PATH, CardInputs, card_data, eval_results, hub_dataset_id, render_model_card
from .files import (
    CARD_NAME,
    EVAL_RESULTS_NAME,
    REPLAY_NAME,
    TRAINING_ARGS_NAME,
    TRAINING_CURVES_NAME,
    TRAINING_EVAL_REPORT_NAME,
    WEIGHTS_NAME,
    remote_code_files,
    select_checkpoint_files,
    select_model_files,
)
from .upload import build_checkpoint_folder, build_upload_folder, publish, push_folder

__all__ = [
    "CARD_NAME",
    "EVAL_RESULTS_NAME",
    "REPLAY_NAME",
    "TEMPLATE_PATH",
    "TRAINING_ARGS_NAME",
    "TRAINING_CURVES_NAME",
    "TRAINING_EVAL_REPORT_NAME",
    "WEIGHTS_NAME",
    "CardInputs",
    "build_checkpoint_folder",
    "build_upload_folder",
    "card_data",
    "eval_results",
    "hub_dataset_id",
    "publish",
    "push_folder",
    "remote_code_files",
    "render_model_card",
    "select_checkpoint_files",
    "select_model_files",
]
