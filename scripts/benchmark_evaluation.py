"""Time N evaluation episodes run in parallel (one vector env) against the same N run one after another.

Both runs use the same policy and seeds (episode i starts from seed i). Atari episodes come out identical; MuJoCo
ones can drift apart, because float rounding in the policy depends on the batch size and Hopper's dynamics
amplify it, so the report gives both runs' agent steps and how many episodes ended alike. The ratio is
parallel / sequential wall time (target: <= 0.3). The policy is a randomly initialised
`DecisionMambaModel` when the package provides one (`--policy model`), else a small torch MLP (`--policy mlp`).

    PYTHONPATH=src python scripts/benchmark_evaluation.py [--policy mlp] [--mode recurrent] [--episodes 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hf_decision_mamba.envs import make_env
from hf_decision_mamba.evaluation import evaluate_policy

TASKS = {"Hopper-v5": 3600.0, "ALE/Breakout-v5": 90.0}


class MLPPolicy:
    """A small torch MLP with the policy API (`reset`, `act`): tanh actions or argmax over discrete ones."""

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, discrete: bool):
        torch.manual_seed(0)
        inputs = int(np.prod(obs_shape))
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(inputs, 64), torch.nn.Tanh(), torch.nn.Linear(64, act_dim)
        ).eval()
        self.discrete = discrete

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.num_envs = num_envs

    @torch.no_grad()
    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        out = self.net(torch.as_tensor(observation, dtype=torch.float32) / (255.0 if self.discrete else 1.0))
        return out.argmax(-1).numpy() if self.discrete else torch.tanh(out).numpy()


def model_policy(env_id: str, mode: str, path: str | None = None):
    """A saved model (`path`, e.g. the quick start's output) or a randomly initialised DecisionMambaModel of
    the task's preset; None if the package has none."""
    try:
        from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
    except ImportError:
        return None
    if path is not None:
        model = DecisionMambaModel.from_pretrained(path).eval()
        return model.policy(mode=mode, target_return=TASKS[env_id])
    if env_id.startswith("ALE/"):
        config = DecisionMambaConfig.from_preset("dmamba-atari", n_actions=4, env_id=env_id)
    else:
        config = DecisionMambaConfig.from_preset("dmamba-hopper", state_dim=11, act_dim=3, env_id=env_id)
    torch.manual_seed(0)
    return DecisionMambaModel(config).eval().policy(mode=mode, target_return=TASKS[env_id])


def mlp_policy(env_id: str) -> MLPPolicy:
    """The MLP fallback, shaped for `env_id`."""
    env = make_env(env_id)
    discrete = hasattr(env.action_space, "n")
    act_dim = env.action_space.n if discrete else env.action_space.shape[0]
    return MLPPolicy(env.observation_space.shape, act_dim, discrete)


def time_evaluation(policy, env_id: str, episodes: int, num_envs: int, max_steps: int | None) -> dict:
    """Wall time and returns of `episodes` episodes in waves of `num_envs` environments."""
    start = time.perf_counter()
    report = evaluate_policy(
        policy, env_id, num_episodes=episodes, num_envs=num_envs, target_return=TASKS[env_id],
        max_episode_steps=max_steps, progress=False,
    )  # fmt: skip
    result = report["results"][0]
    return {
        "wall_s": time.perf_counter() - start,
        "returns": result["returns"],
        "steps": result["episode_lengths"],
    }


def benchmark(
    env_id: str, kind: str, mode: str, episodes: int, max_steps: int | None, path: str | None = None
) -> dict:
    """Parallel vs sequential for one task; checks both played the same episodes."""
    policy = (model_policy(env_id, mode, path) if kind == "model" else None) or mlp_policy(env_id)
    kind = "mlp" if isinstance(policy, MLPPolicy) else "model"
    time_evaluation(policy, env_id, 1, 1, 5)  # warm-up (lazy imports, kernels, JIT)
    parallel = time_evaluation(policy, env_id, episodes, episodes, max_steps)
    sequential = time_evaluation(policy, env_id, episodes, 1, max_steps)
    alike = np.isclose(parallel["returns"], sequential["returns"], rtol=1e-3) & np.equal(
        parallel["steps"], sequential["steps"]
    )
    return {
        "env_id": env_id, "policy": kind, "mode": mode if kind == "model" else None, "episodes": episodes,
        "agent_steps": {"parallel": int(sum(parallel["steps"])), "sequential": int(sum(sequential["steps"]))},
        "episodes_alike": f"{int(alike.sum())} of {episodes} (same length, return within 0.1%)",
        "parallel_s": round(parallel["wall_s"], 2), "sequential_s": round(sequential["wall_s"], 2),
        "ratio": round(parallel["wall_s"] / sequential["wall_s"], 3),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("model", "mlp"), default="model")
    parser.add_argument("--mode", choices=("window", "recurrent"), default="window")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--mujoco_max_steps", type=int, default=1000)
    parser.add_argument(
        "--atari_max_steps", type=int, default=500, help="caps untrained policies that never fire"
    )
    parser.add_argument(
        "--torch_threads", type=int, default=None, help="torch intra-op threads (default: torch's own)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--model", default=None, help="a saved checkpoint to evaluate (one task only)")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    for env_id in args.tasks:
        max_steps = args.atari_max_steps if env_id.startswith("ALE/") else args.mujoco_max_steps
        row = benchmark(env_id, args.policy, args.mode, args.episodes, max_steps, args.model)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
