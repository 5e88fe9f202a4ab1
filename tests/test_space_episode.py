"""`record_episode` (the Space's engine): one seeded episode, its returns-to-go, hidden attention and video."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.evaluation import evaluate_policy, is_browser_playable
from hf_decision_mamba.evaluation.episode import record_episode

CONTEXT = 6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Act with one torch thread, as the Space does (much faster for batch-1 acting on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def hopper_model() -> DecisionMambaModel:
    """A tiny random Decision Mamba for Hopper with state normalisation, so the window inputs are non-trivial."""
    torch.manual_seed(0)
    config = DecisionMambaConfig.from_preset(
        "dmamba-hopper", hidden_size=32, num_hidden_layers=2, state_dim=11, act_dim=3, dropout=0.0,
        context_length=CONTEXT, env_id="Hopper-v5", target_return=3600.0, state_mean=[0.1] * 11, state_std=[2.0] * 11,
    )  # fmt: skip
    return DecisionMambaModel(config).eval()


def _forward_calls(model: torch.nn.Module) -> tuple[list[dict], torch.utils.hooks.RemovableHandle]:
    """Record (copies of) the keyword inputs of every forward of `model`; the policy reuses its buffers."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls, handle


def test_window_episode_matches_evaluation_and_feeds_the_policys_last_window(hopper_model, tmp_path, caplog):
    calls, handle = _forward_calls(hopper_model)
    try:
        with caplog.at_level(logging.WARNING):
            recording = record_episode(
                hopper_model, seed=2, max_episode_steps=12, video_path=tmp_path / "ep.mp4"
            )
    finally:
        handle.remove()
    report = evaluate_policy(hopper_model, num_episodes=1, seed=2, max_episode_steps=12, progress=False)
    assert recording.length == report["results"][0]["episode_lengths"][0] == 12
    assert recording.total_return == pytest.approx(report["results"][0]["returns"][0])
    expected_rtg = 3600.0 - np.concatenate([[0.0], np.cumsum(recording.rewards)[:-1]])
    np.testing.assert_allclose(recording.returns_to_go, expected_rtg)
    assert recording.normalized_score == pytest.approx(
        100 * (recording.total_return + 20.272305) / 3254.572305
    )
    # the attention is computed on exactly the window the policy fed the model at its last step
    policy_inputs, attention_inputs = calls[-2], calls[-1]
    with torch.no_grad():  # the policy passes its window as state embeddings
        embeds = hopper_model.encode_states(attention_inputs["states"])
    torch.testing.assert_close(embeds, policy_inputs["state_embeds"])
    for name in ("actions", "returns_to_go", "timesteps", "attention_mask"):
        torch.testing.assert_close(attention_inputs[name].float(), policy_inputs[name].float())
    assert recording.attention.shape == (2, 3 * CONTEXT, 3 * CONTEXT)
    assert np.all(np.triu(recording.attention, k=1) == 0) and np.abs(recording.attention).sum() > 0
    assert is_browser_playable(recording.video) and not caplog.records  # the replay returned the same return


def test_recurrent_episode_and_time_limit(hopper_model):
    recording = record_episode(
        hopper_model, seed=4, mode="recurrent", max_episode_steps=10, target_return=1800
    )
    report = evaluate_policy(
        hopper_model,
        num_episodes=1,
        seed=4,
        mode="recurrent",
        max_episode_steps=10,
        target_return=1800,
        progress=False,
    )
    assert recording.total_return == pytest.approx(report["results"][0]["returns"][0])
    assert recording.returns_to_go[0] == 1800 and recording.video is None
    stopped = record_episode(hopper_model, seed=4, max_episode_steps=10, time_limit_s=0.0)
    assert stopped.length == 1 and stopped.timed_out and not stopped.terminated
    assert stopped.attention.shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("HalfCheetah-v5", "state_dim=11: the model does not fit HalfCheetah-v5"),
        ("ALE/Pong-v5", "continuous actions .* but ALE/Pong-v5 takes discrete ones"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_environment_is_refused(hopper_model, env_id, message):
    with pytest.raises(ValueError, match=message):
        record_episode(hopper_model, env_id=env_id, max_episode_steps=3)


def test_bad_arguments_are_refused(hopper_model):
    with pytest.raises(ValueError, match="seed=-1"):
        record_episode(hopper_model, seed=-1)
    with pytest.raises(ValueError, match="mode='greedy'"):
        record_episode(hopper_model, mode="greedy")
    with pytest.raises(ValueError, match="target_return=nan"):
        record_episode(hopper_model, target_return=float("nan"), max_episode_steps=2)


def test_atari_episode_replays_the_same_game(tmp_path, caplog):
    torch.manual_seed(0)
    config = DecisionMambaConfig.from_preset(
        "dmamba-atari",
        hidden_size=16,
        num_hidden_layers=1,
        context_length=4,
        n_actions=6,
        env_id="ALE/Pong-v5",
    )
    model = DecisionMambaModel(config).eval()
    with caplog.at_level(logging.WARNING):
        recording = record_episode(
            model, seed=1, target_return=20, max_episode_steps=8, video_path=tmp_path / "p.mp4"
        )
    assert recording.length == 8 and recording.attention.shape == (1, 12, 12)
    assert is_browser_playable(recording.video) and not caplog.records
