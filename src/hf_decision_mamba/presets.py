"""Named presets that reproduce the architectures and training recipes of the Decision Mamba papers.

Each preset has `config` (fields of `DecisionMambaConfig`) and `training` (fields of
`transformers.TrainingArguments`, plus `rtg_scale`/`target_return` hints). Numbers come from the papers in
`shared/seeds/` as summarised in REFERENCE.md, except where the project's learning benchmark measured a setting
that learns better (each such field says so beside it). This file is pure data so that it ships as remote code.
"""

from __future__ import annotations

import copy

# Shared building blocks -------------------------------------------------------------------------------------

_MUJOCO_TRAINING = {
    "per_device_train_batch_size": 64,
    "learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "warmup_steps": 10_000,
    "max_grad_norm": 0.25,
    "max_steps": 100_000,
    "lr_scheduler_type": "constant_with_warmup",
}
_ATARI_TRAINING = {
    "per_device_train_batch_size": 256,
    "learning_rate": 6e-4,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.1,
    "max_grad_norm": 1.0,
    # DT warms up over 512*20 tokens; at batch 256 x context 30 that is under 2 steps, so a small ratio.
    "warmup_steps": 0.01,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 5,
}
_MUJOCO = {"state_encoder": "linear", "action_space": "continuous", "action_tanh": True, "rtg_scale": 1000.0}
_ATARI = {
    "state_encoder": "atari_cnn",
    "state_shape": [4, 84, 84],
    "action_space": "discrete",
    "n_actions": 4,
    "action_tanh": False,
    "rtg_scale": 1.0,
    "target_return": 90.0,
    "env_id": "ALE/Breakout-v5",
    "max_ep_len": 10_000,
}
_DMAMBA = {
    "block_type": "dmamba",
    "token_layout": "rsa",
    "norm_type": "layer_norm",
    "use_mlp": True,
    "use_timestep_embedding": True,
    "residual_in_fp32": False,
}
_DEMA = {
    "block_type": "dema",
    "token_layout": "ras",
    "norm_type": "rms_norm",
    "use_mlp": False,
    "use_timestep_embedding": False,
    "residual_in_fp32": True,
}
_GLOMA = {**_DMAMBA, "block_type": "gloma", "local_window": 1}
# The paper adds DT's absolute timestep embedding to every token. On MuJoCo it makes Decision Mamba fall with longer
# training: medium-replay, K=20, 3 seeds, mean final return over three tasks after 2000 steps 2168 with it, 2554
# without it, the DT 2442 (HalfCheetah 4177 -> 3384 from 500 to 2000 steps with it). A recurrent model needs no
# position embedding. BENCHMARKS.md, "Learning", has the runs.
_DMAMBA_MUJOCO = {**_MUJOCO, **_DMAMBA, "use_timestep_embedding": False}
_DEMA_MUJOCO = {
    **_MUJOCO,
    **_DEMA,
    "embedding_size": 128,
    "hidden_size": 64,
    "state_size": 64,
    "num_hidden_layers": 3,
    "context_length": 20,
    "dropout": 0.1,
}


def _preset(description: str, config: dict, training: dict) -> dict:
    return {"description": description, "config": config, "training": training}


