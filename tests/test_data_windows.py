"""Trajectory windows and the collator: what a batch holds, how windows are sampled and sharded, normalisation,
and that batches feed `transformers.DecisionTransformerModel`, the `Trainer` and `DecisionMambaModel`."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
from datasets import Dataset, IterableDataset
from transformers import DecisionTransformerConfig, DecisionTransformerModel, Trainer, TrainingArguments

from hf_decision_mamba.data import (
    TrajectoryCollator,
    TrajectoryWindowDataset,
    compute_state_stats,
    default_rtg_scale,
    load_trajectories,
    record_normalisation,
    returns_to_go,
)
from hf_decision_mamba.data.synthetic import synthetic_episodes

K = 8


def windows(lengths=(12, 30, 9, 20), context=K, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("short_episodes", "keep")
    return TrajectoryWindowDataset(synthetic_episodes(lengths), context, **kwargs)


def as_dataset(episodes):
    return Dataset.from_list([{k: v.tolist() for k, v in e.items()} for e in episodes])


def test_batch_has_the_model_contract_shapes_and_dtypes():
    dataset = windows(state_mean=np.zeros(11), state_std=np.ones(11))
    batch = dataset.collator()([dataset[i] for i in range(6)])
    expected = {
        "states": ((6, K, 11), torch.float32),
        "actions": ((6, K, 3), torch.float32),
        "rewards": ((6, K, 1), torch.float32),
        "returns_to_go": ((6, K, 1), torch.float32),
        "timesteps": ((6, K), torch.int64),
        "attention_mask": ((6, K), torch.int64),
        "labels": ((6, K, 3), torch.float32),
    }
    assert {name: (tuple(t.shape), t.dtype) for name, t in batch.items()} == expected
    assert batch["labels"] is batch["actions"]


def test_windows_are_left_padded_with_real_steps_at_the_end():
    dataset = windows(state_mean=np.zeros(11), state_std=np.ones(11))
    episode = synthetic_episodes((12,))[0]
    batch = dataset.collator()([dataset[2]])  # the window ending at step 2 of episode 0: 3 real steps
    assert batch["attention_mask"][0].tolist() == [0] * 5 + [1] * 3
    assert batch["timesteps"][0].tolist() == [0] * 5 + [0, 1, 2]
    np.testing.assert_allclose(batch["states"][0, -3:], episode["observations"][:3])
    np.testing.assert_allclose(batch["actions"][0, -3:], episode["actions"][:3])
    assert not batch["states"][0, :5].any() and not batch["actions"][0, :5].any()


def test_returns_to_go_are_undiscounted_sums_of_future_rewards_divided_by_the_scale():
    dataset = windows(rtg_scale=10.0)
    episode = synthetic_episodes((12,))[0]
    item = dataset[11]  # the last window of episode 0: steps 4..11
    expected = np.cumsum(episode["rewards"][::-1].astype(np.float64))[::-1][4:12] / 10.0
    np.testing.assert_allclose(item["returns_to_go"], expected, rtol=1e-6)
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0]), gamma=0.5), [2.75, 3.5, 3.0])


def test_one_window_ends_at_every_step_so_sampling_is_length_proportional():
    dataset = windows()
    ends = [
        (int(item["timesteps"][-1]), len(item["actions"]))
        for item in (dataset[i] for i in range(len(dataset)))
    ]
    assert len(dataset) == 12 + 30 + 9 + 20 == dataset.num_transitions
    assert ends[:12] == [(t, min(t + 1, K)) for t in range(12)]


def test_trajectory_mode_covers_every_step_once_in_chunks():
    dataset = windows(lengths=(20, 5), mode="trajectory")
    chunks = [dataset[i]["timesteps"].tolist() for i in range(len(dataset))]
    assert chunks == [[0, 1, 2, 3], list(range(4, 12)), list(range(12, 20)), [0, 1, 2, 3, 4]]
    batch = dataset.collator()([dataset[i] for i in range(len(dataset))])
    assert batch["attention_mask"].sum().item() == 25


def test_states_are_normalised_with_given_statistics_and_timesteps_clipped_to_max_ep_len():
    mean, std = np.full(11, 2.0), np.full(11, 4.0)
    with pytest.warns(
        UserWarning, match=r"up to 30 steps exceed max_ep_len=16; their timesteps are clipped to 15"
    ):
        dataset = windows(state_mean=mean, state_std=std, max_ep_len=16)
    episode = synthetic_episodes((12, 30))[1]
    item = dataset[12 + 29]
    np.testing.assert_allclose(item["states"], (episode["observations"][22:30] - 2.0) / 4.0, rtol=1e-6)
    assert item["timesteps"].max() == 15


def test_state_statistics_are_the_same_streamed_and_in_memory():
    episodes = synthetic_episodes((12, 30, 9))
    states = np.concatenate([e["observations"] for e in episodes]).astype(np.float64)
    for source in (episodes, as_dataset(episodes), as_dataset(episodes).to_iterable_dataset()):
        stats = compute_state_stats(source, progress=False)
        np.testing.assert_allclose(stats.mean, states.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats.std, states.std(0) + 1e-6, rtol=1e-5)
    assert stats.count == 51
    np.testing.assert_allclose(windows((12, 30, 9)).state_stats.mean, stats.mean, rtol=1e-5, atol=1e-6)


def test_normalisation_is_recorded_into_any_config():
    stats = compute_state_stats(synthetic_episodes((10,)), progress=False)
    config = record_normalisation(DecisionTransformerConfig(state_dim=11, act_dim=3), stats, rtg_scale=1000)
    assert config.state_mean == pytest.approx(stats.mean.tolist()) and config.rtg_scale == 1000.0
    assert default_rtg_scale("Hopper-v5") == 1000 and default_rtg_scale("ALE/Breakout-v5") == 1
    assert default_rtg_scale("hopper-medium-v2", override=500) == 500


def test_from_config_computes_records_and_then_reuses_normalisation():
    config = DecisionTransformerConfig(state_dim=11, act_dim=3, max_ep_len=64)
    dataset = TrajectoryWindowDataset.from_config(
        synthetic_episodes((12, 30)), config, context_length=K, rtg_scale=1000, progress=False
    )
    assert config.state_mean == pytest.approx(dataset.state_stats.mean.tolist()) and config.rtg_scale == 1000
    config.state_mean = [0.0] * 11
    again = TrajectoryWindowDataset.from_config(
        synthetic_episodes((12, 30)), config, context_length=K, progress=False
    )
    assert again.state_stats.mean.tolist() == [0.0] * 11 and again.rtg_scale == 1000


def test_short_episodes_are_skipped_with_a_warning_by_default():
    with pytest.warns(
        UserWarning, match=r"skipped 1 episode\(s\) shorter than context_length=8 \(episodes \[2\]\)"
    ):
        dataset = TrajectoryWindowDataset(synthetic_episodes((12, 30, 5)), K, progress=False)
    assert dataset.num_episodes == 2 and dataset.source_indices == [0, 1]
    with pytest.raises(ValueError, match=r"episode 2: has 5 steps; expected at least context_length=8"):
        TrajectoryWindowDataset(synthetic_episodes((12, 30, 5)), K, short_episodes="error", progress=False)


def test_discrete_actions_stay_int64_indices():
    dataset = TrajectoryWindowDataset(synthetic_episodes((10, 12), n_actions=4), K, progress=False)
    batch = dataset.collator()([dataset[i] for i in range(4)])
    assert batch["actions"].dtype == torch.int64 and batch["actions"].shape == (4, K)


def test_each_of_two_ranks_gets_different_windows_from_the_trainers_sharding():
    from accelerate.data_loader import prepare_data_loader

    dataset = windows()
    seen = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(
            range(len(dataset)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)
        )
        loader = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
        seen.append([int(i) for batch in loader for i in batch])
    assert set(seen[0]) | set(seen[1]) == set(range(len(dataset)))
    assert len(set(seen[0]) & set(seen[1])) <= 4  # only the padding of the last, uneven batch repeats


# The model side ---------------------------------------------------------------------------------------------


def tiny_dt(**overrides):
    torch.manual_seed(0)
    config = DecisionTransformerConfig(
        state_dim=11, act_dim=3, hidden_size=32, n_layer=1, n_head=1, max_ep_len=64, **overrides
    )
    return DecisionTransformerModel(config).eval()


def test_left_padding_leaves_decision_transformer_outputs_at_real_steps_unchanged():
    dataset = windows(state_mean=np.zeros(11), state_std=np.ones(11))
    model = tiny_dt()
    padded = dataset.collator()([dataset[4]])  # 5 real steps, 3 padded
    unpadded = TrajectoryCollator(5)([dataset[4]])
    forward = {k: v for k, v in padded.items() if k != "labels"}
    with torch.no_grad():
        _, actions_padded, _ = model(**forward, return_dict=False)
        _, actions_unpadded, _ = model(
            **{k: v for k, v in unpadded.items() if k != "labels"}, return_dict=False
        )
    torch.testing.assert_close(actions_padded[:, -5:], actions_unpadded, atol=1e-5, rtol=1e-5)


class LossDT(DecisionTransformerModel):
    """DT plus the masked action MSE against `labels`, as DecisionMambaModel computes it."""

    def forward(self, states, actions, rewards, returns_to_go, timesteps, attention_mask, labels=None):
        inputs = {"states": states, "actions": actions, "rewards": rewards, "returns_to_go": returns_to_go}
        output = super().forward(
            **inputs, timesteps=timesteps, attention_mask=attention_mask, return_dict=True
        )
        real = attention_mask.bool()
        output["loss"] = torch.nn.functional.mse_loss(output.action_preds[real], labels[real])
        return output


def test_trainer_trains_with_two_workers_and_reports_eval_loss(tmp_path):
    dataset = TrajectoryWindowDataset(
        load_trajectories("embedded:hopper", max_episodes=6), 20, rtg_scale=1000, progress=False
    )
    config = DecisionTransformerConfig(
        state_dim=11, act_dim=3, hidden_size=32, n_layer=1, n_head=1, max_ep_len=1000
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        dataloader_num_workers=2,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=LossDT(config),
        args=args,
        train_dataset=dataset,
        eval_dataset=torch.utils.data.Subset(dataset, range(128)),
        data_collator=dataset.collator(),
    )
    assert trainer.train().training_loss > 0
    assert "eval_loss" in trainer.evaluate()


def mujoco_presets():
    try:
        from hf_decision_mamba import PRESETS
    except ImportError:
        return []
    return sorted(
        name for name, preset in PRESETS.items() if preset["config"].get("state_encoder") == "linear"
    )


@pytest.mark.parametrize("preset", mujoco_presets())
def test_the_same_collated_batch_feeds_every_preset_of_decision_mamba_model(preset):
    from hf_decision_mamba import PRESETS, DecisionMambaConfig, DecisionMambaModel

    tiny = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "state_dim": 11,
        "act_dim": 3,
        "context_length": K,
        "max_ep_len": 64,
    }
    if PRESETS[preset]["config"].get("embedding_size"):
        tiny["embedding_size"] = 24
    config = DecisionMambaConfig.from_preset(preset, **tiny)
    dataset = TrajectoryWindowDataset.from_config(synthetic_episodes((12, 30)), config, progress=False)
    torch.manual_seed(0)
    output = DecisionMambaModel(config).eval()(**dataset.collator()([dataset[i] for i in (0, 5, 20, 41)]))
    assert output.action_preds.shape == (4, K, 3) and torch.isfinite(output.loss)


def test_streaming_and_map_style_inputs_give_the_same_windows():
    episodes = synthetic_episodes((12, 30))
    from_stream = TrajectoryWindowDataset(as_dataset(episodes).to_iterable_dataset(), K, progress=False)
    from_map = TrajectoryWindowDataset(as_dataset(episodes), K, progress=False)
    assert isinstance(as_dataset(episodes).to_iterable_dataset(), IterableDataset)
    for index in (0, 20, 41):
        np.testing.assert_array_equal(from_stream[index]["states"], from_map[index]["states"])


# Two real processes (gloo), each building the Trainer's dataloader ------------------------------------------


def _rank_windows(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    dataset = windows()
    args = TrainingArguments(
        output_dir=out_dir,
        use_cpu=True,
        per_device_train_batch_size=4,
        report_to=[],
        dataloader_num_workers=0,
    )
    collate = dataset.collator()

    def tagged(items):
        batch = collate([window for _, window in items])
        batch["window"] = torch.tensor([index for index, _ in items])
        return batch

    indexed = [(index, dataset[index]) for index in range(len(dataset))]
    trainer = Trainer(model=tiny_dt(), args=args, train_dataset=indexed, data_collator=tagged)
    seen = [int(i) for batch in trainer.get_train_dataloader() for i in batch["window"]]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
        json.dump(seen, file)


@pytest.mark.slow
def test_two_process_run_shards_windows_across_ranks(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_rank_windows, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [set(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in range(2)]
    assert ranks[0] | ranks[1] == set(range(71))
    assert len(ranks[0] & ranks[1]) <= 4
