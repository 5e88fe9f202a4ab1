"""Nothing lost: `dmamba train` killed mid-run (SIGKILL or SIGTERM) keeps a complete checkpoint, and running the
same command again resumes from it and finishes with the planned number of steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hf_decision_mamba.training import last_complete_checkpoint
from test_training import TINY_TRAIN_ARGS


def train_command(output_dir: Path, max_steps: int, save_steps: int) -> list[str]:
    return [sys.executable, "-m", "hf_decision_mamba.cli.train", *TINY_TRAIN_ARGS, "--output_dir", str(output_dir),
            "--max_steps", str(max_steps), "--save_steps", str(save_steps), "--no_env_eval", "--report_to", "none",
            "--logging_steps", "1"]  # fmt: skip


# Idle OpenMP threads sleep instead of spinning, so that concurrent test processes do not starve each other.
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def start_and_wait_for_a_checkpoint(
    command: list[str], output_dir: Path, timeout: float = 240
) -> subprocess.Popen:
    """Start `command` and return once it has written a complete checkpoint (it must still be running)."""
    log = output_dir.parent / f"{output_dir.name}.log"
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + timeout
    while last_complete_checkpoint(output_dir) is None:
        assert process.poll() is None, (
            f"training ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    return process


def step_of(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[1])


def test_sigkill_then_the_same_command_resumes_and_finishes_with_the_same_number_of_steps(tmp_path):
    command = train_command(tmp_path, max_steps=12, save_steps=2)
    process = start_and_wait_for_a_checkpoint(command, tmp_path)
    process.kill()
    process.wait(timeout=60)
    killed_at = step_of(last_complete_checkpoint(tmp_path))
    assert killed_at < 12

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming from" in rerun.stderr and "Trained 12/12 steps" in rerun.stdout
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 12
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == list(range(1, 13))  # no step lost or repeated across the kill
    assert step_of(last_complete_checkpoint(tmp_path)) == 12


def test_sigterm_saves_a_checkpoint_and_exits_with_143(tmp_path):
    command = train_command(tmp_path, max_steps=100_000, save_steps=100_000)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    seen = []
    for line in process.stdout:  # wait until training is underway
        seen.append(line)
        if "'loss'" in line:
            break
    assert last_complete_checkpoint(tmp_path) is None, "no scheduled checkpoint before the signal"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, "".join(seen)[-2000:] + output[-2000:]
    stopped_at = step_of(last_complete_checkpoint(tmp_path))
    assert 0 < stopped_at < 100_000
    assert (
        "Stopped by SIGTERM at step" in output
        and f"resume point: {tmp_path}/checkpoint-{stopped_at}." in output
    )
