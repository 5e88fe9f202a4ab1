"""Learning benchmark: Decision Mamba presets against the Decision Transformer, trained identically.

The protocol is fixed here, before any result is looked at:
- Data: datasets the script generates itself with `dmamba collect`'s scripted behaviour (the package's saved
  linear controllers, seeded), three qualities per task in the spirit of D4RL: `medium` (one noise level),
  `medium-replay` (the README's mix of noise and epsilon-random levels, mostly poor episodes) and
  `medium-expert` (noiseless episodes mixed with medium ones). Walker2d's controller is fragile, so its noise
  levels are a tenth of the others'. The seeds and sizes below make every dataset reproducible.
- Training: every model with the same settings (`--size cpu`: hidden 64, 2 layers, the preset's K (20), batch 64,
  AdamW lr 1e-3, weight decay 1e-4, clip 0.25, 50 warmup steps then a constant rate, dropout 0.1) for each seed in
  `--seeds`; `--all-config-overrides context_length=8` gives every model the quick start's shorter context.
- Lengths: with the constant schedule the model at step L of a run is exactly the final model of an L-step run,
  so one run per seed is evaluated at every length of `--lengths` (and every `--eval-every` steps in between for
  the best-during-training number). `--schedule cosine` trains one run per length instead.
- Evaluation: 10 episodes with seeds 0..9 in window mode, conditioned on the dataset's best return (the
  recipe's default for presets without a target of their own).
- Report: per task, model and length the FINAL model's mean return over seeds with a 95% t-interval, the
  D4RL-normalised score, and the BEST evaluation during training beside it (labelled: it is optimistic).

    python scripts/benchmark_learning.py                       # CPU size: every MuJoCo preset and the DT
    python scripts/benchmark_learning.py --models dmamba-mujoco dt --qualities medium-replay --jobs 2
    python scripts/benchmark_learning.py --size paper --source d4rl   # GPU: D4RL from the Hub, 100k steps
    python scripts/benchmark_learning.py --render              # redraw the table and plot from saved results

Results go to `--output` (runs, data, `learning.json`, `learning.png`) and, with `--update-benchmarks`, into the
"Learning" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("Hopper", "HalfCheetah", "Walker2d")
DM_PRESETS = ("dmamba-mujoco", "dema-mujoco", "dema-mujoco-bl3d", "mambadm-mujoco", "hf-mamba-dt")
DT = "dt"
QUALITIES: dict[str, dict[str, Any]] = {
    "medium": {"noise": [0.2], "random_prob": [0.0], "episodes": 60, "seed": 1000},
    "medium-replay": {
        "noise": [0.1, 0.3, 0.5, 0.8],
        "random_prob": [0.0, 0.1, 0.3],
        "episodes": 120,
        "seed": 0,
    },
    "medium-expert": {"noise": [0.0, 0.2], "random_prob": [0.0], "episodes": 60, "seed": 2000},
}
NOISE_SCALE = {"Walker2d": 0.1}
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {
        "config_overrides": "hidden_size=64,num_hidden_layers=2",
        "per_device_train_batch_size": 64,
        "learning_rate": 1e-3,
        "warmup_steps": 50,
        "lengths": [500, 1000, 2000, 4000],
        "eval_every": 500,
    },
    "paper": {  # the presets' own recipes (hidden 128, 3 layers, lr 1e-4, 10k warmup), 100k steps
        "config_overrides": None,
        "per_device_train_batch_size": 64,
        "learning_rate": 1e-4,
        "warmup_steps": 10_000,
        "lengths": [25_000, 50_000, 100_000],
        "eval_every": 5_000,
    },
}
SECTION = "## Learning: Decision Mamba against the Decision Transformer"
RETURN_KEY = "env_eval/return_mean"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="MuJoCo tasks (v5)")
    parser.add_argument("--qualities", nargs="+", default=list(QUALITIES), help="dataset qualities")
    parser.add_argument("--models", nargs="+", default=[*DM_PRESETS, DT], help="presets, and 'dt'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu", help="model and recipe size")
    parser.add_argument("--lengths", nargs="+", type=int, help="training lengths (default: the size's)")
    parser.add_argument("--eval-every", "--eval_every", type=int, help="evaluation interval (steps)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant", help="lr schedule")
    parser.add_argument(
        "--eval-episodes", "--eval_episodes", type=int, default=10, help="episodes, seeds 0..N-1"
    )
    parser.add_argument(
        "--source", choices=("generated", "d4rl"), default="generated", help="where data comes from"
    )
    parser.add_argument(
        "--config-overrides", "--config_overrides", help="extra DecisionMambaConfig fields (DM only)"
    )
    parser.add_argument(
        "--all-config-overrides",
        "--all_config_overrides",
        help="config fields for every model, the DT included (e.g. context_length=8)",
    )
    parser.add_argument(
        "--episodes", type=int, help="episodes per generated dataset (default: the quality's)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each gets one torch thread)")
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/benchmark_learning"), help="results folder"
    )
    parser.add_argument(
        "--render", action="store_true", help="only redraw the table and plot from saved runs"
    )
    parser.add_argument(
        "--update-benchmarks", "--update_benchmarks", action="store_true", help="write BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    args.lengths = sorted(args.lengths or size["lengths"])
    args.eval_every = args.eval_every or size["eval_every"]
    unknown = sorted(set(args.qualities) - set(QUALITIES))
    if unknown:
        parser.error(f"--qualities {unknown}: expected some of {sorted(QUALITIES)}")
    return args


# -- data ------------------------------------------------------------------------------------------------------


def dataset_source(args: argparse.Namespace, task: str, quality: str) -> str:
    """The `--dataset` of one task and quality: a generated folder, or the D4RL Hub dataset."""
    if args.source == "d4rl":
        return f"d4rl:{task.lower()}-{quality}-v2"
    return str(args.output / "data" / f"{task}-{quality}")


def generate_dataset(folder: Path, task: str, quality: str, episodes: int | None = None) -> dict[str, float]:
    """Collect one dataset with the scripted behaviour (skipped when the folder already holds it)."""
    from hf_decision_mamba.data.collection import (
        make_env,
        make_policy,
        rollout,
        summarise,
        write_parquet_dataset,
    )

    spec = {**QUALITIES[quality], "env": f"{task}-v5", "noise_scale": NOISE_SCALE.get(task, 1.0)}
    spec["episodes"] = episodes or spec["episodes"]
    spec_file = folder / "spec.json"
    if spec_file.exists() and json.loads(spec_file.read_text())["spec"] == spec:
        return json.loads(spec_file.read_text())["stats"]
    env = make_env(spec["env"])
    noise = [level * spec["noise_scale"] for level in spec["noise"]]
    policy = make_policy(
        "scripted", spec["env"], env, noise=noise, random_prob=spec["random_prob"], seed=spec["seed"]
    )
    rollouts = rollout(env, policy, episodes=spec["episodes"], seed=spec["seed"], progress=False)
    stats = summarise(write_parquet_dataset(rollouts, folder))
    env.close()
    spec_file.write_text(json.dumps({"spec": spec, "stats": stats}, indent=2))
    return stats


# -- training runs ---------------------------------------------------------------------------------------------


def run_name(task: str, quality: str, model: str, seed: int, length: int | None) -> str:
    suffix = "" if length is None else f"-{length}"
    return f"{task}-{quality}-{model}-s{seed}{suffix}"


def merged_overrides(*texts: str | None) -> str:
    """`--config_overrides` texts merged left to right (a later field wins), as one text."""
    from hf_decision_mamba.training.arguments import parse_overrides

    merged = {key: value for text in texts for key, value in parse_overrides(text).items()}
    return ",".join(f"{key}={json.dumps(value)}" for key, value in merged.items())


def train_command(
    args: argparse.Namespace, task: str, quality: str, model: str, seed: int, steps: int, out: Path
):
    """The `dmamba train` command of one run: identical for every model but the model type and preset."""
    size = SIZES[args.size]
    is_dt = model == DT
    dm_only = None if is_dt else args.config_overrides
    overrides = merged_overrides(size["config_overrides"], args.all_config_overrides, dm_only)
    command = [
        sys.executable, "-m", "hf_decision_mamba.cli.train",
        "--model_type", "decision_transformer" if is_dt else "decision_mamba",
        "--preset", "dmamba-mujoco" if is_dt else model,
        "--dataset", dataset_source(args, task, quality),
        "--env_id", f"{task}-v5",
        "--per_device_train_batch_size", str(size["per_device_train_batch_size"]),
        "--learning_rate", str(size["learning_rate"]),
        "--warmup_steps", str(size["warmup_steps"]),
        "--lr_scheduler_type", "constant_with_warmup" if args.schedule == "constant" else "cosine",
        "--weight_decay", "1e-4", "--max_grad_norm", "0.25",
        "--max_steps", str(steps), "--seed", str(seed),
        "--env_eval_steps", str(min(args.eval_every, steps)),
        "--env_eval_episodes", str(args.eval_episodes), "--env_eval_seed", "0",
        "--output_dir", str(out), "--record_replay", "false", "--report_to", "none",
        "--save_steps", str(steps), "--logging_steps", "100", "--disable_tqdm", "true",
    ]  # fmt: skip
    return command + (["--config_overrides", overrides] if overrides else [])


def evaluations(out: Path) -> dict[int, float]:
    """Step -> mean return of every evaluation a finished run made (its env_eval_report.json)."""
    report = out / "env_eval_report.json"
    if not report.exists():
        return {}
    return {
        entry["step"]: entry["metrics"][RETURN_KEY] for entry in json.loads(report.read_text())["history"]
    }


def run_one(
    args: argparse.Namespace, task: str, quality: str, model: str, seed: int, length: int | None
) -> None:
    """Train one run unless its results exist; its log lands beside it."""
    out = args.output / "runs" / run_name(task, quality, model, seed, length)
    steps = length or max(args.lengths)
    if steps in evaluations(out):
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.log", "w") as log:
        command = train_command(args, task, quality, model, seed, steps, out)
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    print(f"{'done' if code == 0 else f'FAILED ({code})'}: {out.name}", flush=True)


def planned_runs(args: argparse.Namespace) -> list[tuple]:
    lengths = [None] if args.schedule == "constant" else args.lengths
    return [
        (task, quality, model, seed, length)
        for seed in args.seeds
        for task in args.tasks
        for quality in args.qualities
        for model in args.models
        for length in lengths
    ]


# -- results ---------------------------------------------------------------------------------------------------


# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom (the normal's 1.96 beyond).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds (0 for one value)."""
    mean, count = float(np.mean(values)), len(values)
    if count < 2:
        return mean, 0.0
    quantile = T95[count - 2] if count - 1 <= len(T95) else 1.96
    return mean, quantile * float(np.std(values, ddof=1)) / math.sqrt(count)


