"""Atari frames: split 4-frame stacks into frames stored once, decode PNG stacks, read DQN-replay checkpoints."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .schema import FRAME_SHAPE, FRAME_STACK, INITIAL_FRAMES, OBSERVATIONS


def split_stacks(
    stacks: np.ndarray, index: int = 0, field: str = "image_observations"
) -> dict[str, np.ndarray]:
    """Turn (T, 4, 84, 84) sliding frame stacks (oldest or newest frame first) into T frames + 3 initial frames.

    Raises a `ValueError` when consecutive stacks do not share 3 frames, since storing frames once would lose data.
    """
    if stacks.ndim != 4 or tuple(stacks.shape[1:]) != (FRAME_STACK, *FRAME_SHAPE):
        raise ValueError(
            f"episode {index}: {field!r} has shape {stacks.shape}; expected (steps, {FRAME_STACK}, 84, 84) stacks."
        )
    if not np.array_equal(stacks[1:, :-1], stacks[:-1, 1:]):
        flipped = stacks[:, ::-1]
        if not np.array_equal(flipped[1:, :-1], flipped[:-1, 1:]):
            raise ValueError(
                f"episode {index}: {field!r} are not sliding {FRAME_STACK}-frame stacks; expected each stack to "
                "share 3 frames with the previous one."
            )
        stacks = flipped
    return {
        OBSERVATIONS: np.ascontiguousarray(stacks[:, -1]),
        INITIAL_FRAMES: np.ascontiguousarray(stacks[0, :-1]),
    }


def decode_stack(image: Any) -> np.ndarray:
    """One stored stack (a PIL image, `{"bytes": ...}` dict or array, channels last) as uint8 (4, 84, 84)."""
    if isinstance(image, dict):
        from PIL import Image

        image = Image.open(io.BytesIO(image["bytes"]))
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return np.moveaxis(array, -1, 0)


def frame_run(frames: np.ndarray, initial: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Frames of steps start-3 .. stop-1 (those the stacks of steps start..stop-1 need), a view when possible."""
    history = FRAME_STACK - 1
    if start >= history:
        return frames[start - history : stop]
    return np.concatenate([initial[start:], frames[:stop]])


def stacks_view(run: np.ndarray) -> np.ndarray:
    """(L + 3, 84, 84) frames -> (L, 4, 84, 84) stacks as a strided view (oldest frame first, no copy)."""
    windows = np.lib.stride_tricks.sliding_window_view(run, FRAME_STACK, axis=0)
    return np.moveaxis(windows, -1, 1)


# DQN replay (Agarwal et al. 2020; Dopamine's OutOfGraphReplayBuffer checkpoints) ----------------------------

DQN_REPLAY_FIELDS = ("observation", "action", "reward", "terminal")


def dqn_replay_file(directory: Path, field: str, checkpoint: int) -> Path:
    """Path of one Dopamine checkpoint array, e.g. `$store$_observation_ckpt.3.gz` (or `add_count_ckpt.3.gz`)."""
    prefix = "$store$_" if field in DQN_REPLAY_FIELDS else ""
    return Path(directory) / f"{prefix}{field}_ckpt.{checkpoint}.gz"


class GzipNpyReader:
    """Reads row ranges of a gzipped `.npy` file without loading it whole (DQN-replay frames are 7 GB raw)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: gzip.GzipFile | None = None
        self._open()

    def _open(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = gzip.open(self.path, "rb")  # noqa: SIM115  (kept open across reads; closed by close())
        major, _ = np.lib.format.read_magic(self._file)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(self._file)
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported; expected C order.")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._data_start = self._file.tell()
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1; reading forward is streamed, going back reopens the file."""
        target = self._data_start + start * self._row_bytes
        if self._file.tell() > target:
            self._open()
        self._file.seek(target)
        data = self._file.read((stop - start) * self._row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, *self.shape[1:])

    def close(self) -> None:
        self._file.close()


def _load_small(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        return np.load(file, allow_pickle=False)


def _logical_order(size: int, add_count: int | None) -> tuple[np.ndarray, bool]:
    """Physical indices from oldest to newest transition, and whether the circular buffer wrapped."""
    if add_count is None or add_count <= size:
        return np.arange(min(size, add_count or size)), False
    cursor = add_count % size
    return (np.arange(size) + cursor) % size, True


def _episode_ranges(terminal: np.ndarray, wrapped: bool) -> list[tuple[int, int, bool]]:
    """(start, stop, terminated) in logical order; an episode cut by the buffer's start is dropped."""
    ends = np.flatnonzero(terminal) + 1
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else np.zeros(0, dtype=int)
    ranges = [(int(a), int(b), True) for a, b in zip(starts, ends, strict=True)]
    tail = int(ends[-1]) if len(ends) else 0
    if tail < len(terminal):
        ranges.append((tail, len(terminal), False))
    return ranges[1:] if wrapped else ranges


def iter_dqn_replay(directory: Path, checkpoint: int) -> Iterator[dict[str, np.ndarray]]:
    """Episodes of one DQN-replay checkpoint in the canonical schema (frames stored once, zero initial frames)."""
    action = _load_small(dqn_replay_file(directory, "action", checkpoint))
    reward = _load_small(dqn_replay_file(directory, "reward", checkpoint))
    terminal = _load_small(dqn_replay_file(directory, "terminal", checkpoint)).astype(bool)
    count_file = dqn_replay_file(directory, "add_count", checkpoint)
    add_count = int(_load_small(count_file)) if count_file.exists() else None
    order, wrapped = _logical_order(len(action), add_count)
    frames = GzipNpyReader(dqn_replay_file(directory, "observation", checkpoint))
    try:
        for start, stop, terminated in _episode_ranges(terminal[order], wrapped):
            yield _dqn_episode(frames, order[start:stop], action, reward, terminated)
    finally:
        frames.close()


def _contiguous_runs(indices: np.ndarray) -> Sequence[np.ndarray]:
    return np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1)


def _padding_steps(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> int:
    """Dopamine stores `stack - 1` zero transitions before every episode; count them (0 or 3)."""
    history = FRAME_STACK - 1
    head = slice(0, history)
    if len(actions) <= history or actions[head].any() or rewards[head].any() or observations[head].any():
        return 0
    return history


def _dqn_episode(
    frames: GzipNpyReader, indices: np.ndarray, action: np.ndarray, reward: np.ndarray, terminated: bool
) -> dict[str, np.ndarray]:
    observations = np.concatenate(
        [frames.read(int(run[0]), int(run[-1]) + 1) for run in _contiguous_runs(indices)]
    )
    actions, rewards = action[indices].astype(np.int64), reward[indices].astype(np.float32)
    padding = _padding_steps(observations, actions, rewards)
    length = len(indices) - padding
    last = np.arange(length) == length - 1
    return {
        OBSERVATIONS: observations[padding:],
        "actions": actions[padding:],
        "rewards": rewards[padding:],
        "terminations": last & terminated,
        "truncations": last & (not terminated),
        INITIAL_FRAMES: np.zeros((FRAME_STACK - 1, *FRAME_SHAPE), dtype=np.uint8),
    }
