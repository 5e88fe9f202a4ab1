"""Shared fixtures: tiny versions of every preset and batches that fit them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Every cache the suite could write goes to one temporary folder, set before any library reads these variables,
# so tests never read or write the user's Hugging Face, Minari, matplotlib or compiler caches (subprocesses inherit).
CACHE_ROOT = Path(tempfile.mkdtemp(prefix="dmamba-test-caches-"))
CACHE_VARIABLES = {
    "HF_HOME": "hf",
    "HF_DATASETS_CACHE": "hf/datasets",
    "HF_HUB_CACHE": "hf/hub",
    "HF_MODULES_CACHE": "hf/modules",
    "MINARI_DATASETS_PATH": "minari",
    "MPLCONFIGDIR": "matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
}
for _variable, _folder in CACHE_VARIABLES.items():
    os.environ[_variable] = str(CACHE_ROOT / _folder)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hf_decision_mamba import PRESETS, DecisionMambaConfig, DecisionMambaModel  # noqa: E402

MUJOCO_DIMS = {"state_dim": 5, "act_dim": 2}
# Larger step sizes than Mamba's default make the state carry history strongly, so exactness checks bite.
TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "state_size": 4,
    "dropout": 0.0,
    "max_ep_len": 64,
    "time_step_min": 0.1,
    "time_step_max": 1.0,
    "initializer_range": 0.2,
}


def tiny_config(preset: str, **overrides) -> DecisionMambaConfig:
    """The preset's architecture at test size (embedding widths shrunk with the hidden size)."""
    fields = dict(TINY)
    if PRESETS[preset]["config"].get("embedding_size"):
        fields["embedding_size"] = 24
    if PRESETS[preset]["config"]["state_encoder"] == "linear":
        fields.update(MUJOCO_DIMS)
    fields.update(overrides)
    return DecisionMambaConfig.from_preset(preset, **fields)


def tiny_model(preset: str, seed: int = 0, **overrides) -> DecisionMambaModel:
    torch.manual_seed(seed)
    return DecisionMambaModel(tiny_config(preset, **overrides)).eval()


def make_batch(
    config: DecisionMambaConfig, batch: int = 2, steps: int = 6, seed: int = 0, start: int = 0
) -> dict:
    """Random inputs in the shapes `DecisionMambaModel.forward` expects (no padding)."""
    generator = torch.Generator().manual_seed(seed)
    if config.state_encoder == "atari_cnn":
        states = torch.randint(0, 256, (batch, steps, 4, 84, 84), generator=generator, dtype=torch.uint8)
    else:
        states = torch.randn(batch, steps, config.state_dim, generator=generator)
    if config.is_discrete:
        actions = torch.randint(0, config.n_actions, (batch, steps), generator=generator)
    else:
        actions = torch.rand(batch, steps, config.act_dim, generator=generator) * 2 - 1
    returns = torch.randn(batch, steps, 1, generator=generator)
    return {
        "states": states,
        "actions": actions,
        "rewards": torch.randn(batch, steps, 1, generator=generator),
        "returns_to_go": returns,
        "timesteps": (torch.arange(steps) + start).expand(batch, steps).clone(),
        "attention_mask": torch.ones(batch, steps, dtype=torch.long),
    }


class FixedWindows(torch.utils.data.Dataset):
    """A handful of fixed windows, returned one example at a time as the Trainer's sampler expects."""

    def __init__(self, config: DecisionMambaConfig, count: int = 16) -> None:
        batch = make_batch(config, batch=count, steps=4, seed=1)
        batch["labels"] = batch["actions"]
        self.rows = [{key: value[i] for key, value in batch.items()} for i in range(count)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


def left_pad(batch: dict, pad: int) -> dict:
    """Prepend `pad` padding steps holding garbage (but in-range) values and a zero attention mask."""
    garbage = {
        "attention_mask": 0,
        "timesteps": 3,
        "actions": 1 if not batch["actions"].is_floating_point() else 7,
    }
    padded = {}
    for key, value in batch.items():
        filler = torch.full_like(value[:, :1], garbage.get(key, 7)).repeat_interleave(pad, dim=1)
        padded[key] = torch.cat([filler, value], dim=1)
    return padded


ALL_PRESETS = sorted(PRESETS)
# The Decision Transformer inside this model: GPT-2's attention in place of the Mamba mixer (two heads).
ATTENTION = {"block_type": "attention", "num_attention_heads": 2}


@pytest.fixture(params=ALL_PRESETS)
def preset(request) -> str:
    return request.param


HIDE_PACKAGE = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_decision_mamba" or name.startswith("hf_decision_mamba."):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, _Hide())
sys.path = [p for p in sys.path if "hf_decision_mamba" not in p and not p.endswith("src")]
"""


def run_without_package(script: str, tmp_path: Path) -> str:
    """Run `script` in a fresh interpreter that cannot import hf_decision_mamba, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    code = HIDE_PACKAGE + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """Import `scripts/<name>.py` as a module (scripts/ is not a package); it is registered in `sys.modules`
    first because dataclasses look their module up while it executes."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class ShiftedActionsEnv(gym.Env):
    """Five steps of a constant observation with `Discrete(3, start=-1)` actions: reward 1 for the first
    action (-1), 0 for the others; an action outside the space raises. Records every action it receives."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(3, start=-1)

    def __init__(self) -> None:
        self.received: list[int] = []
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        self.received.append(int(action))
        self.steps += 1
        return np.zeros(2, dtype=np.float32), float(action == -1), False, self.steps >= 5, {}


SHIFTED_ACTIONS_ENV = "hf-decision-mamba-test/ShiftedActions-v0"
gym.register(SHIFTED_ACTIONS_ENV, entry_point=ShiftedActionsEnv)
