"""The training recipe: argument groups, the same pipeline for Decision Mamba and Decision Transformer, atomic
checkpoints, resume resolution, and a whole tiny run with TensorBoard logs and environment scores."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, DecisionTransformerModel

from conftest import make_batch
from hf_decision_mamba import DecisionMambaModel
from hf_decision_mamba.cli import train as train_cli
from hf_decision_mamba.data import canonical_features
from hf_decision_mamba.data.synthetic import synthetic_episodes
from hf_decision_mamba.training import (
    DataArguments,
    DecisionTrainer,
    DecisionTransformerForTraining,
    ModelArguments,
    build_config,
    build_model,
    build_optimizer,
    infer_env_id,
    last_complete_checkpoint,
    parse_train_args,
    prepare_run,
    resolve_resume,
    run_training,
)

# A run that takes seconds: six embedded Hopper episodes, a one-layer model, two short evaluation episodes.
TINY_TRAIN_ARGS = [
    "--max_episodes", "6",
    "--config_overrides", "hidden_size=16,num_hidden_layers=1,state_size=4,context_length=5,dropout=0.0",
    "--per_device_train_batch_size", "8",
    "--warmup_steps", "0",
    "--use_cpu",
    "--disable_tqdm", "true",
    "--env_eval_episodes", "2",
    "--env_eval_max_episode_steps", "20",
]  # fmt: skip


def tiny_args(output_dir: Path, *extra: str):
    return parse_train_args([*TINY_TRAIN_ARGS, "--output_dir", str(output_dir), *extra])


# -- arguments -------------------------------------------------------------------------------------------------


def test_preset_training_section_becomes_the_defaults_and_the_command_line_wins():
    args = parse_train_args(["--preset", "dmamba-hopper", "--learning_rate", "5e-4"])
    assert args.training.learning_rate == 5e-4  # command line
    assert args.training.max_steps == 100_000 and args.training.max_grad_norm == 0.25  # preset
    assert args.training.report_to == ["tensorboard"] and args.training.enable_jit_checkpoint  # recipe
    assert args.training.output_dir == "outputs/dmamba-hopper-hopper"
    assert args.model.model_type == "decision_mamba" and args.data.dataset == "embedded:hopper"


def test_every_trainer_option_parses():
    args = parse_train_args(
        ["--gradient_accumulation_steps", "3", "--lr_scheduler_type", "cosine", "--seed", "7"]
    )
    assert (args.training.gradient_accumulation_steps, args.training.seed) == (3, 7)
    assert args.training.lr_scheduler_type.value == "cosine"


def test_arguments_from_a_yaml_file_get_the_same_preset_defaults(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("preset: dema-mujoco\nlearning_rate: 0.0005\ndataset: d4rl:walker2d-medium-v2\n")
    args = parse_train_args([str(path)])
    assert (args.model.preset, args.training.learning_rate, args.training.max_steps) == (
        "dema-mujoco",
        5e-4,
        100_000,
    )
    assert args.training.output_dir == "outputs/dema-mujoco-walker2d-medium-v2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("hidden_sise=64", "unknown field"),
        ("hidden_size", "expected key=value"),
        ("block_type=rnn", "block_type"),
    ],
)
def test_bad_config_overrides_are_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_config(ModelArguments(config_overrides=overrides), env_id=None)


def test_config_overrides_read_true_and_false_in_any_case_as_booleans():
    # "False" used to stay a string, and a string is truthy: the override silently did the opposite.
    overrides = "action_tanh=False,use_mlp=TRUE,use_timestep_embedding=false"
    config = build_config(ModelArguments(config_overrides=overrides), env_id=None)
    assert (config.action_tanh, config.use_mlp, config.use_timestep_embedding) == (False, True, False)
    with pytest.raises(ValueError, match=r"action_tanh='no': expected true or false"):
        build_config(ModelArguments(config_overrides="action_tanh=no"), env_id=None)


@pytest.mark.parametrize(
    ("dataset", "config", "env_id"),
    [("embedded:hopper", None, "Hopper-v5"), ("d4rl:walker2d-medium-v2", None, "Walker2d-v5"),
     ("edbeeching/decision_transformer_gym_replay", "halfcheetah-expert-v2", "HalfCheetah-v5"),
     ("jat:breakout", None, "ALE/Breakout-v5"), ("/data/my-episodes", None, None)],
)  # fmt: skip
def test_the_environment_is_inferred_from_the_dataset(dataset, config, env_id):
    assert infer_env_id(DataArguments(dataset=dataset, dataset_config=config)) == env_id


def test_dmamba_train_reports_invalid_inputs_with_exit_status_2(capsys):
    assert train_cli.main(["--preset", "dmamba-mujoco", "--dataset", "/data/my-episodes"]) == 2
    assert "env_id: none given and none inferred from dataset='/data/my-episodes'" in capsys.readouterr().err


def test_config_is_sized_to_the_environment():
    config = build_config(ModelArguments(preset="dmamba-mujoco"), env_id="Hopper-v5")
    assert (config.state_dim, config.act_dim, config.env_id) == (11, 3, "Hopper-v5")
    with pytest.raises(ValueError, match="preset='dmamba-atari'.*continuous"):
        build_config(ModelArguments(preset="dmamba-atari"), env_id="Hopper-v5")


# -- Decision Transformer through the same pipeline -------------------------------------------------------------


def test_decision_transformer_gets_the_decision_mamba_sizes_and_acting_fields():
    args = ModelArguments(
        model_type="decision_transformer", config_overrides="hidden_size=32,num_hidden_layers=2"
    )
    config = build_config(args, env_id="Hopper-v5")
    assert (config.hidden_size, config.n_layer, config.n_head, config.n_inner) == (32, 2, 1, 128)
    assert (config.context_length, config.rtg_scale, config.target_return) == (20, 1000.0, 3600.0)
    assert isinstance(build_model(config, args), DecisionTransformerForTraining)
    with pytest.raises(ValueError, match="decision_transformer.*continuous"):
        build_config(ModelArguments(model_type="decision_transformer", preset="dmamba-atari"), env_id=None)


def test_decision_transformer_adaptor_adds_the_masked_loss_and_saves_a_plain_dt(tmp_path):
    args = ModelArguments(
        model_type="decision_transformer", config_overrides="hidden_size=16,num_hidden_layers=1"
    )
    model = build_model(build_config(args, env_id="Hopper-v5"), args).eval()
    batch = make_batch(
        build_config(ModelArguments(), env_id="Hopper-v5"), batch=3, steps=5
    )  # the same collated fields
    batch["attention_mask"][:, :2] = 0  # left padding
    output = model(**batch, labels=batch["actions"])
    real = batch["attention_mask"] > 0
    expected = torch.nn.functional.mse_loss(output.action_preds[real], batch["actions"][real])
    torch.testing.assert_close(output.loss, expected)

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["DecisionTransformerModel"]
    plain = AutoModel.from_pretrained(tmp_path)
    assert type(plain) is DecisionTransformerModel
    assert plain.state_dict().keys() == model.state_dict().keys()
    torch.testing.assert_close(plain.eval()(**batch).action_preds, output.action_preds)


def test_the_decision_transformer_adaptor_stops_at_a_nan_loss_like_decision_mamba():
    args = ModelArguments(
        model_type="decision_transformer", config_overrides="hidden_size=16,num_hidden_layers=1"
    )
    model = build_model(build_config(args, env_id="Hopper-v5"), args)
    batch = make_batch(build_config(ModelArguments(), env_id="Hopper-v5"), batch=2, steps=4)
    with torch.no_grad():
        model.predict_action[0].weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"^loss: got nan, expected a finite number; .*--learning_rate"):
        model(**batch, labels=batch["actions"])


def test_optimizer_groups_decay_only_linear_and_conv_weights():
    args = ModelArguments(
        model_type="decision_transformer", config_overrides="hidden_size=16,num_hidden_layers=1"
    )
    model = build_model(build_config(args, env_id="Hopper-v5"), args)
    training = parse_train_args(["--weight_decay", "0.1", "--use_cpu"]).training
    decay, no_decay = build_optimizer(model, training).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "encoder.h.0.attn.c_attn.weight" in decayed and "embed_state.weight" in decayed
    assert not any(("ln" in n or n.endswith("bias") or "embed_timestep" in n or "wpe" in n) for n in decayed)


# -- checkpoints ----------------------------------------------------------------------------------------------


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_resume_picks_the_last_complete_checkpoint(tmp_path):
    assert resolve_resume(None, tmp_path) is None  # nothing to resume: a fresh start
    _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 15, complete=False)  # killed while writing (e.g. by an older trainer)
    assert resolve_resume(None, tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume("last", tmp_path) == str(tmp_path / "checkpoint-10")
    assert resolve_resume("false", tmp_path) is None
    assert resolve_resume(str(tmp_path / "checkpoint-5"), tmp_path) == str(tmp_path / "checkpoint-5")
    with pytest.raises(ValueError, match="resume_from_checkpoint=.*complete Trainer checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-15"), tmp_path)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        resolve_resume("last", tmp_path / "empty")


class FailingSave(DecisionTrainer):
    """Dies while writing the optimizer of its checkpoint at step 2, as a killed process would."""

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.state.global_step == 2:
            raise KeyboardInterrupt("killed mid-checkpoint")
        super()._save_optimizer_and_scheduler(output_dir)


def test_a_checkpoint_interrupted_while_writing_never_appears(tmp_path):
    run = prepare_run(tiny_args(tmp_path, "--max_steps", "3", "--save_steps", "1", "--report_to", "none"))
    trainer = FailingSave(model=run.model, args=run.args.training, train_dataset=run.data.train,
                          data_collator=run.data.collator)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (tmp_path / ".staging" / "checkpoint-2" / "model.safetensors").is_file()  # the half-written one
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")


# -- whole runs -------------------------------------------------------------------------------------------------


def _tensorboard_scalars(output_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in glob.glob(str(output_dir / "runs" / "*")):
        accumulator = EventAccumulator(events)
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.mark.parametrize("model_type", ["decision_mamba", "decision_transformer"])
def test_a_tiny_run_logs_trains_evaluates_and_writes_a_publishable_folder(tmp_path, model_type):
    args = tiny_args(tmp_path, "--model_type", model_type, "--max_steps", "4", "--save_steps", "2",
                     "--logging_steps", "1", "--env_eval_steps", "2", "--hub_token", "hf_SECRET")  # fmt: skip
    result = run_training(args)

    assert (result.global_step, result.interrupted, result.resumed_from) == (4, False, None)
    assert {"train/loss", "train/learning_rate", "train/env_eval/return_mean"} <= _tensorboard_scalars(
        tmp_path
    )
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "env_eval/return_mean" in e] == [2, 4]
    assert result.training_eval["last"]["step"] == 4 and "best" in result.training_eval["best"]["label"]
    evaluation = json.loads((tmp_path / "eval_results.json").read_text())
    assert (
        evaluation["results"][0]["returns"] == result.training_eval["last"]["report"]["results"][0]["returns"]
    )
    assert (tmp_path / "replay.mp4").stat().st_size > 0 and (tmp_path / "README.md").is_file()
    recorded = (tmp_path / "training_args.json").read_text()
    assert "hf_SECRET" not in recorded and json.loads(recorded)["model"]["model_type"] == model_type
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / ".staging").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(
        loaded, DecisionMambaModel if model_type == "decision_mamba" else DecisionTransformerModel
    )
    assert loaded.config.state_mean is not None and loaded.config.env_id == "Hopper-v5"


def test_an_atari_preset_trains_on_frames_with_discrete_actions(tmp_path):
    episodes = synthetic_episodes([12, 15], atari=True, n_actions=4)
    Dataset.from_list(episodes, features=canonical_features(atari=True, discrete=True)).save_to_disk(
        tmp_path / "data"
    )
    args = parse_train_args([
        "--preset", "dmamba-atari", "--dataset", str(tmp_path / "data"), "--env_id", "breakout",
        "--config_overrides", "hidden_size=16,num_hidden_layers=1,state_size=4,context_length=4",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--output_dir", str(tmp_path / "run"),
        "--env_eval_episodes", "2", "--env_eval_max_episode_steps", "10", "--use_cpu", "--report_to", "none",
    ])  # fmt: skip
    result = run_training(args)
    assert result.global_step == 2 and result.evaluation["env_id"] == "ALE/Breakout-v5"
    config = AutoModel.from_pretrained(tmp_path / "run").config
    assert (config.action_space, config.n_actions, config.env_id) == ("discrete", 4, "ALE/Breakout-v5")


def test_rerunning_a_finished_run_resumes_instead_of_starting_over(tmp_path):
    first = run_training(tiny_args(tmp_path, "--max_steps", "2", "--save_steps", "2", "--no_env_eval"))
    again = run_training(tiny_args(tmp_path, "--max_steps", "2", "--save_steps", "2", "--no_env_eval"))
    assert first.global_step == again.global_step == 2
    assert again.resumed_from == str(tmp_path / "checkpoint-2")


def _count_evaluations(monkeypatch) -> list[int]:
    """Patch the callback's `evaluate_policy` to record each evaluation's episode count."""
    from hf_decision_mamba.evaluation import callback as callback_module

    calls: list[int] = []
    evaluate = callback_module.evaluate_policy

    def counting(*args, **kwargs):
        calls.append(kwargs["num_episodes"])
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(callback_module, "evaluate_policy", counting)
    return calls


def test_dmamba_train_evaluates_the_final_model_once_and_prints_one_final_table(
    tmp_path, capsys, monkeypatch
):
    calls = _count_evaluations(monkeypatch)
    argv = [*TINY_TRAIN_ARGS, "--output_dir", str(tmp_path), "--max_steps", "4", "--env_eval_steps", "2",
            "--report_to", "none"]  # fmt: skip
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert len(calls) == 2, "step 2, then the final model at step 4: once"
    assert out.count("final model (LAST, step 4)") == 1 and out.count("return (mean ± std)") == 1
    assert f"Training curves: {tmp_path / 'training_curves.png'}" in out
    evaluation = json.loads((tmp_path / "eval_results.json").read_text())
    assert evaluation["video"] == str(tmp_path / "replay.mp4") and (tmp_path / "replay.mp4").is_file()


def test_env_eval_steps_zero_evaluates_only_at_the_end(tmp_path, monkeypatch):
    calls = _count_evaluations(monkeypatch)
    result = run_training(
        tiny_args(tmp_path, "--max_steps", "3", "--env_eval_steps", "0", "--report_to", "none")
    )
    assert len(calls) == 1 and result.evaluation is not None
    assert [record["step"] for record in result.training_eval["history"]] == [3]


def test_every_run_draws_its_training_curves_and_the_card_shows_them(tmp_path):
    from PIL import Image

    result = run_training(
        tiny_args(
            tmp_path, "--max_steps", "3", "--logging_steps", "1", "--no_env_eval", "--report_to", "none"
        )
    )
    curves = tmp_path / "training_curves.png"
    assert result.training_curves == str(curves) and Image.open(curves).size[0] > 300
    card = (tmp_path / "README.md").read_text()
    assert 'src="training_curves.png"' in card and "training_curves.png" in card.split("## Files")[1]


def test_training_curves_plot_the_loss_and_each_evaluation_against_its_target(tmp_path):
    from hf_decision_mamba.training.curves import loss_series, plot_training_curves, return_series

    log = [{"loss": 1.0, "step": 1}, {"loss": 0.5, "step": 2}, {"env_eval/return_mean": 10.0, "step": 2}]
    result = {"target_return": 3600.0, "return_mean": 10.0, "return_std": 2.0}
    evaluations = [{"step": 2, "report": {"results": [result]}}]
    assert loss_series(log) == {"training loss": ([1, 2], [1.0, 0.5])}
    assert return_series(evaluations) == [{"target": 3600.0, "steps": [2], "mean": [10.0], "std": [2.0]}]
    path = plot_training_curves(log, evaluations, tmp_path / "curves.png", title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_decision_transformer_is_built_saved_and_loaded_without_token_id_warnings(tmp_path, capfd, caplog):
    run = prepare_run(tiny_args(tmp_path, "--model_type", "decision_transformer", "--report_to", "none"))
    run.model.save_pretrained(tmp_path / "dt")
    AutoModel.from_pretrained(tmp_path / "dt")
    shown = capfd.readouterr().err + caplog.text
    assert "bos_token_id" not in shown and "eos_token_id" not in shown
    assert (run.model.config.bos_token_id, run.model.config.eos_token_id) == (None, None)


def test_multi_process_runs_say_once_on_the_main_process_how_a_sigterm_resumes(caplog):
    import logging
    from types import SimpleNamespace

    from hf_decision_mamba.training.recipe import adapt_to_processes

    caplog.set_level(logging.INFO, logger="hf_decision_mamba")
    for rank in (0, 1):
        training = SimpleNamespace(ddp_find_unused_parameters=False, enable_jit_checkpoint=True, world_size=2,
                                   process_index=rank, save_steps=500)  # fmt: skip
        adapt_to_processes(training, torch.nn.Linear(1, 1))
        assert training.enable_jit_checkpoint is False
    assert [record.levelname for record in caplog.records] == ["INFO"]
    assert "resumes from the last checkpoint saved every 500 steps" in caplog.text
