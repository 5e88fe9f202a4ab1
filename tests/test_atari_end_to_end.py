"""Issue 5, item 4: proof on the real emulator. `dmamba collect` records a tiny Breakout dataset, `dmamba train`
trains a small model on it (evaluating in the game during training), and `dmamba evaluate` plays real episodes with
sticky actions in both inference modes and writes an H.264 replay."""

from __future__ import annotations

import json
import math

import pytest

from hf_decision_mamba.cli import collect, evaluate, train
from hf_decision_mamba.data import iter_episodes, load_trajectories
from hf_decision_mamba.evaluation import probe_video


def test_collect_train_and_evaluate_on_the_real_emulator(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert collect.main(["--env", "ALE/Breakout-v5", "--behaviour", "random", "--episodes", "2",
                         "--max-episode-steps", "150", "--seed", "0", "--output", str(data), "--no-progress"]) == 0  # fmt: skip
    episodes = list(iter_episodes(load_trajectories(data)))
    assert len(episodes) == 2 and all(e["observations"].shape[1:] == (84, 84) for e in episodes)

    assert train.main([
        "--preset", "dmamba-atari", "--dataset", str(data), "--env_id", "breakout",
        "--config_overrides", "hidden_size=32,num_hidden_layers=2,state_size=8,context_length=4",
        "--per_device_train_batch_size", "8", "--max_steps", "4", "--logging_steps", "1", "--save_strategy", "no",
        "--env_eval_steps", "2", "--env_eval_episodes", "1", "--env_eval_max_episode_steps", "30",
        "--no_record_replay", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(run),
    ]) == 0  # fmt: skip
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert all(math.isfinite(e["loss"]) for e in history if "loss" in e)
    assert [e["step"] for e in history if "env_eval/return_mean" in e] == [
        2,
        4,
    ]  # every evaluation is reported
    final = json.loads((run / "eval_results.json").read_text())  # and the last one, on the final model
    assert final["env_id"] == "ALE/Breakout-v5" and final["results"][0]["episode_lengths"] == [30]

    for mode in ("window", "recurrent"):
        out = tmp_path / mode
        assert evaluate.main([str(run), "--mode", mode, "--num_episodes", "2", "--max_episode_steps", "60",
                              "--output_dir", str(out), "--device", "cpu", "--no_progress"]) == 0  # fmt: skip
        report = json.loads((out / "eval_results.json").read_text())
        assert (report["mode"], report["protocol"]["repeat_action_probability"]) == (mode, 0.25)
        result = report["results"][0]
        assert len(result["returns"]) == 2 and all(0 < n <= 60 for n in result["episode_lengths"])
        assert result["normalized_scores"] == pytest.approx([100 * (r - 2) / 28 for r in result["returns"]])
        video = probe_video(out / "replay.mp4")
        assert (video.codec, video.pix_fmt, video.width, video.height) == ("h264", "yuv420p", 160, 210)
