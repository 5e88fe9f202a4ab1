"""Compare variants of the learning benchmark: one table and one figure from several `benchmark_learning.py` runs.

Each `--variant` names a label, a results folder written by `scripts/benchmark_learning.py` (its `learning.json`)
and the model in it, e.g. the same preset trained with and without an ablation in two folders:

    python scripts/plot_learning_variants.py --quality medium-replay --output benchmarks/learning_variants.png \\
        --variant "DT, K=20=runs/k20:dt" --variant "DM, K=20=runs/k20:dmamba-mujoco" \\
        --variant "DM, K=20, no timestep embedding=runs/k20_notime:dmamba-mujoco"

Prints a Markdown table of the final return (mean over seeds) per task and length and the mean over tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

# scripts/ is no package: this script shares benchmark_learning's tasks and curve drawing.
sys.path.insert(0, str(Path(__file__).parent))
import benchmark_learning as BENCH  # noqa: E402

TASKS = BENCH.TASKS


def parse_variant(text: str) -> tuple[str, Path, str]:
    """`"label=folder:model"` -> (label, folder, model); the label may hold '=' but not the folder."""
    label, _, rest = text.rpartition("=")
    folder, _, model = rest.rpartition(":")
    if not label or not folder or not model:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected LABEL=FOLDER:MODEL")
    return label, Path(folder), model


def variant_rows(folder: Path, model: str, quality: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(task, length) -> the benchmark row of `model` on `quality` in `folder`'s learning.json."""
    rows = json.loads((folder / "learning.json").read_text())["rows"]
    return {(r["task"], r["length"]): r for r in rows if r["model"] == model and r["quality"] == quality}


def table(variants: list[tuple[str, dict]], lengths: list[int]) -> str:
    """Markdown: a row per variant, the final return per task and length, and the mean over tasks per length."""
    header = ["variant", "seeds", *(f"{t} {n}" for t in TASKS for n in lengths)]
    header.append(f"mean over tasks at {' / '.join(map(str, lengths))}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, rows in variants:
        cells = [
            f"{rows[(t, n)]['final_mean']:.0f}" if (t, n) in rows else "-" for t in TASKS for n in lengths
        ]
        means = [
            f"{np.mean([rows[(t, n)]['final_mean'] for t in TASKS]):.0f}"
            if all((t, n) in rows for t in TASKS)
            else "-"
            for n in lengths
        ]
        seeds = "/".join(str(s) for s in sorted({r["seeds"] for r in rows.values()}))
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " | " + " / ".join(means) + " |")
    return "\n".join(lines)


def figure(variants: list[tuple[str, dict]], lengths: list[int], quality: str, path: Path) -> None:
    """Final return (mean and 95% CI over seeds) against training steps, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.4 * len(TASKS), 3.6))
    for label, rows in variants:
        for axis, task in zip(axes, TASKS, strict=True):
            points = sorted((n, r["final_mean"], r["final_ci95"]) for (t, n), r in rows.items() if t == task)
            if points:
                style = {"linestyle": "--"} if label.startswith("DT") else {}
                BENCH.draw_curve(axis, points, label, alpha=0.08, **style)
    for axis, task in zip(axes, TASKS, strict=True):
        BENCH.steps_axis(axis, f"{task} {quality}", lengths)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * (1 + (len(labels) - 1) // 3), 1, 1))
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant", type=parse_variant, action="append", required=True, help="LABEL=FOLDER:MODEL"
    )
    parser.add_argument("--quality", default="medium-replay", help="dataset quality to compare")
    parser.add_argument("--output", type=Path, help="figure to write (PNG)")
    args = parser.parse_args(argv)
    variants = [(label, variant_rows(folder, model, args.quality)) for label, folder, model in args.variant]
    lengths = sorted({n for _, rows in variants for _, n in rows})
    print(table(variants, lengths))
    if args.output:
        figure(variants, lengths, args.quality, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
