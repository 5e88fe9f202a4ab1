"""Bad inputs to `DecisionMambaModel.forward` and `DecisionMambaPolicy.act`: each one either gives the correct
result or stops with a one-line error naming the field and what was expected (issue 14, item 5)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import left_pad, make_batch, tiny_model

NAN, INF = float("nan"), float("inf")


def _set(field: str, index: tuple, value):
    def change(batch: dict) -> dict:
        tensor = batch[field].clone()
        tensor[index] = value
        return {**batch, field: tensor}

    return change


def _replace(field: str, make):
    return lambda batch: {**batch, field: make(batch[field])}


def _zero_labels_but(index: tuple, value: int):
    """Discrete labels all 0 except one, so the reported range is known."""

    def change(batch: dict) -> dict:
        labels = torch.zeros_like(batch["labels"])
        labels[index] = value
        return {**batch, "labels": labels}

    return change


def _labelled(batch: dict) -> dict:
    return {**batch, "labels": batch["actions"].clone()}


FORWARD_ERRORS = [
    # (case id, preset, change to a valid labelled batch, message)
    (
        "mask-all-zero-row",
        "dmamba-mujoco",
        _set("attention_mask", (1,), 0),
        "attention_mask: row 1 is all zeros, expected at least one 1 per row.",
    ),
    (
        "mask-value-2",
        "dmamba-mujoco",
        _set("attention_mask", (0, 2), 2),
        "attention_mask: got value 2, expected only 0 and 1.",
    ),
    (
        "mask-value-half",
        "dmamba-mujoco",
        _replace("attention_mask", lambda m: m.float() * 0.5),
        "attention_mask: got value 0.5, expected only 0 and 1.",
    ),
    (
        "mask-right-padding",
        "dmamba-mujoco",
        _set("attention_mask", (1, slice(3, None)), 0),
        "attention_mask: row 1 has a 0 after a 1 (right padding or a hole), expected left padding (0s, then 1s).",
    ),
    (
        "mask-hole",
        "dmamba-mujoco",
        _set("attention_mask", (0, 2), 0),
        "attention_mask: row 0 has a 0 after a 1 (right padding or a hole), expected left padding (0s, then 1s).",
    ),
    (
        "labels-inf",
        "dmamba-mujoco",
        _set("labels", (0, 1, 0), INF),
        "labels: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "labels-nan",
        "dmamba-mujoco",
        _set("labels", (1, 0, 1), NAN),
        "labels: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "states-nan",
        "dmamba-mujoco",
        _set("states", (0, 0, 0), NAN),
        "states: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "timesteps-float",
        "dmamba-mujoco",
        _replace("timesteps", lambda t: t.float()),
        "timesteps: got dtype torch.float32, expected an integer dtype (step indices).",
    ),
    (
        "timesteps-negative",
        "dmamba-mujoco",
        _set("timesteps", (0, 0), -1),
        "timesteps: got values in [-1, 5], expected [0, max_ep_len=64).",
    ),
    (
        "K-zero",
        "dmamba-mujoco",
        lambda b: {k: v[:, :0] for k, v in b.items()},
        "states: got shape (2, 0, 5), expected batch >= 1 and K >= 1.",
    ),
    (
        "batch-zero",
        "dmamba-mujoco",
        lambda b: {k: v[:0] for k, v in b.items()},
        "states: got shape (0, 6, 5), expected batch >= 1 and K >= 1.",
    ),
    (
        "states-numpy",
        "dmamba-mujoco",
        _replace("states", lambda t: t.numpy()),
        "states: got numpy.ndarray, expected a torch.Tensor (convert with torch.as_tensor).",
    ),
    (
        "actions-list",
        "dmamba-mujoco",
        _replace("actions", lambda t: t.tolist()),
        "actions: got builtins.list, expected a torch.Tensor (convert with torch.as_tensor).",
    ),
    (
        "mask-numpy",
        "dmamba-mujoco",
        _replace("attention_mask", lambda t: t.numpy()),
        "attention_mask: got numpy.ndarray, expected a torch.Tensor (convert with torch.as_tensor).",
    ),
    (
        "discrete-label-out-of-range",
        "dmamba-atari",
        _zero_labels_but((0, 1), 4),
        "labels: got values in [0, 4], expected [0, 4) or -100 (ignored).",
    ),
    (
        "discrete-label-negative",
        "dmamba-atari",
        _zero_labels_but((1, 0), -1),
        "labels: got values in [-1, 0], expected [0, 4) or -100 (ignored).",
    ),
    (
        "discrete-label-float",
        "dmamba-atari",
        _replace("labels", lambda t: t.float()),
        "labels: got dtype torch.float32, expected an integer dtype (discrete actions).",
    ),
]


@pytest.mark.parametrize(
    ("preset", "change", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in FORWARD_ERRORS],
)
def test_bad_forward_input_stops_with_one_line_naming_field_and_expectation(preset, change, message):
    model = tiny_model(preset).train()
    batch = change(_labelled(make_batch(model.config, steps=6)))
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        model(**batch)
    assert "\n" not in str(error.value)


def test_discrete_labels_of_minus_100_are_ignored_by_the_loss():
    """transformers' ignore-index: the loss equals the loss over the other steps."""
    model = tiny_model("dmamba-atari").train()
    batch = _labelled(make_batch(model.config, steps=4))
    ignored = batch["labels"].clone()
    ignored[0, 1] = ignored[1, 3] = -100
    loss = model(**{**batch, "labels": ignored}).loss
    keep = ignored != -100
    logits = model(**batch).action_preds
    expected = torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep])
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)


