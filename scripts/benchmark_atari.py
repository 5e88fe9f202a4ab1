"""Atari speed, measured in one run: a Decision Mamba training step against Decision Transformer's at the same size,
and 10 Breakout episodes evaluated in parallel against the same 10 one after another.

    python scripts/benchmark_atari.py                         # both, the issue's sizes (batch 32, context 30)
    python scripts/benchmark_atari.py --only evaluation --mode window --torch_threads 1

Training: the `dmamba-atari` preset (6 layers, hidden 128, context 30, Nature-CNN state encoder, cross-entropy)
and a Decision Transformer of the same size: `transformers.DecisionTransformerModel` (GPT-2, 6 layers, hidden 128,
1 head, (R, s, a) tokens, timestep embedding) with DT's Atari embeddings swapped in by `AtariDecisionTransformer`
below (the same Nature-CNN, Tanh return and action embeddings, a logits head). One step = forward, backward,
clipping and AdamW (betas 0.9/0.95, decay 0.1 on weights only) on one collated batch; the two models alternate
so that both see the same machine load. Target: Decision Mamba <= 2.0x DT.

Evaluation: `evaluate_policy` on `num_envs=10` (two native ALE vector envs of 5 that take turns, so one group's
emulators step while the policy acts for the other) against `num_envs=1` (one env reused, reset with each episode's
seed); both play identical episodes (checked). Each is timed cold (the evaluation builds its envs, as
`dmamba evaluate` does) and warm (its envs come from a `VectorEnvPool` that an earlier evaluation filled, as in a
training run's evaluations). The time is split into env construction, seeded resets, waits for env steps and
policy steps, to show what dominates. Target: parallel <= 0.3x sequential.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import DecisionTransformerConfig, DecisionTransformerModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel  # noqa: E402
from hf_decision_mamba.data import TrajectoryWindowDataset  # noqa: E402
from hf_decision_mamba.data.synthetic import synthetic_episodes  # noqa: E402
from hf_decision_mamba.envs import atari as atari_envs  # noqa: E402
from hf_decision_mamba.evaluation import VectorEnvPool, evaluate_policy  # noqa: E402
from hf_decision_mamba.modeling_decision_mamba import AtariStateEncoder  # noqa: E402
from hf_decision_mamba.training import ModelArguments, decay_param_groups  # noqa: E402

N_ACTIONS = 4  # Breakout's minimal action set


# -- Decision Transformer at the Decision Mamba's size ----------------------------------------------------------


class AtariDecisionTransformer(DecisionTransformerModel):
    """transformers' DT with DT's Atari embeddings: Nature-CNN states, Tanh returns and actions, action logits."""

    def __init__(self, config: DecisionTransformerConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.embed_state = AtariStateEncoder(hidden)
        self.embed_action = nn.Sequential(nn.Embedding(config.act_dim, hidden), nn.Tanh())
        self.embed_return = nn.Sequential(nn.Linear(1, hidden), nn.Tanh())
        self.predict_action = nn.Linear(hidden, config.act_dim)  # logits, no tanh
        self.predict_state = nn.Identity()  # DT's Atari model predicts actions only
        self.post_init()

    def forward(self, labels: torch.Tensor | None = None, **inputs: Any) -> dict[str, torch.Tensor]:
        """DT's forward; with `labels`, cross-entropy over the real (unmasked) steps."""
        output = super().forward(**inputs, return_dict=True)
        real = inputs["attention_mask"] > 0
        loss = None if labels is None else F.cross_entropy(output.action_preds[real], labels[real])
        return {"loss": loss, "action_preds": output.action_preds}


def dt_config(config: DecisionMambaConfig) -> DecisionTransformerConfig:
    """A GPT-2 DT with the Decision Mamba's layers, width, dropout and episode length (1 head, 4x MLP)."""
    defaults = ModelArguments()
    return DecisionTransformerConfig(
        state_dim=config.state_dim, act_dim=config.n_actions, hidden_size=config.hidden_size,
        n_layer=config.num_hidden_layers, n_head=defaults.dt_num_heads, n_inner=4 * config.hidden_size,
        activation_function=defaults.dt_activation_function, max_ep_len=config.max_ep_len,
        n_positions=max(1024, 3 * config.context_length), resid_pdrop=config.dropout,
        embd_pdrop=config.dropout, attn_pdrop=config.dropout, action_tanh=False,
    )  # fmt: skip


