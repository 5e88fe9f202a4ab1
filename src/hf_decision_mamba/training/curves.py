"""The picture of a training run: `training_curves.png`, the loss per logged step and the environment return of
each evaluation next to the return it was conditioned on.

Drawn with matplotlib's object API (no pyplot, no display needed) from the Trainer's `log_history` and the
environment-evaluation callback's history; TensorBoard logs are written as before, this is the at-a-glance view
the model card embeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..hub.files import TRAINING_CURVES_NAME

LOSS_KEYS = (("loss", "training loss"), ("eval_loss", "validation loss"))


def loss_series(log_history: Sequence[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Label -> (steps, values) of the training (and validation) loss logged in `log_history`."""
    series = {}
    for key, label in LOSS_KEYS:
        points = [
            (entry["step"], float(entry[key])) for entry in log_history if key in entry and "step" in entry
        ]
        if points:
            series[label] = ([step for step, _ in points], [value for _, value in points])
    return series


def return_series(evaluations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target return: the steps, mean and std of the evaluated return (from the callback's `history`)."""
    by_target: dict[Any, dict[str, Any]] = {}
    for record in evaluations:
        for result in record["report"]["results"]:
            series = by_target.setdefault(
                result["target_return"],
                {"target": result["target_return"], "steps": [], "mean": [], "std": []},
            )
            series["steps"].append(record["step"])
            series["mean"].append(float(result["return_mean"]))
            series["std"].append(float(result["return_std"]))
    return list(by_target.values())


def plot_training_curves(
    log_history: Sequence[dict[str, Any]],
    evaluations: Sequence[dict[str, Any]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Write the loss (left) and, when the run was evaluated, the environment return of every evaluation with
    its target as a dashed line (right) to the PNG `path`; returns `path`."""
    from matplotlib.figure import Figure

    returns = return_series(evaluations)
    figure = Figure(figsize=(11.0 if returns else 6.0, 3.8), layout="constrained")
    axes = figure.subplots(1, 2 if returns else 1, squeeze=False)[0]
    losses = loss_series(log_history)
    for label, (steps, values) in losses.items():
        axes[0].plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
    if not losses:
        axes[0].text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set(xlabel="training step", ylabel="loss", title="Loss")
    if losses:
        axes[0].legend()
    if returns:
        _plot_returns(axes[1], returns)
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _plot_returns(axis: Any, returns: list[dict[str, Any]]) -> None:
    """Mean ± std return per evaluation step, one colour per target, the target itself dashed."""
    for index, series in enumerate(returns):
        colour = f"C{index}"
        target = series["target"]
        label = "return" if target is None else f"return (target {target:g})"
        axis.errorbar(series["steps"], series["mean"], yerr=series["std"], color=colour, marker="o", capsize=3,
                      label=label)  # fmt: skip
        if target is not None:
            axis.axhline(target, color=colour, linestyle="--", linewidth=1, label=f"target {target:g}")
    axis.set(xlabel="training step", ylabel="episode return (mean ± std)", title="Environment evaluation")
    axis.legend()


__all__ = ["TRAINING_CURVES_NAME", "loss_series", "plot_training_curves", "return_series"]