def test_all_labels_ignored_give_zero_loss_not_nan():
    model = tiny_model("dmamba-atari").train()
    batch = make_batch(model.config, steps=3)
    loss = model(**batch, labels=torch.full_like(batch["actions"], -100)).loss
    assert loss.item() == 0.0


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_diverged_model_stops_at_its_nan_loss(compiled):
    """Finite inputs, NaN weights: the loss is refused (a ValueError eagerly, an assert in the compiled graph)
    rather than returned for the Trainer to average away."""
    model = tiny_model("dmamba-mujoco")
    batch = make_batch(model.config)
    with torch.no_grad():
        model.predict_action.weight.fill_(float("nan"))
    forward = torch.compile(model, backend="aot_eager", fullgraph=True) if compiled else model
    error = (RuntimeError, ValueError) if compiled else ValueError
    with pytest.raises(error, match="loss: .*expected a finite number"):
        forward(**batch, labels=batch["actions"])
    assert torch.isnan(model(**batch).action_preds).all()  # without labels there is no loss to check


def test_left_padding_and_bool_or_float_masks_are_accepted():
    """The valid layouts still work: left padding, a bool mask, a float 0/1 mask give the same predictions."""
    model = tiny_model("dmamba-mujoco")
    batch = left_pad(make_batch(model.config, steps=4), pad=2)
    with torch.no_grad():
        expected = model(**batch).action_preds
        for mask in (batch["attention_mask"].bool(), batch["attention_mask"].float()):
            torch.testing.assert_close(model(**{**batch, "attention_mask": mask}).action_preds, expected)


# -- policy.act --------------------------------------------------------------------------------------------


def _policy(mode: str, num_envs: int = 2):
    model = tiny_model("dmamba-mujoco", state_mean=[0.0] * 5, state_std=[1.0] * 5, target_return=100.0)
    policy = model.policy(mode=mode)
    policy.reset(num_envs=num_envs)
    return policy


OBS = np.zeros((2, 5), dtype=np.float32)


def _bad_obs(value: float) -> np.ndarray:
    obs = OBS.copy()
    obs[1, 3] = value
    return obs


POLICY_ERRORS = [
    # (case id, calls on a reset 2-env policy, message)
    (
        "obs-nan",
        lambda p: p.act(_bad_obs(NAN)),
        "observation: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "obs-inf",
        lambda p: p.act(_bad_obs(-INF)),
        "observation: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "reward-nan",
        lambda p: (p.act(OBS), p.act(OBS, reward=[1.0, NAN])),
        "reward: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "reward-length",
        lambda p: (p.act(OBS), p.act(OBS, reward=[1.0, 2.0, 3.0])),
        "reward: got 3 values, expected num_envs=2 (one per env).",
    ),
    (
        "reward-scalar-for-two",
        lambda p: (p.act(OBS), p.act(OBS, reward=1.0)),
        "reward: got 1 values, expected num_envs=2 (one per env).",
    ),
    (
        "target-nan",
        lambda p: p.reset(num_envs=2, target_return=[NAN, 1.0]),
        "target_return: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "target-inf",
        lambda p: p.reset(num_envs=2, target_return=INF),
        "target_return: contains NaN or inf values, expected finite numbers.",
    ),
    (
        "target-length",
        lambda p: p.reset(num_envs=2, target_return=[1.0, 2.0, 3.0]),
        "target_return: got 3 values, expected 1 or num_envs=2.",
    ),
    ("num-envs-zero", lambda p: p.reset(num_envs=0), "num_envs: got 0, expected a positive integer."),
    ("num-envs-negative", lambda p: p.reset(num_envs=-3), "num_envs: got -3, expected a positive integer."),
    ("num-envs-float", lambda p: p.reset(num_envs=2.0), "num_envs: got 2.0, expected a positive integer."),
]


@pytest.mark.parametrize("mode", ["window", "recurrent"])
@pytest.mark.parametrize(
    ("calls", "message"), [pytest.param(*case[1:], id=case[0]) for case in POLICY_ERRORS]
)
def test_bad_policy_input_stops_with_one_line_naming_field_and_expectation(mode, calls, message):
    policy = _policy(mode)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        calls(policy)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("mode", ["window", "recurrent"])
def test_a_refused_step_leaves_the_episode_unchanged(mode):
    """A bad reward is refused before anything moves: the next good step acts as if it never happened."""
    policy, clean = _policy(mode), _policy(mode)
    for p in (policy, clean):
        p.act(OBS)
    with pytest.raises(ValueError):
        policy.act(_bad_obs(NAN), reward=[1.0, 2.0])
    np.testing.assert_array_equal(policy.act(OBS, reward=[1.0, 2.0]), clean.act(OBS, reward=[1.0, 2.0]))


@pytest.mark.parametrize("mode", ["window", "recurrent"])
def test_act_says_why_when_no_env_is_left_or_reset_was_never_called(mode):
    policy = _policy(mode)
    policy.keep([False, False])
    with pytest.raises(RuntimeError, match=r"no environments left \(keep\(\) dropped them all\)"):
        policy.act(np.zeros((0, 5), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"call reset\(num_envs\) before act\(\)"):
        policy.fork().act(OBS)
