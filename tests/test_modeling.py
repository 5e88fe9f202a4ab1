"""Specification of `DecisionMambaModel`: every preset runs, pads exactly, steps recurrently, validates input."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import ALL_PRESETS, ATTENTION, left_pad, make_batch, tiny_config, tiny_model
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.modeling_decision_mamba import hidden_attention
from hf_decision_mamba.selective_scan import available_backends

CPU_BACKENDS = [name for name in available_backends() if name != "cuda"]
ATTENTION_MODELS = ["dmamba-mujoco", "dmamba-atari"]


def test_every_preset_predicts_one_action_per_step_and_a_loss(preset):
    model = tiny_model(preset)
    batch = make_batch(model.config, batch=2, steps=5)
    out = model(**batch, labels=batch["actions"])
    expected = (2, 5, model.config.act_dim)
    assert out.action_preds.shape == expected
    assert out.last_hidden_state.shape == (2, 5 * model.config.tokens_per_step, model.config.hidden_size)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_no_loss_without_labels_and_hidden_states_on_request():
    model = tiny_model("dmamba-mujoco")
    out = model(**make_batch(model.config), output_hidden_states=True)
    assert out.loss is None
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1


def test_continuous_loss_is_the_mse_over_real_steps_only():
    model = tiny_model("dmamba-mujoco")
    batch = left_pad(make_batch(model.config, steps=4), pad=3)
    out = model(**batch, labels=batch["actions"])
    real = batch["attention_mask"] > 0
    expected = ((out.action_preds - batch["actions"])[real] ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_discrete_loss_is_cross_entropy_over_real_steps():
    model = tiny_model("dmamba-atari")
    batch = left_pad(make_batch(model.config, steps=3), pad=2)
    out = model(**batch, labels=batch["actions"])
    real = batch["attention_mask"] > 0
    expected = torch.nn.functional.cross_entropy(out.action_preds[real], batch["actions"][real])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "preset_name",
    ALL_PRESETS + ["mambadm-mujoco:window3", "dmamba-mujoco:attention", "dmamba-atari:attention"],
)
def test_left_padding_does_not_change_real_positions(preset_name, backend):
    preset_name, _, variant = preset_name.partition(":")
    overrides = {"window3": {"local_window": 3}, "attention": ATTENTION}.get(variant, {})
    model = tiny_model(preset_name, scan_backend=backend, **overrides)
    batch = make_batch(model.config, batch=2, steps=5, start=4)
    plain = model(**batch).action_preds
    padded = model(**left_pad(batch, pad=4)).action_preds[:, 4:]
    # attention's matrix products run over the padded length too: the same sums, rounded in another order
    torch.testing.assert_close(padded, plain, atol=1e-4 if variant == "attention" else 1e-5, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dropout_acts_in_training_mode_only_and_follows_the_seed(backend):
    model = tiny_model("dmamba-mujoco", scan_backend=backend, dropout=0.3)
    batch = make_batch(model.config, batch=2, steps=5)
    evaluated = model(**batch).action_preds
    torch.testing.assert_close(model(**batch).action_preds, evaluated)
    model.train()
    torch.manual_seed(5)
    first, second = model(**batch).action_preds, model(**batch).action_preds
    torch.manual_seed(5)
    torch.testing.assert_close(model(**batch).action_preds, first)
    assert (first - second).abs().max() > 1e-4 and (first - evaluated).abs().max() > 1e-4


def test_padding_differs_from_real_history():
    """The padding check above could pass vacuously if the model ignored history; it must not."""
    model = tiny_model("dmamba-mujoco")
    batch = make_batch(model.config, steps=6)
    suffix = {key: value[:, 3:] for key, value in batch.items()}
    difference = (model(**batch).action_preds[:, 3:] - model(**suffix).action_preds).abs().max()
    assert difference > 1e-3


def test_prediction_never_depends_on_the_future(preset):
    model = tiny_model(preset)
    batch = make_batch(model.config, steps=6)
    changed = {key: value.clone() for key, value in batch.items()}
    changed["states"][:, 4:] = changed["states"][:, 4:].flip(0)
    changed["returns_to_go"][:, 4:] += 3.0
    torch.testing.assert_close(model(**changed).action_preds[:, :4], model(**batch).action_preds[:, :4])


@pytest.mark.parametrize("preset_name", ATTENTION_MODELS)
def test_attention_blocks_never_look_ahead_and_return_their_softmax_weights(preset_name):
    model = tiny_model(preset_name, **ATTENTION)
    batch = left_pad(make_batch(model.config, steps=5), pad=2)
    changed = {key: value.clone() for key, value in batch.items()}
    changed["returns_to_go"][:, 5:] += 3.0
    plain = model(**batch).action_preds
    torch.testing.assert_close(model(**changed).action_preds[:, :5], plain[:, :5], rtol=0, atol=0)
    out = model(**batch, output_attentions=True)
    torch.testing.assert_close(out.action_preds, plain, rtol=0, atol=1e-6)  # the explicit path is SDPA's
    tokens = 7 * model.config.tokens_per_step
    for weights in out.attentions:
        assert weights.shape == (2, 2, tokens, tokens) and torch.all(weights.triu(1) == 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, tokens))
        assert torch.all(
            weights[..., 2 * model.config.tokens_per_step :, : 2 * model.config.tokens_per_step] == 0
        )


def test_attention_blocks_have_no_recurrent_state_and_say_so():
    model = tiny_model("dmamba-mujoco", **ATTENTION)
    assert not model.supports_recurrent_acting and tiny_model("dmamba-mujoco").supports_recurrent_acting
    with pytest.raises(ValueError, match="block_type='attention'.*expected mode='window'"):
        model.policy(mode="recurrent")
    with pytest.raises(ValueError, match="block_type='attention' has no recurrent state"):
        model.init_cache(2)
    model.policy(mode="window").reset(2, target_return=1.0)


@pytest.mark.parametrize("preset_name", ALL_PRESETS + ["mambadm-mujoco:window2"])
def test_recurrent_step_equals_parallel_forward_over_the_prefix(preset_name):
    preset_name, _, variant = preset_name.partition(":")
    overrides = {"local_window": 2} if variant == "window2" else {}
    model = tiny_model(preset_name, **overrides)
    steps = 5
    batch = make_batch(model.config, batch=3, steps=steps, start=1)
    parallel = model(**batch).action_preds
    cache = model.init_cache(3)
    for t in range(steps):
        previous = batch["actions"][:, t - 1] if t > 0 else None
        step_pred = model.recurrent_step(
            cache, batch["states"][:, t], previous, batch["returns_to_go"][:, t], batch["timesteps"][:, t]
        )
        torch.testing.assert_close(step_pred, parallel[:, t], atol=1e-5, rtol=1e-5)


def brute_force_attention(delta, A, B, C):
    batch, inner, length = delta.shape
    out = torch.zeros(batch, inner, length, length)
    for b in range(batch):
        for d in range(inner):
            for t in range(length):
                for s in range(t + 1):
                    decay = torch.ones(A.shape[1])
                    for k in range(s + 1, t + 1):
                        decay = decay * torch.exp(delta[b, d, k] * A[d])
                    out[b, d, t, s] = (C[b, :, t] * decay * B[b, :, s]).sum() * delta[b, d, s]
    return out.mean(1)


def test_hidden_attention_matches_a_brute_force_product_of_decays():
    torch.manual_seed(0)
    batch, inner, state, length = 2, 3, 4, 5
    delta = torch.rand(batch, inner, length)
    A = -torch.rand(inner, state) * 2
    B, C = torch.randn(batch, state, length), torch.randn(batch, state, length)
    attention = hidden_attention(delta, A, B, C)
    torch.testing.assert_close(attention, brute_force_attention(delta, A, B, C), atol=1e-5, rtol=1e-5)


def test_output_attentions_returns_one_causal_4d_matrix_per_layer():
    model = tiny_model("dema-mujoco")
    out = model(**make_batch(model.config, steps=4), output_attentions=True)
    tokens = 4 * model.config.tokens_per_step
    assert len(out.attentions) == model.config.num_hidden_layers
    for attention in out.attentions:
        assert attention.shape == (2, 1, tokens, tokens)  # transformers' (batch, heads, L, L); one head
        assert torch.all(attention.triu(1) == 0)
        assert attention.diagonal(dim1=-2, dim2=-1).abs().sum() > 0


def test_mamba_initialisation_survives_transformers_generic_init():
    model = tiny_model("dmamba-mujoco")
    mixer = model.layers[0].mixer
    state = model.config.state_size
    torch.testing.assert_close(mixer.A_log[0], torch.log(torch.arange(1, state + 1, dtype=torch.float32)))
    assert torch.all(mixer.D == 1)
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= model.config.time_step_floor - 1e-6 and dt.max() <= model.config.time_step_max + 1e-6
    bound = model.config.time_step_rank**-0.5
    assert mixer.dt_proj.weight.abs().max() <= bound


def test_optimizer_groups_exclude_ssm_parameters_norms_biases_and_embeddings():
    model = tiny_model("dmamba-atari")
    decay, no_decay = model.get_optimizer_param_groups(weight_decay=0.1)
    names = {id(param): name for name, param in model.named_parameters()}
    decayed = {names[id(param)] for param in decay["params"]}
    undecayed = {names[id(param)] for param in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decayed) + len(undecayed) == len(names)
    assert "layers.0.mixer.in_proj.weight" in decayed and "embed_state.conv.0.weight" in decayed
    for name in undecayed | decayed:
        is_special = name.endswith(("A_log", ".D", ".bias")) or "norm" in name or "embed_timestep" in name
        is_special = is_special or name == "embed_action.weight"
        assert (name in undecayed) == is_special, name


def test_parameter_names_match_mamba_ssm():
    mixer = tiny_model("dmamba-mujoco").layers[0].mixer
    names = {name for name, _ in mixer.named_parameters()}
    assert names == {
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
        "out_proj.weight",
    }


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("states", lambda t: t[..., :-1], "states: got shape (2, 4, 4), expected (batch, K, 5)"),
        ("actions", lambda t: t[..., :1], "actions: got shape (2, 4, 1), expected (2, 4, 2)"),
        ("returns_to_go", lambda t: t[:, :3], "returns_to_go: got shape (2, 3, 1), expected (2, 4, 1)"),
        ("timesteps", lambda t: t + 1000, "expected [0, max_ep_len=64)"),
        ("states", lambda t: t.masked_fill(t > 1, float("nan")), "states: contains NaN or inf"),
        ("returns_to_go", lambda t: t.masked_fill(t > 1, float("inf")), "returns_to_go: contains NaN or inf"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_field(field, change, message):
    model = tiny_model("dmamba-mujoco")
    batch = make_batch(model.config, steps=4)
    batch["states"][0, 0, 0] = batch["returns_to_go"][0, 0, 0] = 5.0
    batch[field] = change(batch[field])
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        model(**batch)


@pytest.mark.parametrize("preset_name", ["dmamba-mujoco", "dema-mujoco-bl3d", "dmamba-atari"])
def test_precomputed_state_embeddings_replace_the_states(preset_name):
    model = tiny_model(preset_name)
    batch = make_batch(model.config)
    states = batch.pop("states")
    with torch.no_grad():
        expected = model(states=states, **batch).action_preds
        got = model(state_embeds=model.encode_states(states), **batch).action_preds
    torch.testing.assert_close(got, expected)
    embeds = model.encode_states(states)
    with pytest.raises(ValueError, match="state_embeds: got states and state_embeds"):
        model(states=states, state_embeds=embeds, **batch)
    with pytest.raises(ValueError, match=r"state_embeds: got \(2, 6, 3\), expected shape \(2, 6, "):
        model(state_embeds=embeds[..., :3], **batch)


def test_discrete_actions_must_be_integers_in_range():
    model = tiny_model("dmamba-atari")
    batch = make_batch(model.config, steps=2)
    with pytest.raises(ValueError, match=r"actions: got dtype torch.float32, expected an integer dtype"):
        model(**{**batch, "actions": batch["actions"].float()})
    with pytest.raises(ValueError, match=r"actions: got values in \[0, 9\], expected \[0, 4\)"):
        model(**{**batch, "actions": batch["actions"].clamp(max=0) + torch.tensor([[0, 9], [0, 0]])})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"block_type": "transformer"}, "DecisionMambaConfig.block_type='transformer': expected one of"),
        ({"hidden_size": 0}, "DecisionMambaConfig.hidden_size=0: expected a positive integer"),
        ({"action_space": "discrete"}, "DecisionMambaConfig.n_actions=None: expected a positive integer"),
        ({"state_mean": [0.0] * 3, "state_dim": 5}, "state_mean has 3 entries: expected state_dim=5"),
        (
            {"block_type": "attention", "hidden_size": 16, "num_attention_heads": 3},
            "DecisionMambaConfig.num_attention_heads=3: expected a divisor of hidden_size=16",
        ),
        (
            {"num_attention_heads": 0},
            "DecisionMambaConfig.num_attention_heads=0: expected a positive integer",
        ),
    ],
)
def test_bad_config_raises_a_value_error_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        DecisionMambaConfig(**fields)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown preset 'gpt'.*dmamba-mujoco"):
        DecisionMambaConfig.from_preset("gpt")


def test_mujoco_decision_mamba_presets_drop_the_timestep_embedding_that_the_paper_and_atari_keep():
    # Measured: with it Decision Mamba over-fits on MuJoCo with longer training (BENCHMARKS.md, "Learning").
    for name in ("dmamba-mujoco", "dmamba-hopper"):
        config = DecisionMambaConfig.from_preset(name)
        assert (config.block_type, config.use_mlp, config.use_timestep_embedding) == ("dmamba", True, False)
        assert DecisionMambaModel(config).embed_timestep is None
    assert DecisionMambaConfig.from_preset("dmamba-atari").use_timestep_embedding
    paper = DecisionMambaConfig.from_preset("dmamba-mujoco", use_timestep_embedding=True, hidden_size=16)
    assert DecisionMambaModel(paper).embed_timestep.num_embeddings == paper.max_ep_len


def test_presets_reproduce_the_papers_architectures():
    dema = DecisionMambaConfig.from_preset("dema-mujoco")
    assert (dema.norm_type, dema.use_mlp, dema.use_timestep_embedding, dema.token_layout) == (
        "rms_norm",
        False,
        False,
        "ras",
    )
    assert (dema.embedding_size, dema.hidden_size, dema.state_size, dema.residual_in_fp32) == (
        128,
        64,
        64,
        True,
    )
    atari = DecisionMambaConfig.from_preset("dmamba-atari")
    assert (atari.num_hidden_layers, atari.hidden_size, atari.context_length, atari.rtg_scale) == (
        6,
        128,
        30,
        1.0,
    )
    assert atari.state_dim == 4 * 84 * 84 and atari.is_discrete
    assert DecisionMambaConfig.from_preset("dema-atari").state_size == 128
    assert DecisionMambaConfig.from_preset("dmamba-hopper").hidden_size == 256
    assert DecisionMambaConfig.from_preset("mambadm-mujoco").block_type == "gloma"
    assert DecisionMambaConfig.from_preset("dmamba-mujoco").time_step_rank == math.ceil(128 / 16)


def test_float64_and_batch_one_work():
    model = tiny_model("dmamba-mujoco").double()
    batch = make_batch(model.config, batch=1, steps=3)
    batch = {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}
    assert model(**batch).action_preds.dtype == torch.float64


def test_model_is_registered_with_the_auto_classes():
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("decision_mamba", state_dim=3, act_dim=2)
    assert isinstance(AutoModel.from_config(config), DecisionMambaModel)
    assert tiny_config("dmamba-mujoco").model_type == "decision_mamba"
