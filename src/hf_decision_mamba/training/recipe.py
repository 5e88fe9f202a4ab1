"""The training recipe behind `dmamba train`: seed, build, train with the Trainer, evaluate, save and publish.

`run_training(args)` = `prepare_run` (seeded config, model and window datasets) + `build_trainer` (optimizer
groups, environment-evaluation callback, atomic checkpoints) + `train_and_finish` (resume, SIGTERM handling,
final save, evaluation JSON, replay video, training-curves PNG, model card, push). The final model is evaluated
once: the callback's evaluation at train end is the one written to `eval_results.json`. The pieces are public so that scripts can change
one of them (the multi-process test wraps the training dataset to record what each rank saw).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_model
from transformers import PreTrainedModel, TrainerState, TrainingArguments, enable_full_determinism, set_seed

from ..envs import resolve_env_id
from ..evaluation import EnvironmentEvaluationCallback, evaluate_policy
from ..hub import (
    CARD_NAME,
    EVAL_RESULTS_NAME,
    REPLAY_NAME,
    TRAINING_ARGS_NAME,
    TRAINING_CURVES_NAME,
    TRAINING_EVAL_REPORT_NAME,
    WEIGHTS_NAME,
    render_model_card,
)
from ..loading import check_local_weights
from ..modeling_decision_mamba import DecisionMambaModel
from ..presets import get_preset
from .arguments import RecipeArguments
from .curves import plot_training_curves
from .data import TrainingData, build_training_data, data_space_fields, infer_environment, load_episodes
from .models import build_config, build_model, build_optimizer
from .run_folder import check_checkpoint, check_run_folder, run_record, write_json, write_record
from .trainer import TRAINER_STATE_NAME, DecisionTrainer, is_complete_checkpoint, last_complete_checkpoint

logger = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


@dataclass
class Run:
    """What one training run is made of, before the Trainer exists."""

    args: RecipeArguments
    model: PreTrainedModel
    data: TrainingData
    env_id: str | None
    record: dict[str, Any] | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.args.training.output_dir)


@dataclass
class TrainingResult:
    """Outcome of `run_training`: steps done, whether a SIGTERM cut it short, data and evaluation summaries."""

    output_dir: str
    global_step: int
    max_steps: int
    interrupted: bool
    resumed_from: str | None
    dataset: dict[str, Any]
    main_process: bool = True
    checkpoint: str | None = None
    evaluation: dict[str, Any] | None = None
    training_eval: dict[str, Any] | None = None
    training_curves: str | None = None


def seed_everything(seed: int, full_determinism: bool = False) -> None:
    """Seed Python, NumPy and torch (and make kernels deterministic with `--full_determinism`)."""
    (enable_full_determinism if full_determinism else set_seed)(seed)


def choose_environment(args: RecipeArguments) -> tuple[str | None, dict[str, Any], str]:
    """`--env_id`, else the dataset's environment (Minari metadata, D4RL names), else the preset's (only when
    evaluating), as the Gymnasium id evaluation runs, with its `gym.make` kwargs when the dataset names them.

    The data decides before the preset: an Atari preset (Breakout by default) trained on `jat:pong` plays Pong.
    """
    preset_env = get_preset(args.model.preset)["config"].get("env_id")
    data_env, data_kwargs = infer_environment(args.data)
    env_id = args.evaluation.env_id or data_env or preset_env
    if env_id is None and args.evaluation.env_eval:
        raise ValueError(
            f"env_id: none given and none inferred from dataset={args.data.dataset!r}; expected --env_id "
            "(e.g. Hopper-v5) or --no_env_eval."
        )
    origin = (
        "--env_id"
        if args.evaluation.env_id
        else "the dataset's"
        if data_env
        else f"{args.model.preset}'s default"
    )
    if env_id is None:
        return None, {}, origin
    resolved = resolve_env_id(env_id)
    same = data_env is not None and resolve_env_id(data_env) == resolved
    return resolved, data_kwargs if same else {}, origin


def choose_env_id(args: RecipeArguments) -> str | None:
    """The environment id of `choose_environment`."""
    return choose_environment(args)[0]


def _default_target(config: Any, args: RecipeArguments, data: TrainingData) -> None:
    """Condition on `--target_return`, else the config's target, else the best return in the dataset."""
    targets = args.evaluation.target_return
    if targets:
        config.target_return = float(targets[0])
    elif getattr(config, "target_return", None) is None:
        config.target_return = float(data.episode_returns.max())


