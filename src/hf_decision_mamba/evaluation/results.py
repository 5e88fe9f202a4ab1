"""Turning `evaluate_policy` reports into flat metrics (for loggers) and plain-text tables (for people)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EVAL_RESULTS_NAME = "eval_results.json"
"""The JSON report `dmamba evaluate` and `dmamba train` write next to the model."""
REPLAY_NAME = "replay.mp4"
"""The H.264 replay of the first evaluation episode."""

SUMMARY_KEYS = (
    "return_mean",
    "return_std",
    "normalized_score_mean",
    "normalized_score_std",
    "episode_length_mean",
)


def _target_label(target: float | None) -> str:
    """`3600`, `2.5` or `default` (the policy's own target)."""
    return "default" if target is None else f"{target:g}"


def flat_metrics(report: dict[str, Any], prefix: str = "env_eval") -> dict[str, float]:
    """`{prefix}/return_mean`, ... per target (`{prefix}/target_3600/return_mean` when several); Nones dropped."""
    results = report["results"]
    metrics = {}
    for result in results:
        scope = prefix if len(results) == 1 else f"{prefix}/target_{_target_label(result['target_return'])}"
        metrics.update(
            {f"{scope}/{key}": float(result[key]) for key in SUMMARY_KEYS if result[key] is not None}
        )
        metrics[f"{scope}/wall_time_s"] = float(result["wall_time_s"])
    return metrics


def headline(result: dict[str, Any]) -> float:
    """The number evaluations are ranked by: normalised score mean when known, else return mean."""
    score = result.get("normalized_score_mean")
    return float(result["return_mean"] if score is None else score)


def _fmt(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}"


def format_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text table with one `(label, result)` row each: target, return, normalised score, length."""
    header = (
        "",
        "target return",
        "return (mean ± std)",
        "normalized score",
        "episode length",
        "episodes",
        "time (s)",
    )
    lines = [header]
    for label, result in rows:
        lines.append(
            (
                label,
                _target_label(result["target_return"]),
                _fmt(result["return_mean"], result["return_std"]),
                _fmt(result["normalized_score_mean"], result["normalized_score_std"]),
                f"{result['episode_length_mean']:.0f}",
                str(len(result["returns"])),
                f"{result['wall_time_s']:.1f}",
            )
        )
    if not any(label for label, _ in rows):
        lines = [row[1:] for row in lines]
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(text)


def format_report(report: dict[str, Any]) -> str:
    """Title line (env, episodes, seeds, mode) and one table row per target of an `evaluate_policy` report."""
    seeds = report["seeds"]
    title = (
        f"{report['env_id']}: {report['num_episodes']} episodes (seeds {seeds[0]}..{seeds[-1]}), "
        f"mode={report['mode']}, deterministic={report['deterministic']}"
    )
    reference = f"\nnormalized score: {report['score_reference']}" if report.get("score_reference") else ""
    return f"{title}{reference}\n" + format_table([("", result) for result in report["results"]])