def collect_results(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (task, quality, model, length): final and best-during-training returns over seeds."""
    from hf_decision_mamba.evaluation import normalized_score

    rows = []
    for task in args.tasks:
        for quality in args.qualities:
            for model in args.models:
                for length in args.lengths:
                    finals, bests = [], []
                    for seed in args.seeds:
                        name = run_name(
                            task, quality, model, seed, None if args.schedule == "constant" else length
                        )
                        history = evaluations(args.output / "runs" / name)
                        upto = {step: value for step, value in history.items() if step <= length}
                        if length in upto:
                            finals.append(upto[length])
                            bests.append(max(upto.values()))
                    if not finals:
                        continue
                    mean, half = interval(finals)
                    rows.append({
                        "task": task, "quality": quality, "model": model, "length": length, "seeds": len(finals),
                        "final": finals, "final_mean": mean, "final_ci95": half,
                        "final_normalized": normalized_score(f"{task}-v5", mean),
                        "best_mean": float(np.mean(bests)),
                    })  # fmt: skip
    return rows


def dataset_means(args: argparse.Namespace) -> dict[str, float]:
    means = {}
    for task in args.tasks:
        for quality in args.qualities:
            spec = Path(dataset_source(args, task, quality)) / "spec.json"
            if spec.exists():
                means[f"{task}-{quality}"] = json.loads(spec.read_text())["stats"]["return_mean"]
    return means


def summary_lines(rows: list[dict[str, Any]], means: dict[str, float]) -> list[str]:
    """The acceptance checks per model and quality: DM/DT per length (averaged over tasks), DM above the data's
    mean at each task's longest length, and DM's stability (each task's longest length over its shortest)."""
    lines = []
    by = {(r["task"], r["quality"], r["model"], r["length"]): r["final_mean"] for r in rows}
    for model, quality in sorted({(r["model"], r["quality"]) for r in rows if r["model"] != DT}):
        tasks = sorted({r["task"] for r in rows if (r["model"], r["quality"]) == (model, quality)})
        lengths = {
            t: sorted(length for (t2, q, m, length) in by if (t2, q, m) == (t, quality, model)) for t in tasks
        }
        ratios = []
        for length in sorted(set().union(*lengths.values())):
            pairs = [(by.get((t, quality, model, length)), by.get((t, quality, DT, length))) for t in tasks]
            pairs = [(dm, dt) for dm, dt in pairs if dm is not None and dt is not None]
            if pairs:
                ratios.append(
                    f"{length}: {np.mean([dm for dm, _ in pairs]) / np.mean([dt for _, dt in pairs]):.2f}"
                )
        last = {t: by[(t, quality, model, lengths[t][-1])] for t in tasks}
        above = [last[t] >= means.get(f"{t}-{quality}", np.inf) for t in tasks]
        first = {t: by[(t, quality, model, lengths[t][0])] for t in tasks}
        stable = [f"{t} {last[t] / first[t]:.3f}" for t in tasks if first[t] > 0]
        lines.append(
            f"- `{model}` on {quality}: mean final return / DT's (averaged over tasks) by length "
            f"{{{', '.join(ratios)}}}; above the data's mean at the longest length on {sum(above)}/{len(above)}; "
            f"longest/shortest length {', '.join(stable)}"
        )
    return lines


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    means = dataset_means(args)
    header = (
        "| task | data | data mean | model | steps | seeds | FINAL return (95% CI) | FINAL normalised | "
        "BEST during training (optimistic) |\n|---|---|---|---|---|---|---|---|---|"
    )
    body = [
        f"| {r['task']} | {r['quality']} | {means.get(r['task'] + '-' + r['quality'], float('nan')):.0f} | "
        f"{r['model']} | {r['length']} | {r['seeds']} | {r['final_mean']:.0f} ± {r['final_ci95']:.0f} | "
        f"{r['final_normalized'] if r['final_normalized'] is None else round(r['final_normalized'], 1)} | "
        f"{r['best_mean']:.0f} |"
        for r in rows
    ]
    return "\n".join([header, *body, "", *summary_lines(rows, means)])


def draw_curve(axis: Any, points: list[tuple], label: str, alpha: float, **style: Any) -> None:
    """One model's (steps, mean, 95% half-width) points: a line with markers and its interval shaded alike."""
    steps, mean, half = map(np.array, zip(*points, strict=True))
    (line,) = axis.plot(steps, mean, marker="o", label=label, **style)
    axis.fill_between(steps, mean - half, mean + half, alpha=alpha, color=line.get_color())


def steps_axis(axis: Any, title: str, lengths: list[int]) -> None:
    """Final return against training steps on a log axis ticked at the measured lengths."""
    axis.set(title=title, xlabel="training steps", ylabel="final return", xscale="log")
    axis.set_xticks(lengths, [str(length) for length in lengths])
    axis.minorticks_off()


def plot(args: argparse.Namespace, rows: list[dict[str, Any]], path: Path) -> None:
    """Final return (mean and 95% CI over seeds) against training steps: a row per quality, a column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qualities = [q for q in args.qualities if any(r["quality"] == q for r in rows)]
    tasks = [t for t in args.tasks if any(r["task"] == t for r in rows)]
    figure, axes = plt.subplots(
        len(qualities), len(tasks), figsize=(4.2 * len(tasks), 3.4 * len(qualities)), squeeze=False
    )
    means = dataset_means(args)
    for (row, quality), (column, task) in itertools.product(enumerate(qualities), enumerate(tasks)):
        axis = axes[row][column]
        for model in args.models:
            points = sorted((r["length"], r["final_mean"], r["final_ci95"]) for r in rows
                            if (r["task"], r["quality"], r["model"]) == (task, quality, model))  # fmt: skip
            if points:
                style = {"color": "black", "linestyle": "--"} if model == DT else {}
                draw_curve(axis, points, "DT" if model == DT else model, alpha=0.15, **style)
        if f"{task}-{quality}" in means:
            axis.axhline(means[f"{task}-{quality}"], color="grey", linewidth=0.8, label="data mean")
        steps_axis(axis, f"{task} {quality}", args.lengths)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def update_benchmarks(
    text: str, command: str, path: Path = ROOT / "BENCHMARKS.md", heading: str = SECTION
) -> None:
    """Replace (or append) the BENCHMARKS.md section headed `heading` (default: the learning section)."""
    content = path.read_text()
    section = f"{heading}\n\nGenerated by `{command}`; the protocol is in the script's docstring.\n\n{text}\n"
    pattern = re.compile(re.escape(heading) + r".*?(?=\n## |\Z)", re.S)
    path.write_text(
        pattern.sub(lambda _: section.rstrip("\n") + "\n", content)
        if pattern.search(content)
        else content.rstrip("\n") + "\n\n" + section
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.render:
        if args.source == "generated":
            for task in args.tasks:
                for quality in args.qualities:
                    stats = generate_dataset(
                        Path(dataset_source(args, task, quality)), task, quality, args.episodes
                    )
                    print(
                        f"data {task}-{quality}: {stats['episodes']} episodes, mean return {stats['return_mean']:.1f}"
                    )
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda run: run_one(args, *run), planned_runs(args)))
    rows = collect_results(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "learning.json").write_text(
        json.dumps(
            {"protocol": vars(args) | {"output": str(args.output)}, "rows": rows}, indent=2, default=str
        )
    )
    if rows:
        plot(args, rows, args.output / "learning.png")
    text = markdown(args, rows)
    print(text)
    if args.update_benchmarks:
        update_benchmarks(
            text,
            "python scripts/benchmark_learning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