def check_run(args: RecipeArguments, config: Any) -> dict[str, Any]:
    """The run's record, after checking that the output folder (and a given checkpoint) hold the same run;
    with `--overwrite_output_dir` the main process first removes the earlier run (see `run_folder`)."""
    training = args.training
    record = run_record(args.data, config)
    resume = training.resume_from_checkpoint
    overwrite = getattr(training, "overwrite_output_dir", False)
    if overwrite and (resume or "auto").strip().lower() not in ("auto", "false", "none", "no"):
        raise ValueError(
            f"overwrite_output_dir=True removes the run in {training.output_dir} but resume_from_checkpoint="
            f"{resume!r} asks to continue one; expected one of the two."
        )
    with training.main_process_first(desc="checking the output folder"):
        check_run_folder(training.output_dir, record, overwrite and training.process_index == 0)
    if resume and Path(resume).is_dir():
        check_checkpoint(resume, record)
    return record


def prepare_run(args: RecipeArguments) -> Run:
    """Seed, load the episodes, then build the config (sized to the data and the environment, which must
    agree), the model and the window datasets."""
    seed_everything(args.training.seed, args.training.full_determinism)
    env_id, env_kwargs, origin = choose_environment(args)
    episodes = load_episodes(args.data)
    fields = data_space_fields(args.data, episodes)
    configure = functools.partial(
        build_config,
        args.model,
        env_options=args.evaluation.env_options(),
        data_fields=fields,
        env_kwargs=env_kwargs,
        dataset=args.data.dataset,
        env_origin=origin,
    )
    try:
        config = configure(env_id)
    except ValueError as error:
        if args.evaluation.env_eval or args.evaluation.env_id or origin == "the dataset's":
            raise
        logger.info("Not using %s (%s): %s", env_id, origin, error)  # --no_env_eval: the data decides
        env_id, config = None, configure(None)
    record = check_run(args, config)
    model = build_model(config, args.model)
    data = build_training_data(
        args.data, model.config, args.training.seed, args.training.eval_strategy != "no", episodes
    )
    _default_target(model.config, args, data)
    return Run(args, model, data, env_id, record)


def build_env_callback(run: Run) -> EnvironmentEvaluationCallback | None:
    """The environment-evaluation callback of `--env_eval*` (None with `--no_env_eval`).

    Its evaluation at train end is the final one (with the replay); the CLI prints the final table, so the
    callback does not print its own."""
    evaluation = run.args.evaluation
    if not evaluation.env_eval:
        return None
    video = run.output_dir / REPLAY_NAME if evaluation.record_replay else None
    return EnvironmentEvaluationCallback(
        eval_every=evaluation.env_eval_steps,
        final_video=video,
        print_summary=False,
        **evaluation_settings(run),
    )


def evaluation_settings(run: Run) -> dict[str, Any]:
    """The `evaluate_policy` settings shared by the in-training evaluations and the final one (same seeds)."""
    evaluation = run.args.evaluation
    return {
        "env_id": run.env_id,
        "num_episodes": evaluation.env_eval_episodes,
        "seed": evaluation.env_eval_seed,
        "target_return": evaluation.target_return,
        "mode": evaluation.env_eval_mode,
        "max_episode_steps": evaluation.env_eval_max_episode_steps,
        **evaluation.env_options(),
    }


