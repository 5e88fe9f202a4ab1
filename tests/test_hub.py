"""Publishing: the exact upload folder (allow-listed, nothing secret), a card whose metadata the Hub can parse,
loading the folder as remote code where the package cannot be imported, and allow-listed pushes."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard

from conftest import run_without_package, tiny_model
from hf_decision_mamba.cli import push as push_cli
from hf_decision_mamba.evaluation import evaluate_policy
from hf_decision_mamba.hub import (
    build_upload_folder,
    publish,
    push_folder,
    render_model_card,
    select_model_files,
)
from hf_decision_mamba.training import build_trainer, prepare_run, train_and_finish
from test_training import tiny_args

REMOTE_CODE = {
    "configuration_decision_mamba.py",
    "modeling_decision_mamba.py",
    "policy_decision_mamba.py",
    "presets.py",
    "selective_scan.py",
    "validation_decision_mamba.py",
    *(f"selective_scan_{part}.py" for part in ("cbuild", "csrc", "fused", "numba", "ops", "torch")),
}
EXPECTED_UPLOAD = {"model.safetensors", "config.json", "README.md", "eval_results.json", "replay.mp4",
                   "training_args.json", *REMOTE_CODE}  # fmt: skip


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory) -> Path:
    """A saved tiny Hopper model with a real (short) evaluation, a replay, and the clutter of a training folder."""
    folder = tmp_path_factory.mktemp("trained")
    model = tiny_model("dmamba-hopper", state_dim=11, act_dim=3, state_mean=[0.0] * 11, state_std=[1.0] * 11)
    model.save_pretrained(folder)
    report = evaluate_policy(model, "Hopper-v5", num_episodes=2, max_episode_steps=15,
                             record_video=folder / "replay.mp4", progress=False)  # fmt: skip
    (folder / "eval_results.json").write_text(json.dumps(report))
    training = {
        "data": {"dataset": "d4rl:hopper-medium-v2"},
        "training": {"learning_rate": 1e-3, "max_steps": 9},
    }
    (folder / "training_args.json").write_text(json.dumps(training))
    for name, text in {".env": "HF_TOKEN=hf_secret", "token": "hf_secret", "training_args.bin": "pickle",
                       "secrets.py": "TOKEN = 'hf_secret'", "notes.md": "private"}.items():  # fmt: skip
        (folder / name).write_text(text)
    for name in ("checkpoint-9", "runs", ".cache"):
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_text("old")
    return folder


def test_only_allow_listed_files_are_selected_and_copied(trained_folder, tmp_path):
    assert set(select_model_files(trained_folder)) == EXPECTED_UPLOAD - {"README.md"}
    upload = build_upload_folder(trained_folder, tmp_path / "upload", repo_id="user/tiny-hopper")
    assert {path.name for path in upload.iterdir()} == EXPECTED_UPLOAD
    assert not any("hf_secret" in path.read_text(errors="ignore") for path in upload.iterdir())


def test_upload_folder_refuses_a_non_empty_destination_and_a_folder_without_a_model(trained_folder, tmp_path):
    with pytest.raises(ValueError, match="destination=.*not empty"):
        build_upload_folder(trained_folder, trained_folder)
    with pytest.raises(ValueError, match="no model.safetensors, config.json"):
        build_upload_folder(tmp_path, tmp_path / "upload")


def test_card_metadata_parses_with_huggingface_hub(trained_folder, tmp_path):
    upload = build_upload_folder(trained_folder, tmp_path / "upload", repo_id="user/tiny-hopper")
    card = ModelCard.load(upload / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag) == ("transformers", "reinforcement-learning")
    assert {"decision-mamba", "reinforcement-learning", "Hopper-v5", "dmamba-hopper"} <= set(data.tags)
    assert data.datasets == ["edbeeching/decision_transformer_gym_replay"]
    report = json.loads((trained_folder / "eval_results.json").read_text())["results"][0]
    by_type = {result.metric_type: result for result in data.eval_results}
    assert by_type["mean_reward"].dataset_name == "Hopper-v5"
    assert (
        by_type["mean_reward"].metric_value == f"{report['return_mean']:.2f} +/- {report['return_std']:.2f}"
    )
    assert by_type["normalized_score"].metric_value == round(report["normalized_score_mean"], 2)
    assert 'AutoModel.from_pretrained("user/tiny-hopper", trust_remote_code=True)' in card.text
    assert "https://huggingface.co/user/tiny-hopper/resolve/main/replay.mp4" in card.text


def test_a_card_names_the_attention_blocks_a_decision_transformer(tmp_path):
    tiny_model("dmamba-mujoco", block_type="attention").save_pretrained(tmp_path / "dt")
    tiny_model("dmamba-mujoco").save_pretrained(tmp_path / "dm")
    dt, dm = render_model_card(tmp_path / "dt"), render_model_card(tmp_path / "dm")
    assert "decision-transformer" in dt.data.tags and "mamba" not in dt.data.tags
    assert "Decision Transformer (GPT-2 attention" in dt.text and "Decision Transformer" not in dm.text
    assert {"decision-mamba", "mamba"} <= set(dm.data.tags)


def test_card_without_evaluation_or_hub_dataset_has_no_model_index(tmp_path):
    tiny_model("dmamba-mujoco").save_pretrained(tmp_path)
    data = render_model_card(tmp_path).data
    assert (
        data.eval_results is None and data.datasets is None and data.pipeline_tag == "reinforcement-learning"
    )


def test_upload_folder_loads_as_remote_code_where_the_package_cannot_be_imported(trained_folder, tmp_path):
    upload = build_upload_folder(trained_folder, tmp_path / "upload", repo_id="user/tiny-hopper")
    stdout = run_without_package(
        f"""
        import json
        import numpy as np
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(upload)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert model.config.env_id == "Hopper-v5" and len(model.config.state_mean) == 11
        policy = model.policy(mode="window")
        policy.reset(num_envs=3)
        print("OK", policy.act(np.zeros((3, 11), dtype=np.float32)).shape)
        """,
        tmp_path,
    )
    assert "OK (3, 3)" in stdout


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`: records what would be uploaded, and from where."""

    def __init__(self) -> None:
        self.uploads: list[dict] = []

    def create_repo(self, repo_id: str, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, folder_path: str, allow_patterns: list[str], **kwargs) -> str | Future:
        files = sorted(path.name for path in Path(folder_path).iterdir())
        self.uploads.append(
            {"files": files, "allow_patterns": allow_patterns, "folder": folder_path, **kwargs}
        )
        if not kwargs.get("run_as_future"):
            return "commit"
        done = Future()
        done.set_result("commit")
        return done


