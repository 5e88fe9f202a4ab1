"""Atari learning benchmark on a CPU: a small Decision Mamba and the DT trained on scripted Breakout data, and random play.

The protocol is fixed here, before any result is looked at:
- Data: `dmamba collect --behaviour scripted` on ALE/Breakout-v5 (the RAM-reading paddle controller of
  `hf_decision_mamba.data.scripted_atari`), 60 episodes, seed 0, the epsilon-random probability cycled over
  0, 0.1, 0.25, 0.5, 0.75 and 1.0 per episode (so from the controller's play down to random play), under the
  Machado protocol (sticky actions 0.25, frame skip 4, up to 30 no-ops).
- Model: preset `mamba-rl-atari-3l` (Mamba RL's better Atari configuration: 3 layers, dropout 0.1, DT's CNN
  encoder) at hidden 64 and context 8, batch 64, its learning rate 6e-4 and weight decay 0.1, 50 warmup steps then
  a constant rate, 2000 steps, seeds `--seeds`.
- Evaluation: 10 episodes with seeds 0..9 under the same Machado protocol, conditioned on the preset's target
  return (90, DT's for Breakout), every 1000 steps; a uniformly random policy plays the same 10 seeds.
- Report: the FINAL model's mean return over seeds with a 95% t-interval, the BEST evaluation during training
  beside it (labelled: it is optimistic), the data's mean return and the random policy's.

- The Decision Transformer (added 2026-12-04, before any DT run): the same preset and settings with
  `block_type=attention`, GPT-2's causal self-attention (one head, as the MuJoCo DT baseline) in place of each
  Mamba mixer, so the CNN encoder, embeddings, MLPs, heads, loss and acting are the Decision Mamba's.
  `transformers`' `DecisionTransformerModel` cannot be used: it embeds states with one linear layer and predicts
  continuous actions with a tanh head (DT's own Atari code has its own GPT with this CNN).

    python scripts/benchmark_atari_learning.py --seeds 0 1 2 --update-benchmarks
    python scripts/benchmark_atari_learning.py --models dt      # the DT only
    python scripts/benchmark_atari_learning.py --render     # redraw the table from saved results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_learning as learning  # noqa: E402  (interval, evaluations, update_benchmarks)

GAME = "ALE/Breakout-v5"
DATA = {"random_prob": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0], "episodes": 60, "seed": 0}
MODEL = {
    "preset": "mamba-rl-atari-3l",
    "config_overrides": "hidden_size=64,context_length=8",
    "per_device_train_batch_size": 64,
    "warmup_steps": 50,
    "max_steps": 2000,
    "eval_every": 1000,
}
MODELS = {"dm": None, "dt": "block_type=attention"}
"""Model name -> the config fields it adds to `MODEL["config_overrides"]`."""
EVAL_EPISODES = 10
DMAMBA = str(
    Path(sys.executable).with_name("dmamba")
)  # the command line of the environment running this script
SECTION = "## Learning on Atari: Decision Mamba on scripted Breakout data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="Decision Mamba, DT"
    )
    parser.add_argument("--max-steps", type=int, default=MODEL["max_steps"], help="training steps per run")
    parser.add_argument(
        "--eval-every", type=int, default=MODEL["eval_every"], help="steps between evaluations"
    )
    parser.add_argument("--episodes", type=int, default=DATA["episodes"], help="episodes of data to collect")
    parser.add_argument(
        "--output", type=Path, default=Path("runs/atari_learning"), help="runs, data, results"
    )
    parser.add_argument("--render", action="store_true", help="only redraw the table from saved results")
    parser.add_argument(
        "--update-benchmarks", action="store_true", help="write the section into BENCHMARKS.md"
    )
    return parser.parse_args(argv)


def collect_dataset(args: argparse.Namespace) -> dict[str, float]:
    """Collect the scripted dataset unless it exists; return its summary (episodes, steps, return statistics)."""
    folder = args.output / "data" / "breakout-scripted"
    stats_file = folder / "stats.json"
    if not stats_file.exists():
        command = [DMAMBA, "collect", "--env", GAME, "--behaviour", "scripted", "--random-prob"]
        command += [str(p) for p in DATA["random_prob"]]
        command += ["--episodes", str(args.episodes), "--seed", str(DATA["seed"])]
        command += ["--output", str(folder), "--no-progress"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        stats_file.write_text(output[output.index("{") :])
    return json.loads(stats_file.read_text())


def train_command(args: argparse.Namespace, model: str, seed: int, out: Path) -> list[str]:
    """The `dmamba train` command of one model's and seed's run: the models differ only in their mixer."""
    overrides = ",".join(filter(None, [MODEL["config_overrides"], MODELS[model]]))
    return [
        DMAMBA, "train", "--preset", MODEL["preset"],
        "--dataset", str(args.output / "data" / "breakout-scripted"), "--env_id", GAME,
        "--config_overrides", overrides,
        "--per_device_train_batch_size", str(MODEL["per_device_train_batch_size"]),
        "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", str(MODEL["warmup_steps"]),
        "--max_steps", str(args.max_steps), "--seed", str(seed),
        "--env_eval_steps", str(min(args.eval_every, args.max_steps)),
        "--env_eval_episodes", str(EVAL_EPISODES), "--env_eval_seed", "0",
        "--output_dir", str(out), "--record_replay", "false", "--report_to", "none",
        "--save_steps", str(args.max_steps), "--logging_steps", "100", "--disable_tqdm", "true",
    ]  # fmt: skip


def run_folder(args: argparse.Namespace, model: str, seed: int) -> Path:
    return args.output / "runs" / f"breakout-{model}-s{seed}"


def train(args: argparse.Namespace, model: str, seed: int) -> None:
    """Train one run unless its final evaluation exists; the log lands beside the run."""
    out = run_folder(args, model, seed)
    if args.max_steps in learning.evaluations(out):
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with open(f"{out}.log", "w") as log:
        code = subprocess.call(
            train_command(args, model, seed, out), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    print(f"{'done' if code == 0 else f'FAILED ({code})'}: {out.name}", flush=True)


class UniformRandomPolicy:
    """Uniformly random discrete actions for every env (seeded): the baseline the trained model must beat."""

    def __init__(self, n_actions: int, seed: int = 0):
        self.n_actions, self.rng = n_actions, np.random.default_rng(seed)

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        """Nothing to reset but the batch size."""
        self.num_envs = num_envs

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        """One random action per env."""
        return self.rng.integers(self.n_actions, size=len(observation))


def random_baseline() -> float:
    """Mean return of uniformly random play on the evaluation's seeds and protocol."""
    from hf_decision_mamba.envs.atari import atari_action_meanings
    from hf_decision_mamba.evaluation import evaluate_policy

    policy = UniformRandomPolicy(len(atari_action_meanings(GAME)))
    report = evaluate_policy(policy, GAME, num_episodes=EVAL_EPISODES, seed=0, progress=False)
    return float(report["results"][0]["return_mean"])