def adapt_to_processes(training: TrainingArguments, model: PreTrainedModel) -> None:
    """Multi-process settings: DDP looks for unused parameters only for DT (its state and return heads), and
    SIGTERM checkpoints are off because each rank's timer can fire at a different step of a collective save."""
    if training.ddp_find_unused_parameters is None:
        training.ddp_find_unused_parameters = not isinstance(model, DecisionMambaModel)
    if training.enable_jit_checkpoint and training.world_size > 1:
        if training.process_index == 0:
            logger.info(
                "Training on %d processes: a SIGTERM stops the run without saving a checkpoint first; it resumes "
                "from the last checkpoint saved every %s steps.",
                training.world_size,
                training.save_steps,
            )
        training.enable_jit_checkpoint = False


def build_trainer(
    run: Run, hub_api: Any = None
) -> tuple[DecisionTrainer, EnvironmentEvaluationCallback | None]:
    """A `DecisionTrainer` with the no-decay optimizer groups and the environment evaluation attached."""
    training = run.args.training
    adapt_to_processes(training, run.model)
    trainer = DecisionTrainer(
        model=run.model,
        args=training,
        train_dataset=run.data.train,
        eval_dataset=run.data.validation,
        data_collator=run.data.collator,
        optimizers=(build_optimizer(run.model, training), None),
        hub_api=hub_api,
    )
    callback = build_env_callback(run)
    if callback is not None:
        callback.attach(trainer)
    return trainer, callback


def resolve_resume(value: str | None, output_dir: str | Path) -> str | None:
    """`--resume_from_checkpoint`: unset/"auto" resumes from the last complete checkpoint in `output_dir` if any,
    "true"/"last" requires one, "false"/"none" starts fresh, anything else is a checkpoint path."""
    choice = (value or "auto").strip()
    if choice.lower() in ("false", "none", "no"):
        return None
    if choice.lower() in ("auto", "true", "last"):
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None and choice.lower() != "auto":
            raise ValueError(f"resume_from_checkpoint={value!r}: no complete checkpoint in {output_dir}.")
        return checkpoint
    if not is_complete_checkpoint(choice):
        raise ValueError(f"resume_from_checkpoint={value!r}: expected a complete Trainer checkpoint folder.")
    return choice


def finished_training(checkpoint: str | Path, max_steps: int) -> bool:
    """Whether `checkpoint` already reached the end of training (`max_steps`, or the run's own when unset)."""
    state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    return state.global_step >= (max_steps if max_steps > 0 else state.max_steps)


def restore_finished(trainer: DecisionTrainer, checkpoint: str | Path) -> None:
    """Load the weights and state of a finished run's last checkpoint instead of training.

    `Trainer.train` would run one more step when resumed at the last step.
    """
    load_model(trainer.model, str(Path(checkpoint) / WEIGHTS_NAME))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    logger.warning("%s already finished training at step %d.", checkpoint, trainer.state.global_step)


class TerminationGuard:
    """Notes a SIGTERM, then hands it to the handler it replaced (transformers' JIT checkpointing, or death).

    On exit it restores `restore` (the handler from before the Trainer installed its own).
    """

    def __init__(self, restore: Any) -> None:
        self.restore = restore
        self.terminated = False

    def __enter__(self) -> TerminationGuard:
        self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.terminated = True
        logger.warning("SIGTERM: saving a checkpoint, then stopping (run the same command again to resume).")
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self.restore)


def final_evaluation(
    run: Run,
    model: PreTrainedModel,
    callback: EnvironmentEvaluationCallback | None = None,
    state: TrainerState | None = None,
) -> dict[str, Any]:
    """The final model's evaluation (same seeds as during training), written to `eval_results.json` (with
    `replay.mp4`).

    With the `callback` and the trainer's `state`, its evaluation of the model at `state.global_step` (made at
    train end, replay included) is reused, so the final model is evaluated once; a run restored without
    training has none, so the callback evaluates it now.
    """
    evaluation = run.args.evaluation
    video = run.output_dir / REPLAY_NAME if evaluation.record_replay else None
    if callback is None or state is None:
        report = evaluate_policy(model, record_video=video, **evaluation_settings(run))
    else:
        if callback.final(state) is None:
            callback.evaluate(state, model, record_video=video)
            callback.envs.close()
            callback.write_report(run.output_dir / TRAINING_EVAL_REPORT_NAME)
        report = callback.final(state)["report"]
    report = {"model": str(run.output_dir), **report}
    write_json(run.output_dir / EVAL_RESULTS_NAME, report)
    return report