PRESETS: dict[str, dict] = {
    "dmamba-mujoco": _preset(
        "Decision Mamba (Ota 2024): DT with Mamba mixers, pre-LN + 4x GELU MLP, (R, s, a); no timestep embedding.",
        {
            **_DMAMBA_MUJOCO,
            "hidden_size": 128,
            "num_hidden_layers": 3,
            "context_length": 20,
            "dropout": 0.1,
        },
        _MUJOCO_TRAINING,
    ),
    "dmamba-hopper": _preset(
        "Decision Mamba for hopper-medium / hopper-medium-replay (hidden 256).",
        {
            **_DMAMBA_MUJOCO,
            "hidden_size": 256,
            "num_hidden_layers": 3,
            "context_length": 20,
            "dropout": 0.1,
            "state_dim": 11,
            "act_dim": 3,
            "env_id": "Hopper-v5",
            "target_return": 3600.0,
            "max_ep_len": 1000,
        },
        {**_MUJOCO_TRAINING, "learning_rate": 1e-3},
    ),
    "dmamba-atari": _preset(
        "Decision Mamba on Atari: 6 layers, hidden 128, context 30, DT's CNN state encoder.",
        {
            **_ATARI,
            **_DMAMBA,
            "hidden_size": 128,
            "num_hidden_layers": 6,
            "context_length": 30,
            "dropout": 0.1,
        },
        _ATARI_TRAINING,
    ),
    "mamba-rl-atari": _preset(
        "Mamba RL (seed 000): DT's Atari setup with Mamba blocks, 6 layers, context 30, batch 128.",
        {
            **_ATARI,
            **_DMAMBA,
            "hidden_size": 128,
            "num_hidden_layers": 6,
            "context_length": 30,
            "dropout": 0.1,
        },
        {**_ATARI_TRAINING, "per_device_train_batch_size": 128},
    ),
    "mamba-rl-atari-3l": _preset(
        "Mamba RL (seed 000) better config: 3 layers, context 16, dropout 0.1, batch 256, 1e6 transitions.",
        {
            **_ATARI,
            **_DMAMBA,
            "hidden_size": 128,
            "num_hidden_layers": 3,
            "context_length": 16,
            "dropout": 0.1,
        },
        _ATARI_TRAINING,
    ),
    "mamba-rl-atari-4l": _preset(
        "Mamba RL (seed 000) better config: 4 layers, context 16, dropout 0.2, batch 256, 1e6 transitions.",
        {
            **_ATARI,
            **_DMAMBA,
            "hidden_size": 128,
            "num_hidden_layers": 4,
            "context_length": 16,
            "dropout": 0.2,
        },
        _ATARI_TRAINING,
    ),
    "dema-mujoco": _preset(
        "DeMa (Dai et al. 2024), Transformer-like: RMSNorm + Mamba only, fp32 residual, no timestep embedding, "
        "(R_t, a_{t-1}, s_t) tokens over time (B3LD), embedding 128 projected to d_model 64, d_state 64.",
        _DEMA_MUJOCO,
        _MUJOCO_TRAINING,
    ),
    "dema-mujoco-bl3d": _preset(
        "DeMa with the three embeddings concatenated along features (BL3D): one token per step.",
        {**_DEMA_MUJOCO, "token_layout": "concat"},
        _MUJOCO_TRAINING,
    ),
    "dema-atari": _preset(
        "DeMa on Atari: Transformer-like, (R_t, a_{t-1}, s_t) tokens, d_state 128, CNN state encoder.",
        {
            **_ATARI,
            **_DEMA,
            "hidden_size": 128,
            "state_size": 128,
            "num_hidden_layers": 6,
            "context_length": 30,
            "dropout": 0.1,
        },
        _ATARI_TRAINING,
    ),
    "mambadm-mujoco": _preset(
        "MambaDM (arXiv 2406.02013): GLoMa blocks, a global Mamba plus a local Mamba over each timestep's "
        "tokens, fused by addition then a feed-forward network.",
        {
            **_MUJOCO,
            **_GLOMA,
            "hidden_size": 128,
            "num_hidden_layers": 3,
            "context_length": 20,
            "dropout": 0.1,
        },
        _MUJOCO_TRAINING,
    ),
    "mambadm-atari": _preset(
        "MambaDM GLoMa blocks on Atari: 6 layers, hidden 128, context 30, CNN state encoder.",
        {
            **_ATARI,
            **_GLOMA,
            "hidden_size": 128,
            "num_hidden_layers": 6,
            "context_length": 30,
            "dropout": 0.1,
        },
        _ATARI_TRAINING,
    ),
    "hf-mamba-dt": _preset(
        "Seed 004: transformers' Mamba blocks (RMSNorm + mixer, no MLP) in place of GPT-2 inside a Decision "
        "Transformer, trained with the HF Trainer recipe of the DT blog.",
        {
            **_MUJOCO,
            **_DEMA,
            "token_layout": "rsa",
            "use_timestep_embedding": True,
            "hidden_size": 128,
            "num_hidden_layers": 3,
            "context_length": 20,
            "dropout": 0.1,
        },
        {
            **{key: value for key, value in _MUJOCO_TRAINING.items() if key != "max_steps"},
            "warmup_steps": 0.1,
            "lr_scheduler_type": "linear",
            "num_train_epochs": 120,
        },
    ),
}


DEFAULT_TARGET_RETURNS: dict[str, float] = {
    "Hopper-v5": 3600.0,
    "HalfCheetah-v5": 12000.0,
    "Walker2d-v5": 5000.0,
    "ALE/Breakout-v5": 90.0,
    "ALE/Qbert-v5": 14000.0,
    "ALE/Pong-v5": 20.0,
    "ALE/Seaquest-v5": 1150.0,
}
"""The return DT and DMamba condition on per environment (keyed by the id evaluation runs in); a preset trained
in another environment than its own `env_id` takes its target from here (else from the data's best return)."""


def get_preset(name: str) -> dict:
    """Return a deep copy of preset `name`; a `ValueError` lists the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: expected one of {sorted(PRESETS)}.")
    return copy.deepcopy(PRESETS[name])