def collect_results(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """One model's final and best-during-training returns over the seeds whose runs finished."""
    histories = [learning.evaluations(run_folder(args, model, seed)) for seed in args.seeds]
    finished = [history for history in histories if args.max_steps in history]
    final = [history[args.max_steps] for history in finished]
    best = [max(history.values()) for history in finished]
    by_step = {
        step: [history[step] for history in finished] for step in sorted({s for h in finished for s in h})
    }
    return {"final": final, "best": best, "by_step": by_step}


MODEL_NAMES = {"dm": "Decision Mamba", "dt": "DT (attention)"}


def markdown(data: dict[str, float], random_mean: float, results: dict[str, dict[str, Any]]) -> str:
    """The BENCHMARKS table: data, random play and each model (`results` by model name) at each evaluation."""
    lines = [
        f"Data: {data['episodes']} episodes, {data['steps']} steps, return mean {data['return_mean']:.1f} "
        f"(min {data['return_min']:.0f}, max {data['return_max']:.0f}). Random policy: {random_mean:.1f}.",
        "",
        "| model | training steps | FINAL mean return ± 95% CI | x random | >= data mean | seeds |",
        "|---|---|---|---|---|---|",
    ]
    bests = []
    for model, result in results.items():
        for step, values in result["by_step"].items():
            mean, half = learning.interval(values)
            ratio = mean / random_mean if random_mean > 0 else float("inf")
            lines.append(
                f"| {MODEL_NAMES[model]} | {step} | {mean:.1f} ± {half:.1f} | {ratio:.1f} | "
                f"{'yes' if mean >= data['return_mean'] else 'no'} | {len(values)} |"
            )
        if result["best"]:
            mean, half = learning.interval(result["best"])
            bests.append(f"{MODEL_NAMES[model]} {mean:.1f} ± {half:.1f}")
    if bests:
        lines += ["", f"BEST evaluation during training (optimistic): {', '.join(bests)}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = collect_dataset(args)
    if not args.render:
        for model in args.models:
            for seed in args.seeds:
                train(args, model, seed)
    random_mean = random_baseline()
    results = {model: collect_results(args, model) for model in args.models}
    (args.output / "atari_learning.json").write_text(
        json.dumps({"data": data, "random": random_mean, "models": results}, indent=2)
    )
    text = markdown(data, random_mean, results)
    print(text)
    if args.update_benchmarks:
        command = "python scripts/benchmark_atari_learning.py " + " ".join(argv or sys.argv[1:])
        learning.update_benchmarks(text, command, heading=SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
