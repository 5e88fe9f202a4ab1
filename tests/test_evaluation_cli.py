"""`dmamba evaluate`: load a saved checkpoint, evaluate it, write eval_results.json and an H.264 replay."""

from __future__ import annotations

import json

import pytest
from transformers import DecisionTransformerConfig, DecisionTransformerModel

from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.cli.evaluate import main
from hf_decision_mamba.evaluation import is_browser_playable


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny randomly initialised Decision Mamba for Hopper, saved with `save_pretrained`."""
    config = DecisionMambaConfig(
        state_dim=11, act_dim=3, hidden_size=16, num_hidden_layers=1, context_length=4,
        env_id="hopper-medium-v2", target_return=3600.0,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("checkpoint")
    DecisionMambaModel(config).save_pretrained(path)
    return path


def test_evaluate_writes_results_and_video(checkpoint, tmp_path, capsys):
    argv = [str(checkpoint), "--num_episodes", "2", "--max_episode_steps", "8", "--output_dir", str(tmp_path),
            "--target_return", "3600", "--target_return", "1800", "--device", "cpu", "--no_progress"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["env_id"] == "Hopper-v5" and results["model"] == str(checkpoint)
    assert [r["target_return"] for r in results["results"]] == [3600.0, 1800.0]
    assert all(len(r["returns"]) == 2 for r in results["results"])
    assert is_browser_playable(tmp_path / "replay.mp4")
    assert "normalized score" in capsys.readouterr().out


def test_no_video_and_bad_inputs(checkpoint, tmp_path, capsys):
    argv = [str(checkpoint), "--num_episodes", "1", "--max_episode_steps", "3", "--output_dir", str(tmp_path),
            "--no_video", "--no_progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert not (tmp_path / "replay.mp4").exists()
    assert main([*argv, "--repeat_action_probability", "0.5"]) == 2
    assert "repeat_action_probability=0.5" in capsys.readouterr().err
    assert main([*argv, "--env_id", "NoSuchEnv-v0"]) == 2
    assert "env_id='NoSuchEnv-v0'" in capsys.readouterr().err


def test_evaluates_a_transformers_decision_transformer(tmp_path):
    config = DecisionTransformerConfig(
        state_dim=11, act_dim=3, hidden_size=16, n_layer=1, n_head=1, max_ep_len=100
    )
    DecisionTransformerModel(config).save_pretrained(tmp_path / "dt")
    argv = [str(tmp_path / "dt"), "--env_id", "hopper", "--target_return", "3600", "--num_episodes", "2",
            "--max_episode_steps", "3", "--output_dir", str(tmp_path / "out"), "--no_video", "--no_progress"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["results"][0]["episode_lengths"] == [3, 3]