def test_push_names_every_uploaded_file_and_cleans_its_temporary_folder(trained_folder):
    hub = RecordingHub()
    assert publish(trained_folder, "user/tiny-hopper", api=hub) == "commit"
    (upload,) = hub.uploads
    assert set(upload["files"]) == set(upload["allow_patterns"]) == EXPECTED_UPLOAD
    assert upload["repo_id"] == "user/tiny-hopper" and not Path(upload["folder"]).exists()


def test_push_folder_refuses_an_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="has no files"):
        push_folder(tmp_path, "user/x", api=RecordingHub())


def test_dmamba_push_dry_run_builds_and_lists_the_folder(trained_folder, tmp_path, capsys):
    upload = tmp_path / "upload"
    argv = [str(trained_folder), "--repo_id", "user/tiny-hopper", "--dry_run", "--upload_dir", str(upload)]
    assert push_cli.main(argv) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in EXPECTED_UPLOAD) and ".env" not in listed
    assert {path.name for path in upload.iterdir()} == EXPECTED_UPLOAD


def test_pushes_during_training_upload_the_model_and_a_resumable_checkpoint_never_the_pickled_args(
    tmp_path, monkeypatch
):
    hub = RecordingHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)  # the Trainer creates the repo through it
    args = tiny_args(tmp_path, "--max_steps", "2", "--save_steps", "1", "--push_to_hub", "--hub_model_id", "user/run",
                     "--hub_strategy", "checkpoint", "--hub_token", "hf_secret", "--env_eval_steps", "2")  # fmt: skip
    run = prepare_run(args)
    trainer, callback = build_trainer(run, hub_api=hub)
    train_and_finish(run, trainer, callback)

    messages = [upload["commit_message"] for upload in hub.uploads]
    assert messages == ["Training in progress, step 1", "Training in progress, step 1, checkpoint",
                        "Training in progress, step 2", "Training in progress, step 2, checkpoint",
                        "End of training"]  # fmt: skip
    model_push, checkpoint_push, final_push = hub.uploads[0], hub.uploads[1], hub.uploads[-1]
    assert set(model_push["files"]) == EXPECTED_UPLOAD - {
        "eval_results.json",
        "replay.mp4",
        "training_args.json",
    }
    assert checkpoint_push["path_in_repo"] == "last-checkpoint"
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= set(
        checkpoint_push["files"]
    )
    assert set(final_push["files"]) == EXPECTED_UPLOAD | {"training_curves.png"}  # the run draws its curves
    for upload in hub.uploads:
        assert (
            set(upload["files"]) == set(upload["allow_patterns"])
            and "training_args.bin" not in upload["files"]
        )
        assert upload["token"] == "hf_secret" and upload["repo_id"] == "user/run"


def test_the_card_says_how_to_install_and_what_the_import_and_remote_code_do(trained_folder, monkeypatch):
    from hf_decision_mamba.hub.card import INSTALL_ENV, default_install_command

    card = render_model_card(trained_folder, repo_id="user/tiny-hopper", install_command="pip install ./dm")
    assert "Install the package: `pip install ./dm`." in card.text
    assert (
        "import hf_decision_mamba  # registers" in card.text
        and "`trust_remote_code=True` instead" in card.text
    )
    assert "pip install hf-decision-mamba" not in card.text, "that name does not resolve on every index"
    monkeypatch.setenv(INSTALL_ENV, 'pip install "hf-decision-mamba @ git+https://example.org/dm"')
    assert default_install_command() == 'pip install "hf-decision-mamba @ git+https://example.org/dm"'
    monkeypatch.delenv(INSTALL_ENV)
    assert default_install_command().startswith("pip install ")


def test_the_card_embeds_the_training_curves_beside_the_replay(trained_folder, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(trained_folder, folder)
    (folder / "training_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    card = render_model_card(folder, repo_id="user/tiny-hopper")
    row = card.text.split("<table><tr>")[1].split("</tr></table>")[0]
    assert "resolve/main/replay.mp4" in row and "resolve/main/training_curves.png" in row
    assert "training_curves.png" in select_model_files(folder)