# -- training step ----------------------------------------------------------------------------------------------


def training_batch(config: DecisionMambaConfig, batch_size: int) -> dict[str, torch.Tensor]:
    """One batch as the Trainer gets it: windows of synthetic frames through the package's dataset and collator."""
    episodes = synthetic_episodes([2 * config.context_length] * 4, atari=True, n_actions=N_ACTIONS)
    dataset = TrajectoryWindowDataset.from_config(episodes, config, record=False, progress=False)
    indices = torch.randint(len(dataset), (batch_size,), generator=torch.Generator().manual_seed(0))
    return dataset.collator()([dataset[int(i)] for i in indices])


def make_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    """A closure running one optimisation step (the Atari recipe's AdamW and clipping); returns its seconds."""
    groups = (
        model.get_optimizer_param_groups(0.1)
        if hasattr(model, "get_optimizer_param_groups")
        else decay_param_groups(model, 0.1)
    )
    optimizer = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95))
    model.train()

    def step() -> float:
        start = time.perf_counter()
        output = model(**batch)
        output["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def encoder_seconds(config: DecisionMambaConfig, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median forward+backward time of the Nature-CNN alone on the batch's B x K frame stacks (shared by both)."""
    encoder = AtariStateEncoder(config.hidden_size)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        encoder(batch["states"]).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def benchmark_training(batch_size: int, repeats: int, preset: str) -> dict[str, Any]:
    """Median step time of both models, alternating them step by step, and their ratio."""
    config = DecisionMambaConfig.from_preset(preset, n_actions=N_ACTIONS)
    batch = training_batch(config, batch_size)
    torch.manual_seed(0)
    models = {"decision_mamba": DecisionMambaModel(config), "decision_transformer": AtariDecisionTransformer(dt_config(config))}  # fmt: skip
    steps = {name: make_step(model, {**batch, "labels": batch["actions"]}) for name, model in models.items()}
    for step in steps.values():  # warm-up: allocator, kernels, compiled scan
        step(), step()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(step())
    medians = {name: statistics.median(values) for name, values in times.items()}
    pair_ratios = [a / b for a, b in zip(times["decision_mamba"], times["decision_transformer"], strict=True)]
    return {
        "benchmark": "training_step", "preset": preset, "layers": config.num_hidden_layers,
        "hidden": config.hidden_size, "context": config.context_length, "batch": batch_size,
        "torch_threads": torch.get_num_threads(), "repeats": repeats,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "decision_mamba_s": round(medians["decision_mamba"], 3),
        "decision_transformer_s": round(medians["decision_transformer"], 3),
        "nature_cnn_fwd_bwd_s": round(encoder_seconds(config, batch, 3), 3),
        "ratio": round(medians["decision_mamba"] / medians["decision_transformer"], 3),
        "ratio_of_paired_steps_median": round(statistics.median(pair_ratios), 3), "target": 2.0,
    }  # fmt: skip


# -- evaluation -------------------------------------------------------------------------------------------------


class Stopwatch:
    """Accumulates seconds per label, and the torch thread counts seen while acting."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.torch_threads: set[int] = set()  # torch's intra-op threads seen while acting

    @contextmanager
    def measure(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - start

    def wrap(self, function: Callable, label: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.measure(label):
                return function(*args, **kwargs)

        return timed


class TimedPolicy:
    """A policy that charges its `act` calls to a stopwatch (keeps `.model` so evaluation sees the model)."""

    def __init__(self, policy: Any, stopwatch: Stopwatch) -> None:
        self.policy, self.model, self.stopwatch = policy, policy.model, stopwatch

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.policy.reset(num_envs, target_return)

    def fork(self) -> TimedPolicy:
        return TimedPolicy(self.policy.fork(), self.stopwatch)

    def keep(self, active: Any) -> None:
        self.policy.keep(active)

    def act(self, observation: Any, reward: Any) -> Any:
        self.stopwatch.torch_threads.add(torch.get_num_threads())
        with self.stopwatch.measure("policy_act"):
            return self.policy.act(observation, reward)


@contextmanager
def instrumented_env(stopwatch: Stopwatch) -> Iterator[None]:
    """Charge the native vector env's construction, resets and steps to `stopwatch` (restored afterwards).

    A step is `send` (returns at once) then `recv` (waits for the emulators), so while two groups of envs take
    turns, `env_step` is only the time spent waiting: the emulation that overlaps the policy is not in it.
    """
    cls = atari_envs.ProtocolAtariVectorEnv
    original = {name: getattr(cls, name) for name in ("__init__", "reset", "send", "recv")}
    labels = {
        "__init__": "env_construct",
        "reset": "env_seeded_reset",
        "send": "env_step",
        "recv": "env_step",
    }
    for name, method in original.items():
        setattr(cls, name, stopwatch.wrap(method, labels[name]))
    try:
        yield
    finally:
        for name, method in original.items():
            setattr(cls, name, method)


def eval_threads(args: argparse.Namespace) -> dict[str, int]:
    """`evaluate_policy`'s torch threads: `--torch_threads` when given, else its own default (per mode)."""
    return {"torch_threads": args.torch_threads} if args.torch_threads else {}


def evaluation_run(
    model: DecisionMambaModel, num_envs: int, args: argparse.Namespace, envs: VectorEnvPool | None = None
) -> dict[str, Any]:
    """One timed `evaluate_policy` of `args.episodes` Breakout episodes in waves of `num_envs` (in `envs`' vector
    envs when given: built by an earlier call, as during training, where the callback keeps them)."""
    stopwatch = Stopwatch()
    policy = TimedPolicy(model.policy(mode=args.mode, target_return=90.0), stopwatch)
    with instrumented_env(stopwatch), stopwatch.measure("total"):
        report = evaluate_policy(
            policy, "ALE/Breakout-v5", num_episodes=args.episodes, num_envs=num_envs, target_return=90.0,
            max_episode_steps=args.max_episode_steps, mode=args.mode, envs=envs, progress=False,
            **eval_threads(args),
        )  # fmt: skip
    result = report["results"][0]
    return {
        "seconds": dict(stopwatch.seconds),
        "returns": result["returns"],
        "lengths": result["episode_lengths"],
        "torch_threads": sorted(stopwatch.torch_threads),
    }


def _median_seconds(runs: list[dict[str, Any]]) -> dict[str, float]:
    labels = runs[0]["seconds"]
    return {label: round(statistics.median(run["seconds"][label] for run in runs), 3) for label in labels}


def never_fire(model: DecisionMambaModel) -> None:
    """Make the greedy policy never press FIRE: Breakout's ball is never launched, so no episode ends early."""
    fire = atari_envs.atari_action_meanings("breakout").index("FIRE")
    with torch.no_grad():
        model.predict_action.bias[fire] = -1e4


def episodes_end(lengths: list[int], args: argparse.Namespace) -> str:
    """How the measured episodes ended: at game over, or (how many of them) at the step cap."""
    capped = sum(length == args.max_episode_steps for length in lengths)
    reason = " (the policy never fires)" if args.never_fire else ""
    return (
        f"{capped} of {len(lengths)} at the {args.max_episode_steps}-step cap{reason}"
        if capped
        else "at game over"
    )


def benchmark_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """Parallel vs sequential wall time (alternating runs), with what each spends its time on: `cold`, each
    evaluation builds its envs (`dmamba evaluate`); `warm`, they come from a pool built by an earlier one."""
    config = DecisionMambaConfig.from_preset("dmamba-atari", n_actions=N_ACTIONS)
    torch.manual_seed(0)
    model = DecisionMambaModel(config).eval()
    if args.never_fire:
        never_fire(model)
    evaluate_policy(model, "breakout", num_episodes=1, max_episode_steps=5, mode=args.mode, progress=False)
    num_envs = {"parallel": args.episodes, "sequential": 1}
    pools = {kind: VectorEnvPool() for kind in num_envs}
    for kind, count in num_envs.items():  # builds the pools' envs
        evaluation_run(model, count, args, pools[kind])
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(args.eval_repeats):
        for kind, count in num_envs.items():
            runs[f"{kind}_cold"].append(evaluation_run(model, count, args))
            runs[f"{kind}_warm"].append(evaluation_run(model, count, args, pools[kind]))
    for pool in pools.values():
        pool.close()
    seconds = {name: _median_seconds(group) for name, group in runs.items()}
    first = runs["parallel_cold"][0]
    identical = all(
        run["returns"] == first["returns"] and run["lengths"] == first["lengths"]
        for group in runs.values()
        for run in group
    )
    return {
        "benchmark": "evaluation", "env_id": "ALE/Breakout-v5", "preset": "dmamba-atari (untrained)",
        "mode": args.mode, "episodes": args.episodes, "max_episode_steps": args.max_episode_steps,
        "episodes_end": episodes_end(first["lengths"], args),
        "torch_threads_while_acting": sorted({n for run in runs["parallel_cold"] for n in run["torch_threads"]}),
        "env_threads": atari_envs.default_num_threads(args.episodes),
        "episode_lengths": first["lengths"], "agent_steps": sum(first["lengths"]),
        **{f"{name}_s": value for name, value in seconds.items()},
        **{
            f"ratio_{start}": round(seconds[f"parallel_{start}"]["total"] / seconds[f"sequential_{start}"]["total"], 3)
            for start in ("cold", "warm")
        },
        "identical_episodes": identical, "target": 0.3,
    }  # fmt: skip


# -- report -----------------------------------------------------------------------------------------------------


def markdown(rows: list[dict[str, Any]]) -> str:
    """The figures as the lines BENCHMARKS.md records."""
    lines = []
    for row in rows:
        if row["benchmark"] == "training_step":
            lines.append(
                f"| Atari training step, {row['preset']} {row['layers']}x{row['hidden']}, K={row['context']}, "
                f"batch {row['batch']} | Decision Mamba {row['decision_mamba_s']:.3f} s vs DT "
                f"{row['decision_transformer_s']:.3f} s (Nature-CNN alone {row['nature_cnn_fwd_bwd_s']:.3f} s) | "
                f"{row['ratio']:.2f}x (target <= 2.0x) |"
            )
        else:
            lines.append(
                f"| {row['episodes']} Breakout episodes ({row['mode']}, {row['agent_steps']} agent steps, "
                f"ending {row['episodes_end']}) | parallel {row['parallel_cold_s']['total']:.2f} s vs one after "
                f"another {row['sequential_cold_s']['total']:.2f} s; warm (envs kept, as in training) "
                f"{row['parallel_warm_s']['total']:.2f} s vs {row['sequential_warm_s']['total']:.2f} s | "
                f"{row['ratio_cold']:.2f}x, warm {row['ratio_warm']:.2f}x (target <= 0.3x) |"
            )
    return "\n".join(["| measurement | figures | ratio |", "|---|---|---|", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("training", "evaluation"))
    parser.add_argument("--preset", default="dmamba-atari", help="Atari preset of the training benchmark")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="training steps timed per model")
    parser.add_argument("--mode", choices=("window", "recurrent"), default="recurrent")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max_episode_steps", type=int, default=None, help="default: the protocol's 27000")
    parser.add_argument("--eval_repeats", type=int, default=2, help="parallel/sequential pairs (medians)")
    parser.add_argument(
        "--never_fire", action="store_true",
        help="the policy never launches the ball: equal-length episodes that run to --max_episode_steps",
    )  # fmt: skip
    parser.add_argument(
        "--torch_threads", type=int,
        help="torch intra-op threads (default: torch's for training, evaluate_policy's one for evaluation)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.never_fire and args.max_episode_steps is None:
        parser.error("--never_fire needs --max_episode_steps (such episodes only end at the cap)")
    transformers.logging.set_verbosity_error()  # DT's GPT-2 config warns about its unused token ids
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rows = []
    if args.only in (None, "training"):
        rows.append(benchmark_training(args.batch, args.repeats, args.preset))
        print(json.dumps(rows[-1]), flush=True)
    if args.only in (None, "evaluation"):
        rows.append(benchmark_evaluation(args))
        print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
