"""Time the Space's worst case: a full 1000-step Hopper episode with rendering, H.264 encoding and attention.

    python scripts/benchmark_space.py [--model outputs/quickstart] [--modes window recurrent]

Runs `spaces_demo/app.py`'s own `run_request` (load, play, attention, replay + encode) for each mode, with
Hopper's early termination switched off so every episode lasts 1000 steps whatever the policy's skill, and
prints one JSON line per run plus the verdict against the 60 s budget of a free 2-vCPU Space. Without
--model it times an untrained Decision Mamba of the quick start's size. The app's 45 s play limit is lifted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import gymnasium as gym

BUDGET_S = 60.0
APP = Path(__file__).resolve().parent.parent / "spaces_demo" / "app.py"


def load_app():
    """`spaces_demo/app.py` as a module, with the play time limit lifted."""
    os.environ["DMAMBA_SPACE_TIME_LIMIT"] = "1e9"
    spec = importlib.util.spec_from_file_location("space_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def quickstart_sized_model(folder: Path) -> str:
    """Save an untrained Decision Mamba with the quick start's architecture for Hopper into `folder`."""
    from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel

    config = DecisionMambaConfig.from_preset(
        "dmamba-hopper", hidden_size=64, num_hidden_layers=2, context_length=20, state_dim=11, act_dim=3,
        env_id="Hopper-v5", target_return=3600.0,
    )  # fmt: skip
    DecisionMambaModel(config).save_pretrained(folder)
    return str(folder)


def never_terminating_make(make=gym.make):
    """`gym.make` that builds Hopper without its unhealthy-state termination (episodes end at the TimeLimit)."""

    def wrapped(env_id, *args, **kwargs):
        if str(env_id).startswith("Hopper"):
            kwargs.setdefault("terminate_when_unhealthy", False)
        return make(env_id, *args, **kwargs)

    return wrapped


def time_run(app, model: str, mode: str, seed: int) -> dict:
    """One uncached `run_request` of a 1000-step Hopper episode; timings in seconds."""
    request = app.Request(model, "Hopper-v5", seed, 3600.0, mode, app.MAX_EPISODE_STEPS)
    start = time.perf_counter()
    recording = app.run_request(request)
    total = time.perf_counter() - start
    return {
        "mode": mode, "steps": recording.length, "total_s": round(total, 2),
        "play_s": round(recording.rollout_s, 2), "attention_s": round(recording.attention_s, 3),
        "render_and_encode_s": round(recording.video_s, 2), "return": round(recording.total_return, 1),
        "within_budget": total < BUDGET_S,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="checkpoint folder or Hub id (default: an untrained quick-start-sized model)"
    )
    parser.add_argument("--modes", nargs="+", default=["window", "recurrent"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    app = load_app()
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(gym, "make", never_terminating_make()):
        model = args.model or quickstart_sized_model(Path(folder))
        app.load_checkpoint(model)  # loading is not part of an episode's budget (the Space keeps models)
        results = [time_run(app, model, mode, args.seed) for mode in args.modes]
    for result in results:
        print(json.dumps(result))
    return 0 if all(result["within_budget"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