def write_training_curves(
    run: Run, trainer: DecisionTrainer, callback: EnvironmentEvaluationCallback | None
) -> Path:
    """`training_curves.png` in the run folder: the logged loss and every environment evaluation's return."""
    title = f"{run.args.model.preset} ({run.args.model.model_type}) on {run.args.data.dataset}"
    evaluations = callback.history if callback is not None else []
    return plot_training_curves(
        trainer.state.log_history, evaluations, run.output_dir / TRAINING_CURVES_NAME, title
    )


def _finish(
    run: Run, trainer: DecisionTrainer, callback: EnvironmentEvaluationCallback | None
) -> tuple[dict | None, Path | None]:
    """Save the final model and state; on the main process take its evaluation, draw the training curves and
    render the model card. Returns the evaluation and the curves' path."""
    trainer.save_final_model()
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return None, None
    report = final_evaluation(run, trainer.model, callback, trainer.state) if callback is not None else None
    curves = write_training_curves(run, trainer, callback)
    render_model_card(run.output_dir).save(run.output_dir / CARD_NAME)
    return report, curves


def _train(trainer: DecisionTrainer, resume: str | None, max_steps: int) -> bool:
    """Train from scratch or from `resume` (or just restore a finished run); True when a SIGTERM stopped it."""
    if resume:
        logger.warning("Resuming from %s.", resume)
    with TerminationGuard(restore=signal.SIG_DFL) as guard:
        if resume and finished_training(resume, max_steps):
            restore_finished(trainer, resume)
        else:
            trainer.train(resume_from_checkpoint=resume)
    return guard.terminated


def train_and_finish(
    run: Run, trainer: DecisionTrainer, callback: EnvironmentEvaluationCallback | None
) -> TrainingResult:
    """Train (resuming when a checkpoint exists), then save, evaluate, write the card and push if asked."""
    training = run.args.training
    resume = resolve_resume(training.resume_from_checkpoint, run.output_dir)
    if resume:
        check_local_weights(resume)  # a damaged file fails here, in one line, not inside the Trainer's resume
    if trainer.is_world_process_zero() and run.record is not None:
        write_record(run.output_dir, run.record)
    terminated = _train(trainer, resume, training.max_steps)
    if trainer.is_world_process_zero():  # only a run that trained (or stopped resumably) replaces the record
        write_json(
            run.output_dir / TRAINING_ARGS_NAME, {**run.args.to_dict(), "dataset_summary": run.data.summary()}
        )
    result = TrainingResult(
        output_dir=str(run.output_dir),
        global_step=trainer.state.global_step,
        max_steps=trainer.state.max_steps,
        interrupted=terminated,
        resumed_from=resume,
        dataset=run.data.summary(),
        main_process=trainer.is_world_process_zero(),
    )
    if terminated:
        result.checkpoint = last_complete_checkpoint(run.output_dir)
        return result
    result.evaluation, curves = _finish(run, trainer, callback)
    result.training_curves = None if curves is None else str(curves)
    result.training_eval = callback.report() if callback is not None and callback.history else None
    if training.push_to_hub:
        trainer.push_to_hub()
    return result


def run_training(args: RecipeArguments, hub_api: Any = None) -> TrainingResult:
    """The whole recipe; see the module docstring."""
    run = prepare_run(args)
    trainer, callback = build_trainer(run, hub_api)
    return train_and_finish(run, trainer, callback)


__all__ = [
    "SIGTERM_EXIT_CODE",
    "Run",
    "TerminationGuard",
    "TrainingResult",
    "build_env_callback",
    "build_trainer",
    "final_evaluation",
    "write_training_curves",
    "choose_env_id",
    "choose_environment",
    "prepare_run",
    "resolve_resume",
    "run_training",
    "seed_everything",
    "train_and_finish",
]
