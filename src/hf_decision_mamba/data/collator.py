"""Pads trajectory windows on the left into the batch every model of this package (and DT) takes.

Output, for B windows and context K: `states` float32 (B, K, state_dim) normalised, or uint8 (B, K, 4, 84, 84);
`actions` float32 (B, K, act_dim) or int64 (B, K); `rewards` and `returns_to_go` float32 (B, K, 1) (returns already
divided by the rtg scale); `timesteps` int64 (B, K); `attention_mask` int64 (B, K) with 1 on real steps; `labels`,
the target actions (the same tensor as `actions`), so that `Trainer.evaluate()` reports a loss. Real steps sit at
the end of the window; padded positions hold zeros (an Atari padded stack may overlap the window's first frames),
which the models ignore exactly.

The batch is the same for every preset: DT's (R_t, s_t, a_t) tokens, DeMa's (R_t, a_{t-1}, s_t) triplets (B3LD)
and their per-step concatenation (BL3D) are all arranged inside the model from these fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

WINDOW_FIELDS = ("states", "actions", "rewards", "returns_to_go", "timesteps")


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised batch field; inside a DataLoader worker it lives in shared memory, as `default_collate`
    does it, so handing a 200 MB Atari batch to the training process costs no extra copy."""
    dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    try:  # the private allocator `default_collate` uses; a plain tensor if it ever goes away
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    except (AttributeError, RuntimeError):
        return torch.empty(shape, dtype=dtype)
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def _frame_run(states: np.ndarray) -> np.ndarray | None:
    """The frames under a sliding stack view (L, n, H, W) -> (L + n - 1, H, W); `None` for anything else."""
    if states.ndim != 4 or not len(states) or states.strides[0] != states.strides[1]:
        return None
    shape = (len(states) + states.shape[1] - 1, *states.shape[2:])
    return np.lib.stride_tricks.as_strided(
        states, shape, (states.strides[0], *states.strides[2:]), writeable=False
    )


class TrajectoryCollator:
    """Collate unpadded windows (dicts of numpy arrays, at most `context_length` steps) into a padded batch.

    Atari windows from `TrajectoryWindowDataset` are sliding views over frames; their batch keeps each frame once,
    as (B, K + 3, 84, 84) frames with `states` an overlapping (B, K, 4, 84, 84) strided view of them (4x less
    memory to build and to hand from a worker to the training process). Copy it before writing to it in place.
    """

    def __init__(self, context_length: int):
        if context_length < 1:
            raise ValueError(f"context_length={context_length}; expected a positive integer.")
        self.context_length = context_length

    def __call__(self, windows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        if not windows:
            raise ValueError("cannot collate an empty list of windows; expected at least one.")
        lengths = [len(window["actions"]) for window in windows]
        for row, length in enumerate(lengths):
            if not 0 < length <= self.context_length:
                raise ValueError(
                    f"window {row} has {length} steps; expected 1 to context_length={self.context_length}."
                )
        runs = [_frame_run(window["states"]) for window in windows]
        stacked = all(run is not None for run in runs)
        fields = WINDOW_FIELDS[1:] if stacked else WINDOW_FIELDS
        tensors = {name: self._pad([window[name] for window in windows], lengths) for name in fields}
        if stacked:
            tensors["states"] = self._stacks(runs, lengths, windows[0]["states"].shape[1])
        mask = torch.zeros((len(windows), self.context_length), dtype=torch.int64)
        for row, length in enumerate(lengths):
            mask[row, self.context_length - length :] = 1
        return {
            "states": tensors["states"],
            "actions": tensors["actions"],
            "rewards": tensors["rewards"].unsqueeze(-1),
            "returns_to_go": tensors["returns_to_go"].unsqueeze(-1),
            "timesteps": tensors["timesteps"],
            "attention_mask": mask,
            "labels": tensors["actions"],
        }

    def _pad(self, values: Sequence[np.ndarray], lengths: Sequence[int], extra: int = 0) -> torch.Tensor:
        """Left-pad per-window arrays with zeros to `context_length + extra` steps and stack them."""
        steps = self.context_length + extra
        tensor = _empty((len(values), steps, *values[0].shape[1:]), values[0].dtype)
        array = tensor.numpy()
        for row, (value, length) in enumerate(zip(values, lengths, strict=True)):
            pad = steps - length - extra
            array[row, :pad] = 0
            array[row, pad:] = value
        return tensor

    def _stacks(self, runs: Sequence[np.ndarray], lengths: Sequence[int], stack: int) -> torch.Tensor:
        """(B, K + stack - 1, H, W) frames and the (B, K, stack, H, W) stacks over them, as a strided view."""
        frames = self._pad(runs, lengths, extra=stack - 1)
        batch, _, height, width = frames.shape
        strides = frames.stride()
        shape = (batch, self.context_length, stack, height, width)
        return frames.as_strided(shape, (strides[0], strides[1], strides[1], strides[2], strides[3]))
