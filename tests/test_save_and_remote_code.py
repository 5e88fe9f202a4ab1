"""A saved Decision Mamba reloads through the Auto classes, with the package or as Hub remote code without it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel

from conftest import make_batch, run_without_package, tiny_model
from hf_decision_mamba import DecisionMambaModel

REMOTE_CODE_FILES = {
    "configuration_decision_mamba.py",
    "modeling_decision_mamba.py",
    "policy_decision_mamba.py",
    "presets.py",
    "selective_scan.py",
    "validation_decision_mamba.py",
    *(f"selective_scan_{part}.py" for part in ("cbuild", "csrc", "fused", "numba", "ops", "torch")),
}


def save_tiny(folder: Path, preset: str = "mambadm-mujoco") -> tuple[DecisionMambaModel, dict]:
    model = tiny_model(
        preset, state_mean=[0.5] * 5, state_std=[2.0] * 5, env_id="Hopper-v5", target_return=3600.0
    )
    model.save_pretrained(folder)
    batch = make_batch(model.config, steps=4)
    torch.save({"batch": batch, "preds": model(**batch).action_preds.detach()}, folder / "expected.pt")
    return model, batch


def test_save_pretrained_writes_safetensors_config_and_remote_code(tmp_path):
    save_tiny(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json"} | REMOTE_CODE_FILES <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_decision_mamba.DecisionMambaConfig",
        "AutoModel": "modeling_decision_mamba.DecisionMambaModel",
    }
    assert config["state_mean"] == [0.5] * 5 and config["env_id"] == "Hopper-v5"
    assert "max_length" not in config


def test_auto_model_round_trip_with_the_package(tmp_path):
    model, batch = save_tiny(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, DecisionMambaModel)
    reloaded = AutoConfig.from_pretrained(tmp_path).to_dict()
    assert {**reloaded, "_name_or_path": ""} == {**model.config.to_dict(), "_name_or_path": ""}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(loaded.eval()(**batch).action_preds, model(**batch).action_preds)


def test_remote_code_loads_and_acts_where_the_package_cannot_be_imported(tmp_path):
    folder = tmp_path / "checkpoint"
    save_tiny(folder)
    stdout = run_without_package(
        f"""
        import torch
        try:
            import hf_decision_mamba
            raise SystemExit("the package should be hidden")
        except ModuleNotFoundError:
            pass
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        expected = torch.load({str(folder / "expected.pt")!r})
        preds = model(**expected["batch"]).action_preds
        torch.testing.assert_close(preds, expected["preds"])
        policy = model.policy(mode="recurrent")
        policy.reset(num_envs=2)
        action = policy.act(torch.zeros(2, 5).numpy())
        print("OK", action.shape)
        """,
        tmp_path,
    )
    assert "OK (2, 2)" in stdout
