"""Two CPU processes under `torchrun` (gloo, `use_cpu`): the ranks train on different windows, end with identical
weights, and only rank 0 evaluates, saves checkpoints and pushes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from test_training import TINY_TRAIN_ARGS

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from concurrent.futures import Future
    from pathlib import Path
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    from hf_decision_mamba.training import build_trainer, parse_train_args, prepare_run, train_and_finish

    class RecordingWindows(torch.utils.data.Dataset):
        '''The training windows, remembering which indices this process loaded.'''

        def __init__(self, windows):
            self.windows, self.seen = windows, []

        def __len__(self):
            return len(self.windows)

        def __getitem__(self, index):
            self.seen.append(int(index))
            return self.windows[index]

    class RecordingHub:
        '''Stands in for HfApi: records the uploads this process makes.'''

        def __init__(self):
            self.uploads = []

        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, folder_path, **kwargs):
            self.uploads.append(sorted(os.listdir(folder_path)))
            return "commit"

    run = prepare_run(parse_train_args(sys.argv[1:]))
    run.data.train = RecordingWindows(run.data.train)
    hub = RecordingHub()
    trainer, callback = build_trainer(run, hub_api=hub)
    trainer.hub_model_id = "user/ddp"
    result = train_and_finish(run, trainer, callback)
    trainer.push_to_hub()
    rank = trainer.args.process_index
    weights = {name: tensor.detach().contiguous() for name, tensor in trainer.model.state_dict().items()}
    save_file(weights, str(run.output_dir / f"weights_rank{rank}.safetensors"))
    record = {"world_size": trainer.args.world_size, "seen": run.data.train.seen,
              "evaluations": len(callback.history), "final_evaluation": result.evaluation is not None,
              "saved_checkpoints": trainer.saved_checkpoints, "uploads": hub.uploads,
              "global_step": result.global_step}
    (run.output_dir / f"rank{rank}.json").write_text(json.dumps(record))
    """
)


def test_two_cpu_processes_shard_windows_agree_on_weights_and_only_rank_zero_evaluates_saves_pushes(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    output_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               *TINY_TRAIN_ARGS, "--output_dir", str(output_dir), "--max_steps", "4", "--save_steps", "2",
               "--per_device_train_batch_size", "4", "--env_eval_steps", "2", "--report_to", "none"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rank0, rank1 = (json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 4
    # The Trainer's distributed sampler hands each rank its own windows (4 steps x 4 windows each).
    assert len(set(rank0["seen"])) >= 16 and len(set(rank1["seen"])) >= 16
    assert not set(rank0["seen"]) & set(rank1["seen"])

    weights0, weights1 = (load_file(output_dir / f"weights_rank{rank}.safetensors") for rank in (0, 1))
    assert weights0.keys() == weights1.keys()
    assert all(torch.equal(weights0[name], weights1[name]) for name in weights0)

    assert (rank0["evaluations"], rank0["final_evaluation"]) == (2, True)
    assert (rank1["evaluations"], rank1["final_evaluation"]) == (0, False)
    assert [os.path.basename(path) for path in rank0["saved_checkpoints"]] == ["checkpoint-2", "checkpoint-4"]
    assert rank1["saved_checkpoints"] == []
    assert len(rank0["uploads"]) == 1 and "model.safetensors" in rank0["uploads"][0]
    assert rank1["uploads"] == []
    checkpoint = output_dir / "checkpoint-4"
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
