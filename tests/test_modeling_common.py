"""Generic model checks in the manner of transformers' common model tests, for several presets.

A `DecisionMambaModelTester` builds a tiny config and inputs for one preset; `ModelTesterMixin` holds the
checks every model must pass (save/load, batching, initialisation, dtypes, meta device, gradient checkpointing,
4-D attentions); `TestDecisionMambaModel` runs the mixin over one preset of each family. The half-precision
checks run on every preset. torch.compile / torch.export checks live in `test_compile_export.py`.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Trainer, TrainingArguments

from conftest import ALL_PRESETS, ATTENTION, FixedWindows, make_batch, tiny_config
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.modeling_decision_mamba import DecisionMambaMixer, DecisionMambaRMSNorm

# One preset per family: Mamba + MLP on MuJoCo, DeMa's (R, a_{t-1}, s) tokens, DeMa's concatenated layout,
# GLoMa's global + local mixers, the Atari CNN encoder with discrete actions, and the Decision Transformer of
# this model (GPT-2's attention in place of Mamba) on Atari.
COMMON_PRESETS = [
    "dmamba-mujoco",
    "dema-mujoco",
    "dema-mujoco-bl3d",
    "mambadm-mujoco",
    "dmamba-atari",
    "dmamba-atari:attention",
]
VARIANTS = {"attention": ATTENTION}

# README "Half precision": max |action_preds(half) - action_preds(float32)| at the default initialisation.
HALF_TOLERANCE = {torch.bfloat16: 0.02, torch.float16: 0.003}
# The config's own (paper) initialisation, which the documented tolerance is measured at; the tiny configs of
# conftest use larger weights and step sizes so that exactness checks bite.
DEFAULT_INIT = {"initializer_range": 0.02, "time_step_min": 0.001, "time_step_max": 0.1}


class DecisionMambaModelTester:
    """Config and inputs factory for one preset (the role of a transformers `ModelTester`)."""

    def __init__(self, preset: str, batch_size: int = 3, steps: int = 4) -> None:
        preset, _, variant = preset.partition(":")
        self.preset, self.variant, self.batch_size, self.steps = (
            preset,
            VARIANTS.get(variant, {}),
            batch_size,
            steps,
        )

    def get_config(self, **overrides) -> DecisionMambaConfig:
        return tiny_config(self.preset, **{**self.variant, **overrides})

    def prepare_inputs(
        self, config: DecisionMambaConfig, seed: int = 0, batch_size: int | None = None
    ) -> dict:
        return make_batch(config, batch=batch_size or self.batch_size, steps=self.steps, seed=seed)

    def prepare_config_and_inputs(self, **overrides) -> tuple[DecisionMambaConfig, dict]:
        config = self.get_config(**overrides)
        return config, self.prepare_inputs(config)

    def create_model(self, seed: int = 0, **overrides) -> DecisionMambaModel:
        torch.manual_seed(seed)
        return DecisionMambaModel(self.get_config(**overrides)).eval()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def _count_mixer_calls(model: DecisionMambaModel) -> list[int]:
    """A counter that every start of a mixer call with gradients on (a training forward, or its recompute
    under checkpointing) increments; a pre-hook, because a recompute stops as soon as it has rebuilt the
    tensors the backward needs."""
    calls = [0]

    def count(*_) -> None:
        calls[0] += torch.is_grad_enabled()

    for layer in model.layers:
        layer.mixer.register_forward_pre_hook(count)
    return calls


class ModelTesterMixin:
    """Checks that hold for every Decision Mamba configuration; `tester` comes from the test class."""

    def test_save_and_load_round_trip_gives_the_same_weights_and_outputs(self, tester, tmp_path):
        model = tester.create_model()
        inputs = tester.prepare_inputs(model.config)
        model.save_pretrained(tmp_path)
        loaded = DecisionMambaModel.from_pretrained(tmp_path).eval()
        saved_fields = {key: value for key, value in model.config.to_dict().items() if key != "_name_or_path"}
        assert {key: loaded.config.to_dict()[key] for key in saved_fields} == saved_fields
        for (name, value), (loaded_name, loaded_value) in zip(
            model.state_dict().items(), loaded.state_dict().items(), strict=True
        ):
            assert name == loaded_name and torch.equal(value, loaded_value), name
        torch.testing.assert_close(
            loaded(**inputs).action_preds, model(**inputs).action_preds, rtol=0, atol=0
        )

    def test_a_batch_predicts_what_its_rows_predict_one_by_one(self, tester):
        model = tester.create_model()
        inputs = tester.prepare_inputs(model.config, batch_size=4)
        batched = model(**inputs).action_preds
        for row in range(4):
            single = model(**{key: value[row : row + 1] for key, value in inputs.items()}).action_preds
            torch.testing.assert_close(single[0], batched[row], rtol=0, atol=1e-5)

    def test_every_weight_is_initialised_from_an_empty_meta_device_model(self, tester):
        """Weights created on the meta device and materialised uninitialised (NaN here) are all set by
        `init_weights()`, with the statistics of the configured initialisation."""
        config = tester.get_config(**DEFAULT_INIT)
        with torch.device("meta"):
            model = DecisionMambaModel(config)
        assert all(param.is_meta for param in model.parameters())
        model.to_empty(device="cpu")
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(math.nan)
        model.init_weights()
        for name, param in model.named_parameters():
            assert torch.isfinite(param).all(), f"{name} was left uninitialised"
        self._check_initialisation_statistics(model)

    def test_a_fresh_model_has_the_configured_initialisation(self, tester):
        self._check_initialisation_statistics(tester.create_model(**DEFAULT_INIT))

    @staticmethod
    def _check_initialisation_statistics(model: DecisionMambaModel) -> None:
        config = model.config
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.LayerNorm, DecisionMambaRMSNorm)):
                assert torch.all(module.weight == 1), name
                assert getattr(module, "bias", None) is None or torch.all(module.bias == 0), name
            elif isinstance(module, torch.nn.Linear) and module.bias is not None and "dt_proj" not in name:
                assert torch.all(module.bias == 0), name
        for layer in model.layers:
            for mixer in filter(
                lambda m: isinstance(m, DecisionMambaMixer), (layer.mixer, layer.local_mixer)
            ):
                expected = torch.log(torch.arange(1, config.state_size + 1, dtype=torch.float32))
                torch.testing.assert_close(mixer.A_log, expected.expand_as(mixer.A_log), rtol=0, atol=0)
                assert torch.all(mixer.D == 1)
                step = torch.nn.functional.softplus(mixer.dt_proj.bias)
                assert step.min() >= config.time_step_floor * (1 - 1e-4)
                assert step.max() <= config.time_step_max * (1 + 1e-4)
                in_proj = mixer.in_proj.weight
                assert abs(in_proj.std().item() - config.initializer_range) < 0.3 * config.initializer_range
        assert abs(model.predict_action.weight.std().item() - config.initializer_range) < (
            0.5 * config.initializer_range
        )

    def test_meta_device_model_has_the_structure_of_a_real_one(self, tester):
        config = tester.get_config()
        with torch.device("meta"):
            meta = DecisionMambaModel(config)
        real = DecisionMambaModel(config)
        assert {name: p.shape for name, p in meta.named_parameters()} == {
            name: p.shape for name, p in real.named_parameters()
        }

    def test_gradient_checkpointing_recomputes_and_gives_identical_gradients(self, tester):
        """With dropout on and a fixed seed, checkpointed blocks give the gradients of plain ones."""
        grads = []
        for checkpointing in (False, True):
            model = tester.create_model(dropout=0.2).train()
            if checkpointing:
                model.gradient_checkpointing_enable()
            inputs = tester.prepare_inputs(model.config)
            calls = _count_mixer_calls(model)
            torch.manual_seed(7)
            model(**inputs, labels=inputs["actions"]).loss.backward()
            recomputed = 2 if checkpointing else 1
            assert calls[0] == recomputed * model.config.num_hidden_layers
            grads.append(_grads(model))
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for name, plain in grads[0].items():
            torch.testing.assert_close(grads[1][name], plain, rtol=0, atol=1e-7, msg=name)

    def test_attentions_are_four_dimensional_with_one_head_per_layer_or_per_attention_head(self, tester):
        model = tester.create_model()
        inputs = tester.prepare_inputs(model.config)
        attentions = model(**inputs, output_attentions=True).attentions
        tokens = tester.steps * model.config.tokens_per_step
        heads = model.config.num_attention_heads if model.config.block_type == "attention" else 1
        assert len(attentions) == model.config.num_hidden_layers
        for attention in attentions:
            assert attention.shape == (tester.batch_size, heads, tokens, tokens)
            assert torch.all(attention.triu(1) == 0) and torch.isfinite(attention).all()


class TestDecisionMambaModel(ModelTesterMixin):
    @pytest.fixture(params=COMMON_PRESETS)
    def tester(self, request) -> DecisionMambaModelTester:
        return DecisionMambaModelTester(request.param)


# -- half precision, on every preset and the attention block ---------------------------------------------

HALF_PRESETS = [*ALL_PRESETS, "dmamba-mujoco:attention"]
HALF_DTYPES = [torch.bfloat16, torch.float16]
FP32_KEPT = ("A_log", "D", "dt_proj.bias")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("preset", HALF_PRESETS)
def test_half_precision_forward_is_within_the_documented_tolerance(preset, dtype):
    tester = DecisionMambaModelTester(preset)
    model = tester.create_model(**DEFAULT_INIT)
    inputs = tester.prepare_inputs(model.config)
    reference = model(**inputs).action_preds
    half = tester.create_model(**DEFAULT_INIT).to(dtype)
    preds = half(**inputs).action_preds
    assert preds.dtype == dtype
    assert (preds.float() - reference).abs().max() <= HALF_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("preset", HALF_PRESETS)
def test_half_precision_model_trains(preset, dtype):
    tester = DecisionMambaModelTester(preset)
    model = tester.create_model(**DEFAULT_INIT).to(dtype).train()
    inputs = tester.prepare_inputs(model.config)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)  # AdamW's eps=1e-8 underflows in float16
    loss = model(**inputs, labels=inputs["actions"]).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad.dtype == param.dtype and torch.isfinite(param.grad).all(), name
        assert torch.isfinite(param).all(), name
    assert any(not torch.equal(before[name], param) for name, param in model.named_parameters())


@pytest.mark.parametrize("preset", ["dmamba-mujoco", "mambadm-atari"])
def test_bfloat16_autocast_training_step_matches_float32(preset):
    """What `--bf16 true` runs on the CPU: float32 weights, bfloat16 autocast."""
    tester = DecisionMambaModelTester(preset)
    model = tester.create_model(**DEFAULT_INIT).train()
    inputs = tester.prepare_inputs(model.config)
    reference = model(**inputs, labels=inputs["actions"]).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs, labels=inputs["actions"]).loss
    loss.backward()
    assert (
        abs(loss.item() - reference.item()) <= 0.05 * abs(reference.item()) + HALF_TOLERANCE[torch.bfloat16]
    )
    assert all(torch.isfinite(param.grad).all() for param in model.parameters())


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("preset", ["mambadm-mujoco", "dema-atari"])
def test_to_and_from_pretrained_keep_the_same_parameters_float32(preset, dtype, tmp_path):
    """One rule for `.to(dtype)`, `from_pretrained(dtype=...)` and `from_config(dtype=...)`: the state-space
    parameters stay float32 (with their exact values), everything else takes the requested dtype."""
    tester = DecisionMambaModelTester(preset)
    model = tester.create_model()
    model.save_pretrained(tmp_path)
    kept = model.float32_parameter_names()
    assert kept and all(name.endswith(FP32_KEPT) for name in kept)
    mixers = sum(
        1 for layer in model.layers for mixer in (layer.mixer, layer.local_mixer) if mixer is not None
    )
    assert len(kept) == 3 * mixers
    original = {name: param.detach().clone() for name, param in model.named_parameters()}
    cast = model.to(dtype)
    loaded = DecisionMambaModel.from_pretrained(tmp_path, dtype=dtype)
    for candidate in (cast, loaded):
        for name, param in candidate.named_parameters():
            assert param.dtype == (torch.float32 if name in kept else dtype), name
            if name in kept:
                assert torch.equal(param, original[name]), name
    assert all(
        torch.equal(a, b)
        for a, b in zip(cast.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    built = DecisionMambaModel._from_config(model.config, dtype=dtype)  # what AutoModel.from_config does
    assert {name: p.dtype for name, p in built.named_parameters()} == {
        name: p.dtype for name, p in cast.named_parameters()
    }
    back = cast.float()
    assert all(param.dtype == torch.float32 for param in back.parameters())
    assert all(torch.equal(original[name], param) for name, param in back.named_parameters() if name in kept)


def _recurrent_preds(model: DecisionMambaModel, inputs: dict) -> torch.Tensor:
    """The actions predicted by feeding `inputs` step by step through `recurrent_step`."""
    cache, previous, preds = model.init_cache(inputs["states"].shape[0]), None, []
    for t in range(inputs["timesteps"].shape[1]):
        states, returns, timesteps = (inputs[key][:, t] for key in ("states", "returns_to_go", "timesteps"))
        preds.append(model.recurrent_step(cache, states, previous, returns, timesteps))
        previous = inputs["actions"][:, t]
    return torch.stack(preds, dim=1)


@pytest.mark.parametrize("preset", ["dmamba-mujoco", "dema-atari", "mambadm-mujoco"])
def test_a_bfloat16_model_steps_recurrently_like_its_parallel_forward(preset):
    tester = DecisionMambaModelTester(preset)
    model = tester.create_model(**DEFAULT_INIT)
    inputs = tester.prepare_inputs(model.config)
    reference = model(**inputs).action_preds
    half = tester.create_model(**DEFAULT_INIT).to(torch.bfloat16)
    recurrent = _recurrent_preds(half, inputs).float()
    torch.testing.assert_close(recurrent, half(**inputs).action_preds.float(), rtol=0, atol=0.01)
    assert (recurrent - reference).abs().max() <= HALF_TOLERANCE[torch.bfloat16]


def test_casting_a_model_with_gradients_keeps_float32_gradients_for_float32_parameters():
    model = DecisionMambaModelTester("dmamba-mujoco").create_model()
    inputs = make_batch(model.config)
    model(**inputs, labels=inputs["actions"]).loss.backward()
    model.to(torch.bfloat16)
    for name, param in model.named_parameters():
        assert param.grad.dtype == param.dtype, name


# -- the Trainer's switches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_trainer_gradient_checkpointing_flag_checkpoints_every_block(tmp_path, bf16):
    """`--gradient_checkpointing true` (TrainingArguments.gradient_checkpointing) reaches every block, with
    and without `--bf16 true`."""
    model = DecisionMambaModelTester("mambadm-mujoco").create_model(dropout=0.1)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=True,
        bf16=bf16,
    )
    calls = _count_mixer_calls(model)
    trainer = Trainer(model=model, args=args, train_dataset=FixedWindows(model.config))
    result = trainer.train()
    assert all(layer.gradient_checkpointing for layer in model.layers)
    assert calls[0] == 2 * 2 * model.config.num_hidden_layers  # two steps, each block run twice
    assert math.isfinite(result.training_loss)


def test_dmamba_train_gradient_checkpointing_flag_reaches_the_recipes_trainer(tmp_path):
    """`dmamba train --gradient_checkpointing true`: the recipe's trainer checkpoints every block."""
    from hf_decision_mamba.training import build_trainer, parse_train_args, prepare_run

    argv = ["--max_episodes", "4", "--per_device_train_batch_size", "4", "--max_steps", "2", "--use_cpu",
            "--config_overrides", "hidden_size=16,num_hidden_layers=2,state_size=4,context_length=4",
            "--report_to", "none", "--save_strategy", "no", "--env_eval_steps", "0", "--disable_tqdm", "true",
            "--output_dir", str(tmp_path), "--gradient_checkpointing", "true"]  # fmt: skip
    run = prepare_run(parse_train_args(argv))
    calls = _count_mixer_calls(run.model)
    trainer, _ = build_trainer(run)
    trainer.train()
    assert all(layer.gradient_checkpointing for layer in run.model.layers)
    assert calls[0] == 2 * 2 * run.model.config.num_hidden_layers
