"""A `transformers.Trainer` callback that evaluates the policy in its environment during training."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .results import flat_metrics, format_table, headline
from .rollout import POLICY_MODES, VectorEnvPool, evaluate_policy

logger = logging.getLogger(__name__)

REPORT_NAME = "env_eval_report.json"


def _check_eval_every(eval_every: Any) -> None:
    """`eval_every` is None (follow `TrainingArguments`), `"epoch"`, 0 (only at the end) or a number of steps."""
    if eval_every is None or eval_every == "epoch":
        return
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise ValueError(
            f"eval_every={eval_every!r} is invalid; expected None, 'epoch', 0 (only at the end) or an integer >= 1"
        )


class EnvironmentEvaluationCallback(TrainerCallback):
    """Run `evaluate_policy` every `eval_every` steps (default: the Trainer's eval schedule; 0: never during
    training) and once at train end.

    Runs on the main process only, with the same seeds every time, in vector envs built at the first
    evaluation and kept until train end. Give it the trainer (`trainer=` or `attach(trainer)`) so its
    metrics go through `trainer.log`, i.e. to every logger and to `state.log_history`; metrics added in
    `on_evaluate` would not be logged. The final model is evaluated exactly once: a scheduled evaluation that
    falls on the last step is left to train end, which also records `final_video` (the replay of its first
    episode) when given. At train end it writes a JSON report and, with `print_summary`, prints the LAST
    evaluation (the final model) and, labelled separately, the BEST one.
    """

    def __init__(
        self,
        env_id: str | None = None,
        num_episodes: int = 10,
        target_return: float | list[float] | None = None,
        mode: str = "window",
        eval_every: int | str | None = None,
        seed: int = 0,
        trainer: Any = None,
        report_path: str | os.PathLike | None = None,
        metric_prefix: str = "env_eval",
        final_video: str | os.PathLike | None = None,
        print_summary: bool = True,
        **evaluate_kwargs: Any,
    ) -> None:
        _check_eval_every(eval_every)
        if mode not in POLICY_MODES:
            raise ValueError(f"mode={mode!r} is invalid; expected one of {list(POLICY_MODES)}")
        self.evaluate_kwargs = {"env_id": env_id, "num_episodes": num_episodes, "seed": seed,
                                "target_return": target_return, "mode": mode, "progress": False,
                                **evaluate_kwargs}  # fmt: skip
        self.eval_every = eval_every
        self.trainer = trainer
        self.report_path = report_path
        self.metric_prefix = metric_prefix
        self.final_video = final_video
        self.print_summary = print_summary
        self.history: list[dict[str, Any]] = []
        self._warned_unattached = False
        self.envs = VectorEnvPool()  # kept between evaluations, closed at train end

    def attach(self, trainer: Any) -> EnvironmentEvaluationCallback:
        """Register with `trainer` and log through it; returns self."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    # -- schedule ---------------------------------------------------------------------------------------

    def _step_interval(self, args: TrainingArguments, state: TrainerState) -> int | None:
        """Steps between evaluations, or None when evaluating per epoch or only at the end."""
        if isinstance(self.eval_every, int):
            return self.eval_every or None
        if self.eval_every is not None or args.eval_strategy != "steps":
            return None
        steps = args.eval_steps or args.logging_steps
        return max(1, math.ceil(state.max_steps * steps)) if steps < 1 else int(steps)

    def _per_epoch(self, args: TrainingArguments) -> bool:
        return self.eval_every == "epoch" or (self.eval_every is None and args.eval_strategy == "epoch")

    @staticmethod
    def _at_last_step(state: TrainerState) -> bool:
        """Whether training stops after this step: its evaluation is the final one, done at train end."""
        return bool(state.max_steps) and state.global_step >= state.max_steps

    def on_step_end(self, args, state, control, model=None, **kwargs) -> TrainerControl:
        interval = self._step_interval(args, state)
        if interval and state.global_step % interval == 0 and not self._at_last_step(state):
            self.evaluate(state, model)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> TrainerControl:
        if self._per_epoch(args) and not self._at_last_step(state):
            self.evaluate(state, model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs) -> TrainerControl:
        if self.final(state) is None:
            self.evaluate(state, model, record_video=self.final_video)
        if state.is_world_process_zero and self.history:
            path = self.report_path or os.path.join(args.output_dir, REPORT_NAME)
            self.write_report(path)
            if self.print_summary:
                print(self.summary_table())
        self.envs.close()
        return control

    def final(self, state: TrainerState) -> dict[str, Any] | None:
        """The evaluation of the model at `state.global_step` (the final model at train end), if done."""
        last = self.last
        return last if last is not None and last["step"] == state.global_step else None

    # -- evaluation and logging ----------------------------------------------------------------------------

    def evaluate(
        self, state: TrainerState, model: Any, record_video: str | os.PathLike | None = None
    ) -> dict[str, float] | None:
        """Evaluate `model` now (main process only), record it and log its metrics; returns the metrics.

        `record_video`: also write the replay of the first episode there."""
        if not state.is_world_process_zero:
            return None
        kwargs = {"envs": self.envs, **self.evaluate_kwargs, "record_video": record_video}
        report = evaluate_policy(model, **kwargs)
        metrics = flat_metrics(report, self.metric_prefix)
        self.history.append(
            {"step": state.global_step, "epoch": state.epoch, "metrics": metrics, "report": report}
        )
        self._log(state, metrics)
        return metrics

    def _log(self, state: TrainerState, metrics: dict[str, float]) -> None:
        """Through `trainer.log` when attached; else straight into `log_history` (loggers then miss it)."""
        if self.trainer is not None:
            self.trainer.log(dict(metrics))
            return
        if not self._warned_unattached:
            logger.warning("EnvironmentEvaluationCallback has no trainer: pass trainer= or call attach(trainer) "
                           "so that its metrics reach the loggers; writing them to state.log_history only.")  # fmt: skip
            self._warned_unattached = True
        state.log_history.append({**metrics, "epoch": state.epoch, "step": state.global_step})

    # -- report ---------------------------------------------------------------------------------------

    @property
    def last(self) -> dict[str, Any] | None:
        """The last evaluation (of the final model): the number to report."""
        return self.history[-1] if self.history else None

    @property
    def best(self) -> dict[str, Any] | None:
        """The best evaluation during training (optimistic: what the papers reported as their score)."""
        return max(self.history, key=lambda record: headline(record["report"]["results"][0]), default=None)

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: the last and the best evaluation, each labelled, and the metrics of every one."""
        last, best = self.last, self.best
        return {
            "env_id": last["report"]["env_id"],
            "ranked_by": "normalized_score_mean (return_mean when unknown) of the first target return",
            "last": {"label": "last evaluation (final model)", **last},
            "best": {
                "label": f"best of {len(self.history)} evaluations during training (optimistic)",
                **best,
            },
            "history": [
                {key: record[key] for key in ("step", "epoch", "metrics")} for record in self.history
            ],
        }

    def write_report(self, path: str | os.PathLike) -> None:
        """Write `report()` to `path` as JSON."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(self.report(), handle, indent=2)

    def summary_table(self) -> str:
        """The LAST and the BEST evaluation, per target, in a labelled plain-text table."""
        last, best = self.last, self.best
        rows = [(f"LAST (step {last['step']}, final model)", result) for result in last["report"]["results"]]
        best_label = f"BEST (step {best['step']}, max of {len(self.history)} evals)"
        rows += [(best_label, result) for result in best["report"]["results"]]
        return f"Environment evaluation of {last['report']['env_id']}\n{format_table(rows)}"
